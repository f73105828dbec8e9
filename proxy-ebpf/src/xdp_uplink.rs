//! XDP program for the node's uplink.
//!
//! Pipeline today: parse → count. It classifies every frame by protocol into the per-CPU
//! `PROTOCOL_STATS` map and always passes it (`XDP_PASS`); it never changes a frame.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{bindings::xdp_action::XDP_PASS, macros::xdp, programs::XdpContext};
    use proxy_ebpf::{
        maps::PROTOCOL_STATS,
        parse::{Frame, classify},
        stats::count_protocol,
    };

    #[xdp]
    pub fn xdp_uplink(ctx: XdpContext) -> u32 {
        let frame = Frame::new(ctx.data(), ctx.data_end());
        count_protocol(&PROTOCOL_STATS, classify(&frame), frame.len() as u64);
        XDP_PASS
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "xdp_uplink is a BPF program: it is built for bpfel-unknown-none and embedded in skiff-proxy"
    );
    std::process::exit(2);
}
