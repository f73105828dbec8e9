//! Service validation (`ValidateService`, `ValidateServiceUpdate`): type, ports, selector,
//! session affinity, cluster IPs and IP families, external IPs, traffic policies.
//!
//! Owns the shape of a Service only. Allocation is the registry's: this runs before it, so an
//! empty `clusterIP` or `nodePort` is accepted (the allocator fills them, reusing the stored
//! values on update), and node-port ranges and collisions are not checked here.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::names::{INVALID_CIDR, INVALID_IP, is_valid_cidr, parse_ip_sloppy, special_ip_errors};
use super::{
    FIELD_IMMUTABLE, FieldError, PROTOCOLS, child, index, integer, invalid_each, is_dns1123_label,
    is_dns1123_subdomain, is_qualified_name, list, one_of, port_number_or_name, text,
    validate_labels,
};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SESSION_AFFINITIES: &[&str] = &["ClientIP", "None"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const IP_FAMILIES: &[&str] = &["IPv4", "IPv6"];
const IP_FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
/// `MaxClientIPServiceAffinitySeconds`: one day.
const MAX_CLIENT_IP_AFFINITY_SECONDS: i64 = 86400;

/// `ValidateService` and, with `old`, `ValidateServiceUpdate`.
pub(super) fn validate_service(service: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    let spec = &service["spec"];
    let service_type = text(spec, "type");
    let headless = is_headless(spec);
    let ports = list(spec, "ports");

    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errors.push(FieldError::required("spec.ports", ""));
    }
    match service_type {
        "LoadBalancer" | "NodePort" if headless => errors.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            "None",
            format!("may not be set to 'None' for {service_type} services"),
        )),
        "ExternalName" => validate_external_name(spec, errors),
        _ => {}
    }

    let mut port_names = BTreeSet::new();
    for (position, port) in ports.iter().enumerate() {
        validate_service_port(
            port,
            ports.len() > 1,
            &mut port_names,
            &index("spec.ports", position),
            errors,
        );
    }
    validate_labels(errors, spec, "selector", "spec.selector");
    validate_session_affinity(spec, errors);
    if service_type != "ExternalName" {
        validate_cluster_ips(spec, errors);
    }
    for (position, address) in list(spec, "externalIPs").iter().enumerate() {
        let address = address.as_str().unwrap_or_default();
        let path = index("spec.externalIPs", position);
        match parse_ip_sloppy(address) {
            Some(parsed) => {
                invalid_each(errors, &path, address, special_ip_errors(parsed, address))
            }
            None => errors.push(FieldError::invalid(path, address, INVALID_IP)),
        }
    }
    one_of(errors, "spec.type", service_type, SERVICE_TYPES);
    validate_ports_against_type(spec, service_type, errors);
    validate_load_balancer_fields(service, spec, service_type, errors);
    validate_traffic_policies(spec, service_type, errors);

    if let Some(old) = old {
        validate_service_update(spec, &old["spec"], errors);
    }
}

/// `isHeadlessService`.
fn is_headless(spec: &Value) -> bool {
    text(spec, "clusterIP") == "None"
        || list(spec, "clusterIPs").first().and_then(Value::as_str) == Some("None")
}

/// `ExternallyAccessible`: reachable from outside the cluster network.
fn externally_accessible(spec: &Value, service_type: &str) -> bool {
    matches!(service_type, "LoadBalancer" | "NodePort")
        || (service_type == "ClusterIP" && !list(spec, "externalIPs").is_empty())
}

fn validate_external_name(spec: &Value, errors: &mut Vec<FieldError>) {
    if !list(spec, "clusterIPs").is_empty() {
        errors.push(FieldError::forbidden(
            "spec.clusterIPs",
            "may not be set for ExternalName services",
        ));
    }
    if !list(spec, "ipFamilies").is_empty() {
        errors.push(FieldError::forbidden(
            "spec.ipFamilies",
            "may not be set for ExternalName services",
        ));
    }
    if !spec["ipFamilyPolicy"].is_null() {
        errors.push(FieldError::forbidden(
            "spec.ipFamilyPolicy",
            "may not be set for ExternalName services",
        ));
    }
    let external_name = text(spec, "externalName");
    let cname = external_name.strip_suffix('.').unwrap_or(external_name);
    if cname.is_empty() {
        errors.push(FieldError::required("spec.externalName", ""));
    } else {
        invalid_each(
            errors,
            "spec.externalName",
            cname,
            is_dns1123_subdomain(cname),
        );
    }
}

/// `validateServicePort`.
fn validate_service_port<'a>(
    port: &'a Value,
    require_name: bool,
    names: &mut BTreeSet<&'a str>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let name = text(port, "name");
    let name_path = child(path, "name");
    if require_name && name.is_empty() {
        errors.push(FieldError::required(&name_path, ""));
    } else if !name.is_empty() {
        invalid_each(errors, &name_path, name, is_dns1123_label(name));
        if !names.insert(name) {
            errors.push(FieldError::duplicate(&name_path, name));
        }
    }
    let number = integer(port, "port").unwrap_or(0);
    for detail in super::names::is_valid_port_num(number) {
        errors.push(FieldError::invalid(child(path, "port"), number, detail));
    }
    one_of(
        errors,
        &child(path, "protocol"),
        text(port, "protocol"),
        PROTOCOLS,
    );
    port_number_or_name(errors, &child(path, "targetPort"), &port["targetPort"]);
    if let Some(app_protocol) = port["appProtocol"].as_str() {
        invalid_each(
            errors,
            &child(path, "appProtocol"),
            app_protocol,
            is_qualified_name(app_protocol),
        );
    }
}

fn validate_session_affinity(spec: &Value, errors: &mut Vec<FieldError>) {
    let affinity = text(spec, "sessionAffinity");
    one_of(errors, "spec.sessionAffinity", affinity, SESSION_AFFINITIES);
    let config = &spec["sessionAffinityConfig"];
    match affinity {
        "ClientIP" => {
            let required = "when session affinity type is ClientIP";
            if config.is_null() {
                errors.push(FieldError::required("spec.sessionAffinityConfig", required));
            } else if config["clientIP"].is_null() {
                errors.push(FieldError::required(
                    "spec.sessionAffinityConfig.clientIP",
                    required,
                ));
            } else {
                let path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
                match integer(&config["clientIP"], "timeoutSeconds") {
                    None => errors.push(FieldError::required(path, required)),
                    Some(timeout) if timeout <= 0 || timeout > MAX_CLIENT_IP_AFFINITY_SECONDS => {
                        errors.push(FieldError::invalid(
                            path,
                            timeout,
                            format!(
                                "must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        "None" if !config.is_null() => errors.push(FieldError::forbidden(
            "spec.sessionAffinityConfig",
            "must not be set when session affinity is None",
        )),
        _ => {}
    }
}

/// The address part of `ValidateServiceClusterIPsRelatedFields`.
fn validate_cluster_ips(spec: &Value, errors: &mut Vec<FieldError>) {
    let cluster_ip = text(spec, "clusterIP");
    let cluster_ips = list(spec, "clusterIPs");
    if cluster_ips.is_empty() {
        if !cluster_ip.is_empty() && cluster_ip != "None" && parse_ip_sloppy(cluster_ip).is_none() {
            errors.push(FieldError::invalid(
                "spec.clusterIP",
                cluster_ip,
                INVALID_IP,
            ));
        }
    } else {
        if !cluster_ip.is_empty() && cluster_ips[0].as_str() != Some(cluster_ip) {
            errors.push(FieldError::invalid(
                "spec.clusterIPs",
                Value::Array(cluster_ips.to_vec()),
                "first value must match `clusterIP`",
            ));
        }
        for (position, address) in cluster_ips.iter().enumerate() {
            let address = address.as_str().unwrap_or_default();
            if address == "None" {
                if position != 0 || cluster_ips.len() > 1 {
                    errors.push(FieldError::invalid(
                        "spec.clusterIPs",
                        Value::Array(cluster_ips.to_vec()),
                        "'None' must be the first and only value",
                    ));
                }
                continue;
            }
            if parse_ip_sloppy(address).is_none() {
                errors.push(FieldError::invalid(
                    index("spec.clusterIPs", position),
                    address,
                    INVALID_IP,
                ));
            }
        }
    }
    if !spec["ipFamilyPolicy"].is_null() {
        one_of(
            errors,
            "spec.ipFamilyPolicy",
            text(spec, "ipFamilyPolicy"),
            IP_FAMILY_POLICIES,
        );
    }
    let mut families = BTreeSet::new();
    for (position, family) in list(spec, "ipFamilies").iter().enumerate() {
        let family = family.as_str().unwrap_or_default();
        let path = index("spec.ipFamilies", position);
        if !IP_FAMILIES.contains(&family) {
            errors.push(FieldError::not_supported(&path, family, IP_FAMILIES));
        } else if !families.insert(family) {
            errors.push(FieldError::duplicate(&path, family));
        }
    }
}

/// Node ports only where the type allocates them; no duplicate ports or node ports.
fn validate_ports_against_type(spec: &Value, service_type: &str, errors: &mut Vec<FieldError>) {
    let ports = list(spec, "ports");
    let mut node_ports = BTreeSet::new();
    let mut port_keys = BTreeSet::new();
    for (position, port) in ports.iter().enumerate() {
        let path = index("spec.ports", position);
        let protocol = text(port, "protocol");
        let node_port = integer(port, "nodePort").unwrap_or(0);
        if service_type == "ClusterIP" && node_port != 0 {
            errors.push(FieldError::forbidden(
                child(&path, "nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
        if node_port != 0 && !node_ports.insert((protocol, node_port)) {
            errors.push(FieldError::duplicate(child(&path, "nodePort"), node_port));
        }
        let number = integer(port, "port").unwrap_or(0);
        if !port_keys.insert((protocol, number)) {
            errors.push(FieldError::duplicate(
                path,
                json!({"port": number, "protocol": protocol}),
            ));
        }
    }
}

fn validate_load_balancer_fields(
    service: &Value,
    spec: &Value,
    service_type: &str,
    errors: &mut Vec<FieldError>,
) {
    let ranges = list(spec, "loadBalancerSourceRanges");
    let only_load_balancer = "may only be used when `type` is 'LoadBalancer'";
    if !ranges.is_empty() {
        // Upstream spells this path with a capital L.
        let path = "spec.LoadBalancerSourceRanges";
        if service_type != "LoadBalancer" {
            errors.push(FieldError::forbidden(path, only_load_balancer));
        }
        for (position, range) in ranges.iter().enumerate() {
            let range = range.as_str().unwrap_or_default().trim();
            if !is_valid_cidr(range) {
                errors.push(FieldError::invalid(
                    index(path, position),
                    range,
                    INVALID_CIDR,
                ));
            }
        }
    } else if let Some(annotation) =
        service["metadata"]["annotations"]["service.beta.kubernetes.io/load-balancer-source-ranges"]
            .as_str()
        && service_type != "LoadBalancer"
        && !annotation.is_empty()
    {
        errors.push(FieldError::forbidden(
            "metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]",
            only_load_balancer,
        ));
    }
    let allocate = &spec["allocateLoadBalancerNodePorts"];
    if !allocate.is_null() && service_type != "LoadBalancer" {
        errors.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            only_load_balancer,
        ));
    }
    if service_type == "LoadBalancer" && allocate.is_null() {
        // Upstream reports this one without the `spec.` prefix.
        errors.push(FieldError::required("allocateLoadBalancerNodePorts", ""));
    }
}

/// `validateServiceExternalTrafficPolicy` and `validateServiceInternalTrafficFieldsValue`.
fn validate_traffic_policies(spec: &Value, service_type: &str, errors: &mut Vec<FieldError>) {
    let external = text(spec, "externalTrafficPolicy");
    if externally_accessible(spec, service_type) {
        one_of(
            errors,
            "spec.externalTrafficPolicy",
            external,
            TRAFFIC_POLICIES,
        );
    } else if !external.is_empty() {
        errors.push(FieldError::invalid(
            "spec.externalTrafficPolicy",
            external,
            "may only be set for externally-accessible services",
        ));
    }
    let health_check = integer(spec, "healthCheckNodePort").unwrap_or(0);
    let needs_health_check = service_type == "LoadBalancer" && external == "Local";
    if !needs_health_check && health_check != 0 {
        errors.push(FieldError::invalid(
            "spec.healthCheckNodePort",
            health_check,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    let internal = &spec["internalTrafficPolicy"];
    match internal.as_str() {
        None if matches!(service_type, "ClusterIP" | "NodePort" | "LoadBalancer") => {
            errors.push(FieldError::required("spec.internalTrafficPolicy", ""));
        }
        Some(policy) if !TRAFFIC_POLICIES.contains(&policy) => errors.push(
            FieldError::not_supported("spec.internalTrafficPolicy", policy, TRAFFIC_POLICIES),
        ),
        _ => {}
    }
}

/// What an update may not change: a set cluster IP (unless to or from ExternalName) and the
/// health-check node port.
fn validate_service_update(spec: &Value, old: &Value, errors: &mut Vec<FieldError>) {
    let external_name = text(spec, "type") == "ExternalName" || text(old, "type") == "ExternalName";
    let new_ip = text(spec, "clusterIP");
    let old_ip = text(old, "clusterIP");
    if !external_name && !old_ip.is_empty() && !new_ip.is_empty() && new_ip != old_ip {
        errors.push(FieldError::invalid(
            "spec.clusterIP",
            new_ip,
            FIELD_IMMUTABLE,
        ));
    }
    let needs_health_check = |spec: &Value| {
        text(spec, "type") == "LoadBalancer" && text(spec, "externalTrafficPolicy") == "Local"
    };
    if needs_health_check(spec)
        && needs_health_check(old)
        && integer(spec, "healthCheckNodePort").unwrap_or(0) != 0
        && integer(spec, "healthCheckNodePort") != integer(old, "healthCheckNodePort")
    {
        errors.push(FieldError::forbidden(
            "spec.healthCheckNodePort",
            FIELD_IMMUTABLE,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use crate::api::defaulting::apply_defaults;
    use crate::api::field::{ErrorType, FieldError};
    use serde_json::{Value, json};

    fn service(spec: Value) -> Value {
        let mut service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec
        });
        apply_defaults("Service", &mut service);
        service
    }

    fn web() -> Value {
        service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}))
    }

    fn only(errors: Vec<FieldError>) -> FieldError {
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().expect("one error")
    }

    #[test]
    fn defaulted_services_of_each_type_are_valid() {
        assert_eq!(validate("Service", &web(), None), vec![]);
        let node_port =
            service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(validate("Service", &node_port, None), vec![]);
        let load_balancer = service(json!({"type": "LoadBalancer", "ports": [{"port": 443}]}));
        assert_eq!(validate("Service", &load_balancer, None), vec![]);
        let headless = service(json!({"clusterIP": "None", "selector": {"app": "db"}}));
        assert_eq!(validate("Service", &headless, None), vec![]);
        let external = service(json!({"type": "ExternalName", "externalName": "example.com."}));
        assert_eq!(validate("Service", &external, None), vec![]);
    }

    #[test]
    fn service_names_are_dns1035_labels() {
        let mut object = web();
        object["metadata"]["name"] = json!("1web");
        let error = only(validate("Service", &object, None));
        assert_eq!(error.field, "metadata.name");
        assert!(error.detail.starts_with("a DNS-1035 label"));
    }

    #[test]
    fn ports_are_required_unless_headless_or_external_name() {
        let error = only(validate("Service", &service(json!({})), None));
        assert_eq!(error.full_message(), "spec.ports: Required value");
    }

    #[test]
    fn port_numbers_names_and_protocols_are_checked() {
        let object =
            service(json!({"ports": [{"port": 80, "name": "http"}, {"port": 0, "name": "x"}]}));
        let errors = validate("Service", &object, None);
        assert!(errors.iter().any(|error| error.full_message()
            == "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive"));
        let object = service(json!({"ports": [{"port": 80, "name": "http"}, {"port": 81}]}));
        let error = only(validate("Service", &object, None));
        assert_eq!(error.full_message(), "spec.ports[1].name: Required value");
        let object =
            service(json!({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}));
        let error = only(validate("Service", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.ports[1].name: Duplicate value: \"a\""
        );
        let object = service(json!({"ports": [{"port": 80, "protocol": "HTTP"}]}));
        let error = only(validate("Service", &object, None));
        assert_eq!(error.field, "spec.ports[0].protocol");
        assert_eq!(error.error_type, ErrorType::NotSupported);
    }

    #[test]
    fn type_is_an_enum() {
        let mut object = web();
        object["spec"]["type"] = json!("Bogus");
        let error = only(validate("Service", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.type: Unsupported value: \"Bogus\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        );
    }

    #[test]
    fn cluster_ip_must_be_an_address_or_none() {
        let object = service(json!({"clusterIP": "10.0.0", "ports": [{"port": 80}]}));
        let error = only(validate("Service", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.clusterIPs[0]: Invalid value: \"10.0.0\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        );
    }

    #[test]
    fn node_port_is_forbidden_for_cluster_ip_services() {
        let object = service(json!({"ports": [{"port": 80, "nodePort": 30001}]}));
        let error = only(validate("Service", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
        );
    }

    #[test]
    fn selector_labels_are_validated() {
        let object = service(json!({"selector": {"app": "-x"}, "ports": [{"port": 80}]}));
        let error = only(validate("Service", &object, None));
        assert_eq!(error.field, "spec.selector");
    }

    #[test]
    fn cluster_ip_is_immutable_once_set() {
        let mut old = web();
        old["spec"]["clusterIP"] = json!("10.96.0.10");
        old["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.96.0.11");
        new["spec"]["clusterIPs"] = json!(["10.96.0.11"]);
        let error = only(validate("Service", &new, Some(&old)));
        assert_eq!(
            error.full_message(),
            "spec.clusterIP: Invalid value: \"10.96.0.11\": field is immutable"
        );
        let mut kept = old.clone();
        kept["spec"]["clusterIP"] = json!("");
        kept["spec"]["clusterIPs"] = json!([]);
        assert_eq!(validate("Service", &kept, Some(&old)), vec![]);
    }

    #[test]
    fn external_traffic_policy_only_for_external_services() {
        let mut object = web();
        object["spec"]["externalTrafficPolicy"] = json!("Local");
        let error = only(validate("Service", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"
        );
    }
}
