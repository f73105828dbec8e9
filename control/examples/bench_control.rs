//! The load generator behind `cargo xtask bench control`: one measurement phase per invocation,
//! against a skiff-control that is already running.
//!
//! Owns the client side of every number in `docs/bench/control.md`. It speaks only the standard
//! Kubernetes REST API, over HTTPS with HTTP/1.1 and one keep-alive connection per simulated
//! client; it trusts the cluster CA from the data directory and authenticates with the admin
//! bearer token. Each phase prints `result <name> <value>` lines on stdout for xtask to collect.
//! Never starts or stops a server and never reads its memory: xtask owns the processes, the RSS
//! readings and the report.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request, StatusCode,
    body::{Bytes, Incoming},
    client::conn::http1::{self, SendRequest},
    header,
};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::Semaphore, task::JoinSet};
use tokio_rustls::TlsConnector;

/// How long one request (or one connection attempt) may take before the phase fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Watch connections opened at the same time while the watchers are being set up.
const WATCH_CONNECT_CONCURRENCY: usize = 64;
/// How long watchers may still receive events after the writer's last change.
const WATCH_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between "every watcher is established" and the first change, so the server has
/// registered every watch before anything is timed.
const WATCH_SETTLE: Duration = Duration::from_millis(500);

/// Namespaces the phases work in (each created when missing).
const LATENCY_NAMESPACE: &str = "bench-latency";
const WRITES_NAMESPACE: &str = "bench-writes";
const PODS_NAMESPACE: &str = "bench";
const WATCH_NAMESPACE: &str = "bench-watch";

/// One measurement phase of `cargo xtask bench control` against a running skiff-control.
#[derive(Parser, Debug)]
#[command(name = "bench_control", about, long_about = None)]
struct Cli {
    /// The API server, e.g. `https://127.0.0.1:6443`.
    #[arg(long)]
    server: String,
    /// The cluster CA certificate (PEM): `<data-dir>/pki/ca.crt`.
    #[arg(long)]
    ca: PathBuf,
    /// A file holding the bearer token: `<data-dir>/admin.token`.
    #[arg(long)]
    token_file: PathBuf,
    #[command(subcommand)]
    phase: Phase,
}

#[derive(Subcommand, Debug)]
enum Phase {
    /// Wait until `/readyz` answers 200.
    Ready {
        #[arg(long, default_value_t = 30)]
        timeout_seconds: u64,
    },
    /// Sequential create, get and update (PUT) of COUNT pods: p50/p99 latency of each.
    Latency {
        #[arg(long)]
        count: usize,
    },
    /// COUNT ConfigMap creates spread over CLIENTS concurrent connections: writes per second.
    Writes {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        clients: usize,
    },
    /// Create COUNT small pods in namespace `bench` over CLIENTS concurrent connections.
    CreatePods {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        clients: usize,
    },
    /// List the pods of namespace `bench` unpaged and with `limit=PAGE_SIZE` (median of ROUNDS).
    ListPods {
        /// How many pods each list must return.
        #[arg(long)]
        expected: usize,
        #[arg(long, default_value_t = 500)]
        page_size: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// WATCHERS watch connections on one namespace's ConfigMaps; a writer makes EVENTS changes
    /// INTERVAL_MS apart, each stamped with its send time; every delivery's delay is recorded.
    Watch {
        #[arg(long)]
        watchers: usize,
        #[arg(long)]
        events: usize,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
}

/// Where and as whom to connect.
struct Target {
    host: String,
    port: u16,
    /// `host:port`, sent as the `Host` header.
    authority: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    authorization: String,
}

impl Target {
    fn new(server: &str, ca: &Path, token_file: &Path) -> anyhow::Result<Target> {
        let uri: hyper::Uri = server
            .parse()
            .with_context(|| format!("--server {server} is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            bail!("--server {server}: only https:// URLs are supported");
        }
        let host = uri
            .host()
            .with_context(|| format!("--server {server} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .with_context(|| format!("--server {server}: {host} is not a valid TLS name"))?;
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("reading the bearer token {}", token_file.display()))?;
        Ok(Target {
            authority: format!("{host}:{port}"),
            host,
            port,
            server_name,
            tls: TlsConnector::from(tls_config(ca)?),
            authorization: format!("Bearer {}", token.trim()),
        })
    }

    /// A new TLS connection speaking HTTP/1.1.
    async fn connect(self: &Arc<Self>) -> anyhow::Result<Connection> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .with_context(|| format!("connecting to {}", self.authority))?;
            tcp.set_nodelay(true)
                .context("setting TCP_NODELAY on the API connection")?;
            let tls = self
                .tls
                .connect(self.server_name.clone(), tcp)
                .await
                .with_context(|| format!("TLS handshake with {}", self.authority))?;
            let (sender, connection) = http1::handshake(TokioIo::new(tls))
                .await
                .with_context(|| format!("HTTP/1.1 handshake with {}", self.authority))?;
            tokio::spawn(async move {
                // Ends when the sender is dropped or the server closes the connection; a
                // request in flight then reports the error itself.
                let _ = connection.await;
            });
            anyhow::Ok(sender)
        };
        let sender = tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .with_context(|| {
                format!(
                    "connecting to {} took longer than {REQUEST_TIMEOUT:?}",
                    self.authority
                )
            })??;
        Ok(Connection {
            target: Arc::clone(self),
            sender,
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let body = match body {
            Some(value) => Bytes::from(serde_json::to_vec(value)?),
            None => Bytes::new(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(header::AUTHORIZATION, &self.authorization)
            .header(header::ACCEPT, "application/json");
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(body))
            .with_context(|| format!("building the request for {path}"))
    }
}

fn tls_config(ca: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading the CA certificate {}", ca.display()))?
    {
        let certificate =
            certificate.with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
        roots
            .add(certificate)
            .with_context(|| format!("{} holds an unusable CA certificate", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate", ca.display());
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("choosing TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One keep-alive HTTP/1.1 connection: one simulated client.
struct Connection {
    target: Arc<Target>,
    sender: SendRequest<Full<Bytes>>,
}

/// A response read to its end.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl Answer {
    /// Fails naming `what` and quoting the server's answer unless the status is `wanted`.
    fn expect(&self, wanted: StatusCode, what: &str) -> anyhow::Result<()> {
        if self.status == wanted {
            return Ok(());
        }
        let body = String::from_utf8_lossy(&self.body);
        let quoted: String = body.chars().take(600).collect();
        bail!(
            "{what}: expected {wanted}, the server answered {}: {quoted}",
            self.status
        )
    }

    fn json(&self, what: &str) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("{what}: the body is not JSON"))
    }
}

impl Connection {
    /// Sends a request and reads the whole response; reconnects once if the server had closed
    /// the idle connection.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let exchange = async {
            if self.sender.ready().await.is_err() {
                *self = self.target.connect().await?;
            }
            let request = self.target.request(method.clone(), path, body)?;
            let response = self
                .sender
                .send_request(request)
                .await
                .with_context(|| format!("{method} {path}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .with_context(|| format!("reading the answer to {method} {path}"))?
                .to_bytes();
            anyhow::Ok(Answer { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {path} took longer than {REQUEST_TIMEOUT:?}"))?
    }

    /// Sends a GET whose answer streams (a watch); returns the status and the unread body.
    async fn open_stream(mut self, path: &str) -> anyhow::Result<(StatusCode, Incoming)> {
        let open = async {
            self.sender
                .ready()
                .await
                .with_context(|| format!("the connection for GET {path} closed"))?;
            let request = self.target.request(Method::GET, path, None)?;
            let response = self
                .sender
                .send_request(request)
                .await
                .with_context(|| format!("GET {path}"))?;
            anyhow::Ok((response.status(), response.into_body()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, open)
            .await
            .with_context(|| format!("GET {path} sent no headers within {REQUEST_TIMEOUT:?}"))?
    }
}

/// Prints one result line for xtask.
fn result(name: &str, value: f64) {
    println!("result {name} {value:.3}");
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The nearest-rank `quantile` (0 < q <= 1) of `sorted`, in milliseconds.
fn percentile(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank: the smallest value with at least `quantile` of the samples at or below it.
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    milliseconds(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn report_percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    result(&format!("{name}_p50_ms"), percentile(&samples, 0.50));
    result(&format!("{name}_p99_ms"), percentile(&samples, 0.99));
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    percentile(&samples, 0.50)
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    })
}

fn config_map(name: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": data,
    })
}

/// Creates `namespace` unless it exists.
async fn ensure_namespace(connection: &mut Connection, namespace: &str) -> anyhow::Result<()> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    let answer = connection
        .send(Method::POST, "/api/v1/namespaces", Some(&body))
        .await?;
    if answer.status == StatusCode::CONFLICT {
        return Ok(());
    }
    answer.expect(
        StatusCode::CREATED,
        &format!("creating namespace {namespace}"),
    )
}

async fn ready(target: &Arc<Target>, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        let attempt = async {
            let mut connection = target.connect().await?;
            connection.send(Method::GET, "/readyz", None).await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(answer)) if answer.status == StatusCode::OK => return Ok(()),
            Ok(Ok(answer)) => {
                last = format!(
                    "{}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body).trim()
                );
            }
            Ok(Err(error)) => last = format!("{error:#}"),
            Err(_) => last = "no answer within 2 s".to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{}/readyz did not answer 200 within {timeout:?} (last: {last})",
        target.authority
    )
}

async fn latency(target: &Arc<Target>, count: usize) -> anyhow::Result<()> {
    let mut connection = target.connect().await?;
    ensure_namespace(&mut connection, LATENCY_NAMESPACE).await?;
    let collection = format!("/api/v1/namespaces/{LATENCY_NAMESPACE}/pods");
    let names: Vec<String> = (0..count).map(|index| format!("latency-{index}")).collect();

    let mut creates = Vec::with_capacity(count);
    for name in &names {
        let body = pod(name);
        let started = Instant::now();
        let answer = connection
            .send(Method::POST, &collection, Some(&body))
            .await?;
        creates.push(started.elapsed());
        answer.expect(StatusCode::CREATED, &format!("creating pod {name}"))?;
    }

    let mut gets = Vec::with_capacity(count);
    let mut objects = Vec::with_capacity(count);
    for name in &names {
        let path = format!("{collection}/{name}");
        let started = Instant::now();
        let answer = connection.send(Method::GET, &path, None).await?;
        gets.push(started.elapsed());
        answer.expect(StatusCode::OK, &format!("getting pod {name}"))?;
        objects.push(answer.json(&format!("getting pod {name}"))?);
    }

    let mut updates = Vec::with_capacity(count);
    for (name, mut object) in names.iter().zip(objects) {
        let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            bail!("pod {name} as read has no metadata");
        };
        if metadata
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_none()
        {
            bail!("pod {name} as read has no metadata.resourceVersion");
        }
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        let Some(labels) = labels.as_object_mut() else {
            bail!("pod {name} as read has metadata.labels that is not an object");
        };
        labels.insert("updated".to_owned(), json!("true"));
        let path = format!("{collection}/{name}");
        let started = Instant::now();
        let answer = connection.send(Method::PUT, &path, Some(&object)).await?;
        updates.push(started.elapsed());
        answer.expect(StatusCode::OK, &format!("updating pod {name}"))?;
    }

    report_percentiles("create", creates);
    report_percentiles("get", gets);
    report_percentiles("update", updates);
    Ok(())
}

/// Opens `clients` connections, then sends `count` requests made by `request` (given the
/// request's index) over them concurrently, each expecting `201 Created`. Returns the time from
/// the first request to the last answer.
async fn concurrent_creates(
    target: &Arc<Target>,
    clients: usize,
    count: usize,
    request: impl Fn(usize) -> (String, Value) + Send + Sync + 'static,
) -> anyhow::Result<Duration> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients.max(1) {
        connections.push(target.connect().await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let request = Arc::new(request);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for mut connection in connections {
        let (next, request) = (Arc::clone(&next), Arc::clone(&request));
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return anyhow::Ok(());
                }
                let (path, body) = request(index);
                let answer = connection.send(Method::POST, &path, Some(&body)).await?;
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                answer.expect(StatusCode::CREATED, &format!("POST {path} ({name})"))?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a client task panicked")??;
    }
    Ok(started.elapsed())
}

async fn writes(target: &Arc<Target>, count: usize, clients: usize) -> anyhow::Result<()> {
    let mut connection = target.connect().await?;
    ensure_namespace(&mut connection, WRITES_NAMESPACE).await?;
    let collection = format!("/api/v1/namespaces/{WRITES_NAMESPACE}/configmaps");
    let elapsed = concurrent_creates(target, clients, count, move |index| {
        let name = format!("write-{clients}-{index}");
        (
            collection.clone(),
            config_map(&name, json!({"key": "value"})),
        )
    })
    .await?;
    result("writes_per_second", count as f64 / elapsed.as_secs_f64());
    Ok(())
}

async fn create_pods(target: &Arc<Target>, count: usize, clients: usize) -> anyhow::Result<()> {
    let mut connection = target.connect().await?;
    ensure_namespace(&mut connection, PODS_NAMESPACE).await?;
    let collection = format!("/api/v1/namespaces/{PODS_NAMESPACE}/pods");
    let elapsed = concurrent_creates(target, clients, count, move |index| {
        (collection.clone(), pod(&format!("pod-{index:05}")))
    })
    .await?;
    result(
        "pods_created_per_second",
        count as f64 / elapsed.as_secs_f64(),
    );
    Ok(())
}

fn items_of(list: &Value, what: &str) -> anyhow::Result<usize> {
    list["items"]
        .as_array()
        .map(Vec::len)
        .with_context(|| format!("{what}: the answer has no items array"))
}

/// One unpaged list: the request's duration and the response size in bytes.
async fn list_unpaged(
    connection: &mut Connection,
    collection: &str,
    expected: usize,
) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let answer = connection.send(Method::GET, collection, None).await?;
    let waited = started.elapsed();
    answer.expect(StatusCode::OK, "listing pods unpaged")?;
    let items = items_of(
        &answer.json("listing pods unpaged")?,
        "listing pods unpaged",
    )?;
    if items != expected {
        bail!("the unpaged list of namespace {PODS_NAMESPACE} held {items} pods, not {expected}");
    }
    Ok((waited, answer.body.len()))
}

/// One paged list to the end: the summed duration of its requests and the number of pages.
/// Parsing each page (for its continue token) is not timed.
async fn list_paged(
    connection: &mut Connection,
    collection: &str,
    expected: usize,
    page_size: usize,
) -> anyhow::Result<(Duration, usize)> {
    let (mut waited, mut items, mut pages, mut token) = (Duration::ZERO, 0, 0, String::new());
    loop {
        let mut path = format!("{collection}?limit={page_size}");
        if !token.is_empty() {
            path.push_str(&format!("&continue={}", query_escape(&token)));
        }
        let started = Instant::now();
        let answer = connection.send(Method::GET, &path, None).await?;
        waited += started.elapsed();
        pages += 1;
        answer.expect(StatusCode::OK, &format!("listing pods ({path})"))?;
        let page = answer.json(&format!("listing pods ({path})"))?;
        items += items_of(&page, &format!("listing pods ({path})"))?;
        token = page["metadata"]["continue"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if token.is_empty() {
            break;
        }
        if pages > expected / page_size.max(1) + 2 {
            bail!("paging through namespace {PODS_NAMESPACE} did not end after {pages} pages");
        }
    }
    if items != expected {
        bail!("the paged list of namespace {PODS_NAMESPACE} held {items} pods, not {expected}");
    }
    Ok((waited, pages))
}

/// Unpaged and paged lists, measured independently: a failure of one still reports the other.
async fn list_pods(
    target: &Arc<Target>,
    expected: usize,
    page_size: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let collection = format!("/api/v1/namespaces/{PODS_NAMESPACE}/pods");
    let mut connection = target.connect().await?;
    let unpaged = async {
        let (mut times, mut bytes) = (Vec::new(), 0);
        for _ in 0..rounds.max(1) {
            let (waited, size) = list_unpaged(&mut connection, &collection, expected).await?;
            times.push(waited);
            bytes = size;
        }
        result("list_full_ms", median(times));
        result("list_full_mib", bytes as f64 / (1024.0 * 1024.0));
        anyhow::Ok(())
    }
    .await;
    // A failed request may have left the connection unusable.
    let mut connection = target.connect().await?;
    let paged = async {
        let (mut times, mut pages) = (Vec::new(), 0);
        for _ in 0..rounds.max(1) {
            let (waited, count) =
                list_paged(&mut connection, &collection, expected, page_size).await?;
            times.push(waited);
            pages = count;
        }
        result("list_paged_ms", median(times));
        result("list_pages", pages as f64);
        anyhow::Ok(())
    }
    .await;
    match (unpaged, paged) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
        (Err(unpaged), Err(paged)) => Err(unpaged.context(format!("and also: {paged:#}"))),
    }
}

/// Percent-encodes everything but unreserved characters (continue tokens are opaque).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// What one watcher saw.
struct Deliveries {
    delays: Vec<Duration>,
    /// Why the stream ended early, if it did.
    ended: Option<String>,
}

/// Reads a watch stream until `events` stamped changes arrived, the stream ends or `stop` fires.
/// Each arrival is timed when its bytes are read, before parsing.
async fn watcher(
    mut body: Incoming,
    base: Instant,
    events: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Deliveries {
    let mut delays = Vec::with_capacity(events);
    let mut buffer: Vec<u8> = Vec::new();
    let ended = loop {
        if delays.len() >= events {
            break None;
        }
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = stop.changed() => break Some("still open when the drain timeout passed".to_owned()),
        };
        let arrived = base.elapsed();
        let data = match frame {
            None => break Some("the server ended the stream".to_owned()),
            Some(Err(error)) => break Some(format!("reading the stream failed: {error}")),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            match event["type"].as_str() {
                Some("ADDED" | "MODIFIED") => {}
                Some("ERROR") => {
                    return Deliveries {
                        delays,
                        ended: Some(format!("the server sent an ERROR event: {event}")),
                    };
                }
                _ => continue,
            }
            let sent = event["object"]["data"]["sent"]
                .as_str()
                .and_then(|sent| sent.parse::<u64>().ok());
            if let Some(sent) = sent {
                delays.push(arrived.saturating_sub(Duration::from_nanos(sent)));
            }
        }
    };
    Deliveries { delays, ended }
}

async fn watch(
    target: &Arc<Target>,
    watchers: usize,
    events: usize,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut writer = target.connect().await?;
    ensure_namespace(&mut writer, WATCH_NAMESPACE).await?;
    let collection = format!("/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps");
    let answer = writer
        .send(Method::GET, &format!("{collection}?limit=1"), None)
        .await?;
    answer.expect(StatusCode::OK, "listing configmaps for a resourceVersion")?;
    let list = answer.json("listing configmaps")?;
    let resource_version = list["metadata"]["resourceVersion"]
        .as_str()
        .with_context(|| format!("the configmap list has no metadata.resourceVersion: {list}"))?
        .to_owned();
    let watch_path = format!("{collection}?watch=1&resourceVersion={resource_version}");

    // Every watcher is established (its response headers arrived) before the first change.
    let base = Instant::now();
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let connecting = Arc::new(Semaphore::new(WATCH_CONNECT_CONCURRENCY));
    let (ready_sender, mut ready) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(watchers);
    let mut tasks = JoinSet::new();
    for _ in 0..watchers {
        let (target, watch_path, stop) = (Arc::clone(target), watch_path.clone(), stop.clone());
        let (connecting, ready_sender) = (Arc::clone(&connecting), ready_sender.clone());
        tasks.spawn(async move {
            let opened = async {
                let _permit = connecting.acquire().await?;
                let (status, body) = target.connect().await?.open_stream(&watch_path).await?;
                if status != StatusCode::OK {
                    let answer = body.collect().await.map(|body| body.to_bytes());
                    let answer = answer.unwrap_or_default();
                    bail!(
                        "GET {watch_path}: expected 200 OK, the server answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                anyhow::Ok(body)
            }
            .await;
            match opened {
                Ok(body) => {
                    let _ = ready_sender.send(Ok(())).await;
                    watcher(body, base, events, stop).await
                }
                Err(error) => {
                    let ended = Some(format!("{error:#}"));
                    let _ = ready_sender.send(Err(error)).await;
                    Deliveries {
                        delays: Vec::new(),
                        ended,
                    }
                }
            }
        });
    }
    drop(ready_sender);
    for _ in 0..watchers {
        match ready.recv().await {
            Some(Ok(())) => {}
            Some(Err(error)) => return Err(error.context("opening a watch")),
            None => bail!("a watcher task ended before its watch was open"),
        }
    }
    let connect_seconds = base.elapsed().as_secs_f64();
    tokio::time::sleep(WATCH_SETTLE).await;

    let writes_started = Instant::now();
    for index in 0..events {
        let sent = base.elapsed().as_nanos().to_string();
        let name = format!("event-{index}");
        let body = config_map(&name, json!({"sent": sent}));
        writer
            .send(Method::POST, &collection, Some(&body))
            .await?
            .expect(StatusCode::CREATED, &format!("creating configmap {name}"))?;
        let next = writes_started + interval * u32::try_from(index + 1).unwrap_or(u32::MAX);
        tokio::time::sleep_until(next.into()).await;
    }

    let drain = tokio::time::sleep(WATCH_DRAIN_TIMEOUT);
    tokio::pin!(drain);
    let mut delays = Vec::with_capacity(watchers * events);
    let mut problems: Vec<String> = Vec::new();
    let mut stopped = false;
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let deliveries = joined.context("a watcher task panicked")?;
                delays.extend(deliveries.delays);
                problems.extend(deliveries.ended);
            }
            () = &mut drain, if !stopped => {
                stopped = true;
                let _ = stop_sender.send(true);
            }
        }
    }
    let received = delays.len();
    let expected = watchers * events;
    if let Some(first) = problems.first() {
        eprintln!(
            "bench_control: {} of {watchers} watchers ended early; the first: {first}",
            problems.len()
        );
    }
    result("watch_connect_seconds", connect_seconds);
    report_percentiles("watch", delays);
    result("watch_deliveries", received as f64);
    result("watch_expected", expected as f64);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Arc::new(Target::new(&cli.server, &cli.ca, &cli.token_file)?);
    match cli.phase {
        Phase::Ready { timeout_seconds } => {
            ready(&target, Duration::from_secs(timeout_seconds)).await
        }
        Phase::Latency { count } => latency(&target, count).await,
        Phase::Writes { count, clients } => writes(&target, count, clients).await,
        Phase::CreatePods { count, clients } => create_pods(&target, count, clients).await,
        Phase::ListPods {
            expected,
            page_size,
            rounds,
        } => list_pods(&target, expected, page_size, rounds).await,
        Phase::Watch {
            watchers,
            events,
            interval_ms,
        } => {
            watch(
                &target,
                watchers,
                events,
                Duration::from_millis(interval_ms),
            )
            .await
        }
    }
}
