//! The thin loop around the pure reconcilers: watches, work queues, and the I/O that carries the
//! actions out.
//!
//! ```text
//!   watch VMs ──────► store ─┐                         ┌─► VM workers  ─► reconcile_vm  ─► VM actions
//!   watch VMIs ─────► store ─┼─ events → keys → queues ┤
//!   watch launcher ─► store ─┘                         └─► VMI workers ─► reconcile_vmi ─► VMI actions
//!   pods (kubevirt.io=virt-launcher)
//! ```
//!
//! A VM key is queued when the VM or its VMI changes; a VMI key when the VMI or its launcher pod
//! changes; everything is queued again every `resync`. Each key is handled by one worker at a time.
//! Every action is idempotent: creates treat AlreadyExists as done, deletes carry a UID precondition
//! and treat NotFound as done, and writes are merge patches pinned to the resourceVersion the
//! decision was made on (a conflict means "look again").

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferrovirt_api::kubevirt::{
    vm_condition, ConditionStatus, RunStrategy, VirtualMachine, VirtualMachineInstance, VirtualMachineStatus,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::{debug, info, warn, Instrument};

use crate::conditions;
use crate::event::{Event, EventType};
use crate::launcher_pod::{LauncherSettings, APP_LABEL, APP_LABEL_VALUE, CREATED_BY_LABEL};
use crate::patch::merge_diff;
use crate::queue::WorkQueue;
use crate::replicaset::runtime::ReplicaSetController;
use crate::vm::{reconcile_vm, StartBackoff, VmAction};
use crate::vmi::{reconcile_vmi, VmiAction, FINALIZER, NODE_NAME_LABEL};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Image and scheduler of the launcher pods.
    pub launcher: LauncherSettings,
    /// Backoff of VM restarts after start failures.
    pub start_backoff: StartBackoff,
    /// Workers per controller (VMs reconciled at once; the same for VMIs).
    pub workers: usize,
    /// Every object is looked at again this often, whatever the watches say.
    pub resync: Duration,
    /// `reportingController` of the events.
    pub reporter: String,
    /// `reportingInstance` of the events (defaults to the host name).
    pub instance: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            launcher: LauncherSettings::default(),
            start_backoff: StartBackoff::default(),
            workers: 4,
            resync: Duration::from_secs(300),
            reporter: "ferrovirt-controller".into(),
            instance: None,
        }
    }
}

/// Why carrying out an action failed; the key is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The API server refused or failed a request.
    #[error("{what} failed: {source}")]
    Api {
        /// What was being done, e.g. `create VMI default/vm1`.
        what: String,
        /// The error from kube-rs.
        #[source]
        source: kube::Error,
    },
    /// The object changed since it was read: decide again on the new version.
    #[error("{0} changed meanwhile; will look again")]
    Conflict(String),
    /// A patch could not be encoded.
    #[error("cannot encode the patch for {what}: {source}")]
    Encode {
        /// What was being written.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl ObjectKey {
    fn of<K: Resource>(obj: &K) -> Option<Self> {
        Some(ObjectKey { namespace: obj.meta().namespace.clone()?, name: obj.meta().name.clone()? })
    }

    fn store_ref<K: Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ActionError {
    let what = what.into();
    move |source| match &source {
        kube::Error::Api(s) if s.code == 409 => ActionError::Conflict(what),
        _ => ActionError::Api { what, source },
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

struct Shared {
    client: Client,
    opts: Options,
    /// Who publishes events. A new `Recorder` per event: kube-rs' recorder folds repeats of a
    /// reason into one event but keeps the first note, and ferrovirt's notes differ (counts, names).
    reporter: Reporter,
    vms: Store<VirtualMachine>,
    vmis: Store<VirtualMachineInstance>,
    pods: Store<Pod>,
}

impl Shared {
    async fn publish(&self, reference: &ObjectReference, event: &Event) {
        let e = KubeEvent {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.clone(),
            note: Some(event.note.clone()),
            action: event.reason.clone(),
            secondary: None,
        };
        if let Err(err) = Recorder::new(self.client.clone(), self.reporter.clone()).publish(&e, reference).await {
            warn!(reason = %event.reason, error = %err, "could not publish an event");
        }
    }
}

/// Runs the VM and VMI controllers until the client fails for good. See [`run_until`].
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    run_until(client, opts, std::future::pending()).await
}

/// Runs the VM and VMI controllers until `shutdown` completes.
///
/// Leader election goes around this function: a replica that wins the Lease calls it with a
/// `shutdown` future that completes when the Lease is lost. Everything it starts stops with it.
pub async fn run_until(client: Client, opts: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let vm_queue: Arc<WorkQueue<ObjectKey>> = WorkQueue::new();
    let vmi_queue: Arc<WorkQueue<ObjectKey>> = WorkQueue::new();

    let (vms, vm_writer) = reflector::store::<VirtualMachine>();
    let (vmis, vmi_writer) = reflector::store::<VirtualMachineInstance>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let replicasets = ReplicaSetController::new(client.clone(), &opts, vmis.clone());

    let mut tasks = tokio::task::JoinSet::new();
    {
        let q = vm_queue.clone();
        tasks.spawn(watch_into(
            Api::<VirtualMachine>::all(client.clone()),
            watcher::Config::default(),
            vm_writer,
            move |vm| {
                if let Some(k) = ObjectKey::of(vm) {
                    q.add(k);
                }
            },
        ));
    }
    {
        let (vmq, vmiq, rsc) = (vm_queue.clone(), vmi_queue.clone(), replicasets.clone());
        tasks.spawn(watch_into(
            Api::<VirtualMachineInstance>::all(client.clone()),
            watcher::Config::default(),
            vmi_writer,
            move |vmi| {
                rsc.vmi_changed(vmi);
                if let Some(k) = ObjectKey::of(vmi) {
                    // A VM's VMI has the VM's name; VMIs of other owners find no VM and are skipped.
                    vmq.add(k.clone());
                    vmiq.add(k);
                }
            },
        ));
    }
    {
        let q = vmi_queue.clone();
        let cfg = watcher::Config::default().labels(&format!("{APP_LABEL}={APP_LABEL_VALUE}"));
        tasks.spawn(watch_into(Api::<Pod>::all(client.clone()), cfg, pod_writer, move |pod| {
            let Some(namespace) = pod.metadata.namespace.clone() else { return };
            for owner in pod.owner_references() {
                if owner.controller == Some(true) && owner.kind == "VirtualMachineInstance" {
                    q.add(ObjectKey { namespace: namespace.clone(), name: owner.name.clone() });
                }
            }
        }));
    }

    let reporter = Reporter {
        controller: opts.reporter.clone(),
        instance: opts.instance.clone().or_else(|| std::env::var("HOSTNAME").ok()),
    };
    let shared = Arc::new(Shared {
        reporter,
        client,
        opts: opts.clone(),
        vms: vms.clone(),
        vmis: vmis.clone(),
        pods: pods.clone(),
    });

    let ready = async {
        let _ = vms.wait_until_ready().await;
        let _ = vmis.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
    };
    tokio::pin!(shutdown);
    tokio::select! {
        _ = ready => {}
        _ = &mut shutdown => {
            tasks.shutdown().await;
            return Ok(());
        }
    }
    info!(workers = opts.workers, "controller caches are filled; reconciling");

    tasks.spawn(replicasets.run());
    for _ in 0..opts.workers.max(1) {
        tasks.spawn(vm_worker(shared.clone(), vm_queue.clone()));
        tasks.spawn(vmi_worker(shared.clone(), vmi_queue.clone()));
    }
    {
        let (shared, vmq, vmiq) = (shared.clone(), vm_queue.clone(), vmi_queue.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(shared.opts.resync);
            tick.tick().await;
            loop {
                tick.tick().await;
                for vm in shared.vms.state() {
                    if let Some(k) = ObjectKey::of(vm.as_ref()) {
                        vmq.add(k);
                    }
                }
                for vmi in shared.vmis.state() {
                    if let Some(k) = ObjectKey::of(vmi.as_ref()) {
                        vmiq.add(k);
                    }
                }
            }
        });
    }

    let result = tokio::select! {
        _ = &mut shutdown => Ok(()),
        Some(done) = tasks.join_next() => match done {
            Ok(()) => Err(anyhow::anyhow!("a controller task ended unexpectedly")),
            Err(e) => Err(anyhow::anyhow!("a controller task failed: {e}")),
        },
    };
    vm_queue.shut_down();
    vmi_queue.shut_down();
    tasks.shutdown().await;
    result
}

/// Keeps `writer`'s store filled from a watch and calls `on_change` for every object that is
/// added, changed, deleted or relisted. Watch errors are retried with kube-rs' default backoff.
async fn watch_into<K>(api: Api<K>, cfg: watcher::Config, writer: reflector::store::Writer<K>, on_change: impl Fn(&K))
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    let stream = watcher(api, cfg).default_backoff().reflect(writer);
    tokio::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o)) => on_change(&o),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => warn!(kind = K::kind(&()).as_ref(), error = %e, "watch failed; retrying"),
        }
    }
}

/// How a worker pass ended.
type Outcome = Result<Option<Duration>, ActionError>;

fn finish(queue: &Arc<WorkQueue<ObjectKey>>, key: ObjectKey, outcome: Outcome) {
    match outcome {
        Ok(requeue) => {
            queue.forget(&key);
            queue.done(&key);
            if let Some(d) = requeue {
                queue.add_after(key, d);
            }
        }
        Err(e) => {
            let delay = queue.failed(&key);
            match &e {
                ActionError::Conflict(_) => debug!(%key, error = %e, "retrying"),
                _ => warn!(%key, error = %e, retry_in = ?delay, "reconcile failed"),
            }
            queue.done(&key);
            queue.add_after(key, delay);
        }
    }
}

async fn vm_worker(shared: Arc<Shared>, queue: Arc<WorkQueue<ObjectKey>>) {
    while let Some(key) = queue.next().await {
        let span = tracing::info_span!("reconcile_vm", namespace = %key.namespace, name = %key.name);
        let outcome = reconcile_vm_key(&shared, &key).instrument(span).await;
        finish(&queue, key, outcome);
    }
}

async fn vmi_worker(shared: Arc<Shared>, queue: Arc<WorkQueue<ObjectKey>>) {
    while let Some(key) = queue.next().await {
        let span = tracing::info_span!("reconcile_vmi", namespace = %key.namespace, name = %key.name);
        let outcome = reconcile_vmi_key(&shared, &key).instrument(span).await;
        finish(&queue, key, outcome);
    }
}

fn resource_version<K: Resource>(obj: &K) -> Value {
    json!(obj.meta().resource_version.clone().unwrap_or_default())
}

fn encode(what: &str, v: impl serde::Serialize) -> Result<Value, ActionError> {
    serde_json::to_value(v).map_err(|source| ActionError::Encode { what: what.to_string(), source })
}

// ---------------------------------------------------------------------------------------------
// VMs

async fn reconcile_vm_key(shared: &Shared, key: &ObjectKey) -> Outcome {
    let Some(vm) = shared.vms.get(&key.store_ref()) else {
        // Deleted: the garbage collector takes its VMI.
        return Ok(None);
    };
    let vmi = shared.vmis.get(&key.store_ref());
    let actions = reconcile_vm(&vm, vmi.as_deref(), Timestamp::now(), &shared.opts.start_backoff);
    if !actions.is_empty() {
        debug!(?actions, "VM actions");
    }
    execute_vm(shared, &vm, actions).await
}

async fn execute_vm(shared: &Shared, vm: &VirtualMachine, actions: Vec<VmAction>) -> Outcome {
    let ns = vm.metadata.namespace.clone().unwrap_or_default();
    let name = vm.name_any();
    let vms: Api<VirtualMachine> = Api::namespaced(shared.client.clone(), &ns);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(shared.client.clone(), &ns);
    let reference = vm.object_ref(&());
    let mut rv = resource_version(vm);
    let mut written_status = vm.status.clone();
    let mut requeue = None;
    for action in actions {
        match action {
            VmAction::UpdateStatus(status) => {
                let what = format!("status of VM {ns}/{name}");
                let old = encode(&what, &vm.status)?;
                let new = encode(&what, &status)?;
                let Some(diff) = merge_diff(&old, &new) else { continue };
                let patch = json!({"metadata": {"resourceVersion": rv}, "status": diff});
                let updated = vms
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(api_error(format!("update {what}")))?;
                rv = resource_version(&updated);
                written_status = Some(*status);
            }
            VmAction::SetRunStrategy(strategy) => {
                let spec = if vm.spec.running.is_some() {
                    json!({"running": strategy == RunStrategy::Always})
                } else {
                    json!({"runStrategy": strategy})
                };
                let patch = json!({"metadata": {"resourceVersion": rv}, "spec": spec});
                let updated = vms
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(api_error(format!("set the run strategy of VM {ns}/{name}")))?;
                rv = resource_version(&updated);
                info!(?strategy, "start requested on a halted VM: run strategy switched");
            }
            VmAction::DeleteVmi { name: vmi_name, uid } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                    ..Default::default()
                };
                match vmis.delete(&vmi_name, &params).await {
                    Ok(_) => {
                        info!(vmi = %vmi_name, "deleted the VMI");
                        let note =
                            format!("Stopped the virtual machine by deleting the virtual machine instance {uid}");
                        shared.publish(&reference, &Event::normal("SuccessfulDelete", note)).await;
                    }
                    // Gone already, or a newer VMI took the name: the observed one is gone either way.
                    Err(e) if is_code(&e, 404) || is_code(&e, 409) => {}
                    Err(e) => {
                        let note = format!("Error deleting virtual machine instance {vmi_name}: {e}");
                        shared.publish(&reference, &Event::warning("FailedDelete", note)).await;
                        return Err(api_error(format!("delete VMI {ns}/{vmi_name}"))(e));
                    }
                }
            }
            VmAction::CreateVmi(vmi) => match vmis.create(&PostParams::default(), &vmi).await {
                Ok(created) => {
                    info!(uid = created.metadata.uid.as_deref().unwrap_or_default(), "created the VMI");
                    let note = format!(
                        "Started the virtual machine by creating the new virtual machine instance {}",
                        created.name_any()
                    );
                    shared.publish(&reference, &Event::normal("SuccessfulCreate", note)).await;
                }
                Err(e) if is_code(&e, 409) => debug!("VMI exists already"),
                Err(e) => {
                    let message = format!("Error creating virtual machine instance: {e}");
                    shared.publish(&reference, &Event::warning("FailedCreate", message.clone())).await;
                    record_failure(&vms, &name, &rv, written_status.as_ref(), &message).await;
                    return Err(api_error(format!("create VMI {ns}/{name}"))(e));
                }
            },
            VmAction::Event(e) => shared.publish(&reference, &e).await,
            VmAction::RequeueAfter(d) => requeue = Some(d),
        }
    }
    Ok(requeue)
}

/// Best effort: the `Failure` condition after a failed create (the event says it too).
async fn record_failure(
    vms: &Api<VirtualMachine>,
    name: &str,
    rv: &Value,
    status: Option<&VirtualMachineStatus>,
    message: &str,
) {
    let mut conds = status.and_then(|s| s.conditions.clone()).unwrap_or_default();
    conditions::set(
        &mut conds,
        vm_condition::FAILURE,
        ConditionStatus::True,
        Some("FailedCreate"),
        Some(message),
        Timestamp::now(),
    );
    let patch = json!({"metadata": {"resourceVersion": rv}, "status": {"conditions": conds}});
    if let Err(e) = vms.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        debug!(error = %e, "could not record the Failure condition");
    }
}

// ---------------------------------------------------------------------------------------------
// VMIs

/// The launcher pod of `vmi` in the cache: the one it controls, preferring one not being deleted.
fn cached_pod(pods: &Store<Pod>, vmi: &VirtualMachineInstance) -> Option<Arc<Pod>> {
    let uid = vmi.metadata.uid.as_deref()?;
    let ns = vmi.metadata.namespace.as_deref();
    pods.state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == ns && controlled_by(p, uid))
        .min_by_key(|p| (p.metadata.deletion_timestamp.is_some(), p.metadata.creation_timestamp.clone().map(|t| t.0)))
}

fn controlled_by(pod: &Pod, uid: &str) -> bool {
    pod.owner_references().iter().any(|r| r.controller == Some(true) && r.uid == uid)
}

async fn reconcile_vmi_key(shared: &Shared, key: &ObjectKey) -> Outcome {
    let Some(vmi) = shared.vmis.get(&key.store_ref()) else {
        return Ok(None);
    };
    let now = Timestamp::now();
    let settings = &shared.opts.launcher;
    let pod = cached_pod(&shared.pods, &vmi);
    let mut actions = reconcile_vmi(&vmi, pod.as_deref(), now, settings);
    let creates = actions.iter().any(|a| matches!(a, VmiAction::CreatePod(_)));
    if creates {
        // Pods are created with generateName, so a create is not idempotent by itself: ask the
        // API server (not the cache, which may lag behind our own create) whether one exists.
        if let Some(live) = live_pod(shared, &vmi).await? {
            debug!(pod = %live.name_any(), "the cache had not seen the launcher pod yet");
            actions = reconcile_vmi(&vmi, Some(&live), now, settings);
        }
    }
    if !actions.is_empty() {
        debug!(?actions, "VMI actions");
    }
    execute_vmi(shared, &vmi, actions).await
}

async fn live_pod(shared: &Shared, vmi: &VirtualMachineInstance) -> Result<Option<Pod>, ActionError> {
    let (Some(ns), Some(uid)) = (vmi.metadata.namespace.as_deref(), vmi.metadata.uid.as_deref()) else {
        return Ok(None);
    };
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("{CREATED_BY_LABEL}={uid}")))
        .await
        .map_err(api_error(format!("list the launcher pods of VMI {ns}/{}", vmi.name_any())))?;
    Ok(list.items.into_iter().filter(|p| controlled_by(p, uid)).min_by_key(|p| p.metadata.deletion_timestamp.is_some()))
}

async fn execute_vmi(shared: &Shared, vmi: &VirtualMachineInstance, actions: Vec<VmiAction>) -> Outcome {
    let ns = vmi.metadata.namespace.clone().unwrap_or_default();
    let name = vmi.name_any();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(shared.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let reference = vmi.object_ref(&());
    let mut rv = resource_version(vmi);
    let mut finalizers: Vec<String> = vmi.finalizers().to_vec();

    let what = |w: &str| format!("{w} of VMI {ns}/{name}");

    for action in actions {
        match action {
            VmiAction::AddFinalizer => {
                finalizers.push(FINALIZER.to_string());
                rv = patch_vmi(
                    &vmis,
                    &name,
                    rv,
                    json!({"metadata": {"finalizers": finalizers}}),
                    what("add the finalizer"),
                )
                .await?;
            }
            VmiAction::RemoveFinalizer => {
                finalizers.retain(|f| f != FINALIZER);
                let body = json!({"metadata": {"finalizers": finalizers}});
                match patch_vmi(&vmis, &name, rv.clone(), body, what("remove the finalizer")).await {
                    Ok(v) => rv = v,
                    // Removing the last finalizer of a deleted object removes it.
                    Err(ActionError::Api { source, .. }) if is_code(&source, 404) => {}
                    Err(e) => return Err(e),
                }
                info!("launcher pod gone; VMI released");
            }
            VmiAction::UpdateStatus(status) => {
                let w = what("update the status");
                let old = encode(&w, &vmi.status)?;
                let new = encode(&w, &status)?;
                let Some(diff) = merge_diff(&old, &new) else { continue };
                let before = vmi.status.as_ref().and_then(|s| s.phase);
                if before != status.phase {
                    info!(from = ?before, to = ?status.phase, "VMI phase");
                }
                rv = patch_vmi(&vmis, &name, rv, json!({"status": diff}), w).await?;
            }
            VmiAction::SetNodeLabel(node) => {
                let labels = BTreeMap::from([(NODE_NAME_LABEL.to_string(), node)]);
                rv = patch_vmi(&vmis, &name, rv, json!({"metadata": {"labels": labels}}), what("label")).await?;
            }
            VmiAction::CreatePod(pod) => match pods.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    info!(pod = %created.name_any(), "created the launcher pod");
                    let note = format!("Created virtual machine pod {}", created.name_any());
                    shared.publish(&reference, &Event::normal("SuccessfulCreate", note)).await;
                }
                Err(e) => {
                    let note = format!("Error creating pod: {e}");
                    shared.publish(&reference, &Event::warning("FailedCreate", note)).await;
                    return Err(api_error(format!("create the launcher pod of VMI {ns}/{name}"))(e));
                }
            },
            VmiAction::DeletePod { name: pod_name, uid } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
                    ..Default::default()
                };
                match pods.delete(&pod_name, &params).await {
                    Ok(_) => {
                        info!(pod = %pod_name, "deleting the launcher pod");
                        let note = format!("Deleted virtual machine pod {pod_name}");
                        shared.publish(&reference, &Event::normal("SuccessfulDelete", note)).await;
                    }
                    Err(e) if is_code(&e, 404) || is_code(&e, 409) => {}
                    Err(e) => {
                        let note = format!("Error deleting pod {pod_name}: {e}");
                        shared.publish(&reference, &Event::warning("FailedDelete", note)).await;
                        return Err(api_error(format!("delete pod {ns}/{pod_name}"))(e));
                    }
                }
            }
            VmiAction::Event(e) => shared.publish(&reference, &e).await,
        }
    }
    Ok(None)
}

/// A merge patch of a VMI pinned to `rv`; returns the new resourceVersion.
async fn patch_vmi(
    vmis: &Api<VirtualMachineInstance>,
    name: &str,
    rv: Value,
    mut body: Value,
    what: String,
) -> Result<Value, ActionError> {
    body["metadata"]["resourceVersion"] = rv;
    let updated = vmis.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await.map_err(api_error(what))?;
    Ok(resource_version(&updated))
}
