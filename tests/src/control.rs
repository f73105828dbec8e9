//! A skiff-control process for tests of any package, and a small blocking HTTPS client for it.
//!
//! Owns the server process (on a free loopback port, killed on drop, restartable, SIGKILL-able),
//! kubectl with the server's admin kubeconfig, and a minimal HTTP/1.1 client over rustls (bearer
//! token + the cluster CA) that also reads watch streams line by line. The server's data directory
//! is the caller's (usually a `tempfile::TempDir`): this module writes nothing else, listens on
//! nothing but 127.0.0.1, and never talks to a cluster it did not start.
//!
//! The binary is `skiff_tests::workspace_binary("skiff-control")`: build it first with
//! `cargo build --bins --workspace` (`cargo xtask test` does).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::{ClientConnection, StreamOwned};
use rustls_pki_types::pem::PemObject as _;
use serde_json::Value;

/// The kubectl v1.35 that `cargo xtask setup` installs: `<workspace>/.tools/bin/kubectl`.
pub fn kubectl_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/kubectl")
}

/// A skiff-control process on a free loopback port, killed on drop.
pub struct ControlPlane {
    child: Option<Child>,
    /// The HTTPS port on 127.0.0.1.
    pub port: u16,
    /// The server's `--data-dir` (store, PKI, admin kubeconfig and token).
    pub data_dir: PathBuf,
    arguments: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl ControlPlane {
    /// Starts skiff-control on `data_dir` and waits (up to 30 s) until `/readyz` answers 200.
    pub fn start(data_dir: &Path) -> ControlPlane {
        ControlPlane::start_with(data_dir, &[])
    }

    /// Starts with extra command-line arguments.
    pub fn start_with(data_dir: &Path, arguments: &[&str]) -> ControlPlane {
        let mut control = ControlPlane {
            child: None,
            port: free_port(),
            data_dir: data_dir.to_owned(),
            arguments: arguments
                .iter()
                .map(|argument| (*argument).to_owned())
                .collect(),
        };
        control.launch();
        control
    }

    fn launch(&mut self) {
        // The port came from binding port 0 and closing it; another socket may take it before
        // skiff-control binds it. A server that exits at once is started again on a new port.
        for _ in 0..5 {
            if self.launch_once() {
                return;
            }
            self.port = free_port();
        }
        panic!("skiff-control exited at start five times (ports taken?)");
    }

    /// Starts the server and waits until it is ready; `false` when it exited during start-up.
    fn launch_once(&mut self) -> bool {
        let child = Command::new(crate::workspace_binary("skiff-control"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &self.port.to_string(),
            ])
            .args(&self.arguments)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start skiff-control");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(self.data_dir.join("admin.kubeconfig").exists() && self.ready()) {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            assert!(Instant::now() < deadline, "skiff-control did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    fn ready(&self) -> bool {
        self.data_dir.join("admin.token").exists()
            && self.data_dir.join("pki/ca.crt").exists()
            && self
                .client()
                .request("GET", "/readyz", None, None)
                .is_ok_and(|response| response.status == 200)
    }

    /// Kills the server with SIGKILL (no chance to flush anything).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The admin kubeconfig skiff-control wrote at first start.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// Runs kubectl with the admin kubeconfig.
    pub fn kubectl(&self, arguments: &[&str]) -> Output {
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(arguments)
            .output()
            .expect("run kubectl")
    }

    /// The admin bearer token (empty before the server wrote it).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The cluster CA certificate, PEM (empty before the server wrote it).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.data_dir.join("pki/ca.crt")).unwrap_or_default()
    }

    /// A blocking API client authenticated with the admin token.
    pub fn client(&self) -> Client {
        Client::new(self.port, &self.ca_pem(), &self.token())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command's stdout followed by its stderr, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A response: status, headers (lowercase names) and the whole body.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Header names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The whole body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "response is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A response whose body has not been read: status, headers and the connection.
type Head = (u16, Vec<(String, String)>, BufReader<Tls>);

/// A minimal HTTP/1.1 client over rustls: one connection per request.
#[derive(Clone)]
pub struct Client {
    port: u16,
    config: Arc<rustls::ClientConfig>,
    token: String,
}

impl Client {
    /// A client for `https://localhost:<port>` trusting `ca_pem`, sending `token` as bearer.
    pub fn new(port: u16, ca_pem: &[u8], token: &str) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem).flatten() {
            let _ = roots.add(certificate);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client {
            port,
            config: Arc::new(config),
            token: token.to_owned(),
        }
    }

    fn connect(&self) -> std::io::Result<Tls> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let name = rustls_pki_types::ServerName::try_from("localhost")
            .map_err(std::io::Error::other)?
            .to_owned();
        let connection =
            ClientConnection::new(Arc::clone(&self.config), name).map_err(std::io::Error::other)?;
        Ok(StreamOwned::new(connection, stream))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> std::io::Result<Head> {
        let mut stream = self.connect()?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.token
        );
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                content_type.unwrap_or("application/json"),
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        if let Some(body) = body {
            stream.write_all(body)?;
        }
        stream.flush()?;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_lowercase(), value.trim().to_owned()));
            }
        }
        Ok((status, headers, reader))
    }

    /// One request; the body is read completely.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        let (status, headers, reader) = self.send(method, path, content_type, body)?;
        let chunked = headers
            .iter()
            .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
        let mut body = Vec::new();
        if chunked {
            Chunked::new(reader).read_to_end(&mut body)?;
        } else {
            let mut reader = reader;
            match reader.read_to_end(&mut body) {
                Ok(_) => {}
                // rustls reports a peer that closes without close_notify; the body is complete.
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(error) => return Err(error),
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// GET `path`; panics when the exchange fails (not on error statuses).
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None, None).expect("GET")
    }

    /// POST `body` as JSON; panics when the exchange fails.
    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, None, Some(body.to_string().as_bytes()))
            .expect("POST")
    }

    /// PUT `body` as JSON; panics when the exchange fails.
    pub fn put(&self, path: &str, body: &Value) -> Response {
        self.request("PUT", path, None, Some(body.to_string().as_bytes()))
            .expect("PUT")
    }

    /// PATCH with that content type; panics when the exchange fails.
    pub fn patch(&self, path: &str, content_type: &str, body: &str) -> Response {
        self.request("PATCH", path, Some(content_type), Some(body.as_bytes()))
            .expect("PATCH")
    }

    /// DELETE `path`; panics when the exchange fails.
    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, None, None).expect("DELETE")
    }

    /// Opens a watch; iterate the events.
    pub fn watch(&self, path: &str) -> std::io::Result<WatchStream> {
        let (status, _, reader) = self.send("GET", path, None, None)?;
        if status != 200 {
            return Err(std::io::Error::other(format!("watch answered {status}")));
        }
        Ok(WatchStream {
            lines: BufReader::new(Chunked::new(reader)),
        })
    }
}

/// Watch events, one JSON object per line.
pub struct WatchStream {
    lines: BufReader<Chunked>,
}

impl Iterator for WatchStream {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.lines.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => serde_json::from_str(&line).ok(),
        }
    }
}

/// A `Transfer-Encoding: chunked` body decoder.
pub struct Chunked {
    inner: BufReader<Tls>,
    remaining: usize,
    done: bool,
}

impl Chunked {
    fn new(inner: BufReader<Tls>) -> Chunked {
        Chunked {
            inner,
            remaining: 0,
            done: false,
        }
    }
}

impl Read for Chunked {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut size_line = String::new();
            if self.inner.read_line(&mut size_line)? == 0 {
                self.done = true;
                return Ok(0);
            }
            if size_line.trim().is_empty() {
                size_line.clear();
                if self.inner.read_line(&mut size_line)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
            }
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.remaining = size;
        }
        let wanted = buffer.len().min(self.remaining);
        let read = self.inner.read(&mut buffer[..wanted])?;
        if read == 0 {
            self.done = true;
        }
        self.remaining -= read;
        Ok(read)
    }
}
