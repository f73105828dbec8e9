//! `cargo xtask test`: the whole test suite, as CI runs it.
//!
//! Runs setup, the lints (`cargo fmt --check`, clippy with `-D warnings` for the host workspace and
//! for the BPF crate on its real target), then every test of the workspace, privileged ones
//! included, and closes with one summary line `N passed, N failed, N ignored`.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    build_ebpf::{BPF_TARGET, nightly_bpf_cargo},
    command, setup,
};

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Skip the lints (fmt, clippy).
    #[arg(long)]
    pub no_lint: bool,
    /// Only tests whose name contains this filter.
    pub filter: Option<String>,
}

pub fn run(root: &Path, args: &TestArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::run(root)?;
    if not_root() {
        println!(
            "note: not running as root; privileged tests will fail unless SKIFF_SKIP_PRIVILEGED=1 \
             is set (they then skip, loudly)"
        );
    }
    if !args.no_lint {
        lint(root)?;
    }
    // Cross-package tests run other packages' binaries (`skiff_tests::workspace_binary`).
    println!("== cargo build --workspace --bins");
    command::run(command::cargo(root).args(["build", "--workspace", "--bins"]))
        .context("building the workspace's binaries")?;
    let totals = cargo_test(root, args.filter.as_deref())?;
    let leftovers = leftovers();
    println!(
        "\nxtask test: {} test binaries, {:.0} s in all",
        totals.binaries,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{} passed, {} failed, {} ignored",
        totals.passed, totals.failed, totals.ignored
    );
    if totals.failed > 0 || !totals.exit_ok {
        bail!("tests failed");
    }
    if !leftovers.is_empty() {
        bail!(
            "the tests passed but left things behind: {}",
            leftovers.join("; ")
        );
    }
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn not_root() -> bool {
    // The uid is read from /proc to keep xtask free of libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid != "0"))
        })
        .unwrap_or(true)
}

fn lint(root: &Path) -> anyhow::Result<()> {
    println!("== cargo fmt --check");
    command::run(command::cargo(root).args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    println!("== cargo clippy (host workspace)");
    command::run(command::cargo(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("== cargo clippy (proxy-ebpf for {BPF_TARGET})");
    command::run(nightly_bpf_cargo(root, "clippy").args(["--", "-D", "warnings"]))?;
    Ok(())
}

/// What the harness must have cleaned up: its network namespaces (`sk-*`) and the containerd and
/// etcd instances started from its temporary directories.
fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        let names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("sk-"))
            .collect();
        if !names.is_empty() {
            found.push(format!("network namespaces {}", names.join(", ")));
        }
    }
    let processes = Command::new("pgrep")
        .args(["-a", "-f", "containerd|etcd"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    let ours: Vec<&str> = processes
        .lines()
        .filter(|line| line.contains("/skc-") || line.contains("/sketcd-"))
        .collect();
    if !ours.is_empty() {
        found.push(format!(
            "containerd or etcd processes: {}",
            ours.join(" | ")
        ));
    }
    found
}

#[derive(Default)]
struct Totals {
    binaries: u64,
    passed: u64,
    failed: u64,
    ignored: u64,
    exit_ok: bool,
}

/// Runs `cargo test --workspace --no-fail-fast`, echoing its output and adding up the
/// `test result:` lines of every test binary.
fn cargo_test(root: &Path, filter: Option<&str>) -> anyhow::Result<Totals> {
    println!("== cargo test --workspace");
    let mut command = command::cargo(root);
    command.args(["test", "--workspace", "--no-fail-fast"]);
    if let Some(filter) = filter {
        command.arg("--").arg(filter);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let stdout = child.stdout.take().context("cargo test has no stdout")?;
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            totals.binaries += 1;
            for part in result.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(label), Some(count)) = (words.next(), words.next()) else {
                    continue;
                };
                let count: u64 = count.parse().unwrap_or(0);
                match label {
                    "passed" => totals.passed += count,
                    "failed" => totals.failed += count,
                    "ignored" => totals.ignored += count,
                    _ => {}
                }
            }
        }
    }
    totals.exit_ok = child.wait().context("waiting for cargo test")?.success();
    Ok(totals)
}
