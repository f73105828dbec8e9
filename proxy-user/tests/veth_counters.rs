//! The first programs attached to a real veth between two network namespaces, with real traffic
//! (ping and a TCP connection). The kernel's own per-namespace counters (/proc/net/snmp) are the
//! independent reference: every ICMP message and TCP segment a namespace received must have been
//! counted by the program on its receive path.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use proxy_common::ProtocolClass;
use skiff_proxy::{
    attach::{TcDirection, attach_tc, attach_xdp, detach_tc, detach_xdp},
    programs::{LoadOptions, LoadedObject, ProgramName, ProgramObject},
    stats::protocol_stats,
};
use skiff_tests::{bpffs::PinDirectory, netns::NetNs, require_privileges, veth};

const CLIENT_ADDRESS: &str = "10.199.0.1";
const SERVER_ADDRESS: &str = "10.199.0.2";

/// Selected fields of /proc/net/snmp, read inside a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snmp {
    icmp_in_messages: u64,
    tcp_in_segments: u64,
}

fn snmp_field(snmp: &str, protocol: &str, field: &str) -> u64 {
    let mut lines = snmp
        .lines()
        .filter(|line| line.starts_with(&format!("{protocol}: ")));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        panic!("/proc/net/snmp has no {protocol} lines:\n{snmp}");
    };
    let position = names
        .split_whitespace()
        .position(|name| name == field)
        .unwrap_or_else(|| panic!("/proc/net/snmp has no {protocol} {field}"));
    values
        .split_whitespace()
        .nth(position)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("/proc/net/snmp {protocol} {field} is not a number"))
}

fn snmp(netns: &NetNs) -> Snmp {
    let text = netns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .expect("enter namespace")
        .expect("read /proc/thread-self/net/snmp");
    Snmp {
        icmp_in_messages: snmp_field(&text, "Icmp", "InMsgs"),
        tcp_in_segments: snmp_field(&text, "Tcp", "InSegs"),
    }
}

fn ping(from: &NetNs, to: &str, count: u32) {
    let output = from
        .command("ping")
        .args([
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            "-n",
            "-q",
            to,
        ])
        .output()
        .expect("run ping");
    assert!(
        output.status.success(),
        "ping {to} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One TCP connection: the client sends a request, the server answers, both close.
fn tcp_exchange(client: &NetNs, server: &NetNs) {
    let listener = server
        .run(|| TcpListener::bind((SERVER_ADDRESS, 7070)))
        .expect("enter server namespace")
        .expect("bind the server socket");
    std::thread::scope(|scope| {
        let server_side = scope.spawn(|| {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = [0u8; 5];
            stream.read_exact(&mut request).expect("read request");
            stream.write_all(b"pong!").expect("write reply");
        });
        let mut stream = client
            .run(|| {
                TcpStream::connect_timeout(
                    &format!("{SERVER_ADDRESS}:7070").parse().expect("literal"),
                    Duration::from_secs(5),
                )
            })
            .expect("enter client namespace")
            .expect("connect to the server");
        stream.write_all(b"ping!").expect("write request");
        let mut reply = [0u8; 5];
        stream.read_exact(&mut reply).expect("read reply");
        assert_eq!(&reply, b"pong!");
        drop(stream);
        server_side.join().expect("server thread");
    });
}

/// Waits until the namespace's counters stop moving (the last FIN/ACK may still be in flight).
fn settled_snmp(netns: &NetNs) -> Snmp {
    let mut last = snmp(netns);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = snmp(netns);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn tc_and_xdp_count_real_ping_and_tcp_traffic_on_a_veth_and_detach_cleanly() {
    require_privileges!("ip", "ping");
    // Topology: client netns [veth-c] <==> [veth-s] server netns.
    let client = NetNs::new("cnt-client").expect("client namespace");
    let server = NetNs::new("cnt-server").expect("server namespace");
    client
        .disable_ipv6()
        .expect("no IPv6 chatter in the client namespace");
    server
        .disable_ipv6()
        .expect("no IPv6 chatter in the server namespace");
    veth::create_addressed(
        (&client, "veth-c", CLIENT_ADDRESS),
        (&server, "veth-s", SERVER_ADDRESS),
        24,
    )
    .expect("veth pair");

    // XDP sees what the server receives; TC ingress sees what the client receives.
    let pins = PinDirectory::new("counters").expect("private bpffs directory");
    let options = LoadOptions::new(pins.path());
    let mut xdp = LoadedObject::load(ProgramObject::XdpUplink, &options).expect("load xdp_uplink");
    let mut tc = LoadedObject::load(ProgramObject::TcPod, &options).expect("load tc_pod");
    let program_ids = [
        xdp.program_id(ProgramName::XdpUplink).expect("xdp id"),
        tc.program_id(ProgramName::TcFromPod).expect("tc id"),
    ];
    let xdp_link = server
        .run(|| attach_xdp(&mut xdp, ProgramName::XdpUplink, "veth-s"))
        .expect("enter server namespace")
        .expect("attach xdp_uplink to veth-s");
    let tc_link = client
        .run(|| {
            attach_tc(
                &mut tc,
                ProgramName::TcFromPod,
                "veth-c",
                TcDirection::Ingress,
            )
        })
        .expect("enter client namespace")
        .expect("attach tc_from_pod to veth-c ingress");
    // Resolve the neighbours first so the measured window holds only ICMP and TCP (plus ARP,
    // which is not IP and is checked separately).
    ping(&client, SERVER_ADDRESS, 1);

    let (server_before, client_before) = (settled_snmp(&server), settled_snmp(&client));
    let (xdp_before, tc_before) = (
        protocol_stats(&xdp).expect("xdp stats"),
        protocol_stats(&tc).expect("tc stats"),
    );

    ping(&client, SERVER_ADDRESS, 3);
    tcp_exchange(&client, &server);

    let (server_after, client_after) = (settled_snmp(&server), settled_snmp(&client));
    let xdp_delta = protocol_stats(&xdp).expect("xdp stats").since(&xdp_before);
    let tc_delta = protocol_stats(&tc).expect("tc stats").since(&tc_before);

    // The server received 3 echo requests; the client 3 echo replies.
    assert_eq!(
        xdp_delta.packets(ProtocolClass::Icmp),
        3,
        "xdp_uplink ICMP on veth-s:\n{xdp_delta}"
    );
    assert_eq!(
        tc_delta.packets(ProtocolClass::Icmp),
        3,
        "tc_pod ICMP on veth-c:\n{tc_delta}"
    );
    assert_eq!(
        server_after.icmp_in_messages - server_before.icmp_in_messages,
        3
    );
    assert_eq!(
        client_after.icmp_in_messages - client_before.icmp_in_messages,
        3
    );
    // Every TCP segment each side's stack received went through that side's program.
    let server_segments = server_after.tcp_in_segments - server_before.tcp_in_segments;
    let client_segments = client_after.tcp_in_segments - client_before.tcp_in_segments;
    assert!(
        server_segments >= 3 && client_segments >= 2,
        "a whole connection: {server_segments} / {client_segments}"
    );
    assert_eq!(
        xdp_delta.packets(ProtocolClass::Tcp),
        server_segments,
        "xdp_uplink TCP:\n{xdp_delta}"
    );
    assert_eq!(
        tc_delta.packets(ProtocolClass::Tcp),
        client_segments,
        "tc_pod TCP:\n{tc_delta}"
    );
    for (name, delta) in [("xdp_uplink", &xdp_delta), ("tc_pod", &tc_delta)] {
        for class in [
            ProtocolClass::Udp,
            ProtocolClass::Icmpv6,
            ProtocolClass::OtherIp,
            ProtocolClass::Malformed,
        ] {
            assert_eq!(
                delta.packets(class),
                0,
                "{name} saw {} packets:\n{delta}",
                class.name()
            );
        }
    }

    // Detached, the programs see nothing more, though traffic still flows.
    server
        .run(|| detach_xdp(&mut xdp, ProgramName::XdpUplink, xdp_link))
        .expect("enter server namespace")
        .expect("detach xdp_uplink");
    client
        .run(|| detach_tc(&mut tc, ProgramName::TcFromPod, tc_link))
        .expect("enter client namespace")
        .expect("detach tc_from_pod");
    let (xdp_detached, tc_detached) = (
        protocol_stats(&xdp).expect("xdp stats"),
        protocol_stats(&tc).expect("tc stats"),
    );
    ping(&client, SERVER_ADDRESS, 2);
    assert_eq!(
        protocol_stats(&xdp).expect("xdp stats"),
        xdp_detached,
        "xdp_uplink still runs after detach"
    );
    assert_eq!(
        protocol_stats(&tc).expect("tc stats"),
        tc_detached,
        "tc_pod still runs after detach"
    );

    // Dropped, the programs are unloaded: the kernel no longer knows their ids.
    drop((xdp, tc));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let loaded: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|info| info.id())
            .filter(|id| program_ids.contains(id))
            .collect();
        if loaded.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "programs {loaded:?} are still loaded after drop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
