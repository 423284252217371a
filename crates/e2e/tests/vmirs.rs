//! A VirtualMachineInstanceReplicaSet of 6 on three nodes with real QEMU: spread 2/2/2, `kubectl
//! scale` to 10 and to 2, `kubectl drain` of a node, and the loss of a node (kill -9 of its agent
//! and of its launchers and QEMUs). After each step the count is right again: the API has as many
//! Running VMIs of the set (not being deleted, none on a lost or drained node) as asked for, and as
//! many QEMU processes run. The time each step takes is printed, with the time until every guest's
//! console shows its boot marker.
//!
//! ```text
//!   create 6 ─▶ 2/2/2 ─▶ scale 10 ─▶ scale 2 ─▶ drain the node of a replica ─▶ lose the node of a replica
//!   nodes: --fence-after-seconds 4; controller: --node-grace-seconds 6 --vmi-failure-grace-seconds 2
//! ```

mod cluster;
mod real_vm;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use cluster::Cluster;
use ferrovirt_api::kubevirt::{VirtualMachineInstance, VirtualMachineInstanceReplicaSet};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_e2e::{kubectl_1_20, Kubectl};
use ferrovirt_launcher::spec;
use real_vm::{phase_of, push_guest, BOOT_MARKER};

const SET: &str = "rs";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// How long one step may take (TCG boots of up to 8 guests at once on 2 busy cores).
const STEP_SECS: u64 = 300;

fn replica_set(image: &str, replicas: i32) -> VirtualMachineInstanceReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": SET},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": SET}},
            "template": {
                "metadata": {"labels": {"app": SET}},
                "spec": {
                    "domain": {
                        "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                        "resources": {"requests": {"memory": "128Mi"}}
                    },
                    "terminationGracePeriodSeconds": 10,
                    "volumes": [{"name": "root", "containerDisk": {"image": image}}]
                }
            }
        }
    }))
    .unwrap()
}

/// What the API and the machine say about the set.
#[derive(Debug, Default)]
struct Count {
    /// Running VMIs of the set, not being deleted, by node.
    running: BTreeMap<String, usize>,
    /// Of those, how many consoles show the boot marker.
    booted: usize,
    /// QEMU processes of the cluster, by node.
    qemus: BTreeMap<String, usize>,
}

impl Count {
    fn api(&self) -> usize {
        self.running.values().sum()
    }

    fn qemu(&self) -> usize {
        self.qemus.values().sum()
    }
}

async fn count(cluster: &Cluster, vmis: &Api<VirtualMachineInstance>) -> Count {
    let mut c = Count::default();
    let Ok(list) = vmis.list(&ListParams::default().labels(&format!("app={SET}"))).await else { return c };
    for vmi in list.items {
        if phase_of(&vmi) != "Running" || vmi.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let status = vmi.status.unwrap_or_default();
        let node = status.node_name.unwrap_or_default();
        *c.running.entry(node.clone()).or_default() += 1;
        let pod = status.active_pods.and_then(|p| p.keys().next().cloned()).unwrap_or_default();
        let log = std::fs::read_to_string(cluster.pods_dir(&node).join(pod).join(spec::SERIAL_LOG)).unwrap_or_default();
        if log.contains(BOOT_MARKER) {
            c.booted += 1;
        }
    }
    for node in NODES {
        c.qemus.insert(node.to_string(), cluster.qemus(Some(node)).len());
    }
    c
}

/// Wait until `want` VMIs of the set are Running, none on `not_on`, and `want` QEMUs run; then
/// until every guest shows its boot marker. Prints and returns the final count.
async fn settle(cluster: &Cluster, vmis: &Api<VirtualMachineInstance>, want: usize, not_on: Option<&str>, what: &str, since: Instant) -> Count {
    let deadline = since + Duration::from_secs(STEP_SECS);
    let mut counted_at = None;
    loop {
        let c = count(cluster, vmis).await;
        let placed_right = not_on.is_none_or(|n| c.running.get(n).copied().unwrap_or(0) == 0);
        let right = c.api() == want && c.qemu() == want && placed_right;
        if right && counted_at.is_none() {
            counted_at = Some(since.elapsed());
        }
        if !right {
            counted_at = None;
        }
        if let (Some(at), true) = (counted_at, c.booted == want) {
            eprintln!(
                "{what}: count right ({want} Running in the API, {want} QEMUs) after {:.1}s, every guest booted after {:.1}s; \
                 Running by node {:?}, QEMUs by node {:?}",
                at.as_secs_f64(),
                since.elapsed().as_secs_f64(),
                c.running,
                c.qemus
            );
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: timed out after {STEP_SECS}s waiting for {want} Running VMIs and QEMUs (not on {not_on:?}); now {c:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A node that runs a replica now.
fn a_node_with_a_replica(c: &Count) -> String {
    c.running.iter().find(|(_, n)| **n > 0).map(|(node, _)| node.clone()).expect("a replica runs somewhere")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_keeps_its_count_through_scaling_drain_and_node_loss() {
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    let image = push_guest(&registry).await;
    let mut cluster = Cluster::start(&NODES, &["--fence-after-seconds", "4"], &["--node-grace-seconds", "6", "--vmi-failure-grace-seconds", "2"]);
    let client = cluster.client().await;
    cluster.wait_ready(&client).await;
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let sets: Api<VirtualMachineInstanceReplicaSet> = Api::namespaced(client.clone(), "default");
    let kubectl = Arc::new(Kubectl::new(kubectl_1_20().unwrap_or_else(|e| panic!("{e:#}")), cluster.kubeconfig()).unwrap());
    let test_started = Instant::now();

    // 6 replicas, spread 2/2/2.
    let t = Instant::now();
    sets.create(&PostParams::default(), &replica_set(&image, 6)).await.unwrap();
    let c = settle(&cluster, &vmis, 6, None, "create 6", t).await;
    assert_eq!(c.running.values().copied().collect::<Vec<_>>(), [2, 2, 2], "spread over the three nodes: {c:?}");

    // kubectl scale to 10 (4/3/3), then to 2.
    let t = Instant::now();
    let out = kubectl.ok(&["scale", "vmirs", SET, "--replicas", "10"]);
    assert!(out.contains("scaled"), "{out}");
    let c = settle(&cluster, &vmis, 10, None, "scale to 10", t).await;
    let (min, max) = (c.running.values().min().copied().unwrap_or(0), c.running.values().max().copied().unwrap_or(0));
    assert!(c.running.len() == 3 && max - min <= 1, "10 spread evenly: {c:?}");
    let t = Instant::now();
    kubectl.ok(&["scale", "vmirs", SET, "--replicas", "2"]);
    let c = settle(&cluster, &vmis, 2, None, "scale to 2", t).await;

    // Drain the node of a replica: its VMI is stopped and replaced on another node.
    let drained = a_node_with_a_replica(&c);
    let t = Instant::now();
    let k = kubectl.clone();
    let node = drained.clone();
    let out = tokio::task::spawn_blocking(move || k.ok(&["drain", &node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout", "50s"]))
        .await
        .unwrap();
    assert!(out.contains("evicting pod default/virt-launcher-rs"), "{out}");
    eprintln!("kubectl drain {drained} returned after {:.1}s", t.elapsed().as_secs_f64());
    settle(&cluster, &vmis, 2, Some(&drained), &format!("drain {drained}"), t).await;
    assert_eq!(cluster.qemus(Some(&drained)).len(), 0, "nothing runs on the drained node");
    kubectl.ok(&["uncordon", &drained]);

    // Lose the node of a replica: kill -9 its agent, launchers and QEMUs.
    let c = count(&cluster, &vmis).await;
    let lost = a_node_with_a_replica(&c);
    let t = Instant::now();
    cluster.lose_node(&lost);
    settle(&cluster, &vmis, 2, Some(&lost), &format!("loss of {lost}"), t).await;

    let status = sets.get(SET).await.unwrap().status.unwrap_or_default();
    assert_eq!((status.replicas, status.ready_replicas), (Some(2), Some(2)), "the set's status: {status:?}");
    eprintln!("the whole test took {:.1}s", test_started.elapsed().as_secs_f64());
}
