//! The pod workers' API calls: the status patch, the final delete and the objects a
//! container config reads (ConfigMaps, Secrets, Services).
//!
//! Owns one request per function (the client comes from [`crate::api_client`]). Never decides when to
//! call them (that is the pod worker) and never writes anything but `pods/<name>/status` and the
//! final `DELETE` with `gracePeriodSeconds=0`.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Secret, Service};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions},
};
use tracing::warn;

use crate::pod::{env::ObjectStore, pod_name, pod_namespace, pod_uid};

/// Merge-patches `status` into `pods/<name>/status`.
pub(super) async fn patch_status(
    client: &kube::Client,
    pod: &Pod,
    status: &PodStatus,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), pod_namespace(pod));
    let patch = status_patch(pod.status.as_ref(), status);
    pods.patch_status(
        pod_name(pod),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// The merge patch that makes the API's `status` (`current`) read `new`: `new`'s fields, and
/// `null` for every top-level field `current` has and `new` does not (a merge patch keeps
/// fields it does not mention, so a stale `message` or `nominatedNodeName` would stay).
pub(super) fn status_patch(current: Option<&PodStatus>, new: &PodStatus) -> serde_json::Value {
    let mut status = serde_json::to_value(new).unwrap_or_default();
    let current = current
        .and_then(|current| serde_json::to_value(current).ok())
        .unwrap_or_default();
    if let (Some(fields), Some(current)) = (status.as_object_mut(), current.as_object()) {
        for key in current.keys() {
            fields.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": status })
}

/// Deletes the pod with `gracePeriodSeconds=0` (upstream's status manager does so once a
/// deleted pod's containers are gone), only if it still has this UID. A pod already gone is
/// deleted.
pub(super) async fn delete_terminated_pod(
    client: &kube::Client,
    pod: &Pod,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), pod_namespace(pod));
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(pod_uid(pod).to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(pod_name(pod), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// The ConfigMaps and Secrets the pod references (containers and volumes) and every Service,
/// for building container environments and volumes. Objects that cannot be fetched are left out (a required reference then fails
/// with upstream's "not found" message); a failing Service list is logged and leaves no
/// service links.
pub(super) async fn fetch_referenced_objects(client: &kube::Client, pod: &Pod) -> ObjectStore {
    let namespace = pod_namespace(pod);
    let (mut config_map_names, mut secret_names) = crate::pod::env::referenced_objects(pod);
    let (volume_config_maps, volume_secrets) = crate::pod::volume::referenced_objects(pod);
    config_map_names.extend(volume_config_maps);
    secret_names.extend(volume_secrets);
    let mut store = ObjectStore::default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in config_map_names {
        match config_maps.get_opt(&name).await {
            Ok(found) => store.config_maps.extend(found),
            Err(error) => warn!("getting ConfigMap {namespace}/{name}: {error}"),
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in secret_names {
        match secrets.get_opt(&name).await {
            Ok(found) => store.secrets.extend(found),
            Err(error) => warn!("getting Secret {namespace}/{name}: {error}"),
        }
    }
    let services: Api<Service> = Api::all(client.clone());
    match services.list(&ListParams::default()).await {
        Ok(list) => store.services = list.items,
        Err(error) => warn!("listing Services for service links: {error}"),
    }
    store
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;
    use serde_json::json;

    use super::status_patch;

    #[test]
    fn status_patch_sets_new_fields_and_nulls_fields_that_went_away() {
        let current = PodStatus {
            phase: Some("Pending".to_owned()),
            message: Some("old message".to_owned()),
            ..PodStatus::default()
        };
        let new = PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some("10.0.0.5".to_owned()),
            ..PodStatus::default()
        };

        let patch = status_patch(Some(&current), &new);

        assert_eq!(
            patch,
            json!({"status": {"phase": "Running", "podIP": "10.0.0.5", "message": null}})
        );
        assert_eq!(
            status_patch(None, &new),
            json!({"status": {"phase": "Running", "podIP": "10.0.0.5"}})
        );
    }
}
