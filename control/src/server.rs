//! The HTTPS listener and the routes served so far: `/version` and the health endpoints.
//!
//! Owns TLS termination (rustls), per-connection client-certificate identity, bearer-token
//! authentication, and `Status` error bodies as upstream shapes them. Resource endpoints are not
//! served yet (issue #4); unknown paths get a `404 NotFound` Status.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Extension, Json, Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
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

use crate::auth::{self, User};

/// The Kubernetes version whose API this server speaks.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "35";
pub const GIT_VERSION: &str = "v1.35.0+skiff";

/// What every request handler shares.
pub struct ApiState {
    pub store: Box<dyn Store>,
    pub admin_token: String,
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
        .fallback(not_found)
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
