//! The conformance suite, the durability test and the failure behaviour on a real etcd
//! (Debian's `etcd-server`, started on 127.0.0.1 by `ferrovirt_store::testing`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrovirt_store::etcd_store::EtcdStore;
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

/// The message every request gives while etcd has no quorum names the problem and every endpoint.
fn assert_names_the_cluster(message: &str, cluster: &EtcdCluster) {
    assert!(
        message.starts_with(&format!(
            "etcd has no quorum or cannot be reached ({}): ",
            cluster.endpoints().join(", ")
        )),
        "{message}"
    );
}

/// Events of a watch, read by a task, with the time each arrived.
fn collect_watch(
    mut watch: ferrovirt_store::WatchStream,
) -> tokio::sync::mpsc::UnboundedReceiver<(Instant, ferrovirt_store::Result<WatchEvent>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = watch.next().await {
            if tx.send((Instant::now(), item)).is_err() {
                return;
            }
        }
    });
    rx
}

/// The keys of the Put events received so far, skipping progress notifications; panics on an
/// error item.
fn puts_so_far(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, ferrovirt_store::Result<WatchEvent>)>,
    into: &mut Vec<(String, i64)>,
) {
    while let Ok((_, item)) = rx.try_recv() {
        match item {
            Ok(WatchEvent::Put { kv, .. }) => into.push((kv.key, kv.mod_revision)),
            Ok(WatchEvent::Progress { .. }) => {}
            other => panic!("unexpected watch item {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_outlives_its_leader_and_refuses_clearly_without_quorum() {
    let mut cluster =
        EtcdCluster::start(3).unwrap_or_else(|e| panic!("cannot start an etcd cluster: {e}"));
    let store = EtcdStore::connect(&cluster.endpoints(), "/ferrovirt")
        .await
        .unwrap();
    let first = store.create("/a", Bytes::from_static(b"1")).await.unwrap();
    // Written to while there is no quorum: whether those writes happen is not known.
    let victim = store
        .create("/victim", Bytes::from_static(b"1"))
        .await
        .unwrap();
    let mut watch = collect_watch(
        store
            .watch("/one-dead/", victim.mod_revision)
            .await
            .unwrap(),
    );

    // The leader dies: the others elect a new one; reads never fail, and of writes only one sent
    // while the followers still forwarded to the dead leader may end with an unknown outcome.
    let leader = cluster.wait_for_leader().unwrap();
    cluster.members()[leader].kill();
    let killed_at = Instant::now();
    let mut written = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..30 {
        let key = format!("/one-dead/{i:02}");
        let started = Instant::now();
        match store.create(&key, Bytes::from_static(b"x")).await {
            Ok(kv) => written.push((kv.key, kv.mod_revision)),
            Err(StoreError::OutcomeUnknown(message)) => {
                eprintln!(
                    "{key}: outcome unknown after {:?}: {message}",
                    started.elapsed()
                );
                unknown.push(key);
            }
            Err(e) => panic!("{key} failed with one member dead: {e}"),
        }
        assert_eq!(store.get("/a").await.unwrap(), Some(first.clone()));
    }
    eprintln!(
        "one member dead: {} writes in {:?}, {} with unknown outcome",
        written.len(),
        killed_at.elapsed(),
        unknown.len()
    );
    assert!(
        unknown.len() <= 1,
        "too many writes lost their answer: {unknown:?}"
    );
    // The watch opened before carries on, from another member if it must: every write, in order.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        puts_so_far(&mut watch, &mut seen);
        let acked: Vec<_> = seen
            .iter()
            .filter(|(k, _)| !unknown.contains(k))
            .cloned()
            .collect();
        if acked == written {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watch saw {seen:?}, wrote {written:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A second member dies: no quorum. Every request fails as Unavailable, naming the cluster;
    // the first within the request timeout, later ones within the shorter budget.
    let second = (0..3).find(|&i| cluster.members()[i].is_running()).unwrap();
    cluster.members()[second].kill();
    let lost_at = Instant::now();
    let mut first_refusal = None;
    for round in 0..3 {
        let mut results = Vec::new();
        macro_rules! timed {
            ($what:expr, $request:expr) => {{
                let started = Instant::now();
                let result = $request.await.map(|_| ());
                results.push(($what, started.elapsed(), lost_at.elapsed(), result));
            }};
        }
        timed!("get", store.get("/a"));
        timed!("list", store.list("/", ListOptions::default()));
        timed!(
            "create",
            store.create(&format!("/no-quorum/{round}"), Bytes::from_static(b"y"))
        );
        timed!(
            "update",
            store.update("/victim", Bytes::from_static(b"2"), victim.mod_revision)
        );
        timed!("delete", store.delete("/victim", Precondition::None));
        timed!("watch", store.watch("/", first.mod_revision));
        timed!("current revision", store.current_revision());
        for (what, took, since_loss, result) in results {
            eprintln!(
                "round {round}: {what} answered in {took:?}, {since_loss:?} after quorum was lost"
            );
            match result {
                Err(StoreError::Unavailable(message)) => {
                    first_refusal.get_or_insert(since_loss);
                    assert_names_the_cluster(&message, &cluster);
                    if round == 2 {
                        eprintln!("  {}", StoreError::Unavailable(message));
                    }
                }
                // A write in flight while quorum went may have made it into the log.
                Err(StoreError::OutcomeUnknown(message)) if round == 0 && what != "get" => {
                    let named = format!(
                        "etcd did not confirm it ({}): ",
                        cluster.endpoints().join(", ")
                    );
                    assert!(message.starts_with(&named), "{message}");
                }
                other => panic!("{what} without quorum (round {round}): {other:?}"),
            }
            assert!(took < FAIL_WITHIN, "{what} took {took:?}");
            if round > 0 {
                assert!(
                    took < Duration::from_millis(1500),
                    "{what} took {took:?} while the store is down"
                );
            }
        }
    }
    eprintln!(
        "first Unavailable {:?} after quorum was lost",
        first_refusal.unwrap()
    );
    assert!(first_refusal.unwrap() < FAIL_WITHIN);
    assert!(store.is_down());
    // The open watch is cut off (etcd cancels watches of a member without a leader) and ends
    // with Unavailable; nothing else came through it.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.recv().await {
                Some((at, Err(StoreError::Unavailable(message)))) => return (at, message),
                Some((_, Ok(WatchEvent::Progress { .. }))) => continue,
                // Late news of a write whose outcome was unknown.
                Some((_, Ok(WatchEvent::Put { kv, .. }))) if unknown.contains(&kv.key) => continue,
                other => panic!("watch without quorum gave {other:?}"),
            }
        }
    })
    .await
    .expect("the watch did not end within 30s of losing quorum");
    eprintln!(
        "watch ended {:?} after quorum was lost: {}",
        ended.0 - lost_at,
        ended.1
    );
    assert!(
        ended.1.contains("etcd has no quorum or cannot be reached"),
        "{}",
        ended.1
    );

    // Both come back: the same store serves again within seconds, with everything acknowledged.
    let back_at = Instant::now();
    for i in 0..3 {
        cluster.members()[i].start_again().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        match store.get("/a").await {
            Ok(found) => break found,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no recovery after quorum came back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    eprintln!(
        "serving again {:?} after the members were started",
        back_at.elapsed()
    );
    assert_eq!(found, Some(first.clone()));
    assert!(!store.is_down());
    for (key, revision) in &written {
        let kv = store
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(kv.mod_revision, *revision);
    }
    // Watching again from the last revision seen misses nothing written after.
    let last = seen.last().map(|s| s.1).unwrap_or(first.mod_revision);
    let mut again = collect_watch(store.watch("/one-dead/", last).await.unwrap());
    let after = store
        .create("/one-dead/after", Bytes::from_static(b"z"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match again.recv().await {
                Some((_, Ok(WatchEvent::Put { kv, .. }))) if kv.key == after.key => return kv,
                Some((_, Ok(WatchEvent::Put { kv, .. }))) => {
                    assert!(
                        unknown.contains(&kv.key) && kv.mod_revision > last,
                        "{kv:?} again"
                    )
                }
                Some((_, Ok(WatchEvent::Progress { .. }))) => continue,
                other => panic!("watch after recovery gave {other:?}"),
            }
        }
    })
    .await
    .expect("no event after recovery");
    assert_eq!(got, after);
}
