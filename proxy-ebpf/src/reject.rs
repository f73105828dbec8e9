//! Rejecting connections to services without endpoints, as kube-proxy's `REJECT` rule does.
//!
//! Owns turning the offending TCP SYN or UDP datagram, in place, into an ICMP port-unreachable
//! error from the service VIP back to the client, and sending it back into the pod it came from.
//! Linux fails a `connect()` in SYN_SENT at once with ECONNREFUSED on that error, and reports it
//! on a connected UDP socket, so clients fail fast instead of timing out. Only IPv4 packets
//! without IP options are rejected this way (their quote fits the fixed 28 bytes); others are
//! dropped by the caller.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    cty::c_long,
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};

use crate::parse::{ETH_HEADER_LEN, Ipv4Flow};

/// The original IPv4 header (no options) and the first 8 bytes of its payload, as RFC 792 quotes.
const QUOTE_LEN: usize = 28;
const IPV4_HEADER_LEN: usize = 20;
const ICMP_HEADER_LEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const IPPROTO_ICMP: u8 = 1;
/// TOS of ICMP errors: precedence "internetwork control", as Linux's icmp_send uses.
const ICMP_ERROR_TOS: u8 = 0xc0;

/// One's-complement sum of big-endian 16-bit words (not folded).
#[inline(always)]
fn sum_words(bytes: &[u8], mut sum: u32) -> u32 {
    let mut index = 0;
    while index + 1 < bytes.len() {
        sum += u32::from(u16::from_be_bytes([bytes[index], bytes[index + 1]]));
        index += 2;
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Rewrites the packet of `flow` into an ICMP port unreachable for its sender and redirects it
/// back out of the interface it arrived on. Returns the TC verdict.
#[inline(always)]
pub fn icmp_port_unreachable(ctx: &TcContext, flow: &Ipv4Flow) -> Result<i32, c_long> {
    if flow.l4 - flow.l3 != IPV4_HEADER_LEN {
        return Ok(TC_ACT_SHOT as i32);
    }
    let quote: [u8; QUOTE_LEN] = ctx.load(flow.l3)?;
    let macs: [u8; 12] = ctx.load(0)?;
    // Keep Ethernet + quote, then open room for the new IPv4 and ICMP headers after Ethernet.
    // SAFETY: the helper only reads the skb pointer the kernel passed to this program.
    let trimmed =
        unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HEADER_LEN + QUOTE_LEN) as u32, 0) };
    if trimmed != 0 {
        return Err(trimmed);
    }
    ctx.adjust_room(
        (IPV4_HEADER_LEN + ICMP_HEADER_LEN) as i32,
        BPF_ADJ_ROOM_MAC,
        0,
    )?;

    let total_len = (IPV4_HEADER_LEN + ICMP_HEADER_LEN + QUOTE_LEN) as u16;
    let source = flow.destination.to_ne_bytes();
    let destination = flow.source.to_ne_bytes();
    let mut ip = [0u8; IPV4_HEADER_LEN];
    ip[0] = 0x45;
    ip[1] = ICMP_ERROR_TOS;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = IPPROTO_ICMP;
    ip[12..16].copy_from_slice(&source);
    ip[16..20].copy_from_slice(&destination);
    let ip_check = fold(sum_words(&ip, 0));
    ip[10..12].copy_from_slice(&ip_check.to_be_bytes());

    let mut icmp = [0u8; ICMP_HEADER_LEN];
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = ICMP_PORT_UNREACH;
    let icmp_check = fold(sum_words(&quote, sum_words(&icmp, 0)));
    icmp[2..4].copy_from_slice(&icmp_check.to_be_bytes());

    let mut ethernet = [0u8; 12];
    ethernet[..6].copy_from_slice(&macs[6..12]);
    ethernet[6..].copy_from_slice(&macs[..6]);
    ctx.store(0, &ethernet, 0)?;
    ctx.store(ETH_HEADER_LEN, &ip, 0)?;
    ctx.store(ETH_HEADER_LEN + IPV4_HEADER_LEN, &icmp, 0)?;
    // SAFETY: a plain helper call; the skb's own interface is a valid target.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: as above.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}
