//! Container probes as upstream's prober workers decide them: when each probe of each container
//! runs, and what its result is.
//!
//! Owns the probe defaults (`periodSeconds` 10, `timeoutSeconds` 1, `successThreshold` 1,
//! `failureThreshold` 3, `initialDelaySeconds` 0), one state per container and probe type
//! ([`PodProbes`]: consecutive successes and failures, the initial results — readiness
//! `Failure`, liveness `Success`, startup unknown —, the startup probe gating liveness and
//! readiness, the hold after a liveness/startup failure, the reset when the container is
//! restarted under a new ID), the resolution of a handler into something to run
//! ([`ProbeAction`]: port names, host defaulting to the pod IP, HTTP headers and
//! `User-Agent`) and the reading of an HTTP status code.
//!
//! Must not do I/O: no CRI calls, no sockets, no clocks. Times come in as arguments; the
//! executor (`worker::prober`) runs the [`ProbeRun`]s and hands the outcomes back with
//! [`PodProbes::record`]. The results feed [`super::observed::ObservedPod::probes`], from which
//! `status` marks containers started/ready and `plan` kills failing containers.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, LifecycleHandler, Pod, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::observed::{ContainerProbeResults, ContainerState, ObservedPod, ProbeResult};
use super::{
    PodPhase, add_seconds, is_deleted, is_restartable_init_container, pod_containers,
    pod_init_containers,
};

/// Upstream default of `periodSeconds`.
pub const DEFAULT_PERIOD_SECONDS: i32 = 10;
/// Upstream default of `timeoutSeconds`.
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 1;
/// Upstream default of `successThreshold`.
pub const DEFAULT_SUCCESS_THRESHOLD: i32 = 1;
/// Upstream default of `failureThreshold`.
pub const DEFAULT_FAILURE_THRESHOLD: i32 = 3;

/// Which probe of a container (upstream `probeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeType {
    /// `startupProbe`: holds the other two back until it succeeds; a failure kills. (Sorts
    /// first: a round settles it before the probes it gates.)
    Startup,
    /// `livenessProbe`: a failure kills the container.
    Liveness,
    /// `readinessProbe`: drives the container's `ready`.
    Readiness,
}

impl ProbeType {
    /// Upstream spelling in events (`Liveness probe failed: ...`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
            Self::Startup => "Startup",
        }
    }

    /// The result a new container starts with (upstream `initialValue`): readiness `Failure`,
    /// liveness `Success`, startup unknown (`None`).
    #[must_use]
    pub fn initial_result(self) -> Option<ProbeResult> {
        match self {
            Self::Liveness => Some(ProbeResult::Success),
            Self::Readiness => Some(ProbeResult::Failure),
            Self::Startup => None,
        }
    }

    /// The container's probe of this type.
    #[must_use]
    pub fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            Self::Liveness => container.liveness_probe.as_ref(),
            Self::Readiness => container.readiness_probe.as_ref(),
            Self::Startup => container.startup_probe.as_ref(),
        }
    }

    const ALL: [ProbeType; 3] = [Self::Startup, Self::Liveness, Self::Readiness];
}

/// A probe's timing and thresholds with upstream's defaults for unset (or non-positive)
/// fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// `initialDelaySeconds` after the container started before the first probe.
    pub initial_delay_seconds: i64,
    /// `periodSeconds` between probes.
    pub period_seconds: i64,
    /// `timeoutSeconds` of one probe.
    pub timeout_seconds: i64,
    /// `successThreshold` consecutive successes to report success.
    pub success_threshold: u32,
    /// `failureThreshold` consecutive failures to report failure.
    pub failure_threshold: u32,
}

impl ProbeSettings {
    /// The settings of `probe`.
    #[must_use]
    pub fn of(probe: &Probe) -> Self {
        let positive =
            |value: Option<i32>, default: i32| value.filter(|v| *v > 0).unwrap_or(default);
        let threshold = |value, default| u32::try_from(positive(value, default)).unwrap_or(1);
        Self {
            initial_delay_seconds: i64::from(probe.initial_delay_seconds.unwrap_or(0).max(0)),
            period_seconds: i64::from(positive(probe.period_seconds, DEFAULT_PERIOD_SECONDS)),
            timeout_seconds: i64::from(positive(probe.timeout_seconds, DEFAULT_TIMEOUT_SECONDS)),
            success_threshold: threshold(probe.success_threshold, DEFAULT_SUCCESS_THRESHOLD),
            failure_threshold: threshold(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD),
        }
    }

    /// `timeoutSeconds` as a duration.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.timeout_seconds).unwrap_or(1))
    }
}

/// A handler cannot be turned into something to run (upstream treats these as probe errors:
/// the result is thrown away).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeActionError {
    /// A named port that the container does not declare (and that is not a number).
    #[error("port {0} not found")]
    PortNotFound(String),
    /// A port number outside 1..=65535.
    #[error("invalid port number: {0}")]
    InvalidPort(i64),
    /// No host was given and the pod has no IP yet.
    #[error("no host to probe: the pod has no IP yet")]
    NoHost,
    /// The handler has no action set.
    #[error("missing probe handler for {container}")]
    MissingHandler {
        /// The container's name.
        container: String,
    },
}

/// An HTTP GET to make (probe or lifecycle hook), resolved against the container and pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGetTarget {
    /// `HTTP` or `HTTPS` (upper case, as the API spells it).
    pub scheme: String,
    /// The host to connect to: `httpGet.host`, else the pod IP.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The request path, starting with `/` (query included).
    pub path: String,
    /// The request headers in order, `User-Agent` and `Accept` defaulted; a `Host` header
    /// replaces the request's host.
    pub headers: Vec<(String, String)>,
}

impl HttpGetTarget {
    /// Resolves `action` of `container` against the pod's IP; `user_agent` is the default
    /// `User-Agent` (`kube-probe/1.35` for probes, `kube-lifecycle/1.35` for hooks).
    ///
    /// # Errors
    /// [`ProbeActionError`] when the port or the host cannot be resolved.
    pub fn resolve(
        action: &HTTPGetAction,
        container: &Container,
        pod_ip: Option<&str>,
        user_agent: &str,
    ) -> Result<Self, ProbeActionError> {
        let port = resolve_port(&action.port, container)?;
        let host = resolve_host(action.host.as_deref(), pod_ip)?;
        let path = action.path.clone().unwrap_or_default();
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let mut headers: Vec<(String, String)> = action
            .http_headers
            .iter()
            .flatten()
            .map(|header| (header.name.clone(), header.value.clone()))
            .collect();
        let has = |headers: &[(String, String)], name: &str| {
            headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !has(&headers, "User-Agent") {
            headers.push(("User-Agent".to_owned(), user_agent.to_owned()));
        }
        if !has(&headers, "Accept") {
            headers.push(("Accept".to_owned(), "*/*".to_owned()));
        }
        // An empty Accept header means "send none" (upstream deletes it).
        headers.retain(|(name, value)| !(name.eq_ignore_ascii_case("Accept") && value.is_empty()));
        Ok(Self {
            scheme: action
                .scheme
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "HTTP".to_owned()),
            host,
            port,
            path,
            headers,
        })
    }

    /// `host:port`, IPv6 hosts in brackets.
    #[must_use]
    pub fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// The URL as upstream's messages show it (`http://10.0.0.5:8080/healthz`).
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.to_ascii_lowercase(),
            self.address(),
            self.path
        )
    }

    /// The HTTP/1.1 request bytes (`Connection: close`, no body).
    #[must_use]
    pub fn request(&self) -> String {
        let host = self
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("Host"))
            .map_or_else(|| self.address(), |(_, value)| value.clone());
        let mut request = format!("GET {} HTTP/1.1\r\nHost: {host}\r\n", self.path);
        for (name, value) in &self.headers {
            if !name.eq_ignore_ascii_case("Host") {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        request.push_str("Connection: close\r\n\r\n");
        request
    }
}

/// What a probe or hook runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// A command through CRI `ExecSync`; exit code 0 is success.
    Exec {
        /// The command and its arguments.
        command: Vec<String>,
    },
    /// An HTTP GET; status 200..400 is success.
    HttpGet(HttpGetTarget),
    /// A TCP connection; connecting is success.
    TcpSocket {
        /// The host: `tcpSocket.host`, else the pod IP.
        host: String,
        /// The port.
        port: u16,
    },
    /// A handler this kubelet cannot run (HTTPS and gRPC probes, tcpSocket hooks); always a
    /// failure with this message.
    Unsupported(String),
}

impl ProbeAction {
    /// The action of `probe` of `container`.
    ///
    /// # Errors
    /// [`ProbeActionError`] when a port or host cannot be resolved or no handler is set.
    pub fn for_probe(
        probe: &Probe,
        container: &Container,
        pod_ip: Option<&str>,
    ) -> Result<Self, ProbeActionError> {
        Self::resolve(
            probe.exec.as_ref(),
            probe.http_get.as_ref(),
            probe.tcp_socket.as_ref(),
            probe.grpc.is_some(),
            container,
            pod_ip,
            &user_agent("probe"),
        )
    }

    /// The action of a lifecycle hook handler (`sleep` is not an action: the caller waits).
    ///
    /// # Errors
    /// [`ProbeActionError`] when a port or host cannot be resolved or no handler is set.
    pub fn for_hook(
        handler: &LifecycleHandler,
        container: &Container,
        pod_ip: Option<&str>,
    ) -> Result<Self, ProbeActionError> {
        if handler.tcp_socket.is_some() && handler.exec.is_none() && handler.http_get.is_none() {
            // Upstream: "TCPSocket is NOT supported as a LifecycleHandler".
            return Ok(Self::Unsupported(
                "Cannot run handler: invalid handler: tcpSocket is not supported in lifecycle hooks"
                    .to_owned(),
            ));
        }
        Self::resolve(
            handler.exec.as_ref(),
            handler.http_get.as_ref(),
            None,
            false,
            container,
            pod_ip,
            &user_agent("lifecycle"),
        )
    }

    fn resolve(
        exec: Option<&ExecAction>,
        http_get: Option<&HTTPGetAction>,
        tcp_socket: Option<&TCPSocketAction>,
        grpc: bool,
        container: &Container,
        pod_ip: Option<&str>,
        user_agent: &str,
    ) -> Result<Self, ProbeActionError> {
        if let Some(exec) = exec {
            return Ok(Self::Exec {
                command: exec.command.clone().unwrap_or_default(),
            });
        }
        if let Some(http_get) = http_get {
            let target = HttpGetTarget::resolve(http_get, container, pod_ip, user_agent)?;
            if !target.scheme.eq_ignore_ascii_case("HTTP") {
                return Ok(Self::Unsupported(format!(
                    "{} {} is not supported by this kubelet (only HTTP)",
                    target.scheme,
                    target.url()
                )));
            }
            return Ok(Self::HttpGet(target));
        }
        if let Some(tcp) = tcp_socket {
            return Ok(Self::TcpSocket {
                host: resolve_host(tcp.host.as_deref(), pod_ip)?,
                port: resolve_port(&tcp.port, container)?,
            });
        }
        if grpc {
            return Ok(Self::Unsupported(
                "gRPC probes are not supported by this kubelet".to_owned(),
            ));
        }
        Err(ProbeActionError::MissingHandler {
            container: container.name.clone(),
        })
    }
}

/// `kube-<component>/<major>.<minor>` of this kubelet's version (upstream's default
/// `User-Agent` of probes and HTTP hooks).
#[must_use]
pub fn user_agent(component: &str) -> String {
    let version = crate::host::KUBELET_VERSION.trim_start_matches('v');
    let major_minor: Vec<&str> = version.split(['.', '-']).take(2).collect();
    format!("kube-{component}/{}", major_minor.join("."))
}

/// Upstream `extractPort`: a number, or the name of one of the container's ports (or a
/// number written as a string); 1..=65535.
///
/// # Errors
/// [`ProbeActionError::PortNotFound`] or [`ProbeActionError::InvalidPort`].
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, ProbeActionError> {
    let number = match port {
        IntOrString::Int(number) => i64::from(*number),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port));
            match named {
                Some(number) => number,
                None => name
                    .parse::<i64>()
                    .map_err(|_| ProbeActionError::PortNotFound(name.clone()))?,
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or(ProbeActionError::InvalidPort(number))
}

fn resolve_host(host: Option<&str>, pod_ip: Option<&str>) -> Result<String, ProbeActionError> {
    host.filter(|h| !h.is_empty())
        .or(pod_ip.filter(|ip| !ip.is_empty()))
        .map(str::to_owned)
        .ok_or(ProbeActionError::NoHost)
}

/// Go's `net.JoinHostPort`.
#[must_use]
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream's reading of an HTTP probe's status code: 200..400 succeeds (3xx as a warning,
/// which counts as success), anything else fails with `HTTP probe failed with statuscode: N`.
#[must_use]
pub fn http_status_result(status_code: u16) -> (ProbeResult, String) {
    if (200..400).contains(&status_code) {
        (ProbeResult::Success, String::new())
    } else {
        (
            ProbeResult::Failure,
            format!("HTTP probe failed with statuscode: {status_code}"),
        )
    }
}

/// Identifies one probe of one container of the pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeKey {
    /// The container's name.
    pub container: String,
    /// Which probe.
    pub probe_type: ProbeType,
}

/// A probe to run now, as [`PodProbes::due`] hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRun {
    /// Which probe.
    pub key: ProbeKey,
    /// The container instance probed; the outcome only counts for this instance.
    pub container_id: String,
    /// What to run, or why it cannot be run (a probe error: the result is thrown away).
    pub action: Result<ProbeAction, ProbeActionError>,
    /// `timeoutSeconds`.
    pub timeout: Duration,
}

/// A reported result that changed, returned by [`PodProbes::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTransition {
    /// Which probe.
    pub key: ProbeKey,
    /// The new result.
    pub result: ProbeResult,
}

/// What [`PodProbes::due`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueProbes {
    /// Probes to run now.
    pub runs: Vec<ProbeRun>,
    /// The earliest time a probe that is waiting for its period or initial delay becomes due.
    pub next_at: Option<Timestamp>,
}

/// One probe of one container (upstream prober `worker`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProbeState {
    settings: ProbeSettings,
    /// The container instance the result belongs to.
    container_id: Option<String>,
    /// The reported result; `None` is unknown.
    result: Option<ProbeResult>,
    /// The latest outcome and how many times in a row it came (upstream `lastResult`,
    /// `resultRun`).
    last: Option<ProbeResult>,
    run: u32,
    /// Stop probing until a new container instance (after a liveness/startup failure, or
    /// once the pod is deleted for liveness/startup).
    on_hold: bool,
    /// A run was handed out and its outcome is not back yet.
    in_flight: bool,
    /// Not before this time (the period since the last run).
    next_at: Option<Timestamp>,
}

impl ProbeState {
    fn new(settings: ProbeSettings) -> Self {
        Self {
            settings,
            container_id: None,
            result: None,
            last: None,
            run: 0,
            on_hold: false,
            in_flight: false,
            next_at: None,
        }
    }

    /// A new container instance: start over from the initial result.
    fn reset(&mut self, container_id: &str, probe_type: ProbeType) {
        self.container_id = Some(container_id.to_owned());
        self.result = probe_type.initial_result();
        self.last = None;
        self.run = 0;
        self.on_hold = false;
        self.in_flight = false;
        self.next_at = None;
    }
}

/// The probe states of one pod, by container name and probe type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodProbes {
    states: BTreeMap<ProbeKey, ProbeState>,
}

/// The containers that get probes: regular containers and native sidecars.
fn probed_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod_init_containers(pod)
        .iter()
        .filter(|c| is_restartable_init_container(c))
        .chain(pod_containers(pod))
}

impl PodProbes {
    /// Follows the pod and the runtime (upstream `doProbe`'s checks, per probe) and hands out
    /// the probes to run at `now`: each container's probes on their own period, from
    /// `initialDelaySeconds` after the container started, liveness and readiness only once
    /// the startup probe succeeded, the startup probe only until then. A probe whose run is
    /// still out is not handed out again. `phase` is the pod's phase this round; a terminal
    /// pod is not probed.
    pub fn due(
        &mut self,
        pod: &Pod,
        observed: &ObservedPod,
        pod_ip: Option<&str>,
        phase: PodPhase,
        now: Timestamp,
    ) -> DueProbes {
        // Probes of containers that left the spec are forgotten.
        let mut wanted = BTreeMap::new();
        for container in probed_containers(pod) {
            for probe_type in ProbeType::ALL {
                if let Some(probe) = probe_type.of(container) {
                    let key = ProbeKey {
                        container: container.name.clone(),
                        probe_type,
                    };
                    wanted.insert(key, (container, probe));
                }
            }
        }
        self.states.retain(|key, _| wanted.contains_key(key));
        let mut due = DueProbes::default();
        if phase.is_terminal() {
            return due;
        }
        for (key, (container, probe)) in wanted {
            let settings = ProbeSettings::of(probe);
            let state = self
                .states
                .entry(key.clone())
                .or_insert_with(|| ProbeState::new(settings));
            state.settings = settings;
            let Some(instance) = observed.latest_container(&container.name) else {
                continue;
            };
            if state.container_id.as_deref() != Some(instance.id.as_str()) {
                state.reset(&instance.id, key.probe_type);
            }
            if state.on_hold {
                continue;
            }
            match instance.state {
                ContainerState::Running => {}
                ContainerState::Exited | ContainerState::Unknown => {
                    state.result = Some(ProbeResult::Failure);
                    continue;
                }
                ContainerState::Created => continue,
            }
            if is_deleted(pod) && key.probe_type != ProbeType::Readiness {
                // Graceful shutdown: a quiet last result, no more probing.
                state.result = Some(ProbeResult::Success);
                state.on_hold = true;
                continue;
            }
            let delay_until = instance
                .started_at
                .map(|started| add_seconds(started, settings.initial_delay_seconds));
            let not_before = match (delay_until, state.next_at) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if state.in_flight {
                if let Some(at) = state.next_at.filter(|at| *at > now) {
                    due.next_at = Some(due.next_at.map_or(at, |next| next.min(at)));
                }
                continue;
            }
            if let Some(at) = not_before.filter(|at| *at > now) {
                due.next_at = Some(due.next_at.map_or(at, |next| next.min(at)));
                continue;
            }
            let startup_passed = container.startup_probe.is_none()
                || startup_succeeded(&self.states, &container.name, &instance.id);
            let Some(state) = self.states.get_mut(&key) else {
                continue;
            };
            let gated = if key.probe_type == ProbeType::Startup {
                startup_passed
            } else {
                !startup_passed
            };
            if gated {
                continue;
            }
            state.in_flight = true;
            let next = add_seconds(now, settings.period_seconds);
            state.next_at = Some(next);
            due.next_at = Some(due.next_at.map_or(next, |at| at.min(next)));
            due.runs.push(ProbeRun {
                key,
                container_id: instance.id.clone(),
                action: ProbeAction::for_probe(probe, container, pod_ip),
                timeout: settings.timeout(),
            });
        }
        due
    }

    /// Takes a run's outcome: `Some(result)` from the probe, `None` for a probe error (thrown
    /// away, as upstream does). Counts consecutive outcomes against the thresholds and
    /// returns the transition when the reported result changed. Outcomes of another container
    /// instance, or of a probe on hold, are ignored.
    pub fn record(
        &mut self,
        key: &ProbeKey,
        container_id: &str,
        outcome: Option<ProbeResult>,
    ) -> Option<ProbeTransition> {
        let state = self.states.get_mut(key)?;
        if state.container_id.as_deref() != Some(container_id) || !state.in_flight {
            return None;
        }
        state.in_flight = false;
        let outcome = outcome?;
        if state.on_hold {
            return None;
        }
        if state.last == Some(outcome) {
            state.run = state.run.saturating_add(1);
        } else {
            state.last = Some(outcome);
            state.run = 1;
        }
        let threshold = match outcome {
            ProbeResult::Success => state.settings.success_threshold,
            ProbeResult::Failure => state.settings.failure_threshold,
        };
        if state.run < threshold {
            return None;
        }
        let changed = state.result != Some(outcome);
        state.result = Some(outcome);
        if key.probe_type != ProbeType::Readiness && outcome == ProbeResult::Failure {
            // The container will be killed: stop probing it until a new instance appears.
            state.on_hold = true;
            state.run = 0;
        }
        changed.then(|| ProbeTransition {
            key: key.clone(),
            result: outcome,
        })
    }

    /// The reported results by container ID, for [`ObservedPod::probes`].
    #[must_use]
    pub fn results(&self) -> BTreeMap<String, ContainerProbeResults> {
        let mut results: BTreeMap<String, ContainerProbeResults> = BTreeMap::new();
        for (key, state) in &self.states {
            let Some(id) = &state.container_id else {
                continue;
            };
            let entry = results.entry(id.clone()).or_default();
            match key.probe_type {
                ProbeType::Liveness => entry.liveness = state.result,
                ProbeType::Readiness => entry.readiness = state.result,
                ProbeType::Startup => entry.startup = state.result,
            }
        }
        results
    }
}

/// Whether the startup probe of `container` succeeded for the instance `container_id`.
fn startup_succeeded(
    states: &BTreeMap<ProbeKey, ProbeState>,
    container: &str,
    container_id: &str,
) -> bool {
    let key = ProbeKey {
        container: container.to_owned(),
        probe_type: ProbeType::Startup,
    };
    states.get(&key).is_some_and(|state| {
        state.container_id.as_deref() == Some(container_id)
            && state.result == Some(ProbeResult::Success)
    })
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
