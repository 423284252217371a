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
//! Values may be as large as etcd's `--max-request-bytes` allows (1.5 MiB by default, which
//! is a little less than a 1.5 MiB value: run etcd with 2 MiB or more).
//!
//! # When members fail
//!
//! The client talks to every endpoint (requests are spread over them) and asks etcd to refuse
//! requests at once when the member it reached has no leader. Each request has a budget
//! (`request_timeout`); within it, every failed attempt is sorted:
//!
//! ```text
//!   attempt fails with ...                               read / idempotent      write
//!   connection refused, "no leader", proposal dropped     retry (backoff)        retry (backoff): nothing was applied
//!   no answer in time, connection lost, "timed out"      retry (backoff)        OutcomeUnknown at once: it may have been applied
//!   anything else (compacted, bad request, ...)          that answer            that answer
//!   budget spent                                         Unavailable            Unavailable
//! ```
//!
//! So one member dying costs a request nothing (it goes to another member) or, while the others
//! elect a new leader, a pause of a second or two. With no quorum, every request fails with
//! [`StoreError::Unavailable`] naming the endpoints and the cause. The first request to spend its
//! whole budget marks the store down; while it is down, requests give up after
//! `budget_while_down` instead, so callers hear "unavailable" quickly rather than queueing for
//! the full timeout each; the first answer from etcd marks it up again.
//!
//! A watch whose member goes away (killed, or cut off from its leader: etcd then cancels the
//! watch) is opened again on another member from the last revision it delivered, so nothing is
//! missed and nothing repeats. If no member can take it within the budget, the stream ends with
//! [`StoreError::Unavailable`] and the caller watches again later from the same revision.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, DeleteResponse, EventType,
    GetOptions, GetResponse, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchClient, WatchOptions, WatchResponse,
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
    /// How long one request may try (over several attempts and members) before it fails
    /// (a watch: for being created).
    pub request_timeout: Duration,
    /// The shorter budget of a request while the store is down (see the module docs).
    pub budget_while_down: Duration,
    /// Largest response the client accepts (a page of large objects, a watch response).
    pub max_message_bytes: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            budget_while_down: Duration::from_secs(1),
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
    /// The endpoints, as messages name them.
    endpoints: Arc<str>,
    /// The highest compaction point seen so far.
    compacted: Arc<AtomicI64>,
    /// Whether a request spent its whole budget since etcd last answered.
    down: Arc<AtomicBool>,
}

/// What a failed attempt may have done, which decides whether it is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Reads, and writes that are harmless to repeat: retried after any transient failure.
    Idempotent,
    /// A write: retried only when it surely was not applied.
    Write,
}

/// How one attempt failed.
#[derive(Debug)]
enum Failure {
    /// No connection to the member it went to: nothing was sent.
    Unreachable(String),
    /// A member refused the request before acting on it ("no leader", proposal dropped):
    /// nothing was applied.
    NotApplied(String),
    /// The request may have reached the leader before the answer was lost.
    Unknown(String),
    /// etcd answered with an error that trying again will not change.
    Refused(etcd_client::Error),
}

/// Why a request failed, once its attempts are over.
#[derive(Debug)]
enum CallError {
    /// The budget is spent and nothing was applied (the full message).
    Unavailable(String),
    /// A write may or may not have been applied (the full message).
    OutcomeUnknown(String),
    /// etcd's answer.
    Refused(etcd_client::Error),
}

/// etcd's messages for requests that no leader took (see etcd's `rpctypes` and raft).
const NOT_APPLIED_MESSAGES: [&str; 4] = [
    "etcdserver: no leader",
    "raft proposal dropped",
    "etcdserver: not capable",
    "etcdserver: too many requests",
];

/// etcd's messages for requests whose fate is unknown.
const UNKNOWN_MESSAGES: [&str; 3] = ["timed out", "leader changed", "stopped"];

/// The first pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(25);
const MAX_PAUSE: Duration = Duration::from_millis(400);
/// After a refused connection the next attempt most likely goes to another member: try again
/// after this short pause, this many times in a row, before backing off as after other failures.
const UNREACHABLE_PAUSE: Duration = Duration::from_millis(5);
const UNREACHABLE_QUICK_TRIES: u32 = 20;

/// Sort one attempt's error.
fn classify(error: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match &error {
        E::GRpcStatus(status) => {
            if let Some(cause) = connect_failure(status) {
                return Failure::Unreachable(cause);
            }
            let message = status.message();
            match status_verdict(status.code() as i32, message) {
                Verdict::NotApplied => Failure::NotApplied(message.to_owned()),
                Verdict::Unknown => {
                    let mut cause = message.to_owned();
                    if let Some(inner) = innermost_source(status) {
                        if inner != cause {
                            cause = format!("{cause}: {inner}");
                        }
                    }
                    Failure::Unknown(cause)
                }
                Verdict::Answer => Failure::Refused(error),
            }
        }
        E::TransportError(e) => match connect_failure(e) {
            Some(cause) => Failure::Unreachable(cause),
            None => Failure::Unknown(error.to_string()),
        },
        E::IoError(_) | E::WatchError(_) => Failure::Unknown(error.to_string()),
        _ => Failure::Refused(error),
    }
}

/// What a gRPC status from etcd says about the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Refused before anything was applied.
    NotApplied,
    /// Lost somewhere: it may or may not have been applied.
    Unknown,
    /// etcd's considered answer.
    Answer,
}

fn status_verdict(code: i32, message: &str) -> Verdict {
    use grpc_code::*;
    if NOT_APPLIED_MESSAGES.iter().any(|m| message.contains(m)) {
        Verdict::NotApplied
    } else if UNKNOWN_MESSAGES.iter().any(|m| message.contains(m))
        || matches!(code, CANCELLED | UNKNOWN | DEADLINE_EXCEEDED | UNAVAILABLE)
    {
        Verdict::Unknown
    } else {
        Verdict::Answer
    }
}

/// gRPC status codes (fixed by the gRPC protocol).
mod grpc_code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const UNAVAILABLE: i32 = 14;
    #[cfg(test)]
    pub const OUT_OF_RANGE: i32 = 11;
    #[cfg(test)]
    pub const FAILED_PRECONDITION: i32 = 9;
    #[cfg(test)]
    pub const RESOURCE_EXHAUSTED: i32 = 8;
}

/// Why a connection could not be made, if that is what `error` is about: the request was never
/// sent. (tonic reports it as a status whose sources hold a `ConnectError`.)
fn connect_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(error);
    let mut connect = false;
    while let Some(e) = source {
        let text = e.to_string();
        connect |= text.contains("tcp connect error")
            || text.contains("error trying to connect")
            || format!("{e:?}").starts_with("ConnectError");
        source = e.source();
    }
    if !connect {
        return None;
    }
    let inner = innermost_source(error).unwrap_or_else(|| error.to_string());
    Some(format!("cannot connect to a member: {inner}"))
}

/// The text of the last error in `error`'s source chain (the root cause), if it has one.
fn innermost_source(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut last = None;
    let mut source = error.source();
    while let Some(e) = source {
        last = Some(e.to_string());
        source = e.source();
    }
    last
}

impl CallError {
    fn message(&self) -> String {
        match self {
            CallError::Unavailable(m) | CallError::OutcomeUnknown(m) => m.clone(),
            CallError::Refused(etcd_client::Error::GRpcStatus(status)) => {
                status.message().to_owned()
            }
            CallError::Refused(e) => e.to_string(),
        }
    }

    fn is_compacted(&self) -> bool {
        matches!(self, CallError::Refused(_))
            && self
                .message()
                .contains("required revision has been compacted")
    }

    fn is_future_revision(&self) -> bool {
        matches!(self, CallError::Refused(_))
            && self
                .message()
                .contains("required revision is a future revision")
    }

    fn into_store(self, what: &str) -> StoreError {
        match self {
            CallError::Unavailable(message) => StoreError::Unavailable(message),
            CallError::OutcomeUnknown(message) => StoreError::OutcomeUnknown(message),
            CallError::Refused(_) => {
                StoreError::Internal(format!("etcd failed {what}: {}", self.message()))
            }
        }
    }
}

/// `", tried for 5.0s"` when a request took long enough for it to matter.
fn tried_for(started: Instant) -> String {
    let elapsed = started.elapsed();
    if elapsed < Duration::from_millis(100) {
        String::new()
    } else {
        format!(", tried for {:.1}s", elapsed.as_secs_f64())
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
            .with_keep_alive(Duration::from_secs(5), options.request_timeout)
            // A member without a leader refuses at once instead of holding the request.
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
            endpoints: endpoints.join(", ").into(),
            compacted: Arc::new(AtomicI64::new(0)),
            down: Arc::new(AtomicBool::new(false)),
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

    /// Whether the last request gave up for want of an answer, and none has succeeded since.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Run `attempt` until it succeeds, etcd refuses it, or the budget is spent (see the module
    /// docs). `what` names the request in messages.
    async fn call<T, F, Fut>(
        &self,
        effect: Effect,
        what: &str,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let was_down = self.is_down();
        let budget = if was_down {
            self.options
                .budget_while_down
                .min(self.options.request_timeout)
        } else {
            self.options.request_timeout
        };
        let mut pause = FIRST_PAUSE;
        let mut unreachable_in_a_row = 0;
        let mut cause: Option<String> = None;
        loop {
            let remaining = budget.saturating_sub(started.elapsed());
            let failure = match tokio::time::timeout(remaining, attempt()).await {
                Ok(Ok(value)) => {
                    self.down.store(false, Ordering::Release);
                    return Ok(value);
                }
                Ok(Err(e)) => classify(e),
                Err(_) => Failure::Unknown("no answer".into()),
            };
            let unreachable = matches!(failure, Failure::Unreachable(_));
            let (this_cause, applied_maybe, answered) = match failure {
                Failure::Refused(e) => {
                    self.down.store(false, Ordering::Release);
                    return Err(CallError::Refused(e));
                }
                Failure::Unreachable(c) => (c, false, false),
                Failure::NotApplied(c) => (c, false, true),
                Failure::Unknown(c) => (c, true, false),
            };
            if applied_maybe && effect == Effect::Write {
                if started.elapsed() + pause >= budget {
                    self.down.store(true, Ordering::Release);
                }
                return Err(CallError::OutcomeUnknown(format!(
                    "etcd did not confirm it ({}): {this_cause} ({what}{}); read it back before \
                     writing again",
                    self.endpoints,
                    tried_for(started)
                )));
            }
            // "Cannot connect" says least: keep a better cause seen on another member.
            if answered || cause.is_none() {
                cause = Some(this_cause);
            }
            let cause = cause.as_deref().unwrap_or_default();
            // While the store is down, a member saying it has no leader is news enough: only
            // dead endpoints are worth trying past.
            let spent = started.elapsed() + pause >= budget || (was_down && answered);
            if spent {
                self.down.store(true, Ordering::Release);
                return Err(CallError::Unavailable(
                    self.unreachable(what, cause, started),
                ));
            }
            unreachable_in_a_row = if unreachable {
                unreachable_in_a_row + 1
            } else {
                0
            };
            if unreachable_in_a_row > 0 && unreachable_in_a_row <= UNREACHABLE_QUICK_TRIES {
                tokio::time::sleep(UNREACHABLE_PAUSE).await;
                continue;
            }
            tracing::debug!(what, cause, ?pause, "etcd request failed, trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// The message of a request that no member could serve.
    fn unreachable(&self, what: &str, cause: &str, started: Instant) -> String {
        format!(
            "etcd has no quorum or cannot be reached ({}): {cause} ({what}{})",
            self.endpoints,
            tried_for(started)
        )
    }

    async fn get_call(
        &self,
        what: &str,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, CallError> {
        self.call(Effect::Idempotent, what, || {
            let mut kv = self.kv.clone();
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    async fn txn_call(
        &self,
        effect: Effect,
        what: &str,
        txn: Txn,
    ) -> Result<TxnResponse, CallError> {
        self.call(effect, what, || {
            let mut kv = self.kv.clone();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    async fn delete_call(
        &self,
        what: &str,
        key: Vec<u8>,
        options: DeleteOptions,
    ) -> Result<DeleteResponse, CallError> {
        self.call(Effect::Write, what, || {
            let mut kv = self.kv.clone();
            let (key, options) = (key.clone(), options.clone());
            async move { kv.delete(key, Some(options)).await }
        })
        .await
    }

    /// [`Self::get_call`] for reads whose failures are all plain errors.
    async fn read(
        &self,
        what: &str,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse> {
        self.get_call(what, key, options)
            .await
            .map_err(|e| e.into_store(what))
    }

    /// Open an etcd watch on `prefix` from `after + 1` and wait for etcd's first answer.
    async fn open_watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(etcd_client::WatchStream, WatchResponse)> {
        let (start, end) = self.range(prefix);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(after + 1)
            .with_prev_key()
            .with_progress_notify();
        let what = format!("watch {prefix} from revision {}", after + 1);
        self.call(Effect::Idempotent, &what, || {
            let mut client = self.watch.clone();
            let (start, options) = (start.clone(), options.clone());
            async move {
                let mut stream = client.watch(start, Some(options)).await?;
                match stream.message().await? {
                    Some(first) => Ok((stream, first)),
                    None => Err(etcd_client::Error::WatchError(
                        "etcd closed the watch at once".into(),
                    )),
                }
            }
        })
        .await
        .map_err(|e| e.into_store(&what))
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
            let found = self
                .read("read the compaction point", key.clone(), None)
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
            // Repeating it is harmless: the loop reads the point again.
            let what = "record the compaction point";
            let written = self
                .txn_call(Effect::Idempotent, what, txn)
                .await
                .map_err(|e| e.into_store(what))?;
            if written.succeeded() {
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
        let resp = self
            .read(&format!("get {key}"), self.full_key(key), None)
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
        let what = format!("list {prefix}");
        let resp = match self.get_call(&what, start, Some(get)).await {
            Ok(resp) => resp,
            Err(e) if e.is_compacted() => {
                return Err(self.compacted_error(opts.at.unwrap_or(0)).await);
            }
            Err(e) if e.is_future_revision() => {
                return Err(self.future_error(opts.at.unwrap_or(0)).await);
            }
            Err(e) => return Err(e.into_store(&what)),
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
        let counted = self
            .read(
                &what,
                start,
                Some(GetOptions::new().with_range(end).with_count_only()),
            )
            .await?
            .count();
        let own = if covers_meta {
            self.read(&what, meta, Some(GetOptions::new().with_count_only()))
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
        let what = format!("create {key}");
        let resp = self
            .txn_call(Effect::Write, &what, txn)
            .await
            .map_err(|e| e.into_store(&what))?;
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
        let what = format!("update {key}");
        let resp = self
            .txn_call(Effect::Write, &what, txn)
            .await
            .map_err(|e| e.into_store(&what))?;
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
        let delete_options = DeleteOptions::new().with_prev_key();
        let (revision, deleted) = match precondition {
            Precondition::None => {
                let resp = self
                    .delete_call(&what, full, delete_options)
                    .await
                    .map_err(|e| e.into_store(&what))?;
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
                let resp = self
                    .txn_call(Effect::Write, &what, txn)
                    .await
                    .map_err(|e| e.into_store(&what))?;
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
        let (stream, first) = self.open_watch(prefix, after).await?;
        let mut state = WatchState {
            store: self.clone(),
            prefix: prefix.to_owned(),
            after,
            pending: VecDeque::new(),
            done: false,
        };
        state.absorb_first(first);
        if let Some(Err(_)) = state.pending.front() {
            // Refused at creation (compacted): say so from this call.
            if let Some(Err(e)) = state.pending.pop_front() {
                return Err(e);
            }
        }
        let events = futures::stream::unfold(
            (stream, state),
            |(mut stream, mut state)| async move {
                loop {
                    if let Some(item) = state.pending.pop_front() {
                        state.done |= item.is_err();
                        return Some((item, (stream, state)));
                    }
                    if state.done {
                        return None;
                    }
                    let broken = match stream.message().await {
                        Ok(Some(resp)) => {
                            state.absorb(resp);
                            continue;
                        }
                        Ok(None) => "etcd ended the watch".to_owned(),
                        Err(e) => match classify(e) {
                            Failure::Refused(e) => {
                                state.fail(StoreError::Internal(format!(
                                    "etcd failed the watch on {}: {e}",
                                    state.prefix
                                )));
                                continue;
                            }
                            Failure::Unreachable(cause)
                            | Failure::NotApplied(cause)
                            | Failure::Unknown(cause) => cause,
                        },
                    };
                    // Carry on from the last revision seen, on whichever member answers.
                    tracing::debug!(prefix = %state.prefix, after = state.after, cause = %broken, "etcd watch broke, opening it again");
                    match state.store.open_watch(&state.prefix, state.after).await {
                        Ok((again, first)) => {
                            stream = again;
                            state.absorb_first(first);
                        }
                        Err(StoreError::Unavailable(message)) => {
                            state.fail(StoreError::Unavailable(format!(
                                "the watch broke ({broken}): {message}"
                            )))
                        }
                        Err(e) => state.fail(e),
                    }
                }
            },
        );
        Ok(Box::pin(events))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .read(
                "read the current revision",
                self.compacted_key(),
                Some(GetOptions::new().with_count_only()),
            )
            .await?;
        header_revision(resp.header())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision <= self.compacted_revision().await? {
            return Ok(());
        }
        let what = format!("compact at {revision}");
        // Repeating a compaction is harmless: etcd says it is compacted already.
        let compaction = self
            .call(Effect::Idempotent, &what, || {
                let mut kv = self.kv.clone();
                async move { kv.compact(revision, None).await }
            })
            .await;
        match compaction {
            Ok(_) => {}
            // Someone compacted further already.
            Err(e) if e.is_compacted() => {}
            Err(e) if e.is_future_revision() => return Err(self.future_error(revision).await),
            Err(e) => return Err(e.into_store(&what)),
        }
        self.record_compaction(revision).await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        let resp = self
            .read("read the compaction point", self.compacted_key(), None)
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
    prefix: String,
    /// The revision of the last event taken from etcd: a watch opened again starts after it.
    after: Revision,
    pending: VecDeque<Result<WatchEvent>>,
    done: bool,
}

impl WatchState {
    fn fail(&mut self, error: StoreError) {
        self.pending.push_back(Err(error));
    }

    /// etcd's first answer to a new watch: "created", unless it refused the watch.
    fn absorb_first(&mut self, resp: WatchResponse) {
        if !resp.created() || resp.canceled() {
            self.absorb(resp);
        }
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
                    Ok(revision) => {
                        self.after = self.after.max(revision);
                        self.pending
                            .push_back(Ok(WatchEvent::Progress { revision }));
                    }
                    Err(e) => self.fail(e),
                }
            }
            return;
        }
        for event in resp.events() {
            if let Some(kv) = event.kv() {
                self.after = self.after.max(kv.mod_revision());
            }
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
    fn etcd_statuses_say_whether_a_request_was_applied() {
        use grpc_code::*;
        let cases = [
            (UNAVAILABLE, "etcdserver: no leader", Verdict::NotApplied),
            (UNKNOWN, "raft proposal dropped", Verdict::NotApplied),
            (
                RESOURCE_EXHAUSTED,
                "etcdserver: too many requests",
                Verdict::NotApplied,
            ),
            (
                UNAVAILABLE,
                "etcdserver: request timed out",
                Verdict::Unknown,
            ),
            (
                UNAVAILABLE,
                "etcdserver: request timed out, possibly due to previous leader failure",
                Verdict::Unknown,
            ),
            (UNAVAILABLE, "etcdserver: leader changed", Verdict::Unknown),
            (CANCELLED, "Timeout expired", Verdict::Unknown),
            (UNAVAILABLE, "transport error", Verdict::Unknown),
            (
                UNKNOWN,
                "h2 protocol error: connection reset",
                Verdict::Unknown,
            ),
            (
                OUT_OF_RANGE,
                "etcdserver: mvcc: required revision has been compacted",
                Verdict::Answer,
            ),
            (
                FAILED_PRECONDITION,
                "etcdserver: mvcc: required revision is a future revision",
                Verdict::Answer,
            ),
            (
                RESOURCE_EXHAUSTED,
                "grpc: received message larger than max",
                Verdict::Answer,
            ),
        ];
        for (code, message, verdict) in cases {
            assert_eq!(status_verdict(code, message), verdict, "{code} {message}");
        }
    }

    /// An error with a chain of sources, as tonic builds them.
    #[derive(Debug)]
    struct Chain(
        &'static str,
        Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    );

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_refused_connection_is_told_from_a_lost_one() {
        let refused = Chain(
            "tcp connect error",
            Some(Box::new(Chain(
                "transport error",
                Some(Box::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                ))),
            ))),
        );
        assert_eq!(
            connect_failure(&refused).as_deref(),
            Some("cannot connect to a member: connection refused")
        );
        let reset = Chain(
            "transport error",
            Some(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
        );
        assert_eq!(connect_failure(&reset), None);
        assert_eq!(
            innermost_source(&reset).as_deref(),
            Some("connection reset")
        );
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a"), b"/b".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
