//! The VirtualMachineInstanceReplicaSet controller against a real in-process API server. No
//! scheduler and no node agent: VMIs simply exist; where a test needs one Ready it plays their
//! parts (bind the pod, report Running), as the other controller tests do.

mod common;

use std::collections::BTreeSet;

use common::{holds_for, wait_for, Harness, NS};
use ferrovirt_api::kubevirt::{
    VirtualMachineInstance, VirtualMachineInstancePhase as Phase, VirtualMachineInstanceReplicaSet,
};
use ferrovirt_controller::replicaset::REPLICA_SET_LABEL;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

fn rs_manifest(name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "domain": {
                        "devices": {"disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}]},
                        "resources": {"requests": {"memory": "64Mi"}}
                    },
                    "terminationGracePeriodSeconds": 5,
                    "volumes": [{"name": "containerdisk", "containerDisk": {"image": "127.0.0.1:5000/guest:latest"}}]
                }
            }
        }
    })
}

fn sets(h: &Harness) -> Api<VirtualMachineInstanceReplicaSet> {
    Api::namespaced(h.client.clone(), NS)
}

async fn create_rs(h: &Harness, name: &str, replicas: i32) -> VirtualMachineInstanceReplicaSet {
    let rs: VirtualMachineInstanceReplicaSet = serde_json::from_value(rs_manifest(name, replicas)).unwrap();
    sets(h).create(&PostParams::default(), &rs).await.expect("replica set created")
}

/// VMIs with the set's template label (`app=<name>`), owned or not, deleting or not.
async fn labelled(h: &Harness, name: &str) -> Vec<VirtualMachineInstance> {
    h.vmis().list(&ListParams::default().labels(&format!("app={name}"))).await.unwrap().items
}

/// The VMIs that count for the set: controlled by it, not being deleted, not finished.
async fn active(h: &Harness, rs_uid: &str, name: &str) -> Vec<VirtualMachineInstance> {
    labelled(h, name)
        .await
        .into_iter()
        .filter(|v| {
            v.metadata.owner_references.iter().flatten().any(|r| r.controller == Some(true) && r.uid == rs_uid)
                && v.metadata.deletion_timestamp.is_none()
                && !v.status.as_ref().and_then(|s| s.phase).is_some_and(Phase::is_final)
        })
        .collect()
}

async fn wait_active(h: &Harness, rs_uid: &str, name: &str, n: usize, secs: u64) -> Vec<VirtualMachineInstance> {
    wait_for(secs, &format!("{n} active VMIs of {name}"), || async move {
        let vmis = active(h, rs_uid, name).await;
        (vmis.len() == n).then_some(vmis)
    })
    .await
}

/// Waits until exactly `n` VMIs carry the label at all (deleted ones are gone).
async fn wait_total(h: &Harness, name: &str, n: usize, secs: u64) {
    wait_for(secs, &format!("exactly {n} VMIs labelled app={name}"), || async move {
        (labelled(h, name).await.len() == n).then_some(())
    })
    .await;
}

async fn wait_status(h: &Harness, name: &str, replicas: i32, ready: i32) -> VirtualMachineInstanceReplicaSet {
    wait_for(20, &format!("status of {name}: {replicas} replicas, {ready} ready"), || async move {
        let rs = sets(h).get(name).await.unwrap();
        let s = rs.status.clone()?;
        (s.replicas == Some(replicas) && s.ready_replicas == Some(ready)).then_some(rs)
    })
    .await
}

async fn scale(h: &Harness, name: &str, replicas: i32) {
    // What `kubectl scale` does: a merge patch of the scale subresource.
    sets(h)
        .patch_scale(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}})))
        .await
        .expect("scaled");
}

fn uids(vmis: &[VirtualMachineInstance]) -> BTreeSet<String> {
    vmis.iter().filter_map(|v| v.metadata.uid.clone()).collect()
}

/// Plays the scheduler and the node agent for one VMI: its pod bound and running, the VMI
/// Running; the controller then marks it Ready. Returns the pod name.
async fn make_ready(h: &Harness, vmi: &VirtualMachineInstance, node: &str) -> String {
    let name = vmi.metadata.name.clone().unwrap();
    let pod = h.wait_pod(vmi.metadata.uid.as_deref().unwrap()).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    h.bind_pod(&pod_name, node).await;
    h.wait_vmi_phase(&name, Phase::Scheduled).await;
    h.set_pod_phase(&pod_name, "Running").await;
    h.set_vmi_phase(&name, Phase::Running).await;
    pod_name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_keeps_its_count_through_scaling_deletion_failure_and_adoption() {
    let h = Harness::start().await;
    let rs = create_rs(&h, "web", 6).await;
    let rs_uid = rs.metadata.uid.clone().unwrap();

    // Six VMIs, owned by the set, from its template.
    let vmis = wait_active(&h, &rs_uid, "web", 6, 20).await;
    for v in &vmis {
        let name = v.metadata.name.as_deref().unwrap();
        assert!(name.starts_with("web") && name.len() == "web".len() + 5, "{name}");
        let owner = &v.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller, owner.block_owner_deletion),
            ("VirtualMachineInstanceReplicaSet", "web", Some(true), Some(true))
        );
        assert_eq!(v.metadata.labels.as_ref().unwrap()[REPLICA_SET_LABEL], "web");
    }
    // Each gets a launcher pod carrying the set's label (the scheduler spreads by it).
    let pod = h.wait_pod(vmis[0].metadata.uid.as_deref().unwrap()).await;
    assert_eq!(pod.metadata.labels.as_ref().unwrap()[REPLICA_SET_LABEL], "web");
    assert_eq!(REPLICA_SET_LABEL, ferrovirt_scheduler::fit::REPLICA_SET_LABEL);
    holds_for(1, "no seventh VMI", || async { labelled(&h, "web").await.len() == 6 }).await;
    let rs = wait_status(&h, "web", 6, 0).await;
    assert_eq!(rs.status.unwrap().label_selector.as_deref(), Some("app=web"));
    let s = sets(&h).get_scale("web").await.unwrap();
    assert_eq!(s.status.as_ref().map(|s| (s.replicas, s.selector.as_deref())), Some((6, Some("app=web"))));
    h.wait_event("web", "SuccessfulCreate").await;

    // Scale up to 10 and down to 2 through the scale subresource: right within seconds, no overshoot.
    scale(&h, "web", 10).await;
    wait_active(&h, &rs_uid, "web", 10, 10).await;
    holds_for(2, "exactly 10 VMIs", || async { labelled(&h, "web").await.len() == 10 }).await;
    wait_status(&h, "web", 10, 0).await;
    scale(&h, "web", 2).await;
    let two = wait_active(&h, &rs_uid, "web", 2, 10).await;
    wait_total(&h, "web", 2, 20).await;
    wait_status(&h, "web", 2, 0).await;
    h.wait_event("web", "SuccessfulDelete").await;

    // Both become Ready: readyReplicas follows.
    let mut pods = Vec::new();
    for (v, node) in two.iter().zip(["node1", "node2"]) {
        pods.push(make_ready(&h, v, node).await);
    }
    wait_status(&h, "web", 2, 2).await;

    // A deleted VMI is replaced.
    let victim = two[0].metadata.name.clone().unwrap();
    h.vmis().delete(&victim, &DeleteParams::default()).await.unwrap();
    let now = wait_for(10, "a replacement for the deleted VMI", || async {
        let vmis = active(&h, &rs_uid, "web").await;
        (vmis.len() == 2 && !uids(&vmis).contains(two[0].metadata.uid.as_ref().unwrap())).then_some(vmis)
    })
    .await;
    h.confirm_pod_deletion(&pods[0]).await;
    h.wait_vmi_gone(&victim, two[0].metadata.uid.as_deref().unwrap(), 20).await;
    wait_status(&h, "web", 2, 1).await;

    // A VMI that fails is deleted and replaced.
    let failing = two[1].metadata.name.clone().unwrap();
    let failing_uid = two[1].metadata.uid.clone().unwrap();
    h.set_vmi_phase(&failing, Phase::Failed).await;
    wait_for(10, "a replacement for the failed VMI", || async {
        let vmis = active(&h, &rs_uid, "web").await;
        (vmis.len() == 2 && !uids(&vmis).contains(&failing_uid) && uids(&vmis) != uids(&now)).then_some(())
    })
    .await;
    h.confirm_pod_deletion(&pods[1]).await;
    h.wait_vmi_gone(&failing, &failing_uid, 20).await;
    wait_total(&h, "web", 2, 20).await;
    wait_status(&h, "web", 2, 0).await;

    // Paused: an orphan with the set's labels is adopted, and counts; nothing is created or
    // deleted meanwhile, nor after resuming (the orphan fills the third place).
    sets(&h)
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": true, "replicas": 3}})))
        .await
        .unwrap();
    wait_for(10, "ReplicaPaused", || async {
        let rs = sets(&h).get("web").await.unwrap();
        let conds = rs.status?.conditions?;
        conds.iter().any(|c| c.type_ == "ReplicaPaused").then_some(())
    })
    .await;
    holds_for(1, "no create while paused", || async { labelled(&h, "web").await.len() == 2 }).await;
    let mut orphan: VirtualMachineInstance = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "stray", "namespace": NS, "labels": {"app": "web"}},
        "spec": rs_manifest("web", 1)["spec"]["template"]["spec"].clone(),
    }))
    .unwrap();
    orphan = h.vmis().create(&PostParams::default(), &orphan).await.unwrap();
    wait_for(10, "the orphan adopted", || async {
        let v = h.vmi("stray").await?;
        v.metadata.owner_references?.iter().any(|r| r.uid == rs_uid && r.controller == Some(true)).then_some(())
    })
    .await;
    wait_status(&h, "web", 3, 0).await;
    sets(&h).patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": false}}))).await.unwrap();
    h.wait_event("web", "SuccessfulResumed").await;
    holds_for(2, "three VMIs, the orphan among them", || async {
        let vmis = labelled(&h, "web").await;
        vmis.len() == 3 && uids(&vmis).contains(orphan.metadata.uid.as_ref().unwrap())
    })
    .await;

    // A VMI relabelled out of the selector is released (and replaced).
    let leaving =
        active(&h, &rs_uid, "web").await.into_iter().find(|v| v.metadata.name.as_deref() != Some("stray")).unwrap();
    let leaving_name = leaving.metadata.name.clone().unwrap();
    h.vmis()
        .patch(&leaving_name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "debug"}}})))
        .await
        .unwrap();
    wait_for(10, "the relabelled VMI released", || async {
        let v = h.vmi(&leaving_name).await?;
        (!v.metadata.owner_references.iter().flatten().any(|r| r.uid == rs_uid)).then_some(())
    })
    .await;
    wait_active(&h, &rs_uid, "web", 3, 10).await;

    // Deleting the set deletes its VMIs (the API server's garbage collector); the released one stays.
    sets(&h).delete("web", &DeleteParams::default()).await.unwrap();
    wait_total(&h, "web", 0, 20).await;
    assert!(h.vmi(&leaving_name).await.is_some());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_scale_changes_settles_on_the_last_count() {
    let h = Harness::start().await;
    let rs = create_rs(&h, "burst", 1).await;
    let rs_uid = rs.metadata.uid.clone().unwrap();
    wait_active(&h, &rs_uid, "burst", 1, 20).await;
    for n in [8, 3, 12, 0, 5] {
        scale(&h, "burst", n).await;
    }
    wait_active(&h, &rs_uid, "burst", 5, 20).await;
    wait_total(&h, "burst", 5, 20).await;
    holds_for(2, "exactly 5 VMIs", || async { labelled(&h, "burst").await.len() == 5 }).await;
    wait_status(&h, "burst", 5, 0).await;
    h.stop().await;
}
