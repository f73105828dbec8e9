//! IPIP encapsulation and decapsulation of XDP frames, for direct server return: the ingress
//! node wraps the client's unchanged packet in an outer IPv4 header addressed to the backend's
//! node, which strips it and hands the inner packet to its own north-south pipeline.
//!
//! Owns the outer header (no options, protocol 4, a checksum computed from scratch) and the
//! head adjustments; every access goes through `Frame`'s bounds check. Never decides which
//! flows are tunnelled.

use core::mem::size_of;

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};

use crate::parse::{ETH_HEADER_LEN, ETH_P_IP, EthernetHeader, Frame, Ipv4Header};

/// IP protocol number of IPv4-in-IPv4.
pub const IPPROTO_IPIP: u8 = 4;
const OUTER_LENGTH: usize = size_of::<Ipv4Header>();
/// "More fragments" and fragment offset bits of `frag_off` (host order).
const FRAGMENT_BITS: u16 = 0x3fff;
const OUTER_TTL: u8 = 64;

/// Strips the outer header of an IPIP frame addressed to `node_address` (network order) and
/// returns whether it did; any other frame is left alone.
#[inline(always)]
pub fn decapsulate(ctx: &XdpContext, node_address: u32) -> bool {
    let frame = Frame::new(ctx.data(), ctx.data_end());
    let (Some(ethernet), Some(outer), Some(moved)) = (
        frame.header::<[u8; ETH_HEADER_LEN]>(0),
        frame.header::<Ipv4Header>(ETH_HEADER_LEN),
        // The Ethernet header is copied to just before the inner IPv4 header.
        frame.header_mut::<[u8; ETH_HEADER_LEN]>(OUTER_LENGTH),
    ) else {
        return false;
    };
    let Some(ether_type) = frame.header::<EthernetHeader>(0) else {
        return false;
    };
    // SAFETY: every pointer was bounds-checked by `Frame`; the frame is this program's to write.
    unsafe {
        if u16::from_be((*ether_type).ether_type) != ETH_P_IP
            || (*outer).version_ihl != 0x45
            || (*outer).protocol != IPPROTO_IPIP
            || (*outer).destination != node_address
            || u16::from_be((*outer).frag_off) & FRAGMENT_BITS != 0
        {
            return false;
        }
        let header = *ethernet;
        *moved = header;
        bpf_xdp_adjust_head(ctx.ctx, OUTER_LENGTH as i32) == 0
    }
}

/// The frame could not be grown or was shorter than its headers.
pub struct NoRoom;

/// Wraps the frame's IPv4 packet in an outer header `source` → `destination` (network order)
/// and writes the Ethernet addresses of the next hop.
#[inline(always)]
pub fn encapsulate(
    ctx: &XdpContext,
    source: u32,
    destination: u32,
    destination_mac: &[u8; 6],
    source_mac: &[u8; 6],
) -> Result<(), NoRoom> {
    let frame = Frame::new(ctx.data(), ctx.data_end());
    let inner = frame.header::<Ipv4Header>(ETH_HEADER_LEN).ok_or(NoRoom)?;
    // SAFETY: bounds-checked by `Frame`.
    let (inner_length, tos) = unsafe { (u16::from_be((*inner).total_length), (*inner).tos) };
    // SAFETY: the context pointer is the one the kernel passed; a negative delta grows the
    // frame at its head.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(OUTER_LENGTH as i32)) } != 0 {
        return Err(NoRoom);
    }
    let frame = Frame::new(ctx.data(), ctx.data_end());
    let ethernet = frame.header_mut::<EthernetHeader>(0).ok_or(NoRoom)?;
    let outer = frame
        .header_mut::<Ipv4Header>(ETH_HEADER_LEN)
        .ok_or(NoRoom)?;
    let words = frame
        .header::<[u16; OUTER_LENGTH / 2]>(ETH_HEADER_LEN)
        .ok_or(NoRoom)?;
    // SAFETY: bounds-checked by `Frame`; the frame is this program's to write.
    unsafe {
        (*ethernet).destination = *destination_mac;
        (*ethernet).source = *source_mac;
        (*ethernet).ether_type = ETH_P_IP.to_be();
        (*outer).version_ihl = 0x45;
        (*outer).tos = tos;
        (*outer).total_length = inner_length.wrapping_add(OUTER_LENGTH as u16).to_be();
        (*outer).id = 0;
        (*outer).frag_off = 0;
        (*outer).ttl = OUTER_TTL;
        (*outer).protocol = IPPROTO_IPIP;
        (*outer).check = 0;
        (*outer).source = source;
        (*outer).destination = destination;
        let mut sum: u32 = 0;
        for word in *words {
            sum += u32::from(word);
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        (*outer).check = !(sum as u16);
    }
    Ok(())
}
