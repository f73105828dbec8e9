//! ObjectMeta validation (`ValidateObjectMeta`, `ValidateObjectMetaUpdate`): name or
//! generateName, namespace, generation, labels, annotations, ownerReferences and finalizers.
//!
//! Owns metadata only and is shared by every kind (and by pod templates through
//! `validate_template_meta`). Server-set fields (uid, creationTimestamp, resourceVersion)
//! are the registry's; this only checks that an update does not change them.

use serde_json::Value;

use super::names::{NameRule, is_qualified_name};
use super::{
    FieldError, child, immutable, index, integer, invalid_each, list, nonnegative, string_map,
    text, validate_labels,
};

/// `TotalAnnotationSizeLimitB`: 256 KiB over all keys and values.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Finalizer names upstream accepts without a `/` (`IsStandardFinalizerName`).
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// `ValidateObjectMeta` of the metadata at `path` (`metadata`).
pub(super) fn validate_object_meta(
    metadata: &Value,
    namespaced: bool,
    rule: NameRule,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let generate_name = text(metadata, "generateName");
    if !generate_name.is_empty() {
        invalid_each(
            errors,
            &child(path, "generateName"),
            generate_name,
            rule.check(generate_name, true),
        );
    }
    let name = text(metadata, "name");
    if name.is_empty() {
        if generate_name.is_empty() {
            errors.push(FieldError::required(
                child(path, "name"),
                "name or generateName is required",
            ));
        }
    } else {
        invalid_each(errors, &child(path, "name"), name, rule.check(name, false));
    }
    let namespace = text(metadata, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errors.push(FieldError::required(child(path, "namespace"), ""));
        } else {
            invalid_each(
                errors,
                &child(path, "namespace"),
                namespace,
                NameRule::Dns1123Label.check(namespace, false),
            );
        }
    } else if !namespace.is_empty() {
        errors.push(FieldError::forbidden(
            child(path, "namespace"),
            "not allowed on this type",
        ));
    }
    nonnegative(
        errors,
        &child(path, "generation"),
        integer(metadata, "generation"),
    );
    validate_common(metadata, path, errors);
}

/// The metadata of a pod template: labels and annotations only (`ValidatePodTemplateSpec`).
pub(super) fn validate_template_meta(metadata: &Value, path: &str, errors: &mut Vec<FieldError>) {
    validate_labels(errors, metadata, "labels", &child(path, "labels"));
    validate_annotations(metadata, &child(path, "annotations"), errors);
}

/// `ValidateObjectMetaUpdate`: what may not change, on top of the create-time checks.
pub(super) fn validate_object_meta_update(
    metadata: &Value,
    old: &Value,
    errors: &mut Vec<FieldError>,
) {
    for field in ["name", "namespace"] {
        immutable(
            errors,
            &child("metadata", field),
            &metadata[field],
            &old[field],
        );
    }
    // An update without a uid keeps the stored one (upstream's `BeforeUpdate`).
    if !text(metadata, "uid").is_empty() {
        immutable(errors, "metadata.uid", &metadata["uid"], &old["uid"]);
    }
    if let (Some(new), Some(old)) = (integer(metadata, "generation"), integer(old, "generation"))
        && new < old
    {
        errors.push(FieldError::invalid(
            "metadata.generation",
            new,
            "must not be decremented",
        ));
    }
    if !old["deletionTimestamp"].is_null() {
        let old_finalizers = list(old, "finalizers");
        for finalizer in list(metadata, "finalizers") {
            if !old_finalizers.contains(finalizer) {
                errors.push(FieldError::forbidden(
                    "metadata.finalizers",
                    format!(
                        "no new finalizers can be added if the object is being deleted, found new finalizers [\"{}\"]",
                        finalizer.as_str().unwrap_or_default()
                    ),
                ));
            }
        }
    }
}

/// Labels, annotations, ownerReferences and finalizers.
fn validate_common(metadata: &Value, path: &str, errors: &mut Vec<FieldError>) {
    validate_labels(errors, metadata, "labels", &child(path, "labels"));
    validate_annotations(metadata, &child(path, "annotations"), errors);
    validate_owner_references(metadata, &child(path, "ownerReferences"), errors);
    validate_finalizers(metadata, &child(path, "finalizers"), errors);
}

/// `ValidateAnnotations`: keys are qualified names in any case; 256 KiB in total.
fn validate_annotations(metadata: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let annotations = string_map(metadata, "annotations");
    let mut total = 0;
    for (annotation_key, annotation_value) in &annotations {
        invalid_each(
            errors,
            path,
            annotation_key,
            is_qualified_name(&annotation_key.to_lowercase()),
        );
        total += annotation_key.len() + annotation_value.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errors.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

/// `ValidateOwnerReferences` (upstream reports these without an index).
fn validate_owner_references(metadata: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let references = list(metadata, "ownerReferences");
    let mut first_controller: Option<String> = None;
    for reference in references {
        let api_version = text(reference, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or_default();
        if version.is_empty() {
            errors.push(FieldError::invalid(
                child(path, "apiVersion"),
                api_version,
                "version must not be empty",
            ));
        }
        let kind = text(reference, "kind");
        if kind.is_empty() {
            errors.push(FieldError::invalid(
                child(path, "kind"),
                kind,
                "kind must not be empty",
            ));
        }
        let name = text(reference, "name");
        if name.is_empty() {
            errors.push(FieldError::invalid(
                child(path, "name"),
                name,
                "name must not be empty",
            ));
        }
        let uid = text(reference, "uid");
        if uid.is_empty() {
            errors.push(FieldError::invalid(
                child(path, "uid"),
                uid,
                "uid must not be empty",
            ));
        }
        if reference["controller"].as_bool() == Some(true) {
            let current = format!("{kind}/{name}");
            match &first_controller {
                Some(first) => errors.push(FieldError::invalid(
                    path,
                    Value::Array(references.to_vec()),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                )),
                None => first_controller = Some(current),
            }
        }
    }
}

/// `ValidateFinalizers` plus core's `validateKubeFinalizerName`.
fn validate_finalizers(metadata: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let finalizers = list(metadata, "finalizers");
    for finalizer in finalizers {
        let finalizer = finalizer.as_str().unwrap_or_default();
        invalid_each(errors, path, finalizer, is_qualified_name(finalizer));
    }
    for (position, finalizer) in finalizers.iter().enumerate() {
        let finalizer = finalizer.as_str().unwrap_or_default();
        validate_kube_finalizer_name(finalizer, &index(path, position), errors);
    }
    let has = |name: &str| finalizers.iter().any(|finalizer| finalizer == name);
    if has("orphan") && has("foregroundDeletion") {
        errors.push(FieldError::invalid(
            path,
            Value::Array(finalizers.to_vec()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// A finalizer without a `/` must be one of the standard ones.
pub(super) fn validate_kube_finalizer_name(
    finalizer: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if !finalizer.contains('/') && !STANDARD_FINALIZERS.contains(&finalizer) {
        errors.push(FieldError::invalid(
            path,
            finalizer,
            "name is neither a standard finalizer name nor is it fully qualified",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use crate::api::field::{ErrorType, FieldError};
    use serde_json::json;

    fn config_map(metadata: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata})
    }

    fn only(errors: Vec<FieldError>) -> FieldError {
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().expect("one error")
    }

    #[test]
    fn name_or_generate_name_is_required() {
        let error = only(validate(
            "ConfigMap",
            &config_map(json!({"namespace": "default"})),
            None,
        ));
        assert_eq!(
            error.full_message(),
            "metadata.name: Required value: name or generateName is required"
        );
        let generated = config_map(json!({"generateName": "cm-", "namespace": "default"}));
        assert!(validate("ConfigMap", &generated, None).is_empty());
    }

    #[test]
    fn invalid_names_and_generate_names_are_reported_with_upstreams_detail() {
        let error = only(validate(
            "ConfigMap",
            &config_map(json!({"name": "Bad_Name", "namespace": "default"})),
            None,
        ));
        assert_eq!(error.field, "metadata.name");
        assert_eq!(error.error_type, ErrorType::Invalid);
        assert!(error.detail.starts_with("a lowercase RFC 1123 subdomain"));
        let error = only(validate(
            "ConfigMap",
            &config_map(json!({"generateName": "Bad-", "namespace": "default"})),
            None,
        ));
        assert_eq!(error.field, "metadata.generateName");
    }

    #[test]
    fn namespace_is_required_for_namespaced_kinds_and_forbidden_otherwise() {
        let error = only(validate(
            "ConfigMap",
            &config_map(json!({"name": "a"})),
            None,
        ));
        assert_eq!(error.full_message(), "metadata.namespace: Required value");
        let namespace = json!({"metadata": {"name": "a", "namespace": "b"}});
        let error = only(validate("Namespace", &namespace, None));
        assert_eq!(
            error.full_message(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
    }

    #[test]
    fn label_keys_and_values_are_checked_at_metadata_labels() {
        let object = config_map(json!({
            "name": "a", "namespace": "default",
            "labels": {"app": "web", "bad key": "ok", "ok": "-bad"}
        }));
        let errors = validate("ConfigMap", &object, None);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors.iter().all(|error| error.field == "metadata.labels"));
        assert_eq!(errors[0].value, Some(json!("bad key")));
        assert_eq!(errors[1].value, Some(json!("-bad")));
    }

    #[test]
    fn annotations_are_limited_to_256_kib() {
        let object = config_map(json!({
            "name": "a", "namespace": "default",
            "annotations": {"big": "x".repeat(256 * 1024)}
        }));
        let error = only(validate("ConfigMap", &object, None));
        assert_eq!(
            error.full_message(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        let object = config_map(json!({
            "name": "a", "namespace": "default",
            "annotations": {"Example.COM/Key": "v"}
        }));
        assert!(validate("ConfigMap", &object, None).is_empty());
    }

    #[test]
    fn finalizers_must_be_qualified_or_standard() {
        let object = config_map(json!({
            "name": "a", "namespace": "default",
            "finalizers": ["example.com/cleanup", "foregroundDeletion", "custom"]
        }));
        let error = only(validate("ConfigMap", &object, None));
        assert_eq!(
            error.full_message(),
            "metadata.finalizers[2]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        );
    }

    #[test]
    fn owner_references_need_version_kind_name_and_uid() {
        let object = config_map(json!({
            "name": "a", "namespace": "default",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "", "name": "x", "uid": "u"}]
        }));
        let error = only(validate("ConfigMap", &object, None));
        assert_eq!(
            error.full_message(),
            "metadata.ownerReferences.kind: Invalid value: \"\": kind must not be empty"
        );
        let object = config_map(json!({
            "name": "a", "namespace": "default",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "A", "name": "x", "uid": "1", "controller": true},
                {"apiVersion": "v1", "kind": "B", "name": "y", "uid": "2", "controller": true}
            ]
        }));
        let error = only(validate("ConfigMap", &object, None));
        assert_eq!(error.field, "metadata.ownerReferences");
        assert!(error.detail.ends_with("for A/x and B/y"));
    }

    #[test]
    fn name_is_immutable_on_update() {
        let old = config_map(json!({"name": "a", "namespace": "default", "uid": "1"}));
        let new = config_map(json!({"name": "b", "namespace": "default"}));
        let error = only(validate("ConfigMap", &new, Some(&old)));
        assert_eq!(
            error.full_message(),
            "metadata.name: Invalid value: \"b\": field is immutable"
        );
    }
}
