//! `spec.domain.firmware.kernelBoot` end to end: `ferrovirt up` as a process, the test guest's
//! kernel and initrd (from scripts/build-guest.sh) pushed as a kernelBoot container to a real
//! registry on loopback, real QEMU (TCG here), and the guest's own serial console as the witness.
//!
//! | VM        | kernelBoot                         | disks                                | the console shows                 |
//! |-----------|------------------------------------|--------------------------------------|-----------------------------------|
//! | kb-only   | kernel + initrd, kernelArgs A      | none: the guest lives in its initrd  | marker A; `cat /proc/cmdline` = A |
//! | kb-disk   | kernel + initrd, kernelArgs B      | the guest's containerDisk, cloud-init| marker B, `cat /proc/cmdline` = B, the user-data line, the containerDisk as /dev/vda |
//!
//! The kernel arguments carry commas and `=` in the marker's value: they reach the guest as one
//! string, exactly. Then both VMs are deleted and their QEMUs and pod folders must be gone.

mod real_vm;

use std::path::Path;
use std::time::Instant;

use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_disks::testing::{RegistryProcess, INITRD_PATH, KERNEL_PATH};
use ferrovirt_e2e::up::UpProcess;
use k8s_openapi::api::core::v1::Pod;

use real_vm::*;

const NODE: &str = "node1";

/// A VM booting the kernelBoot container `kernel_image` with `kernel_args`, 128Mi; with the test
/// guest's containerDisk `disk_image` and a cloud-init script printing `user_data_line` if given.
fn kernel_boot_vm(name: &str, kernel_image: &str, kernel_args: &str, disk: Option<(&str, &str)>) -> VirtualMachine {
    let mut spec = json!({
        "domain": {
            "devices": {},
            "firmware": {"kernelBoot": {
                "kernelArgs": kernel_args,
                "container": {"image": kernel_image, "kernelPath": KERNEL_PATH, "initrdPath": INITRD_PATH}
            }},
            "resources": {"requests": {"memory": "128Mi"}}
        },
        "terminationGracePeriodSeconds": 30
    });
    if let Some((disk_image, line)) = disk {
        spec["domain"]["devices"]["disks"] = json!([
            {"name": "containerdisk", "disk": {"bus": "virtio"}},
            {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}
        ]);
        spec["volumes"] = json!([
            {"name": "containerdisk", "containerDisk": {"image": disk_image}},
            {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": format!("#!/bin/sh\necho \"{line}\"\n")}}
        ]);
    }
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": "Always", "template": {"spec": spec}}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_boot_vms_boot_with_their_kernel_args() {
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest");
    let (vmlinuz, initrd) = (guest.join("vmlinuz"), guest.join("initrd.gz"));
    assert!(vmlinuz.is_file() && initrd.is_file(), "the test guest is not built: run scripts/build-guest.sh");
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    registry.push_kernel_boot_files("ferrovirt/guest-kernel:v1", &vmlinuz, &initrd).await.unwrap();
    let kernel_image = registry.image("ferrovirt/guest-kernel:v1");
    let disk_image = push_guest(&registry).await;

    let tmp = tempfile::tempdir().unwrap();
    let up = UpProcess::start(tmp.path(), NODE).unwrap();
    let client = up.client().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let logs = || format!("--- ferrovirt up log (last 60 lines) ---\n{}", up.log_tail(60));

    let token = std::process::id();
    let args_only = format!("console=ttyS0,115200 quiet ferrovirt.marker=only-{token},a=b");
    let args_disk = format!("console=ttyS0,115200 quiet ferrovirt.marker=disk-{token},c=d");
    let user_data_line = format!("kernel-boot user-data {token}");
    vms.create(&PostParams::default(), &kernel_boot_vm("kb-only", &kernel_image, &args_only, None)).await.unwrap();
    vms.create(
        &PostParams::default(),
        &kernel_boot_vm("kb-disk", &kernel_image, &args_disk, Some((&disk_image, &user_data_line))),
    )
    .await
    .unwrap();

    let mut qemus = Vec::new();
    let mut dirs = Vec::new();
    for (name, args, marker) in [
        ("kb-only", &args_only, format!("only-{token},a=b")),
        ("kb-disk", &args_disk, format!("disk-{token},c=d")),
    ] {
        let t = Instant::now();
        let (uid, dir) = running_vmi(&vmis, &pods, &up.pods_dir(), NODE, name, None, &logs).await;
        console_shows(&dir, BOOT_MARKER, BOOT_SECS, &logs).await;
        console_shows(&dir, &format!("ferrovirt-guest: marker {marker}\r\n"), 30, &logs).await;
        eprintln!("{name}: VMI {uid} booted its kernelBoot container after {:.1}s", t.elapsed().as_secs_f64());
        // QEMU booted the kernel and initrd from the node's image cache, with the args as one argument.
        let qemu = qemu_pid(&dir);
        let argv: Vec<String> =
            std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap().split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let after = |flag: &str| argv.iter().position(|a| a == flag).map(|i| argv[i + 1].clone());
        assert_eq!(after("-append").as_deref(), Some(args.as_str()), "{argv:?}");
        assert!(after("-kernel").is_some_and(|k| !k.starts_with(dir.to_str().unwrap())), "{argv:?}");
        assert!(after("-initrd").is_some(), "{argv:?}");
        // The guest's shell on the serial console answers with the exact kernel command line.
        let cmdline = console_answer(&dir, "cat /proc/cmdline", |l| l.starts_with("console="), 60).await.unwrap();
        assert_eq!(&cmdline, args, "{name}: /proc/cmdline");
        qemus.push(qemu);
        dirs.push(dir);
    }
    // The containerDisk and the cloud-init disk are there next to the kernelBoot.
    console_shows(&dirs[1], &user_data_line, 60, &logs).await;
    let vda = console_answer(&dirs[1], "cat /sys/block/vda/size", |l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty(), 30)
        .await
        .unwrap();
    assert_eq!(vda.parse::<u64>().unwrap(), 32 << 11, "the 32 MiB containerDisk is /dev/vda");
    let no_disk = console_answer(&dirs[0], "ls /sys/block | grep -c vd", |l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty(), 30)
        .await
        .unwrap();
    assert_eq!(no_disk, "0", "kb-only has no disk");

    // Delete: the VMIs, their QEMUs and pod folders go.
    for name in ["kb-only", "kb-disk"] {
        vms.delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually(120, "the VMIs, QEMUs and pod folders to go after delete", &logs, || async {
        let vmis_gone = vmis.get_opt("kb-only").await.ok()?.is_none() && vmis.get_opt("kb-disk").await.ok()?.is_none();
        let qemus_gone = qemus.iter().all(|q| !alive(*q));
        let dirs_gone = dirs.iter().all(|d| !d.exists());
        (vmis_gone && qemus_gone && dirs_gone).then_some(())
    })
    .await;
}
