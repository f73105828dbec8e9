//! The etcd backend against a real etcd: the shared conformance suite, then what only etcd has
//! (a shared cluster under several prefixes, compactions done by another client, connection
//! failures). Every test starts its own etcd (about 150 ms), so compactions and the global
//! revision of one test never reach another.

use std::time::{Duration, Instant};

use skiff_store::{Store, StoreError, etcd::EtcdStore};
use skiff_tests::etcd::{ETCD_BINARY, EtcdServer};

/// The key prefix the conformance suite's store uses.
const PREFIX: &str = "/skiff-test/";

/// Starts a private etcd.
async fn start_etcd() -> EtcdServer {
    tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("the etcd start task panicked")
        .unwrap_or_else(|error| panic!("starting etcd: {error}"))
}

async fn connect(server: &EtcdServer, prefix: &str) -> EtcdStore {
    EtcdStore::connect(&[server.client_url()], prefix)
        .await
        .unwrap_or_else(|error| panic!("connecting to {}: {error}", server.client_url()))
}

/// A fresh store on its own etcd; the server is the guard.
async fn fresh_etcd_store() -> (Box<dyn Store>, EtcdServer) {
    let server = start_etcd().await;
    let store = connect(&server, PREFIX).await;
    (Box::new(store), server)
}

skiff_store::conformance_tests!(fresh_etcd_store, before_each: {
    skiff_tests::require_privileges!(ETCD_BINARY);
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_under_different_prefixes_share_one_etcd_without_seeing_each_other() {
    skiff_tests::require_privileges!(ETCD_BINARY);
    let server = start_etcd().await;
    let tenant_a = connect(&server, "/a/").await;
    let tenant_b = connect(&server, "/b/").await;

    let a = tenant_a.create("pods/x", b"from a").await.unwrap();
    tenant_b.create("pods/x", b"from b").await.unwrap();

    assert_eq!(
        tenant_a.get("pods/x").await.unwrap().unwrap().value,
        b"from a"
    );
    let listed = tenant_a.range("", None, 0, None).await.unwrap();
    assert_eq!(
        listed.kvs,
        vec![a],
        "the prefix is stripped and b's key is not listed"
    );
    let mut watch = tenant_a.watch("", 0).await.unwrap();
    tenant_b.create("pods/y", b"from b").await.unwrap();
    let own = tenant_a.create("pods/y", b"from a").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.kv.key, "pods/x", "history first");
    let second = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.kv, own, "b's writes never reach a's watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_by_another_client_is_found_and_reported() {
    skiff_tests::require_privileges!(ETCD_BINARY);
    let server = start_etcd().await;
    let compactor = connect(&server, PREFIX).await;
    let reader = connect(&server, PREFIX).await;
    let mut kv = compactor.create("a", b"0").await.unwrap();
    for n in 1..20 {
        kv = compactor
            .update("a", n.to_string().as_bytes(), kv.mod_revision)
            .await
            .unwrap();
    }
    let point = kv.mod_revision - 5;
    compactor.compact(point).await.unwrap();

    assert_eq!(reader.compacted_revision().await.unwrap(), point);
    match reader.range("", None, 0, Some(point - 1)).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (point - 1, point)),
        other => panic!("a range behind another client's compaction: {other:?}"),
    }
    let fresh = connect(&server, PREFIX).await;
    match fresh.watch("", point - 1).await {
        Err(StoreError::Compacted { compacted, .. }) => assert_eq!(compacted, point),
        Err(other) => panic!("a watch behind another client's compaction: {other}"),
        Ok(_) => panic!("a watch behind another client's compaction was accepted"),
    }
    // Compacting again at or behind the point is a no-op, not an error.
    reader.compact(point - 3).await.unwrap();
    assert_eq!(reader.compacted_revision().await.unwrap(), point);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_stopped_etcd_fails_naming_the_endpoint() {
    skiff_tests::require_privileges!(ETCD_BINARY);
    let server = start_etcd().await;
    let url = server.client_url();
    drop(server);
    let started = Instant::now();
    match EtcdStore::connect(std::slice::from_ref(&url), PREFIX).await {
        Err(StoreError::Backend { message }) => {
            assert!(message.contains(&url), "{message:?} does not name {url}")
        }
        Err(other) => panic!("connecting to a stopped etcd: {other}"),
        Ok(_) => panic!("connecting to a stopped etcd succeeded"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "connect must give up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_removes_its_process_and_directory() {
    skiff_tests::require_privileges!(ETCD_BINARY);
    let server = start_etcd().await;
    let pid = server.pid();
    let dir = server.dir().to_owned();
    assert!(dir.join("data").is_dir());
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "etcd (pid {pid}) still runs"
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_with_an_error_when_etcd_goes_away() {
    skiff_tests::require_privileges!(ETCD_BINARY);
    let server = start_etcd().await;
    let store = connect(&server, PREFIX).await;
    let mut watch = store.watch("", 1).await.unwrap();
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
        Ok(Some(Err(StoreError::Backend { .. } | StoreError::WatchClosed { .. }))) => {}
        other => panic!("a watch on a stopped etcd: {other:?}"),
    }
}
