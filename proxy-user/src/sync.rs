//! The pure half of the diff-based map sync: from what the service maps hold now
//! ([`DataplaneState`]) and what they should hold ([`Desired`]), the ordered map updates
//! ([`SyncPlan`]) that get there without ever exposing a half-written service.
//!
//! Owns id allocation (stable `service_id` per frontend, stable `backend_id` per backend, reused
//! from the maps so a restarted skiff-proxy adopts pinned maps without flushing) and the update
//! order. It never touches a map (`maps.rs` executes the plan) and knows nothing about
//! Kubernetes objects.
//!
//! Invariants of every plan, in op order:
//! 1. backends are written before the slots that name them, slots before the service entry that
//!    makes them live;
//! 2. a changed service's slots go into its non-live generation, one `PutService` switches
//!    generation and count, and only then are the old generation's slots deleted;
//! 3. a backend or slot is deleted only once no live service entry refers to it;
//! 4. a removed service's entry is deleted before its slots;
//! 5. an unchanged service produces no op: planning the state a plan produced again is empty;
//! 6. an id still present in the maps is never handed to something else in the same plan.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use proxy_common::{
    BACKEND_FLAG_LOCAL, BACKEND_FLAG_READY, BACKEND_FLAG_SERVING, BACKEND_FLAG_TERMINATING,
    Backend, BackendSlotKey, SERVICE_FLAG_AFFINITY, SERVICE_FLAG_DROP_WHEN_EMPTY, SERVICE_FLAG_DSR,
    SERVICE_FLAG_EXTERNAL, SERVICE_FLAG_EXTERNAL_LOCAL, SERVICE_FLAG_MAGLEV,
    SERVICE_FLAG_SOURCE_RANGES, ServiceKey, ServiceValue,
};

use crate::maglev;
use crate::translate::{
    BackendAddr, BackendConditions, Desired, DesiredFrontend, Frontend, LoadBalancerMode, Protocol,
    ServicePortName, SourceRange,
};

/// What a plan works within: the id spaces (ids are `1..max_services` and `1..max_backends`;
/// they index the per-service and per-backend statistics arrays, whose entry 0 is never used),
/// the Maglev table size M (the slots of a Maglev frontend) and the default load-balancer mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    pub max_services: u32,
    pub max_backends: u32,
    pub maglev_table_size: u16,
    /// `--lb-mode`: how external frontends without a `skiff.dev/lb-mode` annotation reach
    /// remote backends.
    pub default_load_balancer_mode: LoadBalancerMode,
}

/// What the service maps hold: `SERVICES`, `BACKEND_SLOTS` and `BACKENDS`, plus which protocol
/// each backend id was allocated for (the `BACKENDS` value does not say).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataplaneState {
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    pub slots: BTreeMap<BackendSlotKey, u32>,
    pub backends: BTreeMap<u32, Backend>,
    /// The protocol of each backend id, where known. [`DataplaneState::from_maps`] learns it from
    /// the live slots that name the backend (through their service's protocol); a backend no live
    /// slot names (one kept only for existing flows) is adopted by address and port alone.
    pub backend_protocols: BTreeMap<u32, Protocol>,
    /// `SOURCE_RANGES`: the allowed source prefixes, by service id.
    pub source_ranges: BTreeSet<(u32, SourceRange)>,
}

/// One map update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    PutBackend {
        id: u32,
        backend: Backend,
    },
    PutSlot {
        key: BackendSlotKey,
        backend_id: u32,
    },
    PutService {
        key: ServiceKey,
        value: ServiceValue,
    },
    PutSourceRange {
        service_id: u32,
        range: SourceRange,
    },
    DeleteSlot(BackendSlotKey),
    DeleteService(ServiceKey),
    DeleteBackend(u32),
    DeleteSourceRange {
        service_id: u32,
        range: SourceRange,
    },
}

/// The map updates that turn the current state into the desired one, to be executed in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub ops: Vec<MapOp>,
    /// The protocol of every backend id once the plan is executed.
    pub backend_protocols: BTreeMap<u32, Protocol>,
}

impl SyncPlan {
    /// Whether the maps already hold the desired content.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error(
        "no service id left for frontend {frontend} ({service}): service ids must stay below \
         max_services = {max_services}, and all are in use"
    )]
    ServiceIdsExhausted {
        frontend: Frontend,
        service: ServicePortName,
        max_services: u32,
    },
    #[error(
        "no backend id left for backend {backend}: backend ids must stay below \
         max_backends = {max_backends}, and all are in use"
    )]
    BackendIdsExhausted {
        backend: BackendAddr,
        max_backends: u32,
    },
    #[error(
        "frontend {frontend} ({service}) has {count} backends for new flows; a service holds at \
         most {max} backend slots"
    )]
    TooManySlots {
        frontend: Frontend,
        service: ServicePortName,
        count: usize,
        max: usize,
    },
}

/// The `SERVICES` key of a frontend (address and port in network byte order).
pub fn service_key(frontend: &Frontend) -> ServiceKey {
    ServiceKey {
        address: u32::from_ne_bytes(frontend.address.octets()),
        port: frontend.port.to_be(),
        protocol: frontend.protocol.ip_protocol(),
        padding: 0,
    }
}

/// The frontend a `SERVICES` key stands for; `None` for a protocol the dataplane does not balance.
pub fn frontend_of(key: &ServiceKey) -> Option<Frontend> {
    Some(Frontend {
        address: Ipv4Addr::from(key.address.to_ne_bytes()),
        port: u16::from_be(key.port),
        protocol: Protocol::from_ip_protocol(key.protocol)?,
    })
}

/// The `SERVICE_FLAG_*` bits of a frontend (`default_mode`: `--lb-mode`).
pub fn service_flags(frontend: &DesiredFrontend, default_mode: LoadBalancerMode) -> u8 {
    let mut flags = 0;
    if frontend.session_affinity_timeout_seconds.is_some() {
        flags |= SERVICE_FLAG_AFFINITY;
    }
    if frontend.drop_when_no_endpoints {
        flags |= SERVICE_FLAG_DROP_WHEN_EMPTY;
    }
    if frontend.kind.is_external() {
        flags |= SERVICE_FLAG_EXTERNAL;
        if frontend.load_balancer_mode.unwrap_or(default_mode) == LoadBalancerMode::Dsr {
            flags |= SERVICE_FLAG_DSR;
        }
    }
    if frontend.maglev {
        flags |= SERVICE_FLAG_MAGLEV;
    }
    if frontend.external_traffic_local {
        flags |= SERVICE_FLAG_EXTERNAL_LOCAL;
    }
    if !frontend.source_ranges.is_empty() {
        flags |= SERVICE_FLAG_SOURCE_RANGES;
    }
    flags
}

/// The `BACKEND_FLAG_*` bits of a backend's conditions.
pub fn backend_flags(conditions: &BackendConditions) -> u8 {
    let mut flags = 0;
    for (set, flag) in [
        (conditions.ready, BACKEND_FLAG_READY),
        (conditions.serving, BACKEND_FLAG_SERVING),
        (conditions.terminating, BACKEND_FLAG_TERMINATING),
        (conditions.local, BACKEND_FLAG_LOCAL),
    ] {
        if set {
            flags |= flag;
        }
    }
    flags
}

/// The `BACKENDS` value of a backend (address and port in network byte order).
pub fn backend_value(backend: &BackendAddr, conditions: &BackendConditions) -> Backend {
    Backend {
        address: u32::from_ne_bytes(backend.address.octets()),
        port: backend.port.to_be(),
        flags: backend_flags(conditions),
        padding: 0,
    }
}

fn backend_address(backend: &Backend) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(backend.address.to_ne_bytes()),
        u16::from_be(backend.port),
    )
}

fn slot_key(service_id: u32, generation: u8, slot: u16) -> BackendSlotKey {
    BackendSlotKey {
        service_id,
        generation,
        padding: 0,
        slot,
    }
}

impl DataplaneState {
    /// The state of maps read back from the kernel (e.g. pinned maps found at start), learning
    /// each backend's protocol from the live slots that name it.
    pub fn from_maps(
        services: impl IntoIterator<Item = (ServiceKey, ServiceValue)>,
        slots: impl IntoIterator<Item = (BackendSlotKey, u32)>,
        backends: impl IntoIterator<Item = (u32, Backend)>,
    ) -> DataplaneState {
        let mut state = DataplaneState {
            services: services.into_iter().collect(),
            slots: slots.into_iter().collect(),
            backends: backends.into_iter().collect(),
            backend_protocols: BTreeMap::new(),
            source_ranges: BTreeSet::new(),
        };
        let mut protocols = BTreeMap::new();
        for (key, value) in &state.services {
            let Some(protocol) = Protocol::from_ip_protocol(key.protocol) else {
                continue;
            };
            for backend_id in state.live_slots(value).into_iter().flatten() {
                if state.backends.contains_key(&backend_id) {
                    protocols.entry(backend_id).or_insert(protocol);
                }
            }
        }
        state.backend_protocols = protocols;
        state
    }

    /// The backend ids in slots `0..backend_count` of the live generation of a service, or `None`
    /// if one of those slots is missing.
    pub fn live_slots(&self, value: &ServiceValue) -> Option<Vec<u32>> {
        (0..value.backend_count)
            .map(|slot| {
                self.slots
                    .get(&slot_key(value.service_id, value.generation, slot))
                    .copied()
            })
            .collect()
    }

    /// The services whose live slots are incomplete or name a backend that does not exist: what
    /// a reader must never see. Empty for any state a plan's prefix produces from a sound state.
    pub fn half_written_services(&self) -> Vec<ServiceKey> {
        self.services
            .iter()
            .filter(|(_, value)| match self.live_slots(value) {
                None => true,
                Some(ids) => ids.iter().any(|id| !self.backends.contains_key(id)),
            })
            .map(|(key, _)| *key)
            .collect()
    }

    /// Executes one op on this in-memory copy of the maps.
    pub fn apply_op(&mut self, op: &MapOp) {
        match *op {
            MapOp::PutBackend { id, backend } => {
                self.backends.insert(id, backend);
            }
            MapOp::PutSlot { key, backend_id } => {
                self.slots.insert(key, backend_id);
            }
            MapOp::PutService { key, value } => {
                self.services.insert(key, value);
            }
            MapOp::DeleteSlot(key) => {
                self.slots.remove(&key);
            }
            MapOp::DeleteService(key) => {
                self.services.remove(&key);
            }
            MapOp::DeleteBackend(id) => {
                self.backends.remove(&id);
                self.backend_protocols.remove(&id);
            }
            MapOp::PutSourceRange { service_id, range } => {
                self.source_ranges.insert((service_id, range));
            }
            MapOp::DeleteSourceRange { service_id, range } => {
                self.source_ranges.remove(&(service_id, range));
            }
        }
    }

    /// Executes a whole plan on this in-memory copy of the maps.
    pub fn apply(&mut self, plan: &SyncPlan) {
        for op in &plan.ops {
            self.apply_op(op);
        }
        self.backend_protocols = plan.backend_protocols.clone();
    }
}

/// Plans the map updates from `current` to `desired`. On error (an id space or a slot count
/// exhausted) nothing is planned: the maps are to stay as they are.
pub fn plan(
    current: &DataplaneState,
    desired: &Desired,
    limits: PlanLimits,
) -> Result<SyncPlan, SyncError> {
    let wanted_backends = wanted_backends(desired);
    let backend_ids = assign_backend_ids(current, &wanted_backends, limits.max_backends)?;
    let service_ids = assign_service_ids(current, desired, limits.max_services)?;

    let mut ops = Vec::new();

    // Backends first: every slot written below names a backend that exists by then.
    let mut backend_ops: Vec<(u32, Backend)> = wanted_backends
        .iter()
        .filter_map(|(address, conditions)| {
            let id = *backend_ids.get(address)?;
            let value = backend_value(address, conditions);
            (current.backends.get(&id) != Some(&value)).then_some((id, value))
        })
        .collect();
    backend_ops.sort_by_key(|(id, _)| *id);
    ops.extend(
        backend_ops
            .into_iter()
            .map(|(id, backend)| MapOp::PutBackend { id, backend }),
    );

    // Removed services: the entry goes first, its slots with the other stale slots at the end.
    for key in current.services.keys() {
        let still_wanted = frontend_of(key).is_some_and(|f| desired.frontends.contains_key(&f));
        if !still_wanted {
            ops.push(MapOp::DeleteService(*key));
        }
    }

    // Services that must change id go first: until their entry switches, their old id may still
    // be live under a key that another service adopts, and its slots must not be overwritten.
    let (changing_id, keeping_id): (Vec<_>, Vec<_>) =
        desired.frontends.iter().partition(|(frontend, _)| {
            let key = service_key(frontend);
            current
                .services
                .get(&key)
                .is_some_and(|value| Some(&value.service_id) != service_ids.get(&key))
        });
    let mut final_slots: BTreeMap<BackendSlotKey, u32> = BTreeMap::new();
    let mut final_source_ranges: BTreeSet<(u32, SourceRange)> = BTreeSet::new();
    for (frontend, wanted) in changing_id.into_iter().chain(keeping_id) {
        let key = service_key(frontend);
        let Some(&service_id) = service_ids.get(&key) else {
            continue;
        };
        // A Maglev frontend's slots are its table: M slots, each naming the backend the table
        // puts there (the same on every node, as it depends only on the backend set).
        let slot_order = if wanted.maglev && !wanted.new_flow_backends.is_empty() {
            maglev::table(&wanted.new_flow_backends, limits.maglev_table_size)
        } else {
            wanted.new_flow_backends.clone()
        };
        let slot_backends: Vec<u32> = slot_order
            .iter()
            .filter_map(|backend| backend_ids.get(backend).copied())
            .collect();
        // Source ranges go in before the entry that makes the service check them.
        for range in &wanted.source_ranges {
            final_source_ranges.insert((service_id, *range));
            if !current.source_ranges.contains(&(service_id, *range)) {
                ops.push(MapOp::PutSourceRange {
                    service_id,
                    range: *range,
                });
            }
        }
        let too_many = || SyncError::TooManySlots {
            frontend: *frontend,
            service: wanted.service.clone(),
            count: slot_backends.len(),
            max: usize::from(u16::MAX),
        };
        let backend_count = u16::try_from(slot_backends.len()).map_err(|_| too_many())?;
        let mut value = ServiceValue {
            service_id,
            backend_count,
            generation: 0,
            flags: service_flags(wanted, limits.default_load_balancer_mode),
            affinity_timeout_seconds: wanted.session_affinity_timeout_seconds.unwrap_or(0),
            padding: 0,
        };
        let live = current.services.get(&key);
        let unchanged_slots = live.and_then(|live| {
            (live.service_id == service_id
                && current.live_slots(live).as_ref() == Some(&slot_backends))
            .then_some(live.generation)
        });
        if let Some(generation) = unchanged_slots {
            value.generation = generation;
        } else {
            value.generation = match live {
                Some(live) if live.service_id == service_id => u8::from(live.generation == 0),
                _ => 0,
            };
            for (slot, &backend_id) in (0..backend_count).zip(&slot_backends) {
                let key = slot_key(service_id, value.generation, slot);
                if current.slots.get(&key) != Some(&backend_id) {
                    ops.push(MapOp::PutSlot { key, backend_id });
                }
            }
        }
        for (slot, &backend_id) in (0..backend_count).zip(&slot_backends) {
            final_slots.insert(slot_key(service_id, value.generation, slot), backend_id);
        }
        if live != Some(&value) {
            ops.push(MapOp::PutService { key, value });
        }
    }

    // Every service entry is final now: slots no entry makes live can go, then the backends no
    // slot names.
    for key in current.slots.keys() {
        if !final_slots.contains_key(key) {
            ops.push(MapOp::DeleteSlot(*key));
        }
    }
    for &(service_id, range) in &current.source_ranges {
        if !final_source_ranges.contains(&(service_id, range)) {
            ops.push(MapOp::DeleteSourceRange { service_id, range });
        }
    }
    let kept_backend_ids: BTreeSet<u32> = backend_ids.values().copied().collect();
    for id in current.backends.keys() {
        if !kept_backend_ids.contains(id) {
            ops.push(MapOp::DeleteBackend(*id));
        }
    }

    let backend_protocols = backend_ids
        .iter()
        .map(|(backend, id)| (*id, backend.protocol))
        .collect();
    Ok(SyncPlan {
        ops,
        backend_protocols,
    })
}

/// Every backend any frontend needs, with its conditions. Should two frontends disagree on one
/// endpoint's conditions (slices caught mid-update), the most usable wins.
fn wanted_backends(desired: &Desired) -> BTreeMap<BackendAddr, BackendConditions> {
    let rank = |c: &BackendConditions| (c.ready, c.serving, !c.terminating, c.local);
    let mut wanted: BTreeMap<BackendAddr, BackendConditions> = BTreeMap::new();
    for frontend in desired.frontends.values() {
        // `new_flow_backends` is a subset of `backends`; one missing there is taken as ready.
        let listed = frontend
            .backends
            .iter()
            .map(|(backend, conditions)| (*backend, *conditions));
        let new_flow = frontend
            .new_flow_backends
            .iter()
            .filter(|backend| !frontend.backends.contains_key(backend))
            .map(|backend| (*backend, BackendConditions::READY));
        for (backend, conditions) in listed.chain(new_flow) {
            wanted
                .entry(backend)
                .and_modify(|known| {
                    if rank(&conditions) > rank(known) {
                        *known = conditions;
                    }
                })
                .or_insert(conditions);
        }
    }
    wanted
}

/// Hands out the lowest ids in `1..max` not taken. Ids only grow within one plan, so the search
/// resumes where the previous one stopped.
struct IdAllocator {
    taken: BTreeSet<u32>,
    next: u32,
    max: u32,
}

impl IdAllocator {
    fn new(taken: BTreeSet<u32>, max: u32) -> IdAllocator {
        IdAllocator {
            taken,
            next: 1,
            max,
        }
    }

    fn allocate(&mut self) -> Option<u32> {
        while self.next < self.max && self.taken.contains(&self.next) {
            self.next += 1;
        }
        if self.next >= self.max {
            return None;
        }
        let id = self.next;
        self.taken.insert(id);
        self.next += 1;
        Some(id)
    }
}

/// A backend keeps the id the maps already give its (address, port, protocol); one whose
/// protocol the maps do not tell is matched by address and port. Others get the lowest id not
/// used anywhere in the maps (a deleted backend's id is free only from the next plan on: an
/// existing flow may still name it until the backend is deleted).
fn assign_backend_ids(
    current: &DataplaneState,
    wanted: &BTreeMap<BackendAddr, BackendConditions>,
    max_backends: u32,
) -> Result<BTreeMap<BackendAddr, u32>, SyncError> {
    let valid = |id: u32| id != 0 && id < max_backends;
    let mut by_identity: BTreeMap<BackendAddr, u32> = BTreeMap::new();
    let mut by_address: BTreeMap<(Ipv4Addr, u16), Vec<u32>> = BTreeMap::new();
    for (&id, backend) in current.backends.iter().filter(|(id, _)| valid(**id)) {
        let (address, port) = backend_address(backend);
        match current.backend_protocols.get(&id) {
            Some(&protocol) => {
                by_identity
                    .entry(BackendAddr {
                        address,
                        port,
                        protocol,
                    })
                    .or_insert(id);
            }
            None => by_address.entry((address, port)).or_default().push(id),
        }
    }

    let mut assigned = BTreeMap::new();
    let mut taken: BTreeSet<u32> = current.backends.keys().copied().collect();
    taken.extend(current.slots.values().copied());
    let mut unassigned = Vec::new();
    for backend in wanted.keys() {
        let adopted = by_identity.get(backend).copied().or_else(|| {
            let candidates = by_address.get_mut(&(backend.address, backend.port))?;
            (!candidates.is_empty()).then(|| candidates.remove(0))
        });
        match adopted {
            Some(id) => {
                assigned.insert(*backend, id);
            }
            None => unassigned.push(*backend),
        }
    }
    let mut allocator = IdAllocator::new(taken, max_backends);
    for backend in unassigned {
        let id = allocator.allocate().ok_or(SyncError::BackendIdsExhausted {
            backend,
            max_backends,
        })?;
        assigned.insert(backend, id);
    }
    Ok(assigned)
}

/// A frontend keeps the id of its entry in the maps (if valid and not already kept by a frontend
/// before it); others get the lowest id not used anywhere in the maps.
fn assign_service_ids(
    current: &DataplaneState,
    desired: &Desired,
    max_services: u32,
) -> Result<BTreeMap<ServiceKey, u32>, SyncError> {
    let mut assigned = BTreeMap::new();
    let mut adopted = BTreeSet::new();
    for frontend in desired.frontends.keys() {
        let key = service_key(frontend);
        if let Some(value) = current.services.get(&key) {
            let id = value.service_id;
            if id != 0 && id < max_services && adopted.insert(id) {
                assigned.insert(key, id);
            }
        }
    }
    let mut taken: BTreeSet<u32> = current
        .services
        .values()
        .map(|value| value.service_id)
        .collect();
    taken.extend(current.slots.keys().map(|key| key.service_id));
    taken.extend(adopted);
    let mut allocator = IdAllocator::new(taken, max_services);
    for (frontend, wanted) in &desired.frontends {
        let key = service_key(frontend);
        if assigned.contains_key(&key) {
            continue;
        }
        let id = allocator
            .allocate()
            .ok_or_else(|| SyncError::ServiceIdsExhausted {
                frontend: *frontend,
                service: wanted.service.clone(),
                max_services,
            })?;
        assigned.insert(key, id);
    }
    Ok(assigned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PlanLimits = PlanLimits {
        max_services: 64,
        max_backends: 64,
        maglev_table_size: 7,
        default_load_balancer_mode: LoadBalancerMode::Snat,
    };

    fn frontend(address: &str, port: u16, protocol: Protocol) -> Frontend {
        Frontend {
            address: address.parse().expect("test address"),
            port,
            protocol,
        }
    }

    fn tcp(address: &str, port: u16) -> BackendAddr {
        BackendAddr {
            address: address.parse().expect("test address"),
            port,
            protocol: Protocol::Tcp,
        }
    }

    fn udp(address: &str, port: u16) -> BackendAddr {
        BackendAddr {
            address: address.parse().expect("test address"),
            port,
            protocol: Protocol::Udp,
        }
    }

    fn terminating() -> BackendConditions {
        BackendConditions {
            ready: false,
            serving: true,
            terminating: true,
            local: false,
        }
    }

    /// A frontend whose new flows go to `ready` and whose existing flows may also keep `draining`.
    fn service(name: &str, ready: &[BackendAddr], draining: &[BackendAddr]) -> DesiredFrontend {
        let mut backends: BTreeMap<BackendAddr, BackendConditions> = ready
            .iter()
            .map(|b| (*b, BackendConditions::READY))
            .collect();
        backends.extend(draining.iter().map(|b| (*b, terminating())));
        DesiredFrontend {
            service: ServicePortName {
                namespace: "default".to_owned(),
                name: name.to_owned(),
                port: String::new(),
            },
            session_affinity_timeout_seconds: None,
            drop_when_no_endpoints: false,
            new_flow_backends: ready.to_vec(),
            backends,
            ..DesiredFrontend::default()
        }
    }

    fn desired(frontends: Vec<(Frontend, DesiredFrontend)>) -> Desired {
        Desired {
            frontends: frontends.into_iter().collect(),
            ..Desired::default()
        }
    }

    fn web_frontend() -> Frontend {
        frontend("10.96.0.10", 80, Protocol::Tcp)
    }

    fn api_frontend() -> Frontend {
        frontend("10.96.0.11", 80, Protocol::Tcp)
    }

    fn dns_frontend() -> Frontend {
        frontend("10.96.0.53", 53, Protocol::Udp)
    }

    /// Plans and applies, checking the plan's prefixes never expose a half-written service.
    fn sync(state: &mut DataplaneState, wanted: &Desired) -> SyncPlan {
        let plan = plan(state, wanted, LIMITS).expect("plan");
        assert_sound_at_every_step(state, &plan);
        state.apply(&plan);
        plan
    }

    /// What a reader of the maps sees for each service: its new-flow backends in slot order.
    fn visible(state: &DataplaneState) -> BTreeMap<ServiceKey, Vec<(Ipv4Addr, u16)>> {
        state
            .services
            .iter()
            .map(|(key, value)| {
                let slots = state.live_slots(value).unwrap_or_default();
                let backends = slots
                    .iter()
                    .filter_map(|id| state.backends.get(id))
                    .map(backend_address)
                    .collect();
                (*key, backends)
            })
            .collect()
    }

    /// After every op of `plan`, no live service is half-written, and each live service shows
    /// either its complete old backend set or its complete new one.
    fn assert_sound_at_every_step(start: &DataplaneState, plan: &SyncPlan) {
        let before = visible(start);
        let mut end = start.clone();
        end.apply(plan);
        let after = visible(&end);
        let mut state = start.clone();
        for (step, op) in plan.ops.iter().enumerate() {
            state.apply_op(op);
            assert_eq!(
                state.half_written_services(),
                [],
                "after op {step} {op:?} of {:#?}",
                plan.ops
            );
            for (key, seen) in visible(&state) {
                assert!(
                    before.get(&key) == Some(&seen) || after.get(&key) == Some(&seen),
                    "after op {step} {op:?}, {key:?} shows {seen:?}: neither {:?} nor {:?}",
                    before.get(&key),
                    after.get(&key)
                );
            }
        }
    }

    /// A frontend as the maps hold it: flags, affinity timeout, new-flow backends in slot order.
    type FrontendContent = (u8, u32, Vec<(Ipv4Addr, u16)>);

    /// The maps hold exactly `wanted`: one entry per frontend with its flags and new-flow
    /// backends in slot order, the backends every frontend needs and nothing else.
    fn assert_holds(state: &DataplaneState, wanted: &Desired) {
        let frontends: BTreeMap<Frontend, FrontendContent> = state
            .services
            .iter()
            .map(|(key, value)| {
                let frontend = frontend_of(key).expect("balanced protocol");
                let slots = visible(state).remove(key).unwrap_or_default();
                (
                    frontend,
                    (value.flags, value.affinity_timeout_seconds, slots),
                )
            })
            .collect();
        let expected: BTreeMap<Frontend, FrontendContent> = wanted
            .frontends
            .iter()
            .map(|(frontend, wanted)| {
                let slots = wanted
                    .new_flow_backends
                    .iter()
                    .map(|b| (b.address, b.port))
                    .collect();
                let timeout = wanted.session_affinity_timeout_seconds.unwrap_or(0);
                (
                    *frontend,
                    (
                        service_flags(wanted, LoadBalancerMode::Snat),
                        timeout,
                        slots,
                    ),
                )
            })
            .collect();
        assert_eq!(frontends, expected);

        let live_slot_count: usize = state
            .services
            .values()
            .map(|v| usize::from(v.backend_count))
            .sum();
        assert_eq!(
            state.slots.len(),
            live_slot_count,
            "stale slots left: {:#?}",
            state.slots
        );

        let backends: BTreeMap<BackendAddr, u8> = state
            .backends
            .iter()
            .map(|(id, backend)| {
                let (address, port) = backend_address(backend);
                let protocol = state.backend_protocols[id];
                (
                    BackendAddr {
                        address,
                        port,
                        protocol,
                    },
                    backend.flags,
                )
            })
            .collect();
        let expected: BTreeMap<BackendAddr, u8> = wanted_backends(wanted)
            .iter()
            .map(|(backend, conditions)| (*backend, backend_flags(conditions)))
            .collect();
        assert_eq!(backends, expected);
    }

    fn service_id(state: &DataplaneState, frontend: Frontend) -> u32 {
        state.services[&service_key(&frontend)].service_id
    }

    fn backend_id(state: &DataplaneState, backend: BackendAddr) -> u32 {
        state
            .backends
            .iter()
            .find(|(id, value)| {
                backend_address(value) == (backend.address, backend.port)
                    && state.backend_protocols.get(id) == Some(&backend.protocol)
            })
            .map(|(id, _)| *id)
            .expect("backend in the maps")
    }

    #[test]
    fn keys_and_values_are_in_network_byte_order() {
        let key = service_key(&frontend("10.96.0.10", 80, Protocol::Udp));
        let value = backend_value(&tcp("10.0.1.5", 8080), &BackendConditions::READY);

        assert_eq!(key.address.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(key.port.to_ne_bytes(), [0, 80]);
        assert_eq!(key.protocol, 17);
        assert_eq!(value.address.to_ne_bytes(), [10, 0, 1, 5]);
        assert_eq!(value.port.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!(value.flags, BACKEND_FLAG_READY | BACKEND_FLAG_SERVING);
        assert_eq!(
            frontend_of(&key),
            Some(frontend("10.96.0.10", 80, Protocol::Udp))
        );
    }

    #[test]
    fn new_service_writes_backends_then_slots_then_the_service_entry() {
        let wanted = desired(vec![(
            web_frontend(),
            service("web", &[tcp("10.0.1.5", 8080), tcp("10.0.1.6", 8080)], &[]),
        )]);

        let plan = plan(&DataplaneState::default(), &wanted, LIMITS).expect("plan");

        let kinds: Vec<&str> = plan
            .ops
            .iter()
            .map(|op| match op {
                MapOp::PutBackend { .. } => "backend",
                MapOp::PutSlot { .. } => "slot",
                MapOp::PutService { .. } => "service",
                _ => "delete",
            })
            .collect();
        assert_eq!(kinds, ["backend", "backend", "slot", "slot", "service"]);
        let mut state = DataplaneState::default();
        state.apply(&plan);
        assert_holds(&state, &wanted);
    }

    #[test]
    fn ids_start_at_one_and_are_the_lowest_free() {
        let mut state = DataplaneState::default();
        sync(
            &mut state,
            &desired(vec![
                (
                    web_frontend(),
                    service("web", &[tcp("10.0.1.5", 8080)], &[]),
                ),
                (
                    api_frontend(),
                    service("api", &[tcp("10.0.2.5", 8080)], &[]),
                ),
            ]),
        );
        assert_eq!(
            (
                service_id(&state, web_frontend()),
                service_id(&state, api_frontend())
            ),
            (1, 2)
        );
        assert_eq!(
            (
                backend_id(&state, tcp("10.0.1.5", 8080)),
                backend_id(&state, tcp("10.0.2.5", 8080))
            ),
            (1, 2)
        );

        sync(
            &mut state,
            &desired(vec![(
                api_frontend(),
                service("api", &[tcp("10.0.2.5", 8080)], &[]),
            )]),
        );
        sync(
            &mut state,
            &desired(vec![
                (
                    api_frontend(),
                    service("api", &[tcp("10.0.2.5", 8080)], &[]),
                ),
                (dns_frontend(), service("dns", &[udp("10.0.3.5", 53)], &[])),
            ]),
        );

        assert_eq!(service_id(&state, api_frontend()), 2);
        assert_eq!(
            service_id(&state, dns_frontend()),
            1,
            "id 1 was freed by the previous plan"
        );
        assert_eq!(backend_id(&state, udp("10.0.3.5", 53)), 1);
    }

    #[test]
    fn id_allocation_fills_gaps_before_growing_and_stops_below_the_limit() {
        let mut allocator = IdAllocator::new(BTreeSet::from([1, 3, 4]), 7);

        let ids: Vec<Option<u32>> = (0..5).map(|_| allocator.allocate()).collect();

        assert_eq!(ids, [Some(2), Some(5), Some(6), None, None]);
    }

    #[test]
    fn resync_of_the_same_desired_state_is_an_empty_plan() {
        let wanted = desired(vec![
            (
                web_frontend(),
                service("web", &[tcp("10.0.1.5", 8080)], &[tcp("10.0.1.9", 8080)]),
            ),
            (dns_frontend(), service("dns", &[], &[])),
        ]);
        let mut state = DataplaneState::default();
        sync(&mut state, &wanted);

        let again = plan(&state, &wanted, LIMITS).expect("plan");

        assert_eq!(again.ops, []);
    }

    #[test]
    fn changed_backend_set_goes_through_the_other_generation() {
        let mut state = DataplaneState::default();
        sync(
            &mut state,
            &desired(vec![(
                web_frontend(),
                service("web", &[tcp("10.0.1.5", 8080)], &[]),
            )]),
        );
        let id = service_id(&state, web_frontend());

        let plan = sync(
            &mut state,
            &desired(vec![(
                web_frontend(),
                service("web", &[tcp("10.0.1.5", 8080), tcp("10.0.1.6", 8080)], &[]),
            )]),
        );

        let new_backend = backend_id(&state, tcp("10.0.1.6", 8080));
        let old_backend = backend_id(&state, tcp("10.0.1.5", 8080));
        assert_eq!(
            plan.ops,
            [
                MapOp::PutBackend {
                    id: new_backend,
                    backend: backend_value(&tcp("10.0.1.6", 8080), &BackendConditions::READY)
                },
                MapOp::PutSlot {
                    key: slot_key(id, 1, 0),
                    backend_id: old_backend
                },
                MapOp::PutSlot {
                    key: slot_key(id, 1, 1),
                    backend_id: new_backend
                },
                MapOp::PutService {
                    key: service_key(&web_frontend()),
                    value: ServiceValue {
                        service_id: id,
                        backend_count: 2,
                        generation: 1,
                        flags: 0,
                        affinity_timeout_seconds: 0,
                        padding: 0
                    },
                },
                MapOp::DeleteSlot(slot_key(id, 0, 0)),
            ]
        );
    }

    #[test]
    fn removed_backend_is_deleted_only_after_the_service_stops_using_it() {
        let mut state = DataplaneState::default();
        sync(
            &mut state,
            &desired(vec![(
                web_frontend(),
                service("web", &[tcp("10.0.1.5", 8080), tcp("10.0.1.6", 8080)], &[]),
            )]),
        );
        let removed = backend_id(&state, tcp("10.0.1.6", 8080));

        let plan = sync(
            &mut state,
            &desired(vec![(
                web_frontend(),
                service("web", &[tcp("10.0.1.5", 8080)], &[]),
            )]),
        );

        let switch = plan
            .ops
            .iter()
            .position(|op| matches!(op, MapOp::PutService { .. }))
            .expect("switch");
        let delete = plan
            .ops
            .iter()
            .position(|op| *op == MapOp::DeleteBackend(removed))
            .expect("delete");
        assert!(switch < delete, "{:#?}", plan.ops);
    }

    #[test]
    fn removed_service_entry_is_deleted_before_its_slots_and_backends() {
        let mut state = DataplaneState::default();
        sync(
            &mut state,
            &desired(vec![(
                web_frontend(),
                service("web", &[tcp("10.0.1.5", 8080)], &[]),
            )]),
        );

        let plan = sync(&mut state, &Desired::default());

        assert_eq!(
            plan.ops,
            [
                MapOp::DeleteService(service_key(&web_frontend())),
                MapOp::DeleteSlot(slot_key(1, 0, 0)),
                MapOp::DeleteBackend(1),
            ]
        );
    }

    #[test]
    fn flag_change_alone_rewrites_only_the_service_entry() {
        let mut state = DataplaneState::default();
        let mut web = service("web", &[tcp("10.0.1.5", 8080)], &[]);
        sync(&mut state, &desired(vec![(web_frontend(), web.clone())]));
        web.session_affinity_timeout_seconds = Some(60);

        let plan = sync(&mut state, &desired(vec![(web_frontend(), web)]));

        assert_eq!(
            plan.ops,
            [MapOp::PutService {
                key: service_key(&web_frontend()),
                value: ServiceValue {
                    service_id: 1,
                    backend_count: 1,
                    generation: 0,
                    flags: SERVICE_FLAG_AFFINITY,
                    affinity_timeout_seconds: 60,
                    padding: 0,
                },
            }]
        );
    }

    #[test]
    fn backend_turning_terminating_updates_its_flags_in_place_and_leaves_the_slots() {
        let mut state = DataplaneState::default();
        sync(
            &mut state,
            &desired(vec![(
                web_frontend(),
                service("web", &[tcp("10.0.1.5", 8080), tcp("10.0.1.6", 8080)], &[]),
            )]),
        );
        let draining = backend_id(&state, tcp("10.0.1.6", 8080));

        let plan = sync(
            &mut state,
            &desired(vec![(
                web_frontend(),
                service("web", &[tcp("10.0.1.5", 8080)], &[tcp("10.0.1.6", 8080)]),
            )]),
        );

        assert_eq!(
            plan.ops[0],
            MapOp::PutBackend {
                id: draining,
                backend: backend_value(&tcp("10.0.1.6", 8080), &terminating())
            }
        );
        assert!(
            !plan
                .ops
                .iter()
                .any(|op| matches!(op, MapOp::DeleteBackend(_)))
        );
        assert_eq!(
            backend_id(&state, tcp("10.0.1.6", 8080)),
            draining,
            "existing flows keep their backend id"
        );
    }

    #[test]
    fn restarted_proxy_adopts_the_maps_without_rewriting_anything() {
        let wanted = desired(vec![
            (
                web_frontend(),
                service(
                    "web",
                    &[tcp("10.0.1.5", 8080), tcp("10.0.1.6", 8080)],
                    &[tcp("10.0.1.7", 8080)],
                ),
            ),
            (
                frontend("10.96.0.53", 53, Protocol::Tcp),
                service("dns", &[tcp("10.0.3.5", 53)], &[udp("10.0.3.6", 53)]),
            ),
            (
                dns_frontend(),
                service("dns", &[udp("10.0.3.5", 53)], &[tcp("10.0.3.6", 53)]),
            ),
        ]);
        let mut running = DataplaneState::default();
        sync(&mut running, &wanted);

        // What a new process reads from the pinned maps: no record of backend protocols.
        let adopted = DataplaneState::from_maps(
            running.services.clone(),
            running.slots.clone(),
            running.backends.clone(),
        );
        let plan = plan(&adopted, &wanted, LIMITS).expect("plan");

        assert_eq!(plan.ops, []);
        assert_eq!(plan.backend_protocols, running.backend_protocols);
    }

    #[test]
    fn restart_after_a_crash_mid_plan_completes_the_update() {
        let mut state = DataplaneState::default();
        sync(
            &mut state,
            &desired(vec![(
                web_frontend(),
                service("web", &[tcp("10.0.1.5", 8080)], &[]),
            )]),
        );
        let wanted = desired(vec![(
            web_frontend(),
            service("web", &[tcp("10.0.1.6", 8080), tcp("10.0.1.7", 8080)], &[]),
        )]);
        let interrupted = plan(&state, &wanted, LIMITS).expect("plan");
        for op in &interrupted.ops[..3] {
            state.apply_op(op);
        }

        let mut adopted = DataplaneState::from_maps(state.services, state.slots, state.backends);
        sync(&mut adopted, &wanted);

        assert_holds(&adopted, &wanted);
    }

    #[test]
    fn exhausted_service_ids_are_an_error_naming_the_limit_and_plan_nothing() {
        let limits = PlanLimits {
            max_services: 2,
            max_backends: 64,
            maglev_table_size: 7,
            default_load_balancer_mode: LoadBalancerMode::Snat,
        };
        let wanted = desired(vec![
            (web_frontend(), service("web", &[], &[])),
            (api_frontend(), service("api", &[], &[])),
        ]);

        let error =
            plan(&DataplaneState::default(), &wanted, limits).expect_err("only id 1 exists");

        assert_eq!(
            error.to_string(),
            "no service id left for frontend 10.96.0.11:80/TCP (default/api): service ids must \
             stay below max_services = 2, and all are in use"
        );
    }

    #[test]
    fn exhausted_backend_ids_are_an_error_naming_the_limit() {
        let limits = PlanLimits {
            max_services: 64,
            max_backends: 2,
            maglev_table_size: 7,
            default_load_balancer_mode: LoadBalancerMode::Snat,
        };
        let wanted = desired(vec![(
            web_frontend(),
            service("web", &[tcp("10.0.1.5", 8080), tcp("10.0.1.6", 8080)], &[]),
        )]);

        let error =
            plan(&DataplaneState::default(), &wanted, limits).expect_err("only id 1 exists");

        assert!(
            matches!(
                error,
                SyncError::BackendIdsExhausted {
                    max_backends: 2,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("10.0.1.6:8080/TCP"), "{error}");
    }

    #[test]
    fn ids_of_deleted_backends_are_not_reused_within_the_same_plan() {
        let limits = PlanLimits {
            max_services: 64,
            max_backends: 3,
            maglev_table_size: 7,
            default_load_balancer_mode: LoadBalancerMode::Snat,
        };
        let mut state = DataplaneState::default();
        let plan_one = plan(
            &state,
            &desired(vec![(
                web_frontend(),
                service("web", &[tcp("10.0.1.5", 8080)], &[]),
            )]),
            limits,
        )
        .expect("plan");
        state.apply(&plan_one);
        let replaced = desired(vec![(
            web_frontend(),
            service("web", &[tcp("10.0.1.6", 8080)], &[]),
        )]);

        let plan_two = plan(&state, &replaced, limits).expect("id 2 is free");
        state.apply(&plan_two);

        assert_eq!(backend_id(&state, tcp("10.0.1.6", 8080)), 2);
    }

    #[test]
    fn duplicate_service_ids_in_adopted_maps_are_repaired_without_a_half_written_service() {
        // Maps left by a buggy writer: two entries share service id 1, with different live
        // generations; a third entry has the invalid id 0.
        let mut state = DataplaneState::default();
        state.backends.insert(
            1,
            backend_value(&tcp("10.0.1.5", 8080), &BackendConditions::READY),
        );
        state.backends.insert(
            2,
            backend_value(&tcp("10.0.2.5", 8080), &BackendConditions::READY),
        );
        state.slots.insert(slot_key(1, 0, 0), 1);
        state.slots.insert(slot_key(1, 1, 0), 2);
        let value = |generation| ServiceValue {
            service_id: 1,
            backend_count: 1,
            generation,
            ..ServiceValue::default()
        };
        state
            .services
            .insert(service_key(&web_frontend()), value(0));
        state
            .services
            .insert(service_key(&api_frontend()), value(1));
        state
            .services
            .insert(service_key(&dns_frontend()), ServiceValue::default());
        let mut state = DataplaneState::from_maps(state.services, state.slots, state.backends);
        let wanted = desired(vec![
            (
                web_frontend(),
                service("web", &[tcp("10.0.1.6", 8080)], &[]),
            ),
            (
                api_frontend(),
                service("api", &[tcp("10.0.2.5", 8080)], &[]),
            ),
            (dns_frontend(), service("dns", &[udp("10.0.3.5", 53)], &[])),
        ]);

        sync(&mut state, &wanted);

        assert_holds(&state, &wanted);
        let ids: BTreeSet<u32> = state.services.values().map(|v| v.service_id).collect();
        assert_eq!(ids.len(), 3);
    }

    /// The property: over sequences of desired states, every plan keeps every live service whole
    /// at every op, ends in exactly the desired content, keeps ids stable, and a resync is empty.
    #[test]
    fn sequences_of_desired_states_never_expose_a_half_written_service() {
        let a = tcp("10.0.1.5", 8080);
        let b = tcp("10.0.1.6", 8080);
        let c = tcp("10.0.1.7", 8080);
        let d = tcp("10.0.1.8", 9090);
        let dns_a = udp("10.0.3.5", 53);
        let dns_b = udp("10.0.3.6", 53);
        let web_metrics = frontend("10.96.0.10", 9090, Protocol::Tcp);
        let mut affinity = service("web", &[a, b], &[]);
        affinity.session_affinity_timeout_seconds = Some(10_800);
        let mut local_only = service("api", &[], &[c]);
        local_only.drop_when_no_endpoints = true;

        let sequences: Vec<Vec<Desired>> = vec![
            // Backends come and go; one drains (terminating), then leaves.
            vec![
                desired(vec![(web_frontend(), service("web", &[a], &[]))]),
                desired(vec![(web_frontend(), service("web", &[a, b, c], &[]))]),
                desired(vec![(web_frontend(), service("web", &[a, c], &[b]))]),
                desired(vec![(web_frontend(), service("web", &[a, c], &[]))]),
                desired(vec![(web_frontend(), service("web", &[], &[]))]),
                desired(vec![(web_frontend(), service("web", &[b], &[]))]),
            ],
            // Ports and services are added and removed; backends are shared between services.
            vec![
                desired(vec![(web_frontend(), service("web", &[a, b], &[]))]),
                desired(vec![
                    (web_frontend(), service("web", &[a, b], &[])),
                    (web_metrics, service("web", &[d], &[])),
                    (api_frontend(), service("api", &[a, c], &[])),
                ]),
                desired(vec![
                    (web_metrics, service("web", &[d], &[])),
                    (api_frontend(), service("api", &[b, c], &[a])),
                    (dns_frontend(), service("dns", &[dns_a, dns_b], &[])),
                ]),
                desired(vec![(dns_frontend(), service("dns", &[dns_b], &[dns_a]))]),
                desired(vec![]),
                desired(vec![(web_frontend(), service("web", &[a, b], &[]))]),
            ],
            // Ready endpoints switch to terminating and back; flags change; serving fallback.
            vec![
                desired(vec![
                    (web_frontend(), service("web", &[a, b], &[])),
                    (api_frontend(), service("api", &[c], &[])),
                ]),
                desired(vec![
                    (web_frontend(), affinity.clone()),
                    (api_frontend(), local_only.clone()),
                ]),
                desired(vec![
                    (web_frontend(), service("web", &[b], &[a])),
                    (api_frontend(), service("api", &[c], &[])),
                ]),
                desired(vec![
                    (web_frontend(), service("web", &[a], &[b])),
                    (api_frontend(), local_only),
                ]),
                desired(vec![
                    (web_frontend(), affinity),
                    (api_frontend(), service("api", &[a, b, c], &[])),
                ]),
            ],
        ];

        for (number, sequence) in sequences.iter().enumerate() {
            let mut state = DataplaneState::default();
            let mut previous: Option<DataplaneState> = None;
            for (step, wanted) in sequence.iter().enumerate() {
                sync(&mut state, wanted);

                assert_holds(&state, wanted);
                assert_eq!(
                    plan(&state, wanted, LIMITS).expect("plan").ops,
                    [],
                    "sequence {number} step {step}: resync"
                );
                if let Some(previous) = &previous {
                    for frontend in wanted.frontends.keys() {
                        let key = service_key(frontend);
                        if let Some(before) = previous.services.get(&key) {
                            assert_eq!(
                                before.service_id, state.services[&key].service_id,
                                "{frontend} kept its id"
                            );
                        }
                    }
                    for (id, protocol) in &previous.backend_protocols {
                        if let (Some(before), Some(now)) =
                            (previous.backends.get(id), state.backends.get(id))
                        {
                            assert_eq!(
                                backend_address(before),
                                backend_address(now),
                                "backend id {id} kept its address"
                            );
                            assert_eq!(Some(protocol), state.backend_protocols.get(id));
                        }
                    }
                }
                previous = Some(state.clone());
            }
        }
    }

    fn node_port_frontend() -> Frontend {
        frontend("0.0.0.0", 30080, Protocol::Tcp)
    }

    fn external(mut wanted: DesiredFrontend) -> DesiredFrontend {
        wanted.kind = crate::translate::FrontendKind::NodePort;
        wanted.maglev = true;
        wanted
    }

    #[test]
    fn maglev_frontend_slots_hold_its_table_and_flags_mark_it_external() {
        let backends = [
            tcp("10.0.1.5", 8080),
            tcp("10.0.1.6", 8080),
            tcp("10.0.2.7", 8080),
        ];
        let wanted = desired(vec![(
            node_port_frontend(),
            external(service("web", &backends, &[])),
        )]);
        let planned = plan(&DataplaneState::default(), &wanted, LIMITS).expect("plan");
        let mut state = DataplaneState::default();
        state.apply(&planned);
        let value = state
            .services
            .get(&service_key(&node_port_frontend()))
            .expect("service entry");
        assert_eq!(value.backend_count, LIMITS.maglev_table_size);
        assert_eq!(
            value.flags & (SERVICE_FLAG_MAGLEV | SERVICE_FLAG_EXTERNAL),
            SERVICE_FLAG_MAGLEV | SERVICE_FLAG_EXTERNAL
        );
        let table = maglev::table(&backends, LIMITS.maglev_table_size);
        let slots: Vec<(Ipv4Addr, u16)> = state
            .live_slots(value)
            .expect("complete slots")
            .iter()
            .map(|id| backend_address(&state.backends[id]))
            .collect();
        let expected: Vec<(Ipv4Addr, u16)> = table
            .iter()
            .map(|backend| (backend.address, backend.port))
            .collect();
        assert_eq!(slots, expected, "the slots are the Maglev table");
        assert!(
            plan(&state, &wanted, LIMITS).expect("plan").is_empty(),
            "an unchanged table plans nothing"
        );
    }

    #[test]
    fn source_ranges_are_written_before_their_service_and_removed_after_it() {
        let range = SourceRange {
            address: "192.0.2.0".parse().expect("address"),
            prefix_length: 24,
        };
        let mut ranged = external(service("web", &[tcp("10.0.1.5", 8080)], &[]));
        ranged.kind = crate::translate::FrontendKind::LoadBalancer;
        ranged.source_ranges = vec![range];
        let lb = frontend("203.0.113.10", 80, Protocol::Tcp);
        let wanted = desired(vec![(lb, ranged)]);
        let planned = plan(&DataplaneState::default(), &wanted, LIMITS).expect("plan");
        let put_range = planned
            .ops
            .iter()
            .position(|op| matches!(op, MapOp::PutSourceRange { .. }))
            .expect("range written");
        let put_service = planned
            .ops
            .iter()
            .position(|op| matches!(op, MapOp::PutService { .. }))
            .expect("service written");
        assert!(put_range < put_service, "{:?}", planned.ops);
        let mut state = DataplaneState::default();
        state.apply(&planned);
        let value = state.services[&service_key(&lb)];
        assert_ne!(value.flags & SERVICE_FLAG_SOURCE_RANGES, 0);
        assert!(state.source_ranges.contains(&(value.service_id, range)));

        let removed = plan(&state, &Desired::default(), LIMITS).expect("plan");
        let delete_service = removed
            .ops
            .iter()
            .position(|op| matches!(op, MapOp::DeleteService(_)))
            .expect("service deleted");
        let delete_range = removed
            .ops
            .iter()
            .position(|op| matches!(op, MapOp::DeleteSourceRange { .. }))
            .expect("range deleted");
        assert!(delete_service < delete_range, "{:?}", removed.ops);
        state.apply(&removed);
        assert!(state.source_ranges.is_empty());
    }
}
