//! The node agent against a real in-process API server, with a FakeLauncher.
//!
//! FakeLauncher (written by [`fake_launcher`]) is a stand-in for `ferrovirt launcher`, used only by
//! these node-agent tests so that they need neither QEMU nor the launcher binary: a shell script
//! that follows the folder contract of `ferrovirt_launcher::spec` just far enough (launcher.pid, a
//! Running state.json with the guest's address, and on SIGTERM a Succeeded state.json and exit).
//! It serves no control.sock, so stopping it exercises the agent's SIGTERM fallback. Running real
//! guests under QEMU is the end-to-end tests' job.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ferrovirt_api::kubevirt::{ConditionStatus, VirtualMachineInstance, VirtualMachineInstancePhase as Phase};
use ferrovirt_launcher::spec::{read_state, LaunchSpec, LauncherPhase, PID_FILE, SPEC_FILE};
use ferrovirt_node::local::{kill_launcher, launcher_of_dir_alive, launcher_pid};
use ferrovirt_node::{LauncherCommand, NodeConfig};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

const NODE: &str = "n1";
const USERDATA: &str = "#cloud-config\npassword: fake\n";

/// See the module documentation.
const FAKE_LAUNCHER: &str = r#"#!/bin/sh
# FakeLauncher: a stand-in for `ferrovirt launcher` used ONLY by the node agent's tests
# (crates/node/tests/pods.rs). Usage: fake-launcher launcher --dir <pod folder>
set -u
dir="$3"
write_state() {
  printf '{"phase":"%s","reason":"%s","message":"%s","qemuPid":null,"kvm":false,"since":"%s","mac":"52:54:00:12:34:56","ip":"10.0.2.15"}' \
    "$1" "$2" "$3" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$dir/state.fake-tmp"
  mv "$dir/state.fake-tmp" "$dir/state.json"
}
echo $$ >> "$dir/starts"
echo $$ > "$dir/launcher.pid"
sleeper=""
trap 'write_state Succeeded StopRequested "stopped by SIGTERM"; [ -n "$sleeper" ] && kill $sleeper 2>/dev/null; exit 0' TERM
write_state Running Booted "the fake guest runs"
# Ends by itself after five minutes, so that a failed test leaves nothing behind for long.
i=0
while [ $i -lt 600 ]; do sleep 0.5 & sleeper=$!; wait $sleeper; i=$((i+1)); done
"#;

fn fake_launcher(dir: &Path) -> LauncherCommand {
    let path = dir.join("fake-launcher");
    std::fs::write(&path, FAKE_LAUNCHER).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    LauncherCommand { program: path, args: vec!["launcher".into()] }
}

/// Kills every launcher still running in the pod folders when a test ends, however it ends.
struct KillLeftovers(PathBuf);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if let Some(pid) = launcher_pid(&entry.path()) {
                kill_launcher(&entry.path(), pid);
            }
        }
    }
}

struct Harness {
    // Dropped first, while the folders still exist.
    _leftovers: KillLeftovers,
    server: ferrovirt_apiserver::Running,
    client: kube::Client,
    tmp: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
        let tmp = tempfile::tempdir().unwrap();
        let server = ferrovirt_apiserver::start(ferrovirt_apiserver::Config::new(tmp.path().join("api"), "127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let kc = Kubeconfig::read_from(&server.kubeconfig).unwrap();
        let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap()).unwrap();
        let leftovers = KillLeftovers(tmp.path().join("node/pods"));
        Harness { _leftovers: leftovers, server, client, tmp }
    }

    fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("node")
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.data_dir().join("pods").join(uid)
    }

    fn agent(&self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let mut config = NodeConfig::new(NODE, self.client.clone(), self.data_dir(), fake_launcher(self.tmp.path()));
        config.kvm = Some(false);
        config.cgroup_root = self.tmp.path().join("cgroup");
        config.insecure_registries = vec!["127.0.0.1:5000".into()];
        config.poll_interval = Duration::from_millis(200);
        tokio::spawn(ferrovirt_node::run(config))
    }

    /// A VMI with cloud-init user data in a Secret, and its launcher Pod bound to this node.
    async fn vm_with_pod(&self, name: &str) -> (VirtualMachineInstance, Pod) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), "default");
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-userdata")},
            "data": {"userdata": base64::engine::general_purpose::STANDARD.encode(USERDATA)},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
        let vmis: Api<VirtualMachineInstance> = Api::namespaced(self.client.clone(), "default");
        let vmi: VirtualMachineInstance = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name},
            "spec": {
                "terminationGracePeriodSeconds": 5,
                "domain": {
                    "devices": {
                        "disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}, {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}],
                        "interfaces": [{"name": "default", "masquerade": {}}],
                    },
                    "resources": {"requests": {"memory": "128Mi"}},
                },
                "networks": [{"name": "default", "pod": {}}],
                "volumes": [
                    {"name": "containerdisk", "containerDisk": {"image": "127.0.0.1:5000/guest:latest"}},
                    {"name": "cloudinitdisk", "cloudInitNoCloud": {"secretRef": {"name": format!("{name}-userdata")}}},
                ],
            },
        }))
        .unwrap();
        let vmi = vmis.create(&PostParams::default(), &vmi).await.unwrap();
        let uid = vmi.metadata.uid.clone().unwrap();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": format!("virt-launcher-{name}-abcde"),
                "labels": {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": uid, "vm.kubevirt.io/name": name},
                "annotations": {"kubevirt.io/domain": name},
                "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": name, "uid": uid,
                                     "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {
                "nodeName": NODE,
                "schedulerName": "ferrovirt-scheduler",
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "compute", "image": "ferrovirt/launcher:test", "resources": {
                    "requests": {"memory": "300Mi", "cpu": "100m"}, "limits": {"memory": "300Mi", "cpu": "1"}}}],
            },
        }))
        .unwrap();
        let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
        (vmi, pod)
    }
}

async fn eventually<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {seconds}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_agent(agent: tokio::task::JoinHandle<anyhow::Result<()>>) {
    agent.abort();
    let ended = agent.await;
    assert!(ended.as_ref().is_err_and(|e| e.is_cancelled()), "the agent ended by itself: {ended:?}");
}

fn vmi_is_running_here(vmi: &VirtualMachineInstance) -> bool {
    let Some(s) = &vmi.status else { return false };
    s.phase == Some(Phase::Running)
        && s.node_name.as_deref() == Some(NODE)
        && s.condition("Ready").is_some_and(|c| c.status == ConditionStatus::True)
        && s.condition("SoftwareEmulation")
            .is_some_and(|c| c.status == ConditionStatus::True && c.reason.as_deref() == Some("SoftwareEmulation"))
        && s.interfaces.as_deref().is_some_and(|i| {
            i.first().is_some_and(|i| i.name.as_deref() == Some("default") && i.ip_address.as_deref() == Some("10.0.2.15"))
        })
}

/// The session id of `pid` (`/proc/<pid>/stat`: pid (comm) state ppid pgrp session ...).
fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(3)?.parse().ok()
}

fn starts(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("starts")).map(|s| s.lines().count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_adopts_and_stops_a_launcher() {
    let h = Harness::start().await;
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let (vmi, pod) = h.vm_with_pod("vm1").await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let dir = h.pod_dir(pod.metadata.uid.as_deref().unwrap());
    let agent = h.agent();

    // Started: the Pod runs, the VMI runs here, under TCG, with the guest's address.
    eventually(20, "the pod to run", || async {
        pods.get(&pod_name).await.unwrap().status.and_then(|s| s.phase).as_deref() == Some("Running")
    })
    .await;
    eventually(10, "the VMI to run on n1 with SoftwareEmulation", || async { vmi_is_running_here(&vmis.get("vm1").await.unwrap()) }).await;
    let node: Node = Api::all(h.client.clone()).get(NODE).await.unwrap();
    assert_eq!(node.metadata.labels.unwrap()["ferrovirt.io/accel"], "tcg");
    let running = pods.get(&pod_name).await.unwrap().status.unwrap();
    let compute = &running.container_statuses.unwrap()[0];
    assert!(compute.name == "compute" && compute.ready && compute.state.as_ref().unwrap().running.is_some());
    assert!(running.conditions.unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let vmi_now = vmis.get("vm1").await.unwrap();
    let times = vmi_now.status.unwrap().phase_transition_timestamps.unwrap();
    assert_eq!(times.iter().filter(|t| t.phase == Phase::Running).count(), 1);

    // The spec handed to the launcher: the VMI, its Secret, the Pod's limits, the node's settings.
    let spec: LaunchSpec = serde_json::from_slice(&std::fs::read(dir.join(SPEC_FILE)).unwrap()).unwrap();
    assert_eq!((spec.pod_name.as_str(), spec.pod_uid.as_str()), (pod_name.as_str(), pod.metadata.uid.as_deref().unwrap()));
    assert_eq!(spec.vmi["metadata"]["uid"], json!(vmi.metadata.uid));
    assert!(!spec.kvm);
    assert_eq!((spec.memory_limit_bytes, spec.cpu_limit_millis), (Some(300 << 20), Some(1000)));
    let userdata = &spec.secrets["vm1-userdata"]["userdata"];
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(userdata).unwrap(), USERDATA.as_bytes());
    assert_eq!(spec.insecure_registries, ["127.0.0.1:5000"]);
    assert_eq!(spec.cache_dir, h.data_dir().join("images"));
    let pid = launcher_pid(&dir).unwrap();
    assert!(launcher_of_dir_alive(pid, &dir));
    assert_eq!(session_of(pid), Some(pid), "the launcher leads a session of its own");
    assert_eq!(starts(&dir), 1);

    // The agent dies (its future is dropped, as a SIGKILL would end it): the launcher keeps running.
    stop_agent(agent).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(launcher_of_dir_alive(pid, &dir), "the launcher outlives the agent");
    // Meanwhile someone damages the status.
    vmis.patch("vm1", &PatchParams::default(), &Patch::Merge(json!({"status": {"conditions": []}}))).await.unwrap();

    // A new agent adopts the launcher: no second start, same pid, the status is right again.
    let agent = h.agent();
    eventually(10, "the restarted agent to repair the VMI status", || async { vmi_is_running_here(&vmis.get("vm1").await.unwrap()) }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(launcher_pid(&dir), Some(pid));
    assert!(launcher_of_dir_alive(pid, &dir));
    assert_eq!(starts(&dir), 1, "the launcher was adopted, not started again");
    let times = vmis.get("vm1").await.unwrap().status.unwrap().phase_transition_timestamps.unwrap();
    assert_eq!(times.iter().filter(|t| t.phase == Phase::Running).count(), 1, "no second Running transition");

    // Deleting the Pod stops the launcher, removes the folder, and the Pod goes; the VMI ends Succeeded.
    pods.delete(&pod_name, &DeleteParams::default()).await.unwrap();
    eventually(20, "the pod to be gone", || async { pods.get_opt(&pod_name).await.unwrap().is_none() }).await;
    assert!(!launcher_of_dir_alive(pid, &dir), "the launcher stopped");
    assert!(!dir.exists(), "the pod folder is removed");
    let done = vmis.get("vm1").await.unwrap().status.unwrap();
    assert_eq!(done.phase, Some(Phase::Succeeded));
    assert_eq!(done.condition("Ready").map(|c| c.status), Some(ConditionStatus::False));

    stop_agent(agent).await;
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_that_dies_fails_its_vmi() {
    let h = Harness::start().await;
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let (_, pod) = h.vm_with_pod("vm2").await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let dir = h.pod_dir(pod.metadata.uid.as_deref().unwrap());
    let agent = h.agent();
    eventually(20, "the VMI to run", || async { vmi_is_running_here(&vmis.get("vm2").await.unwrap()) }).await;

    // The launcher is killed outright: it can write no final state, so the agent fails the VM.
    let pid = launcher_pid(&dir).unwrap();
    assert!(kill_launcher(&dir, pid));
    eventually(10, "the VMI to fail", || async {
        vmis.get("vm2").await.unwrap().status.and_then(|s| s.phase) == Some(Phase::Failed)
    })
    .await;
    let status = vmis.get("vm2").await.unwrap().status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("LauncherExited"));
    assert_eq!(read_state(&dir).map(|s| s.phase), Some(LauncherPhase::Failed));
    eventually(10, "the pod to fail", || async {
        pods.get(&pod_name).await.unwrap().status.and_then(|s| s.phase).as_deref() == Some("Failed")
    })
    .await;
    let compute = pods.get(&pod_name).await.unwrap().status.unwrap().container_statuses.unwrap().remove(0);
    assert_eq!(compute.state.unwrap().terminated.map(|t| t.exit_code), Some(1));
    // Never restarted behind the VMI's back, and a failed VMI stays failed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(starts(&dir), 1);
    assert_eq!(vmis.get("vm2").await.unwrap().status.unwrap().phase, Some(Phase::Failed));

    stop_agent(agent).await;
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_folders_are_cleaned_up() {
    let h = Harness::start().await;
    let pods_dir = h.data_dir().join("pods");
    // A folder with nothing running, and one whose launcher still runs: neither has a Pod.
    let idle = pods_dir.join("0a0a0a0a-dead-4bee-8000-000000000001");
    let busy = pods_dir.join("0a0a0a0a-dead-4bee-8000-000000000002");
    std::fs::create_dir_all(&idle).unwrap();
    std::fs::write(idle.join("serial.log"), "old guest output\n").unwrap();
    std::fs::create_dir_all(&busy).unwrap();
    let command = fake_launcher(h.tmp.path());
    let mut launcher = std::process::Command::new(&command.program)
        .args(&command.args)
        .arg("--dir")
        .arg(&busy)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = launcher.id();
    eventually(10, "the fake launcher to run", || async { launcher_pid(&busy) == Some(pid) && launcher_of_dir_alive(pid, &busy) }).await;
    assert!(busy.join(PID_FILE).exists());

    let agent = h.agent();
    eventually(20, "both folders to be removed", || async { !idle.exists() && !busy.exists() }).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = launcher.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the leftover launcher did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "stopped gracefully (SIGTERM), not killed: {exit:?}");

    stop_agent(agent).await;
    h.server.stop().await;
}
