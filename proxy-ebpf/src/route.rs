//! Forwarding of north-south packets after translation: the kernel's FIB lookup
//! (`bpf_fib_lookup`) for the next hop, then transmission from XDP, or from TC with
//! `bpf_redirect_neigh` where the neighbour is not resolved yet or the packet is in an skb.
//!
//! Owns the hand-off between `xdp_uplink` and the uplink's TC ingress program: a frame XDP
//! cannot send yet (no neighbour entry) is passed up with an 8-byte XDP metadata record naming
//! the egress interface, and `tc_uplink` redirects it from there with neighbour resolution —
//! before the kernel's routing input, which would drop a packet whose source is the node's own
//! address as a martian. Never decides translations.

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, TC_ACT_SHOT,
        bpf_fib_lookup,
        xdp_action::{XDP_PASS, XDP_TX},
    },
    helpers::{
        bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_xdp_adjust_meta,
    },
    programs::{TcContext, XdpContext},
};

use proxy_common::{DropReason, ExternalPath};

use crate::{
    nat::{self, Side},
    nodeport::Translation,
    parse::Ipv4Flow,
    stats::{count_drop, count_external},
};

const AF_INET: u8 = 2;

/// Marks the metadata record `xdp_uplink` leaves for `tc_uplink` ("SKF1").
pub const NEIGHBOUR_HANDOFF_MAGIC: u32 = 0x534b_4631;

/// The metadata record in front of a frame passed from XDP to TC for neighbour resolution.
///
/// An skb keeps its metadata length across a veth (the next node's XDP does not reset it when it
/// adds none), so a record can reach another node's `tc_uplink`: it names the node that wrote
/// it, and only that node acts on it.
#[repr(C)]
pub struct NeighbourHandoff {
    pub magic: u32,
    pub ifindex: u32,
    /// The writing node's `ProxyConfig::node_address`.
    pub node_address: u32,
}

/// The next hop of a translated packet.
pub enum NextHop {
    /// Out of `ifindex` to `destination_mac`, from `source_mac`; `gateway` is the next hop's
    /// address (the destination itself when it is on a connected network).
    Resolved {
        ifindex: u32,
        gateway: u32,
        destination_mac: [u8; 6],
        source_mac: [u8; 6],
    },
    /// Out of `ifindex` via `gateway`, but the neighbour is not resolved yet.
    Unresolved { ifindex: u32, gateway: u32 },
    /// No route (or forwarding disabled).
    Unroutable,
}

/// What a packet (already translated) looks like to the FIB.
pub struct RouteQuery {
    pub ingress_ifindex: u32,
    pub source: u32,
    pub destination: u32,
    pub protocol: u8,
    pub source_port: u16,
    pub destination_port: u16,
    /// IPv4 total length, host order (for the MTU check).
    pub total_length: u16,
}

/// Looks up the next hop for the program running with `ctx` (XDP or TC).
#[inline(always)]
pub fn next_hop<C: EbpfContext>(ctx: &C, query: &RouteQuery) -> NextHop {
    // SAFETY: an all-zero `bpf_fib_lookup` is a valid input (plain integers and unions of them).
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = query.protocol;
    params.sport = query.source_port;
    params.dport = query.destination_port;
    params.__bindgen_anon_1.tot_len = query.total_length;
    params.ifindex = query.ingress_ifindex;
    params.__bindgen_anon_3.ipv4_src = query.source;
    params.__bindgen_anon_4.ipv4_dst = query.destination;
    // SAFETY: `params` lives for the call and has the size passed.
    let result = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    // The lookup leaves the next hop's address in `ipv4_dst`.
    // SAFETY: reading the IPv4 member of a union the lookup filled for AF_INET.
    let gateway = unsafe { params.__bindgen_anon_4.ipv4_dst };
    match result as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => NextHop::Resolved {
            ifindex: params.ifindex,
            gateway,
            destination_mac: params.dmac,
            source_mac: params.smac,
        },
        BPF_FIB_LKUP_RET_NO_NEIGH => NextHop::Unresolved {
            ifindex: params.ifindex,
            gateway,
        },
        _ => NextHop::Unroutable,
    }
}

/// Sends a resolved frame from XDP: back out of the interface it came in on, or redirected.
#[inline(always)]
pub fn xdp_transmit(ingress_ifindex: u32, egress_ifindex: u32) -> u32 {
    if egress_ifindex == ingress_ifindex {
        return XDP_TX;
    }
    // SAFETY: a plain helper call; an unknown interface makes it return XDP_ABORTED.
    unsafe { bpf_redirect(egress_ifindex, 0) as u32 }
}

/// Passes a frame up with the neighbour hand-off record for `tc_uplink`. Returns the XDP
/// verdict, or `None` when the metadata area cannot be grown (the caller drops the frame).
#[inline(always)]
pub fn xdp_hand_to_tc(ctx: &XdpContext, egress_ifindex: u32, node_address: u32) -> Option<u32> {
    let length = size_of::<NeighbourHandoff>() as i32;
    // SAFETY: the context pointer is the one the kernel passed; a negative delta grows the
    // metadata area in front of the frame.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -length) } != 0 {
        return None;
    }
    let (metadata, data) = (ctx.metadata(), ctx.data());
    if metadata + size_of::<NeighbourHandoff>() > data {
        return None;
    }
    let record = metadata as *mut NeighbourHandoff;
    // SAFETY: the record lies inside the metadata area checked against `data` above.
    unsafe {
        (*record).magic = NEIGHBOUR_HANDOFF_MAGIC;
        (*record).ifindex = egress_ifindex;
        (*record).node_address = node_address;
    }
    Some(XDP_PASS)
}

/// The egress interface `xdp_uplink` of this node (`node_address`) asked for in the frame's
/// metadata, if it left a record.
#[inline(always)]
pub fn tc_handoff(ctx: &TcContext, node_address: u32) -> Option<u32> {
    // SAFETY: reading fields of the context the kernel passed.
    let (metadata, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if metadata + size_of::<NeighbourHandoff>() > data {
        return None;
    }
    let record = metadata as *const NeighbourHandoff;
    // SAFETY: the record lies inside the metadata area checked against `data` above.
    let (magic, ifindex, writer) =
        unsafe { ((*record).magic, (*record).ifindex, (*record).node_address) };
    (magic == NEIGHBOUR_HANDOFF_MAGIC && writer == node_address).then_some(ifindex)
}

/// Redirects an skb out of `ifindex`, resolving the neighbour (queueing the packet meanwhile).
/// Returns the TC verdict.
#[inline(always)]
pub fn tc_redirect_neighbour(ifindex: u32) -> i32 {
    // SAFETY: a plain helper call; without parameters the helper looks the next hop up itself.
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

/// The verdict for an skb that matched nothing here.
pub const TC_PASS: i32 = TC_ACT_OK;

/// Applies a north-south translation to an skb and redirects it towards its next hop with
/// neighbour resolution, counting it under `path` (replies of local backends at the pod's veth,
/// and the uplink's TC fallback). A packet for a local backend is passed to the kernel instead.
/// Returns the TC verdict.
#[inline(always)]
pub fn tc_forward_external(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    translation: &Translation,
    path: ExternalPath,
) -> i32 {
    let bytes = u64::from(ctx.len());
    let rewritten = nat::rewrite(
        ctx,
        flow,
        Side::Source,
        translation.source.0,
        translation.source.1,
    )
    .and_then(|()| {
        nat::rewrite(
            ctx,
            flow,
            Side::Destination,
            translation.destination.0,
            translation.destination.1,
        )
    });
    if rewritten.is_err() {
        count_drop(DropReason::RewriteFailed, bytes);
        return TC_ACT_SHOT;
    }
    if translation.local {
        count_external(ExternalPath::ForwardLocal, bytes);
        return TC_PASS;
    }
    let query = RouteQuery {
        // SAFETY: reading a field of the context the kernel passed to this program.
        ingress_ifindex: unsafe { (*ctx.skb.skb).ifindex },
        source: translation.source.0,
        destination: translation.destination.0,
        protocol: flow.protocol,
        source_port: translation.source.1,
        destination_port: translation.destination.1,
        total_length: 0,
    };
    match next_hop(ctx, &query) {
        NextHop::Resolved { ifindex, .. } | NextHop::Unresolved { ifindex, .. } => {
            count_external(path, bytes);
            tc_redirect_neighbour(ifindex)
        }
        NextHop::Unroutable => {
            count_drop(DropReason::Unroutable, bytes);
            TC_ACT_SHOT
        }
    }
}
