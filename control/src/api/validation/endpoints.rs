//! Endpoints (`ValidateEndpoints`) and EndpointSlice (`ValidateEndpointSlice`) validation:
//! addresses, ports, protocols and the slice's address type and size limits.
//!
//! Owns the shape of the objects only; whether the addresses belong to live pods is the
//! endpoints controllers' business.

use std::collections::BTreeSet;

use serde_json::Value;

use super::names::{INVALID_IP, NameRule, parse_ip_sloppy, special_ip_errors};
use super::{
    FieldError, PROTOCOLS, child, immutable, index, integer, invalid_each, is_dns1123_label,
    is_dns1123_subdomain, is_qualified_name, list, one_of, text,
};
use crate::api::field::ErrorType;

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;

/// `field.TooMany`.
fn too_many(path: &str, actual: usize, maximum: usize) -> FieldError {
    FieldError {
        error_type: ErrorType::TooMany,
        field: path.to_owned(),
        value: Some(Value::from(actual)),
        detail: format!("must have at most {maximum} items"),
    }
}

/// `validateEndpointSubsets`.
pub(super) fn validate_endpoints(endpoints: &Value, errors: &mut Vec<FieldError>) {
    for (position, subset) in list(endpoints, "subsets").iter().enumerate() {
        let subset_path = index("subsets", position);
        if list(subset, "addresses").is_empty() && list(subset, "notReadyAddresses").is_empty() {
            errors.push(FieldError::required(
                &subset_path,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for field in ["addresses", "notReadyAddresses"] {
            for (address_position, address) in list(subset, field).iter().enumerate() {
                let address_path = index(&child(&subset_path, field), address_position);
                validate_endpoint_address(address, &address_path, errors);
            }
        }
        let ports = list(subset, "ports");
        for (port_position, port) in ports.iter().enumerate() {
            let port_path = index(&child(&subset_path, "ports"), port_position);
            let name = text(port, "name");
            if ports.len() > 1 && name.is_empty() {
                errors.push(FieldError::required(child(&port_path, "name"), ""));
            } else if !name.is_empty() {
                invalid_each(
                    errors,
                    &child(&port_path, "name"),
                    name,
                    is_dns1123_label(name),
                );
            }
            let number = integer(port, "port").unwrap_or(0);
            for detail in super::names::is_valid_port_num(number) {
                errors.push(FieldError::invalid(
                    child(&port_path, "port"),
                    number,
                    detail,
                ));
            }
            one_of(
                errors,
                &child(&port_path, "protocol"),
                text(port, "protocol"),
                PROTOCOLS,
            );
            validate_app_protocol(port, &port_path, errors);
        }
    }
}

/// `validateEndpointAddress`.
fn validate_endpoint_address(address: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let ip = text(address, "ip");
    let ip_path = child(path, "ip");
    match parse_ip_sloppy(ip) {
        Some(parsed) => invalid_each(errors, &ip_path, ip, special_ip_errors(parsed, ip)),
        None => errors.push(FieldError::invalid(ip_path, ip, INVALID_IP)),
    }
    let hostname = text(address, "hostname");
    if !hostname.is_empty() {
        invalid_each(
            errors,
            &child(path, "hostname"),
            hostname,
            is_dns1123_label(hostname),
        );
    }
    if let Some(node_name) = address["nodeName"].as_str() {
        invalid_each(
            errors,
            &child(path, "nodeName"),
            node_name,
            NameRule::Dns1123Subdomain.check(node_name, false),
        );
    }
}

/// `ValidateEndpointSlice` and, with `old`, `ValidateEndpointSliceUpdate`.
pub(super) fn validate_endpoint_slice(
    slice: &Value,
    old: Option<&Value>,
    errors: &mut Vec<FieldError>,
) {
    let address_type = text(slice, "addressType");
    one_of(errors, "addressType", address_type, ADDRESS_TYPES);
    validate_slice_endpoints(list(slice, "endpoints"), address_type, errors);
    validate_slice_ports(list(slice, "ports"), errors);
    if let Some(old) = old {
        immutable(
            errors,
            "addressType",
            &slice["addressType"],
            &old["addressType"],
        );
    }
}

fn validate_slice_endpoints(endpoints: &[Value], address_type: &str, errors: &mut Vec<FieldError>) {
    if endpoints.len() > MAX_ENDPOINTS {
        errors.push(too_many("endpoints", endpoints.len(), MAX_ENDPOINTS));
        return;
    }
    for (position, endpoint) in endpoints.iter().enumerate() {
        let endpoint_path = index("endpoints", position);
        let addresses_path = child(&endpoint_path, "addresses");
        let addresses = list(endpoint, "addresses");
        if addresses.is_empty() {
            errors.push(FieldError::required(
                &addresses_path,
                "must contain at least 1 address",
            ));
        } else if addresses.len() > MAX_ADDRESSES {
            errors.push(too_many(&addresses_path, addresses.len(), MAX_ADDRESSES));
        }
        for (address_position, address) in addresses.iter().enumerate() {
            let address = address.as_str().unwrap_or_default();
            let path = index(&addresses_path, address_position);
            validate_slice_address(address, address_type, &path, errors);
        }
        if let Some(node_name) = endpoint["nodeName"].as_str() {
            invalid_each(
                errors,
                &child(&endpoint_path, "nodeName"),
                node_name,
                NameRule::Dns1123Subdomain.check(node_name, false),
            );
        }
        if let Some(hostname) = endpoint["hostname"].as_str() {
            invalid_each(
                errors,
                &child(&endpoint_path, "hostname"),
                hostname,
                is_dns1123_label(hostname),
            );
        }
    }
}

fn validate_slice_address(
    address: &str,
    address_type: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    match address_type {
        "IPv4" | "IPv6" => {
            let parsed = parse_ip_sloppy(address).filter(|parsed| {
                let mapped_v4 = match parsed {
                    std::net::IpAddr::V4(_) => true,
                    std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
                };
                mapped_v4 == (address_type == "IPv4")
            });
            match parsed {
                Some(parsed) => {
                    invalid_each(errors, path, address, special_ip_errors(parsed, address))
                }
                None => errors.push(FieldError::invalid(
                    path,
                    address,
                    format!("must be a valid {address_type} address"),
                )),
            }
        }
        "FQDN" => validate_fully_qualified_domain_name(address, path, errors),
        _ => {}
    }
}

/// `IsFullyQualifiedDomainName`.
fn validate_fully_qualified_domain_name(name: &str, path: &str, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        errors.push(FieldError::required(path, ""));
        return;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let details = is_dns1123_subdomain(name);
    if !details.is_empty() {
        errors.push(FieldError::invalid(path, name, details.join(",")));
        return;
    }
    if name.split('.').count() < 2 {
        errors.push(FieldError::invalid(
            path,
            name,
            "should be a domain with at least two segments separated by dots",
        ));
        return;
    }
    for label in name.split('.') {
        let details = is_dns1123_label(label);
        if !details.is_empty() {
            errors.push(FieldError::invalid(path, label, details.join(",")));
            return;
        }
    }
}

fn validate_slice_ports(ports: &[Value], errors: &mut Vec<FieldError>) {
    if ports.len() > MAX_PORTS {
        errors.push(too_many("ports", ports.len(), MAX_PORTS));
        return;
    }
    let mut names = BTreeSet::new();
    for (position, port) in ports.iter().enumerate() {
        let port_path = index("ports", position);
        let name = text(port, "name");
        if !name.is_empty() {
            invalid_each(
                errors,
                &child(&port_path, "name"),
                name,
                is_dns1123_label(name),
            );
        }
        if !names.insert(name) {
            errors.push(FieldError::duplicate(child(&port_path, "name"), name));
        }
        one_of(
            errors,
            &child(&port_path, "protocol"),
            text(port, "protocol"),
            PROTOCOLS,
        );
        validate_app_protocol(port, &port_path, errors);
    }
}

fn validate_app_protocol(port: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(app_protocol) = port["appProtocol"].as_str() {
        invalid_each(
            errors,
            &child(path, "appProtocol"),
            app_protocol,
            is_qualified_name(app_protocol),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use crate::api::defaulting::apply_defaults;
    use crate::api::field::{ErrorType, FieldError};
    use serde_json::{Value, json};

    fn only(errors: Vec<FieldError>) -> FieldError {
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().expect("one error")
    }

    fn endpoints(subsets: Value) -> Value {
        let mut object =
            json!({"metadata": {"name": "web", "namespace": "default"}, "subsets": subsets});
        apply_defaults("Endpoints", &mut object);
        object
    }

    fn slice(address_type: &str, endpoints: Value) -> Value {
        let mut object = json!({
            "metadata": {"name": "web-abc", "namespace": "default"},
            "addressType": address_type,
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080}]
        });
        apply_defaults("EndpointSlice", &mut object);
        object
    }

    #[test]
    fn valid_endpoints_and_slices_pass() {
        let object =
            endpoints(json!([{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 80}]}]));
        assert_eq!(validate("Endpoints", &object, None), vec![]);
        let object = slice(
            "IPv4",
            json!([{"addresses": ["10.244.1.5"], "conditions": {"ready": true}}]),
        );
        assert_eq!(validate("EndpointSlice", &object, None), vec![]);
    }

    #[test]
    fn endpoints_addresses_must_be_routable_ips() {
        let object = endpoints(json!([{"addresses": [{"ip": "127.0.0.1"}]}]));
        let error = only(validate("Endpoints", &object, None));
        assert_eq!(error.field, "subsets[0].addresses[0].ip");
        let object = endpoints(json!([{"ports": [{"port": 80}]}]));
        let error = only(validate("Endpoints", &object, None));
        assert_eq!(
            error.full_message(),
            "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`"
        );
    }

    #[test]
    fn slice_address_type_is_an_enum() {
        let object = slice("IPX", json!([]));
        let error = only(validate("EndpointSlice", &object, None));
        assert_eq!(
            error.full_message(),
            "addressType: Unsupported value: \"IPX\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
        );
    }

    #[test]
    fn slice_endpoints_need_one_to_a_hundred_addresses() {
        let object = slice("IPv4", json!([{"addresses": []}]));
        let error = only(validate("EndpointSlice", &object, None));
        assert_eq!(
            error.full_message(),
            "endpoints[0].addresses: Required value: must contain at least 1 address"
        );
        let many: Vec<String> = (0..101)
            .map(|host| format!("10.0.{}.{}", host / 200, host % 200 + 1))
            .collect();
        let object = slice("IPv4", json!([{"addresses": many}]));
        let error = only(validate("EndpointSlice", &object, None));
        assert_eq!(error.error_type, ErrorType::TooMany);
        assert_eq!(error.field, "endpoints[0].addresses");
        let object = slice("IPv6", json!([{"addresses": ["10.0.0.1"]}]));
        let error = only(validate("EndpointSlice", &object, None));
        assert_eq!(
            error.full_message(),
            "endpoints[0].addresses[0]: Invalid value: \"10.0.0.1\": must be a valid IPv6 address"
        );
    }

    #[test]
    fn slice_port_names_are_unique_and_address_type_immutable() {
        let mut object = slice("IPv4", json!([]));
        object["ports"] =
            json!([{"name": "a", "protocol": "TCP"}, {"name": "a", "protocol": "TCP"}]);
        let error = only(validate("EndpointSlice", &object, None));
        assert_eq!(
            error.full_message(),
            "ports[1].name: Duplicate value: \"a\""
        );
        let old = slice("IPv4", json!([]));
        let new = slice("FQDN", json!([]));
        let error = only(validate("EndpointSlice", &new, Some(&old)));
        assert_eq!(
            error.full_message(),
            "addressType: Invalid value: \"FQDN\": field is immutable"
        );
    }
}
