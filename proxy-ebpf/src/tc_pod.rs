//! TC programs for a pod's host-side veth.
//!
//! - `tc_from_pod` (ingress of the host-side veth: packets leaving the pod): parse → conntrack →
//!   service lookup → backend selection → DNAT → conntrack entry.
//! - `tc_to_pod` (egress of the host-side veth: packets entering the pod): parse → conntrack
//!   reply lookup → reverse NAT (source back to the service VIP).
//!
//! Both count every packet by protocol. Anything that is not a balanced TCP/UDP IPv4 flow passes
//! unchanged.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, TC_ACT_SHOT},
        macros::classifier,
        programs::TcContext,
    };
    use proxy_common::{
        CONNTRACK_FLAG_EXTERNAL, CONNTRACK_FLAG_HAIRPIN, CONNTRACK_FLAG_SEEN_REPLY, DropReason,
        ExternalPath, SERVICE_FLAG_DROP_WHEN_EMPTY, TcpState, maglev_flow_hash, tcp_reopens,
    };
    use proxy_ebpf::{
        conntrack, lb,
        maps::{CONNTRACK, PROTOCOL_STATS},
        nat::{self, Side},
        nodeport,
        parse::{IPPROTO_TCP, Ipv4Flow, classify},
        reject, route, skb,
        stats::{count_drop, count_flow, count_protocol},
    };

    #[classifier]
    pub fn tc_from_pod(ctx: TcContext) -> i32 {
        count_protocol(
            &PROTOCOL_STATS,
            classify(&skb::frame(&ctx)),
            u64::from(ctx.len()),
        );
        match skb::flow(&ctx) {
            Some(flow) => from_pod(&ctx, &flow),
            None => TC_ACT_OK,
        }
    }

    #[classifier]
    pub fn tc_to_pod(ctx: TcContext) -> i32 {
        count_protocol(
            &PROTOCOL_STATS,
            classify(&skb::frame(&ctx)),
            u64::from(ctx.len()),
        );
        match skb::flow(&ctx) {
            Some(flow) => to_pod(&ctx, &flow),
            None => TC_ACT_OK,
        }
    }

    #[inline(always)]
    fn translate(ctx: &TcContext, flow: &Ipv4Flow, side: Side, address: u32, port: u16) -> i32 {
        match nat::rewrite(ctx, flow, side, address, port) {
            Ok(()) => TC_ACT_OK,
            Err(_) => {
                count_drop(DropReason::RewriteFailed, u64::from(ctx.len()));
                TC_ACT_SHOT
            }
        }
    }

    /// Sends a hairpin packet back into the pod it left, rewritten to (`source` → `destination`).
    #[inline(always)]
    fn hairpin(
        ctx: &TcContext,
        flow: &Ipv4Flow,
        source: (u32, u16),
        destination: (u32, u16),
    ) -> i32 {
        let rewritten = nat::rewrite(ctx, flow, Side::Destination, destination.0, destination.1)
            .and_then(|()| nat::rewrite(ctx, flow, Side::Source, source.0, source.1))
            .and_then(|()| nat::bounce(ctx));
        match rewritten {
            Ok(verdict) => verdict,
            Err(_) => {
                count_drop(DropReason::RewriteFailed, u64::from(ctx.len()));
                TC_ACT_SHOT
            }
        }
    }

    /// DNAT of a balanced packet towards `backend`; a hairpin flow is also source-NATed to the
    /// VIP and sent straight back into the pod.
    #[inline(always)]
    fn forward(ctx: &TcContext, flow: &Ipv4Flow, flags: u8, backend: (u32, u16)) -> i32 {
        if flags & CONNTRACK_FLAG_HAIRPIN != 0 {
            return hairpin(ctx, flow, (flow.destination, flow.source_port), backend);
        }
        translate(ctx, flow, Side::Destination, backend.0, backend.1)
    }

    #[inline(always)]
    fn from_pod(ctx: &TcContext, flow: &Ipv4Flow) -> i32 {
        let now = conntrack::now_ns();
        let bytes = u64::from(ctx.len());
        // A pod answering a connection it made to itself through a service (hairpin): back to
        // the pod, from the VIP.
        if let Some(entry) = CONNTRACK.get_ptr_mut(conntrack::reply_key(flow)) {
            // SAFETY: the pointer comes from a successful lookup; the value is copied at once.
            let reply = unsafe { *entry };
            if reply.flags & CONNTRACK_FLAG_HAIRPIN != 0 {
                // SAFETY: see above.
                unsafe {
                    (*entry).last_seen_ns = now;
                    (*entry).flags |= CONNTRACK_FLAG_SEEN_REPLY;
                }
                conntrack::touch_forward_from_reply(flow, &reply, now);
                count_flow(reply.service_id, reply.backend_id, bytes, false);
                return hairpin(
                    ctx,
                    flow,
                    (reply.nat_address, reply.nat_port),
                    (flow.source, flow.destination_port),
                );
            }
            // A local backend answering a client outside the cluster (NodePort, external or
            // load-balancer IP): from the frontend, straight out of the uplink.
            if reply.flags & CONNTRACK_FLAG_EXTERNAL != 0 {
                // SAFETY: see above.
                unsafe {
                    (*entry).last_seen_ns = now;
                    (*entry).flags |= CONNTRACK_FLAG_SEEN_REPLY;
                }
                conntrack::touch_forward_from_reply(flow, &reply, now);
                count_flow(reply.service_id, reply.backend_id, bytes, false);
                return route::tc_forward_external(
                    ctx,
                    flow,
                    &nodeport::reverse_translation(flow, &reply),
                    ExternalPath::ReplyFromPod,
                );
            }
        }
        // An existing flow keeps its backend while the entry is live and the backend exists.
        if let Some(entry) = CONNTRACK.get_ptr_mut(conntrack::forward_key(flow)) {
            // SAFETY: the pointer comes from a successful lookup; the value is copied at once.
            let current = unsafe { *entry };
            let config = conntrack::config();
            let reopened = flow.protocol == IPPROTO_TCP
                && tcp_reopens(TcpState::from_byte(current.state), flow.tcp_flags);
            if !reopened
                && !conntrack::is_expired(&current, &config, now)
                && let Some(backend) = lb::backend(current.backend_id)
                && backend.address == current.nat_address
                && backend.port == current.nat_port
            {
                // SAFETY: see above; only this flow's packets write these fields.
                unsafe {
                    (*entry).last_seen_ns = now;
                    (*entry).state = conntrack::advance(flow, current.state, false);
                }
                count_flow(current.service_id, current.backend_id, bytes, false);
                return forward(
                    ctx,
                    flow,
                    current.flags,
                    (current.nat_address, current.nat_port),
                );
            }
            // Expired, reopened, or its backend is gone: balance it afresh below.
        }
        let Some(service) = lb::service_of(flow) else {
            return TC_ACT_OK;
        };
        let Some((backend_id, backend)) = lb::select(
            &service,
            flow.source,
            now,
            maglev_flow_hash(
                flow.source,
                flow.source_port,
                flow.destination_port,
                flow.protocol,
            ),
        ) else {
            if service.backend_count != 0 {
                count_drop(DropReason::MissingBackend, bytes);
                return TC_ACT_SHOT;
            }
            if service.flags & SERVICE_FLAG_DROP_WHEN_EMPTY != 0 {
                count_drop(DropReason::NoLocalEndpoints, bytes);
                return TC_ACT_SHOT;
            }
            // No endpoint at all: reject at once, as kube-proxy does.
            count_drop(DropReason::NoEndpoints, bytes);
            let answer = if flow.protocol == IPPROTO_TCP {
                reject::tcp_reset(ctx, flow)
            } else {
                reject::icmp_port_unreachable(ctx, flow)
            };
            return answer.unwrap_or(TC_ACT_SHOT);
        };
        if conntrack::record(flow, service.service_id, backend_id, &backend, now).is_err() {
            count_drop(DropReason::ConntrackFull, bytes);
            return TC_ACT_SHOT;
        }
        count_flow(service.service_id, backend_id, bytes, true);
        let flags = if backend.address == flow.source {
            CONNTRACK_FLAG_HAIRPIN
        } else {
            0
        };
        forward(ctx, flow, flags, (backend.address, backend.port))
    }

    #[inline(always)]
    fn to_pod(ctx: &TcContext, flow: &Ipv4Flow) -> i32 {
        let Some(entry) = CONNTRACK.get_ptr_mut(conntrack::reply_key(flow)) else {
            return TC_ACT_OK;
        };
        // SAFETY: the pointer comes from a successful lookup; the value is copied at once.
        let reply = unsafe { *entry };
        let now = conntrack::now_ns();
        // SAFETY: see above.
        unsafe {
            (*entry).last_seen_ns = now;
            (*entry).flags |= CONNTRACK_FLAG_SEEN_REPLY;
        }
        conntrack::touch_forward_from_reply(flow, &reply, now);
        count_flow(
            reply.service_id,
            reply.backend_id,
            u64::from(ctx.len()),
            false,
        );
        translate(ctx, flow, Side::Source, reply.nat_address, reply.nat_port)
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "tc_pod holds BPF programs: it is built for bpfel-unknown-none and embedded in skiff-proxy"
    );
    std::process::exit(2);
}
