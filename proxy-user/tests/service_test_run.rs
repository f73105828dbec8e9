//! ClusterIP load balancing in the TC programs, run by the kernel on crafted frames through
//! `BPF_PROG_TEST_RUN`. Expected frames are built independently (checksums computed from scratch
//! by the harness), so a byte-for-byte match also proves the incremental checksum updates.

use std::{collections::BTreeMap, net::Ipv4Addr};

use proxy_common::{
    BACKEND_FLAG_READY, BACKEND_FLAG_SERVING, BACKEND_FLAG_TERMINATING, Backend, BackendSlotKey,
    CONNTRACK_DIRECTION_FORWARD, CONNTRACK_DIRECTION_REPLY, ConntrackKey, DropReason, IPPROTO_TCP,
    IPPROTO_UDP, SERVICE_FLAG_AFFINITY, SERVICE_FLAG_DROP_WHEN_EMPTY, ServiceKey, ServiceValue,
    TcpState,
};
use skiff_proxy::{
    maps::DataplaneMaps,
    programs::{LoadOptions, LoadedObject, MapSizes, ProgramName, ProgramObject},
};
use skiff_tests::{
    bpffs::PinDirectory,
    packet::{self, Ipv4, tcp_flags},
    require_privileges,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKEND_ADDRESSES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 244, 1, 5),
    Ipv4Addr::new(10, 244, 2, 6),
    Ipv4Addr::new(10, 244, 3, 7),
];
const SERVICE_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;

/// A loaded tc_pod object with its maps in a private pin directory.
struct Dataplane {
    object: LoadedObject,
    maps: DataplaneMaps,
    _pins: PinDirectory,
}

fn dataplane() -> Dataplane {
    let pins = PinDirectory::new("lb").expect("private bpffs directory");
    let options = LoadOptions {
        pin_directory: pins.path().to_owned(),
        map_sizes: MapSizes {
            services: 64,
            backends: 64,
            backend_slots: 256,
            conntrack: 16_384,
            affinity: 1024,
        },
    };
    let object = LoadedObject::load(ProgramObject::TcPod, &options).expect("load tc_pod");
    let maps = DataplaneMaps::open(pins.path()).expect("open the pinned maps");
    Dataplane {
        object,
        maps,
        _pins: pins,
    }
}

fn be_address(address: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(address.octets())
}

fn service_key(protocol: u8) -> ServiceKey {
    ServiceKey {
        address: be_address(VIP),
        port: SERVICE_PORT.to_be(),
        protocol,
        padding: 0,
    }
}

impl Dataplane {
    /// Installs backends (id = index + 1) and a service with id 1 whose live slots are
    /// `slot_backends` (backend ids).
    fn install(
        &mut self,
        protocol: u8,
        backends: &[(Ipv4Addr, u8)],
        slot_backends: &[u32],
        flags: u8,
    ) {
        for (index, (address, backend_flags)) in backends.iter().enumerate() {
            let backend = Backend {
                address: be_address(*address),
                port: TARGET_PORT.to_be(),
                flags: *backend_flags,
                padding: 0,
            };
            self.maps
                .backends
                .insert(index as u32 + 1, backend, 0)
                .expect("put backend");
        }
        for (slot, backend_id) in slot_backends.iter().enumerate() {
            let key = BackendSlotKey {
                service_id: 1,
                generation: 0,
                padding: 0,
                slot: slot as u16,
            };
            self.maps
                .backend_slots
                .insert(key, backend_id, 0)
                .expect("put slot");
        }
        let value = ServiceValue {
            service_id: 1,
            backend_count: slot_backends.len() as u16,
            generation: 0,
            flags,
            affinity_timeout_seconds: if flags & SERVICE_FLAG_AFFINITY != 0 {
                10_800
            } else {
                0
            },
            padding: 0,
        };
        self.maps
            .services
            .insert(service_key(protocol), value, 0)
            .expect("put service");
    }

    fn run(&self, program: ProgramName, frame: &[u8]) -> (u32, Vec<u8>) {
        let outcome = self
            .object
            .test_run(program, frame, 1)
            .expect("BPF_PROG_TEST_RUN");
        (outcome.verdict, outcome.frame)
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.maps
            .drop_stats
            .get(&reason.index(), 0)
            .expect("read drop stats")
            .iter()
            .map(|counter| counter.packets)
            .sum()
    }
}

fn tcp_frame(source: (Ipv4Addr, u16), destination: (Ipv4Addr, u16), flags: u8) -> Vec<u8> {
    let ip = Ipv4::new(source.0, destination.0, packet::IPPROTO_TCP);
    packet::ipv4_frame(
        &ip,
        &packet::tcp_v4(source.0, destination.0, source.1, destination.1, flags, b""),
    )
}

fn udp_frame(source: (Ipv4Addr, u16), destination: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let ip = Ipv4::new(source.0, destination.0, packet::IPPROTO_UDP);
    packet::ipv4_frame(
        &ip,
        &packet::udp_v4(source.0, destination.0, source.1, destination.1, payload),
    )
}

/// The backend (index into BACKEND_ADDRESSES) a translated frame was sent to.
fn destination_backend(frame: &[u8]) -> usize {
    let destination = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    BACKEND_ADDRESSES
        .iter()
        .position(|address| *address == destination)
        .unwrap_or_else(|| panic!("translated to {destination}, not a backend"))
}

const READY: u8 = BACKEND_FLAG_READY | BACKEND_FLAG_SERVING;

#[test]
fn clusterip_tcp_syn_is_dnated_to_the_backend_and_the_reply_comes_back_from_the_vip() {
    require_privileges!();
    let mut dataplane = dataplane();
    dataplane.install(IPPROTO_TCP, &[(BACKEND_ADDRESSES[0], READY)], &[1], 0);

    let syn = tcp_frame((CLIENT, 40_000), (VIP, SERVICE_PORT), tcp_flags::SYN);
    let (verdict, translated) = dataplane.run(ProgramName::TcFromPod, &syn);
    assert_eq!(verdict, TC_ACT_OK);
    let expected = tcp_frame(
        (CLIENT, 40_000),
        (BACKEND_ADDRESSES[0], TARGET_PORT),
        tcp_flags::SYN,
    );
    assert_eq!(
        translated, expected,
        "DNAT with checksums recomputed from scratch"
    );

    let forward = ConntrackKey {
        source_address: be_address(CLIENT),
        destination_address: be_address(VIP),
        source_port: 40_000u16.to_be(),
        destination_port: SERVICE_PORT.to_be(),
        protocol: IPPROTO_TCP,
        direction: CONNTRACK_DIRECTION_FORWARD,
        padding: 0,
    };
    let entry = dataplane
        .maps
        .conntrack
        .get(&forward, 0)
        .expect("forward conntrack entry");
    assert_eq!((entry.backend_id, entry.service_id), (1, 1));
    assert_eq!(TcpState::from_byte(entry.state), TcpState::SynSent);

    let syn_ack = tcp_frame(
        (BACKEND_ADDRESSES[0], TARGET_PORT),
        (CLIENT, 40_000),
        tcp_flags::SYN | tcp_flags::ACK,
    );
    let (verdict, reply) = dataplane.run(ProgramName::TcToPod, &syn_ack);
    assert_eq!(verdict, TC_ACT_OK);
    let expected = tcp_frame(
        (VIP, SERVICE_PORT),
        (CLIENT, 40_000),
        tcp_flags::SYN | tcp_flags::ACK,
    );
    assert_eq!(reply, expected, "reverse NAT back to the VIP");
    let reply_key = ConntrackKey {
        source_address: be_address(BACKEND_ADDRESSES[0]),
        destination_address: be_address(CLIENT),
        source_port: TARGET_PORT.to_be(),
        destination_port: 40_000u16.to_be(),
        direction: CONNTRACK_DIRECTION_REPLY,
        ..forward
    };
    assert!(
        dataplane.maps.conntrack.get(&reply_key, 0).is_ok(),
        "reply entry"
    );
    let entry = dataplane
        .maps
        .conntrack
        .get(&forward, 0)
        .expect("forward conntrack entry");
    assert_eq!(TcpState::from_byte(entry.state), TcpState::Established);
}

#[test]
fn clusterip_udp_is_translated_both_ways_and_a_zero_checksum_stays_zero() {
    require_privileges!();
    let mut dataplane = dataplane();
    dataplane.install(IPPROTO_UDP, &[(BACKEND_ADDRESSES[1], READY)], &[1], 0);

    let query = udp_frame((CLIENT, 5353), (VIP, SERVICE_PORT), b"query");
    let (verdict, translated) = dataplane.run(ProgramName::TcFromPod, &query);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        translated,
        udp_frame(
            (CLIENT, 5353),
            (BACKEND_ADDRESSES[1], TARGET_PORT),
            b"query"
        )
    );

    let answer = udp_frame(
        (BACKEND_ADDRESSES[1], TARGET_PORT),
        (CLIENT, 5353),
        b"answer",
    );
    let (_, reply) = dataplane.run(ProgramName::TcToPod, &answer);
    assert_eq!(
        reply,
        udp_frame((VIP, SERVICE_PORT), (CLIENT, 5353), b"answer")
    );

    // A datagram sent without checksum (0) must still have none after DNAT.
    let mut unchecked = udp_frame((CLIENT, 5354), (VIP, SERVICE_PORT), b"x");
    unchecked[40..42].copy_from_slice(&[0, 0]);
    let (_, translated) = dataplane.run(ProgramName::TcFromPod, &unchecked);
    assert_eq!(&translated[40..42], &[0, 0], "UDP checksum zero stays zero");
    assert!(packet::ipv4_header_checksum_is_valid(&translated, 14));
    assert_eq!(destination_backend(&translated), 1);
}

#[test]
fn new_flows_are_spread_evenly_over_ready_backends() {
    require_privileges!();
    let mut dataplane = dataplane();
    let backends: Vec<_> = BACKEND_ADDRESSES
        .iter()
        .map(|address| (*address, READY))
        .collect();
    dataplane.install(IPPROTO_TCP, &backends, &[1, 2, 3], 0);
    let mut counts = BTreeMap::new();
    for port in 0..3000u16 {
        let syn = tcp_frame((CLIENT, 20_000 + port), (VIP, SERVICE_PORT), tcp_flags::SYN);
        let (_, translated) = dataplane.run(ProgramName::TcFromPod, &syn);
        *counts
            .entry(destination_backend(&translated))
            .or_insert(0u32) += 1;
    }
    for backend in 0..3 {
        let count = counts.get(&backend).copied().unwrap_or(0);
        assert!(
            (850..=1150).contains(&count),
            "backend {backend} got {count} of 3000: {counts:?}"
        );
    }
}

#[test]
fn packets_of_an_existing_flow_keep_their_backend() {
    require_privileges!();
    let mut dataplane = dataplane();
    let backends: Vec<_> = BACKEND_ADDRESSES
        .iter()
        .map(|address| (*address, READY))
        .collect();
    dataplane.install(IPPROTO_UDP, &backends, &[1, 2, 3], 0);
    let datagram = udp_frame((CLIENT, 7777), (VIP, SERVICE_PORT), b"same flow");
    let first = destination_backend(&dataplane.run(ProgramName::TcFromPod, &datagram).1);
    for _ in 0..50 {
        assert_eq!(
            destination_backend(&dataplane.run(ProgramName::TcFromPod, &datagram).1),
            first
        );
    }
}

#[test]
fn a_udp_flow_whose_backend_was_removed_moves_to_a_live_backend() {
    require_privileges!();
    let mut dataplane = dataplane();
    let backends: Vec<_> = BACKEND_ADDRESSES
        .iter()
        .map(|address| (*address, READY))
        .collect();
    dataplane.install(IPPROTO_UDP, &backends, &[1, 2, 3], 0);
    let datagram = udp_frame((CLIENT, 9999), (VIP, SERVICE_PORT), b"stream");
    let first = destination_backend(&dataplane.run(ProgramName::TcFromPod, &datagram).1);

    // The backend disappears from the EndpointSlice: sync removes it from slots and backends.
    let survivors: Vec<u32> = (1..=3).filter(|id| *id != first as u32 + 1).collect();
    for (slot, id) in survivors.iter().enumerate() {
        let key = BackendSlotKey {
            service_id: 1,
            generation: 1,
            padding: 0,
            slot: slot as u16,
        };
        dataplane
            .maps
            .backend_slots
            .insert(key, id, 0)
            .expect("put slot");
    }
    let mut service = dataplane
        .maps
        .services
        .get(&service_key(IPPROTO_UDP), 0)
        .expect("service");
    service.generation = 1;
    service.backend_count = 2;
    dataplane
        .maps
        .services
        .insert(service_key(IPPROTO_UDP), service, 0)
        .expect("switch generation");
    dataplane
        .maps
        .backends
        .remove(&(first as u32 + 1))
        .expect("remove backend");

    let moved = destination_backend(&dataplane.run(ProgramName::TcFromPod, &datagram).1);
    assert_ne!(moved, first, "the flow must leave the removed backend");
    for _ in 0..20 {
        assert_eq!(
            destination_backend(&dataplane.run(ProgramName::TcFromPod, &datagram).1),
            moved
        );
    }
}

#[test]
fn terminating_backend_keeps_existing_flows() {
    require_privileges!();
    let mut dataplane = dataplane();
    dataplane.install(
        IPPROTO_TCP,
        &[(BACKEND_ADDRESSES[0], READY), (BACKEND_ADDRESSES[1], READY)],
        &[1],
        0,
    );
    let syn = tcp_frame((CLIENT, 41_000), (VIP, SERVICE_PORT), tcp_flags::SYN);
    assert_eq!(
        destination_backend(&dataplane.run(ProgramName::TcFromPod, &syn).1),
        0
    );
    // Backend 1 starts terminating: it leaves the slots (new flows go to backend 2) but stays in
    // the backends map, so the established flow keeps it.
    let terminating = Backend {
        address: be_address(BACKEND_ADDRESSES[0]),
        port: TARGET_PORT.to_be(),
        flags: BACKEND_FLAG_SERVING | BACKEND_FLAG_TERMINATING,
        padding: 0,
    };
    dataplane
        .maps
        .backends
        .insert(1, terminating, 0)
        .expect("mark terminating");
    let key = BackendSlotKey {
        service_id: 1,
        generation: 0,
        padding: 0,
        slot: 0,
    };
    dataplane
        .maps
        .backend_slots
        .insert(key, 2, 0)
        .expect("slot to backend 2");
    let ack = tcp_frame((CLIENT, 41_000), (VIP, SERVICE_PORT), tcp_flags::ACK);
    assert_eq!(
        destination_backend(&dataplane.run(ProgramName::TcFromPod, &ack).1),
        0
    );
    let new_syn = tcp_frame((CLIENT, 41_001), (VIP, SERVICE_PORT), tcp_flags::SYN);
    assert_eq!(
        destination_backend(&dataplane.run(ProgramName::TcFromPod, &new_syn).1),
        1
    );
}

#[test]
fn client_ip_affinity_sends_every_new_connection_of_a_client_to_one_backend() {
    require_privileges!();
    let mut dataplane = dataplane();
    let backends: Vec<_> = BACKEND_ADDRESSES
        .iter()
        .map(|address| (*address, READY))
        .collect();
    dataplane.install(IPPROTO_TCP, &backends, &[1, 2, 3], SERVICE_FLAG_AFFINITY);
    let first = destination_backend(
        &dataplane
            .run(
                ProgramName::TcFromPod,
                &tcp_frame((CLIENT, 30_000), (VIP, SERVICE_PORT), tcp_flags::SYN),
            )
            .1,
    );
    for port in 1..100u16 {
        let syn = tcp_frame((CLIENT, 30_000 + port), (VIP, SERVICE_PORT), tcp_flags::SYN);
        assert_eq!(
            destination_backend(&dataplane.run(ProgramName::TcFromPod, &syn).1),
            first
        );
    }
}

/// What kube-proxy's REJECT answers: ICMP port unreachable from the VIP, quoting the offending
/// IPv4 header and the first 8 bytes of its payload, sent back towards the client.
fn port_unreachable_for(frame: &[u8]) -> Vec<u8> {
    let mut ip = Ipv4::new(VIP, CLIENT, packet::IPPROTO_ICMP);
    ip.tos = 0xc0;
    ip.id = 0;
    ip.frag_off = 0;
    let icmp = packet::icmp_error(3, 3, &frame[14..14 + 28]);
    packet::ethernet(
        packet::CLIENT_MAC,
        packet::SERVER_MAC,
        packet::ETH_P_IP,
        &ip.packet(&icmp),
    )
}

/// The RST RFC 793 prescribes for a segment (from the VIP back to the client).
fn reset(sequence: u32, acknowledgement: u32, flags: u8) -> Vec<u8> {
    let mut ip = Ipv4::new(VIP, CLIENT, packet::IPPROTO_TCP);
    ip.id = 0;
    let segment = packet::TcpSegment {
        source_port: SERVICE_PORT,
        destination_port: 40_001,
        sequence,
        acknowledgement,
        flags,
        window: 0,
        payload: b"",
    };
    packet::ethernet(
        packet::CLIENT_MAC,
        packet::SERVER_MAC,
        packet::ETH_P_IP,
        &ip.packet(&segment.build(VIP, CLIENT)),
    )
}

#[test]
fn tcp_syn_to_a_service_without_endpoints_is_answered_with_a_reset() {
    require_privileges!();
    let mut dataplane = dataplane();
    dataplane.install(IPPROTO_TCP, &[], &[], 0);
    let syn = tcp_frame((CLIENT, 40_001), (VIP, SERVICE_PORT), tcp_flags::SYN);
    let (verdict, answer) = dataplane.run(ProgramName::TcFromPod, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent back into the pod");
    // The SYN had sequence 1000 and no ACK: the reset acknowledges 1001.
    assert_eq!(answer, reset(0, 1001, tcp_flags::RST | tcp_flags::ACK));
    assert_eq!(dataplane.drops(DropReason::NoEndpoints), 1);
}

#[test]
fn tcp_segment_with_ack_to_a_service_without_endpoints_is_reset_at_its_ack() {
    require_privileges!();
    let mut dataplane = dataplane();
    dataplane.install(IPPROTO_TCP, &[], &[], 0);
    let data = {
        let ip = Ipv4::new(CLIENT, VIP, packet::IPPROTO_TCP);
        packet::ipv4_frame(
            &ip,
            &packet::tcp_v4(
                CLIENT,
                VIP,
                40_001,
                SERVICE_PORT,
                tcp_flags::ACK | tcp_flags::PSH,
                b"GET /",
            ),
        )
    };
    let (verdict, answer) = dataplane.run(ProgramName::TcFromPod, &data);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(answer, reset(2000, 0, tcp_flags::RST));
}

#[test]
fn udp_to_a_service_without_endpoints_is_answered_with_port_unreachable() {
    require_privileges!();
    let mut dataplane = dataplane();
    dataplane.install(IPPROTO_UDP, &[], &[], 0);
    let datagram = udp_frame(
        (CLIENT, 5300),
        (VIP, SERVICE_PORT),
        b"a payload longer than eight bytes",
    );
    let (verdict, answer) = dataplane.run(ProgramName::TcFromPod, &datagram);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(answer, port_unreachable_for(&datagram));
}

#[test]
fn internal_traffic_policy_local_without_local_endpoints_drops() {
    require_privileges!();
    let mut dataplane = dataplane();
    dataplane.install(IPPROTO_TCP, &[], &[], SERVICE_FLAG_DROP_WHEN_EMPTY);
    let syn = tcp_frame((CLIENT, 40_009), (VIP, SERVICE_PORT), tcp_flags::SYN);
    let (verdict, _) = dataplane.run(ProgramName::TcFromPod, &syn);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(dataplane.drops(DropReason::NoLocalEndpoints), 1);
}

#[test]
fn traffic_that_is_not_for_a_service_passes_unchanged() {
    require_privileges!();
    let mut dataplane = dataplane();
    dataplane.install(IPPROTO_TCP, &[(BACKEND_ADDRESSES[0], READY)], &[1], 0);
    let other_port = tcp_frame((CLIENT, 40_002), (VIP, 443), tcp_flags::SYN);
    let udp_to_tcp_service = udp_frame((CLIENT, 40_003), (VIP, SERVICE_PORT), b"x");
    let pod_to_pod = tcp_frame(
        (CLIENT, 40_004),
        (BACKEND_ADDRESSES[2], TARGET_PORT),
        tcp_flags::SYN,
    );
    let mut fragment = Ipv4::new(CLIENT, VIP, packet::IPPROTO_UDP);
    fragment.frag_off = 0x2000; // first fragment of a UDP datagram to the VIP: not translated
    let fragment = packet::ipv4_frame(
        &fragment,
        &packet::udp_v4(CLIENT, VIP, 40_005, SERVICE_PORT, &[0; 32]),
    );
    for frame in [other_port, udp_to_tcp_service, pod_to_pod, fragment] {
        for program in [ProgramName::TcFromPod, ProgramName::TcToPod] {
            let (verdict, output) = dataplane.run(program, &frame);
            assert_eq!(verdict, TC_ACT_OK);
            assert_eq!(output, frame, "{program:?} changed a frame it does not own");
        }
    }
}

#[test]
fn hairpin_connection_comes_back_into_the_pod_from_the_vip_both_ways() {
    require_privileges!();
    let mut dataplane = dataplane();
    // The client pod is the service's only backend.
    dataplane.install(IPPROTO_TCP, &[(CLIENT, READY)], &[1], 0);
    let syn = tcp_frame((CLIENT, 40_000), (VIP, SERVICE_PORT), tcp_flags::SYN);
    let (verdict, looped) = dataplane.run(ProgramName::TcFromPod, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "straight back into the pod");
    let ip = Ipv4::new(VIP, CLIENT, packet::IPPROTO_TCP);
    let expected = packet::ethernet(
        packet::CLIENT_MAC,
        packet::SERVER_MAC,
        packet::ETH_P_IP,
        &ip.packet(&packet::tcp_v4(
            VIP,
            CLIENT,
            40_000,
            TARGET_PORT,
            tcp_flags::SYN,
            b"",
        )),
    );
    assert_eq!(
        looped, expected,
        "DNAT to the pod itself and SNAT to the VIP"
    );

    // The pod answers the VIP; the answer goes back to the pod as coming from VIP:80.
    let syn_ack = tcp_frame(
        (CLIENT, TARGET_PORT),
        (VIP, 40_000),
        tcp_flags::SYN | tcp_flags::ACK,
    );
    let (verdict, answer) = dataplane.run(ProgramName::TcFromPod, &syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let ip = Ipv4::new(VIP, CLIENT, packet::IPPROTO_TCP);
    let expected = packet::ethernet(
        packet::CLIENT_MAC,
        packet::SERVER_MAC,
        packet::ETH_P_IP,
        &ip.packet(&packet::tcp_v4(
            VIP,
            CLIENT,
            SERVICE_PORT,
            40_000,
            tcp_flags::SYN | tcp_flags::ACK,
            b"",
        )),
    );
    assert_eq!(answer, expected);

    // Later packets of the connection take the same way.
    let ack = tcp_frame((CLIENT, 40_000), (VIP, SERVICE_PORT), tcp_flags::ACK);
    let (verdict, looped) = dataplane.run(ProgramName::TcFromPod, &ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&looped[26..30], &VIP.octets(), "source is the VIP");
}

#[test]
fn ipv4_options_to_a_vip_are_translated_past_the_options() {
    require_privileges!();
    let mut dataplane = dataplane();
    dataplane.install(IPPROTO_TCP, &[(BACKEND_ADDRESSES[0], READY)], &[1], 0);
    let with_options = |destination: Ipv4Addr, port: u16| {
        let mut ip = Ipv4::new(CLIENT, destination, packet::IPPROTO_TCP);
        ip.options = vec![0x94, 0x04, 0x00, 0x00]; // router alert
        packet::ipv4_frame(
            &ip,
            &packet::tcp_v4(CLIENT, destination, 40_100, port, tcp_flags::SYN, b""),
        )
    };
    let (verdict, translated) =
        dataplane.run(ProgramName::TcFromPod, &with_options(VIP, SERVICE_PORT));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(translated, with_options(BACKEND_ADDRESSES[0], TARGET_PORT));
}

#[test]
fn unusual_frames_to_or_from_a_vip_are_never_translated() {
    require_privileges!();
    let mut dataplane = dataplane();
    dataplane.install(IPPROTO_TCP, &[(BACKEND_ADDRESSES[0], READY)], &[1], 0);
    // Establish a NATed flow first, so an ICMP error about it has something to be confused with.
    let syn = tcp_frame((CLIENT, 40_200), (VIP, SERVICE_PORT), tcp_flags::SYN);
    let (_, natted) = dataplane.run(ProgramName::TcFromPod, &syn);

    let mut truncated = tcp_frame((CLIENT, 40_201), (VIP, SERVICE_PORT), tcp_flags::SYN);
    truncated.truncate(14 + 20 + 10);
    let mut later_fragment = Ipv4::new(CLIENT, VIP, packet::IPPROTO_TCP);
    later_fragment.frag_off = 185;
    let later_fragment = packet::ipv4_frame(&later_fragment, &[0x42; 16]);
    let icmp_about_the_flow = {
        let ip = Ipv4::new(BACKEND_ADDRESSES[0], CLIENT, packet::IPPROTO_ICMP);
        packet::ipv4_frame(&ip, &packet::icmp_error(3, 3, &natted[14..14 + 28]))
    };
    let arp = packet::arp_request(packet::CLIENT_MAC, CLIENT, VIP);
    for (name, frame) in [
        ("truncated TCP header", truncated),
        ("non-first fragment", later_fragment),
        ("ICMP error quoting a NATed flow", icmp_about_the_flow),
        ("ARP for the VIP", arp),
    ] {
        for program in [ProgramName::TcFromPod, ProgramName::TcToPod] {
            let (verdict, output) = dataplane.run(program, &frame);
            assert_eq!(verdict, TC_ACT_OK, "{name}: {program:?}");
            assert_eq!(output, frame, "{name}: {program:?} changed it");
        }
    }
}
