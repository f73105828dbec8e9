//! North-south traffic end to end: an external client reaches NodePort and load-balancer
//! Services through either of two nodes running skiff-proxy on their uplinks (native XDP on the
//! veths, and the TC fallback), with backends on both nodes. Topology: `north_south/mod.rs`.

mod north_south;

use std::{
    net::{SocketAddr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use north_south::{
    BACKENDS, CLIENT, DIRECT_NODE_PORT, LOCAL_HEALTH_CHECK_PORT, LOCAL_NODE_PORT, NODE_ADDRESSES,
    NorthSouth, OTHER_CLIENT, PEER, RANGED_IP, RANGED_PORT, WEB_NODE_PORT, ask, connect_from,
    manifest_with_terminating, udp_ask,
};
use skiff_tests::require_privileges;

fn node_port(node: usize, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(NODE_ADDRESSES[node], port)
}

/// 3000 TCP connections (half through each node) reach all four backends within ±15 % of an
/// even share; UDP through each node is answered from the address the client used.
fn spreads_tcp_and_udp_through_both_nodes(mode: &'static str, maglev_table_size: u16) {
    let topology =
        NorthSouth::with_maglev_table_size(&format!("ns-spread-{mode}"), mode, maglev_table_size);
    for node in 0..2 {
        topology.wait_until_serving(node_port(node, WEB_NODE_PORT));
    }
    let mut total: std::collections::BTreeMap<String, usize> = Default::default();
    for node in 0..2 {
        let (names, errors) = topology.tcp_spread(node_port(node, WEB_NODE_PORT), 1500);
        assert!(
            errors.is_empty(),
            "{} of 1500 connections through node {node} failed, e.g. {:?}; logs:\n{}",
            errors.len(),
            errors.first(),
            topology.logs()
        );
        let local = names
            .keys()
            .filter(|name| name.starts_with(["a", "b"][node]))
            .count();
        assert_eq!(
            local, 2,
            "both local backends of node {node} served: {names:?}"
        );
        for (name, count) in names {
            *total.entry(name).or_default() += count;
        }
    }
    eprintln!("{mode}, M={maglev_table_size}: connections per backend {total:?}");
    assert_eq!(total.len(), BACKENDS.len(), "{total:?}");
    let even = 3000.0 / BACKENDS.len() as f64;
    for (name, count) in &total {
        let deviation = (*count as f64 - even).abs() / even;
        assert!(
            deviation <= 0.15,
            "backend {name} took {count} of 3000 connections ({:.1} % off an even share): {total:?}",
            deviation * 100.0
        );
    }

    let status = topology.status(0);
    assert!(
        status.contains(&format!("maglev M={maglev_table_size}")) && status.contains("SNAT: "),
        "skiff-proxy status shows the Maglev tables and SNAT ports:\n{status}"
    );
    for node in 0..2 {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let socket = topology.udp_socket(CLIENT, 0);
            let (name, from) = udp_ask(&socket, node_port(node, WEB_NODE_PORT), "who?")
                .unwrap_or_else(|error| panic!("UDP through node {node}: {error}"));
            assert_eq!(
                from,
                SocketAddr::V4(node_port(node, WEB_NODE_PORT)),
                "the reply comes from the address the client used"
            );
            seen.insert(name);
        }
        assert!(
            seen.len() >= 3,
            "UDP through node {node} reached only {seen:?}"
        );
    }
}

#[test]
fn nodeport_tcp_and_udp_through_either_node_reach_backends_on_both_nodes_evenly() {
    require_privileges!();
    // The default table size, as a node runs without the flag.
    spreads_tcp_and_udp_through_both_nodes("native", 16_381);
}

#[test]
fn generic_xdp_spreads_nodeport_traffic_through_either_node_the_same_way() {
    require_privileges!();
    spreads_tcp_and_udp_through_both_nodes("generic", 251);
}

#[test]
fn tc_fallback_spreads_nodeport_traffic_through_either_node_the_same_way() {
    require_privileges!();
    spreads_tcp_and_udp_through_both_nodes("tc", 251);
}

/// The same client address and port reaches the same backend through either node (Maglev).
fn same_flow_same_backend(mode: &'static str) {
    let topology = NorthSouth::new(&format!("ns-maglev-{mode}"), mode);
    for node in 0..2 {
        topology.wait_until_serving(node_port(node, WEB_NODE_PORT));
    }
    let mut backends = std::collections::BTreeSet::new();
    for port in 0..24u16 {
        let socket = topology.udp_socket(CLIENT, 45_000 + port);
        let (via_a, _) =
            udp_ask(&socket, node_port(0, WEB_NODE_PORT), "who?").expect("UDP through node-a");
        let (via_b, _) =
            udp_ask(&socket, node_port(1, WEB_NODE_PORT), "who?").expect("UDP through node-b");
        assert_eq!(
            via_a,
            via_b,
            "client port {} reached different backends",
            45_000 + port
        );
        backends.insert(via_a);
    }
    assert!(backends.len() >= 3, "flows spread over {backends:?}");
}

#[test]
fn the_same_flow_through_node_a_or_node_b_reaches_the_same_backend() {
    require_privileges!();
    same_flow_same_backend("native");
}

#[test]
fn tc_fallback_also_picks_the_same_backend_on_both_nodes() {
    require_privileges!();
    same_flow_same_backend("tc");
}

/// externalTrafficPolicy: Local — the backend sees the client's address, the node without a
/// local endpoint refuses, and the health-check node port says which node to use.
fn external_traffic_policy_local(mode: &'static str) {
    let topology = NorthSouth::new(&format!("ns-local-{mode}"), mode);
    topology.wait_until_serving(node_port(0, LOCAL_NODE_PORT));
    let peer = topology
        .tcp_ask(
            CLIENT,
            node_port(0, LOCAL_NODE_PORT),
            PEER,
            Duration::from_secs(2),
        )
        .expect("through node-a");
    assert!(
        peer.starts_with(&format!("{CLIENT}:")),
        "the backend saw {peer}, not the client"
    );
    let socket = topology.udp_socket(CLIENT, 0);
    let (peer, from) =
        udp_ask(&socket, node_port(0, LOCAL_NODE_PORT), PEER).expect("UDP through node-a");
    assert!(peer.starts_with(&format!("{CLIENT}:")), "UDP peer {peer}");
    assert_eq!(from, SocketAddr::V4(node_port(0, LOCAL_NODE_PORT)));

    let refused = topology.tcp_ask(
        CLIENT,
        node_port(1, LOCAL_NODE_PORT),
        "who?",
        Duration::from_millis(700),
    );
    assert!(
        refused.is_err(),
        "node-b has no local endpoint but answered {refused:?}"
    );

    let (status, body) = topology.health_check(0, LOCAL_HEALTH_CHECK_PORT);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"localEndpoints\": 1"), "{body}");
    let (status, body) = topology.health_check(1, LOCAL_HEALTH_CHECK_PORT);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"localEndpoints\": 0"), "{body}");
}

#[test]
fn external_traffic_policy_local_keeps_the_client_address_and_health_checks_answer_per_node() {
    require_privileges!();
    external_traffic_policy_local("native");
}

#[test]
fn tc_fallback_keeps_the_client_address_for_external_traffic_policy_local() {
    require_privileges!();
    external_traffic_policy_local("tc");
}

#[test]
fn load_balancer_source_ranges_admit_the_listed_client_and_drop_others() {
    require_privileges!();
    source_ranges("native");
}

#[test]
fn tc_fallback_enforces_load_balancer_source_ranges() {
    require_privileges!();
    source_ranges("tc");
}

fn source_ranges(mode: &'static str) {
    let topology = NorthSouth::new(&format!("ns-ranges-{mode}"), mode);
    let frontend = SocketAddrV4::new(RANGED_IP, RANGED_PORT);
    topology.wait_until_serving(frontend);
    for _ in 0..10 {
        topology
            .tcp_ask(CLIENT, frontend, "who?", Duration::from_secs(2))
            .expect("the listed client connects");
    }
    let denied = topology.tcp_ask(OTHER_CLIENT, frontend, "who?", Duration::from_millis(700));
    assert!(
        denied.is_err(),
        "a source outside the ranges got {denied:?}"
    );
    let metrics = topology.scrape(0);
    assert!(
        metrics
            .lines()
            .any(|line| line.contains("source_range_denied") && !line.ends_with(" 0")),
        "no source_range_denied drops counted:\n{metrics}"
    );
}

#[test]
fn restarting_the_ingress_proxy_during_a_nodeport_load_loop_loses_no_connection() {
    require_privileges!();
    restart_under_load("native");
}

#[test]
fn restarting_the_ingress_proxy_in_tc_mode_loses_no_connection() {
    require_privileges!();
    restart_under_load("tc");
}

fn restart_under_load(mode: &'static str) {
    let topology = Arc::new(NorthSouth::new(&format!("ns-restart-{mode}"), mode));
    let frontend = node_port(0, WEB_NODE_PORT);
    topology.wait_until_serving(frontend);
    // Long-lived connections opened before the restart keep working after it.
    let long_lived: Vec<_> = (0..8)
        .map(|_| {
            topology
                .client
                .run(move || connect_from(CLIENT, frontend, Duration::from_secs(2)))
                .expect("enter client")
                .expect("long-lived connection")
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (succeeded, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let worker = {
        let (topology, stop, succeeded, failures, first_failure) = (
            Arc::clone(&topology),
            Arc::clone(&stop),
            Arc::clone(&succeeded),
            Arc::clone(&failures),
            Arc::clone(&first_failure),
        );
        std::thread::spawn(move || {
            topology
                .client
                .run(|| {
                    while !stop.load(Ordering::Relaxed) {
                        match connect_from(CLIENT, frontend, Duration::from_secs(3))
                            .and_then(|stream| ask(&stream, "who?"))
                        {
                            Ok(_) => {
                                succeeded.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                if let Ok(mut first) = first_failure.lock() {
                                    first.get_or_insert(error.to_string());
                                }
                            }
                        }
                    }
                })
                .expect("enter client");
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    topology.kill_proxy(0);
    let killed_at = succeeded.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    let while_down = succeeded.load(Ordering::Relaxed) - killed_at;
    topology.start_proxy(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while topology
        .log(0)
        .matches("north-south programs swapped")
        .count()
        < 1
    {
        assert!(Instant::now() < deadline, "{}", topology.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("load loop");
    let (succeeded, failures) = (
        succeeded.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    assert_eq!(
        failures,
        0,
        "{failures} of {} connections failed across the restart (first: {:?}); logs:\n{}",
        succeeded + failures,
        first_failure.lock().ok().and_then(|first| first.clone()),
        topology.logs()
    );
    assert!(
        while_down > 0,
        "no connection completed while skiff-proxy was down"
    );
    assert!(succeeded > 100, "only {succeeded} connections in the loop");
    for stream in &long_lived {
        ask(stream, "who?").expect("a connection from before the restart still answers");
    }
}

#[test]
fn dsr_backends_see_the_client_and_answer_it_without_the_ingress_node() {
    require_privileges!();
    let topology = NorthSouth::new("ns-dsr", "native");
    let frontend = node_port(0, DIRECT_NODE_PORT);
    topology.wait_until_serving(frontend);
    let ingress_replies = |topology: &NorthSouth| {
        ["reply_xdp", "reply_tc_neighbour"]
            .iter()
            .map(|path| {
                topology.metric(
                    0,
                    &format!("skiff_proxy_external_packets_total{{path=\"{path}\"}}"),
                )
            })
            .sum::<u64>()
    };
    let tunnel = "skiff_proxy_external_packets_total{path=\"forward_dsr_tunnel\"}";
    let decapsulated = "skiff_proxy_external_packets_total{path=\"dsr_decapsulated\"}";
    let from_pod = "skiff_proxy_external_packets_total{path=\"reply_from_pod\"}";
    let before = (
        ingress_replies(&topology),
        topology.metric(0, tunnel),
        topology.metric(1, decapsulated),
        topology.metric(1, from_pod),
    );
    for _ in 0..40 {
        let peer = topology
            .tcp_ask(CLIENT, frontend, PEER, Duration::from_secs(2))
            .unwrap_or_else(|error| panic!("DSR connection: {error}; logs:\n{}", topology.logs()));
        assert!(
            peer.starts_with(&format!("{CLIENT}:")),
            "the backend saw {peer}, not the client"
        );
    }
    let after = (
        ingress_replies(&topology),
        topology.metric(0, tunnel),
        topology.metric(1, decapsulated),
        topology.metric(1, from_pod),
    );
    assert_eq!(
        after.0, before.0,
        "no reply went back through the ingress node"
    );
    assert!(
        after.1 >= before.1 + 40 * 3,
        "client packets tunnelled: {before:?} → {after:?}"
    );
    assert!(
        after.2 >= before.2 + 40 * 3,
        "decapsulated on node-b: {before:?} → {after:?}"
    );
    assert!(
        after.3 >= before.3 + 40 * 2,
        "answered from node-b's pods: {before:?} → {after:?}"
    );
}

#[test]
fn a_terminating_backend_keeps_its_external_connections_and_gets_no_new_ones() {
    require_privileges!();
    let topology = NorthSouth::new("ns-drain", "native");
    let frontends = [node_port(0, WEB_NODE_PORT), node_port(1, WEB_NODE_PORT)];
    for frontend in frontends {
        topology.wait_until_serving(frontend);
    }
    // Open connections until each node has one on the local a0 and the remote b0.
    let mut held = Vec::new();
    for frontend in frontends {
        for wanted in ["a0", "b0"] {
            let stream = (0..200)
                .find_map(|_| {
                    let stream = topology
                        .client
                        .run(move || connect_from(CLIENT, frontend, Duration::from_secs(2)))
                        .expect("enter client")
                        .ok()?;
                    (ask(&stream, "who?").ok()? == wanted).then_some(stream)
                })
                .unwrap_or_else(|| panic!("no connection through {frontend} reached {wanted}"));
            held.push((frontend, wanted, stream));
        }
    }
    topology.publish(&manifest_with_terminating(&["a0", "b0"]));
    for index in 0..2 {
        topology.wait_for_log_count(index, "dataplane synchronised", 2);
    }
    for (frontend, wanted, stream) in &held {
        for _ in 0..3 {
            let name = ask(stream, "who?").unwrap_or_else(|error| {
                panic!("the connection through {frontend} to terminating {wanted} broke: {error}")
            });
            assert_eq!(&name, wanted);
        }
    }
    for frontend in frontends {
        let (names, errors) = topology.tcp_spread(frontend, 200);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            !names.contains_key("a0") && !names.contains_key("b0"),
            "new connections through {frontend} reached a terminating backend: {names:?}"
        );
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
