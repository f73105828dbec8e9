//! Rejecting connections to services without endpoints, as kube-proxy's `REJECT` rule does.
//!
//! Owns turning the offending packet, in place, into an answer from the service VIP and sending
//! it back into the pod it came from: a TCP segment becomes a RST (RFC 793 reset generation), a
//! UDP datagram becomes an ICMP port unreachable. The client fails at once with ECONNREFUSED
//! instead of timing out. A RST rather than ICMP for TCP because the answer is produced while the
//! client's `connect()` may still hold its socket lock: Linux queues a RST in the socket backlog,
//! but drops an ICMP error that arrives then (`LockDroppedIcmps`). Only IPv4 packets without IP
//! options are answered; the caller drops the others.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    cty::c_long,
    helpers::bpf_skb_change_tail,
    programs::TcContext,
};

use crate::{
    nat,
    parse::{ETH_HEADER_LEN, Ipv4Flow},
};

/// The original IPv4 header (no options) and the first 8 bytes of its payload, as RFC 792 quotes.
const QUOTE_LEN: usize = 28;
const IPV4_HEADER_LEN: usize = 20;
const ICMP_HEADER_LEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const IPPROTO_ICMP: u8 = 1;
/// TOS of ICMP errors: precedence "internetwork control", as Linux's icmp_send uses.
const ICMP_ERROR_TOS: u8 = 0xc0;
const TCP_HEADER_LEN: usize = 20;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const IPPROTO_TCP: u8 = 6;
/// Don't fragment, as Linux sets on the resets it sends.
const IPV4_DONT_FRAGMENT: u16 = 0x4000;

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

/// An IPv4 header (no options) from `source` to `destination`, checksum included.
#[inline(always)]
fn ipv4_header(
    tos: u8,
    total_len: u16,
    frag_off: u16,
    protocol: u8,
    source: [u8; 4],
    destination: [u8; 4],
) -> [u8; IPV4_HEADER_LEN] {
    let mut ip = [0u8; IPV4_HEADER_LEN];
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
    ip[8] = 64;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&source);
    ip[16..20].copy_from_slice(&destination);
    let check = fold(sum_words(&ip, 0));
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    ip
}

/// Rewrites the TCP segment of `flow` into the reset RFC 793 prescribes for it (from the VIP to
/// the client) and sends it back out of the interface it arrived on. Returns the TC verdict.
#[inline(always)]
pub fn tcp_reset(ctx: &TcContext, flow: &Ipv4Flow) -> Result<i32, c_long> {
    if flow.l4 - flow.l3 != IPV4_HEADER_LEN {
        return Ok(TC_ACT_SHOT);
    }
    let ip: [u8; IPV4_HEADER_LEN] = ctx.load(flow.l3)?;
    let tcp: [u8; TCP_HEADER_LEN] = ctx.load(flow.l4)?;
    let total_len = u32::from(u16::from_be_bytes([ip[2], ip[3]]));
    let data_offset = u32::from(tcp[12] >> 4) * 4;
    let flags = tcp[13];
    let sequence = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let acknowledgement = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    // RFC 793 "Reset Generation": take the sequence number from the segment's ACK if it has one;
    // otherwise sequence 0 and acknowledge everything the segment occupied.
    let (reset_sequence, reset_acknowledgement, reset_flags) = if flags & TCP_ACK != 0 {
        (acknowledgement, 0, TCP_RST)
    } else {
        let mut length = total_len.saturating_sub(IPV4_HEADER_LEN as u32 + data_offset);
        if flags & TCP_SYN != 0 {
            length += 1;
        }
        if flags & TCP_FIN != 0 {
            length += 1;
        }
        (0, sequence.wrapping_add(length), TCP_RST | TCP_ACK)
    };
    // SAFETY: the helper only reads the skb pointer the kernel passed to this program.
    let trimmed = unsafe {
        bpf_skb_change_tail(
            ctx.skb.skb,
            (ETH_HEADER_LEN + IPV4_HEADER_LEN + TCP_HEADER_LEN) as u32,
            0,
        )
    };
    if trimmed != 0 {
        return Err(trimmed);
    }
    let source = flow.destination.to_ne_bytes();
    let destination = flow.source.to_ne_bytes();
    let ip = ipv4_header(
        0,
        (IPV4_HEADER_LEN + TCP_HEADER_LEN) as u16,
        IPV4_DONT_FRAGMENT,
        IPPROTO_TCP,
        source,
        destination,
    );
    let mut reset = [0u8; TCP_HEADER_LEN];
    reset[0..2].copy_from_slice(&flow.destination_port.to_ne_bytes());
    reset[2..4].copy_from_slice(&flow.source_port.to_ne_bytes());
    reset[4..8].copy_from_slice(&reset_sequence.to_be_bytes());
    reset[8..12].copy_from_slice(&reset_acknowledgement.to_be_bytes());
    reset[12] = 5 << 4;
    reset[13] = reset_flags;
    let pseudo = sum_words(
        &source,
        sum_words(&destination, u32::from(IPPROTO_TCP) + TCP_HEADER_LEN as u32),
    );
    let check = fold(sum_words(&reset, pseudo));
    reset[16..18].copy_from_slice(&check.to_be_bytes());
    ctx.store(ETH_HEADER_LEN, &ip, 0)?;
    ctx.store(ETH_HEADER_LEN + IPV4_HEADER_LEN, &reset, 0)?;
    nat::bounce(ctx)
}

/// Rewrites the packet of `flow` into an ICMP port unreachable for its sender and redirects it
/// back out of the interface it arrived on. Returns the TC verdict.
#[inline(always)]
pub fn icmp_port_unreachable(ctx: &TcContext, flow: &Ipv4Flow) -> Result<i32, c_long> {
    if flow.l4 - flow.l3 != IPV4_HEADER_LEN {
        return Ok(TC_ACT_SHOT);
    }
    let quote: [u8; QUOTE_LEN] = ctx.load(flow.l3)?;
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
    let ip = ipv4_header(
        ICMP_ERROR_TOS,
        total_len,
        0,
        IPPROTO_ICMP,
        flow.destination.to_ne_bytes(),
        flow.source.to_ne_bytes(),
    );
    let mut icmp = [0u8; ICMP_HEADER_LEN];
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = ICMP_PORT_UNREACH;
    let icmp_check = fold(sum_words(&quote, sum_words(&icmp, 0)));
    icmp[2..4].copy_from_slice(&icmp_check.to_be_bytes());
    ctx.store(ETH_HEADER_LEN, &ip, 0)?;
    ctx.store(ETH_HEADER_LEN + IPV4_HEADER_LEN, &icmp, 0)?;
    nat::bounce(ctx)
}
