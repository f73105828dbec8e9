//! The etcd v3 backend: [`EtcdStore`] keeps the [`Store`] contract on an etcd cluster.
//!
//! Owns the translation of every store operation into etcd requests (compare-and-swap writes as
//! one `Txn` each, reads as `Range`, watches as one gRPC watch stream each) and of etcd's answers
//! and errors back into [`KeyValue`], [`Event`] and [`StoreError`]. Every key lives below the
//! store's key prefix (e.g. `/registry`), which is added on the way in and stripped on the way
//! out, so several stores can share one etcd; the revision, however, is etcd's global one and
//! counts every write to the cluster, not only this prefix's.
//!
//! Never writes outside its prefix, never writes bookkeeping keys of its own (the revision would
//! then count writes the caller did not make), and never retries a write: a failed or timed-out
//! write is reported as [`StoreError::Backend`], and the caller decides (a timed-out `Txn` may
//! still have been applied).
//!
//! etcd does not report its compaction point. The store remembers the highest compaction it did
//! or learned of, and finds compactions done by others (another skiff-control, etcd's own
//! `--auto-compaction`) by probing reads at old revisions (see
//! [`EtcdStore::compacted_revision`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, GetResponse, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};

use crate::{
    Event, EventKind, KeyValue, RangeResult, Revision, Store, StoreError, StoreResult, Watch,
};

/// How long connecting to the first endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request (not a watch stream) may take before it is reported as failed. The
/// balanced gRPC channel waits forever for an endpoint to come back; this bounds every call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 keep-alive: how often a ping is sent and how long its answer may take.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events buffered per watch between the gRPC stream and the consumer.
const WATCH_BUFFER: usize = 1024;

/// etcd's error for a read or watch at a revision before its compaction point
/// (`ErrGRPCCompacted`, gRPC `OutOfRange`).
const COMPACTED_MESSAGE: &str = "required revision has been compacted";
/// etcd's error for a read or compaction at a revision after its current one
/// (`ErrGRPCFutureRev`, gRPC `OutOfRange`).
const FUTURE_REVISION_MESSAGE: &str = "required revision is a future revision";

/// A [`Store`] on etcd v3. Cheap to clone: clones share the connection and the remembered
/// compaction point.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    keys: Keys,
    /// The endpoints, for error messages.
    endpoints: Arc<str>,
    /// The highest compaction revision this store did or learned of (0: none known).
    compacted: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

/// Largest response accepted from etcd: a range over many objects easily exceeds gRPC's 4 MiB
/// default (kube-apiserver likewise lifts it).
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

impl EtcdStore {
    /// A KV client that accepts responses up to [`MAX_RESPONSE_BYTES`].
    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Connects to the etcd cluster at `endpoints` (`http://host:port`) and checks that it
    /// answers. Keys are stored as `prefix` + key; `prefix` should end with a separator (e.g.
    /// `/registry/`) if another store may use a prefix that starts with the same characters.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        let joined = endpoints.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            // Watches fail instead of hanging silently when the member loses its leader.
            .with_require_leader(true);
        let client =
            tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(endpoints, Some(options)))
                .await
                .map_err(|_| StoreError::Backend {
                    message: format!(
                        "etcd at {joined}: connecting took longer than {CONNECT_TIMEOUT:?}"
                    ),
                })?
                .map_err(|error| StoreError::Backend {
                    message: format!("etcd at {joined}: connecting: {error}"),
                })?;
        let store = EtcdStore {
            client,
            keys: Keys {
                prefix: Arc::from(prefix),
            },
            endpoints: Arc::from(joined.as_str()),
            compacted: Arc::new(AtomicI64::new(0)),
        };
        // The channel connects lazily: make sure somebody answers now, within the connect
        // timeout, so that a wrong address fails here and not at the first write.
        tokio::time::timeout(CONNECT_TIMEOUT, store.revision())
            .await
            .map_err(|_| StoreError::Backend {
                message: format!(
                    "etcd at {joined}: no answer within {CONNECT_TIMEOUT:?} (is it running?)"
                ),
            })??;
        Ok(store)
    }

    /// The key prefix this store keeps its keys under.
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// Runs one request with [`REQUEST_TIMEOUT`], turning etcd's errors into [`Failure`]s.
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(Failure::from_etcd(&error)),
            Err(_) => Err(Failure::Other(format!(
                "no answer within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }

    /// A [`StoreError::Backend`] naming the endpoints, the operation and its key.
    fn backend(&self, operation: &str, key: &str, message: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            message: format!(
                "etcd at {}: {operation} {:?}: {message}",
                self.endpoints, key
            ),
        }
    }

    /// Maps a failure of a request that did not ask for an old or future revision.
    fn failed(&self, operation: &str, key: &str, failure: Failure) -> StoreError {
        self.backend(operation, key, failure.message())
    }

    /// Reads (count only) at `revision`: `Ok` if etcd still has it.
    async fn probe(&self, revision: Revision) -> Result<(), Failure> {
        let options = GetOptions::new().with_revision(revision).with_count_only();
        self.call(
            self.client
                .kv_client()
                .get(self.keys.probe_key(), Some(options)),
        )
        .await
        .map(drop)
    }

    /// The compaction point, given that a read at `compacted` failed with "compacted": the
    /// lowest revision above it that etcd can still read. The remembered point is tried first
    /// (one read when nobody else compacted since); otherwise a binary search up to the current
    /// revision. Remembered for later calls.
    async fn find_compaction(&self, compacted: Revision) -> StoreResult<Revision> {
        let probe_failed = |revision: Revision, failure: Failure| {
            self.backend(
                "reading at revision",
                &revision.to_string(),
                failure.message(),
            )
        };
        let mut failing = compacted;
        let known = self.compacted.load(Ordering::Relaxed);
        if known > failing {
            match self.probe(known).await {
                Ok(()) => return Ok(known),
                Err(Failure::Compacted) => failing = known,
                Err(failure) => return Err(probe_failed(known, failure)),
            }
        }
        let mut readable = self.revision().await?;
        while readable - failing > 1 {
            let middle = failing + (readable - failing) / 2;
            match self.probe(middle).await {
                Ok(()) => readable = middle,
                Err(Failure::Compacted) => failing = middle,
                Err(failure) => return Err(probe_failed(middle, failure)),
            }
        }
        self.compacted.fetch_max(readable, Ordering::Relaxed);
        Ok(readable)
    }

    /// The error for a read at `requested` that etcd refused as compacted.
    async fn compacted_error(&self, requested: Revision) -> StoreError {
        match self.find_compaction(requested).await {
            Ok(compacted) => StoreError::Compacted {
                requested,
                compacted,
            },
            Err(error) => error,
        }
    }

    /// The error for a request at `requested` that etcd refused as a future revision.
    async fn future_error(&self, requested: Revision) -> StoreError {
        match self.revision().await {
            Ok(current) => StoreError::FutureRevision { requested, current },
            Err(error) => error,
        }
    }

    /// Runs a compare-and-swap transaction on `key`.
    async fn txn(&self, operation: &str, key: &str, txn: Txn) -> StoreResult<TxnResponse> {
        self.call(self.kv().txn(txn))
            .await
            .map_err(|failure| self.failed(operation, key, failure))
    }

    /// The revision in a response header.
    fn header_revision(
        &self,
        operation: &str,
        key: &str,
        header: Option<&etcd_client::ResponseHeader>,
    ) -> StoreResult<Revision> {
        header
            .map(etcd_client::ResponseHeader::revision)
            .ok_or_else(|| self.backend(operation, key, "the response has no header"))
    }

    /// The current modification revision of `key` from the `Get` a failed transaction ran in
    /// its `else` branch; `None` if the key does not exist.
    fn current_mod_revision(
        &self,
        operation: &str,
        key: &str,
        response: &TxnResponse,
    ) -> StoreResult<Option<Revision>> {
        match response.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => {
                Ok(get.kvs().first().map(etcd_client::KeyValue::mod_revision))
            }
            _ => Err(self.backend(operation, key, "the failed transaction returned no read")),
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let response: GetResponse = self
            .call(self.kv().get(self.keys.full(key), None))
            .await
            .map_err(|failure| self.failed("reading", key, failure))?;
        response
            .kvs()
            .first()
            .map(|kv| self.keys.key_value(kv))
            .transpose()
            .map_err(|message| self.backend("reading", key, message))
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> StoreResult<RangeResult> {
        let first = self.keys.full(prefix);
        let end = prefix_end(first.as_bytes());
        // The first key strictly after `start_after`, but never before the prefix.
        let start = match start_after {
            Some(after) => {
                let mut after = self.keys.full(after).into_bytes();
                after.push(0);
                after.max(first.into_bytes())
            }
            None => first.into_bytes(),
        };
        let mut options = GetOptions::new()
            .with_range(end)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        if let Some(revision) = revision.filter(|revision| *revision > 0) {
            options = options.with_revision(revision);
        }
        let response = match self.call(self.kv().get(start, Some(options))).await {
            Ok(response) => response,
            Err(Failure::Compacted) => {
                return Err(self.compacted_error(revision.unwrap_or(0)).await);
            }
            Err(Failure::FutureRevision) => {
                return Err(self.future_error(revision.unwrap_or(0)).await);
            }
            Err(Failure::Other(message)) => {
                return Err(self.backend("listing prefix", prefix, message));
            }
        };
        let kvs = response
            .kvs()
            .iter()
            .map(|kv| self.keys.key_value(kv))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| self.backend("listing prefix", prefix, message))?;
        let served_at = match revision {
            Some(revision) if revision > 0 => revision,
            _ => self.header_revision("listing prefix", prefix, response.header())?,
        };
        Ok(RangeResult {
            kvs,
            more: response.more(),
            revision: served_at,
        })
    }

    async fn create(&self, key: &str, value: &[u8]) -> StoreResult<KeyValue> {
        let full = self.keys.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value, None)]);
        let response = self.txn("creating", key, txn).await?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let revision = self.header_revision("creating", key, response.header())?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(&self, key: &str, value: &[u8], expected: Revision) -> StoreResult<KeyValue> {
        let full = self.keys.full(key);
        let txn = Txn::new()
            .when([
                // Without this, `expected == 0` would match a missing key and create it.
                Compare::create_revision(full.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(
                full.clone(),
                value,
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let response = self.txn("updating", key, txn).await?;
        if !response.succeeded() {
            return Err(
                match self.current_mod_revision("updating", key, &response)? {
                    None => StoreError::NotFound {
                        key: key.to_owned(),
                    },
                    Some(actual) => StoreError::Conflict {
                        key: key.to_owned(),
                        expected,
                        actual,
                    },
                },
            );
        }
        let revision = self.header_revision("updating", key, response.header())?;
        let create_revision = match response.op_responses().first() {
            Some(TxnOpResponse::Put(put)) => {
                put.prev_key().map(etcd_client::KeyValue::create_revision)
            }
            _ => None,
        }
        .ok_or_else(|| self.backend("updating", key, "etcd returned no previous value"))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> StoreResult<KeyValue> {
        let full = self.keys.full(key);
        let mut compares = vec![Compare::create_revision(
            full.clone(),
            CompareOp::Greater,
            0,
        )];
        if let Some(expected) = expected {
            compares.push(Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            ));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let response = self.txn("deleting", key, txn).await?;
        if !response.succeeded() {
            return Err(
                match self.current_mod_revision("deleting", key, &response)? {
                    None => StoreError::NotFound {
                        key: key.to_owned(),
                    },
                    Some(actual) => StoreError::Conflict {
                        key: key.to_owned(),
                        expected: expected.unwrap_or(0),
                        actual,
                    },
                },
            );
        }
        let revision = self.header_revision("deleting", key, response.header())?;
        let previous = match response.op_responses().first() {
            Some(TxnOpResponse::Delete(delete)) => delete.prev_kvs().first().cloned(),
            _ => None,
        }
        .ok_or_else(|| self.backend("deleting", key, "etcd returned no previous value"))?;
        let mut deleted = self
            .keys
            .key_value(&previous)
            .map_err(|message| self.backend("deleting", key, message))?;
        deleted.mod_revision = revision;
        Ok(deleted)
    }

    async fn revision(&self) -> StoreResult<Revision> {
        let response = self
            .call(self.kv().get(
                self.keys.probe_key(),
                Some(GetOptions::new().with_count_only()),
            ))
            .await
            .map_err(|failure| self.failed("reading the revision at", self.prefix(), failure))?;
        self.header_revision("reading the revision at", self.prefix(), response.header())
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        let mut kv = self.kv();
        let request = kv.compact(
            revision,
            // Physical: return only once the compaction is applied, so that reads and watches
            // behind it fail from now on.
            Some(CompactionOptions::new().with_physical()),
        );
        match self.call(request).await {
            Ok(_) => {
                self.compacted.fetch_max(revision, Ordering::Relaxed);
                Ok(())
            }
            // Already compacted at or after `revision` (by this store or another): nothing to
            // forget, as on the embedded store.
            Err(Failure::Compacted) => {
                self.find_compaction(revision).await?;
                Ok(())
            }
            Err(Failure::FutureRevision) => Err(self.future_error(revision).await),
            Err(Failure::Other(message)) => {
                Err(self.backend("compacting at revision", &revision.to_string(), message))
            }
        }
    }

    /// The highest compaction revision this store did or learned of, or one done by someone
    /// else since, found by probing reads at old revisions (one read when nothing changed; a
    /// binary search otherwise). A compaction at revision 1 by someone else cannot be told
    /// apart from none (etcd starts at revision 1) and is reported as 0.
    async fn compacted_revision(&self) -> StoreResult<Revision> {
        let known = self.compacted.load(Ordering::Relaxed);
        let probe = known.max(1);
        match self.probe(probe).await {
            Ok(()) => Ok(known),
            Err(Failure::Compacted) => self.find_compaction(probe).await,
            Err(failure) => {
                Err(self.backend("reading at revision", &probe.to_string(), failure.message()))
            }
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        // etcd serves a watch from `after + 1` as long as `after + 1` is not before its
        // compaction point; the contract wants `after` itself readable. A read at `after`
        // tells exactly that (and finds compactions done by others).
        if after < self.compacted.load(Ordering::Relaxed) {
            return Err(self.compacted_error(after).await);
        }
        match self.probe(after.max(1)).await {
            Ok(()) | Err(Failure::FutureRevision) => {}
            Err(Failure::Compacted) => return Err(self.compacted_error(after).await),
            Err(Failure::Other(message)) => {
                return Err(self.backend("watching prefix", prefix, message));
            }
        }

        let first = self.keys.full(prefix);
        let options = WatchOptions::new()
            .with_range(prefix_end(first.as_bytes()))
            .with_start_revision(after + 1)
            .with_prev_key();
        let mut stream = self
            .call(
                self.client
                    .watch_client()
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .watch(first, Some(options)),
            )
            .await
            .map_err(|failure| self.failed("watching prefix", prefix, failure))?;
        // The first message confirms the watch (or refuses it).
        let created = self
            .call(stream.message())
            .await
            .map_err(|failure| self.failed("watching prefix", prefix, failure))?
            .ok_or_else(|| {
                self.backend("watching prefix", prefix, "etcd closed the watch stream")
            })?;
        if created.compact_revision() != 0 {
            self.compacted
                .fetch_max(created.compact_revision(), Ordering::Relaxed);
            return Err(StoreError::Compacted {
                requested: after,
                compacted: created.compact_revision(),
            });
        }
        if created.canceled() {
            return Err(self.backend(
                "watching prefix",
                prefix,
                format!("etcd refused the watch: {}", created.cancel_reason()),
            ));
        }

        let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let feed = WatchFeed {
            keys: self.keys.clone(),
            endpoints: self.endpoints.clone(),
            compacted: self.compacted.clone(),
            prefix: prefix.to_owned(),
            delivered: after,
        };
        tokio::spawn(feed.run(stream, sender, created));
        Ok(Watch::new(receiver))
    }
}

/// The task behind one [`Watch`]: reads the gRPC stream, translates and forwards events until
/// the consumer drops the watch or the stream ends (dropping the stream cancels the watch on the
/// server).
struct WatchFeed {
    keys: Keys,
    endpoints: Arc<str>,
    compacted: Arc<AtomicI64>,
    prefix: String,
    /// Revision of the last event delivered (initially the watch's `after`).
    delivered: Revision,
}

impl WatchFeed {
    async fn run(
        mut self,
        mut stream: etcd_client::WatchStream,
        sender: tokio::sync::mpsc::Sender<StoreResult<Event>>,
        created: etcd_client::WatchResponse,
    ) {
        // The confirmation may already carry events (it does not on etcd 3.4, but costs
        // nothing to handle).
        let mut response = Ok(Some(created));
        loop {
            match self.handle(response) {
                Ok(events) => {
                    for event in events {
                        if sender.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            }
            response = tokio::select! {
                () = sender.closed() => return,
                message = stream.message() => message,
            };
        }
    }

    /// The events of one watch response, or the error that ends the watch.
    fn handle(
        &mut self,
        response: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
    ) -> StoreResult<Vec<Event>> {
        let response = match response {
            Ok(Some(response)) => response,
            Ok(None) => {
                return Err(StoreError::WatchClosed {
                    reason: format!("etcd at {} ended the watch stream", self.endpoints),
                });
            }
            Err(error) => {
                return Err(match Failure::from_etcd(&error) {
                    Failure::Compacted => StoreError::Compacted {
                        requested: self.delivered,
                        compacted: self.compacted.load(Ordering::Relaxed),
                    },
                    failure => StoreError::Backend {
                        message: format!(
                            "etcd at {}: watching prefix {:?}: {}",
                            self.endpoints,
                            self.prefix,
                            failure.message()
                        ),
                    },
                });
            }
        };
        if response.compact_revision() != 0 {
            // The watch fell behind a compaction (or started behind one).
            self.compacted
                .fetch_max(response.compact_revision(), Ordering::Relaxed);
            return Err(StoreError::Compacted {
                requested: self.delivered,
                compacted: response.compact_revision(),
            });
        }
        if response.canceled() {
            return Err(StoreError::WatchClosed {
                reason: format!(
                    "etcd at {} canceled the watch of prefix {:?}: {}",
                    self.endpoints,
                    self.prefix,
                    response.cancel_reason()
                ),
            });
        }
        let mut events = Vec::with_capacity(response.events().len());
        for event in response.events() {
            let event = self
                .keys
                .event(event)
                .map_err(|message| StoreError::Backend {
                    message: format!(
                        "etcd at {}: watching prefix {:?}: {message}",
                        self.endpoints, self.prefix
                    ),
                })?;
            self.delivered = event.revision();
            events.push(event);
        }
        Ok(events)
    }
}

/// The mapping between the store's keys and etcd's: `prefix + key`.
#[derive(Clone, Debug)]
struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A key whose reads are only used for their header (revision, compaction check).
    fn probe_key(&self) -> String {
        if self.prefix.is_empty() {
            // etcd refuses an empty key.
            "\0".to_owned()
        } else {
            self.prefix.to_string()
        }
    }

    /// The store's key for an etcd key: without the prefix, as UTF-8.
    fn key(&self, full: &[u8]) -> Result<String, String> {
        let key = full.strip_prefix(self.prefix.as_bytes()).ok_or_else(|| {
            format!(
                "etcd returned key {:?} outside the prefix {:?}",
                String::from_utf8_lossy(full),
                self.prefix
            )
        })?;
        String::from_utf8(key.to_vec()).map_err(|_| {
            format!(
                "etcd returned key {:?}, which is not UTF-8",
                String::from_utf8_lossy(full)
            )
        })
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, String> {
        Ok(KeyValue {
            key: self.key(kv.key())?,
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// A watch event. etcd's delete event carries only the key and the deletion's revision;
    /// the last value comes from `prev_kv` (missing only if that was compacted meanwhile, then
    /// the value is empty and `create_revision` 0).
    fn event(&self, event: &etcd_client::Event) -> Result<Event, String> {
        let kv = event
            .kv()
            .ok_or_else(|| "etcd sent an event without a key".to_owned())?;
        let prev = event
            .prev_kv()
            .map(|prev| self.key_value(prev))
            .transpose()?;
        match event.event_type() {
            EventType::Put => Ok(Event {
                kind: EventKind::Put,
                kv: self.key_value(kv)?,
                prev,
            }),
            EventType::Delete => {
                let mut last = match &prev {
                    Some(prev) => prev.clone(),
                    None => KeyValue {
                        key: self.key(kv.key())?,
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: 0,
                    },
                };
                last.mod_revision = kv.mod_revision();
                Ok(Event {
                    kind: EventKind::Delete,
                    kv: last,
                    prev,
                })
            }
        }
    }
}

/// What went wrong with one etcd request, as far as the store's errors care.
#[derive(Debug)]
enum Failure {
    /// The requested revision is before etcd's compaction point.
    Compacted,
    /// The requested revision is after etcd's current revision.
    FutureRevision,
    Other(String),
}

impl Failure {
    fn from_etcd(error: &etcd_client::Error) -> Failure {
        match error {
            etcd_client::Error::GRpcStatus(status)
                if status.message().contains(COMPACTED_MESSAGE) =>
            {
                Failure::Compacted
            }
            etcd_client::Error::GRpcStatus(status)
                if status.message().contains(FUTURE_REVISION_MESSAGE) =>
            {
                Failure::FutureRevision
            }
            error => Failure::Other(error.to_string()),
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Compacted => COMPACTED_MESSAGE.to_owned(),
            Failure::FutureRevision => FUTURE_REVISION_MESSAGE.to_owned(),
            Failure::Other(message) => message.clone(),
        }
    }
}

/// The end of the key range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented and what follows dropped; `\0` (to the
/// end of the key space) if there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn keys_are_stripped_of_the_prefix() {
        let keys = Keys {
            prefix: Arc::from("/t1/"),
        };
        assert_eq!(keys.full("pods/a"), "/t1/pods/a");
        assert_eq!(keys.key(b"/t1/pods/a"), Ok("pods/a".to_owned()));
        assert!(keys.key(b"/t2/pods/a").is_err());
        assert!(keys.key(b"/t1/\xff").is_err());
    }
}
