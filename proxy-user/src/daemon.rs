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
    net::{IpAddr, SocketAddr},
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
    healthcheck::{ProxyHealth, ServiceHealthServer, serve_proxy_health},
    links::{self, Attachment, LinkPinError},
    maps::{DataplaneMaps, MapsError},
    metrics::{self, ControllerCounters, ServiceNames},
    programs::{LoadError, LoadOptions, LoadedObject, MapSizes, ProgramObject},
    source::{FileSource, PollOutcome, SourceSpec},
    sync::{DataplaneState, PlanLimits, SyncError, plan},
    translate::{LoadBalancerMode, translate},
    uplink::{self, Ipv4Cidr, XdpAttachMode},
};

/// How often the interface list is scanned for new interfaces matching the prefix.
const INTERFACE_SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// How often the node's addresses are read (NodePort addresses, SNAT address).
const ADDRESS_SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// `/healthz` answers 503 when a change has waited longer than this for a successful sync
/// (kube-proxy's: twice its default 30 s `syncPeriod`).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
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
    /// The node's uplink: north-south programs (NodePort, external and load-balancer IPs).
    pub uplink: Option<String>,
    pub xdp_mode: XdpAttachMode,
    /// `--nodeport-addresses`: NodePorts answer on node addresses inside these (all when empty).
    pub nodeport_addresses: Vec<Ipv4Cidr>,
    /// The Maglev table size M (prime).
    pub maglev_table_size: u16,
    /// `--lb-mode`: how external frontends reach remote backends unless annotated.
    pub load_balancer_mode: LoadBalancerMode,
    /// Where the proxy's own `/healthz` and `/livez` are served (`--healthz-bind-address`).
    pub healthz_address: Option<SocketAddr>,
    /// The address health-check node ports are served on.
    pub health_check_bind_address: IpAddr,
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
    #[error("--uplink {interface} does not exist in this network namespace")]
    NoSuchUplink { interface: String },
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
    let mut uplink_object = LoadedObject::load(ProgramObject::XdpUplink, &load_options)?;
    let mut maps = DataplaneMaps::open(&options.pin_directory)?;
    let mut config = ProxyConfig {
        netns_cookie: current_netns_cookie().unwrap_or(0),
        node_address: 0,
        ..options.config
    };
    if let Some(uplink) = &options.uplink {
        if !links::interfaces()?.contains(uplink) {
            return Err(DaemonError::NoSuchUplink {
                interface: uplink.clone(),
            });
        }
        config.node_address = uplink_address(uplink);
        // The SNAT address is in place before the programs can see a packet.
        maps.write_config(&config)?;
        let _span = info_span!("uplink", interface = %uplink, mode = %options.xdp_mode).entered();
        match uplink::attach_uplink(
            &mut uplink_object,
            &options.pin_directory,
            uplink,
            options.xdp_mode,
        )? {
            Attachment::Attached => info!("north-south programs attached"),
            Attachment::Adopted => info!("north-south programs swapped into the pinned links"),
        }
    } else {
        warn!("no --uplink: NodePorts, external IPs and load-balancer IPs are not served");
    }
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

    let limits = PlanLimits {
        max_services: options.map_sizes.services,
        max_backends: options.map_sizes.backends,
        maglev_table_size: options.maglev_table_size,
        default_load_balancer_mode: options.load_balancer_mode,
    };
    let proxy_health = Arc::new(ProxyHealth::new(HEALTH_TIMEOUT));
    if let Some(address) = options.healthz_address {
        match serve_proxy_health(address, Arc::clone(&proxy_health)) {
            Ok(()) => info!(%address, "serving /healthz and /livez"),
            Err(error) => warn!(%address, %error, "cannot serve /healthz; continuing without it"),
        }
    }
    let mut health_checks = ServiceHealthServer::new(options.health_check_bind_address)
        .with_proxy_health(Arc::clone(&proxy_health));
    let mut last_address_scan: Option<Instant> = None;
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
            PollOutcome::Reloaded => {
                proxy_health.queued_update();
                true
            }
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
                    proxy_health.updated();
                    for error in health_checks.update(&desired.health_checks) {
                        warn!(%error, "health-check node port not served; retrying on the next sync");
                    }
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
        if options.uplink.is_some()
            && last_address_scan.is_none_or(|scanned| scanned.elapsed() >= ADDRESS_SCAN_INTERVAL)
        {
            last_address_scan = Some(Instant::now());
            refresh_addresses(&mut maps, &mut config, options);
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
    limits: PlanLimits,
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

/// The uplink's primary IPv4 address (network byte order), or 0 when it has none.
fn uplink_address(uplink: &str) -> u32 {
    match uplink::interface_addresses(uplink) {
        Ok(addresses) => match addresses.first() {
            Some(address) => u32::from_ne_bytes(address.octets()),
            None => {
                warn!(%uplink, "the uplink has no IPv4 address: flows to remote backends are not source-NATed");
                0
            }
        },
        Err(error) => {
            warn!(%uplink, %error, "cannot read the uplink's addresses");
            0
        }
    }
}

/// Keeps the NodePort addresses and the SNAT address in step with the node's addresses.
fn refresh_addresses(maps: &mut DataplaneMaps, config: &mut ProxyConfig, options: &RunOptions) {
    match uplink::nodeport_addresses(&options.nodeport_addresses) {
        Ok(wanted) => {
            if let Err(error) = maps.set_nodeport_addresses(&wanted) {
                warn!(%error, "cannot update the NodePort addresses");
            }
        }
        Err(error) => warn!(%error, "cannot list the node's addresses"),
    }
    if let Some(uplink) = &options.uplink {
        let address = uplink_address(uplink);
        if address != config.node_address {
            config.node_address = address;
            match maps.write_config(config) {
                Ok(()) => {
                    info!(address = %std::net::Ipv4Addr::from(address.to_ne_bytes()), "SNAT address changed")
                }
                Err(error) => warn!(%error, "cannot write the new SNAT address"),
            }
        }
    }
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
