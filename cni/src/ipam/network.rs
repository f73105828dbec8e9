//! The IPv4 network of a pod CIDR (`10.244.1.0/24`): parsing, printing and address arithmetic.
//!
//! Owns only the value type. It knows nothing about allocations, files or the CNI protocol. It is
//! IPAM's own type until `spec` grows one; the two should then be unified (same name, same rules:
//! canonical network address, prefix length 0..=32).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network in CIDR notation whose address is the network address (host bits all zero),
/// such as a node's `podCIDR` `10.244.1.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Network {
    address: Ipv4Addr,
    prefix_length: u8,
}

/// Why a string or an address/prefix pair is not an [`Ipv4Network`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4NetworkError {
    #[error(
        "{input:?} is not an IPv4 network in CIDR notation like 10.244.1.0/24: the \"/<prefix length>\" is missing"
    )]
    MissingPrefixLength { input: String },
    #[error(
        "{input:?} is not an IPv4 network in CIDR notation like 10.244.1.0/24: {address:?} is not an IPv4 address"
    )]
    InvalidAddress { input: String, address: String },
    #[error(
        "{input:?} is not an IPv4 network in CIDR notation like 10.244.1.0/24: the prefix length {prefix_length:?} is not a number from 0 to 32"
    )]
    InvalidPrefixLength {
        input: String,
        prefix_length: String,
    },
    #[error("{input:?} has host bits set: the network it names is {network}")]
    HostBitsSet { input: String, network: Ipv4Network },
}

impl Ipv4Network {
    /// The network `address/prefix_length`; `address` must be the network address itself.
    pub fn new(address: Ipv4Addr, prefix_length: u8) -> Result<Self, Ipv4NetworkError> {
        if prefix_length > 32 {
            return Err(Ipv4NetworkError::InvalidPrefixLength {
                input: format!("{address}/{prefix_length}"),
                prefix_length: prefix_length.to_string(),
            });
        }
        let network = Ipv4Network {
            address: Ipv4Addr::from(u32::from(address) & mask(prefix_length)),
            prefix_length,
        };
        if network.address != address {
            return Err(Ipv4NetworkError::HostBitsSet {
                input: format!("{address}/{prefix_length}"),
                network,
            });
        }
        Ok(network)
    }

    /// The network address (all host bits zero).
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The prefix length, 0..=32.
    pub fn prefix_length(&self) -> u8 {
        self.prefix_length
    }

    /// The broadcast address (all host bits one). For a /32 it is the address itself.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !mask(self.prefix_length))
    }

    /// Whether `ip` lies inside this network (network and broadcast addresses included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_length) == u32::from(self.address)
    }
}

/// The netmask of a prefix length (0..=32) as a host-order integer.
fn mask(prefix_length: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_length))
        .unwrap_or(0)
}

impl fmt::Display for Ipv4Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_length)
    }
}

impl FromStr for Ipv4Network {
    type Err = Ipv4NetworkError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (address, prefix_length) =
            input
                .split_once('/')
                .ok_or_else(|| Ipv4NetworkError::MissingPrefixLength {
                    input: input.to_owned(),
                })?;
        let parsed_address =
            Ipv4Addr::from_str(address).map_err(|_| Ipv4NetworkError::InvalidAddress {
                input: input.to_owned(),
                address: address.to_owned(),
            })?;
        let invalid_prefix_length = || Ipv4NetworkError::InvalidPrefixLength {
            input: input.to_owned(),
            prefix_length: prefix_length.to_owned(),
        };
        // `u8::from_str` accepts a leading '+'; CIDR notation does not.
        if prefix_length.is_empty() || !prefix_length.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid_prefix_length());
        }
        let parsed_prefix_length = u8::from_str(prefix_length)
            .ok()
            .filter(|length| *length <= 32)
            .ok_or_else(invalid_prefix_length)?;
        Ipv4Network::new(parsed_address, parsed_prefix_length).map_err(|error| match error {
            Ipv4NetworkError::HostBitsSet { network, .. } => Ipv4NetworkError::HostBitsSet {
                input: input.to_owned(),
                network,
            },
            other => other,
        })
    }
}

impl serde::Serialize for Ipv4Network {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Network {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Network {
        text.parse().expect("a valid network")
    }

    #[test]
    fn parses_and_prints_a_pod_cidr() {
        let network = net("10.244.1.0/24");
        assert_eq!(network.address(), Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(network.prefix_length(), 24);
        assert_eq!(network.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(network.to_string(), "10.244.1.0/24");
    }

    #[test]
    fn contains_checks_the_prefix_only() {
        let network = net("10.244.1.0/24");
        assert!(network.contains(Ipv4Addr::new(10, 244, 1, 0)));
        assert!(network.contains(Ipv4Addr::new(10, 244, 1, 255)));
        assert!(!network.contains(Ipv4Addr::new(10, 244, 2, 1)));
        assert!(net("0.0.0.0/0").contains(Ipv4Addr::new(255, 255, 255, 255)));
        assert!(net("192.0.2.7/32").contains(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(net("192.0.2.7/32").broadcast(), Ipv4Addr::new(192, 0, 2, 7));
    }

    #[test]
    fn rejects_host_bits_and_names_the_network_meant() {
        let error = "10.244.1.5/24".parse::<Ipv4Network>().unwrap_err();
        assert_eq!(
            error,
            Ipv4NetworkError::HostBitsSet {
                input: "10.244.1.5/24".into(),
                network: net("10.244.1.0/24"),
            }
        );
        assert!(error.to_string().contains("10.244.1.0/24"));
    }

    #[test]
    fn rejects_malformed_input_with_the_offending_part_named() {
        for (input, part) in [
            ("10.244.1.0", "/<prefix length>"),
            ("10.244.1/24", "\"10.244.1\""),
            ("10.244.1.0/33", "\"33\""),
            ("10.244.1.0/+24", "\"+24\""),
            ("10.244.1.0/", "\"\""),
            ("fd00::/64", "\"fd00::\""),
        ] {
            let message = input.parse::<Ipv4Network>().unwrap_err().to_string();
            assert!(message.contains(part), "{input}: {message}");
        }
    }

    #[test]
    fn round_trips_through_json_as_a_string() {
        let network = net("10.244.1.0/24");
        let json = serde_json::to_string(&network).unwrap();
        assert_eq!(json, "\"10.244.1.0/24\"");
        assert_eq!(serde_json::from_str::<Ipv4Network>(&json).unwrap(), network);
        assert!(serde_json::from_str::<Ipv4Network>("\"10.244.1.1/24\"").is_err());
    }
}
