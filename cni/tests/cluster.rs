//! The flat pod network across nodes, with the real `skiff-cni` binary for both jobs: three
//! "nodes" (network namespaces), each with two pods attached by `skiff-cni` ADD, and routes to
//! the other nodes' pod CIDRs kept by `skiff-cni node-routes --once`. Every pod pings and opens
//! TCP to every other pod and to every node, and each receiver sees the sending pod's own
//! address (no NAT). Direct routing over a shared L2 segment, and VXLAN over a routed underlay
//! whose router knows nothing about pods.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{attachment_env, invoke_in, pings, result_address};
use serde_json::{Value, json};
use skiff_tests::{netns::NetNs, veth};

const PORT: u16 = 7777;

struct ClusterNode {
    name: String,
    netns: NetNs,
    internal_ip: Ipv4Addr,
    pod_cidr: String,
    data_dir: tempfile::TempDir,
    pods: Vec<(NetNs, Ipv4Addr)>,
}

struct Cluster {
    nodes: Vec<ClusterNode>,
    _underlay: NetNs,
    dir: tempfile::TempDir,
}

fn enable_forwarding(netns: &NetNs) {
    netns
        .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
        .expect("enter the namespace")
        .expect("enable forwarding");
}

impl Cluster {
    /// Three nodes 192.168.60.1-3/24 on a bridge, with a default gateway .254 on the bridge.
    fn shared_l2() -> Cluster {
        let switch = NetNs::new("cl-switch").expect("switch namespace");
        switch
            .ip(&["link", "add", "br0", "type", "bridge"])
            .expect("set up the topology");
        switch
            .ip(&["addr", "add", "192.168.60.254/24", "dev", "br0"])
            .expect("set up the topology");
        switch
            .ip(&["link", "set", "br0", "up"])
            .expect("set up the topology");
        Cluster::build(switch, |n, node, switch| {
            let port = format!("port{n}");
            veth::create(node, "eth0", switch, &port).expect("veth to the switch");
            switch
                .ip(&["link", "set", &port, "master", "br0"])
                .expect("port on the bridge");
            let internal_ip = Ipv4Addr::new(192, 168, 60, n + 1);
            node.ip(&["addr", "add", &format!("{internal_ip}/24"), "dev", "eth0"])
                .expect("set up the topology");
            node.ip(&["route", "add", "default", "via", "192.168.60.254"])
                .expect("set up the topology");
            internal_ip
        })
    }

    /// Three nodes in 172.17.<n+1>.0/24 behind a router that has no route to any pod CIDR.
    fn routed_underlay() -> Cluster {
        let router = NetNs::new("cl-router").expect("router namespace");
        enable_forwarding(&router);
        Cluster::build(router, |n, node, router| {
            let subnet = n + 1;
            veth::create_addressed(
                (node, "eth0", &format!("172.17.{subnet}.2")),
                (router, &format!("n{n}"), &format!("172.17.{subnet}.1")),
                24,
            )
            .expect("veth to the router");
            node.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("172.17.{subnet}.1"),
            ])
            .expect("set up the topology");
            Ipv4Addr::new(172, 17, subnet, 2)
        })
    }

    fn build(underlay: NetNs, connect: impl Fn(u8, &NetNs, &NetNs) -> Ipv4Addr) -> Cluster {
        let nodes = (0u8..3)
            .map(|n| {
                let netns = NetNs::new(&format!("cl-node{n}")).expect("node namespace");
                enable_forwarding(&netns);
                let internal_ip = connect(n, &netns, &underlay);
                ClusterNode {
                    name: format!("node-{n}"),
                    netns,
                    internal_ip,
                    pod_cidr: format!("10.244.{}.0/24", 10 + n),
                    data_dir: tempfile::tempdir().expect("data directory"),
                    pods: Vec::new(),
                }
            })
            .collect();
        Cluster {
            nodes,
            _underlay: underlay,
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Two pods per node through `skiff-cni` ADD in the node's namespace.
    fn add_pods(&mut self) {
        for node in &mut self.nodes {
            let config = json!({
                "cniVersion": "1.1.0", "name": "skiff", "type": "skiff-cni",
                "podCIDR": node.pod_cidr, "dataDir": node.data_dir.path(),
            });
            for p in 0..2 {
                let pod = NetNs::new("cl-pod").expect("pod namespace");
                let container = format!("{}-pod{p}", node.name);
                let result = invoke_in(
                    Some(&node.netns),
                    &attachment_env("ADD", &container, Some(pod.path())),
                    config.to_string().as_bytes(),
                )
                .ok();
                let address = result_address(&result);
                node.pods.push((pod, address));
            }
        }
    }

    /// Writes the node list and runs `skiff-cni node-routes --once` on every node.
    fn sync_routes(&self, mode: &str) {
        let items: Vec<Value> = self
            .nodes
            .iter()
            .map(|node| {
                json!({
                    "kind": "Node", "metadata": {"name": node.name},
                    "spec": {"podCIDR": node.pod_cidr},
                    "status": {"addresses": [{"type": "InternalIP", "address": node.internal_ip}]},
                })
            })
            .collect();
        let nodes_file = self.dir.path().join("nodes.json");
        std::fs::write(
            &nodes_file,
            json!({"kind": "List", "items": items}).to_string(),
        )
        .expect("set up the topology");
        for node in &self.nodes {
            let output = node
                .netns
                .command(common::PLUGIN)
                .args(["node-routes", "--nodes-file"])
                .arg(&nodes_file)
                .args(["--node-name", &node.name, "--mode", mode, "--once"])
                .output()
                .expect("run skiff-cni node-routes");
            assert!(
                output.status.success(),
                "node-routes on {}: {}",
                node.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Every pod pings every other pod and every node, and reaches each over TCP with its own
    /// address as the source the receiver sees.
    fn assert_flat_network(&self, mode: &str) {
        let pods: Vec<&(NetNs, Ipv4Addr)> = self.nodes.iter().flat_map(|node| &node.pods).collect();
        // A listener in every pod and every node.
        let mut listeners: Vec<(Ipv4Addr, TcpListener)> = Vec::new();
        for (pod, address) in &pods {
            listeners.push((*address, listen(pod)));
        }
        for node in &self.nodes {
            listeners.push((node.internal_ip, listen(&node.netns)));
        }
        for (from, source) in &pods {
            for (target, listener) in &listeners {
                if target == source {
                    continue;
                }
                assert!(
                    pings(from, *target),
                    "{mode}: pod {source} cannot ping {target}"
                );
                let seen = connect_and_accept(from, *target, listener);
                assert_eq!(
                    seen, *source,
                    "{mode}: {target} saw the connection from pod {source} coming from {seen}"
                );
            }
        }
    }
}

fn listen(netns: &NetNs) -> TcpListener {
    netns
        .run(|| TcpListener::bind(("0.0.0.0", PORT)))
        .expect("enter the namespace")
        .expect("listen")
}

/// Connects from `from` to `target`:PORT, exchanges a line, and returns the peer address the
/// listener saw.
fn connect_and_accept(from: &NetNs, target: Ipv4Addr, listener: &TcpListener) -> Ipv4Addr {
    let mut stream = from
        .run(|| {
            TcpStream::connect_timeout(&SocketAddr::from((target, PORT)), Duration::from_secs(3))
        })
        .expect("enter the pod")
        .unwrap_or_else(|error| panic!("TCP to {target}: {error}"));
    stream.write_all(b"hello\n").expect("send a line");
    let (mut accepted, peer) = listener.accept().expect("accept");
    let mut buffer = [0u8; 6];
    accepted.read_exact(&mut buffer).expect("receive the line");
    assert_eq!(&buffer, b"hello\n");
    match peer {
        SocketAddr::V4(peer) => *peer.ip(),
        SocketAddr::V6(peer) => panic!("IPv6 peer {peer}"),
    }
}

fn privileged(test: &str) -> bool {
    skiff_tests::privileged::check(test, &["ip", "ping"])
}

#[test]
fn pods_on_three_nodes_reach_every_pod_and_node_with_direct_routing() {
    if !privileged("pods_on_three_nodes_reach_every_pod_and_node_with_direct_routing") {
        return;
    }
    let mut cluster = Cluster::shared_l2();
    cluster.add_pods();
    cluster.sync_routes("direct");
    cluster.assert_flat_network("direct");
}

#[test]
fn pods_on_three_nodes_reach_every_pod_and_node_over_vxlan() {
    if !privileged("pods_on_three_nodes_reach_every_pod_and_node_over_vxlan") {
        return;
    }
    let mut cluster = Cluster::routed_underlay();
    cluster.add_pods();
    // Without routes the router cannot carry pod traffic between nodes.
    let (first_pod, _) = &cluster.nodes[0].pods[0];
    let remote = cluster.nodes[1].pods[0].1;
    assert!(
        !pings(first_pod, remote),
        "pod traffic crossed the underlay without VXLAN"
    );
    cluster.sync_routes("vxlan");
    cluster.assert_flat_network("vxlan");
}

#[test]
fn pods_on_three_nodes_reach_every_pod_and_node_over_vxlan_on_a_shared_segment() {
    if !privileged("pods_on_three_nodes_reach_every_pod_and_node_over_vxlan_on_a_shared_segment") {
        return;
    }
    let mut cluster = Cluster::shared_l2();
    cluster.add_pods();
    cluster.sync_routes("vxlan");
    cluster.assert_flat_network("vxlan on a shared segment");
    // Switching to direct routing on the same nodes keeps the network flat.
    cluster.sync_routes("direct");
    cluster.assert_flat_network("direct after vxlan");
}
