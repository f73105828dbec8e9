//! skiff-control's promises about acknowledged writes and watches, through its HTTP API on the
//! embedded store: a SIGKILL during a write loop loses nothing acknowledged and leaves nothing
//! partial; a watch from revision R sees every later change exactly once and in order, across a
//! server restart; a watch from a compacted revision gets `410 Expired`, and a relist followed
//! by a watch from the list's revision continues.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Client, ControlPlane};
use serde_json::{Value, json};

fn create_namespace(client: &Client, name: &str) {
    let response = client.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    );
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

fn config_map(name: &str, sequence: u64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"sequence": sequence.to_string(), "payload": "x".repeat(1024)},
    })
}

fn revision_of(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .expect("a numeric resourceVersion")
}

#[test]
fn sigkill_during_a_write_loop_loses_no_acknowledged_write_and_leaves_nothing_partial() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut control = ControlPlane::start(data.path());
    let client = control.client();
    create_namespace(&client, "crash");

    let acknowledged = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (client, acknowledged, stop) =
                (client.clone(), Arc::clone(&acknowledged), Arc::clone(&stop));
            std::thread::spawn(move || {
                for sequence in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let name = format!("w{writer}-{sequence}");
                    let body = config_map(&name, sequence).to_string();
                    match client.request(
                        "POST",
                        "/api/v1/namespaces/crash/configmaps",
                        None,
                        Some(body.as_bytes()),
                    ) {
                        Ok(response) if response.status == 201 => {
                            acknowledged.lock().expect("lock").push((name, sequence))
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    control.kill();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() > 20,
        "too few writes acknowledged before the kill: {}",
        acknowledged.len()
    );

    control.restart();
    let client = control.client();
    let list = client.get("/api/v1/namespaces/crash/configmaps").json();
    let items = list["items"].as_array().expect("items");
    for item in items {
        let name = item["metadata"]["name"].as_str().expect("a name");
        let sequence: u64 = name
            .rsplit('-')
            .next()
            .and_then(|number| number.parse().ok())
            .expect("a sequence suffix");
        assert_eq!(
            item["data"]["sequence"],
            sequence.to_string(),
            "{name} is partial"
        );
        assert_eq!(
            item["data"]["payload"].as_str().map(str::len),
            Some(1024),
            "{name} is partial"
        );
    }
    let present: std::collections::HashSet<&str> = items
        .iter()
        .filter_map(|item| item["metadata"]["name"].as_str())
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .map(|(name, _)| name)
        .filter(|name| !present.contains(name.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost after SIGKILL: {lost:?}"
    );
    // At most one write per writer was in flight when the server died.
    assert!(present.len() <= acknowledged.len() + 4);
}

/// Reads events from `stream` until one with `revision` arrived (or the stream ends).
fn collect_until(
    stream: &mut common::WatchStream,
    last: i64,
    into: &mut Vec<(String, String, i64)>,
) {
    for event in stream.by_ref() {
        let kind = event["type"].as_str().unwrap_or_default().to_owned();
        if kind == "BOOKMARK" {
            continue;
        }
        assert_ne!(kind, "ERROR", "unexpected error event: {event}");
        let revision = revision_of(&event["object"]);
        into.push((
            kind,
            event["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            revision,
        ));
        if revision >= last {
            return;
        }
    }
}

/// Makes `count` changes (create, update, delete in turn) and returns what a watch must report.
fn churn(client: &Client, prefix: &str, count: usize) -> Vec<(String, String, i64)> {
    let mut expected = Vec::new();
    for index in 0..count {
        let name = format!("{prefix}-{}", index / 3);
        let path = format!("/api/v1/namespaces/watch/configmaps/{name}");
        let (kind, response) = match index % 3 {
            0 => (
                "ADDED",
                client.post("/api/v1/namespaces/watch/configmaps", &config_map(&name, 0)),
            ),
            1 => ("MODIFIED", client.put(&path, &config_map(&name, 1))),
            _ => ("DELETED", client.delete(&path)),
        };
        assert!(
            response.status < 300,
            "{kind} {name}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let revision = if kind == "DELETED" {
            // The deletion's revision is the next store revision; read it from a list.
            revision_of(
                &client
                    .get("/api/v1/namespaces/watch/configmaps?limit=1")
                    .json(),
            )
        } else {
            revision_of(&response.json())
        };
        expected.push((kind.to_owned(), name, revision));
    }
    expected
}

#[test]
fn a_watch_from_revision_r_sees_every_later_change_once_and_in_order_across_a_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut control = ControlPlane::start(data.path());
    let client = control.client();
    create_namespace(&client, "watch");
    let start = client.post(
        "/api/v1/namespaces/watch/configmaps",
        &config_map("before", 0),
    );
    let start_revision = revision_of(&start.json());

    let mut stream = client
        .watch(&format!(
            "/api/v1/namespaces/watch/configmaps?watch=1&resourceVersion={start_revision}"
        ))
        .expect("watch");
    let mut expected = churn(&client, "first", 9);
    let mut received = Vec::new();
    collect_until(
        &mut stream,
        expected.last().map_or(0, |event| event.2),
        &mut received,
    );

    control.kill();
    drop(stream);
    control.restart();
    let client = control.client();
    let after_restart = churn(&client, "second", 9);
    let resume_from = received.last().map_or(start_revision, |event| event.2);
    let mut stream = client
        .watch(&format!(
            "/api/v1/namespaces/watch/configmaps?watch=1&resourceVersion={resume_from}&allowWatchBookmarks=true"
        ))
        .expect("watch again after the restart");
    collect_until(
        &mut stream,
        after_restart.last().map_or(0, |event| event.2),
        &mut received,
    );
    expected.extend(after_restart);
    assert_eq!(received, expected);
}

#[test]
fn a_watch_from_a_compacted_revision_gets_410_and_a_relist_then_watch_continues() {
    let data = tempfile::tempdir().expect("temp dir");
    let control = ControlPlane::start_with(
        data.path(),
        &[
            "--etcd-compaction-interval",
            "1s",
            "--compaction-keep-revisions",
            "5",
        ],
    );
    let client = control.client();
    create_namespace(&client, "watch");
    let first = client.post("/api/v1/namespaces/watch/configmaps", &config_map("c", 0));
    let old_revision = revision_of(&first.json());
    for sequence in 1..30 {
        let response = client.put(
            "/api/v1/namespaces/watch/configmaps/c",
            &config_map("c", sequence),
        );
        assert_eq!(response.status, 200);
    }
    std::thread::sleep(Duration::from_secs(3));

    let mut stream = client
        .watch(&format!(
            "/api/v1/namespaces/watch/configmaps?watch=1&resourceVersion={old_revision}"
        ))
        .expect("watch");
    let event = stream.next().expect("an event");
    assert_eq!(event["type"], "ERROR", "{event}");
    assert_eq!(event["object"]["code"], 410, "{event}");
    assert_eq!(event["object"]["reason"], "Expired", "{event}");

    let list = client.get("/api/v1/namespaces/watch/configmaps").json();
    assert_eq!(list["items"][0]["data"]["sequence"], "29");
    let list_revision = revision_of(&list);
    let mut stream = client
        .watch(&format!(
            "/api/v1/namespaces/watch/configmaps?watch=1&resourceVersion={list_revision}"
        ))
        .expect("watch from the list's revision");
    let response = client.put(
        "/api/v1/namespaces/watch/configmaps/c",
        &config_map("c", 30),
    );
    assert_eq!(response.status, 200);
    let event = stream.next().expect("the change");
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(event["object"]["data"]["sequence"], "30");
}
