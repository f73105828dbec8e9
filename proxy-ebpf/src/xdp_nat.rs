//! In-place rewriting of XDP frames: addresses and ports with incremental checksums computed in
//! software (XDP has no checksum helpers), the TTL of forwarded packets, and Ethernet addresses.
//!
//! Owns writes to XDP packet memory; every access goes through `Frame`'s bounds check. Never
//! decides what to rewrite (`nodeport` does) or where a packet goes (`route` does).

use proxy_common::{checksum_update_u16, checksum_update_u32};

use crate::{
    nodeport::Translation,
    parse::{Frame, IPPROTO_UDP, Ipv4Flow, Ipv4Header, Ports},
};

/// The frame is shorter than the headers the flow was parsed from (cannot happen for a frame
/// that was not resized in between; checked anyway).
pub struct Truncated;

/// Rewrites the source and destination of `flow` as `translation` says.
#[inline(always)]
pub fn apply(frame: &Frame, flow: &Ipv4Flow, translation: &Translation) -> Result<(), Truncated> {
    let ip = frame.header_mut::<Ipv4Header>(flow.l3).ok_or(Truncated)?;
    let ports = frame.header_mut::<Ports>(flow.l4).ok_or(Truncated)?;
    let l4_check = frame
        .header_mut::<u16>(flow.l4_check_offset())
        .ok_or(Truncated)?;
    // SAFETY: every pointer was bounds-checked against the frame by `header_mut`; the frame is
    // this program's to write.
    unsafe {
        let mut ip_check = (*ip).check;
        let mut l4 = *l4_check;
        // A UDP checksum of zero means "none" and must stay zero.
        let l4_present = flow.protocol != IPPROTO_UDP || l4 != 0;
        let (new_source, new_source_port) = translation.source;
        let (new_destination, new_destination_port) = translation.destination;
        if flow.source != new_source {
            ip_check = checksum_update_u32(ip_check, flow.source, new_source);
            l4 = checksum_update_u32(l4, flow.source, new_source);
            (*ip).source = new_source;
        }
        if flow.destination != new_destination {
            ip_check = checksum_update_u32(ip_check, flow.destination, new_destination);
            l4 = checksum_update_u32(l4, flow.destination, new_destination);
            (*ip).destination = new_destination;
        }
        if flow.source_port != new_source_port {
            l4 = checksum_update_u16(l4, flow.source_port, new_source_port);
            (*ports).source = new_source_port;
        }
        if flow.destination_port != new_destination_port {
            l4 = checksum_update_u16(l4, flow.destination_port, new_destination_port);
            (*ports).destination = new_destination_port;
        }
        (*ip).check = ip_check;
        if l4_present {
            // A computed UDP checksum of zero is sent as all ones (RFC 768).
            *l4_check = if flow.protocol == IPPROTO_UDP && l4 == 0 {
                0xffff
            } else {
                l4
            };
        }
    }
    Ok(())
}

/// Decrements the TTL of a packet this node forwards. Returns `false` (frame unchanged) when
/// the TTL is exhausted: the packet must not be forwarded.
#[inline(always)]
pub fn decrement_ttl(frame: &Frame, flow: &Ipv4Flow) -> Result<bool, Truncated> {
    let ip = frame.header_mut::<Ipv4Header>(flow.l3).ok_or(Truncated)?;
    // SAFETY: bounds-checked above.
    unsafe {
        let ttl = (*ip).ttl;
        if ttl <= 1 {
            return Ok(false);
        }
        // The TTL and the protocol form one 16-bit word of the checksum (TTL first on the
        // wire); the protocol does not change.
        let protocol = (*ip).protocol;
        let old = u16::from_ne_bytes([ttl, protocol]);
        let new = u16::from_ne_bytes([ttl - 1, protocol]);
        (*ip).ttl = ttl - 1;
        (*ip).check = checksum_update_u16((*ip).check, old, new);
    }
    Ok(true)
}

/// Writes the Ethernet destination and source of the next hop.
#[inline(always)]
pub fn set_ethernet(
    frame: &Frame,
    destination: &[u8; 6],
    source: &[u8; 6],
) -> Result<(), Truncated> {
    let addresses = frame.header_mut::<[u8; 12]>(0).ok_or(Truncated)?;
    let mut both = [0u8; 12];
    both[..6].copy_from_slice(destination);
    both[6..].copy_from_slice(source);
    // SAFETY: bounds-checked above.
    unsafe {
        *addresses = both;
    }
    Ok(())
}
