//! Traffic from the node itself (its network namespace, no pod veth in the path) to a ClusterIP:
//! the cgroup socket programs translate at connect/sendmsg time, and only for sockets of the
//! network namespace their skiff-proxy manages.

mod common;

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use common::{Backend, Cluster, SERVICE_PORT, ServiceSpec, VIP, ask};
use skiff_tests::{netns::NetNs, require_privileges};

fn node_tcp_name(node: &NetNs) -> (String, SocketAddr) {
    let stream = node
        .run(|| {
            TcpStream::connect_timeout(
                &SocketAddr::from((VIP, SERVICE_PORT)),
                Duration::from_secs(2),
            )
        })
        .expect("enter node")
        .expect("the node connects to the ClusterIP");
    let peer = stream.peer_addr().expect("peer address");
    (ask(&stream).expect("a name"), peer)
}

#[test]
fn the_node_reaches_a_clusterip_over_tcp_and_udp_and_sees_the_vip() {
    require_privileges!("ip");
    let backends = vec![
        Backend::ready("web-0", Ipv4Addr::new(10, 250, 4, 2)),
        Backend::ready("web-1", Ipv4Addr::new(10, 250, 4, 3)),
    ];
    let cluster = Cluster::new("node-vip", &backends, &ServiceSpec::default());
    cluster.wait_until_serving();
    let mut names = BTreeSet::new();
    for _ in 0..40 {
        let (name, peer) = node_tcp_name(&cluster.node.netns);
        assert_eq!(
            peer,
            SocketAddr::from((VIP, SERVICE_PORT)),
            "getpeername shows the VIP"
        );
        names.insert(name);
    }
    assert_eq!(names.len(), 2, "node connections are balanced: {names:?}");

    let socket = cluster
        .node
        .netns
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .expect("enter node")
        .expect("bind UDP");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let (name, from) = common::udp_ask(&socket).expect("a UDP answer to the node");
    assert!(name.starts_with("web-"), "{name}");
    assert_eq!(
        from,
        SocketAddr::from((VIP, SERVICE_PORT)),
        "recvmsg shows the VIP as the source"
    );
}

#[test]
fn socket_programs_of_one_node_leave_other_network_namespaces_alone() {
    require_privileges!("ip");
    // Two nodes on one machine with the same ClusterIP and different backends.
    let node_a = Cluster::new(
        "iso-a",
        &[Backend::ready("alpha", Ipv4Addr::new(10, 250, 5, 2))],
        &ServiceSpec::default(),
    );
    let node_b = Cluster::new(
        "iso-b",
        &[Backend::ready("bravo", Ipv4Addr::new(10, 250, 5, 2))],
        &ServiceSpec::default(),
    );
    node_a.wait_until_serving();
    node_b.wait_until_serving();
    for _ in 0..10 {
        assert_eq!(node_tcp_name(&node_a.node.netns).0, "alpha");
        assert_eq!(node_tcp_name(&node_b.node.netns).0, "bravo");
    }
    // A namespace no skiff-proxy manages is not translated: its connection to the VIP has
    // nowhere to go.
    let bystander = NetNs::new("bystander").expect("namespace");
    let result = bystander
        .run(|| {
            TcpStream::connect_timeout(
                &SocketAddr::from((VIP, SERVICE_PORT)),
                Duration::from_millis(300),
            )
        })
        .expect("enter namespace");
    assert!(
        result.is_err(),
        "a namespace without skiff-proxy reached the VIP"
    );
}
