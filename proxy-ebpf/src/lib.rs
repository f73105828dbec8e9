//! Shared kernel-side logic for Skiff's BPF programs.
//!
//! Each attach point is one binary (`tc_pod`, `xdp_uplink`) that reads as a pipeline over the
//! `#[inline(always)]` modules here. This crate owns packet parsing and statistics; it must not
//! define maps (every program object defines its own) nor know about attach points.
//!
//! Everything is compiled only for `target_arch = "bpf"`; on the host the library is empty.
#![no_std]

#[cfg(target_arch = "bpf")]
pub mod parse;
#[cfg(target_arch = "bpf")]
pub mod stats;

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves every path terminates without panicking; this is never reached.
    loop {}
}
