//! The workload of `cargo xtask bench cni`: ADD and DEL latency of skiff-cni against Debian's
//! reference `ptp` + `host-local` plugins, on the same node namespace, the same pod namespaces and
//! in the same run, written as a markdown report.
//!
//! Each plugin binary is executed the way a runtime executes it (a new process, `CNI_*`
//! variables, the configuration on stdin, the result read from stdout), in a "node" network
//! namespace this program creates. A latency is the wall time from spawning the plugin to its
//! exit. Rounds alternate which plugin goes first; in a round a plugin ADDs every pod one after
//! another, then DELs them one after another. Every namespace is removed on exit, also on error.
//! Needs root. Not a test: nothing is asserted about the numbers.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use skiff_tests::netns::NetNs;

const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

struct Options {
    plugin: PathBuf,
    pods: usize,
    rounds: usize,
    output: Option<PathBuf>,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        plugin: PathBuf::new(),
        pods: 200,
        rounds: 2,
        output: None,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || {
            arguments
                .next()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--plugin" => options.plugin = PathBuf::from(value()?),
            "--pods" => options.pods = value()?.parse().context("--pods")?,
            "--rounds" => options.rounds = value()?.parse().context("--rounds")?,
            "--output" => options.output = Some(PathBuf::from(value()?)),
            other => {
                bail!("unknown argument {other}; expected --plugin, --pods, --rounds, --output")
            }
        }
    }
    if options.plugin.as_os_str().is_empty() {
        bail!("--plugin PATH (the skiff-cni binary) is required");
    }
    if !(1..=250).contains(&options.pods) {
        bail!("--pods must be from 1 to 250 (one /24 pod CIDR)");
    }
    Ok(options)
}

/// One plugin under test.
struct Subject {
    name: &'static str,
    binary: PathBuf,
    config: Value,
    data_dir: tempfile::TempDir,
    add: Vec<Duration>,
    del: Vec<Duration>,
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    for binary in [
        options.plugin.clone(),
        Path::new(REFERENCE_PLUGIN_DIR).join("ptp"),
        Path::new(REFERENCE_PLUGIN_DIR).join("host-local"),
    ] {
        if !binary.is_file() {
            bail!(
                "{} is missing (`cargo xtask setup` installs Debian's containernetworking-plugins)",
                binary.display()
            );
        }
    }
    let node = NetNs::new("bench-cni-node")?;
    node.ip(&[
        "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ])?;
    node.ip(&["link", "set", "uplink0", "up"])?;
    node.ip(&["link", "set", "uplink1", "up"])?;
    node.ip(&["addr", "add", "192.0.2.10/24", "dev", "uplink0"])?;
    node.ip(&["route", "add", "default", "via", "192.0.2.1"])?;
    node.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))??;
    println!("bench_cni: creating {} pod namespaces", options.pods);
    let pods: Vec<NetNs> = (0..options.pods)
        .map(|_| NetNs::new("bench-cni-pod"))
        .collect::<Result<_, _>>()?;

    let skiff_dir = tempfile::tempdir()?;
    let ptp_dir = tempfile::tempdir()?;
    let mut subjects = [
        Subject {
            name: "skiff-cni",
            binary: options.plugin.clone(),
            config: json!({
                "cniVersion": "1.0.0", "name": "bench-skiff", "type": "skiff-cni",
                "podCIDR": "10.246.0.0/24", "dataDir": skiff_dir.path(), "mtu": 1500,
            }),
            data_dir: skiff_dir,
            add: Vec::new(),
            del: Vec::new(),
        },
        Subject {
            name: "ptp + host-local",
            binary: Path::new(REFERENCE_PLUGIN_DIR).join("ptp"),
            config: json!({
                "cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "mtu": 1500,
                "ipMasq": false,
                "ipam": {"type": "host-local", "subnet": "10.247.0.0/24", "dataDir": ptp_dir.path()},
            }),
            data_dir: ptp_dir,
            add: Vec::new(),
            del: Vec::new(),
        },
    ];
    for round in 0..options.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for index in order {
            let subject = &mut subjects[index];
            let started = Instant::now();
            for (n, pod) in pods.iter().enumerate() {
                let container = format!("bench-{round}-{n}");
                let (took, stdout) = invoke(&node, subject, "ADD", &container, pod.path())?;
                let result: Value = serde_json::from_str(&stdout)
                    .with_context(|| format!("{} ADD printed {stdout:?}", subject.name))?;
                if result["ips"][0]["address"].as_str().is_none() {
                    bail!("{} ADD gave no address: {result}", subject.name);
                }
                subject.add.push(took);
            }
            for (n, pod) in pods.iter().enumerate() {
                let container = format!("bench-{round}-{n}");
                let (took, _) = invoke(&node, subject, "DEL", &container, pod.path())?;
                subject.del.push(took);
            }
            println!(
                "bench_cni: round {round}: {} ADD+DEL of {} pods in {:.1} s",
                subject.name,
                pods.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let leftovers = node.ip(&["-o", "link", "show"])?;
    let veths = leftovers
        .lines()
        .filter(|line| line.contains("@if"))
        .count();
    if veths > 1 {
        bail!("interfaces left in the node after every DEL:\n{leftovers}");
    }
    // The kernel's share of a DEL: deleting a veth pair with `ip link del` (process included).
    let mut floor = Vec::new();
    for n in 0..50 {
        let name = format!("floor{n}");
        node.ip(&[
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("floorp{n}"),
        ])?;
        let started = Instant::now();
        node.ip(&["link", "del", &name])?;
        floor.push(started.elapsed());
    }
    let report = render(&options, &subjects, &floor);
    print!("{report}");
    if let Some(path) = &options.output {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
        println!("bench_cni: wrote {}", path.display());
    }
    drop(subjects);
    Ok(())
}

/// Runs `command` for `container` with the plugin in the node namespace; returns the wall time
/// and stdout, or the plugin's error.
fn invoke(
    node: &NetNs,
    subject: &Subject,
    command: &str,
    container: &str,
    netns: &Path,
) -> anyhow::Result<(Duration, String)> {
    let config = subject.config.to_string();
    let started = Instant::now();
    let mut child = node
        .command(&subject.binary)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_PLUGIN_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", subject.binary.display()))?;
    child
        .stdin
        .take()
        .context("stdin is piped")?
        .write_all(config.as_bytes())?;
    let output = child.wait_with_output()?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{} {command} {container} failed: {stdout} {}",
            subject.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let _ = &subject.data_dir;
    Ok((took, stdout))
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    // Nearest rank.
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

struct Summary {
    p50: f64,
    p90: f64,
    p99: f64,
    mean: f64,
}

fn summary(samples: &[Duration]) -> Summary {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let total: Duration = sorted.iter().sum();
    Summary {
        p50: milliseconds(percentile(&sorted, 0.50)),
        p90: milliseconds(percentile(&sorted, 0.90)),
        p99: milliseconds(percentile(&sorted, 0.99)),
        mean: milliseconds(total / u32::try_from(sorted.len().max(1)).unwrap_or(u32::MAX)),
    }
}

fn render(options: &Options, subjects: &[Subject], floor: &[Duration]) -> String {
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|_| "an unknown date".to_owned());
    let kernel = std::process::Command::new("uname")
        .arg("-srm")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mut out = String::new();
    out.push_str("# skiff-cni benchmark\n\n");
    out.push_str(&format!(
        "Produced by `cargo xtask bench cni` on {date}. Not a test: nothing is asserted; numbers \
         move with the machine and with what else runs on it.\n\nMachine: {cores} cores, kernel \
         {kernel}; plugins are release builds (skiff-cni) and Debian's containernetworking-plugins \
         (ptp, host-local).\n\n"
    ));
    let skiff = &subjects[0];
    let reference = &subjects[1];
    out.push_str(&format!(
        "| latency (ms), {} sequential pods × {} rounds | {} | {} | ratio (reference ÷ skiff) |\n|---|---:|---:|---:|\n",
        options.pods, options.rounds, skiff.name, reference.name
    ));
    for (operation, ours, theirs) in [
        ("ADD", &skiff.add, &reference.add),
        ("DEL", &skiff.del, &reference.del),
    ] {
        let ours = summary(ours);
        let theirs = summary(theirs);
        for (label, a, b) in [
            ("p50", ours.p50, theirs.p50),
            ("p90", ours.p90, theirs.p90),
            ("p99", ours.p99, theirs.p99),
            ("mean", ours.mean, theirs.mean),
        ] {
            out.push_str(&format!(
                "| {operation} {label} | {a:.2} | {b:.2} | {:.2}× |\n",
                b / a
            ));
        }
    }
    let floor = summary(floor);
    out.push_str(&format!(
        "\nFor scale: `ip link del` of a veth pair in the same node namespace (a process and the \
         kernel's veth teardown, 50 times) takes p50 {:.2} ms, p99 {:.2} ms; DEL of both plugins \
         is mostly that teardown.\n",
        floor.p50, floor.p99
    ));
    out.push_str(
        "\n## Method\n\n\
         - One \"node\" network namespace (forwarding on, an uplink veth with an address and a \
           default route) and one network namespace per pod, created before timing starts.\n\
         - Each plugin runs as a new process inside the node namespace, as a runtime runs it: \
           `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME=eth0`, `CNI_PATH=/usr/lib/cni`, \
           the configuration (cniVersion 1.0.0) on stdin; a latency is spawn → exit, result read.\n\
         - skiff-cni: `podCIDR` 10.246.0.0/24, its own IPAM in a fresh data directory. Reference: \
           `ptp` (mtu 1500, no masquerade) delegating to `host-local` (10.247.0.0/24, fresh data \
           directory), so every ADD and DEL runs two processes, as it does in production.\n\
         - Rounds alternate which plugin goes first. In a round a plugin ADDs every pod one after \
           another, then DELs them one after another. Percentiles are nearest-rank over all \
           rounds; the ratio is the reference's time divided by skiff-cni's (above 1: skiff-cni \
           is faster).\n\
         - After the run no pod interface is left in the node namespace (checked).\n",
    );
    out
}
