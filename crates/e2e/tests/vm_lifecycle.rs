//! Real VMs end to end on one machine: `ferrovirt up` (API server, controller, scheduler, node agent)
//! as a process, the test guest as a containerDisk in a real registry on loopback, QEMU (KVM where
//! the node's probe says it works, TCG here), and the guest's own console as the witness.

use std::path::{Path, PathBuf};

use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_e2e::up::UpProcess;
use ferrovirt_launcher::spec;
use k8s_openapi::api::core::v1::Pod;

const NODE: &str = "node1";

fn vm_manifest(image: &str, marker: &str) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "testvm"},
        "spec": {
            "runStrategy": "Always",
            "template": {"spec": {
                "domain": {
                    "devices": {"disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}, {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}]},
                    "resources": {"requests": {"memory": "128Mi"}}
                },
                "terminationGracePeriodSeconds": 30,
                "volumes": [
                    {"name": "containerdisk", "containerDisk": {"image": image}},
                    {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": format!("#!/bin/sh\necho \"{marker} $((6*7))\"\n")}}
                ]
            }}
        }
    }))
    .unwrap()
}

/// The running VMI's uid and its pod folder on the node.
async fn running_vmi(up: &UpProcess, vmis: &Api<VirtualMachineInstance>, pods: &Api<Pod>, not_uid: Option<&str>) -> (String, PathBuf) {
    up.eventually(300, "the VMI to be Running", || async {
        let vmi = vmis.get_opt("testvm").await.ok()??;
        let uid = vmi.metadata.uid.clone()?;
        if Some(uid.as_str()) == not_uid {
            return None;
        }
        let phase = vmi.status.as_ref().and_then(|s| s.phase.as_ref()).map(|p| format!("{p:?}"));
        if phase.as_deref() != Some("Running") {
            return None;
        }
        assert_eq!(vmi.status.as_ref().unwrap().node_name.as_deref(), Some(NODE));
        let pod = pods.list(&ListParams::default().labels(&format!("kubevirt.io/created-by={uid}"))).await.ok()?.items.into_iter().next()?;
        let dir = up.pods_dir().join(pod.metadata.uid?);
        Some((uid, dir))
    })
    .await
}

async fn console_shows(up: &UpProcess, dir: &Path, needle: &str, secs: u64) {
    up.eventually(secs, &format!("{needle:?} on the serial console"), || async {
        std::fs::read_to_string(dir.join(spec::SERIAL_LOG)).ok().filter(|l| l.contains(needle)).map(|_| ())
    })
    .await;
}

/// Whether `pid` is a live process (a zombie, dead but not yet reaped, is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn qemu_pid(dir: &Path) -> u32 {
    spec::read_state(dir).and_then(|s| s.qemu_pid).expect("a running QEMU")
}

async fn put(client: &kube::Client, action: &str) {
    let req = http::Request::builder()
        .method("PUT")
        .uri(format!("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/testvm/{action}"))
        .header("Content-Type", "application/json")
        .body(kube::client::Body::from(b"{}".to_vec()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    assert!(resp.status().is_success(), "{action}: {}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_runs_stops_starts_restarts_and_is_cleaned_up() {
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    let disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest/disk.qcow2");
    assert!(disk.is_file(), "the test guest is not built: run scripts/build-guest.sh");
    registry.push_disk_file("ferrovirt/guest:latest", &disk).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let up = UpProcess::start(tmp.path(), NODE).unwrap();
    let client = up.client().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    vms.create(&PostParams::default(), &vm_manifest(&registry.image("ferrovirt/guest:latest"), "cloud-init says")).await.unwrap();
    let (uid1, dir1) = running_vmi(&up, &vmis, &pods, None).await;
    console_shows(&up, &dir1, "cloud-init says 42", 300).await;
    let vmi = vmis.get("testvm").await.unwrap();
    let conds = vmi.status.unwrap().conditions.unwrap_or_default();
    assert!(conds.iter().any(|c| c.type_ == "SoftwareEmulation" || c.type_ == "Ready"), "{conds:?}");
    up.eventually(30, "the VM to say Running", || async {
        let vm = vms.get("testvm").await.ok()?;
        (vm.status?.printable_status.map(|p| format!("{p:?}")).as_deref() == Some("Running")).then_some(())
    })
    .await;

    // stop: the guest powers off, the VMI and its QEMU go away, the VM says Stopped.
    let qemu1 = qemu_pid(&dir1);
    put(&client, "stop").await;
    up.eventually(90, "the VMI to go after stop", || async { vmis.get_opt("testvm").await.ok()?.is_none().then_some(()) }).await;
    assert!(!alive(qemu1), "QEMU of the stopped VM is gone: {:?}", std::fs::read_to_string(format!("/proc/{qemu1}/status")));
    up.eventually(60, "the pod folder to be removed", || async { (!dir1.exists()).then_some(()) }).await;

    // start: a new VMI boots to the console again.
    put(&client, "start").await;
    let (uid2, dir2) = running_vmi(&up, &vmis, &pods, Some(&uid1)).await;
    console_shows(&up, &dir2, "cloud-init says 42", 300).await;

    // restart: another VMI replaces it.
    put(&client, "restart").await;
    let (_uid3, dir3) = running_vmi(&up, &vmis, &pods, Some(&uid2)).await;
    console_shows(&up, &dir3, "ferrovirt-guest: booted", 300).await;

    // delete: VMI, Pod, QEMU, cgroup and node-local files are gone.
    let qemu3 = qemu_pid(&dir3);
    let pod_uid = dir3.file_name().unwrap().to_string_lossy().to_string();
    vms.delete("testvm", &DeleteParams::default()).await.unwrap();
    up.eventually(90, "VMI and pod to go after delete", || async {
        let vmi_gone = vmis.get_opt("testvm").await.ok()?.is_none();
        let pods_gone = pods.list(&ListParams::default().labels("kubevirt.io=virt-launcher")).await.ok()?.items.is_empty();
        (vmi_gone && pods_gone && !dir3.exists()).then_some(())
    })
    .await;
    assert!(!alive(qemu3), "QEMU is gone: {:?}", std::fs::read_to_string(format!("/proc/{qemu3}/status")));
    for ctrl in ["memory", "pids", "cpu", "unified"] {
        let cg = Path::new("/sys/fs/cgroup").join(ctrl).join("ferrovirt").join(&pod_uid);
        assert!(!cg.exists(), "cgroup {} is removed", cg.display());
    }
    assert!(!Path::new("/sys/fs/cgroup/ferrovirt").join(&pod_uid).exists());
}
