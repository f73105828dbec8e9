//! Typed handles on the pinned dataplane maps.
//!
//! Owns opening every shared map from the pin directory (`/sys/fs/bpf/skiff/<NAME>`), so the
//! running proxy, `skiff-proxy status` and a restarted proxy all see the same maps whichever
//! process created them. Thin adapter: no translation or planning logic here.

use std::path::{Path, PathBuf};

use crate::sync::{DataplaneState, MapOp, SyncPlan};

use std::{collections::BTreeSet, net::Ipv4Addr};

use aya::maps::{
    Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key as LpmKey,
};
use proxy_common::{
    AFFINITY_MAP, AffinityKey, AffinityValue, BACKEND_SLOTS_MAP, BACKEND_STATS_MAP, BACKENDS_MAP,
    Backend, BackendSlotKey, CONFIG_MAP, CONNTRACK_DIRECTION_REPLY, CONNTRACK_FLAG_SNAT,
    CONNTRACK_MAP, ConntrackKey, ConntrackValue, DROP_STATS_MAP, EXTERNAL_PATH_STATS_MAP,
    FlowCounter, NODEPORT_ADDRESS_PRESENT, NODEPORT_ADDRESSES_MAP, PacketCounter, ProxyConfig,
    SERVICE_STATS_MAP, SERVICES_MAP, SOURCE_RANGES_MAP, ServiceKey, ServiceValue, SourceRangeKey,
    source_range_prefix_length,
};

use crate::translate::SourceRange;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("reading map {map}: {source}")]
    Read {
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("writing the {CONFIG_MAP} map: {source}")]
    Config {
        #[source]
        source: Box<MapError>,
    },
    #[error("writing the {NODEPORT_ADDRESSES_MAP} map: {source}")]
    NodePortAddresses {
        #[source]
        source: Box<MapError>,
    },
    #[error("{op:?} failed (the map may be full: see the --max-* flags): {source}")]
    Write {
        op: MapOp,
        #[source]
        source: Box<MapError>,
    },
    #[error(
        "opening the pinned map {path} (is skiff-proxy's dataplane loaded with this --bpffs?): {source}"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: Box<MapError>,
    },
    #[error("the pinned map {path} has an unexpected type or key/value size: {source}")]
    Shape {
        path: PathBuf,
        #[source]
        source: Box<MapError>,
    },
}

/// Every shared map of the dataplane.
pub struct DataplaneMaps {
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub backend_slots: HashMap<MapData, BackendSlotKey, u32>,
    pub backends: HashMap<MapData, u32, Backend>,
    pub conntrack: HashMap<MapData, ConntrackKey, ConntrackValue>,
    pub affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    pub config: Array<MapData, ProxyConfig>,
    pub service_stats: PerCpuArray<MapData, FlowCounter>,
    pub backend_stats: PerCpuArray<MapData, FlowCounter>,
    pub drop_stats: PerCpuArray<MapData, PacketCounter>,
    pub nodeport_addresses: HashMap<MapData, u32, u32>,
    pub source_ranges: LpmTrie<MapData, SourceRangeKey, u32>,
    pub external_path_stats: PerCpuArray<MapData, PacketCounter>,
}

fn open<T>(directory: &Path, name: &str) -> Result<T, MapsError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let path = directory.join(name);
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open {
        path: path.clone(),
        source: Box::new(source),
    })?;
    let shape = |source| MapsError::Shape {
        path: path.clone(),
        source: Box::new(source),
    };
    let map = Map::from_map_data(data).map_err(shape)?;
    T::try_from(map).map_err(shape)
}

impl DataplaneMaps {
    /// Opens the maps pinned in `pin_directory` (created when an object was loaded there).
    pub fn open(pin_directory: &Path) -> Result<DataplaneMaps, MapsError> {
        Ok(DataplaneMaps {
            services: open(pin_directory, SERVICES_MAP)?,
            backend_slots: open(pin_directory, BACKEND_SLOTS_MAP)?,
            backends: open(pin_directory, BACKENDS_MAP)?,
            conntrack: open(pin_directory, CONNTRACK_MAP)?,
            affinity: open(pin_directory, AFFINITY_MAP)?,
            config: open(pin_directory, CONFIG_MAP)?,
            service_stats: open(pin_directory, SERVICE_STATS_MAP)?,
            backend_stats: open(pin_directory, BACKEND_STATS_MAP)?,
            drop_stats: open(pin_directory, DROP_STATS_MAP)?,
            nodeport_addresses: open(pin_directory, NODEPORT_ADDRESSES_MAP)?,
            source_ranges: open(pin_directory, SOURCE_RANGES_MAP)?,
            external_path_stats: open(pin_directory, EXTERNAL_PATH_STATS_MAP)?,
        })
    }
}

fn read_all<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, MapsError> {
    map.iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| MapsError::Read {
            map: name,
            source: Box::new(source),
        })
}

impl DataplaneMaps {
    /// What the service maps hold now (at start: what a previous skiff-proxy left pinned).
    pub fn read_state(&self) -> Result<DataplaneState, MapsError> {
        let mut state = DataplaneState::from_maps(
            read_all(&self.services, SERVICES_MAP)?,
            read_all(&self.backend_slots, BACKEND_SLOTS_MAP)?,
            read_all(&self.backends, BACKENDS_MAP)?,
        );
        state.source_ranges = self.read_source_ranges()?;
        Ok(state)
    }

    fn read_source_ranges(&self) -> Result<BTreeSet<(u32, SourceRange)>, MapsError> {
        let keys = self
            .source_ranges
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| MapsError::Read {
                map: SOURCE_RANGES_MAP,
                source: Box::new(source),
            })?;
        Ok(keys
            .into_iter()
            .filter_map(|key| {
                let data = key.data();
                let prefix_length = u8::try_from(key.prefix_len().checked_sub(32)?).ok()?;
                let range = SourceRange {
                    address: Ipv4Addr::from(data.address.to_ne_bytes()),
                    prefix_length,
                };
                Some((u32::from_be(data.service_id), range))
            })
            .collect())
    }

    /// The NodePort addresses in the map.
    pub fn nodeport_addresses(&self) -> Result<BTreeSet<Ipv4Addr>, MapsError> {
        Ok(read_all(&self.nodeport_addresses, NODEPORT_ADDRESSES_MAP)?
            .into_iter()
            .map(|(address, _)| Ipv4Addr::from(address.to_ne_bytes()))
            .collect())
    }

    /// Makes the NodePort addresses exactly `wanted` (new ones first, then stale ones removed).
    pub fn set_nodeport_addresses(&mut self, wanted: &BTreeSet<Ipv4Addr>) -> Result<(), MapsError> {
        let current = self.nodeport_addresses()?;
        let write_error = |source| MapsError::NodePortAddresses {
            source: Box::new(source),
        };
        for address in wanted.difference(&current) {
            self.nodeport_addresses
                .insert(
                    u32::from_ne_bytes(address.octets()),
                    NODEPORT_ADDRESS_PRESENT,
                    0,
                )
                .map_err(write_error)?;
        }
        for address in current.difference(wanted) {
            match self
                .nodeport_addresses
                .remove(&u32::from_ne_bytes(address.octets()))
            {
                Err(error) if !is_not_found(&error) => return Err(write_error(error)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Executes a plan's map updates in order. Stops at the first failure, so the invariants the
    /// plan's order guarantees hold for everything written before it.
    pub fn execute(&mut self, plan: &SyncPlan) -> Result<(), MapsError> {
        for op in &plan.ops {
            let result = match *op {
                MapOp::PutBackend { id, backend } => self.backends.insert(id, backend, 0),
                MapOp::PutSlot { key, backend_id } => self.backend_slots.insert(key, backend_id, 0),
                MapOp::PutService { key, value } => self.services.insert(key, value, 0),
                MapOp::DeleteSlot(key) => self.backend_slots.remove(&key),
                MapOp::DeleteService(key) => self.services.remove(&key),
                MapOp::DeleteBackend(id) => self.backends.remove(&id),
                MapOp::PutSourceRange { service_id, range } => {
                    self.source_ranges
                        .insert(&source_range_key(service_id, &range), 1, 0)
                }
                MapOp::DeleteSourceRange { service_id, range } => self
                    .source_ranges
                    .remove(&source_range_key(service_id, &range)),
            };
            match result {
                Ok(()) => {}
                // Deleting what is already gone is what the plan wanted.
                Err(error)
                    if is_not_found(&error)
                        && matches!(
                            op,
                            MapOp::DeleteSlot(_)
                                | MapOp::DeleteService(_)
                                | MapOp::DeleteBackend(_)
                                | MapOp::DeleteSourceRange { .. }
                        ) => {}
                Err(source) => {
                    return Err(MapsError::Write {
                        op: *op,
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes the datapath configuration.
    pub fn write_config(&mut self, config: &ProxyConfig) -> Result<(), MapsError> {
        self.config
            .set(0, config, 0)
            .map_err(|source| MapsError::Config {
                source: Box::new(source),
            })
    }
}

/// SNAT ports held by source-NATed flows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnatUsage {
    pub ports_in_use: usize,
    /// Ports in use by backend (address, port), network byte order.
    pub per_backend: std::collections::BTreeMap<(u32, u16), usize>,
}

impl DataplaneMaps {
    /// Counts the reply entries of source-NATed flows (each holds one node port towards one
    /// backend port). Walks the conntrack map: for status and scrapes, not for the data path.
    pub fn snat_usage(&self) -> SnatUsage {
        let mut usage = SnatUsage::default();
        for (key, value) in self.conntrack.iter().filter_map(Result::ok) {
            if key.direction == CONNTRACK_DIRECTION_REPLY && value.flags & CONNTRACK_FLAG_SNAT != 0
            {
                usage.ports_in_use += 1;
                *usage
                    .per_backend
                    .entry((key.source_address, key.source_port))
                    .or_default() += 1;
            }
        }
        usage
    }
}

/// The `SOURCE_RANGES` key of one service's source prefix.
fn source_range_key(service_id: u32, range: &SourceRange) -> LpmKey<SourceRangeKey> {
    LpmKey::new(
        source_range_prefix_length(range.prefix_length),
        SourceRangeKey {
            service_id: service_id.to_be(),
            address: u32::from_ne_bytes(range.address.octets()),
        },
    )
}

/// Whether a map error says the key does not exist.
fn is_not_found(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound => true,
        MapError::SyscallError(syscall) => syscall.io_error.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}
