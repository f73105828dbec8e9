//! The embedded backend: one redb file in one data directory, for a single skiff-control.
//!
//! Owns the on-disk layout, the single writer that assigns revisions, compaction (including
//! giving the freed space back to the file system) and the fan-out of committed changes to
//! watches. Must not be opened by two processes at once (redb locks the file) and must not
//! acknowledge a write before it is durable.
//!
//! # Layout (four redb tables)
//! - `current`: key → `create_revision, mod_revision, value` of every live key; serves `get` and
//!   ranges at the current revision with one ordered scan.
//! - `history`: `(key, revision)` → the version written at that revision (`put` with its create
//!   revision and value, or a `delete` tombstone). Serves ranges at older revisions (per key, the
//!   last version at or before the revision: two B-tree seeks per key, independent of how many
//!   versions the key has) and the values of replayed watch events. Values are stored twice
//!   (here and in `current`); that doubles the size of live data but keeps current reads a single
//!   scan.
//! - `log`: revision → key. The order of all changes, for watch replay and compaction.
//! - `meta`: `revision` (of the last write) and `compacted` (the compaction point).
//!
//! # Writes and durability
//! One writer thread owns every write transaction. Concurrent requests are batched (group
//! commit): each one is applied in arrival order inside one transaction, gets the next revision
//! if its precondition holds and changes nothing otherwise, and the transaction is committed
//! with [`redb::Durability::Immediate`] (checksummed commit slots, `fsync` before `commit`
//! returns). Replies and watch events go out only after the commit, so every acknowledged write
//! is durable, and a crash leaves the last committed batch: never part of one. If a commit
//! fails, no write of its batch is acknowledged (they get [`StoreError::Backend`]); redb then
//! refuses further writes until the store is reopened, which repairs the file.
//!
//! # Watch handover
//! A watch first registers a bounded live channel with the writer, then reads the history from a
//! snapshot whose revision `H` fixes the handover: every change up to `H` comes from the
//! snapshot, every change after `H` was committed after the registration and so reaches the live
//! channel (which may also hold changes ≤ `H`; they are skipped). The history is replayed in
//! pages, each from a short read transaction, so a slow client never pins old pages or the
//! database. The writer never waits for a watcher: if a live channel is full
//! ([`EmbeddedOptions::watch_buffer`] events behind), that watch ends with
//! [`StoreError::WatchClosed`] and the client relists, as it would after etcd cancels a slow
//! watcher.
//!
//! # Compaction
//! `compact(C)` removes the `log` up to `C` and, for every key changed in the compacted span,
//! all its history at or before `C` except its last version when that is a put (so ranges at `C`
//! still see every key). It then runs redb's file compaction, which moves live pages down and
//! truncates the file. With [`EmbeddedOptions::compact_interval`] set (the default), the writer
//! compacts to `revision - keep_revisions` on that period, so the file stays bounded by the live
//! data plus the retained window under any steady update load: the kine/SQLite bloat
//! (state.db growing without bound until a manual VACUUM) cannot happen.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Event, EventKind, KeyValue, RangeResult, Revision, Store, StoreError, StoreResult, Watch,
};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "store.redb";

const CURRENT: TableDefinition<&str, &[u8]> = TableDefinition::new("current");
const HISTORY: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("history");
const LOG: TableDefinition<i64, &str> = TableDefinition::new("log");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// Most write requests committed together in one transaction.
const MAX_BATCH: usize = 256;
/// Most revisions one compaction transaction removes (bigger spans take several).
const COMPACTION_STEP: i64 = 10_000;
/// Most events one watch history page holds, and most log entries it scans.
const PAGE_EVENTS: usize = 256;
const PAGE_SCAN: usize = 4096;
/// Events buffered between a watch's forwarding task and its client.
const CLIENT_BUFFER: usize = 256;

/// Tuning of the embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Revisions automatic compaction keeps behind the current one (kine keeps 1000).
    pub keep_revisions: i64,
    /// How often automatic compaction runs; `None` leaves compaction to [`Store::compact`].
    pub compact_interval: Option<Duration>,
    /// Live events a watch may fall behind before it is closed with [`StoreError::WatchClosed`].
    pub watch_buffer: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            keep_revisions: 1000,
            compact_interval: Some(Duration::from_secs(5 * 60)),
            watch_buffer: 10_000,
        }
    }
}

/// The embedded [`Store`]: see the module documentation.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    commands: Option<Sender<Command>>,
    writer: Option<JoinHandle<()>>,
}

/// What the writer thread, the readers and the watch tasks share.
struct Shared {
    /// `None` once the store is dropped. Readers and writes hold the read lock for one
    /// transaction; redb's file compaction takes the write lock (it needs no transaction open).
    database: RwLock<Option<Database>>,
    path: PathBuf,
    /// Mirrors of `meta`, updated after each commit.
    revision: AtomicI64,
    compacted: AtomicI64,
    watchers: Mutex<Watchers>,
    options: EmbeddedOptions,
}

#[derive(Default)]
struct Watchers {
    next_id: u64,
    live: Vec<LiveWatcher>,
}

struct LiveWatcher {
    id: u64,
    prefix: String,
    sender: mpsc::Sender<Arc<Event>>,
    /// Set when the writer dropped this watcher because its channel was full.
    overflowed: Arc<AtomicBool>,
}

enum Command {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<StoreResult<KeyValue>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<StoreResult<()>>,
    },
}

enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

impl WriteOp {
    fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }
}

/// The result of applying one write inside a batch.
enum Outcome {
    Applied(KeyValue, Event),
    /// The precondition failed; nothing was changed.
    Rejected(StoreError),
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir` with the default options: automatic
    /// compaction every 5 minutes, keeping 1000 revisions.
    pub fn open(data_dir: &Path) -> StoreResult<EmbeddedStore> {
        EmbeddedStore::open_with(data_dir, EmbeddedOptions::default())
    }

    /// Opens (or creates) the store in `data_dir`. After a crash, redb rolls back to the last
    /// committed transaction: the state of the last acknowledged write.
    pub fn open_with(data_dir: &Path, options: EmbeddedOptions) -> StoreResult<EmbeddedStore> {
        let dir = data_dir.display();
        std::fs::create_dir_all(data_dir)
            .map_err(|err| backend(format!("creating data directory {dir}"), err))?;
        let path = data_dir.join(DATABASE_FILE);
        let existed = path.exists();
        let database = Database::create(&path).context(|| format!("opening {}", path.display()))?;
        if !existed {
            // The file's directory entry must be durable too before the first acknowledgement.
            std::fs::File::open(data_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|err| backend(format!("syncing data directory {dir}"), err))?;
        }
        let (revision, compacted) =
            initialize(&database).context(|| format!("initializing {}", path.display()))?;
        let shared = Arc::new(Shared {
            database: RwLock::new(Some(database)),
            path,
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            watchers: Mutex::default(),
            options,
        });
        let (commands, receiver) = std::sync::mpsc::channel();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || run_writer(&writer_shared, &receiver))
            .map_err(|err| backend(format!("starting the writer thread for {dir}"), err))?;
        Ok(EmbeddedStore {
            shared,
            commands: Some(commands),
            writer: Some(writer),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn write(&self, op: WriteOp) -> StoreResult<KeyValue> {
        let key = op.key().to_owned();
        let (reply, receiver) = oneshot::channel();
        self.send(Command::Write { op, reply }, &key)?;
        receiver.await.map_err(|_| writer_gone(&key))?
    }

    fn send(&self, command: Command, what: &str) -> StoreResult<()> {
        let sent = self
            .commands
            .as_ref()
            .map(|commands| commands.send(command));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(writer_gone(what)),
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // End every watch (their clients see the end of the stream) and close the file now, so
        // the directory can be reopened as soon as the store is dropped.
        self.shared
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .live
            .clear();
        let database = self
            .shared
            .database
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(database);
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let key = key.to_owned();
        blocking(&self.shared, move |shared| {
            shared.read(
                || format!("reading {key}"),
                |txn| {
                    let current = txn.open_table(CURRENT)?;
                    let found = current.get(key.as_str())?;
                    Ok(found
                        .map(|value| decode_current(&key, value.value()))
                        .transpose())
                },
            )
        })
        .await
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> StoreResult<RangeResult> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        blocking(&self.shared, move |shared| {
            shared.read(
                || format!("range of {prefix} at {revision:?}"),
                |txn| range_in(txn, &prefix, start_after.as_deref(), limit, revision),
            )
        })
        .await
    }

    async fn create(&self, key: &str, value: &[u8]) -> StoreResult<KeyValue> {
        self.write(WriteOp::Create {
            key: key.to_owned(),
            value: value.to_vec(),
        })
        .await
    }

    async fn update(&self, key: &str, value: &[u8], expected: Revision) -> StoreResult<KeyValue> {
        self.write(WriteOp::Update {
            key: key.to_owned(),
            value: value.to_vec(),
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> StoreResult<KeyValue> {
        self.write(WriteOp::Delete {
            key: key.to_owned(),
            expected,
        })
        .await
    }

    async fn revision(&self) -> StoreResult<Revision> {
        Ok(self.shared.revision.load(Ordering::SeqCst))
    }

    /// Like etcd, compacting at or before the current compaction point is
    /// [`StoreError::Compacted`].
    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        let (reply, receiver) = oneshot::channel();
        let what = format!("compaction at {revision}");
        self.send(Command::Compact { revision, reply }, &what)?;
        receiver.await.map_err(|_| writer_gone(&what))?
    }

    async fn compacted_revision(&self) -> StoreResult<Revision> {
        Ok(self.shared.compacted.load(Ordering::SeqCst))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch> {
        let shared = self.shared.clone();
        let (live_sender, live) = mpsc::channel(shared.options.watch_buffer.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        let id = shared.register(prefix, live_sender, overflowed.clone());
        // The first page fixes the handover revision and reports a compacted `after` directly.
        let page_prefix = prefix.to_owned();
        let first = blocking(&shared, move |shared| {
            shared.history_page(&page_prefix, after, None)
        })
        .await;
        let first = match first {
            Ok(page) => page,
            Err(err) => {
                shared.deregister(id);
                return Err(err);
            }
        };
        let (client, receiver) = mpsc::channel(CLIENT_BUFFER);
        let forward = Forward {
            shared,
            id,
            prefix: prefix.to_owned(),
            live,
            overflowed,
            client,
        };
        tokio::spawn(forward.run(first));
        Ok(Watch::new(receiver))
    }
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

/// Runs `work` on the blocking pool, so database reads never stall the async runtime.
async fn blocking<T, F>(shared: &Arc<Shared>, work: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Shared) -> StoreResult<T> + Send + 'static,
{
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || work(&shared))
        .await
        .map_err(|err| StoreError::Backend {
            message: format!("a store read task failed: {err}"),
        })?
}

impl Shared {
    /// Runs `work` in a read transaction. `work` returns storage errors in the outer result
    /// (given context by `what`) and store errors in the inner one.
    fn read<T>(
        &self,
        what: impl Fn() -> String,
        work: impl FnOnce(&ReadTransaction) -> Result<StoreResult<T>, redb::Error>,
    ) -> StoreResult<T> {
        let guard = self.database.read().unwrap_or_else(PoisonError::into_inner);
        let Some(database) = guard.as_ref() else {
            return Err(StoreError::Backend {
                message: format!("{}: the store is closed", what()),
            });
        };
        let txn = database.begin_read().context(&what)?;
        work(&txn).context(&what)?
    }

    fn register(
        &self,
        prefix: &str,
        sender: mpsc::Sender<Arc<Event>>,
        overflowed: Arc<AtomicBool>,
    ) -> u64 {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        watchers.next_id += 1;
        let id = watchers.next_id;
        watchers.live.push(LiveWatcher {
            id,
            prefix: prefix.to_owned(),
            sender,
            overflowed,
        });
        id
    }

    fn deregister(&self, id: u64) {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        watchers.live.retain(|watcher| watcher.id != id);
    }

    /// Hands committed events to every live watcher whose prefix matches, without waiting: a
    /// watcher whose channel is full is dropped and told so through `overflowed`.
    fn publish(&self, events: &[Arc<Event>]) {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        watchers.live.retain(|watcher| {
            for event in events
                .iter()
                .filter(|event| event.kv.key.starts_with(&watcher.prefix))
            {
                match watcher.sender.try_send(event.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        watcher.overflowed.store(true, Ordering::SeqCst);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    /// Events under `prefix` after `after`, up to `head` (`None`: the snapshot's revision), at
    /// most one page of them. Returns the page, the head, and the last revision scanned.
    fn history_page(
        &self,
        prefix: &str,
        after: Revision,
        head: Option<Revision>,
    ) -> StoreResult<HistoryPage> {
        self.read(
            || format!("replaying the history of {prefix} after {after}"),
            |txn| {
                let meta = txn.open_table(META)?;
                let compacted = meta_value(&meta, META_COMPACTED)?;
                // A watch from a future revision hands over at that revision: live events up
                // to it are skipped like those the history covers.
                let head = match head {
                    Some(head) => head,
                    None => meta_value(&meta, META_REVISION)?.max(after),
                };
                if after < compacted {
                    return Ok(Err(StoreError::Compacted {
                        requested: after,
                        compacted,
                    }));
                }
                let log = txn.open_table(LOG)?;
                let history = txn.open_table(HISTORY)?;
                let mut page = HistoryPage {
                    events: Vec::new(),
                    head,
                    scanned: after,
                };
                let mut scanned = 0;
                for entry in log.range((Bound::Excluded(after), Bound::Included(head)))? {
                    let (revision, key) = entry?;
                    let (revision, key) = (revision.value(), key.value());
                    if key.starts_with(prefix) {
                        match event_at(&history, key, revision)? {
                            Ok(event) => page.events.push(event),
                            Err(err) => return Ok(Err(err)),
                        }
                    }
                    page.scanned = revision;
                    scanned += 1;
                    if page.events.len() >= PAGE_EVENTS || scanned >= PAGE_SCAN {
                        return Ok(Ok(page));
                    }
                }
                page.scanned = head;
                Ok(Ok(page))
            },
        )
    }
}

struct HistoryPage {
    events: Vec<Event>,
    head: Revision,
    scanned: Revision,
}

fn meta_value(
    meta: &impl ReadableTable<&'static str, i64>,
    name: &str,
) -> Result<i64, redb::Error> {
    Ok(meta.get(name)?.map(|value| value.value()).unwrap_or(0))
}

/// A range read inside `txn`: from `current` at the current revision, from `history` before.
fn range_in(
    txn: &ReadTransaction,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    revision: Option<Revision>,
) -> Result<StoreResult<RangeResult>, redb::Error> {
    let meta = txn.open_table(META)?;
    let current_revision = meta_value(&meta, META_REVISION)?;
    let compacted = meta_value(&meta, META_COMPACTED)?;
    let at = revision.unwrap_or(current_revision);
    if at > current_revision {
        return Ok(Err(StoreError::FutureRevision {
            requested: at,
            current: current_revision,
        }));
    }
    if at < compacted {
        return Ok(Err(StoreError::Compacted {
            requested: at,
            compacted,
        }));
    }
    // `start_after` before the prefix does not skip any of its keys.
    let start_after = start_after.filter(|start| *start >= prefix);
    let wanted = if limit == 0 {
        usize::MAX
    } else {
        limit.saturating_add(1)
    };
    let mut kvs = Vec::new();
    if at == current_revision {
        let current = txn.open_table(CURRENT)?;
        let lower = match start_after {
            Some(start) => Bound::Excluded(start),
            None => Bound::Included(prefix),
        };
        for entry in current.range::<&str>((lower, Bound::Unbounded))? {
            let (key, value) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) || kvs.len() == wanted {
                break;
            }
            match decode_current(key, value.value()) {
                Ok(kv) => kvs.push(kv),
                Err(err) => return Ok(Err(err)),
            }
        }
    } else {
        let history = txn.open_table(HISTORY)?;
        let mut cursor = start_after.map(str::to_owned);
        while kvs.len() < wanted {
            // The next key (whatever its versions) after the cursor.
            let next = match &cursor {
                None => history.range::<(&str, i64)>((prefix, i64::MIN)..)?.next(),
                Some(after) => history
                    .range::<(&str, i64)>((
                        Bound::Excluded((after.as_str(), i64::MAX)),
                        Bound::Unbounded,
                    ))?
                    .next(),
            };
            let Some(entry) = next else { break };
            let key = entry?.0.value().0.to_owned();
            if !key.starts_with(prefix) {
                break;
            }
            // Its last version at or before `at`, if it was alive then.
            let version = history
                .range::<(&str, i64)>((key.as_str(), i64::MIN)..=(key.as_str(), at))?
                .next_back();
            if let Some(version) = version {
                let (position, record) = version?;
                match decode_version(&key, position.value().1, record.value()) {
                    Ok(Version::Put(kv)) => kvs.push(kv),
                    Ok(Version::Deleted) => {}
                    Err(err) => return Ok(Err(err)),
                }
            }
            cursor = Some(key);
        }
    }
    let more = kvs.len() == wanted && limit != 0;
    if more {
        kvs.pop();
    }
    Ok(Ok(RangeResult {
        kvs,
        more,
        revision: at,
    }))
}

/// The change to `key` at `revision`, with the key's previous version.
fn event_at(
    history: &impl ReadableTable<(&'static str, i64), &'static [u8]>,
    key: &str,
    revision: Revision,
) -> Result<StoreResult<Event>, redb::Error> {
    let Some(record) = history.get((key, revision))? else {
        return Ok(Err(StoreError::Backend {
            message: format!("the history of {key} lacks its revision {revision}"),
        }));
    };
    let version = match decode_version(key, revision, record.value()) {
        Ok(version) => version,
        Err(err) => return Ok(Err(err)),
    };
    let before = history
        .range::<(&str, i64)>((key, i64::MIN)..(key, revision))?
        .next_back();
    let prev = match before {
        Some(entry) => {
            let (position, record) = entry?;
            match decode_version(key, position.value().1, record.value()) {
                Ok(Version::Put(kv)) => Some(kv),
                Ok(Version::Deleted) => None,
                Err(err) => return Ok(Err(err)),
            }
        }
        None => None,
    };
    Ok(match (version, prev) {
        (Version::Put(kv), prev) => Ok(Event {
            kind: EventKind::Put,
            kv,
            prev,
        }),
        (Version::Deleted, Some(prev)) => {
            let kv = KeyValue {
                mod_revision: revision,
                ..prev.clone()
            };
            Ok(Event {
                kind: EventKind::Delete,
                kv,
                prev: Some(prev),
            })
        }
        (Version::Deleted, None) => Err(StoreError::Backend {
            message: format!(
                "the deletion of {key} at revision {revision} has no previous version in the history"
            ),
        }),
    })
}

/// A watch's forwarding task: history pages, then live events after the handover revision.
struct Forward {
    shared: Arc<Shared>,
    id: u64,
    prefix: String,
    live: mpsc::Receiver<Arc<Event>>,
    overflowed: Arc<AtomicBool>,
    client: mpsc::Sender<StoreResult<Event>>,
}

impl Forward {
    async fn run(mut self, first: HistoryPage) {
        self.forward(first).await;
        self.shared.deregister(self.id);
    }

    async fn forward(&mut self, first: HistoryPage) {
        let head = first.head;
        let mut page = first;
        loop {
            for event in page.events.drain(..) {
                if self.client.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if page.scanned >= head {
                break;
            }
            let prefix = self.prefix.clone();
            let after = page.scanned;
            match blocking(&self.shared, move |shared| {
                shared.history_page(&prefix, after, Some(head))
            })
            .await
            {
                Ok(next) => page = next,
                Err(err) => {
                    let _ = self.client.send(Err(err)).await;
                    return;
                }
            }
        }
        loop {
            tokio::select! {
                received = self.live.recv() => match received {
                    Some(event) if event.revision() <= head => {}
                    Some(event) => {
                        if self.client.send(Ok(Event::clone(&event))).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        if self.overflowed.load(Ordering::SeqCst) {
                            let reason = format!(
                                "the watch of {} fell more than {} events behind; relist and watch again",
                                self.prefix, self.shared.options.watch_buffer
                            );
                            let _ = self.client.send(Err(StoreError::WatchClosed { reason })).await;
                        }
                        return;
                    }
                },
                () = self.client.closed() => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------------------------

/// Creates the tables of a new database; the revision and compaction point of an existing one.
fn initialize(database: &Database) -> Result<(Revision, Revision), redb::Error> {
    let txn = database.begin_write()?;
    let state = {
        txn.open_table(CURRENT)?;
        txn.open_table(HISTORY)?;
        txn.open_table(LOG)?;
        let meta = txn.open_table(META)?;
        (
            meta_value(&meta, META_REVISION)?,
            meta_value(&meta, META_COMPACTED)?,
        )
    };
    txn.commit()?;
    Ok(state)
}

fn run_writer(shared: &Shared, commands: &Receiver<Command>) {
    let interval = shared.options.compact_interval;
    let mut next_compaction = interval.map(|interval| Instant::now() + interval);
    loop {
        // Checked before waiting too, so automatic compaction also runs under constant load.
        if let (Some(due), Some(interval)) = (next_compaction, interval)
            && Instant::now() >= due
        {
            auto_compact(shared);
            next_compaction = Some(Instant::now() + interval);
        }
        let received = match next_compaction {
            Some(due) => commands.recv_timeout(due.saturating_duration_since(Instant::now())),
            None => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let first = match received {
            Ok(command) => command,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let mut writes = Vec::new();
        for command in batch {
            match command {
                Command::Write { op, reply } => writes.push((op, reply)),
                Command::Compact { revision, reply } => {
                    commit_writes(shared, std::mem::take(&mut writes));
                    let _ = reply.send(compact(shared, revision));
                }
            }
        }
        commit_writes(shared, writes);
    }
}

fn auto_compact(shared: &Shared) {
    let target = shared.revision.load(Ordering::SeqCst) - shared.options.keep_revisions;
    if target > shared.compacted.load(Ordering::SeqCst)
        && let Err(err) = compact(shared, target)
    {
        tracing::warn!(path = %shared.path.display(), %err, "automatic compaction failed");
    }
}

/// Applies `writes` in order in one transaction, commits it durably, then publishes the events
/// and replies. If the commit fails, no write of the batch is acknowledged.
fn commit_writes(shared: &Shared, writes: Vec<(WriteOp, oneshot::Sender<StoreResult<KeyValue>>)>) {
    if writes.is_empty() {
        return;
    }
    let guard = shared
        .database
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(database) = guard.as_ref() else {
        for (op, reply) in writes {
            let _ = reply.send(Err(writer_gone(op.key())));
        }
        return;
    };
    let first_revision = shared.revision.load(Ordering::SeqCst) + 1;
    let mut outcomes = Vec::with_capacity(writes.len());
    let committed = (|| -> Result<Revision, redb::Error> {
        let txn = database.begin_write()?;
        let mut revision = first_revision - 1;
        {
            let mut tables = WriteTables {
                current: txn.open_table(CURRENT)?,
                history: txn.open_table(HISTORY)?,
                log: txn.open_table(LOG)?,
            };
            for (op, _) in &writes {
                let outcome = tables.apply(op, revision + 1)?;
                if matches!(outcome, Outcome::Applied(..)) {
                    revision += 1;
                }
                outcomes.push(outcome);
            }
            if revision >= first_revision {
                txn.open_table(META)?.insert(META_REVISION, revision)?;
            }
        }
        txn.commit()?;
        Ok(revision)
    })();
    drop(guard);
    match committed {
        Ok(revision) => {
            shared.revision.store(revision, Ordering::SeqCst);
            let mut events = Vec::new();
            let mut replies = Vec::with_capacity(writes.len());
            for ((_, reply), outcome) in writes.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Applied(kv, event) => {
                        events.push(Arc::new(event));
                        replies.push((reply, Ok(kv)));
                    }
                    Outcome::Rejected(err) => replies.push((reply, Err(err))),
                }
            }
            shared.publish(&events);
            for (reply, result) in replies {
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            for (op, reply) in writes {
                let message = format!(
                    "writing {} (revision {first_revision} or later): {err}",
                    op.key()
                );
                let _ = reply.send(Err(StoreError::Backend { message }));
            }
        }
    }
}

struct WriteTables<'txn> {
    current: Table<'txn, &'static str, &'static [u8]>,
    history: Table<'txn, (&'static str, i64), &'static [u8]>,
    log: Table<'txn, i64, &'static str>,
}

impl WriteTables<'_> {
    /// Applies `op` as revision `revision` if its precondition holds; changes nothing otherwise.
    fn apply(&mut self, op: &WriteOp, revision: Revision) -> Result<Outcome, redb::Error> {
        let key = op.key();
        let existing = match self.current.get(key)? {
            Some(value) => match decode_current(key, value.value()) {
                Ok(kv) => Some(kv),
                Err(err) => return Ok(Outcome::Rejected(err)),
            },
            None => None,
        };
        let conflict = |expected, actual: &KeyValue| {
            Ok(Outcome::Rejected(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual: actual.mod_revision,
            }))
        };
        let not_found = || {
            Ok(Outcome::Rejected(StoreError::NotFound {
                key: key.to_owned(),
            }))
        };
        let (kind, kv, prev) = match (op, existing) {
            (WriteOp::Create { .. }, Some(_)) => {
                return Ok(Outcome::Rejected(StoreError::AlreadyExists {
                    key: key.to_owned(),
                }));
            }
            (WriteOp::Create { value, .. }, None) => {
                let kv = KeyValue {
                    key: key.to_owned(),
                    value: value.clone(),
                    create_revision: revision,
                    mod_revision: revision,
                };
                (EventKind::Put, kv, None)
            }
            (WriteOp::Update { .. } | WriteOp::Delete { .. }, None) => return not_found(),
            (WriteOp::Update { expected, .. }, Some(existing))
                if existing.mod_revision != *expected =>
            {
                return conflict(*expected, &existing);
            }
            (WriteOp::Update { value, .. }, Some(existing)) => {
                let kv = KeyValue {
                    value: value.clone(),
                    mod_revision: revision,
                    ..existing.clone()
                };
                (EventKind::Put, kv, Some(existing))
            }
            (
                WriteOp::Delete {
                    expected: Some(expected),
                    ..
                },
                Some(existing),
            ) if existing.mod_revision != *expected => {
                return conflict(*expected, &existing);
            }
            (WriteOp::Delete { .. }, Some(existing)) => {
                let kv = KeyValue {
                    mod_revision: revision,
                    ..existing.clone()
                };
                (EventKind::Delete, kv, Some(existing))
            }
        };
        match kind {
            EventKind::Put => {
                self.current.insert(key, encode_current(&kv).as_slice())?;
                self.history.insert(
                    (key, revision),
                    encode_put(kv.create_revision, &kv.value).as_slice(),
                )?;
            }
            EventKind::Delete => {
                self.current.remove(key)?;
                self.history
                    .insert((key, revision), [TAG_DELETE].as_slice())?;
            }
        }
        self.log.insert(revision, key)?;
        let event = Event {
            kind,
            kv: kv.clone(),
            prev,
        };
        Ok(Outcome::Applied(kv, event))
    }
}

/// Compacts history up to and including `revision`, then shrinks the file.
fn compact(shared: &Shared, revision: Revision) -> StoreResult<()> {
    let current = shared.revision.load(Ordering::SeqCst);
    let compacted = shared.compacted.load(Ordering::SeqCst);
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        });
    }
    if revision <= compacted {
        return Err(StoreError::Compacted {
            requested: revision,
            compacted,
        });
    }
    let mut done = compacted;
    while done < revision {
        let step = revision.min(done.saturating_add(COMPACTION_STEP));
        compact_step(shared, done, step)?;
        shared.compacted.store(step, Ordering::SeqCst);
        done = step;
    }
    // Give the freed pages back to the file system. This needs the database to itself, so it
    // waits for in-flight reads and holds new ones off while it runs.
    let mut guard = shared
        .database
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(database) = guard.as_mut()
        && let Err(err) = database.compact()
    {
        tracing::warn!(path = %shared.path.display(), %err, "shrinking the store file after compaction failed");
    }
    Ok(())
}

/// One compaction transaction: removes the log in `(from, to]` and the history it made obsolete.
fn compact_step(shared: &Shared, from: Revision, to: Revision) -> StoreResult<()> {
    let what = || format!("compacting revisions {} to {to}", from + 1);
    let guard = shared
        .database
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(database) = guard.as_ref() else {
        return Err(writer_gone(&what()));
    };
    (|| -> Result<(), redb::Error> {
        let txn = database.begin_write()?;
        {
            let mut log = txn.open_table(LOG)?;
            let mut history = txn.open_table(HISTORY)?;
            let mut keys = BTreeSet::new();
            let mut revisions = Vec::new();
            for entry in log.range((Bound::Excluded(from), Bound::Included(to)))? {
                let (revision, key) = entry?;
                revisions.push(revision.value());
                keys.insert(key.value().to_owned());
            }
            for revision in revisions {
                log.remove(revision)?;
            }
            for key in &keys {
                // Every version at or before `to`, except the last when it is a put.
                let mut obsolete = Vec::new();
                let mut last_is_put = false;
                for entry in
                    history.range::<(&str, i64)>((key.as_str(), i64::MIN)..=(key.as_str(), to))?
                {
                    let (position, record) = entry?;
                    obsolete.push(position.value().1);
                    last_is_put = record.value().first() == Some(&TAG_PUT);
                }
                if last_is_put {
                    obsolete.pop();
                }
                for revision in obsolete {
                    history.remove((key.as_str(), revision))?;
                }
            }
            txn.open_table(META)?.insert(META_COMPACTED, to)?;
        }
        txn.commit()?;
        Ok(())
    })()
    .context(what)
}

// ---------------------------------------------------------------------------------------------
// Encoding and errors
// ---------------------------------------------------------------------------------------------

const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;

enum Version {
    Put(KeyValue),
    Deleted,
}

/// `current` rows: create revision, mod revision (little endian), value.
fn encode_current(kv: &KeyValue) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + kv.value.len());
    bytes.extend_from_slice(&kv.create_revision.to_le_bytes());
    bytes.extend_from_slice(&kv.mod_revision.to_le_bytes());
    bytes.extend_from_slice(&kv.value);
    bytes
}

fn decode_current(key: &str, bytes: &[u8]) -> StoreResult<KeyValue> {
    let malformed = || StoreError::Backend {
        message: format!("the current record of {key} is malformed"),
    };
    let (create, rest) = bytes.split_first_chunk::<8>().ok_or_else(malformed)?;
    let (modified, value) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision: i64::from_le_bytes(*create),
        mod_revision: i64::from_le_bytes(*modified),
    })
}

/// `history` rows: a put (tag, create revision, value) or a deletion (tag alone).
fn encode_put(create_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + value.len());
    bytes.push(TAG_PUT);
    bytes.extend_from_slice(&create_revision.to_le_bytes());
    bytes.extend_from_slice(value);
    bytes
}

fn decode_version(key: &str, revision: Revision, bytes: &[u8]) -> StoreResult<Version> {
    let malformed = || StoreError::Backend {
        message: format!("the history record of {key} at revision {revision} is malformed"),
    };
    match bytes.split_first() {
        Some((&TAG_DELETE, [])) => Ok(Version::Deleted),
        Some((&TAG_PUT, rest)) => {
            let (create, value) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
            Ok(Version::Put(KeyValue {
                key: key.to_owned(),
                value: value.to_vec(),
                create_revision: i64::from_le_bytes(*create),
                mod_revision: revision,
            }))
        }
        _ => Err(malformed()),
    }
}

fn backend(what: impl Display, err: impl Display) -> StoreError {
    StoreError::Backend {
        message: format!("{what}: {err}"),
    }
}

fn writer_gone(what: &str) -> StoreError {
    StoreError::Backend {
        message: format!("{what}: the embedded store is closed"),
    }
}

/// Names the operation a redb error happened in.
trait Context<T> {
    fn context<S: Display>(self, what: impl FnOnce() -> S) -> StoreResult<T>;
}

impl<T, E: Into<redb::Error>> Context<T> for Result<T, E> {
    fn context<S: Display>(self, what: impl FnOnce() -> S) -> StoreResult<T> {
        self.map_err(|err| backend(what(), err.into()))
    }
}
