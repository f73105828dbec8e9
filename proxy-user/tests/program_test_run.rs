//! The first programs, run by the kernel on crafted frames through `BPF_PROG_TEST_RUN`: every
//! frame must be passed unchanged and counted under exactly one protocol class.

use std::net::{Ipv4Addr, Ipv6Addr};

use proxy_common::{PacketCounter, ProtocolClass};
use skiff_proxy::{
    programs::{LoadOptions, LoadedObject, ProgramName},
    stats::{ProtocolStats, protocol_stats},
};
use skiff_tests::{
    bpffs::PinDirectory,
    packet::{self, Ipv4, tcp_flags},
    require_privileges,
};

const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

/// The verdict that passes a packet on, for the packet programs this file runs.
fn pass_verdict(program: ProgramName) -> u32 {
    if program == ProgramName::XdpUplink {
        XDP_PASS
    } else {
        TC_ACT_OK
    }
}

/// Loads the object of `program` with its maps pinned in a private directory.
fn load(program: ProgramName) -> (LoadedObject, PinDirectory) {
    let pins = PinDirectory::new("test-run").expect("private bpffs directory");
    let object = LoadedObject::load(program.object(), &LoadOptions::new(pins.path()))
        .unwrap_or_else(|error| panic!("loading {}: {error}", program.as_str()));
    (object, pins)
}

const ALL_PROGRAMS: [ProgramName; 3] = [
    ProgramName::TcFromPod,
    ProgramName::TcToPod,
    ProgramName::XdpUplink,
];

/// Runs `frame` once through each program and checks verdict, frame and the single counter moved.
fn assert_passed_and_counted(name: &str, frame: &[u8], expected: ProtocolClass) {
    assert_passed_and_counted_by(&ALL_PROGRAMS, name, frame, expected);
}

/// The kernel's skb test-run refuses frames whose IPv4 header is cut short (EINVAL) before any
/// program sees them, so such frames are run through the XDP program only.
fn assert_passed_and_counted_by_xdp(name: &str, frame: &[u8], expected: ProtocolClass) {
    assert_passed_and_counted_by(&[ProgramName::XdpUplink], name, frame, expected);
}

fn assert_passed_and_counted_by(
    programs: &[ProgramName],
    name: &str,
    frame: &[u8],
    expected: ProtocolClass,
) {
    for &program in programs {
        let (object, _pins) = load(program);
        let before = protocol_stats(&object).expect("stats are readable");
        let outcome = object
            .test_run(program, frame, 1)
            .unwrap_or_else(|error| panic!("{name}: BPF_PROG_TEST_RUN of {program:?}: {error}"));
        assert_eq!(
            outcome.verdict,
            pass_verdict(program),
            "{name}: verdict of {program:?}"
        );
        assert_eq!(
            outcome.frame, frame,
            "{name}: {program:?} changed the frame"
        );
        let delta = protocol_stats(&object)
            .expect("stats are readable")
            .since(&before);
        for class in ProtocolClass::ALL {
            let want = if class == expected {
                PacketCounter {
                    packets: 1,
                    bytes: frame.len() as u64,
                }
            } else {
                PacketCounter::default()
            };
            assert_eq!(
                delta.get(class),
                want,
                "{name}: {program:?} counter {}",
                class.name()
            );
        }
    }
}

fn tcp_syn_frame() -> Vec<u8> {
    let ip = Ipv4::new(CLIENT, SERVER, packet::IPPROTO_TCP);
    packet::ipv4_frame(
        &ip,
        &packet::tcp_v4(CLIENT, SERVER, 40000, 80, tcp_flags::SYN, b""),
    )
}

#[test]
fn ipv4_tcp_segment_is_counted_as_tcp() {
    require_privileges!();
    assert_passed_and_counted("tcp syn", &tcp_syn_frame(), ProtocolClass::Tcp);
}

#[test]
fn ipv4_udp_datagram_is_counted_as_udp() {
    require_privileges!();
    let ip = Ipv4::new(CLIENT, SERVER, packet::IPPROTO_UDP);
    let frame = packet::ipv4_frame(&ip, &packet::udp_v4(CLIENT, SERVER, 40000, 53, b"query"));
    assert_passed_and_counted("udp", &frame, ProtocolClass::Udp);
}

#[test]
fn ipv4_icmp_echo_is_counted_as_icmp() {
    require_privileges!();
    let ip = Ipv4::new(CLIENT, SERVER, packet::IPPROTO_ICMP);
    let frame = packet::ipv4_frame(&ip, &packet::icmp_echo_request(7, 1, &[0xab; 56]));
    assert_passed_and_counted("icmp echo", &frame, ProtocolClass::Icmp);
}

#[test]
fn ipv4_with_options_is_classified_past_the_options() {
    require_privileges!();
    let mut ip = Ipv4::new(CLIENT, SERVER, packet::IPPROTO_UDP);
    ip.options = vec![0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00]; // router alert, NOPs, EOL
    let frame = packet::ipv4_frame(&ip, &packet::udp_v4(CLIENT, SERVER, 40000, 53, b"x"));
    assert_eq!(frame[14] & 0x0f, 7, "the header carries options");
    assert_passed_and_counted("ipv4 options", &frame, ProtocolClass::Udp);
}

#[test]
fn non_first_fragment_is_counted_by_protocol_without_a_transport_header() {
    require_privileges!();
    let mut ip = Ipv4::new(CLIENT, SERVER, packet::IPPROTO_UDP);
    ip.frag_off = 185; // offset 1480 bytes, last fragment: carries no UDP header
    let frame = packet::ipv4_frame(&ip, &[0x55; 4]);
    assert_passed_and_counted("non-first fragment", &frame, ProtocolClass::Udp);
}

#[test]
fn first_fragment_without_a_whole_transport_header_is_malformed() {
    require_privileges!();
    let mut ip = Ipv4::new(CLIENT, SERVER, packet::IPPROTO_TCP);
    ip.frag_off = 0x2000; // more fragments, offset 0
    let segment = packet::tcp_v4(CLIENT, SERVER, 40000, 80, tcp_flags::SYN, b"");
    let frame = packet::ipv4_frame(&ip, &segment[..12]);
    assert_passed_and_counted("short first fragment", &frame, ProtocolClass::Malformed);
}

#[test]
fn truncated_ipv4_header_is_malformed() {
    require_privileges!();
    let mut frame = tcp_syn_frame();
    frame.truncate(14 + 10);
    assert_passed_and_counted_by_xdp("truncated ipv4 header", &frame, ProtocolClass::Malformed);
}

#[test]
fn truncated_tcp_header_is_malformed() {
    require_privileges!();
    let mut frame = tcp_syn_frame();
    frame.truncate(14 + 20 + 8);
    assert_passed_and_counted("truncated tcp header", &frame, ProtocolClass::Malformed);
}

#[test]
fn ethernet_header_alone_claiming_ipv4_is_malformed() {
    require_privileges!();
    let frame = packet::ethernet(
        packet::SERVER_MAC,
        packet::CLIENT_MAC,
        packet::ETH_P_IP,
        &[],
    );
    assert_passed_and_counted_by_xdp("ethernet only", &frame, ProtocolClass::Malformed);
}

#[test]
fn ipv4_header_length_below_twenty_bytes_is_malformed() {
    require_privileges!();
    let mut frame = tcp_syn_frame();
    frame[14] = 0x43; // IHL 3 (12 bytes): impossible
    assert_passed_and_counted("ihl 3", &frame, ProtocolClass::Malformed);
}

#[test]
fn sctp_is_counted_as_other_ip() {
    require_privileges!();
    let ip = Ipv4::new(CLIENT, SERVER, packet::IPPROTO_SCTP);
    let frame = packet::ipv4_frame(&ip, &[0u8; 12]);
    assert_passed_and_counted("sctp", &frame, ProtocolClass::OtherIp);
}

#[test]
fn arp_is_counted_as_non_ip() {
    require_privileges!();
    let frame = packet::arp_request(packet::CLIENT_MAC, CLIENT, SERVER);
    assert_passed_and_counted("arp", &frame, ProtocolClass::NonIp);
}

#[test]
fn ipv6_udp_and_icmpv6_are_classified() {
    require_privileges!();
    let (client, server) = (
        "fd00::1".parse::<Ipv6Addr>().expect("literal"),
        "fd00::2".parse::<Ipv6Addr>().expect("literal"),
    );
    let udp = packet::ipv6(client, server, packet::IPPROTO_UDP, &[0u8; 8 + 4]);
    let frame = packet::ethernet(
        packet::SERVER_MAC,
        packet::CLIENT_MAC,
        packet::ETH_P_IPV6,
        &udp,
    );
    assert_passed_and_counted("ipv6 udp", &frame, ProtocolClass::Udp);
    let icmp = packet::ipv6(
        client,
        server,
        packet::IPPROTO_ICMPV6,
        &[128, 0, 0, 0, 0, 1, 0, 1],
    );
    let frame = packet::ethernet(
        packet::SERVER_MAC,
        packet::CLIENT_MAC,
        packet::ETH_P_IPV6,
        &icmp,
    );
    assert_passed_and_counted("ipv6 icmpv6", &frame, ProtocolClass::Icmpv6);
}

#[test]
fn repeated_runs_count_every_repetition() {
    require_privileges!();
    let frame = tcp_syn_frame();
    for program in ALL_PROGRAMS {
        let (object, _pins) = load(program);
        let outcome = object
            .test_run(program, &frame, 1000)
            .expect("BPF_PROG_TEST_RUN runs");
        assert_eq!(outcome.verdict, pass_verdict(program));
        let stats: ProtocolStats = protocol_stats(&object).expect("stats are readable");
        assert_eq!(stats.packets(ProtocolClass::Tcp), 1000, "{program:?}");
        assert_eq!(
            stats.get(ProtocolClass::Tcp).bytes,
            1000 * frame.len() as u64,
            "{program:?}"
        );
    }
}
