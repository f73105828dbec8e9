//! Static pods: pods the kubelet reads from manifest files in `--pod-manifest-path` instead of
//! the API, and the mirror pods that show them in the API.
//!
//! Owns what upstream's file source and mirror client decide: decoding one manifest (YAML or
//! JSON, exactly one `v1` `Pod`), the identity of the static pod (`<name>-<nodeName>`, namespace
//! `default` when unset, a UID hashed from the manifest, the file and the node), its
//! `kubernetes.io/config.*` annotations, the toleration of every `NoExecute` taint, the API
//! server's defaults (a static pod never went through its defaulting), the mirror pod object
//! ([`mirror_pod`]) and which mirror pods to create or delete ([`plan_mirror_pods`]).
//!
//! Must not do I/O: file contents, paths, times and the Node's UID come in as arguments; the
//! executor (`worker::static_pods`) reads the directory and makes the API calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, Pod, PodSecurityContext, Probe, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize as _;

use super::image::PullPolicy;
use super::labels::CONFIG_SOURCE_ANNOTATION;
use super::{is_deleted, pod_name, pod_namespace};

/// Pod annotation: the static pod's hash, equal to its UID (upstream `ConfigHashAnnotationKey`).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Pod annotation: on a mirror pod, the hash of the static pod it mirrors (upstream
/// `ConfigMirrorAnnotationKey`). Pods with it are never run as ordinary pods.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Pod annotation: when the kubelet first saw the static pod (upstream
/// `ConfigFirstSeenAnnotationKey`, RFC 3339 with nanoseconds).
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// `kubernetes.io/config.source` of pods read from manifest files (upstream `kubetypes.FileSource`).
pub const FILE_SOURCE: &str = "file";

/// A manifest file that does not hold exactly one valid Pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Neither valid YAML nor JSON, or not a Pod's shape.
    #[error("static pod manifest {path}: cannot decode it: {message}")]
    Decode {
        /// The manifest file.
        path: String,
        /// The decoder's message.
        message: String,
    },
    /// Nothing but whitespace, comments or empty documents.
    #[error("static pod manifest {path}: the file holds no object")]
    Empty {
        /// The manifest file.
        path: String,
    },
    /// More than one YAML document.
    #[error(
        "static pod manifest {path}: the file holds {count} documents; a manifest holds exactly one Pod"
    )]
    MultipleDocuments {
        /// The manifest file.
        path: String,
        /// How many non-empty documents it holds.
        count: usize,
    },
    /// Some other kind, or a Pod of another apiVersion.
    #[error(
        "static pod manifest {path}: holds apiVersion {api_version:?} kind {kind:?}; only apiVersion \"v1\" kind \"Pod\" is run"
    )]
    NotAPod {
        /// The manifest file.
        path: String,
        /// The object's `apiVersion` (empty when unset).
        api_version: String,
        /// The object's `kind` (empty when unset).
        kind: String,
    },
    /// A Pod the kubelet cannot run.
    #[error("static pod manifest {path}: {field}: {message}")]
    Invalid {
        /// The manifest file.
        path: String,
        /// The offending field, e.g. `spec.containers[1].name`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Decodes a manifest file's `content` (YAML or JSON) into the one `v1` Pod it must hold.
///
/// # Errors
/// [`ManifestError`] naming `path` when the content is not exactly one decodable Pod.
pub fn decode_manifest(path: &Path, content: &[u8]) -> Result<Pod, ManifestError> {
    let file = path.display().to_string();
    let decode_error = |message: String| ManifestError::Decode {
        path: file.clone(),
        message,
    };
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_slice(content) {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|error| decode_error(error.to_string()))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let value = match documents.len() {
        0 => return Err(ManifestError::Empty { path: file }),
        1 => documents.remove(0),
        count => {
            return Err(ManifestError::MultipleDocuments { path: file, count });
        }
    };
    let value: serde_json::Value =
        serde_json::to_value(value).map_err(|error| decode_error(error.to_string()))?;
    let text = |field: &str| value[field].as_str().unwrap_or_default().to_owned();
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if api_version != "v1" || kind != "Pod" {
        return Err(ManifestError::NotAPod {
            path: file,
            api_version,
            kind,
        });
    }
    let mut pod: Pod =
        serde_json::from_value(value).map_err(|error| decode_error(error.to_string()))?;
    pod.status = None;
    validate(&pod).map_err(|(field, message)| ManifestError::Invalid {
        path: file,
        field,
        message: message.to_owned(),
    })?;
    Ok(pod)
}

/// The checks without which the kubelet could not run the pod or name it.
fn validate(pod: &Pod) -> Result<(), (String, &'static str)> {
    if pod_name(pod).is_empty() {
        return Err(("metadata.name".to_owned(), "Required value"));
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Err(("spec".to_owned(), "Required value"));
    };
    if spec.containers.is_empty() {
        return Err(("spec.containers".to_owned(), "Required value"));
    }
    let mut names = BTreeSet::new();
    let lists = [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ];
    for (list, containers) in lists {
        for (index, container) in containers.iter().enumerate() {
            let field = |name: &str| format!("{list}[{index}].{name}");
            if container.name.is_empty() {
                return Err((field("name"), "Required value"));
            }
            if !names.insert(container.name.as_str()) {
                return Err((field("name"), "Duplicate value"));
            }
            if container.image.as_deref().unwrap_or_default().is_empty() {
                return Err((field("image"), "Required value"));
            }
        }
    }
    Ok(())
}

/// Upstream's file source applied to a decoded `manifest` read from `path` on `node_name`: the
/// API server's defaults; a UID hashed from the defaulted manifest, the node and the file
/// (unless the manifest sets one), so it changes exactly when one of them does; name
/// `<name>-<node>`; namespace `default` when unset; `spec.nodeName`; annotations
/// `kubernetes.io/config.source: file` and `kubernetes.io/config.hash: <uid>`; a toleration of
/// every `NoExecute` taint. `kubernetes.io/config.seen` is set by [`record_first_seen`].
#[must_use]
pub fn static_pod(mut manifest: Pod, path: &Path, node_name: &str) -> Pod {
    apply_api_defaults(&mut manifest);
    let uid = match manifest.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => manifest_hash(&manifest, path, node_name),
    };
    let mut pod = manifest;
    let metadata = &mut pod.metadata;
    metadata.name = Some(format!(
        "{}-{}",
        metadata.name.as_deref().unwrap_or_default(),
        node_name.to_lowercase()
    ));
    if metadata.namespace.as_deref().unwrap_or_default().is_empty() {
        metadata.namespace = Some("default".to_owned());
    }
    metadata.uid = Some(uid.clone());
    let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), uid);
    annotations.insert(CONFIG_SOURCE_ANNOTATION.to_owned(), FILE_SOURCE.to_owned());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_owned());
    let tolerate_no_execute = Toleration {
        operator: Some("Exists".to_owned()),
        effect: Some("NoExecute".to_owned()),
        ..Toleration::default()
    };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.contains(&tolerate_no_execute) {
        tolerations.push(tolerate_no_execute);
    }
    pod
}

/// Sets `kubernetes.io/config.seen` to `seen` (the first time the kubelet saw this UID), in Go's
/// RFC 3339 with nanoseconds (trailing zeros of the fraction dropped), in UTC.
pub fn record_first_seen(pod: &mut Pod, seen: Timestamp) {
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_SEEN_ANNOTATION.to_owned(), seen.to_string());
}

/// A 128-bit FNV-1a hash of the defaulted manifest's canonical JSON, the node and the file, as
/// 32 hex digits (the shape of upstream's md5-based static pod UIDs).
fn manifest_hash(manifest: &Pod, path: &Path, node_name: &str) -> String {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let canonical = serde_json::to_vec(manifest).unwrap_or_default();
    let source = format!("host:{node_name}file:{}", path.display());
    let hash = canonical
        .iter()
        .chain(source.as_bytes())
        .fold(OFFSET_BASIS, |hash, byte| {
            (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
        });
    format!("{hash:032x}")
}

/// The defaults the API server gives every pod it stores (upstream `SetDefaults_PodSpec`,
/// `SetDefaults_Container` and friends), which a static pod never got.
pub fn apply_api_defaults(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_owned());
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".to_owned());
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.enable_service_links.get_or_insert(true);
    let host_network = spec.host_network == Some(true);
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(container, host_network);
    }
    for volume in spec.volumes.iter_mut().flatten() {
        let mut source = serde_json::to_value(&*volume).unwrap_or_default();
        if let Some(fields) = source.as_object_mut() {
            fields.remove("name");
            if fields.is_empty() {
                volume.empty_dir = Some(Default::default());
            }
        }
        if let Some(secret) = volume.secret.as_mut() {
            secret.default_mode.get_or_insert(0o644);
        }
        if let Some(config_map) = volume.config_map.as_mut() {
            config_map.default_mode.get_or_insert(0o644);
        }
        if let Some(downward_api) = volume.downward_api.as_mut() {
            downward_api.default_mode.get_or_insert(0o644);
        }
        if let Some(projected) = volume.projected.as_mut() {
            projected.default_mode.get_or_insert(0o644);
        }
        if let Some(host_path) = volume.host_path.as_mut() {
            host_path.type_.get_or_insert_with(String::new);
        }
    }
}

/// `SetDefaults_Container`: pull policy from the image's tag, termination message path and
/// policy, port protocols, probe and handler defaults, requests from limits.
fn default_container(container: &mut Container, host_network: bool) {
    if container.image_pull_policy.is_none() {
        let image = container.image.as_deref().unwrap_or_default();
        let policy = match PullPolicy::default_for_image(image) {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent | PullPolicy::Never => "IfNotPresent",
        };
        container.image_pull_policy = Some(policy.to_owned());
    }
    container
        .termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".to_owned());
    container
        .termination_message_policy
        .get_or_insert_with(|| "File".to_owned());
    for port in container.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
        if host_network && port.host_port.unwrap_or(0) == 0 {
            port.host_port = Some(port.container_port);
        }
    }
    for probe in [
        container.liveness_probe.as_mut(),
        container.readiness_probe.as_mut(),
        container.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    if let Some(lifecycle) = container.lifecycle.as_mut() {
        for handler in [lifecycle.post_start.as_mut(), lifecycle.pre_stop.as_mut()]
            .into_iter()
            .flatten()
        {
            default_http_get(handler.http_get.as_mut());
        }
    }
    for variable in container.env.iter_mut().flatten() {
        if let Some(field_ref) = variable
            .value_from
            .as_mut()
            .and_then(|source| source.field_ref.as_mut())
        {
            field_ref.api_version.get_or_insert_with(|| "v1".to_owned());
        }
    }
    let resources = container
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    if let Some(limits) = resources.limits.clone() {
        let requests = resources.requests.get_or_insert_with(BTreeMap::new);
        for (name, limit) in limits {
            requests.entry(name).or_insert(limit);
        }
    }
}

/// `SetDefaults_Probe`.
fn default_probe(probe: &mut Probe) {
    probe.timeout_seconds.get_or_insert(1);
    probe.period_seconds.get_or_insert(10);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    default_http_get(probe.http_get.as_mut());
}

/// `SetDefaults_HTTPGetAction`.
fn default_http_get(http_get: Option<&mut HTTPGetAction>) {
    if let Some(http_get) = http_get {
        http_get.path.get_or_insert_with(|| "/".to_owned());
        http_get.scheme.get_or_insert_with(|| "HTTP".to_owned());
    }
}

/// The value of annotation `key`, when set.
fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(key))
        .map(String::as_str)
}

/// `kubernetes.io/config.hash` of a static pod.
#[must_use]
pub fn config_hash(pod: &Pod) -> Option<&str> {
    annotation(pod, CONFIG_HASH_ANNOTATION)
}

/// Upstream `IsMirrorPod`: the pod carries `kubernetes.io/config.mirror`.
#[must_use]
pub fn is_mirror_pod(pod: &Pod) -> bool {
    annotation(pod, CONFIG_MIRROR_ANNOTATION).is_some()
}

/// Upstream `IsMirrorPodOf`: `mirror` has the static pod's name and namespace and mirrors its
/// current hash.
#[must_use]
pub fn is_mirror_pod_of(mirror: &Pod, static_pod: &Pod) -> bool {
    pod_name(mirror) == pod_name(static_pod)
        && pod_namespace(mirror) == pod_namespace(static_pod)
        && annotation(mirror, CONFIG_MIRROR_ANNOTATION).is_some_and(|hash| {
            config_hash(static_pod).is_some_and(|static_hash| static_hash == hash)
        })
}

/// Upstream `GetPodFullName`: `<name>_<namespace>`, unique among a node's pods.
#[must_use]
pub fn pod_full_name(pod: &Pod) -> String {
    format!("{}_{}", pod_name(pod), pod_namespace(pod))
}

/// The mirror pod of `static_pod` to create in the API: the same metadata and spec, annotation
/// `kubernetes.io/config.mirror: <hash>`, and the Node (`node_uid`) as its controlling owner.
/// No UID, resourceVersion or status: the API server assigns them.
#[must_use]
pub fn mirror_pod(static_pod: &Pod, node_uid: &str) -> Pod {
    let mut mirror = static_pod.clone();
    let hash = config_hash(static_pod).unwrap_or_default().to_owned();
    let node_name = static_pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.clone())
        .unwrap_or_default();
    let metadata = &mut mirror.metadata;
    metadata.uid = None;
    metadata.resource_version = None;
    metadata.creation_timestamp = None;
    metadata.deletion_timestamp = None;
    metadata.managed_fields = None;
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_MIRROR_ANNOTATION.to_owned(), hash);
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Node".to_owned(),
        name: node_name,
        uid: node_uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    mirror.status = None;
    mirror
}

/// One API call of the mirror pods' reconciliation.
#[derive(Debug, Clone, PartialEq)]
pub enum MirrorAction<'a> {
    /// Delete this mirror pod (grace period 0, only if it still has its UID).
    Delete(&'a Pod),
    /// Create the mirror pod of this static pod.
    Create(&'a Pod),
}

/// What upstream's static pod sync and `deleteOrphanedMirrorPods` do with the API's mirror
/// pods: every running static pod in `static_pods` gets exactly one live mirror pod with its
/// current hash (a deleted or stale one is deleted and created again); a mirror pod whose
/// static pod is gone is deleted, except for full names in `terminating` (static pods still
/// being stopped keep their mirror until they are gone). Deletes come before creates.
#[must_use]
pub fn plan_mirror_pods<'a>(
    static_pods: &[&'a Pod],
    terminating: &BTreeSet<String>,
    mirrors: &[&'a Pod],
) -> Vec<MirrorAction<'a>> {
    let mirrors_by_name: BTreeMap<String, &Pod> = mirrors
        .iter()
        .map(|mirror| (pod_full_name(mirror), *mirror))
        .collect();
    let wanted: BTreeSet<String> = static_pods.iter().map(|pod| pod_full_name(pod)).collect();
    let mut deletes = Vec::new();
    let mut creates = Vec::new();
    for static_pod in static_pods {
        match mirrors_by_name.get(&pod_full_name(static_pod)) {
            Some(mirror) if !is_deleted(mirror) && is_mirror_pod_of(mirror, static_pod) => {}
            Some(mirror) => {
                deletes.push(MirrorAction::Delete(mirror));
                creates.push(MirrorAction::Create(static_pod));
            }
            None => creates.push(MirrorAction::Create(static_pod)),
        }
    }
    for (full_name, mirror) in &mirrors_by_name {
        if !wanted.contains(full_name) && !terminating.contains(full_name) {
            deletes.push(MirrorAction::Delete(mirror));
        }
    }
    deletes.extend(creates);
    deletes
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::pod::is_static_pod;

    const YAML: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: main
    image: busybox:1.36
    command: [sh, -c, sleep 3600]
";

    fn path() -> PathBuf {
        PathBuf::from("/etc/kubernetes/manifests/web.yaml")
    }

    fn web_on(node: &str) -> Pod {
        static_pod(
            decode_manifest(&path(), YAML.as_bytes()).unwrap(),
            &path(),
            node,
        )
    }

    fn containers(pod: &Pod) -> &[Container] {
        &pod.spec.as_ref().unwrap().containers
    }

    #[test]
    fn static_pod_is_named_after_the_node_in_the_default_namespace() {
        let pod = web_on("Node-A");

        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-a"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("Node-A")
        );
    }

    #[test]
    fn a_namespace_set_in_the_manifest_is_kept() {
        let yaml = YAML.replace("  name: web\n", "  name: web\n  namespace: kube-system\n");
        let pod = static_pod(
            decode_manifest(&path(), yaml.as_bytes()).unwrap(),
            &path(),
            "n",
        );

        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
    }

    #[test]
    fn uid_is_stable_and_changes_with_content_node_or_file() {
        let uid = web_on("n").metadata.uid.unwrap();
        assert_eq!(uid.len(), 32);
        assert!(uid.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            web_on("n").metadata.uid.unwrap(),
            uid,
            "same input, same UID"
        );

        let reformatted = format!(
            "# a comment\n{}",
            YAML.replace(
                "[sh, -c, sleep 3600]",
                "\n    - sh\n    - -c\n    - sleep 3600"
            )
        );
        let same = static_pod(
            decode_manifest(&path(), reformatted.as_bytes()).unwrap(),
            &path(),
            "n",
        );
        assert_eq!(same.metadata.uid.unwrap(), uid, "formatting is not content");

        let changed = YAML.replace("sleep 3600", "sleep 60");
        let other = static_pod(
            decode_manifest(&path(), changed.as_bytes()).unwrap(),
            &path(),
            "n",
        );
        assert_ne!(other.metadata.uid.unwrap(), uid);
        assert_ne!(web_on("m").metadata.uid.unwrap(), uid);
        let moved = PathBuf::from("/etc/kubernetes/manifests/other.yaml");
        let elsewhere = static_pod(
            decode_manifest(&moved, YAML.as_bytes()).unwrap(),
            &moved,
            "n",
        );
        assert_ne!(elsewhere.metadata.uid.unwrap(), uid);
    }

    #[test]
    fn a_uid_set_in_the_manifest_is_kept() {
        let yaml = YAML.replace("  name: web\n", "  name: web\n  uid: fixed-uid\n");
        let pod = static_pod(
            decode_manifest(&path(), yaml.as_bytes()).unwrap(),
            &path(),
            "n",
        );

        assert_eq!(pod.metadata.uid.as_deref(), Some("fixed-uid"));
        assert_eq!(config_hash(&pod), Some("fixed-uid"));
    }

    #[test]
    fn annotations_say_file_source_hash_and_first_seen() {
        let mut pod = web_on("n");
        record_first_seen(&mut pod, Timestamp::from_second(1_700_000_000).unwrap());

        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[CONFIG_SOURCE_ANNOTATION], "file");
        assert_eq!(
            annotations[CONFIG_HASH_ANNOTATION],
            pod.metadata.uid.clone().unwrap()
        );
        assert_eq!(annotations[CONFIG_SEEN_ANNOTATION], "2023-11-14T22:13:20Z");
        record_first_seen(
            &mut pod,
            Timestamp::new(1_700_000_000, 120_000_000).unwrap(),
        );
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[CONFIG_SEEN_ANNOTATION],
            "2023-11-14T22:13:20.12Z"
        );
        assert!(is_static_pod(&pod));
        assert!(!is_mirror_pod(&pod));
    }

    #[test]
    fn every_no_execute_taint_is_tolerated_once() {
        let pod = web_on("n");
        let again = static_pod(pod.clone(), &path(), "n");

        let expected = vec![Toleration {
            operator: Some("Exists".to_owned()),
            effect: Some("NoExecute".to_owned()),
            ..Toleration::default()
        }];
        assert_eq!(
            pod.spec.as_ref().unwrap().tolerations,
            Some(expected.clone())
        );
        assert_eq!(again.spec.as_ref().unwrap().tolerations, Some(expected));
    }

    #[test]
    fn api_server_defaults_are_applied() {
        let pod = web_on("n");

        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.enable_service_links, Some(true));
        let container = &containers(&pod)[0];
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            container.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(
            container.termination_message_policy.as_deref(),
            Some("File")
        );
    }

    #[test]
    fn image_pull_policy_follows_the_tag_unless_set() {
        for (image, policy) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("registry.local:5000/busybox", "Always"),
            (
                "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "IfNotPresent",
            ),
        ] {
            let yaml = YAML.replace("busybox:1.36", image);
            let pod = static_pod(
                decode_manifest(&path(), yaml.as_bytes()).unwrap(),
                &path(),
                "n",
            );
            assert_eq!(
                containers(&pod)[0].image_pull_policy.as_deref(),
                Some(policy),
                "{image}"
            );
        }
        let yaml = YAML.replace(
            "    image: busybox:1.36\n",
            "    image: busybox\n    imagePullPolicy: Never\n",
        );
        let pod = static_pod(
            decode_manifest(&path(), yaml.as_bytes()).unwrap(),
            &path(),
            "n",
        );
        assert_eq!(
            containers(&pod)[0].image_pull_policy.as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn set_values_win_over_defaults_and_probes_get_theirs() {
        let manifest = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 3,
                "containers": [{
                    "name": "main", "image": "busybox:1.36",
                    "ports": [{"containerPort": 80}],
                    "livenessProbe": {"httpGet": {"port": 80}},
                }],
            },
        });
        let pod = static_pod(
            decode_manifest(&path(), manifest.to_string().as_bytes()).unwrap(),
            &path(),
            "n",
        );

        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(3));
        let container = &spec.containers[0];
        assert_eq!(
            container.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
        let probe = container.liveness_probe.as_ref().unwrap();
        assert_eq!(
            (
                probe.timeout_seconds,
                probe.period_seconds,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (Some(1), Some(10), Some(1), Some(3))
        );
        let http_get = probe.http_get.as_ref().unwrap();
        assert_eq!(http_get.path.as_deref(), Some("/"));
        assert_eq!(http_get.scheme.as_deref(), Some("HTTP"));
    }

    #[test]
    fn json_manifests_decode_like_yaml() {
        let manifest = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36",
                                     "command": ["sh", "-c", "sleep 3600"]}]},
        });
        let from_json = static_pod(
            decode_manifest(&path(), manifest.to_string().as_bytes()).unwrap(),
            &path(),
            "n",
        );

        assert_eq!(from_json, web_on("n"));
    }

    #[test]
    fn other_kinds_and_versions_are_rejected_naming_the_file() {
        let error = decode_manifest(
            &path(),
            b"apiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "static pod manifest /etc/kubernetes/manifests/web.yaml: holds apiVersion \"v1\" kind \"Service\"; only apiVersion \"v1\" kind \"Pod\" is run"
        );
        let error = decode_manifest(
            &path(),
            YAML.replace("apiVersion: v1", "apiVersion: v2").as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(error, ManifestError::NotAPod { .. }), "{error}");
    }

    #[test]
    fn multiple_documents_are_rejected() {
        let two = format!("{YAML}---\n{YAML}");
        let error = decode_manifest(&path(), two.as_bytes()).unwrap_err();

        assert_eq!(
            error,
            ManifestError::MultipleDocuments {
                path: path().display().to_string(),
                count: 2
            }
        );
        assert!(error.to_string().contains("web.yaml"));
        let trailing_separator = format!("{YAML}---\n");
        assert!(decode_manifest(&path(), trailing_separator.as_bytes()).is_ok());
    }

    #[test]
    fn broken_empty_and_invalid_manifests_are_rejected() {
        let broken = decode_manifest(&path(), b"apiVersion: v1\nkind: Pod\nspec: [\n").unwrap_err();
        assert!(matches!(broken, ManifestError::Decode { .. }), "{broken}");
        assert!(broken.to_string().starts_with(
            "static pod manifest /etc/kubernetes/manifests/web.yaml: cannot decode it"
        ));

        let wrong_shape = decode_manifest(
            &path(),
            b"apiVersion: v1\nkind: Pod\nspec: {containers: 3}\n",
        )
        .unwrap_err();
        assert!(
            matches!(wrong_shape, ManifestError::Decode { .. }),
            "{wrong_shape}"
        );

        assert!(matches!(
            decode_manifest(&path(), b"# nothing\n").unwrap_err(),
            ManifestError::Empty { .. }
        ));

        let nameless = decode_manifest(
            &path(),
            YAML.replace("  name: web\n", "  labels: {}\n").as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            nameless.to_string(),
            "static pod manifest /etc/kubernetes/manifests/web.yaml: metadata.name: Required value"
        );
        let imageless = decode_manifest(
            &path(),
            YAML.replace("    image: busybox:1.36\n", "").as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            imageless,
            ManifestError::Invalid {
                path: path().display().to_string(),
                field: "spec.containers[0].image".to_owned(),
                message: "Required value".to_owned(),
            }
        );
    }

    #[test]
    fn mirror_pod_mirrors_the_hash_and_is_owned_by_the_node() {
        let pod = web_on("node-a");

        let mirror = mirror_pod(&pod, "node-uid");

        assert_eq!(mirror.metadata.name, pod.metadata.name);
        assert_eq!(mirror.metadata.uid, None);
        assert_eq!(mirror.spec, pod.spec);
        assert!(is_mirror_pod(&mirror));
        assert!(is_mirror_pod_of(&mirror, &pod));
        let annotations = mirror.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations[CONFIG_MIRROR_ANNOTATION],
            pod.metadata.uid.clone().unwrap()
        );
        assert_eq!(annotations[CONFIG_SOURCE_ANNOTATION], "file");
        assert_eq!(
            mirror.metadata.owner_references,
            Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Node".to_owned(),
                name: "node-a".to_owned(),
                uid: "node-uid".to_owned(),
                controller: Some(true),
                block_owner_deletion: None,
            }])
        );
        let changed = static_pod(
            decode_manifest(&path(), YAML.replace("sleep 3600", "sleep 1").as_bytes()).unwrap(),
            &path(),
            "node-a",
        );
        assert!(
            !is_mirror_pod_of(&mirror, &changed),
            "a stale hash is not a mirror of it"
        );
    }

    /// The API's copy of a mirror pod: with a UID.
    fn stored(mut mirror: Pod, uid: &str) -> Pod {
        mirror.metadata.uid = Some(uid.to_owned());
        mirror
    }

    #[test]
    fn missing_mirror_pods_are_created_and_current_ones_kept() {
        let pod = web_on("n");
        let mirror = stored(mirror_pod(&pod, "node"), "m1");

        assert_eq!(
            plan_mirror_pods(&[&pod], &BTreeSet::new(), &[]),
            vec![MirrorAction::Create(&pod)]
        );
        assert_eq!(
            plan_mirror_pods(&[&pod], &BTreeSet::new(), &[&mirror]),
            vec![]
        );
    }

    #[test]
    fn deleted_or_stale_mirror_pods_are_replaced() {
        let pod = web_on("n");
        let mut deleted = stored(mirror_pod(&pod, "node"), "m1");
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let old = static_pod(
            decode_manifest(&path(), YAML.replace("sleep 3600", "sleep 1").as_bytes()).unwrap(),
            &path(),
            "n",
        );
        let stale = stored(mirror_pod(&old, "node"), "m2");

        for mirror in [&deleted, &stale] {
            assert_eq!(
                plan_mirror_pods(&[&pod], &BTreeSet::new(), &[mirror]),
                vec![MirrorAction::Delete(mirror), MirrorAction::Create(&pod)]
            );
        }
    }

    #[test]
    fn orphaned_mirror_pods_are_deleted_once_their_static_pod_terminated() {
        let pod = web_on("n");
        let mirror = stored(mirror_pod(&pod, "node"), "m1");

        let terminating = BTreeSet::from([pod_full_name(&pod)]);
        assert_eq!(plan_mirror_pods(&[], &terminating, &[&mirror]), vec![]);
        assert_eq!(
            plan_mirror_pods(&[], &BTreeSet::new(), &[&mirror]),
            vec![MirrorAction::Delete(&mirror)]
        );
    }
}
