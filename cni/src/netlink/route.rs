//! IPv4 routes: the host route to a pod and the pod's routes to and via the gateway.
//!
//! Owns the translation between Skiff's view of a route ([`Route`]) and rtnetlink messages, how
//! routes are compared, and how they are written (create or replace, so running twice changes
//! nothing). Decides nothing about which routes a pod needs: that is [`super::setup`].

use std::{collections::HashMap, fmt, net::Ipv4Addr};

use futures_util::TryStreamExt as _;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::RouteMessageBuilder;

use super::{NetlinkError, link::Link, runtime::Connection};

/// An IPv4 route in the main table, as Skiff writes it or as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Route {
    pub(super) destination: Ipv4Addr,
    pub(super) prefix_length: u8,
    pub(super) gateway: Option<Ipv4Addr>,
    /// Output interface index, and its name (for messages; not compared).
    pub(super) device: (u32, String),
    pub(super) scope: RouteScope,
    pub(super) protocol: RouteProtocol,
    pub(super) table: u32,
}

impl Route {
    /// The rtnetlink message that creates this route.
    pub(super) fn to_message(&self) -> RouteMessage {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(self.destination, self.prefix_length)
            .output_interface(self.device.0)
            .scope(self.scope)
            .protocol(self.protocol);
        if let Some(gateway) = self.gateway {
            builder = builder.gateway(gateway);
        }
        builder.build()
    }

    /// The route a kernel message describes, or `None` when it is not IPv4.
    pub(super) fn from_message(message: &RouteMessage) -> Option<Route> {
        if message.header.address_family != netlink_packet_route::AddressFamily::Inet {
            return None;
        }
        let mut route = Route {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_length: message.header.destination_prefix_length,
            gateway: None,
            device: (0, String::new()),
            scope: message.header.scope,
            protocol: message.header.protocol,
            table: u32::from(message.header.table),
        };
        for attribute in &message.attributes {
            match attribute {
                RouteAttribute::Destination(RouteAddress::Inet(address)) => {
                    route.destination = *address;
                }
                RouteAttribute::Gateway(RouteAddress::Inet(address)) => {
                    route.gateway = Some(*address);
                }
                RouteAttribute::Oif(index) => route.device.0 = *index,
                RouteAttribute::Table(table) => route.table = *table,
                _ => {}
            }
        }
        Some(route)
    }

    /// Whether `self` (found in the kernel) routes what `wanted` routes: same destination, table,
    /// gateway and output interface. Scope and protocol may differ (CHECK lets later plugins
    /// adjust routes).
    pub(super) fn serves(&self, wanted: &Route) -> bool {
        self.destination == wanted.destination
            && self.prefix_length == wanted.prefix_length
            && self.table == wanted.table
            && self.gateway == wanted.gateway
            && self.device.0 == wanted.device.0
    }

    fn same_destination(&self, other: &Route) -> bool {
        self.destination == other.destination
            && self.prefix_length == other.prefix_length
            && self.table == other.table
    }
}

impl fmt::Display for Route {
    /// `ip route` syntax: `10.244.1.5/32 dev skf0123 scope link proto 83`,
    /// `default via 169.254.1.1 dev eth0`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix_length == 0 && self.destination.is_unspecified() {
            formatter.write_str("default")?;
        } else {
            write!(formatter, "{}/{}", self.destination, self.prefix_length)?;
        }
        if let Some(gateway) = self.gateway {
            write!(formatter, " via {gateway}")?;
        }
        if self.device.1.is_empty() {
            write!(formatter, " dev #{}", self.device.0)?;
        } else {
            write!(formatter, " dev {}", self.device.1)?;
        }
        if self.scope == RouteScope::Link {
            formatter.write_str(" scope link")?;
        }
        if let RouteProtocol::Other(number) = self.protocol {
            write!(formatter, " proto {number}")?;
        }
        if self.table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            write!(formatter, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// The routes in `routes` that go to `wanted`'s destination, for "found instead" messages.
pub(super) fn routes_to<'a>(routes: &'a [Route], wanted: &Route) -> Vec<&'a Route> {
    routes
        .iter()
        .filter(|route| route.same_destination(wanted))
        .collect()
}

impl Connection {
    /// Creates `route`, or replaces the route to the same destination (same table, no metric)
    /// when one exists: what Skiff wants wins, and running twice changes nothing.
    pub(super) async fn replace_route(&self, route: &Route) -> Result<(), NetlinkError> {
        self.handle
            .route()
            .add(route.to_message())
            .replace()
            .execute()
            .await
            .map_err(self.failed(format_args!("add route {route}")))
    }

    /// Every IPv4 route of every table, with the names of their output interfaces.
    pub(super) async fn routes(&self) -> Result<Vec<Route>, NetlinkError> {
        let messages: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(self.failed("list the IPv4 routes"))?;
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(self.failed("list the interfaces"))?;
        let names: HashMap<u32, String> = links
            .iter()
            .map(Link::from_message)
            .map(|link| (link.index, link.name))
            .collect();
        Ok(messages
            .iter()
            .filter_map(Route::from_message)
            .map(|mut route| {
                if let Some(name) = names.get(&route.device.0) {
                    route.device.1.clone_from(name);
                }
                route
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_route() -> Route {
        Route {
            destination: Ipv4Addr::new(10, 244, 1, 5),
            prefix_length: 32,
            gateway: None,
            device: (7, "skf0123456789ab".to_owned()),
            scope: RouteScope::Link,
            protocol: RouteProtocol::Other(83),
            table: u32::from(RouteHeader::RT_TABLE_MAIN),
        }
    }

    #[test]
    fn route_survives_a_round_trip_through_its_netlink_message() {
        let route = pod_route();
        let parsed = Route::from_message(&route.to_message()).expect("an IPv4 route");
        // The name is not part of the message.
        assert_eq!(
            parsed,
            Route {
                device: (7, String::new()),
                ..route.clone()
            }
        );
        assert!(parsed.serves(&route));
    }

    #[test]
    fn default_route_has_no_destination_attribute_and_reads_as_default() {
        let default = Route {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_length: 0,
            gateway: Some(Ipv4Addr::new(169, 254, 1, 1)),
            device: (3, "eth0".to_owned()),
            scope: RouteScope::Universe,
            protocol: RouteProtocol::Other(83),
            table: u32::from(RouteHeader::RT_TABLE_MAIN),
        };
        let message = default.to_message();
        let parsed = Route::from_message(&message).expect("an IPv4 route");
        assert_eq!(parsed.destination, Ipv4Addr::UNSPECIFIED);
        assert_eq!(parsed.gateway, default.gateway);
        assert_eq!(
            default.to_string(),
            "default via 169.254.1.1 dev eth0 proto 83"
        );
    }

    #[test]
    fn route_prints_like_ip_route() {
        assert_eq!(
            pod_route().to_string(),
            "10.244.1.5/32 dev skf0123456789ab scope link proto 83"
        );
    }

    #[test]
    fn a_route_through_another_device_does_not_serve() {
        let wanted = pod_route();
        let elsewhere = Route {
            device: (8, String::new()),
            ..wanted.clone()
        };
        assert!(!elsewhere.serves(&wanted));
        assert_eq!(
            routes_to(std::slice::from_ref(&elsewhere), &wanted),
            vec![&elsewhere]
        );
        let other_table = Route {
            table: 100,
            ..wanted.clone()
        };
        assert!(!other_table.serves(&wanted));
        assert!(routes_to(&[other_table], &wanted).is_empty());
    }

    #[test]
    fn a_route_with_another_protocol_or_scope_still_serves() {
        let wanted = pod_route();
        let adjusted = Route {
            protocol: RouteProtocol::Static,
            scope: RouteScope::Universe,
            ..wanted.clone()
        };
        assert!(adjusted.serves(&wanted));
    }
}
