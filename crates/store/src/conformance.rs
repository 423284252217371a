//! The shared test suite every [`crate::Store`] implementation must pass.
//!
//! [`run_all`] runs every check, one after the other, each on a store from the given factory
//! (a fresh one, or the same one again: every check works under its own key prefix and does not
//! assume the store is empty). The checks panic on failure, like assertions in a test, and are
//! public one by one too. [`check_compaction`] compacts the whole store, so [`run_all`] runs it
//! last.
//!
//! ```no_run
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use ferrovirt_store::{conformance, redb_store::RedbStore};
//!
//! # async fn example() {
//! let dir = tempfile::tempdir().unwrap();
//! let n = AtomicUsize::new(0);
//! conformance::run_all(|| async {
//!     let i = n.fetch_add(1, Ordering::Relaxed);
//!     RedbStore::open(&dir.path().join(format!("db{i}"))).unwrap()
//! })
//! .await;
//! # }
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{
    KeyValue, ListOptions, Precondition, Revision, Store, StoreError, WatchEvent, WatchStream,
};

/// How long a check waits for something that should happen (an event, a progress notice).
const PATIENCE: Duration = Duration::from_secs(20);

/// Run every check, each on a store from `make`.
pub async fn run_all<S, F, Fut>(mut make: F)
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    macro_rules! run {
        ($($check:ident),* $(,)?) => {$(
            let store = make().await;
            eprintln!("conformance: {}", stringify!($check));
            $check(&store).await;
            drop(store);
        )*};
    }
    run!(
        check_create_get,
        check_update,
        check_delete,
        check_revisions_are_global,
        check_list_paging,
        check_list_at_revision,
        check_count,
        check_watch_replay_then_live,
        check_watch_prefix_isolation,
        check_watch_concurrent_writers,
        check_watch_progress,
        check_large_values,
        check_many_concurrent_writers,
        check_compaction,
    );
}

/// A key prefix no other check (in this process or an earlier run on the same store) uses.
fn scope(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "/conformance/{name}-{}-{nanos}-{}/",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The next event that is not a progress notice; panics on an error item, the end of the
/// stream, or silence for [`PATIENCE`].
async fn next_change(watch: &mut WatchStream) -> WatchEvent {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Err(_) => panic!("no watch event within {PATIENCE:?}"),
            Ok(None) => panic!("the watch stream ended"),
            Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
            Ok(Some(Ok(WatchEvent::Progress { .. }))) => continue,
            Ok(Some(Ok(event))) => return event,
        }
    }
}

/// Expect a watch from `after` to be refused as compacted, from the call or as its first item.
async fn expect_watch_compacted(store: &dyn Store, prefix: &str, after: Revision, point: Revision) {
    let error = match store.watch(prefix, after).await {
        Err(e) => e,
        Ok(mut watch) => match tokio::time::timeout(PATIENCE, watch.next()).await {
            Ok(Some(Err(e))) => e,
            other => panic!("watch after {after} (compacted at {point}) gave {other:?}"),
        },
    };
    match error {
        StoreError::Compacted { compacted, .. } => {
            assert!(
                compacted >= point,
                "compaction point {compacted} reported, {point} expected"
            )
        }
        other => {
            panic!("watch after {after} (compacted at {point}): expected Compacted, got {other:?}")
        }
    }
}

/// create, get, AlreadyExists.
pub async fn check_create_get(store: &dyn Store) {
    let s = scope("create_get");
    let key = format!("{s}a");
    let before = store.current_revision().await.unwrap();
    let created = store.create(&key, bytes("one")).await.unwrap();
    assert_eq!(created.key, key);
    assert_eq!(created.value, bytes("one"));
    assert!(
        created.mod_revision > before,
        "revision {} after {before}",
        created.mod_revision
    );
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(store.get(&key).await.unwrap(), Some(created.clone()));
    assert!(store.current_revision().await.unwrap() >= created.mod_revision);
    assert_eq!(store.get(&format!("{s}missing")).await.unwrap(), None);

    match store.create(&key, bytes("two")).await {
        Err(StoreError::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => panic!("second create: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(created),
        "a failed create changed the key"
    );
}

/// update with the right revision, Conflict with the actual one, NotFound.
pub async fn check_update(store: &dyn Store) {
    let s = scope("update");
    let key = format!("{s}a");
    let v1 = store.create(&key, bytes("v1")).await.unwrap();
    let v2 = store
        .update(&key, bytes("v2"), v1.mod_revision)
        .await
        .unwrap();
    assert_eq!(v2.key, key);
    assert_eq!(v2.value, bytes("v2"));
    assert_eq!(v2.create_revision, v1.create_revision);
    assert!(v2.mod_revision > v1.mod_revision);
    assert_eq!(store.get(&key).await.unwrap(), Some(v2.clone()));

    match store.update(&key, bytes("stale"), v1.mod_revision).await {
        Err(StoreError::Conflict {
            key: k,
            expected,
            actual,
        }) => {
            assert_eq!(
                (k.as_str(), expected, actual),
                (key.as_str(), v1.mod_revision, v2.mod_revision)
            );
        }
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.get(&key).await.unwrap(),
        Some(v2.clone()),
        "a failed update changed the key"
    );

    let missing = format!("{s}missing");
    for expected in [0, v2.mod_revision] {
        match store.update(&missing, bytes("x"), expected).await {
            Err(StoreError::NotFound { key: k }) => assert_eq!(k, missing),
            other => panic!("update of a missing key (expected {expected}): got {other:?}"),
        }
    }
    assert_eq!(
        store.get(&missing).await.unwrap(),
        None,
        "an update created a key"
    );
}

/// delete with and without a precondition, returning the last value.
pub async fn check_delete(store: &dyn Store) {
    let s = scope("delete");
    let key = format!("{s}a");
    let v1 = store.create(&key, bytes("v1")).await.unwrap();
    let v2 = store
        .update(&key, bytes("v2"), v1.mod_revision)
        .await
        .unwrap();

    match store
        .delete(&key, Precondition::ModRevision(v1.mod_revision))
        .await
    {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (v1.mod_revision, v2.mod_revision))
        }
        other => panic!("delete with a stale precondition: expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get(&key).await.unwrap(), Some(v2.clone()));

    let (prev, revision) = store
        .delete(&key, Precondition::ModRevision(v2.mod_revision))
        .await
        .unwrap();
    assert_eq!(prev, v2);
    assert!(revision > v2.mod_revision);
    assert_eq!(store.get(&key).await.unwrap(), None);
    match store.delete(&key, Precondition::None).await {
        Err(StoreError::NotFound { key: k }) => assert_eq!(k, key),
        other => panic!("delete of a deleted key: expected NotFound, got {other:?}"),
    }
    match store
        .delete(&key, Precondition::ModRevision(v2.mod_revision))
        .await
    {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("conditional delete of a deleted key: expected NotFound, got {other:?}"),
    }

    // Born again: a new object with a new create revision.
    let again = store.create(&key, bytes("v3")).await.unwrap();
    assert!(again.create_revision > revision);
    let (prev, revision2) = store.delete(&key, Precondition::None).await.unwrap();
    assert_eq!(prev, again);
    assert!(revision2 > again.mod_revision);
}

/// One global revision, increasing across keys.
pub async fn check_revisions_are_global(store: &dyn Store) {
    let s = scope("revisions");
    let mut last = store.current_revision().await.unwrap();
    let mut kvs = Vec::new();
    for i in 0..10 {
        let kv = store.create(&format!("{s}k{i}"), bytes("x")).await.unwrap();
        assert!(
            kv.mod_revision > last,
            "revision {} after {last}",
            kv.mod_revision
        );
        last = kv.mod_revision;
        kvs.push(kv);
    }
    for kv in &kvs {
        let updated = store
            .update(&kv.key, bytes("y"), kv.mod_revision)
            .await
            .unwrap();
        assert!(updated.mod_revision > last);
        last = updated.mod_revision;
    }
    let (_, deleted) = store.delete(&kvs[0].key, Precondition::None).await.unwrap();
    assert!(deleted > last);
    assert!(store.current_revision().await.unwrap() >= deleted);
}

/// Ascending keys, pages with start_after/limit/more, neighbours of the prefix excluded.
pub async fn check_list_paging(store: &dyn Store) {
    let s = scope("list_paging");
    let prefix = format!("{s}items/");
    let empty = store.list(&prefix, ListOptions::default()).await.unwrap();
    assert!(empty.items.is_empty() && !empty.more, "{empty:?}");

    // Created out of order; neighbours that share the string prefix without the slash.
    let mut want = Vec::new();
    for i in (0..25).rev() {
        want.push(
            store
                .create(&format!("{prefix}{i:02}"), bytes(&format!("value {i}")))
                .await
                .unwrap(),
        );
    }
    store
        .create(&format!("{s}items"), bytes("n"))
        .await
        .unwrap();
    store
        .create(&format!("{s}itemsx/0"), bytes("n"))
        .await
        .unwrap();
    store
        .create(&format!("{s}other/0"), bytes("n"))
        .await
        .unwrap();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    let last_write = store.current_revision().await.unwrap();

    let all = store.list(&prefix, ListOptions::default()).await.unwrap();
    assert_eq!(all.items, want);
    assert!(!all.more);
    assert!(all.revision >= last_write);

    let mut pages = Vec::new();
    let mut start_after = None;
    loop {
        let page = store
            .list(
                &prefix,
                ListOptions {
                    start_after: start_after.clone(),
                    limit: 10,
                    at: Some(all.revision),
                },
            )
            .await
            .unwrap();
        assert_eq!(page.revision, all.revision);
        assert!(page.items.len() <= 10);
        start_after = page.items.last().map(|kv| kv.key.clone());
        let more = page.more;
        pages.push(page);
        if !more {
            break;
        }
        assert!(pages.len() < 10, "paging does not end");
    }
    assert_eq!(
        pages.iter().map(|p| p.items.len()).collect::<Vec<_>>(),
        [10, 10, 5]
    );
    let paged: Vec<KeyValue> = pages.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(paged, want);

    // A limit equal to what is left: no more.
    let exact = store
        .list(
            &prefix,
            ListOptions {
                start_after: Some(want[19].key.clone()),
                limit: 5,
                at: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(exact.items, want[20..]);
    assert!(!exact.more, "a page that ends with the last key says more");
    // start_after before the prefix starts at the prefix.
    let from_start = store
        .list(
            &prefix,
            ListOptions {
                start_after: Some(s.clone()),
                limit: 2,
                at: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(from_start.items, want[..2]);
    assert!(from_start.more);
}

/// A list at an older revision sees that revision's state.
pub async fn check_list_at_revision(store: &dyn Store) {
    let s = scope("list_at");
    let a = store.create(&format!("{s}a"), bytes("a1")).await.unwrap();
    let b = store.create(&format!("{s}b"), bytes("b1")).await.unwrap();
    let c = store.create(&format!("{s}c"), bytes("c1")).await.unwrap();
    let then = store.current_revision().await.unwrap();
    store.delete(&a.key, Precondition::None).await.unwrap();
    let b2 = store
        .update(&b.key, bytes("b2"), b.mod_revision)
        .await
        .unwrap();
    let d = store.create(&format!("{s}d"), bytes("d1")).await.unwrap();
    store
        .create(&format!("{s}0-new-first"), bytes("x"))
        .await
        .unwrap();
    let (_, gone) = store
        .delete(&format!("{s}0-new-first"), Precondition::None)
        .await
        .unwrap();
    let c2 = store
        .update(&c.key, bytes("c2"), c.mod_revision)
        .await
        .unwrap();

    let old = store
        .list(
            &s,
            ListOptions {
                at: Some(then),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(old.revision, then);
    assert_eq!(
        old.items,
        vec![a.clone(), b.clone(), c.clone()],
        "state at revision {then}"
    );
    assert!(!old.more);

    let now = store.list(&s, ListOptions::default()).await.unwrap();
    assert_eq!(now.items, vec![b2.clone(), c2.clone(), d.clone()]);

    // In between: after the delete of the new key, before the update of c.
    let between = store
        .list(
            &s,
            ListOptions {
                at: Some(gone),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(between.items, vec![b2.clone(), c.clone(), d.clone()]);

    // Paging at the old revision.
    let first = store
        .list(
            &s,
            ListOptions {
                limit: 2,
                at: Some(then),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items, vec![a.clone(), b.clone()]);
    assert!(first.more);
    let second = store
        .list(
            &s,
            ListOptions {
                start_after: Some(b.key.clone()),
                limit: 2,
                at: Some(then),
            },
        )
        .await
        .unwrap();
    assert_eq!(second.items, vec![c.clone()]);
    assert!(!second.more);

    let current = store.current_revision().await.unwrap();
    match store
        .list(
            &s,
            ListOptions {
                at: Some(current + 1000),
                ..ListOptions::default()
            },
        )
        .await
    {
        Err(StoreError::FutureRevision {
            requested,
            current: reported,
        }) => {
            assert_eq!(requested, current + 1000);
            assert!(reported >= current);
        }
        other => panic!("list at a future revision: expected FutureRevision, got {other:?}"),
    }
}

/// count under a prefix.
pub async fn check_count(store: &dyn Store) {
    let s = scope("count");
    assert_eq!(store.count(&format!("{s}x/")).await.unwrap(), 0);
    for i in 0..7 {
        store
            .create(&format!("{s}x/{i}"), bytes("v"))
            .await
            .unwrap();
    }
    store.create(&format!("{s}xy/0"), bytes("v")).await.unwrap();
    store.create(&format!("{s}y/0"), bytes("v")).await.unwrap();
    assert_eq!(store.count(&format!("{s}x/")).await.unwrap(), 7);
    assert_eq!(store.count(&s).await.unwrap(), 9);
    store
        .delete(&format!("{s}x/3"), Precondition::None)
        .await
        .unwrap();
    assert_eq!(store.count(&format!("{s}x/")).await.unwrap(), 6);
}

/// A watch replays history after a revision, then follows live writes, with previous values.
pub async fn check_watch_replay_then_live(store: &dyn Store) {
    let s = scope("watch_replay");
    let start = store.current_revision().await.unwrap();
    let a1 = store.create(&format!("{s}a"), bytes("a1")).await.unwrap();
    let a2 = store
        .update(&a1.key, bytes("a2"), a1.mod_revision)
        .await
        .unwrap();
    let b1 = store.create(&format!("{s}b"), bytes("b1")).await.unwrap();
    let (b_prev, b_deleted) = store.delete(&b1.key, Precondition::None).await.unwrap();

    let mut watch = store.watch(&s, start).await.unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: a1.clone(),
            prev: None
        }
    );
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: a2.clone(),
            prev: Some(a1.clone())
        }
    );
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: b1.clone(),
            prev: None
        }
    );
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Delete {
            prev: b_prev,
            revision: b_deleted
        }
    );

    let c1 = store.create(&format!("{s}c"), bytes("c1")).await.unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: c1.clone(),
            prev: None
        }
    );
    let (a_prev, a_deleted) = store
        .delete(&a2.key, Precondition::ModRevision(a2.mod_revision))
        .await
        .unwrap();
    let delete = next_change(&mut watch).await;
    assert_eq!(
        delete,
        WatchEvent::Delete {
            prev: a_prev,
            revision: a_deleted
        }
    );
    assert_eq!(delete.revision(), a_deleted);

    // From the middle of the history: only what came after.
    let mut late = store.watch(&s, a2.mod_revision).await.unwrap();
    assert_eq!(next_change(&mut late).await.revision(), b1.mod_revision);

    // From now: only new writes.
    let now = store.current_revision().await.unwrap();
    let mut fresh = store.watch(&s, now).await.unwrap();
    let d1 = store.create(&format!("{s}d"), bytes("d1")).await.unwrap();
    assert_eq!(
        next_change(&mut fresh).await,
        WatchEvent::Put { kv: d1, prev: None }
    );
}

/// A watch on a prefix sees nothing of other prefixes, even ones sharing its first characters.
pub async fn check_watch_prefix_isolation(store: &dyn Store) {
    let s = scope("watch_prefix");
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch(&format!("{s}a/"), start).await.unwrap();
    store.create(&format!("{s}b/x"), bytes("no")).await.unwrap();
    store.create(&format!("{s}ab"), bytes("no")).await.unwrap();
    store.create(&format!("{s}a"), bytes("no")).await.unwrap();
    store
        .create(&format!("{s}ab/x"), bytes("no"))
        .await
        .unwrap();
    let mine = store
        .create(&format!("{s}a/x"), bytes("yes"))
        .await
        .unwrap();
    store.create(&format!("{s}b/y"), bytes("no")).await.unwrap();
    let mine2 = store
        .create(&format!("{s}a/y"), bytes("yes"))
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: mine,
            prev: None
        }
    );
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: mine2,
            prev: None
        }
    );
}

/// Concurrent writers while a watch switches from replay to live: every event exactly once, in
/// revision order, with the right previous values.
pub async fn check_watch_concurrent_writers(store: &dyn Store) {
    const WRITERS: usize = 4;
    const KEYS: usize = 25;
    let s = scope("watch_concurrent");
    let start = store.current_revision().await.unwrap();

    let writers = futures::future::join_all((0..WRITERS).map(|w| {
        let s = s.clone();
        async move {
            let mut expected = Vec::new();
            for i in 0..KEYS {
                let key = format!("{s}w{w}/{i:03}");
                let v1 = store
                    .create(&key, bytes(&format!("{w}-{i}-1")))
                    .await
                    .unwrap();
                expected.push(WatchEvent::Put {
                    kv: v1.clone(),
                    prev: None,
                });
                let v2 = store
                    .update(&key, bytes(&format!("{w}-{i}-2")), v1.mod_revision)
                    .await
                    .unwrap();
                expected.push(WatchEvent::Put {
                    kv: v2.clone(),
                    prev: Some(v1),
                });
                let (prev, revision) = store.delete(&key, Precondition::None).await.unwrap();
                expected.push(WatchEvent::Delete { prev, revision });
            }
            expected
        }
    }));
    let total = WRITERS * KEYS * 3;
    let watcher = async {
        // Start watching from before the writes once some have happened, so that the watch
        // replays history while the writers go on.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while store.current_revision().await.unwrap() < start + (total as Revision) / 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "writers made no progress"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut watch = store.watch(&s, start).await.unwrap();
        let mut seen = Vec::with_capacity(total);
        while seen.len() < total {
            seen.push(next_change(&mut watch).await);
        }
        seen
    };
    let (expected, seen) = tokio::join!(writers, watcher);
    let mut expected: Vec<WatchEvent> = expected.into_iter().flatten().collect();
    expected.sort_by_key(WatchEvent::revision);
    let revisions: Vec<Revision> = seen.iter().map(WatchEvent::revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions not strictly increasing: {revisions:?}"
    );
    assert_eq!(seen.len(), expected.len());
    for (got, want) in seen.iter().zip(&expected) {
        assert_eq!(got, want);
    }
}

/// An idle watcher hears about the store's progress (for bookmarks), also from writes to other
/// prefixes, and never with a revision below one it was already sent.
pub async fn check_watch_progress(store: &dyn Store) {
    let s = scope("watch_progress");
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch(&format!("{s}quiet/"), start).await.unwrap();
    let elsewhere = store
        .create(&format!("{s}busy/x"), bytes("x"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Err(_) => panic!(
                "no progress notice reaching revision {} within {PATIENCE:?}",
                elsewhere.mod_revision
            ),
            Ok(Some(Ok(WatchEvent::Progress { revision }))) => {
                assert!(
                    revision >= start,
                    "progress {revision} is older than the watch start {start}"
                );
                if revision >= elsewhere.mod_revision {
                    break;
                }
            }
            Ok(other) => panic!("an idle watch gave {other:?}"),
        }
    }
}

/// Values of 1.5 MiB are stored, listed and watched whole.
pub async fn check_large_values(store: &dyn Store) {
    const SIZE: usize = 1536 * 1024;
    let s = scope("large");
    let pattern = |seed: u8| {
        Bytes::from(
            (0..SIZE)
                .map(|i| (i % 251) as u8 ^ seed)
                .collect::<Vec<u8>>(),
        )
    };
    let start = store.current_revision().await.unwrap();
    let key = format!("{s}big");
    let v1 = store.create(&key, pattern(1)).await.unwrap();
    let v2 = store
        .update(&key, pattern(2), v1.mod_revision)
        .await
        .unwrap();
    let got = store.get(&key).await.unwrap().expect("the large value");
    assert_eq!(got.value.len(), SIZE);
    assert!(got.value == pattern(2), "the large value came back changed");
    let listed = store.list(&s, ListOptions::default()).await.unwrap();
    assert_eq!(listed.items, vec![v2.clone()]);
    let old = store
        .list(
            &s,
            ListOptions {
                at: Some(v1.mod_revision),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(old.items, vec![v1.clone()]);
    let mut watch = store.watch(&s, start).await.unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: v1.clone(),
            prev: None
        }
    );
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: v2.clone(),
            prev: Some(v1)
        }
    );
}

/// 8 tasks x 100 writes at once: all acknowledged, all visible, each with its own revision.
pub async fn check_many_concurrent_writers(store: &dyn Store) {
    const TASKS: usize = 8;
    const WRITES: usize = 100;
    let s = scope("concurrent");
    let results = futures::future::join_all((0..TASKS).map(|t| {
        let s = s.clone();
        async move {
            let mut kvs = Vec::with_capacity(WRITES);
            for i in 0..WRITES {
                kvs.push(
                    store
                        .create(&format!("{s}t{t}/{i:03}"), bytes(&format!("{t}/{i}")))
                        .await
                        .unwrap(),
                );
            }
            kvs
        }
    }))
    .await;
    let mut written: Vec<KeyValue> = results.into_iter().flatten().collect();
    let revisions: HashSet<Revision> = written.iter().map(|kv| kv.mod_revision).collect();
    assert_eq!(
        revisions.len(),
        TASKS * WRITES,
        "two writes share a revision"
    );
    written.sort_by(|a, b| a.key.cmp(&b.key));
    let listed = store.list(&s, ListOptions::default()).await.unwrap();
    assert_eq!(listed.items, written);
    assert_eq!(store.count(&s).await.unwrap(), (TASKS * WRITES) as u64);
}

/// After compact(R): the compaction point is R, watches from R on and lists at R on work, older
/// ones are Compacted. Compacts the whole store.
pub async fn check_compaction(store: &dyn Store) {
    let s = scope("compaction");
    let key = format!("{s}a");
    let v1 = store.create(&key, bytes("v1")).await.unwrap();
    let v2 = store
        .update(&key, bytes("v2"), v1.mod_revision)
        .await
        .unwrap();
    let v3 = store
        .update(&key, bytes("v3"), v2.mod_revision)
        .await
        .unwrap();
    let point = v2.mod_revision;

    store.compact(point).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), point);

    // From the compaction point on, history is there.
    let mut watch = store.watch(&s, point).await.unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: v3.clone(),
            prev: Some(v2.clone())
        }
    );
    let at_point = store
        .list(
            &s,
            ListOptions {
                at: Some(point),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(at_point.items, vec![v2.clone()]);

    // Before it, not.
    expect_watch_compacted(store, &s, point - 1, point).await;
    expect_watch_compacted(store, &s, 0, point).await;
    match store
        .list(
            &s,
            ListOptions {
                at: Some(point - 1),
                ..ListOptions::default()
            },
        )
        .await
    {
        Err(StoreError::Compacted { compacted, .. }) => assert!(compacted >= point),
        other => panic!("list before the compaction point: expected Compacted, got {other:?}"),
    }

    // Compacting again, or at an older revision, changes nothing.
    store.compact(point).await.unwrap();
    store.compact(v1.mod_revision).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), point);

    let current = store.current_revision().await.unwrap();
    match store.compact(current + 1000).await {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, current + 1000),
        other => panic!("compaction at a future revision: expected FutureRevision, got {other:?}"),
    }

    // Live events still flow to the watch opened at the compaction point.
    let v4 = store
        .update(&key, bytes("v4"), v3.mod_revision)
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Put {
            kv: v4,
            prev: Some(v3)
        }
    );

    // Compact at the current revision: a watch from there still works.
    let now = store.current_revision().await.unwrap();
    store.compact(now).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), now);
    let mut fresh = store.watch(&s, now).await.unwrap();
    let (prev, deleted) = store.delete(&key, Precondition::None).await.unwrap();
    assert_eq!(
        next_change(&mut fresh).await,
        WatchEvent::Delete {
            prev,
            revision: deleted
        }
    );
}
