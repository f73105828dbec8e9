//! Building and removing a pod's share of the routed network (ADD and DEL).
//!
//! Owns the order of the steps and the cleanup when one fails: after the veth exists, any
//! failure deletes it again (with its peer and the host route), so a failed ADD leaves nothing.
//! Also owns the routes a pod needs ([`host_route`], [`gateway_route`], [`default_route`]), which
//! CHECK compares against. Never touches an interface it did not name: on the node only
//! `host_ifname`, in the pod only the temporary name and `ifname`.

use std::net::Ipv4Addr;

use netlink_packet_route::route::{RouteHeader, RouteProtocol, RouteScope};
use tracing::{debug, warn};

use super::{
    GATEWAY, NetlinkError, PodInterface, PodInterfaceCreated, ROUTE_PROTOCOL,
    link::Link,
    name::temporary_pod_name,
    route::Route,
    runtime::{Connection, PodNetns, is_errno},
    sysctl,
};

/// On the node: `<pod address>/32 dev <host veth> scope link proto 83`.
pub(super) fn host_route(pod: &PodInterface, host: &Link) -> Route {
    Route {
        destination: pod.address,
        prefix_length: 32,
        gateway: None,
        device: (host.index, host.name.clone()),
        scope: RouteScope::Link,
        protocol: RouteProtocol::Other(ROUTE_PROTOCOL),
        table: u32::from(RouteHeader::RT_TABLE_MAIN),
    }
}

/// In the pod: `169.254.1.1 dev <ifname> scope link proto 83`, which makes the gateway
/// reachable although no subnet covers it.
pub(super) fn gateway_route(pod_link: &Link) -> Route {
    Route {
        destination: GATEWAY,
        prefix_length: 32,
        gateway: None,
        device: (pod_link.index, pod_link.name.clone()),
        scope: RouteScope::Link,
        protocol: RouteProtocol::Other(ROUTE_PROTOCOL),
        table: u32::from(RouteHeader::RT_TABLE_MAIN),
    }
}

/// In the pod: `default via 169.254.1.1 dev <ifname> proto 83`.
pub(super) fn default_route(pod_link: &Link) -> Route {
    Route {
        destination: Ipv4Addr::UNSPECIFIED,
        prefix_length: 0,
        gateway: Some(GATEWAY),
        device: (pod_link.index, pod_link.name.clone()),
        scope: RouteScope::Universe,
        protocol: RouteProtocol::Other(ROUTE_PROTOCOL),
        table: u32::from(RouteHeader::RT_TABLE_MAIN),
    }
}

/// ADD: see [`super::add_pod_interface`].
pub(super) async fn add(pod: &PodInterface) -> Result<PodInterfaceCreated, NetlinkError> {
    let netns = PodNetns::open(&pod.netns)?;
    let node = Connection::open_in_node()?;
    let inside = Connection::open_in_pod(&netns)?;
    let temporary = temporary_pod_name(&pod.host_ifname);

    // Leftovers of an earlier ADD for this attachment that was killed: its host veth (deleting
    // it removes the peer, under whatever name, and the host route) and a stray temporary name.
    if node.delete_link_named(&pod.host_ifname).await? {
        debug!("deleted the host veth left by an earlier ADD");
    }
    if inside.delete_link_named(&temporary).await? {
        debug!(%temporary, "deleted a pod-side veth left under its temporary name");
    }
    if inside.find_link(&pod.ifname).await?.is_some() {
        return Err(interface_exists(pod));
    }

    node.create_veth(&pod.host_ifname, &temporary, &netns.file, pod.mtu)
        .await?;
    debug!(%temporary, mtu = pod.mtu, "created the veth pair");
    match configure(&node, &inside, pod, &temporary).await {
        Ok(created) => Ok(created),
        Err(error) => {
            match node.delete_link_named(&pod.host_ifname).await {
                Ok(_) => debug!(%error, "removed the veth of the failed ADD"),
                Err(cleanup) => warn!(
                    %error, %cleanup,
                    "could not remove the veth of the failed ADD; DEL or GC will"
                ),
            }
            Err(error)
        }
    }
}

/// Everything after the veth exists. The node side is finished first, so the pod's first ARP
/// request for the gateway already finds proxy ARP on.
async fn configure(
    node: &Connection,
    inside: &Connection,
    pod: &PodInterface,
    temporary: &str,
) -> Result<PodInterfaceCreated, NetlinkError> {
    let host = node
        .find_link(&pod.host_ifname)
        .await?
        .ok_or_else(|| vanished(&pod.host_ifname, node))?;
    let created = inside
        .find_link(temporary)
        .await?
        .ok_or_else(|| vanished(temporary, inside))?;

    sysctl::write_host_interface_sysctls(&host.name)?;
    node.set_up(&host).await?;
    node.replace_route(&host_route(pod, &host)).await?;
    debug!("node side ready");

    inside
        .rename_link(&created, &pod.ifname)
        .await
        .map_err(|source| {
            if is_errno(&source, libc::EEXIST) {
                // Someone created `ifname` after the check above.
                interface_exists(pod)
            } else {
                NetlinkError::Netlink {
                    operation: format!("rename {temporary} to {} in {}", pod.ifname, inside.place),
                    source,
                }
            }
        })?;
    let pod_link = Link {
        name: pod.ifname.clone(),
        ..created
    };
    inside.add_address(&pod_link, pod.address, 32).await?;
    inside.set_up(&pod_link).await?;
    inside.replace_route(&gateway_route(&pod_link)).await?;
    inside.replace_route(&default_route(&pod_link)).await?;
    debug!("pod side ready");

    Ok(PodInterfaceCreated {
        host_mac: host.mac.unwrap_or_default(),
        pod_mac: pod_link.mac.unwrap_or_default(),
        pod_ifindex: pod_link.index,
    })
}

/// DEL: see [`super::delete_pod_interface`].
pub(super) async fn delete(host_ifname: &str) -> Result<bool, NetlinkError> {
    let node = Connection::open_in_node()?;
    node.delete_link_named(host_ifname).await
}

/// See [`super::host_interfaces`].
pub(super) async fn host_interfaces() -> Result<Vec<String>, NetlinkError> {
    let node = Connection::open_in_node()?;
    Ok(node
        .links()
        .await?
        .into_iter()
        .filter(|link| super::name::is_host_interface_name(&link.name))
        .filter(|link| link.kind == Some(netlink_packet_route::link::InfoKind::Veth))
        .map(|link| link.name)
        .collect())
}

fn interface_exists(pod: &PodInterface) -> NetlinkError {
    NetlinkError::InterfaceExists {
        ifname: pod.ifname.clone(),
        netns: pod.netns.clone(),
    }
}

fn vanished(ifname: &str, connection: &Connection) -> NetlinkError {
    NetlinkError::Vanished {
        ifname: ifname.to_owned(),
        place: connection.place.to_string(),
    }
}
