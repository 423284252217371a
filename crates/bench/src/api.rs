//! `ferrovirt-bench api`: the API server measured through its real HTTPS API with kube-rs clients,
//! on the embedded store and on a real etcd, in one run.
//!
//! ```text
//!   embedded:  temp dir ─ API server (redb) ◄── C kube clients: creates, lists; W watchers + 1 updater
//!                                │
//!                                └─ the same Store called directly (no HTTP, no JSON)
//!   etcd:      etcd process ─ API server (etcd) ◄── the same load
//!                   ▲            └─ the same Store called directly
//!                   └── etcd-client directly: puts and create transactions of a stored VM's bytes
//! ```
//!
//! Watch fan-out: W watchers watch VMs from the current resourceVersion; one warm-up update proves
//! every watch is live; then M merge patches of one VM, spaced apart, each carrying its sequence
//! number in an annotation. Every (update, watcher) pair gives one delay: from the patch's
//! acknowledgement to the watcher decoding the event (and, as a note, from just before sending).
//!
//! Everything started is cleaned up on success, error and Ctrl-C alike: the API servers are
//! stopped, etcd is killed by PID (`EtcdProcess` on drop), temporary directories are removed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use ferrovirt_api::kubevirt::VirtualMachine;
use ferrovirt_apiserver::{Config, Running};
use ferrovirt_store::testing::EtcdProcess;
use ferrovirt_store::{ListOptions, Store};
use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;
use tokio::task::JoinSet;

use crate::load::closed_loop;
use crate::manifest::{self, NAMESPACE};
use crate::raw_etcd::{self, RawParams};
use crate::report::{self, ms, Row};
use crate::stats::{millis, Summary};

/// The annotation carrying an update's sequence number (0 is the warm-up).
const SEQ_ANNOTATION: &str = "bench.ferrovirt.io/seq";
/// Keys the `Store` is written under when called directly (outside the API's `/registry/`).
const DIRECT_PREFIX: &str = "/ferrovirt-bench/direct/";
/// Server-side timeout of each watch; longer than any fan-out phase.
const WATCH_TIMEOUT_SECS: u32 = 280;
/// How long watchers may take to see the warm-up update, and the last update.
const WATCH_PATIENCE: Duration = Duration::from_secs(60);

/// What one run measures.
#[derive(Debug, Clone)]
pub struct Params {
    /// VMs created (and then listed).
    pub objects: usize,
    /// Concurrent clients creating.
    pub concurrency: usize,
    /// Concurrent watchers.
    pub watchers: usize,
    /// Measured updates seen by the watchers.
    pub updates: usize,
    /// Time from one update's start to the next one's.
    pub update_interval: Duration,
    /// Repetitions of each list.
    pub list_reps: usize,
    /// `limit` of the paged lists.
    pub page_size: u32,
}

impl Params {
    /// The default run.
    pub fn full() -> Params {
        Params {
            objects: 2000,
            concurrency: 16,
            watchers: 100,
            updates: 50,
            update_interval: Duration::from_millis(20),
            list_reps: 20,
            page_size: 500,
        }
    }

    /// A small smoke run.
    pub fn quick() -> Params {
        Params {
            objects: 200,
            watchers: 20,
            updates: 20,
            list_reps: 5,
            page_size: 50,
            ..Params::full()
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.objects >= 1, "--objects must be at least 1");
        anyhow::ensure!(self.concurrency >= 1, "--concurrency must be at least 1");
        anyhow::ensure!(self.watchers >= 1, "--watchers must be at least 1");
        anyhow::ensure!(self.updates >= 1, "--updates must be at least 1");
        anyhow::ensure!(self.list_reps >= 1, "--list-reps must be at least 1");
        anyhow::ensure!(self.page_size >= 1, "--page-size must be at least 1");
        Ok(())
    }
}

/// Run the whole benchmark and print the table.
pub async fn run(p: &Params) -> anyhow::Result<()> {
    p.check()?;
    let machine = crate::machine::describe();
    let etcd_version = crate::machine::etcd_version();
    let build = if cfg!(debug_assertions) {
        "DEBUG build (figures not meaningful)"
    } else {
        "release build"
    };
    eprintln!("machine: {machine}; {etcd_version}; {build}");

    let embedded = embedded(p)
        .await
        .context("benchmark on the embedded store")?;
    let etcd = etcd(p).await.context("benchmark on etcd")?;

    let mut rows = embedded.rows.clone();
    rows.extend(etcd.rows.iter().cloned());
    println!();
    println!("ferrovirt API benchmark");
    println!("machine: {machine}; {etcd_version}; {build}");
    println!(
        "parameters: {} VMs of {} bytes stored, {} concurrent clients; lists x{} (paged limit={}); \
         {} watchers x {} updates every {} ms",
        p.objects,
        etcd.value_size,
        p.concurrency,
        p.list_reps,
        p.page_size,
        p.watchers,
        p.updates,
        p.update_interval.as_millis()
    );
    println!();
    print!("{}", report::table(&rows));
    println!();
    println!("creates: API rows are kube-rs creates over HTTPS (one client and connection per worker); \
              'store direct' is Store::create on the server's own store (no HTTP, no JSON, no admission);");
    println!("         raw etcd rows share one gRPC channel, as the API server's etcd store does.");
    println!(
        "watch fan-out: from the update's acknowledgement to each watcher decoding the event \
              (negative = event arrived before the writer read its reply)."
    );
    for note in embedded.notes.iter().chain(&etcd.notes) {
        println!("{note}");
    }
    Ok(())
}

/// The rows and notes of one store.
struct Measured {
    rows: Vec<Row>,
    notes: Vec<String>,
    /// Size of one stored VM, in bytes.
    value_size: usize,
}

async fn embedded(p: &Params) -> anyhow::Result<Measured> {
    let dir = tempfile::Builder::new()
        .prefix("ferrovirt-bench-")
        .tempdir()?;
    let config = Config::new(dir.path().join("server"), "127.0.0.1:0".parse()?);
    let server = ferrovirt_apiserver::start(config)
        .await
        .context("the API server does not start")?;
    let outcome = async {
        let api = measure_server(&server, "embedded", p).await?;
        let direct =
            measure_store_direct(server.store.clone(), "embedded", &api.stored_value, p).await?;
        anyhow::Ok((api, direct))
    }
    .await;
    server.stop().await;
    let (api, direct) = outcome?;
    drop(dir);
    Ok(Measured {
        rows: vec![api.row, direct],
        notes: api.notes,
        value_size: api.stored_value.len(),
    })
}

async fn etcd(p: &Params) -> anyhow::Result<Measured> {
    eprintln!("[etcd] starting etcd");
    let etcd = tokio::task::spawn_blocking(EtcdProcess::start)
        .await?
        .context("etcd does not start (Debian package etcd-server, or set FERROVIRT_ETCD)")?;
    let dir = tempfile::Builder::new()
        .prefix("ferrovirt-bench-")
        .tempdir()?;
    let mut config = Config::new(dir.path().join("server"), "127.0.0.1:0".parse()?);
    config.etcd = etcd.endpoints();
    let server = ferrovirt_apiserver::start(config)
        .await
        .context("the API server on etcd does not start")?;
    let outcome = async {
        let api = measure_server(&server, "etcd", p).await?;
        let direct =
            measure_store_direct(server.store.clone(), "etcd", &api.stored_value, p).await?;
        anyhow::Ok((api, direct))
    }
    .await;
    server.stop().await;
    let (api, direct) = outcome?;

    eprintln!(
        "[raw etcd] {} puts and {} create transactions of {} bytes",
        p.objects,
        p.objects,
        api.stored_value.len()
    );
    let raw = RawParams {
        objects: p.objects,
        concurrency: p.concurrency,
        list_reps: p.list_reps,
        page_size: p.page_size,
    };
    let [put, txn] = raw_etcd::measure(&etcd.endpoints(), api.stored_value.clone(), &raw).await?;
    drop(etcd);
    drop(dir);
    Ok(Measured {
        rows: vec![api.row, direct, put, txn],
        notes: api.notes,
        value_size: api.stored_value.len(),
    })
}

/// The figures of one API server.
struct ServerFigures {
    row: Row,
    notes: Vec<String>,
    /// The bytes the server stored for one VM.
    stored_value: Vec<u8>,
}

async fn measure_server(
    server: &Running,
    label: &str,
    p: &Params,
) -> anyhow::Result<ServerFigures> {
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig)
        .with_context(|| format!("cannot read {}", server.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("the server's kubeconfig is not usable")?;
    let new_client = || Client::try_from(config.clone()).context("cannot build a kube client");
    let mut notes = Vec::new();

    // Creates.
    eprintln!(
        "[{label}] creating {} VMs with {} concurrent clients",
        p.objects, p.concurrency
    );
    let vms: Arc<Vec<VirtualMachine>> = Arc::new(
        (0..p.objects)
            .map(|i| manifest::vm(&manifest::vm_name(i)))
            .collect::<anyhow::Result<_>>()?,
    );
    let workers = (0..p.concurrency)
        .map(|_| new_client())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let creates = closed_loop(p.objects, workers, move |client, i| {
        let vms = vms.clone();
        async move {
            let api: Api<VirtualMachine> = Api::namespaced(client, NAMESPACE);
            api.create(&PostParams::default(), &vms[i]).await?;
            Ok(())
        }
    })
    .await
    .context("creating VMs")?;

    let first = manifest::vm_name(0);
    let key = format!("/registry/kubevirt.io/virtualmachines/{NAMESPACE}/{first}");
    let stored_value = match server.store.get(&key).await? {
        Some(kv) => kv.value.to_vec(),
        None => {
            notes.push(format!(
                "{label}: {key} not found in the store; value size taken from the API's JSON"
            ));
            let api: Api<VirtualMachine> = Api::namespaced(new_client()?, NAMESPACE);
            serde_json::to_vec(&api.get(&first).await?)?
        }
    };

    // Lists.
    eprintln!("[{label}] listing {} VMs x{}", p.objects, p.list_reps);
    let client = new_client()?;
    let api: Api<VirtualMachine> = Api::namespaced(client.clone(), NAMESPACE);
    let (mut full, mut paged, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let mut response_bytes = 0;
    for _ in 0..p.list_reps {
        let began = Instant::now();
        let list = api
            .list(&ListParams::default())
            .await
            .context("listing all VMs")?;
        full.push(began.elapsed());
        anyhow::ensure!(
            list.items.len() == p.objects,
            "a list returned {} VMs, expected {}",
            list.items.len(),
            p.objects
        );

        let began = Instant::now();
        let n = list_paged(&api, p.page_size).await?;
        paged.push(began.elapsed());
        anyhow::ensure!(
            n == p.objects,
            "a paged list returned {n} VMs, expected {}",
            p.objects
        );

        let began = Instant::now();
        response_bytes = list_raw_bytes(&client).await?;
        raw.push(began.elapsed());
    }
    if let (Some(typed), Some(bytes)) = (Summary::of_durations(&full), Summary::of_durations(&raw))
    {
        notes.push(format!(
            "{label}: list all = {:.1} MB of JSON; fetching the bytes alone takes p50 {} ms, decoding them \
             into typed VMs in kube-rs the other {} ms of the {} ms p50",
            response_bytes as f64 / 1e6,
            ms(bytes.p50),
            ms(typed.p50 - bytes.p50),
            ms(typed.p50)
        ));
    }

    // Watch fan-out.
    eprintln!(
        "[{label}] {} watchers, {} updates every {} ms",
        p.watchers,
        p.updates,
        p.update_interval.as_millis()
    );
    let fanout = watch_fanout(&new_client, &first, p)
        .await
        .context("watch fan-out")?;
    notes.push(format!(
        "{label}: {} watchers live {} ms after the warm-up update was sent; update (merge patch) latency p50/p99 {}",
        p.watchers,
        ms(fanout.warmup_ms),
        pair(fanout.update)
    ));
    notes.push(format!(
        "{label}: watch fan-out measured from just before sending the update instead: p50/p99/max {}",
        triple(fanout.from_send)
    ));
    if let Some(error) = &fanout.first_error {
        notes.push(format!("{label}: a watcher failed: {error}"));
    }

    let row = Row {
        name: format!("{label} (API)"),
        creates_per_sec: Some(creates.rate()),
        create: Summary::of_durations(&creates.latencies),
        list_full: Summary::of_durations(&full),
        list_paged: Summary::of_durations(&paged),
        fanout: fanout.from_ack,
        delivered: Some((fanout.delivered, fanout.expected)),
    };
    Ok(ServerFigures {
        row,
        notes,
        stored_value,
    })
}

fn pair(s: Option<Summary>) -> String {
    s.map_or_else(
        || "-".into(),
        |s| format!("{} / {} ms", ms(s.p50), ms(s.p99)),
    )
}

fn triple(s: Option<Summary>) -> String {
    s.map_or_else(
        || "-".into(),
        |s| format!("{} / {} / {} ms", ms(s.p50), ms(s.p99), ms(s.max)),
    )
}

/// Every VM, `page_size` at a time; returns how many.
async fn list_paged(api: &Api<VirtualMachine>, page_size: u32) -> anyhow::Result<usize> {
    let mut params = ListParams::default().limit(page_size);
    let mut total = 0;
    loop {
        let page = api.list(&params).await.context("listing a page of VMs")?;
        total += page.items.len();
        match page.metadata.continue_.as_deref() {
            Some(token) if !token.is_empty() => params = params.continue_token(token),
            _ => return Ok(total),
        }
    }
}

/// The full list as bytes, without decoding: what the server's part of a list costs.
async fn list_raw_bytes(client: &Client) -> anyhow::Result<usize> {
    let request = http::Request::get(format!(
        "/apis/kubevirt.io/v1/namespaces/{NAMESPACE}/virtualmachines"
    ))
    .header(http::header::ACCEPT, "application/json")
    .body(kube::client::Body::empty())?;
    let response = client
        .send(request)
        .await
        .context("listing all VMs as bytes")?;
    anyhow::ensure!(
        response.status().is_success(),
        "listing all VMs as bytes: HTTP {}",
        response.status()
    );
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .context("reading the list body")?;
    Ok(body.len())
}

/// The `Store` the server runs on, called directly: creates of the stored VM's bytes with the same
/// concurrency, then full and paged range reads.
async fn measure_store_direct(
    store: Arc<dyn Store>,
    label: &str,
    value: &[u8],
    p: &Params,
) -> anyhow::Result<Row> {
    eprintln!("[{label}] Store::create x{} directly", p.objects);
    let value = Bytes::copy_from_slice(value);
    let creates = closed_loop(
        p.objects,
        vec![store.clone(); p.concurrency],
        move |store, i| {
            let value = value.clone();
            async move {
                store
                    .create(&format!("{DIRECT_PREFIX}{i:06}"), value)
                    .await?;
                Ok(())
            }
        },
    )
    .await
    .context("Store::create directly")?;

    let (mut full, mut paged) = (Vec::new(), Vec::new());
    for _ in 0..p.list_reps {
        let began = Instant::now();
        let page = store.list(DIRECT_PREFIX, ListOptions::default()).await?;
        full.push(began.elapsed());
        anyhow::ensure!(
            page.items.len() == p.objects,
            "Store::list returned {} keys, expected {}",
            page.items.len(),
            p.objects
        );

        let began = Instant::now();
        let mut options = ListOptions {
            limit: p.page_size as usize,
            ..ListOptions::default()
        };
        let mut total = 0;
        loop {
            let page = store.list(DIRECT_PREFIX, options.clone()).await?;
            total += page.items.len();
            match page.items.last() {
                Some(last) if page.more => {
                    options.start_after = Some(last.key.clone());
                    options.at = Some(page.revision);
                }
                _ => break,
            }
        }
        paged.push(began.elapsed());
        anyhow::ensure!(
            total == p.objects,
            "paged Store::list returned {total} keys, expected {}",
            p.objects
        );
    }
    Ok(Row {
        name: format!("{label} store direct"),
        creates_per_sec: Some(creates.rate()),
        create: Summary::of_durations(&creates.latencies),
        list_full: Summary::of_durations(&full),
        list_paged: Summary::of_durations(&paged),
        ..Row::default()
    })
}

/// The outcome of the fan-out phase.
struct FanOut {
    from_ack: Option<Summary>,
    from_send: Option<Summary>,
    update: Option<Summary>,
    delivered: usize,
    expected: usize,
    warmup_ms: f64,
    first_error: Option<String>,
}

/// What one watcher saw.
struct WatcherLog {
    /// (sequence number, when the event was decoded) of every measured update seen.
    seen: Vec<(usize, Instant)>,
    error: Option<String>,
}

async fn watch_fanout(
    new_client: &impl Fn() -> anyhow::Result<Client>,
    target: &str,
    p: &Params,
) -> anyhow::Result<FanOut> {
    let api: Api<VirtualMachine> = Api::namespaced(new_client()?, NAMESPACE);
    let version = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .filter(|rv| !rv.is_empty())
        .context("a VM list carries no resourceVersion")?;

    let last = p.updates;
    let warmed = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut watchers = JoinSet::new();
    for _ in 0..p.watchers {
        let client = new_client()?;
        let (version, warmed, stopped) = (version.clone(), warmed.clone(), stopped.clone());
        watchers.spawn(watch_one(client, version, last, warmed, stopped));
    }

    // Warm-up: every watch is connected and delivering before anything is measured.
    let warmup_sent = Instant::now();
    patch_seq(&api, target, 0).await?;
    while warmed.load(Ordering::SeqCst) < p.watchers {
        if let Some(done) = watchers.try_join_next() {
            let log = done.context("a watcher panicked")?;
            anyhow::bail!(
                "a watcher stopped before the warm-up update reached every watcher: {}",
                log.error.unwrap_or_else(|| "no error".into())
            );
        }
        anyhow::ensure!(
            warmup_sent.elapsed() < WATCH_PATIENCE,
            "only {} of {} watchers saw the warm-up update within {WATCH_PATIENCE:?}",
            warmed.load(Ordering::SeqCst),
            p.watchers
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let warmup_ms = millis(warmup_sent.elapsed());

    // Measured updates, one every `update_interval`.
    let (mut sent, mut acked, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = tokio::time::Instant::now();
    for seq in 1..=last {
        tokio::time::sleep_until(next).await;
        next += p.update_interval;
        let began = Instant::now();
        patch_seq(&api, target, seq).await?;
        let done = Instant::now();
        sent.push(began);
        acked.push(done);
        latencies.push(done - began);
    }

    // Each watcher ends on its own after the last update; stragglers are stopped after a while.
    let mut logs = Vec::with_capacity(p.watchers);
    let deadline = tokio::time::Instant::now() + WATCH_PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, watchers.join_next()).await {
            Ok(Some(done)) => logs.push(done.context("a watcher panicked")?),
            Ok(None) => break,
            Err(_) => {
                let _ = stop.send(true);
                while let Some(done) = watchers.join_next().await {
                    logs.push(done.context("a watcher panicked")?);
                }
                break;
            }
        }
    }

    let (mut from_ack, mut from_send) = (Vec::new(), Vec::new());
    let mut first_error = None;
    for log in logs {
        let mut counted = HashSet::new();
        for (seq, at) in log.seen {
            if (1..=last).contains(&seq) && counted.insert(seq) {
                from_ack.push(signed_millis(at, acked[seq - 1]));
                from_send.push(signed_millis(at, sent[seq - 1]));
            }
        }
        if first_error.is_none() {
            first_error = log.error;
        }
    }
    Ok(FanOut {
        delivered: from_ack.len(),
        expected: last * p.watchers,
        from_ack: Summary::of_millis(&from_ack),
        from_send: Summary::of_millis(&from_send),
        update: Summary::of_durations(&latencies),
        warmup_ms,
        first_error,
    })
}

/// `a - b` in milliseconds, negative when `a` came first.
fn signed_millis(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => millis(d),
        None => -millis(b - a),
    }
}

async fn patch_seq(api: &Api<VirtualMachine>, target: &str, seq: usize) -> anyhow::Result<()> {
    let patch = json!({ "metadata": { "annotations": { SEQ_ANNOTATION: seq.to_string() } } });
    api.patch(target, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("update {seq} of {target}"))?;
    Ok(())
}

fn seq_of(vm: &VirtualMachine) -> Option<usize> {
    vm.metadata
        .annotations
        .as_ref()?
        .get(SEQ_ANNOTATION)?
        .parse()
        .ok()
}

/// Watch VMs from `version` until the update numbered `last` arrives or `stopped` says so.
async fn watch_one(
    client: Client,
    version: String,
    last: usize,
    warmed: Arc<AtomicUsize>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> WatcherLog {
    let mut log = WatcherLog {
        seen: Vec::new(),
        error: None,
    };
    let api: Api<VirtualMachine> = Api::namespaced(client, NAMESPACE);
    let stream = match api
        .watch(
            &WatchParams::default().timeout(WATCH_TIMEOUT_SECS),
            &version,
        )
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            log.error = Some(format!("cannot start the watch: {e}"));
            return log;
        }
    };
    let mut stream = std::pin::pin!(stream);
    let mut warm = false;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = stopped.changed() => return log,
        };
        match event {
            Some(Ok(WatchEvent::Modified(vm))) => {
                let at = Instant::now();
                match seq_of(&vm) {
                    Some(0) if !warm => {
                        warm = true;
                        warmed.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(seq) if seq > 0 => {
                        log.seen.push((seq, at));
                        if seq >= last {
                            return log;
                        }
                    }
                    _ => {}
                }
            }
            Some(Ok(WatchEvent::Error(status))) => {
                log.error = Some(format!("error event {}: {}", status.code, status.message));
                return log;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                log.error = Some(format!("watch stream failed: {e}"));
                return log;
            }
            None => {
                log.error = Some("the watch stream ended early".into());
                return log;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_millis_is_negative_when_the_first_came_first() {
        let a = Instant::now();
        let b = a + Duration::from_millis(3);
        assert!((signed_millis(b, a) - 3.0).abs() < 1e-9);
        assert!((signed_millis(a, b) + 3.0).abs() < 1e-9);
    }

    #[test]
    fn sequence_numbers_come_from_the_annotation() {
        let mut vm = manifest::vm("x").unwrap();
        assert_eq!(seq_of(&vm), None);
        vm.metadata.annotations = Some([(SEQ_ANNOTATION.to_owned(), "7".to_owned())].into());
        assert_eq!(seq_of(&vm), Some(7));
    }

    #[test]
    fn quick_is_smaller_than_full_and_both_are_valid() {
        let (quick, full) = (Params::quick(), Params::full());
        assert!(quick.objects < full.objects && quick.watchers < full.watchers);
        quick.check().unwrap();
        full.check().unwrap();
        assert!(Params { updates: 0, ..full }.check().is_err());
    }
}
