//! The HTTP adapter of the resource API: parses `/api/...` and `/apis/...` paths, query
//! parameters, bodies and `Accept` headers, calls the [`Registry`], and writes objects, lists,
//! Tables, watch streams and `Status` errors the way kube-apiserver does.
//!
//! Owns request/response translation only; every rule about objects lives in the registry and
//! the pure modules.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::{
    discovery,
    errors::{ApiError, ApiResult},
    object,
    patch::PatchType,
    registry::{
        DeleteOptions, Deleted, FieldValidation, ListOptions, Part, Registry, WriteOptions,
        decode_as,
    },
    resources::{self, ResourceType},
    selectors::{FieldSelector, LabelSelector},
    table,
    watch::{self, Render, WatchOptions},
};

/// Bodies larger than this get `413` (upstream's limit for JSON/YAML request bodies).
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the resource handlers share.
pub struct ResourceApi {
    pub registry: Arc<Registry>,
    /// `host:port` clients reach this server at (for `/api`'s `serverAddressByClientCIDRs`).
    pub server_address: String,
    /// The client `pods/log` reads kubelets with.
    pub kubelet: Arc<crate::kubelet_client::KubeletClient>,
}

/// A parsed resource path.
#[derive(Debug)]
struct Target {
    resource: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

type Params = HashMap<String, String>;

fn respond(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = (code, Json(body)).into_response();
    for warning in warnings {
        let text = format!(
            "299 - {}",
            serde_json::to_string(warning).unwrap_or_default()
        );
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// Entry point for every path under `/api` and `/apis`.
pub async fn handle(
    State(api): State<Arc<ResourceApi>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
    body: Body,
) -> Response {
    let params: Params = params.into_iter().collect();
    match dispatch(&api, &method, &uri, &headers, &params, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn dispatch(
    api: &Arc<ResourceApi>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    params: &Params,
    body: Body,
) -> ApiResult<Response> {
    let path = uri.path().trim_end_matches('/');
    let segments: Vec<&str> = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Ok(Json(discovery::core_versions(&api.server_address)).into_response()),
        ["apis"] => return Ok(Json(discovery::groups()).into_response()),
        ["apis", group] => {
            return discovery::group(group)
                .map(|document| Json(document).into_response())
                .ok_or_else(|| ApiError::path_not_found(path));
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::path_not_found(path)),
    };
    if (group, version, rest)
        == (
            "apiextensions.k8s.io",
            "v1",
            ["customresourcedefinitions"].as_slice(),
        )
        && method == Method::GET
    {
        // No custom resources are served; kubectl lists them to classify unknown kinds.
        let revision = api.registry.store.revision().await?;
        return Ok(Json(json!({
            "kind": "CustomResourceDefinitionList",
            "apiVersion": "apiextensions.k8s.io/v1",
            "metadata": {"resourceVersion": revision.to_string()},
            "items": [],
        }))
        .into_response());
    }
    if rest.is_empty() {
        return discovery::resource_list(group, version)
            .map(|document| Json(document).into_response())
            .ok_or_else(|| ApiError::path_not_found(path));
    }
    let target =
        parse_target(group, version, rest).ok_or_else(|| ApiError::path_not_found(path))?;
    let resource = target.resource;
    let namespace = target.namespace.as_deref();
    let registry = &api.registry;
    let as_table = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"));
    match (
        method.clone(),
        target.name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (Method::GET, None, None) => {
            if is_true(params.get("watch")) {
                return watch_response(api, &target, params, as_table).await;
            }
            let options = list_options(resource, params)?;
            let page = registry.list(resource, namespace, &options).await?;
            let metadata = {
                let mut metadata = json!({"resourceVersion": page.revision.to_string()});
                if let Some(token) = &page.continue_token {
                    metadata["continue"] = json!(token);
                }
                metadata
            };
            if as_table {
                let mut document = table_of(resource, &page.items, params);
                document["metadata"] = metadata;
                return Ok(Json(document).into_response());
            }
            Ok(Json(json!({
                "kind": format!("{}List", resource.kind),
                "apiVersion": resource.api_version(),
                "metadata": metadata,
                "items": page.items,
            }))
            .into_response())
        }
        (Method::GET, Some(name), None | Some("status")) => {
            let item = registry.get(resource, namespace, name).await?;
            if as_table {
                return Ok(Json(table_of(resource, &[item], params)).into_response());
            }
            Ok(Json(item).into_response())
        }
        (Method::GET, Some(name), Some("log")) if resource.plural == "pods" => {
            let namespace = namespace.unwrap_or_default();
            let params = params
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str()));
            super::pod_log::serve(registry, &api.kubelet, namespace, name, params).await
        }
        (Method::GET, Some(name), Some("scale")) if resource.scale => {
            let item = registry.get(resource, namespace, name).await?;
            Ok(Json(scale_of(&item)).into_response())
        }
        (Method::POST, None, None) => {
            require_namespace(resource, namespace)?;
            let options = write_options(params)?;
            let body = read_body(headers, body).await?;
            let written = registry.create(resource, namespace, body, options).await?;
            Ok(respond(
                StatusCode::CREATED,
                &written.object,
                &written.warnings,
            ))
        }
        (Method::POST, Some(name), Some("binding")) if resource.binding => {
            let options = write_options(params)?;
            let body = read_body(headers, body).await?;
            bind(registry, resource, namespace, name, body, options).await
        }
        (Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            if sub.is_some() && !resource.status {
                return Err(ApiError::path_not_found(path));
            }
            let options = write_options(params)?;
            let body = read_body(headers, body).await?;
            let part = if sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            let written = registry
                .update(resource, namespace, name, body, part, options)
                .await?;
            Ok(respond(StatusCode::OK, &written.object, &written.warnings))
        }
        (Method::PUT | Method::PATCH, Some(name), Some("scale")) if resource.scale => {
            let options = write_options(params)?;
            let patch_type = if method == Method::PATCH {
                Some(patch_type(headers)?)
            } else {
                None
            };
            let raw = read_raw(headers, body).await?;
            scale(
                registry, resource, namespace, name, patch_type, &raw, options,
            )
            .await
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            if sub.is_some() && !resource.status {
                return Err(ApiError::path_not_found(path));
            }
            let options = write_options(params)?;
            let patch_type = patch_type(headers)?;
            let raw = read_raw(headers, body).await?;
            let part = if sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            let written = registry
                .patch(resource, namespace, name, patch_type, &raw, part, options)
                .await?;
            Ok(respond(StatusCode::OK, &written.object, &written.warnings))
        }
        (Method::DELETE, Some(name), None) => {
            let options = delete_options(headers, params, body).await?;
            match registry.delete(resource, namespace, name, &options).await? {
                Deleted::Pending(item) => Ok(respond(StatusCode::OK, &item, &[])),
                Deleted::Gone(item) => Ok(Json(deleted_body(resource, &item)).into_response()),
            }
        }
        (Method::DELETE, None, None) => {
            let options = delete_options(headers, params, body).await?;
            let list = list_options(resource, params)?;
            let page = registry.list(resource, namespace, &list).await?;
            let mut deleted = Vec::new();
            for item in page.items {
                let item_namespace = object::namespace(&item).map(str::to_owned);
                match registry
                    .delete(
                        resource,
                        item_namespace.as_deref(),
                        object::name(&item),
                        &options,
                    )
                    .await
                {
                    Ok(Deleted::Gone(item) | Deleted::Pending(item)) => deleted.push(item),
                    Err(error) if error.code == StatusCode::NOT_FOUND => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(Json(json!({
                "kind": format!("{}List", resource.kind),
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": page.revision.to_string()},
                "items": deleted,
            }))
            .into_response())
        }
        (method, _, _) => Err(ApiError::method_not_supported(
            resource,
            &method.as_str().to_lowercase(),
        )),
    }
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let lookup = |plural: &str| resources::lookup(group, version, plural);
    if let ["namespaces", namespace, plural, tail @ ..] = rest
        && let Some(resource) = lookup(plural).filter(|resource| resource.namespaced)
    {
        return match tail {
            [] => Some(Target {
                resource,
                namespace: Some((*namespace).to_owned()),
                name: None,
                subresource: None,
            }),
            [name] => Some(Target {
                resource,
                namespace: Some((*namespace).to_owned()),
                name: Some((*name).to_owned()),
                subresource: None,
            }),
            [name, sub] => Some(Target {
                resource,
                namespace: Some((*namespace).to_owned()),
                name: Some((*name).to_owned()),
                subresource: Some((*sub).to_owned()),
            }),
            _ => None,
        };
    }
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    let resource = lookup(plural)?;
    // A namespaced type is listed across namespaces at its bare path; single objects need one.
    if resource.namespaced && name.is_some() {
        return None;
    }
    Some(Target {
        resource,
        namespace: None,
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

fn is_true(value: Option<&String>) -> bool {
    matches!(value.map(String::as_str), Some("true" | "1"))
}

fn require_namespace(resource: &ResourceType, namespace: Option<&str>) -> ApiResult<()> {
    if resource.namespaced && namespace.is_none() {
        return Err(ApiError::method_not_supported(
            resource,
            "create across namespaces",
        ));
    }
    Ok(())
}

fn write_options(params: &Params) -> ApiResult<WriteOptions> {
    let dry_run = match params.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            )));
        }
    };
    let field_validation =
        FieldValidation::parse(params.get("fieldValidation").map_or("", String::as_str))?;
    Ok(WriteOptions {
        dry_run,
        field_validation,
    })
}

fn list_options(resource: &ResourceType, params: &Params) -> ApiResult<ListOptions> {
    let labels = match params.get("labelSelector") {
        Some(text) if !text.is_empty() => Some(
            LabelSelector::parse(text).map_err(|error| ApiError::bad_request(error.to_string()))?,
        ),
        _ => None,
    };
    let fields = match params.get("fieldSelector") {
        Some(text) if !text.is_empty() => Some(
            FieldSelector::parse(resource.kind, text)
                .map_err(|error| ApiError::bad_request(error.to_string()))?,
        ),
        _ => None,
    };
    let limit = match params.get("limit") {
        Some(text) if !text.is_empty() => text
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {text:?}")))?
            .max(0) as usize,
        _ => 0,
    };
    let exact_revision =
        match (
            params.get("resourceVersionMatch").map(String::as_str),
            params.get("resourceVersion"),
        ) {
            (Some("Exact"), Some(text)) => Some(text.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {text:?}"))
            })?),
            (Some("Exact"), None) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch=Exact requires a resourceVersion",
                ));
            }
            _ => None,
        };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: params
            .get("continue")
            .filter(|token| !token.is_empty())
            .cloned(),
        exact_revision,
    })
}

async fn read_raw(headers: &HeaderMap, body: Body) -> ApiResult<Vec<u8>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .and_then(|length| length.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_REQUEST_BODY_BYTES) {
        drain(body).await;
        return Err(ApiError::too_large(MAX_REQUEST_BODY_BYTES));
    }
    let mut body = body.into_data_stream();
    let mut raw = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::bad_request(format!("reading the request body failed: {error}"))
        })?;
        if raw.len() + chunk.len() > MAX_REQUEST_BODY_BYTES {
            drain(Body::from_stream(body)).await;
            return Err(ApiError::too_large(MAX_REQUEST_BODY_BYTES));
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}

/// Reads and discards up to [`DRAIN_LIMIT_BYTES`] of a rejected body, so a client that writes
/// its whole body before reading (most do) gets the `413` instead of a reset connection.
async fn drain(body: Body) {
    let _ = axum::body::to_bytes(body, DRAIN_LIMIT_BYTES).await;
}

/// The most of an oversized body read before answering `413` (beyond it the connection closes).
const DRAIN_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// A JSON or YAML request body.
async fn read_body(headers: &HeaderMap, body: Body) -> ApiResult<Value> {
    let raw = read_raw(headers, body).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        "application/json" | "" | "*/*" => serde_json::from_slice(&raw).map_err(|error| {
            ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(&raw)
            .map_err(|error| {
                ApiError::bad_request(format!("the request body is not valid YAML: {error}"))
            }),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn patch_type(headers: &HeaderMap) -> ApiResult<PatchType> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    PatchType::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type))
}

async fn delete_options(
    headers: &HeaderMap,
    params: &Params,
    body: Body,
) -> ApiResult<DeleteOptions> {
    let raw = read_raw(headers, body).await?;
    let mut options = DeleteOptions::default();
    if !raw.iter().all(u8::is_ascii_whitespace) {
        let value: Value = serde_json::from_slice(&raw).map_err(|error| {
            ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
        })?;
        let api_version = value["apiVersion"].as_str().unwrap_or("v1").to_owned();
        let api_version = if api_version == "meta.k8s.io/v1" {
            "v1".to_owned()
        } else {
            api_version
        };
        let mut value = value;
        value["apiVersion"] = json!(api_version);
        let (decoded, _) = decode_as(
            "DeleteOptions",
            &api_version,
            value,
            FieldValidation::Ignore,
        )?;
        options.grace_period_seconds = decoded["gracePeriodSeconds"].as_i64();
        options.propagation_policy = decoded["propagationPolicy"].as_str().map(str::to_owned);
        if decoded["orphanDependents"].as_bool() == Some(true)
            && options.propagation_policy.is_none()
        {
            options.propagation_policy = Some("Orphan".into());
        }
        options.precondition_uid = decoded["preconditions"]["uid"].as_str().map(str::to_owned);
        options.precondition_resource_version = decoded["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        options.dry_run = decoded["dryRun"]
            .as_array()
            .is_some_and(|modes| modes.iter().any(|mode| mode == "All"));
    }
    if let Some(grace) = params.get("gracePeriodSeconds") {
        options.grace_period_seconds =
            Some(grace.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds {grace:?}"))
            })?);
    }
    if let Some(policy) = params.get("propagationPolicy") {
        options.propagation_policy = Some(policy.clone());
    }
    if is_true(params.get("orphanDependents")) && options.propagation_policy.is_none() {
        options.propagation_policy = Some("Orphan".into());
    }
    if params.get("dryRun").is_some_and(|mode| mode == "All") {
        options.dry_run = true;
    }
    Ok(options)
}

/// Upstream answers an immediate delete with the object for some kinds and a `Status` for
/// the rest.
fn deleted_body(resource: &ResourceType, item: &Value) -> Value {
    if matches!(resource.kind, "Pod" | "Service" | "Namespace") {
        return item.clone();
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": object::name(item),
            "group": resource.group,
            "kind": resource.plural,
            "uid": object::uid(item),
        },
    })
}

fn partial_metadata(item: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": item["metadata"],
    })
}

fn row(resource: &ResourceType, item: &Value, include: &str, now: std::time::SystemTime) -> Value {
    let mut row = json!({"cells": table::cells(resource.kind, item, now)});
    match include {
        "None" => {}
        "Object" => row["object"] = item.clone(),
        _ => row["object"] = partial_metadata(item),
    }
    row
}

fn table_of(resource: &ResourceType, items: &[Value], params: &Params) -> Value {
    let include = params
        .get("includeObject")
        .map_or("Metadata", String::as_str);
    let now = std::time::SystemTime::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| row(resource, item, include, now))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": table::column_definitions(resource.kind),
        "rows": rows,
    })
}

async fn watch_response(
    api: &Arc<ResourceApi>,
    target: &Target,
    params: &Params,
    as_table: bool,
) -> ApiResult<Response> {
    let resource = target.resource;
    let list = list_options(resource, params)?;
    let resource_version =
        match params.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(text) => Some(text.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {text:?}"))
            })?),
        };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let send_initial_events = is_true(params.get("sendInitialEvents"));
    let allow_bookmarks = is_true(params.get("allowWatchBookmarks"));
    if send_initial_events {
        let mut errors = Vec::new();
        if params.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
            errors.push(super::field::FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !allow_bookmarks {
            errors.push(super::field::FieldError::forbidden(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
        if !errors.is_empty() {
            let mut error = ApiError::invalid(resource, "", &errors);
            error.message = format!(
                "ListOptions.meta.k8s.io \"\" is invalid: {}",
                errors
                    .iter()
                    .map(super::field::FieldError::full_message)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Err(error);
        }
    }
    let options = WatchOptions {
        labels: list.labels,
        fields: list.fields,
        resource_version,
        send_initial_events,
        allow_bookmarks,
        timeout,
    };
    let render: Render = if as_table {
        let include = params
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "Metadata".into());
        Arc::new(move |item: &Value| {
            let now = std::time::SystemTime::now();
            if item["kind"] == resource.kind
                && item.get("spec").is_none()
                && item["metadata"]["annotations"]["k8s.io/initial-events-end"].is_string()
            {
                return item.clone();
            }
            json!({
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": item["metadata"]["resourceVersion"]},
                "columnDefinitions": table::column_definitions(resource.kind),
                "rows": [row(resource, item, &include, now)],
            })
        })
    } else {
        Arc::new(|item: &Value| item.clone())
    };
    let stream = watch::start(
        Arc::clone(&api.registry),
        resource,
        target.namespace.clone(),
        options,
        render,
    )
    .await?;
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `autoscaling/v1` Scale of a workload.
fn scale_of(item: &Value) -> Value {
    let selector = item["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": item["metadata"]["name"],
            "namespace": item["metadata"]["namespace"],
            "uid": item["metadata"]["uid"],
            "resourceVersion": item["metadata"]["resourceVersion"],
            "creationTimestamp": item["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": item["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": item["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

async fn scale(
    registry: &Registry,
    resource: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    patch_type: Option<PatchType>,
    raw: &[u8],
    options: WriteOptions,
) -> ApiResult<Response> {
    let current = registry.get(resource, namespace, name).await?;
    let current_scale = scale_of(&current);
    let requested = match patch_type {
        Some(patch_type) => {
            // Scale has no lists, so a strategic merge patch is a merge patch.
            let patch_type = if patch_type == PatchType::StrategicMerge {
                PatchType::Merge
            } else {
                patch_type
            };
            super::patch::apply(patch_type, "Scale", &current_scale, raw)
                .map_err(|error| ApiError::bad_request(error.to_string()))?
        }
        None => serde_json::from_slice(raw).map_err(|error| {
            ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
        })?,
    };
    let (requested, _) = decode_as(
        "Scale",
        "autoscaling/v1",
        requested,
        FieldValidation::Ignore,
    )?;
    if let Some(expected) = requested["metadata"]["resourceVersion"].as_str()
        && !expected.is_empty()
        && Some(expected) != current["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict(resource, name, ApiError::MODIFIED));
    }
    let replicas = requested["spec"]["replicas"].as_i64().unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            resource,
            name,
            &[super::field::FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )],
        ));
    }
    let updated = registry
        .modify(resource, namespace, name, Part::Main, options, |item| {
            item["spec"]["replicas"] = json!(replicas);
            Ok(())
        })
        .await?;
    Ok(Json(scale_of(&updated)).into_response())
}

async fn bind(
    registry: &Registry,
    resource: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    body: Value,
    options: WriteOptions,
) -> ApiResult<Response> {
    let (binding, _) = decode_as("Binding", "v1", body, options.field_validation)?;
    let node = binding["target"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if node.is_empty() {
        return Err(ApiError::invalid(
            resource,
            name,
            &[super::field::FieldError::required("target.name", "")],
        ));
    }
    registry
        .modify(resource, namespace, name, Part::Internal, options, |pod| {
            let current = pod["spec"]["nodeName"].as_str().unwrap_or_default();
            if !current.is_empty() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""
                    ),
                ));
            }
            if object::is_deleting(pod) {
                return Err(ApiError::conflict(
                    resource,
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            Ok(())
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_resources_namespaces_names_and_subresources() {
        let target = parse_target(
            "",
            "v1",
            &["namespaces", "default", "pods", "web", "status"],
        )
        .expect("resolves");
        assert_eq!(target.resource.plural, "pods");
        assert_eq!(target.namespace.as_deref(), Some("default"));
        assert_eq!(target.name.as_deref(), Some("web"));
        assert_eq!(target.subresource.as_deref(), Some("status"));
        let target = parse_target("", "v1", &["namespaces", "kube-system"]).expect("resolves");
        assert_eq!(target.resource.plural, "namespaces");
        assert_eq!(target.name.as_deref(), Some("kube-system"));
        let target = parse_target("", "v1", &["namespaces", "x", "status"]).expect("resolves");
        assert_eq!(target.subresource.as_deref(), Some("status"));
        let target = parse_target("", "v1", &["pods"]).expect("all namespaces");
        assert!(target.namespace.is_none() && target.name.is_none());
        assert!(parse_target("", "v1", &["pods", "web"]).is_none());
        assert!(parse_target("apps", "v1", &["pods"]).is_none());
        let target = parse_target(
            "apps",
            "v1",
            &["namespaces", "a", "deployments", "d", "scale"],
        )
        .expect("resolves");
        assert_eq!(target.subresource.as_deref(), Some("scale"));
    }
}
