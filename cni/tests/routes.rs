//! Cross-node pod routes between three node namespaces (privileged).
//!
//! Topologies: three "node" namespaces, each with an `eth0` on the underlay, forwarding on, and a
//! "pod" address (`10.244.<n>.10/32` on `lo`) inside its podCIDR `10.244.<n>.0/24`, so that routing
//! is tested without the CNI plugin. The underlay is either one L2 segment (a bridge in a fourth
//! "switch" namespace, nodes in 192.168.50.0/24) or three subnets behind a router namespace that
//! knows no pod routes (172.16.<n+1>.0/24), where only VXLAN can carry pod traffic. Node-routes
//! syncs run inside each node namespace, like `skiff-cni node-routes --once` would. Everything
//! disappears with the namespaces, also when a test panics.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_cni::routes::diff::Change;
use skiff_cni::routes::{
    NodeRoutesOptions, RoutesError, RoutingMode, SyncReport, run_node_routes,
    run_node_routes_until, sync_node_routes,
};
use skiff_tests::{netns::NetNs, veth};

const PROGRAMS: &[&str] = &["ip", "ping", "bridge"];
const NAMES: [&str; 3] = ["node-a", "node-b", "node-c"];

struct TestNode {
    name: &'static str,
    netns: NetNs,
    internal_ip: Ipv4Addr,
    pod_cidr: String,
    pod_address: Ipv4Addr,
}

struct Cluster {
    nodes: Vec<TestNode>,
    /// The switch or router namespace; dropped after the nodes.
    _underlay: NetNs,
    nodes_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Three nodes on one L2 segment: 192.168.50.1-3/24 on a bridge in a switch namespace.
    fn shared_l2() -> Cluster {
        let switch = NetNs::new("rt-switch").expect("switch namespace");
        switch.disable_ipv6().expect("IPv6 off in the switch");
        switch
            .ip(&["link", "add", "br0", "type", "bridge"])
            .expect("bridge");
        switch.ip(&["link", "set", "br0", "up"]).expect("bridge up");
        Cluster::build(switch, |n, node, switch| {
            let port = format!("port{n}");
            veth::create(node, "eth0", switch, &port).expect("veth to the switch");
            switch
                .ip(&["link", "set", &port, "master", "br0"])
                .expect("port on the bridge");
            let internal_ip = Ipv4Addr::new(192, 168, 50, n + 1);
            node.ip(&["addr", "add", &format!("{internal_ip}/24"), "dev", "eth0"])
                .expect("InternalIP");
            internal_ip
        })
    }

    /// Three nodes in three subnets 172.16.<n+1>.0/24 behind a router with no pod routes.
    fn routed_underlay() -> Cluster {
        let router = NetNs::new("rt-router").expect("router namespace");
        router.disable_ipv6().expect("IPv6 off in the router");
        enable_forwarding(&router);
        Cluster::build(router, |n, node, router| {
            let subnet = n + 1;
            veth::create_addressed(
                (node, "eth0", &format!("172.16.{subnet}.2")),
                (router, &format!("n{n}"), &format!("172.16.{subnet}.1")),
                24,
            )
            .expect("veth to the router");
            node.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("172.16.{subnet}.1"),
            ])
            .expect("default route via the router");
            Ipv4Addr::new(172, 16, subnet, 2)
        })
    }

    fn build(underlay: NetNs, connect: impl Fn(u8, &NetNs, &NetNs) -> Ipv4Addr) -> Cluster {
        let nodes = (0u8..3)
            .map(|n| {
                let name = NAMES[usize::from(n)];
                let netns = NetNs::new(&format!("rt-{name}")).expect("node namespace");
                netns.disable_ipv6().expect("IPv6 off");
                enable_forwarding(&netns);
                let internal_ip = connect(n, &netns, &underlay);
                let pod_address = Ipv4Addr::new(10, 244, n, 10);
                netns
                    .ip(&["addr", "add", &format!("{pod_address}/32"), "dev", "lo"])
                    .expect("pod address");
                TestNode {
                    name,
                    netns,
                    internal_ip,
                    pod_cidr: format!("10.244.{n}.0/24"),
                    pod_address,
                }
            })
            .collect();
        let dir = tempfile::tempdir().expect("temporary directory");
        let cluster = Cluster {
            nodes,
            _underlay: underlay,
            nodes_file: dir.path().join("nodes.json"),
            _dir: dir,
        };
        cluster.write_nodes_file(&NAMES);
        cluster
    }

    fn node(&self, name: &str) -> &TestNode {
        self.nodes
            .iter()
            .find(|node| node.name == name)
            .expect("a node of the cluster")
    }

    /// Writes `kubectl get nodes -o json` output listing `names` (atomically, by rename).
    fn write_nodes_file(&self, names: &[&str]) {
        let items: Vec<Value> = self
            .nodes
            .iter()
            .filter(|node| names.contains(&node.name))
            .map(|node| {
                json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}},
                    "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
                    "status": {"addresses": [
                        {"type": "InternalIP", "address": node.internal_ip.to_string()},
                        {"type": "Hostname", "address": node.name}
                    ]}
                })
            })
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {}});
        self.write_raw_nodes_file(&format!("{list:#}\n"));
    }

    fn write_raw_nodes_file(&self, text: &str) {
        let temporary = self.nodes_file.with_extension("tmp");
        std::fs::write(&temporary, text).expect("writing the nodes file");
        std::fs::rename(&temporary, &self.nodes_file).expect("renaming the nodes file");
    }

    fn options(&self, node: &str, mode: RoutingMode) -> NodeRoutesOptions {
        NodeRoutesOptions {
            mode,
            once: true,
            ..NodeRoutesOptions::new(&self.nodes_file, node)
        }
    }

    /// One `--once` sync on `node`, inside its namespace.
    fn sync(&self, node: &str, mode: RoutingMode) -> Result<SyncReport, RoutesError> {
        self.sync_with(&self.options(node, mode))
    }

    fn sync_with(&self, options: &NodeRoutesOptions) -> Result<SyncReport, RoutesError> {
        self.node(&options.node_name)
            .netns
            .run(|| sync_node_routes(options))
            .expect("entering the node namespace")
    }

    /// Syncs every node through the binary's entry point and expects success.
    fn sync_all(&self, mode: RoutingMode) {
        for node in &self.nodes {
            let options = self.options(node.name, mode);
            node.netns
                .run(|| run_node_routes(&options))
                .expect("entering the node namespace")
                .unwrap_or_else(|error| panic!("syncing {}: {error}", node.name));
        }
    }

    /// Asserts that every pod address reaches every other one, by ping and by UDP with its own
    /// address as the source the receiver sees.
    fn assert_full_pod_mesh(&self) {
        for from in &self.nodes {
            for to in self.nodes.iter().filter(|to| to.name != from.name) {
                assert!(
                    from.ping(to),
                    "pod address {} on {} cannot ping {} on {}",
                    from.pod_address,
                    from.name,
                    to.pod_address,
                    to.name
                );
                assert_eq!(
                    from.udp_source_seen_by(to),
                    Some(from.pod_address),
                    "{} → {}: the receiver must see the sending pod's address",
                    from.name,
                    to.name
                );
            }
        }
    }
}

impl TestNode {
    /// Pings `to`'s pod address from this node's pod address.
    fn ping(&self, to: &TestNode) -> bool {
        let output = self
            .netns
            .command("ping")
            .args(["-c", "1", "-W", "2", "-I"])
            .arg(self.pod_address.to_string())
            .arg(to.pod_address.to_string())
            .output()
            .expect("running ping");
        output.status.success()
    }

    /// Sends a datagram from this node's pod address to `to`'s; returns the source `to` saw.
    fn udp_source_seen_by(&self, to: &TestNode) -> Option<Ipv4Addr> {
        let receiver = to
            .netns
            .run(|| UdpSocket::bind((to.pod_address, 0)))
            .expect("entering the receiver namespace")
            .expect("binding the receiver");
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("receive timeout");
        let target = receiver.local_addr().expect("receiver address");
        self.netns
            .run(|| -> std::io::Result<()> {
                let sender = UdpSocket::bind((self.pod_address, 0))?;
                sender.send_to(b"skiff", target).map(|_| ())
            })
            .expect("entering the sender namespace")
            .expect("sending from the pod address");
        let mut buffer = [0u8; 16];
        match receiver.recv_from(&mut buffer) {
            Ok((_, SocketAddr::V4(source))) => Some(*source.ip()),
            _ => None,
        }
    }

    /// `ip -j <args>` in this node, parsed.
    fn ip_json(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let output = self.netns.ip(&full).expect("ip -j");
        if output.trim().is_empty() {
            return Vec::new();
        }
        serde_json::from_str(&output).expect("ip's JSON")
    }

    /// The main table's routes as `dst [via gw] dev X [onlink] proto P` lines.
    fn routes(&self) -> BTreeSet<String> {
        self.ip_json(&["route", "show", "table", "main"])
            .iter()
            .map(|route| {
                let mut line = route["dst"].as_str().unwrap_or("?").to_owned();
                if let Some(gateway) = route["gateway"].as_str() {
                    line += &format!(" via {gateway}");
                }
                line += &format!(" dev {}", route["dev"].as_str().unwrap_or("?"));
                let flags = route["flags"].as_array().cloned().unwrap_or_default();
                if flags.iter().any(|flag| flag == "onlink") {
                    line += " onlink";
                }
                line + &format!(" proto {}", route["protocol"].as_str().unwrap_or("?"))
            })
            .collect()
    }

    /// Only the routes with Skiff's protocol.
    fn skiff_routes(&self) -> BTreeSet<String> {
        self.routes()
            .into_iter()
            .filter(|route| route.ends_with(" proto 84"))
            .collect()
    }

    fn vxlan_device(&self) -> Option<Value> {
        self.netns
            .ip(&["-j", "-d", "link", "show", "skiff.vxlan"])
            .ok()
            .and_then(|output| serde_json::from_str::<Vec<Value>>(&output).ok())
            .and_then(|mut links| links.pop())
    }

    /// Permanent neighbours on skiff.vxlan as `address lladdr`.
    fn vxlan_neighbours(&self) -> BTreeSet<String> {
        self.ip_json(&["neigh", "show", "dev", "skiff.vxlan", "nud", "permanent"])
            .iter()
            .map(|entry| {
                format!(
                    "{} {}",
                    entry["dst"].as_str().unwrap_or("?"),
                    entry["lladdr"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    /// FDB entries on skiff.vxlan as `mac dst flags state`.
    fn vxlan_fdb(&self) -> BTreeSet<String> {
        let output = self
            .netns
            .command("bridge")
            .args(["-j", "fdb", "show", "dev", "skiff.vxlan"])
            .output()
            .expect("running bridge");
        let entries: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_default();
        entries
            .iter()
            .map(|entry| {
                format!(
                    "{} dst {} {} {}",
                    entry["mac"].as_str().unwrap_or("?"),
                    entry["dst"].as_str().unwrap_or("?"),
                    entry["flags"],
                    entry["state"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }
}

fn enable_forwarding(netns: &NetNs) {
    netns
        .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
        .expect("entering the namespace")
        .expect("turning forwarding on");
}

fn set(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|line| (*line).to_owned()).collect()
}

fn change_lines(report: &SyncReport) -> Vec<String> {
    report.applied.iter().map(ToString::to_string).collect()
}

#[test]
fn direct_mode_lets_pods_on_every_node_reach_each_other_with_their_own_addresses() {
    if !skiff_tests::privileged::check(
        "direct_mode_lets_pods_on_every_node_reach_each_other_with_their_own_addresses",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::shared_l2();

    cluster.sync_all(RoutingMode::Direct);

    assert_eq!(
        cluster.node("node-a").skiff_routes(),
        set(&[
            "10.244.1.0/24 via 192.168.50.2 dev eth0 proto 84",
            "10.244.2.0/24 via 192.168.50.3 dev eth0 proto 84",
        ])
    );
    assert_eq!(
        cluster.node("node-c").skiff_routes(),
        set(&[
            "10.244.0.0/24 via 192.168.50.1 dev eth0 proto 84",
            "10.244.1.0/24 via 192.168.50.2 dev eth0 proto 84",
        ])
    );
    cluster.assert_full_pod_mesh();
}

#[test]
fn direct_mode_without_a_shared_segment_says_the_gateway_is_not_directly_reachable() {
    if !skiff_tests::privileged::check(
        "direct_mode_without_a_shared_segment_says_the_gateway_is_not_directly_reachable",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::routed_underlay();

    let error = cluster
        .sync("node-a", RoutingMode::Direct)
        .expect_err("the other nodes are behind a router");

    let message = error.to_string();
    assert!(
        message.contains("node node-b's InternalIP 172.16.2.2 is not on a subnet"),
        "{message}"
    );
    assert!(message.contains("--mode vxlan"), "{message}");
    assert_eq!(cluster.node("node-a").skiff_routes(), BTreeSet::new());
}

#[test]
fn resync_of_a_converged_node_changes_nothing_in_either_mode() {
    if !skiff_tests::privileged::check(
        "resync_of_a_converged_node_changes_nothing_in_either_mode",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::shared_l2();
    for mode in [RoutingMode::Direct, RoutingMode::Vxlan] {
        let first = cluster.sync("node-a", mode).expect("first sync");
        assert!(
            !first.applied.is_empty(),
            "{mode}: the first sync installs routes"
        );

        let second = cluster.sync("node-a", mode).expect("second sync");

        assert_eq!(change_lines(&second), Vec::<String>::new(), "{mode}");
    }
}

#[test]
fn direct_resync_after_a_node_leaves_removes_exactly_its_route() {
    if !skiff_tests::privileged::check(
        "direct_resync_after_a_node_leaves_removes_exactly_its_route",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::shared_l2();
    cluster.sync_all(RoutingMode::Direct);
    let node_a = cluster.node("node-a");
    // Routes of other owners, one of them via the node that leaves.
    node_a
        .netns
        .ip(&["route", "add", "10.99.0.0/16", "via", "192.168.50.3"])
        .expect("foreign route via node-c");
    node_a
        .netns
        .ip(&[
            "route",
            "add",
            "10.98.0.0/16",
            "via",
            "192.168.50.2",
            "proto",
            "static",
        ])
        .expect("foreign static route");
    let before = node_a.routes();

    cluster.write_nodes_file(&["node-a", "node-b"]);
    let report = cluster.sync("node-a", RoutingMode::Direct).expect("resync");

    assert_eq!(
        change_lines(&report),
        ["delete route 10.244.2.0/24 via 192.168.50.3 dev eth0 proto 84"]
    );
    let mut expected = before;
    expected.remove("10.244.2.0/24 via 192.168.50.3 dev eth0 proto 84");
    assert_eq!(node_a.routes(), expected);
    assert!(node_a.ping(cluster.node("node-b")));
    assert!(!node_a.ping(cluster.node("node-c")));
}

#[test]
fn vxlan_mode_lets_pods_reach_each_other_across_a_routed_underlay() {
    if !skiff_tests::privileged::check(
        "vxlan_mode_lets_pods_reach_each_other_across_a_routed_underlay",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::routed_underlay();
    // Without an overlay, the router drops pod traffic: it has no pod routes.
    assert!(!cluster.node("node-a").ping(cluster.node("node-b")));

    cluster.sync_all(RoutingMode::Vxlan);

    let node_a = cluster.node("node-a");
    let device = node_a.vxlan_device().expect("skiff.vxlan exists");
    let info = &device["linkinfo"]["info_data"];
    assert_eq!(device["linkinfo"]["info_kind"], "vxlan");
    assert_eq!(info["id"], 1);
    assert_eq!(info["port"], 8472);
    assert_eq!(info["local"], "172.16.1.2");
    assert_eq!(info["learning"], false);
    assert_eq!(info["link"], "eth0");
    assert_eq!(device["mtu"], 1450);
    assert_eq!(device["address"], "0e:53:ac:10:01:02");
    assert!(
        device["flags"]
            .as_array()
            .is_some_and(|flags| flags.iter().any(|flag| flag == "UP")),
        "{device}"
    );
    let addresses = node_a.ip_json(&["-4", "addr", "show", "dev", "skiff.vxlan"]);
    assert_eq!(addresses[0]["addr_info"][0]["local"], "10.244.0.0");
    assert_eq!(addresses[0]["addr_info"][0]["prefixlen"], 32);
    assert_eq!(
        node_a.skiff_routes(),
        set(&[
            "10.244.1.0/24 via 10.244.1.0 dev skiff.vxlan onlink proto 84",
            "10.244.2.0/24 via 10.244.2.0 dev skiff.vxlan onlink proto 84",
        ])
    );
    assert_eq!(
        node_a.vxlan_neighbours(),
        set(&[
            "10.244.1.0 0e:53:ac:10:02:02",
            "10.244.2.0 0e:53:ac:10:03:02"
        ])
    );
    assert_eq!(
        node_a.vxlan_fdb(),
        set(&[
            "0e:53:ac:10:02:02 dst 172.16.2.2 [\"self\"] permanent",
            "0e:53:ac:10:03:02 dst 172.16.3.2 [\"self\"] permanent",
        ])
    );
    cluster.assert_full_pod_mesh();
}

#[test]
fn vxlan_resync_after_a_node_leaves_removes_its_route_neighbour_and_fdb_entry() {
    if !skiff_tests::privileged::check(
        "vxlan_resync_after_a_node_leaves_removes_its_route_neighbour_and_fdb_entry",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::routed_underlay();
    cluster.sync_all(RoutingMode::Vxlan);
    let node_a = cluster.node("node-a");
    node_a
        .netns
        .ip(&[
            "route",
            "add",
            "10.99.0.0/16",
            "via",
            "172.16.1.1",
            "proto",
            "static",
        ])
        .expect("foreign route");
    let foreign_before: BTreeSet<String> = node_a
        .routes()
        .into_iter()
        .filter(|route| !route.ends_with(" proto 84"))
        .collect();

    cluster.write_nodes_file(&["node-a", "node-b"]);
    let report = cluster.sync("node-a", RoutingMode::Vxlan).expect("resync");

    assert_eq!(
        change_lines(&report),
        [
            "delete route 10.244.2.0/24 via 10.244.2.0 dev skiff.vxlan onlink proto 84",
            "delete FDB entry 0e:53:ac:10:03:02 dst 172.16.3.2 dev skiff.vxlan",
            "delete neighbour 10.244.2.0 lladdr 0e:53:ac:10:03:02 dev skiff.vxlan",
        ]
    );
    assert_eq!(
        node_a.skiff_routes(),
        set(&["10.244.1.0/24 via 10.244.1.0 dev skiff.vxlan onlink proto 84"])
    );
    assert_eq!(
        node_a.vxlan_neighbours(),
        set(&["10.244.1.0 0e:53:ac:10:02:02"])
    );
    assert_eq!(
        node_a.vxlan_fdb(),
        set(&["0e:53:ac:10:02:02 dst 172.16.2.2 [\"self\"] permanent"])
    );
    let foreign_after: BTreeSet<String> = node_a
        .routes()
        .into_iter()
        .filter(|route| !route.ends_with(" proto 84"))
        .collect();
    assert_eq!(foreign_after, foreign_before);
    assert!(node_a.ping(cluster.node("node-b")));
}

#[test]
fn switching_from_direct_to_vxlan_replaces_the_direct_routes() {
    if !skiff_tests::privileged::check(
        "switching_from_direct_to_vxlan_replaces_the_direct_routes",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::shared_l2();
    cluster.sync_all(RoutingMode::Direct);

    cluster.sync_all(RoutingMode::Vxlan);

    for node in &cluster.nodes {
        let routes = node.skiff_routes();
        assert_eq!(routes.len(), 2, "{}: {routes:?}", node.name);
        assert!(
            routes
                .iter()
                .all(|route| route.contains(" dev skiff.vxlan onlink ")),
            "{}: direct routes left: {routes:?}",
            node.name
        );
    }
    cluster.assert_full_pod_mesh();
}

#[test]
fn switching_from_vxlan_to_direct_removes_the_device_and_keeps_pods_connected() {
    if !skiff_tests::privileged::check(
        "switching_from_vxlan_to_direct_removes_the_device_and_keeps_pods_connected",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::shared_l2();
    cluster.sync_all(RoutingMode::Vxlan);

    cluster.sync_all(RoutingMode::Direct);

    for node in &cluster.nodes {
        assert!(
            node.vxlan_device().is_none(),
            "{}: skiff.vxlan is left",
            node.name
        );
        assert_eq!(node.skiff_routes().len(), 2, "{}", node.name);
    }
    assert_eq!(
        cluster.node("node-b").skiff_routes(),
        set(&[
            "10.244.0.0/24 via 192.168.50.1 dev eth0 proto 84",
            "10.244.2.0/24 via 192.168.50.3 dev eth0 proto 84",
        ])
    );
    cluster.assert_full_pod_mesh();
}

#[test]
fn vxlan_device_uses_the_configured_vni_and_port() {
    if !skiff_tests::privileged::check("vxlan_device_uses_the_configured_vni_and_port", PROGRAMS) {
        return;
    }
    let cluster = Cluster::routed_underlay();

    for node in &cluster.nodes {
        let options = NodeRoutesOptions {
            vxlan_vni: 4242,
            vxlan_port: 4789,
            ..cluster.options(node.name, RoutingMode::Vxlan)
        };
        cluster.sync_with(&options).expect("sync");
    }

    let device = cluster.node("node-b").vxlan_device().expect("skiff.vxlan");
    assert_eq!(device["linkinfo"]["info_data"]["id"], 4242);
    assert_eq!(device["linkinfo"]["info_data"]["port"], 4789);
    cluster.assert_full_pod_mesh();
}

#[test]
fn changing_the_vni_recreates_the_vxlan_device() {
    if !skiff_tests::privileged::check("changing_the_vni_recreates_the_vxlan_device", PROGRAMS) {
        return;
    }
    let cluster = Cluster::routed_underlay();
    cluster.sync_all(RoutingMode::Vxlan);

    let mut recreated = Vec::new();
    for node in &cluster.nodes {
        let options = NodeRoutesOptions {
            vxlan_vni: 7,
            ..cluster.options(node.name, RoutingMode::Vxlan)
        };
        let report = cluster.sync_with(&options).expect("sync with the new VNI");
        recreated.push(matches!(
            report.applied.first(),
            Some(Change::RecreateDevice { .. })
        ));
    }

    assert_eq!(recreated, [true, true, true]);
    let device = cluster.node("node-c").vxlan_device().expect("skiff.vxlan");
    assert_eq!(device["linkinfo"]["info_data"]["id"], 7);
    assert_eq!(cluster.node("node-c").skiff_routes().len(), 2);
    cluster.assert_full_pod_mesh();
}

#[test]
fn malformed_nodes_file_is_an_error_naming_the_file_and_changes_no_route() {
    if !skiff_tests::privileged::check(
        "malformed_nodes_file_is_an_error_naming_the_file_and_changes_no_route",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::shared_l2();
    cluster.sync_all(RoutingMode::Direct);
    let node_a = cluster.node("node-a");
    let before = node_a.routes();

    for (text, problem) in [
        ("{\"kind\":\"List\",\"items\":[", "EOF"),
        ("{\"kind\":\"List\",\"items\":[]}\n", ""),
        ("", "EOF"),
    ] {
        cluster.write_raw_nodes_file(text);
        let error = cluster
            .sync("node-a", RoutingMode::Direct)
            .expect_err("a malformed or unusable file is an error");
        let message = error.to_string();
        assert!(
            message.contains(&cluster.nodes_file.display().to_string()),
            "{message}"
        );
        assert!(message.contains("no route was changed"), "{message}");
        assert!(message.contains(problem), "{message}");
        assert_eq!(node_a.routes(), before, "after {text:?}");
    }
}

#[test]
fn foreign_route_to_a_pod_cidr_is_reported_and_left_alone() {
    if !skiff_tests::privileged::check(
        "foreign_route_to_a_pod_cidr_is_reported_and_left_alone",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::shared_l2();
    let node_a = cluster.node("node-a");
    node_a
        .netns
        .ip(&[
            "route",
            "add",
            "10.244.2.0/24",
            "via",
            "192.168.50.2",
            "proto",
            "static",
        ])
        .expect("someone else's route to node-c's podCIDR");

    let error = cluster
        .sync("node-a", RoutingMode::Direct)
        .expect_err("the conflict is reported");

    let message = error.to_string();
    assert!(
        message.contains("10.244.2.0/24 via 192.168.50.2 dev eth0 proto 4"),
        "{message}"
    );
    assert!(
        node_a
            .routes()
            .contains("10.244.2.0/24 via 192.168.50.2 dev eth0 proto static"),
        "{:?}",
        node_a.routes()
    );
    assert_eq!(
        node_a.skiff_routes(),
        set(&["10.244.1.0/24 via 192.168.50.2 dev eth0 proto 84"])
    );
}

#[test]
fn foreign_link_named_skiff_vxlan_blocks_vxlan_mode_and_is_left_alone() {
    if !skiff_tests::privileged::check(
        "foreign_link_named_skiff_vxlan_blocks_vxlan_mode_and_is_left_alone",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::shared_l2();
    let node_a = cluster.node("node-a");
    node_a
        .netns
        .ip(&["link", "add", "skiff.vxlan", "type", "bridge"])
        .expect("someone else's bridge named skiff.vxlan");

    let error = cluster
        .sync("node-a", RoutingMode::Vxlan)
        .expect_err("vxlan mode cannot use the name");
    let direct = cluster.sync("node-a", RoutingMode::Direct);

    assert!(
        matches!(error, RoutesError::ForeignDevice { ref kind } if kind == "bridge"),
        "{error}"
    );
    assert!(
        direct.is_ok(),
        "direct mode does not need the name: {direct:?}"
    );
    let link = node_a.vxlan_device().expect("the bridge is still there");
    assert_eq!(link["linkinfo"]["info_kind"], "bridge");
}

#[test]
fn node_routes_loop_follows_changes_of_the_nodes_file() {
    if !skiff_tests::privileged::check(
        "node_routes_loop_follows_changes_of_the_nodes_file",
        PROGRAMS,
    ) {
        return;
    }
    let cluster = Cluster::shared_l2();
    cluster.write_nodes_file(&["node-a", "node-b"]);
    let node_a = cluster.node("node-a");
    let options = NodeRoutesOptions {
        once: false,
        resync_interval: Duration::from_secs(60),
        ..cluster.options("node-a", RoutingMode::Direct)
    };
    let stop = AtomicBool::new(false);
    let route_b = "10.244.1.0/24 via 192.168.50.2 dev eth0 proto 84";
    let route_c = "10.244.2.0/24 via 192.168.50.3 dev eth0 proto 84";

    std::thread::scope(|scope| {
        let looping = scope.spawn(|| {
            node_a
                .netns
                .run(|| run_node_routes_until(&options, &stop))
                .expect("entering node-a")
        });
        // Stop the loop whatever the assertions do.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop_on_drop = StopOnDrop(&stop);

        wait_for("node-b's route", || {
            node_a.skiff_routes() == set(&[route_b])
        });
        cluster.write_nodes_file(&NAMES);
        wait_for("node-c's route", || {
            node_a.skiff_routes() == set(&[route_b, route_c])
        });
        cluster.write_raw_nodes_file("not json");
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(
            node_a.skiff_routes(),
            set(&[route_b, route_c]),
            "a malformed file keeps the last good routes"
        );
        cluster.write_nodes_file(&["node-a", "node-c"]);
        wait_for("node-b's route to go", || {
            node_a.skiff_routes() == set(&[route_c])
        });

        stop.store(true, Ordering::Relaxed);
        looping
            .join()
            .expect("the loop thread")
            .expect("the loop ends without error");
    });
}

fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
