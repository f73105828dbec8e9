//! North-south load balancing in `xdp_uplink` (and its TC fallback and the pod-side reply path),
//! run by the kernel on crafted frames through `BPF_PROG_TEST_RUN`, asserted byte for byte
//! against frames built independently (checksums from scratch).
//!
//! Every test runs inside its own network namespace ("the node"): the kernel's FIB lookup in
//! the programs then sees the node's routes and static neighbour entries, so the next hop (and
//! so the rewritten Ethernet header and the verdict) is deterministic. The uplink is a veth
//! `up0` with 192.0.2.1/24; 10.244.2.0/24 (node B's pods) is routed via 192.0.2.2.

use std::net::Ipv4Addr;

use proxy_common::{
    BACKEND_FLAG_LOCAL, BACKEND_FLAG_READY, BACKEND_FLAG_SERVING, Backend, BackendSlotKey,
    CONNTRACK_DIRECTION_FORWARD, CONNTRACK_DIRECTION_REPLY, CONNTRACK_FLAG_DSR,
    CONNTRACK_FLAG_EXTERNAL, CONNTRACK_FLAG_SNAT, ConntrackKey, ConntrackValue, DropReason,
    EXTERNAL_PATH_COUNT, ExternalPath, IPPROTO_TCP, IPPROTO_UDP, NODEPORT_ADDRESS_PRESENT,
    ProxyConfig, SERVICE_FLAG_DROP_WHEN_EMPTY, SERVICE_FLAG_DSR, SERVICE_FLAG_EXTERNAL,
    SERVICE_FLAG_EXTERNAL_LOCAL, SERVICE_FLAG_MAGLEV, SERVICE_FLAG_SOURCE_RANGES, SNAT_PORT_MAX,
    SNAT_PORT_MIN, ServiceKey, ServiceValue, SourceRangeKey, TcpState, maglev_flow_hash,
    snat_port_candidate, source_range_prefix_length,
};
use skiff_proxy::{
    maps::DataplaneMaps,
    programs::{LoadOptions, LoadedObject, MapSizes, ProgramName, ProgramObject},
};
use skiff_tests::{
    bpffs::PinDirectory,
    netns::NetNs,
    packet::{self, Ipv4, tcp_flags},
    require_privileges, veth,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const NEXT_HOP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const OTHER_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
const LOAD_BALANCER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const LOCAL_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const REMOTE_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);
const UNRESOLVED_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 10);
const NODE_PORT: u16 = 30_080;
const SERVICE_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
const CLIENT_PORT: u16 = 40_000;
/// The static neighbour entries of the test node.
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0x5b, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0x5b, 0, 0, 0, 0x64];
const UPLINK_MAC: [u8; 6] = [0x02, 0x5b, 0, 0, 0, 0x01];
const READY: u8 = BACKEND_FLAG_READY | BACKEND_FLAG_SERVING;

/// The node namespace with its uplink, routes and neighbours, and a peer namespace for the
/// other end of the uplink.
struct Node {
    netns: NetNs,
    _peer: NetNs,
}

fn node(label: &str) -> Node {
    let netns = NetNs::new(&format!("{label}-node")).expect("node namespace");
    let peer = NetNs::new(&format!("{label}-peer")).expect("peer namespace");
    netns.disable_ipv6().expect("disable IPv6");
    veth::create_addressed(
        (&netns, "up0", "192.0.2.1"),
        (&peer, "eth0", "192.0.2.2"),
        24,
    )
    .expect("uplink veth");
    let mac = format_mac(&UPLINK_MAC);
    for command in [
        vec!["link", "set", "lo", "up"],
        vec!["link", "set", "up0", "address", mac.as_str()],
        vec!["route", "add", "10.244.2.0/24", "via", "192.0.2.2"],
        vec!["route", "add", "10.244.3.0/24", "via", "192.0.2.3"],
    ] {
        netns.ip(&command).expect("configure the node");
    }
    for (address, mac) in [("192.0.2.2", NEXT_HOP_MAC), ("192.0.2.100", CLIENT_MAC)] {
        let mac = format_mac(&mac);
        netns
            .ip(&[
                "neigh",
                "replace",
                address,
                "lladdr",
                &mac,
                "dev",
                "up0",
                "nud",
                "permanent",
            ])
            .expect("static neighbour");
    }
    netns
        .run(|| std::fs::write("/proc/sys/net/ipv4/conf/all/forwarding", "1"))
        .expect("enter node")
        .expect("enable forwarding");
    Node { netns, _peer: peer }
}

/// Runs `test` inside a fresh node namespace (`label`) with a fresh dataplane.
fn in_node_dataplane(label: &str, test: impl FnOnce(&mut Dataplane) + Send) {
    let node = node(label);
    node.netns
        .run(|| {
            let mut dataplane = dataplane();
            test(&mut dataplane);
        })
        .expect("enter node");
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The uplink object with its maps in a private pin directory, plus the tc_pod object sharing
/// them (for the replies of local backends).
struct Dataplane {
    uplink: LoadedObject,
    pod: LoadedObject,
    maps: DataplaneMaps,
    _pins: PinDirectory,
}

fn dataplane() -> Dataplane {
    let pins = PinDirectory::new("nodeport").expect("private bpffs directory");
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
    let uplink = LoadedObject::load(ProgramObject::XdpUplink, &options).expect("load xdp_uplink");
    let pod = LoadedObject::load(ProgramObject::TcPod, &options).expect("load tc_pod");
    let mut maps = DataplaneMaps::open(pins.path()).expect("open the pinned maps");
    maps.write_config(&ProxyConfig {
        node_address: be(NODE),
        ..ProxyConfig::default()
    })
    .expect("write config");
    maps.nodeport_addresses
        .insert(be(NODE), NODEPORT_ADDRESS_PRESENT, 0)
        .expect("NodePort address");
    Dataplane {
        uplink,
        pod,
        maps,
        _pins: pins,
    }
}

fn be(address: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(address.octets())
}

impl Dataplane {
    /// Installs backends (id = index + 1) and service `service_id` at `key` whose live slots name
    /// `slot_backends`.
    fn install(
        &mut self,
        key: ServiceKey,
        service_id: u32,
        backends: &[(Ipv4Addr, u8)],
        slot_backends: &[u32],
        flags: u8,
    ) {
        for (index, (address, backend_flags)) in backends.iter().enumerate() {
            let backend = Backend {
                address: be(*address),
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
            let slot_key = BackendSlotKey {
                service_id,
                generation: 0,
                padding: 0,
                slot: slot as u16,
            };
            self.maps
                .backend_slots
                .insert(slot_key, backend_id, 0)
                .expect("put slot");
        }
        let value = ServiceValue {
            service_id,
            backend_count: slot_backends.len() as u16,
            generation: 0,
            flags: flags | SERVICE_FLAG_EXTERNAL,
            affinity_timeout_seconds: 0,
            padding: 0,
        };
        self.maps
            .services
            .insert(key, value, 0)
            .expect("put service");
    }

    /// A NodePort frontend (Maglev, plus `flags`) with service id `service_id` and one backend
    /// (id 1) with `backend.1` flags.
    fn install_nodeport(
        &mut self,
        protocol: u8,
        service_id: u32,
        backend: (Ipv4Addr, u8),
        flags: u8,
    ) {
        self.install(
            nodeport_key(protocol),
            service_id,
            &[backend],
            &[1],
            SERVICE_FLAG_MAGLEV | flags,
        );
    }

    fn run(&self, program: ProgramName, frame: &[u8]) -> (u32, Vec<u8>) {
        let object = match program {
            ProgramName::TcFromPod | ProgramName::TcToPod => &self.pod,
            _ => &self.uplink,
        };
        let outcome = object
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

    fn path_count(&self, path: ExternalPath) -> u64 {
        assert!(path.index() < EXTERNAL_PATH_COUNT);
        self.maps
            .external_path_stats
            .get(&path.index(), 0)
            .expect("read path stats")
            .iter()
            .map(|counter| counter.packets)
            .sum()
    }

    fn conntrack(&self, key: &ConntrackKey) -> Option<ConntrackValue> {
        self.maps.conntrack.get(key, 0).ok()
    }
}

fn nodeport_key(protocol: u8) -> ServiceKey {
    ServiceKey {
        address: 0,
        port: NODE_PORT.to_be(),
        protocol,
        padding: 0,
    }
}

fn frontend_key(address: Ipv4Addr, port: u16, protocol: u8) -> ServiceKey {
    ServiceKey {
        address: be(address),
        port: port.to_be(),
        protocol,
        padding: 0,
    }
}

fn tcp_frame_with(
    macs: ([u8; 6], [u8; 6]),
    ttl: u8,
    source: (Ipv4Addr, u16),
    destination: (Ipv4Addr, u16),
    flags: u8,
) -> Vec<u8> {
    let mut ip = Ipv4::new(source.0, destination.0, packet::IPPROTO_TCP);
    ip.ttl = ttl;
    packet::ethernet(
        macs.0,
        macs.1,
        packet::ETH_P_IP,
        &ip.packet(&packet::tcp_v4(
            source.0,
            destination.0,
            source.1,
            destination.1,
            flags,
            b"",
        )),
    )
}

/// A frame as it arrives on the uplink (the harness's default MACs, TTL 64).
fn tcp_frame(source: (Ipv4Addr, u16), destination: (Ipv4Addr, u16), flags: u8) -> Vec<u8> {
    tcp_frame_with(
        (packet::SERVER_MAC, packet::CLIENT_MAC),
        64,
        source,
        destination,
        flags,
    )
}

fn udp_frame_with(
    macs: ([u8; 6], [u8; 6]),
    ttl: u8,
    source: (Ipv4Addr, u16),
    destination: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut ip = Ipv4::new(source.0, destination.0, packet::IPPROTO_UDP);
    ip.ttl = ttl;
    packet::ethernet(
        macs.0,
        macs.1,
        packet::ETH_P_IP,
        &ip.packet(&packet::udp_v4(
            source.0,
            destination.0,
            source.1,
            destination.1,
            payload,
        )),
    )
}

fn snat_port(source: (Ipv4Addr, u16), destination_port: u16, protocol: u8, attempt: u32) -> u16 {
    let hash = maglev_flow_hash(
        be(source.0),
        source.1.to_be(),
        destination_port.to_be(),
        protocol,
    );
    snat_port_candidate(SNAT_PORT_MIN, SNAT_PORT_MAX, hash, attempt)
}

fn forward_key(
    source: (Ipv4Addr, u16),
    destination: (Ipv4Addr, u16),
    protocol: u8,
) -> ConntrackKey {
    ConntrackKey {
        source_address: be(source.0),
        destination_address: be(destination.0),
        source_port: source.1.to_be(),
        destination_port: destination.1.to_be(),
        protocol,
        direction: CONNTRACK_DIRECTION_FORWARD,
        padding: 0,
    }
}

fn reply_key(source: (Ipv4Addr, u16), destination: (Ipv4Addr, u16), protocol: u8) -> ConntrackKey {
    ConntrackKey {
        direction: CONNTRACK_DIRECTION_REPLY,
        ..forward_key(source, destination, protocol)
    }
}

#[test]
fn nodeport_syn_to_a_local_backend_keeps_the_client_and_its_reply_leaves_from_the_node_port() {
    require_privileges!();
    in_node_dataplane("np-local", |dataplane| {
        dataplane.install_nodeport(
            IPPROTO_TCP,
            1,
            (LOCAL_BACKEND, READY | BACKEND_FLAG_LOCAL),
            0,
        );
        let syn = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::SYN);
        let (verdict, translated) = dataplane.run(ProgramName::XdpUplink, &syn);
        assert_eq!(
            verdict, XDP_PASS,
            "a local backend is reached through the kernel"
        );
        assert_eq!(
            translated,
            tcp_frame(
                (CLIENT, CLIENT_PORT),
                (LOCAL_BACKEND, TARGET_PORT),
                tcp_flags::SYN
            ),
            "DNAT only: the backend sees the client's address"
        );
        let forward = dataplane
            .conntrack(&forward_key(
                (CLIENT, CLIENT_PORT),
                (NODE, NODE_PORT),
                IPPROTO_TCP,
            ))
            .expect("forward entry");
        assert_eq!(
            forward.flags & CONNTRACK_FLAG_EXTERNAL,
            CONNTRACK_FLAG_EXTERNAL
        );
        assert_eq!(forward.flags & CONNTRACK_FLAG_SNAT, 0);
        assert_eq!(TcpState::from_byte(forward.state), TcpState::SynSent);
        assert_eq!(dataplane.path_count(ExternalPath::ForwardLocal), 1);

        // The pod answers; its veth's ingress program restores the frontend and sends the
        // reply towards the client (the kernel fills in the MACs on redirect).
        let syn_ack = tcp_frame(
            (LOCAL_BACKEND, TARGET_PORT),
            (CLIENT, CLIENT_PORT),
            tcp_flags::SYN | tcp_flags::ACK,
        );
        let (verdict, reply) = dataplane.run(ProgramName::TcFromPod, &syn_ack);
        assert_eq!(verdict, TC_ACT_REDIRECT, "redirected to the uplink");
        assert_eq!(
            reply,
            tcp_frame(
                (NODE, NODE_PORT),
                (CLIENT, CLIENT_PORT),
                tcp_flags::SYN | tcp_flags::ACK
            ),
            "from the address and port the client used"
        );
        assert_eq!(dataplane.path_count(ExternalPath::ReplyFromPod), 1);
        let forward = dataplane
            .conntrack(&forward_key(
                (CLIENT, CLIENT_PORT),
                (NODE, NODE_PORT),
                IPPROTO_TCP,
            ))
            .expect("forward entry");
        assert_eq!(TcpState::from_byte(forward.state), TcpState::Established);
    });
}

#[test]
fn nodeport_syn_to_a_remote_backend_is_source_nated_and_sent_to_the_next_hop_and_back() {
    require_privileges!();
    in_node_dataplane("np-remote", |dataplane| {
        dataplane.install_nodeport(IPPROTO_TCP, 1, (REMOTE_BACKEND, READY), 0);
        let syn = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::SYN);
        let (verdict, translated) = dataplane.run(ProgramName::XdpUplink, &syn);
        assert_eq!(verdict, XDP_REDIRECT, "out of the uplink, found by the FIB");
        let port = snat_port((CLIENT, CLIENT_PORT), NODE_PORT, IPPROTO_TCP, 0);
        assert!((SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&port));
        assert_eq!(
            translated,
            tcp_frame_with(
                (NEXT_HOP_MAC, UPLINK_MAC),
                63,
                (NODE, port),
                (REMOTE_BACKEND, TARGET_PORT),
                tcp_flags::SYN
            ),
            "SNAT to the node, DNAT to the backend, TTL and MACs of the next hop"
        );
        assert_eq!(dataplane.path_count(ExternalPath::ForwardRedirected), 1);
        let reply_entry = dataplane
            .conntrack(&reply_key(
                (REMOTE_BACKEND, TARGET_PORT),
                (NODE, port),
                IPPROTO_TCP,
            ))
            .expect("reply entry claims the SNAT port");
        assert_eq!(
            (
                reply_entry.snat_address,
                u16::from_be(reply_entry.snat_port)
            ),
            (be(CLIENT), CLIENT_PORT)
        );

        // A second packet of the flow takes the same translation.
        let ack = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::ACK);
        let (verdict, translated) = dataplane.run(ProgramName::XdpUplink, &ack);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(
            translated,
            tcp_frame_with(
                (NEXT_HOP_MAC, UPLINK_MAC),
                63,
                (NODE, port),
                (REMOTE_BACKEND, TARGET_PORT),
                tcp_flags::ACK
            )
        );

        // The backend's reply comes back to this node's SNAT port.
        let syn_ack = tcp_frame(
            (REMOTE_BACKEND, TARGET_PORT),
            (NODE, port),
            tcp_flags::SYN | tcp_flags::ACK,
        );
        let (verdict, reply) = dataplane.run(ProgramName::XdpUplink, &syn_ack);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(
            reply,
            tcp_frame_with(
                (CLIENT_MAC, UPLINK_MAC),
                63,
                (NODE, NODE_PORT),
                (CLIENT, CLIENT_PORT),
                tcp_flags::SYN | tcp_flags::ACK
            ),
            "back to the client from the address it used"
        );
        assert_eq!(dataplane.path_count(ExternalPath::ReplyTransmitted), 1);
    });
}

/// Sends a UDP query from the client to the NodePort; asserts it leaves source-NATed towards
/// the remote backend and returns the SNAT port.
fn assert_udp_query_is_source_nated(dataplane: &Dataplane) -> u16 {
    let query = udp_frame_with(
        (packet::SERVER_MAC, packet::CLIENT_MAC),
        64,
        (CLIENT, 5353),
        (NODE, NODE_PORT),
        b"query",
    );
    let (verdict, translated) = dataplane.run(ProgramName::XdpUplink, &query);
    assert_eq!(verdict, XDP_REDIRECT);
    let port = snat_port((CLIENT, 5353), NODE_PORT, IPPROTO_UDP, 0);
    assert_eq!(
        translated,
        udp_frame_with(
            (NEXT_HOP_MAC, UPLINK_MAC),
            63,
            (NODE, port),
            (REMOTE_BACKEND, TARGET_PORT),
            b"query"
        )
    );
    port
}

#[test]
fn nodeport_udp_to_a_remote_backend_is_translated_both_ways_with_valid_checksums() {
    require_privileges!();
    in_node_dataplane("np-udp", |dataplane| {
        dataplane.install_nodeport(IPPROTO_UDP, 1, (REMOTE_BACKEND, READY), 0);
        let port = assert_udp_query_is_source_nated(dataplane);
        let answer = udp_frame_with(
            (packet::SERVER_MAC, packet::CLIENT_MAC),
            64,
            (REMOTE_BACKEND, TARGET_PORT),
            (NODE, port),
            b"answer",
        );
        let (verdict, reply) = dataplane.run(ProgramName::XdpUplink, &answer);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(
            reply,
            udp_frame_with(
                (CLIENT_MAC, UPLINK_MAC),
                63,
                (NODE, NODE_PORT),
                (CLIENT, 5353),
                b"answer"
            )
        );
    });
}

#[test]
fn snat_port_collisions_move_on_to_the_next_port_and_exhaustion_drops() {
    require_privileges!();
    in_node_dataplane("np-snat", |dataplane| {
        dataplane.install_nodeport(IPPROTO_TCP, 1, (REMOTE_BACKEND, READY), 0);
        let now_ns = monotonic_now_ns();
        let holder = |last_seen_ns: u64| ConntrackValue {
            last_seen_ns,
            created_ns: last_seen_ns,
            backend_id: 1,
            service_id: 1,
            nat_address: be(NODE),
            nat_port: NODE_PORT.to_be(),
            state: TcpState::Established as u8,
            flags: CONNTRACK_FLAG_EXTERNAL | CONNTRACK_FLAG_SNAT,
            snat_address: be(OTHER_CLIENT),
            snat_port: 1234u16.to_be(),
            padding: 0,
        };
        // Another live flow already holds the first port this flow would try.
        let first = snat_port((CLIENT, CLIENT_PORT), NODE_PORT, IPPROTO_TCP, 0);
        dataplane
            .maps
            .conntrack
            .insert(
                reply_key((REMOTE_BACKEND, TARGET_PORT), (NODE, first), IPPROTO_TCP),
                holder(now_ns),
                0,
            )
            .expect("occupy the first port");
        let syn = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::SYN);
        let (verdict, translated) = dataplane.run(ProgramName::XdpUplink, &syn);
        assert_eq!(verdict, XDP_REDIRECT);
        let second = snat_port((CLIENT, CLIENT_PORT), NODE_PORT, IPPROTO_TCP, 1);
        assert_ne!(first, second);
        assert_eq!(
            translated,
            tcp_frame_with(
                (NEXT_HOP_MAC, UPLINK_MAC),
                63,
                (NODE, second),
                (REMOTE_BACKEND, TARGET_PORT),
                tcp_flags::SYN
            ),
            "the next port in the range"
        );
        let kept = dataplane
            .conntrack(&reply_key(
                (REMOTE_BACKEND, TARGET_PORT),
                (NODE, first),
                IPPROTO_TCP,
            ))
            .expect("the other flow keeps its port");
        assert_eq!(kept.snat_address, be(OTHER_CLIENT));

        // A flow whose every candidate port is held by a live flow is dropped.
        let crowded = (CLIENT, 41_000);
        for attempt in 0..proxy_common::SNAT_PORT_ATTEMPTS {
            let port = snat_port(crowded, NODE_PORT, IPPROTO_TCP, attempt);
            dataplane
                .maps
                .conntrack
                .insert(
                    reply_key((REMOTE_BACKEND, TARGET_PORT), (NODE, port), IPPROTO_TCP),
                    holder(now_ns),
                    0,
                )
                .expect("occupy a port");
        }
        let syn = tcp_frame(crowded, (NODE, NODE_PORT), tcp_flags::SYN);
        let (verdict, _) = dataplane.run(ProgramName::XdpUplink, &syn);
        assert_eq!(verdict, XDP_DROP);
        assert_eq!(dataplane.drops(DropReason::SnatPortsExhausted), 1);

        // A port held by an expired flow is taken over.
        let stale = (CLIENT, 42_000);
        let stale_port = snat_port(stale, NODE_PORT, IPPROTO_TCP, 0);
        let mut expired = holder(1);
        expired.state = TcpState::Close as u8;
        dataplane
            .maps
            .conntrack
            .insert(
                reply_key(
                    (REMOTE_BACKEND, TARGET_PORT),
                    (NODE, stale_port),
                    IPPROTO_TCP,
                ),
                expired,
                0,
            )
            .expect("an expired holder");
        let syn = tcp_frame(stale, (NODE, NODE_PORT), tcp_flags::SYN);
        let (verdict, translated) = dataplane.run(ProgramName::XdpUplink, &syn);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(
            translated,
            tcp_frame_with(
                (NEXT_HOP_MAC, UPLINK_MAC),
                63,
                (NODE, stale_port),
                (REMOTE_BACKEND, TARGET_PORT),
                tcp_flags::SYN
            )
        );
    });
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of `bpf_ktime_get_ns`.
fn monotonic_now_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

#[test]
fn maglev_frontends_place_each_flow_at_the_slot_of_its_hash() {
    require_privileges!();
    in_node_dataplane("np-maglev", |dataplane| {
        let backends: Vec<(Ipv4Addr, u8)> = (0..3)
            .map(|index| {
                (
                    Ipv4Addr::new(10, 244, 1, 20 + index),
                    READY | BACKEND_FLAG_LOCAL,
                )
            })
            .collect();
        // A table of size 7 (prime), as user space builds it.
        let table = [1u32, 2, 3, 1, 2, 3, 1];
        dataplane.install(
            nodeport_key(IPPROTO_TCP),
            1,
            &backends,
            &table,
            SERVICE_FLAG_MAGLEV,
        );
        for client_port in 50_000..50_040u16 {
            let syn = tcp_frame((CLIENT, client_port), (NODE, NODE_PORT), tcp_flags::SYN);
            let (verdict, translated) = dataplane.run(ProgramName::XdpUplink, &syn);
            assert_eq!(verdict, XDP_PASS);
            let hash = maglev_flow_hash(
                be(CLIENT),
                client_port.to_be(),
                NODE_PORT.to_be(),
                IPPROTO_TCP,
            );
            let backend_id = table[(hash % 7) as usize];
            let expected = backends[backend_id as usize - 1].0;
            assert_eq!(
                Ipv4Addr::new(
                    translated[30],
                    translated[31],
                    translated[32],
                    translated[33]
                ),
                expected,
                "client port {client_port}"
            );
        }
    });
}

#[test]
fn load_balancer_source_ranges_admit_listed_sources_and_drop_the_rest() {
    require_privileges!();
    in_node_dataplane("np-ranges", |dataplane| {
        dataplane.install(
            frontend_key(LOAD_BALANCER_IP, SERVICE_PORT, IPPROTO_TCP),
            5,
            &[(LOCAL_BACKEND, READY | BACKEND_FLAG_LOCAL)],
            &[1],
            SERVICE_FLAG_MAGLEV | SERVICE_FLAG_SOURCE_RANGES,
        );
        let key = aya::maps::lpm_trie::Key::new(
            source_range_prefix_length(32),
            SourceRangeKey {
                service_id: 5u32.to_be(),
                address: be(CLIENT),
            },
        );
        dataplane
            .maps
            .source_ranges
            .insert(&key, 1, 0)
            .expect("allow the client");
        let allowed = tcp_frame(
            (CLIENT, CLIENT_PORT),
            (LOAD_BALANCER_IP, SERVICE_PORT),
            tcp_flags::SYN,
        );
        let (verdict, translated) = dataplane.run(ProgramName::XdpUplink, &allowed);
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(
            translated,
            tcp_frame(
                (CLIENT, CLIENT_PORT),
                (LOCAL_BACKEND, TARGET_PORT),
                tcp_flags::SYN
            )
        );
        let denied = tcp_frame(
            (OTHER_CLIENT, CLIENT_PORT),
            (LOAD_BALANCER_IP, SERVICE_PORT),
            tcp_flags::SYN,
        );
        let (verdict, _) = dataplane.run(ProgramName::XdpUplink, &denied);
        assert_eq!(verdict, XDP_DROP);
        assert_eq!(dataplane.drops(DropReason::SourceRangeDenied), 1);
    });
}

#[test]
fn external_traffic_policy_local_without_local_endpoints_drops_and_without_any_passes() {
    require_privileges!();
    in_node_dataplane("np-etp", |dataplane| {
        dataplane.install(
            nodeport_key(IPPROTO_TCP),
            1,
            &[],
            &[],
            SERVICE_FLAG_MAGLEV | SERVICE_FLAG_EXTERNAL_LOCAL | SERVICE_FLAG_DROP_WHEN_EMPTY,
        );
        let syn = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::SYN);
        let (verdict, _) = dataplane.run(ProgramName::XdpUplink, &syn);
        assert_eq!(verdict, XDP_DROP);
        assert_eq!(dataplane.drops(DropReason::NoLocalEndpoints), 1);

        // No endpoint anywhere: the kernel answers (RST), untouched by XDP.
        dataplane.install(nodeport_key(IPPROTO_TCP), 1, &[], &[], SERVICE_FLAG_MAGLEV);
        let (verdict, frame) = dataplane.run(ProgramName::XdpUplink, &syn);
        assert_eq!((verdict, frame), (XDP_PASS, syn));
    });
}

#[test]
fn traffic_that_is_not_north_south_service_traffic_passes_unchanged() {
    require_privileges!();
    in_node_dataplane("np-pass", |dataplane| {
        dataplane.install_nodeport(IPPROTO_TCP, 1, (REMOTE_BACKEND, READY), 0);
        // A ClusterIP frontend is not served from outside.
        let value = ServiceValue {
            service_id: 2,
            backend_count: 1,
            generation: 0,
            flags: 0,
            affinity_timeout_seconds: 0,
            padding: 0,
        };
        dataplane
            .maps
            .services
            .insert(
                frontend_key(CLUSTER_IP, SERVICE_PORT, IPPROTO_TCP),
                value,
                0,
            )
            .expect("ClusterIP frontend");
        let mut fragment_ip = Ipv4::new(CLIENT, NODE, packet::IPPROTO_TCP);
        fragment_ip.frag_off = 0x2000; // more fragments
        let fragment = packet::ipv4_frame(
            &fragment_ip,
            &packet::tcp_v4(CLIENT, NODE, CLIENT_PORT, NODE_PORT, tcp_flags::SYN, b""),
        );
        let mut truncated = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::SYN);
        truncated.truncate(14 + 20 + 10);
        let frames = [
            (
                "ClusterIP from outside",
                tcp_frame(
                    (CLIENT, CLIENT_PORT),
                    (CLUSTER_IP, SERVICE_PORT),
                    tcp_flags::SYN,
                ),
            ),
            (
                "another port of the node",
                tcp_frame((CLIENT, CLIENT_PORT), (NODE, 22), tcp_flags::SYN),
            ),
            (
                "the NodePort on an address that is not a NodePort address",
                tcp_frame(
                    (CLIENT, CLIENT_PORT),
                    (OTHER_CLIENT, NODE_PORT),
                    tcp_flags::SYN,
                ),
            ),
            ("a fragment", fragment),
            ("a truncated TCP header", truncated),
            ("ARP", packet::arp_request(packet::CLIENT_MAC, CLIENT, NODE)),
            ("an IPv4 frame cut inside the IP header", {
                let mut runt = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::SYN);
                runt.truncate(14 + 12);
                runt
            }),
        ];
        for (what, frame) in frames {
            let (verdict, output) = dataplane.run(ProgramName::XdpUplink, &frame);
            assert_eq!((verdict, &output), (XDP_PASS, &frame), "{what}");
        }
        for reason in DropReason::ALL {
            assert_eq!(dataplane.drops(reason), 0, "{}", reason.name());
        }
    });
}

#[test]
fn unresolved_next_hop_hands_the_frame_to_the_tc_program_with_its_egress_interface() {
    require_privileges!();
    in_node_dataplane("np-neigh", |dataplane| {
        dataplane.install_nodeport(IPPROTO_TCP, 1, (UNRESOLVED_BACKEND, READY), 0);
        let syn = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::SYN);
        let (verdict, output) = dataplane.run(ProgramName::XdpUplink, &syn);
        assert_eq!(verdict, XDP_PASS, "up to tc_uplink");
        assert_eq!(dataplane.path_count(ExternalPath::ForwardNeighbour), 1);
        let uplink_index = nix::net::if_::if_nametoindex("up0").expect("uplink index");
        let port = snat_port((CLIENT, CLIENT_PORT), NODE_PORT, IPPROTO_TCP, 0);
        let translated = tcp_frame_with(
            (packet::SERVER_MAC, packet::CLIENT_MAC),
            63,
            (NODE, port),
            (UNRESOLVED_BACKEND, TARGET_PORT),
            tcp_flags::SYN,
        );
        // The output starts at the metadata: the hand-off record, then the frame.
        let mut expected = Vec::new();
        expected.extend_from_slice(&0x534b_4631u32.to_ne_bytes());
        expected.extend_from_slice(&uplink_index.to_ne_bytes());
        expected.extend_from_slice(&NODE.octets());
        expected.extend_from_slice(&translated);
        assert_eq!(output, expected, "{output:02x?}");
    });
}

#[test]
fn tc_fallback_gives_the_same_translation_as_xdp() {
    require_privileges!();
    in_node_dataplane("np-tc", |dataplane| {
        dataplane.install_nodeport(IPPROTO_TCP, 1, (REMOTE_BACKEND, READY), 0);
        let syn = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::SYN);
        let (verdict, translated) = dataplane.run(ProgramName::TcUplinkFallback, &syn);
        assert_eq!(
            verdict, TC_ACT_REDIRECT,
            "redirected with neighbour resolution"
        );
        let port = snat_port((CLIENT, CLIENT_PORT), NODE_PORT, IPPROTO_TCP, 0);
        assert_eq!(
            translated,
            tcp_frame((NODE, port), (REMOTE_BACKEND, TARGET_PORT), tcp_flags::SYN),
            "the same SNAT and DNAT (the kernel writes the MACs when it sends)"
        );
        let syn_ack = tcp_frame(
            (REMOTE_BACKEND, TARGET_PORT),
            (NODE, port),
            tcp_flags::SYN | tcp_flags::ACK,
        );
        let (verdict, reply) = dataplane.run(ProgramName::TcUplinkFallback, &syn_ack);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(
            reply,
            tcp_frame(
                (NODE, NODE_PORT),
                (CLIENT, CLIENT_PORT),
                tcp_flags::SYN | tcp_flags::ACK
            )
        );
        let ignored = tcp_frame((CLIENT, CLIENT_PORT), (NODE, 22), tcp_flags::SYN);
        let (verdict, output) = dataplane.run(ProgramName::TcUplinkFallback, &ignored);
        assert_eq!((verdict, output), (TC_ACT_OK, ignored));
        assert_ne!(TC_ACT_SHOT, TC_ACT_OK);
    });
}

/// The outer IPIP header the ingress node writes, then the packet unchanged.
fn ipip_frame(macs: ([u8; 6], [u8; 6]), outer: (Ipv4Addr, Ipv4Addr), inner: &[u8]) -> Vec<u8> {
    let mut ip = Ipv4::new(outer.0, outer.1, 4);
    ip.id = 0;
    ip.frag_off = 0;
    packet::ethernet(macs.0, macs.1, packet::ETH_P_IP, &ip.packet(inner))
}

#[test]
fn dsr_tcp_to_a_remote_backend_is_tunnelled_unchanged_to_its_node() {
    require_privileges!();
    in_node_dataplane("np-dsr", |dataplane| {
        dataplane.install_nodeport(IPPROTO_TCP, 1, (REMOTE_BACKEND, READY), SERVICE_FLAG_DSR);
        let syn = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::SYN);
        let (verdict, tunnelled) = dataplane.run(ProgramName::XdpUplink, &syn);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(
            tunnelled,
            ipip_frame((NEXT_HOP_MAC, UPLINK_MAC), (NODE, NEXT_HOP), &syn[14..]),
            "IPIP to the backend's node (the route's gateway), the client's packet unchanged"
        );
        let forward = dataplane
            .conntrack(&forward_key(
                (CLIENT, CLIENT_PORT),
                (NODE, NODE_PORT),
                IPPROTO_TCP,
            ))
            .expect("forward entry");
        assert_eq!(forward.flags & CONNTRACK_FLAG_DSR, CONNTRACK_FLAG_DSR);
        assert_eq!(dataplane.path_count(ExternalPath::ForwardTunnelled), 1);
        // The rest of the connection follows the entry.
        let ack = tcp_frame((CLIENT, CLIENT_PORT), (NODE, NODE_PORT), tcp_flags::ACK);
        let (verdict, tunnelled) = dataplane.run(ProgramName::XdpUplink, &ack);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(
            tunnelled,
            ipip_frame((NEXT_HOP_MAC, UPLINK_MAC), (NODE, NEXT_HOP), &ack[14..])
        );

        // UDP is source-NATed even for a DSR service.
        dataplane.install_nodeport(IPPROTO_UDP, 2, (REMOTE_BACKEND, READY), SERVICE_FLAG_DSR);
        assert_udp_query_is_source_nated(dataplane);
    });
}

#[test]
fn a_tunnelled_dsr_packet_is_decapsulated_and_balanced_to_the_local_backend() {
    require_privileges!();
    in_node_dataplane("np-decap", |dataplane| {
        dataplane.install_nodeport(
            IPPROTO_TCP,
            1,
            (LOCAL_BACKEND, READY | BACKEND_FLAG_LOCAL),
            SERVICE_FLAG_DSR,
        );
        // The client used the other node's address; that node tunnelled it here.
        let other_node = Ipv4Addr::new(192, 0, 2, 2);
        let syn = tcp_frame(
            (CLIENT, CLIENT_PORT),
            (other_node, NODE_PORT),
            tcp_flags::SYN,
        );
        let tunnelled = ipip_frame((UPLINK_MAC, NEXT_HOP_MAC), (other_node, NODE), &syn[14..]);
        let (verdict, delivered) = dataplane.run(ProgramName::XdpUplink, &tunnelled);
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(
            delivered,
            tcp_frame_with(
                (UPLINK_MAC, NEXT_HOP_MAC),
                64,
                (CLIENT, CLIENT_PORT),
                (LOCAL_BACKEND, TARGET_PORT),
                tcp_flags::SYN
            ),
            "outer header gone, DNAT to the local backend, the client kept"
        );
        assert_eq!(dataplane.path_count(ExternalPath::Decapsulated), 1);
        // Its reply leaves from the address the client used, straight to the client.
        let syn_ack = tcp_frame(
            (LOCAL_BACKEND, TARGET_PORT),
            (CLIENT, CLIENT_PORT),
            tcp_flags::SYN | tcp_flags::ACK,
        );
        let (verdict, reply) = dataplane.run(ProgramName::TcFromPod, &syn_ack);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(
            reply,
            tcp_frame(
                (other_node, NODE_PORT),
                (CLIENT, CLIENT_PORT),
                tcp_flags::SYN | tcp_flags::ACK
            )
        );

        // A tunnelled packet this node would place on a remote backend is dropped.
        dataplane.install_nodeport(IPPROTO_TCP, 1, (REMOTE_BACKEND, READY), SERVICE_FLAG_DSR);
        let syn = tcp_frame((CLIENT, 41_000), (other_node, NODE_PORT), tcp_flags::SYN);
        let tunnelled = ipip_frame((UPLINK_MAC, NEXT_HOP_MAC), (other_node, NODE), &syn[14..]);
        let (verdict, _) = dataplane.run(ProgramName::XdpUplink, &tunnelled);
        assert_eq!(verdict, XDP_DROP);
        assert_eq!(dataplane.drops(DropReason::TunnelledBackendNotLocal), 1);

        // IPIP addressed elsewhere is not ours to open.
        let foreign = ipip_frame(
            (UPLINK_MAC, NEXT_HOP_MAC),
            (other_node, Ipv4Addr::new(192, 0, 2, 77)),
            &syn[14..],
        );
        let (verdict, output) = dataplane.run(ProgramName::XdpUplink, &foreign);
        assert_eq!((verdict, output), (XDP_PASS, foreign));
    });
}
