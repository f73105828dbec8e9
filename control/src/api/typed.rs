//! Decoding request bodies through the k8s-openapi type of their kind: wrong field types are
//! rejected, unknown fields are found (for `fieldValidation`) and dropped, and what is stored is
//! exactly what the typed object serializes to.
//!
//! Owns the kind → k8s-openapi type dispatch and the unknown-field diff. Knows nothing about
//! HTTP, defaulting or validation.

use k8s_openapi::api::{apps, coordination, core, discovery};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// A decoded object.
#[derive(Debug)]
pub struct Decoded {
    /// The object as its type serializes it (unknown fields removed).
    pub object: Value,
    /// Paths of the fields the type does not know, like `spec.foo` or `spec.containers[0].bar`.
    pub unknown_fields: Vec<String>,
}

fn round_trip<T: DeserializeOwned + Serialize>(input: Value) -> Result<Decoded, String> {
    let typed: T = serde_json::from_value(input.clone()).map_err(|error| error.to_string())?;
    let object = serde_json::to_value(&typed).map_err(|error| error.to_string())?;
    let mut unknown_fields = Vec::new();
    collect_unknown("", &input, &object, &mut unknown_fields);
    Ok(Decoded {
        object,
        unknown_fields,
    })
}

fn collect_unknown(path: &str, input: &Value, output: &Value, unknown: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(input), Value::Object(output)) => {
            for (key, value) in input {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match output.get(key) {
                    Some(known) => collect_unknown(&child, value, known, unknown),
                    None if value.is_null() => {}
                    None => unknown.push(child),
                }
            }
        }
        (Value::Array(input), Value::Array(output)) => {
            for (index, (value, known)) in input.iter().zip(output).enumerate() {
                collect_unknown(&format!("{path}[{index}]"), value, known, unknown);
            }
        }
        _ => {}
    }
}

/// Decodes `input` as a `kind` object. The error is the decoder's message (a wrong type).
pub fn decode(kind: &str, input: Value) -> Result<Decoded, String> {
    match kind {
        "Namespace" => round_trip::<core::v1::Namespace>(input),
        "Node" => round_trip::<core::v1::Node>(input),
        "Pod" => round_trip::<core::v1::Pod>(input),
        "Service" => round_trip::<core::v1::Service>(input),
        "Endpoints" => round_trip::<core::v1::Endpoints>(input),
        "ConfigMap" => round_trip::<core::v1::ConfigMap>(input),
        "Secret" => round_trip::<core::v1::Secret>(input),
        "ServiceAccount" => round_trip::<core::v1::ServiceAccount>(input),
        "Event" => round_trip::<core::v1::Event>(input),
        "Binding" => round_trip::<core::v1::Binding>(input),
        "EndpointSlice" => round_trip::<discovery::v1::EndpointSlice>(input),
        "Deployment" => round_trip::<apps::v1::Deployment>(input),
        "ReplicaSet" => round_trip::<apps::v1::ReplicaSet>(input),
        "DaemonSet" => round_trip::<apps::v1::DaemonSet>(input),
        "Lease" => round_trip::<coordination::v1::Lease>(input),
        "Scale" => round_trip::<k8s_openapi::api::autoscaling::v1::Scale>(input),
        "DeleteOptions" => {
            round_trip::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>(input)
        }
        other => Err(format!("no type is registered for kind {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_with_their_paths_and_dropped() {
        let decoded = decode(
            "Pod",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"any": "x"}, "bogus": null},
                "spec": {"foo": 1, "containers": [{"name": "c", "image": "i", "colour": "red"}]}
            }),
        )
        .expect("decodes");
        assert_eq!(
            decoded.unknown_fields,
            vec!["spec.containers[0].colour", "spec.foo"]
        );
        assert!(decoded.object["spec"].get("foo").is_none());
        assert_eq!(decoded.object["metadata"]["labels"]["any"], "x");
    }

    #[test]
    fn wrong_types_and_kinds_are_rejected() {
        let error = decode(
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 5}}),
        )
        .expect_err("a number is not a name");
        assert!(error.contains("invalid type"), "{error}");
        assert!(decode("Pod", json!({"apiVersion": "v1", "kind": "Service"})).is_err());
    }
}
