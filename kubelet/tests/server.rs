//! skiff-kubelet's `:10250` server end to end: `kubectl logs` through skiff-control (which calls
//! the kubelet of the pod's node with its kubelet-client certificate), and the server's own
//! endpoints and authentication, on the shared node harness (`common::Node`).

mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use common::{Node, running_and_ready};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use skiff_tests::control::kubectl_path;

/// How long `kubectl logs -f` gets to show a line.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(20);

/// An HTTP answer of the kubelet server.
struct Answer {
    status: u16,
    body: String,
}

/// `GET https://127.0.0.1:<port><path>` on the node's kubelet, trusting its self-signed serving
/// certificate (`<root-dir>/pki/kubelet.crt`), with skiff-control's kubelet-client certificate
/// when `authenticated`.
fn kubelet_get(node: &Node, path: &str, authenticated: bool) -> Answer {
    let serving = std::fs::read(node.directory.path().join("root/pki/kubelet.crt"))
        .expect("the kubelet's self-signed certificate");
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&serving) {
        roots
            .add(certificate.expect("a PEM certificate"))
            .expect("a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = if authenticated {
        let pki = node.control.data_dir.join("pki");
        let certificate = read_pem(&pki.join("apiserver-kubelet-client.crt"));
        let key = read_pem(&pki.join("apiserver-kubelet-client.key"));
        let chain = CertificateDer::pem_slice_iter(&certificate)
            .collect::<Result<Vec<_>, _>>()
            .expect("the client certificate");
        let key = PrivateKeyDer::from_pem_slice(&key).expect("the client key");
        builder
            .with_client_auth_cert(chain, key)
            .expect("a client certificate")
    } else {
        builder.with_no_client_auth()
    };
    let name = ServerName::try_from("127.0.0.1").expect("a server name");
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS connection");
    let socket = TcpStream::connect(("127.0.0.1", node.kubelet_port)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let mut stream = rustls::StreamOwned::new(connection, socket);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    // A peer closing without close_notify ends the read with an error after the data.
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {raw:?}"));
    Answer {
        status,
        body: body.to_owned(),
    }
}

fn read_pem(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// `kubectl logs <arguments>` with the admin kubeconfig: (success, stdout, stderr).
fn kubectl_logs(node: &Node, arguments: &[&str]) -> (bool, String, String) {
    let mut all = vec!["logs"];
    all.extend_from_slice(arguments);
    let output = node.control.kubectl(&all);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts `kubectl logs -f <pod>`; its stdout lines arrive on the receiver.
fn follow_logs(node: &Node, pod: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(node.control.kubeconfig())
        .args(["logs", "-f", pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl logs -f");
    let stdout = child.stdout.take().expect("kubectl's stdout");
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, receiver)
}

/// Starts pod `name` running `command` and waits until it runs and is ready.
fn run_pod(node: &Node, name: &str, command: &str, restart_policy: &str) {
    node.apply_pod(name, &node.busybox, command, restart_policy);
    node.wait_pod(name, "the pod to run", running_and_ready);
}

/// Whether a line starts with an RFC 3339 time with nine fraction digits and a space.
fn has_timestamp_prefix(line: &str) -> bool {
    let Some((time, _)) = line.split_once(' ') else {
        return false;
    };
    let fraction = time.get(19..).unwrap_or_default();
    time.len() >= 30
        && time
            .get(..19)
            .is_some_and(|head| head.as_bytes()[10] == b'T')
        && fraction.starts_with('.')
        && fraction[1..10].bytes().all(|byte| byte.is_ascii_digit())
        && (fraction.ends_with('Z') || fraction.len() == 16)
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_shows_tails_and_timestamps_container_output() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("sk-srv-logs").await;
    run_pod(
        &node,
        "printer",
        "echo line-1; echo line-2; echo line-3; sleep 3600",
        "Always",
    );

    let all = node
        .kubelet
        .wait_for("kubectl logs to show three lines", FOLLOW_TIMEOUT, || {
            let (success, stdout, _) = kubectl_logs(&node, &["printer"]);
            (success && stdout.lines().count() == 3).then_some(stdout)
        });
    assert_eq!(all, "line-1\nline-2\nline-3\n");

    let (success, tail, stderr) = kubectl_logs(&node, &["printer", "--tail=1"]);
    assert!(success, "kubectl logs --tail=1: {stderr}");
    assert_eq!(tail, "line-3\n");

    let (success, limited, stderr) = kubectl_logs(&node, &["printer", "--limit-bytes=9"]);
    assert!(success, "kubectl logs --limit-bytes=9: {stderr}");
    assert_eq!(limited, "line-1\nli");

    let (success, stamped, stderr) = kubectl_logs(&node, &["printer", "--timestamps"]);
    assert!(success, "kubectl logs --timestamps: {stderr}");
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 3, "{stamped}");
    for (index, line) in lines.iter().enumerate() {
        assert!(has_timestamp_prefix(line), "no RFC 3339 time in {line:?}");
        assert!(line.ends_with(&format!(" line-{}", index + 1)), "{line:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_of_an_unknown_container_names_it() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("sk-srv-nocont").await;
    run_pod(&node, "single", "echo hello; sleep 3600", "Always");

    let (success, _, stderr) = kubectl_logs(&node, &["single", "-c", "nope"]);
    assert!(!success);
    // kubectl checks the name against the pod spec itself, in the API server's words.
    assert!(
        stderr.contains("container nope is not valid for pod single"),
        "{stderr}"
    );
    let through_api = node
        .control
        .client()
        .get("/api/v1/namespaces/default/pods/single/log?container=nope");
    assert_eq!(through_api.status, 400);
    assert_eq!(
        through_api.json()["message"],
        "container nope is not valid for pod single"
    );

    let direct = kubelet_get(&node, "/containerLogs/default/single/nope", true);
    assert_eq!(direct.status, 404, "{}", direct.body);
    assert_eq!(
        direct.body.trim(),
        "container \"nope\" not found in pod \"single\""
    );
    let missing_pod = kubelet_get(&node, "/containerLogs/default/ghost/main", true);
    assert_eq!(missing_pod.status, 404, "{}", missing_pod.body);
    assert_eq!(missing_pod.body.trim(), "pod \"ghost\" does not exist");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_follow_streams_lines_printed_later() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("sk-srv-follow").await;
    run_pod(
        &node,
        "ticker",
        "while true; do echo tick-$(date +%s); sleep 1; done",
        "Always",
    );

    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let (mut kubectl, lines) = follow_logs(&node, "ticker");
    let deadline = Instant::now() + FOLLOW_TIMEOUT;
    let later = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "kubectl logs -f showed no line printed after it started; kubelet log:\n{}",
                node.kubelet.log()
            )
        });
        let printed: u64 = line
            .strip_prefix("tick-")
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        if printed > started + 1 {
            break printed;
        }
    };
    assert!(later > started);
    let _ = kubectl.kill();
    let _ = kubectl.wait();

    // skiff-control drops its kubelet connection with kubectl's, so the kubelet stops reading.
    node.kubelet.wait_for(
        "the kubelet to stop following after kubectl went away",
        FOLLOW_TIMEOUT,
        || {
            node.kubelet
                .log()
                .contains("stopped following a container log: the client went away")
                .then_some(())
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_follow_ends_when_the_container_exits() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("sk-srv-fend").await;
    node.apply_pod(
        "short",
        &node.busybox,
        "echo first; sleep 4; echo last",
        "Never",
    );
    node.wait_pod("short", "the container to start", |pod| {
        pod["status"]["containerStatuses"][0]["containerID"].is_string()
    });

    let (mut kubectl, lines) = follow_logs(&node, "short");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = kubectl.kill();
                panic!(
                    "kubectl logs -f did not end after the container exited (saw {seen:?}); kubelet log:\n{}",
                    node.kubelet.log()
                );
            }
        }
    }
    let status = kubectl.wait().expect("kubectl ends");
    assert!(status.success(), "kubectl logs -f failed: {status}");
    assert_eq!(seen, ["first", "last"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_previous_shows_the_last_terminated_instance() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("sk-srv-prev").await;
    // Each instance prints its own start time, then fails and is restarted.
    node.apply_pod(
        "crasher",
        &node.busybox,
        "echo started-$(date +%s%N); sleep 1; exit 1",
        "Always",
    );
    let pod = node.wait_pod("crasher", "a restart after a failure", |pod| {
        let status = &pod["status"]["containerStatuses"][0];
        status["restartCount"].as_u64().unwrap_or_default() >= 1
            && status["lastState"]["terminated"]["containerID"].is_string()
    });
    let restarts = pod["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or_default();

    let (success, previous, stderr) = kubectl_logs(&node, &["crasher", "--previous"]);
    assert!(success, "kubectl logs --previous: {stderr}");
    assert!(
        previous.starts_with("started-") && previous.lines().count() == 1,
        "{previous:?}"
    );
    // It is one instance's whole output, as the runtime wrote it into that instance's file
    // (`<restart count>.log`; another restart may have happened meanwhile).
    let uid = pod["metadata"]["uid"].as_str().expect("a uid");
    let directory = node
        .containerd
        .pod_logs_dir()
        .join(format!("default_crasher_{uid}/main"));
    let files: Vec<String> = (0..=restarts + 1)
        .filter_map(|count| std::fs::read_to_string(directory.join(format!("{count}.log"))).ok())
        .collect();
    assert!(
        files
            .iter()
            .any(|written| written.trim_end().ends_with(previous.trim_end())),
        "{previous:?} is in none of {files:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubelet_server_requires_a_client_certificate_except_for_healthz() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let node = Node::start("sk-srv-auth").await;
    run_pod(&node, "listed", "sleep 3600", "Always");

    let health = kubelet_get(&node, "/healthz", false);
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    for path in ["/pods", "/metrics", "/containerLogs/default/listed/main"] {
        let anonymous = kubelet_get(&node, path, false);
        assert_eq!(anonymous.status, 401, "{path}: {}", anonymous.body);
    }

    let pods = kubelet_get(&node, "/pods", true);
    assert_eq!(pods.status, 200, "{}", pods.body);
    let list: serde_json::Value = serde_json::from_str(&pods.body).expect("a PodList");
    assert_eq!(list["kind"], "PodList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pod| pod["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains(&"listed"), "{names:?}");

    let metrics = node
        .kubelet
        .wait_for("kubelet_running_pods 1", FOLLOW_TIMEOUT, || {
            let metrics = kubelet_get(&node, "/metrics", true);
            (metrics.status == 200 && metrics.body.contains("kubelet_running_pods 1\n"))
                .then_some(metrics.body)
        });
    assert!(
        metrics.contains("kubelet_running_containers{container_state=\"running\"} 1\n"),
        "{metrics}"
    );
}
