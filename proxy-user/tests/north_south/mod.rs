//! The north-south test topology: an external client, an L2 segment, and two nodes each running
//! skiff-proxy on its uplink, with backend pods on both nodes. Each test builds its own under
//! unique names; everything disappears with its namespaces.
//!
//! ```text
//!   client 192.0.2.100, .101 ──┐                ┌── node-a 192.0.2.1  (pods 10.244.1.0/24: a0, a1)
//!   (203.0.113.0/24 via .1)    ├── lan: br0 ────┤
//!                              │                └── node-b 192.0.2.2  (pods 10.244.2.0/24: b0, b1)
//! ```
//! Each node routes the other's pod range via the other's uplink address, so a backend on the
//! other node is reached across the segment (SNAT mode: its replies return to the ingress node).

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fixture"
)]

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::programs::xdp::XdpMode;
use skiff_proxy::programs::{LoadOptions, LoadedObject, ProgramName, ProgramObject};
use skiff_tests::{
    bpffs::PinDirectory,
    echo::{EchoServer, PEER_QUESTION},
    http,
    netns::NetNs,
    process::LoggedProcess,
    topology::Node,
    veth::{self, Offload},
};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// A second client address (outside the source ranges of the `ranged` Service).
pub const OTHER_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
pub const NODE_ADDRESSES: [Ipv4Addr; 2] =
    [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
pub const NODE_NAMES: [&str; 2] = ["node-a", "node-b"];
pub const TARGET_PORT: u16 = 8080;
/// `web`: NodePort, externalTrafficPolicy Cluster, endpoints on both nodes.
pub const WEB_NODE_PORT: u16 = 30_080;
/// `local`: LoadBalancer, externalTrafficPolicy Local, its only endpoint on node-a.
pub const LOCAL_NODE_PORT: u16 = 30_081;
pub const LOCAL_HEALTH_CHECK_PORT: u16 = 32_000;
/// `ranged`: LoadBalancer with loadBalancerSourceRanges [CLIENT/32].
pub const RANGED_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
pub const RANGED_PORT: u16 = 80;
/// `direct`: NodePort in DSR mode (`skiff.dev/lb-mode: dsr`), endpoints only on node-b.
pub const DIRECT_NODE_PORT: u16 = 30_083;
/// The backends: (name, node index, address).
pub const BACKENDS: [(&str, usize, Ipv4Addr); 4] = [
    ("a0", 0, Ipv4Addr::new(10, 244, 1, 10)),
    ("a1", 0, Ipv4Addr::new(10, 244, 1, 11)),
    ("b0", 1, Ipv4Addr::new(10, 244, 2, 10)),
    ("b1", 1, Ipv4Addr::new(10, 244, 2, 11)),
];

/// Services and EndpointSlices of the topology (the same file feeds both nodes).
pub fn manifest() -> String {
    manifest_with_terminating(&[])
}

/// [`manifest`] with the pods named in `terminating` shutting down (ready false, serving and
/// terminating true, as while a pod runs its grace period).
pub fn manifest_with_terminating(terminating: &[&str]) -> String {
    let endpoint = |name: &str, node: usize, address: Ipv4Addr| {
        let conditions = if terminating.contains(&name) {
            "{ready: false, serving: true, terminating: true}"
        } else {
            "{ready: true}"
        };
        format!(
            "  - addresses: [\"{address}\"]\n    nodeName: {}\n    conditions: {conditions}\n    targetRef: {{kind: Pod, namespace: default, name: {name}}}\n",
            NODE_NAMES[node]
        )
    };
    let all: String = BACKENDS
        .iter()
        .map(|(name, node, address)| endpoint(name, *node, *address))
        .collect();
    let (a0_name, a0_node, a0_address) = BACKENDS[0];
    let only_a0 = endpoint(a0_name, a0_node, a0_address);
    let only_node_b: String = BACKENDS
        .iter()
        .filter(|(_, node, _)| *node == 1)
        .map(|(name, node, address)| endpoint(name, *node, *address))
        .collect();
    let slice = |service: &str, endpoints: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {service}-x1, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}
addressType: IPv4
ports:
- {{name: tcp, protocol: TCP, port: {TARGET_PORT}}}
- {{name: udp, protocol: UDP, port: {TARGET_PORT}}}
endpoints:
{endpoints}"
        )
    };
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports:
  - {{name: tcp, protocol: TCP, port: 80, targetPort: {TARGET_PORT}, nodePort: {WEB_NODE_PORT}}}
  - {{name: udp, protocol: UDP, port: 80, targetPort: {TARGET_PORT}, nodePort: {WEB_NODE_PORT}}}
---
{web_slice}---
apiVersion: v1
kind: Service
metadata: {{name: local, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  externalTrafficPolicy: Local
  healthCheckNodePort: {LOCAL_HEALTH_CHECK_PORT}
  ports:
  - {{name: tcp, protocol: TCP, port: 80, targetPort: {TARGET_PORT}, nodePort: {LOCAL_NODE_PORT}}}
  - {{name: udp, protocol: UDP, port: 80, targetPort: {TARGET_PORT}, nodePort: {LOCAL_NODE_PORT}}}
---
{local_slice}---
apiVersion: v1
kind: Service
metadata: {{name: ranged, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.12
  loadBalancerSourceRanges: [\"{CLIENT}/32\"]
  ports:
  - {{name: tcp, protocol: TCP, port: {RANGED_PORT}, targetPort: {TARGET_PORT}, nodePort: 30082}}
  - {{name: udp, protocol: UDP, port: {RANGED_PORT}, targetPort: {TARGET_PORT}, nodePort: 30082}}
status:
  loadBalancer:
    ingress:
    - ip: {RANGED_IP}
---
{ranged_slice}---
apiVersion: v1
kind: Service
metadata:
  name: direct
  namespace: default
  annotations: {{skiff.dev/lb-mode: dsr}}
spec:
  type: NodePort
  clusterIP: 10.96.0.13
  ports:
  - {{name: tcp, protocol: TCP, port: 80, targetPort: {TARGET_PORT}, nodePort: {DIRECT_NODE_PORT}}}
  - {{name: udp, protocol: UDP, port: 80, targetPort: {TARGET_PORT}, nodePort: {DIRECT_NODE_PORT}}}
---
{direct_slice}",
        web_slice = slice("web", &all),
        local_slice = slice("local", &only_a0),
        ranged_slice = slice("ranged", &all),
        direct_slice = slice("direct", &only_node_b),
    )
}

/// One node: its namespace and pods, and its skiff-proxy.
pub struct ClusterNode {
    pub node: Node,
    pub pins: PinDirectory,
    /// skiff-proxy, its stderr in the topology's directory.
    pub proxy: LoggedProcess,
}

/// The whole topology.
pub struct NorthSouth {
    pub client: NetNs,
    pub lan: NetNs,
    _lan_xdp: (LoadedObject, PinDirectory),
    pub nodes: Vec<ClusterNode>,
    pub manifest: PathBuf,
    pub xdp_mode: &'static str,
    /// `--maglev-table-size` of both nodes.
    pub maglev_table_size: u16,
    _directory: tempfile::TempDir,
    _servers: Vec<EchoServer>,
}

impl NorthSouth {
    /// Builds the topology and starts skiff-proxy on both nodes with `--xdp-mode xdp_mode`.
    pub fn new(label: &str, xdp_mode: &'static str) -> NorthSouth {
        // A small prime keeps the tables quick to write; the default is covered separately.
        NorthSouth::with_maglev_table_size(label, xdp_mode, 251)
    }

    /// As [`NorthSouth::new`] with `--maglev-table-size maglev_table_size`.
    pub fn with_maglev_table_size(
        label: &str,
        xdp_mode: &'static str,
        maglev_table_size: u16,
    ) -> NorthSouth {
        let lan = NetNs::new(&format!("{label}-lan")).expect("lan namespace");
        lan.disable_ipv6().expect("disable IPv6");
        lan.ip(&["link", "add", "br0", "type", "bridge"])
            .expect("bridge");
        lan.ip(&["link", "set", "br0", "up"]).expect("bridge up");

        let client = NetNs::new(&format!("{label}-client")).expect("client namespace");
        client.disable_ipv6().expect("disable IPv6");
        veth::create(&client, "eth0", &lan, "client").expect("client veth");
        // The client is another machine: its frames arrive with complete checksums.
        veth::set_offload(&client, "eth0", Offload::TransmitChecksum, false)
            .expect("client checksums");
        lan.ip(&["link", "set", "client", "master", "br0"])
            .expect("enslave");
        for address in [CLIENT, OTHER_CLIENT] {
            client
                .ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"])
                .expect("client address");
        }
        client
            .ip(&["route", "add", "203.0.113.0/24", "via", "192.0.2.1"])
            .expect("load-balancer route");

        let directory = tempfile::tempdir().expect("temporary directory");
        let manifest_path = directory.path().join("services.yaml");
        std::fs::write(&manifest_path, manifest()).expect("write manifest");

        let mut nodes = Vec::new();
        let mut servers = Vec::new();
        for (index, name) in NODE_NAMES.iter().enumerate() {
            let mut node = Node::new(&format!("{label}-{name}"), "skp").expect("node namespace");
            let lan_side = format!("up-{index}");
            veth::create(&node.netns, "eth0", &lan, &lan_side).expect("uplink veth");
            lan.ip(&["link", "set", &lan_side, "master", "br0"])
                .expect("enslave");
            node.netns
                .ip(&[
                    "addr",
                    "add",
                    &format!("{}/24", NODE_ADDRESSES[index]),
                    "dev",
                    "eth0",
                ])
                .expect("node address");
            let other = 1 - index;
            node.netns
                .ip(&[
                    "route",
                    "add",
                    &format!("10.244.{}.0/24", other + 1),
                    "via",
                    &NODE_ADDRESSES[other].to_string(),
                ])
                .expect("route to the other node's pods");
            for (pod, pod_node, address) in BACKENDS {
                if pod_node == index {
                    let pod_ns = node.add_pod(pod, address).expect("backend pod");
                    // XDP cannot tell a partial checksum (a veth passes the local stack's
                    // CHECKSUM_PARTIAL through) from a complete one; a pod's frames reach the
                    // other node's XDP complete, as through a NIC.
                    veth::set_offload(&pod_ns.netns, "eth0", Offload::TransmitChecksum, false)
                        .expect("pod checksums");
                    servers.push(
                        EchoServer::start(&pod_ns.netns, pod, address, TARGET_PORT)
                            .expect("name server"),
                    );
                }
            }
            let pins = PinDirectory::new(&format!("{label}-{name}")).expect("bpffs directory");
            let log = directory.path().join(format!("skiff-proxy-{name}.log"));
            nodes.push(ClusterNode {
                node,
                pins,
                proxy: LoggedProcess::new(log),
            });
        }
        // A veth delivers XDP_TX/XDP_REDIRECT frames only to a peer that runs XDP itself (as a
        // switch port's NIC would): give the segment's ends of the uplinks a program that
        // passes everything (the uplink object with empty maps of its own).
        let lan_pins = PinDirectory::new(&format!("{label}-lan")).expect("bpffs directory");
        let lan_xdp = lan
            .run(|| {
                let mut object = LoadedObject::load(
                    ProgramObject::XdpUplink,
                    &LoadOptions::new(lan_pins.path()),
                )
                .expect("load an XDP program for the segment");
                for index in 0..2 {
                    object
                        .xdp_mut(ProgramName::XdpUplink)
                        .expect("xdp program")
                        .attach(&format!("up-{index}"), XdpMode::Driver)
                        .expect("attach XDP on the segment's port");
                }
                object
            })
            .expect("enter lan");
        let topology = NorthSouth {
            client,
            lan,
            _lan_xdp: (lan_xdp, lan_pins),
            nodes,
            manifest: manifest_path,
            xdp_mode,
            maglev_table_size,
            _directory: directory,
            _servers: servers,
        };
        for index in 0..2 {
            topology.start_proxy(index);
        }
        for index in 0..2 {
            topology.wait_for_log(index, "dataplane synchronised");
            // The uplink's and both pods' programs (the pods' after the first sync).
            topology.wait_for_log_count(index, "programs attached", 3);
        }
        topology
    }

    /// Starts skiff-proxy on node `index` (after a kill, it adopts the pinned maps and links).
    pub fn start_proxy(&self, index: usize) {
        let node = &self.nodes[index];
        let mut command = node.node.netns.command(env!("CARGO_BIN_EXE_skiff-proxy"));
        command
            .args(["run", "--node-name", NODE_NAMES[index]])
            .args(["--interface-prefix", "skp", "--uplink", "eth0"])
            .args(["--xdp-mode", self.xdp_mode])
            .arg("--source")
            .arg(format!("file:{}", self.manifest.display()))
            .arg("--bpffs")
            .arg(node.pins.path())
            .args(["--conntrack-max", "65536"])
            .arg("--maglev-table-size")
            .arg(self.maglev_table_size.to_string())
            .args(["--metrics-addr", "127.0.0.1:10249"])
            .env("RUST_LOG", "info");
        node.proxy.start(command);
    }

    /// Replaces the Services and EndpointSlices both nodes read (as a controller would).
    pub fn publish(&self, manifest: &str) {
        let staging = self.manifest.with_extension("new");
        std::fs::write(&staging, manifest).expect("write manifest");
        std::fs::rename(&staging, &self.manifest).expect("replace manifest");
    }

    /// SIGKILLs skiff-proxy on node `index`.
    pub fn kill_proxy(&self, index: usize) {
        self.nodes[index].proxy.kill();
    }

    pub fn log(&self, index: usize) -> String {
        self.nodes[index].proxy.log()
    }

    /// Both nodes' logs, for failure messages.
    pub fn logs(&self) -> String {
        (0..2)
            .map(|index| format!("--- {} ---\n{}", NODE_NAMES[index], self.log(index)))
            .collect()
    }

    /// Waits until node `index`'s skiff-proxy logged `text`.
    pub fn wait_for_log(&self, index: usize, text: &str) {
        self.wait_for_log_count(index, text, 1);
    }

    /// Waits until node `index`'s skiff-proxy logged `text` at least `count` times.
    pub fn wait_for_log_count(&self, index: usize, text: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log(index).matches(text).count() < count {
            assert!(
                Instant::now() < deadline,
                "skiff-proxy on {} never logged {text:?}:\n{}",
                NODE_NAMES[index],
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One TCP connection from `source` to `destination`: asks `question`, returns the answer.
    pub fn tcp_ask(
        &self,
        source: Ipv4Addr,
        destination: SocketAddrV4,
        question: &str,
        timeout: Duration,
    ) -> std::io::Result<String> {
        let question = question.to_owned();
        self.client
            .run(move || -> std::io::Result<String> {
                let stream = connect_from(source, destination, timeout)?;
                ask(&stream, &question)
            })
            .map_err(std::io::Error::other)?
    }

    /// Waits until `destination` answers TCP from the client.
    pub fn wait_until_serving(&self, destination: SocketAddrV4) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self
                .tcp_ask(CLIENT, destination, "who?", Duration::from_millis(500))
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{destination} never answered; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `count` new TCP connections from the client to `destination`: how many each backend
    /// answered, and the errors.
    pub fn tcp_spread(
        &self,
        destination: SocketAddrV4,
        count: usize,
    ) -> (BTreeMap<String, usize>, Vec<String>) {
        self.client
            .run(move || {
                let mut names: BTreeMap<String, usize> = BTreeMap::new();
                let mut errors = Vec::new();
                for _ in 0..count {
                    match connect_from(CLIENT, destination, Duration::from_secs(2))
                        .and_then(|stream| ask(&stream, "who?"))
                    {
                        Ok(name) => *names.entry(name).or_default() += 1,
                        Err(error) => errors.push(error.to_string()),
                    }
                }
                (names, errors)
            })
            .expect("enter client")
    }

    /// A UDP socket in the client bound to `source:port` (port 0: any).
    pub fn udp_socket(&self, source: Ipv4Addr, port: u16) -> UdpSocket {
        let socket = self
            .client
            .run(move || UdpSocket::bind((source, port)))
            .expect("enter client")
            .expect("bind UDP");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        socket
    }

    /// `GET /` on a node's health-check port from the client: (status code, body).
    pub fn health_check(&self, node: usize, port: u16) -> (u16, String) {
        let destination = SocketAddr::from((NODE_ADDRESSES[node], port));
        self.client
            .run(move || http::get(destination, "/"))
            .expect("enter client")
            .expect("health check answered")
    }

    /// A `skiff-proxy status` of node `index`.
    pub fn status(&self, index: usize) -> String {
        let node = &self.nodes[index];
        let output = node
            .node
            .netns
            .command(env!("CARGO_BIN_EXE_skiff-proxy"))
            .arg("status")
            .arg("--bpffs")
            .arg(node.pins.path())
            .output()
            .expect("run skiff-proxy status");
        assert!(
            output.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A counter of node `index`'s metrics: the value of the line starting with `series`.
    pub fn metric(&self, index: usize, series: &str) -> u64 {
        self.scrape(index)
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `GET /metrics` from node `index`'s skiff-proxy.
    pub fn scrape(&self, index: usize) -> String {
        self.nodes[index]
            .node
            .netns
            .run(|| http::get(SocketAddr::from(([127, 0, 0, 1], 10249)), "/metrics"))
            .expect("enter node")
            .expect("scrape /metrics")
            .1
    }
}

impl Drop for NorthSouth {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill_proxy(index);
        }
    }
}

/// A TCP connection from `source` (an address of the calling thread's namespace).
pub fn connect_from(
    source: Ipv4Addr,
    destination: SocketAddrV4,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd as _;
    // std cannot bind before connecting; do it with the socket calls directly.
    // SAFETY: plain socket calls on a descriptor this function owns until it hands it to
    // `TcpStream`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(source.octets()),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            (&address as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // Connect with a timeout: non-blocking connect, then wait for writability.
        stream.set_nonblocking(true)?;
        let target = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: destination.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(destination.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let result = libc::connect(
            fd,
            (&target as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(error);
            }
            let mut descriptor = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            let ready = libc::poll(&mut descriptor, 1, timeout.as_millis() as libc::c_int);
            if ready == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {destination} timed out"),
                ));
            }
            if let Some(error) = stream.take_error()? {
                return Err(error);
            }
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    }
}

/// Sends `question` as a line and reads the answer line.
pub fn ask(stream: &TcpStream, question: &str) -> std::io::Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut writer = stream;
    writer.write_all(format!("{question}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without an answer",
        ));
    }
    Ok(line.trim().to_owned())
}

/// Sends `question` from `socket` to `destination`: (answer, the reply's source address).
pub fn udp_ask(
    socket: &UdpSocket,
    destination: SocketAddrV4,
    question: &str,
) -> std::io::Result<(String, SocketAddr)> {
    socket.send_to(question.as_bytes(), destination)?;
    let mut buffer = [0u8; 256];
    let (length, from) = socket.recv_from(&mut buffer)?;
    Ok((
        String::from_utf8_lossy(&buffer[..length]).into_owned(),
        from,
    ))
}

/// The question that makes a backend answer with the client address it sees.
pub const PEER: &str = PEER_QUESTION;
