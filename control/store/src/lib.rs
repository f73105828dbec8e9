//! skiff-control's storage: the [`Store`] trait with etcd's semantics, and its backends.
//!
//! Owns the contract every backend keeps (documented on the trait and checked by the shared
//! [`conformance`] suite): one global revision that increases by exactly one per successful
//! write and is the Kubernetes `resourceVersion`; every key remembers its create and last
//! modification revision; writes are compare-and-swap on the modification revision; history
//! is kept back to the compaction point, so reads at an older revision and watches from an older
//! revision work inside that window and fail with [`StoreError::Compacted`] outside it.
//! Knows nothing about Kubernetes objects: keys are strings, values are bytes.

use async_trait::async_trait;

pub mod conformance;
pub mod embedded;
pub mod etcd;

/// A revision of the whole store (etcd's `revision`; Kubernetes' `resourceVersion`).
pub type Revision = i64;

/// A key as stored at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key (for a deletion event: the deletion's revision).
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created (`kv.create_revision == kv.mod_revision`) or updated.
    Put,
    /// The key was deleted; `kv` holds its last value, with `mod_revision` the deletion's.
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key's previous value, for updates and deletions.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A page of a range read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResult {
    /// Keys in ascending order.
    pub kvs: Vec<KeyValue>,
    /// More keys match after the last one returned (the limit was reached).
    pub more: bool,
    /// The store revision the read was served at (for a `continue` token and list
    /// `resourceVersion`).
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} was modified at revision {actual}, not {expected}")]
    Conflict {
        key: String,
        expected: Revision,
        /// The key's current modification revision (0 if it no longer exists).
        actual: Revision,
    },
    #[error("revision {requested} has been compacted (history starts after {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is in the future (the store is at {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("the watch was closed: {reason}")]
    WatchClosed { reason: String },
    #[error("storage backend failed: {message}")]
    Backend { message: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stream of events, in revision order, each delivered exactly once.
pub struct Watch {
    receiver: tokio::sync::mpsc::Receiver<StoreResult<Event>>,
}

impl Watch {
    /// A watch fed by a backend through `receiver`.
    pub fn new(receiver: tokio::sync::mpsc::Receiver<StoreResult<Event>>) -> Watch {
        Watch { receiver }
    }

    /// The next event; `None` when the store shut the watch down. An `Err` is the last item.
    pub async fn next(&mut self) -> Option<StoreResult<Event>> {
        self.receiver.recv().await
    }
}

/// A key-value store with etcd's semantics. Every method is atomic; a failed write changes
/// nothing.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current value.
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Keys starting with `prefix`, in ascending order, strictly after `start_after` when given,
    /// at most `limit` of them (0: no limit), as of `revision` (`None`: now). An old revision
    /// before the compaction point is [`StoreError::Compacted`]; one after the current revision
    /// is [`StoreError::FutureRevision`].
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> StoreResult<RangeResult>;

    /// Creates `key`; [`StoreError::AlreadyExists`] if it exists. Returns the stored key.
    async fn create(&self, key: &str, value: &[u8]) -> StoreResult<KeyValue>;

    /// Replaces `key`'s value if its modification revision is `expected`
    /// ([`StoreError::Conflict`] otherwise, [`StoreError::NotFound`] if it does not exist).
    async fn update(&self, key: &str, value: &[u8], expected: Revision) -> StoreResult<KeyValue>;

    /// Deletes `key` (if `expected` is given, only at that modification revision). Returns the
    /// deleted value with `mod_revision` set to the deletion's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> StoreResult<KeyValue>;

    /// The current revision: that of the last write (a fresh embedded store is at 0; etcd starts
    /// at 1).
    async fn revision(&self) -> StoreResult<Revision>;

    /// Forgets history up to and including `revision` (which must not be in the future).
    async fn compact(&self, revision: Revision) -> StoreResult<()>;

    /// The revision history was last compacted at (0: never).
    async fn compacted_revision(&self) -> StoreResult<Revision>;

    /// Every change to keys starting with `prefix` with a revision greater than `after`, in
    /// revision order, each exactly once, first the history and then live changes.
    /// [`StoreError::Compacted`] if `after` is before the compaction point (returned here, or
    /// as the watch's first and only item when the backend learns it from the stream). A watch
    /// that falls too far behind, or whose history is compacted while it replays it, ends with
    /// [`StoreError::WatchClosed`] or [`StoreError::Compacted`]: the client relists and watches
    /// again from the list's revision.
    async fn watch(&self, prefix: &str, after: Revision) -> StoreResult<Watch>;
}
