//! skiff-control as the real kubectl (v1.35, from `cargo xtask setup`) sees it: TLS with the
//! generated CA, the admin kubeconfig (client certificate), bearer tokens, 401 for anonymous
//! requests except health, and the PKI kept across restarts.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use skiff_tests::require_privileges;

fn kubectl_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/kubectl")
}

/// A skiff-control process on a free loopback port, killed on drop.
struct ControlPlane {
    child: Child,
    port: u16,
    data_dir: PathBuf,
}

impl ControlPlane {
    fn start(data_dir: &Path) -> ControlPlane {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff-control"))
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start skiff-control");
        let control = ControlPlane {
            child,
            port,
            data_dir: data_dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(control.data_dir.join("admin.kubeconfig").exists()
            && control.anonymous("/healthz").0 == 200)
        {
            assert!(Instant::now() < deadline, "skiff-control did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        control
    }

    fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn kubectl(&self, arguments: &[&str]) -> Output {
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(self.data_dir.join("admin.kubeconfig"))
            .args(arguments)
            .output()
            .expect("run kubectl")
    }

    /// kubectl with only the CA (no credentials) and optionally a bearer token.
    fn kubectl_with(&self, token: Option<&str>, arguments: &[&str]) -> Output {
        let mut command = Command::new(kubectl_path());
        command
            .args(["--kubeconfig", "/dev/null", "--server", &self.server()])
            .arg("--certificate-authority")
            .arg(self.data_dir.join("pki/ca.crt"));
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        command.args(arguments).output().expect("run kubectl")
    }

    /// A request without credentials (kubectl would prompt for a password): status and body.
    fn anonymous(&self, path: &str) -> (u16, String) {
        const GET: &str = "import ssl, sys, urllib.request, urllib.error
context = ssl.create_default_context(cafile=sys.argv[1])
try:
    response = urllib.request.urlopen(sys.argv[2], context=context, timeout=5)
    print(response.status); print(response.read().decode())
except urllib.error.HTTPError as error:
    print(error.code); print(error.read().decode())
except Exception as error:
    print(0); print(error)";
        let output = Command::new("python3")
            .args(["-c", GET])
            .arg(self.data_dir.join("pki/ca.crt"))
            .arg(format!("{}{path}", self.server()))
            .output()
            .expect("run python3");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (code, body) = stdout.split_once('\n').unwrap_or((stdout.as_str(), ""));
        (code.trim().parse().unwrap_or(0), body.trim().to_owned())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn kubectl_version_works_with_the_admin_kubeconfig_and_reports_1_35_skiff() {
    require_privileges!(kubectl_path().to_str().expect("UTF-8 path"), "python3");
    let data_dir = tempfile::tempdir().expect("data dir");
    let control = ControlPlane::start(data_dir.path());
    let output = control.kubectl(&["version", "-o", "json"]);
    assert!(output.status.success(), "{}", text(&output));
    let version: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(
        server.starts_with("v1.35.") && server.ends_with("+skiff"),
        "{version}"
    );
    assert_eq!(version["serverVersion"]["minor"], "35");
}

#[test]
fn bearer_token_authenticates_and_anonymous_requests_get_401_except_health() {
    require_privileges!(kubectl_path().to_str().expect("UTF-8 path"), "python3");
    let data_dir = tempfile::tempdir().expect("data dir");
    let control = ControlPlane::start(data_dir.path());
    let token = std::fs::read_to_string(data_dir.path().join("admin.token")).expect("admin token");
    let output = control.kubectl_with(Some(token.trim()), &["get", "--raw", "/version"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("+skiff"));

    let output = control.kubectl_with(Some("not-the-token"), &["get", "--raw", "/version"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("Unauthorized"), "{}", text(&output));
    let (code, body) = control.anonymous("/version");
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status body");
    assert_eq!(
        (
            status["kind"].as_str(),
            status["reason"].as_str(),
            status["code"].as_u64()
        ),
        (Some("Status"), Some("Unauthorized"), Some(401))
    );

    for endpoint in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(
            control.anonymous(endpoint),
            (200, "ok".to_owned()),
            "{endpoint}"
        );
    }
    let output = control.kubectl_with(Some(token.trim()), &["get", "--raw", "/no/such/path"]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("NotFound"),
        "a NotFound Status: {}",
        text(&output)
    );
}

#[test]
fn the_pki_and_admin_kubeconfig_survive_a_restart() {
    require_privileges!(kubectl_path().to_str().expect("UTF-8 path"), "python3");
    let data_dir = tempfile::tempdir().expect("data dir");
    let kubeconfig = {
        let control = ControlPlane::start(data_dir.path());
        assert!(control.kubectl(&["version"]).status.success());
        std::fs::read_to_string(data_dir.path().join("admin.kubeconfig")).expect("kubeconfig")
    };
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data_dir.path().join("pki/ca.key"))
            .expect("ca.key")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the CA key is private");
    // Same data directory, another port: the old CA still signs the admin certificate.
    let control = ControlPlane::start(data_dir.path());
    let current =
        std::fs::read_to_string(data_dir.path().join("admin.kubeconfig")).expect("kubeconfig");
    assert_eq!(current, kubeconfig, "the admin kubeconfig is written once");
    assert_eq!(control.anonymous("/readyz").0, 200);
    // The admin credentials from the first start still work on the restarted server.
    let output = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(data_dir.path().join("admin.kubeconfig"))
        .args(["--server", &control.server(), "version", "-o", "json"])
        .output()
        .expect("run kubectl");
    assert!(output.status.success(), "{}", text(&output));
}
