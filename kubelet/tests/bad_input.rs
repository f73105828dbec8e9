//! Bad input end to end: pods that cannot run report upstream's reasons, messages and events,
//! keep being retried, and leave the kubelet and the node's other pods alone (harness:
//! `common`).

mod common;

use common::{Node, running_and_ready};
use serde_json::{Value, json};

/// The `main` container's status of a pod.
fn main_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

/// A pod `name` with one busybox container `main` running `command` (not through a shell) with
/// `extra` merged into the container, and `volumes`.
fn pod(node: &Node, name: &str, command: Value, extra: Value, volumes: Value) -> String {
    let mut container = json!({
        "name": "main",
        "image": node.busybox,
        "imagePullPolicy": "Never",
        "command": command,
    });
    if let (Some(container), Some(extra)) = (container.as_object_mut(), extra.as_object()) {
        container.extend(extra.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "terminationGracePeriodSeconds": common::GRACE_PERIOD_SECONDS,
            "volumes": volumes,
            "containers": [container],
        },
    })
    .to_string()
}

/// Waits until pod `name` has an event with `reason` and returns its message.
#[track_caller]
fn wait_event(node: &Node, name: &str, reason: &str) -> String {
    node.kubelet.wait_for(
        &format!("a {reason} event"),
        common::RUNNING_TIMEOUT,
        || {
            node.pod_events(name)
                .into_iter()
                .find(|event| event["reason"] == reason)
        },
    )["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The kubelet process still runs (not exited, not a zombie).
fn kubelet_alive(node: &Node) -> bool {
    let Some(pid) = node.kubelet.pid() else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after) = stat.rsplit_once(')')?;
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_image_name_waits_with_invalid_image_name() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kbadimg").await;
    let manifest = pod(&node, "bad-image", json!(["true"]), json!({}), json!([]));
    let mut manifest: Value = serde_json::from_str(&manifest).expect("the manifest is JSON");
    manifest["spec"]["containers"][0]["image"] = json!("Busybox/UPPER:1.0");

    node.apply("bad-image", &manifest.to_string());

    let pod = node.wait_pod("bad-image", "InvalidImageName", |pod| {
        main_status(pod)["state"]["waiting"]["reason"] == "InvalidImageName"
    });
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(
        main_status(&pod)["state"]["waiting"]["message"],
        "Failed to apply default image tag \"Busybox/UPPER:1.0\": couldn't parse image name \
         \"Busybox/UPPER:1.0\": invalid reference format"
    );
    assert_eq!(
        wait_event(&node, "bad-image", "Failed"),
        "Error: InvalidImageName"
    );
    assert!(
        wait_event(&node, "bad-image", "InspectFailed")
            .starts_with("Failed to apply default image tag"),
        "the InspectFailed event carries the parse error"
    );
    assert!(kubelet_alive(&node));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_config_map_for_env_is_a_create_container_config_error() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kbadenv").await;
    let env = json!({"env": [{
        "name": "SETTING",
        "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "setting"}},
    }]});

    node.apply(
        "env-missing",
        &pod(
            &node,
            "env-missing",
            json!(["sleep", "3600"]),
            env,
            json!([]),
        ),
    );

    let pod = node.wait_pod("env-missing", "CreateContainerConfigError", |pod| {
        main_status(pod)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    assert_eq!(
        main_status(&pod)["state"]["waiting"]["message"],
        "configmap \"missing\" not found"
    );
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(
        wait_event(&node, "env-missing", "Failed"),
        "Error: configmap \"missing\" not found"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_config_map_volume_keeps_the_pod_container_creating_until_it_appears() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kbadvol").await;
    let mounts = json!({"volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]});
    let volumes = json!([{"name": "cfg", "configMap": {"name": "late"}}]);
    node.apply(
        "vol-missing",
        &pod(
            &node,
            "vol-missing",
            json!(["sh", "-c", "cat /cfg/key; echo; sleep 3600"]),
            mounts,
            volumes,
        ),
    );

    let message = wait_event(&node, "vol-missing", "FailedMount");
    assert_eq!(
        message,
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"late\" not found"
    );
    let pod = node.wait_pod("vol-missing", "ContainerCreating", |pod| {
        main_status(pod)["state"]["waiting"]["reason"] == "ContainerCreating"
    });
    assert_eq!(pod["status"]["phase"], "Pending");
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
    assert_eq!(
        common::sandboxes_of(&node.runtime, &uid).await,
        0,
        "no sandbox before the volumes are set up"
    );

    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "late", "namespace": "default"},
        "data": {"key": "arrived"},
    });
    node.apply("late", &config_map.to_string());

    node.wait_pod(
        "vol-missing",
        "the pod to run once the ConfigMap exists",
        running_and_ready,
    );
    node.kubelet.wait_for(
        "the container to print the ConfigMap",
        common::RUNNING_TIMEOUT,
        || {
            let log = node.container_log("vol-missing", &uid, "main");
            log.contains("stdout F arrived").then_some(())
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_command_fails_to_start_then_backs_off_without_hurting_other_pods() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kbadcmd").await;
    node.apply_pod("healthy", &node.busybox, "sleep 3600", "Always");
    let healthy = node.wait_pod("healthy", "the healthy pod to run", running_and_ready);
    let healthy_container = main_status(&healthy)["containerID"].clone();

    node.apply(
        "no-command",
        &pod(
            &node,
            "no-command",
            json!(["/does-not-exist"]),
            json!({}),
            json!([]),
        ),
    );

    // RunContainerError shows for about one relist before the back-off replaces it: a busy
    // machine may only let the poll see the back-off.
    let failing = node.wait_pod("no-command", "RunContainerError", |pod| {
        let reason = &main_status(pod)["state"]["waiting"]["reason"];
        reason == "RunContainerError" || reason == "CrashLoopBackOff"
    });
    let waiting = &main_status(&failing)["state"]["waiting"];
    if waiting["reason"] == "RunContainerError" {
        let message = waiting["message"].as_str().unwrap_or_default();
        assert!(message.contains("/does-not-exist"), "{message}");
    }
    let backing_off = node.wait_pod("no-command", "CrashLoopBackOff", |pod| {
        main_status(pod)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let last = &main_status(&backing_off)["lastState"]["terminated"];
    assert_eq!(last["reason"], "StartError", "{last}");
    assert_eq!(last["exitCode"], 128, "{last}");
    assert_eq!(backing_off["status"]["phase"], "Running");
    let failed = wait_event(&node, "no-command", "Failed");
    assert!(
        failed.starts_with("Error: ") && failed.contains("/does-not-exist"),
        "{failed}"
    );

    let healthy = common::get_pod(&node.control, "healthy").expect("the healthy pod");
    assert!(running_and_ready(&healthy), "{}", healthy["status"]);
    assert_eq!(main_status(&healthy)["containerID"], healthy_container);
    assert_eq!(main_status(&healthy)["restartCount"], 0);
    assert!(
        kubelet_alive(&node),
        "the kubelet exited:\n{}",
        node.kubelet.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_path_of_the_wrong_type_is_a_failed_mount() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kbadhost").await;
    let directory = node.directory.path().display().to_string();
    let mounts = json!({"volumeMounts": [{"name": "host", "mountPath": "/host"}]});
    let volumes = json!([{"name": "host", "hostPath": {"path": directory, "type": "File"}}]);

    node.apply(
        "wrong-type",
        &pod(
            &node,
            "wrong-type",
            json!(["sleep", "3600"]),
            mounts,
            volumes,
        ),
    );

    assert_eq!(
        wait_event(&node, "wrong-type", "FailedMount"),
        format!(
            "MountVolume.SetUp failed for volume \"host\" : hostPath type check failed: \
             {directory} is not a file"
        )
    );
    let pod = node.wait_pod("wrong-type", "ContainerCreating", |pod| {
        main_status(pod)["state"]["waiting"]["reason"] == "ContainerCreating"
    });
    assert_eq!(pod["status"]["phase"], "Pending");
}
