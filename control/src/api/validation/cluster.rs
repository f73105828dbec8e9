//! Validation of the cluster-plumbing kinds: Namespace (`ValidateNamespace`), Node
//! (`ValidateNode`, `ValidateNodeUpdate`), Event (`legacyValidateEvent`) and Lease
//! (`ValidateLeaseSpec`). ServiceAccounts need nothing beyond their metadata.
//!
//! Owns these kinds' spec rules only; the namespace lifecycle (finalize, terminating) and
//! node heartbeats are the registry's and the controllers' business.

use std::collections::BTreeSet;

use serde_json::Value;

use super::names::{INVALID_CIDR, is_valid_cidr, parse_ip_sloppy};
use super::{
    FieldError, child, index, integer, invalid_each, is_qualified_name, is_valid_label_value, list,
    meta, pod, semantically_equal, text,
};

const REPORTING_INSTANCE_LENGTH_LIMIT: usize = 128;
const ACTION_LENGTH_LIMIT: usize = 128;
const REASON_LENGTH_LIMIT: usize = 128;
const NOTE_LENGTH_LIMIT: usize = 1024;

/// `ValidateNamespace`: its spec finalizers.
pub(super) fn validate_namespace(namespace: &Value, errors: &mut Vec<FieldError>) {
    for finalizer in list(&namespace["spec"], "finalizers") {
        let finalizer = finalizer.as_str().unwrap_or_default();
        invalid_each(
            errors,
            "spec.finalizers",
            finalizer,
            is_qualified_name(finalizer),
        );
        meta::validate_kube_finalizer_name(finalizer, "spec.finalizers", errors);
    }
}

/// `ValidateNode` and, with `old`, `ValidateNodeUpdate`.
pub(super) fn validate_node(node: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    let spec = &node["spec"];
    // Upstream reports taints under `metadata`.
    validate_taints(list(spec, "taints"), "metadata.taints", errors);
    let cidrs = list(spec, "podCIDRs");
    let mut seen = BTreeSet::new();
    let mut families = BTreeSet::new();
    for (position, cidr) in cidrs.iter().enumerate() {
        let cidr = cidr.as_str().unwrap_or_default();
        let path = index("spec.podCIDRs", position);
        if !is_valid_cidr(cidr) {
            errors.push(FieldError::invalid(&path, cidr, INVALID_CIDR));
        } else if let Some(address) = cidr.split('/').next().and_then(parse_ip_sloppy) {
            families.insert(address.is_ipv4());
        }
        if cidrs.len() > 1 && !seen.insert(cidr) {
            errors.push(FieldError::duplicate(path, cidr));
        }
    }
    if cidrs.len() > 2 || (cidrs.len() == 2 && families.len() != 2) {
        errors.push(FieldError::invalid(
            "spec.podCIDRs",
            Value::Array(cidrs.to_vec()),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    if let Some(old) = old {
        let old_spec = &old["spec"];
        let old_cidrs = list(old_spec, "podCIDRs");
        if !old_cidrs.is_empty() {
            let changes = if old_cidrs.len() == cidrs.len() {
                old_cidrs
                    .iter()
                    .zip(cidrs)
                    .filter(|(old, new)| old != new)
                    .count()
            } else {
                1
            };
            for _ in 0..changes {
                errors.push(FieldError::forbidden(
                    "spec.podCIDRs",
                    "node updates may not change podCIDR except from \"\" to valid",
                ));
            }
        }
        let old_provider = text(old_spec, "providerID");
        if !old_provider.is_empty() && old_provider != text(spec, "providerID") {
            errors.push(FieldError::forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
        if !semantically_equal(&spec["externalID"], &old_spec["externalID"]) {
            errors.push(FieldError::forbidden(
                "spec.externalID",
                "may not be updated",
            ));
        }
    }
}

/// `validateNodeTaints`.
fn validate_taints(taints: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let mut unique = BTreeSet::new();
    for (position, taint) in taints.iter().enumerate() {
        let taint_path = index(path, position);
        let taint_key = text(taint, "key");
        invalid_each(
            errors,
            &child(&taint_path, "key"),
            taint_key,
            is_qualified_name(taint_key),
        );
        let value = text(taint, "value");
        let details = is_valid_label_value(value);
        if !details.is_empty() {
            errors.push(FieldError::invalid(
                child(&taint_path, "value"),
                value,
                details.join(";"),
            ));
        }
        let effect = text(taint, "effect");
        pod::validate_taint_effect(effect, &child(&taint_path, "effect"), errors);
        if !unique.insert((effect, taint_key)) {
            let mut duplicate = FieldError::duplicate(&taint_path, taint.clone());
            duplicate.detail = "taints must be unique by key and effect pair".to_owned();
            errors.push(duplicate);
        }
    }
}

/// `legacyValidateEvent` as the core/v1 API applies it.
pub(super) fn validate_event(event: &Value, errors: &mut Vec<FieldError>) {
    let namespace = text(&event["metadata"], "namespace");
    let involved_namespace = text(&event["involvedObject"], "namespace");
    let mismatch = || {
        FieldError::invalid(
            "involvedObject.namespace",
            involved_namespace,
            "does not match event.namespace",
        )
    };
    if event["eventTime"].is_null() {
        let matches = if involved_namespace.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == involved_namespace
        };
        if !matches {
            errors.push(mismatch());
        }
        return;
    }
    if involved_namespace.is_empty() && namespace != "kube-system" {
        errors.push(mismatch());
    }
    let component = text(event, "reportingComponent");
    if component.is_empty() {
        errors.push(FieldError::required("reportingComponent", ""));
    }
    invalid_each(
        errors,
        "reportingComponent",
        component,
        is_qualified_name(component),
    );
    for (field, limit, required) in [
        ("reportingInstance", REPORTING_INSTANCE_LENGTH_LIMIT, true),
        ("action", ACTION_LENGTH_LIMIT, true),
        ("reason", REASON_LENGTH_LIMIT, true),
        ("message", NOTE_LENGTH_LIMIT, false),
    ] {
        let value = text(event, field);
        if required && value.is_empty() {
            errors.push(FieldError::required(field, ""));
        }
        if value.len() > limit {
            errors.push(FieldError::invalid(
                field,
                "",
                format!("can have at most {limit} characters"),
            ));
        }
    }
}

/// `ValidateLeaseSpec`.
pub(super) fn validate_lease(lease: &Value, errors: &mut Vec<FieldError>) {
    let spec = &lease["spec"];
    if let Some(duration) = integer(spec, "leaseDurationSeconds").filter(|value| *value <= 0) {
        errors.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            duration,
            "must be greater than 0",
        ));
    }
    if let Some(transitions) = integer(spec, "leaseTransitions").filter(|value| *value < 0) {
        errors.push(FieldError::invalid(
            "spec.leaseTransitions",
            transitions,
            "must be greater than or equal to 0",
        ));
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

    fn defaulted(kind: &str, mut object: Value) -> Value {
        apply_defaults(kind, &mut object);
        object
    }

    #[test]
    fn valid_objects_of_the_plumbing_kinds_pass() {
        let namespace = defaulted("Namespace", json!({"metadata": {"name": "team-a"}}));
        assert_eq!(validate("Namespace", &namespace, None), vec![]);
        let node = defaulted(
            "Node",
            json!({"metadata": {"name": "node-1.example"},
            "spec": {"podCIDRs": ["10.244.1.0/24"], "taints": [{"key": "a", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(validate("Node", &node, None), vec![]);
        let account = json!({"metadata": {"name": "builder", "namespace": "default"}});
        assert_eq!(validate("ServiceAccount", &account, None), vec![]);
        let lease = json!({"metadata": {"name": "node-1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}});
        assert_eq!(validate("Lease", &lease, None), vec![]);
        let event = json!({"metadata": {"name": "web.17a2b3c4", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Scheduled", "message": "ok"});
        assert_eq!(validate("Event", &event, None), vec![]);
    }

    #[test]
    fn namespace_names_are_labels() {
        let namespace = defaulted("Namespace", json!({"metadata": {"name": "team.a"}}));
        let error = only(validate("Namespace", &namespace, None));
        assert_eq!(
            error.full_message(),
            "metadata.name: Invalid value: \"team.a\": must not contain dots"
        );
    }

    #[test]
    fn node_taints_need_an_effect_and_pod_cidrs_stay_put() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "a"}]}});
        let error = only(validate("Node", &node, None));
        assert_eq!(
            error.full_message(),
            "metadata.taints[0].effect: Required value"
        );
        let old = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.1.0/24"]}});
        let new = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.2.0/24"]}});
        let error = only(validate("Node", &new, Some(&old)));
        assert_eq!(error.field, "spec.podCIDRs");
        assert_eq!(error.error_type, ErrorType::Forbidden);
    }

    #[test]
    fn event_namespace_must_match_the_involved_object() {
        let event = json!({"metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "other"}});
        let error = only(validate("Event", &event, None));
        assert_eq!(
            error.full_message(),
            "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"
        );
    }

    #[test]
    fn lease_duration_must_be_positive() {
        let lease = json!({"metadata": {"name": "l", "namespace": "default"},
            "spec": {"leaseDurationSeconds": 0}});
        let error = only(validate("Lease", &lease, None));
        assert_eq!(
            error.full_message(),
            "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"
        );
    }
}
