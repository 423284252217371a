//! Scheduling with real QEMU in the loop: a VM too big for the node stays Pending with the reason on
//! its launcher Pod, an Event and the VM's printableStatus, and starts nothing on the node; a
//! cordoned node (`kubectl patch node N -p '{"spec":{"unschedulable":true}}'`, as the issue says it)
//! gets no new VM until it is uncordoned, and then the VM boots to its user-data line.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_e2e::up::UpProcess;
use ferrovirt_e2e::{kubectl_1_20, Kubectl};
use ferrovirt_launcher::spec;

const NODE: &str = "node1";

fn vm(name: &str, image: &str, memory: &str) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "domain": {
                "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}, {"name": "cidata", "disk": {"bus": "virtio"}}]},
                "resources": {"requests": {"memory": memory}}
            },
            "volumes": [
                {"name": "root", "containerDisk": {"image": image}},
                {"name": "cidata", "cloudInitNoCloud": {"userData": format!("#!/bin/sh\necho \"{name} is up $((6*7))\"\n")}}
            ]
        }}}
    }))
    .unwrap()
}

/// The `PodScheduled` condition of the VMI's launcher Pod: (status, reason, message).
async fn pod_scheduled(pods: &Api<Pod>, vm: &str) -> Option<(String, String, String)> {
    let list = pods.list(&ListParams::default().labels(&format!("vm.kubevirt.io/name={vm}"))).await.ok()?;
    let pod = list.items.into_iter().next()?;
    let c = pod.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
    Some((c.status, c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
}

async fn printable(vms: &Api<VirtualMachine>, name: &str) -> Option<String> {
    vms.get(name).await.ok()?.status?.printable_status.map(|p| format!("{p:?}"))
}

async fn phase(vmis: &Api<VirtualMachineInstance>, name: &str) -> Option<String> {
    vmis.get_opt(name).await.ok()??.status?.phase.map(|p| format!("{p:?}"))
}

fn pod_folders(up: &UpProcess) -> usize {
    std::fs::read_dir(up.pods_dir()).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_big_stays_pending_and_a_cordoned_node_gets_nothing_until_uncordoned() {
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    let disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest/disk.qcow2");
    assert!(disk.is_file(), "the test guest is not built: run scripts/build-guest.sh");
    registry.push_disk_file("ferrovirt/guest:latest", &disk).await.unwrap();
    let image = registry.image("ferrovirt/guest:latest");
    let tmp = tempfile::tempdir().unwrap();
    let up = UpProcess::start(tmp.path(), NODE).unwrap();
    let client = up.client().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let kubectl = Kubectl::new(kubectl_1_20().unwrap(), up.kubeconfig()).unwrap();

    // Too big: 4 TiB of guest memory on this machine.
    vms.create(&PostParams::default(), &vm("huge", &image, "4Ti")).await.unwrap();
    // (Until the node has registered, the reason is that there are no nodes.)
    let (_, reason, _) = up.eventually(60, "the huge VM's pod to be refused for its memory", || async {
        pod_scheduled(&pods, "huge").await.filter(|(s, _, m)| s == "False" && m == "0/1 nodes are available: 1 Insufficient memory.")
    })
    .await;
    assert_eq!(reason, "Unschedulable");
    up.eventually(30, "the huge VM to say ErrorUnschedulable", || async {
        (printable(&vms, "huge").await.as_deref() == Some("ErrorUnschedulable")).then_some(())
    })
    .await;
    up.eventually(30, "a FailedScheduling event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.iter().any(|e| e.reason.as_deref() == Some("FailedScheduling") && e.message.as_deref().is_some_and(|m| m.contains("Insufficient memory"))).then_some(())
    })
    .await;
    assert_ne!(phase(&vmis, "huge").await.as_deref(), Some("Running"));
    assert_eq!(pod_folders(&up), 0, "nothing was started for a VM that does not fit");

    // Cordon, as the issue types it; a new VM that fits stays Pending while the node is cordoned.
    kubectl.ok(&["patch", "node", NODE, "-p", r#"{"spec":{"unschedulable":true}}"#]);
    vms.create(&PostParams::default(), &vm("small", &image, "128Mi")).await.unwrap();
    let (_, _, message) = up.eventually(60, "the small VM's pod to be refused", || async {
        pod_scheduled(&pods, "small").await.filter(|(s, _, _)| s == "False")
    })
    .await;
    assert_eq!(message, "0/1 nodes are available: 1 node(s) were unschedulable.");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(phase(&vmis, "small").await.as_deref(), Some("Running"));
    assert_eq!(pod_folders(&up), 0, "a cordoned node starts nothing");

    // Uncordon: the small VM is placed and boots; the huge one still does not fit.
    kubectl.ok(&["patch", "node", NODE, "-p", r#"{"spec":{"unschedulable":false}}"#]);
    up.eventually(300, "the small VM to boot to its user-data line", || async {
        let vmi = vmis.get_opt("small").await.ok()??;
        let pod_uid = vmi.status?.active_pods?.keys().next()?.clone();
        let log = std::fs::read_to_string(up.pods_dir().join(pod_uid).join(spec::SERIAL_LOG)).ok()?;
        log.contains("small is up 42").then_some(())
    })
    .await;
    assert_eq!(printable(&vms, "huge").await.as_deref(), Some("ErrorUnschedulable"));
    assert_eq!(pod_folders(&up), 1, "only the small VM runs");
}
