//! `cargo xtask`: Skiff's build system.
//!
//! Owns the developer and CI entry points: `setup` (install what building and testing need),
//! `build-ebpf`, `test` (lints + every test, privileged ones included), `demo` and `bench`. Holds no
//! product logic; it only runs other programs.

mod bench;
mod build_ebpf;
mod command;
mod demo;
mod setup;
mod test;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "Skiff's build system", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install what building and testing need (idempotent; fast when everything is present).
    Setup,
    /// Build the BPF programs of proxy-ebpf for bpfel-unknown-none and print the object paths.
    BuildEbpf,
    /// Run setup, lints (fmt, clippy) and every test, privileged ones included; print a summary.
    Test(test::TestArgs),
    /// Run setup, then start a busybox pod on a private containerd and print its IP and log.
    Demo,
    /// Measure on this machine and write a report (not a test): `bench control`, `bench cni`,
    /// `bench kubelet`.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Command::Setup => setup::run(&root),
        Command::BuildEbpf => build_ebpf::run(&root),
        Command::Test(args) => test::run(&root, &args),
        Command::Demo => demo::run(&root),
        Command::Bench(args) => bench::run(&root, &args),
    }
}

/// The workspace root: xtask lives in `<root>/xtask`.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}
