//! The HTTPS listener and its routes: `/version`, the health endpoints, `/metrics`, OpenAPI v3,
//! and the resource API under `/api` and `/apis` (handled by [`crate::api::handlers`]).
//!
//! Owns TLS termination (rustls), per-connection client-certificate identity, bearer-token
//! authentication, request counting, and `Status` error bodies for paths nothing serves.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Extension, Json, Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use serde_json::json;
use skiff_store::Store;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::{
    api::{discovery, handlers, openapi_v2},
    auth::{self, User},
};

/// The Kubernetes version whose API this server speaks.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "35";
pub const GIT_VERSION: &str = "v1.35.0+skiff";

/// What every request handler shares.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub admin_token: String,
    pub resources: Arc<handlers::ResourceApi>,
    /// Requests served, by (verb, resource, code), for `/metrics`.
    pub requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

/// The identity TLS established for a connection (a verified client certificate), if any.
#[derive(Clone)]
struct ConnectionUser(Option<User>);

/// A `Status` body, as every API error is returned.
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

async fn authenticate(
    State(state): State<Arc<ApiState>>,
    Extension(ConnectionUser(certificate_user)): Extension<ConnectionUser>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let token_user = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .filter(|token| auth::token_matches(token.trim(), &state.admin_token))
        .map(|_| User {
            name: "skiff-admin".to_owned(),
            groups: vec!["system:masters".to_owned()],
        });
    match certificate_user.or(token_user) {
        Some(user) => {
            request.extensions_mut().insert(user);
        }
        None if auth::is_public(&path) => {}
        None => return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"),
    }
    next.run(request).await
}

async fn version() -> Response {
    Json(json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": concat!("skiff-control ", env!("CARGO_PKG_VERSION")),
        "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH),
    }))
    .into_response()
}

/// The verb and resource of a request, as `apiserver_request_total` labels them.
fn request_labels(method: &axum::http::Method, path: &str, watch: bool) -> (String, String) {
    let segments: Vec<&str> = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => &[],
    };
    let (resource, named) = match rest {
        ["namespaces", _, resource, tail @ ..] => (*resource, !tail.is_empty()),
        [resource, tail @ ..] => (*resource, !tail.is_empty()),
        [] => ("", false),
    };
    let verb = match (method.as_str(), named, watch) {
        ("GET", _, true) => "WATCH",
        ("GET", false, _) if !resource.is_empty() => "LIST",
        ("GET", _, _) => "GET",
        ("POST", _, _) => "POST",
        ("PUT", _, _) => "PUT",
        ("PATCH", _, _) => "PATCH",
        ("DELETE", false, _) => "DELETECOLLECTION",
        ("DELETE", true, _) => "DELETE",
        (other, _, _) => other,
    };
    (verb.to_owned(), resource.to_owned())
}

async fn count_requests(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let watch = request.uri().query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    let (verb, resource) = request_labels(request.method(), request.uri().path(), watch);
    let response = next.run(request).await;
    let code = response.status().as_u16();
    if let Ok(mut requests) = state.requests.lock() {
        *requests.entry((verb, resource, code)).or_default() += 1;
    }
    response
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let mut text = String::from(
        "# HELP apiserver_request_total Counter of apiserver requests broken out by verb, resource and HTTP response code.\n# TYPE apiserver_request_total counter\n",
    );
    if let Ok(requests) = state.requests.lock() {
        for ((verb, resource, code), count) in requests.iter() {
            text.push_str(&format!(
                "apiserver_request_total{{code=\"{code}\",resource=\"{resource}\",verb=\"{verb}\"}} {count}\n"
            ));
        }
    }
    if let Ok(revision) = state.store.revision().await {
        text.push_str("# HELP skiff_store_revision The store's current revision (the newest resourceVersion).\n# TYPE skiff_store_revision gauge\n");
        text.push_str(&format!("skiff_store_revision {revision}\n"));
    }
    if let Some(rss) = resident_bytes() {
        text.push_str("# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\n");
        text.push_str(&format!("process_resident_memory_bytes {rss}\n"));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kibibytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kibibytes * 1024)
}

async fn resource_request(
    State(state): State<Arc<ApiState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    query: axum::extract::Query<Vec<(String, String)>>,
    body: axum::body::Body,
) -> Response {
    handlers::handle(
        State(Arc::clone(&state.resources)),
        method,
        uri,
        headers,
        query,
        body,
    )
    .await
}

async fn openapi_v2(headers: axum::http::HeaderMap) -> Response {
    let wants_protobuf = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("protobuf"));
    if !wants_protobuf {
        return status(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            &format!("only {} is served at /openapi/v2", openapi_v2::MEDIA_TYPE),
        );
    }
    (
        // The media type itself is not a valid Content-Type ('@'), so Go's parser rejects it.
        [(header::CONTENT_TYPE, "application/octet-stream")],
        openapi_v2::document(),
    )
        .into_response()
}

async fn openapi_index() -> Response {
    Json(discovery::openapi_index()).into_response()
}

async fn openapi_document(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match discovery::openapi_document(&path) {
        Some(document) => Json(document).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource (/openapi/v3/{path})"),
        ),
    }
}

async fn alive() -> &'static str {
    "ok"
}

async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    match state.store.revision().await {
        Ok(_) => "ok".into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("[-]store failed: {error}\nreadyz check failed\n"),
        )
            .into_response(),
    }
}

async fn not_found(request: Request) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "the server could not find the requested resource ({})",
            request.uri().path()
        ),
    )
}

/// The application routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/livez", get(alive))
        .route("/healthz", get(ready))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/api", any(resource_request))
        .route("/api/{*rest}", any(resource_request))
        .route("/apis", any(resource_request))
        .route("/apis/{*rest}", any(resource_request))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ))
        .with_state(state)
}

/// Serves HTTPS on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, state: Arc<ApiState>) {
    let acceptor = TlsAcceptor::from(tls);
    let app = router(state);
    loop {
        let (connection, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accepting a connection failed");
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(connection).await {
                Ok(stream) => stream,
                Err(error) => {
                    debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certificates| certificates.first())
                .and_then(auth::user_of_certificate);
            let service = TowerToHyperService::new(app.layer(Extension(ConnectionUser(user))));
            if let Err(error) = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

/// The address clients should use for a listener bound to `bound` (a wildcard becomes loopback).
pub fn client_address(bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    }
}
