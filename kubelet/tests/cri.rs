//! skiff-kubelet's CRI adapter against a real containerd: each test starts the harness's private
//! containerd in its own network namespace with the stand-in pod network and the busybox image,
//! and drives it only through `skiff_kubelet::cri::Runtime` (the harness's CRI client is not
//! used). Every test stops and removes what it created; the harness removes containerd on drop.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use skiff_kubelet::cri::{
    CriError, Runtime,
    api::{
        ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, PodSandboxConfig,
        PodSandboxState,
    },
    log::{self, LogFollower, Stream},
};
use skiff_tests::{
    containerd::{Containerd, StandInNetwork},
    cri as harness,
    netns::NetNs,
    oci_image,
};

/// The deadline of an ordinary call in these tests (the harness's own CRI client uses the same).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A private containerd with the stand-in network and busybox, and our client to it. Fields drop
/// in order: the client, then containerd (which removes everything), then the namespace.
struct Node {
    runtime: Runtime,
    busybox: String,
    containerd: Containerd,
    _netns: NetNs,
}

/// A running pod sandbox and the config it was run with.
struct Pod {
    id: String,
    config: PodSandboxConfig,
}

async fn start_node(label: &str) -> Node {
    let netns = NetNs::new(label).expect("a test network namespace");
    let containerd = Containerd::start(&netns).expect("a private containerd");
    containerd
        .use_stand_in_network(&StandInNetwork::new(Ipv4Addr::new(10, 78, 0, 0), 24))
        .expect("the stand-in pod network");
    let busybox = oci_image::busybox()
        .import_into(&containerd)
        .expect("busybox imported");
    let endpoint = format!("unix://{}", containerd.socket().display());
    let runtime = Runtime::connect(&endpoint, CALL_TIMEOUT)
        .await
        .expect("our client connects to the private containerd");
    Node {
        runtime,
        busybox: busybox.name,
        containerd,
        _netns: netns,
    }
}

impl Node {
    /// Runs a pod sandbox named `name` with `labels` (creating its log directory first, as the
    /// kubelet does).
    async fn run_pod(&self, name: &str, labels: &[(&str, &str)]) -> Pod {
        let mut config =
            harness::pod_sandbox_config(name, &self.containerd.pod_logs_dir().join(name));
        config.labels = owned_labels(labels);
        std::fs::create_dir_all(&config.log_directory).expect("the pod log directory");
        let id = self
            .runtime
            .run_pod_sandbox(config.clone(), "")
            .await
            .expect("RunPodSandbox");
        Pod { id, config }
    }

    /// Creates and starts a busybox container named `name` running `command` in `pod`.
    async fn run_container(
        &self,
        pod: &Pod,
        name: &str,
        command: &[&str],
        labels: &[(&str, &str)],
    ) -> (ContainerConfig, String) {
        let mut config = harness::container_config(name, &self.busybox, command);
        config.labels = owned_labels(labels);
        let id = self
            .runtime
            .create_container(&pod.id, config.clone(), pod.config.clone())
            .await
            .expect("CreateContainer");
        self.runtime
            .start_container(&id)
            .await
            .expect("StartContainer");
        (config, id)
    }

    async fn status(&self, container_id: &str) -> ContainerStatus {
        self.runtime
            .container_status(container_id)
            .await
            .expect("ContainerStatus")
            .expect("the container exists")
    }

    /// Polls until the container has exited; returns its final status.
    async fn wait_exited(&self, container_id: &str) -> ContainerStatus {
        let start = Instant::now();
        loop {
            let status = self.status(container_id).await;
            if status.state == ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "container {container_id} did not exit: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops and removes the sandbox with its containers (containerd kills them at once).
    async fn remove_pod(&self, pod: &Pod) {
        self.runtime
            .stop_pod_sandbox(&pod.id)
            .await
            .expect("StopPodSandbox");
        self.runtime
            .remove_pod_sandbox(&pod.id)
            .await
            .expect("RemovePodSandbox");
    }
}

fn owned_labels(labels: &[(&str, &str)]) -> HashMap<String, String> {
    labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort();
    ids
}

fn command(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|part| (*part).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_reports_containerd_and_ready_conditions() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = start_node("crivers").await;

    let version = node.runtime.version().await.expect("Version");
    let conditions = node.runtime.status().await.expect("Status");

    assert_eq!(version.runtime_name, "containerd", "{version:?}");
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");
    assert!(!version.runtime_version.is_empty(), "{version:?}");
    assert!(conditions.runtime_is_ready(), "{conditions:?}");
    assert!(conditions.network_is_ready(), "{conditions:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn started_container_is_running_and_exec_sync_returns_output_and_exit_codes() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = start_node("criexec").await;
    let pod = node.run_pod("exec", &[]).await;
    let (_, id) = node
        .run_container(&pod, "app", &["sh", "-c", "echo started; sleep 1000"], &[])
        .await;

    let status = node.status(&id).await;
    let hi = node
        .runtime
        .exec_sync(&id, command(&["echo", "hi"]), Duration::from_secs(10))
        .await
        .expect("ExecSync echo");
    let failing = node
        .runtime
        .exec_sync(
            &id,
            command(&["sh", "-c", "echo bad >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .await
        .expect("ExecSync of a failing command is a result, not an error");

    assert_eq!(
        status.state,
        ContainerState::ContainerRunning as i32,
        "{status:?}"
    );
    assert_eq!(hi.exit_code, 0, "{hi:?}");
    assert_eq!(hi.stdout, b"hi\n", "{hi:?}");
    assert!(hi.stderr.is_empty(), "{hi:?}");
    assert_eq!(failing.exit_code, 3, "{failing:?}");
    assert_eq!(failing.stderr, b"bad\n", "{failing:?}");
    node.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_past_its_timeout_fails_as_a_timeout() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = start_node("criexto").await;
    let pod = node.run_pod("exectimeout", &[]).await;
    let (_, id) = node
        .run_container(&pod, "app", &["sleep", "1000"], &[])
        .await;

    let start = Instant::now();
    let result = node
        .runtime
        .exec_sync(&id, command(&["sleep", "30"]), Duration::from_secs(1))
        .await;
    let elapsed = start.elapsed();

    match result {
        Err(error @ CriError::Timeout { .. }) => {
            let text = error.to_string();
            eprintln!("ExecSync failed as expected: {text}");
            assert!(text.contains("ExecSync") && text.contains(&id), "{text}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10),
        "the runtime gave up after {elapsed:?}"
    );
    node.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_container_kills_a_container_ignoring_sigterm_after_the_grace_period() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = start_node("cristop").await;
    let pod = node.run_pod("stop", &[]).await;
    let (_, id) = node
        .run_container(
            &pod,
            "stubborn",
            &["sh", "-c", "trap '' TERM; sleep 1000"],
            &[],
        )
        .await;

    let start = Instant::now();
    node.runtime
        .stop_container(&id, Duration::from_secs(1))
        .await
        .expect("StopContainer");
    let elapsed = start.elapsed();
    let status = node.status(&id).await;

    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "StopContainer with a 1 s grace period took {elapsed:?}"
    );
    assert_eq!(
        status.state,
        ContainerState::ContainerExited as i32,
        "{status:?}"
    );
    assert_eq!(status.exit_code, 137, "killed by SIGKILL: {status:?}");
    node.runtime
        .remove_container(&id)
        .await
        .expect("RemoveContainer");
    node.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_and_containers_are_listed_by_label() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = start_node("crilist").await;
    let web = node.run_pod("web", &[("app", "web")]).await;
    let db = node.run_pod("db", &[("app", "db")]).await;
    let (_, web_container) = node
        .run_container(&web, "server", &["sleep", "1000"], &[("tier", "front")])
        .await;
    let (_, db_container) = node
        .run_container(&db, "server", &["sleep", "1000"], &[("tier", "back")])
        .await;

    let web_pods = node
        .runtime
        .list_pod_sandboxes(owned_labels(&[("app", "web")]))
        .await
        .expect("ListPodSandbox by label");
    let all_pods = node
        .runtime
        .list_pod_sandboxes(HashMap::new())
        .await
        .expect("ListPodSandbox");
    let front = node
        .runtime
        .list_containers(ContainerFilter {
            label_selector: owned_labels(&[("tier", "front")]),
            ..Default::default()
        })
        .await
        .expect("ListContainers by label");
    let in_db = node
        .runtime
        .list_containers(ContainerFilter {
            pod_sandbox_id: db.id.clone(),
            ..Default::default()
        })
        .await
        .expect("ListContainers by sandbox");

    assert_eq!(
        sorted(web_pods.into_iter().map(|pod| pod.id)),
        [web.id.as_str()]
    );
    assert_eq!(
        sorted(all_pods.iter().map(|pod| pod.id.clone())),
        sorted([web.id.clone(), db.id.clone()])
    );
    assert!(
        all_pods
            .iter()
            .all(|pod| pod.state == PodSandboxState::SandboxReady as i32),
        "{all_pods:?}"
    );
    assert_eq!(
        sorted(front.into_iter().map(|container| container.id)),
        [web_container.as_str()]
    );
    assert_eq!(
        sorted(in_db.into_iter().map(|container| container.id)),
        [db_container.as_str()]
    );
    node.remove_pod(&web).await;
    node.remove_pod(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_and_removing_what_is_already_gone_succeeds() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = start_node("crigone").await;
    let pod = node.run_pod("gone", &[]).await;
    let (_, id) = node
        .run_container(&pod, "app", &["sleep", "1000"], &[])
        .await;

    node.runtime
        .stop_container(&id, Duration::ZERO)
        .await
        .expect("StopContainer");
    node.runtime
        .remove_container(&id)
        .await
        .expect("RemoveContainer");
    node.runtime
        .remove_container(&id)
        .await
        .expect("RemoveContainer of a removed container");
    node.runtime
        .stop_container(&id, Duration::from_secs(1))
        .await
        .expect("StopContainer of a removed container");
    node.remove_pod(&pod).await;
    node.runtime
        .stop_pod_sandbox(&pod.id)
        .await
        .expect("StopPodSandbox of a removed sandbox");
    node.runtime
        .remove_pod_sandbox(&pod.id)
        .await
        .expect("RemovePodSandbox of a removed sandbox");
    node.runtime
        .stop_pod_sandbox("0123456789abcdef-never-existed")
        .await
        .expect("StopPodSandbox of a sandbox that never existed");

    let container_status = node
        .runtime
        .container_status(&id)
        .await
        .expect("ContainerStatus of a removed container");
    let sandbox_status = node
        .runtime
        .pod_sandbox_status(&pod.id)
        .await
        .expect("PodSandboxStatus of a removed sandbox");
    assert!(container_status.is_none(), "{container_status:?}");
    assert!(sandbox_status.is_none(), "{sandbox_status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_status_finds_busybox_and_is_none_for_a_missing_image() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = start_node("criimg").await;

    let busybox = node
        .runtime
        .image_status(&node.busybox)
        .await
        .expect("ImageStatus of busybox");
    let missing = node
        .runtime
        .image_status("docker.io/skiff/absent:1")
        .await
        .expect("ImageStatus of a missing image");
    let images = node.runtime.list_images().await.expect("ListImages");

    let busybox = busybox.expect("busybox is present");
    assert!(
        busybox.repo_tags.contains(&node.busybox),
        "{:?}",
        busybox.repo_tags
    );
    assert!(missing.is_none(), "{missing:?}");
    assert!(
        images.iter().any(|image| image.id == busybox.id),
        "{images:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pulling_from_an_unreachable_registry_fails_naming_the_image() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = start_node("cripull").await;
    // Nothing listens on port 1, and the namespace has no route out anyway.
    let image = "127.0.0.1:1/skiff/absent:1";

    let start = Instant::now();
    let result = node.runtime.pull_image(image, None).await;

    let error = result.expect_err("the pull cannot succeed without a registry");
    let text = error.to_string();
    eprintln!("PullImage failed as expected: {text}");
    assert!(
        text.contains("PullImage") && text.contains(image),
        "the error names the call and the image: {text}"
    );
    assert!(matches!(error, CriError::Call { .. }), "{error:?}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn log_parser_reads_the_log_file_the_container_wrote() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = start_node("crilog").await;
    let pod = node.run_pod("logs", &[]).await;
    // 2^16 `x`s: longer than containerd's 16 KiB max line, so it is written as partial entries.
    let script = "echo out-line; echo err-line >&2; \
                  s=x; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do s=$s$s; done; \
                  echo $s; printf no-newline";
    let (config, id) = node
        .run_container(&pod, "writer", &["sh", "-c", script], &[])
        .await;
    let status = node.wait_exited(&id).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let path = PathBuf::from(&pod.config.log_directory).join(&config.log_path);

    // containerd may still be copying output when it reports the exit.
    let start = Instant::now();
    while !std::fs::read_to_string(&path).is_ok_and(|raw| raw.contains("no-newline\n")) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path:?} has no entry with the last output"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let raw = std::fs::read_to_string(&path).expect("the log file reads");
    let whole = log::read_log_file(&path).expect("the log file reads");
    let mut follower = LogFollower::new(&path);
    let mut followed = follower.read_new().expect("the log file reads");
    let incomplete = follower.take_incomplete();

    let find = |text: &[u8]| {
        whole
            .iter()
            .find(|line| line.text == text)
            .unwrap_or_else(|| panic!("no line {:?} in {raw:?}", String::from_utf8_lossy(text)))
    };
    assert_eq!(find(b"out-line").stream, Stream::Stdout);
    assert_eq!(find(b"err-line").stream, Stream::Stderr);
    assert!(find(&[b'x'; 65536]).complete);
    assert!(raw.contains(" stdout P "), "containerd split the long line");
    // containerd writes output that never got its newline as a partial entry: it stays
    // incomplete, and is shown without a newline.
    let last = find(b"no-newline");
    assert!(!last.complete);
    let mut shown = Vec::new();
    last.write_to(&mut shown, false);
    assert_eq!(shown, b"no-newline");
    assert_eq!(followed.len(), 3, "following returns only complete lines");
    followed.extend(incomplete);
    assert_eq!(followed, whole, "following and reading at once agree");
    assert_eq!(follower.malformed_entries(), 0);
    node.remove_pod(&pod).await;
}

#[tokio::test]
async fn connecting_to_a_missing_socket_names_the_socket() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("containerd.sock");

    let error = Runtime::connect(&format!("unix://{}", socket.display()), CALL_TIMEOUT)
        .await
        .expect_err("nothing listens there");

    assert!(matches!(error, CriError::Connect { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&socket.display().to_string()),
        "{error}"
    );
}
