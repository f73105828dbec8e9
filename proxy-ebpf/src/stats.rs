//! Per-CPU packet statistics.
//!
//! Owns the update of [`PacketCounter`] slots in per-CPU array maps. Lock-free by construction
//! (each CPU writes its own slot); user space sums the slots. Never decides what a packet is.

use aya_ebpf::maps::PerCpuArray;
use proxy_common::{DropReason, ExternalPath, FlowCounter, PacketCounter, ProtocolClass};

use crate::maps::{BACKEND_STATS, DROP_STATS, EXTERNAL_PATH_STATS, SERVICE_STATS};

/// Adds one packet of `bytes` bytes to the counter of `class`.
#[inline(always)]
pub fn count_protocol(map: &PerCpuArray<PacketCounter>, class: ProtocolClass, bytes: u64) {
    count_packet(map, class.index(), bytes);
}

/// Adds a packet of `bytes` bytes (and a new flow when `new_flow`) to a per-CPU flow counter.
#[inline(always)]
fn count_flow_in(map: &PerCpuArray<FlowCounter>, index: u32, bytes: u64, new_flow: bool) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: as in `count_packet`.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
            if new_flow {
                (*counter).new_flows += 1;
            }
        }
    }
}

/// Counts a balanced packet for its service and backend.
#[inline(always)]
pub fn count_flow(service_id: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    count_flow_in(&SERVICE_STATS, service_id, bytes, new_flow);
    count_flow_in(&BACKEND_STATS, backend_id, bytes, new_flow);
}

/// Counts a packet dropped or rejected for `reason`.
#[inline(always)]
pub fn count_drop(reason: DropReason, bytes: u64) {
    count_packet(&DROP_STATS, reason.index(), bytes);
}

/// Counts a north-south packet handled along `path`.
#[inline(always)]
pub fn count_external(path: ExternalPath, bytes: u64) {
    count_packet(&EXTERNAL_PATH_STATS, path.index(), bytes);
}

#[inline(always)]
fn count_packet(map: &PerCpuArray<PacketCounter>, index: u32, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful map lookup and the slot belongs to this CPU;
        // programs run with preemption disabled, so nothing else writes it concurrently.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}
