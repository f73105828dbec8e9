//! Statistics maps: per-protocol packet counters, per-service and per-backend counters and drop
//! reasons, all per-CPU and summed by user space.

/// The class a packet is counted under by the packet-classification stage of every program.
///
/// The discriminant is the index into the per-CPU array map [`PROTOCOL_STATS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolClass {
    /// TCP over IPv4 or IPv6.
    Tcp = 0,
    /// UDP over IPv4 or IPv6.
    Udp = 1,
    /// ICMP (IPv4).
    Icmp = 2,
    /// ICMPv6.
    Icmpv6 = 3,
    /// Any other IP protocol (SCTP, GRE, ...), and IPv6 packets behind extension headers.
    /// Non-first IPv4 fragments are counted by their protocol field (they carry no L4 header).
    OtherIp = 4,
    /// Not IP: ARP, LLDP, ...
    NonIp = 5,
    /// An IP packet whose headers are cut short or inconsistent (truncated header, bad IHL).
    Malformed = 6,
}

impl ProtocolClass {
    /// Every class, in index order.
    pub const ALL: [ProtocolClass; PROTOCOL_CLASS_COUNT as usize] = [
        ProtocolClass::Tcp,
        ProtocolClass::Udp,
        ProtocolClass::Icmp,
        ProtocolClass::Icmpv6,
        ProtocolClass::OtherIp,
        ProtocolClass::NonIp,
        ProtocolClass::Malformed,
    ];

    /// The map index of this class.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The name used in metrics and status output.
    pub const fn name(self) -> &'static str {
        match self {
            ProtocolClass::Tcp => "tcp",
            ProtocolClass::Udp => "udp",
            ProtocolClass::Icmp => "icmp",
            ProtocolClass::Icmpv6 => "icmpv6",
            ProtocolClass::OtherIp => "other_ip",
            ProtocolClass::NonIp => "non_ip",
            ProtocolClass::Malformed => "malformed",
        }
    }
}

/// Number of entries in [`PROTOCOL_STATS_MAP`].
pub const PROTOCOL_CLASS_COUNT: u32 = 7;

/// Name of the per-CPU array, indexed by [`ProtocolClass`], holding a [`PacketCounter`] per class.
pub const PROTOCOL_STATS_MAP: &str = "PROTOCOL_STATS";

/// Packets and bytes seen; one per CPU in per-CPU maps, summed by user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounter {
    /// Number of packets.
    pub packets: u64,
    /// Sum of the packets' lengths at the attach point, link-layer header included.
    pub bytes: u64,
}

impl PacketCounter {
    /// The sum of two counters (used to add up per-CPU values).
    pub const fn add(self, other: PacketCounter) -> PacketCounter {
        PacketCounter {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// Why a program dropped or rejected a packet; the discriminant indexes [`DROP_STATS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A TCP/UDP connection to a service with no usable endpoint was rejected (RST / ICMP).
    NoEndpoints = 0,
    /// A packet to a service with `internalTrafficPolicy: Local` and no local endpoint (dropped,
    /// as upstream kube-proxy does).
    NoLocalEndpoints = 1,
    /// A new flow could not be recorded because the conntrack map refused the entry.
    ConntrackFull = 2,
    /// Rewriting the packet failed (a helper returned an error).
    RewriteFailed = 3,
    /// A service frontend points at a backend slot or backend that does not exist.
    MissingBackend = 4,
    /// A source outside a service's `loadBalancerSourceRanges`.
    SourceRangeDenied = 5,
    /// Every SNAT port a new flow tried was taken.
    SnatPortsExhausted = 6,
    /// A north-south packet could not be forwarded (no route to the backend or client).
    Unroutable = 7,
    /// A DSR packet tunnelled to this node whose flow this node would place on a backend that is
    /// not local (the nodes' endpoint views differ for a moment).
    TunnelledBackendNotLocal = 8,
}

impl DropReason {
    pub const ALL: [DropReason; DROP_REASON_COUNT as usize] = [
        DropReason::NoEndpoints,
        DropReason::NoLocalEndpoints,
        DropReason::ConntrackFull,
        DropReason::RewriteFailed,
        DropReason::MissingBackend,
        DropReason::SourceRangeDenied,
        DropReason::SnatPortsExhausted,
        DropReason::Unroutable,
        DropReason::TunnelledBackendNotLocal,
    ];

    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The name used in metrics (`reason` label) and status output.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::NoEndpoints => "no_endpoints",
            DropReason::NoLocalEndpoints => "no_local_endpoints",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::RewriteFailed => "rewrite_failed",
            DropReason::MissingBackend => "missing_backend",
            DropReason::SourceRangeDenied => "source_range_denied",
            DropReason::SnatPortsExhausted => "snat_ports_exhausted",
            DropReason::Unroutable => "unroutable",
            DropReason::TunnelledBackendNotLocal => "tunnelled_backend_not_local",
        }
    }
}

/// Number of entries in [`DROP_STATS_MAP`].
pub const DROP_REASON_COUNT: u32 = 9;

/// Per-CPU array indexed by [`DropReason`], holding a [`PacketCounter`] each.
pub const DROP_STATS_MAP: &str = "DROP_STATS";

/// Packets, bytes and new flows of one service or backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounter {
    pub packets: u64,
    pub bytes: u64,
    /// Connections (TCP) or flows (UDP) that were balanced to this service or backend.
    pub new_flows: u64,
}

impl FlowCounter {
    pub const fn add(self, other: FlowCounter) -> FlowCounter {
        FlowCounter {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
            new_flows: self.new_flows.wrapping_add(other.new_flows),
        }
    }
}

/// Per-CPU array indexed by service id, holding a [`FlowCounter`] per service.
pub const SERVICE_STATS_MAP: &str = "SERVICE_STATS";
/// Per-CPU array indexed by backend id, holding a [`FlowCounter`] per backend.
pub const BACKEND_STATS_MAP: &str = "BACKEND_STATS";

/// How `xdp_uplink` and the reply path handled a north-south packet; the discriminant indexes
/// [`EXTERNAL_PATH_STATS_MAP`]. These counters show where packets went (for DSR: that replies
/// never came back through the ingress node).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalPath {
    /// Client → remote backend, sent back out of the uplink from XDP (`XDP_TX`).
    ForwardTransmitted = 0,
    /// Client → remote backend, redirected to another interface from XDP.
    ForwardRedirected = 1,
    /// Client → remote backend, handed to the uplink's TC program to resolve the neighbour.
    ForwardNeighbour = 2,
    /// Client → backend on this node, passed to the kernel (routed into the pod).
    ForwardLocal = 3,
    /// Remote backend → client, reverse-translated in XDP and transmitted or redirected.
    ReplyTransmitted = 4,
    /// Remote backend → client, handed to the uplink's TC program to resolve the neighbour.
    ReplyNeighbour = 5,
    /// Local backend → client, reverse-translated at the pod's veth and redirected to the uplink.
    ReplyFromPod = 6,
    /// Client → remote backend in DSR mode, tunnelled (IPIP) to the backend's node.
    ForwardTunnelled = 7,
    /// A DSR packet from another ingress node, decapsulated here for a local backend.
    Decapsulated = 8,
}

impl ExternalPath {
    pub const ALL: [ExternalPath; EXTERNAL_PATH_COUNT as usize] = [
        ExternalPath::ForwardTransmitted,
        ExternalPath::ForwardRedirected,
        ExternalPath::ForwardNeighbour,
        ExternalPath::ForwardLocal,
        ExternalPath::ReplyTransmitted,
        ExternalPath::ReplyNeighbour,
        ExternalPath::ReplyFromPod,
        ExternalPath::ForwardTunnelled,
        ExternalPath::Decapsulated,
    ];

    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The name used in metrics (`path` label) and status output.
    pub const fn name(self) -> &'static str {
        match self {
            ExternalPath::ForwardTransmitted => "forward_xdp_tx",
            ExternalPath::ForwardRedirected => "forward_xdp_redirect",
            ExternalPath::ForwardNeighbour => "forward_tc_neighbour",
            ExternalPath::ForwardLocal => "forward_local",
            ExternalPath::ReplyTransmitted => "reply_xdp",
            ExternalPath::ReplyNeighbour => "reply_tc_neighbour",
            ExternalPath::ReplyFromPod => "reply_from_pod",
            ExternalPath::ForwardTunnelled => "forward_dsr_tunnel",
            ExternalPath::Decapsulated => "dsr_decapsulated",
        }
    }
}

/// Number of entries in [`EXTERNAL_PATH_STATS_MAP`].
pub const EXTERNAL_PATH_COUNT: u32 = 9;

/// Per-CPU array indexed by [`ExternalPath`], holding a [`PacketCounter`] each.
pub const EXTERNAL_PATH_STATS_MAP: &str = "EXTERNAL_PATH_STATS";
