//! Several nodes on one machine for the drain and replica set tests, with real QEMU: an API
//! server, a controller, a scheduler and one `ferrovirt node` per name, each with its own data
//! folder, all on loopback. Every process is stopped by PID when the [`Cluster`] is dropped: the
//! components, then every launcher and QEMU still running for a pod folder of any node.
//!
//! ```text
//!   <tmp>/cp                ferrovirt apiserver (embedded store), its kubeconfig
//!   <tmp>/<node>/pods/<uid> one folder per launcher pod: spec, state, serial.log, console.sock
//!   <tmp>/*.log             each component's log, quoted when a test fails
//! ```
//!
//! Each test file includes it with `mod cluster;` next to `mod real_vm;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use ferrovirt_e2e::component::Component;
use ferrovirt_e2e::ApiServerProcess;

use crate::real_vm::{cmdline, sweep_pod_processes};

pub struct Cluster {
    pub nodes: BTreeMap<String, Component>,
    pub controller: Component,
    pub scheduler: Component,
    pub apiserver: ApiServerProcess,
    pub root: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Start the control plane and one node agent per name (`--kvm off`, plus `node_args`); the
    /// controller gets `controller_args`.
    pub fn start(names: &[&str], node_args: &[&str], controller_args: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let apiserver = ApiServerProcess::start(root.join("cp"), None).expect("the API server starts");
        let kubeconfig = apiserver.kubeconfig().to_str().unwrap().to_string();
        let mut nodes = BTreeMap::new();
        for name in names {
            let data = root.join(name);
            let mut args = vec!["node", "--name", name, "--kubeconfig", &kubeconfig, "--data-dir", data.to_str().unwrap(), "--kvm", "off"];
            args.extend_from_slice(node_args);
            nodes.insert(name.to_string(), Component::start(&args, &root.join(format!("{name}.log"))));
        }
        let mut args = vec!["controller", "--kubeconfig", kubeconfig.as_str()];
        args.extend_from_slice(controller_args);
        let controller = Component::start(&args, &root.join("controller.log"));
        let scheduler = Component::start(&["scheduler", "--kubeconfig", &kubeconfig], &root.join("scheduler.log"));
        Cluster { nodes, controller, scheduler, apiserver, root, _tmp: tmp }
    }

    pub fn kubeconfig(&self) -> &Path {
        self.apiserver.kubeconfig()
    }

    pub async fn client(&self) -> kube::Client {
        self.apiserver.client().await.expect("a client from the kubeconfig")
    }

    /// The launcher pod folders of `node`.
    pub fn pods_dir(&self, node: &str) -> PathBuf {
        self.root.join(node).join("pods")
    }

    /// The end of every component's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (name, c) in &self.nodes {
            text.push_str(&format!("--- node {name} (last 20 lines) ---\n{}\n", c.log_tail(20)));
        }
        text.push_str(&format!("--- controller (last 40 lines) ---\n{}\n", self.controller.log_tail(40)));
        text.push_str(&format!("--- scheduler (last 15 lines) ---\n{}\n", self.scheduler.log_tail(15)));
        text
    }

    /// Wait until every node is registered and Ready.
    pub async fn wait_ready(&self, client: &kube::Client) {
        let nodes: Api<Node> = Api::all(client.clone());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = nodes
                .list(&Default::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|n| {
                            n.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                        .count()
                })
                .unwrap_or(0);
            if ready == self.nodes.len() {
                return;
            }
            assert!(Instant::now() < deadline, "{} nodes to be Ready (now {ready})\n{}", self.nodes.len(), self.logs());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Set or clear `spec.unschedulable` of `node` through the API.
    pub async fn set_unschedulable(&self, client: &kube::Client, node: &str, on: bool) {
        let nodes: Api<Node> = Api::all(client.clone());
        nodes.patch(node, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": on}}))).await.unwrap();
    }

    /// PIDs of the QEMU processes running for pod folders of `node` (every node with `None`).
    pub fn qemus(&self, node: Option<&str>) -> Vec<u32> {
        let needle = match node {
            Some(n) => self.pods_dir(n),
            None => self.root.clone(),
        };
        let needle = needle.to_str().unwrap().to_string();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmd = cmdline(*pid);
                cmd.contains("qemu-system") && cmd.contains(&needle) && crate::real_vm::alive(*pid)
            })
            .collect()
    }

    /// A node loss: SIGKILL its agent, then every launcher and QEMU of its pod folders.
    pub fn lose_node(&mut self, node: &str) {
        self.nodes.get_mut(node).expect("a node of this cluster").kill9();
        sweep_pod_processes(&self.pods_dir(node));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.nodes.values_mut() {
            c.kill9();
        }
        self.controller.kill9();
        self.scheduler.kill9();
        for node in self.nodes.keys() {
            sweep_pod_processes(&self.root.join(node).join("pods"));
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.apiserver.kill9();
    }
}
