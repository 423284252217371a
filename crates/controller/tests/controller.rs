//! The controller against a real in-process API server. The scheduler's and the node agent's
//! writes are made by the test (see `common`), except in the tests that run the real scheduler.

mod common;

use common::{holds_for, wait_for, Harness};
use ferrovirt_api::kubevirt::{PrintableStatus, VirtualMachineInstancePhase as Phase};
use ferrovirt_api::quantity::{format_bytes, parse_quantity_bytes};
use ferrovirt_controller::overhead::memory_overhead;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_vm_runs_then_halts() {
    let h = Harness::start().await;
    let vm = h.create_vm("vm1", "Always").await;
    let vm_uid = vm.metadata.uid.clone().unwrap();

    // A VMI owned by the VM, from its template.
    let vmi = h.wait_vmi("vm1", None, 20).await;
    let vmi_uid = vmi.metadata.uid.clone().unwrap();
    let owner = &vmi.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("VirtualMachine", "vm1", vm_uid.as_str())
    );
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    let labels = vmi.metadata.labels.clone().unwrap();
    assert_eq!((labels["app"].as_str(), labels["kubevirt.io/vm"].as_str()), ("demo", "vm1"));
    assert!(vmi.metadata.finalizers.iter().flatten().any(|f| f == "kubevirt.io/foregroundDeleteVirtualMachine"));

    // Its launcher pod: owned by the VMI, labelled, sized guest + overhead.
    let pod = h.wait_pod(&vmi_uid).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    assert!(
        pod_name.starts_with("virt-launcher-vm1-") && pod_name.len() == "virt-launcher-vm1-".len() + 5,
        "{pod_name}"
    );
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("VirtualMachineInstance", "vm1", vmi_uid.as_str())
    );
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubevirt.io"], "virt-launcher");
    assert_eq!(labels["kubevirt.io/created-by"], vmi_uid);
    assert_eq!(labels["vm.kubevirt.io/name"], "vm1");
    assert_eq!(pod.metadata.annotations.as_ref().unwrap()["kubevirt.io/domain"], "vm1");
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.scheduler_name.as_deref(), Some("ferrovirt-scheduler"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.termination_grace_period_seconds, Some(5));
    let c = &spec.containers[0];
    assert_eq!((c.name.as_str(), c.image.as_deref()), ("compute", Some("ferrovirt/launcher")));
    let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
    let overhead = memory_overhead(&vmi.spec);
    assert_eq!(parse_quantity_bytes(&requests["memory"].0).unwrap(), (128 << 20) + overhead);
    assert_eq!(requests["cpu"].0, "100m");

    // The VMI waits for the scheduler; the VM is starting.
    let vmi = h.wait_vmi_phase("vm1", Phase::Scheduling).await;
    let memory = vmi.status.as_ref().unwrap().memory.as_ref().unwrap();
    assert_eq!(memory.memory_overhead.as_ref().unwrap().0, format_bytes(overhead));
    let vm = h.wait_vm_status("vm1", "Starting", 20).await;
    assert_eq!(vm.status.as_ref().unwrap().created, Some(true));
    assert_eq!(vm.status.as_ref().unwrap().ready, Some(false));

    // The scheduler binds the pod: Scheduled, with the node.
    h.bind_pod(&pod_name, "node1").await;
    let vmi = h.wait_vmi_phase("vm1", Phase::Scheduled).await;
    assert_eq!(vmi.status.as_ref().unwrap().node_name.as_deref(), Some("node1"));
    assert_eq!(vmi.metadata.labels.as_ref().unwrap()["kubevirt.io/nodeName"], "node1");

    // The node agent starts it: Running, ready.
    h.set_pod_phase(&pod_name, "Running").await;
    h.set_vmi_phase("vm1", Phase::Running).await;
    let vm = h.wait_vm_status("vm1", "Running", 20).await;
    wait_for(20, "VM ready", || async { h.vm("vm1").await.status.and_then(|s| s.ready).filter(|r| *r) }).await;
    let vmi = h.vmi("vm1").await.unwrap();
    let ready = vmi.status.as_ref().unwrap().condition("Ready").unwrap();
    assert_eq!(format!("{:?}", ready.status), "True");
    assert_eq!(vm.status.as_ref().unwrap().run_strategy, Some(ferrovirt_api::kubevirt::RunStrategy::Always));
    let phases: Vec<Phase> =
        vmi.status.unwrap().phase_transition_timestamps.unwrap().into_iter().map(|t| t.phase).collect();
    assert_eq!(phases, [Phase::Pending, Phase::Scheduling, Phase::Scheduled, Phase::Running]);

    // Halted: the VMI is deleted, its pod too once the node agent confirms; the VM stops.
    h.vms()
        .patch("vm1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"runStrategy": "Halted"}})))
        .await
        .unwrap();
    h.wait_vm_status("vm1", "Stopping", 20).await;
    h.confirm_pod_deletion(&pod_name).await;
    h.wait_vmi_gone("vm1", &vmi_uid, 20).await;
    let vm = h.wait_vm_status("vm1", "Stopped", 20).await;
    let status = vm.status.unwrap();
    assert_eq!((status.created, status.ready), (Some(false), Some(false)));
    assert!(h.pods().get_opt(&pod_name).await.unwrap().is_none());
    holds_for(2, "no new VMI while Halted", || async { h.vmi("vm1").await.is_none() }).await;

    // What happened is told in events.
    for reason in ["SuccessfulCreate", "Started", "SuccessfulDelete", "Stopped"] {
        h.wait_event("vm1", reason).await;
    }
    let pod_created = h.wait_event("vm1", "SuccessfulCreate").await;
    assert!(pod_created.note.is_some());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_restarts_with_backoff_after_start_failures() {
    let h = Harness::start().await;
    h.create_vm("vm2", "Always").await;
    let first = h.wait_vmi("vm2", None, 20).await;
    let first_uid = first.metadata.uid.clone().unwrap();
    h.wait_vmi_phase("vm2", Phase::Scheduling).await;

    // The VMI fails before it ever ran: a start failure.
    h.set_vmi_phase("vm2", Phase::Failed).await;
    let vm = h.wait_vm_status("vm2", "CrashLoopBackOff", 20).await;
    let failure = vm.status.as_ref().unwrap().start_failure.clone().unwrap();
    assert_eq!(failure.consecutive_fail_count, Some(1));
    assert_eq!(failure.last_failed_vmi_uid.as_deref(), Some(first_uid.as_str()));
    let retry_after = failure.retry_after_timestamp.clone().unwrap().0;
    h.wait_vmi_gone("vm2", &first_uid, 20).await;
    h.wait_event("vm2", "CrashLoopBackOff").await;

    // A new VMI only after the backoff (2 s in these tests).
    let second = h.wait_vmi("vm2", Some(&first_uid), 20).await;
    let created = second.metadata.creation_timestamp.clone().unwrap().0;
    assert!(created >= retry_after, "created {created} before the backoff ended at {retry_after}");
    let second_uid = second.metadata.uid.clone().unwrap();
    let vm = h.wait_vm_status("vm2", "Starting", 20).await;
    assert_eq!(vm.status.as_ref().unwrap().start_failure.as_ref().unwrap().retries, Some(1));

    // Fails again: the wait doubles.
    h.wait_vmi_phase("vm2", Phase::Scheduling).await;
    h.set_vmi_phase("vm2", Phase::Failed).await;
    let vm = wait_for(20, "second start failure counted", || async {
        let vm = h.vm("vm2").await;
        let n = vm.status.as_ref().and_then(|s| s.start_failure.as_ref()).and_then(|f| f.consecutive_fail_count);
        (n == Some(2)).then_some(vm)
    })
    .await;
    let f = vm.status.unwrap().start_failure.unwrap();
    let wait = f.retry_after_timestamp.unwrap().0.duration_since(second.metadata.creation_timestamp.unwrap().0);
    assert!(wait.as_secs() >= 4, "second backoff {wait:?}");
    let third = h.wait_vmi("vm2", Some(&second_uid), 20).await;

    // A VMI that ran and then failed restarts at once and clears the count.
    let pod = h.wait_pod(third.metadata.uid.as_deref().unwrap()).await;
    h.bind_pod(pod.metadata.name.as_deref().unwrap(), "node1").await;
    h.wait_vmi_phase("vm2", Phase::Scheduled).await;
    h.set_vmi_phase("vm2", Phase::Running).await;
    wait_for(20, "start failures cleared", || async {
        h.vm("vm2").await.status.filter(|s| s.start_failure.is_none() && printable_is(s, PrintableStatus::Running))
    })
    .await;
    h.set_vmi_phase("vm2", Phase::Failed).await;
    // Its bound pod is deleted; the node agent confirms.
    h.confirm_pod_deletion(pod.metadata.name.as_deref().unwrap()).await;
    let fourth = h.wait_vmi("vm2", third.metadata.uid.as_deref(), 10).await;
    assert!(fourth.metadata.uid != third.metadata.uid);
    let vm = h.vm("vm2").await;
    assert!(vm.status.unwrap().start_failure.is_none());
    h.stop().await;
}

fn printable_is(s: &ferrovirt_api::kubevirt::VirtualMachineStatus, p: PrintableStatus) -> bool {
    s.printable_status == Some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_on_failure_restarts_failures_only() {
    let h = Harness::start().await;
    h.create_vm("vm3", "RerunOnFailure").await;
    let first = h.wait_vmi("vm3", None, 20).await;
    let first_uid = first.metadata.uid.clone().unwrap();
    h.wait_vmi_phase("vm3", Phase::Scheduling).await;
    // Ran, then crashed: restarted.
    h.set_vmi_phase("vm3", Phase::Running).await;
    h.wait_vm_status("vm3", "Running", 20).await;
    h.set_vmi_phase("vm3", Phase::Failed).await;
    let second = h.wait_vmi("vm3", Some(&first_uid), 20).await;
    let second_uid = second.metadata.uid.clone().unwrap();
    // Ran, then shut down by the guest: stays down.
    h.wait_vmi_phase("vm3", Phase::Scheduling).await;
    h.set_vmi_phase("vm3", Phase::Running).await;
    h.wait_vm_status("vm3", "Running", 20).await;
    h.set_vmi_phase("vm3", Phase::Succeeded).await;
    h.wait_vmi_gone("vm3", &second_uid, 20).await;
    h.wait_vm_status("vm3", "Stopped", 20).await;
    holds_for(3, "no restart after a clean shutdown", || async { h.vmi("vm3").await.is_none() }).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_never_restarts() {
    let h = Harness::start().await;
    h.create_vm("vm4", "Once").await;
    let vmi = h.wait_vmi("vm4", None, 20).await;
    h.wait_vmi_phase("vm4", Phase::Scheduling).await;
    h.set_vmi_phase("vm4", Phase::Running).await;
    h.wait_vm_status("vm4", "Running", 20).await;
    h.set_vmi_phase("vm4", Phase::Failed).await;
    h.wait_vm_status("vm4", "Stopped", 20).await;
    let uid = vmi.metadata.uid.clone();
    holds_for(3, "the ended VMI stays and nothing restarts", || async {
        h.vmi("vm4").await.is_some_and(|v| v.metadata.uid == uid)
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_vm_removes_its_vmi_and_pod() {
    let h = Harness::start().await;
    h.create_vm("vm5", "Always").await;
    let vmi = h.wait_vmi("vm5", None, 20).await;
    let vmi_uid = vmi.metadata.uid.clone().unwrap();
    let pod = h.wait_pod(&vmi_uid).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    h.bind_pod(&pod_name, "node1").await;
    h.set_pod_phase(&pod_name, "Running").await;
    h.wait_vmi_phase("vm5", Phase::Scheduled).await;
    h.set_vmi_phase("vm5", Phase::Running).await;
    h.wait_vm_status("vm5", "Running", 20).await;

    h.vms().delete("vm5", &DeleteParams::default()).await.unwrap();
    // The garbage collector deletes the VMI; the controller deletes its pod; the node agent
    // confirms once the guest is down.
    h.confirm_pod_deletion(&pod_name).await;
    h.wait_vmi_gone("vm5", &vmi_uid, 20).await;
    wait_for(20, "pod gone", || async { h.pods().get_opt(&pod_name).await.unwrap().is_none().then_some(()) }).await;
    assert!(h.vms().get_opt("vm5").await.unwrap().is_none());
    holds_for(2, "nothing comes back", || async {
        h.vmi("vm5").await.is_none() && h.pods_of(&vmi_uid).await.is_empty()
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_stop_requests_drive_a_manual_vm() {
    let h = Harness::start().await;
    h.create_vm("vm6", "Manual").await;
    let vm = h.wait_vm_status("vm6", "Stopped", 20).await;
    assert_eq!(vm.status.as_ref().unwrap().created, Some(false));
    holds_for(1, "Manual starts nothing by itself", || async { h.vmi("vm6").await.is_none() }).await;

    // What the start subresource will write.
    let patch = json!({"status": {"stateChangeRequests": [{"action": "Start"}]}});
    h.vms().patch_status("vm6", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    let vmi = h.wait_vmi("vm6", None, 20).await;
    let uid = vmi.metadata.uid.clone().unwrap();
    wait_for(20, "start request done", || async {
        h.vm("vm6").await.status.filter(|s| s.state_change_requests.is_none() && s.created == Some(true))
    })
    .await;

    // What the stop subresource will write.
    let patch = json!({"status": {"stateChangeRequests": [{"action": "Stop", "uid": uid}]}});
    h.vms().patch_status("vm6", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    h.wait_vmi_gone("vm6", &uid, 20).await;
    let vm = h.wait_vm_status("vm6", "Stopped", 20).await;
    assert_eq!(vm.status.unwrap().state_change_requests, None);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_request_on_a_halted_vm_switches_it_to_always() {
    let h = Harness::start().await;
    h.create_vm("vm7", "Halted").await;
    h.wait_vm_status("vm7", "Stopped", 20).await;
    let patch = json!({"status": {"stateChangeRequests": [{"action": "Start"}]}});
    h.vms().patch_status("vm7", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    h.wait_vmi("vm7", None, 20).await;
    let vm = h.vm("vm7").await;
    assert_eq!(vm.spec.run_strategy, Some(ferrovirt_api::kubevirt::RunStrategy::Always));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_real_scheduler_pods_land_on_nodes_or_say_why_not() {
    let h = Harness::start_with(common::test_options(), true).await;
    h.create_node("node1", "2", "2Gi").await;

    h.create_vm("small", "Always").await;
    let vmi = h.wait_vmi_phase("small", Phase::Scheduled).await;
    assert_eq!(vmi.status.as_ref().unwrap().node_name.as_deref(), Some("node1"));
    // The scheduler writes PodScheduled=True right after the binding itself (two writes).
    let uid = vmi.metadata.uid.clone().unwrap();
    wait_for(20, "PodScheduled=True on the pod", || async {
        let pod = h.pods_of(&uid).await.into_iter().next()?;
        let c = pod.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (c.status == "True").then_some(())
    })
    .await;

    // Too big for the node: the VMI and the VM say why.
    h.create_vm_with("big", "Always", "4Gi").await;
    let vm = h.wait_vm_status("big", "ErrorUnschedulable", 30).await;
    let cond = vm.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "PodScheduled").unwrap();
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(cond.message.as_deref(), Some("0/1 nodes are available: 1 Insufficient memory."));
    let vmi = h.vmi("big").await.unwrap();
    assert_eq!(vmi.status.unwrap().phase, Some(Phase::Scheduling));
    h.wait_event("big", "ErrorUnschedulable").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtctl_start_stop_restart_through_the_subresources() {
    let h = Harness::start().await;
    h.create_vm("vm8", "Always").await;
    let first = h.wait_vmi("vm8", None, 20).await;
    let first_uid = first.metadata.uid.clone().unwrap();
    h.wait_vmi_phase("vm8", Phase::Scheduling).await;

    // restart: the VMI is replaced by a new one.
    assert_eq!(common::vm_action(&h.client, "vm8", "restart").await, 202);
    h.wait_vmi_gone("vm8", &first_uid, 20).await;
    let second = h.wait_vmi("vm8", Some(&first_uid), 20).await;
    let second_uid = second.metadata.uid.clone().unwrap();
    wait_for(20, "restart requests done", || async {
        h.vm("vm8").await.status.filter(|s| s.state_change_requests.is_none() && s.created == Some(true))
    })
    .await;

    // stop: Halted, the VMI goes.
    assert_eq!(common::vm_action(&h.client, "vm8", "stop").await, 202);
    h.wait_vmi_gone("vm8", &second_uid, 20).await;
    h.wait_vm_status("vm8", "Stopped", 20).await;

    // start: Always again, a new VMI.
    assert_eq!(common::vm_action(&h.client, "vm8", "start").await, 202);
    h.wait_vmi("vm8", Some(&second_uid), 20).await;
    h.wait_vm_status("vm8", "Starting", 20).await;
    h.stop().await;
}
