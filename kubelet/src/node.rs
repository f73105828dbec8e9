//! The node side of the kubelet: the Node object, its status, its Lease and its pod CIDR.
//!
//! Owns registering this machine as a `Node` (or adopting an existing one of that name), keeping
//! `status` true (patched when it changes every `--node-status-update-frequency`, and
//! unconditionally every `nodeStatusReportFrequency`), renewing the `kube-node-lease/<node>`
//! Lease, handing `spec.podCIDR` to skiff-cni through `--pod-cidr-file`, and marking the node
//! NotReady on a clean stop. Talks to the API only through a kubeconfig (skiff-control or a real
//! kube-apiserver alike).
//!
//! Never touches pods, containers, CRI or the host's network; reads the host only through
//! [`crate::host`]. Pure parts live in [`object`], [`lease`] and [`pod_cidr`]; the loops in
//! [`agent`].
//!
//! `main.rs` composes it as `node::run_node_agent(&config, shutdown).await`.

pub mod agent;
pub mod lease;
pub mod object;
pub mod pod_cidr;

use std::{net::IpAddr, path::PathBuf, time::Duration};

pub use agent::run_node_agent;

/// Upstream's default `--node-status-update-frequency` (`nodeStatusUpdateFrequency`).
pub const DEFAULT_NODE_STATUS_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);

/// Upstream's default `nodeStatusReportFrequency`: status is patched at least this often even
/// when nothing changed.
pub const DEFAULT_NODE_STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(5 * 60);

/// Upstream's default `nodeLeaseDurationSeconds`.
pub const DEFAULT_NODE_LEASE_DURATION_SECONDS: i32 = 40;

/// Upstream's `NodeLeaseRenewIntervalFraction`: the Lease is renewed every 0.25 × its duration.
pub const NODE_LEASE_RENEW_INTERVAL_FRACTION: f64 = 0.25;

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Where skiff-cni reads the node's pod CIDR unless its configuration says otherwise.
pub const DEFAULT_POD_CIDR_FILE: &str = "/run/skiff/podcidr";

/// Everything the node side needs to know, decided by the caller (flags, host defaults).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The kubeconfig the node agent talks to the API with (`--kubeconfig`).
    pub kubeconfig: PathBuf,
    /// The Node's name: `--hostname-override` or the host name, lowercased.
    pub node_name: String,
    /// The node's `InternalIP` (`--node-ip`).
    pub node_ip: IpAddr,
    /// The kubelet's port, published in `status.daemonEndpoints.kubeletEndpoint` (`--port`).
    pub kubelet_port: u16,
    /// The kubelet's state directory; its filesystem is `ephemeral-storage` (`--root-dir`).
    pub root_dir: PathBuf,
    /// The pod CIDR to use when the Node has none (`--pod-cidr`); it is then set on the Node.
    pub pod_cidr: Option<String>,
    /// The file skiff-cni reads the pod CIDR from (`--pod-cidr-file`).
    pub pod_cidr_file: PathBuf,
    /// How often status is computed and patched when changed (`--node-status-update-frequency`).
    pub node_status_update_frequency: Duration,
    /// How often status is patched even when unchanged (`nodeStatusReportFrequency`).
    pub node_status_report_frequency: Duration,
    /// The Lease's `leaseDurationSeconds` (`nodeLeaseDurationSeconds`).
    pub node_lease_duration_seconds: i32,
    /// `nodeInfo.containerRuntimeVersion`, e.g. `containerd://1.6.20`.
    pub container_runtime_version: String,
}

impl NodeConfig {
    /// A configuration with upstream's defaults for everything but the node's identity and the
    /// kubeconfig.
    pub fn new(kubeconfig: PathBuf, node_name: String, node_ip: IpAddr) -> NodeConfig {
        NodeConfig {
            kubeconfig,
            node_name,
            node_ip,
            kubelet_port: 10250,
            root_dir: PathBuf::from("/var/lib/kubelet"),
            pod_cidr: None,
            pod_cidr_file: PathBuf::from(DEFAULT_POD_CIDR_FILE),
            node_status_update_frequency: DEFAULT_NODE_STATUS_UPDATE_FREQUENCY,
            node_status_report_frequency: DEFAULT_NODE_STATUS_REPORT_FREQUENCY,
            node_lease_duration_seconds: DEFAULT_NODE_LEASE_DURATION_SECONDS,
            container_runtime_version: crate::host::UNKNOWN_CONTAINER_RUNTIME_VERSION.to_owned(),
        }
    }

    /// How often the Lease is renewed: `leaseDurationSeconds` × 0.25 (10 s by default).
    pub fn lease_renew_interval(&self) -> Duration {
        lease::renew_interval(self.node_lease_duration_seconds)
    }
}

/// The node side could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No API client could be built from the kubeconfig.
    #[error(transparent)]
    ApiClient(#[from] crate::api_client::ApiClientError),
    /// An API request failed.
    #[error("{action} for node {node}: {source}")]
    Api {
        /// What was being done, e.g. `patching status of Node n1`.
        action: String,
        /// The node.
        node: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// An API exchange did not finish in time.
    #[error("{action} for node {node}: no answer within {after:?}")]
    Timeout {
        /// What was being done.
        action: String,
        /// The node.
        node: String,
        /// How long it was given.
        after: Duration,
    },
    /// The host could not be read.
    #[error("reading host facts for node {node}: {source}")]
    Host {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: crate::host::HostError,
    },
    /// The pod CIDR file could not be written.
    #[error("writing the pod CIDR {pod_cidr} of node {node} to {path}: {source}")]
    PodCidrFile {
        /// The node.
        node: String,
        /// The pod CIDR.
        pod_cidr: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
