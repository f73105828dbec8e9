//! The labels and annotations the kubelet puts on CRI sandboxes and containers.
//!
//! Owns upstream's `kuberuntime/labels.go` keys and values: the `io.kubernetes.pod.*` labels
//! that let the kubelet find a pod's sandboxes and containers again, and the
//! `io.kubernetes.container.*` annotations it reads back (restart count, spec hash, termination
//! message path). Never decides what a container runs.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::{pod_name, pod_namespace, pod_uid};

/// Label: the pod's name.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label: the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label: the pod's uid; the kubelet lists a pod's sandboxes and containers by it.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label: the container's name in the pod spec.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// Annotation: hash of the container spec fields whose change restarts the container.
pub const CONTAINER_HASH_ANNOTATION: &str = "io.kubernetes.container.hash";
/// Annotation: how many times this container was restarted before this instance.
pub const CONTAINER_RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
/// Annotation: `terminationMessagePath`.
pub const CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Annotation: `terminationMessagePolicy`.
pub const CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePolicy";
/// Annotation: the preStop handler as JSON.
pub const CONTAINER_PRE_STOP_HANDLER_ANNOTATION: &str = "io.kubernetes.container.preStopHandler";
/// Annotation: the container ports as JSON.
pub const CONTAINER_PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";
/// Annotation: the pod's `deletionGracePeriodSeconds` when the container was created.
pub const POD_DELETION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.deletionGracePeriod";
/// Annotation: the pod's `terminationGracePeriodSeconds`.
pub const POD_TERMINATION_GRACE_PERIOD_ANNOTATION: &str =
    "io.kubernetes.pod.terminationGracePeriod";

/// Pod annotation naming where a pod came from (`api`, `file`, `http`); upstream
/// `kubetypes.ConfigSourceAnnotationKey`.
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// Upstream `newPodLabels`: the pod's labels plus the three `io.kubernetes.pod.*` labels.
#[must_use]
pub fn sandbox_labels(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    insert_pod_identity(&mut labels, pod);
    labels
}

/// Upstream `newPodAnnotations`: the pod's annotations, unchanged.
#[must_use]
pub fn sandbox_annotations(pod: &Pod) -> HashMap<String, String> {
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Upstream `newContainerLabels`: the pod identity plus the container name (never the pod's
/// own labels).
#[must_use]
pub fn container_labels(pod: &Pod, container: &Container) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    insert_pod_identity(&mut labels, pod);
    labels.insert(CONTAINER_NAME_LABEL.to_owned(), container.name.clone());
    labels
}

/// Upstream `newContainerAnnotations`: hash, restart count, termination message path and
/// policy, grace periods, preStop handler and ports.
#[must_use]
pub fn container_annotations(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
) -> HashMap<String, String> {
    let mut annotations = HashMap::from([
        (
            CONTAINER_HASH_ANNOTATION.to_owned(),
            container_hash(container),
        ),
        (
            CONTAINER_RESTART_COUNT_ANNOTATION.to_owned(),
            restart_count.to_string(),
        ),
        (
            CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION.to_owned(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_default(),
        ),
        (
            CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION.to_owned(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_default(),
        ),
    ]);
    if let Some(grace) = pod.metadata.deletion_grace_period_seconds {
        annotations.insert(
            POD_DELETION_GRACE_PERIOD_ANNOTATION.to_owned(),
            grace.to_string(),
        );
    }
    if let Some(grace) = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.termination_grace_period_seconds)
    {
        annotations.insert(
            POD_TERMINATION_GRACE_PERIOD_ANNOTATION.to_owned(),
            grace.to_string(),
        );
    }
    if let Some(pre_stop) = container
        .lifecycle
        .as_ref()
        .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
        && let Ok(json) = serde_json::to_string(pre_stop)
    {
        annotations.insert(CONTAINER_PRE_STOP_HANDLER_ANNOTATION.to_owned(), json);
    }
    if let Some(ports) = container.ports.as_ref().filter(|ports| !ports.is_empty())
        && let Ok(json) = serde_json::to_string(ports)
    {
        annotations.insert(CONTAINER_PORTS_ANNOTATION.to_owned(), json);
    }
    annotations
}

/// The container spec hash stored in [`CONTAINER_HASH_ANNOTATION`]: FNV-1a (32 bit) over the
/// JSON of the fields upstream's `HashContainer` picks (`name` and `image`, the only mutable
/// container fields), in lowercase hex.
///
/// Upstream hashes Go's spew dump of that JSON, so the value differs from a real kubelet's;
/// it is only ever compared with hashes this module wrote.
#[must_use]
pub fn container_hash(container: &Container) -> String {
    let picked = serde_json::json!({
        "image": container.image.as_deref().unwrap_or_default(),
        "name": container.name,
    });
    let mut hash: u32 = 0x811c_9dc5;
    for byte in picked.to_string().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:x}")
}

fn insert_pod_identity(labels: &mut HashMap<String, String>, pod: &Pod) {
    labels.insert(POD_NAME_LABEL.to_owned(), pod_name(pod).to_owned());
    labels.insert(
        POD_NAMESPACE_LABEL.to_owned(),
        pod_namespace(pod).to_owned(),
    );
    labels.insert(POD_UID_LABEL.to_owned(), pod_uid(pod).to_owned());
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, Lifecycle, LifecycleHandler};

    use super::*;
    use crate::pod::testing::{container, pod};

    #[test]
    fn sandbox_labels_are_pod_labels_plus_pod_identity() {
        let mut p = pod(vec![container("app")]);
        p.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
        let labels = sandbox_labels(&p);
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.get(POD_NAME_LABEL).map(String::as_str), Some("web"));
        assert_eq!(
            labels.get(POD_NAMESPACE_LABEL).map(String::as_str),
            Some("default")
        );
        assert_eq!(labels.get(POD_UID_LABEL).map(String::as_str), Some("uid-1"));
    }

    #[test]
    fn container_labels_do_not_copy_pod_labels() {
        let mut p = pod(vec![container("app")]);
        p.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
        let labels = container_labels(&p, &container("app"));
        assert_eq!(labels.len(), 4);
        assert_eq!(
            labels.get(CONTAINER_NAME_LABEL).map(String::as_str),
            Some("app")
        );
        assert!(!labels.contains_key("app"));
    }

    #[test]
    fn container_annotations_carry_restart_count_hash_and_handlers() {
        let mut c = container("app");
        c.termination_message_path = Some("/dev/termination-log".to_owned());
        c.termination_message_policy = Some("File".to_owned());
        c.ports = Some(vec![ContainerPort {
            container_port: 80,
            ..ContainerPort::default()
        }]);
        c.lifecycle = Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sleep".to_owned(), "5".to_owned()]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        });
        let mut p = pod(vec![c.clone()]);
        if let Some(spec) = p.spec.as_mut() {
            spec.termination_grace_period_seconds = Some(30);
        }
        let annotations = container_annotations(&p, &c, 3);
        let get = |key: &str| annotations.get(key).map(String::as_str);
        assert_eq!(get(CONTAINER_RESTART_COUNT_ANNOTATION), Some("3"));
        assert_eq!(
            get(CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION),
            Some("/dev/termination-log")
        );
        assert_eq!(
            get(CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION),
            Some("File")
        );
        assert_eq!(get(POD_TERMINATION_GRACE_PERIOD_ANNOTATION), Some("30"));
        assert_eq!(get(POD_DELETION_GRACE_PERIOD_ANNOTATION), None);
        assert_eq!(
            get(CONTAINER_PRE_STOP_HANDLER_ANNOTATION),
            Some(r#"{"exec":{"command":["sleep","5"]}}"#)
        );
        assert_eq!(
            get(CONTAINER_PORTS_ANNOTATION),
            Some(r#"[{"containerPort":80}]"#)
        );
        assert_eq!(
            get(CONTAINER_HASH_ANNOTATION).map(str::to_owned),
            Some(container_hash(&c))
        );
    }

    #[test]
    fn container_hash_changes_with_image_only() {
        let a = container("app");
        let mut b = a.clone();
        b.args = Some(vec!["--verbose".to_owned()]);
        assert_eq!(container_hash(&a), container_hash(&b));
        b.image = Some("busybox:1.37".to_owned());
        assert_ne!(container_hash(&a), container_hash(&b));
    }
}
