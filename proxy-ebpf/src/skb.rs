//! Packet access for TC programs: the frame of an skb and its flow, pulling the headers into
//! the skb's linear area when they are not there yet.
//!
//! Owns the linearisation rule only; parsing is `parse`'s, rewriting `nat`'s.

use aya_ebpf::programs::TcContext;

use crate::parse::{Frame, Ipv4Flow, ipv4_flow};

/// Headers a balanced flow needs in the linear part of the skb (Ethernet, IPv4 with options,
/// TCP).
const HEADERS_MAX: u32 = 14 + 60 + 20;

/// The bytes of the skb's linear area.
#[inline(always)]
pub fn frame(ctx: &TcContext) -> Frame {
    Frame::new(ctx.data(), ctx.data_end())
}

/// The flow of this packet, pulling headers into the linear area when they are not there.
#[inline(always)]
pub fn flow(ctx: &TcContext) -> Option<Ipv4Flow> {
    if let Some(flow) = ipv4_flow(&frame(ctx)) {
        return Some(flow);
    }
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if ctx.len() > linear {
        let want = if ctx.len() < HEADERS_MAX {
            ctx.len()
        } else {
            HEADERS_MAX
        };
        if ctx.pull_data(want).is_ok() {
            return ipv4_flow(&frame(ctx));
        }
    }
    None
}
