//! apps/v1 workload validation: Deployment (`ValidateDeploymentSpec`), ReplicaSet
//! (`ValidateReplicaSetSpec`) and DaemonSet (`ValidateDaemonSetSpec`), with the label
//! selector rules they share and the selector's immutability on update.
//!
//! Owns selectors, replica counts, strategies and the template-versus-selector match; the
//! template's pod spec is checked by `pod::validate_pod_template`. Never looks at status.

use serde_json::Value;

use super::{
    FieldError, child, immutable, index, integer, is_qualified_name, is_valid_label_value, list,
    nonnegative, pod, string_map, text, validate_labels,
};

const PERCENT_ERROR: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

/// Which workload the shared checks speak for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Deployment,
    ReplicaSet,
    DaemonSet,
}

/// `ValidateDeployment` and, with `old`, `ValidateDeploymentUpdate`.
pub(super) fn validate_deployment(
    object: &Value,
    old: Option<&Value>,
    errors: &mut Vec<FieldError>,
) {
    let spec = &object["spec"];
    nonnegative(errors, "spec.replicas", integer(spec, "replicas"));
    validate_replicated_template(spec, Workload::Deployment, errors);
    validate_deployment_strategy(&spec["strategy"], errors);
    nonnegative(
        errors,
        "spec.minReadySeconds",
        integer(spec, "minReadySeconds"),
    );
    nonnegative(
        errors,
        "spec.revisionHistoryLimit",
        integer(spec, "revisionHistoryLimit"),
    );
    if let Some(deadline) = integer(spec, "progressDeadlineSeconds") {
        if deadline <= 0 {
            errors.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than zero",
            ));
        }
        if deadline <= integer(spec, "minReadySeconds").unwrap_or(0) {
            errors.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(old) = old {
        immutable(
            errors,
            "spec.selector",
            &spec["selector"],
            &old["spec"]["selector"],
        );
    }
}

/// `ValidateReplicaSet` and, with `old`, `ValidateReplicaSetUpdate`.
pub(super) fn validate_replica_set(
    object: &Value,
    old: Option<&Value>,
    errors: &mut Vec<FieldError>,
) {
    let spec = &object["spec"];
    nonnegative(errors, "spec.replicas", integer(spec, "replicas"));
    nonnegative(
        errors,
        "spec.minReadySeconds",
        integer(spec, "minReadySeconds"),
    );
    validate_replicated_template(spec, Workload::ReplicaSet, errors);
    if let Some(old) = old {
        immutable(
            errors,
            "spec.selector",
            &spec["selector"],
            &old["spec"]["selector"],
        );
    }
}

/// `ValidateDaemonSet` and, with `old`, `ValidateDaemonSetUpdate`.
pub(super) fn validate_daemon_set(
    object: &Value,
    old: Option<&Value>,
    errors: &mut Vec<FieldError>,
) {
    let spec = &object["spec"];
    let selector = &spec["selector"];
    let selector_valid = validate_label_selector(selector, "spec.selector", errors);
    if selector_valid && !selector_matches(selector, &spec["template"]["metadata"]) {
        errors.push(template_mismatch(&spec["template"]));
    }
    if !selector.is_null() && selector_is_empty(selector) {
        errors.push(FieldError::invalid(
            "spec.selector",
            selector.clone(),
            "empty selector is invalid for daemonset",
        ));
    }
    validate_template(&spec["template"], Workload::DaemonSet, errors);
    nonnegative(
        errors,
        "spec.minReadySeconds",
        integer(spec, "minReadySeconds"),
    );
    nonnegative(
        errors,
        "spec.templateGeneration",
        integer(spec, "templateGeneration"),
    );
    validate_daemon_set_update_strategy(&spec["updateStrategy"], errors);
    nonnegative(
        errors,
        "spec.revisionHistoryLimit",
        integer(spec, "revisionHistoryLimit"),
    );
    if let Some(old) = old {
        immutable(errors, "spec.selector", selector, &old["spec"]["selector"]);
    }
}

/// The selector and template rules Deployments and ReplicaSets share
/// (`ValidatePodTemplateSpecForReplicaSet` and the selector checks before it).
fn validate_replicated_template(spec: &Value, workload: Workload, errors: &mut Vec<FieldError>) {
    let selector = &spec["selector"];
    let mut selector_valid = true;
    if selector.is_null() {
        errors.push(FieldError::required("spec.selector", ""));
    } else {
        selector_valid = validate_label_selector(selector, "spec.selector", errors);
        if selector_is_empty(selector) {
            // Upstream uses the Deployment wording for ReplicaSets too.
            errors.push(FieldError::invalid(
                "spec.selector",
                selector.clone(),
                "empty selector is invalid for deployment",
            ));
        }
    }
    if !selector_valid {
        errors.push(FieldError::invalid(
            "spec.selector",
            selector.clone(),
            "invalid label selector",
        ));
        return;
    }
    let template = &spec["template"];
    // A missing selector matches nothing; an empty one is not checked against the template.
    let checked = selector.is_null() || !selector_is_empty(selector);
    if checked && !selector_matches(selector, &template["metadata"]) {
        errors.push(template_mismatch(template));
    }
    validate_template(template, workload, errors);
}

fn template_mismatch(template: &Value) -> FieldError {
    let labels = template["metadata"]["labels"].clone();
    FieldError::invalid(
        "spec.template.metadata.labels",
        if labels.is_null() {
            Value::Object(Default::default())
        } else {
            labels
        },
        "`selector` does not match template `labels`",
    )
}

/// The pod template of a long-running workload: a valid pod template that always restarts.
fn validate_template(template: &Value, workload: Workload, errors: &mut Vec<FieldError>) {
    pod::validate_pod_template(template, "spec.template", errors);
    let spec = &template["spec"];
    let restart_policy = text(spec, "restartPolicy");
    if restart_policy != "Always" {
        errors.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            restart_policy,
            &["Always"],
        ));
    }
    if let Some(deadline) = integer(spec, "activeDeadlineSeconds") {
        let path = "spec.template.spec.activeDeadlineSeconds";
        errors.push(if workload == Workload::DaemonSet {
            FieldError::invalid(
                path,
                deadline,
                "activeDeadlineSeconds must be nil for daemons",
            )
        } else {
            FieldError::forbidden(path, "activeDeadlineSeconds in ReplicaSet is not Supported")
        });
    }
}

/// `ValidateLabelSelector`; returns whether the selector is usable (`LabelSelectorAsSelector`
/// would accept it).
fn validate_label_selector(selector: &Value, path: &str, errors: &mut Vec<FieldError>) -> bool {
    if selector.is_null() {
        return true;
    }
    let before = errors.len();
    validate_labels(errors, selector, "matchLabels", &child(path, "matchLabels"));
    for (position, requirement) in list(selector, "matchExpressions").iter().enumerate() {
        let requirement_path = index(&child(path, "matchExpressions"), position);
        let values = list(requirement, "values");
        let operator = text(requirement, "operator");
        match operator {
            "In" | "NotIn" if values.is_empty() => errors.push(FieldError::required(
                child(&requirement_path, "values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(FieldError::forbidden(
                child(&requirement_path, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errors.push(FieldError::invalid(
                child(&requirement_path, "operator"),
                other,
                "not a valid selector operator",
            )),
        }
        let requirement_key = text(requirement, "key");
        for detail in is_qualified_name(requirement_key) {
            errors.push(FieldError::invalid(
                child(&requirement_path, "key"),
                requirement_key,
                detail,
            ));
        }
        for (value_position, value) in values.iter().enumerate() {
            let value = value.as_str().unwrap_or_default();
            for detail in is_valid_label_value(value) {
                errors.push(FieldError::invalid(
                    index(&child(&requirement_path, "values"), value_position),
                    value,
                    detail,
                ));
            }
        }
    }
    errors.len() == before
}

fn selector_is_empty(selector: &Value) -> bool {
    string_map(selector, "matchLabels").is_empty() && list(selector, "matchExpressions").is_empty()
}

/// Whether `selector` selects an object with `metadata`'s labels (a missing selector
/// selects nothing).
fn selector_matches(selector: &Value, metadata: &Value) -> bool {
    if selector.is_null() {
        return false;
    }
    let labels = string_map(metadata, "labels");
    let label = |name: &str| {
        labels
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| *value)
    };
    let labels_match = string_map(selector, "matchLabels")
        .into_iter()
        .all(|(name, value)| label(name) == Some(value));
    let expressions_match = list(selector, "matchExpressions")
        .iter()
        .all(|requirement| {
            let value = label(text(requirement, "key"));
            let listed = |value: &str| {
                list(requirement, "values")
                    .iter()
                    .any(|candidate| candidate.as_str() == Some(value))
            };
            match text(requirement, "operator") {
                "In" => value.is_some_and(listed),
                "NotIn" => !value.is_some_and(listed),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        });
    labels_match && expressions_match
}

/// `ValidateDeploymentStrategy`.
fn validate_deployment_strategy(strategy: &Value, errors: &mut Vec<FieldError>) {
    match text(strategy, "type") {
        "Recreate" => {
            if !strategy["rollingUpdate"].is_null() {
                errors.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let rolling = &strategy["rollingUpdate"];
            if rolling.is_null() {
                errors.push(FieldError::required(
                    "spec.strategy.rollingUpdate",
                    "this should be defaulted and never be nil",
                ));
                return;
            }
            let unavailable_path = "spec.strategy.rollingUpdate.maxUnavailable";
            let surge_path = "spec.strategy.rollingUpdate.maxSurge";
            validate_int_or_percent(&rolling["maxUnavailable"], unavailable_path, errors);
            validate_int_or_percent(&rolling["maxSurge"], surge_path, errors);
            if int_or_percent_value(&rolling["maxUnavailable"]) == 0
                && int_or_percent_value(&rolling["maxSurge"]) == 0
            {
                errors.push(FieldError::invalid(
                    unavailable_path,
                    rolling["maxUnavailable"].clone(),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            not_more_than_100_percent(&rolling["maxUnavailable"], unavailable_path, errors);
        }
        _ => errors.push(FieldError::not_supported(
            "spec.strategy",
            strategy.clone(),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// `ValidateDaemonSetUpdateStrategy`.
fn validate_daemon_set_update_strategy(strategy: &Value, errors: &mut Vec<FieldError>) {
    match text(strategy, "type") {
        "OnDelete" => {}
        "RollingUpdate" => {
            let rolling = &strategy["rollingUpdate"];
            if rolling.is_null() {
                errors.push(FieldError::required(
                    "spec.updateStrategy.rollingUpdate",
                    "",
                ));
                return;
            }
            let unavailable_path = "spec.updateStrategy.rollingUpdate.maxUnavailable";
            let surge_path = "spec.updateStrategy.rollingUpdate.maxSurge";
            validate_int_or_percent(&rolling["maxUnavailable"], unavailable_path, errors);
            validate_int_or_percent(&rolling["maxSurge"], surge_path, errors);
            not_more_than_100_percent(&rolling["maxUnavailable"], unavailable_path, errors);
            not_more_than_100_percent(&rolling["maxSurge"], surge_path, errors);
            let has_unavailable = int_or_percent_value(&rolling["maxUnavailable"]) != 0;
            let has_surge = int_or_percent_value(&rolling["maxSurge"]) != 0;
            if has_unavailable && has_surge {
                errors.push(FieldError::invalid(
                    surge_path,
                    rolling["maxSurge"].clone(),
                    "may not be set when maxUnavailable is non-zero",
                ));
            } else if !has_unavailable && !has_surge {
                errors.push(FieldError::required(
                    unavailable_path,
                    "cannot be 0 when maxSurge is 0",
                ));
            }
        }
        _ => errors.push(FieldError::not_supported(
            "spec.updateStrategy",
            strategy.clone(),
            &["RollingUpdate", "OnDelete"],
        )),
    }
}

/// `ValidatePositiveIntOrPercent`.
fn validate_int_or_percent(value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    match value {
        Value::String(percent) if percent_value(percent).is_none() => {
            errors.push(FieldError::invalid(path, percent.as_str(), PERCENT_ERROR));
        }
        Value::Number(number) => nonnegative(errors, path, number.as_i64()),
        _ => {}
    }
}

/// `IsNotMoreThan100Percent`.
fn not_more_than_100_percent(value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(percent) = value.as_str().and_then(percent_value)
        && percent > 100
    {
        errors.push(FieldError::invalid(
            path,
            value.clone(),
            "must not be greater than 100%",
        ));
    }
}

/// The number of a `[0-9]+%` string.
fn percent_value(percent: &str) -> Option<i64> {
    let digits = percent.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `getIntOrPercentValue`: the number, whether a count or a percentage.
fn int_or_percent_value(value: &Value) -> i64 {
    match value {
        Value::String(percent) => percent_value(percent).unwrap_or(0),
        other => other.as_i64().unwrap_or(0),
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

    fn workload(kind: &str) -> Value {
        let mut object = json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
                }
            }
        });
        apply_defaults(kind, &mut object);
        object
    }

    #[test]
    fn defaulted_workloads_are_valid() {
        for kind in ["Deployment", "ReplicaSet", "DaemonSet"] {
            assert_eq!(validate(kind, &workload(kind), None), vec![], "{kind}");
        }
    }

    #[test]
    fn template_labels_must_match_the_selector() {
        for kind in ["Deployment", "ReplicaSet", "DaemonSet"] {
            let mut object = workload(kind);
            object["spec"]["selector"] = json!({"matchLabels": {"app": "api"}});
            let error = only(validate(kind, &object, None));
            assert_eq!(
                error.full_message(),
                "spec.template.metadata.labels: Invalid value: {\"app\":\"web\",\"tier\":\"front\"}: `selector` does not match template `labels`",
                "{kind}"
            );
        }
        let mut object = workload("Deployment");
        object["spec"]["selector"] =
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]});
        assert_eq!(validate("Deployment", &object, None), vec![]);
    }

    #[test]
    fn selector_is_required_and_non_empty() {
        let mut object = workload("Deployment");
        object["spec"]["selector"] = json!({});
        let error = only(validate("Deployment", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.selector: Invalid value: {}: empty selector is invalid for deployment"
        );
        let mut object = workload("ReplicaSet");
        if let Some(spec) = object["spec"].as_object_mut() {
            spec.remove("selector");
        }
        let errors = validate("ReplicaSet", &object, None);
        assert_eq!(errors[0].full_message(), "spec.selector: Required value");
    }

    #[test]
    fn selector_operators_are_checked() {
        let mut object = workload("Deployment");
        object["spec"]["selector"] =
            json!({"matchExpressions": [{"key": "app", "operator": "Near"}]});
        let errors = validate("Deployment", &object, None);
        assert_eq!(
            errors[0].field,
            "spec.selector.matchExpressions[0].operator"
        );
        assert_eq!(errors[1].detail, "invalid label selector");
    }

    #[test]
    fn replicas_may_not_be_negative() {
        let mut object = workload("Deployment");
        object["spec"]["replicas"] = json!(-1);
        let error = only(validate("Deployment", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn template_pod_spec_is_validated_under_spec_template_spec() {
        let mut object = workload("ReplicaSet");
        object["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
        let error = only(validate("ReplicaSet", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.template.spec.containers[0].image: Required value"
        );
    }

    #[test]
    fn template_restart_policy_must_be_always() {
        let mut object = workload("Deployment");
        object["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let error = only(validate("Deployment", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
        );
    }

    #[test]
    fn rolling_update_needs_surge_or_unavailability() {
        let mut object = workload("Deployment");
        object["spec"]["strategy"]["rollingUpdate"] =
            json!({"maxSurge": 0, "maxUnavailable": "0%"});
        let error = only(validate("Deployment", &object, None));
        assert_eq!(error.field, "spec.strategy.rollingUpdate.maxUnavailable");
        let mut object = workload("Deployment");
        object["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!("25");
        let error = only(validate("Deployment", &object, None));
        assert_eq!(error.field, "spec.strategy.rollingUpdate.maxSurge");
        let mut object = workload("DaemonSet");
        object["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] = json!(1);
        let error = only(validate("DaemonSet", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"
        );
    }

    #[test]
    fn selector_is_immutable_on_update() {
        for kind in ["Deployment", "ReplicaSet", "DaemonSet"] {
            let old = workload(kind);
            let mut new = old.clone();
            new["spec"]["selector"] = json!({"matchLabels": {"tier": "front"}});
            let error = only(validate(kind, &new, Some(&old)));
            assert_eq!(error.field, "spec.selector", "{kind}");
            assert_eq!(error.error_type, ErrorType::Invalid);
            assert_eq!(error.detail, "field is immutable");
        }
    }
}
