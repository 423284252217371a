//! The scheduler against a real in-process API server: nodes and pods are created by the test.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::{json, Value};

const NS: &str = "default";

struct Harness {
    client: Client,
    server: Option<ferrovirt_apiserver::Running>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let config = ferrovirt_apiserver::Config::new(dir.path(), "127.0.0.1:0".parse().unwrap());
        let server = ferrovirt_apiserver::start(config).await.expect("API server starts");
        let kc = Kubeconfig::read_from(&server.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
        let client = Client::try_from(config).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let opts = ferrovirt_scheduler::Options { retry_interval: Duration::from_secs(1), ..Default::default() };
        let task = tokio::spawn(ferrovirt_scheduler::run_until(client.clone(), opts, async {
            let _ = rx.await;
        }));
        Harness { client, server: Some(server), stop: Some(tx), task: Some(task), _dir: dir }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t).await.unwrap().unwrap().unwrap();
        }
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    async fn node(&self, name: &str, cpu: &str, memory: &str, extra: Value) {
        let mut v = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        merge(&mut v, extra);
        let node: Node = serde_json::from_value(v).unwrap();
        self.nodes().create(&PostParams::default(), &node).await.unwrap();
    }

    async fn pod(&self, name: &str, cpu: &str, memory: &str, extra: Value) {
        let mut v = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "schedulerName": "ferrovirt-scheduler",
                "containers": [{"name": "compute", "image": "ferrovirt/launcher",
                                "resources": {"requests": {"cpu": cpu, "memory": memory}}}]
            }
        });
        merge(&mut v, extra);
        let pod: Pod = serde_json::from_value(v).unwrap();
        self.pods().create(&PostParams::default(), &pod).await.unwrap();
    }

    async fn node_of(&self, pod: &str) -> Option<String> {
        self.pods().get(pod).await.unwrap().spec.unwrap().node_name.filter(|n| !n.is_empty())
    }

    async fn wait_bound(&self, pod: &str) -> String {
        wait_for(20, &format!("{pod} bound"), || async { self.node_of(pod).await }).await
    }

    async fn scheduled_condition(&self, pod: &str) -> Option<(String, Option<String>, Option<String>)> {
        let p = self.pods().get(pod).await.unwrap();
        let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        Some((c.status, c.reason, c.message))
    }

    async fn wait_unschedulable(&self, pod: &str, message: &str) {
        wait_for(20, &format!("{pod} unschedulable: {message}"), || async {
            let c = self.scheduled_condition(pod).await?;
            (c == ("False".into(), Some("Unschedulable".into()), Some(message.into()))).then_some(())
        })
        .await;
    }

    async fn events_about(&self, name: &str, reason: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), NS);
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.reason.as_deref() == Some(reason)
            })
            .collect()
    }

    async fn stays_unbound(&self, pod: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < deadline {
            assert_eq!(self.node_of(pod).await, None, "{pod} was bound");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {secs}s waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_bound_to_a_node_with_room() {
    let h = Harness::start().await;
    h.node("n1", "2", "2Gi", json!({})).await;
    h.node("n2", "4", "8Gi", json!({})).await;
    h.pod("p1", "500m", "1Gi", json!({})).await;
    // The least allocated node.
    assert_eq!(h.wait_bound("p1").await, "n2");
    let (status, _, _) =
        wait_for(10, "PodScheduled=True", || async { h.scheduled_condition("p1").await.filter(|c| c.0 == "True") })
            .await;
    assert_eq!(status, "True");
    wait_for(10, "Scheduled event", || async {
        let e = h.events_about("p1", "Scheduled").await;
        e.into_iter().next()
    })
    .await;
    // Pods of other schedulers are left alone.
    h.pod("other", "1m", "1Mi", json!({"spec": {"schedulerName": "default-scheduler"}})).await;
    h.stays_unbound("other", 2).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_too_big_stays_unbound_and_says_why() {
    let h = Harness::start().await;
    h.node("n1", "2", "2Gi", json!({})).await;
    h.node("n2", "2", "1Gi", json!({})).await;
    h.pod("big", "100m", "4Gi", json!({})).await;
    h.wait_unschedulable("big", "0/2 nodes are available: 2 Insufficient memory.").await;
    h.stays_unbound("big", 2).await;
    let events = h.events_about("big", "FailedScheduling").await;
    assert_eq!(events.len(), 1, "one event per distinct reason: {events:?}");
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert_eq!(events[0].note.as_deref(), Some("0/2 nodes are available: 2 Insufficient memory."));

    // A node with room appears: the pod is tried again and bound.
    h.node("n3", "4", "16Gi", json!({})).await;
    assert_eq!(h.wait_bound("big").await, "n3");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_node_gets_nothing_until_uncordoned() {
    let h = Harness::start().await;
    h.node("n1", "4", "8Gi", json!({"spec": {"unschedulable": true}})).await;
    h.pod("p", "100m", "128Mi", json!({})).await;
    h.wait_unschedulable("p", "0/1 nodes are available: 1 node(s) were unschedulable.").await;
    h.stays_unbound("p", 2).await;
    // kubectl uncordon: a strategic merge patch.
    h.nodes()
        .patch("n1", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"unschedulable": false}})))
        .await
        .unwrap();
    assert_eq!(h.wait_bound("p").await, "n1");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selectors_and_taints_are_respected() {
    let h = Harness::start().await;
    h.node("plain", "8", "16Gi", json!({"metadata": {"labels": {"zone": "a"}}})).await;
    h.node(
        "tainted",
        "2",
        "4Gi",
        json!({"metadata": {"labels": {"zone": "b"}},
               "spec": {"taints": [{"key": "dedicated", "value": "vms", "effect": "NoSchedule"}]}}),
    )
    .await;
    // A selector for zone b: only the tainted node matches, and the pod does not tolerate it.
    h.pod("picky", "100m", "128Mi", json!({"spec": {"nodeSelector": {"zone": "b"}}})).await;
    h.wait_unschedulable(
        "picky",
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {dedicated: vms}.",
    )
    .await;
    // Tolerating the taint, the pod goes to the tainted node although the other has more room.
    h.pod(
        "tolerant",
        "100m",
        "128Mi",
        json!({"spec": {"nodeSelector": {"zone": "b"},
                        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "vms", "effect": "NoSchedule"}]}}),
    )
    .await;
    assert_eq!(h.wait_bound("tolerant").await, "tainted");
    // Without a selector, an untolerating pod goes to the plain node only.
    h.pod("any", "100m", "128Mi", json!({})).await;
    assert_eq!(h.wait_bound("any").await, "plain");
    h.stays_unbound("picky", 1).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_is_not_handed_out_twice() {
    let h = Harness::start().await;
    h.node("n1", "4", "3Gi", json!({})).await;
    // Created together, each fits alone, both do not.
    for name in ["a", "b", "c"] {
        h.pod(name, "100m", "1Gi", json!({})).await;
    }
    h.pod("d", "100m", "1Gi", json!({})).await;
    let mut bound = 0;
    wait_for(20, "three pods bound", || async {
        let mut n = 0;
        for name in ["a", "b", "c", "d"] {
            n += usize::from(h.node_of(name).await.is_some());
        }
        (n >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut unbound = Vec::new();
    for name in ["a", "b", "c", "d"] {
        match h.node_of(name).await {
            Some(_) => bound += 1,
            None => unbound.push(name),
        }
    }
    assert_eq!(bound, 3);
    assert_eq!(unbound, ["d"], "the oldest pods are placed first");
    h.wait_unschedulable("d", "0/1 nodes are available: 1 Insufficient memory.").await;
    // A pod that ends frees its room.
    h.pods()
        .patch_status("a", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Succeeded"}})))
        .await
        .unwrap();
    assert_eq!(h.wait_bound("d").await, "n1");
    h.stop().await;
}

/// A launcher pod of replica set `set`, as the controller makes it (the VMI's labels copied).
fn replica(set: &str, extra: Value) -> Value {
    let mut v = json!({"metadata": {"labels": {"kubevirt.io/vmReplicaSet": set, "kubevirt.io": "virt-launcher"}}});
    merge(&mut v, extra);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_a_set_spread_over_nodes_within_the_placement_rules() {
    let h = Harness::start().await;
    // Unequal nodes: by room alone most replicas would go to "big".
    h.node("big", "16", "32Gi", json!({})).await;
    h.node("mid", "4", "8Gi", json!({"metadata": {"labels": {"zone": "b"}}})).await;
    h.node("small", "4", "8Gi", json!({"metadata": {"labels": {"zone": "b"}}})).await;
    // Six replicas created in one burst (placed in one scheduling pass, or several).
    for i in 0..6 {
        h.pod(&format!("web-{i}"), "100m", "512Mi", replica("web", json!({}))).await;
    }
    let mut per_node = std::collections::BTreeMap::new();
    for i in 0..6 {
        *per_node.entry(h.wait_bound(&format!("web-{i}")).await).or_insert(0) += 1;
    }
    assert_eq!(per_node, [("big".to_string(), 2), ("mid".to_string(), 2), ("small".to_string(), 2)].into());

    // A pod of no set goes by room: the big node.
    h.pod("plain", "100m", "512Mi", json!({})).await;
    assert_eq!(h.wait_bound("plain").await, "big");

    // A set restricted to zone b (nodeSelector for one, required node affinity for the others)
    // spreads over the two nodes of zone b only.
    let affinity = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]
    }}}}});
    h.pod("db-0", "100m", "512Mi", replica("db", json!({"spec": {"nodeSelector": {"zone": "b"}}}))).await;
    for i in 1..4 {
        h.pod(&format!("db-{i}"), "100m", "512Mi", replica("db", affinity.clone())).await;
    }
    let mut per_node = std::collections::BTreeMap::new();
    for i in 0..4 {
        *per_node.entry(h.wait_bound(&format!("db-{i}")).await).or_insert(0) += 1;
    }
    assert_eq!(per_node, [("mid".to_string(), 2), ("small".to_string(), 2)].into());

    // Nothing matches: the replica stays unbound and says why.
    let nowhere = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["c"]}]}]
    }}}}});
    h.pod("db-9", "100m", "512Mi", replica("db", nowhere)).await;
    let message = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.";
    h.wait_unschedulable("db-9", message).await;
    h.stays_unbound("db-9", 1).await;
    let events = h.events_about("db-9", "FailedScheduling").await;
    assert_eq!(events.iter().filter_map(|e| e.note.as_deref()).collect::<Vec<_>>(), [message]);
    h.stop().await;
}
