//! Harness of the controller tests: an in-process API server, a kube-rs client, the controller
//! (and, where a test asks for it, the scheduler) running against it, and helpers that play the
//! parts of the scheduler and the node agent.
//!
//! The "fake node agent" helpers exist only in these controller tests: they write what the real
//! node agent writes (pod phase, VMI phase and its transition timestamps, the confirmation of a
//! bound pod's deletion) so the controller can be tested without nodes and QEMU.

#![allow(dead_code)]

use std::time::Duration;

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance, VirtualMachineInstancePhase};
use ferrovirt_controller::{Options, StartBackoff};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::{json, Value};

pub const NS: &str = "default";

pub struct Harness {
    pub client: Client,
    server: Option<ferrovirt_apiserver::Running>,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Controller options for tests: a short restart backoff so restarts are seen within seconds.
pub fn test_options() -> Options {
    Options {
        start_backoff: StartBackoff { base: Duration::from_secs(2), max: Duration::from_secs(8) },
        workers: 2,
        resync: Duration::from_secs(30),
        ..Options::default()
    }
}

impl Harness {
    /// An API server with the controller running against it.
    pub async fn start() -> Harness {
        Self::start_with(test_options(), false).await
    }

    /// An API server with the controller and, if `scheduler`, the scheduler.
    pub async fn start_with(opts: Options, scheduler: bool) -> Harness {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let config = ferrovirt_apiserver::Config::new(dir.path(), "127.0.0.1:0".parse().unwrap());
        let server = ferrovirt_apiserver::start(config).await.expect("API server starts");
        let kc = Kubeconfig::read_from(&server.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
        let client = Client::try_from(config).unwrap();
        let mut h =
            Harness { client: client.clone(), server: Some(server), stop: Vec::new(), tasks: Vec::new(), _dir: dir };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        h.stop.push(tx);
        h.tasks.push(tokio::spawn(ferrovirt_controller::run_until(client.clone(), opts, async {
            let _ = rx.await;
        })));
        if scheduler {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            h.stop.push(tx);
            let opts = ferrovirt_scheduler::Options { retry_interval: Duration::from_secs(2), ..Default::default() };
            h.tasks.push(tokio::spawn(ferrovirt_scheduler::run_until(client, opts, async {
                let _ = rx.await;
            })));
        }
        h
    }

    pub fn vms(&self) -> Api<VirtualMachine> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn vmis(&self) -> Api<VirtualMachineInstance> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    pub async fn stop(mut self) {
        for tx in self.stop.drain(..) {
            let _ = tx.send(());
        }
        for t in self.tasks.drain(..) {
            let r = tokio::time::timeout(Duration::from_secs(10), t).await.expect("components stop");
            r.expect("component task").expect("component ran without error");
        }
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }

    // ---- objects ------------------------------------------------------------------------------

    pub async fn create_vm(&self, name: &str, strategy: &str) -> VirtualMachine {
        self.create_vm_with(name, strategy, "128Mi").await
    }

    pub async fn create_vm_with(&self, name: &str, strategy: &str, memory: &str) -> VirtualMachine {
        let vm: VirtualMachine = serde_json::from_value(vm_manifest(name, strategy, memory)).unwrap();
        self.vms().create(&PostParams::default(), &vm).await.expect("VM created")
    }

    pub async fn vmi(&self, name: &str) -> Option<VirtualMachineInstance> {
        self.vmis().get_opt(name).await.unwrap()
    }

    pub async fn vm(&self, name: &str) -> VirtualMachine {
        self.vms().get(name).await.unwrap()
    }

    /// Launcher pods of the VMI with this uid.
    pub async fn pods_of(&self, vmi_uid: &str) -> Vec<Pod> {
        self.pods()
            .list(&ListParams::default().labels(&format!("kubevirt.io/created-by={vmi_uid}")))
            .await
            .unwrap()
            .items
    }

    /// Waits for the VMI named `name` with a uid other than `not_uid` (a new one).
    pub async fn wait_vmi(&self, name: &str, not_uid: Option<&str>, secs: u64) -> VirtualMachineInstance {
        wait_for(secs, &format!("a new VMI {name}"), || async move {
            self.vmi(name).await.filter(|v| v.metadata.uid.as_deref() != not_uid)
        })
        .await
    }

    /// Waits for the one launcher pod of the VMI with this uid.
    pub async fn wait_pod(&self, vmi_uid: &str) -> Pod {
        wait_for(20, "the launcher pod", || async move {
            let pods = self.pods_of(vmi_uid).await;
            assert!(pods.len() <= 1, "more than one launcher pod: {pods:?}");
            pods.into_iter().next()
        })
        .await
    }

    pub async fn wait_vm_status(&self, name: &str, printable: &str, secs: u64) -> VirtualMachine {
        wait_for(secs, &format!("VM {name} printableStatus {printable}"), || async move {
            let vm = self.vm(name).await;
            let got = vm.status.as_ref().and_then(|s| s.printable_status).map(|p| format!("{p:?}"));
            (got.as_deref() == Some(printable)).then_some(vm)
        })
        .await
    }

    pub async fn wait_vmi_phase(&self, name: &str, phase: VirtualMachineInstancePhase) -> VirtualMachineInstance {
        wait_for(20, &format!("VMI {name} in {phase:?}"), || async move {
            self.vmi(name).await.filter(|v| v.status.as_ref().and_then(|s| s.phase) == Some(phase))
        })
        .await
    }

    pub async fn wait_vmi_gone(&self, name: &str, uid: &str, secs: u64) {
        wait_for(secs, &format!("VMI {name} ({uid}) gone"), || async move {
            self.vmi(name).await.is_none_or(|v| v.metadata.uid.as_deref() != Some(uid)).then_some(())
        })
        .await;
    }

    /// Events (events.k8s.io/v1) about the object named `name`.
    pub async fn events_about(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), NS);
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }

    pub async fn wait_event(&self, name: &str, reason: &str) -> Event {
        wait_for(20, &format!("event {reason} about {name}"), || async move {
            self.events_about(name).await.into_iter().find(|e| e.reason.as_deref() == Some(reason))
        })
        .await
    }

    // ---- the scheduler's part ---------------------------------------------------------------

    pub async fn bind_pod(&self, pod: &str, node: &str) {
        self.pods()
            .patch(pod, &PatchParams::default(), &Patch::Merge(json!({"spec": {"nodeName": node}})))
            .await
            .expect("pod bound");
    }

    pub async fn create_node(&self, name: &str, cpu: &str, memory: &str) {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap();
        self.nodes().create(&PostParams::default(), &node).await.expect("node created");
    }

    // ---- the node agent's part (only in these tests) ----------------------------------------

    pub async fn set_pod_phase(&self, pod: &str, phase: &str) {
        self.pods()
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": phase}})))
            .await
            .expect("pod status written");
    }

    /// Writes a VMI phase as the node agent does: the phase plus its transition timestamp,
    /// pinned to the resourceVersion read (retried on conflict).
    pub async fn set_vmi_phase(&self, name: &str, phase: VirtualMachineInstancePhase) {
        for _ in 0..20 {
            let vmi = self.vmis().get(name).await.unwrap();
            let status = vmi.status.clone().unwrap_or_default();
            let mut stamps = serde_json::to_value(status.phase_transition_timestamps.unwrap_or_default()).unwrap();
            stamps
                .as_array_mut()
                .unwrap()
                .push(json!({"phase": phase, "phaseTransitionTimestamp": Timestamp::now().to_string()}));
            let patch = json!({
                "metadata": {"resourceVersion": vmi.metadata.resource_version},
                "status": {"phase": phase, "phaseTransitionTimestamps": stamps},
            });
            match self.vmis().patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 409 => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("VMI phase not written: {e}"),
            }
        }
        panic!("VMI phase not written: too many conflicts");
    }

    /// Confirms the deletion of a launcher pod the controller deleted (the node agent's job once
    /// the guest is down), after waiting for it to be marked for deletion.
    pub async fn confirm_pod_deletion(&self, pod: &str) {
        wait_for(20, &format!("pod {pod} marked for deletion"), || async move {
            self.pods()
                .get_opt(pod)
                .await
                .unwrap()
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
                .then_some(())
        })
        .await;
        match self.pods().delete(pod, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("pod deletion not confirmed: {e}"),
        }
    }
}

pub fn vm_manifest(name: &str, strategy: &str, memory: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "runStrategy": strategy,
            "template": {
                "metadata": {"labels": {"app": "demo"}},
                "spec": {
                    "domain": {
                        "devices": {"disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}]},
                        "resources": {"requests": {"memory": memory}}
                    },
                    "terminationGracePeriodSeconds": 5,
                    "volumes": [{"name": "containerdisk", "containerDisk": {"image": "127.0.0.1:5000/guest:latest"}}]
                }
            }
        }
    })
}

/// Polls `f` until it returns something or `secs` pass.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts `f` holds every time it is checked for `secs` seconds.
pub async fn holds_for<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        assert!(f().await, "no longer true: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `PUT /apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/NAME/ACTION`, as
/// virtctl does; returns the HTTP status.
pub async fn vm_action(client: &Client, name: &str, action: &str) -> u16 {
    let req = http::Request::builder()
        .method("PUT")
        .uri(format!("/apis/subresources.kubevirt.io/v1/namespaces/{NS}/virtualmachines/{name}/{action}"))
        .header("Content-Type", "application/json")
        .body(kube::client::Body::from(b"{}".to_vec()))
        .unwrap();
    client.send(req).await.expect("request sent").status().as_u16()
}
