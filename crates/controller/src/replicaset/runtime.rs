//! The replica set controller's loop: it watches replica sets, shares the VMI cache of
//! [`crate::run_until`], and carries out what [`reconcile_replicaset`] decides.
//!
//! ```text
//!   watch replica sets ─► store ─────────────────────────┐
//!   VMI events (from run_until's VMI watch) ─► owner RS, ├─► queue ─► workers ─► reconcile_replicaset
//!     or the RSs whose selector matches an orphan        │      claims ─► deletes ─► creates ─► status
//!   every `resync` ──────────────────────────────────────┘
//! ```
//!
//! Claims (adopt, release) are merge patches of `metadata.ownerReferences` pinned to the VMI's
//! resourceVersion; before adopting, the replica set is read from the API server (not the cache) to
//! make sure it still exists and is not being deleted. Deletes carry a UID precondition. Creates go
//! out in batches of 1, 2, 4, ... (Kubernetes' slow start), stopping at the first failure, so a
//! refused create is not repeated hundreds of times. Every create and delete is remembered in the
//! set's [`Expectations`] until the cache shows it; meanwhile the set neither creates nor deletes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrovirt_api::kubevirt::{VirtualMachineInstance, VirtualMachineInstanceReplicaSet};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::Resource as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn, Instrument};

use super::{
    controller_of, reconcile_replicaset, record_failure, selects, shows_paused, DeleteReason, Expectations, RsAction,
    RsPlan, REASON_FAILED_CREATE, REASON_FAILED_DELETE,
};
use crate::event::{Event, EventType};
use crate::patch::merge_diff;
use crate::queue::WorkQueue;
use crate::runtime::{ActionError, ObjectKey, Options};

type ReplicaSet = VirtualMachineInstanceReplicaSet;

/// The replica set controller; [`crate::run_until`] makes one, feeds it VMI events and runs it.
pub(crate) struct ReplicaSetController {
    client: Client,
    reporter: Reporter,
    workers: usize,
    resync: Duration,
    queue: Arc<WorkQueue<ObjectKey>>,
    sets: Store<ReplicaSet>,
    writer: Mutex<Option<reflector::store::Writer<ReplicaSet>>>,
    vmis: Store<VirtualMachineInstance>,
    expectations: Mutex<HashMap<ObjectKey, Expectations>>,
}

fn key_of<K: Resource>(obj: &K) -> Option<ObjectKey> {
    Some(ObjectKey { namespace: obj.meta().namespace.clone()?, name: obj.meta().name.clone()? })
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn api_error(what: String, source: kube::Error) -> ActionError {
    if is_code(&source, 409) {
        ActionError::Conflict(what)
    } else {
        ActionError::Api { what, source }
    }
}

impl ReplicaSetController {
    /// A controller sharing `vmis`, the VMI cache of the other controllers.
    pub(crate) fn new(client: Client, opts: &Options, vmis: Store<VirtualMachineInstance>) -> Arc<Self> {
        let (sets, writer) = reflector::store::<ReplicaSet>();
        Arc::new(ReplicaSetController {
            client,
            reporter: Reporter {
                controller: opts.reporter.clone(),
                instance: opts.instance.clone().or_else(|| std::env::var("HOSTNAME").ok()),
            },
            workers: opts.workers.max(1),
            resync: opts.resync,
            queue: WorkQueue::new(),
            sets,
            writer: Mutex::new(Some(writer)),
            vmis,
            expectations: Mutex::new(HashMap::new()),
        })
    }

    fn expectations(&self) -> MutexGuard<'_, HashMap<ObjectKey, Expectations>> {
        self.expectations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A VMI was added, changed or deleted: queue its replica set (its controller), or, for an
    /// orphan, every replica set of its namespace whose selector matches it.
    pub(crate) fn vmi_changed(&self, vmi: &VirtualMachineInstance) {
        let Some(namespace) = vmi.metadata.namespace.clone() else { return };
        match controller_of(vmi) {
            Some(owner) if owner.kind == ReplicaSet::KIND => {
                let key = ObjectKey { namespace, name: owner.name.clone() };
                if let Some(e) = self.expectations().get_mut(&key) {
                    e.observed(vmi);
                }
                self.queue.add(key);
            }
            Some(_) => {}
            None => {
                for rs in self.sets.state() {
                    if rs.metadata.namespace.as_deref() == Some(namespace.as_str()) && selects(&rs, vmi) {
                        if let Some(k) = key_of(rs.as_ref()) {
                            self.queue.add(k);
                        }
                    }
                }
            }
        }
    }

    /// Watches replica sets and reconciles them until dropped (everything it starts stops with it).
    ///
    /// Start it once the shared VMI cache is filled: it does not wait for that cache itself,
    /// because a kube-runtime store wakes only one of the tasks waiting for it to be ready.
    pub(crate) async fn run(self: Arc<Self>) {
        let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            warn!("the replica set controller was started twice");
            return;
        };
        let mut tasks = tokio::task::JoinSet::new();
        {
            let queue = self.queue.clone();
            let api = Api::<ReplicaSet>::all(self.client.clone());
            tasks.spawn(async move {
                let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
                tokio::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(watcher::Event::Apply(rs) | watcher::Event::InitApply(rs) | watcher::Event::Delete(rs)) => {
                            if let Some(k) = key_of(&rs) {
                                queue.add(k);
                            }
                        }
                        Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                        Err(e) => warn!(error = %e, "replica set watch failed; retrying"),
                    }
                }
            });
        }
        let _ = self.sets.wait_until_ready().await;
        for _ in 0..self.workers {
            let this = self.clone();
            tasks.spawn(async move {
                while let Some(key) = this.queue.next().await {
                    let span =
                        tracing::info_span!("reconcile_replicaset", namespace = %key.namespace, name = %key.name);
                    let outcome = this.reconcile(&key).instrument(span).await;
                    this.finish(key, outcome);
                }
            });
        }
        {
            let this = self.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(this.resync);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    for rs in this.sets.state() {
                        if let Some(k) = key_of(rs.as_ref()) {
                            this.queue.add(k);
                        }
                    }
                }
            });
        }
        let _ = tasks.join_next().await;
        warn!("a replica set controller task ended");
        self.queue.shut_down();
    }

    fn finish(&self, key: ObjectKey, outcome: Result<(), ActionError>) {
        match outcome {
            Ok(()) => {
                self.queue.forget(&key);
                self.queue.done(&key);
            }
            Err(e) => {
                let delay = self.queue.failed(&key);
                match &e {
                    ActionError::Conflict(_) => debug!(%key, error = %e, "retrying"),
                    _ => warn!(%key, error = %e, retry_in = ?delay, "replica set reconcile failed"),
                }
                self.queue.done(&key);
                self.queue.add_after(key, delay);
            }
        }
    }

    async fn publish(&self, reference: &ObjectReference, event: Event) {
        let e = KubeEvent {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.clone(),
            note: Some(event.note),
            action: event.reason.clone(),
            secondary: None,
        };
        if let Err(err) = Recorder::new(self.client.clone(), self.reporter.clone()).publish(&e, reference).await {
            warn!(reason = %event.reason, error = %err, "could not publish an event");
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<(), ActionError> {
        let Some(rs) = self.sets.get(&ObjectRef::new(&key.name).within(&key.namespace)) else {
            // Deleted: the garbage collector takes its VMIs.
            self.expectations().remove(key);
            return Ok(());
        };
        let cached: Vec<Arc<VirtualMachineInstance>> = self
            .vmis
            .state()
            .into_iter()
            .filter(|v| v.metadata.namespace.as_deref() == Some(key.namespace.as_str()))
            .collect();
        let vmis: Vec<&VirtualMachineInstance> = cached.iter().map(Arc::as_ref).collect();
        let in_flight = {
            let mut all = self.expectations();
            let e = all.entry(key.clone()).or_default();
            e.settle(&vmis);
            e.in_flight(Instant::now())
        };
        let now = Timestamp::now();
        let plan = reconcile_replicaset(&rs, &vmis, in_flight, now);
        if !plan.actions.is_empty() {
            debug!(?in_flight, actions = ?plan.actions, "replica set actions");
        }
        self.execute(&rs, key, plan, now).await
    }

    /// Whether `rs` may adopt: read from the API server, it is the same object and not being
    /// deleted (the cache may lag behind a delete, and an adopted VMI would then be collected).
    async fn can_adopt(&self, rs: &ReplicaSet, key: &ObjectKey) -> Result<bool, ActionError> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.get_opt(&key.name).await {
            Ok(Some(fresh)) => Ok(fresh.metadata.uid == rs.metadata.uid && fresh.metadata.deletion_timestamp.is_none()),
            Ok(None) => Ok(false),
            Err(e) => Err(api_error(format!("read replica set {key}"), e)),
        }
    }

    async fn execute(&self, rs: &ReplicaSet, key: &ObjectKey, plan: RsPlan, now: Timestamp) -> Result<(), ActionError> {
        let vmis: Api<VirtualMachineInstance> = Api::namespaced(self.client.clone(), &key.namespace);
        let reference = rs.object_ref(&());
        let mut adopt_checked: Option<bool> = None;
        let mut deletes = Vec::new();
        let mut creates = Vec::new();

        // Claims first; a failed claim retries the whole pass (the counts assumed it done).
        for action in plan.actions {
            match action {
                RsAction::Adopt { name, resource_version, owner_references } => {
                    let allowed = match adopt_checked {
                        Some(a) => a,
                        None => *adopt_checked.insert(self.can_adopt(rs, key).await?),
                    };
                    if !allowed {
                        debug!(vmi = %name, "not adopting: the replica set is going away");
                        return Ok(());
                    }
                    let body =
                        json!({"metadata": {"resourceVersion": resource_version, "ownerReferences": owner_references}});
                    match vmis.patch(&name, &PatchParams::default(), &Patch::Merge(&body)).await {
                        Ok(_) => info!(vmi = %name, "adopted an orphan VMI"),
                        Err(e) if is_code(&e, 404) => {}
                        Err(e) => return Err(api_error(format!("adopt VMI {}/{name}", key.namespace), e)),
                    }
                }
                RsAction::Release { name, resource_version, owner_references } => {
                    let body =
                        json!({"metadata": {"resourceVersion": resource_version, "ownerReferences": owner_references}});
                    match vmis.patch(&name, &PatchParams::default(), &Patch::Merge(&body)).await {
                        Ok(_) => info!(vmi = %name, "released a VMI that no longer matches the selector"),
                        Err(e) if is_code(&e, 404) => {}
                        Err(e) => return Err(api_error(format!("release VMI {}/{name}", key.namespace), e)),
                    }
                }
                RsAction::DeleteVmi { name, uid, reason } => deletes.push((name, uid, reason)),
                RsAction::CreateVmi(vmi) => creates.push(*vmi),
            }
        }

        let mut failure: Option<(&str, String, kube::Error)> = None;

        // Deletes, all at once.
        let results = futures::future::join_all(deletes.into_iter().map(|(name, uid, reason)| {
            let vmis = &vmis;
            async move {
                let params = DeleteParams {
                    preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                    ..Default::default()
                };
                (name.clone(), uid.clone(), reason, vmis.delete(&name, &params).await)
            }
        }))
        .await;
        for (name, uid, reason, result) in results {
            match result {
                Ok(_) => {
                    self.expectations().entry(key.clone()).or_default().deleted(&uid, Instant::now());
                    let note = match reason {
                        DeleteReason::Surplus => {
                            format!("Stopped the virtual machine by deleting the virtual machine instance {uid}")
                        }
                        DeleteReason::Finished => format!("Deleted finished virtual machine: {uid}"),
                    };
                    info!(vmi = %name, ?reason, "deleted a VMI");
                    self.publish(&reference, Event::normal("SuccessfulDelete", note)).await;
                }
                // Gone already, or another VMI took the name: the observed one is gone either way.
                Err(e) if is_code(&e, 404) || is_code(&e, 409) => {}
                Err(e) => {
                    let note = format!("Error deleting virtual machine instance {name}: {e}");
                    self.publish(&reference, Event::warning("FailedDelete", note.clone())).await;
                    if failure.is_none() {
                        failure = Some((REASON_FAILED_DELETE, note, e));
                    }
                }
            }
        }

        // Creates, in batches of 1, 2, 4, ... until one fails.
        let mut creates = creates.into_iter();
        let mut batch = 1;
        while failure.is_none() {
            let chunk: Vec<VirtualMachineInstance> = creates.by_ref().take(batch).collect();
            if chunk.is_empty() {
                break;
            }
            batch *= 2;
            let params = PostParams::default();
            let results = futures::future::join_all(chunk.iter().map(|v| vmis.create(&params, v))).await;
            for result in results {
                match result {
                    Ok(created) => {
                        if let Some(uid) = created.metadata.uid.as_deref() {
                            self.expectations().entry(key.clone()).or_default().created(uid, Instant::now());
                        }
                        info!(vmi = %created.name_any(), "created a VMI");
                        let note = format!(
                            "Started the virtual machine by creating the new virtual machine instance {}",
                            created.name_any()
                        );
                        self.publish(&reference, Event::normal("SuccessfulCreate", note)).await;
                    }
                    Err(e) => {
                        let note = format!("Error creating virtual machine instance: {e}");
                        self.publish(&reference, Event::warning("FailedCreate", note.clone())).await;
                        if failure.is_none() {
                            failure = Some((REASON_FAILED_CREATE, note, e));
                        }
                    }
                }
            }
        }

        // Status last. Not pinned to the resourceVersion: passes of one set never overlap, each sees
        // VMIs at least as new as the last, and the status holds nothing anyone else writes.
        let mut status = plan.status;
        if let Some((reason, message, _)) = &failure {
            record_failure(&mut status, reason, message, now);
        }
        let what = format!("status of replica set {key}");
        let encoded = serde_json::to_value(&rs.status)
            .and_then(|old| Ok((old, serde_json::to_value(Some(&status))?)))
            .map_err(|source| ActionError::Encode { what: what.clone(), source });
        let (old, new) = encoded?;
        if let Some(diff) = merge_diff(&old, &new) {
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
            let body = json!({ "status": diff });
            api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map_err(|e| api_error(format!("update {what}"), e))?;
            let (was, is) = (shows_paused(rs.status.as_ref()), shows_paused(Some(&status)));
            if was != is {
                let event = if is {
                    Event::normal("SuccessfulPaused", "Paused")
                } else {
                    Event::normal("SuccessfulResumed", "Resumed")
                };
                self.publish(&reference, event).await;
            }
        }
        match failure {
            Some((reason, _, source)) => {
                Err(ActionError::Api { what: format!("{reason} for replica set {key}"), source })
            }
            None => Ok(()),
        }
    }
}
