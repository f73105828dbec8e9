//! Typed handles on the pinned dataplane maps.
//!
//! Owns opening every shared map from the pin directory (`/sys/fs/bpf/skiff/<NAME>`), so the
//! running proxy, `skiff-proxy status` and a restarted proxy all see the same maps whichever
//! process created them. Thin adapter: no translation or planning logic here.

use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use proxy_common::{
    AFFINITY_MAP, AffinityKey, AffinityValue, BACKEND_SLOTS_MAP, BACKEND_STATS_MAP, BACKENDS_MAP,
    Backend, BackendSlotKey, CONFIG_MAP, CONNTRACK_MAP, ConntrackKey, ConntrackValue,
    DROP_STATS_MAP, FlowCounter, PacketCounter, ProxyConfig, SERVICE_STATS_MAP, SERVICES_MAP,
    ServiceKey, ServiceValue,
};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("opening the pinned map {path} (is skiff-proxy's dataplane loaded with this --bpffs?): {source}")]
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
        })
    }
}
