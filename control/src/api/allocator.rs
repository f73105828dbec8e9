//! Service ClusterIP and NodePort allocation, persisted in the store so that no address or
//! port is ever handed out twice, even across restarts and with several API servers on etcd.
//!
//! Each allocation is one store key (`/registry/allocations/ip/10.96.0.10`,
//! `/registry/allocations/nodeport/30080`) created with create-if-absent before the Service is
//! written and deleted after it is removed; [`Allocator::repair`] releases keys whose Service is
//! gone (a crash between the two writes). The range arithmetic is pure and unit-tested; the
//! store calls are the only I/O. Knows nothing about HTTP.

use std::{net::Ipv4Addr, sync::Arc};

use serde_json::Value;
use skiff_store::{Store, StoreError};

use super::{errors::ApiError, field::FieldError};

const IP_PREFIX: &str = "/registry/allocations/ip/";
const NODE_PORT_PREFIX: &str = "/registry/allocations/nodeport/";

/// An IPv4 CIDR such as `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub network: Ipv4Addr,
    pub prefix_length: u8,
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Ipv4Cidr, String> {
        let (address, length) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (expected address/prefix)"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{address:?} in {text:?} is not an IPv4 address"))?;
        let prefix_length: u8 = length
            .parse()
            .ok()
            .filter(|length| *length <= 30)
            .ok_or_else(|| format!("prefix length {length:?} in {text:?} must be 0..=30"))?;
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_length))
            .unwrap_or(0);
        Ok(Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(address) & mask),
            prefix_length,
        })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.network, self.prefix_length)
    }
}

impl Ipv4Cidr {
    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix_length))
    }

    /// Whether `address` is inside the range and usable (not the network or broadcast address).
    pub fn contains_usable(&self, address: Ipv4Addr) -> bool {
        let offset = u32::from(address).wrapping_sub(u32::from(self.network));
        offset > 0 && offset < self.size() - 1
    }

    /// The `index`th address of the range.
    pub fn nth(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).wrapping_add(index))
    }

    /// The address reserved for the `kubernetes` Service (the first usable one).
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        self.nth(1)
    }
}

/// An inclusive port range such as `30000-32767`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<PortRange, String> {
        let (first, last) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not a port range (expected FIRST-LAST)"))?;
        let first: u16 = first
            .trim()
            .parse()
            .map_err(|_| format!("{first:?} in {text:?} is not a port"))?;
        let last: u16 = last
            .trim()
            .parse()
            .map_err(|_| format!("{last:?} in {text:?} is not a port"))?;
        if first == 0 || last < first {
            return Err(format!("{text:?} is empty or starts at 0"));
        }
        Ok(PortRange { first, last })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}-{}", self.first, self.last)
    }
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    fn size(&self) -> u32 {
        u32::from(self.last - self.first) + 1
    }
}

fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // A failing kernel RNG only makes the search start at the range's beginning.
    let _ = getrandom::getrandom(&mut bytes);
    u32::from_le_bytes(bytes)
}

/// The ClusterIP and NodePort allocators of one cluster.
#[derive(Clone)]
pub struct Allocator {
    store: Arc<dyn Store>,
    pub service_cidr: Ipv4Cidr,
    pub node_ports: PortRange,
}

/// What a Service holds: its ClusterIP (if allocated here) and node ports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holdings {
    pub cluster_ip: Option<Ipv4Addr>,
    pub node_ports: Vec<u16>,
}

impl Holdings {
    /// The allocations a stored Service object holds.
    pub fn of(service: &Value) -> Holdings {
        let cluster_ip = service["spec"]["clusterIP"]
            .as_str()
            .and_then(|ip| ip.parse().ok());
        let node_ports = service["spec"]["ports"]
            .as_array()
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(|port| port["nodePort"].as_u64())
                    .filter_map(|port| u16::try_from(port).ok())
                    .filter(|port| *port != 0)
                    .collect()
            })
            .unwrap_or_default();
        Holdings {
            cluster_ip,
            node_ports,
        }
    }
}

impl Allocator {
    pub fn new(store: Arc<dyn Store>, service_cidr: Ipv4Cidr, node_ports: PortRange) -> Allocator {
        Allocator {
            store,
            service_cidr,
            node_ports,
        }
    }

    async fn claim(&self, key: &str, owner: &str) -> Result<bool, ApiError> {
        match self.store.create(key, owner.as_bytes()).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn is_free(&self, key: &str) -> Result<bool, ApiError> {
        Ok(self.store.get(key).await?.is_none())
    }

    /// Claims `address` for `owner` (`namespace/name`). `field` names the request field in errors.
    pub async fn claim_ip(
        &self,
        address: Ipv4Addr,
        owner: &str,
        field: &str,
        dry_run: bool,
    ) -> Result<(), FieldOrApiError> {
        if !self.service_cidr.contains_usable(address) {
            return Err(FieldOrApiError::Field(FieldError::invalid(
                field,
                address.to_string(),
                format!(
                    "failed to allocate IP {address}: the provided IP ({address}) is not in the valid range. The range of valid IPs is {}",
                    self.service_cidr
                ),
            )));
        }
        let key = format!("{IP_PREFIX}{address}");
        let free = if dry_run {
            self.is_free(&key).await?
        } else {
            self.claim(&key, owner).await?
        };
        if free {
            Ok(())
        } else {
            Err(FieldOrApiError::Field(FieldError::invalid(
                field,
                address.to_string(),
                format!("failed to allocate IP {address}: provided IP is already allocated"),
            )))
        }
    }

    /// Allocates a free ClusterIP for `owner`.
    pub async fn allocate_ip(&self, owner: &str, dry_run: bool) -> Result<Ipv4Addr, ApiError> {
        let size = self.service_cidr.size();
        // Usable offsets are 2..size-1 (.0 is the network, .1 the kubernetes Service).
        let usable = size.saturating_sub(3);
        if usable == 0 {
            return Err(ApiError::internal(
                "failed to allocate a serviceIP: range is full",
            ));
        }
        let start = random_u32() % usable;
        for step in 0..usable {
            let address = self.service_cidr.nth(2 + (start + step) % usable);
            let key = format!("{IP_PREFIX}{address}");
            let free = if dry_run {
                self.is_free(&key).await?
            } else {
                self.claim(&key, owner).await?
            };
            if free {
                return Ok(address);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a serviceIP: range is full",
        ))
    }

    pub async fn claim_node_port(
        &self,
        port: u16,
        owner: &str,
        field: &str,
        dry_run: bool,
    ) -> Result<(), FieldOrApiError> {
        if !self.node_ports.contains(port) {
            return Err(FieldOrApiError::Field(FieldError::invalid(
                field,
                port,
                format!(
                    "provided port is not in the valid range. The range of valid ports is {}",
                    self.node_ports
                ),
            )));
        }
        let key = format!("{NODE_PORT_PREFIX}{port}");
        let free = if dry_run {
            self.is_free(&key).await?
        } else {
            self.claim(&key, owner).await?
        };
        if free {
            Ok(())
        } else {
            Err(FieldOrApiError::Field(FieldError::invalid(
                field,
                port,
                "provided port is already allocated",
            )))
        }
    }

    pub async fn allocate_node_port(&self, owner: &str, dry_run: bool) -> Result<u16, ApiError> {
        let size = self.node_ports.size();
        let start = random_u32() % size;
        for step in 0..size {
            let offset = (start + step) % size;
            let Ok(port) = u16::try_from(u32::from(self.node_ports.first) + offset) else {
                continue;
            };
            let key = format!("{NODE_PORT_PREFIX}{port}");
            let free = if dry_run {
                self.is_free(&key).await?
            } else {
                self.claim(&key, owner).await?
            };
            if free {
                return Ok(port);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a nodePort: range is full",
        ))
    }

    /// Releases what `holdings` lists (missing keys are fine: release is idempotent).
    pub async fn release(&self, holdings: &Holdings) -> Result<(), ApiError> {
        let mut keys = Vec::new();
        if let Some(address) = holdings.cluster_ip {
            keys.push(format!("{IP_PREFIX}{address}"));
        }
        keys.extend(
            holdings
                .node_ports
                .iter()
                .map(|port| format!("{NODE_PORT_PREFIX}{port}")),
        );
        for key in keys {
            match self.store.delete(&key, None).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Releases every allocation whose owning Service (`services` maps `namespace/name` to its
    /// holdings) does not hold it; returns how many were released.
    pub async fn repair(
        &self,
        services: &std::collections::HashMap<String, Holdings>,
    ) -> Result<usize, ApiError> {
        let mut released = 0;
        for (prefix, is_ip) in [(IP_PREFIX, true), (NODE_PORT_PREFIX, false)] {
            let page = self.store.range(prefix, None, 0, None).await?;
            for kv in page.kvs {
                let owner = String::from_utf8_lossy(&kv.value).into_owned();
                let item = &kv.key[prefix.len()..];
                let held = services.get(&owner).is_some_and(|holdings| {
                    if is_ip {
                        holdings.cluster_ip.map(|ip| ip.to_string()).as_deref() == Some(item)
                    } else {
                        holdings
                            .node_ports
                            .iter()
                            .any(|port| port.to_string() == item)
                    }
                });
                if !held {
                    match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                        Ok(_) => released += 1,
                        Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        }
        Ok(released)
    }
}

/// An allocation failure: a field error (part of an `Invalid` Status) or a server error.
#[derive(Debug)]
pub enum FieldOrApiError {
    Field(FieldError),
    Api(ApiError),
}

impl From<ApiError> for FieldOrApiError {
    fn from(error: ApiError) -> FieldOrApiError {
        FieldOrApiError::Api(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_ranges_parse_and_bound() {
        let cidr: Ipv4Cidr = "10.96.0.0/12".parse().expect("valid");
        assert_eq!(cidr.kubernetes_service_ip(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(cidr.contains_usable(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!cidr.contains_usable(Ipv4Addr::new(10, 111, 255, 255)));
        assert!(!cidr.contains_usable(Ipv4Addr::new(10, 96, 0, 0)));
        assert!(!cidr.contains_usable(Ipv4Addr::new(10, 112, 0, 1)));
        assert_eq!(
            "10.96.3.4/12".parse::<Ipv4Cidr>().expect("valid").network,
            Ipv4Addr::new(10, 96, 0, 0)
        );
        assert!("10.96.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.96.0.0/31".parse::<Ipv4Cidr>().is_err());
        let range: PortRange = "30000-32767".parse().expect("valid");
        assert_eq!(range.size(), 2768);
        assert!(range.contains(32767) && !range.contains(29999));
        assert!("5-1".parse::<PortRange>().is_err());
    }

    #[test]
    fn holdings_are_read_from_a_service() {
        let service = serde_json::json!({"spec": {"clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 81}]}});
        assert_eq!(
            Holdings::of(&service),
            Holdings {
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
                node_ports: vec![30080]
            }
        );
        assert_eq!(
            Holdings::of(&serde_json::json!({"spec": {"clusterIP": "None"}})),
            Holdings::default()
        );
    }
}
