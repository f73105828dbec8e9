//! What is installed now, and the ordered changes that turn it into the desired state.
//!
//! Owns the comparison rules (which installed route, device, neighbour or FDB entry already serves
//! a desired one, which are stale) and the order of changes: device first, then the entries a route
//! needs (address, FDB, neighbours), then routes are added or replaced before stale ones are
//! deleted, and the device is deleted last, so that traffic to a node that stays in the list never
//! loses its route while the mode or a next hop changes. Pure: [`super::kernel`] observes the
//! [`CurrentState`] and applies the [`Plan`].
//!
//! It only plans changes to Skiff's own objects: routes of [`ROUTE_PROTOCOL`] in the main table,
//! and the [`VXLAN_DEVICE`] with everything on it. A desired route whose destination is already
//! taken by another protocol's route is a [`RouteConflict`], never a replacement.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use crate::ipam::network::Ipv4Network;

use super::desired::{
    DesiredRoute, DesiredState, MacAddress, NextHop, ROUTE_PROTOCOL, VXLAN_DEVICE, VXLAN_OVERHEAD,
    VxlanSettings,
};

/// The smallest MTU IPv4 allows; the VXLAN device's MTU must not be lower.
const MIN_IPV4_MTU: u32 = 68;

/// One of Skiff's routes (protocol [`ROUTE_PROTOCOL`]) in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRoute {
    /// Destination network.
    pub destination: Ipv4Network,
    /// `via`, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index, if any.
    pub interface: Option<u32>,
    /// Output interface name, for messages.
    pub interface_name: Option<String>,
    /// Whether the route has the `onlink` flag.
    pub onlink: bool,
    /// The route's metric (0 when it has none).
    pub priority: u32,
}

impl fmt::Display for InstalledRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        match (&self.interface_name, self.interface) {
            (Some(name), _) => write!(f, " dev {name}")?,
            (None, Some(index)) => write!(f, " dev #{index}")?,
            (None, None) => {}
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        if self.priority != 0 {
            write!(f, " metric {}", self.priority)?;
        }
        write!(f, " proto {ROUTE_PROTOCOL}")
    }
}

/// A main-table route of another protocol with metric 0: a Skiff route to the same destination
/// would replace it, so it blocks one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRoute {
    /// Destination network.
    pub destination: Ipv4Network,
    /// Its `protocol` (2 kernel, 3 boot, 4 static, ...).
    pub protocol: u8,
    /// `via`, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface name, if known.
    pub interface_name: Option<String>,
}

impl fmt::Display for ForeignRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        if let Some(name) = &self.interface_name {
            write!(f, " dev {name}")?;
        }
        write!(f, " proto {}", self.protocol)
    }
}

/// The VXLAN device [`VXLAN_DEVICE`] as it is, with everything on it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstalledVxlan {
    /// Interface index.
    pub index: u32,
    /// VNI, if reported.
    pub vni: Option<u32>,
    /// UDP port, if reported.
    pub port: Option<u16>,
    /// Local (source) address, if set.
    pub local: Option<Ipv4Addr>,
    /// Whether it learns source MACs, if reported.
    pub learning: Option<bool>,
    /// The underlay interface it is bound to, if any.
    pub underlay_index: Option<u32>,
    /// MTU.
    pub mtu: Option<u32>,
    /// MAC.
    pub mac: Option<MacAddress>,
    /// Whether it is administratively up.
    pub up: bool,
    /// IPv4 addresses with their prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// Permanent IPv4 neighbours (other states are the kernel's and left alone).
    pub neighbours: Vec<(Ipv4Addr, MacAddress)>,
    /// Unicast FDB entries with an IPv4 destination.
    pub fdb: Vec<(MacAddress, Ipv4Addr)>,
}

/// The interface that holds the local InternalIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
}

/// Everything [`plan`] compares against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentState {
    /// Skiff's routes in the main table.
    pub routes: Vec<InstalledRoute>,
    /// Other protocols' metric-0 routes in the main table.
    pub foreign_routes: Vec<ForeignRoute>,
    /// The VXLAN device, if it exists.
    pub vxlan: Option<InstalledVxlan>,
    /// The underlay (only observed in `vxlan` mode).
    pub underlay: Option<Underlay>,
}

/// The VXLAN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDeviceSpec {
    /// VNI and port.
    pub settings: VxlanSettings,
    /// Local (source) address: the local InternalIP.
    pub local: Ipv4Addr,
    /// The underlay interface index.
    pub underlay_index: u32,
    /// The underlay interface name, for messages.
    pub underlay_name: String,
    /// Underlay MTU − [`VXLAN_OVERHEAD`].
    pub mtu: u32,
    /// The derived MAC.
    pub mac: MacAddress,
}

impl fmt::Display for VxlanDeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VNI {}, port {}, local {} on {}, MTU {}, MAC {}, no learning",
            self.settings.vni,
            self.settings.port,
            self.local,
            self.underlay_name,
            self.mtu,
            self.mac
        )
    }
}

/// One change, in the order [`Plan::changes`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create [`VXLAN_DEVICE`], up.
    CreateDevice(VxlanDeviceSpec),
    /// Delete [`VXLAN_DEVICE`] (and with it everything on it) and create it anew, because a
    /// setting that cannot be changed in place differs.
    RecreateDevice {
        /// The old device's index.
        index: u32,
        /// The new device.
        spec: VxlanDeviceSpec,
        /// What differs.
        reason: String,
    },
    /// Change the settings that can be changed in place.
    UpdateDevice {
        /// Device index.
        index: u32,
        /// New MTU.
        mtu: Option<u32>,
        /// New MAC.
        mac: Option<MacAddress>,
        /// Set it up.
        up: bool,
    },
    /// Add `address/32` to the device.
    AddDeviceAddress(Ipv4Addr),
    /// Remove an address from the device.
    RemoveDeviceAddress {
        /// The address.
        address: Ipv4Addr,
        /// Its prefix length.
        prefix_length: u8,
    },
    /// Create or replace a permanent neighbour on the device.
    ReplaceNeighbour {
        /// Remote network address.
        address: Ipv4Addr,
        /// Remote MAC.
        mac: MacAddress,
    },
    /// Delete a permanent neighbour from the device.
    DeleteNeighbour {
        /// The address.
        address: Ipv4Addr,
        /// Its MAC (for messages).
        mac: MacAddress,
    },
    /// Create or replace an FDB entry on the device.
    ReplaceFdb {
        /// Remote MAC.
        mac: MacAddress,
        /// Remote InternalIP.
        destination: Ipv4Addr,
    },
    /// Delete one destination of an FDB entry.
    DeleteFdb {
        /// The MAC.
        mac: MacAddress,
        /// The destination.
        destination: Ipv4Addr,
    },
    /// Add a route where none of Skiff's exists.
    AddRoute(DesiredRoute),
    /// Replace one of Skiff's routes (same destination, metric 0) in place.
    ReplaceRoute {
        /// The new route.
        route: DesiredRoute,
        /// The route it replaces.
        old: InstalledRoute,
    },
    /// Delete a stale route of Skiff's.
    DeleteRoute(InstalledRoute),
    /// Delete [`VXLAN_DEVICE`] (the mode is not `vxlan` any more).
    DeleteDevice {
        /// Its index.
        index: u32,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateDevice(spec) => write!(f, "create device {VXLAN_DEVICE} ({spec})"),
            Change::RecreateDevice { spec, reason, .. } => {
                write!(
                    f,
                    "recreate device {VXLAN_DEVICE} ({spec}) because {reason}"
                )
            }
            Change::UpdateDevice { mtu, mac, up, .. } => {
                let mut parts = Vec::new();
                if let Some(mtu) = mtu {
                    parts.push(format!("MTU {mtu}"));
                }
                if let Some(mac) = mac {
                    parts.push(format!("MAC {mac}"));
                }
                if *up {
                    parts.push("up".to_owned());
                }
                write!(f, "set device {VXLAN_DEVICE} {}", parts.join(", "))
            }
            Change::AddDeviceAddress(address) => {
                write!(f, "add address {address}/32 to {VXLAN_DEVICE}")
            }
            Change::RemoveDeviceAddress {
                address,
                prefix_length,
            } => write!(
                f,
                "remove address {address}/{prefix_length} from {VXLAN_DEVICE}"
            ),
            Change::ReplaceNeighbour { address, mac } => write!(
                f,
                "set neighbour {address} lladdr {mac} dev {VXLAN_DEVICE} permanent"
            ),
            Change::DeleteNeighbour { address, mac } => write!(
                f,
                "delete neighbour {address} lladdr {mac} dev {VXLAN_DEVICE}"
            ),
            Change::ReplaceFdb { mac, destination } => write!(
                f,
                "set FDB entry {mac} dst {destination} dev {VXLAN_DEVICE} self permanent"
            ),
            Change::DeleteFdb { mac, destination } => write!(
                f,
                "delete FDB entry {mac} dst {destination} dev {VXLAN_DEVICE}"
            ),
            Change::AddRoute(route) => write!(f, "add route {route}"),
            Change::ReplaceRoute { route, old } => {
                write!(f, "replace route {old} with {route}")
            }
            Change::DeleteRoute(old) => write!(f, "delete route {old}"),
            Change::DeleteDevice { .. } => write!(
                f,
                "delete device {VXLAN_DEVICE} (not in vxlan mode), with its neighbours and FDB"
            ),
        }
    }
}

/// A desired route that another protocol's route blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict {
    /// The route Skiff wants.
    pub route: DesiredRoute,
    /// The route in its way.
    pub foreign: ForeignRoute,
}

impl fmt::Display for RouteConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "route {} not installed: the main table already has {}, which Skiff does not own \
             (remove it, or fix the node's podCIDR)",
            self.route, self.foreign
        )
    }
}

/// The ordered changes, and the desired routes that cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Changes, to be applied in this order.
    pub changes: Vec<Change>,
    /// Desired routes blocked by other protocols' routes.
    pub conflicts: Vec<RouteConflict>,
}

impl Plan {
    /// Whether nothing needs to change and nothing conflicts.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.conflicts.is_empty()
    }
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The local InternalIP is on no interface.
    #[error(
        "the local node's InternalIP {address} is not assigned to any interface in this network \
         namespace: the VXLAN device {VXLAN_DEVICE} needs it as its local (underlay) address"
    )]
    NoUnderlay {
        /// The InternalIP.
        address: Ipv4Addr,
    },
    /// The underlay MTU leaves no room for VXLAN.
    #[error(
        "the underlay interface {name} has MTU {mtu}: too small for VXLAN's {VXLAN_OVERHEAD} bytes \
         of overhead"
    )]
    UnderlayMtuTooSmall {
        /// Underlay name.
        name: String,
        /// Its MTU.
        mtu: u32,
    },
}

/// The changes that turn `current` into `desired`.
pub fn plan(desired: &DesiredState, current: &CurrentState) -> Result<Plan, PlanError> {
    let mut early = Vec::new(); // device, address, FDB, neighbours
    let mut late = Vec::new(); // stale neighbours, FDB entries, addresses; device deletion
    // The index of the device whose routes survive this plan (None when it is (re)created).
    let mut surviving_vxlan_index = current.vxlan.as_ref().map(|have| have.index);

    match (&desired.vxlan, &current.vxlan) {
        (Some(want), have) => {
            let underlay = current.underlay.as_ref().ok_or(PlanError::NoUnderlay {
                address: want.local,
            })?;
            let mtu = underlay
                .mtu
                .checked_sub(VXLAN_OVERHEAD)
                .filter(|mtu| *mtu >= MIN_IPV4_MTU)
                .ok_or_else(|| PlanError::UnderlayMtuTooSmall {
                    name: underlay.name.clone(),
                    mtu: underlay.mtu,
                })?;
            let spec = VxlanDeviceSpec {
                settings: want.settings,
                local: want.local,
                underlay_index: underlay.index,
                underlay_name: underlay.name.clone(),
                mtu,
                mac: want.mac,
            };
            // What is on the device and survives: nothing if it is (re)created.
            let kept = match have {
                None => {
                    early.push(Change::CreateDevice(spec));
                    surviving_vxlan_index = None;
                    None
                }
                Some(have) => match incompatibility(have, &spec) {
                    Some(reason) => {
                        early.push(Change::RecreateDevice {
                            index: have.index,
                            spec,
                            reason,
                        });
                        surviving_vxlan_index = None;
                        None
                    }
                    None => {
                        let mtu = (have.mtu != Some(spec.mtu)).then_some(spec.mtu);
                        let mac = (have.mac != Some(spec.mac)).then_some(spec.mac);
                        if mtu.is_some() || mac.is_some() || !have.up {
                            early.push(Change::UpdateDevice {
                                index: have.index,
                                mtu,
                                mac,
                                up: !have.up,
                            });
                        }
                        Some(have)
                    }
                },
            };
            let empty = InstalledVxlan::default();
            let kept = kept.unwrap_or(&empty);

            if !kept.addresses.contains(&(want.address, 32)) {
                early.push(Change::AddDeviceAddress(want.address));
            }
            for &(address, prefix_length) in &kept.addresses {
                if (address, prefix_length) != (want.address, 32) {
                    late.push(Change::RemoveDeviceAddress {
                        address,
                        prefix_length,
                    });
                }
            }

            for &(mac, destination) in &kept.fdb {
                match want.fdb.get(&mac) {
                    // A wrong destination of a MAC we want goes before the replace, so that
                    // the MAC ends up with exactly one destination.
                    Some(wanted) if *wanted != destination => {
                        early.push(Change::DeleteFdb { mac, destination });
                    }
                    Some(_) => {}
                    None => late.push(Change::DeleteFdb { mac, destination }),
                }
            }
            for (&mac, &destination) in &want.fdb {
                if !kept.fdb.contains(&(mac, destination)) {
                    early.push(Change::ReplaceFdb { mac, destination });
                }
            }

            for (&address, &mac) in &want.neighbours {
                if !kept.neighbours.contains(&(address, mac)) {
                    early.push(Change::ReplaceNeighbour { address, mac });
                }
            }
            for &(address, mac) in &kept.neighbours {
                if !want.neighbours.contains_key(&address) {
                    late.push(Change::DeleteNeighbour { address, mac });
                }
            }
        }
        (None, Some(have)) => late.push(Change::DeleteDevice { index: have.index }),
        (None, None) => {}
    }

    let (routes, conflicts) = plan_routes(desired, current, surviving_vxlan_index);
    let mut changes = early;
    changes.extend(routes);
    changes.extend(late);
    Ok(Plan { changes, conflicts })
}

/// Route changes (adds and replaces first, then deletions) and conflicts.
fn plan_routes(
    desired: &DesiredState,
    current: &CurrentState,
    vxlan_index: Option<u32>,
) -> (Vec<Change>, Vec<RouteConflict>) {
    // Routes through a device that is about to be recreated disappear with it.
    let recreated_index = current
        .vxlan
        .as_ref()
        .map(|have| have.index)
        .filter(|index| Some(*index) != vxlan_index);
    let installed: Vec<&InstalledRoute> = current
        .routes
        .iter()
        .filter(|route| recreated_index.is_none() || route.interface != recreated_index)
        .collect();

    let mut additions = Vec::new();
    let mut deletions = Vec::new();
    let mut conflicts = Vec::new();
    let mut kept: BTreeSet<usize> = BTreeSet::new();

    for (destination, want) in &desired.routes {
        let same_destination: Vec<(usize, &InstalledRoute)> = installed
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, route)| route.destination == *destination)
            .collect();
        if let Some((i, _)) = same_destination
            .iter()
            .find(|(_, route)| serves(route, want, vxlan_index))
        {
            kept.insert(*i);
            continue;
        }
        if let Some(foreign) = current
            .foreign_routes
            .iter()
            .find(|foreign| foreign.destination == *destination)
        {
            conflicts.push(RouteConflict {
                route: want.clone(),
                foreign: foreign.clone(),
            });
            continue;
        }
        match same_destination
            .iter()
            .find(|(_, route)| route.priority == 0)
        {
            Some((i, old)) => {
                kept.insert(*i);
                additions.push(Change::ReplaceRoute {
                    route: want.clone(),
                    old: (*old).clone(),
                });
            }
            None => additions.push(Change::AddRoute(want.clone())),
        }
    }
    for (i, route) in installed.iter().enumerate() {
        if !kept.contains(&i) {
            deletions.push(Change::DeleteRoute((*route).clone()));
        }
    }
    additions.extend(deletions);
    (additions, conflicts)
}

/// Whether an installed route is exactly the desired one.
fn serves(route: &InstalledRoute, want: &DesiredRoute, vxlan_index: Option<u32>) -> bool {
    if route.priority != 0 {
        return false;
    }
    match want.next_hop {
        NextHop::Gateway(gateway) => {
            route.gateway == Some(gateway)
                && !route.onlink
                && (vxlan_index.is_none() || route.interface != vxlan_index)
        }
        NextHop::Vxlan(gateway) => {
            route.gateway == Some(gateway)
                && route.onlink
                && vxlan_index.is_some()
                && route.interface == vxlan_index
        }
    }
}

/// Why the existing device cannot be kept, if it cannot.
fn incompatibility(have: &InstalledVxlan, spec: &VxlanDeviceSpec) -> Option<String> {
    let mut reasons = Vec::new();
    if have.vni != Some(spec.settings.vni) {
        reasons.push(format!("its VNI is {}", show(have.vni)));
    }
    if have.port != Some(spec.settings.port) {
        reasons.push(format!("its port is {}", show(have.port)));
    }
    if have.local != Some(spec.local) {
        reasons.push(format!("its local address is {}", show(have.local)));
    }
    if have.learning != Some(false) {
        reasons.push("it learns source addresses".to_owned());
    }
    if have.underlay_index != Some(spec.underlay_index) {
        reasons.push(format!(
            "it is bound to interface {} instead of {}",
            have.underlay_index
                .map_or_else(|| "none".to_owned(), |index| format!("#{index}")),
            spec.underlay_name
        ));
    }
    (!reasons.is_empty()).then(|| reasons.join(", "))
}

fn show<T: fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "unset".to_owned(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::desired::{
        DEFAULT_VXLAN_PORT, DEFAULT_VXLAN_VNI, Mode, desired_state, vxlan_mac,
    };
    use crate::routes::nodes::{Node, NodeList};

    const ETH0: u32 = 2;
    const VXLAN_INDEX: u32 = 7;

    fn net(text: &str) -> Ipv4Network {
        text.parse().expect("a valid network")
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("a valid address")
    }

    fn nodes(names: &[&str]) -> NodeList {
        let all = [
            ("node-a", "10.244.0.0/24", "192.168.50.1"),
            ("node-b", "10.244.1.0/24", "192.168.50.2"),
            ("node-c", "10.244.2.0/24", "192.168.50.3"),
        ];
        NodeList {
            nodes: all
                .iter()
                .filter(|(name, ..)| names.contains(name))
                .map(|(name, cidr, address)| Node {
                    name: (*name).to_owned(),
                    pod_cidr: net(cidr),
                    internal_ip: ip(address),
                })
                .collect(),
            skipped: vec![],
        }
    }

    fn vxlan_mode() -> Mode {
        Mode::Vxlan(VxlanSettings::default())
    }

    fn direct(names: &[&str]) -> DesiredState {
        desired_state(&nodes(names), "node-a", &Mode::Direct).unwrap()
    }

    fn vxlan(names: &[&str]) -> DesiredState {
        desired_state(&nodes(names), "node-a", &vxlan_mode()).unwrap()
    }

    fn direct_route(cidr: &str, gateway: &str) -> InstalledRoute {
        InstalledRoute {
            destination: net(cidr),
            gateway: Some(ip(gateway)),
            interface: Some(ETH0),
            interface_name: Some("eth0".into()),
            onlink: false,
            priority: 0,
        }
    }

    fn vxlan_route(cidr: &str) -> InstalledRoute {
        InstalledRoute {
            destination: net(cidr),
            gateway: Some(net(cidr).address()),
            interface: Some(VXLAN_INDEX),
            interface_name: Some(VXLAN_DEVICE.into()),
            onlink: true,
            priority: 0,
        }
    }

    fn underlay() -> Underlay {
        Underlay {
            index: ETH0,
            name: "eth0".into(),
            mtu: 1500,
        }
    }

    /// Node-a's device exactly as vxlan mode wants it, with node-b and node-c's entries.
    fn converged_device() -> InstalledVxlan {
        let b = ip("192.168.50.2");
        let c = ip("192.168.50.3");
        InstalledVxlan {
            index: VXLAN_INDEX,
            vni: Some(DEFAULT_VXLAN_VNI),
            port: Some(DEFAULT_VXLAN_PORT),
            local: Some(ip("192.168.50.1")),
            learning: Some(false),
            underlay_index: Some(ETH0),
            mtu: Some(1450),
            mac: Some(vxlan_mac(ip("192.168.50.1"))),
            up: true,
            addresses: vec![(ip("10.244.0.0"), 32)],
            neighbours: vec![
                (ip("10.244.1.0"), vxlan_mac(b)),
                (ip("10.244.2.0"), vxlan_mac(c)),
            ],
            fdb: vec![(vxlan_mac(b), b), (vxlan_mac(c), c)],
        }
    }

    fn converged_vxlan_state() -> CurrentState {
        CurrentState {
            routes: vec![vxlan_route("10.244.1.0/24"), vxlan_route("10.244.2.0/24")],
            foreign_routes: vec![],
            vxlan: Some(converged_device()),
            underlay: Some(underlay()),
        }
    }

    fn lines(plan: &Plan) -> Vec<String> {
        plan.changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn empty_node_adds_a_direct_route_per_remote_node() {
        let plan = plan(
            &direct(&["node-a", "node-b", "node-c"]),
            &CurrentState::default(),
        )
        .unwrap();
        assert_eq!(
            lines(&plan),
            [
                "add route 10.244.1.0/24 via 192.168.50.2 (node node-b)",
                "add route 10.244.2.0/24 via 192.168.50.3 (node node-c)",
            ]
        );
    }

    #[test]
    fn converged_direct_node_needs_nothing() {
        let current = CurrentState {
            routes: vec![
                direct_route("10.244.1.0/24", "192.168.50.2"),
                direct_route("10.244.2.0/24", "192.168.50.3"),
            ],
            ..CurrentState::default()
        };
        assert!(
            plan(&direct(&["node-a", "node-b", "node-c"]), &current)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn removed_node_loses_exactly_its_route() {
        let current = CurrentState {
            routes: vec![
                direct_route("10.244.1.0/24", "192.168.50.2"),
                direct_route("10.244.2.0/24", "192.168.50.3"),
            ],
            ..CurrentState::default()
        };
        let plan = plan(&direct(&["node-a", "node-b"]), &current).unwrap();
        assert_eq!(
            lines(&plan),
            ["delete route 10.244.2.0/24 via 192.168.50.3 dev eth0 proto 84"]
        );
    }

    #[test]
    fn moved_node_has_its_route_replaced_in_place() {
        let current = CurrentState {
            routes: vec![
                direct_route("10.244.1.0/24", "192.168.50.9"),
                direct_route("10.244.2.0/24", "192.168.50.3"),
            ],
            ..CurrentState::default()
        };
        let plan = plan(&direct(&["node-a", "node-b", "node-c"]), &current).unwrap();
        assert_eq!(
            lines(&plan),
            [
                "replace route 10.244.1.0/24 via 192.168.50.9 dev eth0 proto 84 with \
                 10.244.1.0/24 via 192.168.50.2 (node node-b)"
            ]
        );
    }

    #[test]
    fn extra_metric_routes_of_skiff_are_stale() {
        let mut odd = direct_route("10.244.1.0/24", "192.168.50.2");
        odd.priority = 100;
        let current = CurrentState {
            routes: vec![odd, direct_route("10.244.2.0/24", "192.168.50.3")],
            ..CurrentState::default()
        };
        let plan = plan(&direct(&["node-a", "node-b", "node-c"]), &current).unwrap();
        assert_eq!(
            lines(&plan),
            [
                "add route 10.244.1.0/24 via 192.168.50.2 (node node-b)",
                "delete route 10.244.1.0/24 via 192.168.50.2 dev eth0 metric 100 proto 84",
            ]
        );
    }

    #[test]
    fn foreign_route_to_a_pod_cidr_is_a_conflict_and_left_alone() {
        let current = CurrentState {
            foreign_routes: vec![ForeignRoute {
                destination: net("10.244.1.0/24"),
                protocol: 4,
                gateway: Some(ip("192.168.50.99")),
                interface_name: Some("eth0".into()),
            }],
            ..CurrentState::default()
        };
        let plan = plan(&direct(&["node-a", "node-b", "node-c"]), &current).unwrap();
        assert_eq!(
            lines(&plan),
            ["add route 10.244.2.0/24 via 192.168.50.3 (node node-c)"]
        );
        assert_eq!(plan.conflicts.len(), 1);
        let message = plan.conflicts[0].to_string();
        assert!(
            message.contains("10.244.1.0/24 via 192.168.50.99 dev eth0 proto 4"),
            "{message}"
        );
    }

    #[test]
    fn empty_node_in_vxlan_mode_gets_device_entries_then_routes() {
        let current = CurrentState {
            underlay: Some(underlay()),
            ..CurrentState::default()
        };
        let plan = plan(&vxlan(&["node-a", "node-b", "node-c"]), &current).unwrap();
        assert_eq!(
            lines(&plan),
            [
                "create device skiff.vxlan (VNI 1, port 8472, local 192.168.50.1 on eth0, MTU 1450, \
                 MAC 0e:53:c0:a8:32:01, no learning)",
                "add address 10.244.0.0/32 to skiff.vxlan",
                "set FDB entry 0e:53:c0:a8:32:02 dst 192.168.50.2 dev skiff.vxlan self permanent",
                "set FDB entry 0e:53:c0:a8:32:03 dst 192.168.50.3 dev skiff.vxlan self permanent",
                "set neighbour 10.244.1.0 lladdr 0e:53:c0:a8:32:02 dev skiff.vxlan permanent",
                "set neighbour 10.244.2.0 lladdr 0e:53:c0:a8:32:03 dev skiff.vxlan permanent",
                "add route 10.244.1.0/24 via 10.244.1.0 dev skiff.vxlan onlink (node node-b)",
                "add route 10.244.2.0/24 via 10.244.2.0 dev skiff.vxlan onlink (node node-c)",
            ]
        );
    }

    #[test]
    fn converged_vxlan_node_needs_nothing() {
        let plan = plan(
            &vxlan(&["node-a", "node-b", "node-c"]),
            &converged_vxlan_state(),
        )
        .unwrap();
        assert!(plan.is_empty(), "{:?}", lines(&plan));
    }

    #[test]
    fn removed_node_loses_its_vxlan_route_neighbour_and_fdb_entry() {
        let plan = plan(&vxlan(&["node-a", "node-b"]), &converged_vxlan_state()).unwrap();
        assert_eq!(
            lines(&plan),
            [
                "delete route 10.244.2.0/24 via 10.244.2.0 dev skiff.vxlan onlink proto 84",
                "delete FDB entry 0e:53:c0:a8:32:03 dst 192.168.50.3 dev skiff.vxlan",
                "delete neighbour 10.244.2.0 lladdr 0e:53:c0:a8:32:03 dev skiff.vxlan",
            ]
        );
    }

    #[test]
    fn node_with_new_internal_ip_gets_fresh_fdb_and_neighbour_and_the_old_go() {
        let mut list = nodes(&["node-a", "node-b", "node-c"]);
        list.nodes[2].internal_ip = ip("192.168.50.33");
        let desired = desired_state(&list, "node-a", &vxlan_mode()).unwrap();
        let plan = plan(&desired, &converged_vxlan_state()).unwrap();
        let new = vxlan_mac(ip("192.168.50.33"));
        assert_eq!(
            lines(&plan),
            [
                format!("set FDB entry {new} dst 192.168.50.33 dev skiff.vxlan self permanent"),
                format!("set neighbour 10.244.2.0 lladdr {new} dev skiff.vxlan permanent"),
                "delete FDB entry 0e:53:c0:a8:32:03 dst 192.168.50.3 dev skiff.vxlan".to_owned(),
            ]
        );
    }

    #[test]
    fn fdb_entry_with_a_wrong_destination_is_deleted_before_it_is_set() {
        let mut current = converged_vxlan_state();
        let b = ip("192.168.50.2");
        current.vxlan.as_mut().unwrap().fdb[0] = (vxlan_mac(b), ip("192.168.50.200"));
        let plan = plan(&vxlan(&["node-a", "node-b", "node-c"]), &current).unwrap();
        assert_eq!(
            lines(&plan),
            [
                "delete FDB entry 0e:53:c0:a8:32:02 dst 192.168.50.200 dev skiff.vxlan",
                "set FDB entry 0e:53:c0:a8:32:02 dst 192.168.50.2 dev skiff.vxlan self permanent",
            ]
        );
    }

    #[test]
    fn device_with_other_mtu_mac_or_down_is_updated_in_place() {
        let mut current = converged_vxlan_state();
        let device = current.vxlan.as_mut().unwrap();
        device.mtu = Some(1400);
        device.up = false;
        device.addresses.push((ip("10.244.9.0"), 32));
        let plan = plan(&vxlan(&["node-a", "node-b", "node-c"]), &current).unwrap();
        assert_eq!(
            lines(&plan),
            [
                "set device skiff.vxlan MTU 1450, up",
                "remove address 10.244.9.0/32 from skiff.vxlan",
            ]
        );
    }

    #[test]
    fn device_with_other_vni_is_recreated_and_everything_on_it_added_again() {
        let desired = desired_state(
            &nodes(&["node-a", "node-b"]),
            "node-a",
            &Mode::Vxlan(VxlanSettings {
                vni: 42,
                port: 4789,
            }),
        )
        .unwrap();
        let plan = plan(&desired, &converged_vxlan_state()).unwrap();
        let lines = lines(&plan);
        assert!(
            lines[0].starts_with("recreate device skiff.vxlan (VNI 42, port 4789")
                && lines[0].ends_with("because its VNI is 1, its port is 8472"),
            "{lines:?}"
        );
        // The old routes vanish with the old device: node-c's needs no deletion.
        assert_eq!(
            &lines[1..],
            [
                "add address 10.244.0.0/32 to skiff.vxlan",
                "set FDB entry 0e:53:c0:a8:32:02 dst 192.168.50.2 dev skiff.vxlan self permanent",
                "set neighbour 10.244.1.0 lladdr 0e:53:c0:a8:32:02 dev skiff.vxlan permanent",
                "add route 10.244.1.0/24 via 10.244.1.0 dev skiff.vxlan onlink (node node-b)",
            ]
        );
    }

    #[test]
    fn switching_direct_to_vxlan_replaces_each_direct_route() {
        let current = CurrentState {
            routes: vec![
                direct_route("10.244.1.0/24", "192.168.50.2"),
                direct_route("10.244.2.0/24", "192.168.50.3"),
            ],
            underlay: Some(underlay()),
            ..CurrentState::default()
        };
        let plan = plan(&vxlan(&["node-a", "node-b", "node-c"]), &current).unwrap();
        let lines = lines(&plan);
        assert_eq!(
            &lines[6..],
            [
                "replace route 10.244.1.0/24 via 192.168.50.2 dev eth0 proto 84 with \
                 10.244.1.0/24 via 10.244.1.0 dev skiff.vxlan onlink (node node-b)",
                "replace route 10.244.2.0/24 via 192.168.50.3 dev eth0 proto 84 with \
                 10.244.2.0/24 via 10.244.2.0 dev skiff.vxlan onlink (node node-c)",
            ]
        );
    }

    #[test]
    fn switching_vxlan_to_direct_replaces_routes_then_deletes_the_device() {
        let plan = plan(
            &direct(&["node-a", "node-b", "node-c"]),
            &converged_vxlan_state(),
        )
        .unwrap();
        assert_eq!(
            lines(&plan),
            [
                "replace route 10.244.1.0/24 via 10.244.1.0 dev skiff.vxlan onlink proto 84 with \
                 10.244.1.0/24 via 192.168.50.2 (node node-b)",
                "replace route 10.244.2.0/24 via 10.244.2.0 dev skiff.vxlan onlink proto 84 with \
                 10.244.2.0/24 via 192.168.50.3 (node node-c)",
                "delete device skiff.vxlan (not in vxlan mode), with its neighbours and FDB",
            ]
        );
    }

    #[test]
    fn vxlan_without_underlay_or_with_a_tiny_mtu_cannot_be_planned() {
        let desired = vxlan(&["node-a", "node-b"]);
        assert_eq!(
            plan(&desired, &CurrentState::default()).unwrap_err(),
            PlanError::NoUnderlay {
                address: ip("192.168.50.1")
            }
        );
        let tiny = CurrentState {
            underlay: Some(Underlay {
                mtu: 100,
                ..underlay()
            }),
            ..CurrentState::default()
        };
        assert!(matches!(
            plan(&desired, &tiny),
            Err(PlanError::UnderlayMtuTooSmall { mtu: 100, .. })
        ));
    }
}
