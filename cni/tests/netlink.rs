//! The netlink operations of skiff-cni's routed pod network against a real kernel.
//!
//! Topology of every test: a "node" namespace standing in for the namespace the plugin runs in,
//! with `lo` up, IPv4 forwarding on, and an "uplink" holding the node address [`NODE_ADDRESS`] and
//! the default route (so proxy ARP has a route covering the pods' gateway 169.254.1.1), plus one
//! namespace per pod. The uplink is a veth pair with both ends in the node (`uplink0`, `uplink1`):
//! the test kernel need not have the `dummy` driver. The plugin-side calls run on a thread inside
//! the node namespace; the results are inspected with `ip -j` and `/proc/sys`, and traffic with
//! `ping`. Every namespace is removed when its `NetNs` drops, also when a test panics.

use std::{net::Ipv4Addr, path::PathBuf};

use serde_json::Value;
use skiff_cni::netlink::{
    GATEWAY, NetlinkError, PodInterface, PodInterfaceCreated, ROUTE_PROTOCOL, add_pod_interface,
    check_pod_interface, delete_pod_interface, host_interface_name,
};
use skiff_tests::{netns::NetNs, require_privileges, unique_name};

/// The node's own address, on `uplink0`.
const NODE_ADDRESS: &str = "10.255.0.1";
/// The node's interfaces before any pod is added.
const NODE_LINKS: [&str; 3] = ["lo", "uplink0", "uplink1"];
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 6);

/// A node namespace as described in the module documentation.
fn node() -> NetNs {
    let node = NetNs::new("cni-node").expect("node namespace");
    node.disable_ipv6().expect("no IPv6 in the node namespace");
    for args in [
        &[
            "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
        ][..],
        &[
            "addr",
            "add",
            &format!("{NODE_ADDRESS}/24"),
            "dev",
            "uplink0",
        ],
        &["link", "set", "uplink0", "up"],
        &["link", "set", "uplink1", "up"],
        &["route", "add", "default", "dev", "uplink0"],
    ] {
        node.ip(args)
            .unwrap_or_else(|error| panic!("ip {args:?} in the node: {error}"));
    }
    node.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
        .expect("enter the node namespace")
        .expect("turn on IPv4 forwarding in the node namespace");
    node
}

fn pod_netns() -> NetNs {
    let pod = NetNs::new("cni-pod").expect("pod namespace");
    pod.disable_ipv6().expect("no IPv6 in the pod namespace");
    pod
}

/// The attachment of `container` (`eth0`, MTU 1500) in `netns` with `address`.
fn pod_interface(netns: &NetNs, container: &str, address: Ipv4Addr) -> PodInterface {
    PodInterface {
        netns: netns.path().to_owned(),
        ifname: "eth0".to_owned(),
        host_ifname: host_interface_name(container, "eth0"),
        address,
        mtu: 1500,
    }
}

fn add(node: &NetNs, pod: &PodInterface) -> Result<PodInterfaceCreated, NetlinkError> {
    node.run(|| add_pod_interface(pod))
        .expect("enter the node namespace")
}

fn delete(node: &NetNs, host_ifname: &str) -> Result<bool, NetlinkError> {
    node.run(|| delete_pod_interface(host_ifname))
        .expect("enter the node namespace")
}

fn check(node: &NetNs, pod: &PodInterface) -> Result<(), NetlinkError> {
    node.run(|| check_pod_interface(pod))
        .expect("enter the node namespace")
}

/// `ip -j <args>` in `netns`, parsed.
fn ip_json(netns: &NetNs, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let output = netns
        .ip(&full)
        .unwrap_or_else(|error| panic!("ip {full:?} in {}: {error}", netns.name()));
    if output.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str(&output) {
        Ok(Value::Array(values)) => values,
        other => panic!("ip {full:?} printed no JSON array: {other:?}\n{output}"),
    }
}

/// The interface names in `netns`, sorted.
fn link_names(netns: &NetNs) -> Vec<String> {
    let mut names: Vec<String> = ip_json(netns, &["link", "show"])
        .iter()
        .map(|link| link["ifname"].as_str().expect("ifname").to_owned())
        .collect();
    names.sort();
    names
}

fn link(netns: &NetNs, name: &str) -> Value {
    ip_json(netns, &["link", "show", "dev", name])
        .pop()
        .unwrap_or_else(|| panic!("no interface {name} in {}", netns.name()))
}

/// `ip route` lines of the main table in `netns`, sorted, e.g.
/// `10.244.1.5 dev skf… proto 83 scope link`.
fn routes(netns: &NetNs) -> Vec<String> {
    let mut routes: Vec<String> = netns
        .ip(&["-4", "route", "show"])
        .expect("ip route show")
        .lines()
        .map(|line| line.trim().to_owned())
        .collect();
    routes.sort();
    routes
}

/// The IPv4 addresses of `name` in `netns` as `address/prefix`.
fn addresses(netns: &NetNs, name: &str) -> Vec<String> {
    ip_json(netns, &["-4", "addr", "show", "dev", name])
        .iter()
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|info| {
            format!(
                "{}/{}",
                info["local"].as_str().expect("local"),
                info["prefixlen"]
            )
        })
        .collect()
}

fn sysctl(netns: &NetNs, path: &str) -> String {
    netns
        .run(|| std::fs::read_to_string(path))
        .expect("enter namespace")
        .unwrap_or_else(|error| panic!("read {path}: {error}"))
        .trim()
        .to_owned()
}

fn ping(from: &NetNs, to: &str) -> Result<(), String> {
    let output = from
        .command("ping")
        .args(["-c", "1", "-W", "2", to])
        .output()
        .expect("run ping");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ping {to} from {} failed:\n{}{}",
            from.name(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn mismatch(result: Result<(), NetlinkError>) -> String {
    match result {
        Err(NetlinkError::Mismatch { what }) => what,
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[test]
fn add_creates_exactly_the_links_addresses_routes_and_sysctls_of_the_routed_model() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    let pod = pod_interface(&netns, "container-a", POD_A);
    let host = pod.host_ifname.clone();

    let created = add(&node, &pod).expect("add");

    // Links: one new interface on each side, up, veth peers of each other.
    let mut expected_node_links = vec![
        host.clone(),
        "lo".to_owned(),
        "uplink0".to_owned(),
        "uplink1".to_owned(),
    ];
    expected_node_links.sort();
    assert_eq!(link_names(&node), expected_node_links);
    assert_eq!(link_names(&netns), ["eth0", "lo"]);
    let host_link = link(&node, &host);
    let pod_link = link(&netns, "eth0");
    for (side, link) in [("host", &host_link), ("pod", &pod_link)] {
        let flags = link["flags"].as_array().expect("flags");
        assert!(
            flags.contains(&Value::from("UP")),
            "{side} side is up: {link}"
        );
        assert_eq!(link["mtu"], 1500, "{side} side MTU: {link}");
    }
    assert_eq!(host_link["address"], created.host_mac.as_str());
    assert_eq!(pod_link["address"], created.pod_mac.as_str());
    assert_eq!(pod_link["ifindex"], created.pod_ifindex);
    assert_eq!(host_link["link_index"], created.pod_ifindex, "{host_link}");

    // Addresses: only the pod has one, a /32.
    assert_eq!(addresses(&netns, "eth0"), [format!("{POD_A}/32")]);
    assert!(addresses(&node, &host).is_empty());

    // Routes.
    assert_eq!(
        routes(&netns),
        [
            format!("{GATEWAY} dev eth0 proto {ROUTE_PROTOCOL} scope link"),
            format!("default via {GATEWAY} dev eth0 proto {ROUTE_PROTOCOL}"),
        ]
    );
    let mut expected_node_routes = vec![
        format!("{POD_A} dev {host} proto {ROUTE_PROTOCOL} scope link"),
        "10.255.0.0/24 dev uplink0 proto kernel scope link src 10.255.0.1".to_owned(),
        "default dev uplink0 scope link".to_owned(),
    ];
    expected_node_routes.sort();
    assert_eq!(routes(&node), expected_node_routes);

    // Sysctls of the host veth, in the node's namespace.
    for (path, value) in [
        (format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp"), "1"),
        (format!("/proc/sys/net/ipv4/neigh/{host}/proxy_delay"), "0"),
        (format!("/proc/sys/net/ipv4/conf/{host}/forwarding"), "1"),
    ] {
        assert_eq!(sysctl(&node, &path), value, "{path}");
    }
}

#[test]
fn pod_and_node_ping_each_other_through_proxy_arp() {
    require_privileges!("ip", "ping");
    let node = node();
    let netns = pod_netns();
    let pod = pod_interface(&netns, "container-a", POD_A);
    add(&node, &pod).expect("add");

    ping(&netns, NODE_ADDRESS).expect("pod reaches the node");
    ping(&node, &POD_A.to_string()).expect("node reaches the pod");

    // The pod resolved the gateway to the host veth's MAC: proxy ARP answered.
    let host_mac = link(&node, &pod.host_ifname)["address"].clone();
    let neighbours = ip_json(&netns, &["neigh", "show", "dev", "eth0"]);
    assert!(
        neighbours
            .iter()
            .any(|entry| entry["dst"] == GATEWAY.to_string() && entry["lladdr"] == host_mac),
        "gateway resolved to {host_mac}: {neighbours:?}"
    );
}

#[test]
fn two_pods_ping_each_other_through_the_node() {
    require_privileges!("ip", "ping");
    let node = node();
    let (netns_a, netns_b) = (pod_netns(), pod_netns());
    add(&node, &pod_interface(&netns_a, "container-a", POD_A)).expect("add pod a");
    add(&node, &pod_interface(&netns_b, "container-b", POD_B)).expect("add pod b");

    ping(&netns_a, &POD_B.to_string()).expect("pod a reaches pod b");
    ping(&netns_b, &POD_A.to_string()).expect("pod b reaches pod a");
}

#[test]
fn check_passes_after_add_and_names_a_deleted_host_route() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    let pod = pod_interface(&netns, "container-a", POD_A);
    add(&node, &pod).expect("add");
    check(&node, &pod).expect("check right after add");

    node.ip(&[
        "route",
        "del",
        &format!("{POD_A}/32"),
        "dev",
        &pod.host_ifname,
    ])
    .expect("delete the host route");

    let what = mismatch(check(&node, &pod));
    assert!(
        what.contains(&format!("route {POD_A}/32 dev {}", pod.host_ifname))
            && what.contains("the node's network namespace"),
        "{what}"
    );
}

#[test]
fn check_names_a_deleted_default_route_in_the_pod() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    let pod = pod_interface(&netns, "container-a", POD_A);
    add(&node, &pod).expect("add");

    netns
        .ip(&["route", "del", "default"])
        .expect("delete the pod's default route");

    let what = mismatch(check(&node, &pod));
    assert!(
        what.contains(&format!("route default via {GATEWAY} dev eth0"))
            && what.contains(&netns.path().display().to_string()),
        "{what}"
    );
}

#[test]
fn check_names_a_missing_pod_address() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    let pod = pod_interface(&netns, "container-a", POD_A);
    add(&node, &pod).expect("add");

    netns
        .ip(&["addr", "del", &format!("{POD_A}/32"), "dev", "eth0"])
        .expect("delete the pod's address");

    let what = mismatch(check(&node, &pod));
    assert!(
        what.contains(&format!(
            "interface eth0 in network namespace {}",
            netns.path().display()
        )) && what.contains(&format!("lacks address {POD_A}/32")),
        "{what}"
    );
}

#[test]
fn check_names_a_host_veth_that_is_down() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    let pod = pod_interface(&netns, "container-a", POD_A);
    add(&node, &pod).expect("add");

    node.ip(&["link", "set", &pod.host_ifname, "down"])
        .expect("set the host veth down");

    let what = mismatch(check(&node, &pod));
    assert_eq!(
        what,
        format!(
            "interface {} in the node's network namespace is down",
            pod.host_ifname
        )
    );
}

#[test]
fn delete_removes_the_veth_and_the_host_route_and_is_idempotent() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    let pod = pod_interface(&netns, "container-a", POD_A);
    add(&node, &pod).expect("add");

    assert!(delete(&node, &pod.host_ifname).expect("first delete"));

    assert_eq!(link_names(&node), NODE_LINKS);
    assert_eq!(link_names(&netns), ["lo"]);
    assert!(
        !routes(&node)
            .iter()
            .any(|route| route.contains(&POD_A.to_string())),
        "{:?}",
        routes(&node)
    );
    assert!(!delete(&node, &pod.host_ifname).expect("second delete"));
}

#[test]
fn delete_works_after_the_pod_netns_is_gone() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    let pod = pod_interface(&netns, "container-a", POD_A);
    add(&node, &pod).expect("add");

    drop(netns);

    // The kernel may already have removed the veth with the namespace; either way DEL succeeds
    // and leaves nothing.
    delete(&node, &pod.host_ifname).expect("delete without the pod namespace");
    assert_eq!(link_names(&node), NODE_LINKS);
    assert!(!delete(&node, &pod.host_ifname).expect("second delete"));
}

#[test]
fn add_replaces_a_leftover_host_veth_of_the_same_name() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    let pod = pod_interface(&netns, "container-a", POD_A);
    // What a killed ADD leaves: the pair, already renamed in the pod, nothing configured.
    node.ip(&[
        "link",
        "add",
        &pod.host_ifname,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        netns.name(),
    ])
    .expect("leftover veth pair");
    let leftover_index = link(&node, &pod.host_ifname)["ifindex"].clone();

    add(&node, &pod).expect("add over the leftover");

    assert_ne!(link(&node, &pod.host_ifname)["ifindex"], leftover_index);
    assert_eq!(link_names(&netns), ["eth0", "lo"]);
    check(&node, &pod).expect("check after add over the leftover");
}

#[test]
fn add_refuses_an_existing_ifname_and_leaves_no_host_veth() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    netns
        .ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other",
        ])
        .expect("someone else's eth0 in the pod");
    let existing_index = link(&netns, "eth0")["ifindex"].clone();
    let pod = pod_interface(&netns, "container-a", POD_A);

    match add(&node, &pod) {
        Err(NetlinkError::InterfaceExists {
            ifname,
            netns: path,
        }) => {
            assert_eq!(ifname, "eth0");
            assert_eq!(path, netns.path());
        }
        other => panic!("expected InterfaceExists, got {other:?}"),
    }

    assert_eq!(link_names(&node), NODE_LINKS);
    assert_eq!(link_names(&netns), ["eth0", "lo", "other"]);
    assert_eq!(link(&netns, "eth0")["ifindex"], existing_index);
}

#[test]
fn add_with_a_missing_netns_fails_with_netns_not_found_and_creates_nothing() {
    require_privileges!("ip");
    let node = node();
    let missing = PathBuf::from("/run/netns").join(unique_name("sk-cni-missing"));
    let pod = PodInterface {
        netns: missing.clone(),
        ifname: "eth0".to_owned(),
        host_ifname: host_interface_name("container-a", "eth0"),
        address: POD_A,
        mtu: 1500,
    };

    match add(&node, &pod) {
        Err(NetlinkError::NetnsNotFound { path }) => assert_eq!(path, missing),
        other => panic!("expected NetnsNotFound, got {other:?}"),
    }
    assert_eq!(link_names(&node), NODE_LINKS);
}

#[test]
fn a_failure_after_the_veth_exists_removes_it_again() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    // A multicast "pod address" gets through the veth's creation, the node side and the rename,
    // and is refused by the kernel when it is added to the pod's interface (rtnetlink sends no
    // IFA_LOCAL for it: EINVAL).
    let pod = pod_interface(&netns, "container-a", Ipv4Addr::new(224, 0, 0, 5));

    match add(&node, &pod) {
        Err(NetlinkError::Netlink { operation, .. }) => {
            assert!(operation.contains("224.0.0.5"), "{operation}");
        }
        other => panic!("expected a netlink failure, got {other:?}"),
    }

    assert_eq!(link_names(&node), NODE_LINKS);
    assert_eq!(link_names(&netns), ["lo"]);
}

#[test]
fn mtu_1400_is_applied_to_both_ends() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    let pod = PodInterface {
        mtu: 1400,
        ..pod_interface(&netns, "container-a", POD_A)
    };

    add(&node, &pod).expect("add");

    assert_eq!(link(&node, &pod.host_ifname)["mtu"], 1400);
    assert_eq!(link(&netns, "eth0")["mtu"], 1400);
    check(&node, &pod).expect("check with MTU 1400");
    let what = mismatch(check(&node, &PodInterface { mtu: 1500, ..pod }));
    assert!(what.contains("MTU 1400 instead of 1500"), "{what}");
}

#[test]
fn add_works_when_called_from_inside_a_tokio_runtime() {
    require_privileges!("ip");
    let node = node();
    let netns = pod_netns();
    let pod = pod_interface(&netns, "container-a", POD_A);

    let created = node
        .run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("caller's runtime");
            runtime.block_on(async { add_pod_interface(&pod) })
        })
        .expect("enter the node namespace");

    created.expect("add from inside a runtime");
    check(&node, &pod).expect("check");
}
