//! A whole launcher life on real parts: the test guest pushed to a real registry on loopback as a
//! containerDisk, a cloud-init script, QEMU (TCG here), the VM's cgroup, the console, and a stop
//! through the control socket that the guest honours with an ACPI power-off. And the same guest's
//! kernel and initrd as a kernelBoot container with no disk at all, its screen on vnc.sock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_launcher::spec::{self, ControlReply, LaunchSpec, LauncherPhase};

fn guest_disk() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest/disk.qcow2");
    assert!(p.is_file(), "the test guest is not built: run scripts/build-guest.sh (scripts/install-test-deps.sh does)");
    p
}

async fn wait_state(dir: &Path, secs: u64, want: impl Fn(LauncherPhase) -> bool) -> spec::LauncherState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = spec::read_state(dir) {
            if want(s.phase) {
                return s;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "state did not arrive in {secs}s; last: {:?}; qemu.log: {}",
            spec::read_state(dir), std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_serial(dir: &Path, secs: u64, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let log = std::fs::read_to_string(dir.join(spec::SERIAL_LOG)).unwrap_or_default();
        if log.contains(needle) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{needle:?} not on the console in {secs}s; serial.log:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn control(dir: &Path, req: serde_json::Value) -> ControlReply {
    let s = tokio::net::UnixStream::connect(dir.join(spec::CONTROL_SOCKET)).await.expect("control.sock");
    let (r, mut w) = s.into_split();
    w.write_all(format!("{req}\n").as_bytes()).await.unwrap();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_disk_vm_boots_runs_cloud_init_and_stops() {
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    registry.push_disk_file("ferrovirt/guest:latest", &guest_disk()).await.unwrap();
    let node = tempfile::tempdir().unwrap();
    let dir = node.path().join("pods/0b4f3c2e-uid");
    std::fs::create_dir_all(&dir).unwrap();
    let vmi = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "testvm", "namespace": "default", "uid": "8d1c6f0a-0000-4000-8000-000000000001"},
        "spec": {
            "domain": {
                "cpu": {"sockets": 1, "cores": 1, "threads": 1},
                "memory": {"guest": "256Mi"},
                "resources": {"requests": {"memory": "256Mi"}},
                "machine": {"type": "q35"},
                "devices": {
                    "disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}, {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}],
                    "interfaces": [{"name": "default", "masquerade": {}, "model": "virtio"}]
                }
            },
            "networks": [{"name": "default", "pod": {}}],
            "terminationGracePeriodSeconds": 30,
            "volumes": [
                {"name": "containerdisk", "containerDisk": {"image": registry.image("ferrovirt/guest:latest")}},
                {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#!/bin/sh\necho \"user-data says $((6*7))\"\n"}}
            ]
        }
    });
    let launch = LaunchSpec {
        pod_namespace: "default".into(),
        pod_name: "virt-launcher-testvm-abcde".into(),
        pod_uid: "0b4f3c2e-uid".into(),
        vmi,
        kvm: false,
        qemu_binary: "qemu-system-x86_64".into(),
        cache_dir: node.path().join("images"),
        insecure_registries: vec![],
        allowed_host_disk_dirs: vec![],
        secrets: Default::default(),
        cgroup_root: "/sys/fs/cgroup".into(),
        memory_limit_bytes: Some(512 << 20),
        cpu_limit_millis: Some(1000),
    };
    spec::write_atomic(&dir.join(spec::SPEC_FILE), &serde_json::to_vec(&launch).unwrap()).unwrap();

    let run_dir = dir.clone();
    let launcher = tokio::spawn(async move { ferrovirt_launcher::process::run(&run_dir).await });
    let running = wait_state(&dir, 60, |p| p == LauncherPhase::Running || p.is_final()).await;
    assert_eq!(running.phase, LauncherPhase::Running, "{running:?}");
    assert_eq!(running.ip.as_deref(), Some("10.0.2.15"));
    let qemu_pid = running.qemu_pid.unwrap();
    // QEMU runs in the VM's cgroup.
    let cg = std::fs::read_to_string(format!("/proc/{qemu_pid}/cgroup")).unwrap();
    assert!(cg.contains("ferrovirt/0b4f3c2e-uid"), "{cg}");

    wait_serial(&dir, 120, "ferrovirt-guest: booted").await;
    wait_serial(&dir, 60, "user-data says 42").await;

    // Pause and unpause through the control socket.
    let r = control(&dir, json!({"command": "pause"})).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(spec::read_state(&dir).unwrap().phase, LauncherPhase::Paused);
    let r = control(&dir, json!({"command": "unpause"})).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(spec::read_state(&dir).unwrap().phase, LauncherPhase::Running);

    // A graceful stop: the guest powers off on the ACPI button well within the grace period.
    let r = control(&dir, json!({"command": "stop", "graceSeconds": 60})).await;
    assert!(r.ok, "{r:?}");
    let done = wait_state(&dir, 60, |p| p.is_final()).await;
    assert_eq!((done.phase, done.reason.as_str()), (LauncherPhase::Succeeded, "StopRequested"), "{done:?}");
    launcher.await.unwrap().unwrap();
    assert!(!Path::new(&format!("/proc/{qemu_pid}")).exists(), "QEMU is gone");
    assert!(!Path::new("/sys/fs/cgroup/memory/ferrovirt/0b4f3c2e-uid").exists(), "the cgroup is removed");
    // The cached image was never written: the VM wrote to its own overlay only.
    assert!(dir.join("containerdisk.qcow2").is_file());
}

fn launch_spec(node: &Path, pod_uid: &str, vmi: serde_json::Value) -> LaunchSpec {
    LaunchSpec {
        pod_namespace: "default".into(),
        pod_name: format!("virt-launcher-{pod_uid}"),
        pod_uid: pod_uid.into(),
        vmi,
        kvm: false,
        qemu_binary: "qemu-system-x86_64".into(),
        cache_dir: node.join("images"),
        insecure_registries: vec![],
        allowed_host_disk_dirs: vec![],
        secrets: Default::default(),
        cgroup_root: "/sys/fs/cgroup".into(),
        memory_limit_bytes: Some(512 << 20),
        cpu_limit_millis: Some(1000),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_boot_vm_without_disks_boots_with_its_kernel_args_and_shows_vnc() {
    let guest = guest_disk().parent().unwrap().to_path_buf();
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    registry
        .push_kernel_boot_files("ferrovirt/guest-kernel:v1", &guest.join("vmlinuz"), &guest.join("initrd.gz"))
        .await
        .unwrap();
    let node = tempfile::tempdir().unwrap();
    let dir = node.path().join("pods/kb-uid");
    std::fs::create_dir_all(&dir).unwrap();
    let vmi = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "kbvm", "namespace": "default", "uid": "8d1c6f0a-0000-4000-8000-000000000002"},
        "spec": {
            "domain": {
                "resources": {"requests": {"memory": "128Mi"}},
                "devices": {},
                "firmware": {"kernelBoot": {
                    "kernelArgs": "console=ttyS0,115200 quiet ferrovirt.marker=launch,42",
                    "container": {
                        "image": registry.image("ferrovirt/guest-kernel:v1"),
                        "kernelPath": ferrovirt_disks::testing::KERNEL_PATH,
                        "initrdPath": ferrovirt_disks::testing::INITRD_PATH
                    }
                }}
            },
            "terminationGracePeriodSeconds": 30
        }
    });
    let launch = launch_spec(node.path(), "kb-uid", vmi);
    spec::write_atomic(&dir.join(spec::SPEC_FILE), &serde_json::to_vec(&launch).unwrap()).unwrap();
    let run_dir = dir.clone();
    let launcher = tokio::spawn(async move { ferrovirt_launcher::process::run(&run_dir).await });
    let running = wait_state(&dir, 60, |p| p == LauncherPhase::Running || p.is_final()).await;
    assert_eq!(running.phase, LauncherPhase::Running, "{running:?}");
    let qemu_pid = running.qemu_pid.unwrap();
    // QEMU reads the kernel and initrd from the node cache, read-only, and never the VM folder.
    let cmdline = std::fs::read(format!("/proc/{qemu_pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
    assert!(after("-kernel").starts_with(node.path().join("images/images/sha256").to_str().unwrap()), "{args:?}");
    assert!(after("-initrd").ends_with("/initrd"), "{args:?}");
    assert_eq!(after("-append"), "console=ttyS0,115200 quiet ferrovirt.marker=launch,42");

    let mut vnc = tokio::net::UnixStream::connect(dir.join(spec::VNC_SOCKET)).await.expect("vnc.sock");
    let mut greeting = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), vnc.read_exact(&mut greeting)).await.unwrap().unwrap();
    assert_eq!(&greeting, b"RFB 003.008\n");
    drop(vnc);

    wait_serial(&dir, 120, "ferrovirt-guest: booted").await;
    wait_serial(&dir, 30, "ferrovirt-guest: marker launch,42").await;

    let r = control(&dir, json!({"command": "stop", "graceSeconds": 60})).await;
    assert!(r.ok, "{r:?}");
    let done = wait_state(&dir, 60, |p| p.is_final()).await;
    assert_eq!((done.phase, done.reason.as_str()), (LauncherPhase::Succeeded, "StopRequested"), "{done:?}");
    launcher.await.unwrap().unwrap();
    assert!(!Path::new(&format!("/proc/{qemu_pid}")).exists(), "QEMU is gone");
    assert!(!dir.join(spec::VNC_SOCKET).exists(), "vnc.sock is removed");
}
