//! The pod side of skiff-kubelet end to end: a real skiff-control, the harness's private
//! containerd with skiff-cni, and the real `skiff-kubelet` binary in the node's network
//! namespace running the pods bound to its node (harness: `common`).

mod common;

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use common::{GRACE_PERIOD_SECONDS, Node, condition, get_pod, sandboxes_of};
use serde_json::json;
use skiff_tests::control::text;

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
    let logs = control.kubectl(&["logs", "hello"]);
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "hello\n",
        "kubectl logs hello: {}",
        text(&logs)
    );

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

    // After the 10 s back-off the container runs again, fails again, and waits twice as long.
    let pod = node.kubelet.wait_for(
        "the second, doubled back-off",
        Duration::from_secs(40),
        || {
            get_pod(&node.control, "crash").filter(|pod| {
                pod["status"]["containerStatuses"][0]["restartCount"] == 2
                    && pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                        == "CrashLoopBackOff"
            })
        },
    );
    let message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("back-off 20s restarting failed container=main"),
        "{message}"
    );
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
async fn environment_from_a_config_map_a_secret_and_field_refs_reaches_the_container() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpodenv").await;
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "greeting", "namespace": "default"},
        "data": {"text": "hello-from-config-map"},
    });
    node.apply("greeting", &config_map.to_string());
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "password", "namespace": "default"},
        "stringData": {"value": "s3cret-from-secret"},
    });
    node.apply("password", &secret.to_string());
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
                "command": [
                    "sh", "-c",
                    "echo \"$GREETING\"; echo \"secret=$PASSWORD\"; echo \"pod=$POD_NAME ip=$POD_IP node=$NODE_NAME\"",
                ],
                "env": [
                    {
                        "name": "GREETING",
                        "valueFrom": {"configMapKeyRef": {"name": "greeting", "key": "text"}},
                    },
                    {
                        "name": "PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "password", "key": "value"}},
                    },
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
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
    assert!(
        log.contains("stdout F secret=s3cret-from-secret"),
        "log: {log}"
    );
    // The pod may finish before a status with its IP is reported: check the IP is skiff-cni's.
    let line = log
        .lines()
        .find(|line| line.contains("stdout F pod=greeter ip="))
        .unwrap_or_else(|| panic!("no downward API line in the log: {log}"));
    assert!(
        line.contains("ip=10.79.0.") && line.ends_with(&format!("node={}", node.name)),
        "{line}"
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn container_exceeding_its_memory_limit_is_oom_killed() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpodoom").await;
    // dd (PID 1) fills a 64 MiB buffer from /dev/zero: twice the limit, so the OOM killer ends it.
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hungry", "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": GRACE_PERIOD_SECONDS,
            "containers": [{
                "name": "main",
                "image": node.busybox,
                "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                "resources": {"limits": {"memory": "32Mi"}},
            }],
        },
    });
    node.apply("hungry", &pod.to_string());

    let pod = node.wait_pod("hungry", "the pod to fail", |pod| {
        pod["status"]["phase"] == "Failed"
    });

    let main = &pod["status"]["containerStatuses"][0];
    assert_eq!(main["state"]["terminated"]["reason"], "OOMKilled", "{main}");
    assert_eq!(main["state"]["terminated"]["exitCode"], 137, "{main}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_runs_in_its_cgroup_below_the_cgroup_root_which_goes_with_it() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kpodcgroup").await;
    node.apply_pod(
        "grouped",
        &node.busybox,
        "cat /proc/self/cgroup; sleep 3600",
        "Always",
    );
    let pod = node.wait_pod("grouped", "the pod to be Running", |pod| {
        pod["status"]["phase"] == "Running"
    });
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
    let pod_cgroup = format!("{}/kubepods/besteffort/pod{uid}", node.cgroup_root.0);
    let log = node.kubelet.wait_for(
        "the container's cgroups in its log",
        common::RUNNING_TIMEOUT,
        || {
            std::fs::read_to_string(
                node.containerd
                    .pod_logs_dir()
                    .join(format!("default_grouped_{uid}/main/0.log")),
            )
            .ok()
            .filter(|log| log.contains("memory"))
        },
    );
    assert!(
        log.lines()
            .any(|line| line.contains(":memory:") && line.contains(&pod_cgroup)),
        "the container is not in {pod_cgroup}: {log}"
    );
    let directories: Vec<_> = node
        .cgroup_root
        .directories()
        .into_iter()
        .map(|root| root.join(format!("kubepods/besteffort/pod{uid}")))
        .collect();
    assert!(
        directories.iter().any(|directory| directory.is_dir()),
        "no pod cgroup in any hierarchy: {directories:?}"
    );

    let deleted = node
        .control
        .kubectl(&["delete", "pod", "grouped", "--wait", "--timeout=60s"]);
    assert!(
        deleted.status.success(),
        "kubectl delete: {}",
        text(&deleted)
    );

    let left: Vec<_> = directories
        .iter()
        .filter(|directory| directory.exists())
        .collect();
    assert!(left.is_empty(), "pod cgroups left after deletion: {left:?}");
}
