//! skiff-control's resource API as kube-apiserver's clients see it, one behaviour per test:
//! bootstrap objects, ClusterIP/NodePort allocation, validation and body decoding,
//! `fieldValidation`, `dryRun`, create/update/patch metadata rules, list selectors and paging,
//! Tables, watch semantics, pod binding and graceful deletion, finalizers and garbage collection,
//! namespace deletion, `/metrics` and OpenAPI v3. Every test starts its own server on a temp dir.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Client, ControlPlane, Response};
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A fresh server on its own data directory (the directory lives as long as the returned guard).
fn start() -> (tempfile::TempDir, ControlPlane, Client) {
    start_with(&[])
}

fn start_with(arguments: &[&str]) -> (tempfile::TempDir, ControlPlane, Client) {
    let data = tempfile::tempdir().expect("temp dir");
    let control = ControlPlane::start_with(data.path(), arguments);
    let client = control.client();
    (data, control, client)
}

fn text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// Asserts the status code and returns the JSON body.
#[track_caller]
fn expect(response: &Response, code: u16) -> Value {
    assert_eq!(response.status, code, "{}", text(response));
    response.json()
}

/// Asserts a `Status` failure with this code and reason and returns it.
#[track_caller]
fn expect_failure(response: &Response, code: u16, reason: &str) -> Value {
    let status = expect(response, code);
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["code"], code, "{status}");
    assert_eq!(status["reason"], reason, "{status}");
    status
}

#[track_caller]
fn create(client: &Client, collection: &str, object: &Value) -> Value {
    expect(&client.post(collection, object), 201)
}

/// Polls `condition` every 50 ms until it holds, failing after `seconds`.
#[track_caller]
fn eventually(seconds: u64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| {
            item["metadata"]["name"]
                .as_str()
                .expect("a name")
                .to_owned()
        })
        .collect()
}

fn revision_of(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("a numeric resourceVersion in {object}"))
}

const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const REPLICA_SETS: &str = "/apis/apps/v1/namespaces/default/replicasets";

fn config_map(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"key": "value"},
    })
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    })
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "main", "image": "nginx:1"},
                    {"name": "sidecar", "image": "envoy:1"},
                ]},
            },
        },
    })
}

fn replica_set(name: &str, owner: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "labels": {"app": owner["metadata"]["name"]},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment",
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": owner["metadata"]["name"]}},
            "template": {
                "metadata": {"labels": {"app": owner["metadata"]["name"]}},
                "spec": {"containers": [{"name": "main", "image": "nginx:1"}]},
            },
        },
    })
}

fn service(
    name: &str,
    service_type: &str,
    cluster_ip: Option<&str>,
    node_port: Option<u16>,
) -> Value {
    let mut port = json!({"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080});
    if let Some(node_port) = node_port {
        port["nodePort"] = json!(node_port);
    }
    let mut spec = json!({"type": service_type, "selector": {"app": name}, "ports": [port]});
    if let Some(cluster_ip) = cluster_ip {
        spec["clusterIP"] = json!(cluster_ip);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

/// `details.causes` of an `Invalid` Status as (field, reason) pairs.
fn causes(status: &Value) -> Vec<(String, String)> {
    status["details"]["causes"]
        .as_array()
        .unwrap_or_else(|| panic!("causes in {status}"))
        .iter()
        .map(|cause| {
            (
                cause["field"].as_str().unwrap_or_default().to_owned(),
                cause["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// One request with a custom `Accept` header (the common client always sends JSON's): status and
/// body. A raw HTTP/1.1 exchange over rustls with the cluster CA and the admin token.
fn get_with_accept(control: &ControlPlane, path: &str, accept: &str) -> (u16, Value) {
    let token = std::fs::read_to_string(control.data_dir.join("admin.token")).expect("token");
    let ca = std::fs::read(control.data_dir.join("pki/ca.crt")).expect("CA");
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(&ca).flatten() {
        roots.add(certificate).expect("CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let socket = TcpStream::connect(("127.0.0.1", control.port)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n",
        token.trim()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(error) => panic!("reading the response: {error}"),
    }
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let end = rest
                .windows(2)
                .position(|window| window == b"\r\n")
                .expect("a chunk size line");
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..end])
                    .split(';')
                    .next()
                    .unwrap_or("0")
                    .trim(),
                16,
            )
            .expect("a chunk size");
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
        body = decoded;
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    let body = serde_json::from_slice(&body).unwrap_or_else(|error| {
        panic!(
            "response is not JSON ({error}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, body)
}

/// Watch events (type, name) until the stream ends or `count` arrived; bookmarks are skipped.
fn watch_events(client: &Client, path: &str, count: usize) -> Vec<(String, String)> {
    client
        .watch(path)
        .expect("watch")
        .filter(|event| event["type"] != "BOOKMARK")
        .take(count)
        .map(|event| {
            (
                event["type"].as_str().unwrap_or_default().to_owned(),
                event["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn pair(kind: &str, name: &str) -> (String, String) {
    (kind.to_owned(), name.to_owned())
}

// ---------------------------------------------------------------------------------------------
// 1. What the first start creates

#[test]
fn first_start_creates_the_four_system_namespaces_active() {
    let (_data, _control, client) = start();
    for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let object = expect(&client.get(&format!("/api/v1/namespaces/{namespace}")), 200);
        assert_eq!(object["status"]["phase"], "Active", "{object}");
    }
}

#[test]
fn first_start_creates_the_kubernetes_service_on_the_first_service_address() {
    let (_data, _control, client) = start();
    let kubernetes = expect(&client.get(&format!("{SERVICES}/kubernetes")), 200);
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1", "{kubernetes}");
    assert_eq!(kubernetes["spec"]["ports"][0]["port"], 443, "{kubernetes}");
}

#[test]
fn the_kubernetes_service_follows_the_service_cidr_flag() {
    let (_data, _control, client) = start_with(&["--service-cidr", "10.100.0.0/16"]);
    let kubernetes = expect(&client.get(&format!("{SERVICES}/kubernetes")), 200);
    assert_eq!(
        kubernetes["spec"]["clusterIP"], "10.100.0.1",
        "{kubernetes}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. ClusterIP and NodePort allocation

#[test]
fn a_node_port_service_gets_a_cluster_ip_and_a_node_port_in_their_ranges() {
    let (_data, _control, client) = start();
    let created = create(&client, SERVICES, &service("web", "NodePort", None, None));
    let address: Ipv4Addr = created["spec"]["clusterIP"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("a clusterIP in {created}"));
    let offset = u32::from(address).wrapping_sub(u32::from(Ipv4Addr::new(10, 96, 0, 0)));
    assert!(
        offset > 1 && offset < (1 << 20) - 1,
        "{address} is not a usable address of 10.96.0.0/12"
    );
    assert_eq!(created["spec"]["clusterIPs"], json!([address.to_string()]));
    let node_port = created["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap_or_else(|| panic!("a nodePort in {created}"));
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    let stored = expect(&client.get(&format!("{SERVICES}/web")), 200);
    assert_eq!(stored["spec"], created["spec"]);
}

#[test]
fn requesting_a_cluster_ip_in_use_is_invalid_on_spec_cluster_ips_and_stores_nothing() {
    let (_data, _control, client) = start();
    create(
        &client,
        SERVICES,
        &service("first", "ClusterIP", Some("10.96.0.50"), None),
    );
    let status = expect_failure(
        &client.post(
            SERVICES,
            &service("second", "ClusterIP", Some("10.96.0.50"), None),
        ),
        422,
        "Invalid",
    );
    assert_eq!(causes(&status)[0].0, "spec.clusterIPs", "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("provided IP is already allocated"),
        "{status}"
    );
    assert_eq!(client.get(&format!("{SERVICES}/second")).status, 404);
}

#[test]
fn requesting_a_node_port_in_use_is_invalid_on_that_port_and_stores_nothing() {
    let (_data, _control, client) = start();
    create(
        &client,
        SERVICES,
        &service("first", "NodePort", None, Some(30080)),
    );
    let status = expect_failure(
        &client.post(SERVICES, &service("second", "NodePort", None, Some(30080))),
        422,
        "Invalid",
    );
    assert_eq!(
        causes(&status)[0],
        pair("spec.ports[0].nodePort", "FieldValueInvalid"),
        "{status}"
    );
    assert_eq!(client.get(&format!("{SERVICES}/second")).status, 404);
    // The failed create released the ClusterIP it had allocated: exactly one Service holds one.
    let list = expect(&client.get(SERVICES), 200);
    assert_eq!(names(&list), ["first", "kubernetes"]);
}

#[test]
fn deleting_a_service_releases_its_cluster_ip_and_node_port() {
    let (_data, _control, client) = start();
    create(
        &client,
        SERVICES,
        &service("old", "NodePort", Some("10.96.0.50"), Some(30080)),
    );
    expect(&client.delete(&format!("{SERVICES}/old")), 200);
    let created = create(
        &client,
        SERVICES,
        &service("new", "NodePort", Some("10.96.0.50"), Some(30080)),
    );
    assert_eq!(created["spec"]["clusterIP"], "10.96.0.50");
    assert_eq!(created["spec"]["ports"][0]["nodePort"], 30080);
}

#[test]
fn allocations_survive_a_restart_and_those_of_deleted_services_are_reusable() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut control = ControlPlane::start(data.path());
    let client = control.client();
    create(
        &client,
        SERVICES,
        &service("kept", "NodePort", Some("10.96.0.60"), Some(30060)),
    );
    create(
        &client,
        SERVICES,
        &service("gone", "NodePort", Some("10.96.0.61"), Some(30061)),
    );
    expect(&client.delete(&format!("{SERVICES}/gone")), 200);
    control.restart();
    let client = control.client();
    expect_failure(
        &client.post(
            SERVICES,
            &service("clash", "ClusterIP", Some("10.96.0.60"), None),
        ),
        422,
        "Invalid",
    );
    expect_failure(
        &client.post(SERVICES, &service("clash", "NodePort", None, Some(30060))),
        422,
        "Invalid",
    );
    create(
        &client,
        SERVICES,
        &service("reuse", "NodePort", Some("10.96.0.61"), Some(30061)),
    );
}

#[test]
fn a_two_port_node_port_range_is_exhausted_by_two_services() {
    let (_data, _control, client) = start_with(&["--service-node-port-range", "30000-30001"]);
    let mut ports = Vec::new();
    for name in ["one", "two"] {
        let created = create(&client, SERVICES, &service(name, "NodePort", None, None));
        ports.push(
            created["spec"]["ports"][0]["nodePort"]
                .as_u64()
                .expect("a port"),
        );
    }
    ports.sort_unstable();
    assert_eq!(ports, [30000, 30001]);
    let status = expect_failure(
        &client.post(SERVICES, &service("three", "NodePort", None, None)),
        500,
        "InternalError",
    );
    assert_eq!(
        status["message"],
        "Internal error occurred: failed to allocate a nodePort: range is full"
    );
    assert_eq!(client.get(&format!("{SERVICES}/three")).status, 404);
}

#[test]
fn a_failed_service_create_releases_the_cluster_ip_it_allocated() {
    // A /29 leaves five addresses to allocate (.2 to .6; .1 is the kubernetes Service).
    let (_data, _control, client) = start_with(&["--service-cidr", "10.100.0.0/29"]);
    create(
        &client,
        SERVICES,
        &service("first", "NodePort", None, Some(30080)),
    );
    for _ in 0..3 {
        expect_failure(
            &client.post(SERVICES, &service("clash", "NodePort", None, Some(30080))),
            422,
            "Invalid",
        );
    }
    for name in ["a", "b", "c", "d"] {
        create(&client, SERVICES, &service(name, "ClusterIP", None, None));
    }
    let status = expect_failure(
        &client.post(SERVICES, &service("e", "ClusterIP", None, None)),
        500,
        "InternalError",
    );
    assert_eq!(
        status["message"],
        "Internal error occurred: failed to allocate a serviceIP: range is full"
    );
}

#[test]
fn changing_a_node_port_releases_the_old_port() {
    let (_data, _control, client) = start();
    create(
        &client,
        SERVICES,
        &service("web", "NodePort", None, Some(30080)),
    );
    let mut changed = expect(&client.get(&format!("{SERVICES}/web")), 200);
    changed["spec"]["ports"][0]["nodePort"] = json!(30081);
    let updated = expect(&client.put(&format!("{SERVICES}/web"), &changed), 200);
    assert_eq!(updated["spec"]["ports"][0]["nodePort"], 30081);
    create(
        &client,
        SERVICES,
        &service("other", "NodePort", None, Some(30080)),
    );
    expect_failure(
        &client.post(SERVICES, &service("third", "NodePort", None, Some(30081))),
        422,
        "Invalid",
    );
}

#[test]
fn a_put_of_the_original_service_manifest_keeps_its_cluster_ip_and_node_port() {
    let (_data, _control, client) = start();
    let created = create(&client, SERVICES, &service("web", "NodePort", None, None));
    let updated = expect(
        &client.put(
            &format!("{SERVICES}/web"),
            &service("web", "NodePort", None, None),
        ),
        200,
    );
    assert_eq!(updated["spec"]["clusterIP"], created["spec"]["clusterIP"]);
    assert_eq!(
        updated["spec"]["ports"][0]["nodePort"],
        created["spec"]["ports"][0]["nodePort"]
    );
}

#[test]
fn changing_a_node_port_service_to_cluster_ip_drops_and_releases_its_node_port() {
    // Upstream's Service strategy (dropTypeDependentFields) wipes nodePorts and
    // externalTrafficPolicy the user did not change when the new type does not use them.
    let (_data, _control, client) = start();
    create(
        &client,
        SERVICES,
        &service("web", "NodePort", None, Some(30080)),
    );
    let updated = expect(
        &client.patch(
            &format!("{SERVICES}/web"),
            "application/merge-patch+json",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ),
        200,
    );
    assert_eq!(updated["spec"]["type"], "ClusterIP");
    assert!(
        updated["spec"]["ports"][0].get("nodePort").is_none(),
        "{updated}"
    );
    assert!(
        updated["spec"].get("externalTrafficPolicy").is_none(),
        "{updated}"
    );
    create(
        &client,
        SERVICES,
        &service("other", "NodePort", None, Some(30080)),
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Validation

#[test]
fn an_invalid_name_is_rejected_on_metadata_name_and_nothing_is_stored() {
    let (_data, _control, client) = start();
    let status = expect_failure(
        &client.post(CONFIG_MAPS, &config_map("Bad_Name", json!({}))),
        422,
        "Invalid",
    );
    assert_eq!(
        causes(&status)[0],
        pair("metadata.name", "FieldValueInvalid"),
        "{status}"
    );
    assert_eq!(status["details"]["name"], "Bad_Name");
    assert_eq!(status["details"]["kind"], "ConfigMap");
    assert!(names(&expect(&client.get(CONFIG_MAPS), 200)).is_empty());
}

#[test]
fn a_pod_without_containers_is_rejected_as_spec_containers_required() {
    let (_data, _control, client) = start();
    let mut body = pod("empty");
    body["spec"]["containers"] = json!([]);
    let status = expect_failure(&client.post(PODS, &body), 422, "Invalid");
    assert!(
        causes(&status).contains(&pair("spec.containers", "FieldValueRequired")),
        "{status}"
    );
    assert_eq!(client.get(&format!("{PODS}/empty")).status, 404);
}

#[test]
fn a_deployment_whose_selector_does_not_match_its_template_is_invalid() {
    let (_data, _control, client) = start();
    let mut body = deployment("web");
    body["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let status = expect_failure(&client.post(DEPLOYMENTS, &body), 422, "Invalid");
    assert!(
        causes(&status)
            .iter()
            .any(|(field, _)| field == "spec.template.metadata.labels"),
        "{status}"
    );
    assert_eq!(client.get(&format!("{DEPLOYMENTS}/web")).status, 404);
}

#[test]
fn changing_a_service_cluster_ip_on_update_is_invalid_and_changes_nothing() {
    let (_data, _control, client) = start();
    create(
        &client,
        SERVICES,
        &service("web", "ClusterIP", Some("10.96.0.70"), None),
    );
    let mut changed = expect(&client.get(&format!("{SERVICES}/web")), 200);
    let before = changed.clone();
    changed["spec"]["clusterIP"] = json!("10.96.0.71");
    changed["spec"]["clusterIPs"] = json!(["10.96.0.71"]);
    let status = expect_failure(
        &client.put(&format!("{SERVICES}/web"), &changed),
        422,
        "Invalid",
    );
    assert!(
        causes(&status)
            .iter()
            .any(|(field, _)| field.starts_with("spec.clusterIP")),
        "{status}"
    );
    assert_eq!(expect(&client.get(&format!("{SERVICES}/web")), 200), before);
    // The rejected address was not kept either.
    create(
        &client,
        SERVICES,
        &service("other", "ClusterIP", Some("10.96.0.71"), None),
    );
}

#[test]
fn changing_a_deployment_selector_on_update_is_invalid_and_changes_nothing() {
    let (_data, _control, client) = start();
    create(&client, DEPLOYMENTS, &deployment("web"));
    let mut changed = expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200);
    let before = changed.clone();
    changed["spec"]["selector"]["matchLabels"] = json!({"app": "web", "tier": "front"});
    changed["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "tier": "front"});
    let status = expect_failure(
        &client.put(&format!("{DEPLOYMENTS}/web"), &changed),
        422,
        "Invalid",
    );
    assert!(
        causes(&status)
            .iter()
            .any(|(field, _)| field == "spec.selector"),
        "{status}"
    );
    assert_eq!(
        expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200),
        before
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Request bodies

#[test]
fn malformed_json_is_a_bad_request() {
    let (_data, _control, client) = start();
    let response = client
        .request(
            "POST",
            CONFIG_MAPS,
            Some("application/json"),
            Some(b"{\"kind\": "),
        )
        .expect("POST");
    expect_failure(&response, 400, "BadRequest");
}

#[test]
fn malformed_yaml_is_a_bad_request() {
    let (_data, _control, client) = start();
    let response = client
        .request(
            "POST",
            CONFIG_MAPS,
            Some("application/yaml"),
            Some(b"metadata: [unclosed\n  name: : x"),
        )
        .expect("POST");
    expect_failure(&response, 400, "BadRequest");
}

#[test]
fn a_yaml_body_creates_the_object() {
    let (_data, _control, client) = start();
    let yaml =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  key: value\n";
    let response = client
        .request(
            "POST",
            CONFIG_MAPS,
            Some("application/yaml"),
            Some(yaml.as_bytes()),
        )
        .expect("POST");
    expect(&response, 201);
    let stored = expect(&client.get(&format!("{CONFIG_MAPS}/from-yaml")), 200);
    assert_eq!(stored["data"], json!({"key": "value"}));
}

#[test]
fn a_body_over_three_mebibytes_is_too_large() {
    let (_data, _control, client) = start();
    let body = config_map("huge", json!({}));
    let mut body = body;
    body["data"]["key"] = json!("x".repeat(3 * 1024 * 1024 + 1));
    let response = client
        .request("POST", CONFIG_MAPS, None, Some(body.to_string().as_bytes()))
        .expect("a response to an oversized body");
    expect_failure(&response, 413, "RequestEntityTooLarge");
    assert_eq!(client.get(&format!("{CONFIG_MAPS}/huge")).status, 404);
}

#[test]
fn a_body_of_the_wrong_kind_is_a_bad_request() {
    let (_data, _control, client) = start();
    let mut body = config_map("wrong", json!({}));
    body["kind"] = json!("Secret");
    expect_failure(&client.post(CONFIG_MAPS, &body), 400, "BadRequest");
    assert_eq!(client.get(&format!("{CONFIG_MAPS}/wrong")).status, 404);
}

#[test]
fn a_body_namespace_other_than_the_url_namespace_is_a_bad_request() {
    let (_data, _control, client) = start();
    let mut body = config_map("elsewhere", json!({}));
    body["metadata"]["namespace"] = json!("kube-system");
    expect_failure(&client.post(CONFIG_MAPS, &body), 400, "BadRequest");
    assert_eq!(client.get(&format!("{CONFIG_MAPS}/elsewhere")).status, 404);
    assert_eq!(
        client
            .get("/api/v1/namespaces/kube-system/configmaps/elsewhere")
            .status,
        404
    );
}

// ---------------------------------------------------------------------------------------------
// 5. fieldValidation

fn deployment_with_unknown_field() -> Value {
    let mut body = deployment("web");
    body["spec"]["bogus"] = json!(true);
    body
}

#[test]
fn strict_field_validation_rejects_an_unknown_field_and_stores_nothing() {
    let (_data, _control, client) = start();
    let status = expect_failure(
        &client.post(
            &format!("{DEPLOYMENTS}?fieldValidation=Strict"),
            &deployment_with_unknown_field(),
        ),
        400,
        "BadRequest",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown field \"spec.bogus\""),
        "{status}"
    );
    assert_eq!(client.get(&format!("{DEPLOYMENTS}/web")).status, 404);
}

#[test]
fn warn_field_validation_and_the_default_warn_about_an_unknown_field_and_drop_it() {
    for query in ["?fieldValidation=Warn", ""] {
        let (_data, _control, client) = start();
        let response = client.post(
            &format!("{DEPLOYMENTS}{query}"),
            &deployment_with_unknown_field(),
        );
        expect(&response, 201);
        let warning = response
            .header("warning")
            .unwrap_or_else(|| panic!("a Warning header for {query:?}: {:?}", response.headers));
        assert!(warning.starts_with("299 "), "{warning}");
        assert!(warning.contains("spec.bogus"), "{warning}");
        let stored = expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200);
        assert!(stored["spec"].get("bogus").is_none(), "{stored}");
    }
}

#[test]
fn ignore_field_validation_creates_without_a_warning() {
    let (_data, _control, client) = start();
    let response = client.post(
        &format!("{DEPLOYMENTS}?fieldValidation=Ignore"),
        &deployment_with_unknown_field(),
    );
    expect(&response, 201);
    assert_eq!(response.header("warning"), None);
    let stored = expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200);
    assert!(stored["spec"].get("bogus").is_none(), "{stored}");
}

// ---------------------------------------------------------------------------------------------
// 6. dryRun

#[test]
fn a_dry_run_create_answers_the_defaulted_object_and_stores_nothing() {
    let (_data, _control, client) = start();
    let answered = create(
        &client,
        &format!("{DEPLOYMENTS}?dryRun=All"),
        &deployment("web"),
    );
    assert!(
        answered["metadata"]["uid"]
            .as_str()
            .is_some_and(|uid| !uid.is_empty()),
        "{answered}"
    );
    assert!(
        answered["metadata"]["creationTimestamp"].is_string(),
        "{answered}"
    );
    assert!(
        answered["spec"]["strategy"]["type"].is_string(),
        "defaults applied: {answered}"
    );
    assert_eq!(client.get(&format!("{DEPLOYMENTS}/web")).status, 404);
}

#[test]
fn a_dry_run_update_answers_the_change_and_changes_nothing() {
    let (_data, _control, client) = start();
    let created = create(&client, DEPLOYMENTS, &deployment("web"));
    let mut changed = created.clone();
    changed["spec"]["replicas"] = json!(5);
    let answered = expect(
        &client.put(&format!("{DEPLOYMENTS}/web?dryRun=All"), &changed),
        200,
    );
    assert_eq!(answered["spec"]["replicas"], 5);
    assert_eq!(
        expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200),
        created
    );
}

#[test]
fn a_dry_run_patch_answers_the_change_and_changes_nothing() {
    let (_data, _control, client) = start();
    let created = create(&client, DEPLOYMENTS, &deployment("web"));
    let answered = expect(
        &client.patch(
            &format!("{DEPLOYMENTS}/web?dryRun=All"),
            "application/merge-patch+json",
            r#"{"spec":{"replicas":7}}"#,
        ),
        200,
    );
    assert_eq!(answered["spec"]["replicas"], 7);
    assert_eq!(
        expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200),
        created
    );
}

#[test]
fn a_dry_run_delete_answers_and_deletes_nothing() {
    let (_data, _control, client) = start();
    let created = create(&client, CONFIG_MAPS, &config_map("kept", json!({})));
    expect(
        &client.delete(&format!("{CONFIG_MAPS}/kept?dryRun=All")),
        200,
    );
    assert_eq!(
        expect(&client.get(&format!("{CONFIG_MAPS}/kept")), 200),
        created
    );
}

#[test]
fn a_dry_run_service_create_does_not_hold_its_cluster_ip() {
    let (_data, _control, client) = start();
    let answered = create(
        &client,
        &format!("{SERVICES}?dryRun=All"),
        &service("web", "NodePort", Some("10.96.0.80"), Some(30090)),
    );
    assert_eq!(answered["spec"]["clusterIP"], "10.96.0.80");
    assert_eq!(client.get(&format!("{SERVICES}/web")).status, 404);
    create(
        &client,
        SERVICES,
        &service("other", "NodePort", Some("10.96.0.80"), Some(30090)),
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Create

#[test]
fn generate_name_appends_five_characters_to_the_prefix() {
    let (_data, _control, client) = start();
    let mut body = config_map("", json!({}));
    body["metadata"] = json!({"generateName": "job-"});
    let created = create(&client, CONFIG_MAPS, &body);
    let name = created["metadata"]["name"].as_str().expect("a name");
    let suffix = name
        .strip_prefix("job-")
        .unwrap_or_else(|| panic!("{name}"));
    assert_eq!(suffix.len(), 5, "{name}");
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{name}"
    );
    expect(&client.get(&format!("{CONFIG_MAPS}/{name}")), 200);
}

#[test]
fn create_sets_uid_creation_timestamp_generation_one_and_a_numeric_resource_version() {
    let (_data, _control, client) = start();
    let created = create(&client, DEPLOYMENTS, &deployment("web"));
    let metadata = &created["metadata"];
    assert!(
        metadata["uid"].as_str().is_some_and(|uid| uid.len() == 36),
        "{metadata}"
    );
    let timestamp = metadata["creationTimestamp"]
        .as_str()
        .expect("a creationTimestamp");
    assert!(timestamp.parse::<jiff::Timestamp>().is_ok(), "{timestamp}");
    assert_eq!(metadata["generation"], 1);
    assert!(revision_of(&created) > 0);
    assert_eq!(
        expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200),
        created
    );
}

#[test]
fn a_duplicate_create_is_already_exists() {
    let (_data, _control, client) = start();
    create(&client, CONFIG_MAPS, &config_map("twice", json!({})));
    let status = expect_failure(
        &client.post(CONFIG_MAPS, &config_map("twice", json!({}))),
        409,
        "AlreadyExists",
    );
    assert_eq!(status["message"], "configmaps \"twice\" already exists");
}

#[test]
fn a_create_in_a_missing_namespace_is_not_found() {
    let (_data, _control, client) = start();
    let status = expect_failure(
        &client.post(
            "/api/v1/namespaces/x/configmaps",
            &config_map("lost", json!({})),
        ),
        404,
        "NotFound",
    );
    assert_eq!(status["message"], "namespaces \"x\" not found");
}

// ---------------------------------------------------------------------------------------------
// 8. Update

#[test]
fn an_update_with_a_stale_resource_version_is_a_conflict() {
    let (_data, _control, client) = start();
    let created = create(&client, DEPLOYMENTS, &deployment("web"));
    let mut first = created.clone();
    first["spec"]["replicas"] = json!(2);
    expect(&client.put(&format!("{DEPLOYMENTS}/web"), &first), 200);
    let mut stale = created;
    stale["spec"]["replicas"] = json!(3);
    let status = expect_failure(
        &client.put(&format!("{DEPLOYMENTS}/web"), &stale),
        409,
        "Conflict",
    );
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(
        expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200)["spec"]["replicas"],
        2
    );
}

#[test]
fn an_update_without_a_resource_version_succeeds() {
    let (_data, _control, client) = start();
    create(&client, CONFIG_MAPS, &config_map("plain", json!({})));
    let mut body = config_map("plain", json!({}));
    body["data"] = json!({"key": "changed"});
    let updated = expect(&client.put(&format!("{CONFIG_MAPS}/plain"), &body), 200);
    assert_eq!(updated["data"]["key"], "changed");
}

#[test]
fn a_deployment_spec_change_bumps_generation_and_a_label_change_does_not() {
    let (_data, _control, client) = start();
    let created = create(&client, DEPLOYMENTS, &deployment("web"));
    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    let labelled = expect(&client.put(&format!("{DEPLOYMENTS}/web"), &labelled), 200);
    assert_eq!(labelled["metadata"]["generation"], 1, "{labelled}");
    let mut scaled = labelled;
    scaled["spec"]["replicas"] = json!(4);
    let scaled = expect(&client.put(&format!("{DEPLOYMENTS}/web"), &scaled), 200);
    assert_eq!(scaled["metadata"]["generation"], 2, "{scaled}");
}

#[test]
fn a_label_change_through_the_original_manifest_does_not_bump_generation() {
    // `kubectl replace -f`: the client sends its manifest, without the server's defaults.
    let (_data, _control, client) = start();
    create(&client, DEPLOYMENTS, &deployment("web"));
    let mut manifest = deployment("web");
    manifest["metadata"]["labels"] = json!({"team": "a"});
    let updated = expect(&client.put(&format!("{DEPLOYMENTS}/web"), &manifest), 200);
    assert_eq!(updated["metadata"]["labels"], json!({"team": "a"}));
    assert_eq!(updated["metadata"]["generation"], 1, "{updated}");
}

#[test]
fn a_main_resource_update_ignores_status_changes() {
    let (_data, _control, client) = start();
    let created = create(&client, DEPLOYMENTS, &deployment("web"));
    let mut body = created.clone();
    body["status"] = json!({"replicas": 9, "readyReplicas": 9});
    body["metadata"]["labels"] = json!({"touched": "yes"});
    let updated = expect(&client.put(&format!("{DEPLOYMENTS}/web"), &body), 200);
    assert_eq!(updated["status"], created["status"], "{updated}");
    let stored = expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200);
    assert_eq!(stored["status"], created["status"], "{stored}");
    assert_eq!(stored["metadata"]["labels"], json!({"touched": "yes"}));
}

#[test]
fn a_status_update_ignores_spec_changes() {
    let (_data, _control, client) = start();
    let created = create(&client, DEPLOYMENTS, &deployment("web"));
    let mut body = created.clone();
    body["spec"]["replicas"] = json!(6);
    body["status"] = json!({"replicas": 1, "observedGeneration": 1});
    let updated = expect(
        &client.put(&format!("{DEPLOYMENTS}/web/status"), &body),
        200,
    );
    assert_eq!(updated["status"]["replicas"], 1, "{updated}");
    let stored = expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200);
    assert_eq!(stored["spec"], created["spec"]);
    assert_eq!(stored["metadata"]["generation"], 1);
    assert_eq!(stored["status"]["observedGeneration"], 1);
}

#[test]
fn an_update_that_changes_nothing_keeps_the_resource_version() {
    let (_data, _control, client) = start();
    let created = create(&client, DEPLOYMENTS, &deployment("web"));
    let updated = expect(&client.put(&format!("{DEPLOYMENTS}/web"), &created), 200);
    assert_eq!(
        updated["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    assert_eq!(
        expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200),
        created
    );
}

#[test]
fn an_update_with_the_unchanged_original_manifest_keeps_the_resource_version() {
    let (_data, _control, client) = start();
    let created = create(&client, DEPLOYMENTS, &deployment("web"));
    let updated = expect(
        &client.put(&format!("{DEPLOYMENTS}/web"), &deployment("web")),
        200,
    );
    assert_eq!(
        updated["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"],
        "{updated}"
    );
    assert_eq!(updated["metadata"]["generation"], 1, "{updated}");
}

// ---------------------------------------------------------------------------------------------
// 9. Patch

#[test]
fn a_merge_patch_changes_only_the_named_fields() {
    let (_data, _control, client) = start();
    create(&client, CONFIG_MAPS, &config_map("cm", json!({"a": "1"})));
    let patched = expect(
        &client.patch(
            &format!("{CONFIG_MAPS}/cm"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"b":"2"}},"data":{"other":"x"}}"#,
        ),
        200,
    );
    assert_eq!(patched["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    assert_eq!(patched["data"], json!({"key": "value", "other": "x"}));
}

#[test]
fn a_strategic_merge_patch_merges_containers_by_name() {
    let (_data, _control, client) = start();
    create(&client, DEPLOYMENTS, &deployment("web"));
    let patched = expect(
        &client.patch(
            &format!("{DEPLOYMENTS}/web"),
            "application/strategic-merge-patch+json",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"envoy:2"}]}}}}"#,
        ),
        200,
    );
    let containers = &patched["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(2), "{containers}");
    assert_eq!(containers[0]["name"], "main");
    assert_eq!(containers[0]["image"], "nginx:1");
    assert_eq!(containers[1]["name"], "sidecar");
    assert_eq!(containers[1]["image"], "envoy:2");
    assert_eq!(patched["metadata"]["generation"], 2);
}

#[test]
fn a_json_patch_applies_its_operations() {
    let (_data, _control, client) = start();
    create(&client, CONFIG_MAPS, &config_map("cm", json!({})));
    let patched = expect(
        &client.patch(
            &format!("{CONFIG_MAPS}/cm"),
            "application/json-patch+json",
            r#"[{"op":"test","path":"/data/key","value":"value"},{"op":"replace","path":"/data/key","value":"new"},{"op":"add","path":"/data/more","value":"m"}]"#,
        ),
        200,
    );
    assert_eq!(patched["data"], json!({"key": "new", "more": "m"}));
}

#[test]
fn a_json_patch_with_a_failing_test_is_invalid_and_changes_nothing() {
    let (_data, _control, client) = start();
    let created = create(&client, CONFIG_MAPS, &config_map("cm", json!({})));
    expect_failure(
        &client.patch(
            &format!("{CONFIG_MAPS}/cm"),
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/data/key","value":"new"},{"op":"test","path":"/data/key","value":"other"}]"#,
        ),
        422,
        "Invalid",
    );
    assert_eq!(
        expect(&client.get(&format!("{CONFIG_MAPS}/cm")), 200),
        created
    );
}

#[test]
fn a_patch_of_a_missing_object_is_not_found() {
    let (_data, _control, client) = start();
    let status = expect_failure(
        &client.patch(
            &format!("{CONFIG_MAPS}/missing"),
            "application/merge-patch+json",
            r#"{"data":{"a":"b"}}"#,
        ),
        404,
        "NotFound",
    );
    assert_eq!(status["message"], "configmaps \"missing\" not found");
}

#[test]
fn the_scale_subresource_reads_and_changes_spec_replicas() {
    let (_data, _control, client) = start();
    create(&client, DEPLOYMENTS, &deployment("web"));
    let scale = expect(&client.get(&format!("{DEPLOYMENTS}/web/scale")), 200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 1);
    assert_eq!(scale["status"]["selector"], "app=web");

    let patched = expect(
        &client.patch(
            &format!("{DEPLOYMENTS}/web/scale"),
            "application/merge-patch+json",
            r#"{"spec":{"replicas":3}}"#,
        ),
        200,
    );
    assert_eq!(patched["spec"]["replicas"], 3);
    assert_eq!(
        expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200)["spec"]["replicas"],
        3
    );

    let mut body = expect(&client.get(&format!("{DEPLOYMENTS}/web/scale")), 200);
    body["spec"]["replicas"] = json!(5);
    let put = expect(&client.put(&format!("{DEPLOYMENTS}/web/scale"), &body), 200);
    assert_eq!(put["spec"]["replicas"], 5);
    let stored = expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200);
    assert_eq!(stored["spec"]["replicas"], 5);
    assert_eq!(stored["metadata"]["generation"], 3);
}

// ---------------------------------------------------------------------------------------------
// 10. List

fn labelled_config_maps(client: &Client) {
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web", "tier": "back"})),
        ("c", json!({"app": "db"})),
        ("d", json!({})),
    ] {
        create(client, CONFIG_MAPS, &config_map(name, labels));
    }
}

#[test]
fn list_filters_by_equality_label_selectors() {
    let (_data, _control, client) = start();
    labelled_config_maps(&client);
    let list = expect(
        &client.get(&format!("{CONFIG_MAPS}?labelSelector=app%3Dweb")),
        200,
    );
    assert_eq!(names(&list), ["a", "b"]);
    let list = expect(
        &client.get(&format!(
            "{CONFIG_MAPS}?labelSelector=app%3Dweb,tier!%3Dfront"
        )),
        200,
    );
    assert_eq!(names(&list), ["b"]);
}

#[test]
fn list_filters_by_set_based_label_selectors() {
    let (_data, _control, client) = start();
    labelled_config_maps(&client);
    let list = expect(
        &client.get(&format!(
            "{CONFIG_MAPS}?labelSelector=app%20in%20(db,web),tier%20notin%20(back)"
        )),
        200,
    );
    assert_eq!(names(&list), ["a", "c"]);
    let list = expect(
        &client.get(&format!("{CONFIG_MAPS}?labelSelector=!app")),
        200,
    );
    assert_eq!(names(&list), ["d"]);
    let list = expect(
        &client.get(&format!("{CONFIG_MAPS}?labelSelector=tier")),
        200,
    );
    assert_eq!(names(&list), ["a", "b"]);
}

#[test]
fn list_filters_pods_by_name_phase_and_node_field_selectors() {
    let (_data, _control, client) = start();
    for name in ["one", "two", "three"] {
        create(&client, PODS, &pod(name));
    }
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "two"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
    expect(&client.post(&format!("{PODS}/two/binding"), &binding), 201);
    expect(
        &client.patch(
            &format!("{PODS}/three/status"),
            "application/merge-patch+json",
            r#"{"status":{"phase":"Running"}}"#,
        ),
        200,
    );
    let list = expect(
        &client.get(&format!("{PODS}?fieldSelector=metadata.name%3Done")),
        200,
    );
    assert_eq!(names(&list), ["one"]);
    let list = expect(
        &client.get(&format!("{PODS}?fieldSelector=status.phase%3DRunning")),
        200,
    );
    assert_eq!(names(&list), ["three"]);
    let list = expect(
        &client.get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dnode-1")),
        200,
    );
    assert_eq!(names(&list), ["two"]);
    let list = expect(
        &client.get(&format!("{PODS}?fieldSelector=spec.nodeName%3D")),
        200,
    );
    assert_eq!(names(&list), ["one", "three"]);
}

#[test]
fn an_unsupported_field_label_is_a_bad_request() {
    let (_data, _control, client) = start();
    let status = expect_failure(
        &client.get(&format!("{PODS}?fieldSelector=spec.bogus%3Dx")),
        400,
        "BadRequest",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("field label not supported: spec.bogus"),
        "{status}"
    );
}

#[test]
fn paging_returns_every_item_once_at_one_resource_version_despite_new_objects() {
    let (_data, _control, client) = start();
    for index in 0..7 {
        create(
            &client,
            CONFIG_MAPS,
            &config_map(&format!("cm-{index}"), json!({})),
        );
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut revision: Option<String> = None;
    for page in 0.. {
        let path = match &token {
            None => format!("{CONFIG_MAPS}?limit=2"),
            Some(token) => format!("{CONFIG_MAPS}?limit=2&continue={token}"),
        };
        let list = expect(&client.get(&path), 200);
        let page_names = names(&list);
        assert!(page_names.len() <= 2, "{list}");
        seen.extend(page_names);
        let list_revision = list["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        match &revision {
            None => revision = list_revision,
            Some(first) => assert_eq!(list_revision.as_ref(), Some(first), "page {page}"),
        }
        // Objects created between pages (before and after the cursor) are not part of this list.
        if page == 0 {
            create(&client, CONFIG_MAPS, &config_map("cm-00-new", json!({})));
            create(&client, CONFIG_MAPS, &config_map("cm-9-new", json!({})));
        }
        match list["metadata"]["continue"].as_str() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|index| format!("cm-{index}")).collect();
    assert_eq!(seen, expected);
}

#[test]
fn an_invalid_continue_token_is_a_bad_request() {
    let (_data, _control, client) = start();
    expect_failure(
        &client.get(&format!("{CONFIG_MAPS}?limit=2&continue=not-a-token")),
        400,
        "BadRequest",
    );
}

#[test]
fn pods_are_listed_across_all_namespaces() {
    let (_data, _control, client) = start();
    create(&client, PODS, &pod("here"));
    create(
        &client,
        "/api/v1/namespaces/kube-system/pods",
        &pod("there"),
    );
    let list = expect(&client.get("/api/v1/pods"), 200);
    assert_eq!(list["kind"], "PodList");
    let mut found: Vec<(String, String)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (
                item["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [pair("default", "here"), pair("kube-system", "there")]
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Tables

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn assert_pod_table(table: &Value, rows: usize) {
    assert_eq!(table["kind"], "Table", "{table}");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1", "{table}");
    let first_column = table["columnDefinitions"][0]["name"]
        .as_str()
        .unwrap_or_default();
    assert!(first_column.eq_ignore_ascii_case("name"), "{table}");
    let found = table["rows"].as_array().expect("rows");
    assert_eq!(found.len(), rows, "{table}");
    for row in found {
        let cells = row["cells"].as_array().expect("cells");
        assert_eq!(
            cells.len(),
            table["columnDefinitions"].as_array().map_or(0, Vec::len),
            "{row}"
        );
    }
}

#[test]
fn a_pod_list_is_served_as_a_table() {
    let (_data, control, client) = start();
    create(&client, PODS, &pod("one"));
    create(&client, PODS, &pod("two"));
    let (code, table) = get_with_accept(&control, PODS, TABLE);
    assert_eq!(code, 200, "{table}");
    assert_pod_table(&table, 2);
    assert_eq!(table["rows"][0]["cells"][0], "one");
    assert_eq!(table["rows"][1]["cells"][0], "two");
    assert!(table["metadata"]["resourceVersion"].is_string(), "{table}");
}

#[test]
fn a_single_pod_is_served_as_a_table() {
    let (_data, control, client) = start();
    create(&client, PODS, &pod("one"));
    let (code, table) = get_with_accept(&control, &format!("{PODS}/one"), TABLE);
    assert_eq!(code, 200, "{table}");
    assert_pod_table(&table, 1);
    assert_eq!(table["rows"][0]["cells"][0], "one");
    assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "one");
}

// ---------------------------------------------------------------------------------------------
// 12. Watch

#[test]
fn a_watch_from_a_resource_version_sees_added_modified_deleted_in_order() {
    let (_data, _control, client) = start();
    let revision = expect(&client.get(CONFIG_MAPS), 200)["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_owned();
    create(&client, CONFIG_MAPS, &config_map("watched", json!({})));
    expect(
        &client.patch(
            &format!("{CONFIG_MAPS}/watched"),
            "application/merge-patch+json",
            r#"{"data":{"key":"changed"}}"#,
        ),
        200,
    );
    expect(&client.delete(&format!("{CONFIG_MAPS}/watched")), 200);
    let events = watch_events(
        &client,
        &format!("{CONFIG_MAPS}?watch=true&resourceVersion={revision}&timeoutSeconds=5"),
        3,
    );
    assert_eq!(
        events,
        [
            pair("ADDED", "watched"),
            pair("MODIFIED", "watched"),
            pair("DELETED", "watched")
        ]
    );
}

#[test]
fn a_label_selector_watch_sees_objects_leave_as_deleted_and_enter_as_added() {
    let (_data, _control, client) = start();
    let revision = expect(&client.get(CONFIG_MAPS), 200)["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_owned();
    create(
        &client,
        CONFIG_MAPS,
        &config_map("leaving", json!({"app": "web"})),
    );
    create(
        &client,
        CONFIG_MAPS,
        &config_map("entering", json!({"app": "db"})),
    );
    let relabel = |name: &str, app: &str| {
        expect(
            &client.patch(
                &format!("{CONFIG_MAPS}/{name}"),
                "application/merge-patch+json",
                &json!({"metadata": {"labels": {"app": app}}}).to_string(),
            ),
            200,
        );
    };
    relabel("leaving", "db");
    relabel("entering", "web");
    let events = watch_events(
        &client,
        &format!(
            "{CONFIG_MAPS}?watch=true&labelSelector=app%3Dweb&resourceVersion={revision}&timeoutSeconds=2"
        ),
        10,
    );
    assert_eq!(
        events,
        [
            pair("ADDED", "leaving"),
            pair("DELETED", "leaving"),
            pair("ADDED", "entering")
        ]
    );
}

#[test]
fn a_watch_from_resource_version_zero_or_unset_starts_with_the_existing_objects() {
    let (_data, _control, client) = start();
    create(&client, CONFIG_MAPS, &config_map("first", json!({})));
    create(&client, CONFIG_MAPS, &config_map("second", json!({})));
    for query in ["&resourceVersion=0", ""] {
        let mut events = watch_events(
            &client,
            &format!("{CONFIG_MAPS}?watch=true&timeoutSeconds=1{query}"),
            10,
        );
        events.sort();
        assert_eq!(
            events,
            [pair("ADDED", "first"), pair("ADDED", "second")],
            "{query}"
        );
    }
}

#[test]
fn send_initial_events_ends_the_initial_added_events_with_a_bookmark() {
    let (_data, _control, client) = start();
    create(&client, CONFIG_MAPS, &config_map("first", json!({})));
    create(&client, CONFIG_MAPS, &config_map("second", json!({})));
    let events: Vec<Value> = client
        .watch(&format!(
            "{CONFIG_MAPS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=5"
        ))
        .expect("watch")
        .take(3)
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    let mut added: Vec<&str> = events[..2]
        .iter()
        .map(|event| {
            assert_eq!(event["type"], "ADDED", "{event}");
            event["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    added.sort_unstable();
    assert_eq!(added, ["first", "second"]);
    let bookmark = &events[2];
    assert_eq!(bookmark["type"], "BOOKMARK", "{bookmark}");
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
        "{bookmark}"
    );
    assert_eq!(bookmark["object"]["kind"], "ConfigMap", "{bookmark}");
    assert!(revision_of(&bookmark["object"]) > 0);
}

#[test]
fn timeout_seconds_ends_a_watch() {
    let (_data, _control, client) = start();
    let started = Instant::now();
    let events: Vec<Value> = client
        .watch(&format!("{CONFIG_MAPS}?watch=true&timeoutSeconds=1"))
        .expect("watch")
        .collect();
    assert!(events.is_empty(), "{events:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[test]
fn a_field_selector_watch_sees_only_the_named_object() {
    let (_data, _control, client) = start();
    let revision = expect(&client.get(CONFIG_MAPS), 200)["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_owned();
    for name in ["x", "y"] {
        create(&client, CONFIG_MAPS, &config_map(name, json!({})));
        expect(
            &client.patch(
                &format!("{CONFIG_MAPS}/{name}"),
                "application/merge-patch+json",
                r#"{"data":{"key":"changed"}}"#,
            ),
            200,
        );
        expect(&client.delete(&format!("{CONFIG_MAPS}/{name}")), 200);
    }
    let events = watch_events(
        &client,
        &format!(
            "{CONFIG_MAPS}?watch=true&fieldSelector=metadata.name%3Dx&resourceVersion={revision}&timeoutSeconds=2"
        ),
        10,
    );
    assert_eq!(
        events,
        [
            pair("ADDED", "x"),
            pair("MODIFIED", "x"),
            pair("DELETED", "x")
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 13. Pods: binding and graceful deletion

fn binding(pod: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
}

#[test]
fn a_binding_assigns_the_pod_once() {
    let (_data, _control, client) = start();
    create(&client, PODS, &pod("web"));
    expect(
        &client.post(&format!("{PODS}/web/binding"), &binding("web", "node-1")),
        201,
    );
    assert_eq!(
        expect(&client.get(&format!("{PODS}/web")), 200)["spec"]["nodeName"],
        "node-1"
    );
    expect_failure(
        &client.post(&format!("{PODS}/web/binding"), &binding("web", "node-2")),
        409,
        "Conflict",
    );
    assert_eq!(
        expect(&client.get(&format!("{PODS}/web")), 200)["spec"]["nodeName"],
        "node-1"
    );
}

#[test]
fn deleting_an_unbound_pod_is_immediate() {
    let (_data, _control, client) = start();
    create(&client, PODS, &pod("web"));
    expect(&client.delete(&format!("{PODS}/web")), 200);
    expect_failure(&client.get(&format!("{PODS}/web")), 404, "NotFound");
}

#[test]
fn deleting_a_bound_pod_is_graceful_until_a_delete_with_grace_zero() {
    let (_data, _control, client) = start();
    create(&client, PODS, &pod("web"));
    expect(
        &client.post(&format!("{PODS}/web/binding"), &binding("web", "node-1")),
        201,
    );
    let answered = expect(&client.delete(&format!("{PODS}/web")), 200);
    assert!(
        answered["metadata"]["deletionTimestamp"].is_string(),
        "{answered}"
    );
    assert_eq!(answered["metadata"]["deletionGracePeriodSeconds"], 30);
    let stored = expect(&client.get(&format!("{PODS}/web")), 200);
    assert!(
        stored["metadata"]["deletionTimestamp"].is_string(),
        "{stored}"
    );
    assert_eq!(stored["metadata"]["deletionGracePeriodSeconds"], 30);
    expect(
        &client.delete(&format!("{PODS}/web?gracePeriodSeconds=0")),
        200,
    );
    expect_failure(&client.get(&format!("{PODS}/web")), 404, "NotFound");
}

// ---------------------------------------------------------------------------------------------
// 14. Finalizers and garbage collection

#[test]
fn an_object_with_a_finalizer_waits_for_it_to_be_removed() {
    let (_data, _control, client) = start();
    let mut body = config_map("held", json!({}));
    body["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create(&client, CONFIG_MAPS, &body);
    let answered = expect(&client.delete(&format!("{CONFIG_MAPS}/held")), 200);
    assert!(
        answered["metadata"]["deletionTimestamp"].is_string(),
        "{answered}"
    );
    let stored = expect(&client.get(&format!("{CONFIG_MAPS}/held")), 200);
    assert!(
        stored["metadata"]["deletionTimestamp"].is_string(),
        "{stored}"
    );
    assert_eq!(
        stored["metadata"]["finalizers"],
        json!(["example.com/hold"])
    );
    expect(
        &client.patch(
            &format!("{CONFIG_MAPS}/held"),
            "application/merge-patch+json",
            r#"{"metadata":{"finalizers":null}}"#,
        ),
        200,
    );
    expect_failure(&client.get(&format!("{CONFIG_MAPS}/held")), 404, "NotFound");
}

#[test]
fn orphan_propagation_keeps_the_dependent_without_its_owner_reference() {
    let (_data, _control, client) = start();
    let owner = create(&client, DEPLOYMENTS, &deployment("web"));
    create(&client, REPLICA_SETS, &replica_set("web-1", &owner));
    expect(
        &client.delete(&format!("{DEPLOYMENTS}/web?propagationPolicy=Orphan")),
        200,
    );
    eventually(10, "the orphaning delete to finish", || {
        client.get(&format!("{DEPLOYMENTS}/web")).status == 404
    });
    let dependent = expect(&client.get(&format!("{REPLICA_SETS}/web-1")), 200);
    assert!(
        dependent["metadata"].get("ownerReferences").is_none(),
        "{dependent}"
    );
}

#[test]
fn foreground_propagation_deletes_the_dependent_before_the_owner() {
    let (_data, _control, client) = start();
    let owner = create(&client, DEPLOYMENTS, &deployment("web"));
    let mut dependent = replica_set("web-1", &owner);
    // The dependent's own finalizer holds it (and therefore its owner) until removed.
    dependent["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create(&client, REPLICA_SETS, &dependent);
    let answered = expect(
        &client.delete(&format!("{DEPLOYMENTS}/web?propagationPolicy=Foreground")),
        200,
    );
    assert!(
        answered["metadata"]["deletionTimestamp"].is_string(),
        "{answered}"
    );
    assert!(
        answered["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|finalizers| finalizers.contains(&json!("foregroundDeletion"))),
        "{answered}"
    );
    eventually(10, "the dependent to be marked for deletion", || {
        client.get(&format!("{REPLICA_SETS}/web-1")).json()["metadata"]["deletionTimestamp"]
            .is_string()
    });
    std::thread::sleep(Duration::from_millis(300));
    let waiting = expect(&client.get(&format!("{DEPLOYMENTS}/web")), 200);
    assert!(
        waiting["metadata"]["deletionTimestamp"].is_string(),
        "{waiting}"
    );
    expect(
        &client.patch(
            &format!("{REPLICA_SETS}/web-1"),
            "application/json-patch+json",
            r#"[{"op":"remove","path":"/metadata/finalizers/0"}]"#,
        ),
        200,
    );
    eventually(15, "the dependent and then the owner to go", || {
        client.get(&format!("{REPLICA_SETS}/web-1")).status == 404
            && client.get(&format!("{DEPLOYMENTS}/web")).status == 404
    });
}

#[test]
fn delete_collection_with_a_label_selector_deletes_only_the_matching_objects() {
    let (_data, _control, client) = start();
    labelled_config_maps(&client);
    let deleted = expect(
        &client.delete(&format!("{CONFIG_MAPS}?labelSelector=app%3Dweb")),
        200,
    );
    let mut deleted_names = names(&deleted);
    deleted_names.sort();
    assert_eq!(deleted_names, ["a", "b"]);
    assert_eq!(names(&expect(&client.get(CONFIG_MAPS), 200)), ["c", "d"]);
}

// ---------------------------------------------------------------------------------------------
// 15. Namespace deletion

#[test]
fn a_deleted_namespace_terminates_refuses_new_content_and_goes_once_empty() {
    let (_data, _control, client) = start();
    create(
        &client,
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    );
    let mut held = config_map("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create(&client, "/api/v1/namespaces/team/configmaps", &held);
    create(
        &client,
        "/api/v1/namespaces/team/configmaps",
        &config_map("plain", json!({})),
    );

    let answered = expect(&client.delete("/api/v1/namespaces/team"), 200);
    assert_eq!(answered["status"]["phase"], "Terminating", "{answered}");
    let stored = expect(&client.get("/api/v1/namespaces/team"), 200);
    assert_eq!(stored["status"]["phase"], "Terminating", "{stored}");
    let status = expect_failure(
        &client.post(
            "/api/v1/namespaces/team/configmaps",
            &config_map("late", json!({})),
        ),
        403,
        "Forbidden",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("because it is being terminated"),
        "{status}"
    );
    eventually(10, "the namespace's plain content to go", || {
        client
            .get("/api/v1/namespaces/team/configmaps/plain")
            .status
            == 404
    });
    assert_eq!(client.get("/api/v1/namespaces/team").status, 200);
    expect(
        &client.patch(
            "/api/v1/namespaces/team/configmaps/held",
            "application/merge-patch+json",
            r#"{"metadata":{"finalizers":null}}"#,
        ),
        200,
    );
    eventually(20, "the namespace to go", || {
        client.get("/api/v1/namespaces/team").status == 404
    });
}

#[test]
fn creating_in_a_terminating_namespace_is_forbidden_with_upstreams_message() {
    let (_data, _control, client) = start();
    create(
        &client,
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    );
    let mut held = config_map("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create(&client, "/api/v1/namespaces/team/configmaps", &held);
    expect(&client.delete("/api/v1/namespaces/team"), 200);
    let status = expect_failure(
        &client.post(
            "/api/v1/namespaces/team/configmaps",
            &config_map("late", json!({})),
        ),
        403,
        "Forbidden",
    );
    assert_eq!(
        status["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace team because it is being terminated"
    );
}

#[test]
fn the_immortal_namespaces_may_not_be_deleted() {
    let (_data, _control, client) = start();
    for namespace in ["default", "kube-system", "kube-public"] {
        let status = expect_failure(
            &client.delete(&format!("/api/v1/namespaces/{namespace}")),
            403,
            "Forbidden",
        );
        assert_eq!(
            status["message"],
            format!("namespaces \"{namespace}\" is forbidden: this namespace may not be deleted")
        );
        let stored = expect(&client.get(&format!("/api/v1/namespaces/{namespace}")), 200);
        assert_eq!(stored["status"]["phase"], "Active", "{stored}");
    }
}

// ---------------------------------------------------------------------------------------------
// 16. Metrics and OpenAPI

#[test]
fn metrics_count_requests() {
    let (_data, _control, client) = start();
    expect(&client.get(CONFIG_MAPS), 200);
    let response = client.get("/metrics");
    assert_eq!(response.status, 200);
    let body = text(&response);
    assert!(
        body.lines()
            .any(|line| line.starts_with("apiserver_request_total{")
                && line.contains("code=\"200\"")),
        "{body}"
    );
}

#[test]
fn the_openapi_v3_index_names_apps_v1() {
    let (_data, _control, client) = start();
    let index = expect(&client.get("/openapi/v3"), 200);
    let apps = &index["paths"]["apis/apps/v1"];
    assert!(
        apps["serverRelativeURL"]
            .as_str()
            .is_some_and(|url| url.starts_with("/openapi/v3/apis/apps/v1")),
        "{index}"
    );
}
