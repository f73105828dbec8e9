//! Address and port rewriting of TC packets with incremental checksum updates.
//!
//! Owns the DNAT of packets towards a backend and the reverse rewrite of replies. Uses the
//! kernel's checksum helpers, which also handle `CHECKSUM_PARTIAL` packets (checksum offload) and
//! UDP's "no checksum" zero. Never decides where a packet goes; `lb` and `conntrack` do that.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    cty::c_long,
    helpers::bpf_redirect,
    programs::TcContext,
};

use crate::parse::{
    IPPROTO_UDP, IPV4_CHECK_OFFSET, IPV4_DESTINATION_OFFSET, IPV4_SOURCE_OFFSET, Ipv4Flow,
    L4_DESTINATION_PORT_OFFSET, L4_SOURCE_PORT_OFFSET,
};

/// Which end of the flow to rewrite.
#[derive(Clone, Copy)]
pub enum Side {
    Source,
    Destination,
}

/// Rewrites the source or destination address and port of `flow` to `address`:`port` (network
/// byte order), fixing the IPv4 header checksum and the TCP/UDP checksum.
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    side: Side,
    address: u32,
    port: u16,
) -> Result<(), c_long> {
    let (old_address, old_port, address_offset, port_offset) = match side {
        Side::Source => (
            flow.source,
            flow.source_port,
            flow.l3 + IPV4_SOURCE_OFFSET,
            flow.l4 + L4_SOURCE_PORT_OFFSET,
        ),
        Side::Destination => (
            flow.destination,
            flow.destination_port,
            flow.l3 + IPV4_DESTINATION_OFFSET,
            flow.l4 + L4_DESTINATION_PORT_OFFSET,
        ),
    };
    // A UDP checksum of zero means "none" and must stay zero.
    let mangled_zero = if flow.protocol == IPPROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    let l4_check = flow.l4_check_offset();
    if address != old_address {
        ctx.l4_csum_replace(
            l4_check,
            u64::from(old_address),
            u64::from(address),
            BPF_F_PSEUDO_HDR as u64 | mangled_zero | 4,
        )?;
        ctx.l3_csum_replace(
            flow.l3 + IPV4_CHECK_OFFSET,
            u64::from(old_address),
            u64::from(address),
            4,
        )?;
        ctx.store(address_offset, &address, 0)?;
    }
    if port != old_port {
        ctx.l4_csum_replace(
            l4_check,
            u64::from(old_port),
            u64::from(port),
            mangled_zero | 2,
        )?;
        ctx.store(port_offset, &port, 0)?;
    }
    Ok(())
}

/// Swaps the Ethernet addresses and sends the packet back out of the interface it arrived on:
/// from a pod's host-side veth ingress straight back into the same pod, without routing.
/// Returns the TC verdict (`TC_ACT_REDIRECT`).
#[inline(always)]
pub fn bounce(ctx: &TcContext) -> Result<i32, c_long> {
    let macs: [u8; 12] = ctx.load(0)?;
    let mut ethernet = [0u8; 12];
    ethernet[..6].copy_from_slice(&macs[6..12]);
    ethernet[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &ethernet, 0)?;
    // SAFETY: reading a field of the context the kernel passed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: a plain helper call; the skb's own interface is a valid target.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}
