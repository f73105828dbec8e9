//! Shared kernel-side logic for Skiff's BPF programs.
//!
//! Each attach point is one binary (`tc_pod`, `sock`, `xdp_uplink`) that reads as a pipeline over the
//! `#[inline(always)]` modules here. This crate owns packet parsing, conntrack, backend selection, NAT, statistics and
//! the map definitions (`maps`, shared by every object); it must not know about attach points.
//!
//! Everything is compiled only for `target_arch = "bpf"`; on the host the library is empty.
#![no_std]

#[cfg(target_arch = "bpf")]
pub mod conntrack;
#[cfg(target_arch = "bpf")]
pub mod lb;
#[cfg(target_arch = "bpf")]
pub mod maps;
#[cfg(target_arch = "bpf")]
pub mod nat;
#[cfg(target_arch = "bpf")]
pub mod nodeport;
#[cfg(target_arch = "bpf")]
pub mod parse;
#[cfg(target_arch = "bpf")]
pub mod reject;
#[cfg(target_arch = "bpf")]
pub mod route;
#[cfg(target_arch = "bpf")]
pub mod skb;
#[cfg(target_arch = "bpf")]
pub mod socket;
#[cfg(target_arch = "bpf")]
pub mod stats;
#[cfg(target_arch = "bpf")]
pub mod tunnel;
#[cfg(target_arch = "bpf")]
pub mod xdp_nat;

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves every path terminates without panicking; this is never reached.
    loop {}
}
