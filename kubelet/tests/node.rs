//! The node side of skiff-kubelet against a real skiff-control on loopback: registration, status,
//! the node Lease, the pod CIDR hand-off to skiff-cni, and a clean stop.
//!
//! Each test starts its own skiff-control (`skiff_tests::control`) and one skiff-kubelet process
//! with a unique node name, a temporary `--root-dir` and `--pod-cidr-file`, and no containerd.
//! Nothing is written outside the tests' temporary directories; nothing needs root.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};
use skiff_tests::control::{ControlPlane, text};

/// How long a kubelet gets to register and report.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// The Lease is renewed every 10 s (0.25 × 40 s); allow a second renewal to land.
const LEASE_RENEW_TIMEOUT: Duration = Duration::from_secs(30);

/// A skiff-kubelet process (node side only), SIGKILLed on drop; its log is kept in the temporary
/// directory and printed when a wait fails.
struct Kubelet {
    child: Option<Child>,
    node: String,
    log: PathBuf,
    pod_cidr_file: PathBuf,
}

impl Kubelet {
    fn start(
        control: &ControlPlane,
        directory: &Path,
        node: &str,
        pod_cidr: Option<&str>,
    ) -> Kubelet {
        let root_dir = directory.join("root");
        let pod_cidr_file = directory.join("podcidr");
        let log = directory.join(format!("{node}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("create the kubelet log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_skiff-kubelet"));
        command
            .arg("--kubeconfig")
            .arg(control.kubeconfig())
            .args(["--hostname-override", node, "--node-ip", "127.0.0.1"])
            .arg("--root-dir")
            .arg(&root_dir)
            .arg("--pod-cidr-file")
            .arg(&pod_cidr_file)
            .args(["--node-status-update-frequency", "1s"])
            .arg("--container-runtime-endpoint")
            .arg(format!(
                "unix://{}",
                directory.join("no-containerd.sock").display()
            ))
            .env("SKIFF_KUBELET_LOG", "skiff_kubelet=debug,info")
            .stdout(Stdio::null())
            .stderr(log_file);
        if let Some(cidr) = pod_cidr {
            command.args(["--pod-cidr", cidr]);
        }
        let child = command.spawn().expect("start skiff-kubelet");
        Kubelet {
            child: Some(child),
            node: node.to_owned(),
            log,
            pod_cidr_file,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit.
    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the kubelet is running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM the kubelet");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the kubelet") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "skiff-kubelet did not exit after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to mark the node NotReady.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls `probe` every 200 ms until it returns `Some`, panicking with the kubelet's log.
    #[track_caller]
    fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} (node {}); kubelet log:\n{}",
                self.node,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.kill();
    }
}

fn get_node(control: &ControlPlane, node: &str) -> Option<Value> {
    let response = control.client().get(&format!("/api/v1/nodes/{node}"));
    (response.status == 200).then(|| response.json())
}

fn get_lease(control: &ControlPlane, node: &str) -> Option<Value> {
    let response = control.client().get(&format!(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
    ));
    (response.status == 200).then(|| response.json())
}

fn condition(node: &Value, type_: &str) -> Option<Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == type_)
        .cloned()
}

/// The Node once its Ready condition is True.
fn wait_ready(control: &ControlPlane, kubelet: &Kubelet) -> Value {
    kubelet.wait_for("the Node to be Ready", REGISTER_TIMEOUT, || {
        let node = get_node(control, &kubelet.node)?;
        (condition(&node, "Ready")?["status"] == "True").then_some(node)
    })
}

fn unique_node() -> String {
    skiff_tests::unique_name("sk-node")
}

#[test]
fn node_registers_with_capacity_conditions_addresses_labels_and_node_info() {
    let directory = tempfile::tempdir().unwrap();
    let control = ControlPlane::start(&directory.path().join("control"));
    let name = unique_node();
    let kubelet = Kubelet::start(&control, directory.path(), &name, Some("10.244.7.0/24"));

    let node = wait_ready(&control, &kubelet);

    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], name.as_str());
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["beta.kubernetes.io/os"], "linux");
    let arch = labels["kubernetes.io/arch"].as_str().unwrap();
    assert!(["amd64", "arm64"].contains(&arch), "arch {arch}");
    assert_eq!(labels["beta.kubernetes.io/arch"], arch);

    let status = &node["status"];
    assert_eq!(
        status["addresses"],
        json!([{"type": "InternalIP", "address": "127.0.0.1"},
               {"type": "Hostname", "address": name}])
    );
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    for resources in ["capacity", "allocatable"] {
        for resource in [
            "cpu",
            "memory",
            "ephemeral-storage",
            "pods",
            "hugepages-2Mi",
            "hugepages-1Gi",
        ] {
            assert!(
                status[resources][resource].is_string(),
                "status.{resources}.{resource} missing: {}",
                status[resources]
            );
        }
    }
    assert_eq!(status["capacity"]["pods"], "110");
    assert_eq!(status["allocatable"]["pods"], "110");
    let memory = status["capacity"]["memory"].as_str().unwrap();
    assert!(
        memory.ends_with("Ki") || memory.ends_with("Mi"),
        "memory {memory}"
    );
    assert_ne!(
        status["capacity"]["memory"],
        status["allocatable"]["memory"]
    );
    assert_ne!(
        status["capacity"]["ephemeral-storage"],
        status["allocatable"]["ephemeral-storage"]
    );

    let info = &status["nodeInfo"];
    assert_eq!(info["kubeletVersion"], "v1.35.0-skiff");
    assert_eq!(info["containerRuntimeVersion"], "containerd://unknown");
    assert_eq!(info["operatingSystem"], "linux");
    assert_eq!(info["architecture"], arch);
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(info["bootID"], boot_id.trim());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(info["kernelVersion"], kernel.trim());
    assert!(
        info["osImage"]
            .as_str()
            .is_some_and(|image| !image.is_empty())
    );

    let expected = [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ];
    for (type_, status, reason, message) in expected {
        let condition = condition(&node, type_).unwrap_or_else(|| panic!("no {type_} condition"));
        assert_eq!(condition["status"], status, "{type_}");
        assert_eq!(condition["reason"], reason, "{type_}");
        assert_eq!(condition["message"], message, "{type_}");
        assert!(condition["lastHeartbeatTime"].is_string(), "{type_}");
        assert!(condition["lastTransitionTime"].is_string(), "{type_}");
    }

    let listing = control.kubectl(&["get", "nodes", &name, "--no-headers"]);
    let listing = text(&listing);
    let columns: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(columns.first(), Some(&name.as_str()), "{listing}");
    assert_eq!(columns.get(1), Some(&"Ready"), "{listing}");
}

#[test]
fn node_lease_is_held_by_the_node_owned_by_it_and_renewed() {
    let directory = tempfile::tempdir().unwrap();
    let control = ControlPlane::start(&directory.path().join("control"));
    let name = unique_node();
    let kubelet = Kubelet::start(&control, directory.path(), &name, None);
    let node = wait_ready(&control, &kubelet);

    let lease = kubelet.wait_for("the Lease", REGISTER_TIMEOUT, || get_lease(&control, &name));
    assert_eq!(lease["spec"]["holderIdentity"], name.as_str());
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(
        lease["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}])
    );
    let first_renewal = lease["spec"]["renewTime"].as_str().unwrap().to_owned();

    let renewed = kubelet.wait_for("the Lease to be renewed", LEASE_RENEW_TIMEOUT, || {
        let lease = get_lease(&control, &name)?;
        let renew_time = lease["spec"]["renewTime"].as_str()?.to_owned();
        (renew_time != first_renewal).then_some(renew_time)
    });
    assert!(renewed > first_renewal, "{renewed} <= {first_renewal}");
}

#[test]
fn pod_cidr_flag_is_set_on_a_node_without_one_and_written_to_the_file() {
    let directory = tempfile::tempdir().unwrap();
    let control = ControlPlane::start(&directory.path().join("control"));
    let name = unique_node();
    let kubelet = Kubelet::start(&control, directory.path(), &name, Some("10.244.7.0/24"));
    let node = wait_ready(&control, &kubelet);

    assert_eq!(node["spec"]["podCIDR"], "10.244.7.0/24");
    assert_eq!(node["spec"]["podCIDRs"], json!(["10.244.7.0/24"]));
    let written = kubelet.wait_for("the pod CIDR file", REGISTER_TIMEOUT, || {
        std::fs::read_to_string(&kubelet.pod_cidr_file).ok()
    });
    assert_eq!(written, "10.244.7.0/24\n");
}

#[test]
fn precreated_node_keeps_its_pod_cidr_and_that_one_is_written() {
    let directory = tempfile::tempdir().unwrap();
    let control = ControlPlane::start(&directory.path().join("control"));
    let name = unique_node();
    let created = control.client().post(
        "/api/v1/nodes",
        &json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"team": "blue"}},
                "spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]}}),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let uid = created.json()["metadata"]["uid"].clone();

    let kubelet = Kubelet::start(&control, directory.path(), &name, Some("10.244.7.0/24"));
    let node = wait_ready(&control, &kubelet);

    assert_eq!(
        node["metadata"]["uid"], uid,
        "the Node was adopted, not recreated"
    );
    assert_eq!(node["spec"]["podCIDR"], "10.244.3.0/24");
    assert_eq!(node["metadata"]["labels"]["team"], "blue");
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        name.as_str()
    );
    let written = kubelet.wait_for("the pod CIDR file", REGISTER_TIMEOUT, || {
        std::fs::read_to_string(&kubelet.pod_cidr_file).ok()
    });
    assert_eq!(written, "10.244.3.0/24\n");
}

#[test]
fn sigterm_marks_the_node_not_ready_then_exits_zero() {
    let directory = tempfile::tempdir().unwrap();
    let control = ControlPlane::start(&directory.path().join("control"));
    let name = unique_node();
    let mut kubelet = Kubelet::start(&control, directory.path(), &name, None);
    let ready = wait_ready(&control, &kubelet);
    let ready_since = condition(&ready, "Ready").unwrap()["lastTransitionTime"].clone();
    // Transition times have one-second resolution.
    std::thread::sleep(Duration::from_millis(1100));

    let exit = kubelet.terminate();

    assert!(exit.success(), "exit {exit:?}; log:\n{}", kubelet.log());
    let node = get_node(&control, &name).expect("the Node is still there");
    let ready = condition(&node, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "KubeletNotReady");
    assert_eq!(ready["message"], "kubelet is stopping");
    assert_ne!(ready["lastTransitionTime"], ready_since);
    let listing = text(&control.kubectl(&["get", "nodes", &name, "--no-headers"]));
    assert!(listing.contains("NotReady"), "{listing}");
}

#[test]
fn ready_transition_time_is_stable_while_the_node_stays_ready() {
    let directory = tempfile::tempdir().unwrap();
    let control = ControlPlane::start(&directory.path().join("control"));
    let name = unique_node();
    let mut kubelet = Kubelet::start(&control, directory.path(), &name, None);
    let first = wait_ready(&control, &kubelet);
    let first_ready = condition(&first, "Ready").unwrap();

    // A restart without the NotReady patch (SIGKILL) forces a fresh status report (upstream's
    // first report after start), so the heartbeat moves while Ready stays True.
    std::thread::sleep(Duration::from_millis(1100));
    kubelet.kill();
    let restarted = Kubelet::start(&control, directory.path(), &name, None);
    let ready = restarted.wait_for("a new heartbeat", REGISTER_TIMEOUT, || {
        let node = get_node(&control, &name)?;
        let ready = condition(&node, "Ready")?;
        (ready["lastHeartbeatTime"] != first_ready["lastHeartbeatTime"]).then_some(ready)
    });

    assert_eq!(ready["status"], "True");
    assert_eq!(
        ready["lastTransitionTime"],
        first_ready["lastTransitionTime"]
    );
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        let before = condition(&first, type_).unwrap();
        let node = get_node(&control, &name).unwrap();
        let after = condition(&node, type_).unwrap();
        assert_eq!(
            after["lastTransitionTime"], before["lastTransitionTime"],
            "{type_}"
        );
    }
}

#[test]
fn status_is_not_patched_when_nothing_changed() {
    let directory = tempfile::tempdir().unwrap();
    let control = ControlPlane::start(&directory.path().join("control"));
    let name = unique_node();
    let kubelet = Kubelet::start(&control, directory.path(), &name, None);
    wait_ready(&control, &kubelet);
    // Let the first forced report land, then watch a few update periods (1 s each).
    std::thread::sleep(Duration::from_secs(2));
    let before = get_node(&control, &name).unwrap();

    std::thread::sleep(Duration::from_secs(4));

    let after = get_node(&control, &name).unwrap();
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"],
        "status was rewritten although nothing changed; log:\n{}",
        kubelet.log()
    );
}

#[test]
fn status_changed_by_someone_else_is_restored_at_the_next_update() {
    let directory = tempfile::tempdir().unwrap();
    let control = ControlPlane::start(&directory.path().join("control"));
    let name = unique_node();
    let kubelet = Kubelet::start(&control, directory.path(), &name, None);
    let first = wait_ready(&control, &kubelet);
    let ready_since = condition(&first, "Ready").unwrap()["lastTransitionTime"].clone();

    let patched = control.client().patch(
        &format!("/api/v1/nodes/{name}/status"),
        "application/merge-patch+json",
        r#"{"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.99"}]}}"#,
    );
    assert_eq!(
        patched.status,
        200,
        "{}",
        String::from_utf8_lossy(&patched.body)
    );

    let node = kubelet.wait_for("the addresses to be restored", REGISTER_TIMEOUT, || {
        let node = get_node(&control, &name)?;
        (node["status"]["addresses"][0]["address"] == "127.0.0.1").then_some(node)
    });
    assert_eq!(node["status"]["addresses"][1]["type"], "Hostname");
    assert_eq!(
        condition(&node, "Ready").unwrap()["lastTransitionTime"],
        ready_since
    );
}
