//! The VM controller's decisions: when a VM gets a VMI, when it loses it, and what its status says.
//!
//! Run strategies (KubeVirt's semantics), with the VMI as observed:
//!
//! | strategy        | no VMI                                              | VMI exists                                  |
//! |-----------------|-----------------------------------------------------|---------------------------------------------|
//! | Always          | create (after the start-failure backoff)            | delete when it ended or a stop is requested (the next pass creates a new one: a restart) |
//! | RerunOnFailure  | create when a start is requested or on first entering the strategy (after the backoff) | delete when it ended or a stop is requested; a Failed VMI also queues a start request |
//! | Manual          | create on a start request                           | delete on a stop request                    |
//! | Halted          | a start request switches the VM to Always           | delete                                      |
//! | Once            | create on first entering the strategy or on a start request | delete on a stop request; an ended VMI stays |
//!
//! `spec.running: true` is Always and `false` (or nothing) is Halted. Start and stop requests come
//! from `status.stateChangeRequests` (written by the start/stop/restart subresources); only the
//! first one is acted on, and it is removed once done: a stop when the VMI it names is gone, a
//! start when a VMI runs.
//!
//! Start failures: a VMI that ends in Failed without ever having been Running counts as a start
//! failure (Succeeded never does). After `n` failures in a row the next VMI waits
//! `min(base × 2^(n-1), max)` (10 s, 20 s, 40 s … 5 min by default) and the VM shows
//! CrashLoopBackOff meanwhile. A VMI that reaches Running clears the count.
//!
//! Writes are ordered status first (pinned to the observed resourceVersion, so start/stop requests
//! added meanwhile are never lost), then the VMI create or delete: a failure recorded in the status
//! is never forgotten because a delete went through and the status write did not.

use std::time::Duration;

use ferrovirt_api::kubevirt::{
    vm_condition, vmi_condition, Condition, ConditionStatus, PrintableStatus, RunStrategy, StartFailure, StartStrategy,
    StateChangeAction, StateChangeRequest, VirtualMachine, VirtualMachineInstance,
    VirtualMachineInstancePhase as Phase, VirtualMachineStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use k8s_openapi::Resource as _;

use crate::conditions;
use crate::event::Event;
use crate::vmi::{has_run, FINALIZER, POD_SCHEDULED};

/// Label naming the VM on each of its VMIs.
pub const VM_LABEL: &str = "kubevirt.io/vm";
/// Annotation on a VMI: the VM generation it was created from.
pub const GENERATION_ANNOTATION: &str = "kubevirt.io/vm-generation";
/// Key of `stateChangeRequests[].data` asking for a paused start.
pub const START_PAUSED_KEY: &str = "paused";

/// How long a VM waits before its next VMI after consecutive start failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartBackoff {
    /// Wait after the first failure; doubled after each further one.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for StartBackoff {
    /// KubeVirt's figures: 10 s, doubling, at most 5 minutes.
    fn default() -> Self {
        StartBackoff { base: Duration::from_secs(10), max: Duration::from_secs(300) }
    }
}

impl StartBackoff {
    /// The wait after `failures` consecutive start failures (none for zero).
    pub fn delay(&self, failures: i64) -> Duration {
        if failures <= 0 {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// What the VM controller does for one VM, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum VmAction {
    /// Write the VM's status through the status subresource, pinned to the observed resourceVersion.
    UpdateStatus(Box<VirtualMachineStatus>),
    /// Switch `spec.runStrategy` (or `spec.running`): a start request on a Halted VM.
    SetRunStrategy(RunStrategy),
    /// Delete the VMI (a UID precondition makes it hit only the VMI that was observed).
    DeleteVmi {
        /// VMI name (the VM's name).
        name: String,
        /// VMI UID.
        uid: String,
    },
    /// Create this VMI (AlreadyExists counts as done).
    CreateVmi(Box<VirtualMachineInstance>),
    /// Publish an event about the VM.
    Event(Event),
    /// Look at the VM again after this long (the start backoff ends).
    RequeueAfter(Duration),
}

/// Whether `vmi` is controlled by `vm` (its controller ownerReference has the VM's UID).
pub fn is_controlled_by(vmi: &VirtualMachineInstance, vm: &VirtualMachine) -> bool {
    let Some(uid) = vm.metadata.uid.as_deref() else { return false };
    vmi.metadata.owner_references.iter().flatten().any(|r| r.controller == Some(true) && r.uid == uid)
}

/// The VMI a VM starts: named like the VM, owned by it, from its template.
pub fn vmi_from_template(vm: &VirtualMachine, start_paused: bool) -> VirtualMachineInstance {
    let name = vm.metadata.name.clone().unwrap_or_default();
    let template_meta = vm.spec.template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(VM_LABEL.to_string(), name.clone());
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(GENERATION_ANNOTATION.to_string(), vm.metadata.generation.unwrap_or(1).to_string());
    let owner = OwnerReference {
        api_version: VirtualMachine::API_VERSION.to_string(),
        kind: VirtualMachine::KIND.to_string(),
        name: name.clone(),
        uid: vm.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut spec = vm.spec.template.spec.clone();
    if start_paused {
        spec.start_strategy = Some(StartStrategy::Paused);
    }
    VirtualMachineInstance {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: vm.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            finalizers: Some(vec![FINALIZER.to_string()]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

fn vmi_phase(vmi: &VirtualMachineInstance) -> Option<Phase> {
    vmi.status.as_ref().and_then(|s| s.phase)
}

fn vmi_conditions(vmi: &VirtualMachineInstance) -> &[Condition] {
    vmi.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default()
}

fn is_migrating(vmi: &VirtualMachineInstance) -> bool {
    vmi.status
        .as_ref()
        .and_then(|s| s.migration_state.as_ref())
        .is_some_and(|m| m.start_timestamp.is_some() && m.completed != Some(true) && m.failed != Some(true))
}

/// What the VM is doing, for people (`kubectl get vm`), first match wins.
fn printable_status(
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
    deleting_now: bool,
    creating_now: bool,
    crash_looping: bool,
) -> PrintableStatus {
    if vm.metadata.deletion_timestamp.is_some() {
        return PrintableStatus::Terminating;
    }
    let Some(vmi) = vmi else {
        return if creating_now {
            PrintableStatus::Starting
        } else if crash_looping {
            PrintableStatus::CrashLoopBackOff
        } else {
            PrintableStatus::Stopped
        };
    };
    let phase = vmi_phase(vmi);
    let is_final = phase.is_some_and(Phase::is_final);
    let conds = vmi_conditions(vmi);
    let unschedulable = conditions::find(conds, POD_SCHEDULED)
        .is_some_and(|c| c.status == ConditionStatus::False && c.reason.as_deref() == Some("Unschedulable"));
    let sync_reason = conditions::find(conds, vmi_condition::SYNCHRONIZED)
        .filter(|c| c.status == ConditionStatus::False)
        .and_then(|c| c.reason.as_deref());
    if !is_final && (vmi.metadata.deletion_timestamp.is_some() || deleting_now) {
        PrintableStatus::Stopping
    } else if is_migrating(vmi) {
        PrintableStatus::Migrating
    } else if phase == Some(Phase::Running) {
        if conditions::has_status(conds, vmi_condition::PAUSED, ConditionStatus::True) {
            PrintableStatus::Paused
        } else {
            PrintableStatus::Running
        }
    } else if unschedulable {
        PrintableStatus::ErrorUnschedulable
    } else if sync_reason == Some("ErrImagePull") {
        PrintableStatus::ErrImagePull
    } else if sync_reason == Some("ImagePullBackOff") {
        PrintableStatus::ImagePullBackOff
    } else if matches!(phase, None | Some(Phase::Pending | Phase::Scheduling | Phase::Scheduled)) {
        PrintableStatus::Starting
    } else if is_final && crash_looping {
        PrintableStatus::CrashLoopBackOff
    } else if is_final {
        PrintableStatus::Stopped
    } else {
        PrintableStatus::Unknown
    }
}

/// Conditions the VM controller owns; every other VMI condition is copied to the VM.
const OWN_CONDITIONS: [&str; 3] = [vm_condition::READY, vm_condition::FAILURE, vm_condition::RESTART_REQUIRED];

fn sync_conditions(
    conds: &mut Vec<Condition>,
    vmi: Option<&VirtualMachineInstance>,
    failure: Option<String>,
    keep_failure: bool,
    now: Timestamp,
) {
    match vmi.map(|v| (v, conditions::find(vmi_conditions(v), vmi_condition::READY))) {
        None => conditions::set(
            conds,
            vm_condition::READY,
            ConditionStatus::False,
            Some("VMINotExists"),
            Some("VMI does not exist"),
            now,
        ),
        Some((_, None)) => conditions::set(
            conds,
            vm_condition::READY,
            ConditionStatus::False,
            Some("VMIConditionMissing"),
            Some("VMI is missing the Ready condition"),
            now,
        ),
        Some((_, Some(ready))) => conditions::put(conds, ready),
    }
    let copied: Vec<&Condition> = vmi
        .map(vmi_conditions)
        .unwrap_or_default()
        .iter()
        .filter(|c| !OWN_CONDITIONS.contains(&c.type_.as_str()))
        .collect();
    conds.retain(|c| OWN_CONDITIONS.contains(&c.type_.as_str()) || copied.iter().any(|v| v.type_ == c.type_));
    for c in copied {
        conditions::put(conds, c);
    }
    match failure {
        Some(message) => conditions::set(
            conds,
            vm_condition::FAILURE,
            ConditionStatus::True,
            Some("FailedCreate"),
            Some(&message),
            now,
        ),
        None if keep_failure => {}
        None => conditions::remove(conds, vm_condition::FAILURE),
    }
}

/// Decides what to do for `vm` given the VMI named like it (`None`: there is none), at `now`.
pub fn reconcile_vm(
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
    now: Timestamp,
    backoff: &StartBackoff,
) -> Vec<VmAction> {
    let name = vm.metadata.name.clone().unwrap_or_default();
    let old = vm.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut failure: Option<String> = None;

    // A VMI with the VM's name that another controller owns is left alone.
    let foreign = vmi.filter(|v| !is_controlled_by(v, vm));
    if foreign.is_some() {
        failure = Some(format!(
            "a VirtualMachineInstance named {name} exists and is not controlled by this VirtualMachine; delete it"
        ));
    }
    let vmi = vmi.filter(|v| is_controlled_by(v, vm));
    let strategy = vm.run_strategy();
    if strategy.is_none() {
        failure = Some("spec.running and spec.runStrategy are both set; remove spec.running".to_string());
    }

    let phase = vmi.and_then(vmi_phase);
    let vmi_final = phase.is_some_and(Phase::is_final);
    let vmi_deleting = vmi.is_some_and(|v| v.metadata.deletion_timestamp.is_some());
    let vmi_live = vmi.is_some() && !vmi_final && !vmi_deleting;
    let vmi_uid = vmi.and_then(|v| v.metadata.uid.as_deref());

    // Requests that are done are dropped; only the first remaining one counts.
    let mut requests = old.state_change_requests.clone().unwrap_or_default();
    while let Some(first) = requests.first() {
        let done = match first.action {
            StateChangeAction::Stop => vmi.is_none() || first.uid.is_none() || first.uid.as_deref() != vmi_uid,
            StateChangeAction::Start => vmi_live,
        };
        if !done {
            break;
        }
        requests.remove(0);
    }
    let stop_requested = requests.first().is_some_and(|r| r.action == StateChangeAction::Stop);
    let start_request = requests.first().filter(|r| r.action == StateChangeAction::Start);
    let start_paused =
        start_request.and_then(|r| r.data.as_ref()).and_then(|d| d.get(START_PAUSED_KEY)).is_some_and(|v| v == "true");

    // Start failures.
    match (vmi, strategy) {
        (Some(v), _) if has_run(v) => status.start_failure = None,
        (_, Some(RunStrategy::Always | RunStrategy::RerunOnFailure | RunStrategy::Once)) => {
            if let Some(v) = vmi.filter(|_| phase == Some(Phase::Failed) && !vmi_deleting) {
                let counted = old.start_failure.as_ref().and_then(|f| f.last_failed_vmi_uid.as_deref()) == vmi_uid;
                if !counted {
                    let previous = old.start_failure.as_ref();
                    let count = previous.and_then(|f| f.consecutive_fail_count).unwrap_or(0) + 1;
                    let wait = SignedDuration::try_from(backoff.delay(count)).unwrap_or(SignedDuration::MAX);
                    status.start_failure = Some(StartFailure {
                        retries: previous.and_then(|f| f.retries),
                        consecutive_fail_count: Some(count),
                        last_failed_vmi_uid: v.metadata.uid.clone(),
                        retry_after_timestamp: Some(Time(now.saturating_add(wait).unwrap_or(now))),
                    });
                }
            }
        }
        _ => status.start_failure = None,
    }

    // The decision.
    let mut create = false;
    let mut delete = false;
    let mut set_strategy = None;
    if let (Some(strategy), false, None) = (strategy, vm.metadata.deletion_timestamp.is_some(), foreign) {
        match (strategy, vmi) {
            (_, Some(_)) if vmi_deleting => {}
            (RunStrategy::Always, Some(_)) => delete = stop_requested || vmi_final,
            (RunStrategy::RerunOnFailure, Some(_)) => {
                delete = stop_requested || vmi_final;
                let no_start_queued = !requests.iter().any(|r| r.action == StateChangeAction::Start);
                if phase == Some(Phase::Failed) && !stop_requested && no_start_queued {
                    requests.push(StateChangeRequest { action: StateChangeAction::Start, data: None, uid: None });
                }
            }
            (RunStrategy::Manual | RunStrategy::Once, Some(_)) => delete = stop_requested,
            (RunStrategy::Halted, Some(_)) => delete = true,
            (RunStrategy::Always, None) => create = true,
            (RunStrategy::RerunOnFailure | RunStrategy::Once, None) => {
                create = start_request.is_some() || old.run_strategy != Some(strategy)
            }
            (RunStrategy::Manual, None) => create = start_request.is_some(),
            (RunStrategy::Halted, None) => {
                if start_request.is_some() {
                    set_strategy = Some(RunStrategy::Always);
                }
            }
        }
    }

    // The backoff holds automatic (re)starts back.
    let mut requeue = None;
    if create && matches!(strategy, Some(RunStrategy::Always | RunStrategy::RerunOnFailure)) {
        let retry_after = status.start_failure.as_ref().and_then(|f| f.retry_after_timestamp.as_ref());
        if let Some(Time(at)) = retry_after {
            if *at > now {
                create = false;
                let left = at.duration_since(now);
                requeue = Some(Duration::try_from(left).unwrap_or(Duration::ZERO) + Duration::from_millis(50));
            }
        }
    }
    if create {
        // One retry per failure, however often the create is attempted.
        if let Some(f) = status.start_failure.as_mut() {
            let retries = f.retries.unwrap_or(0);
            if retries < f.consecutive_fail_count.unwrap_or(0) {
                f.retries = Some(retries + 1);
            }
        }
    }

    // Status.
    status.created = Some(vmi.is_some());
    status.ready = Some(
        vmi.is_some_and(|v| conditions::has_status(vmi_conditions(v), vmi_condition::READY, ConditionStatus::True)),
    );
    if let Some(s) = strategy.filter(|_| vmi.is_some() || old.run_strategy.is_some()) {
        status.run_strategy = Some(s);
    }
    if let Some(v) = vmi {
        let generation = v.metadata.annotations.as_ref().and_then(|a| a.get(GENERATION_ANNOTATION));
        if let Some(g) = generation.and_then(|g| g.parse().ok()) {
            status.observed_generation = Some(g);
        }
        status.desired_generation = vm.metadata.generation;
    }
    status.state_change_requests = (!requests.is_empty()).then_some(requests);
    let mut conds = status.conditions.take().unwrap_or_default();
    // A Failure condition (written when a create failed) stays while the controller keeps trying.
    let keep_failure = create && vmi.is_none();
    sync_conditions(&mut conds, vmi, failure, keep_failure, now);
    status.conditions = (!conds.is_empty()).then_some(conds);
    let crash_looping = status.start_failure.as_ref().and_then(|f| f.consecutive_fail_count).unwrap_or(0) > 0
        && matches!(strategy, Some(RunStrategy::Always | RunStrategy::RerunOnFailure | RunStrategy::Once));
    let printable = printable_status(vm, vmi, delete, create, crash_looping);
    status.printable_status = Some(printable);

    let mut actions = Vec::new();
    if status != old {
        actions.push(VmAction::UpdateStatus(Box::new(status.clone())));
    }
    if let Some(s) = set_strategy {
        actions.push(VmAction::SetRunStrategy(s));
    }
    if delete {
        if let Some(v) = vmi {
            actions.push(VmAction::DeleteVmi {
                name: v.metadata.name.clone().unwrap_or_default(),
                uid: v.metadata.uid.clone().unwrap_or_default(),
            });
        }
    }
    if create {
        actions.push(VmAction::CreateVmi(Box::new(vmi_from_template(vm, start_paused))));
    }
    if old.printable_status != Some(printable) {
        if let Some(e) = transition_event(old.printable_status, printable, &status, vmi, now) {
            actions.push(VmAction::Event(e));
        }
    }
    if let Some(d) = requeue {
        actions.push(VmAction::RequeueAfter(d));
    }
    actions
}

/// The event for a change of the printable status, if it deserves one.
fn transition_event(
    from: Option<PrintableStatus>,
    to: PrintableStatus,
    status: &VirtualMachineStatus,
    vmi: Option<&VirtualMachineInstance>,
    now: Timestamp,
) -> Option<Event> {
    let vmi_name = vmi.and_then(|v| v.metadata.name.as_deref()).unwrap_or_default();
    match to {
        PrintableStatus::Running if from != Some(PrintableStatus::Paused) => {
            Some(Event::normal("Started", format!("the virtual machine runs (VMI {vmi_name})")))
        }
        PrintableStatus::Stopped if from.is_some() => Some(Event::normal("Stopped", "the virtual machine stopped")),
        PrintableStatus::CrashLoopBackOff => {
            let f = status.start_failure.as_ref();
            let count = f.and_then(|f| f.consecutive_fail_count).unwrap_or(0);
            let wait = f
                .and_then(|f| f.retry_after_timestamp.as_ref())
                .map(|t| t.0.duration_since(now).as_secs().max(0))
                .unwrap_or(0);
            Some(Event::warning(
                "CrashLoopBackOff",
                format!("{count} start failure(s) in a row; the next start is in {wait}s"),
            ))
        }
        PrintableStatus::ErrorUnschedulable => {
            let message = vmi
                .map(vmi_conditions)
                .and_then(|c| conditions::find(c, POD_SCHEDULED))
                .and_then(|c| c.message.clone())
                .unwrap_or_default();
            Some(Event::warning("ErrorUnschedulable", format!("the launcher pod cannot be scheduled: {message}")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
