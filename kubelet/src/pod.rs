//! The pure core of the pod worker: what a pod should look like in the runtime and what its
//! status is, computed from the pod spec, the resolved inputs and the observed runtime state.
//!
//! Owns every decision the upstream kubelet makes between "a pod is bound to this node" and "the
//! runtime holds exactly that pod": the CRI sandbox and container configs (`sandbox`, `container`,
//! `env`, `image`, `resources`), the reconciliation plan (`plan`, with `backoff` for
//! CrashLoopBackOff) and the API status (`status`). Names, defaults, phases, reasons and messages
//! are copied from the upstream kubelet, because users and controllers match on them.
//!
//! Must not do I/O: no CRI calls, no API calls, no files, no clocks. Times come in as arguments
//! ([`jiff::Timestamp`]); ConfigMaps, Secrets and Services come in through
//! [`env::ObjectResolver`]; runtime state comes in as [`observed::ObservedPod`]. The executor (the
//! I/O side of the pod worker) applies [`plan::PodPlan`]s and patches [`status`] results.
//!
//! A sync round as the executor runs it:
//! 1. observe: CRI `PodSandboxStatus`/`ContainerStatus` → [`observed::ObservedPod`];
//! 2. [`status::generate_pod_status`] → patch the API when [`status::status_changed`];
//! 3. [`plan::plan_pod`] with the generated phase → run [`plan::Action`]s in order; per start
//!    action use [`image::ensure_image`], [`container::generate_container_config`] (and
//!    [`sandbox::generate_pod_sandbox_config`] for a new sandbox);
//! 4. record start failures and back-offs in [`status::WaitingReasons`]; wait for an event or
//!    [`plan::PodPlan::requeue_at`].

pub mod backoff;
pub mod container;
pub mod env;
pub mod expansion;
pub mod image;
pub mod labels;
pub mod observed;
pub mod plan;
pub mod probe;
pub mod quantity;
pub mod resources;
pub mod sandbox;
pub mod static_pod;
pub mod status;
pub mod volume;

use k8s_openapi::api::core::v1::{Container, Pod};
pub use k8s_openapi::jiff;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// `restartPolicy` of a pod (upstream `v1.RestartPolicy`); the API server defaults it to `Always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart every container that exits.
    Always,
    /// Restart containers that exit with a non-zero code.
    OnFailure,
    /// Never restart a container.
    Never,
}

impl RestartPolicy {
    /// The pod's restart policy; unset or unknown values mean `Always` (the API default).
    #[must_use]
    pub fn of(pod: &Pod) -> Self {
        match pod
            .spec
            .as_ref()
            .and_then(|spec| spec.restart_policy.as_deref())
        {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    /// Upstream `shouldRestartOnFailure`: anything but `Never`.
    #[must_use]
    pub fn restarts_on_failure(self) -> bool {
        self != Self::Never
    }
}

/// `status.phase` of a pod (upstream `v1.PodPhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    /// Accepted, but not every container has been started.
    Pending,
    /// Bound, every container created, at least one running or restarting.
    Running,
    /// Every container terminated in success and will not be restarted.
    Succeeded,
    /// Every container terminated, at least one in failure.
    Failed,
    /// The state could not be obtained.
    Unknown,
}

impl PodPhase {
    /// The API spelling (`"Pending"`, `"Running"`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }

    /// Parses the API spelling; `None` for anything else (including an unset phase).
    #[must_use]
    pub fn parse(phase: &str) -> Option<Self> {
        match phase {
            "Pending" => Some(Self::Pending),
            "Running" => Some(Self::Running),
            "Succeeded" => Some(Self::Succeeded),
            "Failed" => Some(Self::Failed),
            "Unknown" => Some(Self::Unknown),
            _ => None,
        }
    }

    /// `Succeeded` or `Failed`: the pod will never run a container again.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Node-wide inputs every pod's configuration depends on: the kubelet's flags and the machine's
/// facts. [`Default`] holds upstream's defaults where upstream has one.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeContext {
    /// The node's IPs, primary first (`status.hostIP(s)`, and the pod IPs of host-network pods).
    pub host_ips: Vec<String>,
    /// Machine memory in bytes (cadvisor `MemoryCapacity`), for Burstable `oom_score_adj`.
    pub memory_capacity_bytes: i64,
    /// Allocatable CPU in millicores: the downward API's `limits.cpu` when a container sets none.
    pub allocatable_cpu_millis: i64,
    /// Allocatable memory in bytes: the downward API's `limits.memory` when a container sets none.
    pub allocatable_memory_bytes: i64,
    /// Allocatable ephemeral storage in bytes, for `limits.ephemeral-storage` defaults.
    pub allocatable_ephemeral_storage_bytes: i64,
    /// Root of the pod log directories (upstream `/var/log/pods`).
    pub pod_logs_root: String,
    /// The kubelet's root directory (upstream `--root-dir`, `/var/lib/kubelet`); localhost
    /// seccomp profiles live in its `seccomp` folder.
    pub root_directory: String,
    /// `--cluster-dns` (upstream default: none).
    pub cluster_dns: Vec<String>,
    /// `--cluster-domain` (upstream default: empty; clusters usually set `cluster.local`).
    pub cluster_domain: String,
    /// The host's resolver configuration (parsed `--resolv-conf`, default `/etc/resolv.conf`);
    /// `None` when `--resolv-conf` is the empty string.
    pub host_dns: Option<sandbox::HostDnsConfig>,
    /// `--cpu-cfs-quota` (upstream default `true`).
    pub cpu_cfs_quota: bool,
    /// `--cpu-cfs-quota-period` in microseconds (upstream default 100 ms).
    pub cpu_cfs_quota_period_us: i64,
    /// Set `memory.oom.group=1` on containers: cgroup v2 unified mode without
    /// `singleProcessOOMKill` (upstream default on cgroup v2).
    pub memory_oom_group: bool,
    /// `--seccomp-default`: `RuntimeDefault` instead of `Unconfined` when a pod names no
    /// profile (upstream default `false`).
    pub seccomp_default: bool,
    /// SELinux is enabled on the host: kubelet-made mounts (hosts file, termination log) ask
    /// the runtime to relabel them (upstream `selinux.GetEnabled()`).
    pub selinux_enabled: bool,
    /// The CRI runtime's name, the scheme of `containerID`s (`containerd://<id>`).
    pub runtime_name: String,
    /// `--cgroup-root`: pods get cgroups `<root>/kubepods[/<qos>]/pod<uid>`
    /// ([`resources::pod_cgroup_parent`]); `None` leaves the cgroup to the runtime's default.
    pub cgroup_root: Option<String>,
}

impl Default for NodeContext {
    fn default() -> Self {
        Self {
            host_ips: Vec::new(),
            memory_capacity_bytes: 0,
            allocatable_cpu_millis: 0,
            allocatable_memory_bytes: 0,
            allocatable_ephemeral_storage_bytes: 0,
            pod_logs_root: "/var/log/pods".to_owned(),
            root_directory: "/var/lib/kubelet".to_owned(),
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            host_dns: Some(sandbox::HostDnsConfig::default()),
            cpu_cfs_quota: true,
            cpu_cfs_quota_period_us: resources::QUOTA_PERIOD_US,
            memory_oom_group: false,
            seccomp_default: false,
            selinux_enabled: false,
            runtime_name: "containerd".to_owned(),
            cgroup_root: None,
        }
    }
}

/// Upstream `format.Pod`: `name_namespace(uid)`, the pod's name in kubelet messages.
#[must_use]
pub fn format_pod(pod: &Pod) -> String {
    format!("{}_{}({})", pod_name(pod), pod_namespace(pod), pod_uid(pod))
}

/// `metadata.name`, empty when unset.
#[must_use]
pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// `metadata.namespace`, empty when unset.
#[must_use]
pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or_default()
}

/// `metadata.uid`, empty when unset.
#[must_use]
pub fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// `spec.containers`, empty when the pod has no spec.
#[must_use]
pub fn pod_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default()
}

/// `spec.initContainers`, empty when unset.
#[must_use]
pub fn pod_init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.init_containers.as_deref())
        .unwrap_or_default()
}

/// `spec.hostNetwork`.
#[must_use]
pub fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.host_network)
        .unwrap_or(false)
}

/// `metadata.deletionTimestamp` is set: the pod is being deleted.
#[must_use]
pub fn is_deleted(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Upstream `IsRestartableInitContainer`: an init container with `restartPolicy: Always`
/// (a native sidecar).
#[must_use]
pub fn is_restartable_init_container(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// Upstream `kubetypes.IsStaticPod`: the pod came from a file or URL source, not the API server
/// (annotation `kubernetes.io/config.source` set to anything but `api`).
#[must_use]
pub fn is_static_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(labels::CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|source| source != "api")
}

/// `ts + seconds`, saturating at the ends of the representable range.
pub(crate) fn add_seconds(ts: Timestamp, seconds: i64) -> Timestamp {
    let added = ts.saturating_add(SignedDuration::from_secs(seconds));
    added.unwrap_or(if seconds < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `ts` truncated to whole seconds, as the API serializes times (upstream `Rfc3339Copy`).
pub(crate) fn truncate_to_seconds(ts: Timestamp) -> Timestamp {
    Timestamp::from_second(ts.as_second()).unwrap_or(ts)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders shared by the pod modules' tests.

    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;

    /// A pod `web` in `default` with uid `uid-1` and the given containers.
    pub fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".to_owned()),
                namespace: Some("default".to_owned()),
                uid: Some("uid-1".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers,
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    /// A container with a name and image.
    pub fn container(name: &str) -> Container {
        Container {
            name: name.to_owned(),
            image: Some("busybox:1.36".to_owned()),
            ..Container::default()
        }
    }

    /// Seconds since the epoch as a timestamp.
    pub fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{container, pod};
    use super::*;

    #[test]
    fn format_pod_matches_upstream_name_namespace_uid() {
        assert_eq!(format_pod(&pod(vec![container("a")])), "web_default(uid-1)");
    }

    #[test]
    fn restart_policy_defaults_to_always() {
        let mut p = pod(vec![container("a")]);
        assert_eq!(RestartPolicy::of(&p), RestartPolicy::Always);
        if let Some(spec) = p.spec.as_mut() {
            spec.restart_policy = Some("OnFailure".to_owned());
        }
        assert_eq!(RestartPolicy::of(&p), RestartPolicy::OnFailure);
        assert!(RestartPolicy::OnFailure.restarts_on_failure());
        assert!(!RestartPolicy::Never.restarts_on_failure());
    }

    #[test]
    fn static_pod_is_detected_from_config_source_annotation() {
        let mut p = pod(vec![container("a")]);
        assert!(!is_static_pod(&p));
        p.metadata.annotations = Some(
            [(
                labels::CONFIG_SOURCE_ANNOTATION.to_owned(),
                "file".to_owned(),
            )]
            .into(),
        );
        assert!(is_static_pod(&p));
        p.metadata.annotations = Some(
            [(
                labels::CONFIG_SOURCE_ANNOTATION.to_owned(),
                "api".to_owned(),
            )]
            .into(),
        );
        assert!(!is_static_pod(&p));
    }
}
