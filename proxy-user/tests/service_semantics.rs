//! Service semantics with real traffic, one behaviour per test: ClientIP session affinity (and its
//! expiry), internalTrafficPolicy Local, terminating endpoints, metrics.

mod common;

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use common::{Backend, Cluster, NODE_NAME, ServiceSpec, ask};
use skiff_tests::require_privileges;

fn backends() -> Vec<Backend> {
    vec![
        Backend::ready("web-0", Ipv4Addr::new(10, 250, 2, 2)),
        Backend::ready("web-1", Ipv4Addr::new(10, 250, 2, 3)),
        Backend::ready("web-2", Ipv4Addr::new(10, 250, 2, 4)),
    ]
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_backend_until_the_timeout() {
    require_privileges!("ip");
    let spec = ServiceSpec {
        extra: "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}\n".to_owned(),
    };
    let cluster = Cluster::new("affinity", &backends(), &spec);
    cluster.wait_until_serving();
    let first = cluster.tcp_name().expect("a name");
    for _ in 0..100 {
        assert_eq!(cluster.tcp_name().expect("a name"), first, "affinity broke");
    }
    // After the timeout, new connections are balanced afresh: with three backends, twenty
    // rounds of (timeout + one connection) all landing on the same backend would be chance
    // of (1/3)^20.
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(2100));
        seen.insert(cluster.tcp_name().expect("a name"));
        if seen.len() > 1 {
            return;
        }
    }
    panic!("the affinity never expired: always {seen:?}");
}

#[test]
fn internal_traffic_policy_local_uses_only_endpoints_on_this_node() {
    require_privileges!("ip");
    let mut backends = backends();
    backends[1].node_name = "node-b".to_owned();
    backends[2].node_name = "node-b".to_owned();
    let spec = ServiceSpec {
        extra: "  internalTrafficPolicy: Local\n".to_owned(),
    };
    let cluster = Cluster::new("itp-local", &backends, &spec);
    cluster.wait_until_serving();
    for _ in 0..100 {
        assert_eq!(
            cluster.tcp_name().expect("a name"),
            "web-0",
            "only web-0 runs on {NODE_NAME}"
        );
    }
    // With no local endpoint left, traffic is dropped (as upstream), not sent to other nodes.
    cluster.publish(&spec, &[&backends[1], &backends[2]]);
    std::thread::sleep(Duration::from_millis(300));
    let error = cluster.tcp_connect().expect_err("no local endpoint");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::TimedOut,
        "dropped, not rejected: {error}"
    );
}

#[test]
fn terminating_endpoint_keeps_its_connection_but_gets_no_new_ones() {
    require_privileges!("ip");
    let mut backends = backends();
    let spec = ServiceSpec::default();
    let cluster = Cluster::new("terminating", &backends, &spec);
    cluster.wait_until_serving();
    let (connection, name) = loop {
        let stream = cluster.tcp_connect().expect("connect");
        let name = ask(&stream).expect("a name");
        if name == "web-2" {
            break (stream, name);
        }
    };
    backends[2].ready = false;
    backends[2].terminating = true;
    cluster.publish(&spec, &[&backends[0], &backends[1], &backends[2]]);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..100 {
        assert_ne!(
            cluster.tcp_name().expect("a name"),
            "web-2",
            "a terminating endpoint got a new connection"
        );
    }
    assert_eq!(
        ask(&connection).expect("the existing connection still works"),
        name
    );
}

#[test]
fn metrics_count_flows_per_service_and_backend() {
    require_privileges!("ip");
    let cluster = Cluster::new("metrics", &backends(), &ServiceSpec::default());
    cluster.wait_until_serving();
    for _ in 0..30 {
        cluster.tcp_name().expect("a name");
    }
    let body = cluster.scrape();
    let new_flows: u64 = body
        .lines()
        .filter(|line| {
            line.starts_with("skiff_proxy_service_new_flows_total{")
                && line.contains("port=\"tcp\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        new_flows >= 30,
        "per-service new flows counted ({new_flows}):\n{body}"
    );
    let backend_flows: u64 = body
        .lines()
        .filter(|line| line.starts_with("skiff_proxy_backend_new_flows_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        backend_flows, new_flows,
        "backend counters add up to the service's:\n{body}"
    );
    assert!(
        body.contains("skiff_proxy_drops_total{reason=\"no_endpoints\"} 0"),
        "{body}"
    );
}

#[test]
fn a_pod_reaches_itself_through_its_own_service() {
    require_privileges!("ip");
    let backends = vec![Backend::ready("web-0", Ipv4Addr::new(10, 250, 3, 2))];
    let cluster = Cluster::new("hairpin", &backends, &ServiceSpec::default());
    cluster.wait_until_serving();
    let pod = &cluster.node.pod("web-0").expect("backend pod").netns;
    for _ in 0..20 {
        let stream = pod
            .run(|| {
                std::net::TcpStream::connect_timeout(
                    &(common::VIP, common::SERVICE_PORT).into(),
                    Duration::from_secs(2),
                )
            })
            .expect("enter pod")
            .expect("hairpin connection");
        assert_eq!(ask(&stream).expect("a name"), "web-0");
    }
    let socket = pod
        .run(|| std::net::UdpSocket::bind(("10.250.3.2", 0)))
        .expect("enter pod")
        .expect("bind UDP");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let (name, from) = common::udp_ask(&socket).expect("hairpin UDP answer");
    assert_eq!(name, "web-0");
    assert_eq!(
        from,
        (common::VIP, common::SERVICE_PORT).into(),
        "answered from the VIP"
    );
}

#[test]
fn a_full_service_map_is_a_logged_error_and_a_counter_and_changes_nothing() {
    require_privileges!("ip");
    // Ids are 1..max: --max-services 2 leaves room for one frontend, the Service has two.
    let cluster = Cluster::with_proxy_args(
        "full",
        &backends(),
        &ServiceSpec::default(),
        &["--max-services", "2"],
    );
    cluster.wait_for_log("synchronisation failed");
    assert!(
        cluster.proxy_log().contains("max_services = 2"),
        "the error names the limit:\n{}",
        cluster.proxy_log()
    );
    let body = cluster.scrape();
    let errors: u64 = body
        .lines()
        .find_map(|line| line.strip_prefix("skiff_proxy_sync_errors_total "))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    assert!(errors >= 1, "the failure is counted: {body}");
    assert!(
        body.contains("skiff_proxy_services 0"),
        "nothing half-written: {body}"
    );
}

#[test]
fn an_invalid_source_file_keeps_the_last_good_dataplane() {
    require_privileges!("ip");
    let cluster = Cluster::new("bad-source", &backends(), &ServiceSpec::default());
    cluster.wait_until_serving();
    std::fs::write(
        &cluster.manifest,
        "apiVersion: v1\nkind: Service\nspec: [not, a, map\n",
    )
    .expect("write bad file");
    cluster.wait_for_log("source rejected");
    for _ in 0..20 {
        assert!(
            cluster
                .tcp_name()
                .expect("still served")
                .starts_with("web-")
        );
    }
    assert!(
        cluster
            .scrape()
            .contains("skiff_proxy_source_errors_total 1")
    );
}

#[test]
fn a_pod_interface_created_after_start_is_attached_and_balanced_to() {
    require_privileges!("ip");
    let mut backends = backends();
    let late = Backend::ready("web-late", Ipv4Addr::new(10, 250, 2, 9));
    let spec = ServiceSpec::default();
    let mut cluster = Cluster::new("late-pod", &backends[..1], &spec);
    cluster.wait_until_serving();
    // A new pod (and host-side veth) appears while skiff-proxy runs; then it becomes the only
    // endpoint, so every answer proves the new interface has the programs.
    let pod = cluster
        .node
        .add_pod(&late.name, late.address)
        .expect("late pod");
    let _server = skiff_tests::echo::EchoServer::start(
        &pod.netns,
        &late.name,
        late.address,
        common::TARGET_PORT,
    )
    .expect("name server");
    backends.push(late);
    cluster.publish(&spec, &[&backends[3]]);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        assert_eq!(cluster.tcp_name().expect("a name"), "web-late");
    }
    // Replies from the late pod were reverse-translated on its (late) veth's egress...
    // ...and its own connections to the VIP are translated on its veth's ingress (hairpin).
    let stream = cluster
        .node
        .pod("web-late")
        .expect("late pod")
        .netns
        .run(|| {
            std::net::TcpStream::connect_timeout(
                &(common::VIP, common::SERVICE_PORT).into(),
                Duration::from_secs(2),
            )
        })
        .expect("enter pod")
        .expect("connect from the late pod");
    assert_eq!(ask(&stream).expect("a name"), "web-late");
}

#[test]
fn status_lists_services_backends_and_conntrack_entries() {
    require_privileges!("ip");
    let cluster = Cluster::new("status", &backends(), &ServiceSpec::default());
    cluster.wait_until_serving();
    let _open = cluster.tcp_connect().expect("a connection to show");
    let output = cluster
        .node
        .netns
        .command(env!("CARGO_BIN_EXE_skiff-proxy"))
        .args(["status", "--bpffs"])
        .arg(cluster.pins.path())
        .output()
        .expect("run skiff-proxy status");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("10.96.100.10:80/TCP"), "{text}");
    assert!(text.contains("10.96.100.10:80/UDP"), "{text}");
    for backend in ["10.250.2.2:8080", "10.250.2.3:8080", "10.250.2.4:8080"] {
        assert!(text.contains(backend), "{backend} missing:\n{text}");
    }
    assert!(text.contains("ready"), "{text}");
    assert!(
        text.contains("10.250.0.2:"),
        "the client's flow is listed:\n{text}"
    );
    assert!(text.contains("ESTABLISHED"), "{text}");
}
