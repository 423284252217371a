//! KubeVirt's VMI subresources on a real guest, through the API server and the node agent's
//! endpoint: the serial console websocket (`plain.kubevirt.io`), pause and unpause (the guest
//! stops answering on its console while paused and answers once unpaused, with the VMI's Paused
//! condition and the VM's printableStatus following), soft reboot (the guest boots again in the
//! same QEMU), VNC (QEMU's RFB greeting through the websocket), a port forward to a TCP server in
//! the guest, and KubeVirt's refusals (409) when an action does not fit the VMI's state.

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, PostParams};
use serde_json::json;

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_e2e::up::{ByteStream, UpProcess};
use ferrovirt_launcher::spec;

const NODE: &str = "node1";

/// `PUT .../virtualmachineinstances/vm1/<action>`: the status and the body.
async fn vmi_put(client: &kube::Client, action: &str) -> (u16, String) {
    let req = http::Request::builder()
        .method("PUT")
        .uri(format!("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/vm1/{action}"))
        .header("Content-Type", "application/json")
        .body(kube::client::Body::from(b"{}".to_vec()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let body = resp.into_body().collect_bytes().await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    (code, body)
}

fn condition(vmi: &VirtualMachineInstance, kind: &str) -> Option<String> {
    vmi.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind).map(|c| format!("{:?}", c.status))
}

async fn printable_status(vms: &Api<VirtualMachine>) -> Option<String> {
    vms.get("vm1").await.ok()?.status?.printable_status.map(|p| format!("{p:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pause_unpause_and_soft_reboot() {
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    let disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest/disk.qcow2");
    assert!(disk.is_file(), "the test guest is not built: run scripts/build-guest.sh");
    registry.push_disk_file("ferrovirt/guest:latest", &disk).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let up = UpProcess::start(tmp.path(), NODE).unwrap();
    let config = up.kube_config().await.unwrap();
    let client = up.client().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");

    // Before there is a VMI: 404 names it; a console on a missing VMI is refused too.
    let (code, body) = vmi_put(&client, "pause").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("vm1"), "{body}");
    assert!(ByteStream::open(&config, "default", "vm1", "console").await.is_err());

    let image = registry.image("ferrovirt/guest:latest");
    let vm: VirtualMachine = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm1"},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "domain": {
                "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}, {"name": "cidata", "disk": {"bus": "virtio"}}]},
                "resources": {"requests": {"memory": "128Mi"}}
            },
            "volumes": [
                {"name": "root", "containerDisk": {"image": image}},
                {"name": "cidata", "cloudInitNoCloud": {"userData": "#!/bin/sh\nnc -ll -p 7777 -e /bin/cat &\necho \"user-data ran $((6*7))\"\n"}}
            ]
        }}}
    }))
    .unwrap();
    vms.create(&PostParams::default(), &vm).await.unwrap();
    let pod_dir = up.eventually(300, "vm1 Running with its user-data line on the console", || async {
        let vmi = vmis.get_opt("vm1").await.ok()??;
        let status = vmi.status.as_ref()?;
        if format!("{:?}", status.phase.as_ref()?) != "Running" {
            return None;
        }
        let pod_uid = status.active_pods.as_ref()?.keys().next()?.clone();
        let dir = up.pods_dir().join(pod_uid);
        let log = std::fs::read_to_string(dir.join(spec::SERIAL_LOG)).ok()?;
        log.contains("user-data ran 42").then_some(dir)
    })
    .await;

    // The console: what is typed reaches the guest's shell, its answer comes back.
    let mut console = ByteStream::open(&config, "default", "vm1", "console").await.unwrap();
    console.send(b"\necho console-$((40+2))\n").await.unwrap();
    console.read_until(b"console-42", Duration::from_secs(60)).await.unwrap();

    // Pause: 200, then the Paused condition and the VM's status; the guest does not answer.
    let (code, body) = vmi_put(&client, "pause").await;
    assert_eq!(code, 200, "pause: {body}");
    up.eventually(30, "the Paused condition", || async {
        let vmi = vmis.get("vm1").await.ok()?;
        (condition(&vmi, "Paused").as_deref() == Some("True")).then_some(())
    })
    .await;
    up.eventually(30, "the VM to say Paused", || async { (printable_status(&vms).await.as_deref() == Some("Paused")).then_some(()) }).await;
    let (code, body) = vmi_put(&client, "pause").await;
    assert_eq!(code, 409, "a second pause: {body}");
    assert!(body.contains("VMI is already paused"), "{body}");
    let (code, body) = vmi_put(&client, "softreboot").await;
    assert_eq!(code, 409, "soft reboot while paused: {body}");
    let _ = console.read_for(Duration::from_millis(500)).await.unwrap();
    console.send(b"echo while-paused-$((3*5))\n").await.unwrap();
    let quiet = console.read_for(Duration::from_secs(3)).await.unwrap();
    assert!(!String::from_utf8_lossy(&quiet).contains("while-paused-15"), "a paused guest answered: {:?}", String::from_utf8_lossy(&quiet));

    // Unpause: the guest runs the command typed while it was paused.
    let (code, body) = vmi_put(&client, "unpause").await;
    assert_eq!(code, 200, "unpause: {body}");
    console.read_until(b"while-paused-15", Duration::from_secs(60)).await.unwrap();
    up.eventually(30, "the Paused condition to go", || async {
        let vmi = vmis.get("vm1").await.ok()?;
        condition(&vmi, "Paused").is_none().then_some(())
    })
    .await;
    up.eventually(30, "the VM to say Running again", || async { (printable_status(&vms).await.as_deref() == Some("Running")).then_some(()) }).await;
    let (code, body) = vmi_put(&client, "unpause").await;
    assert_eq!(code, 409, "unpause of a running VMI: {body}");
    assert!(body.contains("VMI is not paused"), "{body}");

    // Port forward: a TCP echo server in the guest (busybox nc, started by the user-data) answers
    // through the websocket, the node endpoint and QEMU's user-mode network; twice, on one port.
    for round in 0..2 {
        let mut echo = ByteStream::open(&config, "default", "vm1", "portforward/7777/tcp").await.unwrap();
        let line = format!("echo through the port forward {round}\n");
        echo.send(line.as_bytes()).await.unwrap();
        assert_eq!(echo.read_until(b"\n", Duration::from_secs(20)).await.unwrap(), line.as_bytes());
        echo.close().await;
    }
    assert!(ByteStream::open(&config, "default", "vm1", "portforward/53/udp").await.is_err(), "only TCP is forwarded");

    // Soft reboot: the guest reboots inside the same QEMU and runs its user-data again.
    let qemu = spec::read_state(&pod_dir).and_then(|s| s.qemu_pid).expect("a QEMU pid");
    let uid = vmis.get("vm1").await.unwrap().metadata.uid;
    let (code, body) = vmi_put(&client, "softreboot").await;
    assert_eq!(code, 200, "softreboot: {body}");
    if let Err(e) = console.read_until(b"user-data ran 42", Duration::from_secs(240)).await {
        tokio::time::sleep(Duration::from_secs(2)).await;
        panic!(
            "{e}\n--- launcher log ---\n{}\n--- ferrovirt up log ---\n{}",
            std::fs::read_to_string(pod_dir.join(spec::LOG_FILE)).unwrap_or_default(),
            up.log_tail(40)
        );
    }
    assert_eq!(spec::read_state(&pod_dir).and_then(|s| s.qemu_pid), Some(qemu), "a soft reboot keeps the same QEMU");
    assert_eq!(vmis.get("vm1").await.unwrap().metadata.uid, uid, "a soft reboot keeps the same VMI");
    console.send(b"\necho after-reboot-$((7*7))\n").await.unwrap();
    console.read_until(b"after-reboot-49", Duration::from_secs(60)).await.unwrap();
    console.close().await;

    // VNC: the same websocket path carries QEMU's RFB server (the greeting comes first).
    let mut vnc = ByteStream::open(&config, "default", "vm1", "vnc").await.unwrap();
    let greeting = vnc.read_until(b"\n", Duration::from_secs(10)).await.unwrap();
    assert_eq!(greeting, b"RFB 003.008\n");
    vnc.close().await;

    // No guest agent in the test guest: KubeVirt's answer.
    let req = http::Request::builder()
        .uri("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/vm1/guestosinfo")
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = client.send(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 409);
}
