//! ConfigMap (`ValidateConfigMap`) and Secret (`ValidateSecret`) validation: data keys, the
//! 1 MiB size limit, the typed Secrets' required keys, and immutability on update.
//!
//! Owns the data maps only. Values arrive as the wire form (`binaryData` and Secret `data`
//! base64-encoded); sizes are of the decoded bytes, as upstream counts them.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use super::names::is_config_map_key;
use super::{FieldError, immutable, invalid_each, key, semantically_equal, text};

/// `MaxSecretSize`, also the ConfigMap limit.
const MAX_SIZE: usize = 1024 * 1024;

fn entries(object: &Value, field: &str) -> Vec<(String, Value)> {
    object[field]
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The decoded length of a base64 value (its text length if it does not decode).
fn decoded_length(value: &Value) -> usize {
    let encoded = value.as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_or(encoded.len(), |bytes| bytes.len())
}

/// `ValidateConfigMap` and, with `old`, `ValidateConfigMapUpdate`.
pub(super) fn validate_config_map(
    config_map: &Value,
    old: Option<&Value>,
    errors: &mut Vec<FieldError>,
) {
    let data = entries(config_map, "data");
    let binary_data = entries(config_map, "binaryData");
    let binary_keys: BTreeMap<&str, ()> = binary_data
        .iter()
        .map(|(name, _)| (name.as_str(), ()))
        .collect();
    let mut total = 0;
    for (data_key, value) in &data {
        let path = key("data", data_key);
        invalid_each(errors, &path, data_key, is_config_map_key(data_key));
        if binary_keys.contains_key(data_key.as_str()) {
            errors.push(FieldError::invalid(
                &path,
                data_key.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total += value.as_str().map_or(0, str::len);
    }
    for (data_key, value) in &binary_data {
        invalid_each(
            errors,
            &key("binaryData", data_key),
            data_key,
            is_config_map_key(data_key),
        );
        total += decoded_length(value);
    }
    if total > MAX_SIZE {
        errors.push(FieldError::too_long("", MAX_SIZE));
    }
    if let Some(old) = old {
        validate_immutable_data(config_map, old, &["data", "binaryData"], errors);
    }
}

/// `ValidateSecret` and, with `old`, `ValidateSecretUpdate`.
pub(super) fn validate_secret(secret: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    let data = entries(secret, "data");
    let mut total = 0;
    for (data_key, value) in &data {
        invalid_each(
            errors,
            &key("data", data_key),
            data_key,
            is_config_map_key(data_key),
        );
        total += decoded_length(value);
    }
    if total > MAX_SIZE {
        errors.push(FieldError::too_long("data", MAX_SIZE));
    }
    let has = |name: &str| data.iter().any(|(data_key, _)| data_key == name);
    let required_keys: &[&str] = match text(secret, "type") {
        "kubernetes.io/service-account-token" => {
            let annotation =
                secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
                    .as_str()
                    .unwrap_or_default();
            if annotation.is_empty() {
                errors.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
            &[]
        }
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            &["username", "password"]
        }
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    };
    for required in required_keys {
        if !has(required) {
            errors.push(FieldError::required(key("data", required), ""));
        }
    }
    if let Some(old) = old {
        immutable(errors, "type", &secret["type"], &old["type"]);
        validate_immutable_data(secret, old, &["data"], errors);
    }
}

/// Once `immutable` is true it stays so, and so does the data.
fn validate_immutable_data(
    new: &Value,
    old: &Value,
    fields: &[&str],
    errors: &mut Vec<FieldError>,
) {
    if old["immutable"].as_bool() != Some(true) {
        return;
    }
    let detail = "field is immutable when `immutable` is set";
    if new["immutable"].as_bool() != Some(true) {
        errors.push(FieldError::forbidden("immutable", detail));
    }
    for field in fields {
        if !semantically_equal(&new[*field], &old[*field]) {
            errors.push(FieldError::forbidden(*field, detail));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use crate::api::defaulting::apply_defaults;
    use crate::api::field::FieldError;
    use serde_json::{Value, json};

    fn only(errors: Vec<FieldError>) -> FieldError {
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().expect("one error")
    }

    fn config_map(data: Value) -> Value {
        json!({"metadata": {"name": "settings", "namespace": "default"}, "data": data})
    }

    fn secret(body: Value) -> Value {
        let mut secret = json!({"metadata": {"name": "token", "namespace": "default"}});
        if let (Some(target), Some(source)) = (secret.as_object_mut(), body.as_object()) {
            target.extend(source.clone());
        }
        apply_defaults("Secret", &mut secret);
        secret
    }

    #[test]
    fn valid_config_maps_and_secrets_pass() {
        assert_eq!(
            validate("ConfigMap", &config_map(json!({"a.conf": "x"})), None),
            vec![]
        );
        assert_eq!(
            validate(
                "Secret",
                &secret(json!({"data": {"password": "aHVudGVyMg=="}})),
                None
            ),
            vec![]
        );
    }

    #[test]
    fn data_keys_must_be_config_keys() {
        let error = only(validate(
            "ConfigMap",
            &config_map(json!({"a b": "x"})),
            None,
        ));
        assert_eq!(error.field, "data[a b]");
        assert!(error.detail.starts_with(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
        ));
        let error = only(validate(
            "Secret",
            &secret(json!({"data": {"a/b": ""}})),
            None,
        ));
        assert_eq!(error.field, "data[a/b]");
    }

    #[test]
    fn data_is_limited_to_one_mebibyte() {
        let error = only(validate(
            "ConfigMap",
            &config_map(json!({"big": "x".repeat(1024 * 1024 + 1)})),
            None,
        ));
        assert_eq!(
            error.full_message(),
            ": Too long: may not be more than 1048576 bytes"
        );
    }

    #[test]
    fn tls_secrets_need_certificate_and_key() {
        let object = secret(json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}}));
        let error = only(validate("Secret", &object, None));
        assert_eq!(error.full_message(), "data[tls.key]: Required value");
    }

    #[test]
    fn immutable_config_maps_keep_their_data() {
        let mut old = config_map(json!({"a": "1"}));
        old["immutable"] = json!(true);
        let mut new = old.clone();
        new["data"]["a"] = json!("2");
        let error = only(validate("ConfigMap", &new, Some(&old)));
        assert_eq!(
            error.full_message(),
            "data: Forbidden: field is immutable when `immutable` is set"
        );
    }

    #[test]
    fn secret_type_is_immutable() {
        let old = secret(json!({}));
        let mut new = old.clone();
        new["type"] = json!("example.com/custom");
        let error = only(validate("Secret", &new, Some(&old)));
        assert_eq!(
            error.full_message(),
            "type: Invalid value: \"example.com/custom\": field is immutable"
        );
    }
}
