//! The kubelet's HTTPS server on `--address:--port` (10250): what the API server and operators ask
//! a node directly.
//!
//! Endpoints: `/healthz` (`ok`), `/pods` (a `PodList` of the pods this kubelet runs),
//! `/containerLogs/{namespace}/{pod}/{container}` ([`logs`]) and `/metrics` ([`metrics`]).
//!
//! Authentication: a TLS client certificate verified against `--client-ca-file`, or, when that
//! flag is not given, against the certificate authority of the kubeconfig's cluster (skiff-control
//! signs its kubelet-client certificate with that CA). Every verified certificate may call every
//! endpoint (upstream's `--authorization-mode=AlwaysAllow`); requests without one get
//! `401 Unauthorized` everywhere but `/healthz`. Bearer tokens (upstream's webhook authentication
//! through TokenReview) are not accepted.
//!
//! Owns the listener, TLS termination ([`tls`]), authentication and routing. Reads the pod
//! registry the pod side fills and asks the runtime about containers; never changes a pod,
//! the runtime or the API.

pub mod logs;
pub mod metrics;
pub mod tls;

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::{Path, Query, Request, State},
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
use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::{
    cri::Runtime,
    pod::{pod_name, pod_namespace},
    worker::PodRegistry,
};

/// How the server listens and whom it trusts.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--address`.
    pub address: IpAddr,
    /// `--port`.
    pub port: u16,
    /// `--tls-cert-file`/`--tls-private-key-file`, or the self-signed pair under `--root-dir`.
    pub serving: tls::ServingCertificate,
    /// `--client-ca-file`; without it, the kubeconfig's cluster CA.
    pub client_ca_file: Option<PathBuf>,
    /// `--kubeconfig`, for its cluster CA.
    pub kubeconfig: PathBuf,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address is taken or not ours.
    #[error("listening on {address}: {source}")]
    Bind {
        /// `--address:--port`.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The serving certificate or the client CA is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The kubeconfig (read for its cluster CA) is unusable.
    #[error("reading the cluster CA of kubeconfig {path}: {message}")]
    Kubeconfig {
        /// `--kubeconfig`.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// What the handlers read.
pub struct ServerState {
    node_name: String,
    pods: PodRegistry,
    runtime: Option<Runtime>,
    pod_logs_dir: PathBuf,
    requests: Mutex<metrics::RequestCounts>,
}

impl ServerState {
    /// The state of the server of node `node_name`: the pods the pod side runs, the runtime
    /// (when it answered) and `--pod-logs-dir`.
    #[must_use]
    pub fn new(
        node_name: String,
        pods: PodRegistry,
        runtime: Option<Runtime>,
        pod_logs_dir: PathBuf,
    ) -> Arc<ServerState> {
        Arc::new(ServerState {
            node_name,
            pods,
            runtime,
            pod_logs_dir,
            requests: Mutex::new(BTreeMap::new()),
        })
    }

    fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods
            .read()
            .map(|pods| pods.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// A bound listener with its TLS configuration, not yet serving.
pub struct Server {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
}

impl Server {
    /// Loads or generates the serving certificate, loads the client CA and binds the address.
    ///
    /// # Errors
    /// [`ServerError`] naming the file or address at fault.
    pub async fn bind(options: &ServerOptions) -> Result<Server, ServerError> {
        let (certificate, key) = options.serving.load_or_generate()?;
        let client_cas = match &options.client_ca_file {
            Some(path) => tls::client_cas_from_file(path)?,
            None => kubeconfig_cas(&options.kubeconfig).await?,
        };
        let tls = tls::server_config(&certificate, &key, client_cas)?;
        let address = SocketAddr::from((options.address, options.port));
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Bind { address, source })?;
        Ok(Server { listener, tls })
    }

    /// The address actually bound (the port, when `--port` was 0).
    ///
    /// # Errors
    /// When the socket cannot say.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes. Connections already accepted (a followed log) end
    /// with the process.
    pub async fn serve(self, state: Arc<ServerState>, shutdown: impl Future<Output = ()>) {
        let acceptor = TlsAcceptor::from(self.tls);
        let app = router(state);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (connection, peer) = tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "accepting a connection on the kubelet server");
                        continue;
                    }
                },
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
                // rustls exposes peer certificates only once they verified against the CA.
                let verified = stream.get_ref().1.peer_certificates().is_some();
                let service =
                    TowerToHyperService::new(app.layer(Extension(Authenticated(verified))));
                if let Err(error) = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, %error, "kubelet server connection ended with an error");
                }
            });
        }
    }
}

/// The CA certificates of the kubeconfig's current cluster.
async fn kubeconfig_cas(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ServerError> {
    let failed = |message: String| ServerError::Kubeconfig {
        path: path.to_owned(),
        message,
    };
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|error| failed(error.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|error| failed(error.to_string()))?;
    Ok(tls::client_cas_from_kubeconfig(
        config.root_cert.as_deref().unwrap_or_default(),
    ))
}

/// Whether the connection presented a client certificate the CA verified.
#[derive(Clone, Copy)]
struct Authenticated(bool);

/// The server's routes, authentication and request counting.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/pods", get(pods))
        .route("/metrics", get(metrics_text))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .layer(middleware::from_fn(authenticate))
        .with_state(state)
}

async fn authenticate(
    Extension(Authenticated(verified)): Extension<Authenticated>,
    request: Request,
    next: Next,
) -> Response {
    if verified || request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    text(StatusCode::UNAUTHORIZED, "Unauthorized\n".to_owned())
}

async fn count_requests(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let root = request
        .uri()
        .path()
        .split('/')
        .find(|segment| !segment.is_empty())
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut requests) = state.requests.lock() {
        *requests.entry((method, root)).or_default() += 1;
    }
    next.run(request).await
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404 page not found\n".to_owned())
}

async fn pods(State(state): State<Arc<ServerState>>) -> Response {
    let mut items = state.pods();
    items.sort_by(|a, b| (pod_namespace(a), pod_name(a)).cmp(&(pod_namespace(b), pod_name(b))));
    let items: Vec<&Pod> = items.iter().map(AsRef::as_ref).collect();
    Json(json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    }))
    .into_response()
}

async fn metrics_text(State(state): State<Arc<ServerState>>) -> Response {
    let requests = state
        .requests
        .lock()
        .map(|requests| requests.clone())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&state.node_name, &state.pods(), &requests),
    )
        .into_response()
}

async fn container_logs(
    State(state): State<Arc<ServerState>>,
    Path((namespace, pod_name_wanted, container)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let candidates = state.pods();
    let mut matching = candidates
        .iter()
        .filter(|pod| pod_namespace(pod) == namespace && pod_name(pod) == pod_name_wanted);
    // The newest incarnation of a name wins over one still terminating.
    let pod = matching
        .clone()
        .find(|pod| pod.metadata.deletion_timestamp.is_none())
        .or_else(|| matching.next());
    let Some(pod) = pod else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {pod_name_wanted:?} does not exist\n"),
        );
    };
    if !has_container(pod, &container) {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod_name_wanted:?}\n"),
        );
    }
    let query = match logs::parse_query(&query, Timestamp::now()) {
        Ok(query) => query,
        Err(message) => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
    };
    let instance = match logs::select_instance(pod, &container, query.previous) {
        Ok(instance) => instance,
        Err(message) => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
    };
    let path = logs::log_path(
        state.runtime.as_ref(),
        &state.pod_logs_dir,
        pod,
        &container,
        &instance,
    )
    .await;
    let content_type = [(header::CONTENT_TYPE, "text/plain")];
    if query.follow && !query.previous {
        let chunks = logs::follow(
            path,
            query.options,
            state.runtime.clone(),
            instance.container_id,
        );
        let stream = futures_util::stream::unfold(chunks, |mut chunks| async move {
            chunks.recv().await.map(|chunk| (chunk, chunks))
        });
        return (content_type, Body::from_stream(stream)).into_response();
    }
    match tokio::task::spawn_blocking(move || logs::read_once(&path, &query.options)).await {
        Ok(Ok(output)) => (content_type, output).into_response(),
        Ok(Err(message)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the log: {error}\n"),
        ),
    }
}

/// Whether the pod's spec has a container, init container or ephemeral container `name`.
fn has_container(pod: &Pod, name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.containers
        .iter()
        .any(|container| container.name == name)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|container| container.name == name)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|container| container.name == name)
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A CA: its certificate PEM and an issuer to sign client certificates with.
    fn certificate_authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("a CA key");
        let certificate = params.self_signed(&key).expect("a CA certificate");
        (certificate.pem(), Issuer::new(params, key))
    }

    /// A client certificate and key (PEM) signed by `issuer`.
    fn client_certificate(issuer: &Issuer<'static, KeyPair>) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver-kubelet-client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("a client key");
        let certificate = params
            .signed_by(&key, issuer)
            .expect("a client certificate");
        (certificate.pem(), key.serialize_pem())
    }

    /// A server on 127.0.0.1 trusting `client_ca_pem`, with no pods; its port and root dir.
    async fn start_server(client_ca_pem: &str) -> (u16, tempfile::TempDir) {
        let root = tempfile::tempdir().expect("a temporary directory");
        let ca_file = root.path().join("client-ca.crt");
        std::fs::write(&ca_file, client_ca_pem).expect("the CA file");
        let server = Server::bind(&ServerOptions {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            serving: tls::ServingCertificate {
                files: None,
                root_dir: root.path().to_owned(),
                node_name: "node-a".to_owned(),
                node_ip: IpAddr::from([127, 0, 0, 1]),
            },
            client_ca_file: Some(ca_file),
            kubeconfig: root.path().join("unused"),
        })
        .await
        .expect("the server binds");
        let port = server.local_addr().expect("an address").port();
        let state = ServerState::new(
            "node-a".to_owned(),
            PodRegistry::default(),
            None,
            root.path().join("logs"),
        );
        tokio::spawn(server.serve(state, std::future::pending()));
        (port, root)
    }

    /// `GET path` over TLS, trusting the server's self-signed certificate and presenting
    /// `client` when given; the status code and body, or `None` when TLS failed.
    async fn get(
        port: u16,
        root: &std::path::Path,
        path: &str,
        client: Option<&(String, String)>,
    ) -> Option<(u16, String)> {
        let serving = std::fs::read(root.join("pki/kubelet.crt")).expect("the serving cert");
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(&serving) {
            roots.add(certificate.expect("PEM")).expect("a root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        let config = match client {
            Some((certificate, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(certificate.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .expect("the chain"),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("the key"),
                )
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("a name");
        let mut stream = connector.connect(name, tcp).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: node-a\r\nConnection: close\r\n\r\n");
        // TLS 1.3 reports a refused client certificate only on the first read.
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_owned()))
    }

    #[tokio::test]
    async fn only_healthz_answers_without_a_client_certificate() {
        let (ca, issuer) = certificate_authority("cluster-ca");
        let (port, root) = start_server(&ca).await;
        let health = get(port, root.path(), "/healthz", None).await;
        assert_eq!(health, Some((200, "ok".to_owned())));
        for path in [
            "/pods",
            "/metrics",
            "/containerLogs/default/web/main",
            "/nope",
        ] {
            let anonymous = get(port, root.path(), path, None).await;
            assert_eq!(anonymous.map(|(code, _)| code), Some(401), "{path}");
        }
        let client = client_certificate(&issuer);
        let (code, body) = get(port, root.path(), "/pods", Some(&client))
            .await
            .expect("an answer");
        assert_eq!(code, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).expect("a PodList");
        assert_eq!(list["kind"], "PodList");
        let (code, body) = get(
            port,
            root.path(),
            "/containerLogs/default/web/main",
            Some(&client),
        )
        .await
        .expect("an answer");
        assert_eq!((code, body.as_str()), (404, "pod \"web\" does not exist\n"));
    }

    #[tokio::test]
    async fn a_certificate_of_another_ca_is_refused() {
        let (ca, _) = certificate_authority("cluster-ca");
        let (_, stranger) = certificate_authority("someone-else");
        let (port, root) = start_server(&ca).await;
        let client = client_certificate(&stranger);
        let answer = get(port, root.path(), "/pods", Some(&client)).await;
        assert_eq!(answer, None, "the handshake must fail");
    }
}
