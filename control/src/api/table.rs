//! Server-side printing: the `columnDefinitions` and row `cells` of a `meta.k8s.io/v1` Table
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), so `kubectl get` shows the columns
//! kube-apiserver shows.
//!
//! Owns, per served kind, upstream's columns (pkg/printers/internalversion/printers.go) and how
//! each cell is computed from the JSON object, including the pod STATUS/READY/RESTARTS rules and
//! upstream's `HumanDuration` ages. Like kube-apiserver it always produces every column, wide
//! ones included (priority 1); kubectl hides those without `-o wide`. Pure: never touches HTTP
//! or the store, never builds the Table envelope (rows, `object`, list metadata) and never
//! reads the clock itself — callers pass `now`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::selectors::LabelSelector;

/// The `columnDefinitions` of `kind`'s Table, upstream's columns: each
/// `{"name","type","format","description","priority"}` (priority 1 = only with `-o wide`).
/// A kind without a printer gets upstream's default table (Name, Created At).
pub fn column_definitions(kind: &str) -> Vec<Value> {
    columns(kind)
        .iter()
        .map(|column| {
            json!({
                "name": column.name,
                "type": column.kind,
                "format": column.format,
                "description": column.description,
                "priority": column.priority,
            })
        })
        .collect()
}

/// The cells of one row for `object`, one per [`column_definitions`] entry of `kind`, computed
/// as upstream's printers compute them (wide columns included), with ages relative to `now`.
pub fn cells(kind: &str, object: &Value, now: SystemTime) -> Vec<Value> {
    let now = unix_nanos(now);
    let row = match kind {
        "Pod" => pod_cells(object, now),
        "Service" => service_cells(object, now),
        "Deployment" => deployment_cells(object, now),
        "ReplicaSet" => replica_set_cells(object, now),
        "DaemonSet" => daemon_set_cells(object, now),
        "Namespace" => vec![
            name(object),
            text(object, &["status", "phase"]).into(),
            age(object, now),
        ],
        "Node" => node_cells(object, now),
        "ConfigMap" => vec![
            name(object),
            (object_len(object, &["data"]) + object_len(object, &["binaryData"])).into(),
            age(object, now),
        ],
        "Secret" => vec![
            name(object),
            text(object, &["type"]).into(),
            object_len(object, &["data"]).into(),
            age(object, now),
        ],
        "ServiceAccount" => vec![
            name(object),
            items(object, &["secrets"]).len().into(),
            age(object, now),
        ],
        "Endpoints" => vec![
            name(object),
            format_endpoints(object).into(),
            age(object, now),
        ],
        "EndpointSlice" => vec![
            name(object),
            text(object, &["addressType"]).into(),
            format_slice_ports(object).into(),
            format_slice_endpoints(object).into(),
            age(object, now),
        ],
        "Event" => event_cells(object, now),
        "Lease" => vec![
            name(object),
            text(object, &["spec", "holderIdentity"]).into(),
            age(object, now),
        ],
        _ => vec![name(object), created_at(object).into()],
    };
    debug_assert_eq!(row.len(), columns(kind).len(), "cells of {kind}");
    row
}

/// Upstream's `duration.HumanDuration` short form of the time since `created_rfc3339` ("5s",
/// "3m20s", "2d3h"); `"<unknown>"` when there is no (or no parseable) timestamp.
pub fn human_age(created_rfc3339: Option<&str>, now: SystemTime) -> String {
    since(created_rfc3339.and_then(parse_rfc3339), unix_nanos(now))
}

// ---------------------------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------------------------

struct Column {
    name: &'static str,
    /// The OpenAPI type: `string`, `integer`, `date`.
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

const fn column(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: NAME_DOC,
    priority: 0,
};
const AGE: Column = column("Age", "string", CREATION_TIMESTAMP_DOC);
const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

// The descriptions are upstream's (the literal strings in printers.go and the API field docs
// its `SwaggerDoc()` lookups return).
const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATION_TIMESTAMP_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const POD_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    column(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    column(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
    ),
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer.",
    ),
    column(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    column(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.",
    ),
    column(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
    ),
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "Number of the pod with ready state"),
    column(
        "Up-to-date",
        "string",
        "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
    ),
    column(
        "Available",
        "string",
        "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(
        "Selector",
        "string",
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.",
    ),
];

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Desired",
        "integer",
        "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
    ),
    column(
        "Current",
        "integer",
        "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
    ),
    column(
        "Ready",
        "integer",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
    ),
];

const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
    ),
    column(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
    ),
    column(
        "Ready",
        "integer",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    column(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
    ),
    column(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    column(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(
        "Selector",
        "string",
        "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
    ),
];

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "The status of the namespace"),
    AGE,
];

const NODE_ADDRESSES_DOC: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses";

const NODE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "The status of the node"),
    column("Roles", "string", "The roles of the node"),
    AGE,
    column("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", NODE_ADDRESSES_DOC),
    wide("External-IP", "string", NODE_ADDRESSES_DOC),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Data",
        "string",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
    ),
    AGE,
];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
    ),
    column(
        "Data",
        "string",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
    ),
    AGE,
];

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
    ),
    AGE,
];

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
    ),
    AGE,
];

const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation.",
    ),
    column(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name.",
    ),
    column(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.",
    ),
    AGE,
];

const EVENT_COLUMNS: &[Column] = &[
    column(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    column(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    column(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    column("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    ),
    wide(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    column(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        priority: 1,
        ..NAME
    },
];

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
    ),
    AGE,
];

/// Upstream's `defaultTableConvertor` for kinds without a printer.
const DEFAULT_COLUMNS: &[Column] = &[NAME, column("Created At", "date", CREATION_TIMESTAMP_DOC)];

fn columns(kind: &str) -> &'static [Column] {
    match kind {
        "Pod" => POD_COLUMNS,
        "Service" => SERVICE_COLUMNS,
        "Deployment" => DEPLOYMENT_COLUMNS,
        "ReplicaSet" => REPLICA_SET_COLUMNS,
        "DaemonSet" => DAEMON_SET_COLUMNS,
        "Namespace" => NAMESPACE_COLUMNS,
        "Node" => NODE_COLUMNS,
        "ConfigMap" => CONFIG_MAP_COLUMNS,
        "Secret" => SECRET_COLUMNS,
        "ServiceAccount" => SERVICE_ACCOUNT_COLUMNS,
        "Endpoints" => ENDPOINTS_COLUMNS,
        "EndpointSlice" => ENDPOINT_SLICE_COLUMNS,
        "Event" => EVENT_COLUMNS,
        "Lease" => LEASE_COLUMNS,
        _ => DEFAULT_COLUMNS,
    }
}

// ---------------------------------------------------------------------------------------------
// Cells per kind
// ---------------------------------------------------------------------------------------------

/// `NodeLost`: the status reason the node lifecycle controller gives pods of unreachable nodes.
const NODE_UNREACHABLE_POD_REASON: &str = "NodeLost";

fn pod_cells(pod: &Value, now: i128) -> Vec<Value> {
    let phase = text(pod, &["status", "phase"]);
    let mut reason = phase.to_owned();
    let status_reason = text(pod, &["status", "reason"]);
    if !status_reason.is_empty() {
        reason = status_reason.to_owned();
    }
    let conditions = items(pod, &["status", "conditions"]);
    if conditions.iter().any(|condition| {
        text(condition, &["type"]) == "PodScheduled"
            && text(condition, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_owned();
    }

    let init_containers = items(pod, &["spec", "initContainers"]);
    let is_restartable_init = |name: &str| {
        init_containers.iter().any(|container| {
            text(container, &["name"]) == name && text(container, &["restartPolicy"]) == "Always"
        })
    };
    // Restartable init (sidecar) containers count as containers of the pod.
    let total_containers = items(pod, &["spec", "containers"]).len()
        + init_containers
            .iter()
            .filter(|container| text(container, &["restartPolicy"]) == "Always")
            .count();
    let mut ready_containers = 0usize;
    let mut restarts = 0i64;
    let mut restartable_init_restarts = 0i64;
    let mut last_restart: Option<i128> = None;
    let mut last_restartable_init_restart: Option<i128> = None;

    let mut initializing = false;
    for (index, status) in items(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let restart_count = int(status, &["restartCount"]);
        restarts += restart_count;
        let finished = last_finished_at(status);
        last_restart = latest(last_restart, finished);
        let restartable = is_restartable_init(text(status, &["name"]));
        if restartable {
            restartable_init_restarts += restart_count;
            last_restartable_init_restart = latest(last_restartable_init_restart, finished);
        }
        let terminated = value_at(status, &["state", "terminated"]);
        let waiting_reason = text(status, &["state", "waiting", "reason"]);
        if terminated.is_some_and(|terminated| int(terminated, &["exitCode"]) == 0) {
            continue;
        }
        if restartable && flag(status, &["started"]) {
            if flag(status, &["ready"]) {
                ready_containers += 1;
            }
            continue;
        }
        if let Some(terminated) = terminated {
            let terminated_reason = text(terminated, &["reason"]);
            reason = if !terminated_reason.is_empty() {
                format!("Init:{terminated_reason}")
            } else if int(terminated, &["signal"]) != 0 {
                format!("Init:Signal:{}", int(terminated, &["signal"]))
            } else {
                format!("Init:ExitCode:{}", int(terminated, &["exitCode"]))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{index}/{}", init_containers.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for status in items(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int(status, &["restartCount"]);
            last_restart = latest(last_restart, last_finished_at(status));
            let waiting_reason = text(status, &["state", "waiting", "reason"]);
            let terminated = value_at(status, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(terminated) = terminated {
                let terminated_reason = text(terminated, &["reason"]);
                reason = if !terminated_reason.is_empty() {
                    terminated_reason.to_owned()
                } else if int(terminated, &["signal"]) != 0 {
                    format!("Signal:{}", int(terminated, &["signal"]))
                } else {
                    format!("ExitCode:{}", int(terminated, &["exitCode"]))
                };
            } else if flag(status, &["ready"]) && value_at(status, &["state", "running"]).is_some()
            {
                has_running = true;
                ready_containers += 1;
            }
        }
        // A pod with a container still running is not "Completed".
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") {
                "Running".to_owned()
            } else {
                "NotReady".to_owned()
            };
        }
    }

    let deleting = value_at(pod, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null());
    if deleting && status_reason == NODE_UNREACHABLE_POD_REASON {
        reason = "Unknown".to_owned();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    let restarts_text = match last_restart {
        Some(last) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(last), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = items(pod, &["status", "podIPs"])
        .first()
        .map(|ip| text(ip, &["ip"]))
        .unwrap_or_else(|| text(pod, &["status", "podIP"]));
    let readiness_gates = items(pod, &["spec", "readinessGates"]);
    let gates = if readiness_gates.is_empty() {
        "<none>".to_owned()
    } else {
        let true_gates = readiness_gates
            .iter()
            .filter(|gate| {
                let wanted = text(gate, &["conditionType"]);
                conditions
                    .iter()
                    .find(|condition| text(condition, &["type"]) == wanted)
                    .is_some_and(|condition| text(condition, &["status"]) == "True")
            })
            .count();
        format!("{true_gates}/{}", readiness_gates.len())
    };

    vec![
        name(pod),
        format!("{ready_containers}/{total_containers}").into(),
        reason.into(),
        restarts_text.into(),
        age(pod, now),
        or_none(pod_ip).into(),
        or_none(text(pod, &["spec", "nodeName"])).into(),
        or_none(text(pod, &["status", "nominatedNodeName"])).into(),
        gates.into(),
    ]
}

/// When a container last terminated (`lastState.terminated.finishedAt`).
fn last_finished_at(status: &Value) -> Option<i128> {
    value_at(status, &["lastState", "terminated", "finishedAt"])
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
}

fn latest(current: Option<i128>, candidate: Option<i128>) -> Option<i128> {
    match (current, candidate) {
        (Some(current), Some(candidate)) => Some(current.max(candidate)),
        (current, candidate) => current.or(candidate),
    }
}

fn condition_true(conditions: &[Value], kind: &str) -> bool {
    conditions.iter().any(|condition| {
        text(condition, &["type"]) == kind && text(condition, &["status"]) == "True"
    })
}

fn service_cells(service: &Value, now: i128) -> Vec<Value> {
    let service_type = match text(service, &["spec", "type"]) {
        "" => "ClusterIP",
        other => other,
    };
    let cluster_ip = items(service, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| text(service, &["spec", "clusterIP"]));
    let ports: Vec<String> = items(service, &["spec", "ports"])
        .iter()
        .map(|port| {
            let protocol = match text(port, &["protocol"]) {
                "" => "TCP",
                other => other,
            };
            let node_port = int(port, &["nodePort"]);
            if node_port > 0 {
                format!("{}:{node_port}/{protocol}", int(port, &["port"]))
            } else {
                format!("{}/{protocol}", int(port, &["port"]))
            }
        })
        .collect();
    vec![
        name(service),
        service_type.into(),
        or_none(cluster_ip).into(),
        service_external_ip(service, service_type).into(),
        or_none(&ports.join(",")).into(),
        age(service, now),
        format_labels(value_at(service, &["spec", "selector"])).into(),
    ]
}

/// Upstream's `getServiceExternalIP` in its wide form (no clipping, as the server prints).
fn service_external_ip(service: &Value, service_type: &str) -> String {
    let external_ips: Vec<&str> = items(service, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_owned()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut ingress: Vec<&str> = items(service, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|entry| {
                    let ip = text(entry, &["ip"]);
                    let hostname = text(entry, &["hostname"]);
                    if !ip.is_empty() {
                        Some(ip)
                    } else if !hostname.is_empty() {
                        Some(hostname)
                    } else {
                        None
                    }
                })
                .collect();
            ingress.sort_unstable();
            ingress.dedup();
            if ingress.is_empty() && external_ips.is_empty() {
                return "<pending>".to_owned();
            }
            ingress.extend(external_ips);
            ingress.join(",")
        }
        "ExternalName" => text(service, &["spec", "externalName"]).to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

fn deployment_cells(deployment: &Value, now: i128) -> Vec<Value> {
    let desired = value_at(deployment, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (containers, images) = container_cells(deployment);
    let selector = match value_at(deployment, &["spec", "selector"]) {
        Some(selector) => match LabelSelector::from_json(selector) {
            Ok(selector) => selector.to_string(),
            Err(_) => "<invalid>".to_owned(),
        },
        None => String::new(),
    };
    vec![
        name(deployment),
        format!(
            "{}/{desired}",
            int(deployment, &["status", "readyReplicas"])
        )
        .into(),
        int(deployment, &["status", "updatedReplicas"]).into(),
        int(deployment, &["status", "availableReplicas"]).into(),
        age(deployment, now),
        containers.into(),
        images.into(),
        selector.into(),
    ]
}

fn replica_set_cells(replica_set: &Value, now: i128) -> Vec<Value> {
    let desired = value_at(replica_set, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (containers, images) = container_cells(replica_set);
    vec![
        name(replica_set),
        desired.into(),
        int(replica_set, &["status", "replicas"]).into(),
        int(replica_set, &["status", "readyReplicas"]).into(),
        age(replica_set, now),
        containers.into(),
        images.into(),
        format_label_selector(replica_set).into(),
    ]
}

fn daemon_set_cells(daemon_set: &Value, now: i128) -> Vec<Value> {
    let (containers, images) = container_cells(daemon_set);
    vec![
        name(daemon_set),
        int(daemon_set, &["status", "desiredNumberScheduled"]).into(),
        int(daemon_set, &["status", "currentNumberScheduled"]).into(),
        int(daemon_set, &["status", "numberReady"]).into(),
        int(daemon_set, &["status", "updatedNumberScheduled"]).into(),
        int(daemon_set, &["status", "numberAvailable"]).into(),
        format_labels(value_at(
            daemon_set,
            &["spec", "template", "spec", "nodeSelector"],
        ))
        .into(),
        age(daemon_set, now),
        containers.into(),
        images.into(),
        format_label_selector(daemon_set).into(),
    ]
}

/// Upstream's `layoutContainerCells`: the template's container names and images, comma-joined.
fn container_cells(workload: &Value) -> (String, String) {
    let containers = items(workload, &["spec", "template", "spec", "containers"]);
    let names: Vec<&str> = containers.iter().map(|c| text(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// Upstream's `metav1.FormatLabelSelector` of `spec.selector`.
fn format_label_selector(workload: &Value) -> String {
    let selector = value_at(workload, &["spec", "selector"]).unwrap_or(&Value::Null);
    match LabelSelector::from_json(selector) {
        Ok(selector) => {
            let text = selector.to_string();
            if text.is_empty() {
                "<none>".to_owned()
            } else {
                text
            }
        }
        Err(_) => "<error>".to_owned(),
    }
}

/// Upstream's `labels.FormatLabels`: sorted `k=v` pairs, `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object) else {
        return "<none>".to_owned();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect();
    if pairs.is_empty() {
        return "<none>".to_owned();
    }
    pairs.sort();
    pairs.join(",")
}

fn node_cells(node: &Value, now: i128) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    // Upstream keeps the last condition of each type; only Ready is reported.
    if let Some(ready) = items(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|condition| text(condition, &["type"]) == "Ready")
    {
        if text(ready, &["status"]) == "True" {
            status.push("Ready".to_owned());
        } else {
            status.push("NotReady".to_owned());
        }
    }
    if status.is_empty() {
        status.push("Unknown".to_owned());
    }
    if flag(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled".to_owned());
    }

    let mut roles: Vec<&str> = Vec::new();
    if let Some(labels) = value_at(node, &["metadata", "labels"]).and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role);
                }
            } else if key == "kubernetes.io/role" {
                let role = value.as_str().unwrap_or_default();
                if !role.is_empty() {
                    roles.push(role);
                }
            }
        }
    }
    roles.sort_unstable();
    roles.dedup();

    let address = |kind: &str| {
        items(node, &["status", "addresses"])
            .iter()
            .find(|address| text(address, &["type"]) == kind)
            .map(|address| text(address, &["address"]).to_owned())
            .unwrap_or_else(|| "<none>".to_owned())
    };
    let info = |field: &str| match text(node, &["status", "nodeInfo", field]) {
        "" => "<unknown>".to_owned(),
        other => other.to_owned(),
    };
    vec![
        name(node),
        status.join(",").into(),
        or_none(&roles.join(",")).into(),
        age(node, now),
        text(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ]
}

/// Upstream's `formatEndpoints` with every port: up to three `ip:port` then `+ N more...`.
fn format_endpoints(endpoints: &Value) -> String {
    let subsets = items(endpoints, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for subset in subsets {
        let addresses = items(subset, &["addresses"]);
        let ports = items(subset, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(text(address, &["ip"]).to_owned());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(text(address, &["ip"]), int(port, &["port"])));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

/// Go's `net.JoinHostPort`: IPv6 addresses in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream's `formatDiscoveryPorts`: port numbers (or names, or `*`), at most three.
fn format_slice_ports(slice: &Value) -> String {
    let ports: Vec<String> = items(slice, &["ports"])
        .iter()
        .map(|port| {
            if let Some(number) = value_at(port, &["port"]).and_then(Value::as_i64) {
                number.to_string()
            } else if let Some(name) = value_at(port, &["name"]).and_then(Value::as_str) {
                name.to_owned()
            } else {
                "*".to_owned()
            }
        })
        .collect();
    list_with_more(ports)
}

/// Upstream's `formatDiscoveryEndpoints`: every address of every endpoint, at most three.
fn format_slice_endpoints(slice: &Value) -> String {
    let addresses: Vec<String> = items(slice, &["endpoints"])
        .iter()
        .flat_map(|endpoint| items(endpoint, &["addresses"]))
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    list_with_more(addresses)
}

/// Upstream's `listWithMoreString`.
fn list_with_more(all: Vec<String>) -> String {
    const MAX: usize = 3;
    if all.len() > MAX {
        format!("{} + {} more...", all[..MAX].join(","), all.len() - MAX)
    } else if all.is_empty() {
        "<unset>".to_owned()
    } else {
        all.join(",")
    }
}

fn event_cells(event: &Value, now: i128) -> Vec<Value> {
    let timestamp = |path: &[&str]| {
        value_at(event, path)
            .and_then(Value::as_str)
            .and_then(parse_rfc3339)
    };
    let first_seen = match timestamp(&["firstTimestamp"]) {
        Some(first) => since(Some(first), now),
        None => since(timestamp(&["eventTime"]), now),
    };
    let mut last_seen = match timestamp(&["lastTimestamp"]) {
        Some(last) => since(Some(last), now),
        None => first_seen.clone(),
    };
    let mut count = int(event, &["count"]);
    if let Some(series) = value_at(event, &["series"]).filter(|series| !series.is_null()) {
        last_seen = since(
            value_at(series, &["lastObservedTime"])
                .and_then(Value::as_str)
                .and_then(parse_rfc3339),
            now,
        );
        count = int(series, &["count"]);
    } else if count == 0 {
        // Singleton events of the new API carry no count.
        count = 1;
    }

    let kind = text(event, &["involvedObject", "kind"]).to_lowercase();
    let involved_name = text(event, &["involvedObject", "name"]);
    let target = if involved_name.is_empty() {
        kind
    } else {
        format!("{kind}/{involved_name}")
    };

    let first_non_empty = |a: &str, b: &str| if a.is_empty() { b } else { a }.to_owned();
    let component = first_non_empty(
        text(event, &["source", "component"]),
        text(event, &["reportingComponent"]),
    );
    let instance = first_non_empty(
        text(event, &["source", "host"]),
        text(event, &["reportingInstance"]),
    );
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };

    vec![
        last_seen.into(),
        text(event, &["type"]).into(),
        text(event, &["reason"]).into(),
        target.into(),
        text(event, &["involvedObject", "fieldPath"]).into(),
        source.into(),
        text(event, &["message"]).trim().into(),
        first_seen.into(),
        count.into(),
        name(event),
    ]
}

// ---------------------------------------------------------------------------------------------
// JSON access
// ---------------------------------------------------------------------------------------------

fn value_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(object, |value, segment| value.get(segment))
}

/// A string field; `""` when absent or not a string.
fn text<'a>(object: &'a Value, path: &[&str]) -> &'a str {
    value_at(object, path)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// An integer field; 0 when absent.
fn int(object: &Value, path: &[&str]) -> i64 {
    value_at(object, path).and_then(Value::as_i64).unwrap_or(0)
}

/// A boolean field; false when absent.
fn flag(object: &Value, path: &[&str]) -> bool {
    value_at(object, path)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// An array field; empty when absent.
fn items<'a>(object: &'a Value, path: &[&str]) -> &'a [Value] {
    value_at(object, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The number of keys of a map field; 0 when absent.
fn object_len(object: &Value, path: &[&str]) -> usize {
    value_at(object, path)
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len)
}

fn or_none(value: &str) -> String {
    if value.is_empty() {
        "<none>".to_owned()
    } else {
        value.to_owned()
    }
}

fn name(object: &Value) -> Value {
    text(object, &["metadata", "name"]).into()
}

fn age(object: &Value, now: i128) -> Value {
    since(creation_timestamp(object), now).into()
}

fn creation_timestamp(object: &Value) -> Option<i128> {
    value_at(object, &["metadata", "creationTimestamp"])
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
}

/// The default table's "Created At": the creation time in RFC 3339, UTC, whole seconds (Go's
/// zero time when unset, as upstream prints it).
fn created_at(object: &Value) -> String {
    format_rfc3339(creation_timestamp(object).unwrap_or(ZERO_TIME))
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

const NANOS_PER_SECOND: i128 = 1_000_000_000;
/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in nanoseconds since the Unix epoch.
const ZERO_TIME: i128 = -62_135_596_800 * NANOS_PER_SECOND;

fn unix_nanos(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

/// Upstream's `translateTimestampSince`: `<unknown>` for a missing or zero time.
fn since(timestamp: Option<i128>, now: i128) -> String {
    match timestamp {
        Some(timestamp) if timestamp != ZERO_TIME => human_duration(now - timestamp),
        _ => "<unknown>".to_owned(),
    }
}

/// Upstream's `duration.HumanDuration` of a duration in nanoseconds.
fn human_duration(nanos: i128) -> String {
    let seconds = nanos / NANOS_PER_SECOND;
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let rest = seconds % 60;
        return if rest == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{rest}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let rest = minutes % 60;
        return if rest == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{rest}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let rest = hours % 24;
        return if rest == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{rest}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let rest = (hours / 24) % 365;
        return if rest == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{rest}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// An RFC 3339 timestamp (`2024-05-01T10:00:00Z`, `…T10:00:00.123456Z`, `…+02:00`) as
/// nanoseconds since the Unix epoch.
fn parse_rfc3339(text: &str) -> Option<i128> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let separators_ok = bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators_ok {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: i128 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if digits == 0 {
            return None;
        }
        for (index, digit) in fraction[..digits].bytes().take(9).enumerate() {
            nanos += i128::from(digit - b'0') * 10i128.pow(8 - index as u32);
        }
        rest = &fraction[digits..];
    }
    let offset_seconds: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let offset = rest.get(1..)?;
            let (hours, minutes) = offset.split_once(':')?;
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            sign * (hours.parse::<i64>().ok()? * 3600 + minutes.parse::<i64>().ok()? * 60)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_seconds;
    Some(i128::from(seconds) * NANOS_PER_SECOND + nanos)
}

/// RFC 3339 in UTC with whole seconds (Go's `time.RFC3339` of a UTC time).
fn format_rfc3339(nanos: i128) -> String {
    let seconds = nanos.div_euclid(NANOS_PER_SECOND);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2024-05-01T12:00:00Z.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_714_564_800)
    }

    fn ago(seconds: u64) -> String {
        format_rfc3339(unix_nanos(now() - Duration::from_secs(seconds)))
    }

    fn cell(kind: &str, object: &Value, column: &str) -> Value {
        let index = column_definitions(kind)
            .iter()
            .position(|definition| definition["name"] == column)
            .unwrap_or_else(|| panic!("{kind} has no column {column}"));
        cells(kind, object, now())[index].clone()
    }

    fn running(name: &str, ready: bool) -> Value {
        json!({"name": name, "ready": ready, "restartCount": 0, "state": {"running": {"startedAt": ago(60)}}})
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(200)},
            "spec": {"containers": [{"name": "app", "image": "nginx"}, {"name": "sidecar", "image": "envoy"}]},
            "status": status,
        })
    }

    #[test]
    fn human_age_follows_upstream_thresholds() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (90, "90s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (599, "9m59s"),
            (600, "10m"),
            (659, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 30 * 60, "3h30m"),
            (8 * 3600 - 60, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86_400 - 3600, "7d23h"),
            (8 * 86_400, "8d"),
            (729 * 86_400, "729d"),
            (730 * 86_400, "2y"),
            (731 * 86_400, "2y1d"),
            (8 * 365 * 86_400, "8y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(
                human_age(Some(&ago(seconds)), now()),
                expected,
                "{seconds}s"
            );
        }
    }

    #[test]
    fn human_age_of_missing_future_and_unparseable_timestamps() {
        assert_eq!(human_age(None, now()), "<unknown>");
        assert_eq!(human_age(Some("yesterday"), now()), "<unknown>");
        assert_eq!(human_age(Some("0001-01-01T00:00:00Z"), now()), "<unknown>");
        let one_second_ahead = format_rfc3339(unix_nanos(now() + Duration::from_secs(1)));
        assert_eq!(human_age(Some(&one_second_ahead), now()), "0s");
        let far_ahead = format_rfc3339(unix_nanos(now() + Duration::from_secs(30)));
        assert_eq!(human_age(Some(&far_ahead), now()), "<invalid>");
    }

    #[test]
    fn rfc3339_round_trips_and_honours_offsets_and_fractions() {
        let parsed = parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(parsed, unix_nanos(now()));
        assert_eq!(format_rfc3339(parsed), "2024-05-01T12:00:00Z");
        assert_eq!(
            parse_rfc3339("2024-05-01T14:00:00+02:00"),
            Some(unix_nanos(now()))
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00.250000Z"),
            Some(unix_nanos(now()) + 250_000_000)
        );
        assert_eq!(format_rfc3339(ZERO_TIME), "0001-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2024-05-01 12:00"), None);
    }

    #[test]
    fn pod_with_one_of_two_containers_ready_is_running_1_of_2() {
        let pod = pod(json!({
            "phase": "Running",
            "podIPs": [{"ip": "10.0.0.7"}],
            "containerStatuses": [running("app", true), running("sidecar", false)],
        }));
        let row = cells("Pod", &pod, now());
        assert_eq!(row[0], "web");
        assert_eq!(row[1], "1/2");
        assert_eq!(row[2], "Running");
        assert_eq!(row[3], "0");
        assert_eq!(row[4], "3m20s");
        assert_eq!(row[5], "10.0.0.7");
        assert_eq!(row[6], "<none>");
        assert_eq!(row[7], "<none>");
        assert_eq!(row[8], "<none>");
    }

    #[test]
    fn new_pod_is_pending() {
        let pod = pod(json!({"phase": "Pending"}));
        assert_eq!(cell("Pod", &pod, "Ready"), "0/2");
        assert_eq!(cell("Pod", &pod, "Status"), "Pending");
        assert_eq!(cell("Pod", &pod, "IP"), "<none>");
    }

    #[test]
    fn finished_pod_is_completed() {
        let terminated = |name: &str| {
            json!({"name": name, "ready": false, "restartCount": 0,
                   "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}})
        };
        let pod = pod(json!({
            "phase": "Succeeded",
            "containerStatuses": [terminated("app"), terminated("sidecar")],
        }));
        assert_eq!(cell("Pod", &pod, "Status"), "Completed");
        assert_eq!(cell("Pod", &pod, "Ready"), "0/2");
    }

    #[test]
    fn completed_container_beside_a_running_one_reads_running_or_not_ready() {
        let status = |conditions: Value| {
            json!({
                "phase": "Running",
                "conditions": conditions,
                "containerStatuses": [
                    {"name": "app", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    running("sidecar", true),
                ],
            })
        };
        let ready = pod(status(json!([{"type": "Ready", "status": "True"}])));
        assert_eq!(cell("Pod", &ready, "Status"), "Running");
        let not_ready = pod(status(json!([])));
        assert_eq!(cell("Pod", &not_ready, "Status"), "NotReady");
    }

    #[test]
    fn waiting_reason_and_restarts_with_last_restart_age() {
        let pod = pod(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 5,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}},
                running("sidecar", true),
            ],
        }));
        assert_eq!(cell("Pod", &pod, "Status"), "CrashLoopBackOff");
        assert_eq!(cell("Pod", &pod, "Restarts"), "5 (5m ago)");
        assert_eq!(cell("Pod", &pod, "Ready"), "1/2");
    }

    #[test]
    fn terminated_without_reason_shows_exit_code_or_signal() {
        let pod_exiting = |terminated: Value| {
            pod(json!({"phase": "Running", "containerStatuses": [
                {"name": "app", "state": {"terminated": terminated}}
            ]}))
        };
        assert_eq!(
            cell("Pod", &pod_exiting(json!({"exitCode": 137})), "Status"),
            "ExitCode:137"
        );
        assert_eq!(
            cell(
                "Pod",
                &pod_exiting(json!({"exitCode": 137, "signal": 9})),
                "Status"
            ),
            "Signal:9"
        );
    }

    #[test]
    fn deleted_pod_is_terminating_unless_finished() {
        let mut running_pod =
            pod(json!({"phase": "Running", "containerStatuses": [running("app", true)]}));
        running_pod["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(cell("Pod", &running_pod, "Status"), "Terminating");
        let mut finished = pod(json!({"phase": "Succeeded"}));
        finished["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(cell("Pod", &finished, "Status"), "Succeeded");
        let mut lost = pod(json!({"phase": "Running", "reason": "NodeLost"}));
        lost["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(cell("Pod", &lost, "Status"), "Unknown");
    }

    #[test]
    fn init_containers_report_progress() {
        let mut pod = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "migrate", "state": {"running": {}}},
            ],
            "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}},
            ],
        }));
        pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "migrate"}]);
        assert_eq!(cell("Pod", &pod, "Status"), "Init:0/1");
        pod["status"]["initContainerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "ImagePullBackOff"}});
        assert_eq!(cell("Pod", &pod, "Status"), "Init:ImagePullBackOff");
        pod["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 3}});
        assert_eq!(cell("Pod", &pod, "Status"), "Init:ExitCode:3");
    }

    #[test]
    fn started_sidecar_init_container_counts_towards_ready() {
        let mut pod = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [
                {"name": "proxy", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}},
            ],
            "containerStatuses": [running("app", true), running("sidecar", true)],
        }));
        pod["spec"]["initContainers"] =
            json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]);
        assert_eq!(cell("Pod", &pod, "Ready"), "3/3");
        assert_eq!(cell("Pod", &pod, "Status"), "Running");
        assert_eq!(cell("Pod", &pod, "Restarts"), "1");
    }

    #[test]
    fn scheduling_gated_and_readiness_gates() {
        let mut pod = pod(json!({
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"},
                {"type": "example.com/lb", "status": "True"}
            ],
        }));
        pod["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]);
        assert_eq!(cell("Pod", &pod, "Status"), "SchedulingGated");
        assert_eq!(cell("Pod", &pod, "Readiness Gates"), "1/2");
    }

    fn service(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": ago(30)}, "spec": spec, "status": status})
    }

    #[test]
    fn service_ports_and_cluster_ip() {
        let cluster_ip = service(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                   "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                   "selector": {"tier": "front", "app": "web"}}),
            json!({}),
        );
        assert_eq!(
            cells("Service", &cluster_ip, now()),
            vec![
                json!("web"),
                json!("ClusterIP"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP,53/UDP"),
                json!("30s"),
                json!("app=web,tier=front"),
            ]
        );
        let node_port = service(
            json!({"type": "NodePort", "clusterIPs": ["10.96.0.11"],
                   "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(cell("Service", &node_port, "Port(s)"), "80:30080/TCP");
        assert_eq!(cell("Service", &node_port, "Selector"), "<none>");
        let headless = service(
            json!({"clusterIP": "None", "clusterIPs": ["None"]}),
            json!({}),
        );
        assert_eq!(cell("Service", &headless, "Port(s)"), "<none>");
        assert_eq!(cell("Service", &headless, "Cluster-IP"), "None");
    }

    #[test]
    fn load_balancer_external_ip_is_pending_until_ingress() {
        let pending = service(
            json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"],
                   "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
            json!({"loadBalancer": {}}),
        );
        assert_eq!(cell("Service", &pending, "External-IP"), "<pending>");
        let assigned = service(
            json!({"type": "LoadBalancer", "externalIPs": ["192.0.2.9"]}),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}]}}),
        );
        assert_eq!(
            cell("Service", &assigned, "External-IP"),
            "203.0.113.7,lb.example.com,192.0.2.9"
        );
        let external_name = service(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        assert_eq!(
            cell("Service", &external_name, "External-IP"),
            "db.example.com"
        );
        assert_eq!(cell("Service", &external_name, "Cluster-IP"), "<none>");
    }

    #[test]
    fn deployment_and_replica_set_rows() {
        let deployment = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(7200)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1"}, {"name": "log", "image": "fluent"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        });
        assert_eq!(
            cells("Deployment", &deployment, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("120m"),
                json!("app,log"),
                json!("nginx:1,fluent"),
                json!("app=web"),
            ]
        );
        let replica_set = json!({
            "metadata": {"name": "web-abc"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}}},
            "status": {"replicas": 3, "readyReplicas": 1},
        });
        let row = cells("ReplicaSet", &replica_set, now());
        assert_eq!(row[1..4], [json!(3), json!(3), json!(1)]);
        assert_eq!(row[4], "<unknown>");
        assert_eq!(row[7], "app=web,pod-template-hash=abc");
    }

    #[test]
    fn daemon_set_row_shows_node_selector() {
        let daemon_set = json!({
            "metadata": {"name": "proxy", "creationTimestamp": ago(10)},
            "spec": {"selector": {"matchLabels": {"app": "proxy"}},
                     "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                           "containers": [{"name": "proxy", "image": "skiff-proxy"}]}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                       "updatedNumberScheduled": 2, "numberAvailable": 1},
        });
        assert_eq!(
            cells("DaemonSet", &daemon_set, now()),
            vec![
                json!("proxy"),
                json!(2),
                json!(2),
                json!(1),
                json!(2),
                json!(1),
                json!("kubernetes.io/os=linux"),
                json!("10s"),
                json!("proxy"),
                json!("skiff-proxy"),
                json!("app=proxy"),
            ]
        );
    }

    #[test]
    fn node_row_status_roles_and_addresses() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": ago(86_400 * 3),
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.35.0", "osImage": "Debian GNU/Linux 13", "kernelVersion": "6.12.0", "containerRuntimeVersion": "containerd://2.1.0"}
            }
        });
        assert_eq!(
            cells("Node", &node, now()),
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("3d"),
                json!("v1.35.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 13"),
                json!("6.12.0"),
                json!("containerd://2.1.0"),
            ]
        );
        let bare = json!({"metadata": {"name": "n2"}});
        let row = cells("Node", &bare, now());
        assert_eq!(row[1], "Unknown");
        assert_eq!(row[2], "<none>");
        assert_eq!(row[7], "<unknown>");
    }

    #[test]
    fn endpoints_and_slices_list_three_then_more() {
        let endpoints = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}],
            "ports": [{"port": 8080}]
        }]});
        assert_eq!(
            cell("Endpoints", &endpoints, "Endpoints"),
            "10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 1 more..."
        );
        assert_eq!(
            cell(
                "Endpoints",
                &json!({"metadata": {"name": "x"}}),
                "Endpoints"
            ),
            "<none>"
        );
        let slice = json!({"metadata": {"name": "web-x"}, "addressType": "IPv4",
            "ports": [{"port": 8080}, {"name": "metrics"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        assert_eq!(
            cells("EndpointSlice", &slice, now())[1..4],
            [
                json!("IPv4"),
                json!("8080,metrics,*"),
                json!("10.0.0.1,10.0.0.2")
            ]
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
        assert_eq!(cell("EndpointSlice", &empty, "Endpoints"), "<unset>");
    }

    #[test]
    fn event_row_like_kubectl_get_events() {
        let event = json!({
            "metadata": {"name": "web.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "  Container image pulled\n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(30), "count": 4,
        });
        assert_eq!(
            cells("Event", &event, now()),
            vec![
                json!("30s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, n1"),
                json!("Container image pulled"),
                json!("10m"),
                json!(4),
                json!("web.17a"),
            ]
        );
        let new_api = json!({
            "metadata": {"name": "e2"}, "involvedObject": {"kind": "Node"},
            "eventTime": ago(5), "reportingComponent": "skiff-scheduler", "reportingInstance": "cp-1",
        });
        let row = cells("Event", &new_api, now());
        assert_eq!(row[0], "5s");
        assert_eq!(row[3], "node");
        assert_eq!(row[5], "skiff-scheduler, cp-1");
        assert_eq!(row[8], 1);
    }

    #[test]
    fn small_kinds() {
        let config_map = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cell("ConfigMap", &config_map, "Data"), 3);
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            cells("Secret", &secret, now())[1..3],
            [json!("Opaque"), json!(1)]
        );
        let account = json!({"metadata": {"name": "default"}, "secrets": [{"name": "t"}]});
        assert_eq!(cell("ServiceAccount", &account, "Secrets"), 1);
        let namespace = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
        assert_eq!(cell("Namespace", &namespace, "Status"), "Active");
        let lease =
            json!({"metadata": {"name": "skiff-scheduler"}, "spec": {"holderIdentity": "cp-1"}});
        assert_eq!(cell("Lease", &lease, "Holder"), "cp-1");
    }

    #[test]
    fn unknown_kind_gets_the_default_table() {
        let definitions = column_definitions("Widget");
        assert_eq!(definitions.len(), 2);
        assert_eq!(definitions[0]["name"], "Name");
        assert_eq!(definitions[0]["format"], "name");
        assert_eq!(definitions[1]["name"], "Created At");
        assert_eq!(definitions[1]["type"], "date");
        let widget =
            json!({"metadata": {"name": "w", "creationTimestamp": "2024-05-01T14:00:00.5+02:00"}});
        assert_eq!(
            cells("Widget", &widget, now()),
            vec![json!("w"), json!("2024-05-01T12:00:00Z")]
        );
        let undated = json!({"metadata": {"name": "w"}});
        assert_eq!(cells("Widget", &undated, now())[1], "0001-01-01T00:00:00Z");
    }

    #[test]
    fn every_served_kind_has_one_cell_per_column_and_upstream_shapes() {
        let kinds = [
            "Namespace",
            "Node",
            "Pod",
            "Service",
            "Endpoints",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Event",
            "EndpointSlice",
            "Deployment",
            "ReplicaSet",
            "DaemonSet",
            "Lease",
        ];
        for kind in kinds {
            let definitions = column_definitions(kind);
            assert_eq!(
                cells(kind, &json!({}), now()).len(),
                definitions.len(),
                "{kind}"
            );
            for definition in &definitions {
                for field in ["name", "type", "format", "description", "priority"] {
                    assert!(
                        definition.get(field).is_some(),
                        "{kind} column lacks {field}"
                    );
                }
            }
            if kind != "Event" {
                assert_eq!(definitions[0]["format"], "name", "{kind}");
            }
        }
        let names: Vec<Value> = column_definitions("Pod")
            .iter()
            .map(|definition| definition["name"].clone())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let priorities: Vec<Value> = column_definitions("Pod")
            .iter()
            .map(|definition| definition["priority"].clone())
            .collect();
        assert_eq!(priorities, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
    }
}
