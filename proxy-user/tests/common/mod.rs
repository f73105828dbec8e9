//! Shared fixture of the traffic tests: a node namespace with a client pod and backend pods
//! running name servers, a Service + EndpointSlice YAML file, and skiff-proxy running inside the
//! node (killed on drop). Each test builds its own, under unique names.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fixture"
)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use skiff_tests::{
    bpffs::PinDirectory, echo::EchoServer, netns::NetNs, process::LoggedProcess, topology::Node,
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 100, 10);
pub const SERVICE_PORT: u16 = 80;
pub const TARGET_PORT: u16 = 8080;
pub const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
pub const NODE_NAME: &str = "node-a";

pub struct Backend {
    pub name: String,
    pub address: Ipv4Addr,
    pub ready: bool,
    pub terminating: bool,
    pub node_name: String,
}

impl Backend {
    pub fn ready(name: &str, address: Ipv4Addr) -> Backend {
        Backend {
            name: name.to_owned(),
            address,
            ready: true,
            terminating: false,
            node_name: NODE_NAME.to_owned(),
        }
    }
}

/// Extra lines for the Service spec (e.g. `sessionAffinity: ClientIP`).
#[derive(Default, Clone)]
pub struct ServiceSpec {
    pub extra: String,
}

/// The Service (TCP and UDP port 80 → named target ports) and its EndpointSlice.
pub fn manifest(spec: &ServiceSpec, backends: &[&Backend]) -> String {
    let mut endpoints = String::new();
    for backend in backends {
        endpoints.push_str(&format!(
            "  - addresses: [\"{}\"]\n    nodeName: {}\n    conditions: {{ready: {}, serving: {}, terminating: {}}}\n    targetRef: {{kind: Pod, namespace: default, name: {}}}\n",
            backend.address,
            backend.node_name,
            backend.ready,
            backend.ready || backend.terminating,
            backend.terminating,
            backend.name
        ));
    }
    let endpoints = if endpoints.is_empty() {
        "endpoints: []\n".to_owned()
    } else {
        format!("endpoints:\n{endpoints}")
    };
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: ClusterIP
  clusterIP: {VIP}
  clusterIPs: [\"{VIP}\"]
{extra}  ports:
  - {{name: tcp, protocol: TCP, port: {SERVICE_PORT}, targetPort: serve-tcp}}
  - {{name: udp, protocol: UDP, port: {SERVICE_PORT}, targetPort: serve-udp}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports:
- {{name: tcp, protocol: TCP, port: {TARGET_PORT}}}
- {{name: udp, protocol: UDP, port: {TARGET_PORT}}}
{endpoints}",
        extra = spec.extra
    )
}

/// A node with a client pod and named backend pods, each backend serving its name.
pub struct Cluster {
    pub node: Node,
    pub pins: PinDirectory,
    pub manifest: PathBuf,
    _directory: tempfile::TempDir,
    _servers: Vec<EchoServer>,
    proxy: LoggedProcess,
    proxy_args: Vec<String>,
}

impl Cluster {
    /// Builds the topology; backends are pods `backends[i]` (all on this node).
    pub fn new(label: &str, backends: &[Backend], spec: &ServiceSpec) -> Cluster {
        Cluster::with_proxy_args(label, backends, spec, &[])
    }

    /// As [`Cluster::new`], with extra `skiff-proxy run` arguments.
    pub fn with_proxy_args(
        label: &str,
        backends: &[Backend],
        spec: &ServiceSpec,
        proxy_args: &[&str],
    ) -> Cluster {
        let mut node = Node::new(&format!("{label}-node"), "skp").expect("node namespace");
        node.add_pod("client", CLIENT_ADDRESS).expect("client pod");
        let mut servers = Vec::new();
        for backend in backends {
            let pod = node
                .add_pod(&backend.name, backend.address)
                .expect("backend pod");
            servers.push(
                EchoServer::start(&pod.netns, &backend.name, backend.address, TARGET_PORT)
                    .expect("name server"),
            );
        }
        let directory = tempfile::tempdir().expect("temporary directory");
        let manifest_path = directory.path().join("services.yaml");
        let all: Vec<&Backend> = backends.iter().collect();
        std::fs::write(&manifest_path, manifest(spec, &all)).expect("write manifest");
        let pins = PinDirectory::new(label).expect("bpffs directory");
        let proxy_log = directory.path().join("skiff-proxy.log");
        let cluster = Cluster {
            node,
            pins,
            manifest: manifest_path,
            _directory: directory,
            _servers: servers,
            proxy: LoggedProcess::new(proxy_log),
            proxy_args: proxy_args.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        cluster.start_proxy();
        cluster
    }

    pub fn client(&self) -> &NetNs {
        &self.node.pod("client").expect("client pod").netns
    }

    /// Starts skiff-proxy inside the node (after a previous one was killed, it adopts the pins).
    pub fn start_proxy(&self) {
        let mut command = self.node.netns.command(env!("CARGO_BIN_EXE_skiff-proxy"));
        command
            .args(["run", "--node-name", NODE_NAME, "--interface-prefix", "skp"])
            .arg("--source")
            .arg(format!("file:{}", self.manifest.display()))
            .arg("--bpffs")
            .arg(self.pins.path())
            .args(["--conntrack-max", "65536"])
            .arg("--metrics-addr")
            .arg(self.metrics_address().to_string())
            .args(&self.proxy_args);
        self.proxy.start(command);
    }

    /// SIGKILLs skiff-proxy (no cleanup of its own can run).
    pub fn kill_proxy(&self) {
        self.proxy.kill();
    }

    /// Where skiff-proxy serves metrics (inside the node namespace).
    pub fn metrics_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10249))
    }

    /// `GET /metrics` from skiff-proxy.
    pub fn scrape(&self) -> String {
        let address = self.metrics_address();
        self.node
            .netns
            .run(|| skiff_tests::http::get(address, "/metrics"))
            .expect("enter node")
            .expect("scrape /metrics")
            .1
    }

    /// Waits until the proxy log contains `text`.
    pub fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.proxy_log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "skiff-proxy never logged {text:?}:\n{}",
                self.proxy_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn proxy_log(&self) -> String {
        self.proxy.log()
    }

    /// Rewrites the manifest (as an operator or controller would).
    pub fn publish(&self, spec: &ServiceSpec, backends: &[&Backend]) {
        let staging = self.manifest.with_extension("new");
        std::fs::write(&staging, manifest(spec, backends)).expect("write manifest");
        std::fs::rename(&staging, &self.manifest).expect("replace manifest");
    }

    /// Waits until the VIP answers TCP from the client.
    pub fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.tcp_name().is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the ClusterIP never answered; skiff-proxy log:\n{}",
                self.proxy_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One new TCP connection from the client to the VIP: the backend's name.
    pub fn tcp_name(&self) -> std::io::Result<String> {
        let stream = self.tcp_connect()?;
        ask(&stream)
    }

    pub fn tcp_connect(&self) -> std::io::Result<TcpStream> {
        self.client()
            .run(|| {
                TcpStream::connect_timeout(
                    &SocketAddr::from((VIP, SERVICE_PORT)),
                    Duration::from_secs(2),
                )
            })
            .map_err(std::io::Error::other)?
    }

    /// A new UDP socket in the client pod.
    pub fn udp_socket(&self) -> UdpSocket {
        let socket = self
            .client()
            .run(|| UdpSocket::bind((CLIENT_ADDRESS, 0)))
            .expect("enter client")
            .expect("bind UDP");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        socket
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_proxy();
    }
}

/// Sends a line on a connection and reads the name that answers.
pub fn ask(stream: &TcpStream) -> std::io::Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut writer = stream;
    writer.write_all(b"who?\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without a name",
        ));
    }
    Ok(line.trim().to_owned())
}

/// Sends a datagram from `socket` to the VIP; returns (name, the reply's source address).
pub fn udp_ask(socket: &UdpSocket) -> std::io::Result<(String, SocketAddr)> {
    socket.send_to(b"who?", (VIP, SERVICE_PORT))?;
    let mut buffer = [0u8; 256];
    let (length, from) = socket.recv_from(&mut buffer)?;
    Ok((
        String::from_utf8_lossy(&buffer[..length]).into_owned(),
        from,
    ))
}
