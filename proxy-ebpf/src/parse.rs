//! Bounds-checked packet parsing: the only place that reads packet memory.
//!
//! Owns the header layouts (Ethernet, IPv4, IPv6, TCP, UDP, ICMP) and the one bounds check every
//! access goes through ([`Frame::header`]). Never writes to the packet and never touches maps.

use core::mem::size_of;

use proxy_common::ProtocolClass;

pub const ETH_HEADER_LEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_MIN_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const ICMP_HEADER_LEN: usize = 8;
/// The fragment-offset bits of the IPv4 `frag_off` field (host order).
const IPV4_FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

#[repr(C)]
pub struct EthernetHeader {
    pub destination: [u8; 6],
    pub source: [u8; 6],
    /// Network byte order.
    pub ether_type: u16,
}

#[repr(C)]
pub struct Ipv4Header {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_length: u16,
    pub id: u16,
    /// Flags and fragment offset, network byte order.
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub source: u32,
    pub destination: u32,
}

#[repr(C)]
pub struct Ipv6Header {
    /// Version (4 bits), traffic class (8 bits), flow label (20 bits), as on the wire.
    pub version_class_flow: [u8; 4],
    pub payload_length: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub source: [u8; 16],
    pub destination: [u8; 16],
}

/// A packet's bytes as the kernel hands them to a program: `[start, end)`.
#[derive(Clone, Copy)]
pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Frame {
        Frame { start, end }
    }

    /// Length of the frame as seen by the program.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the frame holds no bytes at all.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// A pointer to a `T` at `offset`, or `None` when the frame is too short to hold it.
    #[inline(always)]
    pub fn header<T>(&self, offset: usize) -> Option<*const T> {
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return None;
        }
        Some(at as *const T)
    }

    /// A writable pointer to a `T` at `offset` (XDP frames are written in place), or `None`
    /// when the frame is too short to hold it.
    #[inline(always)]
    pub fn header_mut<T>(&self, offset: usize) -> Option<*mut T> {
        self.header::<T>(offset).map(|pointer| pointer as *mut T)
    }

    /// Whether `length` bytes starting at `offset` lie inside the frame.
    #[inline(always)]
    fn holds(&self, offset: usize, length: usize) -> bool {
        self.start + offset + length <= self.end
    }
}

/// Classifies a frame that starts with an Ethernet header.
#[inline(always)]
pub fn classify(frame: &Frame) -> ProtocolClass {
    let Some(ethernet) = frame.header::<EthernetHeader>(0) else {
        return ProtocolClass::Malformed;
    };
    // SAFETY: `header` checked that the Ethernet header lies inside the frame.
    let ether_type = u16::from_be(unsafe { (*ethernet).ether_type });
    match ether_type {
        ETH_P_IP => classify_ipv4(frame, ETH_HEADER_LEN),
        ETH_P_IPV6 => classify_ipv6(frame, ETH_HEADER_LEN),
        _ => ProtocolClass::NonIp,
    }
}

#[inline(always)]
fn classify_ipv4(frame: &Frame, offset: usize) -> ProtocolClass {
    let Some(ip) = frame.header::<Ipv4Header>(offset) else {
        return ProtocolClass::Malformed;
    };
    // SAFETY: `header` checked that the minimal IPv4 header lies inside the frame.
    let (version_ihl, frag_off, protocol) = unsafe {
        (
            (*ip).version_ihl,
            u16::from_be((*ip).frag_off),
            (*ip).protocol,
        )
    };
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || header_len < IPV4_MIN_HEADER_LEN {
        return ProtocolClass::Malformed;
    }
    let first_fragment = frag_off & IPV4_FRAGMENT_OFFSET_MASK == 0;
    classify_transport(frame, offset + header_len, protocol, first_fragment, false)
}

#[inline(always)]
fn classify_ipv6(frame: &Frame, offset: usize) -> ProtocolClass {
    let Some(ip) = frame.header::<Ipv6Header>(offset) else {
        return ProtocolClass::Malformed;
    };
    // SAFETY: `header` checked that the IPv6 header lies inside the frame.
    let (version, next_header) = unsafe { ((*ip).version_class_flow[0] >> 4, (*ip).next_header) };
    if version != 6 {
        return ProtocolClass::Malformed;
    }
    // Extension headers are not walked yet: a packet behind one counts as other IP.
    classify_transport(frame, offset + IPV6_HEADER_LEN, next_header, true, true)
}

/// Classifies by the IP protocol number. For a first (or only) fragment the transport header must
/// be present; later fragments carry no transport header and are counted by protocol alone.
#[inline(always)]
fn classify_transport(
    frame: &Frame,
    offset: usize,
    protocol: u8,
    first_fragment: bool,
    ipv6: bool,
) -> ProtocolClass {
    let (class, header_len) = match protocol {
        IPPROTO_TCP => (ProtocolClass::Tcp, TCP_MIN_HEADER_LEN),
        IPPROTO_UDP => (ProtocolClass::Udp, UDP_HEADER_LEN),
        IPPROTO_ICMP if !ipv6 => (ProtocolClass::Icmp, ICMP_HEADER_LEN),
        IPPROTO_ICMPV6 if ipv6 => (ProtocolClass::Icmpv6, ICMP_HEADER_LEN),
        _ => return ProtocolClass::OtherIp,
    };
    if first_fragment && !frame.holds(offset, header_len) {
        return ProtocolClass::Malformed;
    }
    class
}

/// Offset of the IPv4 header checksum, source and destination inside the IPv4 header.
pub const IPV4_CHECK_OFFSET: usize = 10;
pub const IPV4_SOURCE_OFFSET: usize = 12;
pub const IPV4_DESTINATION_OFFSET: usize = 16;
/// Offset of the total length.
pub const IPV4_TOTAL_LENGTH_OFFSET: usize = 2;
/// Offsets inside the TCP/UDP header.
pub const L4_SOURCE_PORT_OFFSET: usize = 0;
pub const L4_DESTINATION_PORT_OFFSET: usize = 2;
pub const TCP_FLAGS_OFFSET: usize = 13;
pub const TCP_CHECK_OFFSET: usize = 16;
pub const UDP_CHECK_OFFSET: usize = 6;
/// IPv4 "more fragments" flag (host order `frag_off`).
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;

/// A TCP or UDP packet over IPv4 that can be load-balanced: an unfragmented packet whose
/// Ethernet, IPv4 and transport headers all lie in the frame. Addresses and ports are in network
/// byte order; offsets are from the start of the frame.
#[derive(Clone, Copy)]
pub struct Ipv4Flow {
    /// Offset of the IPv4 header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    pub protocol: u8,
    pub source: u32,
    pub destination: u32,
    pub source_port: u16,
    pub destination_port: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

impl Ipv4Flow {
    /// Offset of the transport checksum field.
    #[inline(always)]
    pub fn l4_check_offset(&self) -> usize {
        if self.protocol == IPPROTO_TCP {
            self.l4 + TCP_CHECK_OFFSET
        } else {
            self.l4 + UDP_CHECK_OFFSET
        }
    }
}

/// The ports at the start of a TCP or UDP header (network byte order).
#[repr(C)]
pub struct Ports {
    pub source: u16,
    pub destination: u16,
}

/// Parses a frame into an [`Ipv4Flow`], or `None` for anything that must not be translated:
/// non-IPv4, protocols other than TCP/UDP, fragments (no ports in later fragments, so neither
/// the first nor the later ones are translated) and truncated or inconsistent headers.
#[inline(always)]
pub fn ipv4_flow(frame: &Frame) -> Option<Ipv4Flow> {
    let ethernet = frame.header::<EthernetHeader>(0)?;
    // SAFETY: `header` checked that the Ethernet header lies inside the frame.
    if u16::from_be(unsafe { (*ethernet).ether_type }) != ETH_P_IP {
        return None;
    }
    let l3 = ETH_HEADER_LEN;
    let ip = frame.header::<Ipv4Header>(l3)?;
    // SAFETY: `header` checked that the minimal IPv4 header lies inside the frame.
    let (version_ihl, frag_off, protocol, source, destination) = unsafe {
        (
            (*ip).version_ihl,
            u16::from_be((*ip).frag_off),
            (*ip).protocol,
            (*ip).source,
            (*ip).destination,
        )
    };
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || header_len < IPV4_MIN_HEADER_LEN {
        return None;
    }
    if frag_off & (IPV4_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET_MASK) != 0 {
        return None;
    }
    let transport_len = match protocol {
        IPPROTO_TCP => TCP_MIN_HEADER_LEN,
        IPPROTO_UDP => UDP_HEADER_LEN,
        _ => return None,
    };
    let l4 = l3 + header_len;
    if !frame.holds(l4, transport_len) {
        return None;
    }
    let ports = frame.header::<Ports>(l4)?;
    // SAFETY: `header` checked that the ports lie inside the frame.
    let (source_port, destination_port) = unsafe { ((*ports).source, (*ports).destination) };
    let tcp_flags = if protocol == IPPROTO_TCP {
        let flags = frame.header::<u8>(l4 + TCP_FLAGS_OFFSET)?;
        // SAFETY: `header` checked that the flags byte lies inside the frame.
        unsafe { *flags }
    } else {
        0
    };
    Some(Ipv4Flow {
        l3,
        l4,
        protocol,
        source,
        destination,
        source_port,
        destination_port,
        tcp_flags,
    })
}
