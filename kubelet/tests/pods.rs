//! The pod side of skiff-kubelet end to end: a real skiff-control, the harness's private
//! containerd (own network namespace, stand-in pod network, busybox imported) and the real
//! `skiff-kubelet` binary running the pods bound to its node.
//!
//! skiff-control listens on 127.0.0.1 of the host namespace, which a test namespace cannot
//! reach, so the kubelet runs in the host namespace with CRI pointed at the private containerd;
//! the pod network lives in the test namespace through containerd. Everything is removed on
//! drop: the kubelet is killed, containerd removes its containers, the namespace goes.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use skiff_kubelet::{cri::Runtime, pod::labels::POD_UID_LABEL};
use skiff_tests::{
    containerd::{Containerd, StandInNetwork},
    control::{ControlPlane, text},
    netns::NetNs,
    oci_image,
};

/// How long a pod gets to be Running and Ready.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(60);
/// The test pod's `terminationGracePeriodSeconds`: `sh` as PID 1 ignores SIGTERM, so deletion
/// takes the whole grace period before SIGKILL.
const GRACE_PERIOD_SECONDS: u64 = 3;

/// A skiff-kubelet process, SIGKILLed on drop; its log is kept to print when a wait fails.
struct Kubelet {
    child: Child,
    log: PathBuf,
}

impl Kubelet {
    fn start(
        control: &ControlPlane,
        containerd: &Containerd,
        directory: &Path,
        node: &str,
    ) -> Self {
        let log = directory.join("kubelet.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the kubelet log");
        let child = Command::new(env!("CARGO_BIN_EXE_skiff-kubelet"))
            .arg("--kubeconfig")
            .arg(control.kubeconfig())
            .args(["--hostname-override", node, "--node-ip", "127.0.0.1"])
            .arg("--root-dir")
            .arg(directory.join("root"))
            .arg("--pod-cidr-file")
            .arg(directory.join("podcidr"))
            .arg("--pod-logs-dir")
            .arg(containerd.pod_logs_dir())
            .arg("--container-runtime-endpoint")
            .arg(format!("unix://{}", containerd.socket().display()))
            .env("SKIFF_KUBELET_LOG", "skiff_kubelet=debug,info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start skiff-kubelet");
        Kubelet { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
                "timed out after {timeout:?} waiting for {what}; kubelet log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Kubelet {
    /// SIGKILL: the kubelet gets no chance to clean anything up.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.kill();
    }
}

fn get_pod(control: &ControlPlane, name: &str) -> Option<Value> {
    let response = control
        .client()
        .get(&format!("/api/v1/namespaces/default/pods/{name}"));
    (response.status == 200).then(|| response.json())
}

fn condition<'a>(pod: &'a Value, type_: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == type_)
}

/// A pod `name` bound to `node` with one container `main` running `command` from `image`
/// (never pulled) under `restart_policy`.
fn pod_manifest(
    name: &str,
    node: &str,
    image: &str,
    command: &str,
    restart_policy: &str,
) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": GRACE_PERIOD_SECONDS,
            "containers": [{
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", command],
            }],
        },
    })
    .to_string()
}

async fn sandboxes_of(runtime: &Runtime, uid: &str) -> usize {
    runtime
        .list_pod_sandboxes(HashMap::from([(POD_UID_LABEL.to_owned(), uid.to_owned())]))
        .await
        .expect("ListPodSandbox")
        .len()
}

/// One node: skiff-control, a private containerd with the stand-in network and busybox, and a
/// skiff-kubelet running its pods. Fields drop in order: the kubelet is killed first, then the
/// control plane stops, containerd removes everything, the namespace and directory go.
struct Node {
    kubelet: Kubelet,
    name: String,
    runtime: Runtime,
    busybox: String,
    control: ControlPlane,
    containerd: Containerd,
    _netns: NetNs,
    directory: tempfile::TempDir,
}

impl Node {
    async fn start(label: &str) -> Node {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let netns = NetNs::new(label).expect("a test network namespace");
        let containerd = Containerd::start(&netns).expect("a private containerd");
        containerd
            .use_stand_in_network(&StandInNetwork::new(Ipv4Addr::new(10, 79, 0, 0), 24))
            .expect("the stand-in pod network");
        let busybox = oci_image::busybox()
            .import_into(&containerd)
            .expect("busybox imported");
        let runtime = Runtime::connect(
            &format!("unix://{}", containerd.socket().display()),
            Duration::from_secs(60),
        )
        .await
        .expect("a CRI client to the private containerd");
        let control = ControlPlane::start(&directory.path().join("control"));
        let name = skiff_tests::unique_name("sk-pods");
        let kubelet = Kubelet::start(&control, &containerd, directory.path(), &name);
        Node {
            kubelet,
            name,
            runtime,
            busybox: busybox.name,
            control,
            containerd,
            _netns: netns,
            directory,
        }
    }

    /// `kubectl apply`s a pod bound to this node.
    fn apply_pod(&self, name: &str, image: &str, command: &str, restart_policy: &str) {
        let content = pod_manifest(name, &self.name, image, command, restart_policy);
        self.apply(name, &content);
    }

    /// `kubectl apply`s `content` (JSON), saved as `<file_name>.json`.
    fn apply(&self, file_name: &str, content: &str) {
        let manifest = self.directory.path().join(format!("{file_name}.json"));
        std::fs::write(&manifest, content).expect("the manifest");
        let manifest = manifest.display().to_string();
        let applied = self.control.kubectl(&["apply", "-f", &manifest]);
        assert!(
            applied.status.success(),
            "kubectl apply: {}",
            text(&applied)
        );
    }

    /// The content of container `container`'s first log file in pod `name` (uid `uid`).
    fn container_log(&self, name: &str, uid: &str, container: &str) -> String {
        let log = self
            .containerd
            .pod_logs_dir()
            .join(format!("default_{name}_{uid}"))
            .join(container)
            .join("0.log");
        std::fs::read_to_string(&log).expect("the container's log file")
    }

    /// Kills the kubelet and starts a new one for the same node.
    fn restart_kubelet(&mut self) {
        self.kubelet.kill();
        self.kubelet = Kubelet::start(
            &self.control,
            &self.containerd,
            self.directory.path(),
            &self.name,
        );
    }

    /// Waits until the runtime holds `count` sandboxes of the pod `uid`.
    async fn wait_sandboxes(&self, uid: &str, count: usize) {
        let deadline = Instant::now() + RUNNING_TIMEOUT;
        while sandboxes_of(&self.runtime, uid).await != count {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count} sandboxes of pod {uid}; kubelet log:\n{}",
                self.kubelet.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The pod once `ready` says so.
    #[track_caller]
    fn wait_pod(&self, name: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        self.kubelet.wait_for(what, RUNNING_TIMEOUT, || {
            get_pod(&self.control, name).filter(|pod| ready(pod))
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bound_pod_runs_reports_ready_and_is_removed_on_delete() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpodrun").await;
    let (control, kubelet, runtime) = (&node.control, &node.kubelet, &node.runtime);

    node.apply_pod("hello", &node.busybox, "echo hello; sleep 3600", "Always");

    let pod = node.wait_pod("hello", "the pod to be Running and Ready", |pod| {
        let ready = condition(pod, "Ready").is_some_and(|ready| ready["status"] == "True");
        let has_ip = pod["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty());
        ready && has_ip && pod["status"]["phase"] == "Running"
    });
    let pod_ip: Ipv4Addr = pod["status"]["podIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .expect("podIP is an IPv4 address");
    assert_eq!(
        pod_ip.octets()[..3],
        [10, 79, 0],
        "podIP {pod_ip} from the stand-in network"
    );
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    let main = &pod["status"]["containerStatuses"][0];
    assert_eq!(main["name"], "main");
    assert_eq!(main["ready"], true);
    assert!(main["state"]["running"].is_object(), "{main}");
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
    assert_eq!(sandboxes_of(runtime, &uid).await, 1);

    let started = Instant::now();
    let deleted = control.kubectl(&["delete", "pod", "hello", "--wait", "--timeout=60s"]);
    let took = started.elapsed();

    assert!(
        deleted.status.success(),
        "kubectl delete: {}; kubelet log:\n{}",
        text(&deleted),
        kubelet.log()
    );
    assert!(
        took < Duration::from_secs(GRACE_PERIOD_SECONDS + 10),
        "deletion took {took:?} with a {GRACE_PERIOD_SECONDS}s grace period"
    );
    assert!(
        get_pod(control, "hello").is_none(),
        "the pod is gone from the API"
    );
    assert_eq!(
        sandboxes_of(runtime, &uid).await,
        0,
        "no sandbox left in CRI"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_pod_succeeds_and_its_output_is_in_the_pod_log() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpoddone").await;

    node.apply_pod("once", &node.busybox, "echo hello", "Never");

    let pod = node.wait_pod("once", "the pod to succeed", |pod| {
        pod["status"]["phase"] == "Succeeded"
    });
    let main = &pod["status"]["containerStatuses"][0];
    assert_eq!(main["state"]["terminated"]["exitCode"], 0, "{main}");
    assert_eq!(main["state"]["terminated"]["reason"], "Completed", "{main}");
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let log = node.container_log("once", uid, "main");
    assert!(log.contains("stdout F hello"), "log: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_image_with_pull_policy_never_waits_with_err_image_never_pull() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpodimg").await;

    node.apply_pod("missing", "skiff/not-imported:1.0", "true", "Always");

    let pod = node.wait_pod("missing", "the container to wait for its image", |pod| {
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });
    assert_eq!(pod["status"]["phase"], "Pending");
    let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(
        waiting["message"],
        "Container image \"skiff/not-imported:1.0\" is not present with pull policy of Never"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_deleted_while_the_kubelet_was_down_is_removed_from_the_runtime() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let mut node = Node::start("kpodorph").await;
    node.apply_pod("orphan", &node.busybox, "sleep 3600", "Always");
    let pod = node.wait_pod("orphan", "the pod to run", |pod| {
        pod["status"]["phase"] == "Running"
    });
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
    node.kubelet.kill();
    let deleted = node.control.kubectl(&[
        "delete",
        "pod",
        "orphan",
        "--force",
        "--grace-period=0",
        "--wait=false",
    ]);
    assert!(
        deleted.status.success(),
        "kubectl delete: {}",
        text(&deleted)
    );
    assert!(get_pod(&node.control, "orphan").is_none());
    assert_eq!(sandboxes_of(&node.runtime, &uid).await, 1);

    node.restart_kubelet();

    node.wait_sandboxes(&uid, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn running_pod_is_adopted_not_restarted_after_a_kubelet_restart() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let mut node = Node::start("kpodadopt").await;
    node.apply_pod("kept", &node.busybox, "sleep 3600", "Always");
    let before = node.wait_pod("kept", "the pod to be Ready", |pod| {
        condition(pod, "Ready").is_some_and(|ready| ready["status"] == "True")
    });
    let uid = before["metadata"]["uid"].as_str().expect("uid").to_owned();
    let container_id = before["status"]["containerStatuses"][0]["containerID"].clone();
    assert!(
        container_id
            .as_str()
            .is_some_and(|id| id.starts_with("containerd://"))
    );

    node.restart_kubelet();
    // Several relists of the new kubelet.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let after = get_pod(&node.control, "kept").expect("the pod still exists");
    let main = &after["status"]["containerStatuses"][0];
    assert_eq!(main["containerID"], container_id, "the same container runs");
    assert_eq!(main["restartCount"], 0);
    assert_eq!(after["status"]["phase"], "Running");
    assert_eq!(sandboxes_of(&node.runtime, &uid).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_container_is_restarted_then_held_in_crash_loop_back_off() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpodcrash").await;

    node.apply_pod("crash", &node.busybox, "exit 3", "Always");

    let pod = node.wait_pod("crash", "CrashLoopBackOff", |pod| {
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let main = &pod["status"]["containerStatuses"][0];
    assert_eq!(main["restartCount"], 1, "{main}");
    assert_eq!(main["lastState"]["terminated"]["exitCode"], 3, "{main}");
    let message = main["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("back-off 10s restarting failed container=main pod=crash_default("),
        "{message}"
    );
    assert_eq!(pod["status"]["phase"], "Running");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_container_prepares_an_empty_dir_for_the_main_container() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpodinit").await;
    let mount = json!([{"name": "work", "mountPath": "/work"}]);
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "prepared", "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "restartPolicy": "Never",
            "volumes": [{"name": "work", "emptyDir": {}}],
            "initContainers": [{
                "name": "prepare",
                "image": node.busybox,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo prepared-by-init > /work/note"],
                "volumeMounts": mount,
            }],
            "containers": [{
                "name": "main",
                "image": node.busybox,
                "imagePullPolicy": "Never",
                "command": ["cat", "/work/note"],
                "volumeMounts": mount,
            }],
        },
    });

    node.apply("prepared", &pod.to_string());

    let pod = node.wait_pod("prepared", "the pod to succeed", |pod| {
        pod["status"]["phase"] == "Succeeded"
    });
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
    assert_eq!(
        condition(&pod, "Initialized").expect("Initialized")["status"],
        "True"
    );
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let log = node.container_log("prepared", uid, "main");
    assert!(log.contains("stdout F prepared-by-init"), "log: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_from_a_config_map_reaches_the_container() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpodenv").await;
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "greeting", "namespace": "default"},
        "data": {"text": "hello-from-config-map"},
    });
    node.apply("greeting", &config_map.to_string());
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "greeter", "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": node.busybox,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo \"$GREETING\""],
                "env": [{
                    "name": "GREETING",
                    "valueFrom": {"configMapKeyRef": {"name": "greeting", "key": "text"}},
                }],
            }],
        },
    });

    node.apply("greeter", &pod.to_string());

    let pod = node.wait_pod("greeter", "the pod to succeed", |pod| {
        pod["status"]["phase"] == "Succeeded"
    });
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let log = node.container_log("greeter", uid, "main");
    assert!(log.contains("stdout F hello-from-config-map"), "log: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_stop_hook_runs_before_sigterm_on_delete() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprestop").await;
    // The hook and the SIGTERM trap both write to the container's stdout (its PID 1's), so the
    // log file shows their order.
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hooked", "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "main",
                "image": node.busybox,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c",
                    "trap 'echo got-sigterm; exit 0' TERM; echo started; while true; do sleep 0.2; done"],
                "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop > /proc/1/fd/1"]}}},
            }],
        },
    });
    node.apply("hooked", &pod.to_string());
    let pod = node.wait_pod("hooked", "the pod to be Running", |pod| {
        pod["status"]["phase"] == "Running"
    });
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();

    let deleted = node
        .control
        .kubectl(&["delete", "pod", "hooked", "--wait", "--timeout=60s"]);
    assert!(
        deleted.status.success(),
        "kubectl delete: {}",
        text(&deleted)
    );
    let log = node.container_log("hooked", &uid, "main");
    let pre_stop = log.find("stdout F pre-stop").unwrap_or_else(|| {
        panic!(
            "the preStop hook did not run; log:\n{log}\nkubelet log:\n{}",
            node.kubelet.log()
        )
    });
    let sigterm = log
        .find("stdout F got-sigterm")
        .unwrap_or_else(|| panic!("the container got no SIGTERM; log:\n{log}"));
    assert!(
        pre_stop < sigterm,
        "preStop must run before SIGTERM; log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_policies_decide_restarts_and_final_phases() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpodpolicy").await;
    // Never + non-zero exit → Failed, no restart.
    node.apply_pod("never-fails", &node.busybox, "exit 3", "Never");
    // OnFailure + exit 0 → Succeeded, no restart.
    node.apply_pod("onfailure-succeeds", &node.busybox, "exit 0", "OnFailure");
    // OnFailure + non-zero exit → restarted.
    node.apply_pod("onfailure-fails", &node.busybox, "exit 1", "OnFailure");

    let failed = node.wait_pod("never-fails", "the pod to fail", |pod| {
        pod["status"]["phase"] == "Failed"
    });
    let main = &failed["status"]["containerStatuses"][0];
    assert_eq!(main["state"]["terminated"]["exitCode"], 3, "{main}");
    assert_eq!(main["state"]["terminated"]["reason"], "Error", "{main}");
    assert_eq!(main["restartCount"], 0, "{main}");

    let succeeded = node.wait_pod("onfailure-succeeds", "the pod to succeed", |pod| {
        pod["status"]["phase"] == "Succeeded"
    });
    assert_eq!(
        succeeded["status"]["containerStatuses"][0]["restartCount"],
        0
    );

    let restarted = node.wait_pod("onfailure-fails", "a restart", |pod| {
        pod["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .is_some_and(|count| count >= 1)
    });
    assert_ne!(
        restarted["status"]["phase"], "Failed",
        "OnFailure keeps the pod going"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn container_ignoring_sigterm_is_killed_after_the_grace_period() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpodstubborn").await;
    node.apply_pod(
        "stubborn",
        &node.busybox,
        "trap '' TERM; while true; do sleep 0.2; done",
        "Always",
    );
    node.wait_pod("stubborn", "the pod to be Running", |pod| {
        pod["status"]["phase"] == "Running"
    });
    let started = Instant::now();
    let deleted = node
        .control
        .kubectl(&["delete", "pod", "stubborn", "--wait", "--timeout=60s"]);
    let took = started.elapsed();
    assert!(
        deleted.status.success(),
        "kubectl delete: {}",
        text(&deleted)
    );
    // SIGTERM is ignored, so only SIGKILL at the end of the grace period stops it.
    assert!(
        took >= Duration::from_secs(GRACE_PERIOD_SECONDS),
        "deleted after {took:?}, before the {GRACE_PERIOD_SECONDS}s grace period ended"
    );
    assert!(
        took < Duration::from_secs(GRACE_PERIOD_SECONDS + 10),
        "deletion took {took:?} with a {GRACE_PERIOD_SECONDS}s grace period"
    );
}
