//! # SIMULATED HYPERVISOR: FOR `ferrovirt-bench scale` ONLY. IT NEVER RUNS A VM.
//!
//! This module exists for one purpose: to load ferrovirt's control plane (API server, controller,
//! scheduler, store) with many nodes and many VMIs on a machine that cannot run a thousand guests.
//! It plays N node agents inside the benchmark process and *pretends* that every launcher Pod
//! bound to one of its nodes started a guest at once. No launcher, no QEMU, no disk, no network,
//! no cgroup: nothing is started, pulled or written on the host. Every test of VM behaviour uses
//! the real node agent (`ferrovirt node`) and real QEMU; nothing outside the benchmark crate may
//! use this module.
//!
//! What it does, through the real API with kube-rs, as the real node agent
//! (`ferrovirt_node::agent`) would:
//!
//! ```text
//!  per simulated node sim-node-NN (label ferrovirt.io/simulated=true, its own kube client):
//!    register the Node ........... ferrovirt_node::register::node_object (64 CPUs, 256 GiB,
//!                                  110 pods, Ready), created once
//!    keep it alive ............... ferrovirt_node::register::keep_alive: Lease in kube-node-lease
//!                                  renewed every 10 s, Node Ready heartbeat every 60 s
//!    watch Pods spec.nodeName=NN . for each new launcher Pod (at most 4 at a time, like the
//!                                  agent's 4 workers):
//!        GET the VMI ─► ferrovirt_node::status::vmi_status (launcher "Running", kvm) ─►
//!        merge patch pinned to its resourceVersion (409: read again, decide again) ─►
//!        ferrovirt_node::status::pod_status (Running, Ready) + a made-up podIP ─► patch status
//!    Pod with a deletionTimestamp ─► DELETE it with grace 0 (uid precondition): the "guest" is
//!                                  gone at once, so the controller can drop the VMI finalizer
//! ```
//!
//! What it does not do: prepare anything or wait for a boot (the real agent writes spec.json,
//! starts a launcher and reports Running seconds later; here the Pod goes from bound to Running
//! in one VMI write and one Pod write), report addresses of a real guest (the IP and MAC are made
//! up), pause, console, VNC, migration, fencing, or images in `status.images`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrovirt_api::kubevirt::VirtualMachineInstance;
use ferrovirt_launcher::spec::{LauncherPhase, LauncherState};
use ferrovirt_node::decide::{is_launcher_pod, CREATED_BY_LABEL, DOMAIN_ANNOTATION};
use ferrovirt_node::host::HostInfo;
use ferrovirt_node::register::{self, Accel, Advertised};
use ferrovirt_node::status::{self, COMPUTE_CONTAINER};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodIP};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The label every simulated Node carries.
pub const SIMULATED_LABEL: (&str, &str) = ("ferrovirt.io/simulated", "true");
/// How often each simulated node renews its Lease (the node lifecycle controller marks a node
/// NotReady after 40 s without a renewal).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Launcher Pods one simulated node handles at once (the real agent's default worker count).
pub const WORKERS_PER_NODE: usize = 4;
/// How often a status write is tried when it keeps conflicting with other writers.
const WRITE_ATTEMPTS: usize = 10;
/// Errors kept for the report (the rest are only counted).
const KEPT_ERRORS: usize = 5;

/// Name of the `i`-th simulated node: `sim-node-00`, `sim-node-01`, ...
pub fn node_name(i: usize) -> String {
    format!("sim-node-{i:02}")
}

/// The made-up host of every simulated node: big enough that room never limits the benchmark.
fn simulated_host(name: &str) -> HostInfo {
    HostInfo {
        memory_bytes: 256 << 30,
        cpus: 64,
        kernel_version: "simulated".into(),
        os_image: "ferrovirt-bench simulated hypervisor (runs no VMs)".into(),
        hostname: name.into(),
    }
}

/// The Node object of simulated node `index`: the real agent's [`register::node_object`] on a
/// made-up host, labelled [`SIMULATED_LABEL`] (pure).
pub fn node_object(index: usize, now: &str) -> anyhow::Result<Node> {
    let name = node_name(index);
    let accel = Accel {
        kvm: true,
        reason: "simulated hypervisor of ferrovirt-bench scale: no guest ever runs here".into(),
    };
    let mut node = register::node_object(
        &name,
        &simulated_host(&name),
        &accel,
        &Advertised::address(&node_address(index)),
        now,
    );
    node["metadata"]["labels"][SIMULATED_LABEL.0] = json!(SIMULATED_LABEL.1);
    node["metadata"]["labels"]["ferrovirt.io/accel"] = json!("simulated");
    serde_json::from_value(node).with_context(|| format!("the simulated Node {name} is not valid"))
}

/// The made-up InternalIP of simulated node `index` (TEST-NET-1, never routed).
fn node_address(index: usize) -> String {
    format!("192.0.2.{}", index % 250 + 1)
}

/// The made-up pod IP and MAC of the `k`-th guest of simulated node `index`.
fn guest_addresses(index: usize, k: usize) -> (String, String) {
    let k = k + 1;
    let (hi, lo) = ((k >> 8) & 0xff, k & 0xff);
    (
        format!("10.{}.{hi}.{lo}", 100 + index % 150),
        format!("02:5a:{:02x}:{:02x}:{hi:02x}:{lo:02x}", index & 0xff, (index >> 8) & 0xff),
    )
}

/// What a simulated node saw and did for one VMI (all `Instant`s of the benchmark process).
#[derive(Debug, Clone, Default)]
pub struct SimTimes {
    /// The node name.
    pub node: String,
    /// The launcher Pod, bound to the node, arrived on the node's watch.
    pub bound_seen: Option<Instant>,
    /// The VMI status patch saying Running was acknowledged.
    pub running_written: Option<Instant>,
}

/// Counters of the whole simulated hypervisor.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// VMIs brought to Running, per node (every node listed, 0 included).
    pub running_per_node: BTreeMap<String, usize>,
    /// VMI status writes that hit a 409 (another writer, usually the controller, came first).
    pub conflicts: usize,
    /// Pod deletions confirmed (grace 0).
    pub deletions_confirmed: usize,
    /// Failed API calls, and the first few of them.
    pub errors: usize,
    pub first_errors: Vec<String>,
}

#[derive(Default)]
struct Shared {
    times: Mutex<HashMap<String, SimTimes>>,
    running_per_node: Mutex<BTreeMap<String, usize>>,
    conflicts: AtomicUsize,
    deletions: AtomicUsize,
    errors: AtomicUsize,
    first_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut kept = lock(&self.first_errors);
        if kept.len() < KEPT_ERRORS {
            kept.push(what);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// N simulated node agents running in this process; dropping it stops them all.
pub struct SimHypervisor {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl SimHypervisor {
    /// Register `nodes` simulated Nodes with their Leases and start their agents. Each node gets
    /// its own client (connections) from `config`, as separate node agents would.
    pub async fn start(config: &kube::Config, nodes: usize) -> anyhow::Result<SimHypervisor> {
        let shared = Arc::new(Shared::default());
        let mut tasks = JoinSet::new();
        let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        for index in 0..nodes {
            let name = node_name(index);
            let client = Client::try_from(config.clone())
                .context("cannot build a kube client for a simulated node")?;
            let api: Api<Node> = Api::all(client.clone());
            api.create(&PostParams::default(), &node_object(index, &now)?)
                .await
                .with_context(|| format!("registering simulated node {name}"))?;
            register::renew_lease(&client, &name)
                .await
                .with_context(|| format!("taking the Lease of simulated node {name}"))?;
            lock(&shared.running_per_node).insert(name.clone(), 0);
            tasks.spawn(register::keep_alive(
                client.clone(),
                name.clone(),
                LEASE_RENEW,
                Arc::new(Mutex::new(Instant::now())),
            ));
            tasks.spawn(node_agent(client, index, shared.clone()));
        }
        Ok(SimHypervisor { shared, tasks })
    }

    /// What the simulated nodes saw and did, per VMI name.
    pub fn times(&self) -> HashMap<String, SimTimes> {
        lock(&self.shared.times).clone()
    }

    /// The counters so far.
    pub fn report(&self) -> SimReport {
        SimReport {
            running_per_node: lock(&self.shared.running_per_node).clone(),
            conflicts: self.shared.conflicts.load(Ordering::Relaxed),
            deletions_confirmed: self.shared.deletions.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
            first_errors: lock(&self.shared.first_errors).clone(),
        }
    }

    /// Stop every simulated node agent (their Nodes and Leases stay in the API).
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// One simulated node agent: watch the Pods bound to the node, "start" each new launcher Pod,
/// confirm the deletion of each deleted one.
async fn node_agent(client: Client, index: usize, shared: Arc<Shared>) {
    let name = node_name(index);
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={name}"));
    let workers = Arc::new(Semaphore::new(WORKERS_PER_NODE));
    // Pod UIDs started, and being deleted, by this node.
    let mut started: HashSet<String> = HashSet::new();
    let mut deleting: HashSet<String> = HashSet::new();
    let mut guests = 0usize;
    let mut running = JoinSet::new();
    let stream = watcher(pods, config).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let arrived = Instant::now();
        while running.try_join_next().is_some() {}
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    started.remove(uid);
                    deleting.remove(uid);
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                shared.error(format!("{name}: watching pods failed: {e}"));
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else { continue };
        if !is_launcher_pod(&pod) {
            continue;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            if deleting.insert(uid) {
                let (client, shared, workers) = (client.clone(), shared.clone(), workers.clone());
                running.spawn(async move {
                    let _permit = workers.acquire_owned().await;
                    confirm_deletion(&client, &pod, &shared).await;
                });
            }
            continue;
        }
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        if finished || !started.insert(uid) {
            continue;
        }
        if let Some(vmi) = vmi_name(&pod) {
            lock(&shared.times).insert(
                vmi.to_owned(),
                SimTimes {
                    node: name.clone(),
                    bound_seen: Some(arrived),
                    running_written: None,
                },
            );
        }
        let addresses = guest_addresses(index, guests);
        guests += 1;
        let (client, shared, workers, name) =
            (client.clone(), shared.clone(), workers.clone(), name.clone());
        running.spawn(async move {
            let _permit = workers.acquire_owned().await;
            if let Err(e) = start_guest(&client, &name, index, &pod, addresses, &shared).await {
                shared.error(format!("{name}: {e:#}"));
            }
        });
    }
}

fn vmi_name(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(DOMAIN_ANNOTATION)
        .map(String::as_str)
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// "Start" the guest of `pod`: write VMI Running (the real agent's builder, its conflict rule),
/// then Pod Running and Ready.
async fn start_guest(
    client: &Client,
    node: &str,
    index: usize,
    pod: &Pod,
    (ip, mac): (String, String),
    shared: &Shared,
) -> anyhow::Result<()> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let Some(name) = vmi_name(pod) else {
        anyhow::bail!("pod {namespace}/{pod_name} has no {DOMAIN_ANNOTATION} annotation");
    };
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == COMPUTE_CONTAINER))
        .and_then(|c| c.image.clone());
    let now = Timestamp::now();
    let state = LauncherState {
        phase: LauncherPhase::Running,
        reason: String::new(),
        message: String::new(),
        qemu_pid: None,
        kvm: true,
        since: now.to_string(),
        mac: Some(mac),
        ip: Some(ip.clone()),
    };

    // The VMI first, as the real agent does.
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), namespace);
    let created_by = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CREATED_BY_LABEL));
    let mut written = false;
    for _ in 0..WRITE_ATTEMPTS {
        let Some(vmi) = vmis
            .get_opt(name)
            .await
            .with_context(|| format!("reading VMI {namespace}/{name}"))?
        else {
            return Ok(());
        };
        if created_by.is_some_and(|uid| Some(uid) != vmi.metadata.uid.as_ref()) {
            return Ok(());
        }
        let current = vmi.status.clone().unwrap_or_default();
        let Some(next) =
            status::vmi_status(&current, &vmi.spec, &state, node, image.as_deref(), now)
        else {
            written = true;
            break;
        };
        let rv = vmi.metadata.resource_version.as_deref().unwrap_or_default();
        let patch = status::vmi_status_patch(rv, &current, &next);
        match vmis
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                written = true;
                break;
            }
            Err(e) if is_code(&e, 409) => {
                shared.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if is_code(&e, 404) => return Ok(()),
            Err(e) => {
                return Err(e).with_context(|| format!("writing the status of VMI {namespace}/{name}"))
            }
        }
    }
    anyhow::ensure!(
        written,
        "the status of VMI {namespace}/{name} kept changing under the simulated node ({WRITE_ATTEMPTS} conflicts)"
    );
    let written_at = Instant::now();
    if let Some(t) = lock(&shared.times).get_mut(name) {
        t.running_written.get_or_insert(written_at);
    }
    *lock(&shared.running_per_node)
        .entry(node.to_owned())
        .or_default() += 1;

    // Then the Pod: Running, Ready, with the made-up address.
    if let Some(mut next) = status::pod_status(
        pod.status.as_ref(),
        image.as_deref().unwrap_or_default(),
        Some(&state),
        None,
        &node_address(index),
        now,
    ) {
        next.pod_ip = Some(ip.clone());
        next.pod_ips = Some(vec![PodIP { ip }]);
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        match pods
            .patch_status(
                pod_name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": next })),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_code(&e, 404) => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("writing the status of pod {namespace}/{pod_name}"))
            }
        }
    }
    Ok(())
}

/// The guest of a deleted Pod is "stopped" at once: confirm the deletion with grace 0.
async fn confirm_deletion(client: &Client, pod: &Pod, shared: &Shared) {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => {
            shared.deletions.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) if is_code(&e, 404) || is_code(&e, 409) => {}
        Err(e) => shared.error(format!("deleting pod {namespace}/{name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_nodes_say_so_and_have_room() {
        let node = node_object(3, "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(node.metadata.name.as_deref(), Some("sim-node-03"));
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels[SIMULATED_LABEL.0], "true");
        assert_eq!(labels["ferrovirt.io/accel"], "simulated");
        let status = node.status.unwrap();
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        let alloc = status.allocatable.unwrap();
        assert_eq!(alloc["pods"].0, "110");
        assert_eq!(alloc["cpu"].0, "64");
    }

    #[test]
    fn names_and_made_up_addresses_are_distinct() {
        assert_eq!(node_name(0), "sim-node-00");
        assert_eq!(node_name(19), "sim-node-19");
        let a = guest_addresses(1, 0);
        let b = guest_addresses(1, 1);
        let c = guest_addresses(2, 0);
        assert!(a != b && a != c && b != c);
        assert_eq!(a.0, "10.101.0.1");
        assert_eq!(guest_addresses(1, 299).1, "02:5a:01:00:01:2c");
    }
}
