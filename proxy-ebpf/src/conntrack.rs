//! BPF connection tracking for balanced flows.
//!
//! Owns the conntrack keys of a packet in each direction, entry creation (forward and reply entry
//! together), state and timestamp updates, and the expiry rule (per-state timeouts from the
//! `CONFIG` map). The forward entry is the single source of truth for a flow's TCP state; the
//! reply entry carries what replies need (the VIP to restore). Never rewrites packets.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use proxy_common::{
    Backend, CONNTRACK_DIRECTION_FORWARD, CONNTRACK_DIRECTION_REPLY, CONNTRACK_FLAG_HAIRPIN,
    CONNTRACK_FLAG_SEEN_REPLY, CONNTRACK_FLAG_SNAT, ConntrackKey, ConntrackValue, IPPROTO_TCP,
    PROXY_CONFIG_FLAG_WRITTEN, ProxyConfig, TcpState, tcp_next_state,
};

use crate::{maps::CONFIG, maps::CONNTRACK, parse::Ipv4Flow};

const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The datapath configuration, or upstream's defaults before skiff-proxy wrote one.
#[inline(always)]
pub fn config() -> ProxyConfig {
    match CONFIG.get(0) {
        Some(config) if config.flags & PROXY_CONFIG_FLAG_WRITTEN != 0 => *config,
        _ => ProxyConfig::default(),
    }
}

/// The key of `flow` as a packet from the client towards the service.
#[inline(always)]
pub fn forward_key(flow: &Ipv4Flow) -> ConntrackKey {
    ConntrackKey {
        source_address: flow.source,
        destination_address: flow.destination,
        source_port: flow.source_port,
        destination_port: flow.destination_port,
        protocol: flow.protocol,
        direction: CONNTRACK_DIRECTION_FORWARD,
        padding: 0,
    }
}

/// The key of `flow` as a reply from a backend towards a client.
#[inline(always)]
pub fn reply_key(flow: &Ipv4Flow) -> ConntrackKey {
    ConntrackKey {
        direction: CONNTRACK_DIRECTION_REPLY,
        ..forward_key(flow)
    }
}

/// The forward key of the flow a reply belongs to (client → VIP). A hairpin reply is addressed
/// to the VIP; its client is the pod that sends it. A source-NATed flow's reply is addressed to
/// the node; its client is in the entry.
#[inline(always)]
pub fn forward_key_of_reply(flow: &Ipv4Flow, reply: &ConntrackValue) -> ConntrackKey {
    let (client, client_port) = if reply.flags & CONNTRACK_FLAG_HAIRPIN != 0 {
        (flow.source, flow.destination_port)
    } else if reply.flags & CONNTRACK_FLAG_SNAT != 0 {
        (reply.snat_address, reply.snat_port)
    } else {
        (flow.destination, flow.destination_port)
    };
    ConntrackKey {
        source_address: client,
        destination_address: reply.nat_address,
        source_port: client_port,
        destination_port: reply.nat_port,
        protocol: flow.protocol,
        direction: CONNTRACK_DIRECTION_FORWARD,
        padding: 0,
    }
}

/// Whether an entry has been idle longer than its state allows.
#[inline(always)]
pub fn is_expired(entry: &ConntrackValue, config: &ProxyConfig, now: u64) -> bool {
    let timeout = u64::from(config.timeout_seconds(TcpState::from_byte(entry.state), entry.flags));
    now.saturating_sub(entry.last_seen_ns) > timeout * NANOSECONDS_PER_SECOND
}

/// The state after this packet, for an entry currently in `state`.
#[inline(always)]
pub fn advance(flow: &Ipv4Flow, state: u8, reply: bool) -> u8 {
    if flow.protocol == IPPROTO_TCP {
        tcp_next_state(TcpState::from_byte(state), flow.tcp_flags, reply) as u8
    } else {
        TcpState::None as u8
    }
}

/// The forward entry of a new flow of `flow` balanced to `backend`, with `flags` and the SNAT
/// address and port (0 when not source-NATed).
#[inline(always)]
pub fn forward_entry(
    flow: &Ipv4Flow,
    service_id: u32,
    backend_id: u32,
    backend: &Backend,
    flags: u8,
    snat: (u32, u16),
    now: u64,
) -> ConntrackValue {
    ConntrackValue {
        last_seen_ns: now,
        created_ns: now,
        backend_id,
        service_id,
        nat_address: backend.address,
        nat_port: backend.port,
        state: advance(flow, TcpState::None as u8, false),
        flags,
        snat_address: snat.0,
        snat_port: snat.1,
        padding: 0,
    }
}

/// The reply key of a flow answered by `backend` to `client` (address, port).
#[inline(always)]
pub fn backend_reply_key(flow: &Ipv4Flow, backend: &Backend, client: (u32, u16)) -> ConntrackKey {
    ConntrackKey {
        source_address: backend.address,
        destination_address: client.0,
        source_port: backend.port,
        destination_port: client.1,
        protocol: flow.protocol,
        direction: CONNTRACK_DIRECTION_REPLY,
        padding: 0,
    }
}

/// Records a new flow balanced to `backend`: the forward entry, then the reply entry.
#[inline(always)]
pub fn record(
    flow: &Ipv4Flow,
    service_id: u32,
    backend_id: u32,
    backend: &Backend,
    now: u64,
) -> Result<(), i32> {
    let hairpin = backend.address == flow.source;
    let flags = if hairpin { CONNTRACK_FLAG_HAIRPIN } else { 0 };
    let forward = forward_entry(flow, service_id, backend_id, backend, flags, (0, 0), now);
    CONNTRACK.insert(forward_key(flow), forward, 0)?;
    // Replies go to the client, or for a hairpin flow to the VIP the client was rewritten to.
    let client = if hairpin {
        flow.destination
    } else {
        flow.source
    };
    let reply_key = backend_reply_key(flow, backend, (client, flow.source_port));
    let reply = ConntrackValue {
        nat_address: flow.destination,
        nat_port: flow.destination_port,
        ..forward
    };
    CONNTRACK.insert(reply_key, reply, 0)
}

/// Marks the forward entry of a reply's flow as having seen a reply, advancing its state.
#[inline(always)]
pub fn touch_forward_from_reply(flow: &Ipv4Flow, reply: &ConntrackValue, now: u64) {
    if let Some(entry) = CONNTRACK.get_ptr_mut(forward_key_of_reply(flow, reply)) {
        // SAFETY: the pointer comes from a successful lookup; concurrent writers only store
        // timestamps and small state values, and a torn update is corrected by the next packet.
        unsafe {
            (*entry).last_seen_ns = now;
            (*entry).state = advance(flow, (*entry).state, true);
            (*entry).flags |= CONNTRACK_FLAG_SEEN_REPLY;
        }
    }
}
