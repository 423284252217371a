//! One `ferrovirt apiserver` process on a three-member etcd cluster (Debian's etcd-server, on
//! 127.0.0.1) under a client load, while members die and come back:
//!
//! ```text
//!   healthy ──kill the leader──► 2 of 3: the load goes on (a blip while a new leader is elected)
//!           ──kill another────► 1 of 3: every request answers 503 "storage unavailable: etcd has no
//!                                quorum ..." within seconds; /readyz 503, /livez 200
//!           ──start both──────► 3 of 3: serving again within seconds; every acknowledged write is
//!                                there with its last acknowledged value; a watch opened at the
//!                                start sees everything, including what was written after
//! ```
//!
//! The load: a few tasks, each creating VirtualMachines through kube-rs and updating each a few
//! times (an annotation counts the updates), recording every acknowledged write and every
//! failure. A failed write is tried again until it is acknowledged (a create answered 409 is
//! checked to be the task's own, made by an attempt whose answer was lost), so at the end every
//! object's last acknowledged value is known exactly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

use ferrovirt_api::kubevirt::VirtualMachine;
use ferrovirt_e2e::{fixture, kubectl_1_20, ApiServerProcess, Kubectl};
use ferrovirt_store::testing::EtcdCluster;

/// Load tasks.
const TASKS: usize = 3;
/// Updates of each object after its create.
const UPDATES: u64 = 4;
/// The annotation each write sets: 0 on create, then 1..=UPDATES.
const SEQ: &str = "load.ferrovirt.io/seq";
/// How long the first request after quorum is lost may take to fail (the store's request budget
/// is 5 s), and how long later ones may take.
const FIRST_503_WITHIN: Duration = Duration::from_secs(8);
const LATER_503_WITHIN: Duration = Duration::from_secs(2);

/// One request of the load and how it ended.
#[derive(Debug, Clone)]
struct Attempt {
    task: usize,
    started: Instant,
    took: Duration,
    what: String,
    /// `None` if acknowledged; otherwise (HTTP code, reason, message).
    error: Option<(u16, String, String)>,
}

/// The last acknowledged state of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acked {
    uid: String,
    seq: u64,
}

#[derive(Default)]
struct Ledger {
    attempts: Mutex<Vec<Attempt>>,
    acked: Mutex<BTreeMap<String, Acked>>,
}

impl Ledger {
    /// The attempts that ended at or after `from` and started before `to`.
    fn attempts_between(&self, from: Instant, to: Instant) -> Vec<Attempt> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.started + a.took >= from && a.started < to)
            .cloned()
            .collect()
    }
}

fn vm(name: &str, task: usize) -> VirtualMachine {
    let text = std::fs::read_to_string(fixture("vm.yaml")).expect("fixture vm.yaml");
    let mut vm: VirtualMachine = serde_yaml_ng::from_str(&text).expect("fixture decodes");
    vm.metadata.name = Some(name.to_owned());
    vm.metadata.labels = Some(BTreeMap::from([("load-task".to_owned(), task.to_string())]));
    vm.metadata.annotations = Some(BTreeMap::from([(SEQ.to_owned(), "0".to_owned())]));
    vm
}

fn seq_of(vm: &VirtualMachine) -> Option<u64> {
    vm.metadata.annotations.as_ref()?.get(SEQ)?.parse().ok()
}

fn status_of(error: &kube::Error) -> (u16, String, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone(), status.message.clone()),
        other => (0, "client".into(), other.to_string()),
    }
}

/// One load task: objects `load-<task>-<n>`, each created then updated [`UPDATES`] times, every
/// write tried until acknowledged; stops between objects once `stop` is set.
async fn load(task: usize, vms: Api<VirtualMachine>, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        let name = format!("load-{task}-{n:04}");
        for seq in 0..=UPDATES {
            let what = if seq == 0 {
                format!("create {name}")
            } else {
                format!("update {name} to {seq}")
            };
            loop {
                let started = Instant::now();
                let result = if seq == 0 {
                    vms.create(&PostParams::default(), &vm(&name, task)).await
                } else {
                    let patch = json!({"metadata": {"annotations": {SEQ: seq.to_string()}}});
                    vms.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                };
                let result = match result {
                    // A create whose earlier attempt was made after all: it must be this task's,
                    // as that attempt wrote it (never a second object).
                    Err(kube::Error::Api(status)) if seq == 0 && status.code == 409 => {
                        match vms.get(&name).await {
                            Ok(found) if seq_of(&found) == Some(0) => Ok(found),
                            Ok(found) => {
                                panic!("{name} exists but is not this task's create: {found:?}")
                            }
                            Err(_) => Err(kube::Error::Api(status)),
                        }
                    }
                    other => other,
                };
                let took = started.elapsed();
                let error = result.as_ref().err().map(status_of);
                ledger.attempts.lock().unwrap().push(Attempt {
                    task,
                    started,
                    took,
                    what: what.clone(),
                    error,
                });
                match result {
                    Ok(written) => {
                        assert_eq!(seq_of(&written), Some(seq), "{what} answered {written:?}");
                        let uid = written.metadata.uid.clone().expect("uid");
                        let mut acked = ledger.acked.lock().unwrap();
                        if let Some(before) = acked.get(&name) {
                            assert_eq!(before.uid, uid, "{name} was replaced by another object");
                        }
                        acked.insert(name.clone(), Acked { uid, seq });
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n += 1;
    }
}

/// `/readyz` or `/livez`: (HTTP code, body).
async fn probe(client: &kube::Client, path: &str) -> (u16, String) {
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    match client.request_text(request).await {
        Ok(text) => (200, text),
        Err(kube::Error::Api(status)) => (status.code, status.message),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

fn assert_no_quorum_status(code: u16, reason: &str, message: &str, endpoints: &[String]) {
    let expected = format!(
        "storage unavailable: etcd has no quorum or cannot be reached ({}): ",
        endpoints.join(", ")
    );
    assert_eq!((code, reason), (503, "ServiceUnavailable"), "{message}");
    assert!(
        message.starts_with(&expected),
        "message {message:?} does not start with {expected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rides_out_one_dead_etcd_member_and_answers_503_without_quorum() {
    let mut cluster =
        EtcdCluster::start(3).expect("etcd must be installed (scripts/install-test-deps.sh)");
    let endpoints = cluster.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let server =
        ApiServerProcess::start(dir.path(), Some(endpoints.clone())).expect("API server on etcd");
    // kube-rs 5 retries 503 and 504 by default (up to 15 times, backing off to minutes): turn
    // that off to see each answer of the server as it is given.
    let mut config = server.kube_config().await.unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let kubectl = Kubectl::new(
        kubectl_1_20().expect("kubectl 1.20 (scripts/fetch-kubectl-1.20.sh)"),
        server.kubeconfig(),
    )
    .unwrap();

    // A kube-rs watcher and a `kubectl get -w`, both from before any failure.
    let watched: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let watch_errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let watch_task = {
        let (watched, watch_errors) = (watched.clone(), watch_errors.clone());
        let stream = watcher(vms.clone(), watcher::Config::default()).default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(vm) | watcher::Event::InitApply(vm)) => {
                        let name = vm.metadata.name.clone().unwrap_or_default();
                        watched
                            .lock()
                            .unwrap()
                            .insert(name, seq_of(&vm).unwrap_or(u64::MAX));
                    }
                    Ok(watcher::Event::Delete(vm)) => {
                        watched
                            .lock()
                            .unwrap()
                            .remove(vm.metadata.name.as_deref().unwrap_or_default());
                    }
                    Ok(_) => {}
                    Err(e) => watch_errors.lock().unwrap().push(e.to_string()),
                }
            }
        })
    };
    let mut kubectl_watch = kubectl.spawn(&["get", "vms", "-w"]);

    // The load, on a healthy cluster.
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| tokio::spawn(load(t, vms.clone(), ledger.clone(), stop.clone())))
        .collect();
    let healthy_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Phase 1: the leader dies.
    let leader = cluster.wait_for_leader().unwrap();
    let one_dead_at = Instant::now();
    cluster.members()[leader].kill();
    let healthy: Vec<Attempt> = ledger
        .attempts_between(healthy_from, one_dead_at)
        .into_iter()
        .filter(|a| a.started + a.took < one_dead_at)
        .collect();
    let failed: Vec<&Attempt> = healthy.iter().filter(|a| a.error.is_some()).collect();
    eprintln!(
        "healthy: {} requests, {} failed",
        healthy.len(),
        failed.len()
    );
    assert!(
        healthy.len() > 20,
        "the load is too slow to tell anything: {} requests in 3 s",
        healthy.len()
    );
    assert!(
        failed.is_empty(),
        "failures on a healthy cluster: {failed:?}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        probe(&client, "/readyz").await.0,
        200,
        "ready with 2 of 3 members"
    );

    let second = (0..3).find(|&i| i != leader).unwrap();
    cluster.members()[second].kill();
    let no_quorum_at = Instant::now();

    let one_dead: Vec<Attempt> = ledger
        .attempts_between(one_dead_at, no_quorum_at)
        .into_iter()
        .filter(|a| a.started + a.took < no_quorum_at)
        .collect();
    let failed: Vec<&Attempt> = one_dead.iter().filter(|a| a.error.is_some()).collect();
    eprintln!(
        "one member dead: {} requests, {} failed:",
        one_dead.len(),
        failed.len()
    );
    for a in &failed {
        let when = match a.started.checked_duration_since(one_dead_at) {
            Some(after) => format!("sent {after:?} after the kill"),
            None => "in flight at the kill".to_owned(),
        };
        eprintln!(
            "  task {} {} ({when}) failed after {:?}: {:?}",
            a.task, a.what, a.took, a.error
        );
    }
    // At most the write each task had in flight while the followers still forwarded to the dead
    // leader fails, and says its outcome is unknown (504) or that nothing was done (503).
    assert!(
        failed.len() <= TASKS,
        "too many failures with one member dead"
    );
    for a in &failed {
        let (code, _, message) = a.error.as_ref().unwrap();
        assert!(
            matches!(code, 503 | 504) && message.starts_with("storage unavailable"),
            "{a:?}"
        );
    }
    for task in 0..TASKS {
        let late = one_dead
            .iter()
            .filter(|a| a.task == task && a.started > one_dead_at + Duration::from_secs(7));
        assert!(
            late.clone().count() > 3 && late.clone().all(|a| a.error.is_none()),
            "task {task} did not carry on: {:?}",
            one_dead
                .iter()
                .filter(|a| a.task == task)
                .collect::<Vec<_>>()
        );
    }
    let blip = longest_pause(&one_dead, one_dead_at);
    eprintln!("one member dead: longest time without an acknowledged write: {blip:?}");
    assert!(
        blip < Duration::from_secs(7),
        "the load stalled for {blip:?}"
    );

    // Phase 2: no quorum. Requests fail with 503 and the cause, quickly.
    let first_503 = loop {
        let found = ledger
            .attempts_between(no_quorum_at, Instant::now())
            .into_iter()
            .filter(|a| matches!(&a.error, Some((503, _, _))))
            .map(|a| a.started + a.took)
            .min();
        if let Some(at) = found {
            break at - no_quorum_at;
        }
        assert!(
            no_quorum_at.elapsed() < Duration::from_secs(30),
            "no 503 within 30 s of losing quorum"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("no quorum: first 503 after {first_503:?}");
    assert!(first_503 < FIRST_503_WITHIN);
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Through kube-rs, each kind of request.
    let mut probes = Vec::new();
    let started = Instant::now();
    probes.push(("get", vms.get("load-0-0000").await.map(|_| ())));
    probes.push(("list", vms.list(&ListParams::default()).await.map(|_| ())));
    probes.push((
        "create",
        vms.create(&PostParams::default(), &vm("no-quorum", 99))
            .await
            .map(|_| ()),
    ));
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    probes.push((
        "patch",
        vms.patch(
            "load-0-0000",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(|_| ()),
    ));
    probes.push((
        "delete",
        vms.delete("load-0-0000", &Default::default())
            .await
            .map(|_| ()),
    ));
    let took = started.elapsed();
    eprintln!("no quorum: get, list, create, patch, delete answered in {took:?}");
    assert!(took < LATER_503_WITHIN * 5, "5 requests took {took:?}");
    for (what, result) in probes {
        let (code, reason, message) = status_of(&result.expect_err(what));
        eprintln!("  {what}: {code} {reason}: {message}");
        assert_no_quorum_status(code, &reason, &message, &endpoints);
    }
    // The load: after the first 503, every request answered 503 with the same message, quickly.
    let since = no_quorum_at + first_503;
    let later: Vec<Attempt> = ledger
        .attempts_between(since, Instant::now())
        .into_iter()
        .filter(|a| a.started >= since)
        .collect();
    assert!(later.len() > 10, "{later:?}");
    for a in &later {
        let (code, reason, message) = a
            .error
            .clone()
            .unwrap_or_else(|| panic!("{a:?} succeeded without quorum"));
        assert_no_quorum_status(code, &reason, &message, &endpoints);
        assert!(a.took < LATER_503_WITHIN, "{a:?}");
    }
    let slowest = later.iter().map(|a| a.took).max().unwrap();
    eprintln!(
        "no quorum: {} load requests after the first 503, the slowest took {slowest:?}",
        later.len()
    );

    // kubectl shows the message, and says it quickly.
    let started = Instant::now();
    let out = kubectl.fails(&["get", "vms"]);
    eprintln!(
        "no quorum: kubectl get vms failed in {:?}:\n{out}",
        started.elapsed()
    );
    assert!(out.contains("Error from server (ServiceUnavailable): storage unavailable: etcd has no quorum or cannot be reached (http://127.0.0.1:"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let out = kubectl.fails(&["label", "vm", "load-0-0000", "x=y"]);
    assert!(
        out.contains("storage unavailable: etcd has no quorum"),
        "{out}"
    );

    let (code, body) = probe(&client, "/readyz").await;
    eprintln!("no quorum: /readyz {code}: {body}");
    assert_eq!(code, 503);
    assert!(
        body.contains("[-]storage failed: storage unavailable: etcd has no quorum"),
        "{body}"
    );
    assert_eq!(probe(&client, "/livez").await, (200, "ok".to_owned()));

    // Phase 3: both members return.
    for i in [leader, second] {
        cluster.members()[i].start_again().unwrap();
    }
    let back_at = Instant::now();
    let serving_after = loop {
        if vms.get("load-0-0001").await.is_ok() {
            break back_at.elapsed();
        }
        assert!(
            back_at.elapsed() < Duration::from_secs(30),
            "no recovery 30 s after the members came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("recovered: the API answers {serving_after:?} after the members were started");
    assert!(serving_after < Duration::from_secs(15));
    let ready_after = loop {
        if probe(&client, "/readyz").await.0 == 200 {
            break back_at.elapsed();
        }
        assert!(
            back_at.elapsed() < Duration::from_secs(30),
            "/readyz not 200 30 s after the members came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("recovered: /readyz 200 {ready_after:?} after the members were started");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Release);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a load task did not finish its last write within 60 s")
            .expect("load task");
    }
    let serving_at = back_at + serving_after + Duration::from_secs(1);
    let recovered: Vec<Attempt> = ledger
        .attempts_between(serving_at, Instant::now())
        .into_iter()
        .filter(|a| a.started >= serving_at)
        .collect();
    assert!(
        recovered.iter().all(|a| a.error.is_none()),
        "failures after recovery: {recovered:?}"
    );

    // Nothing acknowledged is lost, and nothing else appeared.
    let acked = ledger.acked.lock().unwrap().clone();
    let stored: BTreeMap<String, Acked> = vms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|vm| {
            let acked = Acked {
                uid: vm.metadata.uid.clone().unwrap(),
                seq: seq_of(&vm).unwrap(),
            };
            (vm.metadata.name.unwrap(), acked)
        })
        .collect();
    let attempts = ledger.attempts.lock().unwrap().len();
    eprintln!(
        "{} objects acknowledged over {attempts} requests; {} stored",
        acked.len(),
        stored.len()
    );
    assert_eq!(
        stored, acked,
        "the stored objects differ from the acknowledged writes"
    );

    // The watcher from before the failures catches up with everything, including what is written
    // now: no silent gap.
    vms.create(&PostParams::default(), &vm("after-recovery", 99))
        .await
        .unwrap();
    let mut expected: BTreeMap<String, u64> =
        acked.iter().map(|(k, v)| (k.clone(), v.seq)).collect();
    expected.insert("after-recovery".into(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if *watched.lock().unwrap() == expected {
            break;
        }
        let seen = watched.lock().unwrap().clone();
        let missing: Vec<_> = expected
            .iter()
            .filter(|(k, v)| seen.get(*k) != Some(v))
            .collect();
        assert!(
            Instant::now() < deadline,
            "the watcher missed {missing:?}; its errors: {:?}",
            watch_errors.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "the watcher saw every write; its errors on the way: {:?}",
        watch_errors.lock().unwrap()
    );
    watch_task.abort();

    // kubectl get -w either followed through the outage, or ended (kubectl ends quietly when the
    // server closes a watch) after showing the Status the server sent as it gave up the watch.
    let followed =
        kubectl_watch.wait_for_line(Duration::from_secs(5), |l| l.starts_with("after-recovery "));
    if followed.is_err() {
        assert!(
            !kubectl_watch.is_running(),
            "kubectl get -w neither ended nor saw the object written after recovery"
        );
        let lines = kubectl_watch.lines_seen();
        let shown = lines
            .iter()
            .find(|l| {
                l.contains("ServiceUnavailable")
                    && l.contains("etcd has no quorum or cannot be reached")
            })
            .unwrap_or_else(|| panic!("kubectl get -w ended without showing why: {lines:?}"));
        eprintln!("kubectl get -w ended during the outage, showing:\n{shown}");
    }
}

/// The longest time, from `from`, during which no task had a write acknowledged.
fn longest_pause(attempts: &[Attempt], from: Instant) -> Duration {
    let mut acks: Vec<Instant> = attempts
        .iter()
        .filter(|a| a.error.is_none())
        .map(|a| a.started + a.took)
        .collect();
    acks.sort();
    let mut last = from;
    let mut longest = Duration::ZERO;
    for at in acks {
        longest = longest.max(at.saturating_duration_since(last));
        last = last.max(at);
    }
    longest
}
