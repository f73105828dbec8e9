//! ClusterIP load balancing with real traffic: a client pod reaches a Service's VIP and skiff-proxy
//! (running in the node namespace, attached to every pod veth) spreads connections over backend
//! pods that answer with their names.

mod common;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Backend, Cluster, SERVICE_PORT, ServiceSpec, VIP, ask, udp_ask};
use skiff_tests::require_privileges;

fn three_backends() -> Vec<Backend> {
    vec![
        Backend::ready("web-0", Ipv4Addr::new(10, 250, 1, 2)),
        Backend::ready("web-1", Ipv4Addr::new(10, 250, 1, 3)),
        Backend::ready("web-2", Ipv4Addr::new(10, 250, 1, 4)),
    ]
}

fn assert_uniform(counts: &BTreeMap<String, u32>, total: u32, what: &str) {
    assert_eq!(
        counts.len(),
        3,
        "{what}: every backend gets traffic: {counts:?}"
    );
    let expected = total as f64 / 3.0;
    for (name, count) in counts {
        let deviation = (f64::from(*count) - expected).abs() / expected;
        assert!(
            deviation <= 0.15,
            "{what}: {name} got {count} of {total} ({counts:?})"
        );
    }
}

#[test]
fn tcp_and_udp_connections_spread_evenly_and_replies_come_from_the_vip() {
    require_privileges!("ip");
    let backends = three_backends();
    let cluster = Cluster::new("spread", &backends, &ServiceSpec::default());
    cluster.wait_until_serving();

    let mut counts = BTreeMap::new();
    for _ in 0..3000 {
        let stream = cluster.tcp_connect().expect("connect to the ClusterIP");
        assert_eq!(
            stream.peer_addr().expect("peer"),
            SocketAddr::from((VIP, SERVICE_PORT))
        );
        *counts.entry(ask(&stream).expect("a name")).or_insert(0) += 1;
    }
    assert_uniform(&counts, 3000, "TCP");

    let mut counts = BTreeMap::new();
    for _ in 0..3000 {
        let socket = cluster.udp_socket();
        let (name, from) = udp_ask(&socket).expect("a UDP answer");
        assert_eq!(
            from,
            SocketAddr::from((VIP, SERVICE_PORT)),
            "the reply comes from the VIP"
        );
        *counts.entry(name).or_insert(0) += 1;
    }
    assert_uniform(&counts, 3000, "UDP");
}

#[test]
fn removed_backend_gets_no_new_flows_and_its_udp_flow_moves() {
    require_privileges!("ip");
    let backends = three_backends();
    let spec = ServiceSpec::default();
    let cluster = Cluster::new("remove", &backends, &spec);
    cluster.wait_until_serving();

    // A UDP client that keeps one 5-tuple, currently balanced to web-2.
    let pinned_flow = loop {
        let socket = cluster.udp_socket();
        if udp_ask(&socket).expect("a UDP answer").0 == "web-2" {
            break socket;
        }
    };
    cluster.publish(&spec, &[&backends[0], &backends[1]]);
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..300 {
        assert_ne!(
            cluster.tcp_name().expect("a name"),
            "web-2",
            "a new flow reached the removed backend"
        );
    }
    let (name, from) = udp_ask(&pinned_flow).expect("the UDP flow still gets answers");
    assert_ne!(
        name, "web-2",
        "the UDP flow must move off the removed backend"
    );
    assert_eq!(from, SocketAddr::from((VIP, SERVICE_PORT)));
}

#[test]
fn service_without_endpoints_refuses_connections_at_once() {
    require_privileges!("ip");
    let backends = three_backends();
    let spec = ServiceSpec::default();
    let cluster = Cluster::new("empty", &backends, &spec);
    cluster.wait_until_serving();
    cluster.publish(&spec, &[]);
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let started = Instant::now();
        let error = cluster.tcp_connect().expect_err("no endpoint may accept");
        let elapsed = started.elapsed();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{error}"
        );
        assert!(
            elapsed < Duration::from_millis(50),
            "refused after {elapsed:?}"
        );
    }
    let socket = cluster.udp_socket();
    socket.connect((VIP, SERVICE_PORT)).expect("connect UDP");
    socket.send(b"anyone?").expect("send");
    let mut buffer = [0u8; 64];
    let error = socket.recv(&mut buffer).expect_err("port unreachable");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );
}

#[test]
fn killing_and_restarting_skiff_proxy_loses_no_connection() {
    require_privileges!("ip");
    let backends = three_backends();
    let cluster = Cluster::new("restart", &backends, &ServiceSpec::default());
    cluster.wait_until_serving();

    let long_lived = cluster.tcp_connect().expect("long-lived connection");
    let first = ask(&long_lived).expect("a name");
    let stop = Arc::new(AtomicBool::new(false));
    let (opened, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    std::thread::scope(|scope| {
        let (churn_stop, opened, failed, cluster) = (
            Arc::clone(&stop),
            Arc::clone(&opened),
            Arc::clone(&failed),
            &cluster,
        );
        let churn = scope.spawn(move || {
            // 20 new connections per second while skiff-proxy dies and comes back.
            while !churn_stop.load(Ordering::Relaxed) {
                match cluster.tcp_name() {
                    Ok(_) => opened.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        // kill -9, a pause, and a new skiff-proxy that adopts the pinned maps and links.
        cluster.kill_proxy();
        for _ in 0..10 {
            assert_eq!(
                ask(&long_lived).expect("the long-lived connection survives"),
                first
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster.start_proxy();
        std::thread::sleep(Duration::from_millis(1500));
        for _ in 0..10 {
            assert_eq!(
                ask(&long_lived).expect("the long-lived connection survives"),
                first
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().expect("churn thread");
    });
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "connections failed across the restart"
    );
    assert!(
        opened.load(Ordering::Relaxed) >= 40,
        "the churn loop ran ({} connections)",
        opened.load(Ordering::Relaxed)
    );
    assert!(
        cluster
            .proxy_log()
            .contains("swapped into the pinned links"),
        "the restarted skiff-proxy adopted the links:\n{}",
        cluster.proxy_log()
    );
}
