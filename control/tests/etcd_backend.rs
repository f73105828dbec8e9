//! skiff-control on the etcd v3 backend (`--etcd-servers`, a private Debian etcd-server per
//! test): kubectl works the same, state and allocations live in etcd and survive a server
//! restart, a watch resumes across the restart, and the server's periodic compaction of etcd
//! makes old watches end with `410 Expired`, after which a relist and watch continue.

mod common;

use std::time::Duration;

use common::{ControlPlane, text};
use serde_json::{Value, json};
use skiff_tests::{
    etcd::{ETCD_BINARY, EtcdServer},
    require_privileges,
};

fn revision_of(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .expect("a numeric resourceVersion")
}

fn config_map(name: &str, colour: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"colour": colour}})
}

#[test]
fn kubectl_state_allocations_and_watches_survive_a_restart_on_etcd() {
    require_privileges!(
        ETCD_BINARY,
        common::kubectl_path().to_str().expect("UTF-8 path")
    );
    let etcd = EtcdServer::start().expect("start etcd");
    let data = tempfile::tempdir().expect("temp dir");
    let url = etcd.client_url();
    let mut control = ControlPlane::start_with(data.path(), &["--etcd-servers", &url]);

    let manifest = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  type: NodePort\n  selector:\n    app: web\n  ports:\n  - port: 80\n";
    let mut apply = std::process::Command::new(common::kubectl_path())
        .arg("--kubeconfig")
        .arg(control.kubeconfig())
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl apply");
    use std::io::Write as _;
    apply
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("write");
    let output = apply.wait_with_output().expect("kubectl output");
    assert!(output.status.success(), "{}", text(&output));
    let get = control.kubectl(&[
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}",
    ]);
    let before = String::from_utf8_lossy(&get.stdout).into_owned();
    assert!(before.starts_with("10."), "{}", text(&get));

    let client = control.client();
    let created = client.post(
        "/api/v1/namespaces/default/configmaps",
        &config_map("c", "blue"),
    );
    assert_eq!(created.status, 201);
    let start = revision_of(&created.json());

    control.restart();
    let client = control.client();
    let get = control.kubectl(&[
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&get.stdout),
        before,
        "the Service survives the restart"
    );
    let ip = before.split(' ').next().expect("an IP").to_owned();
    let taken = client.post(
        "/api/v1/namespaces/default/services",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other"},
                "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}),
    );
    assert_eq!(
        taken.status,
        422,
        "the ClusterIP is still held: {}",
        String::from_utf8_lossy(&taken.body)
    );

    let updated = client.put(
        "/api/v1/namespaces/default/configmaps/c",
        &config_map("c", "red"),
    );
    assert_eq!(updated.status, 200);
    let mut stream = client
        .watch(&format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={start}"
        ))
        .expect("watch");
    let event = stream.next().expect("the update made after the restart");
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(event["object"]["data"]["colour"], "red");
    assert_eq!(revision_of(&event["object"]), revision_of(&updated.json()));
}

#[test]
fn periodic_compaction_of_etcd_expires_old_watches_and_a_relist_continues() {
    require_privileges!(ETCD_BINARY);
    let etcd = EtcdServer::start().expect("start etcd");
    let data = tempfile::tempdir().expect("temp dir");
    let url = etcd.client_url();
    let control = ControlPlane::start_with(
        data.path(),
        &[
            "--etcd-servers",
            &url,
            "--etcd-compaction-interval",
            "1s",
            "--compaction-keep-revisions",
            "5",
        ],
    );
    let client = control.client();
    let created = client.post(
        "/api/v1/namespaces/default/configmaps",
        &config_map("c", "0"),
    );
    let old = revision_of(&created.json());
    for sequence in 1..20 {
        let response = client.put(
            "/api/v1/namespaces/default/configmaps/c",
            &config_map("c", &sequence.to_string()),
        );
        assert_eq!(response.status, 200);
    }
    std::thread::sleep(Duration::from_millis(2500));
    let mut stream = client
        .watch(&format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={old}"
        ))
        .expect("watch");
    let event = stream.next().expect("an event");
    assert_eq!(event["type"], "ERROR", "{event}");
    assert_eq!(event["object"]["code"], 410, "{event}");

    let list = client.get("/api/v1/namespaces/default/configmaps").json();
    assert_eq!(list["items"][0]["data"]["colour"], "19");
    let mut stream = client
        .watch(&format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={}",
            revision_of(&list)
        ))
        .expect("watch from the list");
    let response = client.put(
        "/api/v1/namespaces/default/configmaps/c",
        &config_map("c", "20"),
    );
    assert_eq!(response.status, 200);
    let event = stream.next().expect("the change");
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(event["object"]["data"]["colour"], "20");
}
