//! A node agent that dies and comes back never touches a healthy guest.
//!
//! The components run as separate processes, as on a real cluster:
//!
//! ```text
//!   ferrovirt apiserver --data-dir D/cp        ferrovirt controller --kubeconfig K
//!   ferrovirt scheduler --kubeconfig K         ferrovirt node --name node1 --kubeconfig K --data-dir D/node1
//!                                                   └─(detached) launcher ── QEMU (the guest)
//! ```
//!
//! A VM (runStrategy Always) boots; the test reads the guest's uptime on its serial console, then
//! kills the node agent with SIGKILL. The launcher and QEMU run on and the console still answers.
//! A new node agent on the same folder adopts the launcher: the VMI keeps its uid and stays Running,
//! no second launcher or QEMU appears, and the guest's uptime keeps growing (it never rebooted).
//! Deleting the VM then removes everything: VMI, Pod, QEMU, launcher, folder.

mod real_vm;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_e2e::component::Component;
use ferrovirt_e2e::ApiServerProcess;

use real_vm::*;

const NODE: &str = "node1";
const VM: &str = "survivor";

/// Everything the test started; on drop the components are killed (node agent first, API server
/// last), then every launcher and QEMU left in the node's pod folders.
struct Cluster {
    node: Component,
    controller: Component,
    scheduler: Component,
    apiserver: ApiServerProcess,
    pods_dir: PathBuf,
    logs_dir: PathBuf,
}

impl Cluster {
    fn logs(&self) -> String {
        let mut text = String::new();
        for (what, file) in [("node agent", "node1.log"), ("controller", "controller.log"), ("scheduler", "scheduler.log")] {
            text.push_str(&format!("--- {what} log (last 40 lines) ---\n{}\n", file_tail(&self.logs_dir.join(file), 40)));
        }
        text.push_str(&format!("--- API server log (last 20 lines) ---\n{}\n", self.apiserver.log_tail(20)));
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.node.kill9();
        self.controller.kill9();
        self.scheduler.kill9();
        // A node agent leaves its guests running when it stops: nothing may outlive the test.
        sweep_pod_processes(&self.pods_dir);
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.apiserver.kill9();
    }
}

/// The lease renewal time of `node`, if it has a lease.
async fn lease_renewed(leases: &Api<Lease>, node: &str) -> Option<Timestamp> {
    leases.get_opt(node).await.ok()??.spec?.renew_time.map(|t| t.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_agent_adopts_its_running_guest() {
    let started = Instant::now();
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    let image = push_guest(&registry).await;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let apiserver = ApiServerProcess::start(d.join("cp"), None).unwrap();
    let kubeconfig = apiserver.kubeconfig().to_str().unwrap().to_string();
    let node_dir = d.join("node1");
    let node_args = ["node", "--name", NODE, "--kubeconfig", &kubeconfig, "--data-dir", node_dir.to_str().unwrap()];
    let cluster = Cluster {
        controller: Component::start(&["controller", "--kubeconfig", &kubeconfig], &d.join("controller.log")),
        scheduler: Component::start(&["scheduler", "--kubeconfig", &kubeconfig], &d.join("scheduler.log")),
        node: Component::start(&node_args, &d.join("node1.log")),
        apiserver,
        pods_dir: node_dir.join("pods"),
        logs_dir: d.to_path_buf(),
    };
    let logs = || cluster.logs();
    let client = cluster.apiserver.client().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let history = VmiHistory::start(vmis.clone());

    // A guest boots.
    vms.create(&PostParams::default(), &vm_manifest(VM, &image, "Always")).await.unwrap();
    let t = Instant::now();
    let (uid, dir) = running_vmi(&vmis, &pods, &cluster.pods_dir, NODE, VM, None, &logs).await;
    console_shows(&dir, BOOT_MARKER, BOOT_SECS, &logs).await;
    eprintln!("guest booted after {:.1}s", t.elapsed().as_secs_f64());
    let uptime_before = guest_uptime(&dir, 120).await.unwrap();
    let qemu = qemu_pid(&dir);
    assert!(runs_in(qemu, &dir), "pid {qemu} from state.json is this VM's QEMU: {:?}", cmdline(qemu));
    let launcher = launcher_pid(&dir).expect("launcher.pid");
    assert!(runs_in(launcher, &dir), "pid {launcher} from launcher.pid is this VM's launcher: {:?}", cmdline(launcher));
    let ours: BTreeSet<u32> = [launcher, qemu].into();
    assert_eq!(processes_of(&dir).into_iter().map(|p| p.0).collect::<BTreeSet<_>>(), ours, "one launcher, one QEMU");
    eprintln!("guest uptime {uptime_before}s; launcher {launcher}, QEMU {qemu}");

    // The node agent dies (SIGKILL: no clean-up of any kind); the guest runs on.
    let mut cluster = cluster;
    let node_pid = cluster.node.pid();
    cluster.node.kill9();
    assert!(!alive(node_pid), "the node agent {node_pid} is dead");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(alive(qemu), "QEMU {qemu} runs on without its node agent");
    assert!(alive(launcher), "the launcher {launcher} runs on without its node agent");
    assert_eq!(qemu_pid(&dir), qemu);
    let uptime_orphaned = guest_uptime(&dir, 60).await.unwrap();
    assert!(uptime_orphaned > uptime_before, "the guest answers and runs on: uptime {uptime_orphaned} after {uptime_before}");
    eprintln!("without a node agent: guest uptime {uptime_orphaned}s");

    // A new node agent on the same folder adopts the launcher.
    let restarted_at = Timestamp::now();
    cluster.node.spawn();
    let logs = || cluster.logs();
    eventually(60, "the restarted node agent to renew its Lease", &logs, || async {
        lease_renewed(&leases, NODE).await.filter(|t| *t > restarted_at).map(|_| ())
    })
    .await;
    eprintln!("node agent back after {:.1}s", Timestamp::now().duration_since(restarted_at).as_secs_f64());
    // Watch for a while (longer than the node agent's status refresh): nothing changes.
    let watch_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < watch_until {
        assert!(alive(cluster.node.pid()), "the restarted node agent runs\n{}", logs());
        let vmi = vmis.get(VM).await.unwrap();
        assert_eq!(vmi.metadata.uid.as_deref(), Some(uid.as_str()), "the same VMI\n{}", logs());
        assert_eq!(phase_of(&vmi), "Running", "the VMI stays Running\n{}", logs());
        assert_eq!(qemu_pid(&dir), qemu, "the same QEMU in state.json");
        assert_eq!(launcher_pid(&dir), Some(launcher), "the same launcher in launcher.pid");
        assert_eq!(pod_folders(&cluster.pods_dir), BTreeSet::from([dir.clone()]), "one pod folder");
        let running: BTreeSet<u32> = processes_of(&dir).into_iter().map(|p| p.0).collect();
        assert_eq!(running, ours, "no second launcher or QEMU: {:?}", processes_of(&dir));
        let launcher_pods = pods.list(&ListParams::default().labels("kubevirt.io=virt-launcher")).await.unwrap();
        assert_eq!(launcher_pods.items.len(), 1, "one launcher Pod");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let uptime_after = guest_uptime(&dir, 60).await.unwrap();
    assert!(
        uptime_after > uptime_orphaned,
        "the guest never rebooted: uptime {uptime_after}s after {uptime_orphaned}s (and {uptime_before}s before the node agent died)"
    );
    assert_eq!(history.uids(VM), vec![uid.clone()], "one VMI all along");
    let phases = history.phases(&uid);
    assert_eq!(phases.last().map(String::as_str), Some("Running"), "VMI phases {phases:?}");
    assert!(
        !phases.iter().any(|p| ["Succeeded", "Failed", "Unknown"].contains(&p.as_str())),
        "the VMI never left Running: {phases:?}"
    );
    eprintln!("after the restart: same VMI, same QEMU, guest uptime {uptime_after}s");

    // Delete: everything goes.
    vms.delete(VM, &DeleteParams::default()).await.unwrap();
    eventually(120, "VMI, Pod, QEMU, launcher and folder to go after the VM's delete", &logs, || async {
        let vmi_gone = vmis.get_opt(VM).await.ok()?.is_none();
        let pods_gone = pods.list(&ListParams::default().labels("kubevirt.io=virt-launcher")).await.ok()?.items.is_empty();
        (vmi_gone && pods_gone && !alive(qemu) && !alive(launcher) && !dir.exists()).then_some(())
    })
    .await;
    assert!(pod_folders(&cluster.pods_dir).is_empty(), "no pod folder left");
    assert!(processes_of(&dir).is_empty());

    drop(history);
    drop(cluster);
    let left = processes_of(d);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    eprintln!("node restart: {:.1}s in all", started.elapsed().as_secs_f64());
}
