//! Reading the per-CPU statistics maps of a loaded program.
//!
//! Owns summing per-CPU slots into totals. Never writes a map.

use aya::maps::{MapError, PerCpuArray};
use proxy_common::{PROTOCOL_STATS_MAP, PacketCounter, ProtocolClass};

use crate::programs::LoadedObject;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("the {program} object has no map named {map}")]
    MissingMap {
        program: &'static str,
        map: &'static str,
    },
    #[error("reading map {map} of {program}: {source}")]
    Map {
        program: &'static str,
        map: &'static str,
        #[source]
        source: MapError,
    },
}

/// Packet counters per [`ProtocolClass`], summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolStats {
    counters: [PacketCounter; ProtocolClass::ALL.len()],
}

impl ProtocolStats {
    /// The counter of one class.
    pub fn get(&self, class: ProtocolClass) -> PacketCounter {
        self.counters[class.index() as usize]
    }

    /// Packets of one class.
    pub fn packets(&self, class: ProtocolClass) -> u64 {
        self.get(class).packets
    }

    /// What happened between `earlier` and `self`, class by class.
    pub fn since(&self, earlier: &ProtocolStats) -> ProtocolStats {
        let mut delta = ProtocolStats::default();
        for class in ProtocolClass::ALL {
            let (now, then) = (self.get(class), earlier.get(class));
            delta.counters[class.index() as usize] = PacketCounter {
                packets: now.packets.wrapping_sub(then.packets),
                bytes: now.bytes.wrapping_sub(then.bytes),
            };
        }
        delta
    }
}

impl std::fmt::Display for ProtocolStats {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for class in ProtocolClass::ALL {
            let counter = self.get(class);
            writeln!(
                formatter,
                "{:<10} {:>12} packets {:>14} bytes",
                class.name(),
                counter.packets,
                counter.bytes
            )?;
        }
        Ok(())
    }
}

/// Reads the `PROTOCOL_STATS` map of `program`.
pub fn protocol_stats(object: &LoadedObject) -> Result<ProtocolStats, StatsError> {
    let name = object.object().name();
    let map = object
        .ebpf()
        .map(PROTOCOL_STATS_MAP)
        .ok_or(StatsError::MissingMap {
            program: name,
            map: PROTOCOL_STATS_MAP,
        })?;
    let read_error = |source| StatsError::Map {
        program: name,
        map: PROTOCOL_STATS_MAP,
        source,
    };
    let array: PerCpuArray<_, PacketCounter> = PerCpuArray::try_from(map).map_err(read_error)?;
    let mut stats = ProtocolStats::default();
    for class in ProtocolClass::ALL {
        stats.counters[class.index() as usize] =
            sum_per_cpu(&array, class.index()).map_err(read_error)?;
    }
    Ok(stats)
}

/// A counter kept per CPU and added up by user space.
pub trait PerCpuCounter: aya::Pod + Default {
    fn plus(self, other: Self) -> Self;
}

impl PerCpuCounter for PacketCounter {
    fn plus(self, other: Self) -> Self {
        self.add(other)
    }
}

impl PerCpuCounter for proxy_common::FlowCounter {
    fn plus(self, other: Self) -> Self {
        self.add(other)
    }
}

/// The sum over all CPUs of entry `index` of a per-CPU array.
pub fn sum_per_cpu<T, V>(map: &PerCpuArray<T, V>, index: u32) -> Result<V, MapError>
where
    T: std::borrow::Borrow<aya::maps::MapData>,
    V: PerCpuCounter,
{
    Ok(map
        .get(&index, 0)?
        .iter()
        .fold(V::default(), |total, value| total.plus(*value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_subtracts_class_by_class() {
        let mut before = ProtocolStats::default();
        before.counters[ProtocolClass::Tcp.index() as usize] = PacketCounter {
            packets: 3,
            bytes: 300,
        };
        let mut after = before;
        after.counters[ProtocolClass::Tcp.index() as usize] = PacketCounter {
            packets: 5,
            bytes: 420,
        };
        after.counters[ProtocolClass::Icmp.index() as usize] = PacketCounter {
            packets: 1,
            bytes: 98,
        };
        let delta = after.since(&before);
        assert_eq!(
            delta.get(ProtocolClass::Tcp),
            PacketCounter {
                packets: 2,
                bytes: 120
            }
        );
        assert_eq!(delta.packets(ProtocolClass::Icmp), 1);
        assert_eq!(delta.packets(ProtocolClass::Udp), 0);
    }
}
