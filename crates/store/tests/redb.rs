//! The conformance suite and the durability test on the embedded redb store.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ferrovirt_store::redb_store::RedbStore;
use ferrovirt_store::{conformance, ListOptions, Store, StoreError, WatchEvent};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    conformance::run_all(|| async {
        let i = n.fetch_add(1, Ordering::Relaxed);
        RedbStore::open(&dir.path().join(format!("store-{i}.redb"))).unwrap()
    })
    .await;
}

#[tokio::test]
async fn conformance_suite_on_one_shared_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("shared.redb")).unwrap();
    conformance::run_all(|| async { store.clone() }).await;
}

#[tokio::test]
async fn state_and_history_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let (a1, a2, point) = {
        let store = RedbStore::open(&path).unwrap();
        let a1 = store
            .create("/r/a", Bytes::from_static(b"1"))
            .await
            .unwrap();
        let a2 = store
            .update("/r/a", Bytes::from_static(b"2"), a1.mod_revision)
            .await
            .unwrap();
        store
            .create("/r/b", Bytes::from_static(b"b"))
            .await
            .unwrap();
        store.compact(a1.mod_revision).await.unwrap();
        let point = a1.mod_revision;
        (a1, a2, point)
    };
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.current_revision().await.unwrap(), 3);
    assert_eq!(store.compacted_revision().await.unwrap(), point);
    assert_eq!(store.get("/r/a").await.unwrap(), Some(a2.clone()));
    let old = store
        .list(
            "/r/",
            ListOptions {
                at: Some(point),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(old.items, vec![a1.clone()]);
    let mut watch = store.watch("/r/", point).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(
        first,
        WatchEvent::Put {
            kv: a2,
            prev: Some(a1)
        }
    );
    // Revisions go on from where they were.
    let c = store
        .create("/r/c", Bytes::from_static(b"c"))
        .await
        .unwrap();
    assert_eq!(c.mod_revision, 4);
}

/// The writer child: runs only when the parent test sets the environment variable.
#[test]
fn durability_child() {
    let Ok(path) = std::env::var(common::CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(std::path::Path::new(&path)).unwrap());
        common::write_until_killed(store, "/durable/").await;
    });
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("durable.redb");
    let mut writer = common::Writer::spawn("durability_child", path.to_str().unwrap());
    writer.wait_for_acks(1);

    // The child holds the database: a second process must be refused clearly.
    match RedbStore::open(&path) {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.contains("already open"),
                "unclear message: {message}"
            )
        }
        Err(other) => panic!("opening a database another process holds: got {other:?}"),
        Ok(_) => panic!("opened a database another live process holds"),
    }

    writer.wait_for_acks(400);
    let acked = writer.kill();
    eprintln!("{} writes acknowledged before kill -9", acked.len());

    let store = RedbStore::open(&path).unwrap();
    common::check_acked(&store, &acked).await;
    // Every stored key has its own revision and the log replays all of them.
    let count = store.count("/durable/").await.unwrap();
    assert!(count as usize >= acked.len());
    let mut watch = store.watch("/durable/", 0).await.unwrap();
    for _ in 0..count {
        match watch.next().await.unwrap().unwrap() {
            WatchEvent::Put { prev: None, .. } => {}
            other => panic!("unexpected replayed event {other:?}"),
        }
    }
}
