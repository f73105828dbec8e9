//! `cargo run -p skiff-tests --example cri-demo` (as root): Skiff's demo of its node harness.
//!
//! Creates a network namespace, starts a private containerd inside it, gives it the stand-in CNI
//! network (reference bridge + host-local), imports a locally built busybox image, runs the pod
//! `skiff-demo` with one container that prints a line, shows the pod's IP and the container's log
//! line, and removes everything again: namespace, bridge and veths, mounts, containerd and its
//! shims, and its directory. Exits non-zero with the reason when anything fails.

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use skiff_tests::{
    containerd::{self, Containerd, StandInNetwork},
    cri,
    netns::NetNs,
    oci_image,
    privileged::program_available,
};

const POD: &str = "skiff-demo";
const GREETING: &str = "hello from skiff";

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("cri-demo failed: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    check_prerequisites()?;
    let start = Instant::now();
    let step = |message: &str| println!("[{:>6.2}s] {message}", start.elapsed().as_secs_f64());

    let netns = NetNs::new("demo").context("creating the demo network namespace")?;
    let netns_name = netns.name().to_owned();
    step(&format!("network namespace {netns_name} created"));

    let containerd = Containerd::start(&netns).context("starting a private containerd")?;
    let dir = containerd.dir().to_owned();
    step(&format!(
        "containerd {} running in {netns_name} (pid {}, socket {}), pause image {} imported",
        containerd::CONTAINERD_BINARY,
        containerd.pid(),
        containerd.socket().display(),
        containerd.pause_image(),
    ));

    let outcome = run_pod(&containerd, &step).await;

    containerd.stop().context("stopping containerd")?;
    drop(netns);
    step("containerd stopped, namespace removed");
    verify_nothing_left(&dir, &netns_name)?;
    step("nothing left behind: no containerd or shim process, mount, namespace or directory");

    let (ip, line) = outcome?;
    println!();
    println!("pod {POD} got IP {ip}");
    println!("container log: {line}");
    Ok(())
}

/// Runs the demo pod and returns its IP and the container's log line; removes the pod.
async fn run_pod(
    containerd: &Containerd,
    step: &impl Fn(&str),
) -> anyhow::Result<(String, String)> {
    let network = StandInNetwork::new(Ipv4Addr::new(10, 77, 0, 0), 24);
    containerd
        .use_stand_in_network(&network)
        .context("installing the stand-in CNI network")?;
    step(&format!(
        "CNI network {} ready: bridge {} with host-local IPAM in {}",
        network.name,
        network.bridge,
        network.cidr()
    ));

    let busybox = oci_image::busybox()
        .import_into(containerd)
        .context("building and importing the busybox image")?;
    step(&format!(
        "image {} imported ({})",
        busybox.name, busybox.manifest_digest
    ));

    let mut client = containerd.cri().await.context("connecting to CRI")?;
    let version = client.version().await?;
    step(&format!(
        "CRI answers: {} {} (CRI {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    ));

    let pod = cri::pod_sandbox_config(POD, &containerd.pod_logs_dir().join(POD));
    let pod_id = client.run_pod_sandbox(&pod).await?;
    step(&format!("pod {POD} running (sandbox {})", short(&pod_id)));

    let result = async {
        let ip = client.pod_ip(&pod_id).await?;
        ensure!(
            network.contains(ip),
            "pod {POD} got IP {ip}, outside the stand-in subnet {}",
            network.cidr()
        );
        let container = cri::container_config("hello", &busybox.name, &["echo", GREETING]);
        let container_id = client.run_container(&pod_id, &pod, &container).await?;
        step(&format!(
            "container hello started ({})",
            short(&container_id)
        ));
        let status = client
            .wait_container_exited(&container_id, Duration::from_secs(20))
            .await?;
        ensure!(
            status.exit_code == 0,
            "container hello exited with code {} ({}: {})",
            status.exit_code,
            status.reason,
            status.message
        );
        step("container hello exited with code 0");
        let log = cri::container_log_path(&pod, &container);
        let lines = cri::wait_log_line(&log, GREETING, Duration::from_secs(5)).await?;
        for line in &lines {
            step(&format!(
                "log {}: {} {} {}",
                log.display(),
                line.time,
                line.stream,
                line.text
            ));
        }
        let line = lines
            .into_iter()
            .find(|line| line.text == GREETING)
            .map(|line| line.text)
            .unwrap_or_default();
        Ok((ip.to_string(), line))
    }
    .await;

    client
        .stop_and_remove_pod_sandbox(&pod_id)
        .await
        .with_context(|| format!("removing pod {POD}"))?;
    step(&format!("pod {POD} stopped and removed"));
    result
}

fn check_prerequisites() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "cri-demo must run as root: it creates a network namespace and runs containerd \
             (try `sudo -E cargo run -p skiff-tests --example cri-demo`)"
        );
    }
    let missing: Vec<&str> = [
        containerd::CONTAINERD_BINARY,
        "ctr",
        "runc",
        oci_image::HOST_BUSYBOX,
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/loopback",
    ]
    .into_iter()
    .filter(|program| !program_available(program))
    .collect();
    if !missing.is_empty() {
        bail!(
            "cri-demo needs {} (run `cargo xtask setup`)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Checks with the system's own view (processes, mounts, `ip netns`) that the demo is gone.
fn verify_nothing_left(dir: &Path, netns_name: &str) -> anyhow::Result<()> {
    let leftovers = containerd::leftovers(dir);
    ensure!(
        leftovers.is_empty(),
        "left behind: {}",
        leftovers.join("; ")
    );
    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("running `ip netns list`")?;
    ensure!(
        !String::from_utf8_lossy(&namespaces.stdout)
            .split_whitespace()
            .any(|name| name == netns_name),
        "network namespace {netns_name} still exists"
    );
    Ok(())
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
