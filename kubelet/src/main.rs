//! skiff-kubelet: Skiff's node agent: runs pods through containerd over CRI.
//!
//! Not built yet: today this binary only answers `--help` and `--version`. Any other use
//! says that the capability does not exist yet and exits non-zero, so nothing mistakes it for
//! a working component.

use clap::Parser;

/// Skiff's node agent: runs pods through containerd over CRI.
#[derive(Parser, Debug)]
#[command(name = "skiff-kubelet", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!(
        "pod workers, probes, node status and leases are not built yet (tracked in issue #6); this binary only answers --help and --version"
    )
}
