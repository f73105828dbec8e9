//! `skiff-proxy run`: the long-running dataplane controller.
//!
//! Owns the control loop: load the tc_pod object (adopting pinned maps), write the datapath
//! configuration, read what the maps hold, then keep three things converged until told to stop:
//! the maps with the source (translate → plan → execute on every change), the pod interfaces with
//! their programs (explicit interfaces plus every current and future interface matching the
//! prefix), and the metrics snapshot. Exiting leaves maps and links pinned, so forwarding and
//! existing flows continue; the next `run` adopts them.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use proxy_common::ProxyConfig;
use tracing::{info, info_span, warn};

use crate::{
    links::{self, Attachment, LinkPinError},
    maps::{DataplaneMaps, MapsError},
    metrics::{self, ControllerCounters, ServiceNames},
    programs::{LoadError, LoadOptions, LoadedObject, MapSizes, ProgramObject},
    source::{FileSource, PollOutcome, SourceSpec},
    sync::{DataplaneState, IdLimits, SyncError, plan},
    translate::translate,
};

/// How often the interface list is scanned for new interfaces matching the prefix.
const INTERFACE_SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// Backoff of retries after a failed synchronisation (a full map may drain, ids may free up).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub source: SourceSpec,
    pub node_name: String,
    /// Interfaces to attach to (each must exist).
    pub interfaces: Vec<String>,
    /// Attach to every existing and future interface whose name starts with this.
    pub interface_prefix: Option<String>,
    pub pin_directory: PathBuf,
    pub metrics_address: Option<SocketAddr>,
    /// cgroup v2 directory for the node-socket programs (`None`: node traffic to ClusterIPs is
    /// not translated).
    pub cgroup_root: Option<PathBuf>,
    pub map_sizes: MapSizes,
    pub config: ProxyConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Links(#[from] LinkPinError),
    #[error(
        "interface {interface} given with --interface does not exist in this network namespace"
    )]
    NoSuchInterface { interface: String },
    #[error("serving metrics on {address}: {source}")]
    Metrics {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs until `stop` is set.
pub fn run(options: &RunOptions, stop: &AtomicBool) -> Result<(), DaemonError> {
    let load_options = LoadOptions {
        pin_directory: options.pin_directory.clone(),
        map_sizes: options.map_sizes,
    };
    let mut object = LoadedObject::load(ProgramObject::TcPod, &load_options)?;
    let mut socket_object = LoadedObject::load(ProgramObject::Sock, &load_options)?;
    let mut maps = DataplaneMaps::open(&options.pin_directory)?;
    let config = ProxyConfig {
        netns_cookie: current_netns_cookie().unwrap_or(0),
        ..options.config
    };
    maps.write_config(&config)?;
    let mut state = maps.read_state()?;
    info!(
        pin_directory = %options.pin_directory.display(),
        services = state.services.len(),
        backends = state.backends.len(),
        "dataplane loaded; adopted what the pinned maps hold"
    );

    match &options.cgroup_root {
        Some(cgroup_root) => {
            links::attach_socket_programs(&mut socket_object, &options.pin_directory, cgroup_root)?;
            info!(cgroup = %cgroup_root.display(), "node sockets reach ClusterIPs through the socket programs");
        }
        None => warn!(
            "no cgroup v2 hierarchy: traffic from the node itself to ClusterIPs is not translated"
        ),
    }

    let names: Arc<Mutex<ServiceNames>> = Arc::default();
    let counters: Arc<ControllerCounters> = Arc::default();
    if let Some(address) = options.metrics_address {
        metrics::serve(
            address,
            options.pin_directory.clone(),
            Arc::clone(&names),
            Arc::clone(&counters),
        )
        .map_err(|source| DaemonError::Metrics { address, source })?;
        info!(%address, "serving Prometheus metrics at /metrics");
    }

    let limits = IdLimits {
        max_services: options.map_sizes.services,
        max_backends: options.map_sizes.backends,
    };
    let SourceSpec::File(path) = &options.source;
    let mut source = FileSource::new(path.clone());
    let mut attached: BTreeSet<String> = BTreeSet::new();
    let mut last_scan: Option<Instant> = None;
    let existing = links::interfaces()?;
    for interface in &options.interfaces {
        if !existing.contains(interface) {
            return Err(DaemonError::NoSuchInterface {
                interface: interface.clone(),
            });
        }
    }

    // After a failed synchronisation, retry with the same content, backing off.
    let mut retry: Option<(Instant, Duration)> = None;
    while !stop.load(Ordering::Relaxed) {
        let reloaded = match source.poll() {
            PollOutcome::Unchanged => false,
            PollOutcome::Rejected(error) => {
                counters.source_errors.fetch_add(1, Ordering::Relaxed);
                warn!(%error, "source rejected; the dataplane keeps the last good content");
                false
            }
            PollOutcome::Reloaded => true,
        };
        let retry_due = retry.is_some_and(|(at, _)| Instant::now() >= at);
        if (reloaded || retry_due)
            && let Some(snapshot) = source.snapshot()
        {
            let desired = translate(
                &snapshot.services,
                &snapshot.endpoint_slices,
                &options.node_name,
            );
            if reloaded {
                for warning in &desired.warnings {
                    warn!(%warning, "ignored part of the source");
                }
            }
            match synchronise(&mut maps, &mut state, &desired, limits) {
                Ok(ops) => {
                    retry = None;
                    info!(
                        ops,
                        frontends = desired.frontends.len(),
                        "dataplane synchronised"
                    );
                    if let Ok(mut names) = names.lock() {
                        *names = metrics::service_names(&desired, &state);
                    }
                }
                Err(error) => {
                    counters.sync_errors.fetch_add(1, Ordering::Relaxed);
                    let backoff = retry.map_or(RETRY_FIRST, |(_, last)| (last * 2).min(RETRY_MAX));
                    retry = Some((Instant::now() + backoff, backoff));
                    warn!(%error, retry_in = ?backoff, "synchronisation failed; the dataplane keeps what it had");
                }
            }
        }
        if last_scan.is_none_or(|scanned| scanned.elapsed() >= INTERFACE_SCAN_INTERVAL) {
            last_scan = Some(Instant::now());
            scan_interfaces(&mut object, options, &mut attached);
        }
        std::thread::sleep(source.poll_interval());
    }
    info!("stopping; maps and links stay pinned so forwarding continues");
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum SynchroniseError {
    #[error(transparent)]
    Plan(#[from] SyncError),
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// Plans and executes one sync; returns the number of map operations.
fn synchronise(
    maps: &mut DataplaneMaps,
    state: &mut DataplaneState,
    desired: &crate::translate::Desired,
    limits: IdLimits,
) -> Result<usize, SynchroniseError> {
    let sync_plan = plan(state, desired, limits)?;
    if let Err(error) = maps.execute(&sync_plan) {
        // Part of the plan ran: learn what the maps hold now before planning again.
        if let Ok(current) = maps.read_state() {
            *state = current;
        }
        return Err(error.into());
    }
    state.apply(&sync_plan);
    Ok(sync_plan.ops.len())
}

/// Attaches to interfaces that appeared; forgets those that went away.
fn scan_interfaces(
    object: &mut LoadedObject,
    options: &RunOptions,
    attached: &mut BTreeSet<String>,
) {
    let existing = match links::interfaces() {
        Ok(existing) => existing,
        Err(error) => {
            warn!(%error, "cannot list interfaces");
            return;
        }
    };
    attached.retain(|interface| existing.contains(interface));
    links::remove_stale_pins(&options.pin_directory, &existing);
    let wanted = existing.iter().filter(|interface| {
        options.interfaces.contains(interface)
            || options
                .interface_prefix
                .as_deref()
                .is_some_and(|prefix| interface.starts_with(prefix))
    });
    for interface in wanted {
        if attached.contains(interface) {
            continue;
        }
        let _span = info_span!("interface", %interface).entered();
        match links::attach_pod_interface(object, &options.pin_directory, interface) {
            Ok(Attachment::Attached) => info!("programs attached"),
            Ok(Attachment::Adopted) => info!("programs swapped into the pinned links"),
            Err(error) => {
                warn!(%error, "attaching failed; will retry");
                continue;
            }
        }
        attached.insert(interface.clone());
    }
}

/// The cookie of this thread's network namespace (`SO_NETNS_COOKIE`).
fn current_netns_cookie() -> Option<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    let mut cookie: u64 = 0;
    let mut length = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `cookie`, which lives for the call.
    let result = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut length,
        )
    };
    (result == 0).then_some(cookie)
}
