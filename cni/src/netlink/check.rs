//! Verifying a pod's share of the routed network (CHECK).
//!
//! Owns the comparison of what the kernel has with what [`super::setup`] creates, in a fixed
//! order, reporting the first difference as a [`NetlinkError::Mismatch`] that names the object
//! and the namespace. Only reads: never repairs what it finds missing.

use std::net::Ipv4Addr;

use netlink_packet_route::link::InfoKind;

use super::{
    NetlinkError, PodInterface,
    link::Link,
    route::{Route, routes_to},
    runtime::{Connection, PodNetns},
    setup::{default_route, gateway_route, host_route},
    sysctl,
};

/// CHECK: see [`super::check_pod_interface`].
pub(super) async fn check(pod: &PodInterface) -> Result<(), NetlinkError> {
    let netns = PodNetns::open(&pod.netns)?;
    let node = Connection::open_in_node()?;
    let inside = Connection::open_in_pod(&netns)?;

    let host = node
        .find_link(&pod.host_ifname)
        .await?
        .ok_or_else(|| missing_link(&pod.host_ifname, node.place.to_string()))?;
    check_link(&host, pod.mtu, &node.place.to_string())?;
    sysctl::check_host_interface_sysctls(&host.name)?;
    check_route(
        &node.routes().await?,
        &host_route(pod, &host),
        &node.place.to_string(),
    )?;

    let pod_link = inside
        .find_link(&pod.ifname)
        .await?
        .ok_or_else(|| missing_link(&pod.ifname, inside.place.to_string()))?;
    check_link(&pod_link, pod.mtu, &inside.place.to_string())?;
    if host.peer_index != Some(pod_link.index) {
        return Err(mismatch(format!(
            "{} in {} is not the peer of host veth {}",
            pod_link.name, inside.place, host.name
        )));
    }
    check_address(
        &inside.addresses(&pod_link).await?,
        &pod_link,
        pod.address,
        &inside.place.to_string(),
    )?;
    let routes = inside.routes().await?;
    for wanted in [gateway_route(&pod_link), default_route(&pod_link)] {
        check_route(&routes, &wanted, &inside.place.to_string())?;
    }
    Ok(())
}

fn mismatch(what: String) -> NetlinkError {
    NetlinkError::Mismatch { what }
}

fn missing_link(name: &str, place: String) -> NetlinkError {
    mismatch(format!("interface {name} does not exist in {place}"))
}

/// A veth, up, with the wanted MTU.
fn check_link(link: &Link, mtu: u32, place: &str) -> Result<(), NetlinkError> {
    let name = &link.name;
    if link.kind != Some(InfoKind::Veth) {
        let kind = link
            .kind
            .as_ref()
            .map_or_else(|| "of no kind".to_owned(), |kind| format!("a {kind}"));
        return Err(mismatch(format!(
            "interface {name} in {place} is {kind}, not a veth"
        )));
    }
    if !link.up {
        return Err(mismatch(format!("interface {name} in {place} is down")));
    }
    if link.mtu != Some(mtu) {
        let found = link
            .mtu
            .map_or_else(|| "none".to_owned(), |mtu| mtu.to_string());
        return Err(mismatch(format!(
            "interface {name} in {place} has MTU {found} instead of {mtu}"
        )));
    }
    Ok(())
}

fn check_address(
    addresses: &[(Ipv4Addr, u8)],
    link: &Link,
    address: Ipv4Addr,
    place: &str,
) -> Result<(), NetlinkError> {
    if addresses.contains(&(address, 32)) {
        return Ok(());
    }
    let found: Vec<String> = addresses
        .iter()
        .map(|(address, prefix_length)| format!("{address}/{prefix_length}"))
        .collect();
    Err(mismatch(format!(
        "interface {} in {place} lacks address {address}/32 (it has [{}])",
        link.name,
        found.join(", ")
    )))
}

fn check_route(routes: &[Route], wanted: &Route, place: &str) -> Result<(), NetlinkError> {
    if routes.iter().any(|route| route.serves(wanted)) {
        return Ok(());
    }
    let instead: Vec<String> = routes_to(routes, wanted)
        .iter()
        .map(ToString::to_string)
        .collect();
    let instead = if instead.is_empty() {
        "no route to that destination".to_owned()
    } else {
        format!("instead: {}", instead.join("; "))
    };
    Err(mismatch(format!(
        "route {wanted} is missing in {place} ({instead})"
    )))
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::route::{RouteHeader, RouteProtocol, RouteScope};

    use super::*;

    fn veth(name: &str) -> Link {
        Link {
            index: 4,
            name: name.to_owned(),
            mac: Some("aa:bb:cc:dd:ee:ff".to_owned()),
            mtu: Some(1500),
            up: true,
            kind: Some(InfoKind::Veth),
            peer_index: Some(9),
        }
    }

    fn what(error: NetlinkError) -> String {
        match error {
            NetlinkError::Mismatch { what } => what,
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn link_checks_name_kind_state_and_mtu() {
        assert!(check_link(&veth("eth0"), 1500, "here").is_ok());
        let down = Link {
            up: false,
            ..veth("eth0")
        };
        assert_eq!(
            what(check_link(&down, 1500, "here").unwrap_err()),
            "interface eth0 in here is down"
        );
        assert_eq!(
            what(check_link(&veth("eth0"), 1400, "here").unwrap_err()),
            "interface eth0 in here has MTU 1500 instead of 1400"
        );
        let dummy = Link {
            kind: Some(InfoKind::Dummy),
            ..veth("eth0")
        };
        assert_eq!(
            what(check_link(&dummy, 1500, "here").unwrap_err()),
            "interface eth0 in here is a dummy, not a veth"
        );
    }

    #[test]
    fn address_check_lists_what_the_interface_has() {
        let link = veth("eth0");
        let wanted = Ipv4Addr::new(10, 244, 1, 5);
        assert!(check_address(&[(wanted, 32)], &link, wanted, "pod").is_ok());
        assert_eq!(
            what(check_address(&[(wanted, 24)], &link, wanted, "pod").unwrap_err()),
            "interface eth0 in pod lacks address 10.244.1.5/32 (it has [10.244.1.5/24])"
        );
    }

    #[test]
    fn route_check_names_the_missing_route_and_what_is_there_instead() {
        let wanted = Route {
            destination: Ipv4Addr::new(10, 244, 1, 5),
            prefix_length: 32,
            gateway: None,
            device: (4, "skf0123456789ab".to_owned()),
            scope: RouteScope::Link,
            protocol: RouteProtocol::Other(83),
            table: u32::from(RouteHeader::RT_TABLE_MAIN),
        };
        assert_eq!(
            what(check_route(&[], &wanted, "node").unwrap_err()),
            "route 10.244.1.5/32 dev skf0123456789ab scope link proto 83 is missing in node \
             (no route to that destination)"
        );
        let elsewhere = Route {
            device: (5, "other0".to_owned()),
            protocol: RouteProtocol::Static,
            ..wanted.clone()
        };
        assert_eq!(
            what(check_route(&[elsewhere], &wanted, "node").unwrap_err()),
            "route 10.244.1.5/32 dev skf0123456789ab scope link proto 83 is missing in node \
             (instead: 10.244.1.5/32 dev other0 scope link)"
        );
        assert!(check_route(std::slice::from_ref(&wanted), &wanted, "node").is_ok());
    }
}
