//! The VMI controller's decisions: a launcher pod per VMI, and the VMI's early phases.
//!
//! ```text
//!          controller (this module)                 node agent
//!   ┌───────────────────────────────────────┐ ┌──────────────────────────────┐
//!   (none) ─► Pending ─► Scheduling ─► Scheduled ─► Running ─► Succeeded
//!              │ pod       │ pod exists,   │ pod bound     │         └──► Failed
//!              │ created   │ not bound     │ (nodeName)    └──► Unknown ─► Running/...
//!              └───────────┴───────────────┴──► Failed: the pod vanished or ended before the VMI ran
//! ```
//!
//! The controller writes Pending, Scheduling, Scheduled and Failed; Running, Succeeded, Failed and
//! Unknown after that are the node agent's. [`transition`] is the one place that says which moves
//! exist; a write that would go backwards (say Running → Scheduled, from a stale view) is not made.
//!
//! Deletion: every VMI carries the finalizer [`FINALIZER`]. When the VMI is deleted the controller
//! deletes its launcher pod; a pod bound to a node stays (with a deletionTimestamp) until the node
//! agent has stopped the guest and confirms the deletion. Once the pod is gone the finalizer is
//! removed and the VMI disappears. A VMI deleted without the controller running (no finalizer yet)
//! is removed at once and the API server's garbage collector deletes the pod through its
//! ownerReference.

use std::collections::BTreeMap;

use ferrovirt_api::kubevirt::{
    vmi_condition, ConditionStatus, MemoryStatus, PhaseTransitionTimestamp, VirtualMachineInstance,
    VirtualMachineInstancePhase as Phase, VirtualMachineInstanceStatus,
};
use ferrovirt_api::quantity::quantity_from_bytes;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::conditions;
use crate::event::Event;
use crate::launcher_pod::{launcher_pod, LauncherPodError, LauncherSettings};
use crate::overhead::memory_overhead;

/// Finalizer that keeps a deleted VMI until its launcher pod is gone (KubeVirt's name).
pub const FINALIZER: &str = "kubevirt.io/foregroundDeleteVirtualMachine";
/// Label set on a VMI once its pod is bound: the node it runs on.
pub const NODE_NAME_LABEL: &str = "kubevirt.io/nodeName";
/// The VMI condition mirroring the launcher pod's `PodScheduled=False`.
pub const POD_SCHEDULED: &str = "PodScheduled";
/// Reason of a VMI that failed because its pod disappeared before it finished.
pub const REASON_POD_MISSING: &str = "PodMissing";
/// Reason of a VMI that failed because its pod ended before the VMI ran.
pub const REASON_POD_TERMINATED: &str = "PodTerminated";
/// Reason of a VMI whose launcher pod cannot be built.
pub const REASON_INVALID_SPEC: &str = "FailedCreate";

/// A move between two phases that the VMI lifecycle does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a VirtualMachineInstance cannot go from {} to {to:?}", from.map_or("no phase".to_string(), |p| format!("{p:?}")))]
pub struct IllegalTransition {
    /// The current phase (`None`: not set yet).
    pub from: Option<Phase>,
    /// The refused phase.
    pub to: Phase,
}

/// The one transition function of the VMI lifecycle. Staying in the same phase is allowed (and
/// changes nothing); forward moves may skip phases (a fast node agent may report Running before
/// the controller saw the pod bound); nothing leaves Succeeded or Failed; Unknown (host
/// unreachable) is entered from Scheduled or Running and left for Running or an end.
pub fn transition(from: Option<Phase>, to: Phase) -> Result<Phase, IllegalTransition> {
    use Phase::*;
    let legal = match from {
        None => to != Unknown,
        Some(f) if f == to => true,
        Some(Pending) => matches!(to, Scheduling | Scheduled | Running | Failed),
        Some(Scheduling) => matches!(to, Scheduled | Running | Failed),
        Some(Scheduled) => matches!(to, Running | Succeeded | Failed | Unknown),
        Some(Running) => matches!(to, Succeeded | Failed | Unknown),
        Some(Unknown) => matches!(to, Running | Succeeded | Failed),
        Some(Succeeded | Failed) => false,
    };
    if legal {
        Ok(to)
    } else {
        Err(IllegalTransition { from, to })
    }
}

/// What the VMI controller does for one VMI. The runtime carries these out in order, each
/// idempotently; a failed step ends the pass and the VMI is retried.
#[derive(Clone, Debug, PartialEq)]
pub enum VmiAction {
    /// Add [`FINALIZER`] to the VMI.
    AddFinalizer,
    /// Remove [`FINALIZER`]: the launcher pod is gone.
    RemoveFinalizer,
    /// Write the VMI's status (through the main resource, pinned to the observed resourceVersion).
    UpdateStatus(Box<VirtualMachineInstanceStatus>),
    /// Set the [`NODE_NAME_LABEL`] label.
    SetNodeLabel(String),
    /// Create the launcher pod (with `generateName`).
    CreatePod(Box<Pod>),
    /// Delete the launcher pod (its grace period applies when it is bound to a node).
    DeletePod {
        /// Pod name.
        name: String,
        /// Pod UID, a precondition of the delete.
        uid: String,
    },
    /// Publish an event about the VMI.
    Event(Event),
}

fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn pod_terminated(pod: &Pod) -> bool {
    matches!(pod_phase(pod), Some("Succeeded" | "Failed"))
}

fn pod_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Whether the launcher pod runs and does not say it is unready.
fn pod_ready(pod: &Pod) -> bool {
    pod_phase(pod) == Some("Running")
        && pod.metadata.deletion_timestamp.is_none()
        && pod_condition(pod, "Ready").is_none_or(|c| c.status != "False")
}

/// Whether the VMI has been in the Running phase.
pub fn has_run(vmi: &VirtualMachineInstance) -> bool {
    let Some(status) = &vmi.status else { return false };
    status.phase == Some(Phase::Running)
        || status.phase_transition_timestamps.iter().flatten().any(|t| t.phase == Phase::Running)
}

fn has_finalizer(vmi: &VirtualMachineInstance) -> bool {
    vmi.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER)
}

/// Decides what to do for `vmi`, given its launcher pod as last observed (`None`: there is none).
pub fn reconcile_vmi(
    vmi: &VirtualMachineInstance,
    pod: Option<&Pod>,
    now: Timestamp,
    settings: &LauncherSettings,
) -> Vec<VmiAction> {
    let mut actions = Vec::new();
    let key = format!(
        "{}/{}",
        vmi.metadata.namespace.as_deref().unwrap_or_default(),
        vmi.metadata.name.as_deref().unwrap_or_default()
    );

    if vmi.metadata.deletion_timestamp.is_some() {
        match pod {
            Some(p) if p.metadata.deletion_timestamp.is_none() => actions.push(delete_pod(p)),
            Some(_) => {} // the node agent is stopping the guest
            None if has_finalizer(vmi) => actions.push(VmiAction::RemoveFinalizer),
            None => {}
        }
        return actions;
    }
    if !has_finalizer(vmi) {
        actions.push(VmiAction::AddFinalizer);
    }

    let old = vmi.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let phase = old.phase;
    let is_final = phase.is_some_and(Phase::is_final);
    let mut conditions = status.conditions.take().unwrap_or_default();
    let mut wanted_phase: Option<(Phase, Option<&str>)> = None;
    let mut create_pod = None;
    let mut delete = None;
    let mut node_label = None;
    let mut events = Vec::new();

    let overhead = quantity_from_bytes(memory_overhead(&vmi.spec));
    if status.memory.as_ref().and_then(|m| m.memory_overhead.as_ref()) != Some(&overhead) {
        status.memory.get_or_insert_with(MemoryStatus::default).memory_overhead = Some(overhead);
    }

    match pod {
        None => match phase {
            None | Some(Phase::Pending) => match launcher_pod(vmi, settings) {
                Ok(p) => {
                    create_pod = Some(p);
                    wanted_phase = Some((Phase::Pending, None));
                }
                Err(e @ LauncherPodError::Quantity { .. }) => {
                    wanted_phase = Some((Phase::Failed, Some(REASON_INVALID_SPEC)));
                    events.push(Event::warning(REASON_INVALID_SPEC, format!("cannot build the launcher pod: {e}")));
                }
                // Not a stored object: nothing can be done with it.
                Err(LauncherPodError::MissingMetadata(_)) => return actions,
            },
            Some(Phase::Scheduling | Phase::Scheduled | Phase::Running | Phase::Unknown) => {
                wanted_phase = Some((Phase::Failed, Some(REASON_POD_MISSING)));
                events.push(Event::warning(
                    REASON_POD_MISSING,
                    format!(
                        "the launcher pod of {key} disappeared while the VMI was {:?}",
                        phase.unwrap_or(Phase::Pending)
                    ),
                ));
            }
            Some(Phase::Succeeded | Phase::Failed) => {}
        },
        Some(p) if is_final => {
            // A finished VMI keeps no running launcher.
            if !pod_terminated(p) && p.metadata.deletion_timestamp.is_none() {
                delete = Some(delete_pod(p));
            }
        }
        Some(p) if pod_terminated(p) && !matches!(phase, Some(Phase::Running | Phase::Unknown)) => {
            wanted_phase = Some((Phase::Failed, Some(REASON_POD_TERMINATED)));
            events.push(Event::warning(
                REASON_POD_TERMINATED,
                format!(
                    "launcher pod {} ended ({}) before the VMI ran",
                    p.metadata.name.as_deref().unwrap_or_default(),
                    pod_phase(p).unwrap_or_default()
                ),
            ));
        }
        Some(p) if p.metadata.deletion_timestamp.is_some() => {} // going away; decided when it is gone
        Some(p) => match pod_node(p) {
            None => {
                wanted_phase = Some((Phase::Scheduling, None));
                match pod_condition(p, "PodScheduled").filter(|c| c.status == "False") {
                    Some(c) => conditions::set(
                        &mut conditions,
                        POD_SCHEDULED,
                        ConditionStatus::False,
                        c.reason.as_deref(),
                        c.message.as_deref(),
                        now,
                    ),
                    None => conditions::remove(&mut conditions, POD_SCHEDULED),
                }
            }
            Some(node) => {
                wanted_phase = Some((Phase::Scheduled, None));
                conditions::remove(&mut conditions, POD_SCHEDULED);
                status.node_name = Some(node.to_string());
                if let Some(uid) = &p.metadata.uid {
                    let active = BTreeMap::from([(uid.clone(), node.to_string())]);
                    if status.active_pods.as_ref() != Some(&active) {
                        status.active_pods = Some(active);
                    }
                }
                let labelled = vmi.metadata.labels.as_ref().and_then(|l| l.get(NODE_NAME_LABEL));
                if labelled.map(String::as_str) != Some(node) {
                    node_label = Some(node.to_string());
                }
            }
        },
    }

    // Phase: only legal moves, each recorded with its time.
    if let Some((to, reason)) = wanted_phase {
        if let Ok(next) = transition(phase, to) {
            if Some(next) != phase {
                status.phase = Some(next);
                status
                    .phase_transition_timestamps
                    .get_or_insert_with(Vec::new)
                    .push(PhaseTransitionTimestamp { phase: next, phase_transition_timestamp: Time(now) });
                if let Some(r) = reason {
                    status.reason = Some(r.to_string());
                }
            }
        }
    }

    // Ready: the guest runs and its launcher pod runs and is not unready.
    let running = status.phase == Some(Phase::Running);
    match pod {
        Some(p) if running && pod_ready(p) => {
            conditions::set(&mut conditions, vmi_condition::READY, ConditionStatus::True, None, None, now)
        }
        _ => {
            let (reason, message) = if running {
                ("PodNotReady", "the launcher pod is not running or not ready")
            } else {
                ("GuestNotRunning", "the guest is not running")
            };
            conditions::set(
                &mut conditions,
                vmi_condition::READY,
                ConditionStatus::False,
                Some(reason),
                Some(message),
                now,
            )
        }
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);

    if status != old {
        actions.push(VmiAction::UpdateStatus(Box::new(status)));
    }
    if let Some(node) = node_label {
        actions.push(VmiAction::SetNodeLabel(node));
    }
    if let Some(p) = create_pod {
        actions.push(VmiAction::CreatePod(Box::new(p)));
    }
    if let Some(d) = delete {
        actions.push(d);
    }
    actions.extend(events.into_iter().map(VmiAction::Event));
    actions
}

fn delete_pod(pod: &Pod) -> VmiAction {
    VmiAction::DeletePod {
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
