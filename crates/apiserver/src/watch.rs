//! WATCH: a stream of `{"type": ..., "object": ...}` lines with Kubernetes' resourceVersion rules.
//!
//! ```text
//!  resourceVersion unset or "0"   ─► ADDED for every current object (a snapshot at revision R),
//!                                    then every change after R
//!  resourceVersion N              ─► every change after N
//!  N older than the compaction    ─► HTTP 200 with one ERROR event carrying a 410 Expired Status
//! ```
//!
//! Selectors are applied to both the old and the new state of a change, so an object that starts
//! matching arrives as ADDED and one that stops matching as DELETED. BOOKMARK events (when asked for)
//! carry only `apiVersion`, `kind` and `metadata.resourceVersion`. The stream ends at `timeoutSeconds`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use ferrovirt_store::{ListOptions, StoreError, WatchEvent};

use crate::error::ApiError;
use crate::kinds::Kind;
use crate::object::meta_mut;
use crate::request::{Query, Target};
use crate::rest::{parse_rv, Objects, Selectors};
use crate::table::{self, Columns};

/// How a watch renders its objects.
#[derive(Debug, Clone, Copy)]
pub enum Render {
    Object,
    Table(Columns),
}

/// Upper bound for a watch's life when the client gives no timeout (Kubernetes picks 30-60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often an idle watch is sent a bookmark (when bookmarks were asked for).
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

fn line(ty: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({ "type": ty, "object": object })).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn render(obj: Value, how: Render) -> Value {
    match how {
        Render::Object => obj,
        Render::Table(cols) => {
            let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
            table::table(cols, &[obj], json!({ "resourceVersion": rv }), true)
        }
    }
}

fn bookmark(kind: &Kind, rv: i64, initial_end: bool) -> Value {
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({ "apiVersion": kind.api_version(), "kind": kind.kind, "metadata": meta })
}

fn expired(msg: String) -> Value {
    ApiError::Gone(msg).to_status()
}

/// Start a watch; the returned stream is the response body.
pub fn watch(
    objects: Objects,
    target: Target,
    query: Query,
    sel: Selectors,
    how: Render,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>>, ApiError> {
    let timeout = match query.int("timeoutSeconds")? {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => DEFAULT_TIMEOUT,
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.flag("sendInitialEvents");
    let start = match query.get("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => Some(parse_rv(rv)?),
    };
    // With sendInitialEvents the client asks for the current state first whatever the RV.
    let start = if send_initial { None } else { start };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        tokio::select! {
            _ = run(&objects, &target, start, &sel, how, bookmarks, send_initial, &tx) => {}
            _ = &mut deadline => {}
            _ = tx.closed() => {}
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    objects: &Objects,
    t: &Target,
    start: Option<i64>,
    sel: &Selectors,
    how: Render,
    bookmarks: bool,
    send_initial: bool,
    tx: &mpsc::Sender<Bytes>,
) {
    let kind = t.kind;
    let prefix = kind.prefix_in(t.namespace.as_deref());
    let store = &objects.store;
    // The starting point: either the client's revision, or a snapshot we send as ADDED events.
    let after = match start {
        Some(rv) => rv,
        None => {
            let mut start_after = None;
            let mut at = None;
            loop {
                let page = match store.list(&prefix, ListOptions { start_after: start_after.clone(), limit: 500, at }).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(line("ERROR", ApiError::from(e).to_status())).await;
                        return;
                    }
                };
                at = Some(page.revision);
                for kv in &page.items {
                    if let Ok(obj) = Objects::decode_kv(kind, kv) {
                        if sel.matches(kind, &obj) && tx.send(line("ADDED", render(obj, how))).await.is_err() {
                            return;
                        }
                    }
                }
                start_after = page.items.last().map(|kv| kv.key.clone());
                if !page.more {
                    break;
                }
            }
            let rev = at.unwrap_or(0);
            if send_initial && tx.send(line("BOOKMARK", bookmark(kind, rev, true))).await.is_err() {
                return;
            }
            rev
        }
    };
    let mut events = match store.watch(&prefix, after).await {
        Ok(s) => s,
        Err(StoreError::Compacted { requested, compacted }) => {
            let _ = tx.send(line("ERROR", expired(format!("too old resource version: {requested} ({compacted})")))).await;
            return;
        }
        Err(e) => {
            let _ = tx.send(line("ERROR", ApiError::from(e).to_status())).await;
            return;
        }
    };
    let mut last_rv = after;
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = ticker.tick() => {
                if bookmarks && tx.send(line("BOOKMARK", bookmark(kind, last_rv, false))).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some(ev) = ev else { return };
        let ev = match ev {
            Ok(ev) => ev,
            Err(StoreError::Compacted { requested, compacted }) => {
                let _ = tx.send(line("ERROR", expired(format!("too old resource version: {requested} ({compacted})")))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(line("ERROR", ApiError::from(e).to_status())).await;
                return;
            }
        };
        let out = match ev {
            WatchEvent::Progress { revision } => {
                last_rv = last_rv.max(revision);
                None
            }
            WatchEvent::Put { kv, prev } => {
                last_rv = kv.mod_revision;
                let Ok(new) = Objects::decode_kv(kind, &kv) else { continue };
                let was = prev.as_ref().and_then(|p| Objects::decode_kv(kind, p).ok()).map(|o| sel.matches(kind, &o));
                match (sel.matches(kind, &new), was) {
                    (true, Some(true)) => Some(("MODIFIED", new)),
                    (true, _) => Some(("ADDED", new)),
                    (false, Some(true)) => Some(("DELETED", new)),
                    (false, _) => None,
                }
            }
            WatchEvent::Delete { prev, revision } => {
                last_rv = revision;
                let Ok(mut old) = Objects::decode_kv(kind, &prev) else { continue };
                meta_mut(&mut old).insert("resourceVersion".into(), json!(revision.to_string()));
                sel.matches(kind, &old).then_some(("DELETED", old))
            }
        };
        if let Some((ty, obj)) = out {
            if tx.send(line(ty, render(obj, how))).await.is_err() {
                return;
            }
        }
    }
}
