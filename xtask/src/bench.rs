//! `cargo xtask bench control`: skiff-control's performance on this machine, embedded store and
//! etcd side by side, written to `docs/bench/control.md` and printed. `cargo xtask bench cni`:
//! skiff-cni's ADD/DEL latency next to the reference plugins (workload and report in
//! `cni/examples/bench_cni.rs`), written to `docs/bench/cni.md`. `cargo xtask bench kubelet`:
//! skiff-kubelet's pod startup latency and memory on one harness node (workload and report in
//! `kubelet/examples/bench_kubelet.rs`), written to `docs/bench/kubelet.md`.
//!
//! Owns the run: building skiff-control and its `bench_control` example in release; for each
//! backend a fresh scratch directory under `<target>/bench-control/`, a private etcd-server when
//! the backend needs one, skiff-control on a free loopback port; the client's phases in order;
//! the RSS readings between them; teardown (drop guards, see `processes`); and the report (see
//! `report`). The workload itself is `control/examples/bench_control.rs`. Not a test: it asserts
//! nothing about the numbers, and fails only when a run could not be measured.

mod processes;
mod report;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};

use crate::command;
use processes::{Control, ETCD_BINARY, Etcd, ScratchDir, supervised};
use report::{Column, Machine, Values};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Subcommand, Debug)]
enum BenchTarget {
    /// skiff-control's API: latency, writes/s, watch fan-out, large lists and memory, on the
    /// embedded store and on etcd side by side.
    Control(ControlArgs),
    /// skiff-cni's ADD and DEL latency next to Debian's reference ptp + host-local plugins, in
    /// one run on this machine (needs root: it creates network namespaces).
    Cni(CniArgs),
    /// skiff-kubelet's pod startup latency (created → Running and Ready; one after another and
    /// all at once) and its memory idle and with pods running (needs root: it starts a private
    /// containerd in a network namespace).
    Kubelet(KubeletArgs),
}

#[derive(clap::Args, Debug)]
struct KubeletArgs {
    /// 5 pods per phase instead of 30 (under a minute); the report names the count.
    #[arg(long)]
    quick: bool,
    /// Pods per phase (1 to 100); overrides --quick's count.
    #[arg(long)]
    pods: Option<usize>,
    /// Where to write the markdown report (relative to the workspace root).
    #[arg(long, default_value = "docs/bench/kubelet.md")]
    output: PathBuf,
}

#[derive(clap::Args, Debug)]
struct CniArgs {
    /// Pods attached one after another per round (1 to 250).
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// Rounds; they alternate which plugin goes first.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Where to write the markdown report (relative to the workspace root).
    #[arg(long, default_value = "docs/bench/cni.md")]
    output: PathBuf,
}

#[derive(clap::Args, Debug)]
struct ControlArgs {
    /// The same phases with smaller counts (about 2 minutes); the report names the counts.
    #[arg(long)]
    quick: bool,
    /// Where to write the markdown report (relative to the workspace root).
    #[arg(long, default_value = "docs/bench/control.md")]
    output: PathBuf,
    /// Backends to measure, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Backend::Embedded, Backend::Etcd])]
    backends: Vec<Backend>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// skiff-control's own store in its data directory.
    Embedded,
    /// A private etcd-server, through `--etcd-servers`.
    Etcd,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Etcd => "etcd",
        }
    }
}

/// How much work each phase does.
#[derive(Debug, Clone)]
pub struct Counts {
    pub quick: bool,
    /// Sequential creates, gets and updates (each).
    pub latency_operations: usize,
    /// ConfigMap creates per writes measurement.
    pub writes: usize,
    pub write_clients: usize,
    pub watchers: usize,
    pub watch_events: usize,
    pub watch_interval_ms: u64,
    pub pods: usize,
    pub pod_clients: usize,
    pub page_size: usize,
    pub list_rounds: usize,
}

impl Counts {
    fn full() -> Counts {
        Counts {
            quick: false,
            latency_operations: 1000,
            writes: 10_000,
            write_clients: 32,
            watchers: 1000,
            watch_events: 100,
            watch_interval_ms: 100,
            pods: 10_000,
            pod_clients: 32,
            page_size: 500,
            list_rounds: 5,
        }
    }

    fn quick() -> Counts {
        Counts {
            quick: true,
            latency_operations: 200,
            writes: 1000,
            watchers: 1000,
            watch_events: 10,
            pods: 2000,
            list_rounds: 1,
            ..Counts::full()
        }
    }
}

/// Pause before each RSS reading, so the work just done has settled (the first reading follows
/// `/readyz`).
const RSS_SETTLE: Duration = Duration::from_secs(1);

pub fn run(root: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    match &args.target {
        BenchTarget::Control(control) => run_control(root, control),
        BenchTarget::Cni(cni) => run_cni(root, cni),
        BenchTarget::Kubelet(kubelet) => run_kubelet(root, kubelet),
    }
}

/// Builds skiff-control, skiff-kubelet, skiff-cni and the `bench_kubelet` example in release
/// (the example's harness finds the binaries next to it) and runs the example, which owns the
/// node, the measurement and the report.
fn run_kubelet(root: &Path, args: &KubeletArgs) -> anyhow::Result<()> {
    println!(
        "bench: building skiff-control, skiff-kubelet, skiff-cni and the bench_kubelet example \
         (release)"
    );
    command::run(command::cargo(root).args([
        "build",
        "--release",
        "--package",
        "skiff-control",
        "--package",
        "skiff-kubelet",
        "--package",
        "skiff-cni",
        "--bins",
        "--example",
        "bench_kubelet",
    ]))
    .context("building the benchmark (see the cargo output above)")?;
    let workload = target_dir(root).join("release/examples/bench_kubelet");
    let output = root.join(&args.output);
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut run = Command::new(&workload);
    run.arg("--output").arg(&output);
    if args.quick {
        run.arg("--quick");
    }
    if let Some(pods) = args.pods {
        run.args(["--pods", &pods.to_string()]);
    }
    command::run(&mut run)
        .context("the kubelet benchmark failed (it needs root and `cargo xtask setup`)")
}

/// Builds skiff-cni and its `bench_cni` example in release and runs the example, which owns the
/// namespaces, the measurement and the report.
fn run_cni(root: &Path, args: &CniArgs) -> anyhow::Result<()> {
    println!("bench: building skiff-cni and the bench_cni example (release)");
    command::run(command::cargo(root).args([
        "build",
        "--release",
        "--package",
        "skiff-cni",
        "--bin",
        "skiff-cni",
        "--example",
        "bench_cni",
    ]))
    .context("building the benchmark (see the cargo output above)")?;
    let release = target_dir(root).join("release");
    let plugin = release.join("skiff-cni");
    let workload = release.join("examples/bench_cni");
    let output = root.join(&args.output);
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    command::run(
        Command::new(&workload)
            .arg("--plugin")
            .arg(&plugin)
            .args(["--pods", &args.pods.to_string()])
            .args(["--rounds", &args.rounds.to_string()])
            .arg("--output")
            .arg(&output),
    )
    .context("the CNI benchmark failed (it needs root and `cargo xtask setup`)")
}

/// The workspace's target directory (`CARGO_TARGET_DIR` when set).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// The release binaries the benchmark runs.
struct Binaries {
    control: PathBuf,
    client: PathBuf,
}

fn build(root: &Path) -> anyhow::Result<Binaries> {
    println!("bench: building skiff-control and the bench_control example (release)");
    command::run(command::cargo(root).args([
        "build",
        "--release",
        "--package",
        "skiff-control",
        "--bin",
        "skiff-control",
        "--example",
        "bench_control",
    ]))
    .context("building the benchmark (see the cargo output above)")?;
    let release = target_dir(root).join("release");
    let binaries = Binaries {
        control: release.join("skiff-control"),
        client: release.join("examples/bench_control"),
    };
    for binary in [&binaries.control, &binaries.client] {
        if !binary.is_file() {
            bail!("cargo built, but {} does not exist", binary.display());
        }
    }
    Ok(binaries)
}

fn run_control(root: &Path, args: &ControlArgs) -> anyhow::Result<()> {
    if args.backends.contains(&Backend::Etcd) && !Path::new(ETCD_BINARY).is_file() {
        bail!("{ETCD_BINARY} is missing; `cargo xtask setup` installs it (Debian etcd-server)");
    }
    let counts = if args.quick {
        Counts::quick()
    } else {
        Counts::full()
    };
    let binaries = build(root)?;
    let scratch_base = target_dir(root).join("bench-control");
    processes::remove_stale_scratch_dirs(&scratch_base);
    let started = Instant::now();
    let mut columns = Vec::new();
    for backend in &args.backends {
        let scratch = scratch_base.join(format!("{}-{}", backend.name(), std::process::id()));
        let mut values = Values::new();
        let backend_started = Instant::now();
        let errors = run_backend(*backend, &binaries, scratch, &counts, &mut values);
        if errors.is_empty() {
            println!(
                "bench: {} done in {:.0} s",
                backend.name(),
                backend_started.elapsed().as_secs_f64()
            );
        } else {
            eprintln!(
                "bench: {} finished with {} failure(s) in {:.0} s",
                backend.name(),
                errors.len(),
                backend_started.elapsed().as_secs_f64()
            );
        }
        columns.push(Column {
            backend: backend.name().to_owned(),
            values,
            errors,
        });
    }

    let machine = machine(&scratch_base);
    let text = report::render(&machine, &counts, &columns);
    let output = root.join(&args.output);
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&output, &text).with_context(|| format!("writing {}", output.display()))?;
    println!("\n{text}");
    println!(
        "bench: report written to {} ({:.0} s of measurement)",
        output.display(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = columns
        .iter()
        .filter(|column| !column.errors.is_empty())
        .map(|column| column.backend.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "the {} backend(s) could not be measured completely (see Failures in the report)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// One step of a backend's run.
enum Step {
    /// A `bench_control` phase; its results are stored with this prefix.
    Phase(Vec<String>, &'static str),
    /// Wait a moment, then read skiff-control's RSS into this value.
    ControlRss(&'static str),
    /// Read etcd's RSS into this value (etcd backend only).
    EtcdRss(&'static str),
}

fn phase(arguments: &[&str], prefix: &'static str) -> Step {
    Step::Phase(
        arguments
            .iter()
            .map(|argument| (*argument).to_owned())
            .collect(),
        prefix,
    )
}

/// The steps of one backend's run, in order (the report's method notes describe this order).
fn steps(counts: &Counts) -> Vec<Step> {
    let pods = counts.pods.to_string();
    let writes = counts.writes.to_string();
    vec![
        phase(&["ready"], ""),
        Step::ControlRss("rss_idle_mib"),
        phase(
            &[
                "create-pods",
                "--count",
                &pods,
                "--clients",
                &counts.pod_clients.to_string(),
            ],
            "",
        ),
        Step::ControlRss("rss_pods_mib"),
        Step::EtcdRss("etcd_rss_pods_mib"),
        phase(
            &[
                "list-pods",
                "--expected",
                &pods,
                "--page-size",
                &counts.page_size.to_string(),
                "--rounds",
                &counts.list_rounds.to_string(),
            ],
            "",
        ),
        phase(
            &["latency", "--count", &counts.latency_operations.to_string()],
            "",
        ),
        phase(&["writes", "--count", &writes, "--clients", "1"], "single_"),
        phase(
            &[
                "writes",
                "--count",
                &writes,
                "--clients",
                &counts.write_clients.to_string(),
            ],
            "concurrent_",
        ),
        phase(
            &[
                "watch",
                "--watchers",
                &counts.watchers.to_string(),
                "--events",
                &counts.watch_events.to_string(),
                "--interval-ms",
                &counts.watch_interval_ms.to_string(),
            ],
            "",
        ),
        Step::ControlRss("rss_end_mib"),
    ]
}

/// One backend's column: every process lives in this function and is stopped when it returns,
/// whether it succeeded or not. Numbers are added to `values` as they are measured; a phase that
/// fails is recorded and the next one runs, unless a server died (or the server never became
/// ready). Returns the failures.
fn run_backend(
    backend: Backend,
    binaries: &Binaries,
    scratch: PathBuf,
    counts: &Counts,
    values: &mut Values,
) -> Vec<String> {
    // Dropped in reverse order: skiff-control, then etcd, then the directory.
    let scratch = match ScratchDir::create(scratch) {
        Ok(scratch) => scratch,
        Err(error) => return vec![format!("{error:#}")],
    };
    let mut etcd = None;
    if backend == Backend::Etcd {
        println!("bench: {}: starting etcd", backend.name());
        match Etcd::start(scratch.path()) {
            Ok(started) => etcd = Some(started),
            Err(error) => return vec![format!("starting etcd: {error:#}")],
        }
    }
    println!("bench: {}: starting skiff-control", backend.name());
    let control = Control::start(
        &binaries.control,
        scratch.path().join("control"),
        etcd.as_ref().map(|etcd| etcd.client_url.as_str()),
        scratch.path().join("skiff-control.log"),
    );
    let mut control = match control {
        Ok(control) => control,
        Err(error) => return vec![format!("starting skiff-control: {error:#}")],
    };
    let name = control.daemon.command_name();
    if name != "skiff-control" {
        return vec![format!(
            "pid {} runs {name:?}, not skiff-control; RSS would be read from the wrong process",
            control.daemon.pid()
        )];
    }
    let client = Client {
        binary: &binaries.client,
        server_url: control.server_url.clone(),
        data_dir: control.data_dir.clone(),
        backend,
    };
    let mut failures = Vec::new();
    for step in steps(counts) {
        let outcome = match &step {
            Step::Phase(arguments, prefix) => client.phase(arguments, prefix, values),
            Step::ControlRss(name) => {
                std::thread::sleep(RSS_SETTLE);
                control.daemon.rss_mib().map(|rss| {
                    values.insert((*name).to_owned(), rss);
                })
            }
            Step::EtcdRss(name) => match &etcd {
                Some(etcd) => etcd.daemon.rss_mib().map(|rss| {
                    values.insert((*name).to_owned(), rss);
                }),
                None => Ok(()),
            },
        };
        let Err(error) = outcome else { continue };
        eprintln!("bench: {}: {error:#}", backend.name());
        failures.push(format!("{error:#}"));
        let mut died = false;
        if let Err(death) = control.daemon.check_running() {
            failures.push(format!("{death:#}"));
            died = true;
        }
        if let Some(etcd) = &mut etcd
            && let Err(death) = etcd.daemon.check_running()
        {
            failures.push(format!("{death:#}"));
            died = true;
        }
        let never_ready = matches!(&step, Step::Phase(arguments, _) if arguments.first().is_some_and(|first| first == "ready"));
        if died || never_ready {
            break;
        }
    }
    failures
}

/// The `bench_control` client, pointed at one running skiff-control.
struct Client<'a> {
    binary: &'a Path,
    server_url: String,
    data_dir: PathBuf,
    backend: Backend,
}

impl Client<'_> {
    /// Runs one phase; its `result NAME VALUE` lines land in `values` as `<prefix>NAME`, also
    /// those of a phase that then fails.
    fn phase(&self, arguments: &[String], prefix: &str, values: &mut Values) -> anyhow::Result<()> {
        let started = Instant::now();
        println!("bench: {}: {}", self.backend.name(), arguments.join(" "));
        let mut command = supervised(self.binary);
        command
            .args(["--server", &self.server_url])
            .arg("--ca")
            .arg(self.data_dir.join("pki/ca.crt"))
            .arg("--token-file")
            .arg(self.data_dir.join("admin.token"))
            .args(arguments)
            // Errors are quoted in the report; a backtrace would only bury them.
            .env("RUST_LIB_BACKTRACE", "0");
        let description = command::describe(&command);
        let output = command
            .output()
            .with_context(|| format!("could not start `{description}`"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let measured = parse_results(&stdout);
        for (name, value) in &measured {
            values.insert(format!("{prefix}{name}"), *value);
        }
        if !output.status.success() {
            // What the phase measured before failing is kept.
            bail!(
                "the {} phase failed ({}): {}",
                arguments.join(" "),
                output.status,
                stderr.trim()
            );
        }
        // Warnings (e.g. watchers that ended early) still reach the user.
        eprint!("{stderr}");
        if measured.is_empty() && arguments.first().map(String::as_str) != Some("ready") {
            bail!(
                "the {} phase reported no results; it printed: {stdout}",
                arguments.join(" ")
            );
        }
        for (name, value) in &measured {
            println!("bench: {}:   {name} = {value:.3}", self.backend.name());
        }
        println!(
            "bench: {}:   ({:.1} s)",
            self.backend.name(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// The `result NAME VALUE` lines of the client's stdout.
fn parse_results(stdout: &str) -> Vec<(String, f64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("result") {
                return None;
            }
            let name = words.next()?;
            let value = words.next()?.parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect()
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}

/// Facts about this machine for the report's header; unknown ones say so.
fn machine(data_dir: &Path) -> Machine {
    let ask = |program: &str, arguments: &[&str]| {
        command::output(Command::new(program).args(arguments))
            .map(|text| first_line(&text))
            .unwrap_or_else(|_| "unknown".to_owned())
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(
            || "unknown CPU".to_owned(),
            |(_, model)| model.trim().to_owned(),
        );
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or_else(
            || "unknown".to_owned(),
            |kib| format!("{:.1} GiB", kib / (1024.0 * 1024.0)),
        );
    let filesystem = command::output(
        Command::new("df")
            .args(["--output=fstype"])
            .arg(data_dir.parent().unwrap_or(data_dir)),
    )
    .ok()
    .and_then(|text| text.lines().nth(1).map(|kind| kind.trim().to_owned()))
    .unwrap_or_else(|| "an unknown filesystem".to_owned());
    let etcd_version = command::output(Command::new(ETCD_BINARY).arg("--version"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("etcd Version:"))
                .map(|version| format!("etcd-server {}", version.trim()))
        })
        .unwrap_or_else(|| "etcd-server version unknown".to_owned());
    Machine {
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        cpu,
        memory,
        kernel: ask("uname", &["-srm"]),
        date: ask("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        filesystem,
        etcd_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_result_lines_are_collected() {
        let stdout = "noise\nresult create_p50_ms 1.250\nresult broken\nresult rss x\nresult list_pages 20.000\n";
        assert_eq!(
            parse_results(stdout),
            vec![
                ("create_p50_ms".to_owned(), 1.25),
                ("list_pages".to_owned(), 20.0)
            ]
        );
    }

    #[test]
    fn a_failed_backend_keeps_its_numbers_and_marks_the_rest() {
        let machine = Machine {
            cores: 2,
            cpu: "test CPU".to_owned(),
            memory: "4.0 GiB".to_owned(),
            kernel: "Linux 6.1.0 x86_64".to_owned(),
            date: "2026-01-01 00:00 UTC".to_owned(),
            filesystem: "ext4".to_owned(),
            etcd_version: "etcd-server 3.4.23".to_owned(),
        };
        let embedded = Column {
            backend: "embedded".to_owned(),
            values: [
                ("create_p50_ms", 1.234),
                ("create_p99_ms", 5.0),
                ("rss_idle_mib", 12.34),
            ]
            .map(|(name, value)| (name.to_owned(), value))
            .into(),
            errors: Vec::new(),
        };
        let etcd = Column {
            backend: "etcd".to_owned(),
            values: [("rss_idle_mib".to_owned(), 20.0)].into(),
            errors: vec!["etcd exited".to_owned()],
        };
        let text = report::render(&machine, &Counts::quick(), &[embedded, etcd]);
        assert!(text.contains("| measurement | embedded | etcd |"), "{text}");
        assert!(text.contains("| 1.23 / 5.00 | failed |"), "{text}");
        assert!(text.contains("| 12.3 | 20.0 |"), "{text}");
        assert!(text.contains("| n/a | failed |"), "etcd-only row: {text}");
        assert!(text.contains("**Quick run**"), "{text}");
        assert!(text.contains("etcd exited"), "{text}");
        assert!(
            text.contains("2\u{202f}000 pods"),
            "counts are named: {text}"
        );
    }
}
