//! The workload of `cargo xtask bench kubelet`: skiff-kubelet's pod startup latency (the pod
//! created through the API → observed Running and Ready) and its resident memory, written as a
//! markdown report.
//!
//! Starts one node of the kubelet's end-to-end harness (`tests/common`: skiff-control, a private
//! containerd with skiff-cni and busybox imported, the `skiff-kubelet` binary in the node's
//! network namespace), all release builds found next to this example. Then: the kubelet's VmRSS
//! idle after registration; `--pods` pods (busybox `sleep 3600`, `imagePullPolicy: Never`, no
//! probes) created one after another, each waited for before the next; VmRSS with them running;
//! all deleted; the same number created at once (burst) and VmRSS again. Readiness is observed
//! through one watch on the namespace's pods. Everything is removed on exit. Needs root. Not a
//! test: nothing is asserted about the numbers.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use skiff_tests::control::Client;

/// How long the kubelet idles after registration before the first RSS reading.
const IDLE_SETTLE: Duration = Duration::from_secs(5);
/// Pause before the readings with pods running, so the start-up work has settled.
const LOADED_SETTLE: Duration = Duration::from_secs(3);
/// How long one pod (or a whole burst) may take to become Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const PODS_PATH: &str = "/api/v1/namespaces/default/pods";

struct Options {
    pods: usize,
    quick: bool,
    output: Option<PathBuf>,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        pods: 30,
        quick: false,
        output: None,
    };
    let mut pods = None;
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || {
            arguments
                .next()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--pods" => pods = Some(value()?.parse().context("--pods")?),
            "--quick" => options.quick = true,
            "--output" => options.output = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}; expected --pods, --quick, --output"),
        }
    }
    options.pods = pods.unwrap_or(if options.quick { 5 } else { 30 });
    if !(1..=100).contains(&options.pods) {
        bail!("--pods must be from 1 to 100 (twice that many addresses in one /24 pod CIDR)");
    }
    Ok(options)
}

/// The kubelet's memory at one moment, in KiB.
struct Memory {
    rss: u64,
    peak: u64,
}

fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (has the kubelet exited?)"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// Follows the pods of namespace `default` on a thread and sends each pod's name with the
/// instant it was first seen Running and Ready. Reopens the watch from the last resource version
/// when the server ends it.
fn watch_ready(client: Client) -> anyhow::Result<Receiver<(String, Instant)>> {
    let mut stream = client
        .watch(&format!("{PODS_PATH}?watch=true"))
        .context("opening a watch on the pods")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = HashSet::new();
        let mut resource_version = String::new();
        loop {
            for event in stream.by_ref() {
                let now = Instant::now();
                let pod = &event["object"];
                if let Some(version) = pod["metadata"]["resourceVersion"].as_str() {
                    resource_version = version.to_owned();
                }
                let Some(name) = pod["metadata"]["name"].as_str() else {
                    continue;
                };
                if event["type"] == "DELETED" {
                    seen.remove(name);
                } else if common::running_and_ready(pod)
                    && seen.insert(name.to_owned())
                    && sender.send((name.to_owned(), now)).is_err()
                {
                    return;
                }
            }
            let path = if resource_version.is_empty() {
                format!("{PODS_PATH}?watch=true")
            } else {
                format!("{PODS_PATH}?watch=true&resourceVersion={resource_version}")
            };
            match client.watch(&path) {
                Ok(next) => stream = next,
                Err(error) => {
                    eprintln!("bench_kubelet: the pod watch ended: {error}");
                    return;
                }
            }
        }
    });
    Ok(receiver)
}

/// Creates pod `name` bound to node `node` running `image`; returns the instant the create
/// request returned.
fn create(client: &Client, node: &str, image: &str, name: &str) -> anyhow::Result<Instant> {
    let manifest: Value = serde_json::from_str(&common::pod_manifest(
        name,
        node,
        image,
        "sleep 3600",
        "Always",
    ))
    .context("the pod manifest")?;
    let response = client
        .request(
            "POST",
            PODS_PATH,
            None,
            Some(manifest.to_string().as_bytes()),
        )
        .with_context(|| format!("creating pod {name}"))?;
    let returned = Instant::now();
    if response.status != 201 {
        bail!(
            "creating pod {name} answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
    Ok(returned)
}

/// Waits until every pod in `wanted` is reported Ready; returns when each was.
fn await_ready(
    ready: &Receiver<(String, Instant)>,
    node: &common::Node,
    wanted: &[String],
) -> anyhow::Result<HashMap<String, Instant>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut found = HashMap::new();
    while found.len() < wanted.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match ready.recv_timeout(left) {
            Ok((name, at)) => {
                if wanted.contains(&name) {
                    found.insert(name, at);
                }
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "{} of {} pods Ready after {READY_TIMEOUT:?}; kubelet log:\n{}",
                found.len(),
                wanted.len(),
                node.kubelet.log()
            ),
            Err(RecvTimeoutError::Disconnected) => bail!("the pod watch ended"),
        }
    }
    Ok(found)
}

/// Deletes every pod in `names` and waits until the API and the runtime hold none.
async fn delete_all(client: &Client, node: &common::Node, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        let response = client
            .request("DELETE", &format!("{PODS_PATH}/{name}"), None, None)
            .with_context(|| format!("deleting pod {name}"))?;
        if !(200..300).contains(&response.status) {
            bail!("deleting pod {name} answered {}", response.status);
        }
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let listed = client
            .request("GET", PODS_PATH, None, None)
            .context("listing pods")?;
        let pods: Value = serde_json::from_slice(&listed.body).context("the pod list")?;
        let left = pods["items"].as_array().map_or(0, Vec::len);
        let sandboxes = node
            .runtime
            .list_pod_sandboxes(HashMap::new())
            .await
            .context("ListPodSandbox")?
            .len();
        if left == 0 && sandboxes == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} pods and {sandboxes} sandboxes left {READY_TIMEOUT:?} after deleting");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Results {
    sequential: Vec<Duration>,
    burst: Vec<Duration>,
    burst_total: Duration,
    idle: Memory,
    loaded: Memory,
    after_burst: Memory,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    println!("bench_kubelet: starting the node (control plane, containerd, kubelet)");
    let node = common::Node::start("bench-kubelet").await;
    let pid = node.kubelet.pid().context("the kubelet is not running")?;
    let client = node.control.client();
    std::thread::sleep(IDLE_SETTLE);
    let idle = memory(pid)?;
    println!(
        "bench_kubelet: idle VmRSS {} KiB (peak {} KiB)",
        idle.rss, idle.peak
    );

    let ready = watch_ready(client.clone())?;
    let mut sequential = Vec::with_capacity(options.pods);
    let names: Vec<String> = (0..options.pods).map(|n| format!("bench-{n}")).collect();
    for name in &names {
        let returned = create(&client, &node.name, &node.busybox, name)?;
        let at = await_ready(&ready, &node, std::slice::from_ref(name))?;
        let latency = at
            .get(name)
            .context("the pod's ready instant")?
            .saturating_duration_since(returned);
        println!(
            "bench_kubelet: {name} Ready after {:.1} ms",
            milliseconds(latency)
        );
        sequential.push(latency);
    }
    std::thread::sleep(LOADED_SETTLE);
    let loaded = memory(pid)?;
    println!(
        "bench_kubelet: {} pods: VmRSS {} KiB (peak {} KiB)",
        options.pods, loaded.rss, loaded.peak
    );

    println!("bench_kubelet: deleting the pods");
    delete_all(&client, &node, &names).await?;

    let burst_names: Vec<String> = (0..options.pods).map(|n| format!("burst-{n}")).collect();
    println!("bench_kubelet: creating {} pods at once", options.pods);
    let started = Instant::now();
    let returned: Vec<anyhow::Result<Instant>> = std::thread::scope(|scope| {
        let handles: Vec<_> = burst_names
            .iter()
            .map(|name| {
                let (client, node_name, image) = (&client, &node.name, &node.busybox);
                scope.spawn(move || create(client, node_name, image, name))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a create thread panicked")))
            })
            .collect()
    });
    let returned: Vec<Instant> = returned.into_iter().collect::<anyhow::Result<_>>()?;
    let at = await_ready(&ready, &node, &burst_names)?;
    let mut burst = Vec::with_capacity(options.pods);
    let mut last = started;
    for (name, returned) in burst_names.iter().zip(&returned) {
        let ready_at = *at.get(name).context("a burst pod's ready instant")?;
        last = last.max(ready_at);
        burst.push(ready_at.saturating_duration_since(*returned));
    }
    let burst_total = last.saturating_duration_since(started);
    println!(
        "bench_kubelet: burst of {}: all Ready after {:.0} ms",
        options.pods,
        milliseconds(burst_total)
    );
    std::thread::sleep(LOADED_SETTLE);
    let after_burst = memory(pid)?;

    let results = Results {
        sequential,
        burst,
        burst_total,
        idle,
        loaded,
        after_burst,
    };
    let report = render(&options, &results);
    print!("{report}");
    if let Some(path) = &options.output {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
        println!("bench_kubelet: wrote {}", path.display());
    }
    println!("bench_kubelet: tearing the node down");
    drop(ready);
    drop(node);
    Ok(())
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    // Nearest rank.
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Summary {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
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
        max: milliseconds(percentile(&sorted, 1.0)),
        mean: milliseconds(total / u32::try_from(sorted.len().max(1)).unwrap_or(u32::MAX)),
    }
}

fn command_text(program: &str, arguments: &[&str]) -> String {
    std::process::Command::new(program)
        .args(arguments)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn render(options: &Options, results: &Results) -> String {
    let date = command_text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let kernel = command_text("uname", &["-srm"]);
    let containerd = command_text("containerd", &["--version"]);
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let pods = options.pods;
    let quick = if options.quick { " --quick" } else { "" };
    let sequential = summary(&results.sequential);
    let burst = summary(&results.burst);
    let mut out = String::new();
    out.push_str("# skiff-kubelet benchmark\n\n");
    out.push_str(&format!(
        "Produced by `cargo xtask bench kubelet{quick}` on {date}. Not a test: nothing is \
         asserted; numbers move with the machine and with what else runs on it.\n\nMachine: \
         {cores} cores, kernel {kernel}; {containerd}; skiff-control, skiff-kubelet and skiff-cni \
         are release builds.\n\n"
    ));
    out.push_str(&format!(
        "| pod startup (ms): created → Running and Ready | {pods} one after another | {pods} at once |\n\
         |---|---:|---:|\n"
    ));
    for (label, a, b) in [
        ("p50", sequential.p50, burst.p50),
        ("p90", sequential.p90, burst.p90),
        ("p99", sequential.p99, burst.p99),
        ("max", sequential.max, burst.max),
        ("mean", sequential.mean, burst.mean),
    ] {
        out.push_str(&format!("| {label} | {a:.1} | {b:.1} |\n"));
    }
    out.push_str(&format!(
        "\nThe burst: all {pods} pods Ready {:.0} ms after the first create request was sent.\n\n",
        milliseconds(results.burst_total)
    ));
    out.push_str("| skiff-kubelet memory (MiB) | VmRSS | VmHWM (peak so far) |\n|---|---:|---:|\n");
    for (label, memory) in [
        ("idle, registered, 0 pods".to_owned(), &results.idle),
        (
            format!("{pods} pods running (after the sequential creates)"),
            &results.loaded,
        ),
        (
            format!("{pods} pods running (after the burst)"),
            &results.after_burst,
        ),
    ] {
        out.push_str(&format!(
            "| {label} | {:.1} | {:.1} |\n",
            mib(memory.rss),
            mib(memory.peak)
        ));
    }
    out.push_str(&format!(
        "\n## Method\n\n\
         - One node of skiff-kubelet's end-to-end harness (`kubelet/tests/common`): skiff-control \
           on loopback with its embedded store, a private containerd with skiff-cni as its pod \
           network and busybox imported, the `skiff-kubelet` binary in the node's network \
           namespace, registered with its pod CIDR written before anything is measured.\n\
         - Pods: namespace `default`, bound to the node (`nodeName`), one container running \
           busybox `sh -c 'sleep 3600'` with `imagePullPolicy: Never` (the image is already in \
           containerd), no probes, no volumes; so a pod is Ready once its container has started.\n\
         - A latency runs from the create request (`POST /api/v1/namespaces/default/pods`) \
           returning to the watch event that first shows the pod with phase Running, condition \
           Ready True and a pod IP. One watch (`?watch=true`) on the namespace's pods, opened \
           before the first create, gives the instant; nothing is polled.\n\
         - One after another: each pod is created only once the previous one is Ready. At once: \
           after every pod of the first phase is deleted (the API and containerd hold none), {pods} \
           threads each send one create request together; the total runs from just before the \
           first request to the last pod's Ready event.\n\
         - Memory: VmRSS and VmHWM of the kubelet process from `/proc/<pid>/status`, {idle} s \
           after registration with no pods, and {loaded} s after the last pod of a phase became \
           Ready. containerd, its shims and the pods are not counted.\n\
         - Percentiles are nearest-rank over the {pods} pods of a phase.\n",
        idle = IDLE_SETTLE.as_secs(),
        loaded = LOADED_SETTLE.as_secs(),
    ));
    out
}
