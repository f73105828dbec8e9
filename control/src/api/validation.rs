//! Upstream's validation of the served kinds: what kube-apiserver's `ValidateXxx` and
//! `ValidateXxxUpdate` report, with the same field paths, reasons and detail texts.
//!
//! Owns the rules only: object metadata (`meta`), pod specs and pod updates (`pod`), Services
//! (`service`), Endpoints and EndpointSlices (`endpoints`), the apps workloads (`apps`),
//! ConfigMaps and Secrets (`config`), and Namespaces, Nodes, Events, Leases and
//! ServiceAccounts (`cluster`); the string validators are in `names`. Pure: it reads the
//! (already defaulted) object and the stored one, never changes them, and knows nothing about
//! HTTP, the store or allocation (ClusterIP and node-port ranges are the allocator's).

mod apps;
mod cluster;
mod config;
mod endpoints;
mod meta;
mod names;
mod pod;
mod service;

use serde_json::Value;

use super::field::{FIELD_IMMUTABLE, FieldError};
use names::NameRule;

pub use names::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value,
};

/// Everything wrong with `object` of `kind`; `old` is the stored object for an update (`None`
/// on create). Includes the ObjectMeta checks (name or generateName per the kind's name rule,
/// namespace, labels, annotations, finalizers, ownerReferences), the kind's spec rules and, on
/// update, the immutable fields. Unknown kinds get no errors.
pub fn validate(kind: &str, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(rule) = name_rule(kind) else {
        return errors;
    };
    let namespaced = super::resources::by_kind(kind).is_some_and(|resource| resource.namespaced);
    meta::validate_object_meta(
        &object["metadata"],
        namespaced,
        rule,
        "metadata",
        &mut errors,
    );
    if let Some(old) = old {
        meta::validate_object_meta_update(&object["metadata"], &old["metadata"], &mut errors);
    }
    match kind {
        "Pod" => pod::validate_pod(object, old, &mut errors),
        "Service" => service::validate_service(object, old, &mut errors),
        "Endpoints" => endpoints::validate_endpoints(object, &mut errors),
        "EndpointSlice" => endpoints::validate_endpoint_slice(object, old, &mut errors),
        "ConfigMap" => config::validate_config_map(object, old, &mut errors),
        "Secret" => config::validate_secret(object, old, &mut errors),
        "Deployment" => apps::validate_deployment(object, old, &mut errors),
        "ReplicaSet" => apps::validate_replica_set(object, old, &mut errors),
        "DaemonSet" => apps::validate_daemon_set(object, old, &mut errors),
        "Namespace" => cluster::validate_namespace(object, &mut errors),
        "Node" => cluster::validate_node(object, old, &mut errors),
        "Event" => cluster::validate_event(object, &mut errors),
        "Lease" => cluster::validate_lease(object, &mut errors),
        _ => {}
    }
    errors
}

/// The name rule upstream applies to objects of `kind` (`ValidateXxxName`).
fn name_rule(kind: &str) -> Option<NameRule> {
    Some(match kind {
        "Namespace" => NameRule::Dns1123Label,
        "Service" => NameRule::Dns1035Label,
        "Event" => NameRule::PathSegment,
        "Node" | "Pod" | "Endpoints" | "ConfigMap" | "Secret" | "ServiceAccount"
        | "EndpointSlice" | "Deployment" | "ReplicaSet" | "DaemonSet" | "Lease" => {
            NameRule::Dns1123Subdomain
        }
        _ => return None,
    })
}

// Field paths, spelled as upstream's `field.Path` prints them.

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn index(path: &str, position: usize) -> String {
    format!("{path}[{position}]")
}

fn key(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}

// Reading the decoded JSON; absent and mistyped fields read as empty, as Go's zero values do.

fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field].as_str().unwrap_or_default()
}

fn list<'a>(object: &'a Value, field: &str) -> &'a [Value] {
    object[field].as_array().map_or(&[], Vec::as_slice)
}

fn string_map<'a>(object: &'a Value, field: &str) -> Vec<(&'a str, &'a str)> {
    object[field]
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(key, value)| (key.as_str(), value.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn integer(object: &Value, field: &str) -> Option<i64> {
    object[field].as_i64()
}

/// One `Invalid` error per detail, as upstream's loops over `IsXxx` messages do.
fn invalid_each(errors: &mut Vec<FieldError>, path: &str, value: &str, details: Vec<String>) {
    for detail in details {
        errors.push(FieldError::invalid(path, value, detail));
    }
}

/// `ValidateNonnegativeField`.
fn nonnegative(errors: &mut Vec<FieldError>, path: &str, value: Option<i64>) {
    if let Some(value) = value.filter(|value| *value < 0) {
        errors.push(FieldError::invalid(
            path,
            value,
            "must be greater than or equal to 0",
        ));
    }
}

/// `ValidateImmutableField`.
fn immutable(errors: &mut Vec<FieldError>, path: &str, new: &Value, old: &Value) {
    if !semantically_equal(new, old) {
        errors.push(FieldError::invalid(path, new.clone(), FIELD_IMMUTABLE));
    }
}

/// Upstream's `Semantic.DeepEqual` over JSON: an absent field, `null`, `""`, `[]` and `{}`
/// are all the zero value and compare equal.
fn semantically_equal(a: &Value, b: &Value) -> bool {
    fn is_zero(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::String(text) => text.is_empty(),
            Value::Array(items) => items.is_empty(),
            Value::Object(map) => map.is_empty(),
            _ => false,
        }
    }
    match (a, b) {
        (Value::Object(left), Value::Object(right)) => left
            .keys()
            .chain(right.keys())
            .all(|key| semantically_equal(&a[key.as_str()], &b[key.as_str()])),
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .zip(right)
                    .all(|(left, right)| semantically_equal(left, right))
        }
        _ if is_zero(a) && is_zero(b) => true,
        _ => a == b,
    }
}

/// `ValidateLabels` over a label map at `path` (`metadata.labels`, `spec.selector`, ...).
fn validate_labels(errors: &mut Vec<FieldError>, object: &Value, field: &str, path: &str) {
    for (label_key, label_value) in string_map(object, field) {
        invalid_each(errors, path, label_key, is_qualified_name(label_key));
        invalid_each(errors, path, label_value, is_valid_label_value(label_value));
    }
}

/// The supported protocols, as upstream lists them (sorted).
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// `Required` when empty, `NotSupported` when not one of `supported`.
fn one_of(errors: &mut Vec<FieldError>, path: &str, value: &str, supported: &[&str]) {
    if value.is_empty() {
        errors.push(FieldError::required(path, ""));
    } else if !supported.contains(&value) {
        errors.push(FieldError::not_supported(path, value, supported));
    }
}

/// `ValidatePortNumOrName` for an IntOrString port.
fn port_number_or_name(errors: &mut Vec<FieldError>, path: &str, port: &Value) {
    match port {
        Value::Number(number) => {
            let number = number.as_i64().unwrap_or(-1);
            for detail in names::is_valid_port_num(number) {
                errors.push(FieldError::invalid(path, number, detail));
            }
        }
        Value::String(name) => invalid_each(errors, path, name, names::is_valid_port_name(name)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn semantic_equality_treats_empty_values_alike() {
        assert!(semantically_equal(&json!({"a": []}), &json!({})));
        assert!(semantically_equal(&json!({"a": ""}), &json!({"a": null})));
        assert!(!semantically_equal(&json!({"a": 0}), &json!({})));
        assert!(!semantically_equal(&json!({"a": [1]}), &json!({"a": [2]})));
    }

    #[test]
    fn unknown_kinds_are_not_validated() {
        assert!(validate("Widget", &json!({}), None).is_empty());
    }

    #[test]
    fn each_kind_uses_upstreams_name_rule() {
        assert_eq!(name_rule("Namespace"), Some(NameRule::Dns1123Label));
        assert_eq!(name_rule("Service"), Some(NameRule::Dns1035Label));
        assert_eq!(name_rule("Pod"), Some(NameRule::Dns1123Subdomain));
        assert_eq!(name_rule("Event"), Some(NameRule::PathSegment));
        for resource in super::super::resources::RESOURCE_TYPES {
            assert!(name_rule(resource.kind).is_some(), "{}", resource.kind);
        }
    }
}
