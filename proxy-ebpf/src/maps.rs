//! Every map the programs use, defined once so all objects agree on their definitions.
//!
//! Service, backend, conntrack, affinity, configuration and service/backend statistics maps are
//! pinned by name (skiff-proxy passes the pin directory, `/sys/fs/bpf/skiff/` by default): every
//! object shares them, and a restarted skiff-proxy adopts them instead of creating new ones, so
//! forwarding and existing flows survive restarts. Sizes here are defaults; skiff-proxy overrides
//! them from its flags before the maps are created. `PROTOCOL_STATS` is per object (not pinned).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use proxy_common::{
    AffinityKey, AffinityValue, Backend, BackendSlotKey, ConntrackKey, ConntrackValue,
    DROP_REASON_COUNT, EXTERNAL_PATH_COUNT, FlowCounter, PROTOCOL_CLASS_COUNT, PacketCounter,
    ProxyConfig, ServiceKey, ServiceValue, SocketNatKey, SocketNatValue, SourceRangeKey,
};

#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(65_536, 0);

/// Not preallocated: a Maglev frontend holds M slots (16 381 by default), so the capacity is
/// large, and memory should follow what is used.
#[map]
pub static BACKEND_SLOTS: HashMap<BackendSlotKey, u32> =
    HashMap::pinned(1_048_576, BPF_F_NO_PREALLOC);

#[map]
pub static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(65_536, 0);

#[map]
pub static CONNTRACK: LruHashMap<ConntrackKey, ConntrackValue> = LruHashMap::pinned(262_144, 0);

#[map]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> = LruHashMap::pinned(65_536, 0);

#[map]
pub static CONFIG: Array<ProxyConfig> = Array::pinned(1, 0);

#[map]
pub static SERVICE_STATS: PerCpuArray<FlowCounter> = PerCpuArray::pinned(65_536, 0);

#[map]
pub static BACKEND_STATS: PerCpuArray<FlowCounter> = PerCpuArray::pinned(65_536, 0);

#[map]
pub static DROP_STATS: PerCpuArray<PacketCounter> = PerCpuArray::pinned(DROP_REASON_COUNT, 0);

#[map]
pub static PROTOCOL_STATS: PerCpuArray<PacketCounter> =
    PerCpuArray::with_max_entries(PROTOCOL_CLASS_COUNT, 0);

#[map]
pub static SOCKET_NAT: LruHashMap<SocketNatKey, SocketNatValue> = LruHashMap::pinned(65_536, 0);

#[map]
pub static NODEPORT_ADDRESSES: HashMap<u32, u32> = HashMap::pinned(256, 0);

/// LPM tries must be created without preallocation.
#[map]
pub static SOURCE_RANGES: LpmTrie<SourceRangeKey, u32> = LpmTrie::pinned(16_384, BPF_F_NO_PREALLOC);

#[map]
pub static EXTERNAL_PATH_STATS: PerCpuArray<PacketCounter> =
    PerCpuArray::pinned(EXTERNAL_PATH_COUNT, 0);
