//! The VirtualMachineInstanceReplicaSet controller's decisions: which VMIs a replica set owns,
//! which it creates and deletes, and what its status says (KubeVirt's semantics, which are
//! Kubernetes' ReplicaSet's).
//!
//! ```text
//!   VMIs of the namespace ──claim──► owned & matching ──┬─ being deleted ─────► not counted
//!     orphan, matching, alive ─► Adopt (ownerReference)  ├─ Failed/Succeeded ──► DeleteVmi(Finished)
//!     owned, not matching ─────► Release                 └─ active ─► replicas vs spec.replicas
//!     owned by another ────────► ignored                        more ─► DeleteVmi(Surplus), least valuable first
//!                                                               fewer ─► CreateVmi from the template
//! ```
//!
//! - Active VMIs (not final, not being deleted) are `status.replicas`; those with `Ready=True`
//!   are `status.readyReplicas`. A Failed or Succeeded VMI is deleted and, since it no longer
//!   counts, replaced in the same pass. `Unknown` (host unreachable) still counts: the node
//!   lifecycle controller fails such VMIs after its grace period, and then they are replaced.
//! - Surplus VMIs are deleted in Kubernetes' order ([`deletion_order`]): not yet on a node, then
//!   earlier phases, not ready, on nodes holding more VMIs of this set, newer, before the others.
//! - `spec.paused`: no creates and no deletes (claims go on); the `ReplicaPaused` condition says so.
//! - Creates and deletes wait while earlier ones are not yet seen in the cache ([`Expectations`]);
//!   at most [`BURST_REPLICAS`] of each per pass.
//! - A replica set being deleted changes nothing: the API server's garbage collector deletes its
//!   VMIs through their ownerReferences.
//! - VMIs get the template's labels plus [`REPLICA_SET_LABEL`] (unless the template sets it), which
//!   their launcher pods copy, so the scheduler spreads the set over nodes.
//!
//! The loop that watches, queues and carries the actions out (`replicaset/runtime.rs`) runs
//! inside [`crate::run_until`], sharing its VMI cache.

use std::collections::{BTreeMap, HashMap};

use ferrovirt_api::kubevirt::{
    replicaset_condition, vmi_condition, ConditionStatus, VirtualMachineInstance, VirtualMachineInstancePhase as Phase,
    VirtualMachineInstanceReplicaSet, VirtualMachineInstanceReplicaSetStatus,
};
use ferrovirt_api::selector::label_selector_matches;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::Resource as _;

use crate::conditions;
use crate::vmi::FINALIZER;

mod expectations;
pub(crate) mod runtime;

pub use expectations::{Expectations, EXPECTATIONS_TIMEOUT};

/// Label naming the replica set on each VMI it creates (and, copied, on its launcher pod).
pub const REPLICA_SET_LABEL: &str = "kubevirt.io/vmReplicaSet";
/// At most this many creates, and this many deletes, per pass (KubeVirt's default burst).
pub const BURST_REPLICAS: usize = 250;
/// Reason of `ReplicaFailure` when a create failed.
pub const REASON_FAILED_CREATE: &str = "FailedCreate";
/// Reason of `ReplicaFailure` when a delete failed.
pub const REASON_FAILED_DELETE: &str = "FailedDelete";

/// Why a VMI is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// More active VMIs than `spec.replicas`.
    Surplus,
    /// The VMI ended (Failed or Succeeded); a new one takes its place.
    Finished,
}

/// What the replica set controller does for one replica set, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum RsAction {
    /// Make an orphan VMI that matches the selector ours: write `owner_references` (its list with
    /// our controller reference added), pinned to `resource_version`.
    Adopt {
        /// VMI name.
        name: String,
        /// The resourceVersion the decision was made on.
        resource_version: String,
        /// The VMI's new ownerReferences.
        owner_references: Vec<OwnerReference>,
    },
    /// Let go of an owned VMI that no longer matches the selector: write `owner_references` (its
    /// list without ours), pinned to `resource_version`.
    Release {
        /// VMI name.
        name: String,
        /// The resourceVersion the decision was made on.
        resource_version: String,
        /// The VMI's new ownerReferences.
        owner_references: Vec<OwnerReference>,
    },
    /// Delete a VMI (a UID precondition makes it hit only the VMI that was observed).
    DeleteVmi {
        /// VMI name.
        name: String,
        /// VMI UID.
        uid: String,
        /// Surplus or finished.
        reason: DeleteReason,
    },
    /// Create this VMI (it has a `generateName`).
    CreateVmi(Box<VirtualMachineInstance>),
}

/// Whether the creates and deletes of earlier passes have all been seen in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InFlight {
    /// Nothing is in flight: the cache is a sound basis for creating and deleting.
    Settled,
    /// Some creates or deletes are not yet seen: create and delete nothing this pass.
    Pending,
}

/// The outcome of [`reconcile_replicaset`].
#[derive(Clone, Debug, PartialEq)]
pub struct RsPlan {
    /// What to do, in order.
    pub actions: Vec<RsAction>,
    /// The status to write when every action succeeds (see [`record_failure`] otherwise).
    pub status: VirtualMachineInstanceReplicaSetStatus,
    /// Whether the pass decided on creates and deletes (it did not while paused, in flight,
    /// invalid or being deleted); only such a pass clears `ReplicaFailure`.
    pub scaled: bool,
}

/// Whether the VMI is controlled by the replica set (its controller ownerReference has its UID).
pub fn is_controlled_by(vmi: &VirtualMachineInstance, rs: &VirtualMachineInstanceReplicaSet) -> bool {
    let Some(uid) = rs.metadata.uid.as_deref() else { return false };
    controller_of(vmi).is_some_and(|r| r.uid == uid)
}

/// The controller ownerReference of `vmi`, if any.
pub fn controller_of(vmi: &VirtualMachineInstance) -> Option<&OwnerReference> {
    vmi.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// The controller ownerReference pointing at `rs`.
pub fn owner_reference(rs: &VirtualMachineInstanceReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: VirtualMachineInstanceReplicaSet::API_VERSION.to_string(),
        kind: VirtualMachineInstanceReplicaSet::KIND.to_string(),
        name: rs.metadata.name.clone().unwrap_or_default(),
        uid: rs.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether the selector of `rs` selects `vmi` (a replica set without a selector selects nothing).
pub fn selects(rs: &VirtualMachineInstanceReplicaSet, vmi: &VirtualMachineInstance) -> bool {
    let empty = BTreeMap::new();
    let labels = vmi.metadata.labels.as_ref().unwrap_or(&empty);
    rs.spec.selector.as_ref().is_some_and(|s| !is_empty(s) && label_selector_matches(s, labels))
}

fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// The selector in Kubernetes' string form (`app=web,tier in (a,b)`), as `status.labelSelector`
/// and the scale subresource show it; `None` when it is not a valid selector.
pub fn selector_string(selector: &LabelSelector) -> Option<String> {
    let value = serde_json::to_value(selector).ok()?;
    ferrovirt_machinery::LabelSelector::from_k8s(&value).ok().map(|s| s.to_string())
}

/// The `generateName` of the set's VMIs: the template's name or generateName if it has one
/// (as KubeVirt does), else the replica set's name.
pub fn base_name(rs: &VirtualMachineInstanceReplicaSet) -> String {
    let template = rs.spec.template.as_ref().and_then(|t| t.metadata.as_ref());
    template
        .and_then(|m| m.name.clone().filter(|n| !n.is_empty()))
        .or_else(|| template.and_then(|m| m.generate_name.clone().filter(|n| !n.is_empty())))
        .unwrap_or_else(|| rs.metadata.name.clone().unwrap_or_default())
}

/// A new VMI of the set: the template's labels (plus [`REPLICA_SET_LABEL`]), annotations and
/// spec, a `generateName`, and the replica set as its controller. `None` without a template.
pub fn vmi_from_template(rs: &VirtualMachineInstanceReplicaSet) -> Option<VirtualMachineInstance> {
    let template = rs.spec.template.as_ref()?;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    // A template that sets the label itself keeps its value: the selector may use it.
    labels.entry(REPLICA_SET_LABEL.to_string()).or_insert_with(|| rs.metadata.name.clone().unwrap_or_default());
    Some(VirtualMachineInstance {
        metadata: ObjectMeta {
            generate_name: Some(base_name(rs)),
            namespace: rs.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations.filter(|a| !a.is_empty()),
            owner_references: Some(vec![owner_reference(rs)]),
            finalizers: Some(vec![FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    })
}

fn phase(vmi: &VirtualMachineInstance) -> Option<Phase> {
    vmi.status.as_ref().and_then(|s| s.phase)
}

fn node(vmi: &VirtualMachineInstance) -> Option<&str> {
    vmi.status.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

/// Whether the VMI has `Ready=True`.
pub fn is_ready(vmi: &VirtualMachineInstance) -> bool {
    vmi.status
        .as_ref()
        .and_then(|s| s.condition(vmi_condition::READY))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

/// Whether the VMI counts as a replica: not Failed or Succeeded, and not being deleted.
pub fn is_active(vmi: &VirtualMachineInstance) -> bool {
    vmi.metadata.deletion_timestamp.is_none() && !phase(vmi).is_some_and(Phase::is_final)
}

fn phase_rank(p: Option<Phase>) -> u8 {
    match p {
        None | Some(Phase::Pending) => 0,
        Some(Phase::Scheduling) => 1,
        Some(Phase::Scheduled) => 2,
        Some(Phase::Unknown) => 3,
        Some(Phase::Running) => 4,
        // Final VMIs are never surplus candidates (they do not count).
        Some(Phase::Succeeded | Phase::Failed) => 5,
    }
}

/// Sorts `vmis` so that the ones to delete first come first, in Kubernetes' ReplicaSet order: not
/// on a node before on a node; Pending < Scheduling < Scheduled < Unknown < Running; not ready
/// before ready; on a node with more VMIs of the set before fewer (so scaling down keeps the set
/// spread); newer before older; then by name.
pub fn deletion_order(vmis: &mut [&VirtualMachineInstance]) {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for v in vmis.iter() {
        if let Some(n) = node(v) {
            *per_node.entry(n).or_insert(0) += 1;
        }
    }
    vmis.sort_by(|a, b| {
        let key = |v: &VirtualMachineInstance| {
            (
                node(v).is_some(),
                phase_rank(phase(v)),
                is_ready(v),
                std::cmp::Reverse(node(v).map_or(0, |n| per_node[n])),
                std::cmp::Reverse(v.metadata.creation_timestamp.clone().map(|t| t.0)),
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// Decides what to do for `rs`, given the VMIs of its namespace (`vmis`; those controlled by
/// others and unmatched orphans are ignored) and whether earlier creates and deletes are all seen.
pub fn reconcile_replicaset(
    rs: &VirtualMachineInstanceReplicaSet,
    vmis: &[&VirtualMachineInstance],
    in_flight: InFlight,
    now: Timestamp,
) -> RsPlan {
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let valid = rs.spec.template.is_some()
        && rs.spec.selector.as_ref().is_some_and(|s| !is_empty(s))
        && vmi_from_template(rs).is_some_and(|v| selects(rs, &v));
    let ns = rs.metadata.namespace.as_deref();

    // Claim: owned and matching, adopted orphans; release owned ones that no longer match.
    let mut actions = Vec::new();
    let mut claimed: Vec<&VirtualMachineInstance> = Vec::new();
    for &vmi in vmis.iter().filter(|v| v.metadata.namespace.as_deref() == ns) {
        let owned = is_controlled_by(vmi, rs);
        let matches = valid && selects(rs, vmi);
        let refs = vmi.metadata.owner_references.clone().unwrap_or_default();
        let rv = vmi.metadata.resource_version.clone().unwrap_or_default();
        let name = vmi.metadata.name.clone().unwrap_or_default();
        if owned && matches {
            claimed.push(vmi);
        } else if owned {
            // Nothing is released by a replica set being deleted: the garbage collector takes all.
            if valid && !deleting {
                let uid = rs.metadata.uid.as_deref();
                let owner_references = refs.into_iter().filter(|r| Some(r.uid.as_str()) != uid).collect();
                actions.push(RsAction::Release { name, resource_version: rv, owner_references });
            } else {
                claimed.push(vmi);
            }
        } else if matches && controller_of(vmi).is_none() && !deleting && is_active(vmi) {
            let mut owner_references = refs;
            owner_references.push(owner_reference(rs));
            actions.push(RsAction::Adopt { name, resource_version: rv, owner_references });
            claimed.push(vmi);
        }
    }

    let mut active: Vec<&VirtualMachineInstance> = claimed.iter().copied().filter(|v| is_active(v)).collect();
    let ready = active.iter().filter(|v| is_ready(v)).count();
    let finished: Vec<&VirtualMachineInstance> = claimed
        .iter()
        .copied()
        .filter(|v| v.metadata.deletion_timestamp.is_none() && phase(v).is_some_and(Phase::is_final))
        .collect();

    let paused = rs.spec.paused == Some(true);
    let scaled = valid && !deleting && !paused && in_flight == InFlight::Settled;
    if scaled {
        for vmi in finished.iter().take(BURST_REPLICAS) {
            actions.push(RsAction::DeleteVmi {
                name: vmi.metadata.name.clone().unwrap_or_default(),
                uid: vmi.metadata.uid.clone().unwrap_or_default(),
                reason: DeleteReason::Finished,
            });
        }
        let wanted = usize::try_from(rs.spec.replicas.unwrap_or(1)).unwrap_or(0);
        if active.len() > wanted {
            deletion_order(&mut active);
            for vmi in active.iter().take((active.len() - wanted).min(BURST_REPLICAS)) {
                actions.push(RsAction::DeleteVmi {
                    name: vmi.metadata.name.clone().unwrap_or_default(),
                    uid: vmi.metadata.uid.clone().unwrap_or_default(),
                    reason: DeleteReason::Surplus,
                });
            }
        } else if let Some(template) = vmi_from_template(rs) {
            for _ in 0..(wanted - active.len()).min(BURST_REPLICAS) {
                actions.push(RsAction::CreateVmi(Box::new(template.clone())));
            }
        }
    }

    let mut status = rs.status.clone().unwrap_or_default();
    status.replicas = Some(i32::try_from(active.len()).unwrap_or(i32::MAX));
    status.ready_replicas = Some(i32::try_from(ready).unwrap_or(i32::MAX));
    status.label_selector = rs.spec.selector.as_ref().and_then(selector_string);
    let mut conds = status.conditions.take().unwrap_or_default();
    if paused {
        conditions::set(
            &mut conds,
            replicaset_condition::REPLICA_PAUSED,
            ConditionStatus::True,
            Some("Paused"),
            Some("Controller got paused"),
            now,
        );
    } else {
        conditions::remove(&mut conds, replicaset_condition::REPLICA_PAUSED);
    }
    if scaled {
        conditions::remove(&mut conds, replicaset_condition::REPLICA_FAILURE);
    }
    status.conditions = (!conds.is_empty()).then_some(conds);
    RsPlan { actions, status, scaled }
}

/// Records in `status` that a create or delete failed: `ReplicaFailure=True` with `reason`
/// ([`REASON_FAILED_CREATE`] or [`REASON_FAILED_DELETE`]) and the error as the message.
pub fn record_failure(
    status: &mut VirtualMachineInstanceReplicaSetStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let mut conds = status.conditions.take().unwrap_or_default();
    conditions::set(
        &mut conds,
        replicaset_condition::REPLICA_FAILURE,
        ConditionStatus::True,
        Some(reason),
        Some(message),
        now,
    );
    status.conditions = Some(conds);
}

/// Whether a status says the replica set is paused.
pub fn shows_paused(status: Option<&VirtualMachineInstanceReplicaSetStatus>) -> bool {
    status
        .and_then(|s| s.conditions.as_deref())
        .is_some_and(|c| conditions::has_status(c, replicaset_condition::REPLICA_PAUSED, ConditionStatus::True))
}

#[cfg(test)]
mod tests;
