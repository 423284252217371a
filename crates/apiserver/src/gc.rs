//! Background work of the API server: the garbage collector (ownerReferences and cascading deletion),
//! namespace finalization, default namespaces and history compaction.
//!
//! The collector keeps an index of every object's uid and owners, built from one full list and kept
//! current by a store watch. It acts on three things:
//!
//! ```text
//!  owner gone                      ─► dependents with no living owner left are deleted (background)
//!  owner deleting, "orphan"        ─► ownerReferences to it removed from dependents, then finalizer removed
//!  owner deleting, "foregroundDeletion" ─► dependents deleted (foreground); finalizer removed when none remain
//!  namespace deleting              ─► everything in it deleted; the namespace removed when empty
//! ```
//!
//! Every action is an idempotent API write, so several API servers on one etcd may all run it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use ferrovirt_store::{ListOptions, Precondition, Store, WatchEvent};

use crate::error::{ApiError, ApiResult};
use crate::kinds::{self, Kind};
use crate::object;
use crate::request::{Query, Target};
use crate::rest::{DeleteOptions, Objects, Propagation};

/// Namespaces every cluster has.
pub const DEFAULT_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn namespaces() -> &'static Kind {
    kinds::find("", "v1", "namespaces").expect("namespaces are served")
}

pub async fn ensure_default_namespaces(objects: &Objects) -> ApiResult<()> {
    let t = Target { kind: namespaces(), namespace: None, name: None, subresource: None };
    for ns in DEFAULT_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match objects.create(&t, obj, &Query::default()).await {
            Ok(_) | Err(ApiError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Which served kind owns a storage key, and the object's namespace and name.
fn locate(key: &str) -> Option<(&'static Kind, Option<String>, String)> {
    let kind = kinds::all().iter().filter(|k| k.stored_as.is_none()).find(|k| key.starts_with(&k.prefix()))?;
    let rest = &key[kind.prefix().len()..];
    if kind.namespaced {
        let (ns, name) = rest.split_once('/')?;
        Some((kind, Some(ns.to_string()), name.to_string()))
    } else {
        Some((kind, None, rest.to_string()))
    }
}

#[derive(Debug, Clone)]
struct Entry {
    uid: String,
    owners: Vec<String>,
    deleting: bool,
    finalizers: Vec<String>,
    namespace_object: bool,
}

#[derive(Default)]
struct Index {
    by_key: HashMap<String, Entry>,
    key_of_uid: HashMap<String, String>,
    dependents: HashMap<String, BTreeSet<String>>,
    /// Keys of objects per namespace, for namespace deletion.
    by_namespace: HashMap<String, BTreeSet<String>>,
}

impl Index {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.by_key.remove(key)?;
        self.key_of_uid.remove(&e.uid);
        for o in &e.owners {
            if let Some(d) = self.dependents.get_mut(o) {
                d.remove(key);
                if d.is_empty() {
                    self.dependents.remove(o);
                }
            }
        }
        if let Some((_, Some(ns), _)) = locate(key) {
            if let Some(s) = self.by_namespace.get_mut(&ns) {
                s.remove(key);
            }
        }
        Some(e)
    }

    fn insert(&mut self, key: &str, obj: &Value) -> Entry {
        self.remove(key);
        let (kind, ns, _) = locate(key).map(|(k, ns, n)| (Some(k), ns, n)).unwrap_or((None, None, String::new()));
        let e = Entry {
            uid: object::uid(obj).unwrap_or_default().to_string(),
            owners: object::owner_uids(obj),
            deleting: object::is_deleting(obj),
            finalizers: object::finalizers(obj),
            namespace_object: kind.is_some_and(|k| k.kind == "Namespace"),
        };
        self.key_of_uid.insert(e.uid.clone(), key.to_string());
        for o in &e.owners {
            self.dependents.entry(o.clone()).or_default().insert(key.to_string());
        }
        if let Some(ns) = ns {
            self.by_namespace.entry(ns).or_default().insert(key.to_string());
        }
        self.by_key.insert(key.to_string(), e.clone());
        e
    }
}

/// Run the collector until the task is aborted; restarts itself after errors.
pub async fn run(objects: Objects) {
    loop {
        if let Err(e) = run_once(&objects).await {
            tracing::warn!(error = %e, "garbage collector restarting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn run_once(objects: &Objects) -> ApiResult<()> {
    let store = &objects.store;
    let mut index = Index::default();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut start_after = None;
    let mut at = None;
    loop {
        let page = store.list("/registry/", ListOptions { start_after: start_after.clone(), limit: 1000, at }).await?;
        at = Some(page.revision);
        for kv in &page.items {
            if let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) {
                index.insert(&kv.key, &obj);
                dirty.insert(kv.key.clone());
            }
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    let mut events = store.watch("/registry/", at.unwrap_or(0)).await?;
    loop {
        for key in std::mem::take(&mut dirty) {
            process(objects, &index, &key).await;
        }
        let Some(ev) = events.next().await else { return Ok(()) };
        let mut batch = vec![ev?];
        // Take whatever else is already waiting, so a burst is handled in one pass.
        while let Some(Some(ev)) = events.now_or_never_ready() {
            batch.push(ev?);
        }
        for ev in batch {
            match ev {
                WatchEvent::Put { kv, .. } => {
                    let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else { continue };
                    let e = index.insert(&kv.key, &obj);
                    dirty.insert(kv.key.clone());
                    mark_owners(&index, &e, &mut dirty);
                }
                WatchEvent::Delete { prev, .. } => {
                    if let Some(e) = index.remove(&prev.key) {
                        mark_owners(&index, &e, &mut dirty);
                        // Its dependents may have lost their last owner.
                        if let Some(deps) = index.dependents.get(&e.uid) {
                            dirty.extend(deps.iter().cloned());
                        }
                    }
                    // Its namespace may now be empty.
                    if let Some((_, Some(ns), _)) = locate(&prev.key) {
                        dirty.insert(namespaces().key(None, &ns));
                    }
                }
                WatchEvent::Progress { .. } => {}
            }
        }
    }
}

fn mark_owners(index: &Index, e: &Entry, dirty: &mut HashSet<String>) {
    for o in &e.owners {
        if let Some(k) = index.key_of_uid.get(o) {
            dirty.insert(k.clone());
        }
    }
}

trait NowOrNever {
    type Item;
    fn now_or_never_ready(&mut self) -> Option<Option<Self::Item>>;
}

impl<S: futures::Stream + Unpin> NowOrNever for S {
    type Item = S::Item;
    fn now_or_never_ready(&mut self) -> Option<Option<S::Item>> {
        futures::FutureExt::now_or_never(self.next())
    }
}

fn target_of(key: &str) -> Option<(Target, String)> {
    let (kind, ns, name) = locate(key)?;
    Some((Target { kind, namespace: ns, name: Some(name.clone()), subresource: None }, name))
}

/// Decide and carry out what one object needs.
async fn process(objects: &Objects, index: &Index, key: &str) {
    let Some(entry) = index.by_key.get(key) else { return };
    // A dependent whose owners are all gone is collected.
    if !entry.owners.is_empty() && !entry.deleting && entry.owners.iter().all(|o| !index.key_of_uid.contains_key(o)) {
        if let Some((t, name)) = target_of(key) {
            let opts = DeleteOptions { propagation: Some(Propagation::Background), ..Default::default() };
            log_err(objects.delete(&t, &name, &opts).await.map(drop), key, "collect orphaned dependent");
        }
        return;
    }
    if !entry.deleting {
        return;
    }
    let deps: Vec<String> = index.dependents.get(&entry.uid).map(|d| d.iter().cloned().collect()).unwrap_or_default();
    if entry.finalizers.iter().any(|f| f == "orphan") {
        for d in &deps {
            if let Some((t, name)) = target_of(d) {
                let uid = entry.uid.clone();
                let r = objects
                    .guaranteed_update(&t, &name, false, |cur| {
                        let mut next = cur.clone();
                        if let Some(refs) = next.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
                            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                        }
                        Ok(next)
                    })
                    .await;
                log_err(r.map(drop), d, "orphan dependent");
            }
        }
        remove_finalizer(objects, key, "orphan").await;
        return;
    }
    if entry.finalizers.iter().any(|f| f == "foregroundDeletion") {
        if deps.is_empty() {
            remove_finalizer(objects, key, "foregroundDeletion").await;
        } else {
            for d in &deps {
                if index.by_key.get(d).is_some_and(|e| e.deleting) {
                    continue;
                }
                if let Some((t, name)) = target_of(d) {
                    let opts = DeleteOptions { propagation: Some(Propagation::Foreground), ..Default::default() };
                    log_err(objects.delete(&t, &name, &opts).await.map(drop), d, "delete dependent");
                }
            }
        }
        return;
    }
    if entry.namespace_object {
        finalize_namespace(objects, index, key).await;
    }
}

async fn finalize_namespace(objects: &Objects, index: &Index, key: &str) {
    let Some((_, _, ns)) = locate(key) else { return };
    let contents: Vec<String> = index.by_namespace.get(&ns).map(|s| s.iter().cloned().collect()).unwrap_or_default();
    if contents.is_empty() {
        // Nothing left: the namespace goes.
        if let Ok(Some(kv)) = objects.store.get(key).await {
            let _ = objects.store.delete(key, Precondition::ModRevision(kv.mod_revision)).await;
        }
        return;
    }
    for d in &contents {
        if index.by_key.get(d).is_some_and(|e| e.deleting) {
            continue;
        }
        if let Some((t, name)) = target_of(d) {
            let opts = DeleteOptions { propagation: Some(Propagation::Background), grace_period: Some(0), ..Default::default() };
            log_err(objects.delete(&t, &name, &opts).await.map(drop), d, "delete namespace content");
        }
    }
}

async fn remove_finalizer(objects: &Objects, key: &str, finalizer: &str) {
    let Some((t, name)) = target_of(key) else { return };
    let r = objects
        .guaranteed_update(&t, &name, false, |cur| {
            let mut next = cur.clone();
            let fins: Vec<String> = object::finalizers(cur).into_iter().filter(|f| f != finalizer).collect();
            object::set_finalizers(&mut next, &fins);
            Ok(next)
        })
        .await;
    log_err(r.map(drop), key, "remove finalizer");
}

fn log_err(r: ApiResult<()>, key: &str, what: &str) {
    match r {
        Ok(()) | Err(ApiError::NotFound(_)) => {}
        Err(e) => tracing::warn!(%key, error = %e, "garbage collector could not {what}"),
    }
}

/// Compact history older than one interval, every interval (as Kubernetes does on etcd).
pub async fn compact_periodically(store: Arc<dyn Store>, every: Duration) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::time::sleep(every).await;
        let Ok(now) = store.current_revision().await else { continue };
        if let Some(rev) = previous {
            if let Err(e) = store.compact(rev).await {
                tracing::warn!(revision = rev, error = %e, "compaction failed");
            }
        }
        previous = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_located() {
        let (k, ns, name) = locate("/registry/kubevirt.io/virtualmachines/default/vm1").unwrap();
        assert_eq!(k.kind, "VirtualMachine");
        assert_eq!(ns.as_deref(), Some("default"));
        assert_eq!(name, "vm1");
        let (k, ns, name) = locate("/registry/core/nodes/n1").unwrap();
        assert_eq!((k.kind, ns, name.as_str()), ("Node", None, "n1"));
        let (k, _, _) = locate("/registry/core/events/default/e1").unwrap();
        assert_eq!(k.group, "");
        assert!(locate("/ferrovirt/bootstrap").is_none());
    }

    #[test]
    fn index_tracks_dependents() {
        let mut ix = Index::default();
        ix.insert("/registry/core/pods/default/p", &json!({"metadata": {"uid": "p", "ownerReferences": [{"uid": "v"}]}}));
        ix.insert("/registry/kubevirt.io/virtualmachineinstances/default/v", &json!({"metadata": {"uid": "v"}}));
        assert_eq!(ix.dependents["v"].len(), 1);
        ix.remove("/registry/core/pods/default/p");
        assert!(!ix.dependents.contains_key("v"));
        assert_eq!(ix.by_namespace["default"].len(), 1);
    }
}
