//! veth pairs between two test network namespaces.
//!
//! Owns creating a pair directly inside its namespaces (it never exists in the host namespace,
//! not even briefly) and giving each end an address. The pair disappears with its namespaces.

use crate::netns::{NetNs, NetNsError};

/// One end of a veth pair.
#[derive(Debug, Clone)]
pub struct VethEnd {
    /// Interface name inside its namespace.
    pub interface: String,
    /// IPv4 address (without prefix length), if one was configured.
    pub address: Option<String>,
}

/// A veth pair whose ends live in two namespaces.
#[derive(Debug, Clone)]
pub struct VethPair {
    pub a: VethEnd,
    pub b: VethEnd,
}

/// Creates `interface_a` in `a` paired with `interface_b` in `b`, both up, without addresses.
pub fn create(
    a: &NetNs,
    interface_a: &str,
    b: &NetNs,
    interface_b: &str,
) -> Result<VethPair, NetNsError> {
    a.ip(&[
        "link",
        "add",
        interface_a,
        "type",
        "veth",
        "peer",
        "name",
        interface_b,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", interface_a, "up"])?;
    b.ip(&["link", "set", interface_b, "up"])?;
    Ok(VethPair {
        a: VethEnd {
            interface: interface_a.to_owned(),
            address: None,
        },
        b: VethEnd {
            interface: interface_b.to_owned(),
            address: None,
        },
    })
}

/// Creates a pair and gives the ends `address_a` and `address_b` in `prefix_len`-bit subnet.
pub fn create_addressed(
    (a, interface_a, address_a): (&NetNs, &str, &str),
    (b, interface_b, address_b): (&NetNs, &str, &str),
    prefix_len: u8,
) -> Result<VethPair, NetNsError> {
    let mut pair = create(a, interface_a, b, interface_b)?;
    a.ip(&[
        "addr",
        "add",
        &format!("{address_a}/{prefix_len}"),
        "dev",
        interface_a,
    ])?;
    b.ip(&[
        "addr",
        "add",
        &format!("{address_b}/{prefix_len}"),
        "dev",
        interface_b,
    ])?;
    pair.a.address = Some(address_a.to_owned());
    pair.b.address = Some(address_b.to_owned());
    Ok(pair)
}
