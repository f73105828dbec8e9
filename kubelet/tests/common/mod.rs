//! The node harness of skiff-kubelet's end-to-end tests: a real skiff-control, the harness's
//! private containerd with skiff-cni as its pod network and busybox imported, and the real
//! `skiff-kubelet` binary running the pods bound to its node.
//!
//! Topology, as on a real node: containerd and the kubelet run in the node's network namespace
//! (an uplink address, forwarding on), pods get veths from skiff-cni there, so the kubelet
//! reaches pod IPs (probes, hooks) from the node. skiff-control listens on 127.0.0.1 of the host
//! namespace; two forwarders bridge the boundary without touching the host's interfaces: the
//! control plane's port inside the node namespace leads to skiff-control, and the kubelet's
//! `--port` on the host's loopback leads to the kubelet server (the Node's InternalIP is
//! 127.0.0.1, so skiff-control finds the kubelet where the Node object says).
//!
//! Everything is removed on drop: the kubelet is killed, the control plane stops, containerd
//! removes its containers, the namespace and directories go.
#![allow(dead_code)] // Each test binary uses a different part.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use skiff_kubelet::{cri::Runtime, pod::labels::POD_UID_LABEL};
use skiff_tests::{
    containerd::Containerd,
    control::{ControlPlane, text},
    forward::Forward,
    netns::{self, NetNs},
    oci_image,
};

/// How long a pod gets to reach what a test waits for.
pub const RUNNING_TIMEOUT: Duration = Duration::from_secs(60);
/// The test pods' `terminationGracePeriodSeconds`: `sh` as PID 1 ignores SIGTERM, so deletion
/// takes the whole grace period before SIGKILL.
pub const GRACE_PERIOD_SECONDS: u64 = 3;
/// The node's pod CIDR (`--pod-cidr`), which skiff-cni allocates from.
pub const POD_CIDR: &str = "10.79.0.0/24";
/// The node namespace's uplink address: the source of the kubelet's connections to pods.
pub const NODE_UPLINK_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// How the kubelet process is started (kept to restart it the same way).
struct KubeletLaunch {
    /// The node namespace, kept open to start the process in it.
    netns: std::fs::File,
    arguments: Vec<String>,
    log: PathBuf,
}

/// A skiff-kubelet process in the node namespace, SIGKILLed on drop; its log is kept to print
/// when a wait fails.
pub struct Kubelet {
    child: Option<Child>,
    launch: KubeletLaunch,
}

impl Kubelet {
    fn spawn(&mut self) {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.launch.log)
            .expect("open the kubelet log");
        let child = netns::command_in(
            &self.launch.netns,
            skiff_tests::workspace_binary("skiff-kubelet"),
        )
        .args(&self.launch.arguments)
        .env("SKIFF_KUBELET_LOG", "skiff_kubelet=debug,info")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start skiff-kubelet");
        self.child = Some(child);
    }

    /// The kubelet's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.launch.log).unwrap_or_default()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Polls `probe` every 200 ms until it returns `Some`, panicking with the kubelet's log.
    #[track_caller]
    pub fn wait_for<T>(
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

    /// SIGKILL: the kubelet gets no chance to clean anything up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for it to exit; returns its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The pod `name` in namespace `default`, if the API has it.
pub fn get_pod(control: &ControlPlane, name: &str) -> Option<Value> {
    let response = control
        .client()
        .get(&format!("/api/v1/namespaces/default/pods/{name}"));
    (response.status == 200).then(|| response.json())
}

/// The pod condition of `type_`.
pub fn condition<'a>(pod: &'a Value, type_: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == type_)
}

/// Whether the pod is Running with its Ready condition True and a pod IP.
pub fn running_and_ready(pod: &Value) -> bool {
    let ready = condition(pod, "Ready").is_some_and(|ready| ready["status"] == "True");
    let has_ip = pod["status"]["podIP"]
        .as_str()
        .is_some_and(|ip| !ip.is_empty());
    ready && has_ip && pod["status"]["phase"] == "Running"
}

/// A pod `name` bound to `node` with one container `main` running `command` from `image`
/// (never pulled) under `restart_policy`.
pub fn pod_manifest(
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

/// How many sandboxes of pod `uid` the runtime holds.
pub async fn sandboxes_of(runtime: &Runtime, uid: &str) -> usize {
    runtime
        .list_pod_sandboxes(HashMap::from([(POD_UID_LABEL.to_owned(), uid.to_owned())]))
        .await
        .expect("ListPodSandbox")
        .len()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// One node. Fields drop in order: the kubelet is killed first, the forwarders close, the
/// control plane stops, containerd removes everything, the namespace and directory go.
pub struct Node {
    pub kubelet: Kubelet,
    pub name: String,
    pub runtime: Runtime,
    pub busybox: String,
    /// The kubelet's `--port`, forwarded from the host's 127.0.0.1.
    pub kubelet_port: u16,
    _kubelet_forward: Forward,
    _control_forward: Forward,
    pub control: ControlPlane,
    pub containerd: Containerd,
    pub netns: NetNs,
    pub directory: tempfile::TempDir,
    /// The kubelet's `--cgroup-root`, removed from every hierarchy last.
    pub cgroup_root: CgroupRoot,
}

/// A cgroup root of this test (`/skiff-test-<pid>-<n>`), removed with everything below it from
/// every cgroup hierarchy on drop (after containerd removed the containers in it).
pub struct CgroupRoot(pub String);

impl CgroupRoot {
    /// The root's directories, one per cgroup hierarchy.
    pub fn directories(&self) -> Vec<PathBuf> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        skiff_kubelet::worker::cgroups::cgroup_mount_points(&mountinfo)
            .into_iter()
            .map(|mount| mount.join(self.0.trim_start_matches('/')))
            .collect()
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        fn remove(path: &Path) {
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.filter_map(Result::ok) {
                    if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                        remove(&entry.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(path);
        }
        for directory in self.directories() {
            remove(&directory);
        }
    }
}

impl Node {
    /// A node whose kubelet runs with the harness's arguments only.
    pub async fn start(label: &str) -> Node {
        Node::start_with(label, &[]).await
    }

    /// A node whose kubelet gets `extra_arguments` after the harness's own. Returns once the
    /// Node is registered and its pod CIDR is written for skiff-cni.
    pub async fn start_with(label: &str, extra_arguments: &[&str]) -> Node {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let netns = NetNs::new(label).expect("a test network namespace");
        add_uplink(&netns);
        let containerd = Containerd::start(&netns).expect("a private containerd");
        containerd
            .install_cni_plugin(&skiff_tests::workspace_binary("skiff-cni"), "skiff-cni")
            .expect("install skiff-cni");
        let pod_cidr_file = directory.path().join("podcidr");
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": "skiff",
            "plugins": [{
                "type": "skiff-cni",
                "podCIDRFile": pod_cidr_file,
                "dataDir": directory.path().join("cni"),
                "mtu": 1500,
            }],
        });
        containerd
            .write_cni_conflist(&conflist)
            .expect("containerd takes skiff-cni as its network");
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
        let control_forward = Forward::to_host(
            &netns,
            control.port,
            SocketAddr::from((Ipv4Addr::LOCALHOST, control.port)),
        )
        .expect("forward the control plane into the node namespace");
        let kubelet_port = free_port();
        let kubelet_forward = Forward::into_namespace(
            &netns,
            kubelet_port,
            SocketAddr::from((Ipv4Addr::LOCALHOST, kubelet_port)),
        )
        .expect("forward the kubelet port out of the node namespace");
        let name = skiff_tests::unique_name("sk-pods");
        let cgroup_root = CgroupRoot(format!("/{}", skiff_tests::unique_name("skiff-test")));
        let manifests = directory.path().join("manifests");
        std::fs::create_dir_all(&manifests).expect("the static pod directory");
        let path = |path: &Path| path.display().to_string();
        let mut arguments: Vec<String> = vec![
            "--kubeconfig".into(),
            path(&control.kubeconfig()),
            "--hostname-override".into(),
            name.clone(),
            "--node-ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            kubelet_port.to_string(),
            "--pod-cidr".into(),
            POD_CIDR.into(),
            "--root-dir".into(),
            path(&directory.path().join("root")),
            "--pod-cidr-file".into(),
            path(&pod_cidr_file),
            "--pod-logs-dir".into(),
            path(&containerd.pod_logs_dir()),
            "--pod-manifest-path".into(),
            path(&manifests),
            "--cgroup-root".into(),
            cgroup_root.0.clone(),
            "--container-runtime-endpoint".into(),
            format!("unix://{}", containerd.socket().display()),
        ];
        arguments.extend(
            extra_arguments
                .iter()
                .map(|argument| (*argument).to_owned()),
        );
        let mut kubelet = Kubelet {
            child: None,
            launch: KubeletLaunch {
                netns: std::fs::File::open(netns.path()).expect("open the node namespace"),
                arguments,
                log: directory.path().join("kubelet.log"),
            },
        };
        kubelet.spawn();
        kubelet.wait_for("the kubelet to write the pod CIDR", RUNNING_TIMEOUT, || {
            std::fs::read_to_string(&pod_cidr_file)
                .ok()
                .filter(|cidr| cidr.trim() == POD_CIDR)
        });
        Node {
            kubelet,
            name,
            runtime,
            busybox: busybox.name,
            kubelet_port,
            _kubelet_forward: kubelet_forward,
            _control_forward: control_forward,
            control,
            containerd,
            netns,
            directory,
            cgroup_root,
        }
    }

    /// The kubelet's `--pod-manifest-path`.
    pub fn manifests_dir(&self) -> PathBuf {
        self.directory.path().join("manifests")
    }

    /// `kubectl apply`s a pod bound to this node.
    pub fn apply_pod(&self, name: &str, image: &str, command: &str, restart_policy: &str) {
        let content = pod_manifest(name, &self.name, image, command, restart_policy);
        self.apply(name, &content);
    }

    /// `kubectl apply`s `content` (JSON or YAML), saved as `<file_name>.json`.
    #[track_caller]
    pub fn apply(&self, file_name: &str, content: &str) {
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
    pub fn container_log(&self, name: &str, uid: &str, container: &str) -> String {
        let log = self
            .containerd
            .pod_logs_dir()
            .join(format!("default_{name}_{uid}"))
            .join(container)
            .join("0.log");
        std::fs::read_to_string(&log).expect("the container's log file")
    }

    /// Kills the kubelet and starts a new one for the same node, with the same arguments.
    pub fn restart_kubelet(&mut self) {
        self.kubelet.kill();
        self.kubelet.spawn();
    }

    /// Waits until the runtime holds `count` sandboxes of the pod `uid`.
    pub async fn wait_sandboxes(&self, uid: &str, count: usize) {
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

    /// The pod once `ready` says so (within [`RUNNING_TIMEOUT`]).
    #[track_caller]
    pub fn wait_pod(&self, name: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        self.kubelet.wait_for(what, RUNNING_TIMEOUT, || {
            get_pod(&self.control, name).filter(|pod| ready(pod))
        })
    }

    /// The events about pod `name`, oldest first.
    pub fn pod_events(&self, name: &str) -> Vec<Value> {
        let response = self.control.client().get(&format!(
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name={name}"
        ));
        response.json()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A veth pair with both ends in the node standing in for its uplink (this kernel has no dummy
/// interfaces), addressed [`NODE_UPLINK_ADDRESS`] and holding the default route, with IPv4
/// forwarding on: the kubelet's connections to pods get a routable source address.
fn add_uplink(netns: &NetNs) {
    let address = format!("{NODE_UPLINK_ADDRESS}/24");
    for arguments in [
        &[
            "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
        ][..],
        &["link", "set", "uplink1", "up"],
        &["addr", "add", &address, "dev", "uplink0"],
        &["link", "set", "uplink0", "up"],
        &["route", "add", "default", "dev", "uplink0"],
    ] {
        netns.ip(arguments).expect("set up the node's uplink");
    }
    netns
        .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
        .expect("enter the node")
        .expect("enable forwarding");
}
