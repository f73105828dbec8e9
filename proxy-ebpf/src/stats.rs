//! Per-CPU packet statistics.
//!
//! Owns the update of [`PacketCounter`] slots in per-CPU array maps. Lock-free by construction
//! (each CPU writes its own slot); user space sums the slots. Never decides what a packet is.

use aya_ebpf::maps::PerCpuArray;
use proxy_common::{PacketCounter, ProtocolClass};

/// Adds one packet of `bytes` bytes to the counter of `class`.
#[inline(always)]
pub fn count_protocol(map: &PerCpuArray<PacketCounter>, class: ProtocolClass, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(class.index()) {
        // SAFETY: the pointer comes from a successful map lookup and the slot belongs to this CPU;
        // programs run with preemption disabled, so nothing else writes it concurrently.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}
