//! kube-proxy's two health endpoints, answered as upstream answers them
//! (`pkg/proxy/healthcheck/{service_health.go,proxy_health.go}`).
//!
//! - Service health checks: one listener per `spec.healthCheckNodePort` (`type: LoadBalancer`
//!   with `externalTrafficPolicy: Local`) on `<bind address>:<port>`, answering any path with
//!   200 when the Service has local endpoints and the proxy is healthy, 503 otherwise, so that
//!   cloud load balancers send traffic only to nodes with endpoints ([`ServiceHealthServer`]).
//! - The proxy's own `/healthz` and `/livez` on `--healthz-bind-address`: 503 when an update has
//!   waited longer than the health timeout for a successful sync ([`ProxyHealth`],
//!   [`serve_proxy_health`]).
//!
//! Owns these listeners, their threads and the JSON they answer. Knows nothing about BPF maps or
//! the Kubernetes API: the caller passes [`HealthCheck`]s from the translation and reports syncs.
//! Never panics on a request: a malformed or slow request only ends its own connection.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tracing::{debug, info, warn};

use crate::translate::HealthCheck;

/// How often a service health listener checks whether it was closed.
const ACCEPT_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a client may take to send its request head, and to take the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The most request head bytes read before answering; the rest is ignored.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// A health check node port that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum HealthCheckError {
    #[error(
        "cannot listen on {address} for the health check node port of service {namespace}/{name} \
         (spec.healthCheckNodePort {port}): {source}; retried on the next sync"
    )]
    Listen {
        namespace: String,
        name: String,
        port: u16,
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "health check node port {port} of service {namespace}/{name} is already used by service \
         {other_namespace}/{other_name}; it answers for {other_namespace}/{other_name} only"
    )]
    DuplicatePort {
        namespace: String,
        name: String,
        port: u16,
        other_namespace: String,
        other_name: String,
    },
}

impl HealthCheckError {
    /// The node port that could not be served.
    pub fn port(&self) -> u16 {
        match self {
            HealthCheckError::Listen { port, .. }
            | HealthCheckError::DuplicatePort { port, .. } => *port,
        }
    }
}

/// What a service health check port answers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceHealth {
    namespace: String,
    name: String,
    local_endpoints: usize,
}

/// The answers of all open ports, shared with their threads.
type SharedAnswers = Arc<RwLock<BTreeMap<u16, ServiceHealth>>>;

/// One open health check node port.
struct PortListener {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The listeners of `spec.healthCheckNodePort`s, one per port, each on its own thread.
///
/// Dropping the server closes every port.
pub struct ServiceHealthServer {
    bind_address: IpAddr,
    proxy_health: Option<Arc<ProxyHealth>>,
    answers: SharedAnswers,
    listeners: BTreeMap<u16, PortListener>,
}

impl ServiceHealthServer {
    /// A server that listens on `bind_address` (upstream: every node address, or the addresses
    /// of `--nodeport-addresses`); no port is open until [`update`](Self::update).
    pub fn new(bind_address: IpAddr) -> Self {
        ServiceHealthServer {
            bind_address,
            proxy_health: None,
            answers: Arc::default(),
            listeners: BTreeMap::new(),
        }
    }

    /// Answers 503 with `"serviceProxyHealthy": false` on every port while `health` is unhealthy,
    /// as upstream does. Without it the proxy counts as healthy.
    pub fn with_proxy_health(mut self, health: Arc<ProxyHealth>) -> Self {
        self.proxy_health = Some(health);
        self
    }

    /// Makes the served set equal to `checks`: opens listeners for new node ports, closes those
    /// no longer wanted (their ports are free again when this returns), and updates the answers
    /// of the others without reopening them. Returns an error per port that could not be opened
    /// (the others are still served); such a port is retried on the next call.
    pub fn update(&mut self, checks: &[HealthCheck]) -> Vec<HealthCheckError> {
        let mut errors = Vec::new();
        let mut wanted: BTreeMap<u16, ServiceHealth> = BTreeMap::new();
        for check in checks {
            if let Some(other) = wanted.get(&check.node_port) {
                errors.push(HealthCheckError::DuplicatePort {
                    namespace: check.namespace.clone(),
                    name: check.name.clone(),
                    port: check.node_port,
                    other_namespace: other.namespace.clone(),
                    other_name: other.name.clone(),
                });
                continue;
            }
            wanted.insert(
                check.node_port,
                ServiceHealth {
                    namespace: check.namespace.clone(),
                    name: check.name.clone(),
                    local_endpoints: check.local_endpoints,
                },
            );
        }

        // Close first, so that a port moving between services is free to reopen, and stop all
        // threads before waiting for any of them.
        let (kept, closing): (BTreeMap<u16, PortListener>, BTreeMap<u16, PortListener>) =
            std::mem::take(&mut self.listeners)
                .into_iter()
                .partition(|(port, _)| wanted.contains_key(port));
        self.listeners = kept;
        for listener in closing.values() {
            listener.stop.store(true, Ordering::Relaxed);
        }
        for (port, listener) in closing {
            if listener.thread.join().is_err() {
                warn!(port, "health check listener thread panicked");
            }
            info!(port, "closed health check node port");
        }

        let mut answers = self.answers.write().unwrap_or_else(PoisonError::into_inner);
        answers.retain(|port, _| wanted.contains_key(port));
        for (port, health) in wanted {
            if self.listeners.contains_key(&port) {
                answers.insert(port, health);
                continue;
            }
            let address = SocketAddr::new(self.bind_address, port);
            match self.open(address) {
                Ok(listener) => {
                    info!(
                        port,
                        service = %format_args!("{}/{}", health.namespace, health.name),
                        "opened health check node port"
                    );
                    self.listeners.insert(port, listener);
                    answers.insert(port, health);
                }
                Err(source) => {
                    warn!(%address, error = %source, "cannot open health check node port");
                    errors.push(HealthCheckError::Listen {
                        namespace: health.namespace,
                        name: health.name,
                        port,
                        address,
                        source,
                    });
                }
            }
        }
        errors
    }

    /// The node ports with an open listener, ascending.
    pub fn served_ports(&self) -> Vec<u16> {
        self.listeners.keys().copied().collect()
    }

    fn open(&self, address: SocketAddr) -> io::Result<PortListener> {
        let listener = TcpListener::bind(address)?;
        // Non-blocking so that the thread sees its stop flag; the listener (and so the port) is
        // dropped when the thread ends.
        listener.set_nonblocking(true)?;
        let port = address.port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let answers = Arc::clone(&self.answers);
        let proxy_health = self.proxy_health.clone();
        let thread = std::thread::Builder::new()
            .name(format!("health-check-{port}"))
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let answer = service_answer(port, &answers, proxy_health.as_deref());
                            if let Some(answer) = answer
                                && let Err(error) = respond(stream, |_| answer)
                            {
                                debug!(port, %error, "health check request failed");
                            }
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(ACCEPT_POLL_INTERVAL);
                        }
                        Err(error) => {
                            warn!(port, %error, "accepting a health check connection failed");
                            std::thread::sleep(ACCEPT_POLL_INTERVAL);
                        }
                    }
                }
            })?;
        Ok(PortListener { stop, thread })
    }
}

impl Drop for ServiceHealthServer {
    fn drop(&mut self) {
        for listener in self.listeners.values() {
            listener.stop.store(true, Ordering::Relaxed);
        }
        for (_, listener) in std::mem::take(&mut self.listeners) {
            let _ = listener.thread.join();
        }
    }
}

/// The answer of port `port`, or `None` if it was closed meanwhile: the connection is then
/// dropped unanswered (upstream answers an empty 200 there, which a load balancer could take for
/// healthy).
fn service_answer(
    port: u16,
    answers: &RwLock<BTreeMap<u16, ServiceHealth>>,
    proxy_health: Option<&ProxyHealth>,
) -> Option<Answer> {
    let health = answers
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&port)
        .cloned()?;
    let proxy_healthy = proxy_health.is_none_or(ProxyHealth::is_healthy);
    Some(service_health_answer(&health, proxy_healthy))
}

/// Upstream's answer, body byte for byte (tab-indented JSON without a final newline).
fn service_health_answer(health: &ServiceHealth, proxy_healthy: bool) -> Answer {
    let status = if health.local_endpoints != 0 && proxy_healthy {
        Status::Ok
    } else {
        Status::ServiceUnavailable
    };
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {}\n}}",
        json_string(&health.namespace),
        json_string(&health.name),
        health.local_endpoints,
        proxy_healthy
    );
    Answer {
        status,
        content_type: "application/json",
        endpoint_weight: Some(health.local_endpoints),
        body,
    }
}

/// The proxy's own health, shared between the sync loop (which reports) and the servers (which
/// answer). Upstream semantics: unhealthy when an update has been queued for longer than the
/// health timeout without a successful sync since; healthy while starting up (before the first
/// successful sync) and when nothing is pending.
#[derive(Debug)]
pub struct ProxyHealth {
    health_timeout: Duration,
    state: Mutex<ProxyHealthState>,
}

#[derive(Debug)]
struct ProxyHealthState {
    /// Wall-clock time of the last successful sync, for the answer.
    last_updated: Option<SystemTime>,
    /// The oldest update queued since the last successful sync.
    oldest_pending: Option<Instant>,
    node_eligible: bool,
}

/// The proxy's health at one instant, as `/healthz` and `/livez` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHealthStatus {
    pub healthy: bool,
    /// The last successful sync; `None` before the first.
    pub last_updated: Option<SystemTime>,
    pub current_time: SystemTime,
    pub node_eligible: bool,
}

impl ProxyHealth {
    /// `health_timeout`: how long a queued update may wait for a successful sync (upstream uses
    /// 2 × its sync period).
    pub fn new(health_timeout: Duration) -> Self {
        ProxyHealth {
            health_timeout,
            state: Mutex::new(ProxyHealthState {
                last_updated: None,
                oldest_pending: None,
                // As upstream before the first Node event: eligible while starting up.
                node_eligible: true,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProxyHealthState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A change was seen that the dataplane does not reflect yet. Only the oldest pending change
    /// counts towards the timeout.
    pub fn queued_update(&self) {
        let mut state = self.state();
        state.oldest_pending.get_or_insert_with(Instant::now);
    }

    /// The dataplane reflects every change seen so far.
    pub fn updated(&self) {
        let mut state = self.state();
        state.oldest_pending = None;
        state.last_updated = Some(SystemTime::now());
    }

    /// Whether this node should receive load-balancer traffic: false once it is deleted or
    /// tainted `ToBeDeletedByClusterAutoscaler`. Only `/healthz` reports it.
    pub fn set_node_eligible(&self, eligible: bool) {
        self.state().node_eligible = eligible;
    }

    /// Healthy, ignoring node eligibility (what service health checks and `/livez` use).
    pub fn is_healthy(&self) -> bool {
        self.status().healthy
    }

    /// The health now.
    pub fn status(&self) -> ProxyHealthStatus {
        self.status_at(Instant::now(), SystemTime::now())
    }

    fn status_at(&self, now: Instant, current_time: SystemTime) -> ProxyHealthStatus {
        let state = self.state();
        let late = match (state.last_updated, state.oldest_pending) {
            (Some(_), Some(pending)) => {
                now.saturating_duration_since(pending) >= self.health_timeout
            }
            // Starting up (no sync yet) or fully synced.
            _ => false,
        };
        ProxyHealthStatus {
            healthy: !late,
            last_updated: state.last_updated,
            current_time,
            node_eligible: state.node_eligible,
        }
    }
}

/// Serves `/healthz` and `/livez` for `health` on `address` (`--healthz-bind-address`) from a
/// background thread. Fails only if the address cannot be bound.
pub fn serve_proxy_health(address: SocketAddr, health: Arc<ProxyHealth>) -> io::Result<()> {
    let listener = TcpListener::bind(address)?;
    std::thread::Builder::new()
        .name("proxy-healthz".to_owned())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(error) =
                            respond(stream, |path| proxy_health_answer(path, &health.status()))
                        {
                            debug!(%error, "proxy health request failed");
                        }
                    }
                    Err(error) => {
                        warn!(%error, "accepting a proxy health connection failed");
                        std::thread::sleep(ACCEPT_POLL_INTERVAL);
                    }
                }
            }
        })?;
    info!(%address, "serving /healthz and /livez");
    Ok(())
}

/// Upstream's `/healthz` and `/livez` answers: the JSON of its `ProxyHealth` (`nodeEligible`
/// only on `/healthz`, which also fails for an ineligible node). A healthy answer reports
/// `lastUpdated` as the current time, as upstream does for compatibility.
fn proxy_health_answer(path: &str, status: &ProxyHealthStatus) -> Answer {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let with_node = match path {
        "/healthz" => true,
        "/livez" => false,
        _ => {
            return Answer {
                status: Status::NotFound,
                content_type: "text/plain; charset=utf-8",
                endpoint_weight: None,
                body: "404 page not found\n".to_owned(),
            };
        }
    };
    let healthy = status.healthy && (!with_node || status.node_eligible);
    let last_updated = if healthy {
        rfc3339(Some(status.current_time))
    } else {
        rfc3339(status.last_updated)
    };
    let mut body = format!(
        "{{\"lastUpdated\":\"{last_updated}\",\"currentTime\":\"{}\"",
        rfc3339(Some(status.current_time))
    );
    if with_node {
        let _ = write!(body, ",\"nodeEligible\":{}", status.node_eligible);
    }
    let _ = write!(body, ",\"healthy\":{}", status.healthy);
    if let Some(proxier_updated) = status.last_updated {
        // Skiff's dataplane is IPv4 only: one proxier, as upstream reports per IP family.
        let _ = write!(
            body,
            ",\"status\":{{\"IPv4\":{{\"lastUpdated\":\"{}\",\"healthy\":{}}}}}",
            rfc3339(Some(proxier_updated)),
            status.healthy
        );
    }
    body.push('}');
    Answer {
        status: if healthy {
            Status::Ok
        } else {
            Status::ServiceUnavailable
        },
        content_type: "application/json",
        endpoint_weight: None,
        body,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    NotFound,
    ServiceUnavailable,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::NotFound => "404 Not Found",
            Status::ServiceUnavailable => "503 Service Unavailable",
        }
    }
}

/// An HTTP answer before it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    status: Status,
    content_type: &'static str,
    /// `X-Load-Balancing-Endpoint-Weight`: the local endpoint count, on service health checks.
    endpoint_weight: Option<usize>,
    body: String,
}

/// Reads one request's head from `stream` and writes `answer(path)`, then closes the connection.
/// The head must arrive within [`REQUEST_TIMEOUT`] in total; bytes past [`MAX_REQUEST_BYTES`]
/// are not read.
fn respond(stream: TcpStream, answer: impl FnOnce(&str) -> Answer) -> io::Result<()> {
    // An accepted stream may inherit the listener's non-blocking mode on some platforms.
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    // Read the whole head, not only the request line: closing a connection with unread request
    // bytes resets it, which can destroy the answer before the client reads it.
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head_complete(&head) && head.len() < MAX_REQUEST_BYTES {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            ));
        }
        stream.set_read_timeout(Some(remaining))?;
        let count = (&stream).read(&mut buffer)?;
        if count == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..count]);
    }
    let request_line = head.split(|byte| *byte == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");

    let answer = answer(path);
    let mut response = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nX-Content-Type-Options: nosniff\r\n",
        answer.status.line(),
        answer.content_type
    );
    if let Some(weight) = answer.endpoint_weight {
        let _ = write!(response, "X-Load-Balancing-Endpoint-Weight: {weight}\r\n");
    }
    let _ = write!(
        response,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        answer.body.len()
    );
    if method != "HEAD" {
        response.push_str(&answer.body);
    }
    let mut stream = &stream;
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// Whether `head` holds a request line and headers up to the blank line that ends them.
fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|window| window == b"\r\n\r\n")
        || head.windows(2).any(|window| window == b"\n\n")
}

/// `value` as a JSON string literal.
fn json_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            control if u32::from(control) < 0x20 => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(control));
            }
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

/// `time` in RFC 3339 as Go's JSON encoding of `time.Time` writes it in UTC: nanoseconds with
/// trailing zeros dropped (none at all for a whole second), `Z`. `None` is Go's zero time.
fn rfc3339(time: Option<SystemTime>) -> String {
    let Some(time) = time else {
        return "0001-01-01T00:00:00Z".to_owned();
    };
    // Before 1970 only with a wrong clock: written as the epoch.
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let second_of_day = seconds % 86_400;
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    let nanos = since_epoch.subsec_nanos();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// The proleptic Gregorian date of day `days` after 1970-01-01 (days ≥ 0), by counting 400-year
/// eras of 146 097 days from 0000-03-01 (so that the leap day ends a year).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 = March … 11 = February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {

    use super::*;

    /// A port that was free a moment ago.
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("ephemeral port")
            .port()
    }

    fn check(name: &str, node_port: u16, local_endpoints: usize) -> HealthCheck {
        HealthCheck {
            namespace: "default".to_owned(),
            name: name.to_owned(),
            node_port,
            local_endpoints,
        }
    }

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        }
    }

    fn get(port: u16, path: &str) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: skiff-test\r\n\r\n"
        )
        .expect("request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("response");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|line| line.split_once(": "))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        Response {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn localhost() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[test]
    fn service_with_local_endpoints_answers_200_with_upstream_body_and_headers() {
        let port = free_port();
        let mut server = ServiceHealthServer::new(localhost());
        assert!(server.update(&[check("web", port, 2)]).is_empty());

        let response = get(port, "/any/path?x=1");

        assert_eq!(response.status, 200);
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        assert_eq!(response.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(
            response.header("X-Load-Balancing-Endpoint-Weight"),
            Some("2")
        );
        assert_eq!(
            response.body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
    }

    #[test]
    fn service_without_local_endpoints_answers_503() {
        let port = free_port();
        let mut server = ServiceHealthServer::new(localhost());
        assert!(server.update(&[check("web", port, 0)]).is_empty());

        let response = get(port, "/");

        assert_eq!(response.status, 503);
        assert_eq!(
            response.header("X-Load-Balancing-Endpoint-Weight"),
            Some("0")
        );
        assert!(response.body.contains("\"localEndpoints\": 0,"));
        assert!(response.body.contains("\"serviceProxyHealthy\": true"));
    }

    #[test]
    fn update_changes_the_answer_without_reopening_the_port() {
        let port = free_port();
        let mut server = ServiceHealthServer::new(localhost());
        assert!(server.update(&[check("web", port, 0)]).is_empty());
        assert_eq!(get(port, "/").status, 503);
        let thread = server.listeners[&port].thread.thread().id();

        assert!(server.update(&[check("web", port, 3)]).is_empty());

        let response = get(port, "/");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("X-Load-Balancing-Endpoint-Weight"),
            Some("3")
        );
        assert_eq!(server.served_ports(), vec![port]);
        assert_eq!(
            server.listeners[&port].thread.thread().id(),
            thread,
            "same listener"
        );
    }

    #[test]
    fn removed_health_check_frees_its_port() {
        let kept = free_port();
        let removed = free_port();
        let mut server = ServiceHealthServer::new(localhost());
        assert!(
            server
                .update(&[check("kept", kept, 1), check("removed", removed, 1)])
                .is_empty()
        );
        assert_eq!(get(removed, "/").status, 200);

        assert!(server.update(&[check("kept", kept, 1)]).is_empty());

        assert_eq!(server.served_ports(), vec![kept]);
        TcpListener::bind(("127.0.0.1", removed)).expect("the removed port is free again");
        assert_eq!(get(kept, "/").status, 200);
    }

    #[test]
    fn port_in_use_is_reported_and_the_others_are_served() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_port = taken.local_addr().expect("address").port();
        let free = free_port();
        let mut server = ServiceHealthServer::new(localhost());

        let errors = server.update(&[check("blocked", taken_port, 1), check("web", free, 1)]);

        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].port(), taken_port);
        let message = errors[0].to_string();
        assert!(
            message.contains(&format!("127.0.0.1:{taken_port}"))
                && message.contains("default/blocked"),
            "{message}"
        );
        assert_eq!(server.served_ports(), vec![free]);
        assert_eq!(get(free, "/").status, 200);

        drop(taken);
        assert!(
            server
                .update(&[check("blocked", taken_port, 1), check("web", free, 1)])
                .is_empty(),
            "retried once the port is free"
        );
        assert_eq!(server.served_ports().len(), 2);
    }

    #[test]
    fn silent_client_delays_others_at_most_the_request_timeout() {
        let port = free_port();
        let mut server = ServiceHealthServer::new(localhost());
        assert!(server.update(&[check("web", port, 1)]).is_empty());
        let silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let start = Instant::now();

        let response = get(port, "/");

        assert_eq!(response.status, 200);
        assert!(start.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(1));
        drop(silent);
    }

    #[test]
    fn duplicate_node_port_is_reported_and_the_first_service_served() {
        let port = free_port();
        let mut server = ServiceHealthServer::new(localhost());

        let errors = server.update(&[check("a", port, 1), check("b", port, 0)]);

        assert_eq!(errors.len(), 1);
        assert!(matches!(
            &errors[0],
            HealthCheckError::DuplicatePort { name, other_name, .. } if name == "b" && other_name == "a"
        ));
        assert_eq!(get(port, "/").status, 200);
    }

    #[test]
    fn unhealthy_proxy_fails_service_health_checks() {
        let port = free_port();
        let health = Arc::new(ProxyHealth::new(Duration::ZERO));
        let mut server =
            ServiceHealthServer::new(localhost()).with_proxy_health(Arc::clone(&health));
        assert!(server.update(&[check("web", port, 2)]).is_empty());
        health.updated();
        health.queued_update();

        let response = get(port, "/");

        assert_eq!(response.status, 503);
        assert!(response.body.contains("\"serviceProxyHealthy\": false"));
        health.updated();
        assert_eq!(get(port, "/").status, 200);
    }

    #[test]
    fn dropping_the_server_frees_every_port() {
        let port = free_port();
        let mut server = ServiceHealthServer::new(localhost());
        assert!(server.update(&[check("web", port, 1)]).is_empty());

        drop(server);

        TcpListener::bind(("127.0.0.1", port)).expect("port free after drop");
    }

    #[test]
    fn proxy_health_is_healthy_while_starting_up() {
        let health = ProxyHealth::new(Duration::ZERO);
        health.queued_update();
        assert!(health.is_healthy());
    }

    #[test]
    fn proxy_health_turns_unhealthy_only_after_the_timeout() {
        let health = ProxyHealth::new(Duration::from_secs(30));
        health.updated();
        health.queued_update();
        let queued = health.state().oldest_pending.expect("pending");
        let now = SystemTime::now();

        assert!(
            health
                .status_at(queued + Duration::from_secs(29), now)
                .healthy
        );
        assert!(
            !health
                .status_at(queued + Duration::from_secs(30), now)
                .healthy
        );
        // A later change does not restart the clock.
        health.queued_update();
        assert_eq!(health.state().oldest_pending, Some(queued));
        health.updated();
        assert!(
            health
                .status_at(queued + Duration::from_secs(60), now)
                .healthy
        );
    }

    fn serve(health: &Arc<ProxyHealth>) -> u16 {
        let port = free_port();
        serve_proxy_health(SocketAddr::new(localhost(), port), Arc::clone(health))
            .expect("serve proxy health");
        port
    }

    #[test]
    fn proxy_healthz_answers_200_after_a_sync() {
        let health = Arc::new(ProxyHealth::new(Duration::from_secs(60)));
        health.updated();
        let port = serve(&health);

        let response = get(port, "/healthz");

        assert_eq!(response.status, 200);
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        assert_eq!(response.header("X-Content-Type-Options"), Some("nosniff"));
        assert!(
            response.body.starts_with("{\"lastUpdated\":\"20")
                && response.body.contains("\",\"currentTime\":\"20")
                && response.body.contains(",\"nodeEligible\":true,\"healthy\":true,\"status\":{\"IPv4\":{\"lastUpdated\":\"20")
                && response.body.ends_with("\"healthy\":true}}}"),
            "{}",
            response.body
        );
        assert_eq!(get(port, "/livez").status, 200);
        assert!(!get(port, "/livez").body.contains("nodeEligible"));
    }

    #[test]
    fn proxy_healthz_answers_503_when_a_queued_update_is_stale() {
        let health = Arc::new(ProxyHealth::new(Duration::ZERO));
        health.updated();
        health.queued_update();
        let port = serve(&health);

        let healthz = get(port, "/healthz");
        let livez = get(port, "/livez");

        assert_eq!(healthz.status, 503);
        assert!(
            healthz.body.contains("\"healthy\":false"),
            "{}",
            healthz.body
        );
        assert_eq!(livez.status, 503);
    }

    #[test]
    fn ineligible_node_fails_healthz_but_not_livez() {
        let health = Arc::new(ProxyHealth::new(Duration::from_secs(60)));
        health.updated();
        health.set_node_eligible(false);
        let port = serve(&health);

        let healthz = get(port, "/healthz");

        assert_eq!(healthz.status, 503);
        assert!(
            healthz
                .body
                .contains("\"nodeEligible\":false,\"healthy\":true")
        );
        assert_eq!(get(port, "/livez").status, 200);
    }

    #[test]
    fn proxy_health_server_answers_404_on_other_paths() {
        let health = Arc::new(ProxyHealth::new(Duration::from_secs(60)));
        let port = serve(&health);

        assert_eq!(get(port, "/metrics").status, 404);
        assert_eq!(get(port, "/healthz/extra").status, 404);
        assert_eq!(get(port, "/healthz?verbose").status, 200);
    }

    #[test]
    fn healthy_answer_reports_the_current_time_as_last_updated() {
        let current_time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let status = ProxyHealthStatus {
            healthy: true,
            last_updated: None,
            current_time,
            node_eligible: true,
        };

        let answer = proxy_health_answer("/healthz", &status);

        assert_eq!(answer.status, Status::Ok);
        assert_eq!(
            answer.body,
            "{\"lastUpdated\":\"2023-11-14T22:13:20Z\",\"currentTime\":\"2023-11-14T22:13:20Z\",\"nodeEligible\":true,\"healthy\":true}"
        );
    }

    #[test]
    fn rfc3339_matches_go_time_formatting() {
        assert_eq!(rfc3339(None), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(Some(UNIX_EPOCH)), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(Some(UNIX_EPOCH + Duration::new(951_782_400, 500_000_000))),
            "2000-02-29T00:00:00.5Z"
        );
        assert_eq!(
            rfc3339(Some(UNIX_EPOCH + Duration::new(4_102_444_799, 123_456_789))),
            "2099-12-31T23:59:59.123456789Z"
        );
        assert_eq!(
            rfc3339(Some(UNIX_EPOCH + Duration::new(1_709_251_199, 1_000))),
            "2024-02-29T23:59:59.000001Z"
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("web"), "\"web\"");
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
