//! Upstream's defaults for the served kinds: what `SetDefaults_*` (core/v1, apps/v1,
//! discovery/v1), the create strategies (`PrepareForCreate`) and the defaulting admission
//! plugins (ServiceAccount, Priority) leave in an object before it is validated.
//!
//! Owns only the filling-in of unset fields, in place on the decoded JSON; it never
//! overwrites a value the client set and never reports errors (validation does). Pure: no
//! HTTP, no store, no allocation (ClusterIPs and node ports are the allocator's). The
//! create-strategy parts (pod status, namespace finalizers and phase) apply only when the
//! field is absent, so running this again on an update keeps what is stored.

use base64::Engine;
use serde_json::{Map, Value, json};

/// Applies upstream's defaults for `kind` (as kube-apiserver's defaulting + create strategy
/// do) in place. Unknown kinds are left alone.
pub fn apply_defaults(kind: &str, object: &mut Value) {
    match kind {
        "Pod" => default_pod(object),
        "Service" => default_service(object),
        "Endpoints" => default_endpoints(object),
        "EndpointSlice" => default_endpoint_slice(object),
        "Namespace" => default_namespace(object),
        "Secret" => default_secret(object),
        "Node" => default_node(object),
        "Deployment" => default_deployment(object),
        "ReplicaSet" => default_replica_set(object),
        "DaemonSet" => default_daemon_set(object),
        _ => {}
    }
}

/// The object map at `field` of `parent`, created (replacing a non-object) when missing.
fn object_at<'a>(parent: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    if !parent.is_object() {
        *parent = Value::Object(Map::new());
    }
    let entry = &mut parent[field];
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// Sets `field` to `value` unless it holds something other than null or `""`.
fn set_default(map: &mut Map<String, Value>, field: &str, value: Value) {
    let unset = match map.get(field) {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.is_empty(),
        Some(_) => false,
    };
    if unset {
        map.insert(field.to_owned(), value);
    }
}

/// The mutable items of the list at `field`, if any.
fn items_mut<'a>(
    map: &'a mut Map<String, Value>,
    field: &str,
) -> impl Iterator<Item = &'a mut Value> {
    map.get_mut(field)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

// Pods.

fn default_pod(pod: &mut Value) {
    let spec = object_at(pod, "spec");
    default_pod_spec(spec);
    // The ServiceAccount and Priority admission plugins.
    set_default(spec, "serviceAccountName", json!("default"));
    let account = spec
        .get("serviceAccountName")
        .cloned()
        .unwrap_or_else(|| json!("default"));
    set_default(spec, "serviceAccount", account);
    if spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty()
    {
        set_default(spec, "priority", json!(0));
    }
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let qos_class = qos_class(&Value::Object(spec.clone()));
    // The create strategy: a new pod is Pending with its QoS class.
    let status = object_at(pod, "status");
    set_default(status, "phase", json!("Pending"));
    set_default(status, "qosClass", json!(qos_class));
}

/// `SetDefaults_PodSpec` and the defaults of everything inside it; shared with templates.
fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for field in ["containers", "initContainers"] {
        for container in items_mut(spec, field) {
            default_container(container, host_network);
        }
    }
    for container in items_mut(spec, "ephemeralContainers") {
        default_container(container, false);
    }
    for volume in items_mut(spec, "volumes") {
        default_volume(volume);
    }
    if let Some(resources) = spec.get_mut("resources") {
        default_requests_from_limits(resources);
    }
}

/// `SetDefaults_Container` and its ports, probes, env and resources.
fn default_container(container: &mut Value, host_network: bool) {
    let Some(fields) = container.as_object_mut() else {
        return;
    };
    let image = fields
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pull_policy = if image_tag(image).as_deref() == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(fields, "imagePullPolicy", json!(pull_policy));
    set_default(
        fields,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    set_default(fields, "terminationMessagePolicy", json!("File"));
    set_default(fields, "resources", json!({}));
    for port in items_mut(fields, "ports") {
        let Some(port) = port.as_object_mut() else {
            continue;
        };
        set_default(port, "protocol", json!("TCP"));
        if host_network && port.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
            let container_port = port.get("containerPort").cloned().unwrap_or(Value::Null);
            port.insert("hostPort".to_owned(), container_port);
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(probe)) = fields.get_mut(probe) {
            set_default(probe, "timeoutSeconds", json!(1));
            set_default(probe, "periodSeconds", json!(10));
            set_default(probe, "successThreshold", json!(1));
            set_default(probe, "failureThreshold", json!(3));
            default_http_get(probe);
        }
    }
    if let Some(Value::Object(lifecycle)) = fields.get_mut("lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(Value::Object(handler)) = lifecycle.get_mut(hook) {
                default_http_get(handler);
            }
        }
    }
    for variable in items_mut(fields, "env") {
        if let Some(Value::Object(field_ref)) = variable.pointer_mut("/valueFrom/fieldRef") {
            set_default(field_ref, "apiVersion", json!("v1"));
        }
    }
    if let Some(resources) = fields.get_mut("resources") {
        default_requests_from_limits(resources);
    }
}

/// `SetDefaults_HTTPGetAction`.
fn default_http_get(handler: &mut Map<String, Value>) {
    if let Some(Value::Object(http_get)) = handler.get_mut("httpGet") {
        set_default(http_get, "path", json!("/"));
        set_default(http_get, "scheme", json!("HTTP"));
    }
}

/// Requests default to the limits for every resource with a limit and no request.
fn default_requests_from_limits(resources: &mut Value) {
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let requests = object_at(resources, "requests");
    for (name, limit) in limits {
        requests.entry(name).or_insert(limit);
    }
}

/// The tag `ParseImageName` finds: `latest` when neither a tag nor a digest is given, `None`
/// when the reference does not parse (upstream then defaults to IfNotPresent).
fn image_tag(image: &str) -> Option<String> {
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last_segment_start = name.rfind('/').map_or(0, |slash| slash + 1);
    let (repository, tag) = match name[last_segment_start..].rfind(':') {
        Some(colon) => {
            let colon = last_segment_start + colon;
            (&name[..colon], Some(&name[colon + 1..]))
        }
        None => (name, None),
    };
    // The path (not the registry host) of a reference must be lower case.
    let path = repository
        .split_once('/')
        .map_or(repository, |(host, path)| {
            if host.contains(['.', ':']) || host == "localhost" {
                path
            } else {
                repository
            }
        });
    if path.chars().any(|character| character.is_ascii_uppercase()) {
        return None;
    }
    match (tag, digest) {
        (Some(tag), _) => Some(tag.to_owned()),
        (None, Some(_)) => Some(String::new()),
        (None, None) => Some("latest".to_owned()),
    }
}

/// `SetDefaults_Volume` and the file-mode defaults of the projected sources.
fn default_volume(volume: &mut Value) {
    let Some(fields) = volume.as_object_mut() else {
        return;
    };
    let has_source = fields
        .iter()
        .any(|(field, value)| field != "name" && !value.is_null());
    if !has_source {
        fields.insert("emptyDir".to_owned(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(Value::Object(source)) = fields.get_mut(source) {
            set_default(source, "defaultMode", json!(0o644));
        }
    }
    if let Some(Value::Object(host_path)) = fields.get_mut("hostPath") {
        set_default(host_path, "type", json!(""));
    }
    if let Some(Value::Object(downward)) = fields.get_mut("downwardAPI") {
        for item in items_mut(downward, "items") {
            if let Some(Value::Object(field_ref)) = item.get_mut("fieldRef") {
                set_default(field_ref, "apiVersion", json!("v1"));
            }
        }
    }
}

/// The pod's QoS class (`ComputePodQOS`) from its (defaulted) container resources, or from
/// the pod-level resources when those are set.
fn qos_class(spec: &Value) -> &'static str {
    const COMPUTE: [&str; 2] = ["cpu", "memory"];
    let mut requests = [0i128; 2];
    let mut limits = [0i128; 2];
    let mut has_request = [false; 2];
    let mut has_limit = [false; 2];
    let mut guaranteed = true;
    let mut account = |resources: &Value, guaranteed: &mut bool| {
        let mut limited = [false; 2];
        for (position, name) in COMPUTE.iter().enumerate() {
            if let Some(request) = resources["requests"][*name]
                .as_str()
                .and_then(quantity_nanos)
                && request > 0
            {
                requests[position] += request;
                has_request[position] = true;
            }
            if let Some(limit) = resources["limits"][*name].as_str().and_then(quantity_nanos)
                && limit > 0
            {
                limits[position] += limit;
                has_limit[position] = true;
                limited[position] = true;
            }
        }
        if !limited.iter().all(|limited| *limited) {
            *guaranteed = false;
        }
    };
    let pod_level = &spec["resources"];
    let pod_level_set = pod_level["requests"]
        .as_object()
        .is_some_and(|map| !map.is_empty())
        || pod_level["limits"]
            .as_object()
            .is_some_and(|map| !map.is_empty());
    if pod_level_set {
        account(pod_level, &mut guaranteed);
    } else {
        for field in ["containers", "initContainers"] {
            for container in spec[field].as_array().into_iter().flatten() {
                account(&container["resources"], &mut guaranteed);
            }
        }
    }
    let request_count = has_request.iter().filter(|has| **has).count();
    let limit_count = has_limit.iter().filter(|has| **has).count();
    if request_count == 0 && limit_count == 0 {
        return "BestEffort";
    }
    let requests_match_limits = (0..COMPUTE.len())
        .filter(|position| has_request[*position])
        .all(|position| has_limit[position] && limits[position] == requests[position]);
    if guaranteed && requests_match_limits && request_count == limit_count {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A resource quantity (`100m`, `1.5Gi`, `2e3`) in billionths, `None` when it does not parse
/// or overflows.
fn quantity_nanos(quantity: &str) -> Option<i128> {
    let quantity = quantity.trim();
    let number_end = quantity
        .find(|character: char| {
            !(character.is_ascii_digit() || matches!(character, '.' | '+' | '-'))
        })
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(number_end);
    let (negative, number) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    let mut scale: i32 = -i32::try_from(fraction.len()).ok()?;
    let mut binary: i128 = 1;
    match suffix {
        "" => {}
        "n" => scale -= 9,
        "u" => scale -= 6,
        "m" => scale -= 3,
        "k" => scale += 3,
        "M" => scale += 6,
        "G" => scale += 9,
        "T" => scale += 12,
        "P" => scale += 15,
        "E" => scale += 18,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = 1 + ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
                .iter()
                .position(|candidate| *candidate == suffix)
                .unwrap_or(0);
            binary = 1i128 << (10 * power);
        }
        exponent => {
            let exponent = exponent.strip_prefix(['e', 'E'])?;
            scale += exponent.parse::<i32>().ok()?;
        }
    }
    // Billionths: shift the decimal scale by nine.
    scale += 9;
    let mut value = mantissa.checked_mul(binary)?;
    if scale >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)?;
    } else {
        value /= 10i128.checked_pow(u32::try_from(-scale).ok()?)?;
    }
    Some(if negative { -value } else { value })
}

// Services and endpoints.

fn default_service(service: &mut Value) {
    let spec = object_at(service, "spec");
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|config| config["clientIP"]["timeoutSeconds"].as_i64());
            if timeout.is_none() {
                spec.insert(
                    "sessionAffinityConfig".to_owned(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    for port in items_mut(spec, "ports") {
        let Some(port) = port.as_object_mut() else {
            continue;
        };
        set_default(port, "protocol", json!("TCP"));
        let target_unset = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(name)) => name.is_empty(),
            Some(Value::Number(number)) => number.as_i64() == Some(0),
            Some(_) => false,
        };
        if target_unset {
            let number = port.get("port").cloned().unwrap_or(Value::Null);
            port.insert("targetPort".to_owned(), number);
        }
    }
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|ips| !ips.is_empty());
    let externally_accessible = matches!(service_type.as_str(), "NodePort" | "LoadBalancer")
        || (service_type == "ClusterIP" && has_external_ips);
    if externally_accessible {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(
        service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if service_type != "ExternalName" {
        default_service_ip_families(spec);
    }
}

/// The single-stack (IPv4) cluster's IP family fields, and `clusterIPs` from `clusterIP`.
fn default_service_ip_families(spec: &mut Map<String, Value>) {
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let cluster_ips_unset = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if !cluster_ip.is_empty() && cluster_ips_unset {
        spec.insert("clusterIPs".to_owned(), json!([cluster_ip]));
    }
    let has_selector = spec
        .get("selector")
        .and_then(Value::as_object)
        .is_some_and(|selector| !selector.is_empty());
    // Headless services without a selector take every family the cluster has.
    let policy = if cluster_ip == "None" && !has_selector {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    set_default(spec, "ipFamilyPolicy", json!(policy));
    let families_unset = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if families_unset {
        let family = if cluster_ip.contains(':') {
            "IPv6"
        } else {
            "IPv4"
        };
        spec.insert("ipFamilies".to_owned(), json!([family]));
    }
}

fn default_endpoints(endpoints: &mut Value) {
    let Some(subsets) = endpoints.get_mut("subsets").and_then(Value::as_array_mut) else {
        return;
    };
    for subset in subsets {
        let Some(ports) = subset.get_mut("ports").and_then(Value::as_array_mut) else {
            continue;
        };
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", json!("TCP"));
        }
    }
}

fn default_endpoint_slice(slice: &mut Value) {
    let Some(ports) = slice.get_mut("ports").and_then(Value::as_array_mut) else {
        return;
    };
    for port in ports.iter_mut().filter_map(Value::as_object_mut) {
        port.entry("name").or_insert(json!(""));
        set_default(port, "protocol", json!("TCP"));
    }
}

// Namespaces, Secrets, Nodes.

fn default_namespace(namespace: &mut Value) {
    let name = namespace["metadata"]["name"].as_str().map(str::to_owned);
    if let Some(name) = name.filter(|name| !name.is_empty()) {
        let metadata = object_at(namespace, "metadata");
        let labels = object_at_map(metadata, "labels");
        labels.insert("kubernetes.io/metadata.name".to_owned(), json!(name));
    }
    let spec = object_at(namespace, "spec");
    // Absent only: an empty list is the namespace controller's "finalized", kept on updates.
    if spec.get("finalizers").is_none_or(Value::is_null) {
        spec.insert("finalizers".to_owned(), json!(["kubernetes"]));
    }
    let status = object_at(namespace, "status");
    set_default(status, "phase", json!("Active"));
}

/// Like `object_at`, for a map inside a map.
fn object_at_map<'a>(map: &'a mut Map<String, Value>, field: &str) -> &'a mut Map<String, Value> {
    let entry = map
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(inner) => inner,
        _ => unreachable!("just made an object"),
    }
}

/// `type: Opaque`, and `stringData` merged into `data` (as the v1 conversion does).
fn default_secret(secret: &mut Value) {
    let Some(fields) = secret.as_object_mut() else {
        return;
    };
    set_default(fields, "type", json!("Opaque"));
    let Some(Value::Object(string_data)) = fields.remove("stringData") else {
        return;
    };
    let data = object_at_map(fields, "data");
    for (key, value) in string_data {
        let text = value.as_str().unwrap_or_default();
        let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        data.insert(key, json!(encoded));
    }
}

/// `SetDefaults_NodeStatus`: allocatable defaults to capacity.
fn default_node(node: &mut Value) {
    let Some(capacity) = node["status"]["capacity"].as_object().cloned() else {
        return;
    };
    let status = object_at(node, "status");
    if status.get("allocatable").is_none_or(Value::is_null) {
        status.insert("allocatable".to_owned(), Value::Object(capacity));
    }
}

// apps/v1 workloads.

/// The pod template's spec defaults (no admission defaults: templates are not pods).
fn default_template(spec: &mut Map<String, Value>) {
    let template = object_at_map(spec, "template");
    let pod_spec = object_at_map(template, "spec");
    default_pod_spec(pod_spec);
}

fn default_deployment(deployment: &mut Value) {
    let spec = object_at(deployment, "spec");
    set_default(spec, "replicas", json!(1));
    let strategy = object_at_map(spec, "strategy");
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let rolling = object_at_map(strategy, "rollingUpdate");
        set_default(rolling, "maxUnavailable", json!("25%"));
        set_default(rolling, "maxSurge", json!("25%"));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    default_template(spec);
}

fn default_replica_set(replica_set: &mut Value) {
    let spec = object_at(replica_set, "spec");
    set_default(spec, "replicas", json!(1));
    default_template(spec);
}

fn default_daemon_set(daemon_set: &mut Value) {
    let spec = object_at(daemon_set, "spec");
    let strategy = object_at_map(spec, "updateStrategy");
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let rolling = object_at_map(strategy, "rollingUpdate");
        set_default(rolling, "maxUnavailable", json!(1));
        set_default(rolling, "maxSurge", json!(0));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    default_template(spec);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(kind: &str, mut object: Value) -> Value {
        apply_defaults(kind, &mut object);
        object
    }

    fn pod_with(resources: Value) -> Value {
        defaulted(
            "Pod",
            json!({"metadata": {"name": "p", "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27", "resources": resources}]}}),
        )
    }

    #[test]
    fn pods_get_upstreams_spec_defaults_and_pending_status() {
        let pod = defaulted(
            "Pod",
            json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["serviceAccount"], "default");
        let container = &spec["containers"][0];
        assert_eq!(container["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(container["terminationMessagePolicy"], "File");
        assert_eq!(container["imagePullPolicy"], "Always");
        assert_eq!(container["ports"][0]["protocol"], "TCP");
        assert_eq!(container["resources"], json!({}));
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        assert!(spec.get("tolerations").is_none());
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("registry.example:5000/team/app", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("registry.example:5000/team/app:v2", "IfNotPresent"),
            (
                "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "IfNotPresent",
            ),
        ] {
            let pod = defaulted(
                "Pod",
                json!({"spec": {"containers": [{"name": "c", "image": image}]}}),
            );
            assert_eq!(
                pod["spec"]["containers"][0]["imagePullPolicy"], policy,
                "{image}"
            );
        }
    }

    #[test]
    fn set_fields_are_kept() {
        let pod = defaulted(
            "Pod",
            json!({"spec": {"restartPolicy": "Never", "serviceAccountName": "builder",
                "containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never"}]}}),
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["serviceAccount"], "builder");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn qos_class_follows_requests_and_limits() {
        let guaranteed = pod_with(json!({"limits": {"cpu": "500m", "memory": "128Mi"}}));
        assert_eq!(guaranteed["status"]["qosClass"], "Guaranteed");
        assert_eq!(
            guaranteed["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "500m", "memory": "128Mi"})
        );
        let equal_forms = pod_with(json!({"requests": {"cpu": "0.5", "memory": "134217728"},
            "limits": {"cpu": "500m", "memory": "128Mi"}}));
        assert_eq!(equal_forms["status"]["qosClass"], "Guaranteed");
        let burstable = pod_with(json!({"requests": {"cpu": "100m"}}));
        assert_eq!(burstable["status"]["qosClass"], "Burstable");
        let cpu_only_limit = pod_with(json!({"limits": {"cpu": "1"}}));
        assert_eq!(cpu_only_limit["status"]["qosClass"], "Burstable");
    }

    #[test]
    fn quantities_parse_to_billionths() {
        assert_eq!(quantity_nanos("1"), Some(1_000_000_000));
        assert_eq!(quantity_nanos("100m"), Some(100_000_000));
        assert_eq!(quantity_nanos("1Ki"), Some(1024 * 1_000_000_000));
        assert_eq!(quantity_nanos("1.5Gi"), Some(1_610_612_736 * 1_000_000_000));
        assert_eq!(quantity_nanos("2e3"), Some(2_000 * 1_000_000_000));
        assert_eq!(quantity_nanos("abc"), None);
    }

    #[test]
    fn probes_volumes_and_host_network_ports_are_defaulted() {
        let pod = defaulted(
            "Pod",
            json!({"spec": {"hostNetwork": true,
                "volumes": [{"name": "scratch"}, {"name": "conf", "configMap": {"name": "c"}}],
                "containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 8080}],
                    "livenessProbe": {"httpGet": {"port": 8080}}}]}}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        assert_eq!(spec["containers"][0]["ports"][0]["hostPort"], 8080);
        let probe = &spec["containers"][0]["livenessProbe"];
        assert_eq!(probe["timeoutSeconds"], 1);
        assert_eq!(probe["periodSeconds"], 10);
        assert_eq!(probe["successThreshold"], 1);
        assert_eq!(probe["failureThreshold"], 3);
        assert_eq!(probe["httpGet"]["path"], "/");
        assert_eq!(probe["httpGet"]["scheme"], "HTTP");
    }

    #[test]
    fn services_get_type_affinity_ports_and_families() {
        let service = defaulted("Service", json!({"spec": {"ports": [{"port": 80}]}}));
        let spec = &service["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));

        let node_port = defaulted(
            "Service",
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}}),
        );
        assert_eq!(node_port["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(node_port["spec"]["ports"][0]["targetPort"], "http");

        let external = defaulted(
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "a.b"}}),
        );
        assert!(external["spec"].get("ipFamilies").is_none());
        assert!(external["spec"].get("internalTrafficPolicy").is_none());
    }

    #[test]
    fn workloads_get_replicas_strategies_and_template_defaults() {
        let template = json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
        let deployment = defaulted("Deployment", json!({"spec": {"template": template}}));
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert!(spec["template"]["spec"].get("serviceAccountName").is_none());

        let replica_set = defaulted("ReplicaSet", json!({"spec": {"template": template}}));
        assert_eq!(replica_set["spec"]["replicas"], 1);

        let daemon_set = defaulted("DaemonSet", json!({"spec": {"template": template}}));
        assert_eq!(
            daemon_set["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})
        );
        assert_eq!(daemon_set["spec"]["revisionHistoryLimit"], 10);
        let recreate = defaulted(
            "Deployment",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert!(recreate["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn namespaces_secrets_and_endpoints_are_defaulted() {
        let namespace = defaulted("Namespace", json!({"metadata": {"name": "team"}}));
        assert_eq!(namespace["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(namespace["status"]["phase"], "Active");
        assert_eq!(
            namespace["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team"
        );

        let secret = defaulted(
            "Secret",
            json!({"stringData": {"user": "admin"}, "data": {"a": "Yg=="}}),
        );
        assert_eq!(secret["type"], "Opaque");
        assert_eq!(secret["data"], json!({"a": "Yg==", "user": "YWRtaW4="}));
        assert!(secret.get("stringData").is_none());

        let endpoints = defaulted("Endpoints", json!({"subsets": [{"ports": [{"port": 80}]}]}));
        assert_eq!(endpoints["subsets"][0]["ports"][0]["protocol"], "TCP");
        let slice = defaulted("EndpointSlice", json!({"ports": [{"port": 80}]}));
        assert_eq!(
            slice["ports"][0],
            json!({"name": "", "port": 80, "protocol": "TCP"})
        );
        let event = json!({"reason": "x"});
        assert_eq!(defaulted("Event", event.clone()), event);
    }
}
