//! Translation of Services and EndpointSlices into the desired content of the service dataplane.
//!
//! Owns the Kubernetes semantics of load balancing, exactly as upstream kube-proxy applies them:
//! which Services get a frontend, how a Service port finds its EndpointSlice port (and so a named
//! `targetPort` its number), which endpoints new flows may use (ready, else serving and
//! terminating — KEP-1669), which endpoints existing flows may keep, `internalTrafficPolicy:
//! Local`, and `sessionAffinity: ClientIP`. ClusterIP frontends are built here; the external ones
//! (NodePorts, `externalIPs`, load-balancer IPs, with `externalTrafficPolicy`,
//! `loadBalancerSourceRanges` and the health-check node ports) in the `external` submodule, from
//! the ClusterIP frontend of the same port. The result, [`Desired`], is deterministic (sorted,
//! independent of input order) so that a diff against the dataplane is stable.
//!
//! Pure: no I/O, no BPF, no ids (the sync assigns them). Never panics on bad input: an object or
//! field it cannot use is skipped and reported in [`Desired::warnings`].

use std::collections::{BTreeMap, btree_map::Entry};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

mod external;

pub use external::{ANNOTATION_LB_MODE, ANNOTATION_LOAD_BALANCER_SOURCE_RANGES};

/// The label that ties an EndpointSlice to its Service (in the same namespace).
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset: 3 hours, as upstream defaults it.
pub const DEFAULT_CLIENT_IP_TIMEOUT_SECONDS: u32 = 10_800;
/// The largest `timeoutSeconds` the API server accepts (1 day).
pub const MAX_CLIENT_IP_TIMEOUT_SECONDS: u32 = 86_400;

/// A transport protocol the dataplane balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The name Kubernetes uses (`TCP`, `UDP`).
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    /// The IP protocol number (6, 17).
    pub const fn ip_protocol(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The protocol with IP protocol number `number`, if the dataplane balances it.
    pub const fn from_ip_protocol(number: u8) -> Option<Protocol> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A service frontend as a packet names it: address, service port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    /// The ClusterIP, external IP or load-balancer IP; `0.0.0.0` for a NodePort, which answers
    /// on every NodePort address of the node (the port is then the `nodePort`).
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for Frontend {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}:{}/{}",
            self.address, self.port, self.protocol
        )
    }
}

/// A backend as the dataplane addresses it: an endpoint's address with the target port resolved
/// through the EndpointSlice port. Ordered by address, then port, then protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendAddr {
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}:{}/{}",
            self.address, self.port, self.protocol
        )
    }
}

/// An endpoint's EndpointSlice conditions with upstream's defaults applied, plus whether it runs
/// on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendConditions {
    /// `conditions.ready`; unset means true.
    pub ready: bool,
    /// `conditions.serving`; unset means true.
    pub serving: bool,
    /// `conditions.terminating`; unset means false.
    pub terminating: bool,
    /// `nodeName` is this node.
    pub local: bool,
}

impl BackendConditions {
    /// Ready, serving, not terminating: an endpoint in its normal state.
    pub const READY: BackendConditions = BackendConditions {
        ready: true,
        serving: true,
        terminating: false,
        local: false,
    };

    /// Whether this endpoint may take new flows when a service has no ready endpoint (KEP-1669).
    pub const fn is_serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// A Service port by name, as upstream kube-proxy names it (`namespace/name:port`), for status
/// output and metrics labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    /// `spec.ports[].name`; empty for a Service's single unnamed port.
    pub port: String,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(formatter, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Which Service field a frontend comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    /// `spec.clusterIP(s)`: traffic from pods and the node (TC and socket programs).
    #[default]
    ClusterIp,
    /// `spec.ports[].nodePort` on the node's NodePort addresses (XDP on the uplink).
    NodePort,
    /// `spec.externalIPs`.
    ExternalIp,
    /// `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

impl FrontendKind {
    /// Whether traffic from outside the cluster reaches this frontend (north-south), so that
    /// `externalTrafficPolicy`, Maglev and SNAT/DSR apply.
    pub const fn is_external(self) -> bool {
        !matches!(self, FrontendKind::ClusterIp)
    }

    /// The name used in status output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "ExternalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
        }
    }
}

/// How an external frontend reaches a backend on another node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoadBalancerMode {
    /// The ingress node rewrites the source to its own address; replies return through it.
    #[default]
    Snat,
    /// Direct server return: the backend answers the client directly.
    Dsr,
}

impl LoadBalancerMode {
    /// The value of `--lb-mode` and of the `skiff.dev/lb-mode` annotation.
    pub const fn name(self) -> &'static str {
        match self {
            LoadBalancerMode::Snat => "snat",
            LoadBalancerMode::Dsr => "dsr",
        }
    }
}

/// An IPv4 prefix of `spec.loadBalancerSourceRanges`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceRange {
    /// The network address (host bits zero).
    pub address: Ipv4Addr,
    pub prefix_length: u8,
}

impl fmt::Display for SourceRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.address, self.prefix_length)
    }
}

/// A `spec.healthCheckNodePort` skiff-proxy serves (`type: LoadBalancer` with
/// `externalTrafficPolicy: Local`), and what it answers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    pub node_port: u16,
    /// Endpoints of the Service on this node that are ready (the count kube-proxy reports; a
    /// node whose local endpoints all terminate answers 503 so load balancers drain it).
    pub local_endpoints: usize,
}

/// What one frontend must do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredFrontend {
    pub service: ServicePortName,
    pub kind: FrontendKind,
    /// `Some(timeoutSeconds)` when `sessionAffinity: ClientIP`.
    pub session_affinity_timeout_seconds: Option<u32>,
    /// With no backend for new flows, drop packets instead of rejecting them: upstream does so
    /// for a `Local` traffic policy (`internalTrafficPolicy` for ClusterIP frontends,
    /// `externalTrafficPolicy` for the others) when endpoints exist, but none on this node.
    pub drop_when_no_endpoints: bool,
    /// The backends new flows are balanced over, sorted. Empty: reject (or drop, above).
    pub new_flow_backends: Vec<BackendAddr>,
    /// Every backend an existing flow may keep using (a superset of `new_flow_backends`), with
    /// its conditions.
    pub backends: BTreeMap<BackendAddr, BackendConditions>,
    /// External frontends with `externalTrafficPolicy: Local`: only local endpoints, and the
    /// client's source address is kept (never SNAT).
    pub external_traffic_local: bool,
    /// New flows are placed with the Maglev table (external frontends), not at random.
    pub maglev: bool,
    /// The `skiff.dev/lb-mode` annotation; `None`: skiff-proxy's `--lb-mode`.
    pub load_balancer_mode: Option<LoadBalancerMode>,
    /// `spec.loadBalancerSourceRanges` (load-balancer frontends only); empty: every source.
    pub source_ranges: Vec<SourceRange>,
}

/// The desired content of the service dataplane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub frontends: BTreeMap<Frontend, DesiredFrontend>,
    /// Health-check node ports to serve, sorted.
    pub health_checks: Vec<HealthCheck>,
    /// Objects and fields that were skipped, each naming the object and the field.
    pub warnings: Vec<String>,
}

/// `internalTrafficPolicy` (ClusterIP frontends) or `externalTrafficPolicy` (external frontends):
/// which endpoints new flows may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrafficPolicy {
    Cluster,
    Local,
}

/// A usable endpoint of one EndpointSlice.
#[derive(Clone, Copy, Debug)]
struct SliceEndpoint {
    address: Ipv4Addr,
    conditions: BackendConditions,
}

/// A usable port of one EndpointSlice.
#[derive(Clone, Debug)]
struct SlicePort {
    name: String,
    protocol: Protocol,
    port: u16,
}

/// The usable parts of one IPv4 EndpointSlice.
#[derive(Clone, Debug)]
struct ParsedSlice {
    ports: Vec<SlicePort>,
    endpoints: Vec<SliceEndpoint>,
}

/// Translates Services and their EndpointSlices into the desired dataplane content for node
/// `node_name` (whose endpoints count as local).
pub fn translate(services: &[Service], slices: &[EndpointSlice], node_name: &str) -> Desired {
    let mut desired = Desired::default();
    let slices_by_service = parse_slices(slices, node_name, &mut desired.warnings);

    let mut services: Vec<&Service> = services.iter().collect();
    services.sort_by_key(|service| object_key(&service.metadata));
    for service in services {
        translate_service(service, &slices_by_service, &mut desired);
    }
    desired.health_checks.sort();
    desired
}

type ServiceName = (String, String);

fn object_key(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ServiceName {
    (
        metadata.namespace.clone().unwrap_or_default(),
        metadata.name.clone().unwrap_or_default(),
    )
}

fn display_name(key: &ServiceName) -> String {
    format!("{}/{}", key.0, key.1)
}

/// Groups the IPv4 slices by the Service they belong to, in slice-name order.
fn parse_slices(
    slices: &[EndpointSlice],
    node_name: &str,
    warnings: &mut Vec<String>,
) -> BTreeMap<ServiceName, Vec<ParsedSlice>> {
    let mut sorted: Vec<&EndpointSlice> = slices.iter().collect();
    sorted.sort_by_key(|slice| object_key(&slice.metadata));

    let mut by_service: BTreeMap<ServiceName, Vec<ParsedSlice>> = BTreeMap::new();
    for slice in sorted {
        let key = object_key(&slice.metadata);
        let object = format!("EndpointSlice {}", display_name(&key));
        match slice.address_type.as_str() {
            "IPv4" => {}
            // Dual-stack clusters have IPv6 slices beside the IPv4 ones; not balanced yet.
            "IPv6" => continue,
            other => {
                warnings.push(format!(
                    "{object}: addressType {other:?} is not supported (only IPv4); ignored"
                ));
                continue;
            }
        }
        let service_name = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_SERVICE_NAME))
            .filter(|name| !name.is_empty());
        let Some(service_name) = service_name else {
            warnings.push(format!(
                "{object}: metadata.labels has no {LABEL_SERVICE_NAME:?} label; ignored"
            ));
            continue;
        };
        let parsed = parse_slice(slice, &object, node_name, warnings);
        by_service
            .entry((key.0, service_name.clone()))
            .or_default()
            .push(parsed);
    }
    by_service
}

fn parse_slice(
    slice: &EndpointSlice,
    object: &str,
    node_name: &str,
    warnings: &mut Vec<String>,
) -> ParsedSlice {
    let mut ports = Vec::new();
    for (index, port) in slice.ports.iter().flatten().enumerate() {
        let field = format!("ports[{index}]");
        let protocol = match parse_protocol(port.protocol.as_deref()) {
            Ok(Some(protocol)) => protocol,
            Ok(None) => continue,
            Err(protocol) => {
                warnings.push(format!(
                    "{object}: {field}.protocol {protocol:?} is not a protocol; port ignored"
                ));
                continue;
            }
        };
        let Some(number) = port.port else {
            warnings.push(format!(
                "{object}: {field}.port is not set (\"all ports\" is not supported); port ignored"
            ));
            continue;
        };
        let Some(number) = port_number(number) else {
            warnings.push(format!(
                "{object}: {field}.port {number} is out of range (1-65535); port ignored"
            ));
            continue;
        };
        ports.push(SlicePort {
            name: port.name.clone().unwrap_or_default(),
            protocol,
            port: number,
        });
    }

    let mut endpoints = Vec::new();
    for (index, endpoint) in slice.endpoints.iter().enumerate() {
        if let Some(parsed) = parse_endpoint(endpoint, node_name) {
            match parsed {
                Ok(endpoint) => endpoints.push(endpoint),
                Err(problem) => warnings.push(format!(
                    "{object}: endpoints[{index}].{problem}; endpoint ignored"
                )),
            }
        }
    }
    ParsedSlice { ports, endpoints }
}

/// `None` for nothing to report, `Some(Err(problem))` for an unusable endpoint.
fn parse_endpoint(endpoint: &Endpoint, node_name: &str) -> Option<Result<SliceEndpoint, String>> {
    // Upstream uses the first address only: the others are, by API contract, the same endpoint.
    let Some(address) = endpoint.addresses.first() else {
        return Some(Err("addresses is empty".to_owned()));
    };
    let address = match address.parse::<Ipv4Addr>() {
        Ok(address) => address,
        Err(_) => {
            return Some(Err(format!(
                "addresses[0] {address:?} is not an IPv4 address"
            )));
        }
    };
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    let local = !node_name.is_empty() && endpoint.node_name.as_deref() == Some(node_name);
    Some(Ok(SliceEndpoint {
        address,
        conditions: BackendConditions {
            ready,
            serving,
            terminating,
            local,
        },
    }))
}

/// `Ok(None)` for SCTP (valid, not balanced), `Err(value)` for something that is no protocol.
fn parse_protocol(protocol: Option<&str>) -> Result<Option<Protocol>, String> {
    match protocol {
        None | Some("TCP") => Ok(Some(Protocol::Tcp)),
        Some("UDP") => Ok(Some(Protocol::Udp)),
        Some("SCTP") => Ok(None),
        Some(other) => Err(other.to_owned()),
    }
}

fn port_number(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|port| *port != 0)
}

fn translate_service(
    service: &Service,
    slices_by_service: &BTreeMap<ServiceName, Vec<ParsedSlice>>,
    desired: &mut Desired,
) {
    let key = object_key(&service.metadata);
    let object = format!("Service {}", display_name(&key));
    let warnings = &mut desired.warnings;
    let Some(spec) = service.spec.as_ref() else {
        warnings.push(format!("{object}: spec is not set; ignored"));
        return;
    };
    match spec.type_.as_deref() {
        None | Some("ClusterIP" | "NodePort" | "LoadBalancer") => {}
        // A DNS alias: nothing to balance.
        Some("ExternalName") => return,
        Some(other) => {
            warnings.push(format!(
                "{object}: spec.type {other:?} is not a Service type; ignored"
            ));
            return;
        }
    }

    let Some(addresses) = cluster_ipv4_addresses(spec, &object, warnings) else {
        return;
    };
    let session_affinity_timeout_seconds = session_affinity(spec, &object, warnings);
    let policy = match spec.internal_traffic_policy.as_deref() {
        None | Some("Cluster") => TrafficPolicy::Cluster,
        Some("Local") => TrafficPolicy::Local,
        Some(other) => {
            warnings.push(format!(
                "{object}: spec.internalTrafficPolicy {other:?} is not a policy; using Cluster"
            ));
            TrafficPolicy::Cluster
        }
    };
    let slices = slices_by_service
        .get(&key)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let external = external::ExternalSpec::parse(service, spec, &object, warnings);

    for (index, port) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{index}]");
        let Some((number, protocol)) = service_port(port, &object, &field, warnings) else {
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        let endpoints = endpoints_for_port(slices, &port_name, protocol);
        let (new_flow_backends, drop_when_no_endpoints) =
            select_new_flow_backends(&endpoints, policy);
        let cluster_ip = DesiredFrontend {
            service: ServicePortName {
                namespace: key.0.clone(),
                name: key.1.clone(),
                port: port_name,
            },
            kind: FrontendKind::ClusterIp,
            session_affinity_timeout_seconds,
            drop_when_no_endpoints,
            new_flow_backends: backend_addresses(&new_flow_backends, protocol),
            backends: endpoints
                .iter()
                .filter(|(_, conditions)| keeps_existing_flows(conditions, protocol))
                .map(|(&(address, port), &conditions)| {
                    let backend = BackendAddr {
                        address,
                        port,
                        protocol,
                    };
                    (backend, conditions)
                })
                .collect(),
            ..DesiredFrontend::default()
        };
        let external_frontends = external.frontends(
            port,
            number,
            protocol,
            &cluster_ip,
            &endpoints,
            &object,
            &field,
            warnings,
        );
        for &address in &addresses {
            let frontend = Frontend {
                address,
                port: number,
                protocol,
            };
            let claim = (frontend, cluster_ip.clone());
            insert_frontend(&mut desired.frontends, claim, &object, &field, warnings);
        }
        for claim in external_frontends {
            insert_frontend(&mut desired.frontends, claim, &object, &field, warnings);
        }
    }
    external.add_health_check(&key, slices, &mut desired.health_checks, &object, warnings);
}

/// Adds a frontend unless another Service (the first by namespace/name, as Services are
/// translated in that order) already has its address, port and protocol.
fn insert_frontend(
    frontends: &mut BTreeMap<Frontend, DesiredFrontend>,
    (frontend, desired): (Frontend, DesiredFrontend),
    object: &str,
    field: &str,
    warnings: &mut Vec<String>,
) {
    match frontends.entry(frontend) {
        Entry::Vacant(entry) => {
            entry.insert(desired);
        }
        Entry::Occupied(entry) => warnings.push(format!(
            "{object}: {field}: frontend {frontend} is already used by {}; ignored",
            entry.get().service
        )),
    }
}

/// The backends of `endpoints` (address, target port) for `protocol`.
fn backend_addresses(endpoints: &[(Ipv4Addr, u16)], protocol: Protocol) -> Vec<BackendAddr> {
    endpoints
        .iter()
        .map(|&(address, port)| BackendAddr {
            address,
            port,
            protocol,
        })
        .collect()
}

/// The Service's IPv4 ClusterIPs; `None` (after a warning where it is a mistake) when it has none.
fn cluster_ipv4_addresses(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    object: &str,
    warnings: &mut Vec<String>,
) -> Option<Vec<Ipv4Addr>> {
    let listed: Vec<(String, &str)> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips
            .iter()
            .enumerate()
            .map(|(index, ip)| (format!("spec.clusterIPs[{index}]"), ip.as_str()))
            .collect(),
        _ => spec
            .cluster_ip
            .iter()
            .map(|ip| ("spec.clusterIP".to_owned(), ip.as_str()))
            .collect(),
    };
    // Headless: DNS returns the endpoints themselves; there is no virtual IP to balance.
    if listed.iter().any(|(_, ip)| *ip == "None") {
        return None;
    }
    if listed.iter().all(|(_, ip)| ip.is_empty()) {
        warnings.push(format!("{object}: spec.clusterIP is not set; ignored"));
        return None;
    }
    let mut addresses = Vec::new();
    for (field, ip) in listed {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(address)) => addresses.push(address),
            // IPv6 ClusterIPs of dual-stack Services are not balanced yet.
            Ok(IpAddr::V6(_)) => {}
            Err(_) => warnings.push(format!("{object}: {field} {ip:?} is not an IP address")),
        }
    }
    (!addresses.is_empty()).then_some(addresses)
}

fn session_affinity(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    object: &str,
    warnings: &mut Vec<String>,
) -> Option<u32> {
    match spec.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => {
            let configured = spec
                .session_affinity_config
                .as_ref()
                .and_then(|config| config.client_ip.as_ref())
                .and_then(|client_ip| client_ip.timeout_seconds);
            let timeout = match configured {
                None => DEFAULT_CLIENT_IP_TIMEOUT_SECONDS,
                Some(seconds) => match u32::try_from(seconds) {
                    Ok(seconds @ 1..=MAX_CLIENT_IP_TIMEOUT_SECONDS) => seconds,
                    _ => {
                        warnings.push(format!(
                            "{object}: spec.sessionAffinityConfig.clientIP.timeoutSeconds \
                             {seconds} is out of range (1-{MAX_CLIENT_IP_TIMEOUT_SECONDS}); \
                             using {DEFAULT_CLIENT_IP_TIMEOUT_SECONDS}"
                        ));
                        DEFAULT_CLIENT_IP_TIMEOUT_SECONDS
                    }
                },
            };
            Some(timeout)
        }
        Some(other) => {
            warnings.push(format!(
                "{object}: spec.sessionAffinity {other:?} is not an affinity; using None"
            ));
            None
        }
    }
}

/// The port number and protocol of a Service port the dataplane balances.
fn service_port(
    port: &ServicePort,
    object: &str,
    field: &str,
    warnings: &mut Vec<String>,
) -> Option<(u16, Protocol)> {
    let protocol = match parse_protocol(port.protocol.as_deref()) {
        Ok(Some(protocol)) => protocol,
        Ok(None) => {
            warnings.push(format!(
                "{object}: {field}: SCTP is not balanced yet; port ignored"
            ));
            return None;
        }
        Err(protocol) => {
            warnings.push(format!(
                "{object}: {field}.protocol {protocol:?} is not a protocol; port ignored"
            ));
            return None;
        }
    };
    let Some(number) = port_number(port.port) else {
        warnings.push(format!(
            "{object}: {field}.port {} is out of range (1-65535); port ignored",
            port.port
        ));
        return None;
    };
    Some((number, protocol))
}

/// The endpoints of one Service port, by (address, target port), de-duplicated across slices.
///
/// A slice port belongs to the Service port with the same name and protocol: that is how upstream
/// resolves a named `targetPort` (the EndpointSlice controller put the number in the slice). An
/// endpoint listed twice (moving between slices, or an IP reused by a new pod while the old one
/// terminates) keeps the non-terminating entry, as upstream does.
fn endpoints_for_port(
    slices: &[ParsedSlice],
    port_name: &str,
    protocol: Protocol,
) -> BTreeMap<(Ipv4Addr, u16), BackendConditions> {
    let mut endpoints = BTreeMap::new();
    for slice in slices {
        for slice_port in &slice.ports {
            if slice_port.name != port_name || slice_port.protocol != protocol {
                continue;
            }
            for endpoint in &slice.endpoints {
                let key = (endpoint.address, slice_port.port);
                match endpoints.entry(key) {
                    Entry::Vacant(entry) => {
                        entry.insert(endpoint.conditions);
                    }
                    Entry::Occupied(mut entry) => {
                        if !endpoint.conditions.terminating {
                            entry.insert(endpoint.conditions);
                        }
                    }
                }
            }
        }
    }
    endpoints
}

/// The endpoints new flows go to, and whether to drop rather than reject when there are none.
///
/// Upstream's `CategorizeEndpoints` for ClusterIP traffic (topology hints aside):
/// - `internalTrafficPolicy: Cluster`: the ready endpoints; if none is ready, the endpoints that
///   are serving and terminating (KEP-1669).
/// - `Local`: the ready endpoints on this node; if none, the serving and terminating ones on this
///   node. If that is empty while usable endpoints exist elsewhere, traffic is dropped; with no
///   usable endpoint anywhere it is rejected like any Service without endpoints.
fn select_new_flow_backends(
    endpoints: &BTreeMap<(Ipv4Addr, u16), BackendConditions>,
    policy: TrafficPolicy,
) -> (Vec<(Ipv4Addr, u16)>, bool) {
    let select = |predicate: &dyn Fn(&BackendConditions) -> bool| -> Vec<(Ipv4Addr, u16)> {
        endpoints
            .iter()
            .filter(|(_, conditions)| predicate(conditions))
            .map(|(&key, _)| key)
            .collect()
    };
    match policy {
        TrafficPolicy::Cluster => {
            let ready = select(&|c| c.ready);
            if ready.is_empty() {
                (select(&|c| c.is_serving_terminating()), false)
            } else {
                (ready, false)
            }
        }
        TrafficPolicy::Local => {
            let mut local = select(&|c| c.local && c.ready);
            if local.is_empty() {
                local = select(&|c| c.local && c.is_serving_terminating());
            }
            let usable_anywhere = endpoints
                .values()
                .any(|c| c.ready || c.is_serving_terminating());
            let drop_when_no_endpoints = local.is_empty() && usable_anywhere;
            (local, drop_when_no_endpoints)
        }
    }
}

/// Whether a flow already balanced to this endpoint may keep using it.
///
/// Upstream never moves a TCP connection: the kernel's conntrack entry keeps it on its endpoint
/// for as long as the endpoint is listed, whatever its conditions. For UDP, kube-proxy deletes
/// the conntrack entries of every endpoint that is not serving (`conntrack.CleanStaleEntries`,
/// which ignores traffic policy and terminating state), so such flows are balanced again.
fn keeps_existing_flows(conditions: &BackendConditions, protocol: Protocol) -> bool {
    match protocol {
        Protocol::Tcp => true,
        // `ready` too, so that every new-flow backend is one (ready without serving is no real
        // state, but nothing stops a file from saying it).
        Protocol::Udp => conditions.serving || conditions.ready,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ClientIPConfig, ServiceSpec, SessionAffinityConfig};
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;

    pub(super) const NODE: &str = "node-a";

    pub(super) fn service(
        namespace: &str,
        name: &str,
        cluster_ip: &str,
        ports: Vec<ServicePort>,
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.to_owned()),
                cluster_ips: Some(vec![cluster_ip.to_owned()]),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    pub(super) fn spec(service: &mut Service) -> &mut ServiceSpec {
        service.spec.get_or_insert_with(ServiceSpec::default)
    }

    pub(super) fn service_port(
        name: &str,
        port: i32,
        protocol: &str,
        target_port: IntOrString,
    ) -> ServicePort {
        ServicePort {
            name: (!name.is_empty()).then(|| name.to_owned()),
            port,
            protocol: Some(protocol.to_owned()),
            target_port: Some(target_port),
            ..ServicePort::default()
        }
    }

    pub(super) fn slice(
        namespace: &str,
        name: &str,
        service_name: &str,
        ports: Vec<EndpointPort>,
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([(
                    LABEL_SERVICE_NAME.to_owned(),
                    service_name.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".to_owned(),
            endpoints,
            ports: Some(ports),
        }
    }

    pub(super) fn slice_port(name: &str, port: i32, protocol: &str) -> EndpointPort {
        EndpointPort {
            name: Some(name.to_owned()),
            port: Some(port),
            protocol: Some(protocol.to_owned()),
            app_protocol: None,
        }
    }

    pub(super) fn endpoint(address: &str) -> Endpoint {
        Endpoint {
            addresses: vec![address.to_owned()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: Some("node-b".to_owned()),
            ..Endpoint::default()
        }
    }

    pub(super) fn with_conditions(
        mut endpoint: Endpoint,
        ready: bool,
        serving: bool,
        terminating: bool,
    ) -> Endpoint {
        endpoint.conditions = Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        });
        endpoint
    }

    pub(super) fn on_node(mut endpoint: Endpoint, node: &str) -> Endpoint {
        endpoint.node_name = Some(node.to_owned());
        endpoint
    }

    pub(super) fn frontend(address: &str, port: u16, protocol: Protocol) -> Frontend {
        Frontend {
            address: address.parse().expect("test address"),
            port,
            protocol,
        }
    }

    pub(super) fn backend(address: &str, port: u16, protocol: Protocol) -> BackendAddr {
        BackendAddr {
            address: address.parse().expect("test address"),
            port,
            protocol,
        }
    }

    pub(super) fn web_service() -> Service {
        service(
            "default",
            "web",
            "10.96.0.10",
            vec![service_port("", 80, "TCP", IntOrString::Int(8080))],
        )
    }

    pub(super) fn web_slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        slice(
            "default",
            "web-abc",
            "web",
            vec![slice_port("", 8080, "TCP")],
            endpoints,
        )
    }

    pub(super) fn only_frontend(desired: &Desired) -> &DesiredFrontend {
        assert_eq!(desired.frontends.len(), 1, "{desired:#?}");
        desired.frontends.values().next().expect("one frontend")
    }

    #[test]
    fn clusterip_tcp_and_udp_ports_get_one_frontend_each() {
        let dns = service(
            "kube-system",
            "dns",
            "10.96.0.53",
            vec![
                service_port("dns", 53, "UDP", IntOrString::Int(53)),
                service_port("dns-tcp", 53, "TCP", IntOrString::Int(53)),
            ],
        );
        let slices = [slice(
            "kube-system",
            "dns-1",
            "dns",
            vec![
                slice_port("dns", 53, "UDP"),
                slice_port("dns-tcp", 53, "TCP"),
            ],
            vec![endpoint("10.0.1.5")],
        )];

        let desired = translate(&[dns], &slices, NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        let udp = &desired.frontends[&frontend("10.96.0.53", 53, Protocol::Udp)];
        let tcp = &desired.frontends[&frontend("10.96.0.53", 53, Protocol::Tcp)];
        assert_eq!(
            udp.new_flow_backends,
            [backend("10.0.1.5", 53, Protocol::Udp)]
        );
        assert_eq!(
            tcp.new_flow_backends,
            [backend("10.0.1.5", 53, Protocol::Tcp)]
        );
        assert_eq!(udp.service.to_string(), "kube-system/dns:dns");
        assert_eq!(tcp.service.to_string(), "kube-system/dns:dns-tcp");
    }

    #[test]
    fn named_target_port_resolves_through_the_slice_port_name() {
        let app = service(
            "default",
            "app",
            "10.96.0.20",
            vec![
                service_port("http", 80, "TCP", IntOrString::String("web".to_owned())),
                service_port(
                    "metrics",
                    9090,
                    "TCP",
                    IntOrString::String("prom".to_owned()),
                ),
            ],
        );
        let slices = [slice(
            "default",
            "app-1",
            "app",
            vec![
                slice_port("metrics", 9102, "TCP"),
                slice_port("http", 8080, "TCP"),
            ],
            vec![endpoint("10.0.1.5"), endpoint("10.0.1.6")],
        )];

        let desired = translate(&[app], &slices, NODE);

        let http = &desired.frontends[&frontend("10.96.0.20", 80, Protocol::Tcp)];
        let metrics = &desired.frontends[&frontend("10.96.0.20", 9090, Protocol::Tcp)];
        assert_eq!(
            http.new_flow_backends,
            [
                backend("10.0.1.5", 8080, Protocol::Tcp),
                backend("10.0.1.6", 8080, Protocol::Tcp)
            ]
        );
        assert_eq!(
            metrics.new_flow_backends,
            [
                backend("10.0.1.5", 9102, Protocol::Tcp),
                backend("10.0.1.6", 9102, Protocol::Tcp)
            ]
        );
    }

    #[test]
    fn slice_port_of_the_same_name_but_another_protocol_is_not_used() {
        let slices = [slice(
            "default",
            "web-abc",
            "web",
            vec![slice_port("", 8080, "UDP")],
            vec![endpoint("10.0.1.5")],
        )];

        let desired = translate(&[web_service()], &slices, NODE);

        assert_eq!(only_frontend(&desired).new_flow_backends, []);
    }

    #[test]
    fn new_flows_go_only_to_ready_endpoints() {
        let slices = [web_slice(vec![
            endpoint("10.0.1.5"),
            with_conditions(endpoint("10.0.1.6"), false, false, false),
            with_conditions(endpoint("10.0.1.7"), false, true, true),
        ])];

        let desired = translate(&[web_service()], &slices, NODE);

        assert_eq!(
            only_frontend(&desired).new_flow_backends,
            [backend("10.0.1.5", 8080, Protocol::Tcp)]
        );
    }

    #[test]
    fn unset_conditions_mean_ready_serving_and_not_terminating() {
        let mut bare = endpoint("10.0.1.5");
        bare.conditions = None;
        let mut only_terminating = endpoint("10.0.1.6");
        only_terminating.conditions = Some(EndpointConditions {
            ready: Some(false),
            serving: None,
            terminating: Some(true),
        });

        let desired = translate(
            &[web_service()],
            &[web_slice(vec![bare, only_terminating])],
            NODE,
        );

        let web = only_frontend(&desired);
        assert_eq!(
            web.backends[&backend("10.0.1.5", 8080, Protocol::Tcp)],
            BackendConditions {
                ready: true,
                serving: true,
                terminating: false,
                local: false
            }
        );
        assert_eq!(
            web.backends[&backend("10.0.1.6", 8080, Protocol::Tcp)],
            BackendConditions {
                ready: false,
                serving: true,
                terminating: true,
                local: false
            }
        );
    }

    #[test]
    fn terminating_endpoints_are_kept_for_existing_flows_but_get_no_new_ones() {
        let slices = [web_slice(vec![
            endpoint("10.0.1.5"),
            with_conditions(endpoint("10.0.1.6"), false, true, true),
            with_conditions(endpoint("10.0.1.7"), false, false, true),
        ])];

        let desired = translate(&[web_service()], &slices, NODE);

        let web = only_frontend(&desired);
        assert_eq!(
            web.new_flow_backends,
            [backend("10.0.1.5", 8080, Protocol::Tcp)]
        );
        assert_eq!(
            web.backends.keys().copied().collect::<Vec<_>>(),
            [
                backend("10.0.1.5", 8080, Protocol::Tcp),
                backend("10.0.1.6", 8080, Protocol::Tcp),
                backend("10.0.1.7", 8080, Protocol::Tcp),
            ]
        );
    }

    #[test]
    fn udp_flows_keep_only_serving_endpoints_as_upstream_conntrack_cleanup_does() {
        let mut dns = web_service();
        spec(&mut dns).ports = Some(vec![service_port("", 53, "UDP", IntOrString::Int(53))]);
        let slices = [slice(
            "default",
            "web-abc",
            "web",
            vec![slice_port("", 53, "UDP")],
            vec![
                endpoint("10.0.1.5"),
                with_conditions(endpoint("10.0.1.6"), false, true, true),
                with_conditions(endpoint("10.0.1.7"), false, false, true),
            ],
        )];

        let desired = translate(&[dns], &slices, NODE);

        assert_eq!(
            only_frontend(&desired)
                .backends
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [
                backend("10.0.1.5", 53, Protocol::Udp),
                backend("10.0.1.6", 53, Protocol::Udp)
            ]
        );
    }

    #[test]
    fn with_no_ready_endpoint_new_flows_fall_back_to_serving_terminating_ones() {
        let slices = [web_slice(vec![
            with_conditions(endpoint("10.0.1.5"), false, false, false),
            with_conditions(endpoint("10.0.1.6"), false, true, true),
            with_conditions(endpoint("10.0.1.7"), false, false, true),
        ])];

        let desired = translate(&[web_service()], &slices, NODE);

        let web = only_frontend(&desired);
        assert_eq!(
            web.new_flow_backends,
            [backend("10.0.1.6", 8080, Protocol::Tcp)]
        );
        assert!(!web.drop_when_no_endpoints);
    }

    #[test]
    fn service_without_endpoints_has_a_frontend_with_no_new_flow_backends() {
        let desired = translate(&[web_service()], &[], NODE);

        let web = only_frontend(&desired);
        assert_eq!(web.new_flow_backends, []);
        assert!(web.backends.is_empty());
        assert!(
            !web.drop_when_no_endpoints,
            "no endpoints at all: reject, not drop"
        );
    }

    #[test]
    fn internal_traffic_policy_local_uses_only_endpoints_on_this_node() {
        let mut web = web_service();
        spec(&mut web).internal_traffic_policy = Some("Local".to_owned());
        let slices = [web_slice(vec![
            on_node(endpoint("10.0.1.5"), NODE),
            endpoint("10.0.2.5"),
        ])];

        let desired = translate(&[web], &slices, NODE);

        let web = only_frontend(&desired);
        assert_eq!(
            web.new_flow_backends,
            [backend("10.0.1.5", 8080, Protocol::Tcp)]
        );
        assert!(!web.drop_when_no_endpoints);
        assert!(web.backends[&backend("10.0.1.5", 8080, Protocol::Tcp)].local);
        assert!(!web.backends[&backend("10.0.2.5", 8080, Protocol::Tcp)].local);
    }

    #[test]
    fn internal_traffic_policy_local_without_local_endpoints_drops() {
        let mut web = web_service();
        spec(&mut web).internal_traffic_policy = Some("Local".to_owned());
        let slices = [web_slice(vec![endpoint("10.0.2.5")])];

        let desired = translate(&[web], &slices, NODE);

        let web = only_frontend(&desired);
        assert_eq!(web.new_flow_backends, []);
        assert!(web.drop_when_no_endpoints);
    }

    #[test]
    fn internal_traffic_policy_local_falls_back_to_local_serving_terminating_endpoints() {
        let mut web = web_service();
        spec(&mut web).internal_traffic_policy = Some("Local".to_owned());
        let slices = [web_slice(vec![
            on_node(
                with_conditions(endpoint("10.0.1.5"), false, true, true),
                NODE,
            ),
            endpoint("10.0.2.5"),
        ])];

        let desired = translate(&[web], &slices, NODE);

        assert_eq!(
            only_frontend(&desired).new_flow_backends,
            [backend("10.0.1.5", 8080, Protocol::Tcp)]
        );
    }

    #[test]
    fn internal_traffic_policy_local_with_no_usable_endpoint_anywhere_rejects() {
        let mut web = web_service();
        spec(&mut web).internal_traffic_policy = Some("Local".to_owned());
        let slices = [web_slice(vec![with_conditions(
            endpoint("10.0.2.5"),
            false,
            false,
            false,
        )])];

        let desired = translate(&[web], &slices, NODE);

        let web = only_frontend(&desired);
        assert_eq!(web.new_flow_backends, []);
        assert!(!web.drop_when_no_endpoints);
    }

    #[test]
    fn client_ip_affinity_uses_the_configured_timeout() {
        let mut web = web_service();
        spec(&mut web).session_affinity = Some("ClientIP".to_owned());
        spec(&mut web).session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });

        let desired = translate(&[web], &[], NODE);

        assert_eq!(
            only_frontend(&desired).session_affinity_timeout_seconds,
            Some(60)
        );
    }

    #[test]
    fn client_ip_affinity_without_timeout_defaults_to_three_hours() {
        let mut web = web_service();
        spec(&mut web).session_affinity = Some("ClientIP".to_owned());

        let desired = translate(&[web], &[], NODE);

        assert_eq!(
            only_frontend(&desired).session_affinity_timeout_seconds,
            Some(10_800)
        );
    }

    #[test]
    fn no_session_affinity_by_default() {
        let desired = translate(&[web_service()], &[], NODE);

        assert_eq!(
            only_frontend(&desired).session_affinity_timeout_seconds,
            None
        );
    }

    #[test]
    fn headless_and_external_name_services_are_skipped() {
        let headless = service(
            "default",
            "db",
            "None",
            vec![service_port("", 5432, "TCP", IntOrString::Int(5432))],
        );
        let mut external = service("default", "ext", "", vec![]);
        spec(&mut external).type_ = Some("ExternalName".to_owned());
        spec(&mut external).external_name = Some("example.org".to_owned());

        let desired = translate(&[headless, external], &[], NODE);

        assert_eq!(desired, Desired::default());
    }

    #[test]
    fn node_port_and_load_balancer_services_get_their_cluster_ip_frontend() {
        let mut node_port = web_service();
        spec(&mut node_port).type_ = Some("NodePort".to_owned());
        let mut load_balancer = service(
            "default",
            "lb",
            "10.96.0.11",
            vec![service_port("", 443, "TCP", IntOrString::Int(8443))],
        );
        spec(&mut load_balancer).type_ = Some("LoadBalancer".to_owned());

        let desired = translate(&[node_port, load_balancer], &[], NODE);

        assert_eq!(
            desired.frontends.keys().copied().collect::<Vec<_>>(),
            [
                frontend("10.96.0.10", 80, Protocol::Tcp),
                frontend("10.96.0.11", 443, Protocol::Tcp)
            ]
        );
    }

    #[test]
    fn dual_stack_service_gets_frontends_for_its_ipv4_cluster_ip_only() {
        let mut web = web_service();
        spec(&mut web).cluster_ips = Some(vec!["fd00::10".to_owned(), "10.96.0.10".to_owned()]);
        let ipv6_slice = EndpointSlice {
            address_type: "IPv6".to_owned(),
            ..web_slice(vec![endpoint("fd00::1:5")])
        };

        let desired = translate(&[web], &[ipv6_slice], NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        assert_eq!(
            desired.frontends.keys().copied().collect::<Vec<_>>(),
            [frontend("10.96.0.10", 80, Protocol::Tcp)]
        );
    }

    #[test]
    fn slices_of_another_namespace_or_service_are_ignored() {
        let slices = [
            slice(
                "other",
                "web-x",
                "web",
                vec![slice_port("", 8080, "TCP")],
                vec![endpoint("10.0.9.1")],
            ),
            slice(
                "default",
                "api-x",
                "api",
                vec![slice_port("", 8080, "TCP")],
                vec![endpoint("10.0.9.2")],
            ),
            web_slice(vec![endpoint("10.0.1.5")]),
        ];

        let desired = translate(&[web_service()], &slices, NODE);

        assert_eq!(
            only_frontend(&desired).new_flow_backends,
            [backend("10.0.1.5", 8080, Protocol::Tcp)]
        );
    }

    #[test]
    fn endpoint_listed_in_two_slices_is_one_backend_preferring_the_non_terminating_entry() {
        let slices = [
            web_slice(vec![endpoint("10.0.1.5")]),
            slice(
                "default",
                "web-def",
                "web",
                vec![slice_port("", 8080, "TCP")],
                vec![
                    with_conditions(endpoint("10.0.1.5"), false, true, true),
                    endpoint("10.0.1.6"),
                ],
            ),
        ];

        let desired = translate(&[web_service()], &slices, NODE);

        let web = only_frontend(&desired);
        assert_eq!(
            web.new_flow_backends,
            [
                backend("10.0.1.5", 8080, Protocol::Tcp),
                backend("10.0.1.6", 8080, Protocol::Tcp)
            ]
        );
        assert_eq!(
            web.backends[&backend("10.0.1.5", 8080, Protocol::Tcp)],
            BackendConditions::READY
        );
    }

    #[test]
    fn translation_is_independent_of_input_order() {
        let api = service(
            "default",
            "api",
            "10.96.0.12",
            vec![service_port("", 80, "TCP", IntOrString::Int(8080))],
        );
        let slices = [
            web_slice(vec![endpoint("10.0.1.6"), endpoint("10.0.1.5")]),
            slice(
                "default",
                "api-1",
                "api",
                vec![slice_port("", 8080, "TCP")],
                vec![endpoint("10.0.3.1")],
            ),
        ];
        let mut reversed_slices = slices.clone();
        reversed_slices.reverse();

        let forward = translate(&[web_service(), api.clone()], &slices, NODE);
        let backward = translate(&[api, web_service()], &reversed_slices, NODE);

        assert_eq!(forward, backward);
    }

    #[test]
    fn malformed_cluster_ip_is_reported_and_skipped() {
        let web = service(
            "default",
            "web",
            "10.0.0.300",
            vec![service_port("", 80, "TCP", IntOrString::Int(8080))],
        );

        let desired = translate(&[web], &[], NODE);

        assert!(desired.frontends.is_empty());
        assert_eq!(
            desired.warnings,
            [r#"Service default/web: spec.clusterIPs[0] "10.0.0.300" is not an IP address"#]
        );
    }

    #[test]
    fn malformed_ports_and_endpoints_are_reported_and_the_rest_still_translated() {
        let web = service(
            "default",
            "web",
            "10.96.0.10",
            vec![
                service_port("big", 70_000, "TCP", IntOrString::Int(8080)),
                service_port("sctp", 80, "SCTP", IntOrString::Int(8080)),
                service_port("", 80, "TCP", IntOrString::Int(8080)),
            ],
        );
        let mut no_address = endpoint("10.0.1.7");
        no_address.addresses.clear();
        let slices = [web_slice(vec![
            endpoint("10.0.1.5"),
            endpoint("not-an-ip"),
            no_address,
        ])];

        let desired = translate(&[web], &slices, NODE);

        assert_eq!(
            only_frontend(&desired).new_flow_backends,
            [backend("10.0.1.5", 8080, Protocol::Tcp)]
        );
        assert_eq!(
            desired.warnings,
            [
                r#"EndpointSlice default/web-abc: endpoints[1].addresses[0] "not-an-ip" is not an IPv4 address; endpoint ignored"#,
                "EndpointSlice default/web-abc: endpoints[2].addresses is empty; endpoint ignored",
                "Service default/web: spec.ports[0].port 70000 is out of range (1-65535); port ignored",
                "Service default/web: spec.ports[1]: SCTP is not balanced yet; port ignored",
            ]
        );
    }

    #[test]
    fn malformed_slices_are_reported() {
        let mut unlabeled = web_slice(vec![endpoint("10.0.1.5")]);
        unlabeled.metadata.labels = None;
        let fqdn = EndpointSlice {
            address_type: "FQDN".to_owned(),
            ..web_slice(vec![])
        };
        let bad_port = slice(
            "default",
            "web-zzz",
            "web",
            vec![slice_port("", 0, "TCP")],
            vec![endpoint("10.0.1.6")],
        );

        let desired = translate(&[web_service()], &[unlabeled, fqdn, bad_port], NODE);

        assert_eq!(only_frontend(&desired).new_flow_backends, []);
        assert_eq!(
            desired.warnings,
            [
                r#"EndpointSlice default/web-abc: metadata.labels has no "kubernetes.io/service-name" label; ignored"#,
                r#"EndpointSlice default/web-abc: addressType "FQDN" is not supported (only IPv4); ignored"#,
                "EndpointSlice default/web-zzz: ports[0].port 0 is out of range (1-65535); port ignored",
            ]
        );
    }

    #[test]
    fn two_services_claiming_one_frontend_keep_the_first_by_name_and_warn() {
        let other = service(
            "default",
            "aaa",
            "10.96.0.10",
            vec![service_port("", 80, "TCP", IntOrString::Int(9000))],
        );

        let desired = translate(&[web_service(), other], &[], NODE);

        assert_eq!(only_frontend(&desired).service.to_string(), "default/aaa");
        assert_eq!(
            desired.warnings,
            [
                "Service default/web: spec.ports[0]: frontend 10.96.0.10:80/TCP is already used by default/aaa; ignored"
            ]
        );
    }
}
