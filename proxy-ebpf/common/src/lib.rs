//! Map keys and values shared by the BPF programs (`proxy-ebpf`) and skiff-proxy (`proxy-user`).
//!
//! Owns the memory layout of everything that crosses the kernel/user boundary: every type here is
//! `#[repr(C)]` with explicit padding so both sides agree byte for byte. Holds no logic beyond
//! index conversions; never depends on `std` (the kernel side is `no_std`).
#![no_std]

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

#[cfg(feature = "user")]
// SAFETY: PacketCounter is #[repr(C)], made only of u64 fields, with no padding and no invalid
// bit patterns.
unsafe impl aya::Pod for PacketCounter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_counter_layout_matches_the_kernel_side() {
        assert_eq!(core::mem::size_of::<PacketCounter>(), 16);
        assert_eq!(core::mem::align_of::<PacketCounter>(), 8);
    }

    #[test]
    fn protocol_class_indices_are_dense_and_in_order() {
        for (position, class) in ProtocolClass::ALL.iter().enumerate() {
            assert_eq!(class.index() as usize, position, "{}", class.name());
        }
        assert_eq!(ProtocolClass::ALL.len() as u32, PROTOCOL_CLASS_COUNT);
    }
}
