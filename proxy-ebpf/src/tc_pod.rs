//! TC classifier for a pod's host-side veth.
//!
//! Pipeline today: parse → count. It classifies every packet by protocol into the per-CPU
//! `PROTOCOL_STATS` map and always passes it (`TC_ACT_OK`); it never changes a packet.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::TC_ACT_OK, macros::classifier, macros::map, maps::PerCpuArray,
        programs::TcContext,
    };
    use proxy_common::{PROTOCOL_CLASS_COUNT, PacketCounter};
    use proxy_ebpf::{
        parse::{Frame, classify},
        stats::count_protocol,
    };

    #[map]
    static PROTOCOL_STATS: PerCpuArray<PacketCounter> =
        PerCpuArray::with_max_entries(PROTOCOL_CLASS_COUNT, 0);

    #[classifier]
    pub fn tc_pod(ctx: TcContext) -> i32 {
        let frame = Frame::new(ctx.data(), ctx.data_end());
        count_protocol(&PROTOCOL_STATS, classify(&frame), u64::from(ctx.len()));
        TC_ACT_OK
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "tc_pod is a BPF program: it is built for bpfel-unknown-none and embedded in skiff-proxy"
    );
    std::process::exit(2);
}
