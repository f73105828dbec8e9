//! The Node object this kubelet registers and the status it reports, as pure functions.
//!
//! Owns upstream's `initialNode` (default labels, the controller-managed attach/detach
//! annotation), the status setters this kubelet runs (`NodeAddress`, `MachineInfo`,
//! `VersionInfo`, `DaemonEndpoints`, `MemoryPressureCondition`, `DiskPressureCondition`,
//! `PIDPressureCondition`, `ReadyCondition`) with their heartbeat and transition-time rules,
//! `nodeStatusHasChanged`, and the reconciliation of an existing Node's default labels.
//!
//! Never calls the API and never reads the host: callers pass the existing Node, the
//! [`HostFacts`] and the time. Fields other writers own (`images`, `volumesInUse`, conditions of
//! other types such as `NetworkUnavailable`) are carried over untouched.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use serde_json::{Map, Value, json};

use super::NodeConfig;
use crate::host::HostFacts;

/// `kubernetes.io/hostname`.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// `kubernetes.io/os`.
pub const LABEL_OS: &str = "kubernetes.io/os";
/// `kubernetes.io/arch`.
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
/// `beta.kubernetes.io/os` (deprecated, still set by upstream).
pub const LABEL_BETA_OS: &str = "beta.kubernetes.io/os";
/// `beta.kubernetes.io/arch` (deprecated, still set by upstream).
pub const LABEL_BETA_ARCH: &str = "beta.kubernetes.io/arch";
/// Upstream's annotation saying the attach/detach controller, not the kubelet, attaches volumes.
pub const ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";

/// The `Ready` condition's reason while the kubelet is healthy.
pub const REASON_KUBELET_READY: &str = "KubeletReady";
/// The `Ready` condition's message while the kubelet is healthy.
pub const MESSAGE_KUBELET_READY: &str = "kubelet is posting ready status";
/// The `Ready` condition's reason while it is `False`.
pub const REASON_KUBELET_NOT_READY: &str = "KubeletNotReady";
/// The `Ready` message this kubelet posts when it stops cleanly (SIGTERM/SIGINT).
pub const MESSAGE_KUBELET_STOPPING: &str = "kubelet is stopping";

/// Whether the node can run pods, as the `Ready` condition reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// `Ready=True`, reason `KubeletReady`.
    Ready,
    /// `Ready=False`, reason `KubeletNotReady`, with this message (upstream joins its errors
    /// with `,`).
    NotReady {
        /// Why, e.g. [`MESSAGE_KUBELET_STOPPING`].
        message: String,
    },
}

/// The labels upstream's kubelet puts on its Node (`kubernetes.io/hostname`, `…/os`, `…/arch`
/// and their deprecated `beta.` twins).
pub fn default_labels(hostname: &str, os: &str, arch: &str) -> BTreeMap<String, String> {
    [
        (LABEL_HOSTNAME, hostname),
        (LABEL_OS, os),
        (LABEL_ARCH, arch),
        (LABEL_BETA_OS, os),
        (LABEL_BETA_ARCH, arch),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// The Node to create at registration (upstream's `initialNode` plus a first status), with
/// `spec.podCIDR` set when the caller has one to offer.
pub fn initial_node(
    config: &NodeConfig,
    facts: &HostFacts,
    readiness: &Readiness,
    pod_cidr: Option<&str>,
    now: Timestamp,
) -> Node {
    let spec = pod_cidr.map(|cidr| NodeSpec {
        pod_cidr: Some(cidr.to_owned()),
        pod_cidrs: Some(vec![cidr.to_owned()]),
        ..NodeSpec::default()
    });
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(default_labels(
                &config.node_name,
                std::env::consts::OS,
                &facts.system.architecture,
            )),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH.to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(spec.unwrap_or_default()),
        status: Some(node_status(None, config, facts, readiness, now)),
    }
}

/// The status to report: `existing` (the Node's current status, if any) with addresses,
/// capacity, allocatable, nodeInfo, daemonEndpoints and this kubelet's four conditions set as
/// upstream's setters set them at `now`. Everything else in `existing` is kept.
pub fn node_status(
    existing: Option<&NodeStatus>,
    config: &NodeConfig,
    facts: &HostFacts,
    readiness: &Readiness,
    now: Timestamp,
) -> NodeStatus {
    let mut status = existing.cloned().unwrap_or_default();
    status.addresses = Some(vec![
        NodeAddress {
            type_: "InternalIP".to_owned(),
            address: config.node_ip.to_string(),
        },
        NodeAddress {
            type_: "Hostname".to_owned(),
            address: config.node_name.clone(),
        },
    ]);
    status.capacity = Some(facts.capacity.to_resource_list());
    status.allocatable = Some(facts.capacity.allocatable().to_resource_list());
    status.node_info = Some(facts.system.node_info(&config.container_runtime_version));
    status.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(config.kubelet_port),
        }),
    });
    let mut conditions = status.conditions.take().unwrap_or_default();
    // No eviction manager yet: the node never reports pressure.
    set_pressure_condition(&mut conditions, &MEMORY_PRESSURE, false, now);
    set_pressure_condition(&mut conditions, &DISK_PRESSURE, false, now);
    set_pressure_condition(&mut conditions, &PID_PRESSURE, false, now);
    set_ready_condition(&mut conditions, readiness, now);
    status.conditions = Some(conditions);
    status
}

/// One pressure condition's names, as upstream spells them.
pub struct PressureCondition {
    /// The condition type, e.g. `MemoryPressure`.
    pub type_: &'static str,
    /// Reason and message while under pressure (`True`).
    pub under_pressure: (&'static str, &'static str),
    /// Reason and message without pressure (`False`).
    pub no_pressure: (&'static str, &'static str),
}

/// `MemoryPressure`.
pub const MEMORY_PRESSURE: PressureCondition = PressureCondition {
    type_: "MemoryPressure",
    under_pressure: (
        "KubeletHasInsufficientMemory",
        "kubelet has insufficient memory available",
    ),
    no_pressure: (
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
};

/// `DiskPressure`.
pub const DISK_PRESSURE: PressureCondition = PressureCondition {
    type_: "DiskPressure",
    under_pressure: ("KubeletHasDiskPressure", "kubelet has disk pressure"),
    no_pressure: ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
};

/// `PIDPressure`.
pub const PID_PRESSURE: PressureCondition = PressureCondition {
    type_: "PIDPressure",
    under_pressure: (
        "KubeletHasInsufficientPID",
        "kubelet has insufficient PID available",
    ),
    no_pressure: (
        "KubeletHasSufficientPID",
        "kubelet has sufficient PID available",
    ),
};

/// Upstream's pressure setters: the heartbeat is always `now`; status, reason, message and
/// transition time change only when the status does (a new condition starts as `Unknown`, so it
/// transitions at `now`).
pub fn set_pressure_condition(
    conditions: &mut Vec<NodeCondition>,
    names: &PressureCondition,
    pressure: bool,
    now: Timestamp,
) {
    let position = match conditions
        .iter()
        .position(|condition| condition.type_ == names.type_)
    {
        Some(position) => position,
        None => {
            conditions.push(NodeCondition {
                type_: names.type_.to_owned(),
                status: "Unknown".to_owned(),
                ..NodeCondition::default()
            });
            conditions.len() - 1
        }
    };
    let condition = &mut conditions[position];
    condition.last_heartbeat_time = Some(Time(now));
    let (status, (reason, message)) = if pressure {
        ("True", names.under_pressure)
    } else {
        ("False", names.no_pressure)
    };
    if condition.status != status {
        condition.status = status.to_owned();
        condition.reason = Some(reason.to_owned());
        condition.message = Some(message.to_owned());
        condition.last_transition_time = Some(Time(now));
    }
}

/// Upstream's `ReadyCondition` setter: the condition is rebuilt at `now` (reason and message
/// always current); the transition time is kept while the status stays the same.
pub fn set_ready_condition(
    conditions: &mut Vec<NodeCondition>,
    readiness: &Readiness,
    now: Timestamp,
) {
    let (status, reason, message) = match readiness {
        Readiness::Ready => ("True", REASON_KUBELET_READY, MESSAGE_KUBELET_READY),
        Readiness::NotReady { message } => ("False", REASON_KUBELET_NOT_READY, message.as_str()),
    };
    let mut ready = NodeCondition {
        type_: "Ready".to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    match conditions
        .iter_mut()
        .find(|condition| condition.type_ == "Ready")
    {
        Some(existing) => {
            if existing.status == ready.status {
                ready.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = ready;
        }
        None => conditions.push(ready),
    }
}

/// Upstream's `nodeStatusHasChanged`: whether `new` differs from `old` other than in the
/// conditions' heartbeat times (conditions compared by type, not position).
pub fn status_has_changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let without_heartbeats = |status: &NodeStatus| {
        let mut status = status.clone();
        if let Some(conditions) = status.conditions.as_mut() {
            for condition in conditions.iter_mut() {
                condition.last_heartbeat_time = None;
            }
            conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        }
        status
    };
    without_heartbeats(old) != without_heartbeats(new)
}

/// Upstream's `updateDefaultLabels` and `reconcileCMADAnnotationWithExistingNode` for a Node
/// that already exists at registration: a JSON merge patch of `metadata` that makes its default
/// labels and the attach/detach annotation match `desired`, or `None` when they already do.
/// Other labels and annotations are left alone.
pub fn reconcile_existing_node(existing: &Node, desired: &Node) -> Option<Value> {
    let mut labels = Map::new();
    let existing_labels = existing.metadata.labels.clone().unwrap_or_default();
    for (key, value) in desired.metadata.labels.iter().flatten() {
        if existing_labels.get(key) != Some(value) {
            labels.insert(key.clone(), json!(value));
        }
    }
    let mut annotations = Map::new();
    let existing_annotations = existing.metadata.annotations.clone().unwrap_or_default();
    for (key, value) in desired.metadata.annotations.iter().flatten() {
        if existing_annotations.get(key) != Some(value) {
            annotations.insert(key.clone(), json!(value));
        }
    }
    let mut metadata = Map::new();
    if !labels.is_empty() {
        metadata.insert("labels".to_owned(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".to_owned(), Value::Object(annotations));
    }
    (!metadata.is_empty()).then(|| json!({ "metadata": metadata }))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::host::{Resources, SystemInfo};

    fn config() -> NodeConfig {
        let mut config = NodeConfig::new(
            "/kubeconfig".into(),
            "node-a".to_owned(),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        );
        config.kubelet_port = 10251;
        config
    }

    fn facts() -> HostFacts {
        HostFacts {
            capacity: Resources {
                cpu_cores: 4,
                memory_bytes: 8 * 1024 * 1024 * 1024,
                ephemeral_storage_bytes: 100 * 1024 * 1024 * 1024,
                pods: 110,
                hugepages_2mi_bytes: 0,
                hugepages_1gi_bytes: 0,
            },
            system: SystemInfo {
                machine_id: "machine".into(),
                system_uuid: String::new(),
                boot_id: "boot".into(),
                kernel_version: "6.1.0".into(),
                os_image: "Debian GNU/Linux 12 (bookworm)".into(),
                architecture: "amd64".into(),
                swap_bytes: 0,
            },
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("a valid timestamp")
    }

    fn condition<'a>(status: &'a NodeStatus, type_: &str) -> &'a NodeCondition {
        status
            .conditions
            .iter()
            .flatten()
            .find(|condition| condition.type_ == type_)
            .expect("the condition is reported")
    }

    fn not_ready(message: &str) -> Readiness {
        Readiness::NotReady {
            message: message.to_owned(),
        }
    }

    #[test]
    fn initial_node_carries_upstream_labels_and_annotation() {
        let node = initial_node(&config(), &facts(), &Readiness::Ready, None, at(0));
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_HOSTNAME], "node-a");
        assert_eq!(labels[LABEL_OS], "linux");
        assert_eq!(labels[LABEL_ARCH], "amd64");
        assert_eq!(labels[LABEL_BETA_OS], "linux");
        assert_eq!(labels[LABEL_BETA_ARCH], "amd64");
        assert_eq!(
            node.metadata.annotations.unwrap()[ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH],
            "true"
        );
        assert_eq!(node.metadata.name.as_deref(), Some("node-a"));
        assert_eq!(node.spec.unwrap().pod_cidr, None);
    }

    #[test]
    fn initial_node_offers_the_pod_cidr_in_both_spec_fields() {
        let node = initial_node(
            &config(),
            &facts(),
            &Readiness::Ready,
            Some("10.244.7.0/24"),
            at(0),
        );
        let spec = node.spec.unwrap();
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.7.0/24"));
        assert_eq!(spec.pod_cidrs, Some(vec!["10.244.7.0/24".to_owned()]));
    }

    #[test]
    fn status_reports_addresses_endpoint_resources_and_node_info() {
        let status = node_status(None, &config(), &facts(), &Readiness::Ready, at(0));
        let addresses: Vec<(String, String)> = status
            .addresses
            .clone()
            .unwrap()
            .into_iter()
            .map(|address| (address.type_, address.address))
            .collect();
        assert_eq!(
            addresses,
            vec![
                ("InternalIP".to_owned(), "192.0.2.7".to_owned()),
                ("Hostname".to_owned(), "node-a".to_owned())
            ]
        );
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10251
        );
        assert_eq!(status.capacity.unwrap()["memory"].0, "8Gi");
        assert_eq!(status.allocatable.unwrap()["memory"].0, "8092Mi");
        let info = status.node_info.unwrap();
        assert_eq!(info.container_runtime_version, "containerd://unknown");
        assert_eq!(info.kubelet_version, "v1.35.0-skiff");
    }

    #[test]
    fn healthy_node_reports_upstream_conditions_in_upstream_order() {
        let status = node_status(None, &config(), &facts(), &Readiness::Ready, at(0));
        let summary: Vec<(String, String, String, String)> = status
            .conditions
            .unwrap()
            .into_iter()
            .map(|condition| {
                (
                    condition.type_,
                    condition.status,
                    condition.reason.unwrap(),
                    condition.message.unwrap(),
                )
            })
            .collect();
        let expected = [
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            (
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            ),
        ]
        .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned()));
        assert_eq!(summary, expected);
    }

    #[test]
    fn new_conditions_transition_and_beat_at_now() {
        let status = node_status(None, &config(), &facts(), &Readiness::Ready, at(5));
        for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"] {
            let condition = condition(&status, type_);
            assert_eq!(condition.last_transition_time, Some(Time(at(5))));
            assert_eq!(condition.last_heartbeat_time, Some(Time(at(5))));
        }
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time_and_beat_again() {
        let first = node_status(None, &config(), &facts(), &Readiness::Ready, at(0));
        let second = node_status(Some(&first), &config(), &facts(), &Readiness::Ready, at(30));
        for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"] {
            let condition = condition(&second, type_);
            assert_eq!(condition.last_transition_time, Some(Time(at(0))), "{type_}");
            assert_eq!(condition.last_heartbeat_time, Some(Time(at(30))), "{type_}");
        }
    }

    #[test]
    fn ready_turning_false_transitions_with_kubelet_not_ready() {
        let ready = node_status(None, &config(), &facts(), &Readiness::Ready, at(0));
        let stopping = node_status(
            Some(&ready),
            &config(),
            &facts(),
            &not_ready(MESSAGE_KUBELET_STOPPING),
            at(60),
        );
        let condition = condition(&stopping, "Ready");
        assert_eq!(condition.status, "False");
        assert_eq!(condition.reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(condition.message.as_deref(), Some("kubelet is stopping"));
        assert_eq!(condition.last_transition_time, Some(Time(at(60))));
    }

    #[test]
    fn ready_message_follows_the_cause_without_a_transition() {
        let first = node_status(None, &config(), &facts(), &not_ready("a"), at(0));
        let second = node_status(Some(&first), &config(), &facts(), &not_ready("b"), at(10));
        let condition = condition(&second, "Ready");
        assert_eq!(condition.message.as_deref(), Some("b"));
        assert_eq!(condition.last_transition_time, Some(Time(at(0))));
    }

    #[test]
    fn pressure_condition_keeps_reason_while_status_holds() {
        // Upstream rewrites reason and message only on a status change.
        let mut conditions = vec![NodeCondition {
            type_: "MemoryPressure".into(),
            status: "False".into(),
            reason: Some("SomethingElse".into()),
            message: Some("set by someone".into()),
            last_transition_time: Some(Time(at(0))),
            last_heartbeat_time: Some(Time(at(0))),
        }];
        set_pressure_condition(&mut conditions, &MEMORY_PRESSURE, false, at(10));
        assert_eq!(conditions[0].reason.as_deref(), Some("SomethingElse"));
        assert_eq!(conditions[0].last_heartbeat_time, Some(Time(at(10))));
        set_pressure_condition(&mut conditions, &MEMORY_PRESSURE, true, at(20));
        assert_eq!(conditions[0].status, "True");
        assert_eq!(
            conditions[0].reason.as_deref(),
            Some("KubeletHasInsufficientMemory")
        );
        assert_eq!(conditions[0].last_transition_time, Some(Time(at(20))));
    }

    #[test]
    fn unknown_set_by_the_controller_transitions_back() {
        let mut status = node_status(None, &config(), &facts(), &Readiness::Ready, at(0));
        for condition in status.conditions.iter_mut().flatten() {
            condition.status = "Unknown".into();
            condition.reason = Some("NodeStatusUnknown".into());
        }
        let again = node_status(
            Some(&status),
            &config(),
            &facts(),
            &Readiness::Ready,
            at(90),
        );
        for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"] {
            let condition = condition(&again, type_);
            assert_ne!(condition.status, "Unknown");
            assert_eq!(
                condition.last_transition_time,
                Some(Time(at(90))),
                "{type_}"
            );
        }
    }

    #[test]
    fn other_writers_fields_and_conditions_are_kept() {
        let mut existing = NodeStatus {
            volumes_in_use: Some(vec!["kubernetes.io/csi/x".into()]),
            conditions: Some(vec![NodeCondition {
                type_: "NetworkUnavailable".into(),
                status: "False".into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        };
        existing = node_status(
            Some(&existing),
            &config(),
            &facts(),
            &Readiness::Ready,
            at(0),
        );
        assert_eq!(existing.volumes_in_use.as_ref().map(Vec::len), Some(1));
        assert_eq!(condition(&existing, "NetworkUnavailable").status, "False");
        assert_eq!(existing.conditions.as_ref().map(Vec::len), Some(5));
    }

    #[test]
    fn heartbeat_alone_is_not_a_change() {
        let first = node_status(None, &config(), &facts(), &Readiness::Ready, at(0));
        let second = node_status(Some(&first), &config(), &facts(), &Readiness::Ready, at(10));
        assert!(!status_has_changed(&first, &second));
    }

    #[test]
    fn condition_order_is_not_a_change() {
        let first = node_status(None, &config(), &facts(), &Readiness::Ready, at(0));
        let mut reordered = first.clone();
        reordered.conditions.as_mut().unwrap().reverse();
        assert!(!status_has_changed(&first, &reordered));
    }

    #[test]
    fn readiness_addresses_and_capacity_are_changes() {
        let first = node_status(None, &config(), &facts(), &Readiness::Ready, at(0));
        let stopping = node_status(
            Some(&first),
            &config(),
            &facts(),
            &not_ready(MESSAGE_KUBELET_STOPPING),
            at(1),
        );
        assert!(status_has_changed(&first, &stopping));
        let mut moved = config();
        moved.node_ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8));
        let readdressed = node_status(Some(&first), &moved, &facts(), &Readiness::Ready, at(1));
        assert!(status_has_changed(&first, &readdressed));
        let mut grown = facts();
        grown.capacity.cpu_cores = 8;
        let regrown = node_status(Some(&first), &config(), &grown, &Readiness::Ready, at(1));
        assert!(status_has_changed(&first, &regrown));
    }

    #[test]
    fn existing_node_with_matching_labels_needs_no_patch() {
        let desired = initial_node(&config(), &facts(), &Readiness::Ready, None, at(0));
        let mut existing = desired.clone();
        existing
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "x".into());
        assert_eq!(reconcile_existing_node(&existing, &desired), None);
    }

    #[test]
    fn existing_node_gets_missing_or_stale_default_labels_only() {
        let desired = initial_node(&config(), &facts(), &Readiness::Ready, None, at(0));
        let existing = Node {
            metadata: ObjectMeta {
                name: Some("node-a".into()),
                labels: Some(BTreeMap::from([
                    (LABEL_ARCH.to_owned(), "arm64".to_owned()),
                    (LABEL_OS.to_owned(), "linux".to_owned()),
                    ("team".to_owned(), "x".to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        let patch = reconcile_existing_node(&existing, &desired).unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": "node-a",
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": "amd64",
                },
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            }})
        );
    }
}
