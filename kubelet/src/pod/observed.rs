//! What the runtime holds for one pod, as the pure core reads it.
//!
//! Owns the conversion of CRI `PodSandboxStatus` and `ContainerStatus` messages into plain
//! values (upstream `kubecontainer.PodStatus`), the lookups the kubelet makes on them ("latest
//! container named X", "latest sandbox") and the probe results the prober reports per container
//! instance. Never calls the runtime and never decides anything.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::labels::{
    CONTAINER_HASH_ANNOTATION, CONTAINER_NAME_LABEL, CONTAINER_RESTART_COUNT_ANNOTATION,
    CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION, CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION,
};
use super::{is_host_network, pod_containers};

/// A sandbox's state (CRI `PodSandboxState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    /// `SANDBOX_READY`: the sandbox and its network are up.
    Ready,
    /// `SANDBOX_NOTREADY`: stopped or dead.
    NotReady,
}

/// The network namespace a sandbox was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// Its own network namespace (`NamespaceMode::Pod`).
    Pod,
    /// The node's network namespace (`hostNetwork`).
    Node,
}

/// One sandbox of the pod (current or from an earlier attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSandbox {
    /// CRI sandbox id.
    pub id: String,
    /// `metadata.attempt`: how many sandboxes this pod had before this one.
    pub attempt: u32,
    /// Ready or not.
    pub state: SandboxState,
    /// Creation time in nanoseconds since the epoch (orders the sandboxes).
    pub created_at: i64,
    /// Primary IP plus additional IPs, as the runtime reports them; empty when unknown.
    pub ips: Vec<String>,
    /// Whether the runtime reported network status at all (upstream `sandbox.Network != nil`).
    pub has_network_status: bool,
    /// The network namespace mode it was created with.
    pub network: NetworkMode,
}

impl ObservedSandbox {
    /// Reads a CRI `PodSandboxStatus`.
    #[must_use]
    pub fn from_cri(status: &cri::PodSandboxStatus) -> Self {
        let network_namespace = status
            .linux
            .as_ref()
            .and_then(|linux| linux.namespaces.as_ref())
            .and_then(|namespaces| namespaces.options.as_ref())
            .map(|options| options.network);
        let ips = status
            .network
            .as_ref()
            .map(|network| {
                std::iter::once(network.ip.clone())
                    .chain(network.additional_ips.iter().map(|ip| ip.ip.clone()))
                    .filter(|ip| !ip.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            id: status.id.clone(),
            attempt: status.metadata.as_ref().map_or(0, |m| m.attempt),
            state: if status.state == cri::PodSandboxState::SandboxReady as i32 {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            created_at: status.created_at,
            ips,
            has_network_status: status.network.is_some(),
            network: if network_namespace == Some(cri::NamespaceMode::Node as i32) {
                NetworkMode::Node
            } else {
                NetworkMode::Pod
            },
        }
    }
}

/// A container's state (CRI `ContainerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created but not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// The runtime does not know.
    Unknown,
}

impl ContainerState {
    /// Upstream `kubecontainer.State` spelling (`created`, `running`, `exited`, `unknown`),
    /// used in kill messages.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Unknown => "unknown",
        }
    }
}

/// One container instance of the pod (current or an earlier restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// CRI container id.
    pub id: String,
    /// CRI id of the sandbox it runs in (from `ListContainers`).
    pub sandbox_id: String,
    /// Name in the pod spec.
    pub name: String,
    /// State.
    pub state: ContainerState,
    /// Creation time in nanoseconds since the epoch (orders instances of one name).
    pub created_at: i64,
    /// Start time, when it started.
    pub started_at: Option<Timestamp>,
    /// Finish time, when it finished.
    pub finished_at: Option<Timestamp>,
    /// Exit code (meaningful once exited).
    pub exit_code: i32,
    /// Runtime's reason (`Completed`, `Error`, `OOMKilled`, ...).
    pub reason: String,
    /// Termination message: the runtime's message, or what the executor read from the
    /// termination message file or log tail (upstream `getTerminationMessage`).
    pub message: String,
    /// Image as the runtime reports it (`ContainerStatus.image.image`).
    pub image: String,
    /// Digested image reference (`image_ref`), reported as `imageID`.
    pub image_ref: String,
    /// Restart count from the `io.kubernetes.container.restartCount` annotation.
    pub restart_count: i32,
    /// Spec hash from the `io.kubernetes.container.hash` annotation.
    pub hash: Option<String>,
    /// `terminationMessagePath` from the annotations, for the executor.
    pub termination_message_path: String,
    /// `terminationMessagePolicy` from the annotations, for the executor.
    pub termination_message_policy: String,
}

impl ObservedContainer {
    /// Reads a CRI `ContainerStatus` of a container in sandbox `sandbox_id` (the
    /// `pod_sandbox_id` of its `ListContainers` entry; `ContainerStatus` does not carry it).
    #[must_use]
    pub fn from_cri(sandbox_id: &str, status: &cri::ContainerStatus) -> Self {
        let annotation = |key: &str| status.annotations.get(key).cloned().unwrap_or_default();
        let name = status
            .metadata
            .as_ref()
            .map(|metadata| metadata.name.clone())
            .filter(|name| !name.is_empty())
            .or_else(|| status.labels.get(CONTAINER_NAME_LABEL).cloned())
            .unwrap_or_default();
        let state = match cri::ContainerState::try_from(status.state) {
            Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
            Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
            Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
            _ => ContainerState::Unknown,
        };
        Self {
            id: status.id.clone(),
            sandbox_id: sandbox_id.to_owned(),
            name,
            state,
            created_at: status.created_at,
            started_at: timestamp_from_nanos(status.started_at),
            finished_at: timestamp_from_nanos(status.finished_at),
            exit_code: status.exit_code,
            reason: status.reason.clone(),
            message: status.message.clone(),
            image: status
                .image
                .as_ref()
                .map(|image| image.image.clone())
                .unwrap_or_default(),
            image_ref: status.image_ref.clone(),
            restart_count: annotation(CONTAINER_RESTART_COUNT_ANNOTATION)
                .parse()
                .unwrap_or(0),
            hash: status.annotations.get(CONTAINER_HASH_ANNOTATION).cloned(),
            termination_message_path: annotation(CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION),
            termination_message_policy: annotation(CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION),
        }
    }
}

/// A probe's latest result for one container instance (upstream `proberesults.Result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// The probe passed.
    Success,
    /// The probe failed `failureThreshold` times.
    Failure,
}

/// The prober's latest results for one container instance; `None` means the probe has not
/// produced a result yet (or the container has no such probe).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerProbeResults {
    /// Liveness.
    pub liveness: Option<ProbeResult>,
    /// Readiness.
    pub readiness: Option<ProbeResult>,
    /// Startup.
    pub startup: Option<ProbeResult>,
}

/// Everything the runtime and the prober report about one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedPod {
    /// Every sandbox of the pod, in any order.
    pub sandboxes: Vec<ObservedSandbox>,
    /// Every container instance of the pod (all sandboxes, all restarts), in any order.
    pub containers: Vec<ObservedContainer>,
    /// Probe results by container id (results belong to one instance, as upstream keys them).
    pub probes: BTreeMap<String, ContainerProbeResults>,
}

impl ObservedPod {
    /// Sandboxes newest first (upstream sorts by creation time).
    #[must_use]
    pub fn sandboxes_newest_first(&self) -> Vec<&ObservedSandbox> {
        let mut sandboxes: Vec<_> = self.sandboxes.iter().collect();
        sandboxes.sort_by_key(|sandbox| std::cmp::Reverse(sandbox.created_at));
        sandboxes
    }

    /// The newest sandbox.
    #[must_use]
    pub fn latest_sandbox(&self) -> Option<&ObservedSandbox> {
        self.sandboxes
            .iter()
            .max_by_key(|sandbox| sandbox.created_at)
    }

    /// Container instances newest first (upstream `SortContainerStatusesByCreationTime`,
    /// reversed).
    #[must_use]
    pub fn containers_newest_first(&self) -> Vec<&ObservedContainer> {
        let mut containers: Vec<_> = self.containers.iter().collect();
        containers.sort_by_key(|container| std::cmp::Reverse(container.created_at));
        containers
    }

    /// Upstream `FindContainerStatusByName`: the newest instance named `name`.
    #[must_use]
    pub fn latest_container(&self, name: &str) -> Option<&ObservedContainer> {
        self.containers
            .iter()
            .filter(|container| container.name == name)
            .max_by_key(|container| container.created_at)
    }

    /// The newest exited instance named `name` (upstream `doBackOff`'s lookup).
    #[must_use]
    pub fn latest_exited_container(&self, name: &str) -> Option<&ObservedContainer> {
        self.containers
            .iter()
            .filter(|container| container.name == name && container.state == ContainerState::Exited)
            .max_by_key(|container| container.created_at)
    }

    /// The active sandbox: the newest one, when it is ready (upstream's `activePodSandboxID`).
    #[must_use]
    pub fn active_sandbox(&self) -> Option<&ObservedSandbox> {
        self.latest_sandbox()
            .filter(|sandbox| sandbox.state == SandboxState::Ready)
    }

    /// Upstream `HasAnyActiveRegularContainerStarted`: a regular container of the pod exists
    /// in the active sandbox, so the pod has been initialized.
    #[must_use]
    pub fn has_any_active_regular_container(&self, pod: &Pod) -> bool {
        let Some(active) = self.active_sandbox() else {
            return false;
        };
        self.containers.iter().any(|container| {
            container.sandbox_id == active.id
                && pod_containers(pod).iter().any(|c| c.name == container.name)
        })
    }

    /// Probe results for a container instance (empty when the prober has none).
    #[must_use]
    pub fn probe_results(&self, container_id: &str) -> ContainerProbeResults {
        self.probes.get(container_id).copied().unwrap_or_default()
    }

    /// The pod's IPs as `status.podIPs` reports them: the active sandbox's, ordered like
    /// upstream `sortPodIPs` (one IP of the node's primary family, then one of the other
    /// family); for host-network pods the node's IPs (primary, plus the secondary of the other
    /// family).
    #[must_use]
    pub fn pod_ips(&self, pod: &Pod, host_ips: &[String]) -> Vec<String> {
        let ips = self
            .active_sandbox()
            .map(|sandbox| sort_pod_ips(&sandbox.ips, host_ips))
            .unwrap_or_default();
        if !ips.is_empty() || !is_host_network(pod) {
            return ips;
        }
        sort_pod_ips(host_ips, host_ips)
    }
}

/// Upstream `sortPodIPs`: the first IP of the node's primary family (IPv4 unless the first host
/// IP is IPv6), then the first IP of the other family.
#[must_use]
pub fn sort_pod_ips(pod_ips: &[String], host_ips: &[String]) -> Vec<String> {
    let primary_is_v6 = host_ips
        .first()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_ipv6());
    let family = |ip: &String| ip.parse::<IpAddr>().ok().map(|ip| ip.is_ipv6());
    let primary = pod_ips.iter().find(|ip| family(ip) == Some(primary_is_v6));
    let secondary = pod_ips.iter().find(|ip| family(ip) == Some(!primary_is_v6));
    primary.into_iter().chain(secondary).cloned().collect()
}

/// CRI nanoseconds since the epoch; 0 means "not set".
fn timestamp_from_nanos(nanos: i64) -> Option<Timestamp> {
    if nanos == 0 {
        return None;
    }
    Timestamp::from_nanosecond(i128::from(nanos)).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn cri_container_status_reads_restart_count_and_hash_from_annotations() {
        let status = cri::ContainerStatus {
            id: "c1".to_owned(),
            metadata: Some(cri::ContainerMetadata {
                name: "app".to_owned(),
                attempt: 2,
            }),
            state: cri::ContainerState::ContainerExited as i32,
            created_at: 5,
            started_at: 1_700_000_000_000_000_000,
            finished_at: 1_700_000_060_000_000_000,
            exit_code: 137,
            reason: "OOMKilled".to_owned(),
            image: Some(cri::ImageSpec {
                image: "docker.io/library/busybox:1.36".to_owned(),
                ..cri::ImageSpec::default()
            }),
            image_ref: "sha256:abc".to_owned(),
            annotations: HashMap::from([
                (
                    CONTAINER_RESTART_COUNT_ANNOTATION.to_owned(),
                    "2".to_owned(),
                ),
                (CONTAINER_HASH_ANNOTATION.to_owned(), "deadbeef".to_owned()),
            ]),
            ..cri::ContainerStatus::default()
        };
        let observed = ObservedContainer::from_cri("s1", &status);
        assert_eq!(
            (observed.name.as_str(), observed.sandbox_id.as_str()),
            ("app", "s1")
        );
        assert_eq!(observed.state, ContainerState::Exited);
        assert_eq!(observed.restart_count, 2);
        assert_eq!(observed.hash.as_deref(), Some("deadbeef"));
        assert_eq!(observed.reason, "OOMKilled");
        assert_eq!(
            observed.finished_at.map(Timestamp::as_second),
            Some(1_700_000_060)
        );
        assert_eq!(observed.image, "docker.io/library/busybox:1.36");
    }

    #[test]
    fn cri_sandbox_status_reads_ips_and_network_mode() {
        let status = cri::PodSandboxStatus {
            id: "s1".to_owned(),
            metadata: Some(cri::PodSandboxMetadata {
                attempt: 1,
                ..cri::PodSandboxMetadata::default()
            }),
            state: cri::PodSandboxState::SandboxReady as i32,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: "10.0.0.5".to_owned(),
                additional_ips: vec![cri::PodIp {
                    ip: "fd00::5".to_owned(),
                }],
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        ..cri::NamespaceOption::default()
                    }),
                }),
            }),
            ..cri::PodSandboxStatus::default()
        };
        let sandbox = ObservedSandbox::from_cri(&status);
        assert_eq!(sandbox.attempt, 1);
        assert_eq!(sandbox.state, SandboxState::Ready);
        assert_eq!(sandbox.ips, ["10.0.0.5", "fd00::5"]);
        assert_eq!(sandbox.network, NetworkMode::Node);
    }

    #[test]
    fn pod_ips_follow_the_node_ip_family() {
        let ips = [
            "fd00::5".to_owned(),
            "10.0.0.5".to_owned(),
            "10.0.0.6".to_owned(),
        ];
        assert_eq!(
            sort_pod_ips(&ips, &["192.168.1.1".to_owned()]),
            ["10.0.0.5", "fd00::5"]
        );
        assert_eq!(
            sort_pod_ips(&ips, &["fd00::1".to_owned()]),
            ["fd00::5", "10.0.0.5"]
        );
        assert_eq!(sort_pod_ips(&ips[1..], &[]), ["10.0.0.5"]);
    }
}
