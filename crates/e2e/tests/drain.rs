//! `kubectl drain` (Debian's 1.20 and the kubectl on PATH) and `fvctl drain` with real QEMU on
//! two nodes: each evicts the launcher pod of a VM with runStrategy Always through the Eviction
//! subresource; the guest is powered off gracefully (its console says the ACPI power button was
//! pressed), the VM runs again on the other node (its console shows the user-data line), the
//! drained node stays cordoned until `uncordon`, and never do two QEMUs of the VM run at once.
//!
//! ```text
//!   VM on n1 ──kubectl 1.20 drain n1──▶ on n2 ──kubectl (PATH) drain n2──▶ on n1 ──fvctl drain n1──▶ on n2
//!            uncordon n1 (kubectl 1.20)          uncordon n2 (kubectl)             uncordon n1 (fvctl)
//! ```

mod cluster;
mod real_vm;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokio::io::AsyncReadExt;

use cluster::Cluster;
use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_e2e::{fvctl_binary, kubectl_1_20, kubectl_on_path, Kubectl};
use ferrovirt_launcher::spec;
use k8s_openapi::api::core::v1::Pod;
use real_vm::{console_connect, phase_of, push_guest, BOOT_SECS};

const VM: &str = "vm-d";

/// The VM: runStrategy Always, the test guest, a heartbeat on its console and a line that says
/// cloud-init ran.
fn vm(image: &str) -> VirtualMachine {
    let user_data = format!("#!/bin/sh\n(while :; do echo \"hb {VM} $(cut -d' ' -f1 /proc/uptime)\"; sleep 1; done) &\necho \"{VM} is up $((6*7))\"\n");
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": VM},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "domain": {
                "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}, {"name": "cidata", "disk": {"bus": "virtio"}}]},
                "resources": {"requests": {"memory": "128Mi"}}
            },
            "terminationGracePeriodSeconds": 30,
            "volumes": [
                {"name": "root", "containerDisk": {"image": image}},
                {"name": "cidata", "cloudInitNoCloud": {"userData": user_data}}
            ]
        }}}
    }))
    .unwrap()
}

/// Where the VM runs once its VMI (not `not_uid`) is Running and its console shows the user-data
/// line: (VMI uid, node, pod folder).
async fn running(cluster: &Cluster, client: &kube::Client, not_uid: Option<&str>) -> (String, String, PathBuf) {
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(BOOT_SECS);
    loop {
        if let Ok(Some(vmi)) = vmis.get_opt(VM).await {
            let uid = vmi.metadata.uid.clone().unwrap_or_default();
            let node = vmi.status.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            if phase_of(&vmi) == "Running" && Some(uid.as_str()) != not_uid {
                let selector = format!("kubevirt.io/created-by={uid}");
                let pod = pods.list(&ListParams::default().labels(&selector)).await.ok().and_then(|l| l.items.into_iter().next());
                if let Some(pod_uid) = pod.and_then(|p| p.metadata.uid) {
                    let dir = cluster.pods_dir(&node).join(pod_uid);
                    let log = std::fs::read_to_string(dir.join(spec::SERIAL_LOG)).unwrap_or_default();
                    if log.contains(&format!("{VM} is up 42")) {
                        return (uid, node, dir);
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {VM} to run (not {not_uid:?})\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Everything the guest in `dir` prints on its console from now until QEMU ends.
async fn console_to_end(dir: PathBuf) -> String {
    let mut console = console_connect(&dir).await.expect("the console of the running guest");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), console.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// How many QEMUs of the VM ran at once, at most, while the sampler ran.
struct Sampler {
    max: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start() -> Sampler {
        let (max, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let task = {
            let (max, stop) = (max.clone(), stop.clone());
            tokio::spawn(async move {
                let needle = format!("guest=default/{VM}");
                while !stop.load(Ordering::SeqCst) {
                    let n = std::fs::read_dir("/proc")
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                        .filter(|pid| {
                            let cmd = real_vm::cmdline(*pid);
                            cmd.contains("qemu-system") && cmd.contains(&needle) && real_vm::alive(*pid)
                        })
                        .count();
                    max.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Sampler { max, stop, task }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.max.load(Ordering::SeqCst)
    }
}

async fn unschedulable(client: &kube::Client, node: &str) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.get(node).await.unwrap().spec.and_then(|s| s.unschedulable).unwrap_or(false)
}

/// One drain: the VM runs on `from`; `drain` (run on a blocking thread) must move it to `to`,
/// gracefully. Returns what `drain` printed.
async fn drain_moves_the_vm(
    cluster: &Cluster,
    client: &kube::Client,
    from: &str,
    to: &str,
    what: &str,
    drain: impl FnOnce() -> String + Send + 'static,
) -> String {
    let (old, node, dir) = running(cluster, client, None).await;
    assert_eq!(node, from, "{VM} runs on {from} before the drain");
    let console = tokio::spawn(console_to_end(dir));
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(drain).await.unwrap();
    let drained_after = started.elapsed();
    let said = tokio::time::timeout(Duration::from_secs(60), console).await.expect("the old guest's QEMU ended").unwrap();
    assert!(said.contains("ferrovirt-guest: ACPI power button pressed"), "{what}: the guest was powered off gracefully; its console said:\n{said}");
    let (_new, node, _) = running(cluster, client, Some(&old)).await;
    assert_eq!(node, to, "{what}: {VM} runs again on {to}");
    assert!(unschedulable(client, from).await, "{what}: {from} stays cordoned");
    eprintln!(
        "{what}: drain returned after {:.1}s; {VM} ran again on {to} (console line) {:.1}s after the drain started; it printed:\n  {}",
        drained_after.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        out.trim_end().replace('\n', "\n  ")
    );
    out
}

fn fvctl(kubeconfig: &std::path::Path, home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(fvctl_binary().expect("the fvctl binary"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("fvctl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_fvctl_drain_move_a_vm_to_another_node() {
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    let image = push_guest(&registry).await;
    let fvctl_bin = fvctl_binary().expect("fvctl builds");
    let cluster = Cluster::start(&["n1", "n2"], &[], &[]);
    let client = cluster.client().await;
    cluster.wait_ready(&client).await;
    let sampler = Sampler::start();

    // The VM starts on n1 (n2 cordoned meanwhile).
    cluster.set_unschedulable(&client, "n2", true).await;
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    vms.create(&PostParams::default(), &vm(&image)).await.unwrap();
    running(&cluster, &client, None).await;
    cluster.set_unschedulable(&client, "n2", false).await;

    // kubectl 1.20: drain n1 (policy group in /apis, Eviction posted to pods/NAME/eviction).
    let k20 = Arc::new(Kubectl::new(kubectl_1_20().unwrap_or_else(|e| panic!("{e:#}")), cluster.kubeconfig()).unwrap());
    let k = k20.clone();
    let out = drain_moves_the_vm(&cluster, &client, "n1", "n2", "kubectl 1.20 drain n1", move || {
        k.ok(&["drain", "n1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout", "50s"])
    })
    .await;
    assert!(out.contains("node/n1 cordoned") && out.contains(&format!("evicting pod default/virt-launcher-{VM}-")), "{out}");
    assert!(out.contains("evicted"), "{out}");
    assert!(k20.ok(&["uncordon", "n1"]).contains("node/n1 uncordoned"));
    assert!(!unschedulable(&client, "n1").await);

    // The kubectl on PATH: drain n2 (policy/v1 from the pods/eviction entry of /api/v1).
    match kubectl_on_path() {
        Some(bin) => {
            let k = Arc::new(Kubectl::new(bin, cluster.kubeconfig()).unwrap());
            let kk = k.clone();
            let out = drain_moves_the_vm(&cluster, &client, "n2", "n1", "kubectl (PATH) drain n2", move || {
                kk.ok(&["drain", "n2", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout", "50s"])
            })
            .await;
            assert!(out.contains(&format!("evicting pod default/virt-launcher-{VM}-")) && out.contains("node/n2 drained"), "{out}");
            assert!(k.ok(&["uncordon", "n2"]).contains("node/n2 uncordoned"));
        }
        None => {
            eprintln!("no kubectl on PATH: its drain is skipped; kubectl 1.20 drains n2 instead");
            let k = k20.clone();
            drain_moves_the_vm(&cluster, &client, "n2", "n1", "kubectl 1.20 drain n2", move || {
                k.ok(&["drain", "n2", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout", "50s"])
            })
            .await;
            k20.ok(&["uncordon", "n2"]);
        }
    }

    // fvctl drain n1, then fvctl uncordon n1.
    let home = tempfile::tempdir().unwrap();
    let (kubeconfig, home_path) = (cluster.kubeconfig().to_path_buf(), home.path().to_path_buf());
    let out = drain_moves_the_vm(&cluster, &client, "n1", "n2", "fvctl drain n1", move || {
        let o = fvctl(&kubeconfig, &home_path, &["drain", "n1", "--timeout", "120s"]);
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{} drain n1 failed ({}):\n{text}", fvctl_bin.display(), o.status);
        text
    })
    .await;
    assert!(out.starts_with("node/n1 cordoned\nevicting pod default/virt-launcher-"), "{out}");
    assert!(out.contains(&format!("(VMI {VM}) evicted\n")) && out.contains("node/n1 drained"), "{out}");
    let o = fvctl(cluster.kubeconfig(), home.path(), &["uncordon", "n1"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "node/n1 uncordoned\n");
    assert!(!unschedulable(&client, "n1").await);

    assert_eq!(sampler.finish().await, 1, "never two QEMUs of {VM} at once (and one at some point)");
    assert_eq!(cluster.qemus(None).len(), 1, "one QEMU left in the cluster");
}
