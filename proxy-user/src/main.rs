//! skiff-proxy: Skiff's eBPF service dataplane (replaces kube-proxy).
//!
//! Today it can only load its embedded BPF programs through the verifier (`skiff-proxy verify`).
//! `run` and `status` (service load balancing, issue #3) say they are not built yet and exit
//! non-zero.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use skiff_proxy::programs::{DEFAULT_PIN_DIRECTORY, LoadOptions, LoadedObject, ProgramObject};

/// Skiff's eBPF service dataplane: ClusterIP, NodePort and external IPs in XDP and TC programs.
#[derive(Parser, Debug)]
#[command(name = "skiff-proxy", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load every embedded BPF program into the kernel (through the verifier) and unload it again.
    Verify,
    /// Program the dataplane from Services and EndpointSlices (not built yet).
    Run,
    /// Print services, backends and conntrack entries (not built yet).
    Status,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Verify => verify(),
        Command::Run | Command::Status => anyhow::bail!(
            "service load balancing is not built yet (tracked in issue #3); \
             only `skiff-proxy verify` works today"
        ),
    }
}

fn verify() -> anyhow::Result<()> {
    // Verification must not touch a running dataplane's pinned maps: use a scratch directory.
    let scratch = format!("{DEFAULT_PIN_DIRECTORY}-verify-{}", std::process::id());
    let options = LoadOptions::new(&scratch);
    let result = (|| {
        for object in [ProgramObject::TcPod, ProgramObject::XdpUplink] {
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
