//! Resource requests and limits → QoS class, CFS shares/quota, memory limit and
//! `oom_score_adj`.
//!
//! Owns upstream's `GetPodQOS`/`ComputePodQOS`, `MilliCPUToShares`, `milliCPUToQuota`,
//! `calculateLinuxResources` and `GetContainerOOMScoreAdjust`, with their constants. Never
//! touches cgroups and never reads the machine (memory capacity comes in as an argument).

use std::collections::BTreeMap;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::quantity::{self, ParsedQuantity, QuantityError};
use super::{NodeContext, is_restartable_init_container, pod_containers, pod_init_containers};

/// Upstream `MinShares`.
pub const MIN_SHARES: i64 = 2;
/// Upstream `MaxShares`.
pub const MAX_SHARES: i64 = 262_144;
/// Upstream `SharesPerCPU`.
pub const SHARES_PER_CPU: i64 = 1024;
/// Upstream `MilliCPUToCPU`.
pub const MILLI_CPU_TO_CPU: i64 = 1000;
/// Upstream `QuotaPeriod`: 100 ms in microseconds.
pub const QUOTA_PERIOD_US: i64 = 100_000;
/// Upstream `MinQuotaPeriod`: the smallest quota the kernel accepts, 1 ms.
pub const MIN_QUOTA_PERIOD_US: i64 = 1000;

/// Upstream `guaranteedOOMScoreAdj`.
pub const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// Upstream `besteffortOOMScoreAdj`.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

/// Upstream `scheduling.SystemNodeCritical`: the priority class whose pods are killed last.
pub const SYSTEM_NODE_CRITICAL: &str = "system-node-critical";

/// A pod's quality-of-service class (`status.qosClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Every container limits CPU and memory and requests exactly its limits.
    Guaranteed,
    /// Some request or limit, but not Guaranteed.
    Burstable,
    /// No CPU or memory request or limit anywhere.
    BestEffort,
}

impl QosClass {
    /// The API spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

/// The pod's cgroup under `cgroup_root` with the cgroupfs driver's names, as upstream's pod
/// container manager lays them out: Guaranteed pods directly below `kubepods`, the others below
/// `kubepods/burstable` or `kubepods/besteffort`, each in `pod<uid>`.
#[must_use]
pub fn pod_cgroup_parent(cgroup_root: &str, qos: QosClass, uid: &str) -> String {
    let root = cgroup_root.trim_end_matches('/');
    let qos_directory = match qos {
        QosClass::Guaranteed => "",
        QosClass::Burstable => "/burstable",
        QosClass::BestEffort => "/besteffort",
    };
    format!("{root}/kubepods{qos_directory}/pod{uid}")
}

/// Upstream `GetPodQOS`: `status.qosClass` when already set (it is immutable), else
/// [`compute_pod_qos`].
#[must_use]
pub fn pod_qos(pod: &Pod) -> QosClass {
    match pod
        .status
        .as_ref()
        .and_then(|status| status.qos_class.as_deref())
    {
        Some("Guaranteed") => QosClass::Guaranteed,
        Some("Burstable") => QosClass::Burstable,
        Some("BestEffort") => QosClass::BestEffort,
        _ => compute_pod_qos(pod),
    }
}

/// Upstream `ComputePodQOS` over init and regular containers: only `cpu` and `memory` count,
/// only positive quantities count, Guaranteed needs both limits on every container and the
/// summed requests equal to the summed limits. Unparsable quantities count as absent.
#[must_use]
pub fn compute_pod_qos(pod: &Pod) -> QosClass {
    const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];
    let mut requests: BTreeMap<&str, ParsedQuantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, ParsedQuantity> = BTreeMap::new();
    let mut guaranteed = true;
    for container in pod_containers(pod).iter().chain(pod_init_containers(pod)) {
        let resources = container.resources.as_ref();
        for name in QOS_RESOURCES {
            if let Some(request) =
                quantity::lookup_lenient(resources.and_then(|r| r.requests.as_ref()), name)
                    .filter(|q| q.is_positive())
            {
                let sum = requests.entry(name).or_default();
                *sum = sum.saturating_add(request);
            }
        }
        let mut limits_found = 0;
        for name in QOS_RESOURCES {
            if let Some(limit) =
                quantity::lookup_lenient(resources.and_then(|r| r.limits.as_ref()), name)
                    .filter(|q| q.is_positive())
            {
                limits_found += 1;
                let sum = limits.entry(name).or_default();
                *sum = sum.saturating_add(limit);
            }
        }
        if limits_found != QOS_RESOURCES.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed
        && requests
            .iter()
            .all(|(name, request)| limits.get(name) == Some(request))
        && requests.len() == limits.len()
    {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

/// Upstream `MilliCPUToShares`: `milliCPU × 1024 / 1000`, at least 2 (also for 0), at most
/// 262144.
#[must_use]
pub fn milli_cpu_to_shares(milli_cpu: i64) -> i64 {
    if milli_cpu == 0 {
        return MIN_SHARES;
    }
    (milli_cpu.saturating_mul(SHARES_PER_CPU) / MILLI_CPU_TO_CPU).clamp(MIN_SHARES, MAX_SHARES)
}

/// Upstream `milliCPUToQuota`: `milliCPU × period / 1000`, at least 1 ms; 0 (no quota) for 0.
#[must_use]
pub fn milli_cpu_to_quota(milli_cpu: i64, period_us: i64) -> i64 {
    if milli_cpu == 0 {
        return 0;
    }
    (milli_cpu.saturating_mul(period_us) / MILLI_CPU_TO_CPU).max(MIN_QUOTA_PERIOD_US)
}

/// Upstream `GetContainerOOMScoreAdjust`: -997 for Guaranteed and node-critical pods, 1000 for
/// BestEffort, and for Burstable `1000 - 1000 × memoryRequest / memoryCapacity` kept within
/// [3, 999] (so Burstable always dies after BestEffort and before Guaranteed). A native
/// sidecar gets no higher a score than the pod's smallest regular container would.
#[must_use]
pub fn container_oom_score_adjust(pod: &Pod, container: &Container, memory_capacity: i64) -> i64 {
    let node_critical = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.priority_class_name.as_deref())
        == Some(SYSTEM_NODE_CRITICAL);
    if node_critical {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match pod_qos(pod) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let capacity = memory_capacity.max(1);
    let score = |request: i64| 1000 - request.saturating_mul(1000) / capacity;
    let mut adjust = score(memory_request(container));
    if is_restartable_init_container(container) {
        let smallest_regular = pod_containers(pod)
            .iter()
            .map(memory_request)
            .min()
            .unwrap_or(0);
        adjust = adjust.min(score(smallest_regular));
    }
    if adjust < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        return 1000 + GUARANTEED_OOM_SCORE_ADJ;
    }
    if adjust == BEST_EFFORT_OOM_SCORE_ADJ {
        return adjust - 1;
    }
    adjust
}

/// Upstream `generateLinuxContainerResources`: CFS shares from the CPU request (the limit when
/// no request is set), quota and period from the CPU limit, the memory limit, the OOM score
/// and `memory.oom.group` on cgroup v2.
///
/// # Errors
/// When a CPU or memory quantity in the spec is malformed.
pub fn linux_container_resources(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
) -> Result<cri::LinuxContainerResources, QuantityError> {
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let cpu_request = quantity::lookup(requests, "cpu")?;
    let cpu_limit = quantity::lookup(limits, "cpu")?.unwrap_or_default();
    let memory_limit = quantity::lookup(limits, "memory")?.unwrap_or_default();
    let cpu_shares = milli_cpu_to_shares(cpu_request.unwrap_or(cpu_limit).milli_value());
    let mut resources = cri::LinuxContainerResources {
        cpu_shares,
        memory_limit_in_bytes: memory_limit.value(),
        oom_score_adj: container_oom_score_adjust(pod, container, node.memory_capacity_bytes),
        ..cri::LinuxContainerResources::default()
    };
    if node.cpu_cfs_quota {
        resources.cpu_period = node.cpu_cfs_quota_period_us;
        resources.cpu_quota =
            milli_cpu_to_quota(cpu_limit.milli_value(), node.cpu_cfs_quota_period_us);
    }
    if node.memory_oom_group {
        resources
            .unified
            .insert("memory.oom.group".to_owned(), "1".to_owned());
    }
    Ok(resources)
}

fn memory_request(container: &Container) -> i64 {
    let requests: Option<&BTreeMap<String, Quantity>> = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    quantity::lookup_lenient(requests, "memory").map_or(0, ParsedQuantity::value)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodStatus, ResourceRequirements};

    use super::*;
    use crate::pod::testing::{container, pod};

    fn with_resources(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let list = |entries: &[(&str, &str)]| {
            (!entries.is_empty()).then(|| {
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                    .collect()
            })
        };
        Container {
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..ResourceRequirements::default()
            }),
            ..container(name)
        }
    }

    #[test]
    fn pod_cgroups_sit_below_kubepods_by_qos_class() {
        assert_eq!(
            pod_cgroup_parent("/", QosClass::Guaranteed, "u1"),
            "/kubepods/podu1"
        );
        assert_eq!(
            pod_cgroup_parent("/skiff", QosClass::Burstable, "u1"),
            "/skiff/kubepods/burstable/podu1"
        );
        assert_eq!(
            pod_cgroup_parent("/skiff/", QosClass::BestEffort, "u1"),
            "/skiff/kubepods/besteffort/podu1"
        );
    }

    #[test]
    fn qos_class_follows_upstream_rules() {
        let cases: Vec<(&str, Vec<Container>, Vec<Container>, QosClass)> = vec![
            (
                "no resources",
                vec![container("a")],
                vec![],
                QosClass::BestEffort,
            ),
            (
                "only extended resources",
                vec![with_resources(
                    "a",
                    &[("nvidia.com/gpu", "1")],
                    &[("nvidia.com/gpu", "1")],
                )],
                vec![],
                QosClass::BestEffort,
            ),
            (
                "zero requests count as none",
                vec![with_resources("a", &[("cpu", "0")], &[])],
                vec![],
                QosClass::BestEffort,
            ),
            (
                "limits equal requests",
                vec![with_resources(
                    "a",
                    &[("cpu", "1"), ("memory", "1Gi")],
                    &[("cpu", "1000m"), ("memory", "1Gi")],
                )],
                vec![],
                QosClass::Guaranteed,
            ),
            (
                "limits only (requests defaulted from limits)",
                vec![with_resources("a", &[], &[("cpu", "1"), ("memory", "1Gi")])],
                vec![],
                QosClass::Burstable,
            ),
            (
                "requests below limits",
                vec![with_resources(
                    "a",
                    &[("cpu", "500m"), ("memory", "1Gi")],
                    &[("cpu", "1"), ("memory", "1Gi")],
                )],
                vec![],
                QosClass::Burstable,
            ),
            (
                "one container without memory limit",
                vec![
                    with_resources(
                        "a",
                        &[("cpu", "1"), ("memory", "1Gi")],
                        &[("cpu", "1"), ("memory", "1Gi")],
                    ),
                    with_resources("b", &[("cpu", "1")], &[("cpu", "1")]),
                ],
                vec![],
                QosClass::Burstable,
            ),
            (
                "best-effort container in an otherwise guaranteed pod",
                vec![
                    with_resources(
                        "a",
                        &[("cpu", "1"), ("memory", "1Gi")],
                        &[("cpu", "1"), ("memory", "1Gi")],
                    ),
                    container("b"),
                ],
                vec![],
                QosClass::Burstable,
            ),
            (
                "init containers count",
                vec![with_resources(
                    "a",
                    &[("cpu", "1"), ("memory", "1Gi")],
                    &[("cpu", "1"), ("memory", "1Gi")],
                )],
                vec![with_resources("init", &[("memory", "64Mi")], &[])],
                QosClass::Burstable,
            ),
        ];
        for (name, containers, init_containers, expected) in cases {
            let mut p = pod(containers);
            if let Some(spec) = p.spec.as_mut() {
                spec.init_containers = Some(init_containers);
            }
            assert_eq!(compute_pod_qos(&p), expected, "{name}");
        }
    }

    #[test]
    fn qos_class_in_status_is_kept() {
        let mut p = pod(vec![container("a")]);
        p.status = Some(PodStatus {
            qos_class: Some("Burstable".to_owned()),
            ..PodStatus::default()
        });
        assert_eq!(pod_qos(&p), QosClass::Burstable);
    }

    #[test]
    fn cpu_shares_and_quota_follow_upstream_formulas() {
        for (milli, shares) in [
            (0, 2),
            (1, 2),
            (2, 2),
            (100, 102),
            (500, 512),
            (1000, 1024),
            (2000, 2048),
            (1_000_000, 262_144),
        ] {
            assert_eq!(milli_cpu_to_shares(milli), shares, "{milli}m");
        }
        for (milli, quota) in [
            (0, 0),
            (5, 1000),
            (9, 1000),
            (10, 1000),
            (200, 20_000),
            (1000, 100_000),
            (2500, 250_000),
        ] {
            assert_eq!(
                milli_cpu_to_quota(milli, QUOTA_PERIOD_US),
                quota,
                "{milli}m"
            );
        }
    }

    #[test]
    fn oom_score_adjust_per_qos_class() {
        let gib = 1_i64 << 30;
        let capacity = 10 * gib;
        let guaranteed = with_resources(
            "a",
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1"), ("memory", "1Gi")],
        );
        assert_eq!(
            container_oom_score_adjust(&pod(vec![guaranteed.clone()]), &guaranteed, capacity),
            -997
        );
        let best_effort = container("a");
        assert_eq!(
            container_oom_score_adjust(&pod(vec![best_effort.clone()]), &best_effort, capacity),
            1000
        );
        for (request, expected) in [
            ("1Gi", 900), // 10% of memory
            ("5Gi", 500),
            ("10Gi", 3), // clamped above Guaranteed
            ("20Gi", 3),
            ("1", 999), // rounds to 1000, kept below BestEffort
        ] {
            let burstable = with_resources("a", &[("memory", request)], &[]);
            assert_eq!(
                container_oom_score_adjust(&pod(vec![burstable.clone()]), &burstable, capacity),
                expected,
                "{request}"
            );
        }
        let cpu_only = with_resources("a", &[("cpu", "100m")], &[]);
        assert_eq!(
            container_oom_score_adjust(&pod(vec![cpu_only.clone()]), &cpu_only, capacity),
            999
        );
    }

    #[test]
    fn node_critical_pods_get_the_guaranteed_score() {
        let c = container("a");
        let mut p = pod(vec![c.clone()]);
        if let Some(spec) = p.spec.as_mut() {
            spec.priority_class_name = Some(SYSTEM_NODE_CRITICAL.to_owned());
        }
        assert_eq!(container_oom_score_adjust(&p, &c, 1 << 30), -997);
    }

    #[test]
    fn sidecar_oom_score_is_no_higher_than_the_smallest_regular_container() {
        let gib = 1_i64 << 30;
        let app = with_resources("app", &[("memory", "5Gi")], &[]);
        let mut sidecar = with_resources("proxy", &[("memory", "1Gi")], &[]);
        sidecar.restart_policy = Some("Always".to_owned());
        let mut p = pod(vec![app]);
        if let Some(spec) = p.spec.as_mut() {
            spec.init_containers = Some(vec![sidecar.clone()]);
        }
        assert_eq!(container_oom_score_adjust(&p, &sidecar, 10 * gib), 500);
    }

    #[test]
    fn linux_resources_from_requests_and_limits() {
        let node = NodeContext {
            memory_capacity_bytes: 8 << 30,
            ..NodeContext::default()
        };
        let c = with_resources(
            "a",
            &[("cpu", "250m"), ("memory", "64Mi")],
            &[("cpu", "500m"), ("memory", "128Mi")],
        );
        let resources = linux_container_resources(&pod(vec![c.clone()]), &c, &node).unwrap();
        assert_eq!(resources.cpu_shares, 256);
        assert_eq!(resources.cpu_quota, 50_000);
        assert_eq!(resources.cpu_period, 100_000);
        assert_eq!(resources.memory_limit_in_bytes, 128 << 20);
        assert!(resources.unified.is_empty());

        // No request: shares come from the limit.
        let c = with_resources("a", &[], &[("cpu", "2")]);
        let resources = linux_container_resources(&pod(vec![c.clone()]), &c, &node).unwrap();
        assert_eq!(resources.cpu_shares, 2048);
        assert_eq!(resources.cpu_quota, 200_000);

        // Nothing set: minimal shares, no quota, no memory limit, period still set.
        let c = container("a");
        let resources = linux_container_resources(&pod(vec![c.clone()]), &c, &node).unwrap();
        assert_eq!(
            (
                resources.cpu_shares,
                resources.cpu_quota,
                resources.cpu_period
            ),
            (2, 0, 100_000)
        );
        assert_eq!(resources.memory_limit_in_bytes, 0);
        assert_eq!(resources.oom_score_adj, 1000);

        // cgroup v2 without singleProcessOOMKill.
        let node = NodeContext {
            memory_oom_group: true,
            cpu_cfs_quota: false,
            ..node
        };
        let resources = linux_container_resources(&pod(vec![c.clone()]), &c, &node).unwrap();
        assert_eq!(
            resources
                .unified
                .get("memory.oom.group")
                .map(String::as_str),
            Some("1")
        );
        assert_eq!((resources.cpu_quota, resources.cpu_period), (0, 0));
    }

    #[test]
    fn malformed_quantities_are_errors() {
        let c = with_resources("a", &[("cpu", "lots")], &[]);
        assert!(
            linux_container_resources(&pod(vec![c.clone()]), &c, &NodeContext::default()).is_err()
        );
    }
}
