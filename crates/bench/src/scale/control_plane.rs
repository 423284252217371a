//! The control plane under test, as separate processes of the release `ferrovirt` binary, each
//! known by its PID: `ferrovirt apiserver` (embedded store, or etcd), `ferrovirt controller`,
//! `ferrovirt scheduler`, and for etcd a real etcd (`EtcdProcess`).
//!
//! ```text
//!  [etcd] ◄── ferrovirt apiserver --data-dir D --listen 127.0.0.1:P [--etcd URL]
//!                  ▲  kubeconfig D/kubeconfig
//!                  ├── ferrovirt controller --kubeconfig K   (elects itself on a Lease)
//!                  └── ferrovirt scheduler  --kubeconfig K   (elects itself on a Lease)
//! ```
//!
//! Stopping: SIGINT to the controller, the scheduler and the API server by PID (they give up
//! their Leases and close the store), a few seconds' wait, then SIGKILL by PID for whatever still
//! runs (the handles' drop); etcd is killed by PID when its handle drops. Logs stay in the data
//! folder.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrovirt_e2e::component::Component;
use ferrovirt_e2e::ApiServerProcess;
use ferrovirt_store::testing::EtcdProcess;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::vms::procfs;

/// How long a process may take to exit after SIGINT before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Which store the API server keeps objects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Etcd,
}

impl StoreKind {
    pub fn label(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Etcd => "etcd",
        }
    }
}

/// One measured process.
#[derive(Debug, Clone)]
pub struct Process {
    pub label: String,
    pub pid: u32,
}

/// The running control plane.
pub struct ControlPlane {
    // Dropped in this order: components first, then the API server, then etcd.
    controller: Component,
    scheduler: Component,
    apiserver: ApiServerProcess,
    etcd: Option<EtcdProcess>,
    dir: PathBuf,
}

impl ControlPlane {
    /// Start etcd (for [`StoreKind::Etcd`]), the API server, the controller and the scheduler,
    /// with everything under `dir`.
    pub async fn start(store: StoreKind, dir: &Path) -> anyhow::Result<ControlPlane> {
        let etcd = match store {
            StoreKind::Embedded => None,
            StoreKind::Etcd => Some(
                tokio::task::spawn_blocking(EtcdProcess::start)
                    .await?
                    .context("etcd does not start (Debian package etcd-server, or set FERROVIRT_ETCD)")?,
            ),
        };
        let endpoints = etcd.as_ref().map(EtcdProcess::endpoints);
        let server_dir = dir.join("apiserver");
        let apiserver =
            tokio::task::spawn_blocking(move || ApiServerProcess::start(server_dir, endpoints))
                .await?
                .context("the API server does not start")?;
        let kubeconfig = apiserver.kubeconfig().to_string_lossy().into_owned();
        let controller = Component::start(
            &["controller", "--kubeconfig", &kubeconfig],
            &dir.join("controller.log"),
        );
        let scheduler = Component::start(
            &["scheduler", "--kubeconfig", &kubeconfig],
            &dir.join("scheduler.log"),
        );
        Ok(ControlPlane {
            controller,
            scheduler,
            apiserver,
            etcd,
            dir: dir.to_path_buf(),
        })
    }

    /// The admin kubeconfig the API server wrote.
    pub fn kubeconfig(&self) -> &Path {
        self.apiserver.kubeconfig()
    }

    /// A kube-rs configuration for the API server.
    pub async fn kube_config(&self) -> anyhow::Result<kube::Config> {
        self.apiserver.kube_config().await
    }

    /// The processes to measure, labelled.
    pub fn processes(&self) -> Vec<Process> {
        let mut out = Vec::new();
        if let Some(pid) = self.apiserver.pid() {
            out.push(Process {
                label: "ferrovirt apiserver".into(),
                pid,
            });
        }
        out.push(Process {
            label: "ferrovirt controller".into(),
            pid: self.controller.pid(),
        });
        out.push(Process {
            label: "ferrovirt scheduler".into(),
            pid: self.scheduler.pid(),
        });
        if let Some(pid) = self.etcd.as_ref().and_then(EtcdProcess::pid) {
            out.push(Process {
                label: "etcd".into(),
                pid,
            });
        }
        out
    }

    /// The last lines of each log, for an error message.
    pub fn log_tails(&self, lines: usize) -> String {
        format!(
            "--- apiserver ---\n{}\n--- controller ---\n{}\n--- scheduler ---\n{}",
            self.apiserver.log_tail(lines),
            self.controller.log_tail(lines),
            self.scheduler.log_tail(lines)
        )
    }

    /// Where the logs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGINT to the controller, scheduler and API server by PID; wait; SIGKILL what still runs;
    /// kill etcd. Returns the labels of processes that had to be killed.
    pub async fn stop(mut self) -> Vec<String> {
        let mut killed = Vec::new();
        let first = [
            ("ferrovirt controller", Some(self.controller.pid())),
            ("ferrovirt scheduler", Some(self.scheduler.pid())),
        ];
        let server = [("ferrovirt apiserver", self.apiserver.pid())];
        for group in [&first[..], &server[..]] {
            for (_, pid) in group {
                if let Some(pid) = pid {
                    let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGINT);
                }
            }
            let deadline = Instant::now() + STOP_PATIENCE;
            while group.iter().any(|(_, p)| p.is_some_and(procfs::alive)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for (label, pid) in group {
                if pid.is_some_and(procfs::alive) {
                    killed.push((*label).to_owned());
                }
            }
        }
        // Reap (and SIGKILL what did not exit), by PID.
        self.controller.kill9();
        self.scheduler.kill9();
        self.apiserver.kill9();
        if let Some(mut etcd) = self.etcd.take() {
            etcd.kill();
        }
        killed
    }
}
