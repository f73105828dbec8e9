//! `/metrics` of the `:10250` server: Prometheus text exposition of a few kubelet gauges and
//! counters, with upstream's metric names.
//!
//! Owns rendering: `kubelet_node_name`, `kubelet_running_pods`, `kubelet_running_containers`
//! (by `container_state`), `kubelet_http_requests_total` (by method and path root, as upstream's
//! `path` label) and `kubelet_pod_start_duration_seconds` as a sum/count summary of the pods seen
//! Running (creation to the `Ready` transition, from their API status). Pure: the pods and
//! counters come in as arguments; never reads the runtime.

use std::{collections::BTreeMap, fmt::Write as _, sync::Arc};

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};

/// Requests served, by (method, path root such as `pods` or `containerLogs`), for
/// `kubelet_http_requests_total`.
pub type RequestCounts = BTreeMap<(String, String), u64>;

/// The exposition text for the node `node_name` running `pods`.
#[must_use]
pub fn render(node_name: &str, pods: &[Arc<Pod>], requests: &RequestCounts) -> String {
    let mut running_pods = 0u64;
    let mut containers: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut start_seconds = Vec::new();
    for pod in pods {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|status| status.container_statuses.as_deref())
            .unwrap_or_default();
        let mut any_running = false;
        for status in statuses {
            let state = status.state.as_ref();
            let label = if state.and_then(|state| state.running.as_ref()).is_some() {
                any_running = true;
                "running"
            } else if state.and_then(|state| state.terminated.as_ref()).is_some() {
                "exited"
            } else if status.container_id.is_some() {
                "created"
            } else {
                continue;
            };
            *containers.entry(label).or_default() += 1;
        }
        if any_running {
            running_pods += 1;
        }
        if let Some(seconds) = start_duration_seconds(pod) {
            start_seconds.push(seconds);
        }
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# HELP kubelet_node_name The node's name. The count is always 1.\n# TYPE kubelet_node_name gauge\nkubelet_node_name{{node=\"{}\"}} 1",
        escape(node_name)
    );
    let _ = writeln!(
        text,
        "# HELP kubelet_running_pods Number of pods that have a running container.\n# TYPE kubelet_running_pods gauge\nkubelet_running_pods {running_pods}"
    );
    let _ = writeln!(
        text,
        "# HELP kubelet_running_containers Number of containers currently running.\n# TYPE kubelet_running_containers gauge"
    );
    for state in ["created", "exited", "running"] {
        let count = containers.get(state).copied().unwrap_or_default();
        let _ = writeln!(
            text,
            "kubelet_running_containers{{container_state=\"{state}\"}} {count}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP kubelet_pod_start_duration_seconds Duration in seconds from a pod's creation to its first Ready transition, for the pods this kubelet runs.\n# TYPE kubelet_pod_start_duration_seconds summary"
    );
    let _ = writeln!(
        text,
        "kubelet_pod_start_duration_seconds_sum {}\nkubelet_pod_start_duration_seconds_count {}",
        start_seconds.iter().sum::<f64>(),
        start_seconds.len()
    );
    let _ = writeln!(
        text,
        "# HELP kubelet_http_requests_total Number of the http requests received since the server started.\n# TYPE kubelet_http_requests_total counter"
    );
    for ((method, path), count) in requests {
        let _ = writeln!(
            text,
            "kubelet_http_requests_total{{method=\"{}\",path=\"{}\",server_type=\"readwrite\"}} {count}",
            escape(method),
            escape(path)
        );
    }
    text
}

/// Seconds from `metadata.creationTimestamp` to the `Ready` condition turning true, for a ready
/// pod.
fn start_duration_seconds(pod: &Pod) -> Option<f64> {
    let created: Timestamp = pod.metadata.creation_timestamp.as_ref()?.0;
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == "Ready" && condition.status == "True")?;
    let became_ready: Timestamp = ready.last_transition_time.as_ref()?.0;
    let duration = became_ready.duration_since(created);
    (!duration.is_negative()).then(|| duration.as_secs_f64())
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(status: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "p", "creationTimestamp": "2024-05-01T10:00:00Z"},
                "status": status,
            }))
            .expect("a pod"),
        )
    }

    #[test]
    fn gauges_count_running_pods_and_containers_by_state() {
        let running = pod(json!({
            "conditions": [{"type": "Ready", "status": "True",
                            "lastTransitionTime": "2024-05-01T10:00:02Z"}],
            "containerStatuses": [
                {"name": "a", "image": "", "imageID": "", "ready": true, "restartCount": 0,
                 "containerID": "containerd://a", "state": {"running": {}}},
                {"name": "b", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                 "containerID": "containerd://b", "state": {"terminated": {"exitCode": 0}}},
            ],
        }));
        let pending = pod(json!({"containerStatuses": [
            {"name": "c", "image": "", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}},
        ]}));
        let requests = RequestCounts::from([(("GET".to_owned(), "pods".to_owned()), 3)]);
        let text = render("node-a", &[running, pending], &requests);
        for expected in [
            "kubelet_node_name{node=\"node-a\"} 1\n",
            "kubelet_running_pods 1\n",
            "kubelet_running_containers{container_state=\"running\"} 1\n",
            "kubelet_running_containers{container_state=\"exited\"} 1\n",
            "kubelet_running_containers{container_state=\"created\"} 0\n",
            "kubelet_pod_start_duration_seconds_sum 2\n",
            "kubelet_pod_start_duration_seconds_count 1\n",
            "kubelet_http_requests_total{method=\"GET\",path=\"pods\",server_type=\"readwrite\"} 3\n",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }
}
