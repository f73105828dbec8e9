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
}

impl DropReason {
    pub const ALL: [DropReason; DROP_REASON_COUNT as usize] = [
        DropReason::NoEndpoints,
        DropReason::NoLocalEndpoints,
        DropReason::ConntrackFull,
        DropReason::RewriteFailed,
        DropReason::MissingBackend,
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
        }
    }
}

/// Number of entries in [`DROP_STATS_MAP`].
pub const DROP_REASON_COUNT: u32 = 5;

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
