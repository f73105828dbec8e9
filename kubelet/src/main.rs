//! skiff-kubelet: Skiff's node agent.
//!
//! It runs the node side: registers the Node, keeps its status and `kube-node-lease` Lease
//! fresh, hands `spec.podCIDR` to skiff-cni through `--pod-cidr-file`, and marks the Node
//! NotReady on SIGTERM/SIGINT before exiting 0. When the CRI socket answers, it also runs the pod
//! side next to it: pod workers that run the pods bound to the node and report their status.
//! It serves `/healthz`, `/pods`, `/containerLogs` and `/metrics` over HTTPS on
//! `--address:--port` (`skiff_kubelet::server`). Static pods from `--pod-manifest-path` run even
//! while the API is unreachable and show in the API as mirror pods once it answers.
//!
//! Owns flag parsing with upstream's names and defaults, logging, signals and composition;
//! everything else is the library's (`skiff_kubelet::node`, `skiff_kubelet::worker`,
//! `skiff_kubelet::host`).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use skiff_kubelet::{
    cri::Runtime,
    host,
    image_import::{ContainerdImporter, ImageArchive},
    node::{self, NodeConfig},
    server::{Server, ServerOptions, ServerState, tls::ServingCertificate},
    worker::{self, PodWorkersConfig},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{error, info, warn};

/// How long the runtime gets at start-up to answer `Version` before the pod side is skipped.
const RUNTIME_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Skiff's node agent: registers this machine as a Kubernetes Node and keeps it reported.
///
/// Flags keep upstream kubelet's names and defaults. Pods bound to the node are run through the
/// container runtime (CRI) when its socket answers; without it only the Node is reported.
#[derive(Parser, Debug)]
#[command(
    name = "skiff-kubelet",
    version,
    about,
    long_about = None,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Tool>,

    /// Path to a kubeconfig file saying how to connect to the API server (skiff-control or
    /// kube-apiserver) and with which credentials. Required unless a subcommand is given.
    #[arg(long, value_name = "PATH", required = true)]
    kubeconfig: Option<PathBuf>,

    /// Use this name as the Node's name instead of the host name (lowercased, as upstream).
    #[arg(long, value_name = "NAME")]
    hostname_override: Option<String>,

    /// The CRI endpoint of the container runtime. When it does not answer, pods are not run
    /// and nodeInfo.containerRuntimeVersion reports "containerd://unknown".
    #[arg(
        long,
        value_name = "ENDPOINT",
        default_value = "unix:///run/containerd/containerd.sock"
    )]
    container_runtime_endpoint: String,

    /// Directory for the kubelet's files; its filesystem is the node's ephemeral-storage.
    /// Created when missing.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    root_dir: PathBuf,

    /// Root of the pod log directories (upstream's `podLogsDir` setting).
    #[arg(long, value_name = "DIR", default_value = "/var/log/pods")]
    pod_logs_dir: PathBuf,

    /// IP addresses of the cluster DNS server(s), comma-separated; pods with dnsPolicy
    /// ClusterFirst use them. Without it such pods fall back to the node's resolver, as upstream.
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    cluster_dns: Vec<IpAddr>,

    /// The cluster's DNS domain (e.g. cluster.local); pods get `<namespace>.svc.<domain>`,
    /// `svc.<domain>` and `<domain>` as search domains.
    #[arg(long, value_name = "DOMAIN", default_value = "")]
    cluster_domain: String,

    /// Deadline of every CRI call except long-running ones (Go duration).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_go_duration)]
    runtime_request_timeout: Duration,

    /// Directory of static pod manifests (or one manifest file), read every 2s; each holds one
    /// Pod, run on this node and shown in the API as a mirror pod. A missing directory means no
    /// static pods.
    #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/manifests")]
    pod_manifest_path: PathBuf,

    /// The Node's InternalIP. Default: the first non-loopback IPv4 address of the interface
    /// holding the default route.
    #[arg(long, value_name = "IP")]
    node_ip: Option<IpAddr>,

    /// The port of the kubelet's HTTPS server (logs, pods, metrics, healthz), published in
    /// status.daemonEndpoints.
    #[arg(long, value_name = "PORT", default_value_t = 10250)]
    port: u16,

    /// The IP address the kubelet's HTTPS server listens on (0.0.0.0 for all interfaces).
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    address: IpAddr,

    /// The serving certificate (PEM, chain after it) of the HTTPS server. Without it and
    /// --tls-private-key-file, a self-signed pair is generated into <root-dir>/pki/kubelet.crt|key.
    #[arg(long, value_name = "PATH", requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) matching --tls-cert-file.
    #[arg(long, value_name = "PATH", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,

    /// CA bundle (PEM) that client certificates of the HTTPS server must be signed by; any such
    /// certificate may use every endpoint. Default: the kubeconfig's cluster CA. Requests
    /// without a valid certificate get 401, except /healthz.
    #[arg(long, value_name = "PATH")]
    client_ca_file: Option<PathBuf>,

    /// Root cgroup for pods: each pod gets `<root>/kubepods[/burstable|/besteffort]/pod<uid>` in
    /// every cgroup hierarchy (cgroupfs driver), removed with the pod. Without it pods use the
    /// runtime's default cgroups.
    #[arg(long, value_name = "PATH")]
    cgroup_root: Option<PathBuf>,

    /// The IPv4 pod CIDR to use when the Node has no spec.podCIDR; it is then set on the Node.
    /// A podCIDR the Node already has always wins.
    #[arg(long, value_name = "CIDR", value_parser = node::pod_cidr::parse_ipv4_cidr)]
    pod_cidr: Option<String>,

    /// The file the Node's pod CIDR is written to for skiff-cni (atomically, when it changes).
    #[arg(long, value_name = "PATH", default_value = node::DEFAULT_POD_CIDR_FILE)]
    pod_cidr_file: PathBuf,

    /// How often node status is computed and patched when it changed (Go duration: 10s, 1m30s,
    /// 500ms). Unchanged status is still patched every 5m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_go_duration)]
    node_status_update_frequency: Duration,

    /// Log verbosity as klog's --v: 0-2 info, 3-4 debug, 5 and more trace. A tracing filter in
    /// SKIFF_KUBELET_LOG (or else RUST_LOG) takes precedence.
    #[arg(long = "v", short = 'v', value_name = "LEVEL", default_value_t = 0)]
    verbosity: u8,
}

/// One-shot tools run instead of the node agent.
#[derive(clap::Subcommand, Debug)]
enum Tool {
    /// Imports an OCI image-layout tarball (or a `docker save` archive) into containerd's
    /// `k8s.io` namespace, unpacked for CRI, and prints each image's name and digest.
    ImportImage(ImportImageArguments),
}

#[derive(clap::Args, Debug)]
struct ImportImageArguments {
    /// containerd's socket (its own API, the same socket as CRI's).
    #[arg(
        long,
        value_name = "ENDPOINT",
        default_value = "unix:///run/containerd/containerd.sock"
    )]
    container_runtime_endpoint: String,
    /// The image's name, instead of the one the archive gives (the archive must hold one image).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The tarball to import.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// `import-image`: checks the whole archive first, so a bad one creates nothing.
async fn import_image(arguments: ImportImageArguments) -> anyhow::Result<()> {
    let archive = ImageArchive::open(&arguments.file, arguments.name.as_deref())
        .with_context(|| format!("reading image archive {}", arguments.file.display()))?;
    let importer = ContainerdImporter::connect(
        &arguments.container_runtime_endpoint,
        RUNTIME_CONNECT_TIMEOUT,
    )
    .await?;
    let imported = importer
        .import(&archive)
        .await
        .with_context(|| format!("importing {}", arguments.file.display()))?;
    for image in imported {
        println!("{} {}", image.name, image.digest);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.verbosity)?;
    if let Some(Tool::ImportImage(arguments)) = cli.command {
        return import_image(arguments).await;
    }
    let kubeconfig = cli
        .kubeconfig
        .context("--kubeconfig is required to run the node agent")?;
    // Install the handlers first: a SIGTERM during registration must still stop cleanly.
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => info!("received SIGTERM"),
            _ = interrupt.recv() => info!("received SIGINT"),
        }
        stop.send_replace(true);
    });

    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let node_name = node_name(cli.hostname_override.as_deref(), &host_name)
        .map_err(anyhow::Error::msg)
        .context("choosing the Node's name (--hostname-override)")?;
    let node_ip = match cli.node_ip {
        Some(address) => address,
        None => IpAddr::V4(host::default_node_ip().context("choosing the Node's IP")?),
    };
    std::fs::create_dir_all(&cli.root_dir)
        .with_context(|| format!("creating --root-dir {}", cli.root_dir.display()))?;
    let runtime =
        connect_runtime(&cli.container_runtime_endpoint, cli.runtime_request_timeout).await;

    let mut config = NodeConfig::new(kubeconfig, node_name, node_ip);
    config.kubelet_port = cli.port;
    config.root_dir = cli.root_dir;
    config.pod_cidr = cli.pod_cidr;
    config.pod_cidr_file = cli.pod_cidr_file;
    config.node_status_update_frequency = cli.node_status_update_frequency;
    let pods = worker::PodRegistry::default();
    let server = start_server(
        &ServerOptions {
            address: cli.address,
            port: cli.port,
            serving: ServingCertificate {
                files: cli.tls_cert_file.zip(cli.tls_private_key_file),
                root_dir: config.root_dir.clone(),
                node_name: config.node_name.clone(),
                node_ip,
            },
            client_ca_file: cli.client_ca_file,
            kubeconfig: config.kubeconfig.clone(),
        },
        ServerState::new(
            config.node_name.clone(),
            pods.clone(),
            runtime.as_ref().map(|(runtime, _)| runtime.clone()),
            cli.pod_logs_dir.clone(),
        ),
        wait_for_stop(stopped.clone()),
    )
    .await;
    if let Some((_, port)) = &server {
        // With --port 0 the Node publishes the port the system chose.
        config.kubelet_port = *port;
    }
    let pod_side = runtime.map(|(runtime, version)| {
        config.container_runtime_version =
            format!("{}://{}", version.runtime_name, version.runtime_version);
        let mut node = worker::node_context(
            node_ip,
            &config.root_dir,
            &cli.pod_logs_dir,
            &version.runtime_name,
        );
        node.cluster_dns = cli.cluster_dns.iter().map(IpAddr::to_string).collect();
        node.cluster_domain.clone_from(&cli.cluster_domain);
        node.cgroup_root = cli
            .cgroup_root
            .as_ref()
            .map(|root| root.display().to_string());
        let pod_config = PodWorkersConfig {
            kubeconfig: config.kubeconfig.clone(),
            node_name: config.node_name.clone(),
            node,
            pods: pods.clone(),
            pod_manifest_path: Some(cli.pod_manifest_path.clone()),
        };
        let shutdown = wait_for_stop(stopped.clone());
        tokio::spawn(async move {
            if let Err(error) = worker::run_pod_workers(pod_config, runtime, shutdown).await {
                error!("the pod side stopped: {error}");
            }
        })
    });
    info!(
        node = %config.node_name,
        node_ip = %config.node_ip,
        kubeconfig = %config.kubeconfig.display(),
        "starting skiff-kubelet (node side)"
    );
    let node_side = node::run_node_agent(&config, wait_for_stop(stopped)).await;
    if let Some(pod_side) = pod_side {
        pod_side.abort();
    }
    if let Some((server, _)) = server {
        server.abort();
    }
    node_side.with_context(|| format!("running the node side of {}", config.node_name))?;
    info!("stopped");
    Ok(())
}

/// Starts the :10250 server; its task and bound port. A server that cannot start (the port is
/// taken, a certificate is unusable) is logged as an error and the kubelet runs without it: the
/// Node and its pods matter more than `kubectl logs`.
async fn start_server(
    options: &ServerOptions,
    state: std::sync::Arc<ServerState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<(tokio::task::JoinHandle<()>, u16)> {
    let bound = async {
        let server = Server::bind(options).await?;
        let address =
            server
                .local_addr()
                .map_err(|source| skiff_kubelet::server::ServerError::Bind {
                    address: std::net::SocketAddr::from((options.address, options.port)),
                    source,
                })?;
        Ok::<_, skiff_kubelet::server::ServerError>((server, address))
    };
    match bound.await {
        Ok((server, address)) => {
            info!(%address, "serving the kubelet API (logs, pods, metrics, healthz) over HTTPS");
            Some((tokio::spawn(server.serve(state, shutdown)), address.port()))
        }
        Err(error) => {
            error!("the kubelet server is not running (kubectl logs will fail): {error}");
            None
        }
    }
}

/// Completes once a stop signal was received.
async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    // An error means the signal task is gone, which only happens after it sent the stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Connects to the CRI runtime at `endpoint` when its socket exists and answers `Version`;
/// `None` (with the reason logged) means the pod side does not run.
async fn connect_runtime(
    endpoint: &str,
    call_timeout: Duration,
) -> Option<(Runtime, skiff_kubelet::cri::RuntimeVersion)> {
    let path = match unix_socket_path(endpoint) {
        Ok(path) => path,
        Err(problem) => {
            warn!("--container-runtime-endpoint: {problem}; pods will not be run");
            return None;
        }
    };
    if !path.exists() {
        warn!(
            "container runtime socket {} does not exist; reporting {} and not running pods",
            path.display(),
            host::UNKNOWN_CONTAINER_RUNTIME_VERSION
        );
        return None;
    }
    let connected = tokio::time::timeout(RUNTIME_CONNECT_TIMEOUT, async {
        let runtime = Runtime::connect(endpoint, call_timeout).await?;
        let version = runtime.version().await?;
        Ok::<_, skiff_kubelet::cri::CriError>((runtime, version))
    })
    .await;
    match connected {
        Ok(Ok((runtime, version))) => {
            info!(
                "container runtime {} {} answers on {}; running pods",
                version.runtime_name,
                version.runtime_version,
                path.display()
            );
            Some((runtime, version))
        }
        Ok(Err(error)) => {
            warn!("container runtime at {endpoint}: {error}; pods will not be run");
            None
        }
        Err(_) => {
            warn!(
                "container runtime at {endpoint} did not answer within {RUNTIME_CONNECT_TIMEOUT:?}; pods will not be run"
            );
            None
        }
    }
}

/// Logs to stderr; the filter is SKIFF_KUBELET_LOG, else RUST_LOG, else derived from --v.
fn init_logging(verbosity: u8) -> anyhow::Result<()> {
    let filter = std::env::var("SKIFF_KUBELET_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| level_for_verbosity(verbosity).to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .with_context(|| format!("invalid log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

/// klog's `--v` as a tracing level.
fn level_for_verbosity(verbosity: u8) -> &'static str {
    match verbosity {
        0..=2 => "info",
        3..=4 => "debug",
        _ => "trace",
    }
}

/// Upstream's `GetHostname`: the override, else the host name; trimmed, lowercased, non-empty.
fn node_name(hostname_override: Option<&str>, host_name: &str) -> Result<String, String> {
    let name = hostname_override
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .unwrap_or(host_name)
        .trim();
    if name.is_empty() {
        return Err("empty hostname is invalid".to_owned());
    }
    Ok(name.to_lowercase())
}

/// The socket path of a `unix://` CRI endpoint.
fn unix_socket_path(endpoint: &str) -> Result<PathBuf, String> {
    endpoint
        .strip_prefix("unix://")
        .filter(|path| path.starts_with('/'))
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "{endpoint:?} is not a unix:///absolute/path endpoint (the only kind supported)"
            )
        })
}

/// Go's `time.ParseDuration` for non-negative durations: `10s`, `1m30s`, `500ms`, `1.5h`
/// (units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`).
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (e.g. 10s, 1m30s, 500ms)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_length = rest
            .find(|character: char| !(character.is_ascii_digit() || character == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_length].parse().map_err(|_| invalid())?;
        rest = &rest[number_length..];
        let unit_length = rest
            .find(|character: char| character.is_ascii_digit() || character == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_length] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_length..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_time_parse_duration() {
        assert_eq!(parse_go_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("10x").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    #[test]
    fn node_name_is_the_lowercased_override_or_host_name() {
        assert_eq!(node_name(Some(" Node-A "), "host"), Ok("node-a".to_owned()));
        assert_eq!(node_name(None, "Worker-1\n"), Ok("worker-1".to_owned()));
        assert_eq!(node_name(Some(""), "host"), Ok("host".to_owned()));
        assert_eq!(
            node_name(None, " \n"),
            Err("empty hostname is invalid".to_owned())
        );
    }

    #[test]
    fn verbosity_maps_to_tracing_levels() {
        assert_eq!(level_for_verbosity(0), "info");
        assert_eq!(level_for_verbosity(2), "info");
        assert_eq!(level_for_verbosity(4), "debug");
        assert_eq!(level_for_verbosity(6), "trace");
    }

    #[test]
    fn runtime_endpoints_must_be_unix_sockets() {
        assert_eq!(
            unix_socket_path("unix:///run/containerd/containerd.sock"),
            Ok(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert!(unix_socket_path("tcp://127.0.0.1:1234").is_err());
        assert!(unix_socket_path("unix://relative.sock").is_err());
    }

    #[test]
    fn import_image_needs_no_kubeconfig_but_the_agent_does() {
        assert!(Cli::try_parse_from(["skiff-kubelet"]).is_err());
        let cli = Cli::try_parse_from(["skiff-kubelet", "import-image", "--name", "a:1", "/i.tar"])
            .unwrap();
        let Some(Tool::ImportImage(arguments)) = cli.command else {
            panic!("not import-image: {cli:?}");
        };
        assert_eq!(arguments.file, PathBuf::from("/i.tar"));
        assert_eq!(arguments.name.as_deref(), Some("a:1"));
        assert_eq!(
            arguments.container_runtime_endpoint,
            "unix:///run/containerd/containerd.sock"
        );
        assert!(Cli::try_parse_from(["skiff-kubelet", "import-image"]).is_err());
    }

    #[test]
    fn flags_have_upstream_defaults() {
        let cli = Cli::try_parse_from(["skiff-kubelet", "--kubeconfig", "/k"]).unwrap();
        assert_eq!(
            cli.container_runtime_endpoint,
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(cli.root_dir, PathBuf::from("/var/lib/kubelet"));
        assert_eq!(
            cli.pod_manifest_path,
            PathBuf::from("/etc/kubernetes/manifests")
        );
        assert_eq!(cli.port, 10250);
        assert_eq!(cli.address, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(cli.tls_cert_file, None);
        assert_eq!(cli.client_ca_file, None);
        assert!(
            Cli::try_parse_from([
                "skiff-kubelet",
                "--kubeconfig",
                "/k",
                "--tls-cert-file",
                "/c"
            ])
            .is_err(),
            "a certificate needs its key"
        );
        assert_eq!(cli.pod_cidr_file, PathBuf::from("/run/skiff/podcidr"));
        assert_eq!(cli.node_status_update_frequency, Duration::from_secs(10));
        assert_eq!(cli.node_ip, None);
        assert_eq!(cli.pod_logs_dir, PathBuf::from("/var/log/pods"));
        assert_eq!(
            cli.runtime_request_timeout,
            skiff_kubelet::cri::DEFAULT_RUNTIME_REQUEST_TIMEOUT
        );
        assert!(cli.cluster_dns.is_empty());
        assert_eq!(cli.cluster_domain, "");
        assert!(Cli::try_parse_from(["skiff-kubelet"]).is_err());
        assert!(
            Cli::try_parse_from([
                "skiff-kubelet",
                "--kubeconfig",
                "/k",
                "--pod-cidr",
                "10.0.0.1/8"
            ])
            .is_err()
        );
        let verbose =
            Cli::try_parse_from(["skiff-kubelet", "--kubeconfig", "/k", "--v=3"]).unwrap();
        assert_eq!(verbose.verbosity, 3);
    }
}
