//! Watch streams: store events turned into Kubernetes watch events (`ADDED`, `MODIFIED`,
//! `DELETED`, `BOOKMARK`, `ERROR`) as newline-delimited JSON, with selector semantics (an object
//! leaving the selection is `DELETED`, entering it is `ADDED`), resume from a
//! `resourceVersion`, initial events for `resourceVersion=0`/unset or `sendInitialEvents`,
//! bookmarks, `410 Expired` for compacted history, and `timeoutSeconds`.
//!
//! Owns the event translation and the stream's lifetime (it ends when the client goes away or
//! the timeout passes). Reads through the [`Registry`] and the store; never writes.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use serde_json::{Value, json};
use skiff_store::{EventKind, Revision, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    errors::{ApiError, ApiResult},
    object,
    registry::{ListOptions, Registry},
    resources::ResourceType,
    selectors::{FieldSelector, LabelSelector},
};

/// How often a watch that allows bookmarks gets one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// The options of one watch request.
pub struct WatchOptions {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    /// `None` (or `0`): start with the current state as `ADDED` events.
    pub resource_version: Option<Revision>,
    pub send_initial_events: bool,
    pub allow_bookmarks: bool,
    pub timeout: Duration,
}

/// Renders an object for the wire (identity, or a one-row Table).
pub type Render = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

fn line(kind: &str, object: Value) -> Bytes {
    let mut text = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

fn bookmark(resource: &ResourceType, revision: Revision, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata})
}

fn expired(revision: Revision) -> Value {
    let mut status = ApiError::gone(format!(
        "The resourceVersion for the provided watch is too old (requested {revision})."
    ))
    .to_status();
    status["reason"] = json!("Expired");
    status
}

/// Starts a watch; the stream is the response body.
pub async fn start(
    registry: Arc<Registry>,
    resource: &'static ResourceType,
    namespace: Option<String>,
    options: WatchOptions,
    render: Render,
) -> ApiResult<ReceiverStream<Result<Bytes, Infallible>>> {
    let (sender, receiver) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let matches = {
        let labels = options.labels.clone();
        let fields = options.fields.clone();
        move |item: &Value| {
            labels
                .as_ref()
                .is_none_or(|selector| selector.matches_object(item))
                && fields
                    .as_ref()
                    .is_none_or(|selector| selector.matches(item))
        }
    };
    let initial = options.send_initial_events || options.resource_version.is_none();
    let mut initial_events = Vec::new();
    let start_revision = if initial {
        let page = registry
            .list(
                resource,
                namespace.as_deref(),
                &ListOptions {
                    labels: options.labels.clone(),
                    fields: options.fields.clone(),
                    ..ListOptions::default()
                },
            )
            .await?;
        initial_events = page.items;
        page.revision
    } else {
        options.resource_version.unwrap_or_default()
    };
    let prefix = resource.namespace_prefix(namespace.as_deref());
    let watch = registry.store.watch(&prefix, start_revision).await;
    tokio::spawn(async move {
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(StoreError::Compacted { .. }) => {
                let _ = sender
                    .send(Ok(line("ERROR", expired(start_revision))))
                    .await;
                return;
            }
            Err(error) => {
                let status = ApiError::from(error).to_status();
                let _ = sender.send(Ok(line("ERROR", status))).await;
                return;
            }
        };
        for item in &initial_events {
            if sender.send(Ok(line("ADDED", render(item)))).await.is_err() {
                return;
            }
        }
        if options.send_initial_events {
            let end = bookmark(resource, start_revision, true);
            if sender.send(Ok(line("BOOKMARK", end))).await.is_err() {
                return;
            }
        }
        drop(initial_events);
        let deadline = tokio::time::sleep(options.timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmarks.tick().await;
        let mut last_revision = start_revision;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = sender.closed() => return,
                _ = bookmarks.tick(), if options.allow_bookmarks => {
                    let mark = bookmark(resource, last_revision, false);
                    if sender.send(Ok(line("BOOKMARK", mark))).await.is_err() {
                        return;
                    }
                }
                event = watch.next() => {
                    let event = match event {
                        None => return,
                        Some(Ok(event)) => event,
                        Some(Err(StoreError::Compacted { .. })) => {
                            let _ = sender.send(Ok(line("ERROR", expired(last_revision)))).await;
                            return;
                        }
                        Some(Err(_)) => return,
                    };
                    last_revision = event.revision();
                    let Ok(current) = object::decode(&event.kv, event.revision()) else {
                        continue;
                    };
                    let previous = event
                        .prev
                        .as_ref()
                        .and_then(|prev| object::decode(prev, prev.mod_revision).ok());
                    let kind = match event.kind {
                        EventKind::Delete => matches(&current).then_some("DELETED"),
                        EventKind::Put => {
                            let now = matches(&current);
                            let before = previous.as_ref().is_some_and(&matches);
                            match (before, now) {
                                (true, true) => Some("MODIFIED"),
                                (false, true) => Some("ADDED"),
                                (true, false) => Some("DELETED"),
                                (false, false) => None,
                            }
                        }
                    };
                    if let Some(kind) = kind
                        && sender.send(Ok(line(kind, render(&current)))).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    Ok(ReceiverStream::new(receiver))
}
