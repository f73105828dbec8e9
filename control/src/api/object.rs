//! Small accessors for the `metadata` of a Kubernetes object held as JSON, and the encoding of
//! objects into and out of the store (the store's `mod_revision` is the `resourceVersion`).
//!
//! Owns no policy: callers decide what to set.

use serde_json::{Map, Value, json};
use skiff_store::{KeyValue, Revision};

/// `metadata.name` (empty when absent).
pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn namespace(object: &Value) -> Option<&str> {
    object["metadata"]["namespace"].as_str()
}

pub fn uid(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or_default()
}

/// The object's `metadata` map, created if missing (or if `metadata` is not an object).
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    match object["metadata"].as_object_mut() {
        Some(metadata) => metadata,
        None => unreachable!("metadata was just made an object"),
    }
}

/// `metadata.finalizers` (empty when absent).
pub fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|finalizers| {
            finalizers
                .iter()
                .filter_map(|finalizer| finalizer.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn set_finalizers(object: &mut Value, finalizers: &[String]) {
    let metadata = metadata_mut(object);
    if finalizers.is_empty() {
        metadata.remove("finalizers");
    } else {
        metadata.insert("finalizers".into(), json!(finalizers));
    }
}

pub fn is_deleting(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

/// The uids of the object's owners.
pub fn owner_uids(object: &Value) -> Vec<String> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .map(|owners| {
            owners
                .iter()
                .filter_map(|owner| owner["uid"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Now, as upstream's `metav1.Time` serializes it (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    timestamp_rfc3339(jiff::Timestamp::now())
}

pub fn timestamp_rfc3339(timestamp: jiff::Timestamp) -> String {
    timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Random bytes from the kernel (zeros if it cannot provide them, which only weakens names).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let _ = getrandom::getrandom(&mut bytes);
    bytes
}

/// A random version-4 UUID, as upstream's object uids.
pub fn new_uid() -> String {
    let mut bytes: [u8; 16] = random_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Upstream's `generateName` suffix: 5 characters from an alphabet without vowels or
/// look-alikes.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<5>()
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
        .collect()
}

/// The bytes stored for `object` (without `resourceVersion`, which is the store's revision).
pub fn encode(object: &Value) -> Vec<u8> {
    let mut stored = object.clone();
    if let Some(metadata) = stored["metadata"].as_object_mut() {
        metadata.remove("resourceVersion");
    }
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// The object stored in `kv`, with `resourceVersion` set to `revision`.
pub fn decode(kv: &KeyValue, revision: Revision) -> Result<Value, String> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|error| format!("stored object {} is corrupt: {error}", kv.key))?;
    metadata_mut(&mut object).insert("resourceVersion".into(), json!(revision.to_string()));
    Ok(object)
}

/// `object` without `resourceVersion`, for "did anything change" comparisons.
pub fn without_resource_version(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(metadata) = copy["metadata"].as_object_mut() {
        metadata.remove("resourceVersion");
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_version_4_and_suffixes_use_the_alphabet() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(new_uid(), uid);
        let suffix = name_suffix();
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }

    #[test]
    fn stored_objects_carry_their_revision_as_resource_version() {
        let object = json!({"metadata": {"name": "a", "resourceVersion": "7"}});
        let kv = KeyValue {
            key: "/registry/pods/default/a".into(),
            value: encode(&object),
            create_revision: 9,
            mod_revision: 9,
        };
        assert!(!String::from_utf8_lossy(&kv.value).contains("resourceVersion"));
        let decoded = decode(&kv, 9).expect("valid");
        assert_eq!(decoded["metadata"]["resourceVersion"], "9");
        assert!(now_rfc3339().ends_with('Z'));
    }
}
