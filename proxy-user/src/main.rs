//! skiff-proxy: Skiff's eBPF service dataplane (replaces kube-proxy).
//!
//! `run` programs the dataplane from a source of Services and EndpointSlices and keeps it in sync;
//! `status` prints what the pinned maps hold; `verify` loads every program through the verifier.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use proxy_common::ProxyConfig;
use skiff_proxy::{
    daemon::{self, RunOptions},
    maglev,
    maps::DataplaneMaps,
    programs::{
        DEFAULT_PIN_DIRECTORY, LoadOptions, LoadedObject, MapSizes, ProgramObject, is_on_bpffs,
    },
    source::SourceSpec,
    status,
    translate::LoadBalancerMode,
    uplink::{Ipv4Cidr, XdpAttachMode},
};

/// Skiff's eBPF service dataplane: ClusterIP load balancing in TC programs, BPF conntrack.
#[derive(Parser, Debug)]
#[command(name = "skiff-proxy", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Program the dataplane from Services and EndpointSlices and keep it in sync.
    Run(Box<RunArgs>),
    /// Print services, backends and conntrack entries from the pinned maps.
    Status {
        /// bpffs directory holding the dataplane's pinned maps.
        #[arg(long, default_value = DEFAULT_PIN_DIRECTORY)]
        bpffs: PathBuf,
        /// At most this many conntrack entries are listed.
        #[arg(long, default_value_t = 50)]
        conntrack_limit: usize,
    },
    /// Load every embedded BPF program into the kernel (through the verifier) and unload it again.
    Verify,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Where Services and EndpointSlices come from: `file:PATH` (multi-document YAML, reloaded on
    /// change).
    #[arg(long)]
    source: SourceSpec,
    /// This node's name (`internalTrafficPolicy: Local` keeps endpoints whose nodeName is this).
    #[arg(long)]
    node_name: String,
    /// A pod interface (host-side veth) to attach to; repeatable.
    #[arg(long = "interface")]
    interfaces: Vec<String>,
    /// Attach to every existing and future interface whose name starts with this.
    #[arg(long)]
    interface_prefix: Option<String>,
    /// bpffs directory for pinned maps and links (kept across restarts).
    #[arg(long, default_value = DEFAULT_PIN_DIRECTORY)]
    bpffs: PathBuf,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// cgroup v2 directory to attach the node-socket programs to (node → ClusterIP traffic).
    /// Default: the machine's cgroup v2 hierarchy. Only sockets of this network namespace are
    /// translated.
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// Capacity of the service frontend map (and highest service id).
    #[arg(long, default_value_t = MapSizes::default().services)]
    max_services: u32,
    /// Capacity of the backend map (and highest backend id).
    #[arg(long, default_value_t = MapSizes::default().backends)]
    max_backends: u32,
    /// Capacity of the backend slot map: the ready backends of every ClusterIP frontend plus
    /// `--maglev-table-size` per NodePort / external / load-balancer frontend (allocated as used).
    #[arg(long, default_value_t = MapSizes::default().backend_slots)]
    max_backend_slots: u32,
    /// Capacity of the conntrack map (two entries per flow; least recently used are evicted).
    #[arg(long, default_value_t = MapSizes::default().conntrack)]
    conntrack_max: u32,
    /// Capacity of the ClientIP session affinity map.
    #[arg(long, default_value_t = MapSizes::default().affinity)]
    max_affinity: u32,
    /// Idle timeout of established TCP flows, seconds (kube-proxy's conntrack.tcpEstablishedTimeout).
    #[arg(long, default_value_t = ProxyConfig::default().tcp_established_timeout_seconds)]
    conntrack_tcp_timeout_established: u32,
    /// Idle timeout of UDP flows without replies, seconds (nf_conntrack_udp_timeout).
    #[arg(long, default_value_t = ProxyConfig::default().udp_timeout_seconds)]
    conntrack_udp_timeout: u32,
    /// Idle timeout of UDP flows with replies, seconds (nf_conntrack_udp_timeout_stream).
    #[arg(long, default_value_t = ProxyConfig::default().udp_stream_timeout_seconds)]
    conntrack_udp_timeout_stream: u32,
    /// The node's uplink: NodePorts, external IPs and load-balancer IPs are served on traffic
    /// arriving here (XDP), and flows to remote backends are source-NATed to its address.
    #[arg(long)]
    uplink: Option<String>,
    /// How the uplink programs attach: `native` XDP, `generic` (skb) XDP, or `tc` (no XDP).
    #[arg(long, default_value_t = XdpAttachMode::Native)]
    xdp_mode: XdpAttachMode,
    /// How remote backends are reached from the uplink unless a Service's `skiff.dev/lb-mode`
    /// annotation says otherwise: `snat` (source rewritten to this node; replies return through
    /// it) or `dsr` (TCP tunnelled to the backend's node, which answers the client directly;
    /// needs XDP on every node; UDP stays SNAT).
    #[arg(long, default_value = "snat", value_parser = parse_load_balancer_mode)]
    lb_mode: LoadBalancerMode,
    /// Node addresses NodePorts answer on, as CIDRs (comma-separated); default: every IPv4
    /// address of the node.
    #[arg(long, value_delimiter = ',')]
    nodeport_addresses: Vec<Ipv4Cidr>,
    /// Maglev lookup table size per north-south frontend (a prime; slots per frontend).
    #[arg(long, default_value_t = maglev::DEFAULT_TABLE_SIZE as u32)]
    maglev_table_size: u32,
    /// Where the proxy's `/healthz` and `/livez` are served (kube-proxy's default port).
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: SocketAddr,
}

fn parse_load_balancer_mode(value: &str) -> Result<LoadBalancerMode, String> {
    match value {
        "snat" => Ok(LoadBalancerMode::Snat),
        "dsr" => Ok(LoadBalancerMode::Dsr),
        other => Err(format!(
            "{other:?} is not a load-balancer mode (snat or dsr)"
        )),
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => run(*args),
        Command::Status {
            bpffs,
            conntrack_limit,
        } => {
            let maps = DataplaneMaps::open(&bpffs)?;
            print!("{}", status::services_table(&maps.read_state()?));
            println!();
            print!("{}", status::conntrack_table(&maps, conntrack_limit));
            print!("{}", status::snat_summary(&maps));
            Ok(())
        }
        Command::Verify => verify(),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let bpffs_parent = args.bpffs.parent().unwrap_or(&args.bpffs);
    anyhow::ensure!(
        is_on_bpffs(bpffs_parent),
        "--bpffs {}: {} is not on a bpffs mount (mount one with `mount -t bpf bpf /sys/fs/bpf`)",
        args.bpffs.display(),
        bpffs_parent.display()
    );
    if args.interfaces.is_empty() && args.interface_prefix.is_none() {
        tracing::warn!("no --interface or --interface-prefix: no pod traffic will be balanced");
    }
    let maglev_table_size = maglev::validate_table_size(args.maglev_table_size)?;
    let defaults = ProxyConfig::default();
    let options = RunOptions {
        source: args.source,
        node_name: args.node_name,
        interfaces: args.interfaces,
        interface_prefix: args.interface_prefix,
        pin_directory: args.bpffs,
        metrics_address: args.metrics_addr,
        cgroup_root: args
            .cgroup_root
            .or_else(skiff_proxy::links::default_cgroup_root),
        map_sizes: MapSizes {
            services: args.max_services,
            backends: args.max_backends,
            backend_slots: args.max_backend_slots,
            conntrack: args.conntrack_max,
            affinity: args.max_affinity,
        },
        config: ProxyConfig {
            tcp_established_timeout_seconds: args.conntrack_tcp_timeout_established,
            udp_timeout_seconds: args.conntrack_udp_timeout,
            udp_stream_timeout_seconds: args.conntrack_udp_timeout_stream,
            ..defaults
        },
        uplink: args.uplink,
        xdp_mode: args.xdp_mode,
        nodeport_addresses: args.nodeport_addresses,
        maglev_table_size,
        load_balancer_mode: args.lb_mode,
        healthz_address: Some(args.healthz_bind_address),
        health_check_bind_address: args.healthz_bind_address.ip(),
    };
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, request_stop as *const () as libc::sighandler_t);
        }
    }
    daemon::run(&options, &STOP).context("skiff-proxy run")
}

fn verify() -> anyhow::Result<()> {
    // Verification must not touch a running dataplane's pinned maps: use a scratch directory.
    let scratch = format!("{DEFAULT_PIN_DIRECTORY}-verify-{}", std::process::id());
    let options = LoadOptions::new(&scratch);
    let result = (|| {
        for object in [
            ProgramObject::TcPod,
            ProgramObject::Sock,
            ProgramObject::XdpUplink,
        ] {
            let loaded = LoadedObject::load(object, &options)
                .with_context(|| format!("the kernel refused {}", object.name()))?;
            for program in object.programs() {
                let id = loaded
                    .program_id(*program)
                    .map_or_else(|| "unknown".to_owned(), |id| id.to_string());
                println!(
                    "{:<12} verified and loaded (program id {id})",
                    program.as_str()
                );
            }
        }
        anyhow::Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
