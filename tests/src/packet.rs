//! Crafting frames for BPF program tests, with checksums computed independently of the code under
//! test (RFC 1071 one's-complement sums, written here from the RFCs).
//!
//! Owns byte-level construction of Ethernet, IPv4 (with options and fragments), IPv6, TCP, UDP,
//! ICMP and ARP frames. Pure: no I/O. Never parses what a program produced beyond checksums
//! ([`checksum_is_valid`]), so a test's expectation does not share a bug with the program.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// The RFC 1071 Internet checksum of `bytes` (folded, complemented), starting from `initial`.
pub fn internet_checksum(initial: u32, bytes: &[u8]) -> u16 {
    let mut sum = initial;
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header_sum_v4(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: u8,
    length: usize,
) -> u32 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&source.octets());
    pseudo.extend_from_slice(&destination.octets());
    pseudo.push(0);
    pseudo.push(protocol);
    pseudo.extend_from_slice(&(length as u16).to_be_bytes());
    pseudo
        .chunks_exact(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum()
}

/// Ethernet II frame.
pub fn ethernet(destination: [u8; 6], source: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&destination);
    frame.extend_from_slice(&source);
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 header's variable fields.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub protocol: u8,
    /// Type of service / DSCP+ECN byte.
    pub tos: u8,
    pub ttl: u8,
    pub id: u16,
    /// Flags (top 3 bits) and fragment offset in 8-byte units (low 13 bits), host order.
    pub frag_off: u16,
    /// Options; padded with zeros to a multiple of 4 bytes.
    pub options: Vec<u8>,
}

impl Ipv4 {
    pub fn new(source: Ipv4Addr, destination: Ipv4Addr, protocol: u8) -> Ipv4 {
        Ipv4 {
            source,
            destination,
            protocol,
            tos: 0,
            ttl: 64,
            id: 0x1234,
            frag_off: 0x4000, // don't fragment
            options: Vec::new(),
        }
    }

    /// The packet: header (with a valid header checksum) followed by `payload`.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut options = self.options.clone();
        while !options.len().is_multiple_of(4) {
            options.push(0);
        }
        let header_len = 20 + options.len();
        let total = header_len + payload.len();
        let mut header = Vec::with_capacity(header_len);
        header.push(0x40 | (header_len / 4) as u8);
        header.push(self.tos);
        header.extend_from_slice(&(total as u16).to_be_bytes());
        header.extend_from_slice(&self.id.to_be_bytes());
        header.extend_from_slice(&self.frag_off.to_be_bytes());
        header.push(self.ttl);
        header.push(self.protocol);
        header.extend_from_slice(&[0, 0]);
        header.extend_from_slice(&self.source.octets());
        header.extend_from_slice(&self.destination.octets());
        header.extend_from_slice(&options);
        let check = internet_checksum(0, &header);
        header[10..12].copy_from_slice(&check.to_be_bytes());
        header.extend_from_slice(payload);
        header
    }
}

/// A TCP segment's fields (no options).
#[derive(Clone, Debug)]
pub struct TcpSegment<'a> {
    pub source_port: u16,
    pub destination_port: u16,
    pub sequence: u32,
    pub acknowledgement: u32,
    pub flags: u8,
    pub window: u16,
    pub payload: &'a [u8],
}

impl TcpSegment<'_> {
    /// The segment bytes with a valid checksum over the IPv4 pseudo header.
    pub fn build(&self, source: Ipv4Addr, destination: Ipv4Addr) -> Vec<u8> {
        let mut segment = Vec::with_capacity(20 + self.payload.len());
        segment.extend_from_slice(&self.source_port.to_be_bytes());
        segment.extend_from_slice(&self.destination_port.to_be_bytes());
        segment.extend_from_slice(&self.sequence.to_be_bytes());
        segment.extend_from_slice(&self.acknowledgement.to_be_bytes());
        segment.push(5 << 4); // data offset: 5 words, no options
        segment.push(self.flags);
        segment.extend_from_slice(&self.window.to_be_bytes());
        segment.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        segment.extend_from_slice(self.payload);
        let sum = pseudo_header_sum_v4(source, destination, IPPROTO_TCP, segment.len());
        let check = internet_checksum(sum, &segment);
        segment[16..18].copy_from_slice(&check.to_be_bytes());
        segment
    }
}

/// A TCP segment with a valid checksum over the IPv4 pseudo header: sequence number 1000,
/// acknowledgement 2000 when ACK is set (else 0), window 64240.
pub fn tcp_v4(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    source_port: u16,
    destination_port: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    TcpSegment {
        source_port,
        destination_port,
        sequence: 1000,
        acknowledgement: if flags & tcp_flags::ACK != 0 { 2000 } else { 0 },
        flags,
        window: 64240,
        payload,
    }
    .build(source, destination)
}

/// A UDP datagram with a valid checksum over the IPv4 pseudo header.
pub fn udp_v4(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    source_port: u16,
    destination_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let length = 8 + payload.len();
    let mut datagram = Vec::with_capacity(length);
    datagram.extend_from_slice(&source_port.to_be_bytes());
    datagram.extend_from_slice(&destination_port.to_be_bytes());
    datagram.extend_from_slice(&(length as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    let sum = pseudo_header_sum_v4(source, destination, IPPROTO_UDP, length);
    let check = match internet_checksum(sum, &datagram) {
        0 => 0xffff, // RFC 768: a computed zero is sent as all ones
        check => check,
    };
    datagram[6..8].copy_from_slice(&check.to_be_bytes());
    datagram
}

/// An ICMP echo request (type 8) with a valid checksum.
pub fn icmp_echo_request(id: u16, sequence: u16, payload: &[u8]) -> Vec<u8> {
    let mut message = vec![8, 0, 0, 0];
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&sequence.to_be_bytes());
    message.extend_from_slice(payload);
    let check = internet_checksum(0, &message);
    message[2..4].copy_from_slice(&check.to_be_bytes());
    message
}

/// An ICMP error message (`kind`, `code`) quoting `quoted` (the offending IP header and the
/// first 8 bytes of its payload, RFC 792), with a valid checksum.
pub fn icmp_error(kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut message = vec![kind, code, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(quoted);
    let check = internet_checksum(0, &message);
    message[2..4].copy_from_slice(&check.to_be_bytes());
    message
}

/// An IPv6 packet: fixed header followed by `payload` (no extension headers).
pub fn ipv6(source: Ipv6Addr, destination: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(40 + payload.len());
    packet.extend_from_slice(&0x6000_0000u32.to_be_bytes());
    packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    packet.push(next_header);
    packet.push(64);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(payload);
    packet
}

/// An ARP request (who-has `target`, tell `sender`) as an Ethernet frame.
pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    arp.extend_from_slice(&sender_mac);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    ethernet([0xff; 6], sender_mac, ETH_P_ARP, &arp)
}

/// Convenience: an Ethernet + IPv4 frame client → server carrying `transport`.
pub fn ipv4_frame(ip: &Ipv4, transport: &[u8]) -> Vec<u8> {
    ethernet(SERVER_MAC, CLIENT_MAC, ETH_P_IP, &ip.packet(transport))
}

/// Whether the IPv4 header checksum of the packet starting at `offset` in `frame` is valid.
pub fn ipv4_header_checksum_is_valid(frame: &[u8], offset: usize) -> bool {
    let Some(&version_ihl) = frame.get(offset) else {
        return false;
    };
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    frame
        .get(offset..offset + header_len)
        .is_some_and(|header| internet_checksum(0, header) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_the_rfc_1071_worked_example() {
        // RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (before complement).
        assert_eq!(
            internet_checksum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn ipv4_header_of_a_known_packet_has_the_published_checksum() {
        // The classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
        let ip = Ipv4 {
            source: Ipv4Addr::new(192, 168, 0, 1),
            destination: Ipv4Addr::new(192, 168, 0, 199),
            protocol: IPPROTO_UDP,
            tos: 0,
            ttl: 64,
            id: 0,
            frag_off: 0x4000,
            options: Vec::new(),
        };
        let packet = ip.packet(&[0u8; 0x73 - 20]);
        assert_eq!(&packet[10..12], &[0xb8, 0x61]);
        assert!(ipv4_header_checksum_is_valid(&packet, 0));
    }

    #[test]
    fn tcp_and_udp_checksums_verify_over_the_pseudo_header() {
        let (client, server) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        for (protocol, segment) in [
            (
                IPPROTO_TCP,
                tcp_v4(client, server, 40000, 80, tcp_flags::SYN, b""),
            ),
            (IPPROTO_UDP, udp_v4(client, server, 40000, 53, b"odd")),
        ] {
            let sum = pseudo_header_sum_v4(client, server, protocol, segment.len());
            assert_eq!(internet_checksum(sum, &segment), 0, "protocol {protocol}");
        }
    }

    #[test]
    fn ipv4_options_are_padded_and_counted_in_the_ihl() {
        let mut ip = Ipv4::new(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, IPPROTO_UDP);
        ip.options = vec![0x94, 0x04, 0, 0, 1]; // router alert + one byte
        let packet = ip.packet(b"");
        assert_eq!(packet[0] & 0x0f, 7);
        assert_eq!(packet.len(), 28);
        assert!(ipv4_header_checksum_is_valid(&packet, 0));
    }
}
