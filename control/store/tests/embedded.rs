//! The embedded store: the shared conformance suite, plus what only a local file can promise —
//! state that survives reopening and SIGKILL, and a data directory that stays bounded under a
//! steady update load.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_store::embedded::{EmbeddedOptions, EmbeddedStore};
use skiff_store::{EventKind, Store, StoreError};

async fn fresh_embedded_store() -> (Box<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let store = EmbeddedStore::open(dir.path()).expect("open a fresh embedded store");
    (Box::new(store), dir)
}

skiff_store::conformance_tests!(fresh_embedded_store);

/// Bytes of every file under `dir`.
fn directory_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read the data directory")
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let metadata = std::fs::metadata(&path).expect("file metadata");
            if metadata.is_dir() {
                directory_size(&path)
            } else {
                metadata.len()
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_keys_revision_history_and_compaction_point() {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let (a2, compacted, last) = {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let a1 = store.create("/k/a", b"a1").await.expect("create a");
        let a2 = store
            .update("/k/a", b"a2", a1.mod_revision)
            .await
            .expect("update a");
        let b = store.create("/k/b", b"b").await.expect("create b");
        store.compact(a2.mod_revision).await.expect("compact");
        let gone = store
            .delete("/k/b", Some(b.mod_revision))
            .await
            .expect("delete b");
        let compacted = a2.mod_revision;
        (a2, compacted, gone.mod_revision)
    };
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.revision().await.expect("revision"),
        last,
        "the revision survives reopening"
    );
    assert_eq!(
        store.compacted_revision().await.expect("compacted"),
        compacted,
        "so does the compaction point"
    );
    assert_eq!(store.get("/k/a").await.expect("get a"), Some(a2.clone()));
    assert_eq!(store.get("/k/b").await.expect("get b"), None);
    let next = store.create("/k/c", b"c").await.expect("create c");
    assert_eq!(
        next.mod_revision,
        last + 1,
        "revisions continue after reopening"
    );

    let old = store
        .range("/k/", None, 0, Some(compacted))
        .await
        .expect("range at the compaction point");
    assert_eq!(
        old.kvs,
        vec![a2],
        "history inside the window survives reopening"
    );
    let mut watch = store
        .watch("/k/", compacted)
        .await
        .expect("watch from the compaction point");
    let events: Vec<_> = [
        watch.next().await.expect("event").expect("b created"),
        watch.next().await.expect("event").expect("b deleted"),
        watch.next().await.expect("event").expect("c created"),
    ]
    .into();
    let kinds: Vec<(EventKind, &str)> =
        events.iter().map(|e| (e.kind, e.kv.key.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Put, "/k/b"),
            (EventKind::Delete, "/k/b"),
            (EventKind::Put, "/k/c")
        ]
    );
    assert!(
        matches!(
            store.watch("/k/", compacted - 1).await,
            Err(StoreError::Compacted { .. })
        ),
        "the compaction point still refuses older watches after reopening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let _store = EmbeddedStore::open(dir.path()).expect("open");
    assert!(
        EmbeddedStore::open(dir.path()).is_err(),
        "two stores on one directory would corrupt it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_falls_behind_is_closed_and_writers_never_wait() {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let options = EmbeddedOptions {
        watch_buffer: 16,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(dir.path(), options).expect("open");
    let mut watch = store.watch("/slow/", 0).await.expect("watch");
    // Nobody reads the watch: far more than its buffer plus the client channel.
    let mut kv = store.create("/slow/k", b"0").await.expect("create");
    for i in 1..600 {
        kv = tokio::time::timeout(
            Duration::from_secs(10),
            store.update("/slow/k", i.to_string().as_bytes(), kv.mod_revision),
        )
        .await
        .expect("a slow watcher must not block writers")
        .expect("update");
    }
    let mut delivered = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the watch ends")
        {
            Some(Ok(_)) => delivered += 1,
            Some(Err(StoreError::WatchClosed { .. })) => break,
            other => panic!("expected WatchClosed after {delivered} events, got {other:?}"),
        }
    }
    assert!(
        delivered < 600,
        "the watch was closed before it could deliver everything"
    );
    assert!(watch.next().await.is_none(), "WatchClosed is the last item");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_keeps_the_data_directory_bounded_under_steady_updates() {
    const KEYS: usize = 50;
    const UPDATES: usize = 20_000;
    const VALUE: usize = 1024;
    const BOUND: u64 = 8 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("temporary data directory");
    let options = EmbeddedOptions {
        keep_revisions: 1000,
        compact_interval: Some(Duration::from_millis(200)),
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(dir.path(), options).expect("open");
    let started = Instant::now();
    let writers: Vec<_> = (0..KEYS)
        .map(|k| {
            let store = &store;
            async move {
                let key = format!("/bloat/{k}");
                let mut kv = store.create(&key, &[k as u8; VALUE]).await.expect("create");
                let mut largest = 0;
                for i in 0..UPDATES / KEYS {
                    let value = vec![(i % 251) as u8; VALUE];
                    kv = store
                        .update(&key, &value, kv.mod_revision)
                        .await
                        .expect("update");
                    if k == 0 && i % 20 == 0 {
                        largest =
                            largest.max(directory_size(store.path().parent().expect("data dir")));
                    }
                }
                largest
            }
        })
        .collect();
    let largest = skiff_store::conformance::join_all(writers)
        .await
        .into_iter()
        .max()
        .unwrap_or(0);
    let elapsed = started.elapsed();
    // Let one more automatic compaction run after the load.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let revision = store.revision().await.expect("revision");
    let compacted = store.compacted_revision().await.expect("compacted");
    let settled = directory_size(dir.path());
    eprintln!(
        "{UPDATES} updates of {VALUE} B to {KEYS} keys in {elapsed:?}; data directory at most {largest} B \
         during the load, {settled} B after (revision {revision}, compacted {compacted})"
    );
    assert!(
        compacted >= revision - 1000 - 1,
        "automatic compaction keeps up: compacted {compacted} at {revision}"
    );
    assert!(
        largest < BOUND,
        "the data directory grew to {largest} B during the load (bound {BOUND} B)"
    );
    assert!(
        settled < BOUND,
        "the data directory is {settled} B after the load (bound {BOUND} B)"
    );
    let all = store.range("/bloat/", None, 0, None).await.expect("range");
    assert_eq!(all.kvs.len(), KEYS, "compaction keeps every live key");
    let started = Instant::now();
    store
        .compact(revision - 500)
        .await
        .expect("a manual compaction of 500 revisions");
    eprintln!(
        "compacting 500 revisions and shrinking the file took {:?}",
        started.elapsed()
    );
}

/// Writes until killed when `SKIFF_STORE_CRASH_DIR` is set (run by
/// `acknowledged_writes_survive_sigkill`); a no-op otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_child() {
    let Some(dir) = std::env::var_os("SKIFF_STORE_CRASH_DIR") else {
        return;
    };
    let store = EmbeddedStore::open(Path::new(&dir)).expect("child: open");
    let stdout = std::sync::Mutex::new(std::io::stdout());
    // Four concurrent writers, so acknowledged writes come from batched (group) commits.
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (store, stdout) = (&store, &stdout);
            async move {
                for i in 0.. {
                    let key = format!("/crash/{writer}/{i}");
                    let value = format!("value of {key} {}", "x".repeat(i % 300));
                    let kv = store
                        .create(&key, value.as_bytes())
                        .await
                        .expect("child: create");
                    let mut out = stdout.lock().expect("stdout");
                    writeln!(out, "ack {key} {}", kv.mod_revision).expect("child: write ack");
                    out.flush().expect("child: flush ack");
                }
            }
        })
        .collect();
    skiff_store::conformance::join_all(writers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env("SKIFF_STORE_CRASH_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the writer child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acknowledged = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        let mut words = line.split_whitespace();
        if words.next() != Some("ack") {
            continue;
        }
        let key = words.next().expect("acknowledged key").to_owned();
        let revision: i64 = words
            .next()
            .and_then(|r| r.parse().ok())
            .expect("acknowledged revision");
        acknowledged.push((key, revision));
        if acknowledged.len() >= 400 {
            break;
        }
    }
    child.kill().expect("SIGKILL the writer child");
    child.wait().expect("reap the writer child");
    assert!(
        acknowledged.len() >= 400,
        "the child acknowledged only {} writes",
        acknowledged.len()
    );

    let store = EmbeddedStore::open(dir.path()).expect("reopen after SIGKILL");
    let revision = store.revision().await.expect("revision");
    let last_acknowledged = acknowledged.iter().map(|(_, r)| *r).max().unwrap_or(0);
    assert!(
        revision >= last_acknowledged,
        "store at {revision}, but {last_acknowledged} was acknowledged"
    );
    for (key, acked_revision) in &acknowledged {
        let kv = store
            .get(key)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("acknowledged {key} is missing"));
        assert_eq!(
            kv.mod_revision, *acked_revision,
            "{key} has its acknowledged revision"
        );
        assert!(
            kv.value.starts_with(format!("value of {key} ").as_bytes()),
            "{key} has its value"
        );
    }
    // Nothing partial: every revision up to the store's has exactly one intact create, and the
    // live keys are exactly those.
    let mut watch = store
        .watch("/crash/", 0)
        .await
        .expect("watch the whole history");
    let mut replayed = Vec::new();
    for expected in 1..=revision {
        let event = watch.next().await.expect("event").expect("history event");
        assert_eq!(event.revision(), expected, "history has no gap");
        assert_eq!(event.kind, EventKind::Put);
        let key = &event.kv.key;
        assert!(
            event
                .kv
                .value
                .starts_with(format!("value of {key} ").as_bytes()),
            "{key} is intact"
        );
        replayed.push(event.kv);
    }
    let listed = store.range("/crash/", None, 0, None).await.expect("range");
    replayed.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        listed.kvs, replayed,
        "the current keys are exactly the replayed history"
    );
    eprintln!(
        "{} acknowledged writes, store at revision {revision} after SIGKILL",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_create_latency() {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let mut latencies = Vec::new();
    for i in 0..100 {
        let started = Instant::now();
        store
            .create(&format!("/latency/{i}"), &[0u8; 512])
            .await
            .expect("create");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    eprintln!(
        "sequential create of 512 B: p50 {:?}, p99 {:?} (each one fsynced)",
        latencies[50], latencies[98]
    );
}
