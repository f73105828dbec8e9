//! Programs for the node's uplink: north-south service traffic.
//!
//! - `xdp_uplink` (XDP): parse → count → `nodeport::handle` (reply of a remote backend, packet of
//!   a known external flow, or a new flow to a NodePort / external IP / load-balancer IP) →
//!   in-place rewrite → local backend: to the kernel, which routes it into the pod; remote
//!   backend or client: FIB lookup and `XDP_TX`/`XDP_REDIRECT`, or a hand-off to `tc_uplink`
//!   when the neighbour is unresolved. Everything else passes unchanged.
//! - `tc_uplink` (TC ingress of the uplink): sends frames `xdp_uplink` handed off with
//!   `bpf_redirect_neigh`; passes every other packet.
//! - `tc_uplink_fallback` (TC ingress of the uplink, instead of both above, for devices without
//!   XDP): the same pipeline on the skb.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {

    use aya_ebpf::{
        bindings::{
            TC_ACT_OK, TC_ACT_SHOT,
            xdp_action::{XDP_DROP, XDP_PASS},
        },
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };
    use proxy_common::{DropReason, ExternalPath};
    use proxy_ebpf::{
        conntrack,
        maps::PROTOCOL_STATS,
        nodeport::{self, Capabilities, Translation, Verdict},
        parse::{Frame, IPV4_TOTAL_LENGTH_OFFSET, Ipv4Flow, classify, ipv4_flow},
        route::{self, NextHop, RouteQuery},
        skb,
        stats::{count_drop, count_external, count_protocol},
        tunnel::{self, IPPROTO_IPIP},
        xdp_nat,
    };

    #[xdp]
    pub fn xdp_uplink(ctx: XdpContext) -> u32 {
        let frame = Frame::new(ctx.data(), ctx.data_end());
        let bytes = frame.len() as u64;
        count_protocol(&PROTOCOL_STATS, classify(&frame), bytes);
        // A DSR packet another ingress node tunnelled here for one of this node's backends.
        let node_address = conntrack::config().node_address;
        let tunnelled = node_address != 0 && tunnel::decapsulate(&ctx, node_address);
        if tunnelled {
            count_external(ExternalPath::Decapsulated, bytes);
        }
        let frame = Frame::new(ctx.data(), ctx.data_end());
        let Some(flow) = ipv4_flow(&frame) else {
            return XDP_PASS;
        };
        match nodeport::handle(&flow, bytes, tunnelled, Capabilities { tunnel: true }) {
            Verdict::Pass => XDP_PASS,
            Verdict::Drop(reason) => drop(reason, bytes),
            Verdict::Translate(translation) => forward(&ctx, &frame, &flow, &translation, bytes),
        }
    }

    #[classifier]
    pub fn tc_uplink(ctx: TcContext) -> i32 {
        if let Some(ifindex) = route::tc_handoff(&ctx, conntrack::config().node_address) {
            return route::tc_redirect_neighbour(ifindex);
        }
        TC_ACT_OK
    }

    /// The TC fallback for uplinks without XDP (`--xdp-mode tc`): the same decisions as
    /// `xdp_uplink`, applied to the skb and sent with `bpf_redirect_neigh`.
    #[classifier]
    pub fn tc_uplink_fallback(ctx: TcContext) -> i32 {
        let bytes = u64::from(ctx.len());
        count_protocol(&PROTOCOL_STATS, classify(&skb::frame(&ctx)), bytes);
        let Some(flow) = skb::flow(&ctx) else {
            return TC_ACT_OK;
        };
        // No IPIP here: DSR flows are source-NATed instead.
        match nodeport::handle(&flow, bytes, false, Capabilities { tunnel: false }) {
            Verdict::Pass => TC_ACT_OK,
            Verdict::Drop(reason) => {
                count_drop(reason, bytes);
                TC_ACT_SHOT
            }
            Verdict::Translate(translation) => {
                let path = if translation.reply {
                    ExternalPath::ReplyNeighbour
                } else {
                    ExternalPath::ForwardNeighbour
                };
                route::tc_forward_external(&ctx, &flow, &translation, path)
            }
        }
    }

    #[inline(always)]
    fn drop(reason: DropReason, bytes: u64) -> u32 {
        count_drop(reason, bytes);
        XDP_DROP
    }

    #[inline(always)]
    fn forward(
        ctx: &XdpContext,
        frame: &Frame,
        flow: &Ipv4Flow,
        translation: &Translation,
        bytes: u64,
    ) -> u32 {
        if let Some(backend_address) = translation.tunnel_to {
            return tunnel_to_backend_node(ctx, frame, flow, backend_address, bytes);
        }
        if xdp_nat::apply(frame, flow, translation).is_err() {
            return drop(DropReason::RewriteFailed, bytes);
        }
        if translation.local {
            count_external(ExternalPath::ForwardLocal, bytes);
            return XDP_PASS;
        }
        if !matches!(xdp_nat::decrement_ttl(frame, flow), Ok(true)) {
            return drop(DropReason::Unroutable, bytes);
        }
        let Some(total_length) = frame.header::<u16>(flow.l3 + IPV4_TOTAL_LENGTH_OFFSET) else {
            return drop(DropReason::RewriteFailed, bytes);
        };
        let ingress_ifindex = ctx.ingress_ifindex() as u32;
        let query = RouteQuery {
            ingress_ifindex,
            source: translation.source.0,
            destination: translation.destination.0,
            protocol: flow.protocol,
            source_port: translation.source.1,
            destination_port: translation.destination.1,
            // SAFETY: bounds-checked by `header`.
            total_length: u16::from_be(unsafe { *total_length }),
        };
        match route::next_hop(ctx, &query) {
            NextHop::Resolved {
                ifindex,
                destination_mac,
                source_mac,
                ..
            } => {
                if xdp_nat::set_ethernet(frame, &destination_mac, &source_mac).is_err() {
                    return drop(DropReason::RewriteFailed, bytes);
                }
                let verdict = route::xdp_transmit(ingress_ifindex, ifindex);
                let path = if translation.reply {
                    ExternalPath::ReplyTransmitted
                } else if ifindex == ingress_ifindex {
                    ExternalPath::ForwardTransmitted
                } else {
                    ExternalPath::ForwardRedirected
                };
                count_external(path, bytes);
                verdict
            }
            NextHop::Unresolved { ifindex, .. } => {
                match route::xdp_hand_to_tc(ctx, ifindex, conntrack::config().node_address) {
                    Some(verdict) => {
                        let path = if translation.reply {
                            ExternalPath::ReplyNeighbour
                        } else {
                            ExternalPath::ForwardNeighbour
                        };
                        count_external(path, bytes);
                        verdict
                    }
                    None => drop(DropReason::RewriteFailed, bytes),
                }
            }
            NextHop::Unroutable => drop(DropReason::Unroutable, bytes),
        }
    }

    /// DSR: wraps the client's unchanged packet in IPIP to the node the FIB names as the next
    /// hop towards `backend_address`, and sends it.
    #[inline(always)]
    fn tunnel_to_backend_node(
        ctx: &XdpContext,
        frame: &Frame,
        flow: &Ipv4Flow,
        backend_address: u32,
        bytes: u64,
    ) -> u32 {
        let node_address = conntrack::config().node_address;
        let Some(total_length) = frame.header::<u16>(flow.l3 + IPV4_TOTAL_LENGTH_OFFSET) else {
            return drop(DropReason::RewriteFailed, bytes);
        };
        let ingress_ifindex = ctx.ingress_ifindex() as u32;
        let query = RouteQuery {
            ingress_ifindex,
            source: node_address,
            destination: backend_address,
            protocol: IPPROTO_IPIP,
            source_port: 0,
            destination_port: 0,
            // SAFETY: bounds-checked by `header`.
            total_length: u16::from_be(unsafe { *total_length }).saturating_add(20),
        };
        let (ifindex, gateway, macs) = match route::next_hop(ctx, &query) {
            NextHop::Resolved {
                ifindex,
                gateway,
                destination_mac,
                source_mac,
            } => (ifindex, gateway, Some((destination_mac, source_mac))),
            NextHop::Unresolved { ifindex, gateway } => (ifindex, gateway, None),
            NextHop::Unroutable => return drop(DropReason::Unroutable, bytes),
        };
        let (destination_mac, source_mac) = macs.unwrap_or(([0; 6], [0; 6]));
        if tunnel::encapsulate(ctx, node_address, gateway, &destination_mac, &source_mac).is_err() {
            return drop(DropReason::RewriteFailed, bytes);
        }
        count_external(ExternalPath::ForwardTunnelled, bytes);
        if macs.is_some() {
            return route::xdp_transmit(ingress_ifindex, ifindex);
        }
        route::xdp_hand_to_tc(ctx, ifindex, conntrack::config().node_address).unwrap_or(XDP_DROP)
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "xdp_uplink holds BPF programs: it is built for bpfel-unknown-none and embedded in skiff-proxy"
    );
    std::process::exit(2);
}
