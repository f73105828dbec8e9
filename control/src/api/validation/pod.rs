//! Pod validation: `ValidatePodSpec` (shared with every pod template), `ValidatePodCreate`
//! and `ValidatePodUpdate` (the spec is immutable but for images, activeDeadlineSeconds,
//! added tolerations, removed scheduling gates and a negative grace period raised to 1).
//!
//! Owns containers, init containers, volumes and mounts, ports, env, probes, tolerations and
//! the pod-level enums. Does not look at pod status (the status subresource's business) nor
//! at quantities (resource values are checked by the decoder's types only).

use std::collections::BTreeSet;

use serde_json::Value;

use super::names::{
    NameRule, inclusive_range_error, is_config_map_key, is_dns1123_label, is_relaxed_env_var_name,
    is_valid_port_num,
};
use super::{
    FieldError, PROTOCOLS, child, index, integer, invalid_each, list, meta, nonnegative, one_of,
    port_number_or_name, semantically_equal, text, validate_labels,
};
use crate::api::field::ErrorType;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const PREEMPTION_POLICIES: &[&str] = &["PreemptLowerPriority", "PreemptNever"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const TOLERATION_OPERATORS: &[&str] = &["Equal", "Exists"];
const HTTP_SCHEMES: &[&str] = &["HTTP", "HTTPS"];
const FILE_MODE_ERROR: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// The fields a pod update may change, as upstream's message lists them.
const UPDATABLE_POD_SPEC_FIELDS: &[&str] = &[
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

/// Keys of a volume that are not its source.
const VOLUME_NON_SOURCE_KEYS: &[&str] = &["name"];

/// `ValidatePodCreate` / `ValidatePodUpdate` beyond ObjectMeta.
pub(super) fn validate_pod(pod: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    let spec = &pod["spec"];
    validate_pod_spec(spec, "spec", errors);
    match old {
        None => {
            if !list(spec, "ephemeralContainers").is_empty() {
                errors.push(FieldError::forbidden(
                    "spec.ephemeralContainers",
                    "cannot be set on create",
                ));
            }
        }
        Some(old) => validate_pod_update(spec, &old["spec"], errors),
    }
}

/// `ValidatePodTemplateSpec` of the template at `path` (`spec.template`).
pub(super) fn validate_pod_template(template: &Value, path: &str, errors: &mut Vec<FieldError>) {
    meta::validate_template_meta(&template["metadata"], &child(path, "metadata"), errors);
    let spec_path = child(path, "spec");
    validate_pod_spec(&template["spec"], &spec_path, errors);
    if !list(&template["spec"], "ephemeralContainers").is_empty() {
        errors.push(FieldError::forbidden(
            child(&spec_path, "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

/// `ValidatePodSpec` at `path`.
pub(super) fn validate_pod_spec(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let volumes = validate_volumes(list(spec, "volumes"), &child(path, "volumes"), errors);
    validate_containers(spec, &volumes, path, errors);
    validate_init_containers(spec, &volumes, path, errors);
    one_of(
        errors,
        &child(path, "restartPolicy"),
        text(spec, "restartPolicy"),
        RESTART_POLICIES,
    );
    one_of(
        errors,
        &child(path, "dnsPolicy"),
        text(spec, "dnsPolicy"),
        DNS_POLICIES,
    );
    validate_labels(errors, spec, "nodeSelector", &child(path, "nodeSelector"));
    if spec["hostNetwork"].as_bool() == Some(true) {
        validate_host_network_ports(spec, &child(path, "containers"), errors);
    }
    if text(spec, "dnsPolicy") == "None" && spec["dnsConfig"].is_null() {
        errors.push(FieldError::required(
            child(path, "dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    for (field, rule) in [
        ("serviceAccountName", NameRule::Dns1123Subdomain),
        ("nodeName", NameRule::Dns1123Subdomain),
        ("priorityClassName", NameRule::Dns1123Subdomain),
        ("hostname", NameRule::Dns1123Label),
        ("subdomain", NameRule::Dns1123Label),
    ] {
        let value = text(spec, field);
        if !value.is_empty() {
            invalid_each(errors, &child(path, field), value, rule.check(value, false));
        }
    }
    if let Some(deadline) = integer(spec, "activeDeadlineSeconds")
        && !(1..=i64::from(i32::MAX)).contains(&deadline)
    {
        errors.push(FieldError::invalid(
            child(path, "activeDeadlineSeconds"),
            deadline,
            inclusive_range_error(1, i64::from(i32::MAX)),
        ));
    }
    validate_tolerations(
        list(spec, "tolerations"),
        &child(path, "tolerations"),
        errors,
    );
    if !spec["preemptionPolicy"].is_null() {
        one_of(
            errors,
            &child(path, "preemptionPolicy"),
            text(spec, "preemptionPolicy"),
            PREEMPTION_POLICIES,
        );
    }
}

/// `ValidateVolumes`: returns the names of the valid volumes, which mounts may reference.
fn validate_volumes<'a>(
    volumes: &'a [Value],
    path: &str,
    errors: &mut Vec<FieldError>,
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (position, volume) in volumes.iter().enumerate() {
        let volume_path = index(path, position);
        let name_path = child(&volume_path, "name");
        let mut volume_errors = Vec::new();
        validate_volume_source(volume, &volume_path, &mut volume_errors);
        let name = text(volume, "name");
        if name.is_empty() {
            volume_errors.push(FieldError::required(&name_path, ""));
        } else {
            invalid_each(&mut volume_errors, &name_path, name, is_dns1123_label(name));
        }
        if names.contains(name) {
            volume_errors.push(FieldError::duplicate(&name_path, name));
        }
        if volume_errors.is_empty() {
            names.insert(name);
        } else {
            errors.append(&mut volume_errors);
        }
    }
    names
}

/// Exactly one source per volume, and the required fields of the common sources.
fn validate_volume_source(volume: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(fields) = volume.as_object() else {
        errors.push(FieldError::required(path, "must specify a volume type"));
        return;
    };
    let mut sources = 0;
    for (source, value) in fields {
        if VOLUME_NON_SOURCE_KEYS.contains(&source.as_str()) || value.is_null() {
            continue;
        }
        if sources > 0 {
            errors.push(FieldError::forbidden(
                child(path, source),
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        sources += 1;
        let source_path = child(path, source);
        let required = match source.as_str() {
            "hostPath" => Some("path"),
            "secret" => Some("secretName"),
            "configMap" => Some("name"),
            "persistentVolumeClaim" => Some("claimName"),
            _ => None,
        };
        if let Some(required) = required
            && text(value, required).is_empty()
        {
            errors.push(FieldError::required(child(&source_path, required), ""));
        }
        if let Some(mode) = integer(value, "defaultMode")
            && !(0..=0o777).contains(&mode)
        {
            errors.push(FieldError::invalid(
                child(&source_path, "defaultMode"),
                mode,
                FILE_MODE_ERROR,
            ));
        }
    }
    if sources == 0 {
        errors.push(FieldError::required(path, "must specify a volume type"));
    }
}

/// `validateContainers`: at least one, unique names, then the common rules.
fn validate_containers(
    spec: &Value,
    volumes: &BTreeSet<&str>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let containers_path = child(path, "containers");
    let containers = list(spec, "containers");
    if containers.is_empty() {
        errors.push(FieldError::required(&containers_path, ""));
        return;
    }
    let mut names = BTreeSet::new();
    for (position, container) in containers.iter().enumerate() {
        let container_path = index(&containers_path, position);
        validate_container_common(container, volumes, &container_path, errors);
        let name = text(container, "name");
        if !names.insert(name) {
            errors.push(FieldError::duplicate(child(&container_path, "name"), name));
        }
        validate_lifecycle(container, &container_path, errors);
        validate_probes(container, &container_path, errors);
        if !container["restartPolicy"].is_null() {
            errors.push(FieldError::forbidden(
                child(&container_path, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    validate_host_port_conflicts(containers, &containers_path, errors);
}

/// `validateInitContainers`: names unique across containers and init containers; only
/// restartable (sidecar) init containers may have probes and lifecycle hooks.
fn validate_init_containers(
    spec: &Value,
    volumes: &BTreeSet<&str>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let init_path = child(path, "initContainers");
    let mut names: BTreeSet<&str> = list(spec, "containers")
        .iter()
        .map(|container| text(container, "name"))
        .collect();
    for (position, container) in list(spec, "initContainers").iter().enumerate() {
        let container_path = index(&init_path, position);
        validate_container_common(container, volumes, &container_path, errors);
        let restart_policy = &container["restartPolicy"];
        let restartable = restart_policy.as_str() == Some("Always");
        if !restart_policy.is_null() && !restartable {
            errors.push(FieldError::not_supported(
                child(&container_path, "restartPolicy"),
                restart_policy.clone(),
                &["Always"],
            ));
        }
        let name = text(container, "name");
        if names.contains(name) {
            errors.push(FieldError::duplicate(child(&container_path, "name"), name));
        } else if !name.is_empty() {
            names.insert(name);
        }
        validate_host_port_conflicts(std::slice::from_ref(container), &init_path, errors);
        if restartable {
            validate_lifecycle(container, &container_path, errors);
            validate_probes(container, &container_path, errors);
        } else {
            for field in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if !container[field].is_null() {
                    errors.push(FieldError::forbidden(
                        child(&container_path, field),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
}

/// `validateContainerCommon`.
fn validate_container_common(
    container: &Value,
    volumes: &BTreeSet<&str>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let name_path = child(path, "name");
    let name = text(container, "name");
    if name.is_empty() {
        errors.push(FieldError::required(&name_path, ""));
    } else {
        invalid_each(errors, &name_path, name, is_dns1123_label(name));
    }
    if text(container, "image").is_empty() {
        errors.push(FieldError::required(child(path, "image"), ""));
    }
    let policy = text(container, "terminationMessagePolicy");
    let policy_path = child(path, "terminationMessagePolicy");
    if policy.is_empty() {
        errors.push(FieldError::required(&policy_path, ""));
    } else if !TERMINATION_MESSAGE_POLICIES.contains(&policy) {
        errors.push(FieldError::not_supported(
            &policy_path,
            policy,
            TERMINATION_MESSAGE_POLICIES,
        ));
    }
    validate_container_ports(list(container, "ports"), &child(path, "ports"), errors);
    validate_env(list(container, "env"), &child(path, "env"), errors);
    validate_volume_mounts(
        list(container, "volumeMounts"),
        volumes,
        &child(path, "volumeMounts"),
        errors,
    );
    one_of(
        errors,
        &child(path, "imagePullPolicy"),
        text(container, "imagePullPolicy"),
        PULL_POLICIES,
    );
}

/// `validateContainerPorts`.
fn validate_container_ports(ports: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let mut names = BTreeSet::new();
    for (position, port) in ports.iter().enumerate() {
        let port_path = index(path, position);
        let name = text(port, "name");
        if !name.is_empty() {
            let details = super::names::is_valid_port_name(name);
            if !details.is_empty() {
                invalid_each(errors, &child(&port_path, "name"), name, details);
            } else if !names.insert(name) {
                errors.push(FieldError::duplicate(child(&port_path, "name"), name));
            }
        }
        let container_port = integer(port, "containerPort").unwrap_or(0);
        if container_port == 0 {
            errors.push(FieldError::required(child(&port_path, "containerPort"), ""));
        } else {
            for detail in is_valid_port_num(container_port) {
                errors.push(FieldError::invalid(
                    child(&port_path, "containerPort"),
                    container_port,
                    detail,
                ));
            }
        }
        let host_port = integer(port, "hostPort").unwrap_or(0);
        if host_port != 0 {
            for detail in is_valid_port_num(host_port) {
                errors.push(FieldError::invalid(
                    child(&port_path, "hostPort"),
                    host_port,
                    detail,
                ));
            }
        }
        one_of(
            errors,
            &child(&port_path, "protocol"),
            text(port, "protocol"),
            PROTOCOLS,
        );
    }
}

/// `AccumulateUniqueHostPorts` over `containers` listed at `path`.
fn validate_host_port_conflicts(containers: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    for (container_position, container) in containers.iter().enumerate() {
        for (port_position, port) in list(container, "ports").iter().enumerate() {
            let host_port = integer(port, "hostPort").unwrap_or(0);
            if host_port == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{host_port}",
                text(port, "protocol"),
                text(port, "hostIP")
            );
            if seen.contains(&key) {
                let port_path = index(
                    &child(&index(path, container_position), "ports"),
                    port_position,
                );
                errors.push(FieldError::duplicate(child(&port_path, "hostPort"), key));
            } else {
                seen.insert(key);
            }
        }
    }
}

/// `validateHostNetwork`: with the host's network a host port is the container port.
fn validate_host_network_ports(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    for (container_position, container) in list(spec, "containers").iter().enumerate() {
        for (port_position, port) in list(container, "ports").iter().enumerate() {
            let host_port = integer(port, "hostPort").unwrap_or(0);
            if host_port != integer(port, "containerPort").unwrap_or(0) {
                let port_path = index(
                    &child(&index(path, container_position), "ports"),
                    port_position,
                );
                errors.push(FieldError::invalid(
                    child(&port_path, "hostPort"),
                    host_port,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
    }
}

/// `ValidateEnv` with the relaxed name rule.
fn validate_env(env: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    for (position, variable) in env.iter().enumerate() {
        let variable_path = index(path, position);
        let name = text(variable, "name");
        if name.is_empty() {
            errors.push(FieldError::required(child(&variable_path, "name"), ""));
        } else {
            invalid_each(
                errors,
                &child(&variable_path, "name"),
                name,
                is_relaxed_env_var_name(name),
            );
        }
        let value_from = &variable["valueFrom"];
        if value_from.is_null() {
            continue;
        }
        let from_path = child(&variable_path, "valueFrom");
        let sources = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ]
        .iter()
        .filter(|source| !value_from[**source].is_null())
        .count();
        for selector in ["configMapKeyRef", "secretKeyRef"] {
            let reference = &value_from[selector];
            if reference.is_null() {
                continue;
            }
            let selector_path = child(&from_path, selector);
            let key = text(reference, "key");
            if key.is_empty() {
                errors.push(FieldError::required(child(&selector_path, "key"), ""));
            } else {
                invalid_each(
                    errors,
                    &child(&selector_path, "key"),
                    key,
                    is_config_map_key(key),
                );
            }
        }
        if sources == 0 {
            errors.push(FieldError::invalid(
                &from_path,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !text(variable, "value").is_empty() {
            errors.push(FieldError::invalid(
                &from_path,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errors.push(FieldError::invalid(
                &from_path,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

/// `ValidateVolumeMounts`: every mount names a valid volume, mount paths are unique.
fn validate_volume_mounts(
    mounts: &[Value],
    volumes: &BTreeSet<&str>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let mut mount_paths = BTreeSet::new();
    for (position, mount) in mounts.iter().enumerate() {
        let mount_path = index(path, position);
        let name = text(mount, "name");
        if name.is_empty() {
            errors.push(FieldError::required(child(&mount_path, "name"), ""));
        }
        if !volumes.contains(name) {
            errors.push(FieldError {
                error_type: ErrorType::NotFound,
                field: child(&mount_path, "name"),
                value: Some(Value::from(name)),
                detail: String::new(),
            });
        }
        let target = text(mount, "mountPath");
        if target.is_empty() {
            errors.push(FieldError::required(child(&mount_path, "mountPath"), ""));
        }
        if !mount_paths.insert(target) {
            errors.push(FieldError::invalid(
                child(&mount_path, "mountPath"),
                target,
                "must be unique",
            ));
        }
    }
}

/// Lifecycle hooks: one handler each.
fn validate_lifecycle(container: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let lifecycle = &container["lifecycle"];
    for hook in ["postStart", "preStop"] {
        if !lifecycle[hook].is_null() {
            validate_handler(
                &lifecycle[hook],
                &["exec", "httpGet", "tcpSocket", "sleep"],
                &child(&child(path, "lifecycle"), hook),
                errors,
            );
        }
    }
}

/// `validateLivenessProbe`, `validateReadinessProbe`, `validateStartupProbe`.
fn validate_probes(container: &Value, path: &str, errors: &mut Vec<FieldError>) {
    for probe_name in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let probe = &container[probe_name];
        if probe.is_null() {
            continue;
        }
        let probe_path = child(path, probe_name);
        validate_handler(
            probe,
            &["exec", "httpGet", "tcpSocket", "grpc"],
            &probe_path,
            errors,
        );
        for field in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            nonnegative(errors, &child(&probe_path, field), integer(probe, field));
        }
        if probe_name != "readinessProbe"
            && let Some(threshold) = integer(probe, "successThreshold").filter(|value| *value != 1)
        {
            errors.push(FieldError::invalid(
                child(&probe_path, "successThreshold"),
                threshold,
                "must be 1",
            ));
        }
    }
}

/// `validateHandler`: exactly one of `kinds`, each checked.
fn validate_handler(handler: &Value, kinds: &[&str], path: &str, errors: &mut Vec<FieldError>) {
    let mut handlers = 0;
    for kind in kinds {
        let action = &handler[*kind];
        if action.is_null() {
            continue;
        }
        let action_path = child(path, kind);
        if handlers > 0 {
            errors.push(FieldError::forbidden(
                action_path,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        handlers += 1;
        match *kind {
            "exec" if list(action, "command").is_empty() => {
                errors.push(FieldError::required(child(&action_path, "command"), ""));
            }
            "httpGet" => {
                if text(action, "path").is_empty() {
                    errors.push(FieldError::required(child(&action_path, "path"), ""));
                }
                port_number_or_name(errors, &child(&action_path, "port"), &action["port"]);
                let scheme = text(action, "scheme");
                if !HTTP_SCHEMES.contains(&scheme) {
                    errors.push(FieldError::not_supported(
                        child(&action_path, "scheme"),
                        scheme,
                        HTTP_SCHEMES,
                    ));
                }
            }
            "tcpSocket" | "grpc" => {
                port_number_or_name(errors, &child(&action_path, "port"), &action["port"]);
            }
            _ => {}
        }
    }
    if handlers == 0 {
        errors.push(FieldError::required(path, "must specify a handler type"));
    }
}

/// `ValidateTolerations`.
fn validate_tolerations(tolerations: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    for (position, toleration) in tolerations.iter().enumerate() {
        let toleration_path = index(path, position);
        let toleration_key = text(toleration, "key");
        let operator = text(toleration, "operator");
        let effect = text(toleration, "effect");
        if !toleration_key.is_empty() {
            invalid_each(
                errors,
                &child(&toleration_path, "key"),
                toleration_key,
                super::is_qualified_name(toleration_key),
            );
        } else if operator != "Exists" {
            errors.push(FieldError::invalid(
                child(&toleration_path, "operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if !toleration["tolerationSeconds"].is_null() && effect != "NoExecute" {
            errors.push(FieldError::invalid(
                child(&toleration_path, "effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        let value = text(toleration, "value");
        match operator {
            "Equal" | "" => {
                let details = super::is_valid_label_value(value);
                if !details.is_empty() {
                    errors.push(FieldError::invalid(
                        child(&toleration_path, "operator"),
                        value,
                        details.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errors.push(FieldError::invalid(
                        child(&toleration_path, "operator"),
                        toleration.clone(),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errors.push(FieldError::not_supported(
                child(&toleration_path, "operator"),
                other,
                TOLERATION_OPERATORS,
            )),
        }
        if !effect.is_empty() {
            validate_taint_effect(effect, &child(&toleration_path, "effect"), errors);
        }
    }
}

/// `validateTaintEffect` (an empty effect is the caller's decision).
pub(super) fn validate_taint_effect(effect: &str, path: &str, errors: &mut Vec<FieldError>) {
    one_of(errors, path, effect, TAINT_EFFECTS);
}

/// `ValidatePodUpdate` beyond the create-time checks.
fn validate_pod_update(spec: &Value, old: &Value, errors: &mut Vec<FieldError>) {
    for field in ["containers", "initContainers"] {
        let new_containers = list(spec, field);
        if new_containers.len() != list(old, field).len() {
            errors.push(FieldError::forbidden(
                child("spec", field),
                "pod updates may not add or remove containers",
            ));
            return;
        }
        for (position, container) in new_containers.iter().enumerate() {
            let image = text(container, "image");
            if image.trim() != image {
                errors.push(FieldError::invalid(
                    child(&index(&child("spec", field), position), "image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    match (
        integer(spec, "activeDeadlineSeconds"),
        integer(old, "activeDeadlineSeconds"),
    ) {
        (Some(new), old_deadline) => {
            if !(0..=i64::from(i32::MAX)).contains(&new) {
                errors.push(FieldError::invalid(
                    "spec.activeDeadlineSeconds",
                    new,
                    inclusive_range_error(0, i64::from(i32::MAX)),
                ));
                return;
            }
            if old_deadline.is_some_and(|old_deadline| old_deadline < new) {
                errors.push(FieldError::invalid(
                    "spec.activeDeadlineSeconds",
                    new,
                    "must be less than or equal to previous value",
                ));
                return;
            }
        }
        (None, Some(_)) => errors.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            Value::Null,
            "must not update from a positive integer to nil value",
        )),
        (None, None) => {}
    }
    validate_only_added_tolerations(list(spec, "tolerations"), list(old, "tolerations"), errors);
    validate_only_deleted_scheduling_gates(spec, old, errors);
    if semantically_equal(spec, old) {
        return;
    }
    let munged = munge_updatable_fields(spec, old);
    if !semantically_equal(&munged, old) {
        let mut differences = Vec::new();
        describe_differences(old, &munged, "spec", &mut differences);
        errors.push(FieldError::forbidden(
            "spec",
            format!(
                "pod updates may not change fields other than {}\n{}",
                UPDATABLE_POD_SPEC_FIELDS.join(","),
                differences.join("\n")
            ),
        ));
    }
}

/// The new spec with every field a pod update may change put back to the old value.
fn munge_updatable_fields(spec: &Value, old: &Value) -> Value {
    let mut munged = spec.clone();
    for field in ["containers", "initContainers"] {
        if let Some(containers) = munged[field].as_array_mut() {
            for (container, old_container) in containers.iter_mut().zip(list(old, field)) {
                container["image"] = old_container["image"].clone();
            }
        }
    }
    if let Some(map) = munged.as_object_mut() {
        for field in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            match old.get(field) {
                Some(value) => {
                    map.insert(field.to_owned(), value.clone());
                }
                None => {
                    map.remove(field);
                }
            }
        }
        let old_grace = integer(old, "terminationGracePeriodSeconds");
        if old_grace.is_some_and(|grace| grace < 0)
            && integer(spec, "terminationGracePeriodSeconds") == Some(1)
        {
            map.insert(
                "terminationGracePeriodSeconds".to_owned(),
                old["terminationGracePeriodSeconds"].clone(),
            );
        }
    }
    munged
}

/// `validateOnlyAddedTolerations` (the new list itself was validated with the spec).
fn validate_only_added_tolerations(new: &[Value], old: &[Value], errors: &mut Vec<FieldError>) {
    let without_seconds = |toleration: &Value| {
        let mut toleration = toleration.clone();
        if let Some(map) = toleration.as_object_mut() {
            map.remove("tolerationSeconds");
        }
        toleration
    };
    for old_toleration in old {
        let old_toleration = without_seconds(old_toleration);
        let kept = new
            .iter()
            .any(|toleration| semantically_equal(&without_seconds(toleration), &old_toleration));
        if !kept {
            errors.push(FieldError::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            return;
        }
    }
}

/// `validateOnlyDeletedSchedulingGates`.
fn validate_only_deleted_scheduling_gates(spec: &Value, old: &Value, errors: &mut Vec<FieldError>) {
    let old_names: BTreeSet<&str> = list(old, "schedulingGates")
        .iter()
        .map(|gate| text(gate, "name"))
        .collect();
    for (position, gate) in list(spec, "schedulingGates").iter().enumerate() {
        let name = text(gate, "name");
        if !old_names.contains(name) {
            errors.push(FieldError::forbidden(
                child(&index("spec.schedulingGates", position), "name"),
                format!("only deletion is allowed, but found new scheduling gate '{name}'"),
            ));
        }
    }
}

/// Where two specs differ, one line per changed leaf (upstream prints a `cmp.Diff` here).
fn describe_differences(old: &Value, new: &Value, path: &str, lines: &mut Vec<String>) {
    const MAX_LINES: usize = 20;
    if lines.len() >= MAX_LINES || semantically_equal(old, new) {
        return;
    }
    match (old, new) {
        (Value::Object(old_map), Value::Object(new_map)) => {
            let keys: BTreeSet<&String> = old_map.keys().chain(new_map.keys()).collect();
            for field in keys {
                describe_differences(
                    &old[field.as_str()],
                    &new[field.as_str()],
                    &child(path, field),
                    lines,
                );
            }
        }
        (Value::Array(old_items), Value::Array(new_items))
            if old_items.len() == new_items.len() =>
        {
            for (position, (old_item, new_item)) in old_items.iter().zip(new_items).enumerate() {
                describe_differences(old_item, new_item, &index(path, position), lines);
            }
        }
        _ => lines.push(format!("  {path}: {old} -> {new}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use crate::api::defaulting::apply_defaults;
    use crate::api::field::{ErrorType, FieldError};
    use serde_json::{Value, json};

    fn pod(spec: Value) -> Value {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec
        });
        apply_defaults("Pod", &mut pod);
        pod
    }

    fn web() -> Value {
        pod(json!({"containers": [{"name": "web", "image": "nginx:1.27",
            "ports": [{"containerPort": 80, "name": "http"}]}]}))
    }

    fn only(errors: Vec<FieldError>) -> FieldError {
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().expect("one error")
    }

    #[test]
    fn a_defaulted_pod_is_valid() {
        assert_eq!(validate("Pod", &web(), None), vec![]);
    }

    #[test]
    fn containers_are_required() {
        let error = only(validate("Pod", &pod(json!({"containers": []})), None));
        assert_eq!(error.full_message(), "spec.containers: Required value");
    }

    #[test]
    fn container_names_are_labels_and_unique_across_init_containers() {
        let mut object = web();
        object["spec"]["containers"][0]["name"] = json!("Web");
        let error = only(validate("Pod", &object, None));
        assert_eq!(error.field, "spec.containers[0].name");
        assert!(error.detail.starts_with("a lowercase RFC 1123 label"));

        let object = pod(json!({
            "containers": [{"name": "web", "image": "nginx"}],
            "initContainers": [{"name": "web", "image": "busybox"}]
        }));
        let error = only(validate("Pod", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.initContainers[0].name: Duplicate value: \"web\""
        );
    }

    #[test]
    fn image_is_required() {
        let object = pod(json!({"containers": [{"name": "web"}]}));
        let error = only(validate("Pod", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.containers[0].image: Required value"
        );
    }

    #[test]
    fn container_ports_are_checked() {
        let mut object = web();
        object["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(70000);
        let error = only(validate("Pod", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        let mut object = web();
        object["spec"]["containers"][0]["ports"][0]["protocol"] = json!("ICMP");
        let error = only(validate("Pod", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        );
    }

    #[test]
    fn restart_and_dns_policies_are_enums() {
        let mut object = web();
        object["spec"]["restartPolicy"] = json!("Sometimes");
        let error = only(validate("Pod", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        let mut object = web();
        object["spec"]["dnsPolicy"] = json!("Cluster");
        let error = only(validate("Pod", &object, None));
        assert_eq!(error.field, "spec.dnsPolicy");
        assert_eq!(error.error_type, ErrorType::NotSupported);
    }

    #[test]
    fn volume_names_are_unique_and_mounts_reference_volumes() {
        let object = pod(json!({
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
            "containers": [{"name": "web", "image": "nginx",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]
        }));
        let error = only(validate("Pod", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.volumes[1].name: Duplicate value: \"data\""
        );

        let object = pod(json!({
            "containers": [{"name": "web", "image": "nginx",
                "volumeMounts": [{"name": "missing", "mountPath": "/data"}]}]
        }));
        let error = only(validate("Pod", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.containers[0].volumeMounts[0].name: Not found: \"missing\""
        );
    }

    #[test]
    fn env_value_from_needs_exactly_one_source() {
        let object = pod(json!({"containers": [{"name": "web", "image": "nginx",
            "env": [{"name": "A", "valueFrom": {}}]}]}));
        let error = only(validate("Pod", &object, None));
        assert_eq!(error.field, "spec.containers[0].env[0].valueFrom");
    }

    #[test]
    fn tolerations_with_an_empty_key_must_use_exists() {
        let mut object = web();
        object["spec"]["tolerations"] = json!([{"operator": "Equal", "value": "x"}]);
        let error = only(validate("Pod", &object, None));
        assert_eq!(error.field, "spec.tolerations[0].operator");
    }

    #[test]
    fn pod_update_may_change_the_image() {
        let old = web();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        assert_eq!(validate("Pod", &new, Some(&old)), vec![]);
    }

    #[test]
    fn pod_update_may_not_change_ports() {
        let old = web();
        let mut new = old.clone();
        new["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(81);
        let error = only(validate("Pod", &new, Some(&old)));
        assert_eq!(error.field, "spec");
        assert_eq!(error.error_type, ErrorType::Forbidden);
        assert!(error.detail.starts_with(
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"
        ));
        assert!(
            error
                .detail
                .contains("spec.containers[0].ports[0].containerPort: 80 -> 81")
        );
    }

    #[test]
    fn pod_update_may_add_but_not_change_tolerations() {
        let mut old = web();
        old["spec"]["tolerations"] =
            json!([{"key": "a", "operator": "Exists", "effect": "NoSchedule"}]);
        let mut new = old.clone();
        new["spec"]["tolerations"]
            .as_array_mut()
            .expect("tolerations")
            .push(json!({"key": "b", "operator": "Exists"}));
        assert_eq!(validate("Pod", &new, Some(&old)), vec![]);
        new["spec"]["tolerations"] = json!([{"key": "b", "operator": "Exists"}]);
        let error = only(validate("Pod", &new, Some(&old)));
        assert_eq!(
            error.full_message(),
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
        );
    }

    #[test]
    fn pod_update_deadline_may_only_shrink() {
        let mut old = web();
        old["spec"]["activeDeadlineSeconds"] = json!(100);
        let mut new = old.clone();
        new["spec"]["activeDeadlineSeconds"] = json!(50);
        assert_eq!(validate("Pod", &new, Some(&old)), vec![]);
        new["spec"]["activeDeadlineSeconds"] = json!(200);
        let error = only(validate("Pod", &new, Some(&old)));
        assert_eq!(
            error.full_message(),
            "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"
        );
    }

    #[test]
    fn pod_update_may_not_add_containers() {
        let old = web();
        let mut new = old.clone();
        new["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(old["spec"]["containers"][0].clone());
        new["spec"]["containers"][1]["name"] = json!("second");
        new["spec"]["containers"][1]["ports"] = json!([]);
        let error = only(validate("Pod", &new, Some(&old)));
        assert_eq!(
            error.full_message(),
            "spec.containers: Forbidden: pod updates may not add or remove containers"
        );
    }

    #[test]
    fn ephemeral_containers_cannot_be_set_on_create() {
        let mut object = web();
        object["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox",
            "terminationMessagePolicy": "File", "imagePullPolicy": "Always"}]);
        let error = only(validate("Pod", &object, None));
        assert_eq!(
            error.full_message(),
            "spec.ephemeralContainers: Forbidden: cannot be set on create"
        );
    }
}
