//! The etcd v3 store: for several machines, or wherever an etcd cluster already runs.
//!
//! Keys live under a store prefix (`"/ferrovirt"` turns `/registry/...` into
//! `/ferrovirt/registry/...`), and every write is one etcd transaction:
//!
//! ```text
//!   create   if create_revision(k) == 0                          then put            else -> AlreadyExists
//!   update   if mod_revision(k) == expected && create_revision>0 then put (prev_kv) else get -> NotFound/Conflict
//!   delete   [if mod_revision(k) == expected && create_revision>0] then delete (prev_kv) else get
//! ```
//!
//! etcd's revision is the store's revision. A watch is an etcd watch from `after + 1` with
//! `prev_kv` and `progress_notify`; etcd's progress notifications become
//! [`WatchEvent::Progress`]. etcd sends them every `--experimental-watch-progress-notify-interval`
//! (default ten minutes: run etcd with a few seconds so that idle watchers get bookmarks).
//!
//! etcd does not tell a client its compaction point, so the store records the last compaction it
//! made in one key of its own beside the data (`<prefix>\0ferrovirt/compacted`, never listed,
//! counted or watched) and also learns it from watches that etcd refuses as compacted.
//!
//! Every request has a deadline (`request_timeout`); a request that cannot reach etcd, or that
//! etcd cannot serve for want of a leader, fails with [`StoreError::Unavailable`] within it.
//! Values may be as large as etcd's `--max-request-bytes` allows (1.5 MiB by default, which
//! is a little less than a 1.5 MiB value: run etcd with 2 MiB or more).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KvClient,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions, WatchResponse,
};

use crate::{
    KeyValue, ListOptions, ListPage, Precondition, Result, Revision, Store, StoreError, WatchEvent,
    WatchStream,
};

/// Where, after the store prefix, the store records its last compaction. The NUL byte keeps it
/// apart from every key a caller uses (they are text starting with `/`).
const COMPACTED_KEY: &str = "\0ferrovirt/compacted";

/// Connection tuning of an [`EtcdStore`].
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Deadline for establishing a connection to an endpoint.
    pub connect_timeout: Duration,
    /// Deadline for every request (a watch: for being created).
    pub request_timeout: Duration,
    /// Largest response the client accepts (a page of large objects, a watch response).
    pub max_message_bytes: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            max_message_bytes: 256 << 20,
        }
    }
}

/// A [`Store`] on an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    prefix: String,
    options: EtcdOptions,
    /// The highest compaction point seen so far.
    compacted: Arc<AtomicI64>,
}

/// Why a call to etcd failed.
enum CallError {
    Timeout,
    Etcd(etcd_client::Error),
}

/// gRPC status codes (they are fixed by the gRPC protocol).
const GRPC_CANCELLED: i32 = 1;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
const GRPC_ABORTED: i32 = 10;
const GRPC_UNAVAILABLE: i32 = 14;

impl CallError {
    fn message(&self) -> String {
        match self {
            CallError::Timeout => "no answer in time".into(),
            CallError::Etcd(etcd_client::Error::GRpcStatus(status)) => status.message().to_owned(),
            CallError::Etcd(e) => e.to_string(),
        }
    }

    fn is_compacted(&self) -> bool {
        self.message()
            .contains("required revision has been compacted")
    }

    fn is_future_revision(&self) -> bool {
        self.message()
            .contains("required revision is a future revision")
    }

    fn is_unavailable(&self) -> bool {
        match self {
            CallError::Timeout => true,
            CallError::Etcd(etcd_client::Error::GRpcStatus(status)) => {
                let code = status.code() as i32;
                let message = status.message();
                matches!(
                    code,
                    GRPC_CANCELLED
                        | GRPC_DEADLINE_EXCEEDED
                        | GRPC_RESOURCE_EXHAUSTED
                        | GRPC_ABORTED
                        | GRPC_UNAVAILABLE
                ) || [
                    "no leader",
                    "leader changed",
                    "timed out",
                    "transport",
                    "connect",
                ]
                .iter()
                .any(|m| message.contains(m))
            }
            CallError::Etcd(
                etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_),
            ) => true,
            CallError::Etcd(_) => false,
        }
    }

    fn into_store(self, what: &str, timeout: Duration) -> StoreError {
        match &self {
            CallError::Timeout => StoreError::Unavailable(format!(
                "etcd did not answer {what} within {}s",
                timeout.as_secs_f32()
            )),
            _ if self.is_unavailable() => {
                StoreError::Unavailable(format!("etcd cannot serve {what}: {}", self.message()))
            }
            _ => StoreError::Internal(format!("etcd failed {what}: {}", self.message())),
        }
    }
}

/// The smallest key after every key that starts with `prefix` (etcd's `range_end`); `[0]` means
/// "no end".
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

impl EtcdStore {
    /// Connect to etcd with default options. `prefix` (e.g. `""` or `"/ferrovirt"`) is put in
    /// front of every key; stores sharing one etcd need prefixes that are not prefixes of each
    /// other (`/a` and `/b`, not `/a` and `/ab`). Fails with [`StoreError::Unavailable`] if no
    /// endpoint answers.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        Self::connect_with(endpoints, prefix, EtcdOptions::default()).await
    }

    /// Connect to etcd.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        options: EtcdOptions,
    ) -> Result<Self> {
        let unreachable = |e: String| {
            StoreError::Unavailable(format!("cannot reach etcd at {}: {e}", endpoints.join(",")))
        };
        if endpoints.is_empty() {
            return Err(StoreError::Internal("no etcd endpoints given".into()));
        }
        let connect_options = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            // Our own deadline (in `call`) comes first and says which request it was.
            .with_timeout(options.request_timeout + Duration::from_secs(1))
            .with_keep_alive(Duration::from_secs(10), options.request_timeout)
            .with_require_leader(true);
        let client = tokio::time::timeout(
            options.connect_timeout,
            Client::connect(endpoints, Some(connect_options)),
        )
        .await
        .map_err(|_| unreachable("connection timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let store = EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(options.max_message_bytes),
            watch: client
                .watch_client()
                .max_decoding_message_size(options.max_message_bytes),
            prefix: prefix.to_owned(),
            options,
            compacted: Arc::new(AtomicI64::new(0)),
        };
        // The client connects lazily: make sure etcd answers now, not at the first request.
        store.compacted_revision().await.map_err(|e| match e {
            StoreError::Unavailable(message) => unreachable(message),
            other => other,
        })?;
        Ok(store)
    }

    /// The prefix put in front of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn call<T, F>(&self, fut: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.options.request_timeout, fut).await {
            Err(_) => Err(CallError::Timeout),
            Ok(result) => result.map_err(CallError::Etcd),
        }
    }

    /// [`Self::call`] for calls whose failures are all plain errors.
    async fn request<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call(fut)
            .await
            .map_err(|e| e.into_store(what, self.options.request_timeout))
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn compacted_key(&self) -> Vec<u8> {
        self.full_key(COMPACTED_KEY)
    }

    /// etcd's key range for every key under `prefix`.
    fn range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.full_key(prefix);
        let end = prefix_end(&start);
        // etcd has no empty key: "\0" is the first one.
        let start = if start.is_empty() { vec![0] } else { start };
        (start, end)
    }

    /// The caller's key for an etcd key; `None` for the store's own bookkeeping key.
    fn user_key(&self, full: &[u8]) -> Result<Option<String>> {
        let key = full.strip_prefix(self.prefix.as_bytes()).ok_or_else(|| {
            StoreError::Internal(format!(
                "etcd returned key {:?} outside the store prefix {:?}",
                String::from_utf8_lossy(full),
                self.prefix
            ))
        })?;
        let key = std::str::from_utf8(key).map_err(|_| {
            StoreError::Internal(format!(
                "etcd key {:?} is not UTF-8",
                String::from_utf8_lossy(full)
            ))
        })?;
        Ok((key != COMPACTED_KEY).then(|| key.to_owned()))
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<Option<KeyValue>> {
        Ok(self.user_key(kv.key())?.map(|key| KeyValue {
            key,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }))
    }

    fn note_compacted(&self, revision: Revision) {
        self.compacted.fetch_max(revision, Ordering::AcqRel);
    }

    async fn compacted_error(&self, requested: Revision) -> StoreError {
        let known = self.compacted_revision().await.unwrap_or(0);
        StoreError::Compacted {
            requested,
            compacted: known.max(requested + 1),
        }
    }

    async fn future_error(&self, requested: Revision) -> StoreError {
        match self.current_revision().await {
            Ok(current) => StoreError::FutureRevision { requested, current },
            Err(e) => e,
        }
    }

    /// Record that history up to `revision` is compacted, unless a higher point is recorded.
    async fn record_compaction(&self, revision: Revision) -> Result<()> {
        let key = self.compacted_key();
        loop {
            let mut kv = self.kv.clone();
            let found = self
                .request("read the compaction point", kv.get(key.clone(), None))
                .await?;
            let (recorded, version) = match found.kvs().first() {
                Some(kv) => (parse_revision(kv.value())?, kv.mod_revision()),
                None => (0, 0),
            };
            if recorded >= revision {
                self.note_compacted(recorded);
                return Ok(());
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    version,
                )])
                .and_then([TxnOp::put(key.clone(), revision.to_string(), None)]);
            if self
                .request("record the compaction point", kv.txn(txn))
                .await?
                .succeeded()
            {
                self.note_compacted(revision);
                return Ok(());
            }
        }
    }
}

fn parse_revision(bytes: &[u8]) -> Result<Revision> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            StoreError::Internal(format!(
                "the recorded compaction point {:?} is not a revision",
                String::from_utf8_lossy(bytes)
            ))
        })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Internal("etcd answered without a response header".into()))
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.kv.clone();
        let resp = self
            .request(&format!("get {key}"), kv.get(self.full_key(key), None))
            .await?;
        match resp.kvs().first() {
            Some(found) => self.key_value(found),
            None => Ok(None),
        }
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage> {
        let (mut start, end) = self.range(prefix);
        if let Some(after) = opts.start_after.as_deref().filter(|after| *after >= prefix) {
            start = self.full_key(after);
            start.push(0);
        }
        let mut get = GetOptions::new().with_range(end);
        if opts.limit > 0 {
            // One more than asked, in case the bookkeeping key is among them.
            get = get.with_limit(i64::try_from(opts.limit).unwrap_or(i64::MAX - 1) + 1);
        }
        if let Some(at) = opts.at {
            let known = self.compacted.load(Ordering::Acquire);
            if at < known {
                return Err(StoreError::Compacted {
                    requested: at,
                    compacted: known,
                });
            }
            // etcd's first revision is 1 and holds no keys, like revision 0.
            get = get.with_revision(at.max(1));
        }
        let mut kv = self.kv.clone();
        let resp = match self.call(kv.get(start, Some(get))).await {
            Ok(resp) => resp,
            Err(e) if e.is_compacted() => {
                return Err(self.compacted_error(opts.at.unwrap_or(0)).await);
            }
            Err(e) if e.is_future_revision() => {
                return Err(self.future_error(opts.at.unwrap_or(0)).await);
            }
            Err(e) => {
                return Err(e.into_store(&format!("list {prefix}"), self.options.request_timeout))
            }
        };
        let mut items = Vec::with_capacity(resp.kvs().len());
        for found in resp.kvs() {
            if let Some(item) = self.key_value(found)? {
                items.push(item);
            }
        }
        let mut more = resp.more();
        if opts.limit > 0 && items.len() > opts.limit {
            items.truncate(opts.limit);
            more = true;
        }
        let revision = match opts.at {
            Some(at) => at,
            None => header_revision(resp.header())?,
        };
        Ok(ListPage {
            items,
            revision,
            more,
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let (start, end) = self.range(prefix);
        let meta = self.compacted_key();
        let covers_meta = meta >= start && (end == [0] || meta < end);
        let what = format!("count {prefix}");
        let mut kv = self.kv.clone();
        let counted = self
            .request(
                &what,
                kv.get(
                    start,
                    Some(GetOptions::new().with_range(end).with_count_only()),
                ),
            )
            .await?
            .count();
        let own = if covers_meta {
            self.request(
                &what,
                kv.get(meta, Some(GetOptions::new().with_count_only())),
            )
            .await?
            .count()
        } else {
            0
        };
        Ok(u64::try_from(counted - own).unwrap_or(0))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let full = self.full_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value.to_vec(), None)]);
        let mut kv = self.kv.clone();
        let resp = self.request(&format!("create {key}"), kv.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let revision = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let full = self.full_key(key);
        let txn = Txn::new()
            .when([
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
                Compare::create_revision(full.clone(), CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(
                full.clone(),
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let mut kv = self.kv.clone();
        let resp = self.request(&format!("update {key}"), kv.txn(txn)).await?;
        let responses = resp.op_responses();
        if !resp.succeeded() {
            return Err(match responses.first() {
                Some(TxnOpResponse::Get(get)) => match get.kvs().first() {
                    Some(found) => StoreError::Conflict {
                        key: key.to_owned(),
                        expected,
                        actual: found.mod_revision(),
                    },
                    None => StoreError::NotFound {
                        key: key.to_owned(),
                    },
                },
                _ => StoreError::Internal(format!("etcd answered the update of {key} oddly")),
            });
        }
        let create_revision = match responses.first() {
            Some(TxnOpResponse::Put(put)) => put.prev_key().map(|prev| prev.create_revision()),
            _ => None,
        }
        .ok_or_else(|| StoreError::Internal(format!("etcd did not return the previous {key}")))?;
        let revision = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(KeyValue, Revision)> {
        let full = self.full_key(key);
        let what = format!("delete {key}");
        let mut kv = self.kv.clone();
        let delete_options = DeleteOptions::new().with_prev_key();
        let (revision, deleted) = match precondition {
            Precondition::None => {
                let resp = self
                    .request(&what, kv.delete(full, Some(delete_options)))
                    .await?;
                (
                    header_revision(resp.header())?,
                    resp.prev_kvs().first().cloned(),
                )
            }
            Precondition::ModRevision(expected) => {
                let txn = Txn::new()
                    .when([
                        Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
                        Compare::create_revision(full.clone(), CompareOp::Greater, 0),
                    ])
                    .and_then([TxnOp::delete(full.clone(), Some(delete_options))])
                    .or_else([TxnOp::get(full, None)]);
                let resp = self.request(&what, kv.txn(txn)).await?;
                let responses = resp.op_responses();
                match responses.first() {
                    Some(TxnOpResponse::Delete(del)) if resp.succeeded() => (
                        header_revision(resp.header())?,
                        del.prev_kvs().first().cloned(),
                    ),
                    Some(TxnOpResponse::Get(get)) => {
                        return Err(match get.kvs().first() {
                            Some(found) => StoreError::Conflict {
                                key: key.to_owned(),
                                expected,
                                actual: found.mod_revision(),
                            },
                            None => StoreError::NotFound {
                                key: key.to_owned(),
                            },
                        });
                    }
                    _ => {
                        return Err(StoreError::Internal(format!(
                            "etcd answered the {what} oddly"
                        )))
                    }
                }
            }
        };
        match deleted {
            Some(prev) => match self.key_value(&prev)? {
                Some(prev) => Ok((prev, revision)),
                None => Err(StoreError::NotFound {
                    key: key.to_owned(),
                }),
            },
            None => Err(StoreError::NotFound {
                key: key.to_owned(),
            }),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let compacted = self.compacted_revision().await?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let (start, end) = self.range(prefix);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(after + 1)
            .with_prev_key()
            .with_progress_notify();
        let what = format!("watch {prefix}");
        let mut client = self.watch.clone();
        let mut stream = self
            .request(&what, client.watch(start, Some(options)))
            .await?;
        let mut state = WatchState {
            store: self.clone(),
            after,
            pending: VecDeque::new(),
            done: false,
        };
        // The first answer tells whether etcd accepted the watch.
        match self.request(&what, stream.message()).await? {
            Some(resp) if resp.created() && !resp.canceled() => {}
            Some(resp) => state.absorb(resp),
            None => {
                return Err(StoreError::Unavailable(format!(
                    "etcd closed the {what} at once"
                )))
            }
        }
        if let Some(Err(_)) = state.pending.front() {
            // Refused at creation (compacted, no leader): say so from this call.
            if let Some(Err(e)) = state.pending.pop_front() {
                return Err(e);
            }
        }
        let events =
            futures::stream::unfold((stream, state), |(mut stream, mut state)| async move {
                loop {
                    if let Some(item) = state.pending.pop_front() {
                        state.done |= item.is_err();
                        return Some((item, (stream, state)));
                    }
                    if state.done {
                        return None;
                    }
                    match stream.message().await {
                        Ok(Some(resp)) => state.absorb(resp),
                        Ok(None) => {
                            state.fail(StoreError::Unavailable("etcd ended the watch".into()))
                        }
                        Err(e) => {
                            let timeout = state.store.options.request_timeout;
                            state.fail(CallError::Etcd(e).into_store("a watch", timeout));
                        }
                    }
                }
            });
        Ok(Box::pin(events))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let mut kv = self.kv.clone();
        let resp = self
            .request(
                "read the current revision",
                kv.get(
                    self.compacted_key(),
                    Some(GetOptions::new().with_count_only()),
                ),
            )
            .await?;
        header_revision(resp.header())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision <= self.compacted_revision().await? {
            return Ok(());
        }
        let mut kv = self.kv.clone();
        match self.call(kv.compact(revision, None)).await {
            Ok(_) => {}
            // Someone compacted further already.
            Err(e) if e.is_compacted() => {}
            Err(e) if e.is_future_revision() => return Err(self.future_error(revision).await),
            Err(e) => {
                return Err(e.into_store(
                    &format!("compact at {revision}"),
                    self.options.request_timeout,
                ))
            }
        }
        self.record_compaction(revision).await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        let mut kv = self.kv.clone();
        let resp = self
            .request(
                "read the compaction point",
                kv.get(self.compacted_key(), None),
            )
            .await?;
        if let Some(found) = resp.kvs().first() {
            self.note_compacted(parse_revision(found.value())?);
        }
        Ok(self.compacted.load(Ordering::Acquire))
    }
}

/// Turns etcd watch responses into [`WatchEvent`]s.
struct WatchState {
    store: EtcdStore,
    after: Revision,
    pending: VecDeque<Result<WatchEvent>>,
    done: bool,
}

impl WatchState {
    fn fail(&mut self, error: StoreError) {
        self.pending.push_back(Err(error));
    }

    fn absorb(&mut self, resp: WatchResponse) {
        if resp.canceled() {
            let compacted = resp.compact_revision();
            if compacted > 0 {
                self.store.note_compacted(compacted);
                self.fail(StoreError::Compacted {
                    requested: self.after,
                    compacted,
                });
            } else {
                let reason = resp.cancel_reason();
                let reason = if reason.is_empty() {
                    "no reason given"
                } else {
                    reason
                };
                self.fail(StoreError::Unavailable(format!(
                    "etcd cancelled the watch: {reason}"
                )));
            }
            return;
        }
        if resp.events().is_empty() {
            if !resp.created() {
                match header_revision(resp.header()) {
                    Ok(revision) => self
                        .pending
                        .push_back(Ok(WatchEvent::Progress { revision })),
                    Err(e) => self.fail(e),
                }
            }
            return;
        }
        for event in resp.events() {
            match self.event(event) {
                Ok(Some(event)) => self.pending.push_back(Ok(event)),
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
        }
    }

    fn event(&self, event: &etcd_client::Event) -> Result<Option<WatchEvent>> {
        let missing = || StoreError::Internal("etcd sent a watch event without its key".into());
        let raw = event.kv().ok_or_else(missing)?;
        let Some(key) = self.store.user_key(raw.key())? else {
            return Ok(None);
        };
        let prev = match event.prev_kv() {
            Some(prev) => self.store.key_value(prev)?,
            None => None,
        };
        match event.event_type() {
            EventType::Put => {
                let kv = self.store.key_value(raw)?.ok_or_else(missing)?;
                let prev = if kv.create_revision == kv.mod_revision {
                    None
                } else {
                    prev
                };
                Ok(Some(WatchEvent::Put { kv, prev }))
            }
            EventType::Delete => {
                let prev = prev.ok_or_else(|| {
                    StoreError::Internal(format!(
                        "etcd sent the delete of {key} at revision {} without its last value",
                        raw.mod_revision()
                    ))
                })?;
                Ok(Some(WatchEvent::Delete {
                    prev,
                    revision: raw.mod_revision(),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a"), b"/b".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
