//! Static pods end to end: a manifest file in the kubelet's `--pod-manifest-path` runs as a pod
//! and shows in skiff-control as a mirror pod, which survives `kubectl delete` without the pod
//! restarting, and goes with its file (harness: `common`).

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use common::{GRACE_PERIOD_SECONDS, Node, get_pod, running_and_ready};
use serde_json::{Value, json};
use skiff_kubelet::{
    cri::{
        Runtime,
        api::{ContainerFilter, ContainerState},
    },
    pod::labels::{POD_NAME_LABEL, POD_UID_LABEL},
};
use skiff_tests::control::text;

/// A static pod `name` running `command` from `image` (never pulled).
fn static_manifest(name: &str, image: &str, command: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
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

/// The IDs of the running containers of pod `uid` in CRI.
async fn running_containers(runtime: &Runtime, uid: &str) -> Vec<String> {
    let filter = ContainerFilter {
        label_selector: HashMap::from([(POD_UID_LABEL.to_owned(), uid.to_owned())]),
        ..ContainerFilter::default()
    };
    runtime
        .list_containers(filter)
        .await
        .expect("ListContainers")
        .into_iter()
        .filter(|container| container.state == ContainerState::ContainerRunning as i32)
        .map(|container| container.id)
        .collect()
}

fn annotation<'a>(pod: &'a Value, key: &str) -> &'a str {
    pod["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn static_pod_appears_as_a_mirror_pod_and_disappears_with_its_file() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kstatic").await;
    let (control, kubelet, runtime) = (&node.control, &node.kubelet, &node.runtime);
    let mirror_name = format!("web-{}", node.name);

    // Written aside under a hidden name first: the kubelet skips it until the rename.
    let manifest = node.manifests_dir().join("web.json");
    let hidden = node.manifests_dir().join(".web.json.tmp");
    std::fs::write(
        &hidden,
        static_manifest("web", &node.busybox, "echo static-hello; sleep 3600"),
    )
    .expect("write the manifest");
    std::fs::rename(&hidden, &manifest).expect("move the manifest in place");

    let mirror = node.wait_pod(&mirror_name, "the mirror pod to be Running", |pod| {
        running_and_ready(pod) && !annotation(pod, "kubernetes.io/config.mirror").is_empty()
    });
    let static_uid = annotation(&mirror, "kubernetes.io/config.mirror").to_owned();
    assert_eq!(annotation(&mirror, "kubernetes.io/config.hash"), static_uid);
    assert_eq!(annotation(&mirror, "kubernetes.io/config.source"), "file");
    assert_ne!(
        mirror["metadata"]["uid"],
        static_uid.as_str(),
        "the API gave the mirror its own UID"
    );
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(
        mirror["metadata"]["ownerReferences"][0]["name"],
        node.name.as_str()
    );
    let containers = running_containers(runtime, &static_uid).await;
    assert_eq!(
        containers.len(),
        1,
        "one running container of the static pod"
    );
    let container_id = containers[0].clone();
    assert_eq!(
        mirror["status"]["containerStatuses"][0]["containerID"],
        format!("containerd://{container_id}"),
        "the static pod's status is on the mirror pod"
    );
    // kubectl logs of the mirror pod reaches the static pod's container through the kubelet.
    let logs = control.kubectl(&["logs", &mirror_name]);
    assert!(
        logs.status.success() && String::from_utf8_lossy(&logs.stdout).contains("static-hello"),
        "kubectl logs {mirror_name}: {}",
        text(&logs)
    );

    let deleted = control.kubectl(&["delete", "pod", &mirror_name, "--wait=false"]);
    assert!(
        deleted.status.success(),
        "kubectl delete: {}",
        text(&deleted)
    );

    let old_mirror_uid = mirror["metadata"]["uid"].clone();
    let recreated = node.wait_pod(&mirror_name, "the mirror pod to be re-created", |pod| {
        pod["metadata"]["uid"] != old_mirror_uid
            && pod["metadata"]["deletionTimestamp"].is_null()
            && running_and_ready(pod)
    });
    assert_eq!(
        annotation(&recreated, "kubernetes.io/config.mirror"),
        static_uid
    );
    assert_eq!(
        running_containers(runtime, &static_uid).await,
        std::slice::from_ref(&container_id),
        "deleting the mirror pod did not restart the static pod"
    );
    assert_eq!(
        recreated["status"]["containerStatuses"][0]["restartCount"],
        0
    );

    std::fs::remove_file(&manifest).expect("remove the manifest");

    kubelet.wait_for("the mirror pod to go", common::RUNNING_TIMEOUT, || {
        get_pod(control, &mirror_name).is_none().then_some(())
    });
    node.wait_sandboxes(&static_uid, 0).await;
    assert!(
        running_containers(runtime, &static_uid).await.is_empty(),
        "no container left in CRI"
    );
}

/// The running containers of the pod named `name` in CRI (a static pod's UID is not known
/// before its mirror pod shows it).
async fn running_containers_of_pod(runtime: &Runtime, name: &str) -> Vec<String> {
    let filter = ContainerFilter {
        label_selector: HashMap::from([(POD_NAME_LABEL.to_owned(), name.to_owned())]),
        ..ContainerFilter::default()
    };
    runtime
        .list_containers(filter)
        .await
        .expect("ListContainers")
        .into_iter()
        .filter(|container| container.state == ContainerState::ContainerRunning as i32)
        .map(|container| container.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn static_pod_runs_without_the_api_and_is_mirrored_once_it_answers() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let mut node = Node::start("kstaticapi").await;
    let mirror_name = format!("web-{}", node.name);
    node.control.kill();
    node.restart_kubelet();

    std::fs::write(
        node.manifests_dir().join("web.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  terminationGracePeriodSeconds: {GRACE_PERIOD_SECONDS}\n  containers:\n  - name: main\n    image: {}\n    imagePullPolicy: Never\n    command: [sh, -c, sleep 3600]\n",
            node.busybox
        ),
    )
    .expect("write the manifest");

    let deadline = Instant::now() + common::RUNNING_TIMEOUT;
    let container_id = loop {
        if let [id] = running_containers_of_pod(&node.runtime, &mirror_name)
            .await
            .as_slice()
        {
            break id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the static pod did not start without the API; kubelet log:\n{}",
            node.kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    node.control.restart();
    let mirror = node.wait_pod(&mirror_name, "the mirror pod once the API answers", |pod| {
        running_and_ready(pod)
    });
    assert_eq!(
        mirror["status"]["containerStatuses"][0]["containerID"],
        format!("containerd://{container_id}")
    );

    // A restarted kubelet adopts the static pod: it is no orphan of the API's pod list.
    node.restart_kubelet();
    node.kubelet.wait_for(
        "the restarted kubelet to read the manifests",
        common::RUNNING_TIMEOUT,
        || (node.kubelet.log().matches("starting a static pod").count() >= 2).then_some(()),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        running_containers_of_pod(&node.runtime, &mirror_name).await,
        [container_id],
        "the static pod kept its container across a kubelet restart; kubelet log:\n{}",
        node.kubelet.log()
    );
    let kept = get_pod(&node.control, &mirror_name).expect("the mirror pod");
    assert_eq!(
        kept["metadata"]["uid"], mirror["metadata"]["uid"],
        "the mirror pod was kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn edited_manifest_replaces_the_static_pod_and_a_broken_one_removes_it() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("kstaticedit").await;
    let mirror_name = format!("web-{}", node.name);
    let manifest = node.manifests_dir().join("web.json");
    let write = |content: &str| {
        let aside = node.manifests_dir().join(".web.json.tmp");
        std::fs::write(&aside, content).expect("write the manifest");
        std::fs::rename(&aside, &manifest).expect("move the manifest in place");
    };
    write(&static_manifest("web", &node.busybox, "sleep 3600"));
    let first = node.wait_pod(&mirror_name, "the first mirror pod", running_and_ready);
    let first_uid = annotation(&first, "kubernetes.io/config.mirror").to_owned();

    write(&static_manifest("web", &node.busybox, "sleep 3601"));

    let second = node.wait_pod(
        &mirror_name,
        "the mirror pod of the edited manifest",
        |pod| {
            let hash = annotation(pod, "kubernetes.io/config.mirror");
            !hash.is_empty() && hash != first_uid && running_and_ready(pod)
        },
    );
    let second_uid = annotation(&second, "kubernetes.io/config.mirror").to_owned();
    node.wait_sandboxes(&first_uid, 0).await;
    assert_eq!(
        running_containers(&node.runtime, &second_uid).await.len(),
        1
    );

    write("apiVersion: v1\nkind: Pod\nspec: [\n");

    node.kubelet
        .wait_for("the mirror pod to go", common::RUNNING_TIMEOUT, || {
            get_pod(&node.control, &mirror_name).is_none().then_some(())
        });
    node.wait_sandboxes(&second_uid, 0).await;
    let log = node.kubelet.log();
    assert!(
        log.contains(&format!(
            "static pod manifest {}: cannot decode it",
            manifest.display()
        )),
        "the broken manifest is logged with its path; kubelet log:\n{log}"
    );
}
