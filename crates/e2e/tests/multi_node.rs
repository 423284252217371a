//! Three nodes on one machine, real QEMU: a partitioned node fences its guests and they run again
//! elsewhere, a lost node's VMs run again elsewhere, and a VM never runs twice, as seen from the
//! guests' own consoles and from the QEMU processes.
//!
//! ```text
//!   ferrovirt apiserver ◀──────────────────────── controller (node grace 6 s, VMI failure +2 s)
//!        ▲   ▲   ▲                                 scheduler
//!        │   │   └──────────────────────────────── node n3 ─┐
//!        │   └──────────────────────────────────── node n2 ─┼─ each: --fence-after-seconds 4, own data dir
//!        └── relay ── [network namespace of n1] ── node n1 ─┘   (its QEMUs live in that namespace too)
//! ```
//!
//! n1 runs in its own network namespace; loopback relays inside it reach the API server and the
//! registry. Taking the namespace's loopback down cuts n1 off: its agent cannot renew its Lease,
//! kills its guests after 4 s, and the controller fails its VMIs only after max(6 + 2, 4 + 10) s,
//! so the replacement boots after the original is dead. Each guest prints a
//! heartbeat line every second; the intervals in which two consoles of one VM were written never
//! overlap.

mod real_vm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_e2e::component::Component;
use ferrovirt_e2e::netns::NetNs;
use ferrovirt_e2e::ApiServerProcess;
use ferrovirt_launcher::spec;

use real_vm::{push_guest, sweep_pod_processes};

const NODES: [&str; 3] = ["n1", "n2", "n3"];

struct Cluster {
    nodes: BTreeMap<&'static str, Component>,
    /// n1's network namespace (dropped after the components).
    n1_net: Option<NetNs>,
    controller: Component,
    scheduler: Component,
    apiserver: ApiServerProcess,
    root: PathBuf,
}

impl Cluster {
    fn pods_dir(&self, node: &str) -> PathBuf {
        self.root.join(node).join("pods")
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for (name, c) in &self.nodes {
            text.push_str(&format!("--- node {name} (last 25 lines) ---\n{}\n", c.log_tail(25)));
        }
        text.push_str(&format!("--- controller (last 40 lines) ---\n{}\n", self.controller.log_tail(40)));
        text.push_str(&format!("--- scheduler (last 15 lines) ---\n{}\n", self.scheduler.log_tail(15)));
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.nodes.values_mut() {
            c.kill9();
        }
        self.controller.kill9();
        self.scheduler.kill9();
        for node in NODES {
            sweep_pod_processes(&self.pods_dir(node));
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.apiserver.kill9();
        self.n1_net.take();
    }
}

/// Every pod folder of every node whose launcher Pod belongs to VM `vm`.
fn folders_of(cluster: &Cluster, vm: &str) -> Vec<PathBuf> {
    let prefix = format!("\"podName\":\"virt-launcher-{vm}-");
    let mut out = Vec::new();
    for node in NODES {
        for e in std::fs::read_dir(cluster.pods_dir(node)).into_iter().flatten().flatten() {
            let spec = std::fs::read_to_string(e.path().join(spec::SPEC_FILE)).unwrap_or_default();
            if spec.replace(' ', "").contains(&prefix) {
                out.push(e.path());
            }
        }
    }
    out
}

/// PIDs of the QEMU processes that run VM `vm` (whatever their node), from /proc.
fn qemus_of(vm: &str) -> Vec<u32> {
    let needle = format!("guest=default/{vm}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ");
            cmd.contains("qemu-system") && cmd.contains(&needle)
        })
        .collect()
}

/// Watches the consoles and processes of some VMs: when each serial log grew (first and last time
/// seen), and the most QEMUs seen at once per VM.
#[derive(Default)]
struct Witness {
    /// (vm, folder) -> (size, first growth, last growth)
    logs: BTreeMap<(String, PathBuf), (u64, Option<Instant>, Option<Instant>)>,
    max_qemus: BTreeMap<String, usize>,
}

impl Witness {
    fn observe(&mut self, cluster: &Cluster, vms: &[&str]) {
        for vm in vms {
            let n = qemus_of(vm).len();
            let m = self.max_qemus.entry(vm.to_string()).or_default();
            *m = (*m).max(n);
            for dir in folders_of(cluster, vm) {
                let size = std::fs::metadata(dir.join(spec::SERIAL_LOG)).map(|m| m.len()).unwrap_or(0);
                let e = self.logs.entry((vm.to_string(), dir)).or_insert((0, None, None));
                if size > e.0 {
                    let now = Instant::now();
                    e.0 = size;
                    e.1.get_or_insert(now);
                    e.2 = Some(now);
                }
            }
        }
    }

    /// The console write intervals of `vm`, in order of their start.
    fn intervals(&self, vm: &str) -> Vec<(PathBuf, Instant, Instant)> {
        let mut v: Vec<_> = self
            .logs
            .iter()
            .filter(|((name, _), _)| name == vm)
            .filter_map(|((_, dir), (_, first, last))| Some((dir.clone(), (*first)?, (*last)?)))
            .collect();
        v.sort_by_key(|x| x.1);
        v
    }

    /// No two consoles of `vm` were written during overlapping intervals, and never two QEMUs.
    fn assert_never_twice(&self, vm: &str) {
        assert_eq!(self.max_qemus.get(vm).copied().unwrap_or(0), 1, "at most (and at some point) one QEMU of {vm}");
        let iv = self.intervals(vm);
        for w in iv.windows(2) {
            assert!(
                w[0].2 < w[1].1,
                "two consoles of {vm} were written at once: {} until {:?}, {} from {:?}",
                w[0].0.display(),
                w[0].2,
                w[1].0.display(),
                w[1].1
            );
        }
    }
}

fn heartbeat_vm(name: &str, image: &str) -> VirtualMachine {
    let user_data = format!("#!/bin/sh\n(while :; do echo \"hb {name} $(cut -d' ' -f1 /proc/uptime)\"; sleep 1; done) &\necho \"{name} is up $((6*7))\"\n");
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "domain": {
                "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}, {"name": "cidata", "disk": {"bus": "virtio"}}]},
                "resources": {"requests": {"memory": "128Mi"}}
            },
            "terminationGracePeriodSeconds": 5,
            "volumes": [
                {"name": "root", "containerDisk": {"image": image}},
                {"name": "cidata", "cloudInitNoCloud": {"userData": user_data}}
            ]
        }}}
    }))
    .unwrap()
}

/// Where VM `vm` runs once its VMI (other than `not_uid`) is Running and its console shows the
/// user-data line: (VMI uid, node). Observes the witness meanwhile.
async fn running_on(
    cluster: &Cluster,
    witness: &Arc<Mutex<Witness>>,
    vmis: &Api<VirtualMachineInstance>,
    vm: &str,
    not_uid: Option<&str>,
    secs: u64,
) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        witness.lock().unwrap().observe(cluster, &["vm-a", "vm-b"]);
        if let Ok(Some(vmi)) = vmis.get_opt(vm).await {
            let status = vmi.status.clone().unwrap_or_default();
            let uid = vmi.metadata.uid.clone().unwrap_or_default();
            let running = status.phase.as_ref().map(|p| format!("{p:?}")).as_deref() == Some("Running");
            if running && Some(uid.as_str()) != not_uid {
                if let (Some(node), Some(pod_uid)) = (status.node_name.clone(), status.active_pods.and_then(|p| p.keys().next().cloned())) {
                    let log = std::fs::read_to_string(cluster.pods_dir(&node).join(&pod_uid).join(spec::SERIAL_LOG)).unwrap_or_default();
                    if log.contains(&format!("{vm} is up 42")) && log.contains(&format!("hb {vm} ")) {
                        return (uid, node);
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {vm} to run (not {not_uid:?})\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn set_unschedulable(nodes: &Api<Node>, node: &str, on: bool) {
    nodes.patch(node, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": on}}))).await.unwrap();
}

/// Observe for `secs` seconds.
async fn watch_for(cluster: &Cluster, witness: &Arc<Mutex<Witness>>, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        witness.lock().unwrap().observe(cluster, &["vm-a", "vm-b"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_and_lost_nodes_never_run_a_vm_twice() {
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    let image = push_guest(&registry).await;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let apiserver = ApiServerProcess::start(d.join("cp"), None).unwrap();
    let kubeconfig = apiserver.kubeconfig().to_str().unwrap().to_string();
    let n1_net = NetNs::create("n1").unwrap();
    n1_net.forward_loopback_port(apiserver.port()).unwrap();
    n1_net.forward_loopback_port(registry.port()).unwrap();
    let mut nodes = BTreeMap::new();
    for name in NODES {
        let data = d.join(name);
        let args = [
            "node", "--name", name, "--kubeconfig", &kubeconfig, "--data-dir", data.to_str().unwrap(), "--kvm", "off",
            "--fence-after-seconds", "4",
        ];
        let prefix = if name == "n1" { n1_net.exec_prefix() } else { Vec::new() };
        nodes.insert(name, Component::start_under(prefix, &args, &d.join(format!("{name}.log"))));
    }
    let cluster = Cluster {
        nodes,
        n1_net: Some(n1_net),
        controller: Component::start(
            &["controller", "--kubeconfig", &kubeconfig, "--node-grace-seconds", "6", "--vmi-failure-grace-seconds", "2"],
            &d.join("controller.log"),
        ),
        scheduler: Component::start(&["scheduler", "--kubeconfig", &kubeconfig], &d.join("scheduler.log")),
        apiserver,
        root: d.to_path_buf(),
    };
    let client = cluster.apiserver.client().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let node_api: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let witness = Arc::new(Mutex::new(Witness::default()));

    // Three Ready nodes; both VMs placed on n1 (n2 and n3 cordoned while they are placed).
    let deadline = Instant::now() + Duration::from_secs(60);
    while node_api.list(&Default::default()).await.unwrap().items.len() < 3 {
        assert!(Instant::now() < deadline, "three nodes to register\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    set_unschedulable(&node_api, "n2", true).await;
    set_unschedulable(&node_api, "n3", true).await;
    for vm in ["vm-a", "vm-b"] {
        vms.create(&PostParams::default(), &heartbeat_vm(vm, &image)).await.unwrap();
    }
    let (a1, node_a) = running_on(&cluster, &witness, &vmis, "vm-a", None, 300).await;
    let (b1, node_b) = running_on(&cluster, &witness, &vmis, "vm-b", None, 300).await;
    assert_eq!((node_a.as_str(), node_b.as_str()), ("n1", "n1"));
    set_unschedulable(&node_api, "n2", false).await;
    set_unschedulable(&node_api, "n3", false).await;
    watch_for(&cluster, &witness, 3).await;

    // Partition n1 (its network namespace loses its loopback): it fences its guests; both VMs run
    // again on n2/n3, never twice at once.
    let cut_at = Instant::now();
    cluster.n1_net.as_ref().unwrap().cut().unwrap();
    let (a2, node_a) = running_on(&cluster, &witness, &vmis, "vm-a", Some(&a1), 300).await;
    let (_b2, node_b) = running_on(&cluster, &witness, &vmis, "vm-b", Some(&b1), 300).await;
    assert_ne!(node_a, "n1");
    assert_ne!(node_b, "n1");
    eprintln!("after the partition of n1: vm-a on {node_a}, vm-b on {node_b}, {:.1}s", cut_at.elapsed().as_secs_f64());
    assert!(folders_of(&cluster, "vm-a").iter().all(|dir| !dir.starts_with(cluster.pods_dir("n1")) || spec::read_state(dir).and_then(|s| s.qemu_pid).is_none_or(|p| !Path::new(&format!("/proc/{p}")).exists())));

    // Heal: n1 comes back, cleans up its folders and resurrects nothing.
    cluster.n1_net.as_ref().unwrap().heal().unwrap();
    let healed = Instant::now();
    loop {
        witness.lock().unwrap().observe(&cluster, &["vm-a", "vm-b"]);
        let n1_pods = std::fs::read_dir(cluster.pods_dir("n1")).map(|d| d.count()).unwrap_or(0);
        if n1_pods == 0 {
            break;
        }
        assert!(healed.elapsed() < Duration::from_secs(60), "n1 to clean up its pod folders after healing\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch_for(&cluster, &witness, 5).await;
    assert_eq!(vmis.get("vm-a").await.unwrap().metadata.uid.as_deref(), Some(a2.as_str()), "vm-a stayed where it was");

    // Lose the node that runs vm-a: kill -9 its agent and its launchers and QEMUs.
    let lost = node_a.clone();
    let mut cluster = cluster;
    cluster.nodes.get_mut(lost.as_str()).unwrap().kill9();
    sweep_pod_processes(&cluster.pods_dir(&lost));
    let (_a3, node_a) = running_on(&cluster, &witness, &vmis, "vm-a", Some(&a2), 300).await;
    assert_ne!(node_a, lost);
    eprintln!("after the loss of {lost}: vm-a on {node_a}");
    watch_for(&cluster, &witness, 3).await;

    let w = witness.lock().unwrap();
    for vm in ["vm-a", "vm-b"] {
        w.assert_never_twice(vm);
        eprintln!("{vm}: consoles {:?}", w.intervals(vm).iter().map(|(d, ..)| d.display().to_string()).collect::<Vec<_>>());
    }
    assert_eq!(w.intervals("vm-a").len(), 3, "vm-a ran on three nodes one after the other");
    let launcher_pods = pods.list(&Default::default()).await.unwrap().items.len();
    assert_eq!(launcher_pods, 2, "one launcher pod per VM (the lost node's pods were deleted)");
}
