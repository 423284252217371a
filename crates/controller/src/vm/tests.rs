use super::*;
use ferrovirt_api::kubevirt::{PhaseTransitionTimestamp, VirtualMachineInstanceStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const STRATEGIES: [RunStrategy; 5] =
    [RunStrategy::Always, RunStrategy::RerunOnFailure, RunStrategy::Manual, RunStrategy::Halted, RunStrategy::Once];

fn t0() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(secs)).unwrap()
}

fn vm(strategy: RunStrategy) -> VirtualMachine {
    let mut vm = VirtualMachine::default();
    vm.metadata.name = Some("vm1".into());
    vm.metadata.namespace = Some("default".into());
    vm.metadata.uid = Some("vm-uid".into());
    vm.metadata.generation = Some(3);
    vm.spec.run_strategy = Some(strategy);
    vm.spec.template.metadata = Some(ObjectMeta {
        labels: Some([("app".to_string(), "demo".to_string())].into()),
        annotations: Some([("note".to_string(), "x".to_string())].into()),
        ..Default::default()
    });
    vm.spec.template.spec.domain.resources.requests = Some([("memory".to_string(), Quantity("128Mi".into()))].into());
    vm
}

fn vmi_of(vm: &VirtualMachine, uid: &str, phase: Option<Phase>) -> VirtualMachineInstance {
    let mut v = vmi_from_template(vm, false);
    v.metadata.uid = Some(uid.into());
    v.status = phase.map(|p| VirtualMachineInstanceStatus { phase: Some(p), ..Default::default() });
    v
}

fn with_requests(mut vm: VirtualMachine, requests: Vec<StateChangeRequest>) -> VirtualMachine {
    vm.status.get_or_insert_with(Default::default).state_change_requests = Some(requests);
    vm
}

fn start() -> StateChangeRequest {
    StateChangeRequest { action: StateChangeAction::Start, data: None, uid: None }
}

fn stop(uid: &str) -> StateChangeRequest {
    StateChangeRequest { action: StateChangeAction::Stop, data: None, uid: Some(uid.into()) }
}

fn status_of(actions: &[VmAction]) -> Option<&VirtualMachineStatus> {
    actions.iter().find_map(|a| match a {
        VmAction::UpdateStatus(s) => Some(s.as_ref()),
        _ => None,
    })
}

/// The VM as the API server would hold it after the status write.
fn apply(mut vm: VirtualMachine, actions: &[VmAction]) -> VirtualMachine {
    if let Some(s) = status_of(actions) {
        vm.status = Some(s.clone());
    }
    vm
}

fn printable(vm: &VirtualMachine, actions: &[VmAction]) -> Option<PrintableStatus> {
    status_of(actions).or(vm.status.as_ref()).and_then(|s| s.printable_status)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VmiState {
    None,
    Phase(Option<Phase>),
    Deleting,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    None,
    Start,
    StopThis,
    StopOther,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Nothing,
    Create,
    Delete,
    SwitchToAlways,
}

/// KubeVirt's run strategy table, written out independently of the implementation.
fn expected(strategy: RunStrategy, vmi: VmiState, request: Request, entered: bool) -> Decision {
    use Decision::*;
    match vmi {
        VmiState::Deleting => Nothing,
        VmiState::Phase(phase) => {
            let stop = request == Request::StopThis;
            let ended = matches!(phase, Some(Phase::Succeeded | Phase::Failed));
            let delete = match strategy {
                RunStrategy::Always | RunStrategy::RerunOnFailure => stop || ended,
                RunStrategy::Manual | RunStrategy::Once => stop,
                RunStrategy::Halted => true,
            };
            if delete {
                Delete
            } else {
                Nothing
            }
        }
        VmiState::None => {
            let start = request == Request::Start;
            match strategy {
                RunStrategy::Always => Create,
                RunStrategy::RerunOnFailure | RunStrategy::Once if start || !entered => Create,
                RunStrategy::Manual if start => Create,
                RunStrategy::Halted if start => SwitchToAlways,
                _ => Nothing,
            }
        }
    }
}

fn decision(actions: &[VmAction]) -> Decision {
    let create = actions.iter().any(|a| matches!(a, VmAction::CreateVmi(_)));
    let delete = actions.iter().any(|a| matches!(a, VmAction::DeleteVmi { .. }));
    let switch = actions.contains(&VmAction::SetRunStrategy(RunStrategy::Always));
    match (create, delete, switch) {
        (false, false, false) => Decision::Nothing,
        (true, false, false) => Decision::Create,
        (false, true, false) => Decision::Delete,
        (false, false, true) => Decision::SwitchToAlways,
        other => panic!("more than one decision: {other:?} in {actions:?}"),
    }
}

#[test]
fn run_strategy_table() {
    let phases = [
        None,
        Some(Phase::Pending),
        Some(Phase::Scheduling),
        Some(Phase::Scheduled),
        Some(Phase::Running),
        Some(Phase::Succeeded),
        Some(Phase::Failed),
        Some(Phase::Unknown),
    ];
    let states: Vec<VmiState> = std::iter::once(VmiState::None)
        .chain(phases.iter().map(|p| VmiState::Phase(*p)))
        .chain(std::iter::once(VmiState::Deleting))
        .collect();
    let mut cases = 0;
    for strategy in STRATEGIES {
        for state in &states {
            for request in [Request::None, Request::Start, Request::StopThis, Request::StopOther] {
                for entered in [false, true] {
                    let mut v = vm(strategy);
                    if entered {
                        v.status.get_or_insert_with(Default::default).run_strategy = Some(strategy);
                    }
                    let requests = match request {
                        Request::None => vec![],
                        Request::Start => vec![start()],
                        Request::StopThis => vec![stop("vmi-uid")],
                        Request::StopOther => vec![stop("old-uid")],
                    };
                    let v = with_requests(v, requests);
                    let vmi = match state {
                        VmiState::None => None,
                        VmiState::Phase(p) => {
                            let mut i = vmi_of(&v, "vmi-uid", *p);
                            if *p == Some(Phase::Failed) {
                                // Failed after running: no backoff in the way.
                                i.status.as_mut().unwrap().phase_transition_timestamps =
                                    Some(vec![PhaseTransitionTimestamp {
                                        phase: Phase::Running,
                                        phase_transition_timestamp: Time(t0()),
                                    }]);
                            }
                            Some(i)
                        }
                        VmiState::Deleting => {
                            let mut i = vmi_of(&v, "vmi-uid", Some(Phase::Running));
                            i.metadata.deletion_timestamp = Some(Time(t0()));
                            Some(i)
                        }
                    };
                    let actions = reconcile_vm(&v, vmi.as_ref(), t0(), &StartBackoff::default());
                    assert_eq!(
                        decision(&actions),
                        expected(strategy, *state, request, entered),
                        "{strategy:?} {state:?} {request:?} entered={entered}: {actions:?}"
                    );
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 5 * 10 * 4 * 2);
}

#[test]
fn running_is_the_old_spelling() {
    let mut v = vm(RunStrategy::Always);
    v.spec.run_strategy = None;
    v.spec.running = Some(true);
    assert_eq!(decision(&reconcile_vm(&v, None, t0(), &StartBackoff::default())), Decision::Create);
    v.spec.running = Some(false);
    let i = vmi_of(&v, "vmi-uid", Some(Phase::Running));
    assert_eq!(decision(&reconcile_vm(&v, Some(&i), t0(), &StartBackoff::default())), Decision::Delete);
    v.spec.running = None;
    assert_eq!(decision(&reconcile_vm(&v, None, t0(), &StartBackoff::default())), Decision::Nothing);
    // Both set: refused by admission; the controller does nothing but say so.
    v.spec.running = Some(true);
    v.spec.run_strategy = Some(RunStrategy::Always);
    let a = reconcile_vm(&v, None, t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Nothing);
    let failure = status_of(&a).unwrap().condition("Failure").unwrap();
    assert_eq!(failure.status, ConditionStatus::True);
}

#[test]
fn created_vmi_follows_the_template() {
    let mut v = vm(RunStrategy::Always);
    v = with_requests(
        v,
        vec![StateChangeRequest {
            action: StateChangeAction::Start,
            data: Some([("paused".to_string(), "true".to_string())].into()),
            uid: None,
        }],
    );
    let a = reconcile_vm(&v, None, t0(), &StartBackoff::default());
    let vmi = a
        .iter()
        .find_map(|x| match x {
            VmAction::CreateVmi(v) => Some(v),
            _ => None,
        })
        .unwrap();
    let m = &vmi.metadata;
    assert_eq!(m.name.as_deref(), Some("vm1"));
    assert_eq!(m.namespace.as_deref(), Some("default"));
    let labels = m.labels.as_ref().unwrap();
    assert_eq!(labels["app"], "demo");
    assert_eq!(labels["kubevirt.io/vm"], "vm1");
    let annotations = m.annotations.as_ref().unwrap();
    assert_eq!(annotations["note"], "x");
    assert_eq!(annotations["kubevirt.io/vm-generation"], "3");
    let owner = &m.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("VirtualMachine", "vm1", "vm-uid"));
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    assert_eq!(m.finalizers.as_deref(), Some(&[FINALIZER.to_string()][..]));
    assert_eq!(vmi.spec.start_strategy, Some(StartStrategy::Paused));
    assert_eq!(vmi.spec.domain, v.spec.template.spec.domain);
    assert_eq!(printable(&v, &a), Some(PrintableStatus::Starting));
}

#[test]
fn requests_are_trimmed_when_done() {
    let v = with_requests(vm(RunStrategy::Manual), vec![stop("old-uid"), start()]);
    // The stop named a VMI that is gone; the start is acted on in the same pass.
    let a = reconcile_vm(&v, None, t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Create);
    assert_eq!(status_of(&a).unwrap().state_change_requests, Some(vec![start()]));
    // Once a VMI runs, the start is done.
    let v = apply(v, &a);
    let i = vmi_of(&v, "new-uid", Some(Phase::Scheduling));
    let a = reconcile_vm(&v, Some(&i), t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Nothing);
    assert_eq!(status_of(&a).unwrap().state_change_requests, None);
    // A restart on Always: stop the current VMI, and a new one follows once it is gone.
    let v = with_requests(apply(v, &a), vec![stop("new-uid")]);
    let mut i = vmi_of(&v, "new-uid", Some(Phase::Running));
    let a = reconcile_vm(&v, Some(&i), t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Delete);
    assert_eq!(printable(&v, &a), Some(PrintableStatus::Stopping));
    let v = apply(v, &a);
    i.metadata.deletion_timestamp = Some(Time(t0()));
    let a = reconcile_vm(&v, Some(&i), t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Nothing);
    assert_eq!(printable(&v, &a), Some(PrintableStatus::Stopping));
    let mut always = apply(v, &a);
    always.spec.run_strategy = Some(RunStrategy::Always);
    let a = reconcile_vm(&always, None, t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Create);
    assert_eq!(status_of(&a).unwrap().state_change_requests, None);
}

#[test]
fn rerun_on_failure_queues_a_start_after_a_failure_only() {
    let v = vm(RunStrategy::RerunOnFailure);
    let mut failed = vmi_of(&v, "vmi-uid", Some(Phase::Failed));
    failed.status.as_mut().unwrap().phase_transition_timestamps =
        Some(vec![PhaseTransitionTimestamp { phase: Phase::Running, phase_transition_timestamp: Time(t0()) }]);
    let a = reconcile_vm(&v, Some(&failed), t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Delete);
    assert_eq!(status_of(&a).unwrap().state_change_requests, Some(vec![start()]));
    let v = apply(v, &a);
    assert_eq!(decision(&reconcile_vm(&v, None, t0(), &StartBackoff::default())), Decision::Create);

    // A guest that shut itself down stays down.
    let v = vm(RunStrategy::RerunOnFailure);
    let succeeded = vmi_of(&v, "vmi-uid", Some(Phase::Succeeded));
    let a = reconcile_vm(&v, Some(&succeeded), t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Delete);
    let v = apply(v, &a);
    assert_eq!(v.status.as_ref().unwrap().run_strategy, Some(RunStrategy::RerunOnFailure));
    let a = reconcile_vm(&v, None, t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Nothing);
    assert_eq!(printable(&v, &a), Some(PrintableStatus::Stopped));
}

#[test]
fn once_runs_once() {
    let v = vm(RunStrategy::Once);
    assert_eq!(decision(&reconcile_vm(&v, None, t0(), &StartBackoff::default())), Decision::Create);
    for phase in [Phase::Succeeded, Phase::Failed] {
        let ended = vmi_of(&v, "vmi-uid", Some(phase));
        let a = reconcile_vm(&v, Some(&ended), t0(), &StartBackoff::default());
        assert_eq!(decision(&a), Decision::Nothing);
        let v = apply(v.clone(), &a);
        assert_eq!(decision(&reconcile_vm(&v, Some(&ended), t0(), &StartBackoff::default())), Decision::Nothing);
        // Even if the ended VMI is deleted, the VM does not run again.
        assert_eq!(decision(&reconcile_vm(&v, None, t0(), &StartBackoff::default())), Decision::Nothing);
    }
}

#[test]
fn backoff_delays_double_up_to_the_cap() {
    let b = StartBackoff::default();
    let secs: Vec<u64> = (0..9).map(|n| b.delay(n).as_secs()).collect();
    assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
    assert_eq!(b.delay(i64::MAX), Duration::from_secs(300));
}

fn failed_early(vm: &VirtualMachine, uid: &str) -> VirtualMachineInstance {
    vmi_of(vm, uid, Some(Phase::Failed))
}

#[test]
fn start_failures_back_off_and_show_crash_loop() {
    let b = StartBackoff::default();
    let v = vm(RunStrategy::Always);
    // First failure: recorded, the VMI deleted, CrashLoopBackOff.
    let a = reconcile_vm(&v, Some(&failed_early(&v, "a")), t0(), &b);
    assert!(matches!(a[0], VmAction::UpdateStatus(_)), "status first: {a:?}");
    assert_eq!(decision(&a), Decision::Delete);
    let f = status_of(&a).unwrap().start_failure.clone().unwrap();
    assert_eq!(f.consecutive_fail_count, Some(1));
    assert_eq!(f.last_failed_vmi_uid.as_deref(), Some("a"));
    assert_eq!(f.retry_after_timestamp, Some(Time(at(10))));
    assert_eq!(printable(&v, &a), Some(PrintableStatus::CrashLoopBackOff));
    assert!(a.iter().any(|x| matches!(x, VmAction::Event(e) if e.reason == "CrashLoopBackOff")));
    let v = apply(v, &a);
    // Seen again (the delete is not visible yet): not counted twice.
    let again = reconcile_vm(&v, Some(&failed_early(&v, "a")), at(1), &b);
    assert_eq!(status_of(&again), None, "{again:?}");
    // Gone, within the backoff: wait, and look again when it ends.
    let a = reconcile_vm(&v, None, at(4), &b);
    assert_eq!(decision(&a), Decision::Nothing);
    assert!(a.contains(&VmAction::RequeueAfter(Duration::from_millis(6050))), "{a:?}");
    assert_eq!(printable(&v, &a), Some(PrintableStatus::CrashLoopBackOff));
    // After the backoff: a new VMI, and the retry counted.
    let a = reconcile_vm(&v, None, at(10), &b);
    assert_eq!(decision(&a), Decision::Create);
    assert_eq!(status_of(&a).unwrap().start_failure.as_ref().unwrap().retries, Some(1));
    assert_eq!(printable(&v, &a), Some(PrintableStatus::Starting));
    let v = apply(v, &a);
    // The create seen again (the new VMI not in the cache yet) is not another retry.
    let again = reconcile_vm(&v, None, at(11), &b);
    assert_eq!(decision(&again), Decision::Create);
    assert_eq!(status_of(&again), None);
    // Second failure: 20 s.
    let a = reconcile_vm(&v, Some(&failed_early(&v, "b")), at(30), &b);
    let f = status_of(&a).unwrap().start_failure.clone().unwrap();
    assert_eq!(f.consecutive_fail_count, Some(2));
    assert_eq!(f.retry_after_timestamp, Some(Time(at(50))));
    let v = apply(v, &a);
    // A VMI that reaches Running clears the count.
    let running = vmi_of(&v, "c", Some(Phase::Running));
    let a = reconcile_vm(&v, Some(&running), at(60), &b);
    assert_eq!(status_of(&a).unwrap().start_failure, None);
}

#[test]
fn manual_start_ignores_the_backoff_and_clears_failures() {
    let mut v = vm(RunStrategy::Manual);
    v.status = Some(VirtualMachineStatus {
        start_failure: Some(StartFailure {
            consecutive_fail_count: Some(3),
            retry_after_timestamp: Some(Time(at(100))),
            ..Default::default()
        }),
        ..Default::default()
    });
    let v = with_requests(v, vec![start()]);
    let a = reconcile_vm(&v, None, t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Create);
    assert_eq!(status_of(&a).unwrap().start_failure, None);
}

#[test]
fn status_mirrors_the_vmi() {
    let b = StartBackoff::default();
    let v = vm(RunStrategy::Always);
    let mut i = vmi_of(&v, "u", Some(Phase::Running));
    let ready = Condition {
        type_: "Ready".into(),
        status: ConditionStatus::True,
        last_transition_time: Some(Time(t0())),
        ..Default::default()
    };
    let paused = Condition { type_: "Paused".into(), status: ConditionStatus::True, ..Default::default() };
    i.status.as_mut().unwrap().conditions = Some(vec![ready.clone()]);
    let a = reconcile_vm(&v, Some(&i), t0(), &b);
    let s = status_of(&a).unwrap();
    assert_eq!((s.created, s.ready), (Some(true), Some(true)));
    assert_eq!(s.printable_status, Some(PrintableStatus::Running));
    assert_eq!(s.condition("Ready"), Some(&ready));
    assert_eq!(s.run_strategy, Some(RunStrategy::Always));
    assert_eq!((s.observed_generation, s.desired_generation), (Some(3), Some(3)));
    assert!(a.iter().any(|x| matches!(x, VmAction::Event(e) if e.reason == "Started")));
    // Nothing changes: nothing is written.
    let v = apply(v, &a);
    assert_eq!(reconcile_vm(&v, Some(&i), at(5), &b), []);

    i.status.as_mut().unwrap().conditions = Some(vec![ready, paused.clone()]);
    let a = reconcile_vm(&v, Some(&i), t0(), &b);
    assert_eq!(printable(&v, &a), Some(PrintableStatus::Paused));
    assert_eq!(status_of(&a).unwrap().condition("Paused"), Some(&paused));

    // Unschedulable.
    let mut i = vmi_of(&v, "u", Some(Phase::Scheduling));
    i.status.as_mut().unwrap().conditions = Some(vec![Condition {
        type_: "PodScheduled".into(),
        status: ConditionStatus::False,
        reason: Some("Unschedulable".into()),
        message: Some("0/1 nodes are available: 1 Insufficient memory.".into()),
        ..Default::default()
    }]);
    let a = reconcile_vm(&v, Some(&i), t0(), &b);
    assert_eq!(printable(&v, &a), Some(PrintableStatus::ErrorUnschedulable));
    let s = status_of(&a).unwrap();
    assert_eq!(s.ready, Some(false));
    assert_eq!(s.condition("Paused"), None);
    assert_eq!(s.condition("PodScheduled").unwrap().reason.as_deref(), Some("Unschedulable"));
    assert_eq!(s.condition("Ready").unwrap().reason.as_deref(), Some("VMIConditionMissing"));

    // Gone: the copied conditions go too.
    let v = apply(v, &a);
    let mut halted = v.clone();
    halted.spec.run_strategy = Some(RunStrategy::Halted);
    let a = reconcile_vm(&halted, None, t0(), &b);
    let s = status_of(&a).unwrap();
    assert_eq!(s.condition("PodScheduled"), None);
    assert_eq!(s.condition("Ready").unwrap().reason.as_deref(), Some("VMINotExists"));
    assert_eq!((s.created, s.ready, s.printable_status), (Some(false), Some(false), Some(PrintableStatus::Stopped)));
    assert!(a.iter().any(|x| matches!(x, VmAction::Event(e) if e.reason == "Stopped")));
}

#[test]
fn deleting_vm_is_terminating_and_starts_nothing() {
    let mut v = vm(RunStrategy::Always);
    v.metadata.deletion_timestamp = Some(Time(t0()));
    let a = reconcile_vm(&v, None, t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Nothing);
    assert_eq!(printable(&v, &a), Some(PrintableStatus::Terminating));
}

#[test]
fn a_foreign_vmi_is_left_alone() {
    let v = vm(RunStrategy::Halted);
    let mut other = vmi_of(&v, "u", Some(Phase::Running));
    other.metadata.owner_references = None;
    let a = reconcile_vm(&v, Some(&other), t0(), &StartBackoff::default());
    assert_eq!(decision(&a), Decision::Nothing);
    let f = status_of(&a).unwrap().condition("Failure").unwrap();
    assert!(f.message.as_deref().unwrap().contains("not controlled by this VirtualMachine"));
}

#[test]
fn a_failure_condition_stays_while_retrying_and_goes_with_success() {
    let mut v = vm(RunStrategy::Always);
    v.status = Some(VirtualMachineStatus {
        conditions: Some(vec![Condition {
            type_: "Failure".into(),
            status: ConditionStatus::True,
            reason: Some("FailedCreate".into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let a = reconcile_vm(&v, None, t0(), &StartBackoff::default());
    assert!(status_of(&a).unwrap().condition("Failure").is_some());
    let i = vmi_of(&v, "u", Some(Phase::Pending));
    let a = reconcile_vm(&v, Some(&i), t0(), &StartBackoff::default());
    assert!(status_of(&a).unwrap().condition("Failure").is_none());
}
