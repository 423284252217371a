//! The scheduling loop: watch nodes and pods, place pending pods, bind them.
//!
//! ```text
//!   watch nodes ─► store ─┐
//!   watch pods  ─► store ─┴─► (any change, or every `retry_interval`) ─► scheduling pass:
//!        for each pending pod (schedulerName = ours, no nodeName, oldest first):
//!          fit::schedule(pod, nodes, bound pods + pods bound in this pass)
//!            Ok(node)  ─► merge patch spec.nodeName pinned to the pod's resourceVersion
//!                         ─► status PodScheduled=True, event Scheduled
//!            Err(why)  ─► status PodScheduled=False/Unschedulable with the message
//!                         (written, with a FailedScheduling event, when the message changes)
//! ```
//!
//! Pods bound in a pass are remembered ("assumed") until the pod watch shows them bound, so the
//! next pass does not hand their room out again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{debug, info, warn, Instrument};

use crate::fit::{self, NodeName, Unschedulable};

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Pods naming this scheduler (`spec.schedulerName`) are ours.
    pub scheduler_name: String,
    /// Pending pods are tried again this often even when nothing changes.
    pub retry_interval: Duration,
    /// Changes arriving within this window are handled in one pass.
    pub debounce: Duration,
    /// `reportingController` of the events.
    pub reporter: String,
    /// `reportingInstance` of the events (defaults to the host name).
    pub instance: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scheduler_name: "ferrovirt-scheduler".into(),
            retry_interval: Duration::from_secs(15),
            debounce: Duration::from_millis(50),
            reporter: "ferrovirt-scheduler".into(),
            instance: None,
        }
    }
}

/// Bindings sent at once in a pass.
const MAX_BINDS_IN_FLIGHT: usize = 16;
/// How long a binding is assumed while the pod watch has not shown it.
const ASSUME_FOR: Duration = Duration::from_secs(30);

/// Runs the scheduler until the client fails for good. See [`run_until`].
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    run_until(client, opts, std::future::pending()).await
}

/// Runs the scheduler until `shutdown` completes.
///
/// Leader election goes around this function: a replica that wins the Lease calls it with a
/// `shutdown` future that completes when the Lease is lost.
pub async fn run_until(client: Client, opts: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let changed = Arc::new(Notify::new());
    let (nodes, node_writer) = reflector::store::<Node>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch_into(Api::<Node>::all(client.clone()), node_writer, changed.clone()));
    tasks.spawn(watch_into(Api::<Pod>::all(client.clone()), pod_writer, changed.clone()));

    let reporter = Reporter {
        controller: opts.reporter.clone(),
        instance: opts.instance.clone().or_else(|| std::env::var("HOSTNAME").ok()),
    };
    let mut scheduler = Scheduler { reporter, client, opts, nodes, pods, assumed: HashMap::new() };

    tokio::pin!(shutdown);
    let ready = async {
        let _ = scheduler.nodes.wait_until_ready().await;
        let _ = scheduler.pods.wait_until_ready().await;
    };
    tokio::select! {
        _ = ready => {}
        _ = &mut shutdown => {
            tasks.shutdown().await;
            return Ok(());
        }
    }
    info!(scheduler = %scheduler.opts.scheduler_name, "scheduler caches are filled; scheduling");

    let result = loop {
        scheduler.pass().instrument(tracing::info_span!("scheduling_pass")).await;
        let wait_for_change = async {
            changed.notified().await;
            // Let a burst of changes settle into one pass.
            tokio::time::sleep(scheduler.opts.debounce).await;
        };
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = wait_for_change => {}
            _ = tokio::time::sleep(scheduler.opts.retry_interval) => {}
            Some(done) = tasks.join_next() => break match done {
                Ok(()) => Err(anyhow::anyhow!("a scheduler watch ended unexpectedly")),
                Err(e) => Err(anyhow::anyhow!("a scheduler watch failed: {e}")),
            },
        }
    };
    tasks.shutdown().await;
    result
}

async fn watch_into<K>(api: Api<K>, writer: reflector::store::Writer<K>, changed: Arc<Notify>)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
    tokio::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => changed.notify_one(),
            Ok(_) => {}
            Err(e) => warn!(kind = K::kind(&()).as_ref(), error = %e, "watch failed; retrying"),
        }
    }
}

struct Scheduler {
    client: Client,
    opts: Options,
    /// Who publishes events; a new `Recorder` per event, as kube-rs' recorder would keep the first
    /// note of a repeated reason (FailedScheduling messages change).
    reporter: Reporter,
    nodes: Store<Node>,
    pods: Store<Pod>,
    /// Pods bound by us that the watch has not shown bound yet: uid → (the bound pod, when).
    assumed: HashMap<String, (Pod, Instant)>,
}

fn is_pending_for(pod: &Pod, scheduler: &str) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.scheduler_name.as_deref()) == Some(scheduler)
        && spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn pod_scheduled_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")
}

/// The cached pods with the bindings made by this scheduler that the cache has not shown yet.
/// An assumption is dropped once the cache shows the pod bound, when the pod is gone, or after
/// [`ASSUME_FOR`] (the binding may have been lost).
fn with_assumed(mut pods: Vec<Pod>, assumed: &mut HashMap<String, (Pod, Instant)>, now: Instant) -> Vec<Pod> {
    let bound_in_cache = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    assumed.retain(|uid, (_, at)| {
        let cached = pods.iter().find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
        cached.is_some_and(|p| !bound_in_cache(p)) && now.duration_since(*at) < ASSUME_FOR
    });
    for p in pods.iter_mut() {
        if let Some((bound, _)) = p.metadata.uid.as_ref().and_then(|uid| assumed.get(uid)) {
            *p = bound.clone();
        }
    }
    pods
}

impl Scheduler {
    /// One look at every pending pod.
    async fn pass(&mut self) {
        let nodes: Vec<Node> = self.nodes.state().iter().map(|n| (**n).clone()).collect();
        let cached: Vec<Pod> = self.pods.state().iter().map(|p| (**p).clone()).collect();
        let mut all = with_assumed(cached, &mut self.assumed, Instant::now());

        let mut pending: Vec<Pod> =
            all.iter().filter(|p| is_pending_for(p, &self.opts.scheduler_name)).cloned().collect();
        pending.sort_by(|a, b| {
            let key = |p: &Pod| {
                (
                    p.metadata.creation_timestamp.clone().map(|t| t.0),
                    p.metadata.namespace.clone(),
                    p.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        if pending.is_empty() {
            return;
        }
        debug!(pending = pending.len(), nodes = nodes.len(), "scheduling pass");

        // Decisions are made one pod at a time against the pods placed so far (a pod is assumed on
        // its node as soon as it is chosen, as kube-scheduler does); the bindings themselves (a
        // patch, a status write and an Event each) go out concurrently. A binding that fails
        // leaves the pod unbound, and the next pass looks at it again.
        let this: &Scheduler = self;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut bound = Vec::new();
        for pod in pending {
            let span = tracing::info_span!(
                "schedule",
                namespace = pod.metadata.namespace.as_deref().unwrap_or_default(),
                name = pod.metadata.name.as_deref().unwrap_or_default()
            );
            match fit::schedule(&pod, &nodes, &all) {
                Ok(node) => {
                    if let Some(p) = all.iter_mut().find(|p| p.metadata.uid == pod.metadata.uid) {
                        p.spec.get_or_insert_with(Default::default).node_name = Some(node.0.clone());
                    }
                    in_flight.push(async move { this.bind(&pod, &node).instrument(span).await });
                    if in_flight.len() >= MAX_BINDS_IN_FLIGHT {
                        if let Some(Some(p)) = in_flight.next().await {
                            bound.push(p);
                        }
                    }
                }
                Err(why) => this.unschedulable(&pod, &why).instrument(span).await,
            }
        }
        while let Some(result) = in_flight.next().await {
            bound.extend(result);
        }
        drop(in_flight);
        for pod in bound {
            if let Some(uid) = pod.metadata.uid.clone() {
                self.assumed.insert(uid, (pod, Instant::now()));
            }
        }
    }

    /// Binds `pod` to `node`; returns the bound pod, or `None` when the pod changed meanwhile
    /// (it is looked at again in the next pass) or the write failed.
    async fn bind(&self, pod: &Pod, node: &NodeName) -> Option<Pod> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "spec": {"nodeName": node.0},
        });
        let bound = match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                debug!(code = s.code, "the pod changed before it was bound; next pass");
                return None;
            }
            Err(e) => {
                warn!(%node, error = %e, "binding failed");
                return None;
            }
        };
        info!(%node, "bound");
        let condition = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "True",
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&condition)).await {
            warn!(error = %e, "could not set PodScheduled=True");
        }
        self.publish(pod, EventType::Normal, "Scheduled", format!("Successfully assigned {ns}/{name} to {node}")).await;
        Some(bound)
    }

    /// Records that `pod` fits nowhere, once per distinct message.
    async fn unschedulable(&self, pod: &Pod, why: &Unschedulable) {
        let current = pod_scheduled_condition(pod);
        let same = current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(why.message.as_str())
        });
        if same {
            return;
        }
        debug!(message = %why.message, "unschedulable");
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let transition = match current {
            Some(c) if c.status == "False" => c.last_transition_time.clone(),
            _ => None,
        }
        .unwrap_or(Time(Timestamp::now()));
        let condition = json!({
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": why.message,
                "lastTransitionTime": transition,
            }]},
        });
        match api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&condition)).await {
            Ok(_) => self.publish(pod, EventType::Warning, "FailedScheduling", why.message.clone()).await,
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => warn!(error = %e, "could not set PodScheduled=False"),
        }
    }

    async fn publish(&self, pod: &Pod, type_: EventType, reason: &str, note: String) {
        let event =
            KubeEvent { type_, reason: reason.into(), note: Some(note), action: "Scheduling".into(), secondary: None };
        if let Err(e) =
            Recorder::new(self.client.clone(), self.reporter.clone()).publish(&event, &pod.object_ref(&())).await
        {
            warn!(reason, error = %e, "could not publish an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use serde_json::json;

    fn pod(scheduler: &str, node: Option<&str>, phase: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                scheduler_name: Some(scheduler.into()),
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus { phase: Some(phase.into()), ..Default::default() }),
            ..Default::default()
        }
    }

    fn with_uid(mut p: Pod, uid: &str) -> Pod {
        p.metadata.uid = Some(uid.into());
        p.metadata.name = Some(uid.into());
        p
    }

    fn requesting(mut p: Pod, memory: &str) -> Pod {
        p.spec.as_mut().unwrap().containers = vec![k8s_openapi::api::core::v1::Container {
            name: "c".into(),
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: Some(
                    [("memory".to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(memory.into()))]
                        .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }];
        p
    }

    #[test]
    fn assumed_bindings_hold_room_until_the_cache_catches_up() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"allocatable": {"memory": "1Gi", "cpu": "1"}, "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let first = requesting(with_uid(pod("ferrovirt-scheduler", None, "Pending"), "a"), "768Mi");
        let second = requesting(with_uid(pod("ferrovirt-scheduler", None, "Pending"), "b"), "768Mi");
        let mut bound_first = first.clone();
        bound_first.spec.as_mut().unwrap().node_name = Some("n1".into());
        let t0 = Instant::now();
        let mut assumed = HashMap::from([("a".to_string(), (bound_first.clone(), t0))]);

        // The cache still shows "a" unbound: the assumption fills the node.
        let pods = with_assumed(vec![first.clone(), second.clone()], &mut assumed, t0);
        assert_eq!(pods[0], bound_first);
        assert!(fit::schedule(&second, std::slice::from_ref(&node), &pods).is_err());
        // Without it, the same room would be handed out twice.
        assert!(fit::schedule(&second, std::slice::from_ref(&node), &[first.clone(), second.clone()]).is_ok());

        // Dropped when the cache shows the binding, when the pod is gone, or after a while.
        let mut caught_up = assumed.clone();
        with_assumed(vec![bound_first.clone()], &mut caught_up, t0);
        assert!(caught_up.is_empty());
        let mut gone = assumed.clone();
        with_assumed(vec![second.clone()], &mut gone, t0);
        assert!(gone.is_empty());
        let mut stale = assumed.clone();
        let pods = with_assumed(vec![first.clone()], &mut stale, t0 + ASSUME_FOR);
        assert!(stale.is_empty());
        assert_eq!(pods[0], first);
    }

    #[test]
    fn only_our_unbound_live_pods_are_pending() {
        assert!(is_pending_for(&pod("ferrovirt-scheduler", None, "Pending"), "ferrovirt-scheduler"));
        assert!(is_pending_for(&pod("ferrovirt-scheduler", Some(""), "Pending"), "ferrovirt-scheduler"));
        assert!(!is_pending_for(&pod("default-scheduler", None, "Pending"), "ferrovirt-scheduler"));
        assert!(!is_pending_for(&pod("ferrovirt-scheduler", Some("n1"), "Pending"), "ferrovirt-scheduler"));
        assert!(!is_pending_for(&pod("ferrovirt-scheduler", None, "Failed"), "ferrovirt-scheduler"));
        let mut deleting = pod("ferrovirt-scheduler", None, "Pending");
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert!(!is_pending_for(&deleting, "ferrovirt-scheduler"));
    }
}
