//! Service lookup and backend selection for new flows.
//!
//! Owns the frontend lookup (VIP, port, protocol; NodePorts on the node's NodePort addresses),
//! `loadBalancerSourceRanges`, ClientIP session affinity and the choice among the live
//! generation's backend slots (uniformly random, or the Maglev table's slot for the flow's
//! hash). Never creates conntrack entries and never rewrites packets.

use aya_ebpf::{helpers::bpf_get_prandom_u32, maps::lpm_trie::Key};
use proxy_common::{
    AffinityKey, AffinityValue, BACKEND_FLAG_TERMINATING, Backend, BackendSlotKey,
    SERVICE_FLAG_AFFINITY, SERVICE_FLAG_EXTERNAL, SERVICE_FLAG_MAGLEV, SERVICE_FLAG_SOURCE_RANGES,
    ServiceKey, ServiceValue, SourceRangeKey, source_range_prefix_length,
};

use crate::{
    maps::{AFFINITY, BACKEND_SLOTS, BACKENDS, NODEPORT_ADDRESSES, SERVICES, SOURCE_RANGES},
    parse::Ipv4Flow,
};

const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;

/// The service frontend `flow` is addressed to, if any.
#[inline(always)]
pub fn service_of(flow: &Ipv4Flow) -> Option<ServiceValue> {
    service(&ServiceKey {
        address: flow.destination,
        port: flow.destination_port,
        protocol: flow.protocol,
        padding: 0,
    })
}

/// The north-south frontend `flow` is addressed to: an external or load-balancer IP, or a
/// NodePort when the destination is one of the node's NodePort addresses (any address for a
/// packet another node tunnelled here: it was addressed to that node). ClusterIPs are not
/// balanced for traffic from outside.
#[inline(always)]
pub fn external_service_of(flow: &Ipv4Flow, tunnelled: bool) -> Option<ServiceValue> {
    if let Some(service) = service_of(flow) {
        return (service.flags & SERVICE_FLAG_EXTERNAL != 0).then_some(service);
    }
    if !tunnelled {
        NODEPORT_ADDRESSES.get_ptr(flow.destination)?;
    }
    service(&ServiceKey {
        address: 0,
        port: flow.destination_port,
        protocol: flow.protocol,
        padding: 0,
    })
}

/// Whether `source` may use `service` (its `loadBalancerSourceRanges`, if it has any).
#[inline(always)]
pub fn source_allowed(service: &ServiceValue, source: u32) -> bool {
    if service.flags & SERVICE_FLAG_SOURCE_RANGES == 0 {
        return true;
    }
    let key = Key::new(
        source_range_prefix_length(32),
        SourceRangeKey {
            service_id: service.service_id.to_be(),
            address: source,
        },
    );
    SOURCE_RANGES.get(&key).is_some()
}

/// The service frontend with this key, if any.
#[inline(always)]
pub fn service(key: &ServiceKey) -> Option<ServiceValue> {
    // SAFETY: the pointer comes from a successful lookup; the value is copied at once.
    SERVICES.get_ptr(key).map(|value| unsafe { *value })
}

/// The backend with this id, if it still exists.
#[inline(always)]
pub fn backend(backend_id: u32) -> Option<Backend> {
    // SAFETY: as in `service_of`.
    BACKENDS.get_ptr(backend_id).map(|value| unsafe { *value })
}

/// Picks the backend of a new flow from `client`: the affinity backend while it is valid, else
/// a slot of the live generation: `flow_hash`'s slot of a Maglev table, or a uniformly random
/// one. Records the affinity when the service has it.
#[inline(always)]
pub fn select(
    service: &ServiceValue,
    client: u32,
    now: u64,
    flow_hash: u32,
) -> Option<(u32, Backend)> {
    let affinity_key = AffinityKey {
        service_id: service.service_id,
        client_address: client,
    };
    let affinity = service.flags & SERVICE_FLAG_AFFINITY != 0;
    if affinity && let Some(previous) = AFFINITY.get_ptr(affinity_key) {
        // SAFETY: as in `service_of`.
        let previous = unsafe { *previous };
        let timeout = u64::from(service.affinity_timeout_seconds) * NANOSECONDS_PER_SECOND;
        if now.saturating_sub(previous.last_used_ns) <= timeout
            && let Some(chosen) = backend(previous.backend_id)
            && chosen.flags & BACKEND_FLAG_TERMINATING == 0
        {
            remember(&affinity_key, previous.backend_id, now);
            return Some((previous.backend_id, chosen));
        }
    }
    if service.backend_count == 0 {
        return None;
    }
    let pick = if service.flags & SERVICE_FLAG_MAGLEV != 0 {
        flow_hash
    } else {
        // SAFETY: a helper without arguments.
        unsafe { bpf_get_prandom_u32() }
    };
    let slot = BackendSlotKey {
        service_id: service.service_id,
        generation: service.generation,
        padding: 0,
        slot: (pick % u32::from(service.backend_count)) as u16,
    };
    // SAFETY: as in `service_of`.
    let backend_id = BACKEND_SLOTS.get_ptr(slot).map(|id| unsafe { *id })?;
    let chosen = backend(backend_id)?;
    if affinity {
        remember(&affinity_key, backend_id, now);
    }
    Some((backend_id, chosen))
}

#[inline(always)]
fn remember(key: &AffinityKey, backend_id: u32, now: u64) {
    let value = AffinityValue {
        last_used_ns: now,
        backend_id,
        padding: 0,
    };
    // An LRU map evicts instead of failing; a failed update only costs stickiness.
    let _ = AFFINITY.insert(key, value, 0);
}
