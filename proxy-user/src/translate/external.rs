//! The external (north-south) frontends of a Service: NodePorts, `spec.externalIPs` and
//! load-balancer ingress IPs, and the health-check node ports of `externalTrafficPolicy: Local`.
//!
//! Owns how upstream kube-proxy reads the Service fields of the external path:
//! `ports[].nodePort`, `externalIPs`, `status.loadBalancer.ingress` (VIP mode only, KEP-1860),
//! `externalTrafficPolicy`, `loadBalancerSourceRanges` and `healthCheckNodePort`, plus Skiff's
//! `skiff.dev/lb-mode` annotation. Builds each external frontend from the ClusterIP frontend of
//! the same port (same backends, same session affinity), so the endpoint rules live in one place,
//! the parent module. Pure like its parent; never lets a source range it cannot read open a
//! frontend to every source.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};

use super::{
    BackendConditions, DesiredFrontend, Frontend, FrontendKind, HealthCheck, LoadBalancerMode,
    ParsedSlice, Protocol, ServiceName, SourceRange, TrafficPolicy, backend_addresses,
    select_new_flow_backends,
};

/// The annotation that picks SNAT or DSR for one Service's external frontends.
pub const ANNOTATION_LB_MODE: &str = "skiff.dev/lb-mode";
/// The legacy form of `spec.loadBalancerSourceRanges`: comma-separated CIDRs, read only when
/// the field is empty (as the API server validates it and cloud providers read it).
pub const ANNOTATION_LOAD_BALANCER_SOURCE_RANGES: &str =
    "service.beta.kubernetes.io/load-balancer-source-ranges";

/// What one Service says about its external frontends, read once for all its ports.
#[derive(Debug)]
pub(super) struct ExternalSpec {
    /// `type: NodePort` or `LoadBalancer`: `ports[].nodePort` is served.
    node_ports: bool,
    /// A missing `nodePort` is worth a warning (not for `allocateLoadBalancerNodePorts: false`).
    node_port_expected: bool,
    /// `spec.externalIPs`, IPv4, sorted and de-duplicated.
    external_ips: Vec<Ipv4Addr>,
    /// VIP-mode `status.loadBalancer.ingress[].ip`, IPv4, sorted and de-duplicated; empty when
    /// the source ranges left no IPv4 source allowed.
    load_balancer_ips: Vec<Ipv4Addr>,
    policy: TrafficPolicy,
    load_balancer_mode: Option<LoadBalancerMode>,
    /// For the load-balancer frontends; empty: every source.
    source_ranges: Vec<SourceRange>,
    /// `type: LoadBalancer` with `externalTrafficPolicy: Local` and a usable port.
    health_check_node_port: Option<u16>,
}

/// The usable IPv4 ranges of `loadBalancerSourceRanges` (or its annotation).
enum SourceFilter {
    /// Nothing listed: every source may reach the load-balancer IPs.
    Every,
    Only(Vec<SourceRange>),
    /// Ranges were listed but none is an IPv4 range we can read.
    Nothing,
}

impl ExternalSpec {
    /// Reads the external fields of `service` (whose `spec.type` the caller has checked).
    pub(super) fn parse(
        service: &Service,
        spec: &ServiceSpec,
        object: &str,
        warnings: &mut Vec<String>,
    ) -> ExternalSpec {
        let service_type = spec.type_.as_deref();
        let load_balancer = service_type == Some("LoadBalancer");
        let node_ports = load_balancer || service_type == Some("NodePort");
        let node_port_expected = service_type == Some("NodePort")
            || (load_balancer && spec.allocate_load_balancer_node_ports != Some(false));

        let policy = match spec.external_traffic_policy.as_deref() {
            None | Some("Cluster") => TrafficPolicy::Cluster,
            Some("Local") => TrafficPolicy::Local,
            Some(other) => {
                warnings.push(format!(
                    "{object}: spec.externalTrafficPolicy {other:?} is not a policy (Cluster, \
                     Local); using Cluster"
                ));
                TrafficPolicy::Cluster
            }
        };

        let listed = spec
            .external_ips
            .iter()
            .flatten()
            .enumerate()
            .map(|(index, ip)| (format!("spec.externalIPs[{index}]"), ip.as_str()));
        let external_ips = ipv4_addresses(listed, object, warnings);

        let mut load_balancer_ips = Vec::new();
        let mut source_ranges = Vec::new();
        if load_balancer {
            load_balancer_ips = ingress_addresses(service, object, warnings);
            match source_filter(service, spec, object, warnings) {
                SourceFilter::Every => {}
                SourceFilter::Only(ranges) => source_ranges = ranges,
                SourceFilter::Nothing => {
                    if !load_balancer_ips.is_empty() {
                        warnings.push(format!(
                            "{object}: loadBalancerSourceRanges allows no IPv4 source; \
                             load-balancer frontends skipped rather than opened to every source"
                        ));
                    }
                    load_balancer_ips.clear();
                }
            }
        }

        let annotations = service.metadata.annotations.as_ref();
        let load_balancer_mode = match annotations.and_then(|a| a.get(ANNOTATION_LB_MODE)) {
            None => None,
            Some(value) => match value.as_str() {
                "snat" => Some(LoadBalancerMode::Snat),
                "dsr" => Some(LoadBalancerMode::Dsr),
                other => {
                    warnings.push(format!(
                        "{object}: metadata.annotations[{ANNOTATION_LB_MODE}] {other:?} is not a \
                         mode (snat, dsr); using skiff-proxy's --lb-mode"
                    ));
                    None
                }
            },
        };

        let mut health_check_node_port = None;
        if load_balancer && policy == TrafficPolicy::Local {
            match spec.health_check_node_port {
                None | Some(0) => warnings.push(format!(
                    "{object}: spec.healthCheckNodePort is not set; no health check served"
                )),
                Some(port) => match super::port_number(port) {
                    Some(port) => health_check_node_port = Some(port),
                    None => warnings.push(format!(
                        "{object}: spec.healthCheckNodePort {port} is out of range (1-65535); \
                         no health check served"
                    )),
                },
            }
        }

        ExternalSpec {
            node_ports,
            node_port_expected,
            external_ips,
            load_balancer_ips,
            policy,
            load_balancer_mode,
            source_ranges,
            health_check_node_port,
        }
    }

    /// The external frontends of one Service port, built from its ClusterIP frontend `cluster_ip`
    /// and its endpoints: NodePort first, then external IPs, then load-balancer IPs.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn frontends(
        &self,
        port: &ServicePort,
        number: u16,
        protocol: Protocol,
        cluster_ip: &DesiredFrontend,
        endpoints: &BTreeMap<(Ipv4Addr, u16), BackendConditions>,
        object: &str,
        field: &str,
        warnings: &mut Vec<String>,
    ) -> Vec<(Frontend, DesiredFrontend)> {
        let mut addresses: Vec<(Frontend, FrontendKind)> = Vec::new();
        if self.node_ports {
            match port.node_port {
                None | Some(0) => {
                    if self.node_port_expected {
                        warnings.push(format!(
                            "{object}: {field}.nodePort is not set; no NodePort frontend"
                        ));
                    }
                }
                Some(node_port) => match super::port_number(node_port) {
                    Some(node_port) => addresses.push((
                        Frontend {
                            address: Ipv4Addr::UNSPECIFIED,
                            port: node_port,
                            protocol,
                        },
                        FrontendKind::NodePort,
                    )),
                    None => warnings.push(format!(
                        "{object}: {field}.nodePort {node_port} is out of range (1-65535); \
                         no NodePort frontend"
                    )),
                },
            }
        }
        let at = |address: Ipv4Addr| Frontend {
            address,
            port: number,
            protocol,
        };
        addresses.extend(
            self.external_ips
                .iter()
                .map(|&address| (at(address), FrontendKind::ExternalIp)),
        );
        addresses.extend(
            self.load_balancer_ips
                .iter()
                .map(|&address| (at(address), FrontendKind::LoadBalancer)),
        );
        if addresses.is_empty() {
            return Vec::new();
        }

        let (new_flow_backends, drop_when_no_endpoints) =
            select_new_flow_backends(endpoints, self.policy);
        let template = DesiredFrontend {
            drop_when_no_endpoints,
            new_flow_backends: backend_addresses(&new_flow_backends, protocol),
            external_traffic_local: self.policy == TrafficPolicy::Local,
            maglev: true,
            load_balancer_mode: self.load_balancer_mode,
            ..cluster_ip.clone()
        };
        addresses
            .into_iter()
            .map(|(frontend, kind)| {
                let source_ranges = if kind == FrontendKind::LoadBalancer {
                    self.source_ranges.clone()
                } else {
                    Vec::new()
                };
                let desired = DesiredFrontend {
                    kind,
                    source_ranges,
                    ..template.clone()
                };
                (frontend, desired)
            })
            .collect()
    }

    /// Adds the Service's health check to `health_checks` unless another Service has its port.
    pub(super) fn add_health_check(
        &self,
        key: &ServiceName,
        slices: &[ParsedSlice],
        health_checks: &mut Vec<HealthCheck>,
        object: &str,
        warnings: &mut Vec<String>,
    ) {
        let Some(node_port) = self.health_check_node_port else {
            return;
        };
        if let Some(existing) = health_checks
            .iter()
            .find(|check| check.node_port == node_port)
        {
            warnings.push(format!(
                "{object}: spec.healthCheckNodePort {node_port} is already used by {}/{}; ignored",
                existing.namespace, existing.name
            ));
            return;
        }
        health_checks.push(HealthCheck {
            namespace: key.0.clone(),
            name: key.1.clone(),
            node_port,
            local_endpoints: local_ready_endpoints(slices),
        });
    }
}

/// The number of distinct addresses of the ready endpoints on this node, as kube-proxy's
/// `LocalReadyEndpoints` counts them for the health check: one pod serving two ports counts once,
/// and terminating endpoints do not count, so that a node whose pods all terminate fails the check
/// and the load balancer drains it.
fn local_ready_endpoints(slices: &[ParsedSlice]) -> usize {
    slices
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .filter(|endpoint| endpoint.conditions.local && endpoint.conditions.ready)
        .map(|endpoint| endpoint.address)
        .collect::<BTreeSet<_>>()
        .len()
}

/// The IPv4 addresses of `listed` (field, value), sorted and de-duplicated; IPv6 addresses are
/// skipped without a word (dual-stack), empty values too (upstream does the same).
fn ipv4_addresses<'a>(
    listed: impl Iterator<Item = (String, &'a str)>,
    object: &str,
    warnings: &mut Vec<String>,
) -> Vec<Ipv4Addr> {
    let mut addresses = BTreeSet::new();
    for (field, ip) in listed {
        if ip.trim().is_empty() {
            continue;
        }
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(address)) => {
                addresses.insert(address);
            }
            Ok(IpAddr::V6(_)) => {}
            Err(_) => warnings.push(format!(
                "{object}: {field} {ip:?} is not an IP address; ignored"
            )),
        }
    }
    addresses.into_iter().collect()
}

/// The ingress IPs kube-proxy programs: those in VIP mode. An `ipMode: Proxy` load balancer
/// (KEP-1860) delivers traffic to the nodes itself, addressed to them, so the node must not
/// capture its IP; a hostname-only ingress has no IP to capture.
fn ingress_addresses(service: &Service, object: &str, warnings: &mut Vec<String>) -> Vec<Ipv4Addr> {
    let ingress = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|load_balancer| load_balancer.ingress.as_ref());
    let mut listed = Vec::new();
    for (index, ingress) in ingress.into_iter().flatten().enumerate() {
        let Some(ip) = ingress.ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        match ingress.ip_mode.as_deref() {
            None | Some("VIP") => {}
            Some("Proxy") => continue,
            Some(other) => {
                warnings.push(format!(
                    "{object}: status.loadBalancer.ingress[{index}].ipMode {other:?} is not a \
                     mode (VIP, Proxy); ignored"
                ));
                continue;
            }
        }
        listed.push((format!("status.loadBalancer.ingress[{index}].ip"), ip));
    }
    ipv4_addresses(listed.into_iter(), object, warnings)
}

/// `spec.loadBalancerSourceRanges`, or when it is empty the legacy annotation, as IPv4 ranges.
///
/// Each entry is trimmed (the API server lets whitespace through, and kube-proxy trims it) and
/// parsed as a CIDR; host bits are cleared (`10.0.0.1/8` is `10.0.0.0/8`, as Go's `ParseCIDR`
/// that the API server and kube-proxy use reads it). IPv6 ranges filter IPv6 traffic, which is
/// not balanced yet, and are skipped; entries that are no CIDR are reported and skipped.
///
/// When entries are listed but none is a usable IPv4 range, the result is [`SourceFilter::Nothing`]
/// rather than an empty list: an empty list means "every source", and a Service whose owner
/// restricted its sources (to IPv6 clients only, or with a typo) must not become open to all.
/// The dataplane cannot express "no source", so the caller skips the load-balancer frontends.
fn source_filter(
    service: &Service,
    spec: &ServiceSpec,
    object: &str,
    warnings: &mut Vec<String>,
) -> SourceFilter {
    let listed: Vec<(String, &str)> = match spec.load_balancer_source_ranges.as_deref() {
        Some(ranges) if !ranges.is_empty() => ranges
            .iter()
            .enumerate()
            .map(|(index, range)| {
                (
                    format!("spec.loadBalancerSourceRanges[{index}]"),
                    range.as_str(),
                )
            })
            .collect(),
        _ => service
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(ANNOTATION_LOAD_BALANCER_SOURCE_RANGES))
            .map(|value| {
                value
                    .split(',')
                    .enumerate()
                    .map(|(index, range)| {
                        (
                            format!(
                                "metadata.annotations[{ANNOTATION_LOAD_BALANCER_SOURCE_RANGES}][{index}]"
                            ),
                            range,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };

    let mut any_listed = false;
    let mut ranges = BTreeSet::new();
    for (field, range) in listed {
        let range = range.trim();
        if range.is_empty() {
            continue;
        }
        any_listed = true;
        match parse_cidr(range) {
            Some(Cidr::V4(range)) => {
                ranges.insert(range);
            }
            Some(Cidr::V6) => {}
            None => warnings.push(format!(
                "{object}: {field} {range:?} is not a CIDR (for example 10.0.0.0/24); ignored"
            )),
        }
    }
    if !any_listed {
        SourceFilter::Every
    } else if ranges.is_empty() {
        SourceFilter::Nothing
    } else {
        SourceFilter::Only(ranges.into_iter().collect())
    }
}

enum Cidr {
    V4(SourceRange),
    V6,
}

/// `address/prefix-length` with a decimal prefix length in range for the family.
fn parse_cidr(text: &str) -> Option<Cidr> {
    let (address, prefix_length) = text.split_once('/')?;
    if prefix_length.is_empty()
        || prefix_length.len() > 3
        || !prefix_length.bytes().all(|byte| byte.is_ascii_digit())
    {
        return None;
    }
    let prefix_length: u8 = prefix_length.parse().ok()?;
    match address.parse::<IpAddr>().ok()? {
        IpAddr::V4(address) if prefix_length <= 32 => {
            let mask = u32::MAX
                .checked_shl(u32::from(32 - prefix_length))
                .unwrap_or(0);
            Some(Cidr::V4(SourceRange {
                address: Ipv4Addr::from(u32::from(address) & mask),
                prefix_length,
            }))
        }
        IpAddr::V6(_) if prefix_length <= 128 => Some(Cidr::V6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, ServiceStatus,
        SessionAffinityConfig,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::super::tests::{
        NODE, backend, endpoint, frontend, on_node, service, service_port, slice, slice_port, spec,
        web_service, web_slice, with_conditions,
    };
    use super::super::{Desired, translate};
    use super::*;

    const LB_IP: &str = "203.0.113.10";

    fn ingress(
        ip: Option<&str>,
        hostname: Option<&str>,
        ip_mode: Option<&str>,
    ) -> LoadBalancerIngress {
        LoadBalancerIngress {
            ip: ip.map(str::to_owned),
            hostname: hostname.map(str::to_owned),
            ip_mode: ip_mode.map(str::to_owned),
            ..LoadBalancerIngress::default()
        }
    }

    fn with_ingress(mut service: Service, ingress: Vec<LoadBalancerIngress>) -> Service {
        service.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(ingress),
            }),
            ..ServiceStatus::default()
        });
        service
    }

    fn annotate(service: &mut Service, key: &str, value: &str) {
        service
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
    }

    /// `default/lb`: ClusterIP 10.96.0.11, port 443/TCP → 8443, nodePort 30443, ingress 203.0.113.10.
    fn lb_service() -> Service {
        let mut port = service_port("", 443, "TCP", IntOrString::Int(8443));
        port.node_port = Some(30443);
        let mut lb = service("default", "lb", "10.96.0.11", vec![port]);
        spec(&mut lb).type_ = Some("LoadBalancer".to_owned());
        with_ingress(lb, vec![ingress(Some(LB_IP), None, None)])
    }

    fn lb_slice(
        endpoints: Vec<k8s_openapi::api::discovery::v1::Endpoint>,
    ) -> k8s_openapi::api::discovery::v1::EndpointSlice {
        slice(
            "default",
            "lb-1",
            "lb",
            vec![slice_port("", 8443, "TCP")],
            endpoints,
        )
    }

    fn node_port_service(name: &str, cluster_ip: &str, node_port: i32) -> Service {
        let mut port = service_port("", 80, "TCP", IntOrString::Int(8080));
        port.node_port = Some(node_port);
        let mut node_port_service = service("default", name, cluster_ip, vec![port]);
        spec(&mut node_port_service).type_ = Some("NodePort".to_owned());
        node_port_service
    }

    fn kinds(desired: &Desired) -> Vec<(Frontend, FrontendKind)> {
        desired
            .frontends
            .iter()
            .map(|(frontend, desired)| (*frontend, desired.kind))
            .collect()
    }

    fn lb_frontend() -> Frontend {
        frontend(LB_IP, 443, Protocol::Tcp)
    }

    fn node_port_frontend() -> Frontend {
        frontend("0.0.0.0", 30443, Protocol::Tcp)
    }

    #[test]
    fn node_port_service_gets_a_cluster_ip_and_a_maglev_node_port_frontend() {
        let web = node_port_service("web", "10.96.0.10", 30080);
        let slices = [web_slice(vec![endpoint("10.0.1.5")])];

        let desired = translate(&[web], &slices, NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        assert_eq!(
            kinds(&desired),
            [
                (
                    frontend("0.0.0.0", 30080, Protocol::Tcp),
                    FrontendKind::NodePort
                ),
                (
                    frontend("10.96.0.10", 80, Protocol::Tcp),
                    FrontendKind::ClusterIp
                ),
            ]
        );
        let node_port = &desired.frontends[&frontend("0.0.0.0", 30080, Protocol::Tcp)];
        let cluster_ip = &desired.frontends[&frontend("10.96.0.10", 80, Protocol::Tcp)];
        assert!(node_port.maglev);
        assert!(!cluster_ip.maglev);
        assert!(!node_port.external_traffic_local);
        assert_eq!(node_port.service.to_string(), "default/web");
        assert_eq!(
            node_port.new_flow_backends,
            [backend("10.0.1.5", 8080, Protocol::Tcp)]
        );
        assert_eq!(node_port.backends, cluster_ip.backends);
    }

    #[test]
    fn node_port_out_of_range_is_reported_and_gets_no_frontend() {
        let web = node_port_service("web", "10.96.0.10", 70_000);

        let desired = translate(&[web], &[], NODE);

        assert_eq!(
            kinds(&desired),
            [(
                frontend("10.96.0.10", 80, Protocol::Tcp),
                FrontendKind::ClusterIp
            )]
        );
        assert_eq!(
            desired.warnings,
            [
                "Service default/web: spec.ports[0].nodePort 70000 is out of range (1-65535); no NodePort frontend"
            ]
        );
    }

    #[test]
    fn load_balancer_without_allocated_node_ports_has_no_node_port_frontend() {
        let mut lb = lb_service();
        spec(&mut lb).allocate_load_balancer_node_ports = Some(false);
        if let Some(port) = spec(&mut lb)
            .ports
            .as_mut()
            .and_then(|ports| ports.first_mut())
        {
            port.node_port = None;
        }

        let desired = translate(&[lb], &[], NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        assert_eq!(
            kinds(&desired),
            [
                (
                    frontend("10.96.0.11", 443, Protocol::Tcp),
                    FrontendKind::ClusterIp
                ),
                (lb_frontend(), FrontendKind::LoadBalancer),
            ]
        );
    }

    #[test]
    fn load_balancer_service_gets_node_port_and_ingress_ip_frontends() {
        let slices = [lb_slice(vec![endpoint("10.0.1.5")])];

        let desired = translate(&[lb_service()], &slices, NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        assert_eq!(
            kinds(&desired),
            [
                (node_port_frontend(), FrontendKind::NodePort),
                (
                    frontend("10.96.0.11", 443, Protocol::Tcp),
                    FrontendKind::ClusterIp
                ),
                (lb_frontend(), FrontendKind::LoadBalancer),
            ]
        );
        let lb = &desired.frontends[&lb_frontend()];
        assert!(lb.maglev);
        assert_eq!(
            lb.new_flow_backends,
            [backend("10.0.1.5", 8443, Protocol::Tcp)]
        );
        assert_eq!(lb.source_ranges, []);
        assert_eq!(lb.load_balancer_mode, None);
    }

    #[test]
    fn proxy_mode_and_hostname_only_ingress_entries_are_not_programmed() {
        let lb = with_ingress(
            lb_service(),
            vec![
                ingress(Some("203.0.113.20"), None, Some("Proxy")),
                ingress(None, Some("lb.example.org"), None),
                ingress(Some(LB_IP), Some("lb.example.org"), Some("VIP")),
                ingress(Some("2001:db8::10"), None, None),
            ],
        );

        let desired = translate(&[lb], &[], NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        let load_balancer_frontends: Vec<Frontend> = kinds(&desired)
            .into_iter()
            .filter(|(_, kind)| *kind == FrontendKind::LoadBalancer)
            .map(|(frontend, _)| frontend)
            .collect();
        assert_eq!(load_balancer_frontends, [lb_frontend()]);
    }

    #[test]
    fn malformed_ingress_ip_and_ip_mode_are_reported() {
        let lb = with_ingress(
            lb_service(),
            vec![
                ingress(Some("203.0.113.300"), None, None),
                ingress(Some("203.0.113.20"), None, Some("Magic")),
            ],
        );

        let desired = translate(&[lb], &[], NODE);

        assert!(
            !desired
                .frontends
                .contains_key(&frontend("203.0.113.20", 443, Protocol::Tcp))
        );
        assert_eq!(
            desired.warnings,
            [
                r#"Service default/lb: status.loadBalancer.ingress[1].ipMode "Magic" is not a mode (VIP, Proxy); ignored"#,
                r#"Service default/lb: status.loadBalancer.ingress[0].ip "203.0.113.300" is not an IP address; ignored"#,
            ]
        );
    }

    #[test]
    fn ingress_ips_of_a_service_that_is_not_a_load_balancer_are_ignored() {
        let stale = with_ingress(
            node_port_service("web", "10.96.0.10", 30080),
            vec![ingress(Some(LB_IP), None, None)],
        );

        let desired = translate(&[stale], &[], NODE);

        assert!(
            kinds(&desired)
                .iter()
                .all(|(_, kind)| *kind != FrontendKind::LoadBalancer)
        );
    }

    #[test]
    fn external_ips_get_one_frontend_per_ipv4_address_and_port() {
        let mut web = web_service();
        spec(&mut web).external_ips = Some(vec![
            "192.0.2.7".to_owned(),
            "2001:db8::7".to_owned(),
            "192.0.2.7".to_owned(),
            "192.0.2.999".to_owned(),
            "192.0.2.5".to_owned(),
        ]);

        let desired = translate(&[web], &[web_slice(vec![endpoint("10.0.1.5")])], NODE);

        assert_eq!(
            kinds(&desired),
            [
                (
                    frontend("10.96.0.10", 80, Protocol::Tcp),
                    FrontendKind::ClusterIp
                ),
                (
                    frontend("192.0.2.5", 80, Protocol::Tcp),
                    FrontendKind::ExternalIp
                ),
                (
                    frontend("192.0.2.7", 80, Protocol::Tcp),
                    FrontendKind::ExternalIp
                ),
            ]
        );
        assert_eq!(
            desired.warnings,
            [
                r#"Service default/web: spec.externalIPs[3] "192.0.2.999" is not an IP address; ignored"#
            ]
        );
        let external = &desired.frontends[&frontend("192.0.2.5", 80, Protocol::Tcp)];
        assert!(external.maglev);
        assert_eq!(external.source_ranges, []);
        assert_eq!(
            external.new_flow_backends,
            [backend("10.0.1.5", 8080, Protocol::Tcp)]
        );
    }

    #[test]
    fn external_traffic_policy_local_uses_only_local_endpoints_and_leaves_cluster_ip_alone() {
        let mut lb = lb_service();
        spec(&mut lb).external_traffic_policy = Some("Local".to_owned());
        spec(&mut lb).health_check_node_port = Some(32000);
        let slices = [lb_slice(vec![
            on_node(endpoint("10.0.1.5"), NODE),
            endpoint("10.0.2.5"),
        ])];

        let desired = translate(&[lb], &slices, NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        for external in [node_port_frontend(), lb_frontend()] {
            let external = &desired.frontends[&external];
            assert!(external.external_traffic_local);
            assert!(!external.drop_when_no_endpoints);
            assert_eq!(
                external.new_flow_backends,
                [backend("10.0.1.5", 8443, Protocol::Tcp)]
            );
            assert_eq!(
                external.backends.len(),
                2,
                "existing flows keep every endpoint"
            );
        }
        let cluster_ip = &desired.frontends[&frontend("10.96.0.11", 443, Protocol::Tcp)];
        assert!(!cluster_ip.external_traffic_local);
        assert_eq!(
            cluster_ip.new_flow_backends,
            [
                backend("10.0.1.5", 8443, Protocol::Tcp),
                backend("10.0.2.5", 8443, Protocol::Tcp)
            ]
        );
    }

    #[test]
    fn external_traffic_policy_local_without_local_endpoints_drops() {
        let mut lb = lb_service();
        spec(&mut lb).external_traffic_policy = Some("Local".to_owned());
        spec(&mut lb).health_check_node_port = Some(32000);
        let slices = [lb_slice(vec![endpoint("10.0.2.5")])];

        let desired = translate(&[lb], &slices, NODE);

        let external = &desired.frontends[&lb_frontend()];
        assert_eq!(external.new_flow_backends, []);
        assert!(external.drop_when_no_endpoints);
        let cluster_ip = &desired.frontends[&frontend("10.96.0.11", 443, Protocol::Tcp)];
        assert!(!cluster_ip.drop_when_no_endpoints);
        assert_eq!(cluster_ip.new_flow_backends.len(), 1);
    }

    #[test]
    fn external_traffic_policy_local_falls_back_to_local_serving_terminating_endpoints() {
        let mut lb = lb_service();
        spec(&mut lb).external_traffic_policy = Some("Local".to_owned());
        spec(&mut lb).health_check_node_port = Some(32000);
        let slices = [lb_slice(vec![
            on_node(
                with_conditions(endpoint("10.0.1.5"), false, true, true),
                NODE,
            ),
            endpoint("10.0.2.5"),
        ])];

        let desired = translate(&[lb], &slices, NODE);

        assert_eq!(
            desired.frontends[&lb_frontend()].new_flow_backends,
            [backend("10.0.1.5", 8443, Protocol::Tcp)]
        );
    }

    #[test]
    fn external_traffic_policy_local_with_no_usable_endpoint_anywhere_rejects() {
        let mut lb = lb_service();
        spec(&mut lb).external_traffic_policy = Some("Local".to_owned());
        spec(&mut lb).health_check_node_port = Some(32000);
        let slices = [lb_slice(vec![with_conditions(
            endpoint("10.0.2.5"),
            false,
            false,
            false,
        )])];

        let desired = translate(&[lb], &slices, NODE);

        let external = &desired.frontends[&lb_frontend()];
        assert_eq!(external.new_flow_backends, []);
        assert!(!external.drop_when_no_endpoints);
    }

    #[test]
    fn internal_traffic_policy_local_does_not_restrict_external_frontends() {
        let mut lb = lb_service();
        spec(&mut lb).internal_traffic_policy = Some("Local".to_owned());
        let slices = [lb_slice(vec![endpoint("10.0.2.5")])];

        let desired = translate(&[lb], &slices, NODE);

        let external = &desired.frontends[&lb_frontend()];
        assert!(!external.external_traffic_local);
        assert_eq!(
            external.new_flow_backends,
            [backend("10.0.2.5", 8443, Protocol::Tcp)]
        );
        let cluster_ip = &desired.frontends[&frontend("10.96.0.11", 443, Protocol::Tcp)];
        assert!(cluster_ip.drop_when_no_endpoints);
    }

    #[test]
    fn unknown_external_traffic_policy_is_reported_and_treated_as_cluster() {
        let mut lb = lb_service();
        spec(&mut lb).external_traffic_policy = Some("Global".to_owned());
        let slices = [lb_slice(vec![endpoint("10.0.2.5")])];

        let desired = translate(&[lb], &slices, NODE);

        let external = &desired.frontends[&lb_frontend()];
        assert!(!external.external_traffic_local);
        assert_eq!(external.new_flow_backends.len(), 1);
        assert_eq!(
            desired.warnings,
            [
                r#"Service default/lb: spec.externalTrafficPolicy "Global" is not a policy (Cluster, Local); using Cluster"#
            ]
        );
        assert_eq!(desired.health_checks, []);
    }

    #[test]
    fn session_affinity_applies_to_external_frontends() {
        let mut lb = lb_service();
        spec(&mut lb).session_affinity = Some("ClientIP".to_owned());
        spec(&mut lb).session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });

        let desired = translate(&[lb], &[], NODE);

        assert_eq!(desired.frontends.len(), 3);
        assert!(
            desired
                .frontends
                .values()
                .all(|frontend| frontend.session_affinity_timeout_seconds == Some(60))
        );
    }

    #[test]
    fn source_ranges_are_normalised_sorted_and_apply_to_load_balancer_frontends_only() {
        let mut lb = lb_service();
        spec(&mut lb).external_ips = Some(vec!["192.0.2.7".to_owned()]);
        spec(&mut lb).load_balancer_source_ranges = Some(vec![
            " 10.1.2.3/8".to_owned(),
            "192.168.0.0/24".to_owned(),
            "10.0.0.0/8".to_owned(),
            "2001:db8::/32".to_owned(),
            "198.51.100.7/32".to_owned(),
        ]);

        let desired = translate(&[lb], &[], NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        assert_eq!(
            desired.frontends[&lb_frontend()]
                .source_ranges
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.0.0.0/8", "192.168.0.0/24", "198.51.100.7/32"]
        );
        for other in [
            node_port_frontend(),
            frontend("192.0.2.7", 443, Protocol::Tcp),
            frontend("10.96.0.11", 443, Protocol::Tcp),
        ] {
            assert_eq!(desired.frontends[&other].source_ranges, [], "{other}");
        }
    }

    #[test]
    fn legacy_source_ranges_annotation_is_read_when_the_field_is_empty() {
        let mut lb = lb_service();
        annotate(
            &mut lb,
            ANNOTATION_LOAD_BALANCER_SOURCE_RANGES,
            "10.0.0.0/8, 192.168.1.1/16,",
        );

        let desired = translate(&[lb], &[], NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        assert_eq!(
            desired.frontends[&lb_frontend()]
                .source_ranges
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.0.0.0/8", "192.168.0.0/16"]
        );
    }

    #[test]
    fn source_ranges_field_wins_over_the_legacy_annotation() {
        let mut lb = lb_service();
        annotate(
            &mut lb,
            ANNOTATION_LOAD_BALANCER_SOURCE_RANGES,
            "10.0.0.0/8",
        );
        spec(&mut lb).load_balancer_source_ranges = Some(vec!["172.16.0.0/12".to_owned()]);

        let desired = translate(&[lb], &[], NODE);

        assert_eq!(
            desired.frontends[&lb_frontend()].source_ranges,
            [SourceRange {
                address: Ipv4Addr::new(172, 16, 0, 0),
                prefix_length: 12
            }]
        );
    }

    #[test]
    fn malformed_source_ranges_are_reported_and_the_valid_ones_kept() {
        let mut lb = lb_service();
        spec(&mut lb).load_balancer_source_ranges = Some(vec![
            "10.0.0.0/33".to_owned(),
            "10.0.0.0".to_owned(),
            "192.168.0.0/24".to_owned(),
            "10.0.0.0/+8".to_owned(),
        ]);

        let desired = translate(&[lb], &[], NODE);

        assert_eq!(
            desired.frontends[&lb_frontend()]
                .source_ranges
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["192.168.0.0/24"]
        );
        assert_eq!(
            desired.warnings,
            [
                r#"Service default/lb: spec.loadBalancerSourceRanges[0] "10.0.0.0/33" is not a CIDR (for example 10.0.0.0/24); ignored"#,
                r#"Service default/lb: spec.loadBalancerSourceRanges[1] "10.0.0.0" is not a CIDR (for example 10.0.0.0/24); ignored"#,
                r#"Service default/lb: spec.loadBalancerSourceRanges[3] "10.0.0.0/+8" is not a CIDR (for example 10.0.0.0/24); ignored"#,
            ]
        );
    }

    #[test]
    fn source_ranges_with_no_usable_ipv4_range_skip_the_load_balancer_frontends() {
        let mut lb = lb_service();
        spec(&mut lb).load_balancer_source_ranges =
            Some(vec!["2001:db8::/32".to_owned(), "not-a-cidr".to_owned()]);

        let desired = translate(&[lb], &[], NODE);

        assert_eq!(
            kinds(&desired),
            [
                (node_port_frontend(), FrontendKind::NodePort),
                (
                    frontend("10.96.0.11", 443, Protocol::Tcp),
                    FrontendKind::ClusterIp
                ),
            ]
        );
        assert_eq!(
            desired.warnings,
            [
                r#"Service default/lb: spec.loadBalancerSourceRanges[1] "not-a-cidr" is not a CIDR (for example 10.0.0.0/24); ignored"#,
                "Service default/lb: loadBalancerSourceRanges allows no IPv4 source; load-balancer frontends skipped rather than opened to every source",
            ]
        );
    }

    #[test]
    fn lb_mode_annotation_sets_the_mode_of_external_frontends_only() {
        let mut snat = lb_service();
        annotate(&mut snat, ANNOTATION_LB_MODE, "snat");
        let mut dsr = node_port_service("web", "10.96.0.10", 30080);
        annotate(&mut dsr, ANNOTATION_LB_MODE, "dsr");

        let desired = translate(&[snat, dsr], &[], NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        let mode = |frontend: Frontend| desired.frontends[&frontend].load_balancer_mode;
        assert_eq!(mode(lb_frontend()), Some(LoadBalancerMode::Snat));
        assert_eq!(mode(node_port_frontend()), Some(LoadBalancerMode::Snat));
        assert_eq!(mode(frontend("10.96.0.11", 443, Protocol::Tcp)), None);
        assert_eq!(
            mode(frontend("0.0.0.0", 30080, Protocol::Tcp)),
            Some(LoadBalancerMode::Dsr)
        );
        assert_eq!(mode(frontend("10.96.0.10", 80, Protocol::Tcp)), None);
    }

    #[test]
    fn unknown_lb_mode_annotation_is_reported_and_left_to_the_default() {
        let mut lb = lb_service();
        annotate(&mut lb, ANNOTATION_LB_MODE, "DSR");

        let desired = translate(&[lb], &[], NODE);

        assert_eq!(desired.frontends[&lb_frontend()].load_balancer_mode, None);
        assert_eq!(
            desired.warnings,
            [
                r#"Service default/lb: metadata.annotations[skiff.dev/lb-mode] "DSR" is not a mode (snat, dsr); using skiff-proxy's --lb-mode"#
            ]
        );
    }

    #[test]
    fn health_check_counts_distinct_local_ready_endpoint_addresses() {
        let mut port = service_port("https", 443, "TCP", IntOrString::Int(8443));
        port.node_port = Some(30443);
        let mut metrics = service_port("metrics", 9090, "TCP", IntOrString::Int(9102));
        metrics.node_port = Some(30090);
        let mut lb = lb_service();
        spec(&mut lb).ports = Some(vec![port, metrics]);
        spec(&mut lb).external_traffic_policy = Some("Local".to_owned());
        spec(&mut lb).health_check_node_port = Some(32000);
        let slices = [
            slice(
                "default",
                "lb-1",
                "lb",
                vec![
                    slice_port("https", 8443, "TCP"),
                    slice_port("metrics", 9102, "TCP"),
                ],
                vec![
                    on_node(endpoint("10.0.1.5"), NODE),
                    on_node(
                        with_conditions(endpoint("10.0.1.6"), false, true, true),
                        NODE,
                    ),
                    on_node(
                        with_conditions(endpoint("10.0.1.8"), false, false, false),
                        NODE,
                    ),
                    endpoint("10.0.2.5"),
                ],
            ),
            slice(
                "default",
                "lb-2",
                "lb",
                vec![slice_port("https", 8443, "TCP")],
                vec![
                    on_node(endpoint("10.0.1.5"), NODE),
                    on_node(endpoint("10.0.1.7"), NODE),
                ],
            ),
        ];

        let desired = translate(&[lb], &slices, NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        assert_eq!(
            desired.health_checks,
            [HealthCheck {
                namespace: "default".to_owned(),
                name: "lb".to_owned(),
                node_port: 32000,
                local_endpoints: 2,
            }]
        );
    }

    #[test]
    fn health_check_of_a_node_with_only_terminating_local_endpoints_counts_none() {
        let mut lb = lb_service();
        spec(&mut lb).external_traffic_policy = Some("Local".to_owned());
        spec(&mut lb).health_check_node_port = Some(32000);
        let slices = [lb_slice(vec![on_node(
            with_conditions(endpoint("10.0.1.6"), false, true, true),
            NODE,
        )])];

        let desired = translate(&[lb], &slices, NODE);

        assert_eq!(desired.health_checks.len(), 1);
        assert_eq!(desired.health_checks[0].local_endpoints, 0);
    }

    #[test]
    fn no_health_check_without_external_traffic_policy_local_on_a_load_balancer() {
        let mut cluster_policy = lb_service();
        spec(&mut cluster_policy).health_check_node_port = Some(32000);
        let mut node_port = node_port_service("web", "10.96.0.10", 30080);
        spec(&mut node_port).external_traffic_policy = Some("Local".to_owned());
        spec(&mut node_port).health_check_node_port = Some(32001);

        let desired = translate(&[cluster_policy, node_port], &[], NODE);

        assert_eq!(desired.health_checks, []);
        assert_eq!(desired.warnings, Vec::<String>::new());
    }

    #[test]
    fn health_check_node_port_unset_or_out_of_range_is_reported() {
        let mut unset = lb_service();
        spec(&mut unset).external_traffic_policy = Some("Local".to_owned());
        let mut out_of_range = with_ingress(
            service(
                "default",
                "lc",
                "10.96.0.12",
                vec![service_port("", 443, "TCP", IntOrString::Int(8443))],
            ),
            vec![],
        );
        spec(&mut out_of_range).type_ = Some("LoadBalancer".to_owned());
        spec(&mut out_of_range).allocate_load_balancer_node_ports = Some(false);
        spec(&mut out_of_range).external_traffic_policy = Some("Local".to_owned());
        spec(&mut out_of_range).health_check_node_port = Some(65_536);

        let desired = translate(&[unset, out_of_range], &[], NODE);

        assert_eq!(desired.health_checks, []);
        assert_eq!(
            desired.warnings,
            [
                "Service default/lb: spec.healthCheckNodePort is not set; no health check served",
                "Service default/lc: spec.healthCheckNodePort 65536 is out of range (1-65535); no health check served",
            ]
        );
    }

    #[test]
    fn two_services_claiming_one_health_check_port_keep_the_first_by_name_and_warn() {
        let mut first = lb_service();
        spec(&mut first).external_traffic_policy = Some("Local".to_owned());
        spec(&mut first).health_check_node_port = Some(32000);
        let mut second = first.clone();
        second.metadata.name = Some("lc".to_owned());
        spec(&mut second).cluster_ip = Some("10.96.0.12".to_owned());
        spec(&mut second).cluster_ips = Some(vec!["10.96.0.12".to_owned()]);
        spec(&mut second).allocate_load_balancer_node_ports = Some(false);
        if let Some(port) = spec(&mut second)
            .ports
            .as_mut()
            .and_then(|ports| ports.first_mut())
        {
            port.node_port = None;
            port.port = 8443;
        }

        let desired = translate(&[second, first], &[], NODE);

        assert_eq!(
            desired
                .health_checks
                .iter()
                .map(|check| check.name.as_str())
                .collect::<Vec<_>>(),
            ["lb"]
        );
        assert_eq!(
            desired.warnings,
            [
                "Service default/lc: spec.healthCheckNodePort 32000 is already used by default/lb; ignored"
            ]
        );
    }

    #[test]
    fn two_services_claiming_one_node_port_keep_the_first_by_name_and_warn() {
        let web = node_port_service("web", "10.96.0.10", 30080);
        let other = node_port_service("aaa", "10.96.0.20", 30080);

        let desired = translate(&[web, other], &[], NODE);

        assert_eq!(
            desired.frontends[&frontend("0.0.0.0", 30080, Protocol::Tcp)]
                .service
                .to_string(),
            "default/aaa"
        );
        assert!(
            desired
                .frontends
                .contains_key(&frontend("10.96.0.10", 80, Protocol::Tcp))
        );
        assert_eq!(
            desired.warnings,
            [
                "Service default/web: spec.ports[0]: frontend 0.0.0.0:30080/TCP is already used by default/aaa; ignored"
            ]
        );
    }

    #[test]
    fn node_port_of_one_protocol_does_not_collide_with_the_other() {
        let tcp = node_port_service("web", "10.96.0.10", 30053);
        let mut udp = node_port_service("dns", "10.96.0.53", 30053);
        if let Some(port) = spec(&mut udp)
            .ports
            .as_mut()
            .and_then(|ports| ports.first_mut())
        {
            port.protocol = Some("UDP".to_owned());
        }

        let desired = translate(&[tcp, udp], &[], NODE);

        assert_eq!(desired.warnings, Vec::<String>::new());
        assert!(
            desired
                .frontends
                .contains_key(&frontend("0.0.0.0", 30053, Protocol::Tcp))
        );
        assert!(
            desired
                .frontends
                .contains_key(&frontend("0.0.0.0", 30053, Protocol::Udp))
        );
    }

    #[test]
    fn external_translation_is_independent_of_input_order() {
        let mut lb = lb_service();
        spec(&mut lb).external_traffic_policy = Some("Local".to_owned());
        spec(&mut lb).health_check_node_port = Some(32000);
        spec(&mut lb).load_balancer_source_ranges =
            Some(vec!["192.168.0.0/24".to_owned(), "10.0.0.0/8".to_owned()]);
        let mut web = node_port_service("web", "10.96.0.10", 30080);
        spec(&mut web).external_ips = Some(vec!["192.0.2.9".to_owned(), "192.0.2.7".to_owned()]);
        let slices = [
            lb_slice(vec![
                on_node(endpoint("10.0.1.6"), NODE),
                endpoint("10.0.2.5"),
            ]),
            web_slice(vec![
                endpoint("10.0.1.9"),
                on_node(endpoint("10.0.1.5"), NODE),
            ]),
        ];
        let mut reversed_slices = slices.clone();
        reversed_slices.reverse();

        let forward = translate(&[lb.clone(), web.clone()], &slices, NODE);
        let backward = translate(&[web, lb], &reversed_slices, NODE);

        assert_eq!(forward, backward);
        assert_eq!(forward.frontends.len(), 7);
    }
}
