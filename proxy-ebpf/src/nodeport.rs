//! North-south load balancing: what to do with a TCP/UDP packet that arrived from outside the
//! cluster on the node's uplink (NodePort, external IP, load-balancer IP, and the replies of
//! such flows from remote backends).
//!
//! Owns the decision only: conntrack lookups and entries of external flows, source ranges,
//! Maglev backend choice, whether a flow is source-NATed (a remote backend in SNAT mode) and the
//! SNAT port allocation. Returns a [`Verdict`] naming the rewrite; the attach point (XDP or TC)
//! applies it and forwards the packet. Never touches packet memory.

use proxy_common::{
    BACKEND_FLAG_LOCAL, Backend, CONNTRACK_FLAG_DSR, CONNTRACK_FLAG_EXTERNAL,
    CONNTRACK_FLAG_SEEN_REPLY, CONNTRACK_FLAG_SNAT, ConntrackValue, DropReason, IPPROTO_TCP,
    ProxyConfig, SERVICE_FLAG_DROP_WHEN_EMPTY, SERVICE_FLAG_DSR, SERVICE_FLAG_EXTERNAL_LOCAL,
    SNAT_PORT_ATTEMPTS, TcpState, maglev_flow_hash, snat_port_candidate, tcp_reopens,
};

use crate::{conntrack, lb, maps::CONNTRACK, parse::Ipv4Flow, stats::count_flow};

/// The rewrite of one packet: its new source and destination (address, port; network byte
/// order). Fields that stay the same hold the packet's own values.
#[derive(Clone, Copy)]
pub struct Translation {
    pub source: (u32, u16),
    pub destination: (u32, u16),
    /// The packet goes to a backend on this node (hand it to the kernel, which routes it into
    /// the pod); otherwise it leaves through the uplink.
    pub local: bool,
    /// A reply on its way back to the client.
    pub reply: bool,
    /// DSR: the packet, unchanged, is tunnelled (IPIP) towards the node of this backend address.
    pub tunnel_to: Option<u32>,
}

pub enum Verdict {
    /// Not a north-south flow of ours: hand the packet to the kernel unchanged.
    Pass,
    Drop(DropReason),
    Translate(Translation),
}

/// How the attach point can handle a north-south packet.
#[derive(Clone, Copy)]
pub struct Capabilities {
    /// The attach point can tunnel (IPIP) a DSR flow to a remote backend's node (XDP).
    pub tunnel: bool,
}

/// Decides what happens to `flow` (`bytes` long) arriving on the uplink; `tunnelled`: another
/// node sent it here in DSR mode (decapsulated already), for a backend of this node.
#[inline(always)]
pub fn handle(flow: &Ipv4Flow, bytes: u64, tunnelled: bool, capabilities: Capabilities) -> Verdict {
    let now = conntrack::now_ns();
    if !tunnelled && let Some(translation) = reply(flow, bytes, now) {
        return Verdict::Translate(translation);
    }
    if let Some(translation) = existing_flow(flow, bytes, now) {
        return Verdict::Translate(translation);
    }
    new_flow(flow, bytes, now, tunnelled, capabilities)
}

/// A reply of an external flow from a remote backend: back to the client, from the address the
/// client used.
#[inline(always)]
fn reply(flow: &Ipv4Flow, bytes: u64, now: u64) -> Option<Translation> {
    let entry = CONNTRACK.get_ptr_mut(conntrack::reply_key(flow))?;
    // SAFETY: the pointer comes from a successful lookup; the value is copied at once.
    let reply = unsafe { *entry };
    if reply.flags & CONNTRACK_FLAG_EXTERNAL == 0 {
        return None;
    }
    // SAFETY: see above; only this flow's packets write these fields.
    unsafe {
        (*entry).last_seen_ns = now;
        (*entry).flags |= CONNTRACK_FLAG_SEEN_REPLY;
    }
    conntrack::touch_forward_from_reply(flow, &reply, now);
    count_flow(reply.service_id, reply.backend_id, bytes, false);
    Some(reverse_translation(flow, &reply))
}

/// The rewrite of a reply of an external flow (`reply` is its reply entry): from the frontend,
/// to the client (restored from the entry when the flow was source-NATed).
#[inline(always)]
pub fn reverse_translation(flow: &Ipv4Flow, reply: &ConntrackValue) -> Translation {
    let destination = if reply.flags & CONNTRACK_FLAG_SNAT != 0 {
        (reply.snat_address, reply.snat_port)
    } else {
        (flow.destination, flow.destination_port)
    };
    Translation {
        source: (reply.nat_address, reply.nat_port),
        destination,
        local: false,
        reply: true,
        tunnel_to: None,
    }
}

/// A packet of an external flow already balanced: same backend, same SNAT port.
#[inline(always)]
fn existing_flow(flow: &Ipv4Flow, bytes: u64, now: u64) -> Option<Translation> {
    let entry = CONNTRACK.get_ptr_mut(conntrack::forward_key(flow))?;
    // SAFETY: the pointer comes from a successful lookup; the value is copied at once.
    let current = unsafe { *entry };
    if current.flags & CONNTRACK_FLAG_EXTERNAL == 0 {
        return None;
    }
    let config = conntrack::config();
    let reopened = flow.protocol == IPPROTO_TCP
        && tcp_reopens(TcpState::from_byte(current.state), flow.tcp_flags);
    if reopened || conntrack::is_expired(&current, &config, now) {
        return None;
    }
    let backend = lb::backend(current.backend_id)?;
    if backend.address != current.nat_address || backend.port != current.nat_port {
        return None;
    }
    // SAFETY: see above.
    unsafe {
        (*entry).last_seen_ns = now;
        (*entry).state = conntrack::advance(flow, current.state, false);
    }
    count_flow(current.service_id, current.backend_id, bytes, false);
    if current.flags & CONNTRACK_FLAG_DSR != 0 {
        return Some(tunnelled_unchanged(flow, current.nat_address));
    }
    let source = if current.flags & CONNTRACK_FLAG_SNAT != 0 {
        (current.snat_address, current.snat_port)
    } else {
        (flow.source, flow.source_port)
    };
    Some(Translation {
        source,
        destination: (current.nat_address, current.nat_port),
        local: current.flags & CONNTRACK_FLAG_SNAT == 0,
        reply: false,
        tunnel_to: None,
    })
}

/// The packet as it is, tunnelled to the node of `backend_address`.
#[inline(always)]
fn tunnelled_unchanged(flow: &Ipv4Flow, backend_address: u32) -> Translation {
    Translation {
        source: (flow.source, flow.source_port),
        destination: (flow.destination, flow.destination_port),
        local: false,
        reply: false,
        tunnel_to: Some(backend_address),
    }
}

#[inline(always)]
fn new_flow(
    flow: &Ipv4Flow,
    bytes: u64,
    now: u64,
    tunnelled: bool,
    capabilities: Capabilities,
) -> Verdict {
    let Some(service) = lb::external_service_of(flow, tunnelled) else {
        return Verdict::Pass;
    };
    if !lb::source_allowed(&service, flow.source) {
        return Verdict::Drop(DropReason::SourceRangeDenied);
    }
    let hash = maglev_flow_hash(
        flow.source,
        flow.source_port,
        flow.destination_port,
        flow.protocol,
    );
    let Some((backend_id, backend)) = lb::select(&service, flow.source, now, hash) else {
        if service.backend_count != 0 {
            return Verdict::Drop(DropReason::MissingBackend);
        }
        if service.flags & SERVICE_FLAG_DROP_WHEN_EMPTY != 0 {
            return Verdict::Drop(DropReason::NoLocalEndpoints);
        }
        // No endpoint at all: the kernel answers a NodePort with RST / port unreachable, as
        // for any port nothing listens on.
        return Verdict::Pass;
    };
    let local =
        backend.flags & BACKEND_FLAG_LOCAL != 0 || service.flags & SERVICE_FLAG_EXTERNAL_LOCAL != 0;
    if tunnelled && !local {
        return Verdict::Drop(DropReason::TunnelledBackendNotLocal);
    }
    // DSR for TCP (UDP is source-NATed: a datagram flow has no handshake that would keep both
    // nodes' choices in step).
    if !local
        && capabilities.tunnel
        && service.flags & SERVICE_FLAG_DSR != 0
        && flow.protocol == IPPROTO_TCP
    {
        if record_tunnelled(flow, service.service_id, backend_id, &backend, now).is_err() {
            return Verdict::Drop(DropReason::ConntrackFull);
        }
        count_flow(service.service_id, backend_id, bytes, true);
        return Verdict::Translate(tunnelled_unchanged(flow, backend.address));
    }
    let snat = if local {
        None
    } else {
        let config = conntrack::config();
        if config.node_address == 0 {
            // No uplink address to return through: leave the packet to the kernel.
            return Verdict::Pass;
        }
        match claim_snat_port(flow, &backend, &config, hash, now) {
            Some(port) => Some((config.node_address, port)),
            None => return Verdict::Drop(DropReason::SnatPortsExhausted),
        }
    };
    if record(flow, service.service_id, backend_id, &backend, snat, now).is_err() {
        return Verdict::Drop(DropReason::ConntrackFull);
    }
    count_flow(service.service_id, backend_id, bytes, true);
    Verdict::Translate(Translation {
        source: snat.unwrap_or((flow.source, flow.source_port)),
        destination: (backend.address, backend.port),
        local,
        reply: false,
        tunnel_to: None,
    })
}

/// Records a DSR flow on the ingress node: the forward entry only (the backend's node keeps its
/// own entries and answers the client itself).
#[inline(always)]
fn record_tunnelled(
    flow: &Ipv4Flow,
    service_id: u32,
    backend_id: u32,
    backend: &Backend,
    now: u64,
) -> Result<(), i32> {
    let forward = conntrack::forward_entry(
        flow,
        service_id,
        backend_id,
        backend,
        CONNTRACK_FLAG_EXTERNAL | CONNTRACK_FLAG_DSR,
        (0, 0),
        now,
    );
    CONNTRACK.insert(conntrack::forward_key(flow), forward, 0)
}

/// Finds a node port whose reply tuple (backend → node:port) is free, or held by an expired
/// flow, trying [`SNAT_PORT_ATTEMPTS`] ports from the flow's hash on. Returns it in network
/// order; the reply entry written by [`record`] claims it.
#[inline(always)]
fn claim_snat_port(
    flow: &Ipv4Flow,
    backend: &Backend,
    config: &ProxyConfig,
    hash: u32,
    now: u64,
) -> Option<u16> {
    for attempt in 0..SNAT_PORT_ATTEMPTS {
        let port =
            snat_port_candidate(config.snat_port_min, config.snat_port_max, hash, attempt).to_be();
        let key = conntrack::backend_reply_key(flow, backend, (config.node_address, port));
        match CONNTRACK.get_ptr(key) {
            None => return Some(port),
            Some(entry) => {
                // SAFETY: the pointer comes from a successful lookup; the value is copied.
                let holder = unsafe { *entry };
                if conntrack::is_expired(&holder, config, now) {
                    return Some(port);
                }
            }
        }
    }
    None
}

/// Records an external flow: the forward entry (client → frontend, naming the backend and the
/// SNAT address) and the reply entry (backend → node or client, naming the frontend and the
/// client).
#[inline(always)]
fn record(
    flow: &Ipv4Flow,
    service_id: u32,
    backend_id: u32,
    backend: &Backend,
    snat: Option<(u32, u16)>,
    now: u64,
) -> Result<(), i32> {
    let (flags, snat_address, snat_port) = match snat {
        Some((address, port)) => (CONNTRACK_FLAG_EXTERNAL | CONNTRACK_FLAG_SNAT, address, port),
        None => (CONNTRACK_FLAG_EXTERNAL, 0, 0),
    };
    let forward = conntrack::forward_entry(
        flow,
        service_id,
        backend_id,
        backend,
        flags,
        (snat_address, snat_port),
        now,
    );
    // Replies come back to the node's SNAT port (restoring the client), or to the client.
    let (reply_key, client) = match snat {
        Some(node) => (
            conntrack::backend_reply_key(flow, backend, node),
            (flow.source, flow.source_port),
        ),
        None => (
            conntrack::backend_reply_key(flow, backend, (flow.source, flow.source_port)),
            (0, 0),
        ),
    };
    let reply = ConntrackValue {
        nat_address: flow.destination,
        nat_port: flow.destination_port,
        snat_address: client.0,
        snat_port: client.1,
        ..forward
    };
    CONNTRACK.insert(reply_key, reply, 0)?;
    CONNTRACK.insert(conntrack::forward_key(flow), forward, 0)
}
