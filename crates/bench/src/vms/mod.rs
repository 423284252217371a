//! `ferrovirt-bench vms`: how long real VMs take from `create` to a booted guest, where that time
//! goes, what the same guest takes in plain QEMU with the launcher's own arguments, and how much
//! memory each process holds.
//!
//! ```text
//!  guest (scripts/build-guest.sh) ─push─▶ docker-registry on 127.0.0.1
//!  ferrovirt up (temp data dir: API server + controller + scheduler + node agent, one process)
//!     │  N × POST VirtualMachine (runStrategy Always, containerDisk, cloud-init echoing a marker),
//!     │  `interval` apart; t0 of each VM = just before its POST
//!     ├─ watch VMIs (kube-rs watcher) ............ VMI created, Scheduled, Running
//!     └─ poll <node>/pods/<uid>/ every 20 ms ...... spec.json (pod folder), state.json (QEMU pid,
//!                                                   Running), serial.log (first byte, boot line, marker)
//!  RSS of ferrovirt up, each launcher, each QEMU; the launcher's QEMU argv from /proc/<pid>/cmdline;
//!  plain folders prepared from the pod folder (overlay on the same cached image, cloud-init copy)
//!  SIGINT ferrovirt up (it stops its VMs), sweep leftovers by PID
//!  plain QEMU with the same argv (paths moved, -S dropped): 1 alone, then N `interval` apart,
//!     reading the serial socket ourselves ......... first byte, boot line, marker; RSS
//! ```
//!
//! The orchestration overhead is ferrovirt's create → marker minus plain QEMU's spawn → marker,
//! percentile by percentile, against plain QEMU at the same pace (same CPU contention) and alone.

pub mod argv;
pub mod console;
pub mod plain;
pub mod procfs;
pub mod table;
pub mod up;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrovirt_api::kubevirt::{
    VirtualMachine, VirtualMachineInstance, VirtualMachineInstancePhase,
};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_launcher::spec::{self, LaunchSpec, LauncherPhase};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::{json, Value};

use console::Scan;
use table::{Line, Row, Spread};

/// The node `ferrovirt up` runs.
pub const NODE: &str = "node1";
/// The line the test guest prints on its serial console once its init runs.
pub const BOOTED: &str = "ferrovirt-guest: booted";
/// How long VMs that the node has no room for are waited for once all others have booted.
const UNPLACED_PATIENCE: Duration = Duration::from_secs(30);
/// How often the pod folders are looked at.
const POLL: Duration = Duration::from_millis(20);
const NAMESPACE: &str = "default";
const IMAGE: &str = "ferrovirt/guest:latest";

/// What one run measures.
#[derive(Debug, Clone)]
pub struct Params {
    pub count: usize,
    /// From one VM's create to the next one's.
    pub interval: Duration,
    /// Guest memory (`resources.requests.memory`).
    pub memory: String,
    /// `resources.requests.cpu` and `resources.limits.cpu` of each VM, if given (otherwise the
    /// controller's defaults).
    pub cpu: CpuResources,
    /// How long the VMs (and again the plain QEMUs) may take to show their marker.
    pub timeout: Duration,
}

/// CPU requests and limits put in the VM's `spec.template.spec.domain.resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuResources {
    pub request: Option<String>,
    pub limit: Option<String>,
}

impl CpuResources {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.request {
            parts.push(format!(", cpu request {r}"));
        }
        if let Some(l) = &self.limit {
            parts.push(format!(", cpu limit {l}"));
        }
        parts.concat()
    }
}

/// Name of the `i`-th VM.
pub fn vm_name(i: usize) -> String {
    format!("bench-vm-{i}")
}

/// The line the VM's cloud-init user-data prints: `$((6*7))` makes sure it is the script's output
/// that is seen, not an echo of the script.
pub fn marker(vm: &str) -> String {
    format!("ferrovirt-bench marker {vm} 42")
}

/// The VirtualMachine posted for `name`.
pub fn vm_manifest(name: &str, image: &str, memory: &str, cpu: &CpuResources) -> Value {
    let mut resources = json!({ "requests": { "memory": memory } });
    if let Some(request) = &cpu.request {
        resources["requests"]["cpu"] = json!(request);
    }
    if let Some(limit) = &cpu.limit {
        resources["limits"] = json!({ "cpu": limit });
    }
    let words = marker(name);
    let script_words = words.trim_end_matches(" 42");
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": { "name": name, "namespace": NAMESPACE, "labels": { "app": "ferrovirt-bench" } },
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": { "labels": { "kubevirt.io/vm": name } },
                "spec": {
                    "domain": {
                        "devices": { "disks": [
                            { "name": "containerdisk", "disk": { "bus": "virtio" } },
                            { "name": "cloudinitdisk", "disk": { "bus": "virtio" } }
                        ] },
                        "resources": resources
                    },
                    "terminationGracePeriodSeconds": 30,
                    "volumes": [
                        { "name": "containerdisk", "containerDisk": { "image": image } },
                        { "name": "cloudinitdisk", "cloudInitNoCloud": {
                            "userData": format!("#!/bin/sh\necho \"{script_words} $((6*7))\"\n")
                        } }
                    ]
                }
            }
        }
    })
}

/// When each step of one VM happened (all `Instant`s of this process).
#[derive(Debug, Clone, Default)]
pub struct VmTimes {
    pub created: Option<Instant>,
    pub vmi_seen: Option<Instant>,
    pub vmi_scheduled: Option<Instant>,
    pub vmi_running: Option<Instant>,
    pub pod_dir: Option<PathBuf>,
    pub folder: Option<Instant>,
    pub launcher_pid: Option<u32>,
    pub qemu_pid: Option<u32>,
    /// `qemu.log` exists: the launcher has prepared the disks and is spawning QEMU.
    pub qemu_spawned: Option<Instant>,
    /// `qmp.sock` exists: QEMU has initialised and listens for QMP.
    pub qmp_up: Option<Instant>,
    /// `state.json` says Running: QMP connected, console attached, `cont` sent.
    pub qemu_running: Option<Instant>,
    pub first_byte: Option<Instant>,
    pub booted: Option<Instant>,
    pub marker: Option<Instant>,
}

type Timeline = Arc<Mutex<BTreeMap<String, VmTimes>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds from `from` to `to` of every VM that has both.
pub fn deltas<T>(
    items: &[T],
    from: impl Fn(&T) -> Option<Instant>,
    to: impl Fn(&T) -> Option<Instant>,
) -> Vec<f64> {
    items
        .iter()
        .filter_map(|t| Some(to(t)?.saturating_duration_since(from(t)?).as_secs_f64() * 1e3))
        .collect()
}

fn mib(kib: &[u64]) -> Vec<f64> {
    kib.iter().map(|k| *k as f64 / 1024.0).collect()
}

/// Runs the benchmark and prints its table.
pub async fn run(p: &Params) -> anyhow::Result<()> {
    anyhow::ensure!(p.count > 0, "--count must be at least 1");
    let disk = up::guest_disk()?;
    let binary = up::ferrovirt_binary()?;
    let load_before = load_average();
    eprintln!(
        "starting a registry on loopback and pushing {}",
        disk.display()
    );
    let registry = RegistryProcess::start()
        .context("cannot start docker-registry (scripts/install-test-deps.sh)")?;
    registry
        .push_disk_file(IMAGE, &disk)
        .await
        .context("pushing the guest")?;
    let image = registry.image(IMAGE);

    // Short names: the pod folders hold Unix sockets (at most 107 bytes).
    let data = tempfile::Builder::new().prefix("fvb-").tempdir()?;
    let plain_root = tempfile::Builder::new().prefix("fvb-plain-").tempdir()?;
    eprintln!("starting ferrovirt up on {}", data.path().display());
    let mut up = up::UpProcess::start(&binary, data.path(), NODE)?;
    let client = client(&up.kubeconfig).await?;
    let node = wait_node_ready(&client, Duration::from_secs(180))
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n--- ferrovirt up log ---\n{}", up.log_tail(30)))?;
    eprintln!("node {NODE} is Ready (accel {})", node.accel);

    let names: Vec<String> = (0..p.count).map(vm_name).collect();
    let timeline: Timeline = Arc::new(Mutex::new(
        names
            .iter()
            .map(|n| (n.clone(), VmTimes::default()))
            .collect(),
    ));

    // Watch VMIs from before the first create.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(watch_vmis(
        Api::namespaced(client.clone(), NAMESPACE),
        timeline.clone(),
        ready_tx,
    ));
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .context("the VMI watch did not start")?
        .ok();
    let stop_poll = Arc::new(AtomicBool::new(false));
    let poller = {
        let (pods, tl, stop) = (up.pods_dir(), timeline.clone(), stop_poll.clone());
        std::thread::spawn(move || poll_folders(&pods, &tl, &stop))
    };

    // Create the VMs, `interval` apart.
    eprintln!(
        "creating {} VMs {} ms apart",
        p.count,
        p.interval.as_millis()
    );
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), NAMESPACE);
    let t0 = tokio::time::Instant::now();
    let mut creates = tokio::task::JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        tokio::time::sleep_until(t0 + p.interval * i as u32).await;
        let vm: VirtualMachine =
            serde_json::from_value(vm_manifest(name, &image, &p.memory, &p.cpu))?;
        let (vms, tl, name) = (vms.clone(), timeline.clone(), name.clone());
        creates.spawn(async move {
            lock(&tl).entry(name.clone()).or_default().created = Some(Instant::now());
            vms.create(&PostParams::default(), &vm)
                .await
                .with_context(|| format!("creating {name}"))
        });
    }
    while let Some(r) = creates.join_next().await {
        r??;
    }

    // Wait for every marker, or until the VMs not yet placed have had `UNPLACED_PATIENCE` since
    // the others finished (the node has no room for them: their requests exceed what it offers).
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut placed_done_at: Option<Instant> = None;
    let mut never_placed = 0;
    let all_done = loop {
        let (running, marked, unplaced) = {
            let tl = lock(&timeline);
            let marked = tl.values().filter(|t| t.marker.is_some()).count();
            let unplaced_rest = marked > 0
                && tl
                    .values()
                    .filter(|t| t.marker.is_none())
                    .all(|t| t.pod_dir.is_none() && t.vmi_scheduled.is_none());
            (
                tl.values().filter(|t| t.vmi_running.is_some()).count(),
                marked,
                unplaced_rest.then(|| tl.values().filter(|t| t.pod_dir.is_none()).count()),
            )
        };
        if marked == p.count {
            break true;
        }
        match unplaced {
            Some(k) => {
                let since = *placed_done_at.get_or_insert_with(Instant::now);
                if since.elapsed() > UNPLACED_PATIENCE {
                    never_placed = k;
                    eprintln!("{k} VMs were not placed on the node {UNPLACED_PATIENCE:?} after the others booted: not waiting for them");
                    break false;
                }
            }
            None => placed_done_at = None,
        }
        if started.elapsed() > p.timeout {
            eprintln!("timed out after {:?}: {marked}/{} VMs showed their marker\n--- ferrovirt up log ---\n{}", p.timeout, p.count, up.log_tail(20));
            break false;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {:>4.0} s: {running}/{} VMIs Running, {marked}/{} markers",
                started.elapsed().as_secs_f64(),
                p.count,
                p.count
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Memory, limits and the launcher's QEMU command line, while everything runs.
    let up_rss = up.pid().and_then(procfs::rss_kib);
    let mut launcher_rss = Vec::new();
    let mut qemu_rss = Vec::new();
    let mut recorded = None;
    let mut launch_spec: Option<LaunchSpec> = None;
    let mut recorded_vm = String::new();
    for name in &names {
        let t = lock(&timeline).get(name).cloned().unwrap_or_default();
        let Some(dir) = t.pod_dir.clone() else {
            continue;
        };
        let dir_str = dir.to_string_lossy().into_owned();
        if let Some(pid) = t
            .launcher_pid
            .filter(|p| procfs::alive_and_names(*p, &dir_str))
        {
            launcher_rss.extend(procfs::rss_kib(pid));
        }
        if let Some(pid) = spec::read_state(&dir)
            .and_then(|s| s.qemu_pid)
            .filter(|p| procfs::alive_and_names(*p, &dir_str))
        {
            qemu_rss.extend(procfs::rss_kib(pid));
            if recorded.is_none() {
                match plain::Recorded::read(pid, &dir) {
                    Ok(r) => {
                        recorded = Some(r);
                        recorded_vm = name.clone();
                        launch_spec = std::fs::read(dir.join(spec::SPEC_FILE))
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok());
                    }
                    Err(e) => eprintln!("cannot read the QEMU command line of {name}: {e:#}"),
                }
            }
        }
    }

    // Plain folders, prepared from the pod folder while it exists.
    let mut plain_dirs = Vec::new();
    if let Some(rec) = &recorded {
        for i in 0..=p.count {
            let dir = plain_root.path().join(if i == 0 {
                "alone".to_owned()
            } else {
                format!("p{}", i - 1)
            });
            std::fs::create_dir_all(&dir)?;
            rec.prepare(&dir)
                .await
                .with_context(|| format!("preparing {}", dir.display()))?;
            plain_dirs.push(dir);
        }
    }

    // Stop ferrovirt: SIGINT stops its VMs; leftovers are swept by PID.
    stop_poll.store(true, Ordering::Relaxed);
    let _ = poller.join();
    watch.abort();
    let stopped = tokio::task::block_in_place(|| up.stop());
    let times: Vec<VmTimes> = lock(&timeline).values().cloned().collect();
    let cgroups_left: Vec<PathBuf> = times
        .iter()
        .filter_map(|t| t.pod_dir.as_ref()?.file_name().map(|u| u.to_owned()))
        .flat_map(|uid| {
            ["", "memory", "cpu", "cpu,cpuacct", "pids", "unified"].map(|c| {
                Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join("ferrovirt")
                    .join(&uid)
            })
        })
        .filter(|p| p.exists())
        .collect();

    // Plain QEMU: alone on a quiet machine, then N at the same pace.
    let mut alone = Vec::new();
    let mut paced = Vec::new();
    if let Some(rec) = &recorded {
        let needles = [BOOTED.to_owned(), marker(&recorded_vm)];
        eprintln!("plain QEMU: 1 alone");
        alone = plain::boot(rec, &plain_dirs[..1], p.interval, &needles, p.timeout).await?;
        eprintln!(
            "plain QEMU: {} started {} ms apart",
            p.count,
            p.interval.as_millis()
        );
        paced = plain::boot(rec, &plain_dirs[1..], p.interval, &needles, p.timeout).await?;
    }

    // The table.
    let n = p.count;
    let mut lines = vec![Line::Section(format!(
        "ferrovirt: {n} VMs, from each VM's create (ms)"
    ))];
    type Pick = fn(&VmTimes) -> Option<Instant>;
    let steps: [(&str, Pick); 10] = [
        ("VMI created (controller)", |t| t.vmi_seen),
        ("pod folder written (scheduler, node agent)", |t| t.folder),
        ("VMI Scheduled", |t| t.vmi_scheduled),
        ("launcher spawns QEMU (image pulled, disks ready)", |t| {
            t.qemu_spawned
        }),
        ("QEMU listens on QMP (QEMU initialised)", |t| t.qmp_up),
        ("launcher Running (QMP, console, cont)", |t| t.qemu_running),
        ("VMI Running (seen on the watch)", |t| t.vmi_running),
        ("first console byte (serial.log)", |t| t.first_byte),
        ("boot line \"ferrovirt-guest: booted\"", |t| t.booted),
        ("cloud-init marker", |t| t.marker),
    ];
    for (label, pick) in steps {
        lines.push(Line::Row(Row::new(
            label,
            n,
            &deltas(&times, |t| t.created, pick),
        )));
    }
    let guest_part = deltas(&times, |t| t.qemu_running, |t| t.marker);
    lines.push(Line::Row(Row::new(
        "of which the guest: launcher Running -> marker",
        n,
        &guest_part,
    )));

    let plain_rows =
        |lines: &mut Vec<Line>, what: &str, boots: &[plain::PlainBoot], expected: usize| {
            let since =
                |f: fn(&plain::PlainBoot) -> Option<Instant>| deltas(boots, |b| Some(b.spawned), f);
            lines.push(Line::Row(Row::new(
                format!("{what}: serial socket connected"),
                expected,
                &since(|b| b.connected),
            )));
            lines.push(Line::Row(Row::new(
                format!("{what}: first console byte"),
                expected,
                &since(|b| b.scan.first_byte),
            )));
            lines.push(Line::Row(Row::new(
                format!("{what}: boot line"),
                expected,
                &since(|b| b.scan.found[0]),
            )));
            lines.push(Line::Row(Row::new(
                format!("{what}: cloud-init marker"),
                expected,
                &since(|b| b.scan.found[1]),
            )));
        };
    let marker_spread = |boots: &[plain::PlainBoot]| {
        Spread::of(&deltas(boots, |b| Some(b.spawned), |b| b.scan.found[1]))
    };
    if recorded.is_some() {
        lines.push(Line::Section(
            "plain QEMU, the launcher's argv (-S dropped): from spawn (ms)".into(),
        ));
        plain_rows(&mut lines, "1 alone", &alone, 1);
        plain_rows(
            &mut lines,
            &format!("{n}, {} ms apart", p.interval.as_millis()),
            &paced,
            n,
        );
        let ferro = Spread::of(&deltas(&times, |t| t.created, |t| t.marker));
        let overhead = |plain: Option<Spread>| ferro.zip(plain).map(|(f, q)| f.minus(&q));
        lines.push(Line::Section(
            "orchestration overhead: ferrovirt create->marker minus plain spawn->marker (ms)"
                .into(),
        ));
        lines.push(Line::Row(Row::derived(
            format!("vs plain x{n} at the same pace"),
            overhead(marker_spread(&paced)),
        )));
        lines.push(Line::Row(Row::derived(
            "vs plain x1 alone",
            overhead(marker_spread(&alone)),
        )));
    }
    lines.push(Line::Section(
        "memory: RSS (VmRSS) once every marker showed (MiB)".into(),
    ));
    let up_mib = mib(&up_rss.into_iter().collect::<Vec<_>>());
    lines.push(Line::Row(
        Row::new("ferrovirt up (all control plane + node agent)", 1, &up_mib).with_total(&up_mib),
    ));
    let l = mib(&launcher_rss);
    lines.push(Line::Row(
        Row::new("ferrovirt launcher, per VM", n, &l).with_total(&l),
    ));
    let q = mib(&qemu_rss);
    lines.push(Line::Row(
        Row::new("QEMU under ferrovirt, per VM", n, &q).with_total(&q),
    ));
    if recorded.is_some() {
        let pq = mib(&paced.iter().filter_map(|b| b.rss_kib).collect::<Vec<_>>());
        lines.push(Line::Row(
            Row::new("plain QEMU (same argv), per VM", n, &pq).with_total(&pq),
        ));
    }
    let all: Vec<f64> = up_mib.iter().chain(&l).chain(&q).copied().collect();
    lines.push(Line::Row(
        Row::derived("everything ferrovirt ran (sum)", None).with_total(&all),
    ));

    println!();
    println!(
        "ferrovirt-bench vms: {n} VMs (runStrategy Always, containerDisk from a loopback registry, cloud-init marker), created {} ms apart, guest memory {}{}",
        p.interval.as_millis(),
        p.memory,
        p.cpu.describe()
    );
    println!(
        "machine: {} CPUs, {}; load average before the run: {load_before}",
        std::thread::available_parallelism().map_or(0, usize::from),
        procfs::cpu_model()
    );
    println!(
        "node accel (label ferrovirt.io/accel): {} ({})",
        node.accel, node.probe
    );
    if let Some(rec) = &recorded {
        println!(
            "QEMU: {} ({}), launcher argv {} -S",
            rec.binary,
            qemu_version(&rec.binary),
            if rec.started_paused() {
                "has"
            } else {
                "has no"
            }
        );
    }
    if let Some(s) = &launch_spec {
        println!(
            "launcher cgroup of each VM: memory limit {}, CPU {}",
            s.memory_limit_bytes
                .map_or("none".to_owned(), |b| format!("{} MiB", b >> 20)),
            s.cpu_limit_millis
                .map_or("unlimited".to_owned(), |m| format!(
                    "{m}m = CFS quota of {:.0}% of one CPU",
                    m as f64 / 10.0
                )),
        );
    }
    println!();
    print!("{}", table::render(&lines));
    println!();
    println!("notes:");
    println!("  pod folder, QEMU spawned/running and serial.log times are polled every {} ms; VMI times come from a kube-rs watch.", POLL.as_millis());
    if never_placed > 0 {
        println!("  {never_placed} of {n} VMs were never placed on the node (VMI stayed Scheduling: their requests do not fit); counts n are out of {n}.");
    } else if !all_done {
        println!(
            "  not every VM showed its marker within {:?}: counts n are out of {n}.",
            p.timeout
        );
    }
    if let Some(b) = alone.first() {
        if let (Some(c), Some(f)) = (b.connected, b.scan.first_byte) {
            println!("  plain QEMU: serial socket connected {:.0} ms after spawn, first byte {:.0} ms after spawn.", ms_between(b.spawned, c), ms_between(b.spawned, f));
        }
    }
    println!(
        "  ferrovirt up: SIGINT -> exit {} (it stops its VMs: ACPI power button, 30 s grace); leftovers killed by PID: {}.",
        stopped.exited_after.map_or("timed out (SIGKILL)".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        stopped.swept.len()
    );
    if cgroups_left.is_empty() {
        println!("  every VM's cgroup was removed when it stopped.");
    } else {
        println!("  cgroups left behind by the launchers: {cgroups_left:?}");
    }
    drop(up);
    drop(registry);
    Ok(())
}

fn ms_between(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1e3
}

async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// What the node says about itself.
pub struct NodeInfo {
    /// `ferrovirt.io/accel`: kvm or tcg.
    pub accel: String,
    /// `ferrovirt.io/accel-probe`: why.
    pub probe: String,
}

async fn wait_node_ready(client: &Client, patience: Duration) -> anyhow::Result<NodeInfo> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(Some(node)) = nodes.get_opt(NODE).await {
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready {
                let label = |m: &Option<BTreeMap<String, String>>, k: &str| {
                    m.as_ref().and_then(|m| m.get(k).cloned())
                };
                return Ok(NodeInfo {
                    accel: label(&node.metadata.labels, "ferrovirt.io/accel")
                        .unwrap_or_else(|| "unknown".into()),
                    probe: label(&node.metadata.annotations, "ferrovirt.io/accel-probe")
                        .unwrap_or_default(),
                });
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {NODE} was not Ready within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Records when each VMI first exists, is Scheduled (or later) and is Running.
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
                let Some(name) = vmi.metadata.name.clone() else {
                    continue;
                };
                let phase = vmi.status.as_ref().and_then(|s| s.phase);
                let mut tl = lock(&tl);
                let Some(t) = tl.get_mut(&name) else { continue };
                t.vmi_seen.get_or_insert(now);
                use VirtualMachineInstancePhase as P;
                if matches!(phase, Some(P::Scheduled | P::Running)) {
                    t.vmi_scheduled.get_or_insert(now);
                }
                if matches!(phase, Some(P::Running)) {
                    t.vmi_running.get_or_insert(now);
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

/// One pod folder being followed.
struct Followed {
    vm: String,
    offset: u64,
    scan: Scan<Instant>,
}

/// Follows the pod folders (a thread of its own) until `stop`: which VM each is for, when QEMU
/// was spawned and running, and what its console printed.
fn poll_folders(pods: &Path, tl: &Timeline, stop: &AtomicBool) {
    let mut followed: HashMap<PathBuf, Followed> = HashMap::new();
    let mut ignored: HashSet<PathBuf> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        for entry in std::fs::read_dir(pods).into_iter().flatten().flatten() {
            let dir = entry.path();
            if followed.contains_key(&dir) || ignored.contains(&dir) {
                continue;
            }
            let Ok(bytes) = std::fs::read(dir.join(spec::SPEC_FILE)) else {
                continue;
            };
            let now = Instant::now();
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let vm = v["vmi"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut tl = lock(tl);
            match tl.get_mut(&vm) {
                // The first pod of each VM is measured; a replacement (runStrategy Always after a
                // failure) is not.
                Some(t) if t.pod_dir.is_none() => {
                    t.pod_dir = Some(dir.clone());
                    t.folder = Some(now);
                    let needles = [BOOTED.to_owned(), marker(&vm)];
                    followed.insert(
                        dir,
                        Followed {
                            vm,
                            offset: 0,
                            scan: Scan::new(&needles),
                        },
                    );
                }
                _ => {
                    ignored.insert(dir);
                }
            }
        }
        for (dir, f) in &mut followed {
            let launcher_pid = std::fs::read_to_string(dir.join(spec::PID_FILE))
                .ok()
                .and_then(|p| p.trim().parse().ok());
            let state = spec::read_state(dir);
            let now = Instant::now();
            let new_bytes = if f.scan.done() {
                Vec::new()
            } else {
                read_new(&dir.join(spec::SERIAL_LOG), &mut f.offset)
            };
            if !new_bytes.is_empty() {
                f.scan.feed(&new_bytes, Instant::now());
            }
            let mut tl = lock(tl);
            let Some(t) = tl.get_mut(&f.vm) else { continue };
            if t.launcher_pid.is_none() {
                t.launcher_pid = launcher_pid;
            }
            if t.qemu_spawned.is_none() && dir.join("qemu.log").exists() {
                t.qemu_spawned = Some(now);
            }
            if t.qmp_up.is_none() && dir.join("qmp.sock").exists() {
                t.qmp_up = Some(now);
            }
            if let Some(s) = state {
                if let Some(pid) = s.qemu_pid {
                    t.qemu_pid.get_or_insert(pid);
                }
                if s.phase == LauncherPhase::Running {
                    t.qemu_running.get_or_insert(now);
                }
            }
            t.first_byte = t.first_byte.or(f.scan.first_byte);
            t.booted = t.booted.or(f.scan.found[0]);
            t.marker = t.marker.or(f.scan.found[1]);
        }
        std::thread::sleep(POLL);
    }
}

/// The bytes of `path` after `offset` (from the start again if the file shrank: rotation).
fn read_new(path: &Path, offset: &mut u64) -> Vec<u8> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    if len < *offset {
        *offset = 0;
    }
    if len == *offset || f.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_ok() {
        *offset += buf.len() as u64;
    }
    buf
}

/// The 1, 5 and 15 minute load averages (other work on the machine shows here).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The first line of `<qemu> --version`.
fn qemu_version(binary: &str) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "version unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_a_valid_vm_with_the_marker_script() {
        let v = vm_manifest(
            "bench-vm-3",
            "127.0.0.1:5000/ferrovirt/guest:latest",
            "128Mi",
            &CpuResources::default(),
        );
        let vm: VirtualMachine = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(vm.metadata.name.as_deref(), Some("bench-vm-3"));
        assert_eq!(v["spec"]["runStrategy"], "Always");
        assert_eq!(
            v["spec"]["template"]["spec"]["domain"]["resources"],
            json!({"requests": {"memory": "128Mi"}})
        );
        let script = v["spec"]["template"]["spec"]["volumes"][1]["cloudInitNoCloud"]["userData"]
            .as_str()
            .unwrap();
        assert_eq!(
            script,
            "#!/bin/sh\necho \"ferrovirt-bench marker bench-vm-3 $((6*7))\"\n"
        );
        // The script's text does not contain the line its output is recognised by.
        assert!(!script.contains(&marker("bench-vm-3")));
        let cpu = CpuResources {
            request: Some("200m".into()),
            limit: Some("1".into()),
        };
        let with_cpu = vm_manifest("a", "i", "256Mi", &cpu);
        assert_eq!(
            with_cpu["spec"]["template"]["spec"]["domain"]["resources"],
            json!({"requests": {"memory": "256Mi", "cpu": "200m"}, "limits": {"cpu": "1"}})
        );
        serde_json::from_value::<VirtualMachine>(with_cpu).unwrap();
    }

    #[test]
    fn deltas_skip_missing_ends() {
        let t0 = Instant::now();
        let items = [
            (Some(t0), Some(t0 + Duration::from_millis(1500))),
            (Some(t0), None),
            (None, Some(t0)),
        ];
        let d = deltas(&items, |i| i.0, |i| i.1);
        assert_eq!(d, [1500.0]);
    }

    #[test]
    fn read_new_follows_growth_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut off = 0;
        assert!(read_new(&path, &mut off).is_empty());
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(read_new(&path, &mut off), b"abc");
        assert!(read_new(&path, &mut off).is_empty());
        std::fs::write(&path, b"abcdef").unwrap();
        assert_eq!((read_new(&path, &mut off), off), (b"def".to_vec(), 6));
        std::fs::write(&path, b"xy").unwrap();
        assert_eq!(read_new(&path, &mut off), b"xy");
    }
}
