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

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_disks::testing::{RegistryProcess, INITRD_PATH, KERNEL_PATH};
use ferrovirt_e2e::ferrovirt_binary;
use k8s_openapi::api::core::v1::Pod;

use real_vm::*;

const NODE: &str = "node1";

/// `ferrovirt up` as a child process; SIGINT on drop (it stops its VMs), then SIGKILL, then every
/// launcher and QEMU left in its pod folders is killed by PID.
struct Up {
    child: Child,
    data_dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Up {
    fn start(data_dir: &Path) -> Up {
        let mut child = Command::new(ferrovirt_binary().unwrap())
            .args(["up", "--listen", "127.0.0.1:0", "--node-name", NODE, "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data_dir.join("up.log")).unwrap())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut kubeconfig = None;
        let mut line = String::new();
        while out.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(p) = line.trim().strip_prefix("kubeconfig: ") {
                kubeconfig = Some(PathBuf::from(p));
                break;
            }
            line.clear();
        }
        // Keep reading its stdout so that it never writes into a closed pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        let mut up = Up { child, data_dir: data_dir.to_path_buf(), kubeconfig: PathBuf::new() };
        match kubeconfig {
            Some(k) => up.kubeconfig = k,
            None => panic!("ferrovirt up printed no kubeconfig line; its log:\n{}", file_tail(&data_dir.join("up.log"), 40)),
        }
        up
    }

    async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap()
    }

    fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("nodes").join(NODE).join("pods")
    }

    fn logs(&self) -> String {
        format!("--- ferrovirt up log (last 60 lines) ---\n{}", file_tail(&self.data_dir.join("up.log"), 60))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        sweep_pod_processes(&self.pods_dir());
    }
}

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
    let up = Up::start(tmp.path());
    let client = up.client().await;
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let logs = || up.logs();

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
