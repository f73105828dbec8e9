//! The three PATCH flavours of the Kubernetes API: JSON patch (RFC 6902), JSON merge patch
//! (RFC 7386) and strategic merge patch, with the `patchStrategy`/`patchMergeKey` struct tags of
//! the served built-in kinds transcribed from k8s.io/api.
//!
//! Owns turning (current object, raw patch body) into the patched object, and the patch-strategy
//! table ([`patch_strategy`]). Pure: never touches HTTP or the store, and never defaults,
//! validates or decodes the result into a typed object — the registry does that afterwards.
//! `original` is never modified: every flavour builds a new value, so a failing patch leaves
//! nothing half-applied.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// The patch format named by the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`: an RFC 6902 list of operations.
    Json,
    /// `application/merge-patch+json`: an RFC 7386 merge patch.
    Merge,
    /// `application/strategic-merge-patch+json`: a merge patch whose lists merge by the kind's
    /// patch strategies and which may carry `$patch`-style directives.
    StrategicMerge,
}

impl PatchType {
    /// From the request Content-Type; parameters such as `; charset=utf-8` are ignored and the
    /// media type is compared case-insensitively.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let media_type = content_type
            .split_once(';')
            .map_or(content_type, |(media_type, _parameters)| media_type)
            .trim();
        [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge]
            .into_iter()
            .find(|patch_type| patch_type.content_type().eq_ignore_ascii_case(media_type))
    }

    /// The media type a client sends for this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
        }
    }
}

impl fmt::Display for PatchType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.content_type())
    }
}

/// Why a patch could not be applied. [`http_status`] gives the status kube-apiserver answers
/// with for each variant.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body is not a patch of its type: not JSON, a JSON patch that is not a list of
    /// well-formed operations (missing `op`/`path`/`value`/`from`, unknown `op`, bad pointer
    /// syntax, a member given twice), a merge or strategic merge patch that is not an object, or
    /// a strategic merge directive of the wrong shape (`$retainKeys` naming fewer fields than the
    /// patch sets, `$setElementOrder` contradicting the patch list, a directive that is not a
    /// list). Upstream: 400 BadRequest.
    #[error("the {patch_type} body is malformed: {reason}")]
    Malformed {
        patch_type: PatchType,
        reason: String,
    },
    /// A well-formed JSON-patch operation could not be applied: a `test` found a different value,
    /// a path or `from` does not exist, an array index is out of range. Upstream: 422
    /// Unprocessable Entity ("the server rejected our request due to an error in our request").
    #[error("jsonpatch operations[{index}] ({op} {path:?}) failed: {reason}")]
    OperationFailed {
        index: usize,
        op: &'static str,
        path: String,
        reason: String,
    },
    /// A well-formed strategic merge patch that cannot be merged into the object: an element of
    /// a list merged by key lacks that key, a `$patch` directive has an unknown value, a merged
    /// list holds something other than objects. Upstream's strategicpatch errors here are untyped,
    /// so kube-apiserver answers 500 InternalError (reason Unknown) with this message.
    #[error("strategic merge patch cannot be applied at {path}: {reason}")]
    Unmergeable { path: String, reason: String },
    /// A strategic merge patch for a kind without patch strategies (custom resources, or any
    /// kind not served here). Upstream: 415 UnsupportedMediaType.
    #[error(
        "strategic merge patch is not supported for kind {kind:?}; send application/merge-patch+json or application/json-patch+json instead"
    )]
    UnsupportedKind { kind: String },
}

/// The HTTP status kube-apiserver answers with for `error` (see each [`PatchError`] variant).
pub fn http_status(error: &PatchError) -> u16 {
    match error {
        PatchError::Malformed { .. } => 400,
        PatchError::OperationFailed { .. } => 422,
        PatchError::Unmergeable { .. } => 500,
        PatchError::UnsupportedKind { .. } => 415,
    }
}

/// Applies `patch` (the raw request body) to `original` (a whole Kubernetes object of `kind`,
/// e.g. "Pod", "Deployment") and returns the patched object.
pub fn apply(
    patch_type: PatchType,
    kind: &str,
    original: &Value,
    patch: &[u8],
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => json_patch(original, patch),
        PatchType::Merge => {
            let patch = parse_object(PatchType::Merge, patch)?;
            Ok(merge_patch(original.clone(), &Value::Object(patch)))
        }
        PatchType::StrategicMerge => strategic_merge_patch(kind, original, patch),
    }
}

/// Parses a merge or strategic merge patch body, which must be a JSON object: a patch of
/// another type would replace the whole object with something that is not an object.
fn parse_object(patch_type: PatchType, body: &[u8]) -> Result<Map<String, Value>, PatchError> {
    let malformed = |reason: String| PatchError::Malformed { patch_type, reason };
    match serde_json::from_slice(body) {
        Ok(Value::Object(patch)) => Ok(patch),
        Ok(other) => Err(malformed(format!(
            "the patch must be a JSON object, got {}",
            type_name(&other)
        ))),
        Err(error) => Err(malformed(format!("not valid JSON: {error}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON merge patch (RFC 7386)

/// RFC 7386 `MergePatch(target, patch)`: objects merge recursively, `null` deletes a member,
/// anything else (arrays included) replaces.
fn merge_patch(target: Value, patch: &Value) -> Value {
    let Value::Object(patch_members) = patch else {
        return patch.clone();
    };
    let mut merged = match target {
        Value::Object(members) => members,
        _ => Map::new(),
    };
    for (key, value) in patch_members {
        if value.is_null() {
            merged.remove(key);
        } else {
            let current = merged.remove(key).unwrap_or(Value::Null);
            merged.insert(key.clone(), merge_patch(current, value));
        }
    }
    Value::Object(merged)
}

// ---------------------------------------------------------------------------------------------
// JSON patch (RFC 6902)

/// Decodes every operation first (a malformed document is rejected before anything is applied),
/// then applies them in order to a copy of `original`.
fn json_patch(original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let malformed = |reason: String| PatchError::Malformed {
        patch_type: PatchType::Json,
        reason,
    };
    let members: Vec<OperationMembers> = serde_json::from_slice(body)
        .map_err(|error| malformed(format!("not a JSON array of operations: {error}")))?;
    let operations = members
        .into_iter()
        .enumerate()
        .map(|(index, OperationMembers(members))| {
            Operation::decode(members)
                .map_err(|reason| malformed(format!("operations[{index}]: {reason}")))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut document = original.clone();
    for (index, operation) in operations.into_iter().enumerate() {
        let op = operation.name();
        let path = operation.path().text.clone();
        operation
            .apply_to(&mut document)
            .map_err(|reason| PatchError::OperationFailed {
                index,
                op,
                path,
                reason,
            })?;
    }
    Ok(document)
}

/// The members of one operation object as sent. Unlike a plain [`Map`] it rejects a member given
/// twice, which RFC 6902 (appendix A.13) calls an invalid document.
struct OperationMembers(Map<String, Value>);

impl<'de> Deserialize<'de> for OperationMembers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = OperationMembers;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON patch operation object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut members = Map::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    if members.contains_key(&key) {
                        return Err(de::Error::custom(format!("member {key:?} is given twice")));
                    }
                    members.insert(key, value);
                }
                Ok(OperationMembers(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

/// One decoded RFC 6902 operation.
enum Operation {
    Add { path: Pointer, value: Value },
    Remove { path: Pointer },
    Replace { path: Pointer, value: Value },
    Move { from: Pointer, path: Pointer },
    Copy { from: Pointer, path: Pointer },
    Test { path: Pointer, value: Value },
}

impl Operation {
    /// Decodes one operation object; members other than `op`, `path`, `from` and `value` are
    /// ignored (RFC 6902 §4).
    fn decode(mut members: Map<String, Value>) -> Result<Operation, String> {
        let op = match members.get("op") {
            Some(Value::String(op)) => op.clone(),
            Some(other) => return Err(format!("\"op\" must be a string, got {other}")),
            None => return Err("missing \"op\"".to_string()),
        };
        let path = pointer_member(&members, "path")?;
        Ok(match op.as_str() {
            "add" => Operation::Add {
                path,
                value: value_member(&mut members)?,
            },
            "remove" => Operation::Remove { path },
            "replace" => Operation::Replace {
                path,
                value: value_member(&mut members)?,
            },
            "move" => Operation::Move {
                from: pointer_member(&members, "from")?,
                path,
            },
            "copy" => Operation::Copy {
                from: pointer_member(&members, "from")?,
                path,
            },
            "test" => Operation::Test {
                path,
                value: value_member(&mut members)?,
            },
            unknown => {
                return Err(format!(
                    "unknown op {unknown:?}; expected add, remove, replace, move, copy or test"
                ));
            }
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Operation::Add { .. } => "add",
            Operation::Remove { .. } => "remove",
            Operation::Replace { .. } => "replace",
            Operation::Move { .. } => "move",
            Operation::Copy { .. } => "copy",
            Operation::Test { .. } => "test",
        }
    }

    fn path(&self) -> &Pointer {
        match self {
            Operation::Add { path, .. }
            | Operation::Remove { path }
            | Operation::Replace { path, .. }
            | Operation::Move { path, .. }
            | Operation::Copy { path, .. }
            | Operation::Test { path, .. } => path,
        }
    }

    fn apply_to(self, document: &mut Value) -> Result<(), String> {
        match self {
            Operation::Add { path, value } => add(document, &path, value),
            Operation::Remove { path } => remove(document, &path).map(drop),
            Operation::Replace { path, value } => {
                *get_mut(document, &path.tokens)? = value;
                Ok(())
            }
            Operation::Move { from, path } => {
                if from.tokens == path.tokens {
                    return Ok(());
                }
                if path.tokens.starts_with(&from.tokens) {
                    return Err(format!(
                        "cannot move {:?} into one of its own children",
                        from.text
                    ));
                }
                let value = remove(document, &from)?;
                add(document, &path, value)
            }
            Operation::Copy { from, path } => {
                let value = get(document, &from.tokens)?.clone();
                add(document, &path, value)
            }
            Operation::Test { path, value } => {
                let actual = get(document, &path.tokens)?;
                if json_equal(actual, &value) {
                    Ok(())
                } else {
                    Err(format!("test failed: the value is {actual}, not {value}"))
                }
            }
        }
    }
}

fn pointer_member(members: &Map<String, Value>, name: &str) -> Result<Pointer, String> {
    match members.get(name) {
        Some(Value::String(text)) => Pointer::parse(text),
        Some(other) => Err(format!("{name:?} must be a string, got {other}")),
        None => Err(format!("missing {name:?}")),
    }
}

fn value_member(members: &mut Map<String, Value>) -> Result<Value, String> {
    members
        .remove("value")
        .ok_or_else(|| "missing \"value\"".to_string())
}

/// An RFC 6901 JSON pointer: the text as sent and its unescaped reference tokens.
struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    fn parse(text: &str) -> Result<Pointer, String> {
        let tokens = if text.is_empty() {
            Vec::new()
        } else {
            let Some(rest) = text.strip_prefix('/') else {
                return Err(format!(
                    "JSON pointer {text:?} must be empty or start with '/'"
                ));
            };
            rest.split('/')
                .map(unescape_token)
                .collect::<Result<_, _>>()?
        };
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }
}

/// `~1` → `/` and `~0` → `~`, in one pass so that `~01` becomes `~1`, not `/`.
fn unescape_token(token: &str) -> Result<String, String> {
    let mut unescaped = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            unescaped.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => unescaped.push('~'),
            Some('1') => unescaped.push('/'),
            _ => {
                return Err(format!(
                    "JSON pointer token {token:?} has a '~' not followed by '0' or '1'"
                ));
            }
        }
    }
    Ok(unescaped)
}

/// An array index token: `0` or digits without a leading zero. `-` (past the end) is only
/// meaningful to `add`, which handles it before calling this.
fn array_index(token: &str) -> Result<usize, String> {
    let digits_only = !token.is_empty() && token.bytes().all(|byte| byte.is_ascii_digit());
    if !digits_only || (token.len() > 1 && token.starts_with('0')) {
        return Err(format!("{token:?} is not an array index"));
    }
    token
        .parse()
        .map_err(|_| format!("array index {token} is too large"))
}

fn get<'d>(document: &'d Value, tokens: &[String]) -> Result<&'d Value, String> {
    let mut current = document;
    for token in tokens {
        current = match current {
            Value::Object(members) => members
                .get(token)
                .ok_or_else(|| format!("member {token:?} does not exist"))?,
            Value::Array(items) => {
                let index = array_index(token)?;
                let length = items.len();
                items
                    .get(index)
                    .ok_or_else(|| out_of_range(index, length))?
            }
            scalar => return Err(not_a_container(token, scalar)),
        };
    }
    Ok(current)
}

fn get_mut<'d>(document: &'d mut Value, tokens: &[String]) -> Result<&'d mut Value, String> {
    let mut current = document;
    for token in tokens {
        current = match current {
            Value::Object(members) => members
                .get_mut(token)
                .ok_or_else(|| format!("member {token:?} does not exist"))?,
            Value::Array(items) => {
                let index = array_index(token)?;
                let length = items.len();
                items
                    .get_mut(index)
                    .ok_or_else(|| out_of_range(index, length))?
            }
            scalar => return Err(not_a_container(token, scalar)),
        };
    }
    Ok(current)
}

fn add(document: &mut Value, path: &Pointer, value: Value) -> Result<(), String> {
    let Some((last, parent)) = path.tokens.split_last() else {
        *document = value;
        return Ok(());
    };
    match get_mut(document, parent)? {
        Value::Object(members) => {
            members.insert(last.clone(), value);
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                array_index(last)?
            };
            if index > items.len() {
                return Err(out_of_range(index, items.len()));
            }
            items.insert(index, value);
        }
        scalar => return Err(not_a_container(last, scalar)),
    }
    Ok(())
}

fn remove(document: &mut Value, path: &Pointer) -> Result<Value, String> {
    let Some((last, parent)) = path.tokens.split_last() else {
        return Err("cannot remove the whole document".to_string());
    };
    match get_mut(document, parent)? {
        Value::Object(members) => members
            .remove(last)
            .ok_or_else(|| format!("member {last:?} does not exist")),
        Value::Array(items) => {
            let index = array_index(last)?;
            if index >= items.len() {
                return Err(out_of_range(index, items.len()));
            }
            Ok(items.remove(index))
        }
        scalar => Err(not_a_container(last, scalar)),
    }
}

fn out_of_range(index: usize, length: usize) -> String {
    format!("index {index} is out of range for an array of {length} elements")
}

fn not_a_container(token: &str, value: &Value) -> String {
    format!(
        "cannot refer to {token:?} inside {}, which is not an object or array",
        type_name(value)
    )
}

/// JSON equality as RFC 6902 `test` defines it: numbers compare by value (`1` equals `1.0`),
/// objects regardless of member order.
fn json_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => {
            if let (Some(left), Some(right)) = (left.as_i64(), right.as_i64()) {
                left == right
            } else if let (Some(left), Some(right)) = (left.as_u64(), right.as_u64()) {
                left == right
            } else {
                left.as_f64() == right.as_f64()
            }
        }
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .zip(right)
                    .all(|(left, right)| json_equal(left, right))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .all(|(key, left)| right.get(key).is_some_and(|right| json_equal(left, right)))
        }
        (left, right) => left == right,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// Patch strategies of the served kinds

/// How a strategic merge patch treats one field, transcribed from the `patchStrategy` and
/// `patchMergeKey` struct tags in k8s.io/api. A field without tags ([`PatchStrategy::REPLACE`])
/// merges like a JSON merge patch: maps merge key by key, lists are replaced wholesale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchStrategy {
    /// `patchStrategy` contains `merge`: the list merges with the live one instead of replacing
    /// it — element by element on [`Self::merge_key`], or as a set for lists of primitives.
    pub merge: bool,
    /// `patchMergeKey`: the member naming an element of a merged list of objects.
    pub merge_key: Option<&'static str>,
    /// `patchStrategy` contains `retainKeys`: clients send `$retainKeys` with this field (or with
    /// each element of this list) to clear the members of a union they no longer set. The merge
    /// honours `$retainKeys` wherever it appears, as upstream does; this records the tag.
    pub retain_keys: bool,
}

impl PatchStrategy {
    /// No tag.
    pub const REPLACE: PatchStrategy = PatchStrategy {
        merge: false,
        merge_key: None,
        retain_keys: false,
    };
    /// `patchStrategy:"merge"` on a list of primitives: the lists are unioned.
    pub const MERGE_PRIMITIVES: PatchStrategy = PatchStrategy {
        merge: true,
        ..PatchStrategy::REPLACE
    };
    /// `patchStrategy:"retainKeys"` on a struct.
    pub const RETAIN_KEYS: PatchStrategy = PatchStrategy {
        retain_keys: true,
        ..PatchStrategy::REPLACE
    };

    /// `patchStrategy:"merge" patchMergeKey:"<key>"`.
    pub const fn merge_by(key: &'static str) -> PatchStrategy {
        PatchStrategy {
            merge: true,
            merge_key: Some(key),
            retain_keys: false,
        }
    }

    /// `patchStrategy:"merge,retainKeys" patchMergeKey:"<key>"`.
    pub const fn merge_by_retaining_keys(key: &'static str) -> PatchStrategy {
        PatchStrategy {
            retain_keys: true,
            ..PatchStrategy::merge_by(key)
        }
    }
}

/// Kinds whose patch strategies [`patch_strategy`] knows; a strategic merge patch of any other
/// kind is refused like upstream refuses one on a custom resource.
pub const STRATEGIC_MERGE_KINDS: &[&str] = &[
    "Pod",
    "Service",
    "Endpoints",
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "Event",
    "Namespace",
    "Node",
    "EndpointSlice",
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "Lease",
];

/// The patch strategy of the field at `path` in an object of `kind`. `path` lists the map keys
/// from the object root; list elements are transparent, so the ports of a Deployment's
/// containers are `["spec", "template", "spec", "containers", "ports"]`.
pub fn patch_strategy(kind: &str, path: &[&str]) -> PatchStrategy {
    const POD_TEMPLATE_OWNERS: [&str; 3] = ["Deployment", "ReplicaSet", "DaemonSet"];
    let owns_pod_template = POD_TEMPLATE_OWNERS.contains(&kind);
    match (kind, path) {
        (_, ["metadata", field @ ..]) => object_meta(field),
        ("Pod", ["spec", field @ ..]) => pod_spec(field),
        ("Pod", ["status", field @ ..]) => pod_status(field),
        (_, ["spec", "template", "metadata", field @ ..]) if owns_pod_template => {
            object_meta(field)
        }
        (_, ["spec", "template", "spec", field @ ..]) if owns_pod_template => pod_spec(field),
        // DeploymentSpec.strategy
        ("Deployment", ["spec", "strategy"]) => PatchStrategy::RETAIN_KEYS,
        // {Deployment,ReplicaSet,DaemonSet,Namespace}Status.conditions
        (_, ["status", "conditions"]) if owns_pod_template || kind == "Namespace" => {
            PatchStrategy::merge_by("type")
        }
        ("Service", ["spec", "ports"]) => PatchStrategy::merge_by("port"),
        ("Service", ["status", "conditions"]) => PatchStrategy::merge_by("type"),
        ("ServiceAccount", ["secrets"]) => PatchStrategy::merge_by("name"),
        ("Node", ["spec", "podCIDRs"]) => PatchStrategy::MERGE_PRIMITIVES,
        ("Node", ["status", "conditions" | "addresses"]) => PatchStrategy::merge_by("type"),
        _ => PatchStrategy::REPLACE,
    }
}

/// meta/v1 ObjectMeta.
fn object_meta(field: &[&str]) -> PatchStrategy {
    match field {
        ["finalizers"] => PatchStrategy::MERGE_PRIMITIVES,
        ["ownerReferences"] => PatchStrategy::merge_by("uid"),
        _ => PatchStrategy::REPLACE,
    }
}

/// core/v1 PodSpec, in a Pod or a pod template.
fn pod_spec(field: &[&str]) -> PatchStrategy {
    match field {
        ["volumes" | "resourceClaims"] => PatchStrategy::merge_by_retaining_keys("name"),
        ["containers" | "initContainers" | "ephemeralContainers"] => {
            PatchStrategy::merge_by("name")
        }
        [
            "containers" | "initContainers" | "ephemeralContainers",
            container_field @ ..,
        ] => container(container_field),
        ["imagePullSecrets" | "schedulingGates"] => PatchStrategy::merge_by("name"),
        ["hostAliases"] => PatchStrategy::merge_by("ip"),
        // Upstream's merge key is topologyKey alone (the list-map keys add whenUnsatisfiable,
        // but those only matter to server-side apply).
        ["topologySpreadConstraints"] => PatchStrategy::merge_by("topologyKey"),
        _ => PatchStrategy::REPLACE,
    }
}

/// core/v1 Container and EphemeralContainerCommon.
fn container(field: &[&str]) -> PatchStrategy {
    match field {
        ["ports"] => PatchStrategy::merge_by("containerPort"),
        ["env"] => PatchStrategy::merge_by("name"),
        ["volumeMounts"] => PatchStrategy::merge_by("mountPath"),
        ["volumeDevices"] => PatchStrategy::merge_by("devicePath"),
        _ => PatchStrategy::REPLACE,
    }
}

/// core/v1 PodStatus.
fn pod_status(field: &[&str]) -> PatchStrategy {
    match field {
        ["conditions"] => PatchStrategy::merge_by("type"),
        ["podIPs" | "hostIPs"] => PatchStrategy::merge_by("ip"),
        ["resourceClaimStatuses"] => PatchStrategy::merge_by_retaining_keys("name"),
        _ => PatchStrategy::REPLACE,
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch

/// `$patch: replace | merge | delete`, in a map or as a list element.
const PATCH_DIRECTIVE: &str = "$patch";
/// `$retainKeys: [field, …]`: after merging, the map keeps only these fields.
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
/// `$deleteFromPrimitiveList/<field>: [value, …]`.
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList/";
/// `$setElementOrder/<field>: [merge key or value, …]`.
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder/";

fn strategic_merge_patch(kind: &str, original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    if !STRATEGIC_MERGE_KINDS.contains(&kind) {
        return Err(PatchError::UnsupportedKind {
            kind: kind.to_string(),
        });
    }
    let patch = parse_object(PatchType::StrategicMerge, body)?;
    let strategic = StrategicMerge { kind };
    match strategic.merge_map(&mut Vec::new(), original.as_object(), &patch)? {
        Merged::Map(merged) => Ok(Value::Object(merged)),
        Merged::Deleted => {
            Err(strategic.unmergeable(&[], "$patch: delete cannot delete the whole object"))
        }
    }
}

/// The outcome of merging a patch map.
enum Merged {
    Map(Map<String, Value>),
    /// The patch map said `$patch: delete`.
    Deleted,
}

/// What a `$patch` member of a map asks for.
enum MapDirective {
    Merge,
    Replace,
    Delete,
}

/// A `$setElementOrder/<field>` directive, resolved against the live list before merging.
struct ElementOrder<'p> {
    field: &'p str,
    merge_key: Option<&'static str>,
    /// Identities (merge-key values, or the values of a primitive list) in the wanted order.
    wanted: Vec<&'p Value>,
    /// Identities of the live list's elements, in live order.
    live: Vec<Value>,
}

/// A strategic merge of a patch into an object of one kind. Every value the patch contributes
/// goes through the merge — into an empty map or list when the object has nothing there — so
/// directives never reach the result.
struct StrategicMerge<'k> {
    kind: &'k str,
}

impl StrategicMerge<'_> {
    fn merge_map<'p>(
        &self,
        path: &mut Vec<&'p str>,
        original: Option<&Map<String, Value>>,
        patch: &'p Map<String, Value>,
    ) -> Result<Merged, PatchError> {
        let base = match self.map_directive(path, patch)? {
            MapDirective::Delete => return Ok(Merged::Deleted),
            MapDirective::Replace => Map::new(),
            MapDirective::Merge => original.cloned().unwrap_or_default(),
        };
        self.merge_fields(path, base, patch).map(Merged::Map)
    }

    fn map_directive(
        &self,
        path: &[&str],
        patch: &Map<String, Value>,
    ) -> Result<MapDirective, PatchError> {
        match patch.get(PATCH_DIRECTIVE) {
            None => Ok(MapDirective::Merge),
            Some(Value::String(directive)) if directive == "merge" => Ok(MapDirective::Merge),
            Some(Value::String(directive)) if directive == "replace" => Ok(MapDirective::Replace),
            Some(Value::String(directive)) if directive == "delete" => Ok(MapDirective::Delete),
            Some(other) => Err(self.unmergeable(
                path,
                &format!("unknown $patch directive {other}; expected \"replace\", \"merge\" or \"delete\""),
            )),
        }
    }

    /// Merges the members of `patch` into `merged`, in this order: `$retainKeys` prunes the
    /// live fields, `$deleteFromPrimitiveList` removes values, the fields merge, and finally
    /// `$setElementOrder` reorders the merged lists. Unknown `$` members are ignored, as upstream
    /// ignores directives it does not recognise.
    fn merge_fields<'p>(
        &self,
        path: &mut Vec<&'p str>,
        mut merged: Map<String, Value>,
        patch: &'p Map<String, Value>,
    ) -> Result<Map<String, Value>, PatchError> {
        let orders = self.element_orders(path, &merged, patch)?;
        if let Some(retained) = patch.get(RETAIN_KEYS_DIRECTIVE) {
            retain_keys(path, &mut merged, retained, patch)?;
        }
        for (key, doomed) in patch {
            if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
                let Value::Array(doomed) = doomed else {
                    return Err(malformed_strategic(&format!(
                        "{key} at {} must be a list, got {}",
                        display_path(path),
                        type_name(doomed)
                    )));
                };
                if let Some(Value::Array(items)) = merged.get_mut(field) {
                    items.retain(|item| !doomed.iter().any(|value| json_equal(value, item)));
                }
            }
        }
        for (key, value) in patch {
            if key.starts_with('$') {
                continue;
            }
            if value.is_null() {
                merged.remove(key);
                continue;
            }
            path.push(key);
            let field = self.merge_value(path, merged.get(key), value);
            path.pop();
            match field? {
                Some(field) => merged.insert(key.clone(), field),
                None => merged.remove(key),
            };
        }
        for order in orders {
            if let Some(Value::Array(items)) = merged.get_mut(order.field) {
                *items = order.apply(std::mem::take(items));
            }
        }
        Ok(merged)
    }

    /// Merges one patch value into the live one; `None` when the field is to be removed.
    fn merge_value<'p>(
        &self,
        path: &mut Vec<&'p str>,
        original: Option<&Value>,
        patch: &'p Value,
    ) -> Result<Option<Value>, PatchError> {
        match patch {
            Value::Object(patch) => {
                let original = original.and_then(Value::as_object);
                Ok(match self.merge_map(path, original, patch)? {
                    Merged::Map(merged) => Some(Value::Object(merged)),
                    Merged::Deleted => None,
                })
            }
            Value::Array(patch) => {
                let original = original
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let strategy = patch_strategy(self.kind, path);
                let merged = match (strategy.merge, strategy.merge_key) {
                    (true, Some(merge_key)) => {
                        self.merge_keyed_list(path, original, patch, merge_key)?
                    }
                    (true, None) => union(original, patch),
                    (false, _) => self.replace_list(path, patch)?,
                };
                Ok(Some(Value::Array(merged)))
            }
            scalar => Ok(Some(scalar.clone())),
        }
    }

    /// A list of objects merged on `merge_key`: `$patch: delete` elements remove every live
    /// element with their key, the others merge into the live element with their key or are
    /// appended; a `{"$patch": "replace"}` element makes the patch list the whole new list.
    fn merge_keyed_list<'p>(
        &self,
        path: &mut Vec<&'p str>,
        original: &[Value],
        patch: &'p [Value],
        merge_key: &str,
    ) -> Result<Vec<Value>, PatchError> {
        if patch
            .iter()
            .any(|item| list_directive(item) == Some("replace"))
        {
            return self.replace_list(path, patch);
        }
        let mut merged = original.to_vec();
        let mut updates = Vec::with_capacity(patch.len());
        for item in patch {
            let Value::Object(fields) = item else {
                return Err(self.unmergeable(
                    path,
                    &format!("{item} is not an object, but the list merges objects by their {merge_key:?}"),
                ));
            };
            match list_directive(item) {
                None => updates.push(fields),
                Some("merge") if fields.len() == 1 => {}
                Some("merge") => updates.push(fields),
                Some("delete") => {
                    let key = self.merge_key_of(path, fields, merge_key)?;
                    merged.retain(|live| !has_key(live, merge_key, key));
                }
                Some(_) => {
                    return Err(self.unmergeable(
                        path,
                        &format!("unknown $patch directive in list element {item}; expected \"replace\", \"merge\" or \"delete\""),
                    ));
                }
            }
        }
        for fields in updates {
            let key = self.merge_key_of(path, fields, merge_key)?;
            match merged.iter().position(|live| has_key(live, merge_key, key)) {
                Some(index) => match self.merge_map(path, merged[index].as_object(), fields)? {
                    Merged::Map(element) => merged[index] = Value::Object(element),
                    Merged::Deleted => {
                        merged.remove(index);
                    }
                },
                None => {
                    if let Merged::Map(element) = self.merge_map(path, None, fields)? {
                        merged.push(Value::Object(element));
                    }
                }
            }
        }
        Ok(merged)
    }

    /// The patch list as the whole new list, without directive elements and with the directives
    /// inside its objects applied (to nothing).
    fn replace_list<'p>(
        &self,
        path: &mut Vec<&'p str>,
        patch: &'p [Value],
    ) -> Result<Vec<Value>, PatchError> {
        let mut items = Vec::with_capacity(patch.len());
        for item in patch {
            match item {
                Value::Object(fields) if fields.contains_key(PATCH_DIRECTIVE) => {}
                Value::Object(fields) => {
                    if let Merged::Map(element) = self.merge_map(path, None, fields)? {
                        items.push(Value::Object(element));
                    }
                }
                other => items.push(other.clone()),
            }
        }
        Ok(items)
    }

    fn merge_key_of<'f>(
        &self,
        path: &[&str],
        fields: &'f Map<String, Value>,
        merge_key: &str,
    ) -> Result<&'f Value, PatchError> {
        fields.get(merge_key).ok_or_else(|| {
            self.unmergeable(
                path,
                &format!(
                    "list element {} does not contain its merge key {merge_key:?}",
                    Value::Object(fields.clone())
                ),
            )
        })
    }

    /// Reads the `$setElementOrder/<field>` members of `patch` against the live map, and checks
    /// them against the patch lists: every element the patch list sets must be named, in the
    /// same relative order.
    fn element_orders<'p>(
        &self,
        path: &mut Vec<&'p str>,
        live: &Map<String, Value>,
        patch: &'p Map<String, Value>,
    ) -> Result<Vec<ElementOrder<'p>>, PatchError> {
        let mut orders = Vec::new();
        for (key, wanted) in patch {
            let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER_PREFIX) else {
                continue;
            };
            let Value::Array(wanted) = wanted else {
                return Err(malformed_strategic(&format!(
                    "{key} at {} must be a list, got {}",
                    display_path(path),
                    type_name(wanted)
                )));
            };
            path.push(field);
            let merge_key = patch_strategy(self.kind, path).merge_key;
            path.pop();
            let wanted = wanted
                .iter()
                .map(|item| {
                    identity(item, merge_key).ok_or_else(|| {
                        malformed_strategic(&format!(
                            "{key} at {}: element {item} lacks the merge key {:?}",
                            display_path(path),
                            merge_key.unwrap_or_default()
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let live = live
                .get(field)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| identity(item, merge_key).cloned())
                        .collect()
                })
                .unwrap_or_default();
            let order = ElementOrder {
                field,
                merge_key,
                wanted,
                live,
            };
            if let Some(Value::Array(items)) = patch.get(field) {
                order.check_patch_list(path, items)?;
            }
            orders.push(order);
        }
        Ok(orders)
    }

    fn unmergeable(&self, path: &[&str], reason: &str) -> PatchError {
        PatchError::Unmergeable {
            path: if path.is_empty() {
                self.kind.to_string()
            } else {
                format!("{} {}", self.kind, path.join("."))
            },
            reason: reason.to_string(),
        }
    }
}

impl ElementOrder<'_> {
    fn check_patch_list(&self, path: &[&str], items: &[Value]) -> Result<(), PatchError> {
        let mut previous = None;
        for item in items {
            if list_directive(item).is_some() {
                continue;
            }
            // An element without its merge key is reported by the merge itself.
            let Some(id) = identity(item, self.merge_key) else {
                continue;
            };
            let Some(position) = position_of(&self.wanted, id) else {
                return Err(malformed_strategic(&format!(
                    "at {}: element {id} of {} is missing from {SET_ELEMENT_ORDER_PREFIX}{}",
                    display_path(path),
                    self.field,
                    self.field
                )));
            };
            if previous.is_some_and(|previous| position < previous) {
                return Err(malformed_strategic(&format!(
                    "at {}: the order of {} in the patch contradicts {SET_ELEMENT_ORDER_PREFIX}{}",
                    display_path(path),
                    self.field,
                    self.field
                )));
            }
            previous = Some(position);
        }
        Ok(())
    }

    /// Orders the merged list: elements named by the directive follow the directive's order;
    /// the others (live-only elements) keep their live order; the two sequences interleave by
    /// live position, a named element going first when either is not live.
    fn apply(&self, items: Vec<Value>) -> Vec<Value> {
        let wanted_position = |item: &Value| {
            identity(item, self.merge_key).and_then(|id| position_of(&self.wanted, id))
        };
        let live_position = |item: &Value| {
            identity(item, self.merge_key)
                .and_then(|id| self.live.iter().position(|live| json_equal(live, id)))
        };
        let (mut named, unnamed): (Vec<Value>, Vec<Value>) = items
            .into_iter()
            .partition(|item| wanted_position(item).is_some());
        named.sort_by_key(|item| wanted_position(item));

        let mut ordered = Vec::with_capacity(named.len() + unnamed.len());
        let mut named = named.into_iter().peekable();
        let mut unnamed = unnamed.into_iter().peekable();
        loop {
            let take_named = match (named.peek(), unnamed.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(next_named), Some(next_unnamed)) => {
                    match (live_position(next_named), live_position(next_unnamed)) {
                        (Some(named_at), Some(unnamed_at)) => named_at < unnamed_at,
                        _ => true,
                    }
                }
            };
            ordered.extend(if take_named {
                named.next()
            } else {
                unnamed.next()
            });
        }
        ordered
    }
}

/// `$retainKeys`: every field the patch sets must be listed, and live fields not listed go.
fn retain_keys(
    path: &[&str],
    merged: &mut Map<String, Value>,
    retained: &Value,
    patch: &Map<String, Value>,
) -> Result<(), PatchError> {
    let not_a_list = || {
        malformed_strategic(&format!(
            "{RETAIN_KEYS_DIRECTIVE} at {} must be a list of field names, got {retained}",
            display_path(path)
        ))
    };
    let Value::Array(names) = retained else {
        return Err(not_a_list());
    };
    let names = names
        .iter()
        .map(|name| name.as_str().ok_or_else(not_a_list))
        .collect::<Result<Vec<_>, _>>()?;
    let unlisted = patch.iter().find(|(key, value)| {
        !key.starts_with('$') && !value.is_null() && !names.contains(&key.as_str())
    });
    if let Some((key, _)) = unlisted {
        return Err(malformed_strategic(&format!(
            "the patch sets {key:?} at {} but {RETAIN_KEYS_DIRECTIVE} does not list it",
            display_path(path)
        )));
    }
    merged.retain(|key, _| names.contains(&key.as_str()));
    Ok(())
}

/// The value of `$patch` when `item` is an object carrying one.
fn list_directive(item: &Value) -> Option<&str> {
    item.get(PATCH_DIRECTIVE)
        .map(|directive| directive.as_str().unwrap_or_default())
}

/// What names a list element: its merge-key value, or itself in a list of primitives.
fn identity<'v>(item: &'v Value, merge_key: Option<&str>) -> Option<&'v Value> {
    match merge_key {
        Some(merge_key) => item.get(merge_key),
        None => Some(item),
    }
}

fn position_of(ids: &[&Value], id: &Value) -> Option<usize> {
    ids.iter().position(|candidate| json_equal(candidate, id))
}

fn has_key(item: &Value, merge_key: &str, key: &Value) -> bool {
    item.get(merge_key)
        .is_some_and(|value| json_equal(value, key))
}

/// A list of primitives with strategy `merge`: live values first, then the new ones, each once.
fn union(original: &[Value], patch: &[Value]) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for item in original.iter().chain(patch) {
        if !merged.iter().any(|present| json_equal(present, item)) {
            merged.push(item.clone());
        }
    }
    merged
}

fn malformed_strategic(reason: &str) -> PatchError {
    PatchError::Malformed {
        patch_type: PatchType::StrategicMerge,
        reason: reason.to_string(),
    }
}

fn display_path(path: &[&str]) -> String {
    if path.is_empty() {
        "the object root".to_string()
    } else {
        path.join(".")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn patched(patch_type: PatchType, kind: &str, original: &Value, patch: &Value) -> Value {
        apply(patch_type, kind, original, patch.to_string().as_bytes()).unwrap()
    }

    fn patch_error(patch_type: PatchType, kind: &str, original: &Value, patch: &str) -> PatchError {
        apply(patch_type, kind, original, patch.as_bytes()).unwrap_err()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "x", "namespace": "default", "labels": {"app": "x", "tier": "web"}},
            "spec": {
                "replicas": 2,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
                },
                "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "nginx:1",
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
                            },
                            {"name": "sidecar", "image": "envoy:1"}
                        ],
                        "tolerations": [{"key": "a", "operator": "Exists"}]
                    }
                }
            }
        })
    }

    fn containers(object: &Value) -> &Value {
        &object["spec"]["template"]["spec"]["containers"]
    }

    fn container_names(object: &Value) -> Vec<&str> {
        containers(object)
            .as_array()
            .unwrap()
            .iter()
            .map(|container| container["name"].as_str().unwrap())
            .collect()
    }

    // --- Content types and status codes ---

    #[test]
    fn content_type_names_the_patch_type_ignoring_parameters_and_case() {
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("Application/Strategic-Merge-Patch+JSON"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            None
        );
    }

    #[test]
    fn each_error_maps_to_the_status_upstream_answers_with() {
        let original = json!({"a": 1});
        let malformed = patch_error(PatchType::Merge, "Pod", &original, "{");
        assert_eq!(http_status(&malformed), 400);
        let failed_test = patch_error(
            PatchType::Json,
            "Pod",
            &original,
            r#"[{"op":"test","path":"/a","value":2}]"#,
        );
        assert_eq!(http_status(&failed_test), 422);
        let custom = patch_error(PatchType::StrategicMerge, "Widget", &original, "{}");
        assert_eq!(http_status(&custom), 415);
        let no_merge_key = patch_error(
            PatchType::StrategicMerge,
            "Pod",
            &json!({"spec": {"containers": []}}),
            r#"{"spec":{"containers":[{"image":"nginx"}]}}"#,
        );
        assert_eq!(http_status(&no_merge_key), 500);
    }

    // --- JSON merge patch (RFC 7386) ---

    #[test]
    fn merge_patch_follows_rfc7386_appendix_a() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(
                merge_patch(target.clone(), &patch),
                expected,
                "{target} + {patch}"
            );
        }
    }

    #[test]
    fn merge_patch_applies_rfc7386_section_3_example() {
        let original = json!({
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged"
        });
        let patch = json!({
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null},
            "tags": ["example"]
        });
        assert_eq!(
            patched(PatchType::Merge, "ConfigMap", &original, &patch),
            json!({
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "content": "This will be unchanged",
                "phoneNumber": "+01-123-456-7890"
            })
        );
    }

    #[test]
    fn merge_patch_replaces_lists_even_of_strategic_kinds() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}});
        let result = patched(PatchType::Merge, "Deployment", &deployment(), &patch);
        assert_eq!(
            containers(&result),
            &json!([{"name": "app", "image": "nginx:2"}])
        );
    }

    #[test]
    fn merge_patch_that_is_not_an_object_is_malformed() {
        for body in ["null", "[1]", "\"x\"", "not json", ""] {
            let error = patch_error(PatchType::Merge, "Pod", &json!({}), body);
            assert!(
                matches!(error, PatchError::Malformed { .. }),
                "{body}: {error}"
            );
        }
    }

    // --- JSON patch (RFC 6902) ---

    fn json_patched(original: Value, operations: Value) -> Value {
        patched(PatchType::Json, "ConfigMap", &original, &operations)
    }

    fn json_patch_error(original: Value, operations: &str) -> PatchError {
        patch_error(PatchType::Json, "ConfigMap", &original, operations)
    }

    #[test]
    fn json_patch_follows_rfc6902_appendix_a_examples_that_succeed() {
        let cases = [
            // A.1 adding an object member
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux"}]),
                json!({"baz": "qux", "foo": "bar"}),
            ),
            // A.2 adding an array element
            (
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}]),
                json!({"foo": ["bar", "qux", "baz"]}),
            ),
            // A.3 removing an object member
            (
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "remove", "path": "/baz"}]),
                json!({"foo": "bar"}),
            ),
            // A.4 removing an array element
            (
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "remove", "path": "/foo/1"}]),
                json!({"foo": ["bar", "baz"]}),
            ),
            // A.5 replacing a value
            (
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
                json!({"baz": "boo", "foo": "bar"}),
            ),
            // A.6 moving a value
            (
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
                json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
            ),
            // A.7 moving an array element
            (
                json!({"foo": ["all", "grass", "cows", "eat"]}),
                json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
                json!({"foo": ["all", "cows", "eat", "grass"]}),
            ),
            // A.8 testing a value: success
            (
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([
                    {"op": "test", "path": "/baz", "value": "qux"},
                    {"op": "test", "path": "/foo/1", "value": 2}
                ]),
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
            ),
            // A.10 adding a nested member object
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]),
                json!({"foo": "bar", "child": {"grandchild": {}}}),
            ),
            // A.11 ignoring unrecognized elements
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}]),
                json!({"foo": "bar", "baz": "qux"}),
            ),
            // A.14 ~ escape ordering
            (
                json!({"/": 9, "~1": 10}),
                json!([{"op": "test", "path": "/~01", "value": 10}]),
                json!({"/": 9, "~1": 10}),
            ),
            // A.16 adding an array value
            (
                json!({"foo": ["bar"]}),
                json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]),
                json!({"foo": ["bar", ["abc", "def"]]}),
            ),
        ];
        for (original, operations, expected) in cases {
            assert_eq!(
                json_patched(original, operations.clone()),
                expected,
                "{operations}"
            );
        }
    }

    #[test]
    fn json_patch_failing_test_is_unprocessable() {
        // A.9
        let error = json_patch_error(
            json!({"baz": "qux"}),
            r#"[{"op": "test", "path": "/baz", "value": "bar"}]"#,
        );
        let PatchError::OperationFailed {
            index, op, path, ..
        } = &error
        else {
            panic!("expected OperationFailed, got {error}");
        };
        assert_eq!((*index, *op, path.as_str()), (0, "test", "/baz"));
    }

    #[test]
    fn json_patch_adding_under_a_missing_member_is_unprocessable() {
        // A.12
        let error = json_patch_error(
            json!({"foo": "bar"}),
            r#"[{"op": "add", "path": "/baz/bat", "value": "qux"}]"#,
        );
        assert!(
            matches!(error, PatchError::OperationFailed { .. }),
            "{error}"
        );
    }

    #[test]
    fn json_patch_operation_with_a_member_given_twice_is_malformed() {
        // A.13
        let error = json_patch_error(
            json!({"foo": "bar"}),
            r#"[{"op": "add", "path": "/baz", "value": "qux", "op": "remove"}]"#,
        );
        assert!(matches!(error, PatchError::Malformed { .. }), "{error}");
    }

    #[test]
    fn json_patch_test_does_not_equate_strings_and_numbers() {
        // A.15
        let error = json_patch_error(
            json!({"/": 9, "~1": 10}),
            r#"[{"op": "test", "path": "/~01", "value": "10"}]"#,
        );
        assert!(
            matches!(error, PatchError::OperationFailed { .. }),
            "{error}"
        );
    }

    #[test]
    fn json_patch_test_compares_numbers_by_value_and_objects_by_members() {
        let original = json!({"n": 1, "o": {"a": 1, "b": [1, 2]}});
        let operations = json!([
            {"op": "test", "path": "/n", "value": 1.0},
            {"op": "test", "path": "/o", "value": {"b": [1, 2], "a": 1}}
        ]);
        assert_eq!(json_patched(original.clone(), operations), original);
    }

    #[test]
    fn json_patch_is_all_or_nothing() {
        let original = json!({"metadata": {"labels": {"a": "1"}}});
        let error = json_patch_error(
            original.clone(),
            r#"[
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "test", "path": "/metadata/labels/b", "value": "3"}
            ]"#,
        );
        let PatchError::OperationFailed { index, .. } = error else {
            panic!("expected OperationFailed, got {error}");
        };
        assert_eq!(index, 2);
        assert_eq!(original, json!({"metadata": {"labels": {"a": "1"}}}));
    }

    #[test]
    fn json_patch_is_decoded_whole_before_anything_applies() {
        let error = json_patch_error(
            json!({"a": 1}),
            r#"[{"op": "remove", "path": "/a"}, {"op": "frobnicate", "path": "/a"}]"#,
        );
        let PatchError::Malformed { reason, .. } = error else {
            panic!("expected Malformed, got {error}");
        };
        assert!(reason.contains("operations[1]"), "{reason}");
    }

    #[test]
    fn json_patch_rejects_malformed_documents() {
        let bodies = [
            "{}",
            "not json",
            r#"[{"path": "/a"}]"#,
            r#"[{"op": "add", "path": "/a"}]"#,
            r#"[{"op": "move", "path": "/a"}]"#,
            r#"[{"op": "add", "path": "a", "value": 1}]"#,
            r#"[{"op": "add", "path": "/a~2", "value": 1}]"#,
            r#"[{"op": 1, "path": "/a"}]"#,
        ];
        for body in bodies {
            let error = json_patch_error(json!({"a": 1}), body);
            assert!(
                matches!(error, PatchError::Malformed { .. }),
                "{body}: {error}"
            );
        }
    }

    #[test]
    fn json_patch_rejects_bad_array_indices() {
        let original = json!({"list": [1, 2]});
        let bodies = [
            r#"[{"op": "add", "path": "/list/3", "value": 0}]"#,
            r#"[{"op": "add", "path": "/list/01", "value": 0}]"#,
            r#"[{"op": "replace", "path": "/list/-", "value": 0}]"#,
            r#"[{"op": "remove", "path": "/list/2"}]"#,
            r#"[{"op": "remove", "path": "/missing"}]"#,
            r#"[{"op": "replace", "path": "/missing", "value": 0}]"#,
            r#"[{"op": "move", "from": "/list", "path": "/list/0"}]"#,
        ];
        for body in bodies {
            let error = json_patch_error(original.clone(), body);
            assert!(
                matches!(error, PatchError::OperationFailed { .. }),
                "{body}: {error}"
            );
        }
    }

    #[test]
    fn json_patch_edits_kubernetes_objects() {
        let result = patched(
            PatchType::Json,
            "Deployment",
            &deployment(),
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 5},
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/example.com~1owner", "value": "me"},
                {"op": "copy", "from": "/spec/template/spec/containers/0/image", "path": "/metadata/labels/image"},
                {"op": "remove", "path": "/spec/template/spec/containers/1"}
            ]),
        );
        assert_eq!(result["spec"]["replicas"], 5);
        assert_eq!(
            result["metadata"]["annotations"],
            json!({"example.com/owner": "me"})
        );
        assert_eq!(result["metadata"]["labels"]["image"], "nginx:1");
        assert_eq!(container_names(&result), ["app"]);
    }

    // --- Strategic merge patch ---

    fn strategic(kind: &str, original: &Value, patch: &Value) -> Value {
        patched(PatchType::StrategicMerge, kind, original, patch)
    }

    fn strategic_error(kind: &str, original: &Value, patch: &Value) -> PatchError {
        patch_error(
            PatchType::StrategicMerge,
            kind,
            original,
            &patch.to_string(),
        )
    }

    #[test]
    fn kubectl_patch_of_one_container_image_keeps_the_other_containers() {
        // kubectl patch deployment x -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:2"}]}}}}'
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}});
        let result = strategic("Deployment", &deployment(), &patch);

        let mut expected = deployment();
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert_eq!(result, expected);
    }

    #[test]
    fn new_container_is_appended() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "debug", "image": "busybox"}]}}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(container_names(&result), ["app", "sidecar", "debug"]);
    }

    #[test]
    fn patch_delete_in_a_list_element_removes_that_container() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete", "name": "sidecar"}]}}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(container_names(&result), ["app"]);
    }

    #[test]
    fn patch_replace_in_a_list_replaces_the_whole_list() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "only", "image": "busybox"},
            {"$patch": "replace"}
        ]}}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            containers(&result),
            &json!([{"name": "only", "image": "busybox"}])
        );
    }

    #[test]
    fn patch_replace_in_a_map_replaces_the_whole_map() {
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "new": "yes"}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(result["metadata"]["labels"], json!({"new": "yes"}));
    }

    #[test]
    fn patch_delete_in_a_map_deletes_it() {
        let patch = json!({"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(result["spec"]["strategy"], json!({"type": "RollingUpdate"}));
    }

    #[test]
    fn set_element_order_reorders_containers() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]
        }}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(container_names(&result), ["sidecar", "app"]);
        assert_eq!(containers(&result)[1]["image"], "nginx:1");
    }

    #[test]
    fn set_element_order_keeps_live_only_elements_at_their_live_position() {
        let original = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}, {"name": "e"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "d"}, {"name": "c"}, {"name": "a"}, {"name": "new"}],
            "containers": [{"name": "c", "image": "x"}, {"name": "new", "image": "y"}]
        }});
        let result = strategic("Pod", &original, &patch);
        let names: Vec<&str> = result["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|container| container["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "d", "c", "a", "new", "e"]);
        assert_eq!(
            result["spec"]["containers"][2],
            json!({"name": "c", "image": "x"})
        );
    }

    #[test]
    fn set_element_order_that_omits_a_patched_element_is_malformed() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"name": "sidecar", "image": "envoy:2"}]
        }}}});
        let error = strategic_error("Deployment", &deployment(), &patch);
        assert!(matches!(error, PatchError::Malformed { .. }), "{error}");
    }

    #[test]
    fn finalizers_are_unioned() {
        let original = json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}});
        let patch = json!({"metadata": {"finalizers": ["b", "c"]}});
        let result = strategic("Pod", &original, &patch);
        assert_eq!(result["metadata"]["finalizers"], json!(["a", "b", "c"]));
    }

    #[test]
    fn delete_from_primitive_list_removes_finalizers() {
        let original = json!({"metadata": {"name": "p", "finalizers": ["a", "b", "c"]}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "c"]}});
        let result = strategic("Pod", &original, &patch);
        assert_eq!(
            result["metadata"],
            json!({"name": "p", "finalizers": ["a"]})
        );
    }

    #[test]
    fn set_element_order_reorders_a_primitive_list() {
        let original = json!({"metadata": {"name": "p", "finalizers": ["a", "b", "c"]}});
        let patch = json!({"metadata": {"$setElementOrder/finalizers": ["b", "c", "a"]}});
        let result = strategic("Pod", &original, &patch);
        assert_eq!(result["metadata"]["finalizers"], json!(["b", "c", "a"]));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let original = json!({"metadata": {"name": "s"}, "spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}
        ]}});
        let patch = json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}, {"name": "metrics", "port": 9090}]}});
        let result = strategic("Service", &original, &patch);
        assert_eq!(
            result["spec"]["ports"],
            json!([
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 9443, "protocol": "TCP"},
                {"name": "metrics", "port": 9090}
            ])
        );
    }

    #[test]
    fn retain_keys_switching_to_recreate_drops_rolling_update() {
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn retain_keys_that_omits_a_patched_field_is_malformed() {
        let patch = json!({"spec": {"strategy": {
            "$retainKeys": ["type"],
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1}
        }}});
        let error = strategic_error("Deployment", &deployment(), &patch);
        assert!(matches!(error, PatchError::Malformed { .. }), "{error}");
    }

    #[test]
    fn label_set_to_null_is_deleted() {
        let patch = json!({"metadata": {"labels": {"tier": null, "missing": null}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(result["metadata"]["labels"], json!({"app": "x"}));
    }

    #[test]
    fn lists_without_a_strategy_are_replaced() {
        let patch = json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            result["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
    }

    #[test]
    fn env_merges_by_name_inside_a_merged_container() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "app",
            "$setElementOrder/env": [{"name": "C"}, {"name": "A"}, {"name": "B"}],
            "env": [{"name": "C", "value": "3"}, {"name": "A", "value": "one"}]
        }]}}}});
        let result = strategic("Deployment", &deployment(), &patch);
        assert_eq!(
            containers(&result)[0]["env"],
            json!([{"name": "C", "value": "3"}, {"name": "A", "value": "one"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            containers(&result)[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
    }

    #[test]
    fn directives_never_reach_the_result() {
        let original = json!({"metadata": {"name": "p"}, "spec": {}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{
                "name": "app",
                "$setElementOrder/env": [{"name": "A"}],
                "env": [{"name": "A", "value": "1"}, {"$patch": "delete", "name": "B"}],
                "resources": {"$patch": "replace", "limits": {"cpu": "1"}}
            }],
            "nodeSelector": {"$retainKeys": ["zone"], "zone": "a", "gone": null},
            "$someFutureDirective": true
        }});
        let result = strategic("Pod", &original, &patch);
        assert_eq!(
            result,
            json!({"metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "app", "env": [{"name": "A", "value": "1"}], "resources": {"limits": {"cpu": "1"}}}],
                "nodeSelector": {"zone": "a"}
            }})
        );
    }

    #[test]
    fn kubectl_apply_patch_updates_last_applied_and_keeps_order() {
        let last_applied = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{},"name":"x","namespace":"default"},"spec":{"template":{"spec":{"containers":[{"image":"nginx:2","name":"app"}]}}}}"#;
        let mut original = deployment();
        original["metadata"]["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "deployment.kubernetes.io/revision": "1"
        });
        // What kubectl apply sends after changing app's image and dropping the env var B.
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "A"}],
                    "env": [{"$patch": "delete", "name": "B"}],
                    "image": "nginx:2",
                    "name": "app"
                }]
            }}}
        });
        let result = strategic("Deployment", &original, &patch);

        let mut expected = original.clone();
        expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!(last_applied);
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        expected["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "A", "value": "1"}]);
        assert_eq!(result, expected);
    }

    #[test]
    fn owner_references_merge_by_uid_in_any_kind() {
        let original =
            json!({"metadata": {"name": "c", "ownerReferences": [{"uid": "1", "name": "a"}]}});
        let patch = json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}});
        let result = strategic("ConfigMap", &original, &patch);
        assert_eq!(
            result["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "a"}, {"uid": "2", "name": "b"}])
        );
    }

    #[test]
    fn node_conditions_merge_by_type() {
        let original = json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "MemoryPressure", "status": "False"}
        ]}});
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let result = strategic("Node", &original, &patch);
        assert_eq!(
            result["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}])
        );
    }

    #[test]
    fn strategic_patch_that_is_not_json_is_malformed() {
        let error = patch_error(
            PatchType::StrategicMerge,
            "Deployment",
            &deployment(),
            "spec: {}",
        );
        assert!(matches!(error, PatchError::Malformed { .. }), "{error}");
        let error = patch_error(PatchType::StrategicMerge, "Deployment", &deployment(), "[]");
        assert!(matches!(error, PatchError::Malformed { .. }), "{error}");
    }

    #[test]
    fn strategic_patch_of_an_unserved_kind_is_unsupported() {
        let error = strategic_error("Widget", &json!({}), &json!({"spec": {}}));
        assert!(
            matches!(error, PatchError::UnsupportedKind { .. }),
            "{error}"
        );
    }

    #[test]
    fn merged_list_element_without_its_merge_key_is_unmergeable() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:2"}]}}}});
        let error = strategic_error("Deployment", &deployment(), &patch);
        let PatchError::Unmergeable { path, .. } = &error else {
            panic!("expected Unmergeable, got {error}");
        };
        assert_eq!(path, "Deployment spec.template.spec.containers");
    }

    #[test]
    fn unknown_patch_directive_is_unmergeable() {
        let patch = json!({"metadata": {"labels": {"$patch": "frobnicate"}}});
        let error = strategic_error("Deployment", &deployment(), &patch);
        assert!(matches!(error, PatchError::Unmergeable { .. }), "{error}");
    }

    #[test]
    fn patch_strategy_follows_upstream_struct_tags() {
        let template_ports = ["spec", "template", "spec", "containers", "ports"];
        assert_eq!(
            patch_strategy("Deployment", &template_ports),
            PatchStrategy::merge_by("containerPort")
        );
        assert_eq!(
            patch_strategy("Pod", &["spec", "initContainers", "volumeMounts"]),
            PatchStrategy::merge_by("mountPath")
        );
        assert_eq!(
            patch_strategy("DaemonSet", &["spec", "template", "spec", "volumes"]),
            PatchStrategy::merge_by_retaining_keys("name")
        );
        assert_eq!(
            patch_strategy("Pod", &["spec", "tolerations"]),
            PatchStrategy::REPLACE
        );
        assert_eq!(
            patch_strategy("Node", &["spec", "taints"]),
            PatchStrategy::REPLACE
        );
        assert_eq!(
            patch_strategy("Pod", &["status", "containerStatuses"]),
            PatchStrategy::REPLACE
        );
        assert_eq!(
            patch_strategy("Deployment", &["spec", "strategy"]),
            PatchStrategy::RETAIN_KEYS
        );
        assert_eq!(
            patch_strategy("Lease", &["metadata", "finalizers"]),
            PatchStrategy::MERGE_PRIMITIVES
        );
        // Pod template paths exist only in the kinds that own a template.
        assert_eq!(
            patch_strategy("Service", &template_ports),
            PatchStrategy::REPLACE
        );
    }
}
