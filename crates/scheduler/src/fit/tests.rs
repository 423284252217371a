use super::*;
use k8s_openapi::api::core::v1::{
    Affinity, Container, NodeAffinity, NodeCondition, NodeSelector, NodeSpec, NodeStatus, PodSpec, PodStatus,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use proptest::prelude::*;

const GI: u64 = 1 << 30;

fn node(name: &str, cpu_millis: u64, mem: u64) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.status = Some(NodeStatus {
        allocatable: Some(
            [
                ("cpu".to_string(), Quantity(format!("{cpu_millis}m"))),
                ("memory".to_string(), Quantity(mem.to_string())),
                ("pods".to_string(), Quantity("110".into())),
            ]
            .into(),
        ),
        conditions: Some(vec![NodeCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]),
        ..Default::default()
    });
    n
}

fn pod(name: &str, cpu_millis: u64, mem: u64) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.spec = Some(PodSpec {
        containers: vec![Container {
            name: "compute".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_string(), Quantity(format!("{cpu_millis}m"))),
                        ("memory".to_string(), Quantity(mem.to_string())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    p
}

fn bound(mut p: Pod, node: &str, phase: &str) -> Pod {
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    p.status = Some(PodStatus { phase: Some(phase.into()), ..Default::default() });
    p
}

fn cordon(mut n: Node) -> Node {
    n.spec.get_or_insert_with(NodeSpec::default).unschedulable = Some(true);
    n
}

fn taint(mut n: Node, key: &str, value: &str, effect: &str) -> Node {
    n.spec.get_or_insert_with(NodeSpec::default).taints.get_or_insert_with(Vec::new).push(Taint {
        key: key.into(),
        value: Some(value.into()),
        effect: effect.into(),
        time_added: None,
    });
    n
}

fn label(mut n: Node, k: &str, v: &str) -> Node {
    n.metadata.labels.get_or_insert_with(Default::default).insert(k.into(), v.into());
    n
}

fn not_ready(mut n: Node) -> Node {
    n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
    n
}

fn toleration(key: Option<&str>, op: &str, value: Option<&str>, effect: Option<&str>) -> Toleration {
    Toleration {
        key: key.map(str::to_string),
        operator: Some(op.into()),
        value: value.map(str::to_string),
        effect: effect.map(str::to_string),
        toleration_seconds: None,
    }
}

fn name(s: &str) -> NodeName {
    NodeName(s.into())
}

#[test]
fn the_brief_s_example_message() {
    let nodes = [cordon(node("a", 4000, 8 * GI)), node("b", 4000, GI), node("c", 4000, GI)];
    let err = schedule(&pod("p", 100, 2 * GI), &nodes, &[]).unwrap_err();
    assert_eq!(err.message, "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient memory.");
    assert_eq!(err.reasons[&name("a")], [Reason::Unschedulable]);
    assert_eq!(err.reasons[&name("b")], [Reason::Insufficient("memory".into())]);
    assert_eq!(err.to_string(), err.message);
}

#[test]
fn reasons_are_sorted_by_count_then_wording() {
    let nodes = [
        not_ready(node("a", 4000, 8 * GI)),
        node("b", 10, GI),
        node("c", 10, GI),
        taint(node("d", 4000, 8 * GI), "gpu", "yes", "NoSchedule"),
    ];
    let err = schedule(&pod("p", 100, 2 * GI), &nodes, &[]).unwrap_err();
    assert_eq!(
        err.message,
        "0/4 nodes are available: 1 node(s) had untolerated taint {gpu: yes}, 1 node(s) were not ready, \
         2 Insufficient cpu, 2 Insufficient memory."
    );
    assert_eq!(
        schedule(&pod("p", 1, 1), &[], &[]).unwrap_err().message,
        "0/0 nodes are available: no nodes available to schedule pods."
    );
}

#[test]
fn bound_pods_use_room_until_they_finish() {
    let nodes = [node("a", 4000, 4 * GI)];
    let big = pod("p", 100, 3 * GI);
    let other = bound(pod("o", 100, 2 * GI), "a", "Running");
    assert!(schedule(&big, &nodes, std::slice::from_ref(&other)).is_err());
    for phase in ["Succeeded", "Failed"] {
        let done = bound(pod("o", 100, 2 * GI), "a", phase);
        assert_eq!(schedule(&big, &nodes, &[done]), Ok(name("a")));
    }
    // Unbound pods use nothing.
    assert_eq!(schedule(&big, &nodes, &[pod("o", 100, 2 * GI)]), Ok(name("a")));
    // Exactly full fits.
    assert_eq!(schedule(&pod("p", 3900, 2 * GI), &nodes, &[other]), Ok(name("a")));
}

#[test]
fn pod_limit_is_enforced() {
    let mut n = node("a", 4000, 4 * GI);
    n.status.as_mut().unwrap().allocatable.as_mut().unwrap().insert("pods".into(), Quantity("1".into()));
    let other = bound(pod("o", 1, 1), "a", "Pending");
    let err = schedule(&pod("p", 1, 1), &[n], &[other]).unwrap_err();
    assert_eq!(err.message, "0/1 nodes are available: 1 Too many pods.");
}

#[test]
fn least_allocated_wins_then_the_name() {
    let nodes = [node("b", 4000, 4 * GI), node("a", 4000, 4 * GI), node("c", 8000, 8 * GI)];
    let p = pod("p", 500, GI);
    assert_eq!(schedule(&p, &nodes, &[]), Ok(name("c")));
    let busy = bound(pod("o", 4000, 4 * GI), "c", "Running");
    // a and b are equal: the name decides.
    assert_eq!(schedule(&p, &nodes, &[busy]), Ok(name("a")));
}

#[test]
fn balanced_allocation_prefers_even_use() {
    // Both nodes are equally free on average; on "even" cpu and memory end equally used.
    let nodes = [node("uneven", 4000, 4 * GI), node("even", 4000, 4 * GI)];
    let on_uneven = bound(pod("o", 2000, 0), "uneven", "Running");
    let on_even = bound(pod("o2", 1000, GI), "even", "Running");
    assert_eq!(schedule(&pod("p", 0, 0), &nodes, &[on_uneven, on_even]), Ok(name("even")));
}

#[test]
fn node_selector_and_required_affinity() {
    let nodes =
        [label(node("a", 4000, 4 * GI), "zone", "x"), label(label(node("b", 4000, 4 * GI), "zone", "y"), "gen", "5")];
    let mut p = pod("p", 1, 1);
    p.spec.as_mut().unwrap().node_selector = Some([("zone".to_string(), "y".to_string())].into());
    assert_eq!(schedule(&p, &nodes, &[]), Ok(name("b")));
    p.spec.as_mut().unwrap().node_selector = Some([("zone".to_string(), "z".to_string())].into());
    let err = schedule(&p, &nodes, &[]).unwrap_err();
    assert_eq!(err.message, "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.");

    let req = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    };
    let term =
        |exprs: Vec<NodeSelectorRequirement>| NodeSelectorTerm { match_expressions: Some(exprs), match_fields: None };
    let with_terms = |terms: Vec<NodeSelectorTerm>| {
        let mut p = pod("p", 1, 1);
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector { node_selector_terms: terms }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    };
    let cases: Vec<(Vec<NodeSelectorTerm>, Option<&str>)> = vec![
        (vec![term(vec![req("zone", "In", &["x"])])], Some("a")),
        (vec![term(vec![req("zone", "NotIn", &["x"])])], Some("b")),
        (vec![term(vec![req("gen", "Exists", &[])])], Some("b")),
        (vec![term(vec![req("gen", "DoesNotExist", &[])])], Some("a")),
        (vec![term(vec![req("gen", "Gt", &["4"])])], Some("b")),
        (vec![term(vec![req("gen", "Lt", &["5"])])], None),
        (vec![term(vec![req("gen", "Gt", &["x"])])], None),
        // AND within a term, OR across terms.
        (vec![term(vec![req("zone", "In", &["y"]), req("gen", "In", &["4"])])], None),
        (vec![term(vec![req("zone", "In", &["nope"])]), term(vec![req("zone", "In", &["x"])])], Some("a")),
        // Empty terms match nothing.
        (vec![], None),
        (vec![term(vec![])], None),
        (vec![term(vec![req("zone", "Bogus", &["x"])])], None),
    ];
    for (terms, want) in cases {
        let got = schedule(&with_terms(terms.clone()), &nodes, &[]).ok();
        assert_eq!(got, want.map(name), "{terms:?}");
    }
    // matchFields on metadata.name.
    let by_name = with_terms(vec![NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![req("metadata.name", "In", &["a"])]),
    }]);
    assert_eq!(schedule(&by_name, &nodes, &[]), Ok(name("a")));
}

#[test]
fn toleration_matching_rules() {
    let t = Taint { key: "k".into(), value: Some("v".into()), effect: "NoSchedule".into(), time_added: None };
    let cases = [
        (toleration(Some("k"), "Equal", Some("v"), Some("NoSchedule")), true),
        (toleration(Some("k"), "Equal", Some("v"), None), true),
        (toleration(Some("k"), "", Some("v"), None), true),
        (toleration(Some("k"), "Equal", Some("w"), None), false),
        (toleration(Some("k"), "Exists", None, None), true),
        (toleration(Some("k"), "Exists", None, Some("NoExecute")), false),
        (toleration(Some("other"), "Exists", None, None), false),
        (toleration(None, "Exists", None, None), true),
        (toleration(Some(""), "Exists", None, Some("NoSchedule")), true),
        (toleration(Some("k"), "Bogus", Some("v"), None), false),
    ];
    for (tol, want) in cases {
        assert_eq!(tolerates(&tol, &t), want, "{tol:?}");
    }
}

#[test]
fn taints_cordon_and_readiness_respect_tolerations() {
    let nodes = [taint(node("a", 4000, 4 * GI), "dedicated", "vm", "NoExecute")];
    let mut p = pod("p", 1, 1);
    assert!(schedule(&p, &nodes, &[]).is_err());
    // PreferNoSchedule does not filter.
    assert!(schedule(&p, &[taint(node("a", 4000, 4 * GI), "x", "y", "PreferNoSchedule")], &[]).is_ok());
    p.spec.as_mut().unwrap().tolerations = Some(vec![toleration(Some("dedicated"), "Equal", Some("vm"), None)]);
    assert_eq!(schedule(&p, &nodes, &[]), Ok(name("a")));

    let mut q = pod("q", 1, 1);
    assert!(schedule(&q, &[cordon(node("a", 4000, 4 * GI))], &[]).is_err());
    assert!(schedule(&q, &[not_ready(node("a", 4000, 4 * GI))], &[]).is_err());
    let mut no_conditions = node("a", 4000, 4 * GI);
    no_conditions.status.as_mut().unwrap().conditions = None;
    assert!(schedule(&q, &[no_conditions], &[]).is_err());
    q.spec.as_mut().unwrap().tolerations = Some(vec![toleration(None, "Exists", None, None)]);
    assert!(schedule(&q, &[cordon(node("a", 4000, 4 * GI))], &[]).is_ok());
    assert!(schedule(&q, &[not_ready(node("a", 4000, 4 * GI))], &[]).is_ok());
}

#[test]
fn effective_requests_follow_kubernetes() {
    let mut p = pod("p", 100, GI);
    let spec = p.spec.as_mut().unwrap();
    spec.containers.push(Container {
        name: "second".into(),
        resources: Some(ResourceRequirements {
            requests: Some([("cpu".to_string(), Quantity("200m".into()))].into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    spec.init_containers = Some(vec![Container {
        name: "init".into(),
        resources: Some(ResourceRequirements {
            requests: Some(
                [("cpu".to_string(), Quantity("1".into())), ("memory".to_string(), Quantity("1Mi".into()))].into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    spec.overhead = Some([("memory".to_string(), Quantity("10Mi".into()))].into());
    let r = pod_requests(&p).unwrap();
    assert_eq!(r["cpu"], 1000);
    assert_eq!(r["memory"], GI + 10 * (1 << 20));

    let mut bad = pod("p", 1, 1);
    bad.spec.as_mut().unwrap().containers[0]
        .resources
        .as_mut()
        .unwrap()
        .requests
        .as_mut()
        .unwrap()
        .insert("memory".into(), Quantity("lots".into()));
    let err = schedule(&bad, &[node("a", 4000, 4 * GI)], &[]).unwrap_err();
    assert!(err.message.contains("invalid resource request (compute memory=lots)"), "{}", err.message);
}

#[test]
fn other_resources_must_be_offered() {
    let mut p = pod("p", 1, 1);
    p.spec.as_mut().unwrap().containers[0]
        .resources
        .as_mut()
        .unwrap()
        .requests
        .as_mut()
        .unwrap()
        .insert("hugepages-2Mi".into(), Quantity("1Gi".into()));
    let err = schedule(&p, &[node("a", 4000, 4 * GI)], &[]).unwrap_err();
    assert_eq!(err.message, "0/1 nodes are available: 1 Insufficient hugepages-2Mi.");
    let mut n = node("a", 4000, 4 * GI);
    n.status.as_mut().unwrap().allocatable.as_mut().unwrap().insert("hugepages-2Mi".into(), Quantity("2Gi".into()));
    assert_eq!(schedule(&p, &[n], &[]), Ok(name("a")));
    // Ephemeral storage is not checked on nodes that do not report it.
    let mut e = pod("p", 1, 1);
    e.spec.as_mut().unwrap().containers[0]
        .resources
        .as_mut()
        .unwrap()
        .requests
        .as_mut()
        .unwrap()
        .insert("ephemeral-storage".into(), Quantity("1Gi".into()));
    assert!(schedule(&e, &[node("a", 4000, 4 * GI)], &[]).is_ok());
}

#[test]
fn preferred_node_affinity_weighs_in_but_never_filters() {
    use k8s_openapi::api::core::v1::PreferredSchedulingTerm;
    let nodes = [label(node("a", 4000, 8 * GI), "disk", "hdd"), label(node("b", 4000, 4 * GI), "disk", "ssd")];
    let term = |key: &str, value: &str, weight: i32| PreferredSchedulingTerm {
        weight,
        preference: NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: key.into(),
                operator: "In".into(),
                values: Some(vec![value.into()]),
            }]),
            match_fields: None,
        },
    };
    let with = |terms: Vec<PreferredSchedulingTerm>| {
        let mut p = pod("p", 100, GI);
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(terms),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    };
    // By room alone "a" wins; a preference for ssd turns it to "b".
    assert_eq!(schedule(&pod("p", 100, GI), &nodes, &[]), Ok(name("a")));
    assert_eq!(schedule(&with(vec![term("disk", "ssd", 50)]), &nodes, &[]), Ok(name("b")));
    // The heavier preference wins.
    assert_eq!(schedule(&with(vec![term("disk", "ssd", 10), term("disk", "hdd", 90)]), &nodes, &[]), Ok(name("a")));
    // A preference nothing matches changes nothing; one for a node without room is not a filter.
    assert_eq!(schedule(&with(vec![term("disk", "nvme", 100)]), &nodes, &[]), Ok(name("a")));
    let full = bound(pod("o", 100, 4 * GI), "b", "Running");
    assert_eq!(schedule(&with(vec![term("disk", "ssd", 100)]), &nodes, &[full]), Ok(name("a")));
    let info = NodeInfo::new(&nodes[1], &[]);
    let p = with(vec![term("disk", "ssd", 30), term("disk", "hdd", 10)]);
    assert_eq!(PreferredNodeAffinity.score(&p, &Resources::new(), &info), 150);
}

// ---- spreading replica sets ----------------------------------------------------------------

fn of_set(mut p: Pod, ns: &str, set: &str) -> Pod {
    p.metadata.namespace = Some(ns.into());
    p.metadata.labels.get_or_insert_with(Default::default).insert(REPLICA_SET_LABEL.into(), set.into());
    p
}

/// Places `n` pods of set `set` one after the other, as the scheduling loop does; returns the
/// pods (bound) and how many landed on each node.
fn place_set(nodes: &[Node], mut pods: Vec<Pod>, set: &str, n: usize) -> (Vec<Pod>, BTreeMap<String, usize>) {
    let mut per_node = BTreeMap::new();
    for i in 0..n {
        let p = of_set(pod(&format!("{set}-{i}"), 100, GI / 4), "default", set);
        let NodeName(chosen) = schedule(&p, nodes, &pods).expect("fits");
        *per_node.entry(chosen.clone()).or_insert(0) += 1;
        pods.push(bound(p, &chosen, "Running"));
    }
    (pods, per_node)
}

#[test]
fn replicas_of_a_set_spread_evenly() {
    let nodes = [node("a", 4000, 8 * GI), node("b", 4000, 8 * GI), node("c", 4000, 8 * GI)];
    let (_, per_node) = place_set(&nodes, Vec::new(), "web", 6);
    assert_eq!(per_node, [("a".to_string(), 2), ("b".to_string(), 2), ("c".to_string(), 2)].into());
}

#[test]
fn the_spread_comes_before_free_room() {
    // "big" has far more room but already one replica: the next goes to "small".
    let nodes = [node("big", 16000, 64 * GI), node("small", 2000, 2 * GI)];
    let first = bound(of_set(pod("web-0", 100, GI / 4), "default", "web"), "big", "Running");
    let next = of_set(pod("web-1", 100, GI / 4), "default", "web");
    assert_eq!(schedule(&next, &nodes, std::slice::from_ref(&first)), Ok(name("small")));
    // A pod of no set, or of another set, still goes by room.
    assert_eq!(schedule(&pod("plain", 100, GI / 4), &nodes, std::slice::from_ref(&first)), Ok(name("big")));
    let other = of_set(pod("db-0", 100, GI / 4), "default", "db");
    assert_eq!(schedule(&other, &nodes, std::slice::from_ref(&first)), Ok(name("big")));
    // Equally many of the set: the score (least allocated) decides, then the name.
    let both = [first.clone(), bound(of_set(pod("web-2", 100, GI / 4), "default", "web"), "small", "Running")];
    assert_eq!(schedule(&next, &nodes, &both), Ok(name("big")));
}

#[test]
fn only_live_bound_pods_of_the_same_set_and_namespace_count() {
    let nodes = [node("a", 4000, 8 * GI), node("b", 4000, 8 * GI)];
    let next = of_set(pod("web-9", 100, GI / 4), "default", "web");
    // On "a": a replica of the same name in another namespace, a finished one, one being deleted;
    // on "b" a plain pod that makes it a little fuller. None of those count: "a" wins on room.
    let mut leaving = bound(of_set(pod("web-2", 100, GI / 4), "default", "web"), "a", "Running");
    leaving.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    let pods = [
        bound(of_set(pod("web-0", 100, GI / 4), "other", "web"), "a", "Running"),
        bound(of_set(pod("web-1", 100, GI / 4), "default", "web"), "a", "Failed"),
        leaving,
        of_set(pod("web-3", 100, GI / 4), "default", "web"),
        bound(pod("filler", 2000, 2 * GI), "b", "Running"),
    ];
    assert!(same_set_counts(&next, &pods).is_empty());
    assert_eq!(schedule(&next, &nodes, &pods), Ok(name("a")));
    // A live replica on "a" turns the choice to "b".
    let mut more = pods.to_vec();
    more.push(bound(of_set(pod("web-4", 100, GI / 4), "default", "web"), "a", "Running"));
    assert_eq!(same_set_counts(&next, &more), [("a", 1)].into());
    assert_eq!(schedule(&next, &nodes, &more), Ok(name("b")));
}

#[test]
fn the_spread_never_overrides_placement_rules() {
    // Only "a" matches the selector: every replica goes there, however many it holds.
    let nodes = [label(node("a", 4000, 8 * GI), "zone", "x"), node("b", 4000, 8 * GI), node("c", 4000, 8 * GI)];
    let mut pods = Vec::new();
    for i in 0..4 {
        let mut p = of_set(pod(&format!("web-{i}"), 100, GI / 4), "default", "web");
        p.spec.as_mut().unwrap().node_selector = Some([("zone".to_string(), "x".to_string())].into());
        assert_eq!(schedule(&p, &nodes, &pods), Ok(name("a")));
        pods.push(bound(p, "a", "Running"));
    }
    // The emptier nodes lack room or are cordoned: the replica joins the others, or says why not.
    let nodes = [node("a", 4000, 8 * GI), node("b", 4000, GI / 8), cordon(node("c", 4000, 8 * GI))];
    let p = of_set(pod("web-9", 100, GI / 4), "default", "web");
    assert_eq!(schedule(&p, &nodes, &pods), Ok(name("a")));
    let mut full = nodes.clone();
    full[0] = node("a", 4000, GI);
    let err = schedule(&p, &full, &pods).unwrap_err();
    assert_eq!(err.message, "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient memory.");
}

// ---- property tests -----------------------------------------------------------------------

#[derive(Clone, Debug)]
struct NodeSpecGen {
    cpu: u64,
    mem: u64,
    max_pods: u64,
    ready: bool,
    cordoned: bool,
    tainted: bool,
    zone: u8,
}

#[derive(Clone, Debug)]
struct PodGen {
    cpu: u64,
    mem: u64,
    zone: Option<u8>,
    tolerates: bool,
    on: Option<usize>,
    finished: bool,
}

fn node_gen() -> impl Strategy<Value = NodeSpecGen> {
    (0u64..8000, 0u64..16, 0u64..6, any::<bool>(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(
        |(cpu, mem, max_pods, ready, cordoned, tainted, zone)| NodeSpecGen {
            cpu,
            mem: mem * GI / 2,
            max_pods,
            ready: ready || cpu % 3 != 0,
            cordoned: cordoned && cpu % 2 == 0,
            tainted,
            zone,
        },
    )
}

fn pod_gen() -> impl Strategy<Value = PodGen> {
    (0u64..4000, 0u64..8, proptest::option::of(0u8..3), any::<bool>(), proptest::option::of(0usize..6), any::<bool>())
        .prop_map(|(cpu, mem, zone, tolerates, on, finished)| PodGen {
            cpu,
            mem: mem * GI / 2,
            zone,
            tolerates,
            on,
            finished,
        })
}

fn build_node(i: usize, g: &NodeSpecGen) -> Node {
    let mut n = label(node(&format!("n{i}"), g.cpu, g.mem), "zone", &g.zone.to_string());
    n.status.as_mut().unwrap().allocatable.as_mut().unwrap().insert("pods".into(), Quantity(g.max_pods.to_string()));
    if !g.ready {
        n = not_ready(n);
    }
    if g.cordoned {
        n = cordon(n);
    }
    if g.tainted {
        n = taint(n, "dedicated", "vm", "NoSchedule");
    }
    n
}

fn build_pod(i: usize, g: &PodGen, nodes: usize) -> Pod {
    let mut p = pod(&format!("p{i}"), g.cpu, g.mem);
    if let Some(z) = g.zone {
        p.spec.as_mut().unwrap().node_selector = Some([("zone".to_string(), z.to_string())].into());
    }
    if g.tolerates {
        p.spec.as_mut().unwrap().tolerations = Some(vec![toleration(Some("dedicated"), "Exists", None, None)]);
    }
    match g.on {
        Some(n) if n < nodes => bound(p, &format!("n{n}"), if g.finished { "Succeeded" } else { "Running" }),
        _ => p,
    }
}

/// An independent statement of "fits", written from the rules rather than from the code.
fn oracle_fits(pod: &PodGen, node_index: usize, node: &NodeSpecGen, others: &[PodGen]) -> bool {
    let on_node: Vec<&PodGen> = others.iter().filter(|o| o.on == Some(node_index) && !o.finished).collect();
    let used_cpu: u64 = on_node.iter().map(|o| o.cpu).sum();
    let used_mem: u64 = on_node.iter().map(|o| o.mem).sum();
    node.ready
        && !node.cordoned
        && (!node.tainted || pod.tolerates)
        && pod.zone.is_none_or(|z| z == node.zone)
        && (on_node.len() as u64) < node.max_pods
        && (pod.cpu == 0 || used_cpu + pod.cpu <= node.cpu)
        && (pod.mem == 0 || used_mem + pod.mem <= node.mem)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn chosen_nodes_fit_and_a_fitting_node_is_always_found(
        nodes in proptest::collection::vec(node_gen(), 0..6),
        others in proptest::collection::vec(pod_gen(), 0..10),
        candidate in pod_gen(),
    ) {
        let built_nodes: Vec<Node> = nodes.iter().enumerate().map(|(i, g)| build_node(i, g)).collect();
        let built_pods: Vec<Pod> = others.iter().enumerate().map(|(i, g)| build_pod(i, g, nodes.len())).collect();
        let pending = PodGen { on: None, ..candidate.clone() };
        let pod = build_pod(99, &pending, nodes.len());
        let fitting: Vec<usize> = (0..nodes.len())
            .filter(|i| oracle_fits(&pending, *i, &nodes[*i], &others))
            .collect();
        match schedule(&pod, &built_nodes, &built_pods) {
            Ok(NodeName(chosen)) => {
                let i: usize = chosen.trim_start_matches('n').parse().unwrap();
                prop_assert!(fitting.contains(&i), "chose {chosen}, fitting {fitting:?}");
            }
            Err(u) => {
                prop_assert!(fitting.is_empty(), "nothing chosen but {fitting:?} fit: {}", u.message);
                prop_assert_eq!(u.reasons.len(), nodes.len());
                prop_assert!(u.reasons.values().all(|r| !r.is_empty()));
                let prefix = format!("0/{} nodes are available", nodes.len());
                prop_assert!(u.message.starts_with(&prefix));
            }
        }
    }

    #[test]
    fn the_choice_does_not_depend_on_the_order_of_nodes(
        nodes in proptest::collection::vec(node_gen(), 1..6),
        others in proptest::collection::vec(pod_gen(), 0..10),
        candidate in pod_gen(),
        rotate in 0usize..6,
    ) {
        let built_nodes: Vec<Node> = nodes.iter().enumerate().map(|(i, g)| build_node(i, g)).collect();
        let built_pods: Vec<Pod> = others.iter().enumerate().map(|(i, g)| build_pod(i, g, nodes.len())).collect();
        let pod = build_pod(99, &PodGen { on: None, ..candidate }, nodes.len());
        let mut rotated = built_nodes.clone();
        rotated.rotate_left(rotate % built_nodes.len());
        prop_assert_eq!(schedule(&pod, &built_nodes, &built_pods), schedule(&pod, &rotated, &built_pods));
    }
}

proptest! {
    #[test]
    fn a_set_placed_on_equal_nodes_stays_within_one_per_node(
        nodes in 1usize..6,
        replicas in 0usize..20,
        noise in proptest::collection::vec((0usize..6, 0u64..4), 0..8),
    ) {
        let built: Vec<Node> = (0..nodes).map(|i| node(&format!("n{i}"), 64000, 64 * GI)).collect();
        // Pods of no set, anywhere, change the scores but not the spread.
        let others: Vec<Pod> = noise
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| *n < nodes)
            .map(|(i, (n, g))| bound(pod(&format!("o{i}"), 100, g * GI), &format!("n{n}"), "Running"))
            .collect();
        let (_, per_node) = place_set(&built, others, "web", replicas);
        let counts: Vec<usize> = (0..nodes).map(|i| per_node.get(&format!("n{i}")).copied().unwrap_or(0)).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        prop_assert!(max - min <= 1, "{counts:?}");
        prop_assert_eq!(counts.iter().sum::<usize>(), replicas);
    }
}
