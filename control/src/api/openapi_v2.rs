//! A minimal OpenAPI v2 document in gnostic's protobuf encoding (`/openapi/v2`, media type
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), the format kubectl's
//! fallback field-validation check downloads when a kind is not in the v3 documents: every
//! served kind's PATCH operation, its `x-kubernetes-group-version-kind` extension and the
//! `fieldValidation`/`dryRun` query parameters. With it, kubectl reports an unknown kind as
//! upstream does ("no matches for kind") instead of failing to download OpenAPI.
//!
//! Owns the protobuf wire encoding of the few messages needed (field numbers from gnostic's
//! `openapiv2/OpenAPIv2.proto`). No schemas are published.

use super::resources::RESOURCE_TYPES;

/// The media type kubectl asks for.
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field (strings, bytes and embedded messages share wire type 2).
fn field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn message(fields: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (number, payload) in fields {
        field(*number, payload, &mut out);
    }
    out
}

/// `ParametersItem{parameter: Parameter{non_body_parameter: NonBodyParameter{
/// query_parameter_sub_schema: {in: "query", name, type: "string"}}}}`
fn query_parameter(name: &str) -> Vec<u8> {
    let sub_schema = message(&[
        (2, b"query".to_vec()),
        (4, name.as_bytes().to_vec()),
        (6, b"string".to_vec()),
    ]);
    let non_body = message(&[(3, sub_schema)]);
    let parameter = message(&[(2, non_body)]);
    message(&[(1, parameter)])
}

/// `NamedAny{name, value: Any{yaml}}`
fn named_yaml(name: &str, yaml: &str) -> Vec<u8> {
    let any = message(&[(2, yaml.as_bytes().to_vec())]);
    message(&[(1, name.as_bytes().to_vec()), (2, any)])
}

/// The encoded document.
pub fn document() -> Vec<u8> {
    let mut paths = Vec::new();
    for resource in RESOURCE_TYPES {
        let base = if resource.group.is_empty() {
            format!("/api/{}", resource.version)
        } else {
            format!("/apis/{}/{}", resource.group, resource.version)
        };
        let path = if resource.namespaced {
            format!(
                "{base}/namespaces/{{namespace}}/{}/{{name}}",
                resource.plural
            )
        } else {
            format!("{base}/{}/{{name}}", resource.plural)
        };
        let gvk = format!(
            "group: \"{}\"\nkind: {}\nversion: {}\n",
            resource.group, resource.kind, resource.version
        );
        let mut operation = message(&[(5, format!("patch{}", resource.kind).into_bytes())]);
        for name in ["dryRun", "fieldManager", "fieldValidation"] {
            field(8, &query_parameter(name), &mut operation);
        }
        field(
            13,
            &named_yaml("x-kubernetes-group-version-kind", &gvk),
            &mut operation,
        );
        let path_item = message(&[(8, operation)]);
        field(
            2,
            &message(&[(1, path.into_bytes()), (2, path_item)]),
            &mut paths,
        );
    }
    let info = message(&[
        (1, b"Kubernetes".to_vec()),
        (2, crate::server::GIT_VERSION.as_bytes().to_vec()),
    ]);
    message(&[(1, b"2.0".to_vec()), (2, info), (8, paths)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_follow_the_wire_format() {
        let mut out = Vec::new();
        varint(300, &mut out);
        assert_eq!(out, [0xac, 0x02]);
        let mut out = Vec::new();
        field(1, b"2.0", &mut out);
        assert_eq!(out, [0x0a, 3, b'2', b'.', b'0']);
    }

    #[test]
    fn the_document_names_every_kind_and_the_field_validation_parameter() {
        let document = document();
        let text = String::from_utf8_lossy(&document);
        assert!(text.starts_with("\n\u{3}2.0"));
        for resource in RESOURCE_TYPES {
            assert!(text.contains(&format!("kind: {}\n", resource.kind)));
        }
        assert!(text.contains("fieldValidation"));
    }
}
