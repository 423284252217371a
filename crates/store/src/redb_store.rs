//! The embedded store: one redb file, one writer thread with group commit, watches fed from the
//! event log and an in-process broadcast.
//!
//! # Layout
//!
//! ```text
//!   table "current"  key: &str  -> [create_revision i64 BE][mod_revision i64 BE][value ...]
//!   table "log"      revision   -> one event (see below), for watch replay and snapshot reads
//!   table "meta"     "revision"  -> the store's current revision
//!                    "compacted" -> the compaction point (log entries <= it are gone)
//!
//!   log entry: [kind u8: 1 put, 2 delete][key len u32][key]
//!              put only:  [create_revision i64][value len u32][value]      (mod_revision = log key)
//!              then:      [has prev u8] prev: [create_revision i64][mod_revision i64][len u32][value]
//! ```
//!
//! Every write changes "current", appends one "log" entry under its new revision and moves
//! "meta"/"revision", all in one redb write transaction. A read at an older revision `R` takes
//! "current" and undoes, key by key, what the log says happened after `R` (the `prev` of the first
//! entry after `R` for a key is that key's state at `R`).
//!
//! # Group commit
//!
//! ```text
//!   create/update/delete/compact ──mpsc──▶ writer thread: take every queued request (bounded),
//!        ▲                                   apply each in turn in ONE write transaction,
//!        │                                   commit once (fsync, Durability::Immediate),
//!        └──────────── oneshot reply ──────  publish the batch's events, answer each caller
//! ```
//!
//! Each request gets its own revision and its own result: a failed precondition changes nothing
//! and fails only its caller. If the commit itself fails, every request of the batch fails and
//! nothing of it is visible.
//!
//! # Watch switch-over
//!
//! A watch subscribes to the broadcast *before* it reads anything. It then replays the log in
//! chunks: the first chunk's read transaction fixes the snapshot revision `S`, later chunks read up
//! to `S`. Every batch committed after that first read transaction began is published after it
//! began, hence after the subscription, so the broadcast holds every event above `S`; events at or
//! below `S` that it also holds are skipped by revision. No gap, no duplicate:
//!
//! ```text
//!   subscribe ── replay log (after, S] ── live: broadcast events with revision > S ──▶
//! ```
//!
//! A watcher whose consumer is so slow that the broadcast overwrote batches it had not read yet
//! gets an [`StoreError::Unavailable`] item naming the revision to watch again from, and its stream
//! ends. An idle watcher gets [`WatchEvent::Progress`] about every `progress_interval`, carrying
//! the newest revision it has seen (never one whose events it has not been sent yet).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    KeyValue, ListOptions, ListPage, Precondition, Result, Revision, Store, StoreError, WatchEvent,
    WatchStream,
};

const CURRENT: TableDefinition<&str, &[u8]> = TableDefinition::new("current");
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// Log entries a watch replays per read transaction.
const REPLAY_CHUNK: usize = 512;

/// Tuning of a [`RedbStore`]; the defaults suit the API server.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// At most this many writes share one commit.
    pub max_batch: usize,
    /// A batch stops growing once its values add up to this many bytes.
    pub max_batch_bytes: usize,
    /// Committed batches kept for live watchers; a watcher further behind than this fails.
    pub watch_backlog: usize,
    /// Events buffered between a watcher and its consumer.
    pub watch_buffer: usize,
    /// How often an idle watcher gets a [`WatchEvent::Progress`].
    pub progress_interval: Duration,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            max_batch: 1024,
            max_batch_bytes: 32 << 20,
            watch_backlog: 1024,
            watch_buffer: 256,
            progress_interval: Duration::from_secs(1),
        }
    }
}

/// The embedded, crash-safe store (a redb database file). Cloning gives another handle to the
/// same database.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` only while dropping: closing it stops the writer thread.
    writes: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    /// For subscribing; the writer thread holds the other sender.
    events: broadcast::Sender<Arc<Batch>>,
}

/// What readers, the writer and watchers share. Watchers hold it weakly, so that dropping the
/// last [`RedbStore`] closes the file even while watch streams are still around.
struct Shared {
    db: Database,
    path: PathBuf,
    /// The last committed revision (published after commit, before the batch's events).
    revision: AtomicI64,
    compacted: AtomicI64,
    options: RedbOptions,
}

/// The events of one committed write transaction, in revision order.
struct Batch {
    /// The revision of the transaction's last write.
    revision: Revision,
    events: Vec<WatchEvent>,
}

enum WriteOp {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        precondition: Precondition,
    },
    Compact {
        revision: Revision,
    },
}

impl WriteOp {
    fn value_len(&self) -> usize {
        match self {
            WriteOp::Create { value, .. } | WriteOp::Update { value, .. } => value.len(),
            WriteOp::Delete { .. } | WriteOp::Compact { .. } => 0,
        }
    }
}

enum WriteOutcome {
    Put(KeyValue),
    Deleted(KeyValue, Revision),
    Compacted,
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome>>,
}

impl RedbStore {
    /// Open (or create) the database file at `path` with default options.
    ///
    /// Fails with [`StoreError::Unavailable`] if another process (or another handle in this one)
    /// has the file open: redb locks it.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Open (or create) the database file at `path`.
    pub fn open_with(path: &Path, options: RedbOptions) -> Result<Self> {
        let db = Database::create(path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "database {} is already open in another process (redb locks the file); \
                 stop that process or use another data directory",
                path.display()
            )),
            other => {
                StoreError::Internal(format!("cannot open database {}: {other}", path.display()))
            }
        })?;
        let (revision, compacted) =
            init_tables(&db).map_err(|e| db_error(&format!("initialise {}", path.display()), e))?;
        let shared = Arc::new(Shared {
            db,
            path: path.to_owned(),
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            options: options.clone(),
        });
        let (writes, requests) = mpsc::channel(options.max_batch.max(1) * 4);
        let (events, _) = broadcast::channel(options.watch_backlog.max(1));
        let writer = {
            let shared = shared.clone();
            let events = events.clone();
            std::thread::Builder::new()
                .name("redb-writer".into())
                .spawn(move || run_writer(&shared, requests, &events))
                .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?
        };
        Ok(RedbStore {
            inner: Arc::new(Inner {
                shared,
                writes: Some(writes),
                writer: Some(writer),
                events,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        let writes = self.inner.writes.as_ref().ok_or_else(writer_gone)?;
        writes
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T> + Send + 'static,
    {
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the request channel ends the writer after its current batch; waiting for it
        // makes sure the file is closed (and its lock released) when the last handle is gone.
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = %self.shared.path.display(), "redb writer thread panicked");
            }
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::Internal("the store's writer thread has stopped".into())
}

fn db_error(what: &str, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Internal(format!("redb: {what}: {}", e.into()))
}

fn init_tables(db: &Database) -> Result<(Revision, Revision), redb::Error> {
    let txn = db.begin_write()?;
    let (revision, compacted) = {
        txn.open_table(CURRENT)?;
        txn.open_table(LOG)?;
        let meta = txn.open_table(META)?;
        let revision = meta.get(META_REVISION)?.map(|v| v.value()).unwrap_or(0);
        let compacted = meta.get(META_COMPACTED)?.map(|v| v.value()).unwrap_or(0);
        (revision, compacted)
    };
    txn.commit()?;
    Ok((revision, compacted))
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn encode_current(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_be_bytes());
    out.extend_from_slice(&kv.mod_revision.to_be_bytes());
    out.extend_from_slice(&kv.value);
    out
}

fn decode_current(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    if bytes.len() < 16 {
        return Err(corrupt(&format!(
            "state of key {key} is {} bytes long",
            bytes.len()
        )));
    }
    Ok(KeyValue {
        key: key.to_owned(),
        create_revision: i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes")),
        mod_revision: i64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
        value: Bytes::copy_from_slice(&bytes[16..]),
    })
}

const LOG_PUT: u8 = 1;
const LOG_DELETE: u8 = 2;

/// `new` is the written key-value for a put, `None` for a delete; `prev` is what it replaced.
fn encode_log(key: &str, new: Option<&KeyValue>, prev: Option<&KeyValue>) -> Vec<u8> {
    let size = 1
        + 4
        + key.len()
        + new.map_or(0, |kv| 12 + kv.value.len())
        + 1
        + prev.map_or(0, |kv| 20 + kv.value.len());
    let mut out = Vec::with_capacity(size);
    out.push(if new.is_some() { LOG_PUT } else { LOG_DELETE });
    put_bytes(&mut out, key.as_bytes());
    if let Some(kv) = new {
        out.extend_from_slice(&kv.create_revision.to_be_bytes());
        put_bytes(&mut out, &kv.value);
    }
    match prev {
        Some(kv) => {
            out.push(1);
            out.extend_from_slice(&kv.create_revision.to_be_bytes());
            out.extend_from_slice(&kv.mod_revision.to_be_bytes());
            put_bytes(&mut out, &kv.value);
        }
        None => out.push(0),
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("keys and values are smaller than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a log entry front to back.
struct LogReader<'a> {
    revision: Revision,
    bytes: &'a [u8],
}

impl<'a> LogReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(corrupt(&format!(
                "log entry {} is truncated",
                self.revision
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(len as usize)
    }
    fn key(&mut self) -> Result<&'a str> {
        let revision = self.revision;
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| corrupt(&format!("log entry {revision} has a key that is not UTF-8")))
    }
}

/// The key a log entry is about, without decoding its values.
fn log_key(revision: Revision, bytes: &[u8]) -> Result<&str> {
    let mut r = LogReader { revision, bytes };
    r.u8()?;
    r.key()
}

fn decode_log(revision: Revision, bytes: &[u8]) -> Result<WatchEvent> {
    let mut r = LogReader { revision, bytes };
    let kind = r.u8()?;
    let key = r.key()?.to_owned();
    let new = if kind == LOG_PUT {
        let create_revision = r.i64()?;
        let value = Bytes::copy_from_slice(r.bytes()?);
        Some(KeyValue {
            key: key.clone(),
            value,
            create_revision,
            mod_revision: revision,
        })
    } else if kind == LOG_DELETE {
        None
    } else {
        return Err(corrupt(&format!(
            "log entry {revision} has unknown kind {kind}"
        )));
    };
    let prev = if r.u8()? == 1 {
        let create_revision = r.i64()?;
        let mod_revision = r.i64()?;
        let value = Bytes::copy_from_slice(r.bytes()?);
        Some(KeyValue {
            key,
            value,
            create_revision,
            mod_revision,
        })
    } else {
        None
    };
    match (new, prev) {
        (Some(kv), prev) => Ok(WatchEvent::Put { kv, prev }),
        (None, Some(prev)) => Ok(WatchEvent::Delete { prev, revision }),
        (None, None) => Err(corrupt(&format!(
            "delete at log entry {revision} has no previous value"
        ))),
    }
}

/// The state a key had just before this log entry.
fn log_prev(event: WatchEvent) -> Option<KeyValue> {
    match event {
        WatchEvent::Put { prev, .. } => prev,
        WatchEvent::Delete { prev, .. } => Some(prev),
        WatchEvent::Progress { .. } => None,
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("redb store is corrupt: {what}"))
}

fn event_key(event: &WatchEvent) -> Option<&str> {
    match event {
        WatchEvent::Put { kv, .. } => Some(&kv.key),
        WatchEvent::Delete { prev, .. } => Some(&prev.key),
        WatchEvent::Progress { .. } => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The writer

fn run_writer(
    shared: &Shared,
    mut requests: mpsc::Receiver<WriteRequest>,
    events: &broadcast::Sender<Arc<Batch>>,
) {
    let options = &shared.options;
    while let Some(first) = requests.blocking_recv() {
        let mut bytes = first.op.value_len();
        let mut batch = vec![first];
        while batch.len() < options.max_batch && bytes < options.max_batch_bytes {
            match requests.try_recv() {
                Ok(request) => {
                    bytes += request.op.value_len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let revision = shared.revision.load(Ordering::Acquire);
        let compacted = shared.compacted.load(Ordering::Acquire);
        match apply_batch(&shared.db, revision, compacted, &batch) {
            Ok(applied) => {
                shared.compacted.store(applied.compacted, Ordering::Release);
                shared.revision.store(applied.revision, Ordering::Release);
                if !applied.events.is_empty() {
                    // No receiver is fine: nobody watches.
                    let _ = events.send(Arc::new(Batch {
                        revision: applied.revision,
                        events: applied.events,
                    }));
                }
                for (request, result) in batch.into_iter().zip(applied.results) {
                    let _ = request.reply.send(result);
                }
            }
            Err(e) => {
                let message = format!("redb: commit of {} writes failed: {e}", batch.len());
                tracing::error!(path = %shared.path.display(), "{message}");
                for request in batch {
                    let _ = request
                        .reply
                        .send(Err(StoreError::Internal(message.clone())));
                }
            }
        }
    }
}

struct Applied {
    revision: Revision,
    compacted: Revision,
    results: Vec<Result<WriteOutcome>>,
    events: Vec<WatchEvent>,
}

fn apply_batch(
    db: &Database,
    mut revision: Revision,
    mut compacted: Revision,
    batch: &[WriteRequest],
) -> Result<Applied, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    {
        let mut tables = Tables {
            current: txn.open_table(CURRENT)?,
            log: txn.open_table(LOG)?,
        };
        for request in batch {
            let result = tables.apply(&request.op, &mut revision, &mut compacted, &mut events)?;
            results.push(result);
        }
        let mut meta = txn.open_table(META)?;
        meta.insert(META_REVISION, revision)?;
        meta.insert(META_COMPACTED, compacted)?;
    }
    txn.commit()?;
    Ok(Applied {
        revision,
        compacted,
        results,
        events,
    })
}

struct Tables<'txn> {
    current: Table<'txn, &'static str, &'static [u8]>,
    log: Table<'txn, i64, &'static [u8]>,
}

impl Tables<'_> {
    /// Apply one write. The outer error is a storage failure (the whole batch fails); the inner
    /// one is this write's own answer (nothing was changed).
    fn apply(
        &mut self,
        op: &WriteOp,
        revision: &mut Revision,
        compacted: &mut Revision,
        events: &mut Vec<WatchEvent>,
    ) -> Result<Result<WriteOutcome>, redb::Error> {
        match op {
            WriteOp::Create { key, value } => {
                if self.current.get(key.as_str())?.is_some() {
                    return Ok(Err(StoreError::AlreadyExists { key: key.clone() }));
                }
                *revision += 1;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: *revision,
                    mod_revision: *revision,
                };
                self.current
                    .insert(key.as_str(), encode_current(&kv).as_slice())?;
                self.log
                    .insert(*revision, encode_log(key, Some(&kv), None).as_slice())?;
                events.push(WatchEvent::Put {
                    kv: kv.clone(),
                    prev: None,
                });
                Ok(Ok(WriteOutcome::Put(kv)))
            }
            WriteOp::Update {
                key,
                value,
                expected,
            } => {
                let prev = match self.get(key)? {
                    Ok(Some(prev)) => prev,
                    Ok(None) => return Ok(Err(StoreError::NotFound { key: key.clone() })),
                    Err(e) => return Ok(Err(e)),
                };
                if prev.mod_revision != *expected {
                    return Ok(Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        actual: prev.mod_revision,
                    }));
                }
                *revision += 1;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.create_revision,
                    mod_revision: *revision,
                };
                self.current
                    .insert(key.as_str(), encode_current(&kv).as_slice())?;
                self.log.insert(
                    *revision,
                    encode_log(key, Some(&kv), Some(&prev)).as_slice(),
                )?;
                events.push(WatchEvent::Put {
                    kv: kv.clone(),
                    prev: Some(prev),
                });
                Ok(Ok(WriteOutcome::Put(kv)))
            }
            WriteOp::Delete { key, precondition } => {
                let prev = match self.get(key)? {
                    Ok(Some(prev)) => prev,
                    Ok(None) => return Ok(Err(StoreError::NotFound { key: key.clone() })),
                    Err(e) => return Ok(Err(e)),
                };
                if let Precondition::ModRevision(expected) = *precondition {
                    if prev.mod_revision != expected {
                        return Ok(Err(StoreError::Conflict {
                            key: key.clone(),
                            expected,
                            actual: prev.mod_revision,
                        }));
                    }
                }
                *revision += 1;
                self.current.remove(key.as_str())?;
                self.log
                    .insert(*revision, encode_log(key, None, Some(&prev)).as_slice())?;
                events.push(WatchEvent::Delete {
                    prev: prev.clone(),
                    revision: *revision,
                });
                Ok(Ok(WriteOutcome::Deleted(prev, *revision)))
            }
            WriteOp::Compact { revision: target } => {
                if *target > *revision {
                    return Ok(Err(StoreError::FutureRevision {
                        requested: *target,
                        current: *revision,
                    }));
                }
                if *target > *compacted {
                    self.log.retain_in(..=*target, |_, _| false)?;
                    *compacted = *target;
                }
                Ok(Ok(WriteOutcome::Compacted))
            }
        }
    }

    fn get(&self, key: &str) -> Result<Result<Option<KeyValue>>, redb::Error> {
        Ok(match self.current.get(key)? {
            Some(v) => decode_current(key, v.value()).map(Some),
            None => Ok(None),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

/// Revision and compaction point as one read transaction sees them.
fn read_meta(
    meta: &impl ReadableTable<&'static str, i64>,
) -> Result<(Revision, Revision), redb::Error> {
    let revision = meta.get(META_REVISION)?.map(|v| v.value()).unwrap_or(0);
    let compacted = meta.get(META_COMPACTED)?.map(|v| v.value()).unwrap_or(0);
    Ok((revision, compacted))
}

fn list_blocking(db: &Database, prefix: &str, opts: &ListOptions) -> Result<ListPage> {
    let err = |e: redb::Error| db_error(&format!("list {prefix}"), e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
    let (current_revision, compacted) = read_meta(&meta).map_err(err)?;
    let at = opts.at.unwrap_or(current_revision);
    if at > current_revision {
        return Err(StoreError::FutureRevision {
            requested: at,
            current: current_revision,
        });
    }
    if at < compacted {
        return Err(StoreError::Compacted {
            requested: at,
            compacted,
        });
    }
    let lower = match &opts.start_after {
        Some(after) if after.as_str() >= prefix => Bound::Excluded(after.as_str()),
        _ => Bound::Included(prefix),
    };
    let in_page = |key: &str| {
        key.starts_with(prefix) && opts.start_after.as_deref().is_none_or(|after| key > after)
    };

    // Keys changed after `at`, with the state they had at `at` (None: absent).
    let mut overrides: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
    if at < current_revision {
        let log = txn.open_table(LOG).map_err(|e| err(e.into()))?;
        for entry in log.range((at + 1)..).map_err(|e| err(e.into()))? {
            let (revision, bytes) = entry.map_err(|e| err(e.into()))?;
            let (revision, bytes) = (revision.value(), bytes.value());
            let key = log_key(revision, bytes)?;
            if !in_page(key) || overrides.contains_key(key) {
                continue;
            }
            overrides.insert(key.to_owned(), log_prev(decode_log(revision, bytes)?));
        }
    }

    let mut page = PageBuilder {
        items: Vec::new(),
        limit: if opts.limit == 0 {
            usize::MAX
        } else {
            opts.limit
        },
        more: false,
    };
    let current = txn.open_table(CURRENT).map_err(|e| err(e.into()))?;
    let mut pending = overrides.into_iter().peekable();
    'scan: for entry in current
        .range::<&str>((lower, Bound::Unbounded))
        .map_err(|e| err(e.into()))?
    {
        let (key, bytes) = entry.map_err(|e| err(e.into()))?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        // Keys that existed at `at` but are gone now come from the log, in order.
        while let Some((k, _)) = pending.peek() {
            if k.as_str() >= key {
                break;
            }
            let (_, state) = pending.next().expect("peeked");
            if let Some(kv) = state {
                if !page.push(kv) {
                    break 'scan;
                }
            }
        }
        let kv = match pending.peek() {
            Some((k, _)) if k.as_str() == key => match pending.next().expect("peeked").1 {
                Some(kv) => kv,
                None => continue,
            },
            _ => decode_current(key, bytes.value())?,
        };
        if !page.push(kv) {
            break 'scan;
        }
    }
    if !page.more {
        for kv in pending.filter_map(|(_, state)| state) {
            if !page.push(kv) {
                break;
            }
        }
    }
    let PageBuilder { items, more, .. } = page;
    Ok(ListPage {
        items,
        revision: at,
        more,
    })
}

struct PageBuilder {
    items: Vec<KeyValue>,
    limit: usize,
    more: bool,
}

impl PageBuilder {
    /// Add an item; `false` (and `more` set) once the page is full.
    fn push(&mut self, kv: KeyValue) -> bool {
        if self.items.len() == self.limit {
            self.more = true;
            return false;
        }
        self.items.push(kv);
        true
    }
}

/// One replay step: log entries after `from`, up to `until` (`None`: up to the revision this read
/// transaction sees, which it returns), at most [`REPLAY_CHUNK`] of them.
struct ReplayChunk {
    events: Vec<WatchEvent>,
    /// The last revision looked at (matching or not).
    scanned: Revision,
    /// The snapshot revision: the end of the replay.
    until: Revision,
}

fn replay_chunk(
    db: &Database,
    prefix: &str,
    from: Revision,
    until: Option<Revision>,
) -> Result<ReplayChunk> {
    let err = |e: redb::Error| db_error(&format!("replay watch of {prefix}"), e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
    let (revision, compacted) = read_meta(&meta).map_err(err)?;
    if from < compacted {
        return Err(StoreError::Compacted {
            requested: from,
            compacted,
        });
    }
    let until = until.unwrap_or(revision);
    let log = txn.open_table(LOG).map_err(|e| err(e.into()))?;
    let mut events = Vec::new();
    let mut scanned = from;
    if from < until {
        for entry in log
            .range((from + 1)..=until)
            .map_err(|e| err(e.into()))?
            .take(REPLAY_CHUNK)
        {
            let (revision, bytes) = entry.map_err(|e| err(e.into()))?;
            let (revision, bytes) = (revision.value(), bytes.value());
            scanned = revision;
            if log_key(revision, bytes)?.starts_with(prefix) {
                events.push(decode_log(revision, bytes)?);
            }
        }
    }
    if scanned < until && events.is_empty() && scanned == from {
        // Nothing in (from, until]: only possible if the log lost entries.
        return Err(corrupt(&format!("log has no entries in ({from}, {until}]")));
    }
    Ok(ReplayChunk {
        events,
        scanned,
        until,
    })
}

async fn run_watch(
    shared: Weak<Shared>,
    prefix: String,
    after: Revision,
    mut live: broadcast::Receiver<Arc<Batch>>,
    out: mpsc::Sender<Result<WatchEvent>>,
    progress_interval: Duration,
) {
    let closed = || StoreError::Unavailable("the store was closed".into());
    // Replay (after, S] from the log, S fixed by the first chunk's read transaction.
    let mut scanned = after;
    let mut until = None;
    loop {
        let Some(db) = shared.upgrade() else {
            let _ = out.send(Err(closed())).await;
            return;
        };
        let prefix_owned = prefix.clone();
        let chunk = tokio::task::spawn_blocking(move || {
            replay_chunk(&db.db, &prefix_owned, scanned, until)
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Internal(format!(
                "watch replay task failed: {e}"
            )))
        });
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        };
        for event in chunk.events {
            if out.send(Ok(event)).await.is_err() {
                return;
            }
        }
        scanned = chunk.scanned;
        until = Some(chunk.until);
        if scanned >= chunk.until {
            break;
        }
    }
    // `seen`: every event at or below it has been sent.
    let mut seen = until.unwrap_or(after).max(after);
    let mut ticker = tokio::time::interval(progress_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut sent_since_tick = false;
    loop {
        tokio::select! {
            _ = out.closed() => return,
            batch = live.recv() => match batch {
                Ok(batch) => {
                    if batch.revision <= seen {
                        continue;
                    }
                    for event in &batch.events {
                        if event.revision() > seen
                            && event_key(event).is_some_and(|k| k.starts_with(prefix.as_str()))
                        {
                            if out.send(Ok(event.clone())).await.is_err() {
                                return;
                            }
                            sent_since_tick = true;
                        }
                    }
                    seen = batch.revision;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let _ = out
                        .send(Err(StoreError::Unavailable(format!(
                            "watch of {prefix} fell {missed} commits behind; \
                             watch again from revision {seen}"
                        ))))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = out.send(Err(closed())).await;
                    return;
                }
            },
            _ = ticker.tick() => {
                if !sent_since_tick
                    && out.send(Ok(WatchEvent::Progress { revision: seen })).await.is_err()
                {
                    return;
                }
                sent_since_tick = false;
            }
        }
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |shared| {
            let err = |e: redb::Error| db_error(&format!("get {key}"), e);
            let txn = shared.db.begin_read().map_err(|e| err(e.into()))?;
            let current = txn.open_table(CURRENT).map_err(|e| err(e.into()))?;
            match current.get(key.as_str()).map_err(|e| err(e.into()))? {
                Some(v) => decode_current(&key, v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage> {
        let prefix = prefix.to_owned();
        self.read(move |shared| list_blocking(&shared.db, &prefix, &opts))
            .await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.read(move |shared| {
            let err = |e: redb::Error| db_error(&format!("count {prefix}"), e);
            let txn = shared.db.begin_read().map_err(|e| err(e.into()))?;
            let current = txn.open_table(CURRENT).map_err(|e| err(e.into()))?;
            let mut n = 0;
            for entry in current
                .range::<&str>(prefix.as_str()..)
                .map_err(|e| err(e.into()))?
            {
                let (key, _) = entry.map_err(|e| err(e.into()))?;
                if !key.value().starts_with(prefix.as_str()) {
                    break;
                }
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        match self
            .write(WriteOp::Create {
                key: key.to_owned(),
                value,
            })
            .await?
        {
            WriteOutcome::Put(kv) => Ok(kv),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        match self
            .write(WriteOp::Update {
                key: key.to_owned(),
                value,
                expected,
            })
            .await?
        {
            WriteOutcome::Put(kv) => Ok(kv),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(KeyValue, Revision)> {
        match self
            .write(WriteOp::Delete {
                key: key.to_owned(),
                precondition,
            })
            .await?
        {
            WriteOutcome::Deleted(prev, revision) => Ok((prev, revision)),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let shared = &self.inner.shared;
        let compacted = shared.compacted.load(Ordering::Acquire);
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        // Subscribe before the replay reads anything: see the module docs.
        let live = self.inner.events.subscribe();
        let (out, stream) = mpsc::channel(shared.options.watch_buffer.max(1));
        tokio::spawn(run_watch(
            Arc::downgrade(shared),
            prefix.to_owned(),
            after,
            live,
            out,
            shared.options.progress_interval,
        ));
        Ok(Box::pin(ReceiverStream::new(stream)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.shared.revision.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.write(WriteOp::Compact { revision }).await? {
            WriteOutcome::Compacted => Ok(()),
            _ => Err(unexpected_outcome()),
        }
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.inner.shared.compacted.load(Ordering::Acquire))
    }
}

fn unexpected_outcome() -> StoreError {
    StoreError::Internal("redb writer answered with the outcome of another kind of write".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: Revision, modified: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: create,
            mod_revision: modified,
        }
    }

    #[test]
    fn log_entries_round_trip() {
        let created = kv("/a", "one", 3, 3);
        let updated = kv("/a", "two", 3, 5);
        let cases = [
            (
                3,
                encode_log("/a", Some(&created), None),
                WatchEvent::Put {
                    kv: created.clone(),
                    prev: None,
                },
            ),
            (
                5,
                encode_log("/a", Some(&updated), Some(&created)),
                WatchEvent::Put {
                    kv: updated.clone(),
                    prev: Some(created.clone()),
                },
            ),
            (
                7,
                encode_log("/a", None, Some(&updated)),
                WatchEvent::Delete {
                    prev: updated.clone(),
                    revision: 7,
                },
            ),
        ];
        for (revision, bytes, want) in cases {
            assert_eq!(log_key(revision, &bytes).unwrap(), "/a");
            assert_eq!(decode_log(revision, &bytes).unwrap(), want);
        }
    }

    #[test]
    fn truncated_log_entry_is_an_error_not_a_panic() {
        let bytes = encode_log("/a", Some(&kv("/a", "value", 1, 1)), None);
        for len in 0..bytes.len() {
            assert!(
                decode_log(1, &bytes[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn current_state_round_trips() {
        let want = kv("/k", "v", 4, 9);
        assert_eq!(decode_current("/k", &encode_current(&want)).unwrap(), want);
        assert!(decode_current("/k", &[0; 15]).is_err());
    }

    #[tokio::test]
    async fn lagging_watcher_gets_an_error_and_the_stream_ends() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let options = RedbOptions {
            watch_backlog: 2,
            watch_buffer: 1,
            ..RedbOptions::default()
        };
        let store = RedbStore::open_with(&dir.path().join("db"), options).unwrap();
        let mut watch = store.watch("/lag/", 0).await.unwrap();
        // Never read while writing: the per-watcher buffer fills, then the broadcast overflows.
        for i in 0..20 {
            store
                .create(&format!("/lag/{i}"), Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        let mut items = Vec::new();
        while let Some(item) = watch.next().await {
            items.push(item);
        }
        let last = items.pop().expect("at least the error item");
        match last {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("behind"), "{message}")
            }
            other => panic!("expected a lag error, got {other:?}"),
        }
        assert!(
            items.iter().all(|i| i.is_ok()),
            "only the last item is an error"
        );
        assert!(
            items.len() < 20,
            "the watcher could not have been served everything"
        );
    }

    #[tokio::test]
    async fn second_open_of_the_same_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let _first = RedbStore::open(&path).unwrap();
        match RedbStore::open(&path) {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("already open"), "{message}")
            }
            Err(other) => panic!("expected Unavailable, got {other:?}"),
            Ok(_) => panic!("the same database file opened twice"),
        }
    }

    #[tokio::test]
    async fn dropping_the_store_closes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = RedbStore::open(&path).unwrap();
        let _watch = store.watch("/", 0).await.unwrap();
        store.create("/a", Bytes::from_static(b"1")).await.unwrap();
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get("/a").await.unwrap().unwrap().mod_revision, 1);
        assert_eq!(store.current_revision().await.unwrap(), 1);
    }
}
