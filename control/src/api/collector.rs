//! The collector: garbage collection through `ownerReferences` (background, foreground and
//! orphan propagation) and namespace deletion, driven by the registry's work queue.
//!
//! Owns finishing deletions the registry started: deleting or un-owning dependents, emptying a
//! terminating namespace, and then removing the `orphan`/`foregroundDeletion` finalizers or the
//! namespace's `kubernetes` finalizer. Work that cannot finish yet (dependents still
//! terminating) is retried with a growing delay. Never validates or decodes request bodies.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{Instrument as _, debug, info_span, warn};

use super::{
    errors::ApiResult,
    object,
    registry::{
        CollectorWork, DeleteOptions, Deleted, FINALIZER_FOREGROUND, FINALIZER_KUBERNETES,
        FINALIZER_ORPHAN, Part, Registry, WriteOptions,
    },
    resources::{self, RESOURCE_TYPES, ResourceType},
};

/// Kinds whose objects are not treated as owners: they are numerous and churn (a deleted pod
/// would otherwise cost a scan of its namespace), and in practice nothing names them in
/// `ownerReferences`. A dependent of one keeps its reference and is not collected.
pub const NEVER_OWNERS: &[&str] = &["Pod", "Event", "Lease", "Endpoints", "EndpointSlice"];

/// Runs the collector until the queue closes.
pub async fn run(registry: Arc<Registry>, mut queue: mpsc::UnboundedReceiver<CollectorWork>) {
    if let Err(error) = enqueue_unfinished(&registry).await {
        warn!(%error.message, "scanning for unfinished deletions failed");
    }
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = queue.try_recv() {
            batch.push(more);
        }
        let mut gone: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        for work in batch {
            match work {
                CollectorWork::OwnerGone { uid, namespace } => {
                    gone.entry(namespace).or_default().push(uid)
                }
                CollectorWork::Finalize {
                    kind,
                    namespace,
                    name,
                } => finalize_until_done(Arc::clone(&registry), kind, namespace, name),
            }
        }
        for (namespace, uids) in gone {
            if let Err(error) = orphaned(&registry, namespace.as_deref(), &uids).await {
                warn!(%error.message, ?namespace, "collecting dependents failed");
            }
        }
    }
}

/// Finds deletions a previous run did not finish.
async fn enqueue_unfinished(registry: &Registry) -> ApiResult<()> {
    for resource in RESOURCE_TYPES {
        for item in registry.all(resource, None).await? {
            let finalizers = object::finalizers(&item);
            let waits = finalizers.iter().any(|finalizer| {
                finalizer == FINALIZER_ORPHAN || finalizer == FINALIZER_FOREGROUND
            }) || resource.kind == "Namespace";
            if object::is_deleting(&item) && waits {
                registry.enqueue(CollectorWork::Finalize {
                    kind: resource.kind,
                    namespace: object::namespace(&item).map(str::to_owned),
                    name: object::name(&item).to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Finishes one deletion in its own task, retrying with a growing delay until done.
fn finalize_until_done(
    registry: Arc<Registry>,
    kind: &'static str,
    namespace: Option<String>,
    name: String,
) {
    let span = info_span!("finalize", kind, namespace = ?namespace, name);
    tokio::spawn(
        async move {
            for attempt in 0u32.. {
                match finalize(&registry, kind, namespace.as_deref(), &name).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(error) => warn!(%error.message, "finishing a deletion failed; retrying"),
                }
                tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(5))).await;
            }
        }
        .instrument(span),
    );
}

fn owned_by(item: &Value, uid: &str) -> bool {
    object::owner_uids(item).iter().any(|owner| owner == uid)
}

/// The types a dependent of an owner in `namespace` may have.
fn dependent_types(namespace: Option<&str>) -> impl Iterator<Item = &'static ResourceType> {
    let cluster_owner = namespace.is_none();
    RESOURCE_TYPES
        .iter()
        .filter(move |resource| resource.namespaced || cluster_owner)
}

/// Deletes dependents whose only owner is gone; drops the reference from the others.
async fn orphaned(registry: &Registry, namespace: Option<&str>, uids: &[String]) -> ApiResult<()> {
    if let Some(namespace) = namespace
        && let Some(namespaces) = resources::by_kind("Namespace")
    {
        match registry.get(namespaces, None, namespace).await {
            // Everything in a terminating namespace is being deleted anyway.
            Ok(found) if object::is_deleting(&found) => return Ok(()),
            Err(error) if error.code == axum::http::StatusCode::NOT_FOUND => return Ok(()),
            _ => {}
        }
    }
    for resource in dependent_types(namespace) {
        for item in registry.all(resource, namespace).await? {
            let owners = object::owner_uids(&item);
            let lost: Vec<&String> = uids.iter().filter(|uid| owners.contains(uid)).collect();
            if lost.is_empty() {
                continue;
            }
            let item_namespace = object::namespace(&item).map(str::to_owned);
            let name = object::name(&item).to_owned();
            if lost.len() == owners.len() {
                if object::is_deleting(&item) {
                    continue;
                }
                debug!(
                    resource = resource.plural,
                    name, "deleting a dependent whose owners are gone"
                );
                ignore_not_found(
                    registry
                        .delete(
                            resource,
                            item_namespace.as_deref(),
                            &name,
                            &DeleteOptions::default(),
                        )
                        .await
                        .map(|_| ()),
                )?;
            } else {
                let lost: Vec<String> = lost.into_iter().cloned().collect();
                ignore_not_found(
                    registry
                        .modify(
                            resource,
                            item_namespace.as_deref(),
                            &name,
                            Part::Internal,
                            WriteOptions::default(),
                            |object| {
                                remove_owner_references(object, &lost);
                                Ok(())
                            },
                        )
                        .await
                        .map(|_| ()),
                )?;
            }
        }
    }
    Ok(())
}

fn ignore_not_found(result: ApiResult<()>) -> ApiResult<()> {
    match result {
        Err(error) if error.code == axum::http::StatusCode::NOT_FOUND => Ok(()),
        other => other,
    }
}

fn remove_owner_references(item: &mut Value, uids: &[String]) {
    let Some(owners) = item["metadata"]["ownerReferences"].as_array_mut() else {
        return;
    };
    owners.retain(|owner| {
        !owner["uid"]
            .as_str()
            .is_some_and(|uid| uids.iter().any(|gone| gone == uid))
    });
    if owners.is_empty()
        && let Some(metadata) = item["metadata"].as_object_mut()
    {
        metadata.remove("ownerReferences");
    }
}

/// Works on one object marked for deletion; `Ok(true)` once nothing is left to do.
async fn finalize(
    registry: &Registry,
    kind: &'static str,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<bool> {
    let Some(resource) = resources::by_kind(kind) else {
        return Ok(true);
    };
    let owner = match registry.get(resource, namespace, name).await {
        Ok(owner) => owner,
        Err(error) if error.code == axum::http::StatusCode::NOT_FOUND => return Ok(true),
        Err(error) => return Err(error),
    };
    if !object::is_deleting(&owner) {
        return Ok(true);
    }
    if kind == "Namespace" {
        return empty_namespace(registry, resource, name).await;
    }
    let uid = object::uid(&owner).to_owned();
    let finalizers = object::finalizers(&owner);
    let scope = if resource.namespaced { namespace } else { None };
    if finalizers
        .iter()
        .any(|finalizer| finalizer == FINALIZER_ORPHAN)
    {
        for dependent_type in dependent_types(scope) {
            for item in registry.all(dependent_type, scope).await? {
                if owned_by(&item, &uid) {
                    let item_namespace = object::namespace(&item).map(str::to_owned);
                    let uids = [uid.clone()];
                    ignore_not_found(
                        registry
                            .modify(
                                dependent_type,
                                item_namespace.as_deref(),
                                object::name(&item),
                                Part::Internal,
                                WriteOptions::default(),
                                |object| {
                                    remove_owner_references(object, &uids);
                                    Ok(())
                                },
                            )
                            .await
                            .map(|_| ()),
                    )?;
                }
            }
        }
        remove_finalizer(registry, resource, namespace, name, FINALIZER_ORPHAN).await?;
        return Ok(true);
    }
    if finalizers
        .iter()
        .any(|finalizer| finalizer == FINALIZER_FOREGROUND)
    {
        let mut remaining = 0;
        for dependent_type in dependent_types(scope) {
            for item in registry.all(dependent_type, scope).await? {
                if !owned_by(&item, &uid) {
                    continue;
                }
                remaining += 1;
                if !object::is_deleting(&item) {
                    let item_namespace = object::namespace(&item).map(str::to_owned);
                    let options = DeleteOptions {
                        propagation_policy: Some("Foreground".into()),
                        ..DeleteOptions::default()
                    };
                    if let Ok(Deleted::Gone(_)) = registry
                        .delete(
                            dependent_type,
                            item_namespace.as_deref(),
                            object::name(&item),
                            &options,
                        )
                        .await
                    {
                        remaining -= 1;
                    }
                }
            }
        }
        if remaining > 0 {
            return Ok(false);
        }
        remove_finalizer(registry, resource, namespace, name, FINALIZER_FOREGROUND).await?;
    }
    Ok(true)
}

async fn remove_finalizer(
    registry: &Registry,
    resource: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    finalizer: &str,
) -> ApiResult<()> {
    ignore_not_found(
        registry
            .modify(
                resource,
                namespace,
                name,
                Part::Internal,
                WriteOptions::default(),
                |object| {
                    let mut finalizers = object::finalizers(object);
                    finalizers.retain(|existing| existing != finalizer);
                    object::set_finalizers(object, &finalizers);
                    Ok(())
                },
            )
            .await
            .map(|_| ()),
    )
}

/// Deletes everything in a terminating namespace, then lets the namespace go.
async fn empty_namespace(
    registry: &Registry,
    namespaces: &ResourceType,
    namespace: &str,
) -> ApiResult<bool> {
    let mut remaining = 0;
    for resource in RESOURCE_TYPES.iter().filter(|resource| resource.namespaced) {
        for item in registry.all(resource, Some(namespace)).await? {
            remaining += 1;
            if object::is_deleting(&item) {
                continue;
            }
            if let Ok(Deleted::Gone(_)) = registry
                .delete(
                    resource,
                    Some(namespace),
                    object::name(&item),
                    &DeleteOptions::default(),
                )
                .await
            {
                remaining -= 1;
            }
        }
    }
    if remaining > 0 {
        return Ok(false);
    }
    ignore_not_found(
        registry
            .modify(
                namespaces,
                None,
                namespace,
                Part::Internal,
                WriteOptions::default(),
                |object| {
                    if let Some(finalizers) = object["spec"]["finalizers"].as_array_mut() {
                        finalizers.retain(|finalizer| finalizer != FINALIZER_KUBERNETES);
                    }
                    if object["spec"]["finalizers"]
                        .as_array()
                        .is_some_and(Vec::is_empty)
                    {
                        object["spec"]["finalizers"] = json!([]);
                    }
                    Ok(())
                },
            )
            .await
            .map(|_| ()),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_references_are_removed_by_uid() {
        let mut item = json!({"metadata": {"ownerReferences": [{"uid": "a"}, {"uid": "b"}]}});
        remove_owner_references(&mut item, &["a".to_owned()]);
        assert_eq!(item["metadata"]["ownerReferences"], json!([{"uid": "b"}]));
        remove_owner_references(&mut item, &["b".to_owned()]);
        assert!(item["metadata"].get("ownerReferences").is_none());
        assert!(!owned_by(&item, "b"));
    }

    #[test]
    fn never_owner_kinds_exist() {
        for kind in NEVER_OWNERS {
            assert!(resources::by_kind(kind).is_some());
        }
    }
}
