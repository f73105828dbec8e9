//! skiff-control: Skiff's control services: a Kubernetes API server on an embedded store, scheduler and controllers.
//!
//! Not built yet: today this binary only answers `--help` and `--version`. Any other use
//! says that the capability does not exist yet and exits non-zero, so nothing mistakes it for
//! a working component.

use clap::Parser;

/// Skiff's control services: a Kubernetes API server on an embedded store, scheduler and controllers.
#[derive(Parser, Debug)]
#[command(name = "skiff-control", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!(
        "the API server, store, scheduler and controllers are not built yet (tracked in issue #4); this binary only answers --help and --version"
    )
}
