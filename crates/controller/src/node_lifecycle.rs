//! The node lifecycle controller: a node whose agent stops renewing its Lease goes NotReady, and
//! once its agent has certainly fenced its guests, its VMIs fail so that their VMs run elsewhere.
//!
//! ```text
//!  Lease record unchanged for (this controller's own clock):
//!    < grace                      healthy (the agent's heartbeat keeps Ready=True)
//!    ≥ grace                      Ready=Unknown (NodeStatusUnknown), taint unreachable:NoExecute
//!    ≥ grace + failure_grace      VMIs on the node → Failed (NodeUnresponsive), their launcher
//!      and ≥ fence_after + margin Pods deleted at once (nobody on that node can confirm it)
//!  renewed again                  the taint goes; the agent sets Ready=True itself
//! ```
//!
//! A node agent that cannot renew its Lease for `fence_after` (published in the Node annotation
//! [`FENCE_ANNOTATION`]) kills its own guests. Its clock starts at its last successful renewal,
//! ours when we saw that renewal, which is later; so when we fail a VMI the guest has been dead for
//! at least the margin, and no VM runs on two nodes at once.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use ferrovirt_api::kubevirt::VirtualMachineInstance;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use tracing::{info, warn};

use crate::vmi::NODE_NAME_LABEL;

pub use ferrovirt_api::wellknown::FENCE_ANNOTATION;
/// The taint Kubernetes puts on a node whose agent stopped reporting.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The VMI `status.reason` of a VMI failed with its node.
pub const REASON_NODE_UNRESPONSIVE: &str = "NodeUnresponsive";

/// The timings of the node lifecycle controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// A Lease unchanged for this long makes the node NotReady (Kubernetes: 40 s).
    pub grace: Duration,
    /// After NotReady, how much longer before its VMIs fail.
    pub failure_grace: Duration,
    /// Time added to the node's own fencing time before its VMIs may fail.
    pub fence_margin: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { grace: Duration::from_secs(40), failure_grace: Duration::from_secs(20), fence_margin: Duration::from_secs(10) }
    }
}

/// What the controller thinks of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The Lease is renewed.
    Healthy,
    /// NotReady.
    Unreachable {
        /// Its guests are certainly fenced: fail its VMIs.
        fail_vmis: bool,
    },
}

/// Judge a node from how long its Lease record has stayed unchanged (pure).
pub fn judge(unchanged_for: Duration, fence_after: Option<Duration>, t: &Thresholds) -> Verdict {
    if unchanged_for < t.grace {
        return Verdict::Healthy;
    }
    let fenced_by = fence_after.map_or(Duration::ZERO, |f| f + t.fence_margin);
    Verdict::Unreachable { fail_vmis: unchanged_for >= (t.grace + t.failure_grace).max(fenced_by) }
}

/// The node's published fencing time.
pub fn fence_after(node: &Node) -> Option<Duration> {
    node.metadata.annotations.as_ref()?.get(FENCE_ANNOTATION)?.parse::<u64>().ok().map(Duration::from_secs)
}

fn ready_status(node: &Node) -> Option<&str> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status.as_str())
}

fn has_unreachable_taint(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|ts| ts.iter().any(|t| t.key == TAINT_UNREACHABLE))
}

/// Changes to the Node itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChange {
    /// Ready=Unknown (NodeStatusUnknown).
    MarkUnknown,
    /// Add the unreachable NoExecute taint.
    AddTaint,
    /// Remove the unreachable taint.
    RemoveTaint,
}

/// What to change on the Node for a verdict (pure).
pub fn node_changes(node: &Node, verdict: Verdict) -> Vec<NodeChange> {
    let mut out = Vec::new();
    match verdict {
        Verdict::Healthy => {
            if has_unreachable_taint(node) {
                out.push(NodeChange::RemoveTaint);
            }
        }
        Verdict::Unreachable { .. } => {
            if ready_status(node) != Some("Unknown") {
                out.push(NodeChange::MarkUnknown);
            }
            if !has_unreachable_taint(node) {
                out.push(NodeChange::AddTaint);
            }
        }
    }
    out
}

/// Whether a VMI on a failed node must be failed: it is not final and not already failed by us.
pub fn must_fail(vmi: &VirtualMachineInstance, node: &str) -> bool {
    let Some(status) = vmi.status.as_ref() else { return false };
    if status.node_name.as_deref() != Some(node) {
        return false;
    }
    !matches!(status.phase.as_ref().map(|p| format!("{p:?}")).as_deref(), Some("Succeeded" | "Failed"))
}

/// Runs the node lifecycle controller until `shutdown` completes.
pub async fn run_until(client: Client, t: Thresholds, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut seen: HashMap<String, (Option<String>, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(t.grace / 4).max(Duration::from_millis(200)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tick.tick() => {
                if let Err(e) = pass(&client, &t, &mut seen).await {
                    warn!(error = %e, "node lifecycle pass failed");
                }
            }
        }
    }
}

async fn pass(client: &Client, t: &Thresholds, seen: &mut HashMap<String, (Option<String>, Instant)>) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease_list = leases.list(&ListParams::default()).await?;
    let renewals: HashMap<String, Option<String>> = lease_list
        .items
        .iter()
        .filter_map(|l| Some((l.metadata.name.clone()?, l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0.to_string()))))
        .collect();
    let node_list = nodes.list(&ListParams::default()).await?;
    seen.retain(|name, _| node_list.items.iter().any(|n| n.metadata.name.as_deref() == Some(name)));
    for node in &node_list.items {
        let Some(name) = node.metadata.name.clone() else { continue };
        let record = renewals.get(&name).cloned().flatten();
        let entry = seen.entry(name.clone()).or_insert_with(|| (record.clone(), Instant::now()));
        if entry.0 != record {
            *entry = (record, Instant::now());
        }
        let verdict = judge(entry.1.elapsed(), fence_after(node), t);
        for change in node_changes(node, verdict) {
            apply_node_change(&nodes, &name, node, &change).await?;
        }
        if verdict == (Verdict::Unreachable { fail_vmis: true }) {
            fail_node_vmis(client, &name).await?;
        }
    }
    Ok(())
}

async fn apply_node_change(nodes: &Api<Node>, name: &str, node: &Node, change: &NodeChange) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    match change {
        NodeChange::MarkUnknown => {
            warn!(node = name, "the node agent stopped renewing its lease: node NotReady");
            let cond = json!({
                "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                "message": "the ferrovirt node agent stopped renewing its Lease",
                "lastTransitionTime": now.to_string(),
            });
            nodes.patch_status(name, &PatchParams::default(), &Patch::Strategic(json!({"status": {"conditions": [cond]}}))).await?;
        }
        NodeChange::AddTaint | NodeChange::RemoveTaint => {
            let mut taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
            taints.retain(|t| t.key != TAINT_UNREACHABLE);
            if *change == NodeChange::AddTaint {
                taints.push(Taint { key: TAINT_UNREACHABLE.into(), effect: "NoExecute".into(), time_added: Some(Time(now)), value: None });
            } else {
                info!(node = name, "the node agent renews its lease again");
            }
            nodes.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": taints}}))).await?;
        }
    }
    Ok(())
}

/// Fail every VMI on `node` and delete the launcher Pods bound to it right away.
async fn fail_node_vmis(client: &Client, node: &str) -> Result<(), kube::Error> {
    let vmis: Api<VirtualMachineInstance> = Api::all(client.clone());
    for vmi in vmis.list(&ListParams::default().labels(&format!("{NODE_NAME_LABEL}={node}"))).await?.items {
        if !must_fail(&vmi, node) {
            continue;
        }
        let (Some(ns), Some(name)) = (vmi.metadata.namespace.clone(), vmi.metadata.name.clone()) else { continue };
        warn!(node, vmi = %format!("{ns}/{name}"), "the VMI's node is unresponsive: VMI Failed");
        let api: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), &ns);
        // VMIs have no status subresource (as in KubeVirt): the status is written with the object,
        // pinned to the resourceVersion the decision was made on.
        let status = json!({"metadata": {"resourceVersion": vmi.metadata.resource_version}, "status": {
            "phase": "Failed",
            "reason": REASON_NODE_UNRESPONSIVE,
            "phaseTransitionTimestamps": vmi.status.as_ref().and_then(|s| s.phase_transition_timestamps.clone()).map(|mut ts| {
                ts.push(serde_json::from_value(json!({"phase": "Failed", "phaseTransitionTimestamp": Timestamp::now().to_string()})).expect("valid"));
                ts
            }),
        }});
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(status)).await {
            Ok(_) => {}
            // Changed meanwhile (or gone): the next pass looks again.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let pods: Api<Pod> = Api::all(client.clone());
    for pod in pods.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await?.items {
        let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone()) else { continue };
        info!(node, pod = %format!("{ns}/{name}"), "deleting the pod of an unresponsive node");
        match Api::<Pod>::namespaced(client.clone(), &ns).delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { grace: Duration::from_secs(40), failure_grace: Duration::from_secs(20), fence_margin: Duration::from_secs(10) };

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn timeline() {
        assert_eq!(judge(s(39), Some(s(40)), &T), Verdict::Healthy);
        assert_eq!(judge(s(40), Some(s(40)), &T), Verdict::Unreachable { fail_vmis: false });
        assert_eq!(judge(s(59), Some(s(40)), &T), Verdict::Unreachable { fail_vmis: false });
        assert_eq!(judge(s(60), Some(s(40)), &T), Verdict::Unreachable { fail_vmis: true });
    }

    #[test]
    fn a_slow_fencing_node_delays_the_failure() {
        // The node fences only after 100 s: its VMIs fail 10 s after that, not at 60 s.
        assert_eq!(judge(s(100), Some(s(100)), &T), Verdict::Unreachable { fail_vmis: false });
        assert_eq!(judge(s(110), Some(s(100)), &T), Verdict::Unreachable { fail_vmis: true });
    }

    fn node(ready: &str, tainted: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {"taints": if tainted { json!([{"key": TAINT_UNREACHABLE, "effect": "NoExecute"}]) } else { json!([]) }},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}
        }))
        .unwrap()
    }

    #[test]
    fn node_changes_are_idempotent() {
        let unreachable = Verdict::Unreachable { fail_vmis: false };
        assert_eq!(node_changes(&node("True", false), unreachable), [NodeChange::MarkUnknown, NodeChange::AddTaint]);
        assert!(node_changes(&node("Unknown", true), unreachable).is_empty());
        assert_eq!(node_changes(&node("True", true), Verdict::Healthy), [NodeChange::RemoveTaint]);
        assert!(node_changes(&node("True", false), Verdict::Healthy).is_empty());
    }

    #[test]
    fn only_live_vmis_of_the_node_fail() {
        let vmi = |phase: &str, node: &str| -> VirtualMachineInstance {
            serde_json::from_value(json!({"metadata": {"name": "v"}, "spec": {"domain": {"devices": {}}}, "status": {"phase": phase, "nodeName": node}})).unwrap()
        };
        assert!(must_fail(&vmi("Running", "n1"), "n1"));
        assert!(must_fail(&vmi("Scheduled", "n1"), "n1"));
        assert!(!must_fail(&vmi("Failed", "n1"), "n1"));
        assert!(!must_fail(&vmi("Succeeded", "n1"), "n1"));
        assert!(!must_fail(&vmi("Running", "n2"), "n1"));
    }
}
