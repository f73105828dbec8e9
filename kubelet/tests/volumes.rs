//! Pod volumes end to end: configMap, secret, projected, downwardAPI, emptyDir and hostPath
//! volumes as busybox containers see them, written by the real `skiff-kubelet` under its
//! `--root-dir` and mounted by the harness's private containerd (harness: `common`).
//!
//! Each container prints what it sees and exits; the assertions read its log file.

mod common;

use common::{Node, get_pod};
use serde_json::{Value, json};

/// A `restartPolicy: Never` pod `name` with `volumes` and one container `main` running the
/// shell `script` with `mounts`; `extra` is merged into the container (securityContext, ...).
fn pod(
    node: &Node,
    name: &str,
    volumes: Value,
    mounts: Value,
    script: &str,
    extra: Value,
) -> String {
    let mut container = json!({
        "name": "main",
        "image": node.busybox,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "volumeMounts": mounts,
    });
    if let (Some(container), Some(extra)) = (container.as_object_mut(), extra.as_object()) {
        container.extend(extra.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "volumes"}},
        "spec": {
            "nodeName": node.name,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": common::GRACE_PERIOD_SECONDS,
            "volumes": volumes,
            "containers": [container],
        },
    })
    .to_string()
}

/// Waits for pod `name` to succeed and returns its `main` container's log.
#[track_caller]
fn succeeded_log(node: &Node, name: &str) -> String {
    let pod = node.wait_pod(name, "the pod to succeed", |pod| {
        pod["status"]["phase"] == "Succeeded" || pod["status"]["phase"] == "Failed"
    });
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let log = node.container_log(name, uid, "main");
    assert_eq!(
        pod["status"]["phase"],
        "Succeeded",
        "{}\nlog:\n{log}\nkubelet log:\n{}",
        pod["status"],
        node.kubelet.log()
    );
    log
}

/// The lines the container wrote to stdout, in order.
fn stdout_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|line| line.split_once(" stdout F ").map(|(_, text)| text))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn config_map_volume_shows_keys_and_items_with_modes_read_only() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kvolcm").await;
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default"},
        "data": {"a": "alpha", "b": "beta"},
    });
    node.apply("settings", &config_map.to_string());
    let volumes = json!([
        {"name": "all", "configMap": {"name": "settings"}},
        {"name": "picked", "configMap": {
            "name": "settings",
            "items": [{"key": "b", "path": "sub/picked", "mode": 0o400}],
        }},
    ]);
    let mounts = json!([
        {"name": "all", "mountPath": "/all"},
        {"name": "picked", "mountPath": "/picked"},
        {"name": "all", "mountPath": "/etc/single.conf", "subPath": "a"},
    ]);
    let script = "cat /all/a; echo; cat /all/b; echo; stat -L -c %a /all/a; \
        cat /picked/sub/picked; echo; stat -L -c %a /picked/sub/picked; ls /picked; \
        touch /all/new 2>/dev/null && echo writable || echo read-only; \
        cat /etc/single.conf; echo";

    node.apply(
        "cm-reader",
        &pod(&node, "cm-reader", volumes, mounts, script, json!({})),
    );

    let log = succeeded_log(&node, "cm-reader");
    assert_eq!(
        stdout_lines(&log),
        [
            "alpha",
            "beta",
            "644",
            "beta",
            "400",
            "sub",
            "read-only",
            "alpha"
        ],
        "log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_projected_and_downward_api_volumes_reach_a_non_root_container() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kvolsec").await;
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default"},
        "data": {"password": "czNjcmV0"},
    });
    node.apply("creds", &secret.to_string());
    let root_ca = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": "default"},
        "data": {"ca.crt": "PEM"},
    });
    node.apply("root-ca", &root_ca.to_string());
    let namespace_item =
        json!({"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}});
    let volumes = json!([
        {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        ]}},
        {"name": "kube-api-access", "projected": {"defaultMode": 0o644, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [namespace_item]}},
        ]}},
    ]);
    let mounts = json!([
        {"name": "creds", "mountPath": "/creds"},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "info", "mountPath": "/etc/podinfo"},
        {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
    ]);
    let script = "id -u; cat /creds/password; echo; cat /etc/podinfo/name; echo; \
        cat /etc/podinfo/labels; echo; cd /var/run/secrets/kubernetes.io/serviceaccount; \
        cat ca.crt; echo; cat namespace; echo; test -f token && echo has-token; \
        touch /rootfs-write 2>/dev/null && echo rootfs-writable || echo rootfs-read-only; \
        stat -L -c %a:%g /creds/password; echo note > /scratch/note && echo scratch-writable";
    // The securityContext basics: a uid and a read-only root filesystem; fsGroup makes the
    // 0400 secret readable to the group (0440) and is among the process's groups.
    let security = json!({"securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": true}});
    let mut manifest: Value =
        serde_json::from_str(&pod(&node, "sec-reader", volumes, mounts, script, security))
            .expect("the manifest is JSON");
    manifest["spec"]["securityContext"] = json!({"fsGroup": 2000});

    node.apply("sec-reader", &manifest.to_string());

    let log = succeeded_log(&node, "sec-reader");
    assert_eq!(
        stdout_lines(&log),
        [
            "1000",
            "s3cret",
            "sec-reader",
            "app=\"volumes\"",
            "PEM",
            "default",
            "has-token",
            "rootfs-read-only",
            "440:2000",
            "scratch-writable"
        ],
        "log:\n{log}"
    );

    // The secret's files leave the node with the pod.
    let pod = get_pod(&node.control, "sec-reader").expect("the pod");
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let pod_directory = node.directory.path().join("root/pods").join(uid);
    assert!(
        pod_directory
            .join("volumes/kubernetes.io~secret/creds/password")
            .exists()
    );
    let deleted = node
        .control
        .kubectl(&["delete", "pod", "sec-reader", "--wait", "--timeout=60s"]);
    assert!(
        deleted.status.success(),
        "{}",
        skiff_tests::control::text(&deleted)
    );
    // A finished pod is deleted at once: the kubelet cleans up after the API forgot it.
    node.kubelet.wait_for(
        "the pod directory to be removed",
        common::RUNNING_TIMEOUT,
        || (!pod_directory.exists()).then_some(()),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_dir_is_shared_by_two_containers_and_host_path_reaches_the_host() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kvolshare").await;
    let host_directory = node.directory.path().join("host-data/created");
    let volumes = json!([
        {"name": "shared", "emptyDir": {}},
        {"name": "host", "hostPath": {"path": host_directory, "type": "DirectoryOrCreate"}},
    ]);
    let mounts = json!([
        {"name": "shared", "mountPath": "/shared"},
        {"name": "host", "mountPath": "/host"},
    ]);
    let mut manifest: Value = serde_json::from_str(&pod(
        &node,
        "sharing",
        volumes,
        mounts.clone(),
        "echo from-writer > /shared/note; echo on-the-host > /host/file",
        json!({}),
    ))
    .expect("the manifest is JSON");
    manifest["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({
            "name": "reader",
            "image": node.busybox,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", "until test -f /shared/note; do sleep 0.1; done; cat /shared/note"],
            "volumeMounts": mounts,
        }));

    node.apply("sharing", &manifest.to_string());

    succeeded_log(&node, "sharing");
    let pod = get_pod(&node.control, "sharing").expect("the pod");
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let reader = node.container_log("sharing", uid, "reader");
    assert_eq!(stdout_lines(&reader), ["from-writer"], "log:\n{reader}");
    assert_eq!(
        std::fs::read_to_string(host_directory.join("file")).expect("the hostPath file"),
        "on-the-host\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_map_change_reaches_a_running_container_within_the_refresh_period() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kvolupd").await;
    let config_map = |value: &str| {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "live", "namespace": "default"},
            "data": {"value": value},
        })
        .to_string()
    };
    node.apply("live-v1", &config_map("first"));
    let volumes = json!([{"name": "live", "configMap": {"name": "live"}}]);
    let mounts = json!([{"name": "live", "mountPath": "/live"}]);
    // Prints the value whenever it changes.
    let script = "last=; while true; do v=$(cat /live/value); \
        if [ \"$v\" != \"$last\" ]; then echo \"$v\"; last=$v; fi; sleep 0.5; done";
    let mut manifest: Value =
        serde_json::from_str(&pod(&node, "watcher", volumes, mounts, script, json!({})))
            .expect("the manifest is JSON");
    manifest["spec"]["restartPolicy"] = json!("Always");
    node.apply("watcher", &manifest.to_string());
    let pod = node.wait_pod("watcher", "the pod to run", common::running_and_ready);
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();

    node.apply("live-v2", &config_map("second"));

    // Upstream's bound: the sync period (1 min) plus the object cache's delay.
    node.kubelet.wait_for(
        "the container to see the new value",
        std::time::Duration::from_secs(90),
        || {
            let log = node.container_log("watcher", &uid, "main");
            (stdout_lines(&log) == ["first", "second"]).then_some(())
        },
    );
}

/// The securityContext basics beside the volumes: capabilities and privileged mode.
#[tokio::test(flavor = "multi_thread")]
async fn capabilities_and_privileged_mode_reach_the_container() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kvolcaps").await;
    let script = "grep CapEff /proc/self/status | tr -s '\\t ' ' ' | cut -d' ' -f2";
    let narrow =
        json!({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}});
    let privileged = json!({"securityContext": {"privileged": true}});

    node.apply(
        "narrow",
        &pod(&node, "narrow", json!([]), json!([]), script, narrow),
    );
    node.apply(
        "privileged",
        &pod(
            &node,
            "privileged",
            json!([]),
            json!([]),
            script,
            privileged,
        ),
    );

    let narrow = succeeded_log(&node, "narrow");
    assert_eq!(
        stdout_lines(&narrow),
        ["0000000000001000"],
        "CAP_NET_ADMIN only"
    );
    let privileged = succeeded_log(&node, "privileged");
    // Every capability the runtime holds: those of this (root) test, which started it.
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let own = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .map(str::trim)
        .expect("CapEff");
    assert_eq!(stdout_lines(&privileged), [own], "privileged mode");
}
