//! Kubernetes Events about the pods this node runs (`core/v1` Events, as `kubectl describe pod`
//! and `kubectl get events` show them).
//!
//! Owns the recorder the pod side shares: callers hand it an event and go on (it never blocks a
//! sync round), a background task posts it. Repeats of the same event (same object, container,
//! reason and message) within [`REPEAT_WINDOW`] update the first one's `count` and
//! `lastTimestamp` instead of creating new objects, as upstream's correlator does, so a crash
//! loop makes one event with a growing count. When the queue is full or the API is unreachable
//! events are dropped with a log line: events are best effort upstream too.
//!
//! Must not decide when something is worth an event (callers do) and writes nothing but Events.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::pod::{pod_name, pod_namespace, pod_uid};

/// How many events may wait to be posted before new ones are dropped.
const QUEUE_LENGTH: usize = 1000;
/// Repeats within this window are folded into the first event (upstream keeps a cache too).
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10 * 60);
/// `source.component` and `reportingComponent` of every event, as upstream's kubelet.
pub const COMPONENT: &str = "kubelet";

/// `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened (`Pulled`, `Created`, `Started`, `Killing`).
    Normal,
    /// Something went wrong (`Failed`, `BackOff`, `Unhealthy`, `FailedMount`).
    Warning,
}

impl EventType {
    /// The API spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// One event as a caller reports it.
#[derive(Debug, Clone, PartialEq)]
struct Occurrence {
    involved: ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
    at: Timestamp,
}

/// Hands events to the background poster. Cheap to clone; every clone feeds the same queue.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    queue: Option<mpsc::Sender<Occurrence>>,
}

impl EventRecorder {
    /// A recorder posting through `client` as the kubelet of `node_name`; spawns the poster on
    /// the current tokio runtime.
    #[must_use]
    pub fn new(client: kube::Client, node_name: &str) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_LENGTH);
        tokio::spawn(post_events(client, node_name.to_owned(), receiver));
        Self { queue: Some(queue) }
    }

    /// A recorder that drops everything (no API, unit tests).
    #[must_use]
    pub fn disabled() -> Self {
        Self { queue: None }
    }

    /// Records an event about `pod`.
    pub fn record(&self, pod: &Pod, type_: EventType, reason: &str, message: &str) {
        self.send(pod_reference(pod, None), type_, reason, message);
    }

    /// Records an event about `container` of `pod` (`involvedObject.fieldPath`
    /// `spec.containers{name}`, as upstream, also for init containers).
    pub fn record_for_container(
        &self,
        pod: &Pod,
        container: &str,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        self.send(pod_reference(pod, Some(container)), type_, reason, message);
    }

    fn send(&self, involved: ObjectReference, type_: EventType, reason: &str, message: &str) {
        let Some(queue) = &self.queue else {
            return;
        };
        let occurrence = Occurrence {
            involved,
            type_,
            reason: reason.to_owned(),
            message: message.to_owned(),
            at: Timestamp::now(),
        };
        if let Err(error) = queue.try_send(occurrence) {
            warn!("dropping an event, the queue is full or closed: {error}");
        }
    }
}

/// The object reference upstream puts into `involvedObject` for a pod (and a container of it).
fn pod_reference(pod: &Pod, container: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        namespace: Some(pod_namespace(pod).to_owned()),
        name: Some(pod_name(pod).to_owned()),
        uid: Some(pod_uid(pod).to_owned()),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: container.map(|name| format!("spec.containers{{{name}}}")),
    }
}

/// What the poster remembers of an event it created, to fold repeats into it.
struct Posted {
    namespace: String,
    name: String,
    count: i32,
    first_seen: Instant,
}

/// The key repeats are folded by: same object, container, type, reason and message.
type RepeatKey = (String, Option<String>, &'static str, String, String);

fn repeat_key(occurrence: &Occurrence) -> RepeatKey {
    (
        occurrence.involved.uid.clone().unwrap_or_default(),
        occurrence.involved.field_path.clone(),
        occurrence.type_.as_str(),
        occurrence.reason.clone(),
        occurrence.message.clone(),
    )
}

/// The background poster: one request per event, in order.
async fn post_events(
    client: kube::Client,
    node_name: String,
    mut receiver: mpsc::Receiver<Occurrence>,
) {
    let mut posted: HashMap<RepeatKey, Posted> = HashMap::new();
    while let Some(occurrence) = receiver.recv().await {
        posted.retain(|_, event| event.first_seen.elapsed() < REPEAT_WINDOW);
        let key = repeat_key(&occurrence);
        if let Some(event) = posted.get_mut(&key) {
            let count = event.count.saturating_add(1);
            let events: Api<Event> = Api::namespaced(client.clone(), &event.namespace);
            let patch = serde_json::json!({
                "count": count,
                "lastTimestamp": Time(occurrence.at),
            });
            match events
                .patch(&event.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    event.count = count;
                    continue;
                }
                // Gone (expired or deleted): create a new one below.
                Err(error) => debug!(event = %event.name, "updating a repeated event: {error}"),
            }
        }
        let event = new_event(&occurrence, &node_name);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
        match events.create(&PostParams::default(), &event).await {
            Ok(created) => {
                let name = created.metadata.name.unwrap_or_default();
                posted.insert(
                    key,
                    Posted {
                        namespace,
                        name,
                        count: 1,
                        first_seen: Instant::now(),
                    },
                );
            }
            Err(error) => warn!(
                reason = %occurrence.reason,
                "posting an event about {}/{}: {error}",
                namespace,
                occurrence.involved.name.as_deref().unwrap_or_default()
            ),
        }
    }
}

/// The Event object for a first occurrence: named `<object>.<unix nanoseconds in hex>` as
/// upstream, in the object's namespace.
fn new_event(occurrence: &Occurrence, node_name: &str) -> Event {
    let object = occurrence.involved.name.clone().unwrap_or_default();
    let nanos = occurrence.at.as_nanosecond();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{object}.{nanos:x}")),
            namespace: occurrence.involved.namespace.clone(),
            ..ObjectMeta::default()
        },
        involved_object: occurrence.involved.clone(),
        type_: Some(occurrence.type_.as_str().to_owned()),
        reason: Some(occurrence.reason.clone()),
        message: Some(occurrence.message.clone()),
        count: Some(1),
        first_timestamp: Some(Time(occurrence.at)),
        last_timestamp: Some(Time(occurrence.at)),
        event_time: Some(MicroTime(occurrence.at)),
        source: Some(EventSource {
            component: Some(COMPONENT.to_owned()),
            host: Some(node_name.to_owned()),
        }),
        reporting_component: Some(COMPONENT.to_owned()),
        reporting_instance: Some(node_name.to_owned()),
        action: Some(occurrence.reason.clone()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".to_owned()),
                namespace: Some("shop".to_owned()),
                uid: Some("uid-1".to_owned()),
                resource_version: Some("7".to_owned()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn container_events_name_the_container_field_path() {
        let reference = pod_reference(&pod(), Some("app"));

        assert_eq!(reference.kind.as_deref(), Some("Pod"));
        assert_eq!(reference.namespace.as_deref(), Some("shop"));
        assert_eq!(reference.uid.as_deref(), Some("uid-1"));
        assert_eq!(
            reference.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(pod_reference(&pod(), None).field_path, None);
    }

    #[test]
    fn a_new_event_carries_upstream_fields() {
        let at: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let occurrence = Occurrence {
            involved: pod_reference(&pod(), Some("app")),
            type_: EventType::Warning,
            reason: "BackOff".to_owned(),
            message: "Back-off restarting failed container app".to_owned(),
            at,
        };

        let event = new_event(&occurrence, "node-1");

        let name = event.metadata.name.unwrap();
        assert!(name.starts_with("web."), "{name}");
        assert_eq!(event.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.count, Some(1));
        assert_eq!(event.source.unwrap().host.as_deref(), Some("node-1"));
        assert_eq!(event.reporting_component.as_deref(), Some("kubelet"));
    }

    #[test]
    fn repeats_fold_by_object_container_reason_and_message() {
        let occurrence = |container: &str, message: &str| Occurrence {
            involved: pod_reference(&pod(), Some(container)),
            type_: EventType::Warning,
            reason: "BackOff".to_owned(),
            message: message.to_owned(),
            at: Timestamp::UNIX_EPOCH,
        };

        assert_eq!(
            repeat_key(&occurrence("app", "a")),
            repeat_key(&occurrence("app", "a"))
        );
        assert_ne!(
            repeat_key(&occurrence("app", "a")),
            repeat_key(&occurrence("side", "a"))
        );
        assert_ne!(
            repeat_key(&occurrence("app", "a")),
            repeat_key(&occurrence("app", "b"))
        );
    }

    #[test]
    fn a_disabled_recorder_drops_events_without_a_runtime() {
        EventRecorder::disabled().record(&pod(), EventType::Normal, "Pulled", "done");
    }
}
