//! What exists after the first start, as upstream's bootstrap controllers make it: the
//! `default`, `kube-system`, `kube-public` and `kube-node-lease` namespaces, and the
//! `kubernetes` Service (the first address of the service CIDR) with its Endpoints and
//! EndpointSlice pointing at this API server. Also repairs allocations a crash left behind.
//!
//! Owns only these startup writes; they go through the [`Registry`] like any request, so they
//! are validated, defaulted and allocated the same way. Existing objects are left alone.

use std::net::SocketAddr;

use axum::http::StatusCode;
use serde_json::json;
use tracing::info;

use super::{
    errors::{ApiError, ApiResult},
    registry::{Registry, WriteOptions},
    resources,
};

pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure(
    registry: &Registry,
    kind: &str,
    namespace: Option<&str>,
    object: serde_json::Value,
) -> ApiResult<()> {
    let resource = resources::by_kind(kind)
        .ok_or_else(|| ApiError::internal(format!("{kind} is not registered")))?;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match registry.get(resource, namespace, &name).await {
        Ok(_) => return Ok(()),
        Err(error) if error.code == StatusCode::NOT_FOUND => {}
        Err(error) => return Err(error),
    }
    match registry
        .create(resource, namespace, object, WriteOptions::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if error.code == StatusCode::CONFLICT => Ok(()),
        Err(error) => Err(error),
    }
}

/// Creates what is missing; `advertise` is the address and port the API is reached at.
pub async fn run(registry: &Registry, advertise: SocketAddr) -> ApiResult<()> {
    let released = registry.repair_allocations().await?;
    if released > 0 {
        info!(released, "released allocations no Service holds");
    }
    for namespace in SYSTEM_NAMESPACES {
        ensure(
            registry,
            "Namespace",
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .await?;
    }
    let cluster_ip = registry
        .allocator
        .service_cidr
        .kubernetes_service_ip()
        .to_string();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    ensure(
        registry,
        "Service",
        Some("default"),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": cluster_ip,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": advertise.port()}],
                "sessionAffinity": "None",
            },
        }),
    )
    .await?;
    if advertise.ip().is_loopback() {
        // Endpoints may not name loopback addresses (upstream validation); a cluster reached
        // only on loopback has no kubernetes endpoints, like kube-apiserver bound there.
        info!(%advertise, "not publishing kubernetes endpoints for a loopback address");
        return Ok(());
    }
    let address = advertise.ip().to_string();
    ensure(
        registry,
        "Endpoints",
        Some("default"),
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{
                "addresses": [{"ip": address}],
                "ports": [{"name": "https", "port": advertise.port(), "protocol": "TCP"}],
            }],
        }),
    )
    .await?;
    ensure(
        registry,
        "EndpointSlice",
        Some("default"),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": advertise.port(), "protocol": "TCP"}],
        }),
    )
    .await
}
