//! The conformance suite, the durability test and the failure behaviour on a real etcd
//! (Debian's `etcd-server`, started on 127.0.0.1 by `ferrovirt_store::testing`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrovirt_store::etcd_store::{EtcdOptions, EtcdStore};
use ferrovirt_store::testing::{EtcdCluster, EtcdProcess};
use ferrovirt_store::{conformance, ListOptions, Precondition, Store, StoreError, WatchEvent};
use futures::StreamExt;

fn start_etcd() -> EtcdProcess {
    EtcdProcess::start().unwrap_or_else(|e| panic!("cannot start etcd for this test: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let etcd = start_etcd();
    let endpoints = etcd.endpoints();
    conformance::run_all(|| async { EtcdStore::connect(&endpoints, "/ferrovirt").await.unwrap() })
        .await;
}

#[tokio::test]
async fn store_bookkeeping_stays_out_of_sight_with_an_empty_prefix() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(&etcd.endpoints(), "").await.unwrap();
    let a = store.create("/a", Bytes::from_static(b"1")).await.unwrap();
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("", start).await.unwrap();
    store.compact(a.mod_revision).await.unwrap();
    let b = store.create("/b", Bytes::from_static(b"2")).await.unwrap();

    let all = store.list("", ListOptions::default()).await.unwrap();
    assert_eq!(all.items, vec![a.clone(), b.clone()]);
    let page = store
        .list(
            "",
            ListOptions {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((page.items, page.more), (vec![a.clone()], true));
    let page = store
        .list(
            "",
            ListOptions {
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((page.items, page.more), (vec![a.clone(), b.clone()], false));
    assert_eq!(store.count("").await.unwrap(), 2);
    // The compaction record was written between the watch start and /b: the watch skips it.
    loop {
        match watch.next().await.unwrap().unwrap() {
            WatchEvent::Progress { .. } => continue,
            event => {
                assert_eq!(event, WatchEvent::Put { kv: b, prev: None });
                break;
            }
        }
    }
    // A second store on the same etcd learns the compaction point.
    let other = EtcdStore::connect(&etcd.endpoints(), "").await.unwrap();
    assert_eq!(other.compacted_revision().await.unwrap(), a.mod_revision);
}

#[tokio::test]
async fn stores_with_different_prefixes_do_not_see_each_other() {
    let etcd = start_etcd();
    let one = EtcdStore::connect(&etcd.endpoints(), "/one").await.unwrap();
    let two = EtcdStore::connect(&etcd.endpoints(), "/two").await.unwrap();
    one.create("/registry/x", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(two.get("/registry/x").await.unwrap(), None);
    assert_eq!(two.count("").await.unwrap(), 0);
    assert_eq!(one.count("").await.unwrap(), 1);
}

/// The writer child: runs only when the parent test sets the environment variable.
#[test]
fn durability_child() {
    let Ok(endpoint) = std::env::var(common::CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(EtcdStore::connect(&[endpoint], "/ferrovirt").await.unwrap());
        common::write_until_killed(store, "/durable/").await;
    });
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_of_the_writer_and_of_etcd() {
    let mut etcd = start_etcd();
    let mut writer = common::Writer::spawn("durability_child", &etcd.endpoint());
    writer.wait_for_acks(300);
    // Kill etcd under load first, then the writer: acknowledged means on etcd's disk.
    etcd.kill();
    let acked = writer.kill();
    eprintln!("{} writes acknowledged before kill -9", acked.len());
    etcd.restart().expect("restart etcd on its data");
    let store = EtcdStore::connect(&etcd.endpoints(), "/ferrovirt")
        .await
        .unwrap();
    common::check_acked(&store, &acked).await;
}

/// How long a request may take to fail when etcd cannot answer: the request timeout plus slack.
const FAIL_WITHIN: Duration = Duration::from_secs(8);

async fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    request: impl std::future::Future<Output = ferrovirt_store::Result<T>>,
) {
    let started = Instant::now();
    let result = tokio::time::timeout(FAIL_WITHIN * 2, request).await;
    let elapsed = started.elapsed();
    match result {
        Ok(Err(StoreError::Unavailable(message))) => {
            eprintln!("{what}: Unavailable after {elapsed:?}: {message}");
            assert!(elapsed < FAIL_WITHIN, "{what} took {elapsed:?} to fail");
        }
        other => panic!("{what}: expected Unavailable, got {other:?} after {elapsed:?}"),
    }
}

#[tokio::test]
async fn requests_fail_fast_as_unavailable_when_etcd_is_gone() {
    let mut etcd = start_etcd();
    let store = EtcdStore::connect(&etcd.endpoints(), "/ferrovirt")
        .await
        .unwrap();
    let kv = store.create("/a", Bytes::from_static(b"1")).await.unwrap();
    let mut watch = store.watch("/", kv.mod_revision).await.unwrap();
    etcd.kill();

    expect_unavailable("get", store.get("/a")).await;
    expect_unavailable("create", store.create("/b", Bytes::from_static(b"2"))).await;
    expect_unavailable("delete", store.delete("/a", Precondition::None)).await;
    // The open watch ends with an error item.
    let item = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Progress { .. })) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch noticed nothing within 30s");
    assert!(
        matches!(item, Some(Err(StoreError::Unavailable(_)))),
        "watch gave {item:?}"
    );

    // Nobody listening at all: connecting says so.
    let port = etcd.endpoint();
    let started = Instant::now();
    match EtcdStore::connect(&[port], "").await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("cannot reach etcd"), "{message}")
        }
        Err(other) => panic!("connect to a dead etcd: got {other:?}"),
        Ok(_) => panic!("connected to a dead etcd"),
    }
    assert!(started.elapsed() < FAIL_WITHIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_fast_as_unavailable_when_etcd_loses_quorum() {
    let mut cluster =
        EtcdCluster::start(3).unwrap_or_else(|e| panic!("cannot start an etcd cluster: {e}"));
    let options = EtcdOptions {
        request_timeout: Duration::from_secs(3),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect_with(&cluster.endpoints(), "/ferrovirt", options)
        .await
        .unwrap();
    let kv = store.create("/a", Bytes::from_static(b"1")).await.unwrap();

    cluster.members()[1].kill();
    cluster.members()[2].kill();
    expect_unavailable(
        "create without quorum",
        store.create("/b", Bytes::from_static(b"2")),
    )
    .await;
    expect_unavailable("get without quorum", store.get("/a")).await;
    expect_unavailable(
        "update without quorum",
        store.update("/a", Bytes::from_static(b"3"), kv.mod_revision),
    )
    .await;

    // Quorum back: the same store serves again.
    cluster.members()[1].restart().expect("restart a member");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.get("/a").await {
            Ok(found) => {
                assert_eq!(found, Some(kv));
                break;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no recovery after quorum came back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
