use super::*;
use ferrovirt_api::kubevirt::{Condition, VirtualMachineInstanceStatus, VirtualMachineInstanceTemplateSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
use k8s_openapi::jiff::SignedDuration;
use proptest::prelude::*;

fn t0() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(secs)).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn rs(replicas: i32) -> VirtualMachineInstanceReplicaSet {
    let mut rs = VirtualMachineInstanceReplicaSet::default();
    rs.metadata.name = Some("rs1".into());
    rs.metadata.namespace = Some("default".into());
    rs.metadata.uid = Some("rs-uid".into());
    rs.spec.replicas = Some(replicas);
    rs.spec.selector = Some(LabelSelector { match_labels: Some(labels(&[("app", "web")])), match_expressions: None });
    let mut template = VirtualMachineInstanceTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&[("app", "web"), ("tier", "front")])),
            annotations: Some(labels(&[("note", "x")])),
            ..Default::default()
        }),
        spec: Default::default(),
    };
    template.spec.domain.resources.requests = Some([("memory".to_string(), Quantity("128Mi".into()))].into());
    rs.spec.template = Some(template);
    rs
}

fn paused(mut rs: VirtualMachineInstanceReplicaSet) -> VirtualMachineInstanceReplicaSet {
    rs.spec.paused = Some(true);
    rs
}

/// A VMI of `rs`, created `age` seconds before `at(1000)`.
fn vmi(rs: &VirtualMachineInstanceReplicaSet, name: &str, phase: Option<Phase>, age: i64) -> VirtualMachineInstance {
    let mut v = vmi_from_template(rs).unwrap();
    v.metadata.generate_name = None;
    v.metadata.name = Some(name.into());
    v.metadata.uid = Some(format!("uid-{name}"));
    v.metadata.resource_version = Some("7".into());
    v.metadata.creation_timestamp = Some(Time(at(1000 - age)));
    v.status = phase.map(|p| VirtualMachineInstanceStatus { phase: Some(p), ..Default::default() });
    v
}

fn on(mut v: VirtualMachineInstance, node: &str) -> VirtualMachineInstance {
    v.status.get_or_insert_with(Default::default).node_name = Some(node.into());
    v
}

fn ready(mut v: VirtualMachineInstance) -> VirtualMachineInstance {
    let s = v.status.get_or_insert_with(Default::default);
    s.conditions.get_or_insert_with(Vec::new).push(Condition {
        type_: vmi_condition::READY.into(),
        status: ConditionStatus::True,
        ..Default::default()
    });
    v
}

fn running(rs: &VirtualMachineInstanceReplicaSet, name: &str, node: &str, age: i64) -> VirtualMachineInstance {
    ready(on(vmi(rs, name, Some(Phase::Running), age), node))
}

fn deleting(mut v: VirtualMachineInstance) -> VirtualMachineInstance {
    v.metadata.deletion_timestamp = Some(Time(at(999)));
    v
}

fn orphan(name: &str, pairs: &[(&str, &str)]) -> VirtualMachineInstance {
    let mut v = VirtualMachineInstance::default();
    v.metadata.name = Some(name.into());
    v.metadata.namespace = Some("default".into());
    v.metadata.uid = Some(format!("uid-{name}"));
    v.metadata.resource_version = Some("3".into());
    v.metadata.labels = Some(labels(pairs));
    v
}

fn plan(rs: &VirtualMachineInstanceReplicaSet, vmis: &[VirtualMachineInstance]) -> RsPlan {
    let refs: Vec<&VirtualMachineInstance> = vmis.iter().collect();
    reconcile_replicaset(rs, &refs, InFlight::Settled, at(1000))
}

fn creates(p: &RsPlan) -> Vec<&VirtualMachineInstance> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            RsAction::CreateVmi(v) => Some(v.as_ref()),
            _ => None,
        })
        .collect()
}

fn deletes(p: &RsPlan) -> Vec<(&str, DeleteReason)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            RsAction::DeleteVmi { name, reason, .. } => Some((name.as_str(), *reason)),
            _ => None,
        })
        .collect()
}

fn surplus(p: &RsPlan) -> Vec<&str> {
    deletes(p).into_iter().filter(|(_, r)| *r == DeleteReason::Surplus).map(|(n, _)| n).collect()
}

fn claims(p: &RsPlan) -> Vec<(&'static str, &str, Vec<&str>)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            RsAction::Adopt { name, owner_references, .. } => {
                Some(("adopt", name.as_str(), owner_references.iter().map(|r| r.uid.as_str()).collect()))
            }
            RsAction::Release { name, owner_references, .. } => {
                Some(("release", name.as_str(), owner_references.iter().map(|r| r.uid.as_str()).collect()))
            }
            _ => None,
        })
        .collect()
}

fn counts(p: &RsPlan) -> (Option<i32>, Option<i32>) {
    (p.status.replicas, p.status.ready_replicas)
}

fn condition<'a>(p: &'a RsPlan, type_: &str) -> Option<&'a Condition> {
    p.status.conditions.as_deref().and_then(|c| conditions::find(c, type_))
}

#[test]
fn a_new_set_creates_every_replica_from_its_template() {
    let set = rs(6);
    let p = plan(&set, &[]);
    assert!(p.scaled);
    let new = creates(&p);
    assert_eq!(new.len(), 6);
    assert_eq!(p.actions.len(), 6);
    for v in new {
        assert_eq!(v.metadata.name, None);
        assert_eq!(v.metadata.generate_name.as_deref(), Some("rs1"));
        assert_eq!(v.metadata.namespace.as_deref(), Some("default"));
        let l = v.metadata.labels.as_ref().unwrap();
        assert_eq!(l, &labels(&[("app", "web"), ("tier", "front"), (REPLICA_SET_LABEL, "rs1")]));
        assert_eq!(v.metadata.annotations.as_ref().unwrap()["note"], "x");
        let owners = v.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
            ("kubevirt.io/v1", "VirtualMachineInstanceReplicaSet", "rs1", "rs-uid")
        );
        assert_eq!((o.controller, o.block_owner_deletion), (Some(true), Some(true)));
        assert_eq!(v.metadata.finalizers.as_deref(), Some(&[FINALIZER.to_string()][..]));
        assert_eq!(v.spec, set.spec.template.as_ref().unwrap().spec);
        assert!(v.status.is_none());
        assert!(is_controlled_by(v, &set) && selects(&set, v));
    }
    assert_eq!(counts(&p), (Some(0), Some(0)));
    assert_eq!(p.status.label_selector.as_deref(), Some("app=web"));
    assert_eq!(p.status.conditions, None);
}

#[test]
fn replicas_default_to_one() {
    let mut set = rs(1);
    set.spec.replicas = None;
    assert_eq!(creates(&plan(&set, &[])).len(), 1);
}

#[test]
fn a_full_set_does_nothing_and_counts_ready_replicas() {
    let set = rs(3);
    let vmis = [
        running(&set, "a", "n1", 10),
        on(vmi(&set, "b", Some(Phase::Running), 10), "n2"),
        vmi(&set, "c", Some(Phase::Scheduling), 10),
    ];
    let p = plan(&set, &vmis);
    assert_eq!(p.actions, []);
    assert_eq!(counts(&p), (Some(3), Some(1)));
}

#[test]
fn scaling_up_creates_the_difference() {
    let set = rs(5);
    let vmis = [running(&set, "a", "n1", 10), running(&set, "b", "n2", 10)];
    let p = plan(&set, &vmis);
    assert_eq!(creates(&p).len(), 3);
    assert_eq!(deletes(&p), []);
    assert_eq!(counts(&p), (Some(2), Some(2)));
}

#[test]
fn scaling_down_deletes_not_yet_running_then_not_ready_then_newest() {
    let set = rs(2);
    let vmis = [
        running(&set, "old", "n1", 100),
        running(&set, "new", "n2", 10),
        vmi(&set, "pending", Some(Phase::Pending), 200),
        on(vmi(&set, "scheduled", Some(Phase::Scheduled), 300), "n3"),
        on(vmi(&set, "notready", Some(Phase::Running), 300), "n4"),
    ];
    let p = plan(&set, &vmis);
    assert_eq!(surplus(&p), ["pending", "scheduled", "notready"]);
    assert_eq!(creates(&p).len(), 0);
    assert_eq!(counts(&p), (Some(5), Some(2)));

    // Of two equally good ones, the newer goes.
    let set = rs(1);
    assert_eq!(surplus(&plan(&set, &vmis[..2])), ["new"]);
    // No phase yet counts as Pending; Unknown comes after Scheduled and before Running.
    let vmis = [
        running(&set, "r", "n1", 10),
        on(vmi(&set, "u", Some(Phase::Unknown), 10), "n2"),
        on(vmi(&set, "s", Some(Phase::Scheduled), 10), "n3"),
        vmi(&set, "none", None, 10),
    ];
    assert_eq!(surplus(&plan(&set, &vmis)), ["none", "s", "u"]);
}

#[test]
fn scaling_down_keeps_the_set_spread_over_nodes() {
    let set = rs(3);
    // n1 holds three, n2 one: the extra ones go from n1, even though the one on n2 is newer.
    let vmis = [
        running(&set, "x", "n1", 100),
        running(&set, "y", "n1", 100),
        running(&set, "z", "n1", 90),
        running(&set, "w", "n2", 5),
        running(&set, "v", "n3", 5),
    ];
    let p = plan(&set, &vmis);
    assert_eq!(surplus(&p), ["z", "x"]);
}

#[test]
fn deletion_order_sorts_by_kubernetes_rules() {
    let set = rs(0);
    let a = running(&set, "a", "n1", 50);
    let b = vmi(&set, "b", Some(Phase::Pending), 1);
    let c = on(vmi(&set, "c", Some(Phase::Running), 50), "n1");
    let mut list = vec![&a, &b, &c];
    deletion_order(&mut list);
    let names: Vec<&str> = list.iter().map(|v| v.metadata.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["b", "c", "a"]);
}

#[test]
fn finished_vmis_are_deleted_and_replaced() {
    let set = rs(3);
    let vmis = [
        running(&set, "a", "n1", 10),
        on(vmi(&set, "failed", Some(Phase::Failed), 10), "n2"),
        on(vmi(&set, "done", Some(Phase::Succeeded), 10), "n3"),
    ];
    let p = plan(&set, &vmis);
    assert_eq!(deletes(&p), [("failed", DeleteReason::Finished), ("done", DeleteReason::Finished)]);
    assert_eq!(creates(&p).len(), 2);
    assert_eq!(counts(&p), (Some(1), Some(1)));
    // The deletes carry the UIDs observed.
    assert!(p.actions.contains(&RsAction::DeleteVmi {
        name: "failed".into(),
        uid: "uid-failed".into(),
        reason: DeleteReason::Finished
    }));
}

#[test]
fn vmis_being_deleted_do_not_count_and_are_not_deleted_again() {
    let set = rs(2);
    let vmis = [
        running(&set, "a", "n1", 10),
        deleting(running(&set, "b", "n2", 10)),
        deleting(vmi(&set, "c", Some(Phase::Failed), 10)),
    ];
    let p = plan(&set, &vmis);
    assert_eq!(deletes(&p), []);
    assert_eq!(creates(&p).len(), 1);
    assert_eq!(counts(&p), (Some(1), Some(1)));
}

#[test]
fn unknown_vmis_still_count() {
    let set = rs(2);
    let vmis = [running(&set, "a", "n1", 10), on(vmi(&set, "lost", Some(Phase::Unknown), 10), "n2")];
    let p = plan(&set, &vmis);
    assert_eq!(p.actions, []);
    assert_eq!(counts(&p), (Some(2), Some(1)));
}

#[test]
fn matching_orphans_are_adopted_and_count() {
    let set = rs(3);
    let mut with_other_owner = orphan("keeps-owner", &[("app", "web")]);
    // A non-controller owner stays.
    with_other_owner.metadata.owner_references =
        Some(vec![OwnerReference { uid: "cm-uid".into(), controller: Some(false), ..Default::default() }]);
    let vmis = [running(&set, "a", "n1", 10), orphan("lonely", &[("app", "web"), ("x", "y")]), with_other_owner];
    let p = plan(&set, &vmis);
    assert_eq!(claims(&p), [("adopt", "lonely", vec!["rs-uid"]), ("adopt", "keeps-owner", vec!["cm-uid", "rs-uid"])]);
    match &p.actions[0] {
        RsAction::Adopt { resource_version, owner_references, .. } => {
            assert_eq!(resource_version, "3");
            assert_eq!(owner_references[0], owner_reference(&set));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(creates(&p).len(), 0);
    assert_eq!(counts(&p), (Some(3), Some(1)));
}

#[test]
fn orphans_that_must_not_be_adopted() {
    let set = rs(1);
    let mut controlled_by_other = orphan("other", &[("app", "web")]);
    controlled_by_other.metadata.owner_references =
        Some(vec![OwnerReference { uid: "vm-uid".into(), controller: Some(true), ..Default::default() }]);
    let mut failed = orphan("failed", &[("app", "web")]);
    failed.status = Some(VirtualMachineInstanceStatus { phase: Some(Phase::Failed), ..Default::default() });
    let mut elsewhere = orphan("elsewhere", &[("app", "web")]);
    elsewhere.metadata.namespace = Some("other".into());
    let vmis = [
        controlled_by_other,
        orphan("unmatched", &[("app", "db")]),
        failed,
        deleting(orphan("going", &[("app", "web")])),
        elsewhere,
    ];
    let p = plan(&set, &vmis);
    assert_eq!(claims(&p), []);
    assert_eq!(deletes(&p), []);
    assert_eq!(creates(&p).len(), 1);
    assert_eq!(counts(&p), (Some(0), Some(0)));
}

#[test]
fn owned_vmis_that_no_longer_match_are_released_and_replaced() {
    let set = rs(2);
    let mut relabelled = running(&set, "relabelled", "n1", 10);
    relabelled.metadata.labels = Some(labels(&[("app", "debug")]));
    relabelled.metadata.owner_references.as_mut().unwrap().push(OwnerReference {
        uid: "cm-uid".into(),
        controller: Some(false),
        ..Default::default()
    });
    let vmis = [running(&set, "a", "n2", 10), relabelled];
    let p = plan(&set, &vmis);
    assert_eq!(claims(&p), [("release", "relabelled", vec!["cm-uid"])]);
    assert_eq!(deletes(&p), []);
    assert_eq!(creates(&p).len(), 1);
    assert_eq!(counts(&p), (Some(1), Some(1)));
}

#[test]
fn a_paused_set_neither_creates_nor_deletes_but_claims() {
    let set = paused(rs(3));
    let p = plan(&set, &[]);
    assert_eq!(p.actions, []);
    assert!(!p.scaled);
    let c = condition(&p, replicaset_condition::REPLICA_PAUSED).unwrap();
    assert_eq!((c.status, c.reason.as_deref()), (ConditionStatus::True, Some("Paused")));
    assert!(shows_paused(Some(&p.status)));

    let vmis = [
        running(&set, "a", "n1", 10),
        running(&set, "b", "n1", 10),
        running(&set, "c", "n1", 10),
        running(&set, "d", "n1", 10),
        vmi(&set, "failed", Some(Phase::Failed), 10),
        orphan("lonely", &[("app", "web")]),
    ];
    let p = plan(&set, &vmis);
    assert_eq!(deletes(&p), []);
    assert_eq!(creates(&p).len(), 0);
    assert_eq!(claims(&p), [("adopt", "lonely", vec!["rs-uid"])]);
    assert_eq!(counts(&p), (Some(5), Some(4)));

    // Resumed: the condition goes, scaling resumes.
    let mut resumed = rs(3);
    resumed.status = Some(p.status.clone());
    let p = plan(&resumed, &vmis[..4]);
    assert_eq!(condition(&p, replicaset_condition::REPLICA_PAUSED), None);
    assert!(!shows_paused(Some(&p.status)));
    assert_eq!(surplus(&p).len(), 1);
}

#[test]
fn nothing_is_created_or_deleted_while_earlier_writes_are_in_flight() {
    let set = rs(3);
    let vmis = [running(&set, "a", "n1", 10), vmi(&set, "f", Some(Phase::Failed), 1), orphan("o", &[("app", "web")])];
    let refs: Vec<&VirtualMachineInstance> = vmis.iter().collect();
    let p = reconcile_replicaset(&set, &refs, InFlight::Pending, at(1000));
    assert!(!p.scaled);
    assert_eq!(claims(&p).len(), 1);
    assert_eq!(deletes(&p), []);
    assert_eq!(creates(&p).len(), 0);
    assert_eq!(counts(&p), (Some(2), Some(1)));
}

#[test]
fn a_set_being_deleted_leaves_everything_to_the_garbage_collector() {
    let mut set = rs(3);
    set.metadata.deletion_timestamp = Some(Time(at(990)));
    let mut relabelled = running(&set, "relabelled", "n1", 10);
    relabelled.metadata.labels = Some(labels(&[("app", "debug")]));
    let vmis = [
        running(&set, "a", "n1", 10),
        vmi(&set, "f", Some(Phase::Failed), 10),
        relabelled,
        orphan("o", &[("app", "web")]),
    ];
    let p = plan(&set, &vmis);
    assert_eq!(p.actions, []);
    assert!(!p.scaled);
}

#[test]
fn an_invalid_set_does_nothing() {
    // The selector does not match the template (admission refuses this; the controller must not
    // create VMIs it would not count).
    let mut set = rs(2);
    set.spec.selector = Some(LabelSelector { match_labels: Some(labels(&[("app", "db")])), match_expressions: None });
    assert_eq!(plan(&set, &[]).actions, []);
    let mut set = rs(2);
    set.spec.selector = Some(LabelSelector::default());
    assert_eq!(plan(&set, &[orphan("o", &[])]).actions, []);
    let mut set = rs(2);
    set.spec.template = None;
    assert_eq!(plan(&set, &[]).actions, []);
}

#[test]
fn replica_failure_is_recorded_then_cleared_by_a_good_pass() {
    let set = rs(2);
    let mut p = plan(&set, &[]);
    record_failure(&mut p.status, REASON_FAILED_CREATE, "Error creating virtual machine instance: quota", at(1000));
    let c = condition(&p, replicaset_condition::REPLICA_FAILURE).unwrap();
    assert_eq!(
        (c.status, c.reason.as_deref(), c.message.as_deref()),
        (ConditionStatus::True, Some("FailedCreate"), Some("Error creating virtual machine instance: quota"))
    );
    assert_eq!(c.last_transition_time, Some(Time(at(1000))));

    // Waiting (paused, in flight) keeps it; a pass that scales clears it.
    let mut failed = paused(rs(2));
    failed.status = Some(p.status.clone());
    assert!(condition(&plan(&failed, &[]), replicaset_condition::REPLICA_FAILURE).is_some());
    failed.spec.paused = None;
    let p = plan(&failed, &[]);
    assert!(condition(&p, replicaset_condition::REPLICA_FAILURE).is_none());
    assert_eq!(p.status.conditions, None);
}

#[test]
fn creates_and_deletes_are_limited_per_pass() {
    let set = rs(400);
    assert_eq!(creates(&plan(&set, &[])).len(), BURST_REPLICAS);
}

#[test]
fn names_and_labels_of_new_vmis() {
    let mut set = rs(1);
    assert_eq!(base_name(&set), "rs1");
    let meta = set.spec.template.as_mut().unwrap().metadata.as_mut().unwrap();
    meta.generate_name = Some("gen-".into());
    assert_eq!(base_name(&set), "gen-");
    let meta = set.spec.template.as_mut().unwrap().metadata.as_mut().unwrap();
    meta.name = Some("web".into());
    assert_eq!(base_name(&set), "web");

    // A template that sets the replica set label keeps its value (the selector may use it).
    let mut set = rs(1);
    let l = set.spec.template.as_mut().unwrap().metadata.as_mut().unwrap().labels.as_mut().unwrap();
    l.insert(REPLICA_SET_LABEL.into(), "cirros".into());
    set.spec.selector =
        Some(LabelSelector { match_labels: Some(labels(&[(REPLICA_SET_LABEL, "cirros")])), match_expressions: None });
    let v = vmi_from_template(&set).unwrap();
    assert_eq!(v.metadata.labels.as_ref().unwrap()[REPLICA_SET_LABEL], "cirros");
    assert_eq!(creates(&plan(&set, &[])).len(), 1);
}

#[test]
fn the_selector_in_string_form() {
    let sel = LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        match_expressions: Some(vec![
            LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["b".into(), "a".into()]),
            },
            LabelSelectorRequirement { key: "canary".into(), operator: "DoesNotExist".into(), values: None },
        ]),
    };
    assert_eq!(selector_string(&sel).as_deref(), Some("app=web,!canary,tier in (a,b)"));
    let mut set = rs(1);
    set.spec.selector = Some(sel);
    assert_eq!(plan(&set, &[]).status.label_selector.as_deref(), Some("app=web,!canary,tier in (a,b)"));
}

// ---- property: the plan, carried out, reaches the wanted count and is then stable --------------

#[derive(Clone, Debug)]
struct Gen {
    owned: bool,
    matching: bool,
    phase: Option<Phase>,
    node: Option<u8>,
    ready: bool,
    deleting: bool,
    age: i64,
}

fn gen() -> impl Strategy<Value = Gen> {
    let phase = prop_oneof![
        Just(None),
        Just(Some(Phase::Pending)),
        Just(Some(Phase::Scheduling)),
        Just(Some(Phase::Scheduled)),
        Just(Some(Phase::Running)),
        Just(Some(Phase::Unknown)),
        Just(Some(Phase::Failed)),
        Just(Some(Phase::Succeeded)),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        phase,
        proptest::option::of(0u8..3),
        any::<bool>(),
        proptest::bool::weighted(0.15),
        0i64..100,
    )
        .prop_map(|(owned, matching, phase, node, ready, deleting, age)| Gen {
            owned,
            matching,
            phase,
            node,
            ready,
            deleting,
            age,
        })
}

fn build(set: &VirtualMachineInstanceReplicaSet, i: usize, g: &Gen) -> VirtualMachineInstance {
    let name = format!("v{i}");
    let mut v = if g.owned { vmi(set, &name, g.phase, g.age) } else { orphan(&name, &[]) };
    v.metadata.labels = Some(if g.matching { labels(&[("app", "web")]) } else { labels(&[("app", "other")]) });
    if !g.owned {
        v.status = g.phase.map(|p| VirtualMachineInstanceStatus { phase: Some(p), ..Default::default() });
        v.metadata.creation_timestamp = Some(Time(at(1000 - g.age)));
    }
    if let Some(n) = g.node {
        v = on(v, &format!("n{n}"));
    }
    if g.ready {
        v = ready(v);
    }
    if g.deleting {
        v = deleting(v);
    }
    v
}

/// What the API server holds after the actions (deletes mark the VMI for deletion).
fn carry_out(mut world: Vec<VirtualMachineInstance>, p: &RsPlan, next_id: &mut usize) -> Vec<VirtualMachineInstance> {
    for a in &p.actions {
        match a {
            RsAction::Adopt { name, owner_references, .. } | RsAction::Release { name, owner_references, .. } => {
                let v = world.iter_mut().find(|v| v.metadata.name.as_ref() == Some(name)).unwrap();
                v.metadata.owner_references = Some(owner_references.clone());
            }
            RsAction::DeleteVmi { uid, .. } => {
                let v = world.iter_mut().find(|v| v.metadata.uid.as_ref() == Some(uid)).unwrap();
                assert!(v.metadata.deletion_timestamp.is_none(), "deleted twice: {uid}");
                v.metadata.deletion_timestamp = Some(Time(at(1000)));
            }
            RsAction::CreateVmi(v) => {
                let mut v = (**v).clone();
                *next_id += 1;
                v.metadata.name = Some(format!("new{next_id}"));
                v.metadata.uid = Some(format!("uid-new{next_id}"));
                v.metadata.creation_timestamp = Some(Time(at(1000)));
                world.push(v);
            }
        }
    }
    world
}

proptest! {
    #[test]
    fn a_carried_out_plan_reaches_the_wanted_count_and_stays(
        gens in proptest::collection::vec(gen(), 0..12),
        replicas in 0i32..8,
    ) {
        let set = rs(replicas);
        let world: Vec<VirtualMachineInstance> = gens.iter().enumerate().map(|(i, g)| build(&set, i, g)).collect();
        let first = plan(&set, &world);
        // Surplus deletes only hit active VMIs of the set; finished deletes only final ones.
        for a in &first.actions {
            if let RsAction::DeleteVmi { uid, reason, .. } = a {
                let v = world.iter().find(|v| v.metadata.uid.as_ref() == Some(uid)).unwrap();
                prop_assert!(v.metadata.deletion_timestamp.is_none());
                match reason {
                    DeleteReason::Surplus => prop_assert!(is_active(v)),
                    DeleteReason::Finished => prop_assert!(!is_active(v)),
                }
            }
        }
        let mut next = 0;
        let world = carry_out(world, &first, &mut next);
        let owned_active = world.iter().filter(|v| is_controlled_by(v, &set) && selects(&set, v) && is_active(v)).count();
        prop_assert_eq!(owned_active, replicas as usize);
        // No owned VMI is left that does not match, and nothing more to create or delete.
        prop_assert!(!world.iter().any(|v| is_controlled_by(v, &set) && !selects(&set, v)));
        let second = plan(&set, &world);
        prop_assert_eq!(&second.actions, &Vec::<RsAction>::new());
        prop_assert_eq!(second.status.replicas, Some(replicas));
    }
}
