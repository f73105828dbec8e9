//! skiff-cni: Skiff's CNI plugin for a flat, routed pod network.
//!
//! Not built yet: today this binary only answers `--help` and `--version`. Any other use
//! says that the capability does not exist yet and exits non-zero, so nothing mistakes it for
//! a working component.

use clap::Parser;

/// Skiff's CNI plugin for a flat, routed pod network.
#[derive(Parser, Debug)]
#[command(name = "skiff-cni", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!(
        "the CNI ADD, DEL, CHECK, STATUS and GC commands are not built yet (tracked in issue #5); this binary only answers --help and --version"
    )
}
