//! Object semantics on the store: what create, update, patch, delete and list mean for a
//! Kubernetes object — decoding through its type, `fieldValidation`, metadata (uid,
//! creationTimestamp, generation, generateName), defaulting, validation, status/spec
//! separation, optimistic concurrency on `resourceVersion`, finalizers and graceful deletion,
//! ClusterIP/NodePort allocation, `dryRun`, and paging with `continue` tokens.
//!
//! Owns these rules; knows nothing about HTTP (handlers translate requests into these calls),
//! and nothing about how bytes are stored (the [`Store`] does).

use std::{collections::HashMap, sync::Arc};

use base64::Engine as _;
use serde_json::{Value, json};
use skiff_store::{Revision, Store, StoreError};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    allocator::{Allocator, FieldOrApiError, Holdings},
    defaulting,
    errors::{ApiError, ApiResult},
    field::FieldError,
    object,
    patch::{self, PatchType},
    resources::{self, ResourceType},
    selectors::{FieldSelector, LabelSelector},
    typed, validation,
};

/// How unknown fields in a request body are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(text: &str) -> ApiResult<FieldValidation> {
        match text {
            "Ignore" => Ok(FieldValidation::Ignore),
            "Warn" | "" => Ok(FieldValidation::Warn),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
            ))),
        }
    }
}

/// Options every write takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and default, never store.
    pub dry_run: bool,
    pub field_validation: FieldValidation,
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object (its status is kept when the type has a status subresource).
    Main,
    /// The `status` subresource: only `status` changes.
    Status,
    /// A server-internal change (binding, garbage collection): no validation.
    Internal,
}

/// The result of a write.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    /// `Warning` header texts (unknown fields under `fieldValidation=Warn`).
    pub warnings: Vec<String>,
}

/// Options of a delete (`DeleteOptions`).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    /// `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone; its last state.
    Gone(Value),
    /// The object is being deleted (finalizers or a grace period); its current state.
    Pending(Value),
}

/// List options.
#[derive(Debug, Default)]
pub struct ListOptions {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    /// 0: no limit.
    pub limit: usize,
    pub continue_token: Option<String>,
    /// An exact revision to read at (`resourceVersionMatch=Exact`).
    pub exact_revision: Option<Revision>,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

/// Work for the collector (garbage collection and namespace deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorWork {
    /// An object with this uid is gone: its dependents lose their owner.
    OwnerGone {
        uid: String,
        namespace: Option<String>,
    },
    /// An object waits for the collector to finish its deletion (foreground, orphan, namespace).
    Finalize {
        kind: &'static str,
        namespace: Option<String>,
        name: String,
    },
}

pub const FINALIZER_ORPHAN: &str = "orphan";
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
/// The namespace finalizer (in `spec.finalizers`) the collector removes once it is empty.
pub const FINALIZER_KUBERNETES: &str = "kubernetes";

/// Namespaces that may not be deleted (upstream's NamespaceLifecycle admission).
pub const IMMORTAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// Object semantics on a store.
pub struct Registry {
    pub store: Arc<dyn Store>,
    pub allocator: Allocator,
    collector: mpsc::UnboundedSender<CollectorWork>,
}

/// A write lost a compare-and-swap race.
enum UpdateError {
    Conflict,
    Api(ApiError),
}

impl From<ApiError> for UpdateError {
    fn from(error: ApiError) -> UpdateError {
        UpdateError::Api(error)
    }
}

impl From<StoreError> for UpdateError {
    fn from(error: StoreError) -> UpdateError {
        match error {
            StoreError::Conflict { .. } | StoreError::NotFound { .. } => UpdateError::Conflict,
            other => UpdateError::Api(other.into()),
        }
    }
}

/// How many times a write that did not name a `resourceVersion` retries a lost race.
const RETRIES: usize = 8;

fn qualified_kind(resource: &ResourceType) -> String {
    if resource.group.is_empty() {
        resource.kind.to_owned()
    } else {
        format!("{}.{}", resource.kind, resource.group)
    }
}

/// Decodes a request body as a `resource` object: kind and apiVersion checked, decoded through
/// its type, unknown fields handled per `validation`.
pub fn decode_body(
    resource: &ResourceType,
    body: Value,
    field_validation: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    decode_as(
        resource.kind,
        &resource.api_version(),
        body,
        field_validation,
    )
}

/// [`decode_body`] for any registered kind (also `Scale`, `Binding`, `DeleteOptions`).
pub fn decode_as(
    kind: &str,
    api_version: &str,
    mut body: Value,
    field_validation: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of the request must be a {kind} object"
        )));
    }
    match body["kind"].as_str() {
        None | Some("") => body["kind"] = json!(kind),
        Some(given) if given == kind => {}
        Some(given) => {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {kind}): kind {given:?} does not match"
            )));
        }
    }
    match body["apiVersion"].as_str() {
        None | Some("") => body["apiVersion"] = json!(api_version),
        Some(given) if given == api_version => {}
        Some(given) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({given}) does not match the expected API version ({api_version})"
            )));
        }
    }
    let decoded = typed::decode(kind, body).map_err(|error| {
        ApiError::bad_request(format!(
            "{kind} in version \"{api_version}\" cannot be handled as a {kind}: {error}"
        ))
    })?;
    let unknown: Vec<String> = decoded
        .unknown_fields
        .iter()
        .map(|field| format!("unknown field \"{field}\""))
        .collect();
    match field_validation {
        FieldValidation::Strict if !unknown.is_empty() => Err(ApiError::bad_request(format!(
            "{kind} in version \"{api_version}\" cannot be handled as a {kind}: strict decoding error: {}",
            unknown.join(", ")
        ))),
        FieldValidation::Warn => Ok((decoded.object, unknown)),
        _ => Ok((decoded.object, Vec::new())),
    }
}

fn parse_revision(text: &str) -> ApiResult<Revision> {
    text.parse::<Revision>()
        .ok()
        .filter(|revision| *revision >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {text:?}")))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: Revision,
    start: String,
}

impl Registry {
    /// A registry and the receiving end of its collector queue (see `collector`).
    pub fn new(
        store: Arc<dyn Store>,
        allocator: Allocator,
    ) -> (Registry, mpsc::UnboundedReceiver<CollectorWork>) {
        let (collector, queue) = mpsc::unbounded_channel();
        (
            Registry {
                store,
                allocator,
                collector,
            },
            queue,
        )
    }

    pub fn enqueue(&self, work: CollectorWork) {
        // The collector lives as long as the server; a closed queue only means shutdown.
        let _ = self.collector.send(work);
    }

    async fn read(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<(Value, Revision)> {
        let key = resource.key(namespace, name);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        let object = object::decode(&kv, kv.mod_revision).map_err(ApiError::internal)?;
        Ok((object, kv.mod_revision))
    }

    /// The object, with its `resourceVersion`.
    pub async fn get(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        Ok(self.read(resource, namespace, name).await?.0)
    }

    async fn check_namespace_accepts(
        &self,
        resource: &ResourceType,
        name: &str,
        namespace: &str,
    ) -> ApiResult<()> {
        let namespaces = resources::by_kind("Namespace")
            .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
        match self.store.get(&namespaces.key(None, namespace)).await? {
            None => Err(ApiError::namespace_not_found(namespace)),
            Some(kv) => {
                let stored = object::decode(&kv, kv.mod_revision).map_err(ApiError::internal)?;
                if object::is_deleting(&stored) {
                    Err(ApiError::forbidden(
                        resource,
                        name,
                        &format!(
                            "unable to create new content in namespace {namespace} because it is being terminated"
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Sets the object's namespace from the request, or rejects a mismatch.
    fn place(
        resource: &ResourceType,
        object: &mut Value,
        namespace: Option<&str>,
    ) -> ApiResult<()> {
        let metadata = object::metadata_mut(object);
        if resource.namespaced {
            let namespace = namespace
                .ok_or_else(|| ApiError::bad_request("a namespace is required for this request"))?;
            match metadata.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    metadata.insert("namespace".into(), json!(namespace));
                }
            }
        } else {
            metadata.remove("namespace");
        }
        Ok(())
    }

    /// Creates an object from a decoded request body.
    pub async fn create(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        body: Value,
        options: WriteOptions,
    ) -> ApiResult<Written> {
        let (mut object, warnings) = decode_body(resource, body, options.field_validation)?;
        Self::place(resource, &mut object, namespace)?;
        if resource.namespaced
            && let Some(namespace) = namespace
        {
            let name = match object::name(&object) {
                "" => object["metadata"]["generateName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                name => name.to_owned(),
            };
            self.check_namespace_accepts(resource, &name, namespace)
                .await?;
        }
        let generate_name = object["metadata"]["generateName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let named = !object::name(&object).is_empty();
        if !named && generate_name.is_empty() {
            return Err(ApiError::invalid(
                resource,
                "",
                &[FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        {
            let metadata = object::metadata_mut(&mut object);
            for transient in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
                "managedFields",
            ] {
                metadata.remove(transient);
            }
            metadata.insert("uid".into(), json!(object::new_uid()));
            metadata.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
            metadata.insert("generation".into(), json!(1));
        }
        if matches!(
            resource.kind,
            "Pod" | "Service" | "Deployment" | "ReplicaSet" | "DaemonSet"
        ) && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        defaulting::apply_defaults(resource.kind, &mut object);

        for _ in 0..RETRIES {
            let mut candidate = object.clone();
            if !named {
                let name = format!("{generate_name}{}", object::name_suffix());
                object::metadata_mut(&mut candidate).insert("name".into(), json!(name));
            }
            let name = object::name(&candidate).to_owned();
            let errors = validation::validate(resource.kind, &candidate, None);
            if !errors.is_empty() {
                return Err(ApiError::invalid(resource, &name, &errors));
            }
            let claimed = if resource.kind == "Service" {
                // An existing Service is AlreadyExists, not an allocation conflict.
                if named
                    && self
                        .store
                        .get(&resource.key(namespace, &name))
                        .await?
                        .is_some()
                {
                    return Err(ApiError::already_exists(resource, &name));
                }
                self.allocate_service(resource, &mut candidate, None, options.dry_run)
                    .await?
            } else {
                Holdings::default()
            };
            if options.dry_run {
                return Ok(Written {
                    object: candidate,
                    warnings,
                });
            }
            let key = resource.key(namespace, &name);
            match self.store.create(&key, &object::encode(&candidate)).await {
                Ok(kv) => {
                    object::metadata_mut(&mut candidate)
                        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    debug!(resource = resource.plural, name, "created");
                    return Ok(Written {
                        object: candidate,
                        warnings,
                    });
                }
                Err(error) => {
                    self.allocator.release(&claimed).await?;
                    match error {
                        StoreError::AlreadyExists { .. } if !named => continue,
                        StoreError::AlreadyExists { .. } => {
                            return Err(ApiError::already_exists(resource, &name));
                        }
                        other => return Err(other.into()),
                    }
                }
            }
        }
        Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "AlreadyExists",
            format!("could not generate a free name from generateName {generate_name:?}"),
        ))
    }

    /// Allocates the ClusterIP and node ports `service` asks for (keeping those `old` holds);
    /// returns what it newly claimed, released again on failure.
    async fn allocate_service(
        &self,
        resource: &ResourceType,
        service: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> ApiResult<Holdings> {
        let name = object::name(service).to_owned();
        let owner = format!(
            "{}/{}",
            object::namespace(service).unwrap_or_default(),
            name
        );
        let mut claimed = Holdings::default();
        let result = self
            .allocate_service_into(service, old, &owner, dry_run, &mut claimed)
            .await;
        match result {
            Ok(()) => Ok(claimed),
            Err(error) => {
                if !dry_run {
                    self.allocator.release(&claimed).await?;
                }
                Err(match error {
                    FieldOrApiError::Field(field) => ApiError::invalid(resource, &name, &[field]),
                    FieldOrApiError::Api(api) => api,
                })
            }
        }
    }

    async fn allocate_service_into(
        &self,
        service: &mut Value,
        old: Option<&Value>,
        owner: &str,
        dry_run: bool,
        claimed: &mut Holdings,
    ) -> Result<(), FieldOrApiError> {
        let service_type = service["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_owned();
        let old_holdings = old.map(Holdings::of).unwrap_or_default();
        if service_type != "ExternalName" {
            let requested = service["spec"]["clusterIP"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let old_ip = old.and_then(|old| old["spec"]["clusterIP"].as_str().map(str::to_owned));
            let address = if requested.is_empty() {
                match old_ip {
                    Some(old_ip) if !old_ip.is_empty() => old_ip,
                    _ => {
                        let address = self.allocator.allocate_ip(owner, dry_run).await?;
                        claimed.cluster_ip = Some(address);
                        address.to_string()
                    }
                }
            } else if requested == "None" || old_ip.as_deref() == Some(requested.as_str()) {
                requested
            } else {
                let address = requested.parse().map_err(|_| {
                    FieldOrApiError::Field(FieldError::invalid(
                        "spec.clusterIP",
                        requested.clone(),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    ))
                })?;
                self.allocator
                    .claim_ip(address, owner, "spec.clusterIPs", dry_run)
                    .await?;
                claimed.cluster_ip = Some(address);
                requested
            };
            service["spec"]["clusterIP"] = json!(address);
            service["spec"]["clusterIPs"] = json!([address]);
        }
        if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
            let old_ports: Vec<Value> = old
                .and_then(|old| old["spec"]["ports"].as_array().cloned())
                .unwrap_or_default();
            let count = service["spec"]["ports"].as_array().map_or(0, Vec::len);
            for index in 0..count {
                let port = &service["spec"]["ports"][index];
                let requested = port["nodePort"].as_u64().unwrap_or(0);
                let field = format!("spec.ports[{index}].nodePort");
                let node_port = if requested == 0 {
                    let reusable = old_ports.iter().find(|old_port| {
                        old_port["port"] == port["port"] && old_port["protocol"] == port["protocol"]
                    });
                    match reusable.and_then(|old_port| old_port["nodePort"].as_u64()) {
                        Some(previous) if previous != 0 => previous,
                        _ => {
                            let allocated =
                                self.allocator.allocate_node_port(owner, dry_run).await?;
                            claimed.node_ports.push(allocated);
                            u64::from(allocated)
                        }
                    }
                } else {
                    let Ok(requested_port) = u16::try_from(requested) else {
                        return Err(FieldOrApiError::Field(FieldError::invalid(
                            field,
                            requested,
                            "must be between 1 and 65535, inclusive",
                        )));
                    };
                    if !old_holdings.node_ports.contains(&requested_port)
                        && !claimed.node_ports.contains(&requested_port)
                    {
                        self.allocator
                            .claim_node_port(requested_port, owner, &field, dry_run)
                            .await?;
                        claimed.node_ports.push(requested_port);
                    }
                    requested
                };
                service["spec"]["ports"][index]["nodePort"] = json!(node_port);
            }
        }
        Ok(())
    }

    /// Replaces an object (PUT), or its status.
    pub async fn update(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
        options: WriteOptions,
    ) -> ApiResult<Written> {
        let (mut new, warnings) = decode_body(resource, body, options.field_validation)?;
        Self::place(resource, &mut new, namespace)?;
        let given_name = object::name(&new);
        if !given_name.is_empty() && given_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given_name}) does not match the name on the URL ({name})"
            )));
        }
        object::metadata_mut(&mut new).insert("name".into(), json!(name));
        let precondition = match new["metadata"]["resourceVersion"].as_str() {
            Some(text) if !text.is_empty() => Some(parse_revision(text)?),
            _ => None,
        };
        for _ in 0..RETRIES {
            let (old, revision) = self.read(resource, namespace, name).await?;
            if precondition.is_some_and(|expected| expected != revision) {
                return Err(ApiError::conflict(resource, name, ApiError::MODIFIED));
            }
            match self
                .write_update(resource, &old, revision, new.clone(), part, options)
                .await
            {
                Ok(object) => return Ok(Written { object, warnings }),
                Err(UpdateError::Conflict) if precondition.is_none() => continue,
                Err(UpdateError::Conflict) => {
                    return Err(ApiError::conflict(resource, name, ApiError::MODIFIED));
                }
                Err(UpdateError::Api(error)) => return Err(error),
            }
        }
        Err(ApiError::conflict(resource, name, ApiError::MODIFIED))
    }

    /// Applies a patch to the current object and writes the result.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch_type: PatchType,
        patch_body: &[u8],
        part: Part,
        options: WriteOptions,
    ) -> ApiResult<Written> {
        for _ in 0..RETRIES {
            let (old, revision) = self.read(resource, namespace, name).await?;
            let patched = patch::apply(patch_type, resource.kind, &old, patch_body)
                .map_err(|error| patch_error(resource, name, error))?;
            let named_revision = patched["metadata"]["resourceVersion"]
                .as_str()
                .filter(|text| !text.is_empty())
                .map(parse_revision)
                .transpose()?;
            let explicit = named_revision.is_some_and(|named| named != revision);
            if explicit {
                return Err(ApiError::conflict(resource, name, ApiError::MODIFIED));
            }
            let (new, warnings) = decode_body(resource, patched, options.field_validation)?;
            if object::name(&new) != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    object::name(&new)
                )));
            }
            match self
                .write_update(resource, &old, revision, new, part, options)
                .await
            {
                Ok(object) => return Ok(Written { object, warnings }),
                Err(UpdateError::Conflict) => continue,
                Err(UpdateError::Api(error)) => return Err(error),
            }
        }
        Err(ApiError::conflict(resource, name, ApiError::MODIFIED))
    }

    /// Reads, changes with `change` and writes an object, retrying lost races; no validation
    /// (server-internal writes: binding, scale, collection).
    pub async fn modify<F>(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        options: WriteOptions,
        mut change: F,
    ) -> ApiResult<Value>
    where
        F: FnMut(&mut Value) -> ApiResult<()>,
    {
        for _ in 0..RETRIES {
            let (old, revision) = self.read(resource, namespace, name).await?;
            let mut new = old.clone();
            change(&mut new)?;
            match self
                .write_update(resource, &old, revision, new, part, options)
                .await
            {
                Ok(object) => return Ok(object),
                Err(UpdateError::Conflict) => continue,
                Err(UpdateError::Api(error)) => return Err(error),
            }
        }
        Err(ApiError::conflict(resource, name, ApiError::MODIFIED))
    }

    /// The common tail of every update: keep what the client may not change, default,
    /// validate, allocate, and compare-and-swap against `revision`.
    async fn write_update(
        &self,
        resource: &ResourceType,
        old: &Value,
        revision: Revision,
        mut new: Value,
        part: Part,
        options: WriteOptions,
    ) -> Result<Value, UpdateError> {
        let name = object::name(old).to_owned();
        if part == Part::Status {
            let mut status_only = old.clone();
            match new.get("status") {
                Some(status) => status_only["status"] = status.clone(),
                None => {
                    if let Some(map) = status_only.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            new = status_only;
        } else if part == Part::Main && resource.status {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    if let Some(map) = new.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        {
            let old_metadata = old["metadata"].clone();
            let metadata = object::metadata_mut(&mut new);
            for kept in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match old_metadata.get(kept) {
                    Some(value) => {
                        metadata.insert(kept.into(), value.clone());
                    }
                    None => {
                        metadata.remove(kept);
                    }
                }
            }
            metadata.remove("resourceVersion");
            metadata.remove("selfLink");
            let old_generation = old_metadata["generation"].as_i64().unwrap_or(1);
            metadata.insert("generation".into(), json!(old_generation));
        }
        if resource.kind == "Namespace" && part == Part::Main {
            // Only the namespace controller changes spec.finalizers (upstream: `/finalize`).
            match old["spec"].get("finalizers") {
                Some(finalizers) => new["spec"]["finalizers"] = finalizers.clone(),
                None => {
                    if let Some(spec) = new["spec"].as_object_mut() {
                        spec.remove("finalizers");
                    }
                }
            }
        }
        if resource.kind == "Service" && part == Part::Main {
            drop_type_dependent_fields(&mut new, old);
        }
        defaulting::apply_defaults(resource.kind, &mut new);
        if part != Part::Internal {
            let errors = validation::validate(resource.kind, &new, Some(old));
            if !errors.is_empty() {
                return Err(ApiError::invalid(resource, &name, &errors).into());
            }
        }
        let claimed = if resource.kind == "Service" && part != Part::Status {
            self.allocate_service(resource, &mut new, Some(old), options.dry_run)
                .await?
        } else {
            Holdings::default()
        };
        // Compared after defaulting and allocation, so a body without server-filled fields is
        // not a spec change.
        if part != Part::Status && new.get("spec") != old.get("spec") {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            object::metadata_mut(&mut new).insert("generation".into(), json!(generation));
        }
        if object::without_resource_version(&new) == object::without_resource_version(old) {
            return Ok(old.clone());
        }
        let key = resource.key(object::namespace(old), &name);
        if object::is_deleting(&new) && deletion_finished(resource, &new) {
            if options.dry_run {
                return Ok(new);
            }
            let kv = self.store.delete(&key, Some(revision)).await?;
            self.after_delete(resource, &new).await;
            object::metadata_mut(&mut new)
                .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
            return Ok(new);
        }
        if options.dry_run {
            object::metadata_mut(&mut new)
                .insert("resourceVersion".into(), json!(revision.to_string()));
            return Ok(new);
        }
        match self
            .store
            .update(&key, &object::encode(&new), revision)
            .await
        {
            Ok(kv) => {
                if resource.kind == "Service" {
                    let held = Holdings::of(&new);
                    let old_holdings = Holdings::of(old);
                    let released = Holdings {
                        cluster_ip: old_holdings
                            .cluster_ip
                            .filter(|address| held.cluster_ip != Some(*address)),
                        node_ports: old_holdings
                            .node_ports
                            .into_iter()
                            .filter(|port| !held.node_ports.contains(port))
                            .collect(),
                    };
                    self.allocator.release(&released).await?;
                }
                object::metadata_mut(&mut new)
                    .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                Ok(new)
            }
            Err(error) => {
                self.allocator.release(&claimed).await?;
                Err(error.into())
            }
        }
    }

    /// What happens once an object is gone: its allocations are released and its dependents
    /// collected.
    async fn after_delete(&self, resource: &ResourceType, gone: &Value) {
        if resource.kind == "Service"
            && let Err(error) = self.allocator.release(&Holdings::of(gone)).await
        {
            warn!(%error.message, "releasing a deleted Service's allocations failed; the next start repairs it");
        }
        let uid = object::uid(gone);
        if !uid.is_empty() && !super::collector::NEVER_OWNERS.contains(&resource.kind) {
            self.enqueue(CollectorWork::OwnerGone {
                uid: uid.to_owned(),
                namespace: object::namespace(gone).map(str::to_owned),
            });
        }
    }

    /// Deletes an object: at once, or by marking it (finalizers, graceful pod deletion).
    pub async fn delete(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        if resource.kind == "Namespace" && IMMORTAL_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(
                resource,
                name,
                "this namespace may not be deleted",
            ));
        }
        for _ in 0..RETRIES {
            let (old, revision) = self.read(resource, namespace, name).await?;
            if let Some(uid) = &options.precondition_uid
                && uid != object::uid(&old)
            {
                return Err(ApiError::conflict(
                    resource,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        object::uid(&old)
                    ),
                ));
            }
            if let Some(expected) = &options.precondition_resource_version
                && *expected != revision.to_string()
            {
                return Err(ApiError::conflict(
                    resource,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {expected}, ResourceVersion in object meta: {revision}"
                    ),
                ));
            }
            let mut new = old.clone();
            let mut finalizers = object::finalizers(&new);
            let wanted = match options.propagation_policy.as_deref() {
                Some("Orphan") => Some(FINALIZER_ORPHAN),
                Some("Foreground") => Some(FINALIZER_FOREGROUND),
                Some("Background") | None => None,
                Some(other) => {
                    return Err(ApiError::invalid(
                        resource,
                        name,
                        &[FieldError::not_supported(
                            "propagationPolicy",
                            other,
                            &["Foreground", "Background", "Orphan"],
                        )],
                    ));
                }
            };
            if let Some(finalizer) = wanted {
                finalizers.retain(|existing| {
                    existing != FINALIZER_ORPHAN && existing != FINALIZER_FOREGROUND
                });
                finalizers.push(finalizer.to_owned());
            }
            object::set_finalizers(&mut new, &finalizers);
            let grace = graceful_period(resource, &old, options.grace_period_seconds);
            if resource.kind == "Namespace" {
                new["status"]["phase"] = json!("Terminating");
            }
            let pending = !finalizers.is_empty()
                || grace > 0
                || (resource.kind == "Namespace" && !namespace_finalizers(&new).is_empty());
            if pending {
                let metadata = object::metadata_mut(&mut new);
                if !metadata.contains_key("deletionTimestamp") || grace > 0 {
                    let when = jiff::Timestamp::now()
                        .checked_add(jiff::SignedDuration::from_secs(grace))
                        .unwrap_or_else(|_| jiff::Timestamp::now());
                    let previous = metadata
                        .get("deletionTimestamp")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let proposed = object::timestamp_rfc3339(when);
                    // A later delete may shorten the grace period, never extend it.
                    let earliest = match previous {
                        Some(previous) if previous <= proposed => previous,
                        _ => proposed,
                    };
                    metadata.insert("deletionTimestamp".into(), json!(earliest));
                    if resource.kind == "Pod" || grace > 0 {
                        metadata.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                }
                if options.dry_run || new == old {
                    return Ok(Deleted::Pending(new));
                }
                let key = resource.key(namespace, name);
                match self
                    .store
                    .update(&key, &object::encode(&new), revision)
                    .await
                {
                    Ok(kv) => {
                        object::metadata_mut(&mut new)
                            .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                        if wanted.is_some() || resource.kind == "Namespace" {
                            self.enqueue(CollectorWork::Finalize {
                                kind: resource.kind,
                                namespace: namespace.map(str::to_owned),
                                name: name.to_owned(),
                            });
                        }
                        return Ok(Deleted::Pending(new));
                    }
                    Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => continue,
                    Err(error) => return Err(error.into()),
                }
            }
            if options.dry_run {
                return Ok(Deleted::Gone(old));
            }
            let key = resource.key(namespace, name);
            match self.store.delete(&key, Some(revision)).await {
                Ok(kv) => {
                    let mut gone = old;
                    object::metadata_mut(&mut gone)
                        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    self.after_delete(resource, &gone).await;
                    return Ok(Deleted::Gone(gone));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => {
                    return Err(ApiError::not_found(resource, name));
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(ApiError::conflict(resource, name, ApiError::MODIFIED))
    }

    /// One page of the objects in `namespace` (all namespaces when `None`) matching the
    /// selectors.
    pub async fn list(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> ApiResult<ListPage> {
        let prefix = resource.namespace_prefix(namespace);
        let (mut start_after, mut revision) = match &options.continue_token {
            Some(token) => {
                let token = decode_continue(token)?;
                (Some(format!("{prefix}{}", token.start)), Some(token.rv))
            }
            None => (None, options.exact_revision),
        };
        let mut items = Vec::new();
        loop {
            let wanted = if options.limit == 0 {
                0
            } else {
                options.limit - items.len()
            };
            let page = self
                .store
                .range(&prefix, start_after.as_deref(), wanted, revision)
                .await
                .map_err(|error| match error {
                    StoreError::Compacted { .. } if options.continue_token.is_some() => {
                        ApiError::gone(
                            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                        )
                    }
                    other => other.into(),
                })?;
            revision = Some(page.revision);
            let last_key = page.kvs.last().map(|kv| kv.key.clone());
            for kv in &page.kvs {
                let item = object::decode(kv, kv.mod_revision).map_err(ApiError::internal)?;
                let labels_match = options
                    .labels
                    .as_ref()
                    .is_none_or(|selector| selector.matches_object(&item));
                let fields_match = options
                    .fields
                    .as_ref()
                    .is_none_or(|selector| selector.matches(&item));
                if labels_match && fields_match {
                    items.push(item);
                }
            }
            let full = options.limit != 0 && items.len() >= options.limit;
            if !page.more || last_key.is_none() {
                return Ok(ListPage {
                    items,
                    revision: page.revision,
                    continue_token: None,
                });
            }
            if full {
                let last = last_key.unwrap_or_default();
                let token = ContinueToken {
                    v: "meta.k8s.io/v1".into(),
                    rv: page.revision,
                    start: last[prefix.len()..].to_owned(),
                };
                let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(serde_json::to_vec(&token).unwrap_or_default());
                return Ok(ListPage {
                    items,
                    revision: page.revision,
                    continue_token: Some(encoded),
                });
            }
            start_after = last_key;
        }
    }

    /// Every object of `resource` (for the collector and repair; not paged).
    pub async fn all(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
    ) -> ApiResult<Vec<Value>> {
        Ok(self
            .list(resource, namespace, &ListOptions::default())
            .await?
            .items)
    }

    /// Releases ClusterIPs and node ports no Service holds (after a crash between writes).
    pub async fn repair_allocations(&self) -> ApiResult<usize> {
        let services = resources::by_kind("Service")
            .ok_or_else(|| ApiError::internal("services are not registered"))?;
        let mut held = HashMap::new();
        for service in self.all(services, None).await? {
            held.insert(
                format!(
                    "{}/{}",
                    object::namespace(&service).unwrap_or_default(),
                    object::name(&service)
                ),
                Holdings::of(&service),
            );
        }
        self.allocator.repair(&held).await
    }
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    let invalid = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let token: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.v != "meta.k8s.io/v1" || token.start.contains("..") || token.rv <= 0 {
        return Err(invalid());
    }
    Ok(token)
}

/// The grace period a delete applies: only pods bound to a node wait (for their kubelet).
fn graceful_period(resource: &ResourceType, object: &Value, requested: Option<i64>) -> i64 {
    if resource.kind != "Pod" {
        return 0;
    }
    let bound = object["spec"]["nodeName"]
        .as_str()
        .is_some_and(|node| !node.is_empty());
    let running = !matches!(
        object["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if !bound || !running {
        return 0;
    }
    requested
        .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}

fn namespace_finalizers(namespace: &Value) -> Vec<String> {
    namespace["spec"]["finalizers"]
        .as_array()
        .map(|finalizers| {
            finalizers
                .iter()
                .filter_map(|finalizer| finalizer.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an object marked for deletion may now be removed.
fn deletion_finished(resource: &ResourceType, object: &Value) -> bool {
    if !object::finalizers(object).is_empty() {
        return false;
    }
    if resource.kind == "Namespace" && !namespace_finalizers(object).is_empty() {
        return false;
    }
    // A pod marked for graceful deletion goes when its kubelet deletes it with grace 0.
    resource.kind != "Pod"
        || object["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0)
            == 0
}

fn patch_error(resource: &ResourceType, name: &str, error: patch::PatchError) -> ApiError {
    let message = error.to_string();
    match patch::http_status(&error) {
        415 => ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        ),
        422 => ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {message}",
                qualified_kind(resource)
            ),
        ),
        _ => ApiError::bad_request(message),
    }
}

fn needs_node_ports(service: &Value) -> bool {
    matches!(
        service["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    )
}

/// Upstream's `dropTypeDependentFields`: when an update changes a Service's type, the fields
/// only the old type had are dropped if the client left them as they were (so that
/// `{"spec":{"type":"ClusterIP"}}` on a NodePort Service works and frees its node ports).
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let new_type = new["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_owned();
    let old_type = old["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_owned();
    if new_type == old_type {
        return;
    }
    let Some(spec) = new["spec"].as_object_mut() else {
        return;
    };
    let unchanged = |spec: &serde_json::Map<String, Value>, field: &str| {
        spec.get(field) == old["spec"].get(field)
    };
    if !needs_node_ports(&json!({"spec": {"type": new_type}})) && needs_node_ports(old) {
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports {
                let Some(port) = port.as_object_mut() else {
                    continue;
                };
                let old_node_port = old["spec"]["ports"].as_array().and_then(|old_ports| {
                    old_ports
                        .iter()
                        .find(|old_port| old_port.get("port") == port.get("port"))
                        .and_then(|old_port| old_port.get("nodePort"))
                });
                if port.get("nodePort").is_some() && port.get("nodePort") == old_node_port {
                    port.remove("nodePort");
                }
            }
        }
        for field in ["externalTrafficPolicy", "healthCheckNodePort"] {
            if unchanged(spec, field) {
                spec.remove(field);
            }
        }
    }
    if new_type != "LoadBalancer" && old_type == "LoadBalancer" {
        for field in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
            if unchanged(spec, field) {
                spec.remove(field);
            }
        }
    }
    if new_type == "ExternalName" {
        for field in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        ] {
            if unchanged(spec, field) {
                spec.remove(field);
            }
        }
    }
}
