//! Observing one pod in the runtime: every sandbox and container instance labelled with its UID.
//!
//! Owns the CRI reads of a sync round (`ListPodSandbox`/`ListContainers` by the
//! `io.kubernetes.pod.uid` label, then `PodSandboxStatus`/`ContainerStatus` per object). Never
//! changes runtime state. Objects that vanish between the list and the status call are skipped.

use std::collections::HashMap;

use crate::{
    cri::{CriError, Runtime, api::ContainerFilter},
    pod::{
        labels::POD_UID_LABEL,
        observed::{ObservedContainer, ObservedPod, ObservedSandbox},
    },
};

/// What the runtime holds for the pod with `uid` (probe results are the prober's, added later).
pub(super) async fn observe_pod(runtime: &Runtime, uid: &str) -> Result<ObservedPod, CriError> {
    let selector = HashMap::from([(POD_UID_LABEL.to_owned(), uid.to_owned())]);
    let mut observed = ObservedPod::default();
    for sandbox in runtime.list_pod_sandboxes(selector.clone()).await? {
        if let Some(status) = runtime.pod_sandbox_status(&sandbox.id).await? {
            observed.sandboxes.push(ObservedSandbox::from_cri(&status));
        }
    }
    let filter = ContainerFilter {
        label_selector: selector,
        ..ContainerFilter::default()
    };
    for container in runtime.list_containers(filter).await? {
        if let Some(status) = runtime.container_status(&container.id).await? {
            observed.containers.push(ObservedContainer::from_cri(
                &container.pod_sandbox_id,
                &status,
            ));
        }
    }
    Ok(observed)
}
