//! Container probes and lifecycle hooks end to end: a real skiff-control, the harness's private
//! containerd with skiff-cni, and the real `skiff-kubelet` binary in the node's network
//! namespace (so it reaches pod IPs) probing busybox containers (harness: `common`).
//!
//! Probes run every second so each test takes seconds; the containers change what their probes
//! see on a timer (files appear and disappear, servers start late).

mod common;

use std::time::Duration;

use common::{Node, condition, get_pod, pod_manifest};
use serde_json::{Value, json};

/// A pod `name` with one container `main` running `command` under `restart_policy`, with
/// `fields` (probes, lifecycle, ports) merged into the container.
fn pod_with(node: &Node, name: &str, command: &str, restart_policy: &str, fields: Value) -> String {
    let manifest = pod_manifest(name, &node.name, &node.busybox, command, restart_policy);
    let mut pod: Value = serde_json::from_str(&manifest).expect("the manifest is JSON");
    let container = &mut pod["spec"]["containers"][0];
    for (key, value) in fields.as_object().expect("fields are an object") {
        container[key] = value.clone();
    }
    pod.to_string()
}

/// An exec probe running `script` every second, failing after `failure_threshold` failures.
fn exec_probe(script: &str, failure_threshold: u32) -> Value {
    json!({
        "exec": {"command": ["sh", "-c", script]},
        "periodSeconds": 1,
        "failureThreshold": failure_threshold,
    })
}

fn main_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn restart_count(pod: &Value) -> i64 {
    main_status(pod)["restartCount"].as_i64().unwrap_or(0)
}

fn is_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|ready| ready["status"] == "True")
}

fn is_running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && main_status(pod)["state"]["running"].is_object()
}

/// Waits for an event about pod `name` with `reason` whose message contains `message`.
#[track_caller]
fn wait_event(node: &Node, name: &str, reason: &str, message: &str) -> Value {
    node.kubelet.wait_for(
        &format!("a {reason} event"),
        Duration::from_secs(30),
        || {
            node.pod_events(name).into_iter().find(|event| {
                event["reason"] == reason
                    && event["message"]
                        .as_str()
                        .is_some_and(|text| text.contains(message))
            })
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn liveness_exec_failure_restarts_the_container() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprbexec").await;
    let manifest = pod_with(
        &node,
        "liveness-exec",
        "touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 3600",
        "Always",
        json!({"livenessProbe": exec_probe("cat /tmp/healthy", 2)}),
    );

    node.apply("liveness-exec", &manifest);

    let pod = node.wait_pod(
        "liveness-exec",
        "a restart after the liveness probe failed",
        |pod| restart_count(pod) >= 1,
    );
    assert_eq!(
        main_status(&pod)["lastState"]["terminated"]["exitCode"],
        137,
        "sh ignores SIGTERM, so the kill ends in SIGKILL: {pod}"
    );
    wait_event(
        &node,
        "liveness-exec",
        "Unhealthy",
        "Liveness probe failed: ",
    );
    wait_event(
        &node,
        "liveness-exec",
        "Killing",
        "Container main failed liveness probe, will be restarted",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn liveness_http_get_failure_restarts_the_container() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprbhttp").await;
    let manifest = pod_with(
        &node,
        "liveness-http",
        "mkdir -p /www; echo ok > /www/healthz; httpd -f -p 8080 -h /www & \
         sleep 4; rm /www/healthz; sleep 3600",
        "Always",
        json!({
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {
                "httpGet": {"path": "/healthz", "port": "http"},
                "periodSeconds": 1,
                "failureThreshold": 2,
            },
        }),
    );

    node.apply("liveness-http", &manifest);

    node.wait_pod("liveness-http", "the container running", is_running);
    let pod = node.wait_pod(
        "liveness-http",
        "a restart after /healthz vanished",
        |pod| restart_count(pod) >= 1,
    );
    assert!(
        main_status(&pod)["lastState"]["terminated"].is_object(),
        "{pod}"
    );
    wait_event(
        &node,
        "liveness-http",
        "Unhealthy",
        "Liveness probe failed: HTTP probe failed with statuscode: 404",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_probe_flips_the_ready_condition_both_ways() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprbready").await;
    let manifest = pod_with(
        &node,
        "readiness",
        "sleep 3; touch /tmp/ready; sleep 8; rm /tmp/ready; sleep 3600",
        "Always",
        json!({"readinessProbe": exec_probe("cat /tmp/ready", 1)}),
    );

    node.apply("readiness", &manifest);

    let pod = node.wait_pod("readiness", "Running but not Ready", |pod| {
        is_running(pod) && !is_ready(pod)
    });
    let ready = condition(&pod, "Ready").expect("a Ready condition");
    assert_eq!(ready["reason"], "ContainersNotReady", "{pod}");
    assert_eq!(main_status(&pod)["ready"], false);
    let pod = node.wait_pod("readiness", "Ready once /tmp/ready exists", is_ready);
    assert_eq!(main_status(&pod)["ready"], true);
    assert_eq!(
        condition(&pod, "ContainersReady").expect("ContainersReady")["status"],
        "True"
    );
    let pod = node.wait_pod("readiness", "not Ready once /tmp/ready is gone", |pod| {
        !is_ready(pod)
    });
    assert_eq!(main_status(&pod)["ready"], false);
    assert_eq!(restart_count(&pod), 0, "readiness never restarts: {pod}");
    wait_event(&node, "readiness", "Unhealthy", "Readiness probe failed: ");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_tcp_socket_turns_ready_once_the_server_listens() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprbtcp").await;
    let manifest = pod_with(
        &node,
        "readiness-tcp",
        "sleep 3; mkdir -p /www; httpd -f -p 8080 -h /www",
        "Always",
        json!({"readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}),
    );

    node.apply("readiness-tcp", &manifest);

    node.wait_pod("readiness-tcp", "Running but not Ready", |pod| {
        is_running(pod) && !is_ready(pod)
    });
    let pod = node.wait_pod("readiness-tcp", "Ready once port 8080 listens", is_ready);
    assert_eq!(main_status(&pod)["ready"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_probe_holds_liveness_back_until_it_succeeds() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprbstart").await;
    // Liveness would fail at once until /tmp/started exists, 4 s after the start.
    let manifest = pod_with(
        &node,
        "startup",
        "sleep 4; touch /tmp/started; sleep 3600",
        "Always",
        json!({
            "startupProbe": exec_probe("cat /tmp/started", 30),
            "livenessProbe": exec_probe("cat /tmp/started", 1),
        }),
    );

    node.apply("startup", &manifest);

    let pod = node.wait_pod("startup", "running, not yet started", |pod| {
        is_running(pod) && main_status(pod)["started"] == false
    });
    assert!(!is_ready(&pod), "not ready before the startup probe passed");
    let pod = node.wait_pod("startup", "started and Ready", |pod| {
        main_status(pod)["started"] == true && is_ready(pod)
    });
    assert_eq!(restart_count(&pod), 0, "liveness did not run early: {pod}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pod = get_pod(&node.control, "startup").expect("the pod");
    assert_eq!(
        restart_count(&pod),
        0,
        "liveness passes once started: {pod}"
    );
    assert!(
        !node
            .pod_events("startup")
            .iter()
            .any(|event| event["message"]
                .as_str()
                .is_some_and(|text| text.starts_with("Liveness probe failed"))),
        "no liveness probe ran before the startup probe succeeded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_post_start_hook_kills_and_restarts_the_container() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprbpost").await;
    let manifest = pod_with(
        &node,
        "post-start",
        "sleep 3600",
        "Always",
        json!({"lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 3"]}}}}),
    );

    node.apply("post-start", &manifest);

    node.wait_pod(
        "post-start",
        "a restart after the postStart hook failed",
        |pod| restart_count(pod) >= 1,
    );
    wait_event(
        &node,
        "post-start",
        "FailedPostStartHook",
        "Exec lifecycle hook ([sh -c exit 3]) for Container \"main\"",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn post_start_exec_hook_runs_right_after_the_start() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprbpostok").await;
    let manifest = pod_with(
        &node,
        "post-start-ok",
        "while [ ! -f /tmp/hooked ]; do sleep 0.2; done; cat /tmp/hooked; sleep 3600",
        "Always",
        json!({"lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo hooked > /tmp/hooked"]}}}}),
    );

    node.apply("post-start-ok", &manifest);

    let pod = node.wait_pod("post-start-ok", "Running and Ready", is_ready);
    assert_eq!(restart_count(&pod), 0);
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
    node.kubelet.wait_for(
        "the hook's file in the log",
        Duration::from_secs(20),
        || {
            node.container_log("post-start-ok", &uid, "main")
                .contains("hooked")
                .then_some(())
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_stop_http_get_reaches_the_container_before_sigterm() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprbstop").await;
    // httpd -v logs each answer to stderr (`response:200` for /stop); the TERM trap prints once
    // SIGTERM arrives.
    let manifest = pod_with(
        &node,
        "pre-stop",
        "mkdir -p /www; echo bye > /www/stop; httpd -f -v -p 8080 -h /www & \
         trap 'echo got-TERM; exit 0' TERM; while true; do sleep 0.2; done",
        "Always",
        json!({"lifecycle": {"preStop": {"httpGet": {"path": "/stop", "port": 8080}}}}),
    );

    node.apply("pre-stop", &manifest);
    let pod = node.wait_pod("pre-stop", "Running and Ready", is_ready);
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
    let deleted = node
        .control
        .kubectl(&["delete", "pod", "pre-stop", "--wait=false"]);
    assert!(deleted.status.success());

    let log = node.kubelet.wait_for(
        "SIGTERM in the container log",
        Duration::from_secs(30),
        || {
            let path = node
                .containerd
                .pod_logs_dir()
                .join(format!("default_pre-stop_{uid}/main/0.log"));
            std::fs::read_to_string(path)
                .ok()
                .filter(|log| log.contains("got-TERM"))
        },
    );
    let request = log.find("response:200").unwrap_or_else(|| {
        panic!(
            "the preStop request reached httpd; log:\n{log}\nkubelet log:\n{}",
            node.kubelet.log()
        )
    });
    let term = log.find("got-TERM").expect("the TERM line");
    assert!(request < term, "the hook ran before SIGTERM; log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_probe_running_over_its_timeout_fails() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprbtimeout").await;
    let mut liveness = exec_probe("sleep 10", 1);
    liveness["timeoutSeconds"] = json!(1);
    let manifest = pod_with(
        &node,
        "exec-timeout",
        "sleep 3600",
        "Always",
        json!({"livenessProbe": liveness}),
    );

    node.apply("exec-timeout", &manifest);

    node.wait_pod(
        "exec-timeout",
        "a restart after the probe timed out",
        |pod| restart_count(pod) >= 1,
    );
    wait_event(
        &node,
        "exec-timeout",
        "Unhealthy",
        "Liveness probe failed: command \"sh -c sleep 10\" timed out",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_probe_failing_past_its_threshold_restarts_the_container() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kprbstartfail").await;
    let manifest = pod_with(
        &node,
        "startup-fail",
        "sleep 3600",
        "Always",
        json!({"startupProbe": exec_probe("exit 1", 2)}),
    );

    node.apply("startup-fail", &manifest);

    let pod = node.wait_pod(
        "startup-fail",
        "a restart after the startup probe failed",
        |pod| restart_count(pod) >= 1,
    );
    assert_eq!(main_status(&pod)["started"], false, "{pod}");
    wait_event(
        &node,
        "startup-fail",
        "Killing",
        "Container main failed startup probe, will be restarted",
    );
}
