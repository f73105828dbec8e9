//! Service load-balancing maps: frontends, backend slots, backends and session affinity.
//!
//! Addresses and ports are stored in network byte order, exactly as they appear in packets, so the
//! datapath compares and copies them without conversion. Ids (`service_id`, `backend_id`) are
//! chosen by user space, stable for the life of the service or backend, and never 0.
//!
//! Update protocol (user space, `proxy-user/src/sync.rs`): a service's slots are written into the
//! generation that is not live, then the [`ServiceValue`] is replaced in one map update that
//! switches `generation` and `backend_count`, then the old generation's slots are deleted. A
//! reader therefore always sees a complete slot set.

/// Hash map [`ServiceKey`] → [`ServiceValue`]: every service frontend (ClusterIP:port/protocol).
pub const SERVICES_MAP: &str = "SERVICES";
/// Hash map [`BackendSlotKey`] → backend id (`u32`): the backends new flows may be sent to.
pub const BACKEND_SLOTS_MAP: &str = "BACKEND_SLOTS";
/// Hash map backend id (`u32`) → [`Backend`]: every backend an existing flow may still use.
pub const BACKENDS_MAP: &str = "BACKENDS";
/// LRU hash map [`AffinityKey`] → [`AffinityValue`]: ClientIP session affinity.
pub const AFFINITY_MAP: &str = "AFFINITY";

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// The service uses `sessionAffinity: ClientIP`.
pub const SERVICE_FLAG_AFFINITY: u8 = 1;
/// With no backend, drop instead of rejecting (`internalTrafficPolicy: Local` without a local
/// endpoint, as upstream kube-proxy does).
pub const SERVICE_FLAG_DROP_WHEN_EMPTY: u8 = 2;
/// New flows pick slot `flow_hash % backend_count` of a Maglev table (the slots hold the table)
/// instead of a random slot, so every node picks the same backend for a flow.
pub const SERVICE_FLAG_MAGLEV: u8 = 4;
/// A north-south frontend (NodePort, external IP, load-balancer IP): balanced by `xdp_uplink`
/// for traffic arriving from outside.
pub const SERVICE_FLAG_EXTERNAL: u8 = 8;
/// `externalTrafficPolicy: Local`: the client's address is kept (never SNAT).
pub const SERVICE_FLAG_EXTERNAL_LOCAL: u8 = 16;
/// `loadBalancerSourceRanges`: only sources in `SOURCE_RANGES` for this service may connect.
pub const SERVICE_FLAG_SOURCE_RANGES: u8 = 32;
/// Direct server return for TCP flows to remote backends: the ingress node tunnels the client's
/// packets (IPIP) to the backend's node, which answers the client directly.
pub const SERVICE_FLAG_DSR: u8 = 64;

/// Hash map node address (`u32`, network byte order) → [`NODEPORT_ADDRESS_PRESENT`]: the
/// addresses on which NodePort frontends (`SERVICES` keys with address 0) answer.
pub const NODEPORT_ADDRESSES_MAP: &str = "NODEPORT_ADDRESSES";
pub const NODEPORT_ADDRESS_PRESENT: u32 = 1;
/// LPM trie [`SourceRangeKey`] (prefix length 32 + the range's) → `u32` 1: the
/// `loadBalancerSourceRanges` of services with [`SERVICE_FLAG_SOURCE_RANGES`].
pub const SOURCE_RANGES_MAP: &str = "SOURCE_RANGES";

/// The data of an LPM trie key for `SOURCE_RANGES`: the service id in network byte order (so the
/// trie's bytewise prefix covers it first), then the source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceRangeKey {
    /// `service_id.to_be()`.
    pub service_id: u32,
    /// IPv4 address, network byte order.
    pub address: u32,
}

/// Prefix length of a `SOURCE_RANGES` key matching one service id and a source prefix.
pub const fn source_range_prefix_length(address_prefix_length: u8) -> u32 {
    32 + address_prefix_length as u32
}

/// The hash that places a north-south flow in a Maglev table: a function of the client's
/// address and port, the service port and the protocol (not of the node address the client
/// used, so a flow keeps its backend when it moves to another ingress node). All values as in
/// the packet (network byte order). Pure, so both sides and the unit tests share it.
pub const fn maglev_flow_hash(
    source: u32,
    source_port: u16,
    destination_port: u16,
    protocol: u8,
) -> u32 {
    let mut hash = (source as u64) << 32 | (source_port as u64) << 16 | destination_port as u64;
    hash ^= (protocol as u64) << 56;
    // splitmix64's finaliser: every input bit affects every output bit.
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash ^ (hash >> 32)) as u32
}

/// A service frontend as a packet names it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// IPv4 address, network byte order.
    pub address: u32,
    /// Port, network byte order.
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
    pub padding: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Stable id of this frontend; indexes the slots, affinity and statistics.
    pub service_id: u32,
    /// Number of slots `0..backend_count` in the live generation; 0 means no endpoint.
    pub backend_count: u16,
    /// Which slot generation (0 or 1) is live.
    pub generation: u8,
    /// `SERVICE_FLAG_*` bits.
    pub flags: u8,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds` when affinity is on.
    pub affinity_timeout_seconds: u32,
    pub padding: u32,
}

/// One slot of a service's backend set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendSlotKey {
    pub service_id: u32,
    pub generation: u8,
    pub padding: u8,
    pub slot: u16,
}

/// Backend state bits, as the EndpointSlice conditions say (for status output and metrics).
pub const BACKEND_FLAG_READY: u8 = 1;
pub const BACKEND_FLAG_SERVING: u8 = 2;
pub const BACKEND_FLAG_TERMINATING: u8 = 4;
/// The endpoint runs on this node.
pub const BACKEND_FLAG_LOCAL: u8 = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// IPv4 address, network byte order.
    pub address: u32,
    /// Target port, network byte order.
    pub port: u16,
    /// `BACKEND_FLAG_*` bits.
    pub flags: u8,
    pub padding: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub service_id: u32,
    /// Client IPv4 address, network byte order.
    pub client_address: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityValue {
    /// `bpf_ktime_get_ns()` of the last new flow that used this affinity.
    pub last_used_ns: u64,
    pub backend_id: u32,
    pub padding: u32,
}

/// LRU hash map [`SocketNatKey`] → [`SocketNatValue`]: the translations the cgroup socket hooks
/// made for sockets of the node itself (host network namespace), per socket cookie.
pub const SOCKET_NAT_MAP: &str = "SOCKET_NAT";
/// The key is (socket, VIP, service port): which backend this socket talks to.
pub const SOCKET_NAT_FORWARD: u8 = 0;
/// The key is (socket, backend address, backend port): which VIP to show instead.
pub const SOCKET_NAT_REVERSE: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SocketNatKey {
    /// `bpf_get_socket_cookie()` of the socket.
    pub socket_cookie: u64,
    /// IPv4 address, network byte order.
    pub address: u32,
    /// Port, network byte order.
    pub port: u16,
    /// `SOCKET_NAT_FORWARD` or `SOCKET_NAT_REVERSE`.
    pub direction: u8,
    pub padding: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketNatValue {
    /// Forward: the backend; reverse: the VIP (network byte order).
    pub address: u32,
    pub port: u16,
    pub padding: u16,
    pub backend_id: u32,
    pub service_id: u32,
}
