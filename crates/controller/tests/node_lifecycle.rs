//! The node lifecycle controller against a real in-process API server, with the real VM/VMI
//! controller and scheduler: a node whose Lease stops being renewed goes NotReady and is tainted,
//! its VMIs fail (after its own fencing time) and its pods are deleted, and the VM runs again on
//! the other node; a node that renews again loses the taint. The node agents' writes are made by
//! the test (see `common`).

mod common;

use std::time::Duration;

use common::{wait_for, Harness};
use ferrovirt_api::kubevirt::VirtualMachineInstancePhase as Phase;
use ferrovirt_controller::node_lifecycle::{self, Thresholds, FENCE_ANNOTATION, REASON_NODE_UNRESPONSIVE, TAINT_UNREACHABLE};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn renew(leases: &Api<Lease>, node: &str) {
    let lease = json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": MicroTime(Timestamp::now())}});
    if leases.get_opt(node).await.unwrap().is_none() {
        let mut obj = lease.clone();
        obj["metadata"] = json!({"name": node, "namespace": "kube-node-lease"});
        leases.create(&PostParams::default(), &serde_json::from_value(obj).unwrap()).await.unwrap();
    } else {
        leases.patch(node, &PatchParams::default(), &Patch::Merge(lease)).await.unwrap();
    }
}

/// A node agent's heartbeat: renew `node`'s Lease every 300 ms while `alive` says so.
fn heartbeat(leases: Api<Lease>, node: &'static str, alive: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if *alive.borrow() {
                renew(&leases, node).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_not_ready_and_its_vms_run_elsewhere() {
    let h = Harness::start_with(common::test_options(), true).await;
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), "kube-node-lease");
    h.create_node("n1", "4", "8Gi").await;
    h.create_node("n2", "4", "8Gi").await;
    // n1 fences its guests 2 s after its last renewal; n2 is cordoned until the VM is placed on n1.
    h.nodes()
        .patch("n1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {FENCE_ANNOTATION: "2"}}})))
        .await
        .unwrap();
    h.nodes().patch("n2", &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}}))).await.unwrap();
    let (n1_alive, n1_rx) = tokio::sync::watch::channel(true);
    let (_n2_alive, n2_rx) = tokio::sync::watch::channel(true);
    let beats = [heartbeat(leases.clone(), "n1", n1_rx), heartbeat(leases.clone(), "n2", n2_rx)];
    let t = Thresholds { grace: Duration::from_secs(3), failure_grace: Duration::from_secs(1), fence_margin: Duration::from_secs(2) };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let lifecycle = tokio::spawn(node_lifecycle::run_until(h.client.clone(), t, async {
        let _ = stop_rx.await;
    }));

    // The VM runs on n1 (the test plays n1's agent).
    h.create_vm("vm1", "Always").await;
    let vmi = h.wait_vmi("vm1", None, 20).await;
    let vmi_uid = vmi.metadata.uid.clone().unwrap();
    let pod = wait_for(20, "the pod bound to n1", || async {
        h.pods_of(&vmi_uid).await.into_iter().find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("n1"))
    })
    .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    h.set_pod_phase(&pod_name, "Running").await;
    h.set_vmi_phase("vm1", Phase::Running).await;
    h.nodes().patch("n2", &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": false}}))).await.unwrap();

    // Every VMI state from here on, as a watch sees it (a Failed VMI is replaced within milliseconds).
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Option<Phase>, Option<String>, tokio::time::Instant)>::new()));
    let recorder = {
        use futures::StreamExt;
        let (vmis, seen) = (h.vmis(), seen.clone());
        tokio::spawn(async move {
            let stream = kube::runtime::watcher(vmis, Default::default());
            futures::pin_mut!(stream);
            while let Some(Ok(ev)) = stream.next().await {
                if let kube::runtime::watcher::Event::Apply(v) | kube::runtime::watcher::Event::InitApply(v) = ev {
                    let st = v.status.clone().unwrap_or_default();
                    seen.lock().unwrap().push((v.metadata.uid.clone().unwrap_or_default(), st.phase, st.reason, tokio::time::Instant::now()));
                }
            }
        })
    };

    // n1 goes silent.
    let silent_at = tokio::time::Instant::now();
    n1_alive.send(false).unwrap();
    wait_for(15, "n1 Ready=Unknown with the unreachable taint", || async {
        let n = h.nodes().get("n1").await.ok()?;
        let ready = n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?.status.clone();
        let tainted = n.spec.as_ref()?.taints.as_ref()?.iter().any(|t| t.key == TAINT_UNREACHABLE && t.effect == "NoExecute");
        (ready == "Unknown" && tainted).then_some(())
    })
    .await;
    // Its VMI fails, but not before grace + failure grace and the node's fencing time + margin (4 s).
    let (reason, failed_at) = wait_for(20, "the VMI on n1 to fail", || async {
        let seen = seen.lock().unwrap();
        seen.iter().find(|(uid, phase, _, _)| *uid == vmi_uid && *phase == Some(Phase::Failed)).map(|(_, _, r, at)| (r.clone(), *at))
    })
    .await;
    assert!(failed_at - silent_at >= Duration::from_secs(4), "failed after {:?}, before the node fenced", failed_at - silent_at);
    assert_eq!(reason.as_deref(), Some(REASON_NODE_UNRESPONSIVE));
    // Its pod is gone at once (nobody on n1 could confirm), and the VM runs again, on n2.
    let replacement = h.wait_vmi("vm1", Some(&vmi_uid), 30).await;
    let new_uid = replacement.metadata.uid.clone().unwrap();
    wait_for(20, "the new pod bound to n2", || async {
        h.pods_of(&new_uid).await.into_iter().find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("n2"))
    })
    .await;
    assert!(h.pods().get_opt(&pod_name).await.unwrap().is_none(), "the old pod was deleted");
    let on_n1 = h.pods().list(&ListParams::default().fields("spec.nodeName=n1")).await.unwrap();
    assert!(on_n1.items.is_empty(), "nothing is placed on the NotReady node");

    // n1 comes back: the taint goes.
    n1_alive.send(true).unwrap();
    wait_for(15, "the taint to go from n1", || async {
        let n = h.nodes().get("n1").await.ok()?;
        (!n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|ts| ts.iter().any(|t| t.key == TAINT_UNREACHABLE))).then_some(())
    })
    .await;

    recorder.abort();
    let _ = stop_tx.send(());
    lifecycle.await.unwrap().unwrap();
    for b in beats {
        b.abort();
    }
    h.stop().await;
}
