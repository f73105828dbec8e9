//! The conformance suite every [`Store`] backend must pass.
//!
//! Owns the executable form of the contract documented on [`Store`]: one `pub async fn` per
//! behaviour, each taking a fresh, empty store and panicking with a message that names the
//! violated behaviour, the key and the revisions involved. [`conformance_tests!`](crate::conformance_tests)
//! turns the whole list into `#[tokio::test]`s for a backend's factory.
//!
//! Must not assume anything a backend may legitimately choose: revisions are compared to the
//! store's revision when the check starts (a fresh embedded store is at 0, etcd at 1), never to
//! constants; keys are all under `/conformance/`. Must not spawn `'static` tasks (checks borrow
//! the store); concurrency comes from polling many futures at once ([`join_all`]).
//!
//! Usage, in a backend's integration test:
//! ```ignore
//! async fn fresh_store() -> (Box<dyn skiff_store::Store>, tempfile::TempDir) { ... }
//! skiff_store::conformance_tests!(fresh_store);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::{Event, EventKind, KeyValue, Revision, Store, StoreError, Watch};

/// How long a check waits for an event it expects before failing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a check waits to be sure no further event arrives.
const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// Generates one `#[tokio::test]` per conformance check for a backend.
///
/// `$factory` is an `async fn() -> (Box<dyn skiff_store::Store>, G)`; each test calls it for a
/// fresh, empty store and keeps `G` (a temporary directory, an etcd process...) alive until the
/// test ends. The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.
/// `conformance_tests!(factory, before_each: { ... })` runs the block first in every test (e.g.
/// `skiff_tests::require_privileges!("/usr/bin/etcd");`, which may return early).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!($factory, before_each: {});
    };
    ($factory:path, before_each: $before:block) => {
        $crate::conformance_tests!(@each $factory; $before;
            create_then_get_round_trips_the_value_and_revisions,
            get_of_a_missing_key_is_none,
            create_of_an_existing_key_fails_already_exists_and_changes_nothing,
            each_successful_write_advances_the_revision_by_exactly_one,
            failed_writes_do_not_advance_the_revision,
            update_with_the_current_revision_replaces_the_value,
            update_with_a_stale_revision_conflicts_and_changes_nothing,
            update_of_a_missing_key_is_not_found,
            concurrent_updates_from_the_same_revision_let_exactly_one_win,
            delete_without_expected_revision_returns_the_last_value_at_the_deletion_revision,
            delete_with_the_current_revision_deletes,
            delete_with_a_stale_revision_conflicts_and_changes_nothing,
            delete_of_a_missing_key_is_not_found,
            recreate_after_delete_has_a_new_create_revision,
            range_by_prefix_does_not_match_sibling_prefixes,
            range_returns_keys_in_ascending_order_with_their_revisions,
            range_pages_with_limit_and_start_after_visit_every_key_exactly_once,
            range_sets_more_only_when_matching_keys_remain,
            range_reports_the_revision_it_was_served_at,
            range_at_an_older_revision_sees_the_old_state,
            range_at_a_future_revision_fails_future_revision,
            compaction_makes_reads_before_the_compaction_point_fail_compacted,
            reads_at_and_after_the_compaction_point_still_work,
            compacted_revision_reports_the_last_compaction,
            compact_at_a_future_revision_fails_future_revision,
            watch_from_before_the_compaction_point_fails_compacted,
            watch_from_the_compaction_point_replays_the_remaining_history,
            watch_replays_history_in_order_with_previous_values,
            watch_delivers_live_changes_after_the_history,
            watch_from_the_current_revision_receives_only_new_changes,
            watch_from_a_future_revision_starts_after_it,
            watch_started_during_concurrent_writes_has_no_gap_and_no_duplicate,
            watch_filters_by_prefix,
            concurrent_writers_get_unique_consecutive_revisions_a_watch_sees_in_order,
            values_are_arbitrary_bytes_including_empty_and_large,
        );
    };
    (@each $factory:path; $before:block; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $before
                let (store, _guard) = $factory().await;
                $crate::conformance::$check(&*store).await;
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Polls all `futures` concurrently on the current task; their outputs in order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

async fn revision(store: &dyn Store) -> Revision {
    match store.revision().await {
        Ok(revision) => revision,
        Err(err) => panic!("revision() failed: {err}"),
    }
}

async fn get(store: &dyn Store, key: &str) -> Option<KeyValue> {
    match store.get(key).await {
        Ok(kv) => kv,
        Err(err) => panic!("get({key}) failed: {err}"),
    }
}

async fn create(store: &dyn Store, key: &str, value: &[u8]) -> KeyValue {
    match store.create(key, value).await {
        Ok(kv) => kv,
        Err(err) => panic!("create({key}) failed: {err}"),
    }
}

async fn update(store: &dyn Store, key: &str, value: &[u8], expected: Revision) -> KeyValue {
    match store.update(key, value, expected).await {
        Ok(kv) => kv,
        Err(err) => panic!("update({key}, expected {expected}) failed: {err}"),
    }
}

async fn delete(store: &dyn Store, key: &str, expected: Option<Revision>) -> KeyValue {
    match store.delete(key, expected).await {
        Ok(kv) => kv,
        Err(err) => panic!("delete({key}, expected {expected:?}) failed: {err}"),
    }
}

async fn compact(store: &dyn Store, revision: Revision) {
    if let Err(err) = store.compact(revision).await {
        panic!("compact({revision}) failed: {err}");
    }
}

/// All keys under `prefix` now, in one unlimited range.
async fn list(store: &dyn Store, prefix: &str, at: Option<Revision>) -> Vec<KeyValue> {
    match store.range(prefix, None, 0, at).await {
        Ok(result) => {
            assert!(
                !result.more,
                "an unlimited range of {prefix} at {at:?} set `more`"
            );
            result.kvs
        }
        Err(err) => panic!("range({prefix}, at {at:?}) failed: {err}"),
    }
}

async fn watch(store: &dyn Store, prefix: &str, after: Revision) -> Watch {
    match store.watch(prefix, after).await {
        Ok(watch) => watch,
        Err(err) => panic!("watch({prefix}, after {after}) failed: {err}"),
    }
}

/// The watch's next event; panics on an error, the end of the watch or a timeout.
async fn next_event(watch: &mut Watch, what: &str) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("waiting for {what}: the watch failed: {err}"),
        Ok(None) => panic!("waiting for {what}: the watch ended"),
        Err(_) => panic!("waiting for {what}: no event within {EVENT_TIMEOUT:?}"),
    }
}

/// Events until (and including) the one at `last`; panics if one is past it.
async fn events_through(watch: &mut Watch, last: Revision, what: &str) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let event = next_event(watch, what).await;
        let revision = event.revision();
        assert!(
            revision <= last,
            "{what}: got an event at revision {revision}, past the last write at {last}"
        );
        events.push(event);
        if revision == last {
            return events;
        }
    }
}

async fn assert_no_event(watch: &mut Watch, what: &str) {
    if let Ok(item) = tokio::time::timeout(QUIET_PERIOD, watch.next()).await {
        match item {
            Some(Ok(event)) => panic!("{what}: unexpected extra event {event:?}"),
            Some(Err(err)) => panic!("{what}: the watch failed: {err}"),
            None => panic!("{what}: the watch ended"),
        }
    }
}

/// The revisions of `events` are exactly `after + 1 ..= last`, in order.
fn assert_consecutive(events: &[Event], after: Revision, last: Revision, what: &str) {
    let revisions: Vec<Revision> = events.iter().map(Event::revision).collect();
    let expected: Vec<Revision> = (after + 1..=last).collect();
    assert_eq!(
        revisions, expected,
        "{what}: the watch after {after} must deliver every revision up to {last} once, in order"
    );
}

fn assert_compacted(
    result: Result<impl std::fmt::Debug, StoreError>,
    compacted: Revision,
    what: &str,
) {
    match result {
        Err(StoreError::Compacted {
            compacted: reported,
            ..
        }) => assert_eq!(
            reported, compacted,
            "{what}: Compacted must name the compaction revision"
        ),
        other => panic!("{what}: expected Compacted (compaction at {compacted}), got {other:?}"),
    }
}

fn key(name: &str) -> String {
    format!("/conformance/{name}")
}

// ---------------------------------------------------------------------------------------------
// Single-key reads and writes
// ---------------------------------------------------------------------------------------------

pub async fn create_then_get_round_trips_the_value_and_revisions(store: &dyn Store) {
    let start = revision(store).await;
    let created = create(store, &key("a"), b"one").await;
    assert_eq!(created.key, key("a"));
    assert_eq!(created.value, b"one");
    assert_eq!(
        created.mod_revision,
        start + 1,
        "a create is the next revision"
    );
    assert_eq!(
        created.create_revision, created.mod_revision,
        "a new key is created at its first write"
    );
    assert_eq!(
        get(store, &key("a")).await,
        Some(created.clone()),
        "get returns what create stored"
    );
    assert_eq!(
        revision(store).await,
        created.mod_revision,
        "the store is at the create's revision"
    );
}

pub async fn get_of_a_missing_key_is_none(store: &dyn Store) {
    create(store, &key("present"), b"x").await;
    assert_eq!(get(store, &key("absent")).await, None);
    assert_eq!(
        get(store, &key("pres")).await,
        None,
        "get is exact, not by prefix"
    );
}

pub async fn create_of_an_existing_key_fails_already_exists_and_changes_nothing(store: &dyn Store) {
    let first = create(store, &key("a"), b"first").await;
    match store.create(&key("a"), b"second").await {
        Err(StoreError::AlreadyExists { key: named }) => assert_eq!(named, key("a")),
        other => panic!(
            "a second create of {} must fail AlreadyExists, got {other:?}",
            key("a")
        ),
    }
    assert_eq!(
        get(store, &key("a")).await,
        Some(first.clone()),
        "the failed create changed the key"
    );
    assert_eq!(
        revision(store).await,
        first.mod_revision,
        "the failed create advanced the revision"
    );
}

pub async fn each_successful_write_advances_the_revision_by_exactly_one(store: &dyn Store) {
    let mut expected = revision(store).await;
    let mut kv = create(store, &key("a"), b"0").await;
    expected += 1;
    assert_eq!(kv.mod_revision, expected, "create");
    for i in 1..10 {
        kv = update(store, &key("a"), format!("{i}").as_bytes(), kv.mod_revision).await;
        expected += 1;
        assert_eq!(kv.mod_revision, expected, "update {i}");
        assert_eq!(
            revision(store).await,
            expected,
            "store revision after update {i}"
        );
    }
    let other = create(store, &key("b"), b"b").await;
    expected += 1;
    assert_eq!(other.mod_revision, expected, "a create of another key");
    let deleted = delete(store, &key("a"), None).await;
    expected += 1;
    assert_eq!(deleted.mod_revision, expected, "delete");
    assert_eq!(revision(store).await, expected);
}

pub async fn failed_writes_do_not_advance_the_revision(store: &dyn Store) {
    let kv = create(store, &key("a"), b"a").await;
    let before = revision(store).await;
    let _ = store.create(&key("a"), b"again").await;
    let _ = store.update(&key("a"), b"stale", kv.mod_revision - 1).await;
    let _ = store.update(&key("missing"), b"x", kv.mod_revision).await;
    let _ = store.delete(&key("missing"), None).await;
    let _ = store.delete(&key("a"), Some(kv.mod_revision + 100)).await;
    assert_eq!(
        revision(store).await,
        before,
        "failed writes must not consume revisions"
    );
    let next = create(store, &key("b"), b"b").await;
    assert_eq!(
        next.mod_revision,
        before + 1,
        "the next successful write follows the last successful one"
    );
}

pub async fn update_with_the_current_revision_replaces_the_value(store: &dyn Store) {
    let created = create(store, &key("a"), b"old").await;
    let updated = update(store, &key("a"), b"new", created.mod_revision).await;
    assert_eq!(updated.value, b"new");
    assert_eq!(
        updated.create_revision, created.create_revision,
        "an update keeps the create revision"
    );
    assert_eq!(updated.mod_revision, created.mod_revision + 1);
    assert_eq!(get(store, &key("a")).await, Some(updated));
}

pub async fn update_with_a_stale_revision_conflicts_and_changes_nothing(store: &dyn Store) {
    let created = create(store, &key("a"), b"v1").await;
    let current = update(store, &key("a"), b"v2", created.mod_revision).await;
    match store.update(&key("a"), b"v3", created.mod_revision).await {
        Err(StoreError::Conflict {
            key: named,
            expected,
            actual,
        }) => {
            assert_eq!(named, key("a"));
            assert_eq!(
                expected, created.mod_revision,
                "Conflict names the expected revision"
            );
            assert_eq!(
                actual, current.mod_revision,
                "Conflict names the key's current revision"
            );
        }
        other => panic!(
            "an update of {} at a stale revision must conflict, got {other:?}",
            key("a")
        ),
    }
    assert_eq!(
        get(store, &key("a")).await,
        Some(current.clone()),
        "the conflicting update changed the key"
    );
    assert_eq!(
        revision(store).await,
        current.mod_revision,
        "the conflicting update advanced the revision"
    );
}

pub async fn update_of_a_missing_key_is_not_found(store: &dyn Store) {
    let other = create(store, &key("other"), b"x").await;
    match store
        .update(&key("missing"), b"x", other.mod_revision)
        .await
    {
        Err(StoreError::NotFound { key: named }) => assert_eq!(named, key("missing")),
        other => panic!("an update of a missing key must be NotFound, got {other:?}"),
    }
    assert_eq!(
        get(store, &key("missing")).await,
        None,
        "the failed update created the key"
    );
}

pub async fn concurrent_updates_from_the_same_revision_let_exactly_one_win(store: &dyn Store) {
    let created = create(store, &key("contended"), b"start").await;
    let name = key("contended");
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let name = &name;
            async move {
                store
                    .update(name, format!("writer {i}").as_bytes(), created.mod_revision)
                    .await
            }
        })
        .collect();
    let results = join_all(attempts).await;
    let winners: Vec<&KeyValue> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one compare-and-swap from the same revision wins: {results:?}"
    );
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(err, StoreError::Conflict { .. }),
                "the losers must fail with Conflict, got {err}"
            );
        }
    }
    assert_eq!(
        get(store, &key("contended")).await.as_ref(),
        Some(winners[0])
    );
    assert_eq!(
        revision(store).await,
        created.mod_revision + 1,
        "only the winner consumed a revision"
    );
}

pub async fn delete_without_expected_revision_returns_the_last_value_at_the_deletion_revision(
    store: &dyn Store,
) {
    let created = create(store, &key("a"), b"v1").await;
    let last = update(store, &key("a"), b"v2", created.mod_revision).await;
    let deleted = delete(store, &key("a"), None).await;
    assert_eq!(deleted.key, key("a"));
    assert_eq!(deleted.value, b"v2", "delete returns the last value");
    assert_eq!(deleted.create_revision, created.create_revision);
    assert_eq!(
        deleted.mod_revision,
        last.mod_revision + 1,
        "delete returns its own revision"
    );
    assert_eq!(revision(store).await, deleted.mod_revision);
    assert_eq!(get(store, &key("a")).await, None, "the key is gone");
    assert!(
        list(store, &key(""), None).await.is_empty(),
        "a range no longer lists the key"
    );
}

pub async fn delete_with_the_current_revision_deletes(store: &dyn Store) {
    let created = create(store, &key("a"), b"v1").await;
    let deleted = delete(store, &key("a"), Some(created.mod_revision)).await;
    assert_eq!(deleted.value, b"v1");
    assert_eq!(deleted.mod_revision, created.mod_revision + 1);
    assert_eq!(get(store, &key("a")).await, None);
}

pub async fn delete_with_a_stale_revision_conflicts_and_changes_nothing(store: &dyn Store) {
    let created = create(store, &key("a"), b"v1").await;
    let current = update(store, &key("a"), b"v2", created.mod_revision).await;
    match store.delete(&key("a"), Some(created.mod_revision)).await {
        Err(StoreError::Conflict {
            key: named,
            expected,
            actual,
        }) => {
            assert_eq!(named, key("a"));
            assert_eq!(expected, created.mod_revision);
            assert_eq!(actual, current.mod_revision);
        }
        other => panic!(
            "a delete of {} at a stale revision must conflict, got {other:?}",
            key("a")
        ),
    }
    assert_eq!(
        get(store, &key("a")).await,
        Some(current.clone()),
        "the conflicting delete changed the key"
    );
    assert_eq!(revision(store).await, current.mod_revision);
}

pub async fn delete_of_a_missing_key_is_not_found(store: &dyn Store) {
    let before = create(store, &key("other"), b"x").await;
    for expected in [None, Some(before.mod_revision)] {
        match store.delete(&key("missing"), expected).await {
            Err(StoreError::NotFound { key: named }) => assert_eq!(named, key("missing")),
            other => panic!(
                "a delete of a missing key (expected {expected:?}) must be NotFound, got {other:?}"
            ),
        }
    }
    assert_eq!(revision(store).await, before.mod_revision);
}

pub async fn recreate_after_delete_has_a_new_create_revision(store: &dyn Store) {
    let first = create(store, &key("a"), b"first life").await;
    let deleted = delete(store, &key("a"), None).await;
    let second = create(store, &key("a"), b"second life").await;
    assert_eq!(
        second.create_revision,
        deleted.mod_revision + 1,
        "a recreated key starts a new life"
    );
    assert_eq!(second.create_revision, second.mod_revision);
    assert_ne!(second.create_revision, first.create_revision);
    match store.update(&key("a"), b"x", first.mod_revision).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("a revision of the key's previous life must conflict, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Range
// ---------------------------------------------------------------------------------------------

pub async fn range_by_prefix_does_not_match_sibling_prefixes(store: &dyn Store) {
    for name in ["a", "a/", "a/x", "a/y/z", "ab", "ab/x", "b/x"] {
        create(store, &key(name), name.as_bytes()).await;
    }
    let keys: Vec<String> = list(store, &key("a/"), None)
        .await
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        keys,
        vec![key("a/"), key("a/x"), key("a/y/z")],
        "range of {}",
        key("a/")
    );
    let keys: Vec<String> = list(store, &key("ab"), None)
        .await
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, vec![key("ab"), key("ab/x")], "range of {}", key("ab"));
    assert!(
        list(store, &key("c"), None).await.is_empty(),
        "a prefix nothing starts with"
    );
}

pub async fn range_returns_keys_in_ascending_order_with_their_revisions(store: &dyn Store) {
    let mut written = Vec::new();
    for name in ["m", "c", "x", "a", "q", "b"] {
        written.push(create(store, &key(name), name.as_bytes()).await);
    }
    let b = written
        .iter()
        .position(|kv| kv.key == key("b"))
        .unwrap_or_default();
    written[b] = update(store, &key("b"), b"b2", written[b].mod_revision).await;
    written.sort_by(|l, r| l.key.cmp(&r.key));
    assert_eq!(
        list(store, &key(""), None).await,
        written,
        "range returns every key, ascending, as stored"
    );
}

pub async fn range_pages_with_limit_and_start_after_visit_every_key_exactly_once(
    store: &dyn Store,
) {
    let mut names: Vec<String> = (0..23).map(|i| key(&format!("p/{i:02}"))).collect();
    for name in names.iter().rev() {
        create(store, name, name.as_bytes()).await;
    }
    create(store, &key("q/outside"), b"x").await;
    names.sort();
    for limit in [1, 5, 7, 23, 100] {
        let mut seen = Vec::new();
        let mut start_after: Option<String> = None;
        let mut pinned: Option<Revision> = None;
        for page in 0.. {
            assert!(
                page <= names.len(),
                "paging with limit {limit} does not terminate"
            );
            let result = match store
                .range(&key("p/"), start_after.as_deref(), limit, pinned)
                .await
            {
                Ok(result) => result,
                Err(err) => panic!("page {page} with limit {limit} failed: {err}"),
            };
            assert!(
                result.kvs.len() <= limit,
                "page {page} exceeds the limit {limit}"
            );
            pinned.get_or_insert(result.revision);
            seen.extend(result.kvs.iter().map(|kv| kv.key.clone()));
            if !result.more {
                break;
            }
            start_after = result.kvs.last().map(|kv| kv.key.clone());
            assert!(
                start_after.is_some(),
                "a page with `more` set must not be empty"
            );
        }
        assert_eq!(
            seen, names,
            "paging with limit {limit} must visit every key exactly once, in order"
        );
    }
}

pub async fn range_sets_more_only_when_matching_keys_remain(store: &dyn Store) {
    for name in ["r/1", "r/2", "r/3", "s/1"] {
        create(store, &key(name), b"x").await;
    }
    let prefix = key("r/");
    let page = |limit| store.range(&prefix, None, limit, None);
    let two = page(2)
        .await
        .unwrap_or_else(|err| panic!("range limit 2: {err}"));
    assert_eq!(two.kvs.len(), 2);
    assert!(two.more, "two of three keys returned: more must be set");
    let three = page(3)
        .await
        .unwrap_or_else(|err| panic!("range limit 3: {err}"));
    assert_eq!(three.kvs.len(), 3);
    assert!(
        !three.more,
        "all three keys returned (a key outside the prefix follows): more must be clear"
    );
    let last = store
        .range(&key("r/"), Some(&key("r/2")), 1, None)
        .await
        .unwrap_or_else(|err| panic!("range after r/2: {err}"));
    assert_eq!(
        last.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![key("r/3")]
    );
    assert!(!last.more, "the last key returned: more must be clear");
}

pub async fn range_reports_the_revision_it_was_served_at(store: &dyn Store) {
    create(store, &key("a"), b"a").await;
    let current = create(store, &key("b"), b"b").await.mod_revision;
    let now = store
        .range(&key(""), None, 0, None)
        .await
        .unwrap_or_else(|err| panic!("range now: {err}"));
    assert_eq!(
        now.revision, current,
        "a range now is served at the current revision"
    );
    let pinned = store
        .range(&key(""), None, 0, Some(current - 1))
        .await
        .unwrap_or_else(|err| panic!("range at {}: {err}", current - 1));
    assert_eq!(
        pinned.kvs.len(),
        1,
        "at the first create only one key existed"
    );
    assert!(
        pinned.revision >= current - 1,
        "a range at an older revision reports a revision at or after it (etcd: the current one)"
    );
}

pub async fn range_at_an_older_revision_sees_the_old_state(store: &dyn Store) {
    let a1 = create(store, &key("a"), b"a1").await;
    let b1 = create(store, &key("b"), b"b1").await;
    let snapshot = revision(store).await;
    let a2 = update(store, &key("a"), b"a2", a1.mod_revision).await;
    delete(store, &key("b"), None).await;
    let c1 = create(store, &key("c"), b"c1").await;
    let b_again = create(store, &key("b"), b"b-again").await;

    assert_eq!(
        list(store, &key(""), Some(snapshot)).await,
        vec![a1.clone(), b1.clone()],
        "state at {snapshot}"
    );
    assert_eq!(
        list(store, &key(""), Some(a2.mod_revision)).await,
        vec![a2.clone(), b1.clone()],
        "state after the update"
    );
    assert_eq!(
        list(store, &key(""), Some(c1.mod_revision)).await,
        vec![a2.clone(), c1.clone()],
        "state after b's deletion and c's creation"
    );
    assert_eq!(
        list(store, &key(""), None).await,
        vec![a2, b_again, c1],
        "state now"
    );
    let page = store
        .range(&key(""), None, 1, Some(snapshot))
        .await
        .unwrap_or_else(|err| panic!("range limit 1 at {snapshot}: {err}"));
    assert_eq!(page.kvs, vec![a1.clone()]);
    assert!(page.more, "limit applies to the old state");
    let rest = store
        .range(&key(""), Some(&key("a")), 0, Some(snapshot))
        .await
        .unwrap_or_else(|err| panic!("range after a at {snapshot}: {err}"));
    assert_eq!(rest.kvs, vec![b1], "start_after applies to the old state");
}

pub async fn range_at_a_future_revision_fails_future_revision(store: &dyn Store) {
    let current = create(store, &key("a"), b"a").await.mod_revision;
    match store.range(&key(""), None, 0, Some(current + 1)).await {
        Err(StoreError::FutureRevision {
            requested,
            current: reported,
        }) => {
            assert_eq!(requested, current + 1);
            assert_eq!(reported, current);
        }
        other => panic!(
            "a range at {} (store at {current}) must be FutureRevision, got {other:?}",
            current + 1
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Compaction
// ---------------------------------------------------------------------------------------------

pub async fn compaction_makes_reads_before_the_compaction_point_fail_compacted(store: &dyn Store) {
    let a1 = create(store, &key("a"), b"a1").await;
    let a2 = update(store, &key("a"), b"a2", a1.mod_revision).await;
    let a3 = update(store, &key("a"), b"a3", a2.mod_revision).await;
    compact(store, a3.mod_revision).await;
    for old in [a1.mod_revision, a2.mod_revision] {
        assert_compacted(
            store.range(&key(""), None, 0, Some(old)).await,
            a3.mod_revision,
            &format!("range at {old} after compacting at {}", a3.mod_revision),
        );
    }
}

pub async fn reads_at_and_after_the_compaction_point_still_work(store: &dyn Store) {
    let kept = create(store, &key("kept"), b"written before compaction").await;
    let a1 = create(store, &key("a"), b"a1").await;
    let a2 = update(store, &key("a"), b"a2", a1.mod_revision).await;
    let gone = create(store, &key("gone"), b"x").await;
    let point = delete(store, &key("gone"), Some(gone.mod_revision))
        .await
        .mod_revision;
    let a3 = update(store, &key("a"), b"a3", a2.mod_revision).await;
    let b = create(store, &key("b"), b"b").await;
    compact(store, point).await;

    assert_eq!(
        list(store, &key(""), Some(point)).await,
        vec![a2.clone(), kept.clone()],
        "the state at the compaction point survives it, including keys last written long before"
    );
    assert_eq!(
        list(store, &key(""), Some(a3.mod_revision)).await,
        vec![a3.clone(), kept.clone()]
    );
    assert_eq!(
        list(store, &key(""), None).await,
        vec![a3.clone(), b, kept.clone()]
    );
    assert_eq!(get(store, &key("kept")).await, Some(kept));
    let a4 = update(store, &key("a"), b"a4", a3.mod_revision).await;
    assert_eq!(
        a4.create_revision, a1.create_revision,
        "compaction keeps create revisions"
    );
}

pub async fn compacted_revision_reports_the_last_compaction(store: &dyn Store) {
    let initial = store
        .compacted_revision()
        .await
        .unwrap_or_else(|err| panic!("compacted_revision: {err}"));
    let kv = create(store, &key("a"), b"a").await;
    assert!(
        initial < kv.mod_revision,
        "a fresh store is compacted before its first write"
    );
    let kv = update(store, &key("a"), b"b", kv.mod_revision).await;
    compact(store, kv.mod_revision - 1).await;
    let reported = store
        .compacted_revision()
        .await
        .unwrap_or_else(|err| panic!("compacted_revision: {err}"));
    assert_eq!(reported, kv.mod_revision - 1);
    update(store, &key("a"), b"c", kv.mod_revision).await;
    compact(store, kv.mod_revision).await;
    let reported = store
        .compacted_revision()
        .await
        .unwrap_or_else(|err| panic!("compacted_revision: {err}"));
    assert_eq!(
        reported, kv.mod_revision,
        "a later compaction moves the point forward"
    );
}

pub async fn compact_at_a_future_revision_fails_future_revision(store: &dyn Store) {
    let current = create(store, &key("a"), b"a").await.mod_revision;
    match store.compact(current + 1).await {
        Err(StoreError::FutureRevision {
            requested,
            current: reported,
        }) => {
            assert_eq!(requested, current + 1);
            assert_eq!(reported, current);
        }
        other => panic!(
            "compacting at {} (store at {current}) must be FutureRevision, got {other:?}",
            current + 1
        ),
    }
    assert_eq!(
        get(store, &key("a")).await.map(|kv| kv.value),
        Some(b"a".to_vec())
    );
}

pub async fn watch_from_before_the_compaction_point_fails_compacted(store: &dyn Store) {
    let start = revision(store).await;
    let a1 = create(store, &key("a"), b"a1").await;
    let a2 = update(store, &key("a"), b"a2", a1.mod_revision).await;
    compact(store, a2.mod_revision).await;
    for after in [start, a1.mod_revision] {
        let what = format!("watch after {after} (compacted at {})", a2.mod_revision);
        match store.watch(&key(""), after).await {
            Err(err) => assert_compacted(Err::<(), _>(err), a2.mod_revision, &what),
            // A backend may report the compaction as the watch's first and last item instead.
            Ok(mut watch) => match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
                Ok(Some(Err(err))) => assert_compacted(Err::<(), _>(err), a2.mod_revision, &what),
                other => panic!("{what}: expected Compacted, got {other:?}"),
            },
        }
    }
}

pub async fn watch_from_the_compaction_point_replays_the_remaining_history(store: &dyn Store) {
    let a1 = create(store, &key("a"), b"a1").await;
    let a2 = update(store, &key("a"), b"a2", a1.mod_revision).await;
    let a3 = update(store, &key("a"), b"a3", a2.mod_revision).await;
    let b = create(store, &key("b"), b"b").await;
    compact(store, a2.mod_revision).await;
    let mut watch = watch(store, &key(""), a2.mod_revision).await;
    let events = events_through(
        &mut watch,
        b.mod_revision,
        "history after the compaction point",
    )
    .await;
    assert_consecutive(
        &events,
        a2.mod_revision,
        b.mod_revision,
        "history after the compaction point",
    );
    assert_eq!(events[0].kv, a3);
    assert_eq!(
        events[0].prev.as_ref(),
        Some(&a2),
        "the previous value survives compaction at its revision"
    );
    assert_eq!(events[1].kv, b);
}

// ---------------------------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------------------------

pub async fn watch_replays_history_in_order_with_previous_values(store: &dyn Store) {
    let start = revision(store).await;
    let a1 = create(store, &key("a"), b"a1").await;
    let a2 = update(store, &key("a"), b"a2", a1.mod_revision).await;
    let gone = delete(store, &key("a"), None).await;
    let a_again = create(store, &key("a"), b"again").await;
    let mut watch = watch(store, &key(""), start).await;
    let events = events_through(&mut watch, a_again.mod_revision, "replayed history").await;
    let expected = vec![
        Event {
            kind: EventKind::Put,
            kv: a1.clone(),
            prev: None,
        },
        Event {
            kind: EventKind::Put,
            kv: a2.clone(),
            prev: Some(a1),
        },
        Event {
            kind: EventKind::Delete,
            kv: gone,
            prev: Some(a2),
        },
        Event {
            kind: EventKind::Put,
            kv: a_again,
            prev: None,
        },
    ];
    assert_eq!(
        events, expected,
        "a watch replays creates, updates and deletes with previous values"
    );
    assert_no_event(&mut watch, "after the replayed history").await;
}

pub async fn watch_delivers_live_changes_after_the_history(store: &dyn Store) {
    let start = revision(store).await;
    let old = create(store, &key("old"), b"old").await;
    let mut watch = watch(store, &key(""), start).await;
    let replayed = next_event(&mut watch, "the replayed create").await;
    assert_eq!(replayed.kv, old);
    let new = create(store, &key("new"), b"new").await;
    let updated = update(store, &key("old"), b"old2", old.mod_revision).await;
    let deleted = delete(store, &key("new"), None).await;
    let live = events_through(&mut watch, deleted.mod_revision, "live changes").await;
    let expected = vec![
        Event {
            kind: EventKind::Put,
            kv: new.clone(),
            prev: None,
        },
        Event {
            kind: EventKind::Put,
            kv: updated,
            prev: Some(old),
        },
        Event {
            kind: EventKind::Delete,
            kv: deleted,
            prev: Some(new),
        },
    ];
    assert_eq!(live, expected);
    assert_no_event(&mut watch, "after the live changes").await;
}

pub async fn watch_from_the_current_revision_receives_only_new_changes(store: &dyn Store) {
    create(store, &key("before"), b"x").await;
    let now = revision(store).await;
    let mut watch = watch(store, &key(""), now).await;
    let after = create(store, &key("after"), b"y").await;
    let event = next_event(&mut watch, "the first change after the watch started").await;
    assert_eq!(
        event.kv, after,
        "a watch from the current revision starts with the next change"
    );
    assert_no_event(&mut watch, "after the only new change").await;
}

pub async fn watch_from_a_future_revision_starts_after_it(store: &dyn Store) {
    let now = create(store, &key("before"), b"x").await.mod_revision;
    let mut watch = watch(store, &key(""), now + 2).await;
    create(store, &key("skipped 1"), b"x").await;
    create(store, &key("skipped 2"), b"x").await;
    let first = create(store, &key("delivered"), b"x").await;
    let event = next_event(&mut watch, "the first change after the future revision").await;
    assert_eq!(
        event.kv,
        first,
        "a watch after {} starts at {}",
        now + 2,
        now + 3
    );
    assert_no_event(&mut watch, "after the only change past the future revision").await;
}

pub async fn watch_started_during_concurrent_writes_has_no_gap_and_no_duplicate(store: &dyn Store) {
    const WRITERS: usize = 4;
    const WRITES: usize = 60;
    let start = revision(store).await;
    let last = start + (WRITERS * WRITES) as Revision;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| async move {
            let name = key(&format!("w{writer}"));
            let mut kv = create(store, &name, b"0").await;
            for i in 1..WRITES {
                kv = update(store, &name, i.to_string().as_bytes(), kv.mod_revision).await;
                tokio::task::yield_now().await;
            }
        })
        .collect();
    let watcher = async {
        // Start watches while the writers run, each from the revision the store had just
        // before, so their history/live handover happens under load.
        let mut watches = Vec::new();
        for _ in 0..8 {
            let after = revision(store).await;
            watches.push((after, watch(store, &key(""), after).await));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        watches
    };
    let (_, watches) = tokio::join!(join_all(writers), watcher);
    assert_eq!(revision(store).await, last, "every write succeeded");
    for (after, mut watch) in watches {
        let what = format!("watch started after {after} during the writes");
        let events = if after < last {
            events_through(&mut watch, last, &what).await
        } else {
            Vec::new()
        };
        assert_consecutive(&events, after, last, &what);
        assert_no_event(&mut watch, &what).await;
    }
}

pub async fn watch_filters_by_prefix(store: &dyn Store) {
    let start = revision(store).await;
    create(store, &key("pods/a"), b"in").await;
    create(store, &key("podsx"), b"sibling").await;
    create(store, &key("services/a"), b"other").await;
    let mut watch = watch(store, &key("pods/"), start).await;
    let replayed = next_event(&mut watch, "the replayed pod").await;
    assert_eq!(replayed.kv.key, key("pods/a"));
    create(store, &key("services/b"), b"other").await;
    create(store, &key("pods"), b"the prefix without its slash").await;
    let live = create(store, &key("pods/b"), b"in").await;
    let event = next_event(&mut watch, "the live pod").await;
    assert_eq!(
        event.kv,
        live,
        "only keys under {} are delivered",
        key("pods/")
    );
    assert_no_event(&mut watch, "after the last pod").await;
}

pub async fn concurrent_writers_get_unique_consecutive_revisions_a_watch_sees_in_order(
    store: &dyn Store,
) {
    const WRITERS: usize = 8;
    const WRITES: usize = 50;
    let start = revision(store).await;
    let mut watch = watch(store, &key(""), start).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| async move {
            let mut acknowledged = Vec::with_capacity(WRITES);
            for i in 0..WRITES {
                let name = key(&format!("c/{writer}/{i}"));
                acknowledged.push(create(store, &name, format!("{writer}:{i}").as_bytes()).await);
            }
            acknowledged
        })
        .collect();
    let acknowledged: Vec<KeyValue> = join_all(writers).await.into_iter().flatten().collect();
    let last = start + (WRITERS * WRITES) as Revision;
    let mut revisions: Vec<Revision> = acknowledged.iter().map(|kv| kv.mod_revision).collect();
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (start + 1..=last).collect::<Vec<_>>(),
        "concurrent writes must get unique, consecutive revisions"
    );
    let events = events_through(&mut watch, last, "the concurrent writes").await;
    assert_consecutive(&events, start, last, "the concurrent writes");
    for event in &events {
        let written = acknowledged
            .iter()
            .find(|kv| kv.mod_revision == event.revision());
        assert_eq!(
            Some(&event.kv),
            written,
            "the watch delivers what the write acknowledged"
        );
    }
    assert_no_event(&mut watch, "after the concurrent writes").await;
}

pub async fn values_are_arbitrary_bytes_including_empty_and_large(store: &dyn Store) {
    let start = revision(store).await;
    let all_bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let large: Vec<u8> = (0..200 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let values: [(&str, &[u8]); 4] = [
        ("empty", b""),
        ("nul", b"\0"),
        ("bytes", &all_bytes),
        ("large", &large),
    ];
    for (name, value) in values {
        let kv = create(store, &key(name), value).await;
        assert_eq!(kv.value, value, "create of {name} returns the value");
        assert_eq!(
            get(store, &key(name)).await.map(|kv| kv.value),
            Some(value.to_vec()),
            "get of {name}"
        );
    }
    let listed = list(store, &key(""), None).await;
    assert_eq!(listed.len(), 4);
    for (name, value) in values {
        let found = listed
            .iter()
            .find(|kv| kv.key == key(name))
            .map(|kv| kv.value.as_slice());
        assert_eq!(found, Some(value), "range returns {name} intact");
    }
    let mut watch = watch(store, &key(""), start).await;
    let events = events_through(&mut watch, start + 4, "the byte values").await;
    for ((name, value), event) in values.iter().zip(&events) {
        assert_eq!(event.kv.value, *value, "the watch delivers {name} intact");
    }
}
