//! The node agent's loop: watch the Pods bound to this node, look at every pod folder often, and
//! carry out what [`decide`] says.
//!
//! ```text
//!  watch Pods (spec.nodeName=<node>) ──► reflector store ──┐
//!                                      └─ events: uid ──────┤
//!  every poll: uids of launcher Pods + folders in pods/ ────┼─► WorkQueue ─► workers:
//!                                                           │     read_local(folder) + Pod from store
//!  keep_alive: Lease + Node heartbeat                       │     decide(pod, local, now) -> actions
//!                                                           │     execute each (API / files / signals)
//! ```
//!
//! Launchers run in their own sessions and keep their state in their folders, so the agent holds
//! nothing that matters in memory: after a restart it reads the folders again, adopts the running
//! launchers and brings the status up to date. Folders are judged ownerless only once the store
//! holds a complete list of the Pods, and a live launcher is stopped for a missing Pod only after
//! the API server confirms the Pod is gone.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferrovirt_api::kubevirt::VirtualMachineInstance;
use ferrovirt_launcher::spec::{write_atomic, LauncherPhase, LauncherState, SPEC_FILE, STATE_FILE};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use crate::decide::{decide, is_launcher_pod, LauncherProcess, LocalState, NodeAction, CREATED_BY_LABEL, DOMAIN_ANNOTATION};
use crate::endpoint::{Endpoint, EndpointSettings};
use crate::host::HostInfo;
use crate::launch::{launch_spec, referenced_secrets, secret_values, spawn_detached, LaunchSettings, LauncherCommand, SpawnError};
use crate::local::{self, RemoveError};
use crate::queue::WorkQueue;
use crate::register::{self, Accel, Advertised};
use crate::status::{self, COMPUTE_CONTAINER};

/// How long the KVM probe may take to boot its guest.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the cached containerDisks are listed into the Node's `status.images`.
pub const IMAGES_REFRESH: Duration = Duration::from_secs(5);
/// A status already written is checked against the API server again after this long.
pub const REPORT_REFRESH: Duration = Duration::from_secs(10);
/// Fencing time by default: the node lifecycle controller's 40 s NotReady grace.
pub const DEFAULT_FENCE_AFTER: Duration = Duration::from_secs(40);
/// Longest pause before a pod folder whose actions failed is looked at again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a node agent runs.
#[derive(Clone)]
pub struct NodeConfig {
    /// The Node's name.
    pub name: String,
    pub client: Client,
    /// This node's own folder: pods under `pods/<pod uid>/`, the image cache under `images/`.
    pub data_dir: PathBuf,
    /// How to start a launcher (`ferrovirt launcher`); `--dir <pod folder>` is appended.
    pub launcher_command: LauncherCommand,
    pub qemu_binary: PathBuf,
    /// The InternalIP the Node reports (and the Pods' hostIP).
    pub address: String,
    /// Registries the launchers may pull containerDisks from over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Folders hostDisk volumes may live in.
    pub allowed_host_disk_dirs: Vec<PathBuf>,
    pub cgroup_root: PathBuf,
    /// Use KVM (`Some(true)`), TCG (`Some(false)`), or probe (`None`).
    pub kvm: Option<bool>,
    /// How often every pod folder is looked at (the launcher's `state.json` is polled).
    pub poll_interval: Duration,
    /// Pod folders handled at once.
    pub workers: usize,
    /// The endpoint the API server reaches for pause, console, ... (none: those subresources
    /// answer that the node cannot be reached).
    pub endpoint: Option<EndpointSettings>,
    /// Kill every guest when the Lease could not be renewed for this long (fencing), so that a
    /// node cut off from the control plane never runs a VM that is restarted elsewhere. `None`
    /// turns fencing off (a single machine, where nothing restarts VMs elsewhere).
    pub fence_after: Option<Duration>,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("data_dir", &self.data_dir)
            .field("launcher_command", &self.launcher_command)
            .field("qemu_binary", &self.qemu_binary)
            .field("address", &self.address)
            .field("kvm", &self.kvm)
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// A configuration with the defaults: `qemu-system-x86_64` from `PATH`, address 127.0.0.1,
    /// `/sys/fs/cgroup`, KVM probed, a poll every 300 ms, 4 workers.
    pub fn new(name: impl Into<String>, client: Client, data_dir: impl Into<PathBuf>, launcher_command: LauncherCommand) -> Self {
        NodeConfig {
            name: name.into(),
            client,
            data_dir: data_dir.into(),
            launcher_command,
            qemu_binary: "qemu-system-x86_64".into(),
            address: "127.0.0.1".into(),
            insecure_registries: Vec::new(),
            allowed_host_disk_dirs: Vec::new(),
            cgroup_root: "/sys/fs/cgroup".into(),
            kvm: None,
            poll_interval: Duration::from_millis(300),
            workers: 4,
            endpoint: None,
            fence_after: Some(DEFAULT_FENCE_AFTER),
        }
    }

    /// `<data_dir>/pods`: one folder per launcher Pod.
    pub fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("pods")
    }

    /// `<data_dir>/images`: the containerDisk cache.
    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }
}

/// Why carrying out an action failed; the pod folder is looked at again after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{what} failed: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} failed: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    Remove(#[from] RemoveError),
    #[error("{0}")]
    NotReady(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ActionError {
    let what = what.into();
    move |source| ActionError::Api { what, source }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ActionError {
    let what = what.into();
    move |source| ActionError::Io { what, source }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Run the node agent until it fails: register the Node, keep its Lease, run the launchers of
/// the Pods bound to it and report their status.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(config.pods_dir()).with_context(|| format!("cannot create {}", config.pods_dir().display()))?;
    std::fs::create_dir_all(config.images_dir()).with_context(|| format!("cannot create {}", config.images_dir().display()))?;
    let accel = match config.kvm {
        Some(kvm) => Accel { kvm, reason: format!("KVM {} by the node agent's configuration", if kvm { "enabled" } else { "disabled" }) },
        None => {
            let probe = ferrovirt_launcher::probe_accel(&config.qemu_binary, PROBE_TIMEOUT).await;
            Accel { kvm: probe.kvm_usable, reason: probe.reason }
        }
    };
    info!(node = %config.name, kvm = accel.kvm, reason = %accel.reason, "acceleration");
    let endpoint = match &config.endpoint {
        Some(settings) => Some(
            Endpoint::bind(settings, config.pods_dir(), std::slice::from_ref(&config.address))
                .await
                .context("cannot start the node endpoint")?,
        ),
        None => None,
    };
    let advertised = Advertised {
        address: config.address.clone(),
        endpoint: endpoint.as_ref().map(|e| e.published.clone()),
        fence_after: config.fence_after,
    };
    register_until_done(&config, &accel, &advertised).await?;

    let (store, writer) = reflector::store::<Pod>();
    let agent = Arc::new(Agent {
        settings: LaunchSettings {
            kvm: accel.kvm,
            qemu_binary: config.qemu_binary.clone(),
            cache_dir: config.images_dir(),
            insecure_registries: config.insecure_registries.clone(),
            allowed_host_disk_dirs: config.allowed_host_disk_dirs.clone(),
            cgroup_root: config.cgroup_root.clone(),
        },
        config,
        store,
        synced: AtomicBool::new(false),
        fenced: AtomicBool::new(false),
        reported: Mutex::new(HashMap::new()),
        backoff: Mutex::new(HashMap::new()),
    });
    let queue = Arc::new(WorkQueue::default());

    // Dropping the set (the run future ends or is dropped) stops every task.
    let mut tasks: JoinSet<&'static str> = JoinSet::new();
    let renewed = Arc::new(Mutex::new(Instant::now()));
    let renew_every = agent.config.fence_after.map_or(register::RENEW, |f| register::RENEW.min(f / 4));
    tasks.spawn({
        let (client, name, renewed) = (agent.config.client.clone(), agent.config.name.clone(), renewed.clone());
        async move {
            register::keep_alive(client, name, renew_every, renewed).await;
            "lease"
        }
    });
    if let Some(after) = agent.config.fence_after {
        tasks.spawn(fence(agent.clone(), renewed, after));
    }
    if let Some(endpoint) = endpoint {
        tasks.spawn(endpoint.serve());
    }
    tasks.spawn({
        let agent = agent.clone();
        async move {
            let mut last = None;
            let mut tick = tokio::time::interval(IMAGES_REFRESH);
            loop {
                tick.tick().await;
                match register::report_images(&agent.config.client, &agent.config.name, &agent.config.images_dir(), last.clone()).await {
                    Ok(now) => last = Some(now),
                    Err(e) => debug!(error = %e, "reporting cached images failed"),
                }
            }
        }
    });
    tasks.spawn(watch_pods(agent.clone(), queue.clone(), writer));
    tasks.spawn(sweep(agent.clone(), queue.clone()));
    for _ in 0..agent.config.workers.max(1) {
        let (agent, queue) = (agent.clone(), queue.clone());
        tasks.spawn(async move {
            loop {
                let uid = queue.next().await;
                agent.handle(&uid).await;
                queue.done(&uid);
            }
        });
    }
    match tasks.join_next().await {
        Some(Ok(task)) => anyhow::bail!("the node agent's {task} task ended"),
        Some(Err(e)) => Err(anyhow::Error::new(e).context("a node agent task failed")),
        None => Ok(()),
    }
}

async fn register_until_done(config: &NodeConfig, accel: &Accel, adv: &Advertised) -> anyhow::Result<()> {
    let host = HostInfo::read();
    let mut attempt = 0;
    loop {
        match register::register(&config.client, &config.name, &host, accel, adv).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 30 => {
                warn!(node = %config.name, error = %e, "registering the node failed; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.context(format!("cannot register node {}", config.name))),
        }
    }
}

async fn watch_pods(agent: Arc<Agent>, queue: Arc<WorkQueue>, writer: Writer<Pod>) -> &'static str {
    let pods: Api<Pod> = Api::all(agent.config.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", agent.config.name));
    let stream = reflector::reflector(writer, watcher(pods, config).default_backoff());
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref().filter(|u| local::is_uid(u)) {
                    queue.add(uid);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if !agent.synced.swap(true, Ordering::SeqCst) {
                    info!(node = %agent.config.name, pods = agent.store.len(), "pods bound to this node listed");
                }
                agent.enqueue_all(&queue);
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(e) => warn!(node = %agent.config.name, error = %e, "watching pods failed; retrying"),
        }
    }
    "pod watch"
}

/// Fencing: when the Lease has not been renewed for `after`, kill every launcher and QEMU of this
/// node (by PID, checked against the folder) and start nothing until a renewal succeeds. The node
/// lifecycle controller fails this node's VMIs only later (see `ferrovirt_controller::node_lifecycle`),
/// so a VM restarted elsewhere never runs beside its old self.
async fn fence(agent: Arc<Agent>, renewed: Arc<Mutex<Instant>>, after: Duration) -> &'static str {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let since = lock(&renewed).elapsed();
        if since < after {
            if agent.fenced.swap(false, Ordering::SeqCst) {
                info!(node = %agent.config.name, "the Lease is renewed again: fencing lifted");
            }
            continue;
        }
        if !agent.fenced.swap(true, Ordering::SeqCst) {
            warn!(node = %agent.config.name, since = ?since, "the Lease could not be renewed: fencing, killing every guest of this node");
        }
        for entry in std::fs::read_dir(agent.config.pods_dir()).into_iter().flatten().flatten() {
            let dir = entry.path();
            if !entry.file_name().to_str().is_some_and(local::is_uid) {
                continue;
            }
            let local = local::read_local(&dir);
            if let crate::decide::LauncherProcess::Alive { pid } = local.launcher {
                local::kill_launcher(&dir, pid);
                warn!(dir = %dir.display(), pid, "fenced: launcher and QEMU killed");
            } else if local::kill_leftover_qemu(&dir, local.state.as_ref()) {
                warn!(dir = %dir.display(), "fenced: QEMU killed");
            }
        }
    }
}

async fn sweep(agent: Arc<Agent>, queue: Arc<WorkQueue>) -> &'static str {
    let mut tick = tokio::time::interval(agent.config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if agent.synced.load(Ordering::SeqCst) {
            agent.enqueue_all(&queue);
        }
    }
}

/// What was last written for a pod, so an unchanged state is not written again and again.
struct Reported {
    state: Option<LauncherState>,
    at: Instant,
}

struct Agent {
    config: NodeConfig,
    settings: LaunchSettings,
    store: Store<Pod>,
    /// The store holds a complete list (folders without a Pod may be judged).
    synced: AtomicBool,
    /// The Lease could not be renewed for the fencing time: every guest was killed, and nothing
    /// starts until a renewal succeeds.
    fenced: AtomicBool,
    reported: Mutex<HashMap<String, Reported>>,
    backoff: Mutex<HashMap<String, (u32, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or_default(), pod.metadata.name.as_deref().unwrap_or_default())
}

fn compute_image(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.containers.iter().find(|c| c.name == COMPUTE_CONTAINER)?.image.as_deref()
}

impl Agent {
    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.config.pods_dir().join(uid)
    }

    fn enqueue_all(&self, queue: &WorkQueue) {
        for pod in self.store.state() {
            if let Some(uid) = pod.metadata.uid.as_deref().filter(|u| local::is_uid(u) && is_launcher_pod(&pod)) {
                queue.add(uid);
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.config.pods_dir()) {
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_str().filter(|n| local::is_uid(n)) {
                    queue.add(name);
                }
            }
        }
    }

    /// Look at one pod folder and do what [`decide`] says.
    async fn handle(&self, uid: &str) {
        if !self.synced.load(Ordering::SeqCst) {
            return;
        }
        if lock(&self.backoff).get(uid).is_some_and(|(_, until)| Instant::now() < *until) {
            return;
        }
        let pod = self.store.find(|p| p.metadata.uid.as_deref() == Some(uid));
        let dir = self.pod_dir(uid);
        let local = local::read_local(&dir);
        let now = Timestamp::now();
        let actions = decide(pod.as_deref(), &local, now);
        if actions.is_empty() {
            return;
        }
        let key = pod.as_deref().map(pod_key).unwrap_or_else(|| "(no pod)".into());
        let span = tracing::info_span!("pod", node = %self.config.name, pod = %key, uid = %uid);
        async {
            for action in actions {
                debug!(?action, "carrying out");
                if let Err(e) = self.execute(pod.as_deref(), uid, &dir, &local, &action, now).await {
                    let mut backoff = lock(&self.backoff);
                    let failures = backoff.get(uid).map_or(0, |(n, _)| *n) + 1;
                    let delay = Duration::from_millis(500u64.saturating_mul(1 << failures.min(6))).min(MAX_BACKOFF);
                    backoff.insert(uid.to_string(), (failures, Instant::now() + delay));
                    warn!(error = %e, retry_in = ?delay, "node action failed");
                    return;
                }
            }
            lock(&self.backoff).remove(uid);
        }
        .instrument(span)
        .await
    }

    async fn execute(
        &self,
        pod: Option<&Pod>,
        uid: &str,
        dir: &Path,
        local: &LocalState,
        action: &NodeAction,
        now: Timestamp,
    ) -> Result<(), ActionError> {
        match (action, pod) {
            (NodeAction::WriteSpec, Some(pod)) => self.write_spec(pod, dir, now).await,
            (NodeAction::StartLauncher, Some(_)) if self.fenced.load(Ordering::SeqCst) => {
                Err(ActionError::NotReady("the node is fenced (it cannot renew its Lease); nothing starts".into()))
            }
            (NodeAction::StartLauncher, Some(_)) => self.start_launcher(dir),
            (NodeAction::ReportStatus(state), Some(pod)) => self.report(pod, uid, local, state.as_ref(), now).await,
            (NodeAction::RecordFinalState(state), _) => {
                write_state(dir, state)?;
                local::kill_leftover_qemu(dir, Some(state));
                warn!(reason = %state.reason, message = %state.message, "launcher ended without a final state; VM failed");
                Ok(())
            }
            (NodeAction::RequestStop { grace_seconds }, _) => {
                let LauncherProcess::Alive { pid } = local.launcher else { return Ok(()) };
                if pod.is_none() && self.pod_still_bound_here(dir).await? {
                    return Ok(());
                }
                let sent = local::request_stop(dir, pid, *grace_seconds, now)
                    .await
                    .map_err(io_err(format!("asking the launcher in {} to stop", dir.display())))?;
                info!(pid, grace_seconds, ?sent, "asked the launcher to stop");
                Ok(())
            }
            (NodeAction::KillLauncher { pid }, _) => {
                if pod.is_none() && self.pod_still_bound_here(dir).await? {
                    return Ok(());
                }
                let killed = local::kill_launcher(dir, *pid);
                warn!(pid, killed, "the launcher outlived its grace period; killed");
                Ok(())
            }
            (NodeAction::RemoveFolder, _) => {
                local::remove_pod_dir(dir)?;
                lock(&self.reported).remove(uid);
                info!(dir = %dir.display(), "pod folder removed");
                Ok(())
            }
            (NodeAction::DeletePod, Some(pod)) => self.delete_pod(pod).await,
            (_, None) => Ok(()),
        }
    }

    /// Whether the Pod a folder without a Pod in the store was made for still exists and is bound
    /// here (the store lags behind): then nothing is stopped.
    async fn pod_still_bound_here(&self, dir: &Path) -> Result<bool, ActionError> {
        let Some(spec) = local::read_spec(dir) else { return Ok(false) };
        let pods: Api<Pod> = Api::namespaced(self.config.client.clone(), &spec.pod_namespace);
        let pod = pods.get_opt(&spec.pod_name).await.map_err(api_err(format!("reading pod {}/{}", spec.pod_namespace, spec.pod_name)))?;
        Ok(pod.is_some_and(|p| {
            p.metadata.uid.as_deref() == Some(spec.pod_uid.as_str())
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(self.config.name.as_str())
        }))
    }

    /// Write `spec.json`: the VMI, its Secrets and the Pod's limits. A Pod whose VMI is missing
    /// or replaced fails (a final state is written instead); a missing Secret is waited for.
    async fn write_spec(&self, pod: &Pod, dir: &Path, now: Timestamp) -> Result<(), ActionError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let fail = |message: String| {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
            warn!(%message, "cannot prepare the launcher");
            write_state(dir, &prepare_failed(self.settings.kvm, message, now))
        };
        let Some(vmi_name) = pod.metadata.annotations.as_ref().and_then(|a| a.get(DOMAIN_ANNOTATION)) else {
            return fail(format!("the pod has no {DOMAIN_ANNOTATION} annotation naming its VirtualMachineInstance"));
        };
        let vmis: Api<VirtualMachineInstance> = Api::namespaced(self.config.client.clone(), &namespace);
        let Some(vmi) = vmis.get_opt(vmi_name).await.map_err(api_err(format!("reading VMI {namespace}/{vmi_name}")))? else {
            return fail(format!("VirtualMachineInstance {namespace}/{vmi_name} does not exist"));
        };
        let created_by = pod.metadata.labels.as_ref().and_then(|l| l.get(CREATED_BY_LABEL));
        if created_by.is_some_and(|uid| Some(uid) != vmi.metadata.uid.as_ref()) {
            return fail(format!("VirtualMachineInstance {namespace}/{vmi_name} was replaced by another one of the same name"));
        }
        let secrets_api: Api<Secret> = Api::namespaced(self.config.client.clone(), &namespace);
        let mut secrets = BTreeMap::new();
        for name in referenced_secrets(&vmi) {
            match secrets_api.get_opt(&name).await.map_err(api_err(format!("reading secret {namespace}/{name}")))? {
                Some(secret) => {
                    secrets.insert(name, secret_values(&secret));
                }
                None => {
                    return Err(ActionError::NotReady(format!(
                        "secret {namespace}/{name}, used by VirtualMachineInstance {vmi_name}, does not exist; waiting for it"
                    )))
                }
            }
        }
        let spec = launch_spec(pod, &vmi, secrets, &self.settings)
            .map_err(|e| io_err("encoding spec.json")(std::io::Error::other(e)))?;
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let bytes = serde_json::to_vec_pretty(&spec).map_err(|e| io_err("encoding spec.json")(std::io::Error::other(e)))?;
        write_atomic(&dir.join(SPEC_FILE), &bytes).map_err(io_err(format!("writing {}", dir.join(SPEC_FILE).display())))
    }

    fn start_launcher(&self, dir: &Path) -> Result<(), ActionError> {
        // Checked again right here: never a second launcher, never one over an existing state.
        if local::launcher_pid(dir).is_some() || ferrovirt_launcher::spec::read_state(dir).is_some() {
            return Ok(());
        }
        if !dir.join(SPEC_FILE).is_file() {
            return Err(ActionError::NotReady(format!("{} has no {SPEC_FILE}", dir.display())));
        }
        let pid = spawn_detached(&self.config.launcher_command, dir)?;
        info!(pid, dir = %dir.display(), "launcher started");
        Ok(())
    }

    async fn report(&self, pod: &Pod, uid: &str, local: &LocalState, state: Option<&LauncherState>, now: Timestamp) -> Result<(), ActionError> {
        if lock(&self.reported)
            .get(uid)
            .is_some_and(|r| r.state.as_ref() == state && r.at.elapsed() < REPORT_REFRESH)
        {
            return Ok(());
        }
        // The VMI first: the controller fails a VMI whose Pod ended before the VMI ran.
        if let Some(state) = state {
            self.report_vmi(pod, state, now).await?;
        }
        let pid = match local.launcher {
            LauncherProcess::Alive { pid } | LauncherProcess::Exited { pid } => Some(pid),
            LauncherProcess::NeverStarted => None,
        };
        // A Pod being deleted gets no more status: it is about to go (and the API server removes
        // a deleting object without finalizers on any write to it).
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if let Some(next) = status::pod_status(pod.status.as_ref(), compute_image(pod).unwrap_or_default(), state, pid, &self.config.address, now)
            .filter(|_| !deleting)
        {
            let pods: Api<Pod> = Api::namespaced(self.config.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            match pods.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": next }))).await {
                Ok(_) => debug!(phase = ?next.phase, "pod status written"),
                Err(e) if is_code(&e, 404) => {}
                Err(e) => return Err(api_err(format!("writing the status of pod {}", pod_key(pod)))(e)),
            }
        }
        lock(&self.reported).insert(uid.to_string(), Reported { state: state.cloned(), at: Instant::now() });
        Ok(())
    }

    async fn report_vmi(&self, pod: &Pod, state: &LauncherState, now: Timestamp) -> Result<(), ActionError> {
        let Some(name) = pod.metadata.annotations.as_ref().and_then(|a| a.get(DOMAIN_ANNOTATION)) else { return Ok(()) };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let vmis: Api<VirtualMachineInstance> = Api::namespaced(self.config.client.clone(), namespace);
        let created_by = pod.metadata.labels.as_ref().and_then(|l| l.get(CREATED_BY_LABEL));
        for _ in 0..5 {
            let Some(vmi) = vmis.get_opt(name).await.map_err(api_err(format!("reading VMI {namespace}/{name}")))? else {
                return Ok(());
            };
            if created_by.is_some_and(|uid| Some(uid) != vmi.metadata.uid.as_ref()) {
                return Ok(()); // a newer VMI of the same name; this Pod is not its
            }
            let current = vmi.status.clone().unwrap_or_default();
            let Some(next) = status::vmi_status(&current, &vmi.spec, state, &self.config.name, compute_image(pod), now) else {
                return Ok(());
            };
            let rv = vmi.metadata.resource_version.as_deref().unwrap_or_default();
            let patch = status::vmi_status_patch(rv, &current, &next);
            match vmis.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    info!(vmi = %name, phase = ?next.phase, "VMI status written");
                    return Ok(());
                }
                Err(e) if is_code(&e, 409) => continue,
                Err(e) if is_code(&e, 404) => return Ok(()),
                Err(e) => return Err(api_err(format!("writing the status of VMI {namespace}/{name}"))(e)),
            }
        }
        Err(ActionError::NotReady(format!("the status of VMI {namespace}/{name} kept changing under the node agent")))
    }

    async fn delete_pod(&self, pod: &Pod) -> Result<(), ActionError> {
        let pods: Api<Pod> = Api::namespaced(self.config.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match pods.delete(pod.metadata.name.as_deref().unwrap_or_default(), &params).await {
            Ok(_) => {
                info!("pod deleted");
                Ok(())
            }
            Err(e) if is_code(&e, 404) || is_code(&e, 409) => Ok(()),
            Err(e) => Err(api_err(format!("deleting pod {}", pod_key(pod)))(e)),
        }
    }
}

fn write_state(dir: &Path, state: &LauncherState) -> Result<(), ActionError> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| io_err("encoding state.json")(std::io::Error::other(e)))?;
    write_atomic(&dir.join(STATE_FILE), &bytes).map_err(io_err(format!("writing {}", dir.join(STATE_FILE).display())))
}

fn prepare_failed(kvm: bool, message: String, now: Timestamp) -> LauncherState {
    LauncherState {
        phase: LauncherPhase::Failed,
        reason: "PrepareFailed".into(),
        message,
        qemu_pid: None,
        kvm,
        since: now.to_string(),
        mac: None,
        ip: None,
    }
}
