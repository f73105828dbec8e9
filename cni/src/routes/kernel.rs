//! The netlink adapter: reads the node's routes, VXLAN device, neighbours and FDB into a
//! [`CurrentState`], and applies a [`Plan`].
//!
//! Owns every rtnetlink request of the cross-node routes, in the network namespace of the thread
//! that called [`Kernel::connect`]. Reading touches nothing. Applying only performs the plan's
//! changes, which concern Skiff's routes (protocol [`ROUTE_PROTOCOL`], main table) and the
//! [`VXLAN_DEVICE`]; route deletions carry the protocol, so the kernel itself refuses to delete
//! another owner's route. Creates are idempotent: an address that exists is fine, neighbours and
//! FDB entries are written with `NLM_F_REPLACE`, and a route or device that appeared since the
//! observation (`EEXIST`) makes [`ApplyOutcome::observe_again`] ask the caller to observe, verify
//! and plan again. Deleting what is already gone succeeds. It never runs `ip`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
        RouteScope,
    },
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::ipam::network::Ipv4Network;

use super::RoutesError;
use super::desired::{DesiredRoute, MacAddress, NextHop, ROUTE_PROTOCOL, VXLAN_DEVICE};
use super::diff::{
    Change, CurrentState, ForeignRoute, InstalledRoute, InstalledVxlan, Plan, Underlay,
    VxlanDeviceSpec,
};

/// A netlink connection to one network namespace.
#[derive(Debug, Clone)]
pub struct Kernel {
    handle: Handle,
}

/// What [`Kernel::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyOutcome {
    /// Changes made, in order.
    pub applied: Vec<Change>,
    /// Changes that failed, each with the reason.
    pub failures: Vec<String>,
    /// A create met an object that appeared since the observation; the rest of the plan was
    /// not applied. Observe and plan again.
    pub observe_again: bool,
}

impl Kernel {
    /// Opens a netlink socket in the calling thread's network namespace and spawns its
    /// connection on the current tokio runtime (so it must be called inside one).
    pub fn connect() -> Result<Kernel, RoutesError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| RoutesError::Setup {
                action: "opening a netlink socket",
                source,
            })?;
        tokio::spawn(connection);
        Ok(Kernel { handle })
    }

    /// Reads Skiff's routes, the metric-0 main-table routes of others, the VXLAN device with its
    /// addresses, neighbours and FDB, and (if `underlay_address` is given, i.e. in `vxlan` mode)
    /// the interface that holds that address. A link named [`VXLAN_DEVICE`] that is not a VXLAN
    /// device is an error in `vxlan` mode and ignored otherwise.
    pub async fn observe(
        &self,
        underlay_address: Option<Ipv4Addr>,
    ) -> Result<CurrentState, RoutesError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("listing links"))?;
        let names: BTreeMap<u32, String> = links
            .iter()
            .filter_map(|link| Some((link.header.index, link_name(link)?.to_owned())))
            .collect();

        let mut state = CurrentState::default();
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(netlink("listing IPv4 routes"))?;
        for message in &routes {
            classify_route(message, &names, &mut state);
        }

        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("listing addresses"))?;

        let vxlan_link = links
            .iter()
            .find(|link| link_name(link) == Some(VXLAN_DEVICE));
        let vxlan = match vxlan_link.map(read_vxlan) {
            None => None,
            Some(Ok(device)) => Some(device),
            // Someone else's link of that name: an error when the device is wanted; otherwise
            // it is none of Skiff's business and stays.
            Some(Err(error)) if underlay_address.is_some() => return Err(error),
            Some(Err(_)) => None,
        };
        if let Some(mut device) = vxlan {
            device.addresses = addresses
                .iter()
                .filter(|address| address.header.index == device.index)
                .filter_map(ipv4_address)
                .collect();
            let neighbours: Vec<NeighbourMessage> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Inet)
                .execute()
                .try_collect()
                .await
                .map_err(netlink("listing IPv4 neighbours"))?;
            device.neighbours = neighbours
                .iter()
                .filter(|entry| {
                    entry.header.ifindex == device.index
                        && entry.header.state == NeighbourState::Permanent
                })
                .filter_map(|entry| Some((neighbour_ipv4(entry)?, neighbour_mac(entry)?)))
                .collect();
            let fdb: Vec<NeighbourMessage> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Bridge)
                .execute()
                .try_collect()
                .await
                .map_err(netlink("listing FDB entries"))?;
            device.fdb = fdb
                .iter()
                .filter(|entry| entry.header.ifindex == device.index)
                .filter_map(|entry| Some((neighbour_mac(entry)?, fdb_ipv4(entry)?)))
                .filter(|(mac, _)| mac.0 != [0; 6] && mac.0[0] & 1 == 0)
                .collect();
            state.vxlan = Some(device);
        }

        if let Some(wanted) = underlay_address {
            state.underlay = addresses
                .iter()
                .find(|address| ipv4_address(address).map(|(ip, _)| ip) == Some(wanted))
                .and_then(|address| {
                    let link = links
                        .iter()
                        .find(|link| link.header.index == address.header.index)?;
                    Some(Underlay {
                        index: link.header.index,
                        name: link_name(link).unwrap_or("?").to_owned(),
                        mtu: link
                            .attributes
                            .iter()
                            .find_map(|attribute| match attribute {
                                LinkAttribute::Mtu(mtu) => Some(*mtu),
                                _ => None,
                            })?,
                    })
                });
        }
        Ok(state)
    }

    /// Applies `plan` in order. `vxlan_index` is the index of the VXLAN device as observed.
    /// A failed change is recorded and the next one attempted, except that changes on the
    /// device are skipped when the device could not be created.
    pub async fn apply(&self, plan: &Plan, vxlan_index: Option<u32>) -> ApplyOutcome {
        let mut outcome = ApplyOutcome::default();
        let mut vxlan_index = vxlan_index;
        for change in &plan.changes {
            let result = match change {
                Change::CreateDevice(spec) => self.create_device(spec, &mut vxlan_index).await,
                Change::RecreateDevice { index, spec, .. } => {
                    match self.handle.link().del(*index).execute().await {
                        Ok(()) => self.create_device(spec, &mut vxlan_index).await,
                        Err(error) if is(&error, libc::ENODEV) => {
                            self.create_device(spec, &mut vxlan_index).await
                        }
                        Err(error) => {
                            // Nothing may go onto the old, incompatible device.
                            vxlan_index = None;
                            Err(Failure::Other(error.to_string()))
                        }
                    }
                }
                Change::DeleteDevice { index } => {
                    vxlan_index = None;
                    ignore_missing(self.handle.link().del(*index).execute().await)
                }
                other => match (needs_device(other), vxlan_index) {
                    (true, None) => Err(Failure::Other(format!(
                        "skipped: the device {VXLAN_DEVICE} does not exist"
                    ))),
                    (_, index) => self.apply_entry(other, index.unwrap_or(0)).await,
                },
            };
            match result {
                Ok(true) => outcome.applied.push(change.clone()),
                Ok(false) => {}
                Err(Failure::Exists) => {
                    outcome.observe_again = true;
                    return outcome;
                }
                Err(Failure::Other(reason)) => {
                    outcome.failures.push(format!("{change}: {reason}"));
                }
            }
        }
        outcome
    }

    /// Creates the device and records its new index.
    async fn create_device(
        &self,
        spec: &VxlanDeviceSpec,
        vxlan_index: &mut Option<u32>,
    ) -> Result<bool, Failure> {
        *vxlan_index = None;
        let message = LinkVxlan::new(VXLAN_DEVICE, spec.settings.vni)
            .dev(spec.underlay_index)
            .port(spec.settings.port)
            .local(spec.local)
            .learning(false)
            .mtu(spec.mtu)
            .address(spec.mac.0.to_vec())
            .up()
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(creation_failure)?;
        let mut links = self.handle.link().get().match_name(VXLAN_DEVICE).execute();
        match links.try_next().await {
            Ok(Some(link)) => {
                *vxlan_index = Some(link.header.index);
                Ok(true)
            }
            Ok(None) => Err(Failure::Other("created, but then not found".to_owned())),
            Err(error) => Err(Failure::Other(format!(
                "created, but then not found: {error}"
            ))),
        }
    }

    /// Applies a change that is not a device creation or deletion.
    async fn apply_entry(&self, change: &Change, vxlan_index: u32) -> Result<bool, Failure> {
        let handle = &self.handle;
        match change {
            Change::UpdateDevice {
                index,
                mtu,
                mac,
                up,
            } => {
                let mut message = LinkUnspec::new_with_index(*index);
                if let Some(mtu) = mtu {
                    message = message.mtu(*mtu);
                }
                if let Some(mac) = mac {
                    message = message.address(mac.0.to_vec());
                }
                if *up {
                    message = message.up();
                }
                handle
                    .link()
                    .set(message.build())
                    .execute()
                    .await
                    .map(|()| true)
                    .map_err(other)
            }
            Change::AddDeviceAddress(address) => {
                match handle
                    .address()
                    .add(vxlan_index, IpAddr::V4(*address), 32)
                    .execute()
                    .await
                {
                    Ok(()) => Ok(true),
                    Err(error) if is(&error, libc::EEXIST) => Ok(false),
                    Err(error) => Err(other(error)),
                }
            }
            Change::RemoveDeviceAddress {
                address,
                prefix_length,
            } => {
                let mut message = AddressMessage::default();
                message.header.family = AddressFamily::Inet;
                message.header.prefix_len = *prefix_length;
                message.header.index = vxlan_index;
                message
                    .attributes
                    .push(AddressAttribute::Local(IpAddr::V4(*address)));
                message
                    .attributes
                    .push(AddressAttribute::Address(IpAddr::V4(*address)));
                ignore_missing(handle.address().del(message).execute().await)
            }
            Change::ReplaceNeighbour { address, mac } => handle
                .neighbours()
                .add(vxlan_index, IpAddr::V4(*address))
                .link_layer_address(&mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map(|()| true)
                .map_err(other),
            Change::DeleteNeighbour { address, .. } => {
                let mut message = NeighbourMessage::default();
                message.header.family = AddressFamily::Inet;
                message.header.ifindex = vxlan_index;
                message
                    .attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                        *address,
                    )));
                ignore_missing(handle.neighbours().del(message).execute().await)
            }
            Change::ReplaceFdb { mac, destination } => handle
                .neighbours()
                .add_bridge(vxlan_index, &mac.0)
                .destination(IpAddr::V4(*destination))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map(|()| true)
                .map_err(other),
            Change::DeleteFdb { mac, destination } => {
                let mut message = NeighbourMessage::default();
                message.header.family = AddressFamily::Bridge;
                message.header.ifindex = vxlan_index;
                message.header.flags = NeighbourFlags::Own;
                message.header.state = NeighbourState::Permanent;
                message
                    .attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
                message
                    .attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                        *destination,
                    )));
                ignore_missing(handle.neighbours().del(message).execute().await)
            }
            Change::AddRoute(route) => handle
                .route()
                .add(route_message(route, vxlan_index))
                .execute()
                .await
                .map(|()| true)
                .map_err(|error| route_failure(route, error)),
            Change::ReplaceRoute { route, .. } => handle
                .route()
                .add(route_message(route, vxlan_index))
                .replace()
                .execute()
                .await
                .map(|()| true)
                .map_err(|error| route_failure(route, error)),
            Change::DeleteRoute(route) => {
                ignore_missing(handle.route().del(delete_message(route)).execute().await)
            }
            Change::CreateDevice(_)
            | Change::RecreateDevice { .. }
            | Change::DeleteDevice { .. } => Err(Failure::Other("not an entry change".to_owned())),
        }
    }
}

/// Why a change failed.
enum Failure {
    /// The object appeared since the observation.
    Exists,
    /// Anything else, said for the log.
    Other(String),
}

fn other(error: rtnetlink::Error) -> Failure {
    Failure::Other(error.to_string())
}

fn creation_failure(error: rtnetlink::Error) -> Failure {
    if is(&error, libc::EEXIST) {
        Failure::Exists
    } else {
        other(error)
    }
}

fn route_failure(route: &DesiredRoute, error: rtnetlink::Error) -> Failure {
    if is(&error, libc::EEXIST) {
        return Failure::Exists;
    }
    let unreachable = is(&error, libc::ENETUNREACH) || is(&error, libc::EINVAL);
    match route.next_hop {
        NextHop::Gateway(gateway) if unreachable => Failure::Other(format!(
            "{error}: node {}'s InternalIP {gateway} is not on a subnet this node is directly \
             connected to; direct mode needs the nodes on one L2 segment (use --mode vxlan)",
            route.node
        )),
        _ => other(error),
    }
}

/// Deleting what is already gone is success (but not a change).
fn ignore_missing(result: Result<(), rtnetlink::Error>) -> Result<bool, Failure> {
    match result {
        Ok(()) => Ok(true),
        Err(error)
            if is(&error, libc::ENOENT)
                || is(&error, libc::ESRCH)
                || is(&error, libc::ENODEV)
                || is(&error, libc::EADDRNOTAVAIL) =>
        {
            Ok(false)
        }
        Err(error) => Err(other(error)),
    }
}

fn needs_device(change: &Change) -> bool {
    match change {
        Change::AddRoute(route) | Change::ReplaceRoute { route, .. } => {
            matches!(route.next_hop, NextHop::Vxlan(_))
        }
        Change::DeleteRoute(_) => false,
        _ => true,
    }
}

/// Whether `error` is the netlink error `errno`.
fn is(error: &rtnetlink::Error, errno: i32) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(message) if message.raw_code() == -errno)
}

fn netlink(action: &str) -> impl FnOnce(rtnetlink::Error) -> RoutesError + '_ {
    move |source| RoutesError::Netlink {
        action: action.to_owned(),
        source,
    }
}

fn protocol() -> RouteProtocol {
    RouteProtocol::from(ROUTE_PROTOCOL)
}

fn route_message(route: &DesiredRoute, vxlan_index: u32) -> RouteMessage {
    let builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(
            route.destination.address(),
            route.destination.prefix_length(),
        )
        .protocol(protocol());
    match route.next_hop {
        NextHop::Gateway(gateway) => builder.gateway(gateway).build(),
        NextHop::Vxlan(gateway) => builder
            .gateway(gateway)
            .output_interface(vxlan_index)
            .onlink()
            .build(),
    }
}

/// A deletion that matches exactly this route of Skiff's: the kernel compares the protocol,
/// gateway, interface and metric given here, so it cannot hit another owner's route.
fn delete_message(route: &InstalledRoute) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(
            route.destination.address(),
            route.destination.prefix_length(),
        )
        .protocol(protocol())
        .scope(RouteScope::NoWhere);
    if let Some(gateway) = route.gateway {
        builder = builder.gateway(gateway);
    }
    if let Some(index) = route.interface {
        builder = builder.output_interface(index);
    }
    if route.priority != 0 {
        builder = builder.priority(route.priority);
    }
    builder.build()
}

/// Files a main-table IPv4 route as Skiff's, as a foreign blocker, or ignores it.
fn classify_route(message: &RouteMessage, names: &BTreeMap<u32, String>, state: &mut CurrentState) {
    let header = &message.header;
    if header.address_family != AddressFamily::Inet {
        return;
    }
    let table = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return;
    }
    let address = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(address)) => Some(*address),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let Ok(destination) = Ipv4Network::new(address, header.destination_prefix_length) else {
        return;
    };
    let gateway = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Gateway(RouteAddress::Inet(gateway)) => Some(*gateway),
            _ => None,
        });
    let interface = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Oif(index) => Some(*index),
            _ => None,
        });
    let priority = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Priority(priority) => Some(*priority),
            _ => None,
        })
        .unwrap_or(0);
    let interface_name = interface.and_then(|index| names.get(&index).cloned());
    let protocol = u8::from(header.protocol);
    if protocol == ROUTE_PROTOCOL {
        state.routes.push(InstalledRoute {
            destination,
            gateway,
            interface,
            interface_name,
            onlink: header.flags.contains(RouteFlags::Onlink),
            priority,
        });
    } else if priority == 0 && header.tos == 0 && header.source_prefix_length == 0 {
        state.foreign_routes.push(ForeignRoute {
            destination,
            protocol,
            gateway,
            interface_name,
        });
    }
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::IfName(name) => Some(name.as_str()),
            _ => None,
        })
}

/// The device's settings, or an error if the link of that name is not a VXLAN device.
fn read_vxlan(link: &LinkMessage) -> Result<InstalledVxlan, RoutesError> {
    let infos: &[LinkInfo] = link
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::LinkInfo(infos) => Some(infos.as_slice()),
            _ => None,
        })
        .unwrap_or(&[]);
    let kind = infos.iter().find_map(|info| match info {
        LinkInfo::Kind(kind) => Some(kind),
        _ => None,
    });
    if kind != Some(&InfoKind::Vxlan) {
        return Err(RoutesError::ForeignDevice {
            kind: kind.map_or_else(|| "kind-less".to_owned(), ToString::to_string),
        });
    }
    let mut device = InstalledVxlan {
        index: link.header.index,
        up: link.header.flags.contains(LinkFlags::Up),
        ..InstalledVxlan::default()
    };
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::Mtu(mtu) => device.mtu = Some(*mtu),
            LinkAttribute::Address(bytes) => device.mac = mac(bytes),
            _ => {}
        }
    }
    let data = infos.iter().find_map(|info| match info {
        LinkInfo::Data(InfoData::Vxlan(data)) => Some(data.as_slice()),
        _ => None,
    });
    for item in data.unwrap_or(&[]) {
        match item {
            InfoVxlan::Id(vni) => device.vni = Some(*vni),
            InfoVxlan::Port(port) => device.port = Some(*port),
            InfoVxlan::Local(local) => device.local = Some(*local),
            InfoVxlan::Learning(learning) => device.learning = Some(*learning),
            InfoVxlan::Link(index) => device.underlay_index = Some(*index),
            _ => {}
        }
    }
    Ok(device)
}

fn ipv4_address(message: &AddressMessage) -> Option<(Ipv4Addr, u8)> {
    let local = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            AddressAttribute::Local(IpAddr::V4(address)) => Some(*address),
            _ => None,
        });
    let address = local.or_else(|| {
        message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Address(IpAddr::V4(address)) => Some(*address),
                _ => None,
            })
    })?;
    Some((address, message.header.prefix_len))
}

fn neighbour_ipv4(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(address)) => Some(*address),
            _ => None,
        })
}

/// The IPv4 destination of an FDB entry: for `AF_BRIDGE` messages the attribute is not decoded
/// as an address, so a 4-byte raw value is one.
fn fdb_ipv4(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(address)) => Some(*address),
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                <[u8; 4]>::try_from(bytes.as_slice())
                    .ok()
                    .map(Ipv4Addr::from)
            }
            _ => None,
        })
}

fn neighbour_mac(message: &NeighbourMessage) -> Option<MacAddress> {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::LinkLayerAddress(bytes) => mac(bytes),
            _ => None,
        })
}

fn mac(bytes: &[u8]) -> Option<MacAddress> {
    <[u8; 6]>::try_from(bytes).ok().map(MacAddress)
}
