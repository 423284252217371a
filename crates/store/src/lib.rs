//! ferrovirt's storage layer.
//!
//! The API server keeps every object as bytes under a key such as
//! `/registry/kubevirt.io/virtualmachines/default/vm1`. A store is a versioned key-value map:
//!
//! ```text
//!   revision:   1        2        3          4
//!   event:    put a    put b    put a'    delete b        (one global, increasing counter)
//!   a: create_revision 1, mod_revision 3;   b: gone at 4
//! ```
//!
//! * Every successful write bumps the store's single, global [`Revision`]; an object's
//!   `resourceVersion` is the revision of its last write (`mod_revision`).
//! * Writes are conditional (create only if absent, update/delete only if the mod revision is still
//!   the one the caller read), which gives the API its optimistic concurrency.
//! * A watch replays every event after a given revision, in revision order, then follows new ones.
//!   History older than the compaction point is gone: asking for it is [`StoreError::Compacted`].
//! * An acknowledged write is durable: it survives `kill -9` of the process.
//!
//! Two implementations share one test suite ([`conformance`]): [`redb_store::RedbStore`] (embedded,
//! the default) and [`etcd_store::EtcdStore`] (etcd v3). With the cargo feature `testing`,
//! `testing` starts real etcd processes for tests (here and in other crates).

pub mod conformance;
pub mod etcd_store;
pub mod redb_store;
#[cfg(feature = "testing")]
pub mod testing;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// The store's global, monotonically increasing write counter.
pub type Revision = i64;

/// One stored key with its value and the revisions that describe its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created the key (the object's birth).
    pub create_revision: Revision,
    /// Revision of the last write to the key: the object's resourceVersion.
    pub mod_revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created (`prev` is `None`) or updated (`prev` is the value it replaced).
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// The key was deleted at `revision`; `prev` is its last value.
    Delete { prev: KeyValue, revision: Revision },
    /// Nothing changed under the watched prefix, but the store reached `revision`.
    /// Stores send this now and then so idle watchers can move their resourceVersion on (bookmarks).
    Progress { revision: Revision },
}

impl WatchEvent {
    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
            WatchEvent::Progress { revision } => *revision,
        }
    }
}

/// One page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Keys in ascending byte order.
    pub items: Vec<KeyValue>,
    /// The revision the page was read at (the store's revision at the time if `at` was `None`).
    pub revision: Revision,
    /// Whether more keys under the prefix follow the last item of this page.
    pub more: bool,
}

/// A range read under a prefix.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Return only keys strictly greater than this one (for paging).
    pub start_after: Option<String>,
    /// At most this many items; 0 means no limit.
    pub limit: usize,
    /// Read the state as of this revision (a consistent snapshot for later pages);
    /// `None` reads the latest state. Older than the compaction point is [`StoreError::Compacted`];
    /// newer than the current revision is [`StoreError::FutureRevision`].
    pub at: Option<Revision>,
}

/// Condition for a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Delete whatever is there.
    None,
    /// Delete only if the key's mod revision is still this one.
    ModRevision(Revision),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    /// A conditional write found another revision than expected.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    /// The revision asked for has been compacted away.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is newer than the store's current revision {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The backend cannot be reached or has no quorum, and nothing was changed; the request may
    /// succeed later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A write was sent, but the backend stopped answering before it confirmed or refused it: it
    /// may or may not have been applied. Read the key before deciding to write again.
    #[error("storage unavailable, the write may or may not have been applied: {0}")]
    OutcomeUnknown(String),
    #[error("storage error: {0}")]
    Internal(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stream of watch events in revision order. It ends with an error item if the backend fails or
/// the watcher falls too far behind to be served (then the client must list again).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// The storage contract the API server is written against.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest value of one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, ascending, paged.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage>;

    /// Number of keys under `prefix` at the latest revision.
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Create `key`; fails with [`StoreError::AlreadyExists`] if present. Returns the new key-value.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replace `key` if its mod revision is still `expected`; [`StoreError::NotFound`] if absent,
    /// [`StoreError::Conflict`] if changed.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Delete `key`; returns the last value and the revision of the delete.
    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(KeyValue, Revision)>;

    /// Every event under `prefix` with a revision strictly greater than `after`, then new ones as they
    /// happen. `after` older than the compaction point yields [`StoreError::Compacted`] (either from
    /// this call or as the stream's first item).
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// Forget history before `revision`: afterwards a watch may start from `after >= revision` and
    /// a list may read `at >= revision`, anything older is [`StoreError::Compacted`].
    /// Compacting at or before the current compaction point does nothing; after the current
    /// revision is [`StoreError::FutureRevision`].
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The oldest revision a watch or list may still start from (`after` >= this).
    async fn compacted_revision(&self) -> Result<Revision>;
}
