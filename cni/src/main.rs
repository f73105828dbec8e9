//! skiff-cni: Skiff's CNI plugin for a flat, routed pod network.
//!
//! A runtime (containerd, CRI-O, cnitool) runs it with `CNI_COMMAND` and the other `CNI_*`
//! variables set and the network configuration on stdin; it prints the result or the error object
//! on stdout and exits 0 or 1 (see `skiff_cni::spec` for the codes). Logs go to stderr, which
//! runtimes keep as the plugin's log; `SKIFF_CNI_LOG` sets the filter (default `warn`).
//!
//! Run by a person (any argument, no `CNI_COMMAND`), it answers `--help` and `--version`, and
//! `node-routes` keeps this node's routes to the other nodes' pod CIDRs.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use skiff_cni::install;
use skiff_cni::routes::{self, NodeRoutesOptions, RoutingMode};

/// Skiff's CNI plugin for a flat, routed pod network (run by container runtimes with CNI_COMMAND
/// set; see the README for the network configuration).
#[derive(Parser, Debug)]
#[command(name = "skiff-cni", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Tool>,
}

#[derive(Subcommand, Debug)]
enum Tool {
    /// Keeps this node's routes to the other nodes' pod CIDRs (direct routing or VXLAN) in line
    /// with a node list (what `kubectl get nodes -o json` prints).
    NodeRoutes(NodeRoutesArguments),
    /// Installs this binary into the runtime's CNI bin dir and the network configuration list
    /// into its conf dir, each atomically (write, fsync, rename).
    Install(InstallArguments),
}

#[derive(clap::Args, Debug)]
struct NodeRoutesArguments {
    /// The node list: a JSON List/NodeList of Nodes with spec.podCIDR and an InternalIP.
    #[arg(long)]
    nodes_file: PathBuf,
    /// This node's name in the list.
    #[arg(long)]
    node_name: String,
    /// `direct` (nodes share an L2 segment) or `vxlan`.
    #[arg(long, default_value = "direct")]
    mode: RoutingMode,
    /// The VXLAN device's UDP port.
    #[arg(long, default_value_t = routes::DEFAULT_VXLAN_PORT)]
    vxlan_port: u16,
    /// The VXLAN network identifier.
    #[arg(long, default_value_t = routes::DEFAULT_VXLAN_VNI)]
    vxlan_vni: u32,
    /// How often to resync even when the file did not change (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = routes::parse_duration)]
    resync_interval: std::time::Duration,
    /// Sync once and exit (non-zero if anything could not be changed).
    #[arg(long)]
    once: bool,
}

#[derive(clap::Args, Debug)]
struct InstallArguments {
    /// The runtime's CNI plugin directory.
    #[arg(long, default_value = "/opt/cni/bin")]
    bin_dir: PathBuf,
    /// The runtime's CNI configuration directory.
    #[arg(long, default_value = "/etc/cni/net.d")]
    conf_dir: PathBuf,
    /// A network configuration list to install instead of the shipped one.
    #[arg(long)]
    conflist: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    init_logging();
    if std::env::var_os("CNI_COMMAND").is_none() && std::env::args_os().len() > 1 {
        return match run_tool() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("skiff-cni: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let execution = match read {
        Ok(_) => skiff_cni::plugin::execute(|name| std::env::var(name).ok(), &stdin),
        Err(error) => skiff_cni::plugin::Execution {
            cni_version: skiff_cni::spec::LATEST_VERSION.to_owned(),
            result: Err(skiff_cni::spec::CniError::new(
                skiff_cni::spec::ErrorCode::IoFailure,
                format!("cannot read the network configuration from stdin: {error}"),
            )),
        },
    };
    let (output, status) = match execution.result {
        Ok(Some(value)) => (Some(value), std::process::ExitCode::SUCCESS),
        Ok(None) => (None, std::process::ExitCode::SUCCESS),
        Err(error) => {
            tracing::warn!(code = error.code as u32, %error, "failed");
            (
                Some(error.to_json(&execution.cni_version)),
                std::process::ExitCode::FAILURE,
            )
        }
    };
    if let Some(value) = output {
        let mut stdout = std::io::stdout().lock();
        let written = serde_json::to_writer(&mut stdout, &value)
            .map_err(std::io::Error::from)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if let Err(error) = written {
            eprintln!("skiff-cni: cannot write the result to stdout: {error}");
            return std::process::ExitCode::FAILURE;
        }
    }
    status
}

fn run_tool() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Tool::NodeRoutes(arguments)) => {
            let options = NodeRoutesOptions {
                nodes_file: arguments.nodes_file,
                node_name: arguments.node_name,
                mode: arguments.mode,
                vxlan_port: arguments.vxlan_port,
                vxlan_vni: arguments.vxlan_vni,
                resync_interval: arguments.resync_interval,
                once: arguments.once,
            };
            Ok(routes::run_node_routes(&options)?)
        }
        Some(Tool::Install(arguments)) => {
            let binary = std::env::current_exe().context("finding this executable")?;
            let plugin = install::install_plugin(&binary, &arguments.bin_dir)?;
            println!("installed {}", plugin.display());
            let conflist = match &arguments.conflist {
                Some(path) => {
                    let contents = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    install::install_conflist(&contents, path, &arguments.conf_dir)?
                }
                None => install::install_conflist(
                    install::DEFAULT_CONFLIST,
                    std::path::Path::new("deploy/cni/10-skiff.conflist (built in)"),
                    &arguments.conf_dir,
                )?,
            };
            println!("installed {}", conflist.display());
            Ok(())
        }
        None => anyhow::bail!(
            "CNI_COMMAND is not set: skiff-cni is run by a container runtime (see --help)"
        ),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_CNI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
