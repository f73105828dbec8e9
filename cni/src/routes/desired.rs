//! The routes, VXLAN device, neighbours and FDB entries a node should have, given the node list.
//!
//! Owns the routing conventions: which nodes get a route (every other node with an IPv4 podCIDR and
//! InternalIP whose podCIDR overlaps neither the local one nor one already routed), the route
//! [`ROUTE_PROTOCOL`], the VXLAN device's name, address and MAC ([`vxlan_mac`]) and what each mode
//! installs per remote node. Pure: it knows nothing about netlink or what is installed now.
//!
//! Per remote node:
//! - `direct`: `<podCIDR> via <InternalIP>` (the kernel picks the device; the InternalIP must be
//!   on a connected subnet, as with flannel's host-gw).
//! - `vxlan` (flannel's vxlan convention): `<podCIDR> via <podCIDR network address> dev
//!   skiff.vxlan onlink`, the permanent neighbour `<network address> lladdr <MAC>` and the FDB entry
//!   `<MAC> dst <InternalIP>`; the local device carries the local podCIDR's network address as /32.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::ipam::network::Ipv4Network;

use super::nodes::{NodeList, SkippedNode};

/// The `protocol` of every cross-node route Skiff installs (`ip route show proto 84`). It is not
/// in iproute2's `rt_protos` list nor used by flannel (none), Calico (bird 12, felix 80) or
/// kube-router, and differs from the CNI plugin's own pod routes
/// ([`crate::netlink::ROUTE_PROTOCOL`], 83): this module removes stale routes of its protocol, and
/// must never see a pod's /32 route as one. Routes of any other protocol are never changed or
/// removed.
pub const ROUTE_PROTOCOL: u8 = 84;
/// Name of the VXLAN device in `vxlan` mode.
pub const VXLAN_DEVICE: &str = "skiff.vxlan";
/// Default VXLAN UDP port: 8472, the Linux kernel's historical default and flannel's (not the IANA
/// 4789), so that firewall rules written for flannel keep working.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// Default VXLAN network identifier (flannel's).
pub const DEFAULT_VXLAN_VNI: u32 = 1;
/// The largest VNI (24 bits).
pub const MAX_VXLAN_VNI: u32 = (1 << 24) - 1;
/// Bytes VXLAN adds to each packet over IPv4: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;
/// First two bytes of every derived VXLAN MAC: `0e` is a locally administered unicast first byte
/// (bit 1 set, bit 0 clear), `53` is ASCII `S`.
pub const VXLAN_MAC_PREFIX: [u8; 2] = [0x0e, 0x53];

/// How pod traffic reaches other nodes (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingMode {
    /// Plain routes via the other nodes' InternalIPs; the nodes must share an L2 segment.
    #[default]
    Direct,
    /// Routes through the VXLAN device [`VXLAN_DEVICE`]; the nodes only need IP reachability.
    Vxlan,
}

impl fmt::Display for RoutingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoutingMode::Direct => "direct",
            RoutingMode::Vxlan => "vxlan",
        })
    }
}

impl FromStr for RoutingMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "direct" => Ok(RoutingMode::Direct),
            "vxlan" => Ok(RoutingMode::Vxlan),
            other => Err(format!(
                "unknown routing mode {other:?}: expected \"direct\" or \"vxlan\""
            )),
        }
    }
}

/// The mode with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// See [`RoutingMode::Direct`].
    Direct,
    /// See [`RoutingMode::Vxlan`].
    Vxlan(VxlanSettings),
}

/// The VXLAN settings every node of the cluster must share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanSettings {
    /// VXLAN network identifier, 0..=[`MAX_VXLAN_VNI`].
    pub vni: u32,
    /// UDP destination (and listening) port.
    pub port: u16,
}

impl Default for VxlanSettings {
    fn default() -> Self {
        VxlanSettings {
            vni: DEFAULT_VXLAN_VNI,
            port: DEFAULT_VXLAN_PORT,
        }
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress(pub [u8; 6]);

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The VXLAN device MAC of the node with this InternalIP: `0e:53:<the four address bytes>`, so
/// `192.168.50.2` → `0e:53:c0:a8:32:02`. Every node derives every other node's MAC without
/// exchanging anything (flannel publishes a random one in a node annotation instead); the mapping
/// is injective, and locally administered unicast.
pub fn vxlan_mac(internal_ip: Ipv4Addr) -> MacAddress {
    let [a, b, c, d] = internal_ip.octets();
    MacAddress([VXLAN_MAC_PREFIX[0], VXLAN_MAC_PREFIX[1], a, b, c, d])
}

/// How a route reaches the remote podCIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// `via <InternalIP>`, on whatever device the kernel finds for it.
    Gateway(Ipv4Addr),
    /// `via <remote network address> dev skiff.vxlan onlink`.
    Vxlan(Ipv4Addr),
}

/// One route to a remote node's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    /// The remote podCIDR.
    pub destination: Ipv4Network,
    /// Where it goes.
    pub next_hop: NextHop,
    /// The remote node's name (for messages).
    pub node: String,
}

impl fmt::Display for DesiredRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.next_hop {
            NextHop::Gateway(gateway) => {
                write!(f, "{} via {gateway} (node {})", self.destination, self.node)
            }
            NextHop::Vxlan(gateway) => write!(
                f,
                "{} via {gateway} dev {VXLAN_DEVICE} onlink (node {})",
                self.destination, self.node
            ),
        }
    }
}

/// The VXLAN device and its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVxlan {
    /// VNI and port.
    pub settings: VxlanSettings,
    /// The local InternalIP: source of the encapsulated packets and the underlay to bind to.
    pub local: Ipv4Addr,
    /// The device MAC ([`vxlan_mac`] of `local`).
    pub mac: MacAddress,
    /// The device's only IPv4 address, as /32: the local podCIDR's network address.
    pub address: Ipv4Addr,
    /// Permanent neighbours: remote network address → remote MAC.
    pub neighbours: BTreeMap<Ipv4Addr, MacAddress>,
    /// FDB entries: remote MAC → remote InternalIP.
    pub fdb: BTreeMap<MacAddress, Ipv4Addr>,
}

/// Everything the node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    /// Routes by destination.
    pub routes: BTreeMap<Ipv4Network, DesiredRoute>,
    /// The VXLAN device, in `vxlan` mode.
    pub vxlan: Option<DesiredVxlan>,
    /// Nodes that get no route (from the file and from the overlap rules), for the log.
    pub skipped: Vec<SkippedNode>,
}

/// Why no desired state can be computed (nothing should then be changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredStateError {
    /// The local node is not in the list: a wrong `--node-name`, or the node is not registered.
    #[error("the local node {node:?} is not in the node list (check --node-name)")]
    LocalNodeMissing {
        /// `--node-name`.
        node: String,
    },
    /// `vxlan` mode needs the local podCIDR and InternalIP.
    #[error("vxlan mode needs the local node's podCIDR and InternalIP, but {reason}")]
    LocalNodeIncomplete {
        /// `--node-name`.
        node: String,
        /// What the local node lacks.
        reason: String,
    },
}

/// Computes what node `local_node` should have in `mode`.
pub fn desired_state(
    list: &NodeList,
    local_node: &str,
    mode: &Mode,
) -> Result<DesiredState, DesiredStateError> {
    if !list.contains(local_node) {
        return Err(DesiredStateError::LocalNodeMissing {
            node: local_node.to_owned(),
        });
    }
    let local = list.node(local_node);
    let mut skipped: Vec<SkippedNode> = list.skipped.clone();
    let mut vxlan = match mode {
        Mode::Direct => None,
        Mode::Vxlan(settings) => {
            let local = local.ok_or_else(|| DesiredStateError::LocalNodeIncomplete {
                node: local_node.to_owned(),
                reason: list
                    .skipped
                    .iter()
                    .find(|node| node.name == local_node)
                    .map_or_else(|| "it is skipped".to_owned(), ToString::to_string),
            })?;
            Some(DesiredVxlan {
                settings: *settings,
                local: local.internal_ip,
                mac: vxlan_mac(local.internal_ip),
                address: local.pod_cidr.address(),
                neighbours: BTreeMap::new(),
                fdb: BTreeMap::new(),
            })
        }
    };

    // Deterministic whatever the file order: the alphabetically first node wins an overlap.
    let mut remotes: Vec<_> = list
        .nodes
        .iter()
        .filter(|node| node.name != local_node)
        .collect();
    remotes.sort_by(|a, b| a.name.cmp(&b.name));

    let mut routes = BTreeMap::new();
    let mut routed: Vec<&super::nodes::Node> = Vec::new();
    for remote in remotes {
        let skip = |reason: String| SkippedNode {
            name: remote.name.clone(),
            reason,
        };
        if let Some(local) = local {
            if overlap(local.pod_cidr, remote.pod_cidr) {
                skipped.push(skip(format!(
                    "its podCIDR {} overlaps the local node's {}",
                    remote.pod_cidr, local.pod_cidr
                )));
                continue;
            }
            if local.internal_ip == remote.internal_ip {
                skipped.push(skip(format!(
                    "its InternalIP {} is the local node's",
                    remote.internal_ip
                )));
                continue;
            }
        }
        if let Some(other) = routed
            .iter()
            .find(|other| overlap(other.pod_cidr, remote.pod_cidr))
        {
            skipped.push(skip(format!(
                "its podCIDR {} overlaps {} of node {}",
                remote.pod_cidr, other.pod_cidr, other.name
            )));
            continue;
        }
        if let Some(other) = routed
            .iter()
            .find(|other| other.internal_ip == remote.internal_ip)
        {
            skipped.push(skip(format!(
                "its InternalIP {} is also node {}'s",
                remote.internal_ip, other.name
            )));
            continue;
        }
        routed.push(remote);
        let gateway = remote.pod_cidr.address();
        let next_hop = match &mut vxlan {
            None => NextHop::Gateway(remote.internal_ip),
            Some(vxlan) => {
                let mac = vxlan_mac(remote.internal_ip);
                vxlan.neighbours.insert(gateway, mac);
                vxlan.fdb.insert(mac, remote.internal_ip);
                NextHop::Vxlan(gateway)
            }
        };
        routes.insert(
            remote.pod_cidr,
            DesiredRoute {
                destination: remote.pod_cidr,
                next_hop,
                node: remote.name.clone(),
            },
        );
    }
    Ok(DesiredState {
        routes,
        vxlan,
        skipped,
    })
}

/// Whether two networks share an address.
pub fn overlap(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.address()) || b.contains(a.address())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::nodes::Node;

    fn net(text: &str) -> Ipv4Network {
        text.parse().expect("a valid network")
    }

    fn node(name: &str, cidr: &str, ip: [u8; 4]) -> Node {
        Node {
            name: name.into(),
            pod_cidr: net(cidr),
            internal_ip: Ipv4Addr::from(ip),
        }
    }

    fn three_nodes() -> NodeList {
        NodeList {
            nodes: vec![
                node("node-a", "10.244.0.0/24", [192, 168, 50, 1]),
                node("node-b", "10.244.1.0/24", [192, 168, 50, 2]),
                node("node-c", "10.244.2.0/24", [192, 168, 50, 3]),
            ],
            skipped: vec![],
        }
    }

    const VXLAN: Mode = Mode::Vxlan(VxlanSettings {
        vni: DEFAULT_VXLAN_VNI,
        port: DEFAULT_VXLAN_PORT,
    });

    #[test]
    fn direct_mode_routes_every_other_pod_cidr_via_its_internal_ip() {
        let state = desired_state(&three_nodes(), "node-a", &Mode::Direct).unwrap();
        assert_eq!(state.vxlan, None);
        let routes: Vec<_> = state.routes.values().map(ToString::to_string).collect();
        assert_eq!(
            routes,
            [
                "10.244.1.0/24 via 192.168.50.2 (node node-b)",
                "10.244.2.0/24 via 192.168.50.3 (node node-c)",
            ]
        );
    }

    #[test]
    fn vxlan_mode_routes_via_network_addresses_with_neighbours_and_fdb() {
        let state = desired_state(&three_nodes(), "node-b", &VXLAN).unwrap();
        let routes: Vec<_> = state.routes.values().map(ToString::to_string).collect();
        assert_eq!(
            routes,
            [
                "10.244.0.0/24 via 10.244.0.0 dev skiff.vxlan onlink (node node-a)",
                "10.244.2.0/24 via 10.244.2.0 dev skiff.vxlan onlink (node node-c)",
            ]
        );
        let vxlan = state.vxlan.unwrap();
        assert_eq!(vxlan.local, Ipv4Addr::new(192, 168, 50, 2));
        assert_eq!(vxlan.address, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(vxlan.mac.to_string(), "0e:53:c0:a8:32:02");
        assert_eq!(
            vxlan.neighbours,
            BTreeMap::from([
                (
                    Ipv4Addr::new(10, 244, 0, 0),
                    vxlan_mac([192, 168, 50, 1].into())
                ),
                (
                    Ipv4Addr::new(10, 244, 2, 0),
                    vxlan_mac([192, 168, 50, 3].into())
                ),
            ])
        );
        assert_eq!(
            vxlan.fdb,
            BTreeMap::from([
                (
                    vxlan_mac([192, 168, 50, 1].into()),
                    Ipv4Addr::new(192, 168, 50, 1)
                ),
                (
                    vxlan_mac([192, 168, 50, 3].into()),
                    Ipv4Addr::new(192, 168, 50, 3)
                ),
            ])
        );
    }

    #[test]
    fn derived_mac_is_locally_administered_unicast_and_distinct_per_address() {
        let mac = vxlan_mac(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(mac.0[0] & 0b10, 0b10, "locally administered");
        assert_eq!(mac.0[0] & 0b01, 0, "unicast");
        assert_ne!(mac, vxlan_mac(Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn missing_local_node_is_an_error_in_both_modes() {
        for mode in [Mode::Direct, VXLAN] {
            assert_eq!(
                desired_state(&three_nodes(), "node-x", &mode).unwrap_err(),
                DesiredStateError::LocalNodeMissing {
                    node: "node-x".into()
                }
            );
        }
    }

    #[test]
    fn local_node_without_pod_cidr_is_fine_for_direct_but_not_for_vxlan() {
        let mut list = three_nodes();
        list.nodes.remove(0);
        list.skipped.push(SkippedNode {
            name: "node-a".into(),
            reason: "it has no spec.podCIDR yet".into(),
        });
        let direct = desired_state(&list, "node-a", &Mode::Direct).unwrap();
        assert_eq!(direct.routes.len(), 2);
        let error = desired_state(&list, "node-a", &VXLAN).unwrap_err();
        assert!(error.to_string().contains("no spec.podCIDR"), "{error}");
    }

    #[test]
    fn overlapping_or_duplicate_remotes_are_skipped_alphabetically_after_the_first() {
        let mut list = three_nodes();
        list.nodes
            .push(node("node-d", "10.244.0.0/16", [192, 168, 50, 4]));
        list.nodes
            .push(node("node-e", "10.245.0.0/24", [192, 168, 50, 2]));
        list.nodes
            .push(node("node-0", "10.246.0.0/24", [192, 168, 50, 1]));
        let state = desired_state(&list, "node-a", &Mode::Direct).unwrap();
        assert_eq!(
            state.routes.keys().copied().collect::<Vec<_>>(),
            [net("10.244.1.0/24"), net("10.244.2.0/24")]
        );
        let reasons: Vec<_> = state.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            [
                "node node-0 is skipped: its InternalIP 192.168.50.1 is the local node's",
                "node node-d is skipped: its podCIDR 10.244.0.0/16 overlaps the local node's 10.244.0.0/24",
                "node node-e is skipped: its InternalIP 192.168.50.2 is also node node-b's",
            ]
        );
    }

    #[test]
    fn routing_mode_parses_and_prints_its_cli_spelling() {
        assert_eq!("direct".parse(), Ok(RoutingMode::Direct));
        assert_eq!("vxlan".parse(), Ok(RoutingMode::Vxlan));
        assert_eq!(RoutingMode::Vxlan.to_string(), "vxlan");
        let error = "host-gw".parse::<RoutingMode>().unwrap_err();
        assert!(error.contains("\"host-gw\""), "{error}");
    }
}
