//! Two `ferrovirt controller` and two `ferrovirt scheduler` processes on one API server: one of
//! each leads (holds its Lease in kube-system), the other waits; kill -9 the leaders and the
//! standbys take over within seconds: a VM created afterwards gets its VMI and its launcher Pod is
//! bound. No QEMU here (no node agent runs): this is about the control plane.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_e2e::component::Component;
use ferrovirt_e2e::ApiServerProcess;

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn wait<T, F, Fut>(secs: u64, what: &str, logs: &dyn Fn() -> String, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}\n{}", logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn vm(name: &str) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "domain": {"devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}, "resources": {"requests": {"memory": "64Mi"}}},
            "volumes": [{"name": "root", "containerDisk": {"image": "127.0.0.1:5000/none:latest"}}]
        }}}
    }))
    .unwrap()
}

/// The launcher Pod of VM `name`, once bound to a node.
async fn bound_pod(pods: &Api<Pod>, name: &str) -> Option<String> {
    let list = pods.list(&ListParams::default().labels(&format!("vm.kubevirt.io/name={name}"))).await.ok()?;
    list.items.into_iter().find_map(|p| p.spec?.node_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_controller_and_scheduler_take_over_within_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let apiserver = ApiServerProcess::start(d.join("cp"), None).unwrap();
    let kc = apiserver.kubeconfig().to_str().unwrap().to_string();
    let election = ["--leader-elect-lease-duration-seconds", "4", "--leader-elect-renew-deadline-seconds", "3", "--leader-elect-retry-period-seconds", "1"];
    let start = |what: &str, i: usize| {
        let mut args = vec![what, "--kubeconfig", kc.as_str()];
        args.extend(election);
        Component::start(&args, &d.join(format!("{what}-{i}.log")))
    };
    let mut controllers = [start("controller", 0), start("controller", 1)];
    let mut schedulers = [start("scheduler", 0), start("scheduler", 1)];
    let log_paths: Vec<std::path::PathBuf> = controllers.iter().chain(&schedulers).map(|c| c.log_path().to_path_buf()).collect();
    let logs = move || {
        let mut text = String::new();
        for path in &log_paths {
            let all = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = all.lines().collect();
            text.push_str(&format!("--- {} ---\n{}\n", path.display(), lines[lines.len().saturating_sub(15)..].join("\n")));
        }
        text
    };
    let client = apiserver.client().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // A Ready node for the scheduler (nothing runs on it: no node agent here).
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}, "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap();
    Api::<Node>::all(client.clone()).create(&PostParams::default(), &node).await.unwrap();

    let first_controller = wait(30, "a controller to lead", &logs, || holder(&leases, "ferrovirt-controller")).await;
    let first_scheduler = wait(30, "a scheduler to lead", &logs, || holder(&leases, "ferrovirt-scheduler")).await;
    vms.create(&PostParams::default(), &vm("before")).await.unwrap();
    wait(30, "the VM's pod bound before the failover", &logs, || bound_pod(&pods, "before")).await;

    // Which process leads? Each logs "became the leader" with its identity.
    let leader_index = |cs: &[Component; 2], who: &str| {
        cs.iter().position(|c| std::fs::read_to_string(c.log_path()).unwrap_or_default().contains(&format!("identity={who}"))).expect("the leader's log names it")
    };
    let lc = leader_index(&controllers, &first_controller);
    let ls = leader_index(&schedulers, &first_scheduler);
    let killed = Instant::now();
    controllers[lc].kill9();
    schedulers[ls].kill9();

    let new_controller = wait(20, "the standby controller to lead", &logs, || async {
        holder(&leases, "ferrovirt-controller").await.filter(|h| *h != first_controller)
    })
    .await;
    let new_scheduler = wait(20, "the standby scheduler to lead", &logs, || async {
        holder(&leases, "ferrovirt-scheduler").await.filter(|h| *h != first_scheduler)
    })
    .await;
    eprintln!("took over after {:.1}s: controller {new_controller}, scheduler {new_scheduler}", killed.elapsed().as_secs_f64());
    vms.create(&PostParams::default(), &vm("after")).await.unwrap();
    wait(30, "the new leaders to make and place the new VM's VMI and pod", &logs, || async {
        vmis.get_opt("after").await.ok()??;
        bound_pod(&pods, "after").await
    })
    .await;
    assert!(killed.elapsed() < Duration::from_secs(20), "failover and a new VM placed took {:?}", killed.elapsed());
    drop(controllers);
    drop(schedulers);
}
