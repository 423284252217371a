//! `ferrovirt-bench scale`: control-plane scale. N VirtualMachineInstances placed on M simulated
//! nodes, from create to Running, on the embedded store and on etcd, with the latency of each
//! step, the spread over the nodes, and the memory and CPU of every control-plane process.
//!
//! ```text
//!   [etcd] ◄─ ferrovirt apiserver ◄─┬─ ferrovirt controller (VMI ─► launcher Pod, phases)
//!                                   ├─ ferrovirt scheduler  (Pod ─► node)
//!                                   └─ this process:
//!                                       load:  POST VMI × N (closed loop of C, or --rate N/s)
//!                                       watch: VMIs ── phase arrival times; launcher Pods ──
//!                                              when each was created (kube-rs watchers)
//!                                       sim_hypervisor: M fake node agents (Lease, pod watch,
//!                                              VMI/Pod status "Running"); see its module doc
//! ```
//!
//! One clock, this process's `Instant`: for each VMI, when its POST was sent and acknowledged,
//! when each phase arrived on the watch, when its launcher Pod arrived on the Pod watch, when it
//! arrived bound on its simulated node's watch, and when the simulated node's Running write was
//! acknowledged. The store revision before and after the load counts the writes it took. Before the
//! measured load one warm-up VMI goes through create → Running → deleted, so that leader
//! election and the caches of the controller and the scheduler are behind us.
//!
//! After the run every VMI is deleted (controller ─► Pod deletion ─► simulated node confirms ─►
//! finalizer removed) and the processes are stopped by PID.

pub mod control_plane;
pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrovirt_api::kubevirt::{VirtualMachineInstance, VirtualMachineInstancePhase as Phase};
use ferrovirt_node::decide::{DOMAIN_ANNOTATION, LAUNCHER_LABEL};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::sim_hypervisor::{SimHypervisor, SimReport, SimTimes};
use crate::vms::procfs;
use control_plane::{ControlPlane, Process, StoreKind};
use table::{row, Line, Spread};

const NAMESPACE: &str = "default";
/// The name of the warm-up VMI (not measured).
const WARMUP: &str = "scale-warmup";
/// How long the warm-up VMI may take to run, and to go.
const WARMUP_PATIENCE: Duration = Duration::from_secs(180);
/// How long clean-up (every VMI deleted and gone) may take.
const CLEANUP_PATIENCE: Duration = Duration::from_secs(300);
/// The image named in each VMI's containerDisk (KubeVirt's density test guest). Nothing pulls
/// it: the simulated hypervisor starts nothing.
const IMAGE: &str = "quay.io/kubevirt/cirros-container-disk-demo:latest";

/// What one run measures.
#[derive(Debug, Clone)]
pub struct Params {
    pub vmis: usize,
    pub nodes: usize,
    pub stores: Vec<StoreKind>,
    /// Creates per second (open loop); `None`: as fast as the API takes them, `concurrency` at a
    /// time.
    pub rate: Option<f64>,
    pub concurrency: usize,
    /// `resources.requests.memory` of each VMI.
    pub memory: String,
    /// How long all VMIs may take to be Running.
    pub timeout: Duration,
    /// Keep the data folders (logs) instead of deleting them.
    pub keep: bool,
}

impl Params {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.vmis >= 1, "--vmis must be at least 1");
        anyhow::ensure!(
            (1..=100).contains(&self.nodes),
            "--nodes must be between 1 and 100"
        );
        anyhow::ensure!(!self.stores.is_empty(), "no store to measure");
        anyhow::ensure!(self.concurrency >= 1, "--concurrency must be at least 1");
        if let Some(r) = self.rate {
            anyhow::ensure!(r.is_finite() && r > 0.0, "--rate must be a positive number");
        }
        Ok(())
    }

    fn pace(&self) -> String {
        match self.rate {
            Some(r) => format!("{r} creates/s (open loop)"),
            None => format!(
                "as fast as the API answers, {} creates in flight",
                self.concurrency
            ),
        }
    }
}

/// `--rate` as `50` or `50/s`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.trim().trim_end_matches("/s").trim();
    n.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("{s:?} is not a rate such as 50 or 50/s"))
}

/// Name of the `i`-th measured VMI; zero-padded so names sort in creation order.
pub fn vmi_name(i: usize) -> String {
    format!("scale-vmi-{i:05}")
}

/// The VMI posted for `name`: one containerDisk, `memory` requested, no grace period.
pub fn vmi_manifest(name: &str, memory: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": { "app": "ferrovirt-bench-scale" }
        },
        "spec": {
            "domain": {
                "devices": { "disks": [ { "name": "containerdisk", "disk": { "bus": "virtio" } } ] },
                "resources": { "requests": { "memory": memory } }
            },
            "terminationGracePeriodSeconds": 0,
            "volumes": [ { "name": "containerdisk", "containerDisk": { "image": IMAGE } } ]
        }
    })
}

/// When each step of one VMI happened (`Instant`s of this process).
#[derive(Debug, Clone, Default)]
struct VmiTimes {
    sent: Option<Instant>,
    acked: Option<Instant>,
    pending: Option<Instant>,
    /// The launcher Pod arrived on the bench's Pod watch.
    pod_created: Option<Instant>,
    scheduling: Option<Instant>,
    scheduled: Option<Instant>,
    running: Option<Instant>,
    deleted: Option<Instant>,
}

type Timeline = Arc<Mutex<HashMap<String, VmiTimes>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `b - a` in milliseconds, negative when `b` came first.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    match b.checked_duration_since(a) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(a - b).as_secs_f64() * 1e3,
    }
}

/// Runs the benchmark on each store and prints a table per store and a comparison.
pub async fn run(p: &Params) -> anyhow::Result<()> {
    p.check()?;
    let machine = crate::machine::describe();
    let build = if cfg!(debug_assertions) {
        "DEBUG build of ferrovirt-bench (figures not meaningful)"
    } else {
        "release build"
    };
    let binary = tokio::task::spawn_blocking(ferrovirt_e2e::ferrovirt_binary)
        .await?
        .context("the ferrovirt binary")?;
    eprintln!("machine: {machine}; {build}; control plane: {}", binary.display());

    let mut results = Vec::new();
    for store in &p.stores {
        let load_before = load_average();
        let result = measure(*store, p)
            .await
            .with_context(|| format!("benchmark on the {} store", store.label()))?;
        println!();
        println!(
            "ferrovirt-bench scale, {} store: {} VMIs on {} simulated nodes",
            store.label(),
            p.vmis,
            p.nodes
        );
        println!(
            "machine: {machine}; {build}; load average before: {load_before}{}",
            if *store == StoreKind::Etcd {
                format!("; {}", crate::machine::etcd_version())
            } else {
                String::new()
            }
        );
        println!(
            "load: {} VMIs ({} memory requested, 1 containerDisk), {}",
            p.vmis,
            p.memory,
            p.pace()
        );
        println!();
        print!("{}", result.render());
        results.push(result);
    }
    if results.len() > 1 {
        println!();
        println!("ferrovirt-bench scale: comparison ({} VMIs, {} simulated nodes)", p.vmis, p.nodes);
        println!();
        print!("{}", compare(&results));
    }
    Ok(())
}

/// The figures of one store.
struct StoreResult {
    store: StoreKind,
    expected: usize,
    nodes: usize,
    /// Milliseconds per VMI of each step.
    create: Vec<f64>,
    to_running: Vec<f64>,
    to_pending: Vec<f64>,
    to_pod: Vec<f64>,
    pod_to_bound: Vec<f64>,
    to_bound: Vec<f64>,
    to_scheduled: Vec<f64>,
    bound_to_written: Vec<f64>,
    written_to_seen: Vec<f64>,
    /// First create sent to last create acknowledged.
    create_wall: Duration,
    /// First create sent to last VMI Running seen (or the timeout).
    wall: Duration,
    running: usize,
    timed_out: bool,
    /// Store revisions (writes) from the first create to the last VMI Running.
    writes: Option<u64>,
    processes: Vec<ProcessFigures>,
    /// Measured VMIs Running per simulated node.
    per_node: BTreeMap<String, usize>,
    sim: SimReport,
    warmup: Duration,
    cleanup: Option<Duration>,
    leftover: usize,
    killed: Vec<String>,
    dir: Option<std::path::PathBuf>,
}

/// Memory and CPU of one process.
#[derive(Debug, Clone)]
struct ProcessFigures {
    label: String,
    pid: u32,
    /// VmRSS once every VMI was Running.
    rss_end_kib: Option<u64>,
    /// VmHWM after clean-up: the peak of the whole run.
    rss_peak_kib: Option<u64>,
    /// CPU seconds from the first create to the last VMI Running.
    cpu_load_secs: Option<f64>,
}

async fn measure(store: StoreKind, p: &Params) -> anyhow::Result<StoreResult> {
    let label = store.label();
    let dir = tempfile::Builder::new()
        .prefix(&format!("fvb-scale-{label}-"))
        .tempdir()?;
    // This process's peak RSS starts again from here (Linux: "5" resets VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    eprintln!("[{label}] starting the control plane in {}", dir.path().display());
    let cp = ControlPlane::start(store, dir.path()).await?;
    let outcome = drive(store, p, &cp).await;
    let tails = if outcome.is_err() { cp.log_tails(15) } else { String::new() };
    let killed = cp.stop().await;
    let mut result = outcome.map_err(|e| anyhow::anyhow!("{e:#}\n{tails}"))?;
    result.killed = killed;
    if p.keep {
        result.dir = Some(dir.keep());
    }
    Ok(result)
}

async fn drive(store: StoreKind, p: &Params, cp: &ControlPlane) -> anyhow::Result<StoreResult> {
    let label = store.label();
    let config = cp.kube_config().await?;
    let client = Client::try_from(config.clone()).context("cannot build a kube client")?;
    let me = std::process::id();
    let mut processes = cp.processes();
    processes.push(Process {
        label: format!(
            "ferrovirt-bench: SIMULATED hypervisor ({} nodes) + load + watch",
            p.nodes
        ),
        pid: me,
    });

    eprintln!("[{label}] registering {} simulated nodes", p.nodes);
    let sim = SimHypervisor::start(&config, p.nodes).await?;

    let timeline: Timeline = Arc::new(Mutex::new(HashMap::new()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), NAMESPACE);
    let watch = tokio::spawn(watch_vmis(vmis.clone(), timeline.clone(), ready_tx));
    let (pods_ready_tx, pods_ready_rx) = tokio::sync::oneshot::channel();
    let pod_watch = tokio::spawn(watch_launcher_pods(
        Api::namespaced(client.clone(), NAMESPACE),
        timeline.clone(),
        pods_ready_tx,
    ));
    let result = async {
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .context("the VMI watch did not start")?
            .ok();
        tokio::time::timeout(Duration::from_secs(30), pods_ready_rx)
            .await
            .context("the Pod watch did not start")?
            .ok();

        // Warm-up: leader election, caches, the whole path once.
        eprintln!("[{label}] warm-up VMI: create, wait for Running, delete");
        let began = Instant::now();
        let warm: VirtualMachineInstance = serde_json::from_value(vmi_manifest(WARMUP, &p.memory))?;
        vmis.create(&PostParams::default(), &warm)
            .await
            .context("creating the warm-up VMI")?;
        wait_until(WARMUP_PATIENCE, "the warm-up VMI to be Running", || {
            lock(&timeline).get(WARMUP).is_some_and(|t| t.running.is_some())
        })
        .await?;
        vmis.delete(WARMUP, &DeleteParams::default())
            .await
            .context("deleting the warm-up VMI")?;
        wait_until(WARMUP_PATIENCE, "the warm-up VMI to be gone", || {
            lock(&timeline).get(WARMUP).is_some_and(|t| t.deleted.is_some())
        })
        .await?;
        let warmup = began.elapsed();

        // The load.
        let names: Vec<String> = (0..p.vmis).map(vmi_name).collect();
        let revision_before = revision(&vmis).await;
        let pids: Vec<u32> = processes.iter().map(|pr| pr.pid).collect();
        let sampled = Arc::new(Mutex::new(vec![0u64; pids.len()]));
        // A JoinSet, so that the sampler also stops when this block returns early.
        let mut sampler = JoinSet::new();
        sampler.spawn(sample_rss(pids, sampled.clone()));
        let cpu_before: Vec<Option<f64>> =
            processes.iter().map(|pr| procfs::cpu_seconds(pr.pid)).collect();
        eprintln!("[{label}] creating {} VMIs, {}", p.vmis, p.pace());
        let first_sent = Instant::now();
        let creating = tokio::spawn(create_all(
            vmis.clone(),
            names.clone(),
            p.memory.clone(),
            p.rate,
            p.concurrency,
            timeline.clone(),
        ));
        let (running, timed_out) = wait_running(label, &names, &timeline, first_sent, p.timeout).await;
        let create_wall = creating.await.context("the create task panicked")??;
        let last_running = {
            let tl = lock(&timeline);
            names
                .iter()
                .filter_map(|n| tl.get(n)?.running)
                .max()
                .unwrap_or_else(Instant::now)
        };
        let wall = if timed_out {
            first_sent.elapsed()
        } else {
            last_running.saturating_duration_since(first_sent)
        };
        let cpu_after: Vec<Option<f64>> =
            processes.iter().map(|pr| procfs::cpu_seconds(pr.pid)).collect();
        let rss_end: Vec<Option<u64>> = processes
            .iter()
            .map(|pr| procfs::rss_and_peak_kib(pr.pid).map(|(rss, _)| rss))
            .collect();
        let revision_after = revision(&vmis).await;
        let writes = revision_before.zip(revision_after).map(|(b, a)| a.saturating_sub(b));
        let sim_times = sim.times();

        // Clean-up: every VMI deleted; the simulated nodes confirm the Pods' deletion.
        eprintln!("[{label}] deleting {} VMIs", p.vmis);
        let cleanup_began = Instant::now();
        delete_all(&vmis, &names, p.concurrency).await?;
        let gone = wait_until(CLEANUP_PATIENCE, "every VMI to be gone", || {
            let tl = lock(&timeline);
            names.iter().all(|n| tl.get(n).is_none_or(|t| t.deleted.is_some() || t.acked.is_none()))
        })
        .await;
        let cleanup = gone.is_ok().then(|| cleanup_began.elapsed());
        let leftover = if cleanup.is_some() {
            0
        } else {
            vmis.list(&ListParams::default()).await.map_or(usize::MAX, |l| l.items.len())
        };
        sampler.abort_all();
        let sampled = lock(&sampled).clone();
        let figures: Vec<ProcessFigures> = processes
            .iter()
            .zip(cpu_before.iter().zip(&cpu_after))
            .zip(rss_end.iter().zip(&sampled))
            .map(|((pr, (before, after)), (end, max_seen))| ProcessFigures {
                label: pr.label.clone(),
                pid: pr.pid,
                rss_end_kib: *end,
                // The kernel's high-water mark lags its RSS counters a little: take whichever
                // is higher of it and what was seen.
                rss_peak_kib: procfs::rss_and_peak_kib(pr.pid)
                    .map(|(_, peak)| peak.max(*max_seen).max(end.unwrap_or(0))),
                cpu_load_secs: before.zip(*after).map(|(b, a)| a - b),
            })
            .collect();

        let report = sim.report();
        let tl = lock(&timeline).clone();
        Ok(StoreResult::new(
            store,
            p,
            &names,
            &tl,
            &sim_times,
            Collected {
                create_wall,
                wall,
                running,
                timed_out,
                writes,
                processes: figures,
                sim: report,
                warmup,
                cleanup,
                leftover,
            },
        ))
    }
    .await;
    watch.abort();
    pod_watch.abort();
    sim.stop().await;
    result
}

/// What [`drive`] gathered besides the per-VMI times.
struct Collected {
    create_wall: Duration,
    wall: Duration,
    running: usize,
    timed_out: bool,
    writes: Option<u64>,
    processes: Vec<ProcessFigures>,
    sim: SimReport,
    warmup: Duration,
    cleanup: Option<Duration>,
    leftover: usize,
}

impl StoreResult {
    fn new(
        store: StoreKind,
        p: &Params,
        names: &[String],
        tl: &HashMap<String, VmiTimes>,
        sim: &HashMap<String, SimTimes>,
        c: Collected,
    ) -> StoreResult {
        let empty = VmiTimes::default();
        let empty_sim = SimTimes::default();
        let both = |from: &dyn Fn(&VmiTimes, &SimTimes) -> Option<Instant>,
                    to: &dyn Fn(&VmiTimes, &SimTimes) -> Option<Instant>| {
            names
                .iter()
                .filter_map(|n| {
                    let t = tl.get(n).unwrap_or(&empty);
                    let s = sim.get(n).unwrap_or(&empty_sim);
                    Some(signed_ms(from(t, s)?, to(t, s)?))
                })
                .collect::<Vec<f64>>()
        };
        let mut per_node: BTreeMap<String, usize> =
            c.sim.running_per_node.keys().map(|k| (k.clone(), 0)).collect();
        for n in names {
            if let Some(s) = sim.get(n).filter(|s| s.running_written.is_some()) {
                *per_node.entry(s.node.clone()).or_default() += 1;
            }
        }
        StoreResult {
            store,
            expected: names.len(),
            nodes: p.nodes,
            create: both(&|t, _| t.sent, &|t, _| t.acked),
            to_running: both(&|t, _| t.acked, &|t, _| t.running),
            to_pending: both(&|t, _| t.acked, &|t, _| t.pending),
            to_pod: both(&|t, _| t.acked, &|t, _| t.pod_created),
            pod_to_bound: both(&|t, _| t.pod_created, &|_, s| s.bound_seen),
            to_bound: both(&|t, _| t.acked, &|_, s| s.bound_seen),
            to_scheduled: both(&|t, _| t.acked, &|t, _| t.scheduled),
            bound_to_written: both(&|_, s| s.bound_seen, &|_, s| s.running_written),
            written_to_seen: both(&|_, s| s.running_written, &|t, _| t.running),
            create_wall: c.create_wall,
            wall: c.wall,
            running: c.running,
            timed_out: c.timed_out,
            writes: c.writes,
            processes: c.processes,
            per_node,
            sim: c.sim,
            warmup: c.warmup,
            cleanup: c.cleanup,
            leftover: c.leftover,
            killed: Vec::new(),
            dir: None,
        }
    }

    fn spread_line(&self) -> (usize, usize, f64) {
        let counts: Vec<usize> = self.per_node.values().copied().collect();
        let min = counts.iter().copied().min().unwrap_or(0);
        let max = counts.iter().copied().max().unwrap_or(0);
        let mean = counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64;
        (min, max, mean)
    }

    fn render(&self) -> String {
        let n = self.expected;
        let mut lines = vec![
            row("create POST: sent -> acknowledged", Spread::cells(Spread::of(&self.create), n)),
            row(
                "create acknowledged -> VMI Running (on the bench's watch)",
                Spread::cells(Spread::of(&self.to_running), n),
            ),
            Line::Section("where the time went (from create acknowledged unless said)".into()),
            row(
                "-> VMI Pending (controller made the launcher Pod)",
                Spread::cells(Spread::of(&self.to_pending), n),
            ),
            row(
                "-> launcher Pod created (on the bench's Pod watch)",
                Spread::cells(Spread::of(&self.to_pod), n),
            ),
            row(
                "-> launcher Pod bound, seen by its simulated node",
                Spread::cells(Spread::of(&self.to_bound), n),
            ),
            row(
                "Pod created -> Pod bound seen (scheduler)",
                Spread::cells(Spread::of(&self.pod_to_bound), n),
            ),
            row(
                "-> VMI Scheduled (controller saw the binding)",
                Spread::cells(Spread::of(&self.to_scheduled), n),
            ),
            row(
                "Pod bound seen -> VMI Running written (simulated node)",
                Spread::cells(Spread::of(&self.bound_to_written), n),
            ),
            row(
                "VMI Running written -> seen on the bench's watch",
                Spread::cells(Spread::of(&self.written_to_seen), n),
            ),
        ];
        let mut out = table::render(&["latency per VMI (ms)", "n", "p50", "p90", "p99", "max"], &lines);

        let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        lines = vec![
            row(
                "VMIs Running",
                [format!(
                    "{}/{}{}",
                    self.running,
                    n,
                    if self.timed_out { " (timed out)" } else { "" }
                )],
            ),
            row("wall time: first create sent -> last VMI Running", [secs(self.wall)]),
            row(
                "throughput: VMIs Running per second",
                [format!("{:.1}", self.running as f64 / self.wall.as_secs_f64().max(1e-9))],
            ),
            row(
                "creates: all acknowledged after / creates per second",
                [format!(
                    "{} / {:.1}",
                    secs(self.create_wall),
                    n as f64 / self.create_wall.as_secs_f64().max(1e-9)
                )],
            ),
            row(
                "store writes (revisions) during the load: total / per VMI / per second",
                [self.writes.map_or_else(
                    || "-".into(),
                    |w| {
                        format!(
                            "{w} / {:.1} / {:.0}",
                            w as f64 / n as f64,
                            w as f64 / self.wall.as_secs_f64().max(1e-9)
                        )
                    },
                )],
            ),
            row("warm-up VMI: create -> Running -> gone", [secs(self.warmup)]),
            row(
                "clean-up: delete every VMI -> all gone",
                [self.cleanup.map_or_else(
                    || format!("not done in {CLEANUP_PATIENCE:?}: {} VMIs left", self.leftover),
                    secs,
                )],
            ),
        ];
        let (min, max, mean) = self.spread_line();
        lines.push(row(
            format!("spread over {} simulated nodes: min / max / mean VMIs", self.nodes),
            [format!("{min} / {max} / {mean:.1}")],
        ));
        out.push('\n');
        out.push_str(&table::render(&["run", ""], &lines));

        let wall = self.wall.as_secs_f64().max(1e-9);
        let proc_lines: Vec<Line> = self
            .processes
            .iter()
            .map(|f| {
                row(
                    format!("{} (pid {})", f.label, f.pid),
                    [
                        table::mib(f.rss_end_kib),
                        table::mib(f.rss_peak_kib),
                        f.cpu_load_secs.map_or_else(|| "-".into(), |c| format!("{c:.1}")),
                        f.cpu_load_secs
                            .map_or_else(|| "-".into(), |c| format!("{:.0}%", 100.0 * c / wall)),
                    ],
                )
            })
            .collect();
        out.push('\n');
        out.push_str(&table::render(
            &[
                "process",
                "RSS, all Running (MiB)",
                "RSS peak (MiB)",
                "CPU s during load",
                "of one core",
            ],
            &proc_lines,
        ));

        out.push('\n');
        let counts: Vec<String> = self.per_node.values().map(usize::to_string).collect();
        out.push_str(&format!("VMIs per simulated node: {}\n", counts.join(" ")));
        out.push_str(&format!(
            "simulated nodes: {} VMI status writes conflicted (409, written again); {} Pod deletions confirmed; {} API errors{}\n",
            self.sim.conflicts,
            self.sim.deletions_confirmed,
            self.sim.errors,
            if self.sim.first_errors.is_empty() {
                String::new()
            } else {
                format!(", first: {}", self.sim.first_errors.join("; "))
            }
        ));
        out.push_str(
            "VMI Scheduled: counted only where the controller wrote it before the simulated node wrote Running \
             (a VMI may go Scheduling -> Running); the node's Running write then conflicts with the controller's \
             writes (409) and is read and written again.\n",
        );
        out.push_str(
            "notes: times are arrivals on this process's watches and acknowledgements of its requests, one clock; \
             RSS peak is the higher of VmHWM after clean-up and VmRSS sampled every 250 ms (the bench process's VmHWM is reset at the start of each store); \
             CPU s: user+system from the first create to the last VMI Running.\n",
        );
        if !self.killed.is_empty() {
            out.push_str(&format!(
                "stopping: {} did not exit within 10 s of SIGINT and were killed\n",
                self.killed.join(", ")
            ));
        }
        if let Some(dir) = &self.dir {
            out.push_str(&format!("logs kept in {}\n", dir.display()));
        }
        out
    }
}

/// The stores side by side.
fn compare(results: &[StoreResult]) -> String {
    let mut header = vec![""];
    header.extend(results.iter().map(|r| r.store.label()));
    let per = |f: &dyn Fn(&StoreResult) -> String| results.iter().map(f).collect::<Vec<_>>();
    let spread = |r: &StoreResult| Spread::of(&r.to_running);
    let fig = |g: fn(&Spread) -> f64| {
        move |r: &StoreResult| spread(r).map_or_else(|| "-".into(), |s| crate::report::ms(g(&s)))
    };
    let mut lines = vec![
        Line::Section("create acknowledged -> VMI Running (ms)".into()),
        row("p50", per(&fig(|s| s.p50))),
        row("p90", per(&fig(|s| s.p90))),
        row("p99", per(&fig(|s| s.p99))),
        row("max", per(&fig(|s| s.max))),
        row(
            "VMIs Running",
            per(&|r| format!("{}/{}", r.running, r.expected)),
        ),
        Line::Section("throughput".into()),
        row("wall time (s)", per(&|r| format!("{:.1}", r.wall.as_secs_f64()))),
        row(
            "VMIs Running per second",
            per(&|r| format!("{:.1}", r.running as f64 / r.wall.as_secs_f64().max(1e-9))),
        ),
        row(
            "creates per second",
            per(&|r| format!("{:.1}", r.expected as f64 / r.create_wall.as_secs_f64().max(1e-9))),
        ),
        row(
            "store writes during load (per VMI)",
            per(&|r| {
                r.writes.map_or_else(
                    || "-".into(),
                    |w| format!("{w} ({:.1})", w as f64 / r.expected as f64),
                )
            }),
        ),
        row(
            "create POST p50 / p99 (ms)",
            per(&|r| {
                Spread::of(&r.create).map_or_else(
                    || "-".into(),
                    |s| format!("{} / {}", crate::report::ms(s.p50), crate::report::ms(s.p99)),
                )
            }),
        ),
        row(
            "spread per node min / max",
            per(&|r| {
                let (min, max, _) = r.spread_line();
                format!("{min} / {max}")
            }),
        ),
        Line::Section("memory: RSS all Running / peak (MiB); CPU s during load".into()),
    ];
    let mut labels: Vec<&str> = Vec::new();
    for r in results {
        for f in &r.processes {
            if !labels.contains(&f.label.as_str()) {
                labels.push(&f.label);
            }
        }
    }
    for label in labels {
        lines.push(row(
            label,
            per(&|r| {
                r.processes.iter().find(|f| f.label == label).map_or_else(
                    || "-".into(),
                    |f| {
                        format!(
                            "{} / {}; {}",
                            table::mib(f.rss_end_kib),
                            table::mib(f.rss_peak_kib),
                            f.cpu_load_secs.map_or_else(|| "-".into(), |c| format!("{c:.1} s"))
                        )
                    },
                )
            }),
        ));
    }
    table::render(&header, &lines)
}

/// Poll `done` every 50 ms until it holds or `patience` runs out.
async fn wait_until(patience: Duration, what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out after {patience:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Wait until every VMI of `names` is Running or `timeout` runs out, reporting progress on
/// stderr; returns how many ran and whether it timed out.
async fn wait_running(
    label: &str,
    names: &[String],
    tl: &Timeline,
    since: Instant,
    timeout: Duration,
) -> (usize, bool) {
    let mut last_report = Instant::now();
    loop {
        let counts = {
            let tl = lock(tl);
            let mut c = [0usize; 5];
            for n in names {
                let Some(t) = tl.get(n) else { continue };
                c[0] += usize::from(t.acked.is_some());
                c[1] += usize::from(t.pending.is_some());
                c[2] += usize::from(t.scheduling.is_some());
                c[3] += usize::from(t.scheduled.is_some());
                c[4] += usize::from(t.running.is_some());
            }
            c
        };
        if counts[4] == names.len() {
            return (counts[4], false);
        }
        if since.elapsed() > timeout {
            eprintln!("[{label}] timed out after {timeout:?}: {}/{} VMIs Running", counts[4], names.len());
            return (counts[4], true);
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "[{label}] {:>5.0} s: created {}, seen Pending {}, Scheduling {}, Scheduled {}, Running {} of {}",
                since.elapsed().as_secs_f64(),
                counts[0],
                counts[1],
                counts[2],
                counts[3],
                counts[4],
                names.len()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POST every VMI, recording when each was sent and acknowledged; returns from the first sent
/// to the last acknowledged.
async fn create_all(
    api: Api<VirtualMachineInstance>,
    names: Vec<String>,
    memory: String,
    rate: Option<f64>,
    concurrency: usize,
    tl: Timeline,
) -> anyhow::Result<Duration> {
    let manifests: Arc<Vec<VirtualMachineInstance>> = Arc::new(
        names
            .iter()
            .map(|n| serde_json::from_value(vmi_manifest(n, &memory)))
            .collect::<Result<_, _>>()
            .context("the benchmark VMI is not a valid VirtualMachineInstance")?,
    );
    let create_one = move |api: Api<VirtualMachineInstance>, i: usize| {
        let (tl, manifests) = (tl.clone(), manifests.clone());
        async move {
            let name = manifests[i].metadata.name.clone().unwrap_or_default();
            lock(&tl).entry(name.clone()).or_default().sent = Some(Instant::now());
            api.create(&PostParams::default(), &manifests[i])
                .await
                .with_context(|| format!("creating VMI {name}"))?;
            lock(&tl).entry(name).or_default().acked = Some(Instant::now());
            anyhow::Ok(())
        }
    };
    let began = Instant::now();
    match rate {
        None => {
            crate::load::closed_loop(names.len(), vec![api; concurrency], create_one).await?;
        }
        Some(rate) => {
            let t0 = tokio::time::Instant::now();
            let mut creates = JoinSet::new();
            for i in 0..names.len() {
                tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / rate)).await;
                creates.spawn(create_one(api.clone(), i));
            }
            while let Some(r) = creates.join_next().await {
                r.context("a create task panicked")??;
            }
        }
    }
    Ok(began.elapsed())
}

/// DELETE every VMI of `names`, `concurrency` at a time (a VMI already gone is fine).
async fn delete_all(
    api: &Api<VirtualMachineInstance>,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<()> {
    let names = Arc::new(names.to_vec());
    crate::load::closed_loop(names.len(), vec![api.clone(); concurrency], move |api, i| {
        let names = names.clone();
        async move {
            match api.delete(&names[i], &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(e).with_context(|| format!("deleting VMI {}", names[i])),
            }
        }
    })
    .await
    .context("deleting the VMIs")?;
    Ok(())
}

/// Records, per VMI name, when each phase first arrived and when the VMI was deleted.
async fn watch_vmis(
    api: Api<VirtualMachineInstance>,
    tl: Timeline,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut stream =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = stream.next().await {
        let now = Instant::now();
        match event {
            Ok(Event::Apply(vmi) | Event::InitApply(vmi)) => {
                let Some(name) = vmi.metadata.name.clone() else { continue };
                let phase = vmi.status.as_ref().and_then(|s| s.phase);
                let mut tl = lock(&tl);
                let t = tl.entry(name).or_default();
                // A later phase arriving first (two writes between two events) also stands for
                // the earlier ones it implies, except Scheduled/Scheduling: the node may write
                // Running before the controller writes Scheduled.
                match phase {
                    Some(Phase::Pending) => {
                        t.pending.get_or_insert(now);
                    }
                    Some(Phase::Scheduling) => {
                        t.pending.get_or_insert(now);
                        t.scheduling.get_or_insert(now);
                    }
                    Some(Phase::Scheduled) => {
                        t.pending.get_or_insert(now);
                        t.scheduled.get_or_insert(now);
                    }
                    Some(Phase::Running) => {
                        t.pending.get_or_insert(now);
                        t.running.get_or_insert(now);
                    }
                    _ => {}
                }
            }
            Ok(Event::Delete(vmi)) => {
                if let Some(name) = vmi.metadata.name {
                    lock(&tl).entry(name).or_default().deleted.get_or_insert(now);
                }
            }
            Ok(Event::InitDone) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            _ => {}
        }
    }
}

/// Keep the highest VmRSS seen of each of `pids` in `max`, every 250 ms, until aborted.
async fn sample_rss(pids: Vec<u32>, max: Arc<Mutex<Vec<u64>>>) {
    loop {
        for (i, pid) in pids.iter().enumerate() {
            if let Some((rss, _)) = procfs::rss_and_peak_kib(*pid) {
                let mut m = lock(&max);
                m[i] = m[i].max(rss);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The store's current revision: the resourceVersion of a list (one global counter of writes).
async fn revision(api: &Api<VirtualMachineInstance>) -> Option<u64> {
    api.list(&ListParams::default().limit(1))
        .await
        .ok()?
        .metadata
        .resource_version?
        .parse()
        .ok()
}

/// Records when each VMI's launcher Pod first arrived (the controller created it).
async fn watch_launcher_pods(
    api: Api<Pod>,
    tl: Timeline,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let config = watcher::Config::default().labels(&format!(
        "{}={}",
        LAUNCHER_LABEL.0, LAUNCHER_LABEL.1
    ));
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    while let Some(event) = stream.next().await {
        let now = Instant::now();
        match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                let vmi = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DOMAIN_ANNOTATION));
                if let Some(vmi) = vmi {
                    lock(&tl).entry(vmi.clone()).or_default().pod_created.get_or_insert(now);
                }
            }
            Ok(Event::InitDone) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            _ => {}
        }
    }
}

/// The 1, 5 and 15 minute load averages (other work on the machine shows here).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmi_is_valid_and_asks_for_the_memory() {
        let v = vmi_manifest(&vmi_name(7), "64Mi");
        let vmi: VirtualMachineInstance = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(vmi.metadata.name.as_deref(), Some("scale-vmi-00007"));
        assert_eq!(v["spec"]["domain"]["resources"]["requests"]["memory"], "64Mi");
        assert!(vmi_name(999) < vmi_name(1000));
    }

    #[test]
    fn rates_take_a_unit_or_not() {
        assert_eq!(parse_rate("50"), Ok(50.0));
        assert_eq!(parse_rate("12.5/s"), Ok(12.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn signed_ms_is_negative_when_the_second_came_first() {
        let a = Instant::now();
        let b = a + Duration::from_millis(4);
        assert!((signed_ms(a, b) - 4.0).abs() < 1e-9);
        assert!((signed_ms(b, a) + 4.0).abs() < 1e-9);
    }
}
