//! Links and their addresses: the veth pair and the pod's /32.
//!
//! Owns the translation between Skiff's view of a link ([`Link`]) and rtnetlink messages, the
//! idempotency of each create (an object that already exists as wanted is success) and the naming
//! of the failing operation in errors. Decides nothing about what a pod needs: that is
//! [`super::setup`] and [`super::check`].

use std::{fs::File, net::Ipv4Addr, os::fd::AsRawFd as _};

use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    address::AddressAttribute,
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
};
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use super::{
    NetlinkError,
    runtime::{Connection, is_errno},
};

/// A link as the kernel reports it, reduced to what Skiff looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub(super) index: u32,
    pub(super) name: String,
    /// The hardware address, `aa:bb:cc:dd:ee:ff`.
    pub(super) mac: Option<String>,
    pub(super) mtu: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub(super) up: bool,
    /// `veth`, `dummy`, ...; `None` for a link without `IFLA_LINKINFO`.
    pub(super) kind: Option<InfoKind>,
    /// For a veth: the index of its peer, in the peer's namespace (`IFLA_LINK`).
    pub(super) peer_index: Option<u32>,
}

impl Link {
    pub(super) fn from_message(message: &LinkMessage) -> Link {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            up: message.header.flags.contains(LinkFlags::Up),
            kind: None,
            peer_index: None,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Address(bytes) => link.mac = Some(format_mac(bytes)),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                LinkAttribute::Link(index) => link.peer_index = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.clone()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        link
    }
}

/// `aa:bb:cc:dd:ee:ff`: lowercase hex bytes joined by colons, as CNI results and `ip` print them.
pub(super) fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Connection {
    /// The link named `name`, or `None` when there is none.
    pub(super) async fn find_link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(message) => Ok(message.as_ref().map(Link::from_message)),
            Err(error) if is_errno(&error, libc::ENODEV) => Ok(None),
            Err(error) => Err(self.failed(format_args!("look up interface {name}"))(error)),
        }
    }

    /// Every link of this namespace.
    pub(super) async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(self.failed(format_args!("list interfaces")))?;
        Ok(messages.iter().map(Link::from_message).collect())
    }

    /// Deletes `link`. `Ok(false)` when it was already gone.
    pub(super) async fn delete_link(&self, link: &Link) -> Result<bool, NetlinkError> {
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(error) if is_errno(&error, libc::ENODEV) => Ok(false),
            Err(error) => Err(self.failed(format_args!("delete interface {}", link.name))(
                error,
            )),
        }
    }

    /// Deletes the link named `name` if there is one. `Ok(false)` when there was none.
    pub(super) async fn delete_link_named(&self, name: &str) -> Result<bool, NetlinkError> {
        match self.find_link(name).await? {
            Some(link) => self.delete_link(&link).await,
            None => Ok(false),
        }
    }

    /// Creates a veth pair: `name` in this connection's namespace and `peer` created directly in
    /// the namespace of `peer_netns` (it never exists here), both with `mtu` and down.
    pub(super) async fn create_veth(
        &self,
        name: &str,
        peer: &str,
        peer_netns: &File,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let peer_message = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(peer_netns.as_raw_fd())
            .build();
        let message = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(name)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(self.failed(format_args!(
                "create veth {name} (mtu {mtu}) with its peer {peer} placed in the pod's namespace"
            )))
    }

    /// Renames the (down) link `link` to `name`. The raw error is returned so the caller can tell
    /// "name taken" (`EEXIST`) apart.
    pub(super) async fn rename_link(
        &self,
        link: &Link,
        name: &str,
    ) -> Result<(), rtnetlink::Error> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).name(name).build())
            .execute()
            .await
    }

    /// Sets `link` administratively up (a no-op when it already is).
    pub(super) async fn set_up(&self, link: &Link) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).up().build())
            .execute()
            .await
            .map_err(self.failed(format_args!("set interface {} up", link.name)))
    }

    /// Adds `address/prefix_length` to `link`; an identical address already there is success.
    pub(super) async fn add_address(
        &self,
        link: &Link,
        address: Ipv4Addr,
        prefix_length: u8,
    ) -> Result<(), NetlinkError> {
        match self
            .handle
            .address()
            .add(link.index, address.into(), prefix_length)
            .execute()
            .await
        {
            Err(error) if is_errno(&error, libc::EEXIST) => Ok(()),
            result => result.map_err(self.failed(format_args!(
                "add address {address}/{prefix_length} to {}",
                link.name
            ))),
        }
    }

    /// The IPv4 addresses of `link`, as (address, prefix length).
    pub(super) async fn addresses(&self, link: &Link) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(self.failed(format_args!("list the addresses of {}", link.name)))?;
        Ok(messages
            .iter()
            .filter_map(|message| {
                let local = message
                    .attributes
                    .iter()
                    .find_map(|attribute| match attribute {
                        AddressAttribute::Local(std::net::IpAddr::V4(address)) => Some(*address),
                        _ => None,
                    });
                let address = message
                    .attributes
                    .iter()
                    .find_map(|attribute| match attribute {
                        AddressAttribute::Address(std::net::IpAddr::V4(address)) => Some(*address),
                        _ => None,
                    });
                Some((local.or(address)?, message.header.prefix_len))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_printed_as_lowercase_colon_separated_hex() {
        assert_eq!(
            format_mac(&[0xaa, 0x0b, 0xcc, 0x00, 0xee, 0xff]),
            "aa:0b:cc:00:ee:ff"
        );
    }
}
