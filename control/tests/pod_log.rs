//! `pods/{name}/log` as kubectl sees it before any kubelet is involved: discovery lists it, and
//! the errors decided by skiff-control alone (no such pod, no container named where one must be,
//! an unknown container, no node assigned, invalid options) carry upstream's codes and texts.
//! The path through a kubelet is tested end to end in skiff-kubelet's `tests/server.rs`.

mod common;

use common::{Client, ControlPlane, Response};
use serde_json::{Value, json};

fn start() -> (tempfile::TempDir, ControlPlane, Client) {
    let data = tempfile::tempdir().expect("temp dir");
    let control = ControlPlane::start(data.path());
    let client = control.client();
    (data, control, client)
}

/// Asserts a `Status` failure with this code and reason; returns its message.
#[track_caller]
fn failure(response: &Response, code: u16, reason: &str) -> String {
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(response.status, code, "{body}");
    let status = response.json();
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["reason"], reason, "{status}");
    status["message"].as_str().unwrap_or_default().to_owned()
}

/// Creates pod `name` with `containers` (names), bound to `node` when given.
fn create_pod(client: &Client, name: &str, containers: &[&str], node: Option<&str>) {
    let containers: Vec<Value> = containers
        .iter()
        .map(|container| json!({"name": container, "image": "busybox"}))
        .collect();
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": containers},
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    let created = client.post("/api/v1/namespaces/default/pods", &pod);
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
}

#[test]
fn pods_log_is_listed_in_discovery() {
    let (_data, _control, client) = start();
    let core = client.get("/api/v1").json();
    let log = core["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|resource| resource["name"] == "pods/log")
        .cloned()
        .expect("pods/log in /api/v1");
    assert_eq!(log["verbs"], json!(["get"]));
    assert_eq!(log["kind"], "Pod");
    assert_eq!(log["namespaced"], true);
}

#[test]
fn log_of_a_missing_pod_is_not_found() {
    let (_data, _control, client) = start();
    let message = failure(
        &client.get("/api/v1/namespaces/default/pods/ghost/log"),
        404,
        "NotFound",
    );
    assert_eq!(message, "pods \"ghost\" not found");
}

#[test]
fn log_without_a_container_name_of_a_two_container_pod_lists_the_choices() {
    let (_data, _control, client) = start();
    create_pod(&client, "pair", &["a", "b"], None);
    let message = failure(
        &client.get("/api/v1/namespaces/default/pods/pair/log"),
        400,
        "BadRequest",
    );
    assert_eq!(
        message,
        "a container name must be specified for pod pair, choose one of: [a b]"
    );
}

#[test]
fn log_of_an_unknown_container_is_a_bad_request() {
    let (_data, _control, client) = start();
    create_pod(&client, "web", &["main"], Some("node-a"));
    let message = failure(
        &client.get("/api/v1/namespaces/default/pods/web/log?container=nope"),
        400,
        "BadRequest",
    );
    assert_eq!(message, "container nope is not valid for pod web");
}

#[test]
fn log_of_an_unscheduled_pod_says_it_has_no_host() {
    let (_data, _control, client) = start();
    create_pod(&client, "pending", &["main"], None);
    let message = failure(
        &client.get("/api/v1/namespaces/default/pods/pending/log"),
        400,
        "BadRequest",
    );
    assert_eq!(message, "pod pending does not have a host assigned");
}

#[test]
fn log_options_are_validated_like_pod_log_options() {
    let (_data, _control, client) = start();
    create_pod(&client, "web", &["main"], Some("node-a"));
    let message = failure(
        &client.get("/api/v1/namespaces/default/pods/web/log?tailLines=-2"),
        422,
        "Invalid",
    );
    assert_eq!(
        message,
        "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -2: must be greater than or equal to 0"
    );
}

#[test]
fn log_of_a_pod_on_a_missing_node_is_not_found() {
    let (_data, _control, client) = start();
    create_pod(&client, "web", &["main"], Some("node-a"));
    let message = failure(
        &client.get("/api/v1/namespaces/default/pods/web/log"),
        404,
        "NotFound",
    );
    assert_eq!(message, "nodes \"node-a\" not found");
}
