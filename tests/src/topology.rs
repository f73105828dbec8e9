//! A node with pods, built from network namespaces the way Skiff's routed pod network wires them.
//!
//! Owns a "node" namespace (forwarding on, [`NODE_ADDRESS`] on its `lo`) and pod namespaces,
//! each joined to the node by a veth:
//! `eth0` in the pod with a /32 address and a default route via the link-local gateway
//! 169.254.1.1 (a permanent neighbour entry for the host side's MAC), and the host side
//! (`<prefix><n>`) in the node with a /32 route to the pod. Everything disappears with the
//! namespaces. Never touches the machine's own namespace.

use std::net::Ipv4Addr;

use crate::netns::{NetNs, NetNsError};

/// The pods' default gateway, as Skiff's CNI plugin sets it up.
pub const POD_GATEWAY: &str = "169.254.1.1";
/// The node's own address (on its `lo`, as a node IP would be on its uplink), so the node's
/// sockets have a source address pods can answer.
pub const NODE_ADDRESS: &str = "10.255.0.1";

/// A node namespace and its pods.
pub struct Node {
    /// The node's own network namespace (where skiff-proxy runs).
    pub netns: NetNs,
    /// Prefix of the host-side veth names (`skiff-proxy --interface-prefix`).
    pub interface_prefix: String,
    pods: Vec<Pod>,
}

/// A pod: its namespace, address and the name of its host-side veth in the node.
pub struct Pod {
    pub name: String,
    pub netns: NetNs,
    pub address: Ipv4Addr,
    pub host_interface: String,
}

impl Node {
    /// A node namespace with IPv4 forwarding on and IPv6 off; host-side veths will be named
    /// `<interface_prefix><n>`.
    pub fn new(label: &str, interface_prefix: &str) -> Result<Node, NetNsError> {
        let netns = NetNs::new(label)?;
        netns.disable_ipv6()?;
        netns.ip(&["addr", "add", &format!("{NODE_ADDRESS}/32"), "dev", "lo"])?;
        netns
            .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
            .map_err(|source| NetNsError::Open {
                path: "/proc/sys/net/ipv4/ip_forward".into(),
                source,
            })?;
        Ok(Node {
            netns,
            interface_prefix: interface_prefix.to_owned(),
            pods: Vec::new(),
        })
    }

    /// Adds a pod with `address`, wired to the node. Returns its index in [`Node::pods`].
    pub fn add_pod(&mut self, name: &str, address: Ipv4Addr) -> Result<&Pod, NetNsError> {
        let netns = NetNs::new(&format!("pod-{name}"))?;
        netns.disable_ipv6()?;
        let host_interface = format!("{}{}", self.interface_prefix, self.pods.len());
        self.netns.ip(&[
            "link",
            "add",
            &host_interface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        self.netns.ip(&["link", "set", &host_interface, "up"])?;
        netns.ip(&["addr", "add", &format!("{address}/32"), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        let host_mac = interface_mac(&self.netns, &host_interface)?;
        netns.ip(&["route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link"])?;
        netns.ip(&["route", "add", "default", "via", POD_GATEWAY, "dev", "eth0"])?;
        netns.ip(&[
            "neigh",
            "replace",
            POD_GATEWAY,
            "lladdr",
            &host_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
        self.netns.ip(&[
            "route",
            "add",
            &format!("{address}/32"),
            "dev",
            &host_interface,
        ])?;
        self.pods.push(Pod {
            name: name.to_owned(),
            netns,
            address,
            host_interface,
        });
        Ok(self.pods.last().expect("a pod was just added"))
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|pod| pod.name == name)
    }
}

/// The MAC address of `interface` in `netns`.
fn interface_mac(netns: &NetNs, interface: &str) -> Result<String, NetNsError> {
    let output = netns.ip(&["-o", "link", "show", interface])?;
    output
        .split_whitespace()
        .skip_while(|word| *word != "link/ether")
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| NetNsError::Command {
            command: format!("ip -n {} -o link show {interface}", netns.name()),
            stderr: format!("no link/ether address in: {output}"),
        })
}
