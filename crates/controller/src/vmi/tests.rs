use super::*;
use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const ALL: [Phase; 7] = [
    Phase::Pending,
    Phase::Scheduling,
    Phase::Scheduled,
    Phase::Running,
    Phase::Succeeded,
    Phase::Failed,
    Phase::Unknown,
];

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn settings() -> LauncherSettings {
    LauncherSettings::default()
}

fn vmi(phase: Option<Phase>) -> VirtualMachineInstance {
    let mut v = VirtualMachineInstance::default();
    v.metadata.name = Some("vm1".into());
    v.metadata.namespace = Some("default".into());
    v.metadata.uid = Some("vmi-uid".into());
    v.metadata.finalizers = Some(vec![FINALIZER.into()]);
    v.spec.domain.resources.requests = Some([("memory".to_string(), Quantity("128Mi".into()))].into());
    v.status = phase.map(|p| VirtualMachineInstanceStatus { phase: Some(p), ..Default::default() });
    v
}

fn pod(node: Option<&str>, phase: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("virt-launcher-vm1-abcde".into());
    p.metadata.uid = Some("pod-uid".into());
    p.spec = Some(PodSpec { node_name: node.map(str::to_string), ..Default::default() });
    p.status = Some(PodStatus { phase: Some(phase.into()), ..Default::default() });
    p
}

fn status_of(actions: &[VmiAction]) -> Option<&VirtualMachineInstanceStatus> {
    actions.iter().find_map(|a| match a {
        VmiAction::UpdateStatus(s) => Some(s.as_ref()),
        _ => None,
    })
}

/// Carries out the writes to the VMI itself, as the API server would.
fn apply(mut v: VirtualMachineInstance, actions: &[VmiAction]) -> VirtualMachineInstance {
    for a in actions {
        match a {
            VmiAction::AddFinalizer => v.metadata.finalizers.get_or_insert_with(Vec::new).push(FINALIZER.into()),
            VmiAction::RemoveFinalizer => v.metadata.finalizers = None,
            VmiAction::UpdateStatus(s) => v.status = Some((**s).clone()),
            VmiAction::SetNodeLabel(n) => {
                v.metadata.labels.get_or_insert_with(Default::default).insert(NODE_NAME_LABEL.into(), n.clone());
            }
            _ => {}
        }
    }
    v
}

fn phase_of(actions: &[VmiAction]) -> Option<Phase> {
    status_of(actions).and_then(|s| s.phase)
}

#[test]
fn transition_table_is_exhaustive() {
    use Phase::*;
    let expected = |from: Option<Phase>, to: Phase| -> bool {
        match from {
            None => to != Unknown,
            Some(f) if f == to => true,
            Some(Pending) => [Scheduling, Scheduled, Running, Failed].contains(&to),
            Some(Scheduling) => [Scheduled, Running, Failed].contains(&to),
            Some(Scheduled) => [Running, Succeeded, Failed, Unknown].contains(&to),
            Some(Running) => [Succeeded, Failed, Unknown].contains(&to),
            Some(Unknown) => [Running, Succeeded, Failed].contains(&to),
            Some(Succeeded) | Some(Failed) => false,
        }
    };
    let mut legal = 0;
    for from in std::iter::once(None).chain(ALL.iter().copied().map(Some)) {
        for to in ALL {
            let got = transition(from, to);
            assert_eq!(got.is_ok(), expected(from, to), "{from:?} -> {to:?}");
            if let Ok(p) = got {
                assert_eq!(p, to);
                legal += 1;
            } else {
                assert_eq!(got, Err(IllegalTransition { from, to }));
            }
        }
    }
    assert_eq!(legal, 6 + 5 + 4 + 5 + 4 + 1 + 1 + 4);
}

#[test]
fn illegal_moves_are_refused_with_a_message() {
    let e = transition(Some(Phase::Succeeded), Phase::Running).unwrap_err();
    assert_eq!(e.to_string(), "a VirtualMachineInstance cannot go from Succeeded to Running");
    assert!(transition(Some(Phase::Running), Phase::Scheduled).is_err());
    assert!(transition(Some(Phase::Failed), Phase::Failed).is_ok());
    assert!(transition(None, Phase::Unknown).is_err());
}

#[test]
fn a_new_vmi_gets_the_finalizer_a_pending_phase_and_a_pod() {
    let mut v = vmi(None);
    v.metadata.finalizers = None;
    let a = reconcile_vmi(&v, None, now(), &settings());
    assert_eq!(a[0], VmiAction::AddFinalizer);
    let s = status_of(&a).unwrap();
    assert_eq!(s.phase, Some(Phase::Pending));
    assert_eq!(s.phase_transition_timestamps.as_ref().unwrap()[0].phase, Phase::Pending);
    let overhead = s.memory.as_ref().unwrap().memory_overhead.as_ref().unwrap();
    assert_eq!(overhead.0, ferrovirt_api::quantity::format_bytes(memory_overhead(&v.spec)));
    assert_eq!(s.condition("Ready").unwrap().status, ConditionStatus::False);
    let pod = a.iter().find_map(|x| match x {
        VmiAction::CreatePod(p) => Some(p),
        _ => None,
    });
    assert_eq!(pod.unwrap().metadata.generate_name.as_deref(), Some("virt-launcher-vm1-"));
    // Order: the finalizer, then the status, then the pod.
    assert!(matches!(a.last(), Some(VmiAction::CreatePod(_))));
}

#[test]
fn pending_vmi_without_pod_creates_it_again() {
    let v = apply(vmi(None), &reconcile_vmi(&vmi(None), None, now(), &settings()));
    let a = reconcile_vmi(&v, None, now(), &settings());
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(matches!(a[0], VmiAction::CreatePod(_)));
}

#[test]
fn unbound_pod_means_scheduling_and_unschedulable_is_mirrored() {
    let v = apply(vmi(None), &reconcile_vmi(&vmi(None), None, now(), &settings()));
    let mut p = pod(None, "Pending");
    let a = reconcile_vmi(&v, Some(&p), now(), &settings());
    assert_eq!(phase_of(&a), Some(Phase::Scheduling));
    assert!(status_of(&a).unwrap().condition(POD_SCHEDULED).is_none());
    let v = apply(v, &a);

    p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some("0/1 nodes are available: 1 Insufficient memory.".into()),
        ..Default::default()
    }]);
    let a = reconcile_vmi(&v, Some(&p), now(), &settings());
    let c = status_of(&a).unwrap().condition(POD_SCHEDULED).unwrap().clone();
    assert_eq!(c.status, ConditionStatus::False);
    assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(c.message.as_deref(), Some("0/1 nodes are available: 1 Insufficient memory."));
    let v = apply(v, &a);
    assert!(reconcile_vmi(&v, Some(&p), now(), &settings()).is_empty());

    // Bound at last: Scheduled, the node recorded, the condition gone.
    let p = pod(Some("node1"), "Pending");
    let a = reconcile_vmi(&v, Some(&p), now(), &settings());
    let s = status_of(&a).unwrap();
    assert_eq!(s.phase, Some(Phase::Scheduled));
    assert_eq!(s.node_name.as_deref(), Some("node1"));
    assert_eq!(s.active_pods.as_ref().unwrap()["pod-uid"], "node1");
    assert!(s.condition(POD_SCHEDULED).is_none());
    assert!(a.contains(&VmiAction::SetNodeLabel("node1".into())));
    let times: Vec<Phase> = s.phase_transition_timestamps.iter().flatten().map(|t| t.phase).collect();
    assert_eq!(times, [Phase::Pending, Phase::Scheduling, Phase::Scheduled]);
    let v = apply(v, &a);
    assert!(reconcile_vmi(&v, Some(&p), now(), &settings()).is_empty());
}

#[test]
fn ready_only_when_running_with_a_running_pod() {
    let mut v = vmi(Some(Phase::Running));
    v.status.as_mut().unwrap().node_name = Some("node1".into());
    let mut p = pod(Some("node1"), "Running");
    let a = reconcile_vmi(&v, Some(&p), now(), &settings());
    let s = status_of(&a).unwrap();
    // A stale bound pod does not move a Running VMI back to Scheduled.
    assert_eq!(s.phase, Some(Phase::Running));
    assert_eq!(s.condition("Ready").unwrap().status, ConditionStatus::True);
    let v = apply(v, &a);
    assert!(reconcile_vmi(&v, Some(&p), now(), &settings()).is_empty());

    p.status.as_mut().unwrap().conditions =
        Some(vec![PodCondition { type_: "Ready".into(), status: "False".into(), ..Default::default() }]);
    let a = reconcile_vmi(&v, Some(&p), now(), &settings());
    assert_eq!(status_of(&a).unwrap().condition("Ready").unwrap().status, ConditionStatus::False);

    let scheduled = vmi(Some(Phase::Scheduled));
    let a = reconcile_vmi(&scheduled, Some(&pod(Some("node1"), "Running")), now(), &settings());
    assert_eq!(status_of(&a).unwrap().condition("Ready").unwrap().status, ConditionStatus::False);
}

#[test]
fn a_vanished_pod_fails_the_vmi() {
    for phase in [Phase::Scheduling, Phase::Scheduled, Phase::Running, Phase::Unknown] {
        let a = reconcile_vmi(&vmi(Some(phase)), None, now(), &settings());
        let s = status_of(&a).unwrap();
        assert_eq!(s.phase, Some(Phase::Failed), "{phase:?}");
        assert_eq!(s.reason.as_deref(), Some(REASON_POD_MISSING));
        assert!(a.iter().any(|x| matches!(x, VmiAction::Event(e) if e.reason == REASON_POD_MISSING)));
        assert!(!a.iter().any(|x| matches!(x, VmiAction::CreatePod(_))));
    }
}

#[test]
fn a_pod_that_ends_before_the_vmi_ran_fails_it() {
    for vmi_phase in [None, Some(Phase::Pending), Some(Phase::Scheduling), Some(Phase::Scheduled)] {
        for pod_phase in ["Failed", "Succeeded"] {
            let a = reconcile_vmi(&vmi(vmi_phase), Some(&pod(Some("n"), pod_phase)), now(), &settings());
            assert_eq!(phase_of(&a), Some(Phase::Failed), "{vmi_phase:?} {pod_phase}");
            assert_eq!(status_of(&a).unwrap().reason.as_deref(), Some(REASON_POD_TERMINATED));
        }
    }
    // Once running, the end of the pod is the node agent's to report.
    let a = reconcile_vmi(&vmi(Some(Phase::Running)), Some(&pod(Some("n"), "Failed")), now(), &settings());
    assert_eq!(phase_of(&a), Some(Phase::Running));
}

#[test]
fn final_vmis_never_change_phase_and_lose_their_live_pod() {
    for phase in [Phase::Succeeded, Phase::Failed] {
        for p in [None, Some(pod(None, "Pending")), Some(pod(Some("n"), "Running")), Some(pod(Some("n"), "Failed"))] {
            let a = reconcile_vmi(&vmi(Some(phase)), p.as_ref(), now(), &settings());
            assert_eq!(phase_of(&a).unwrap_or(phase), phase);
            assert!(!a.iter().any(|x| matches!(x, VmiAction::CreatePod(_))));
            let deletes = a.iter().any(|x| matches!(x, VmiAction::DeletePod { .. }));
            let live = p.as_ref().is_some_and(|p| !pod_terminated(p));
            assert_eq!(deletes, live, "{phase:?} {p:?}");
        }
    }
}

#[test]
fn deletion_deletes_the_pod_then_releases_the_finalizer() {
    let mut v = vmi(Some(Phase::Running));
    v.metadata.deletion_timestamp = Some(Time(now()));
    let p = pod(Some("n"), "Running");
    assert_eq!(
        reconcile_vmi(&v, Some(&p), now(), &settings()),
        [VmiAction::DeletePod { name: "virt-launcher-vm1-abcde".into(), uid: "pod-uid".into() }]
    );
    let mut terminating = p.clone();
    terminating.metadata.deletion_timestamp = Some(Time(now()));
    assert!(reconcile_vmi(&v, Some(&terminating), now(), &settings()).is_empty());
    assert_eq!(reconcile_vmi(&v, None, now(), &settings()), [VmiAction::RemoveFinalizer]);
    v.metadata.finalizers = None;
    assert!(reconcile_vmi(&v, None, now(), &settings()).is_empty());
}

#[test]
fn an_unbuildable_pod_fails_the_vmi() {
    let mut v = vmi(None);
    v.spec.domain.resources.limits = Some([("cpu".to_string(), Quantity("lots".into()))].into());
    let a = reconcile_vmi(&v, None, now(), &settings());
    assert_eq!(phase_of(&a), Some(Phase::Failed));
    assert!(a.iter().any(|x| matches!(x, VmiAction::Event(e) if e.reason == REASON_INVALID_SPEC)));
}

#[test]
fn every_decision_converges() {
    // Whatever the VMI and pod state, applying the VMI writes makes the next pass write nothing.
    let pods = [
        None,
        Some(pod(None, "Pending")),
        Some(pod(Some("n"), "Pending")),
        Some(pod(Some("n"), "Running")),
        Some(pod(Some("n"), "Succeeded")),
        Some(pod(Some("n"), "Failed")),
    ];
    for phase in std::iter::once(None).chain(ALL.iter().copied().map(Some)) {
        for p in &pods {
            let v = vmi(phase);
            let once = apply(v, &reconcile_vmi(&vmi(phase), p.as_ref(), now(), &settings()));
            let again = reconcile_vmi(&once, p.as_ref(), now(), &settings());
            assert!(status_of(&again).is_none(), "{phase:?} {p:?}: {again:?}");
            if let (Some(before), Some(after)) = (phase, once.status.as_ref().and_then(|s| s.phase)) {
                assert!(transition(Some(before), after).is_ok(), "{before:?} -> {after:?}");
            }
        }
    }
}
