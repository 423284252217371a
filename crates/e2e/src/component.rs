//! One `ferrovirt <component>` process (controller, scheduler, node, ...), and a TCP proxy on
//! loopback that a test can cut to partition a component from the API server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::ferrovirt_binary;

/// A `ferrovirt <args>` process, its stderr appended to `log`; killed (SIGKILL, by PID) on drop.
pub struct Component {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Component {
    pub fn start(args: &[&str], log: &Path) -> Component {
        let mut c = Component { args: args.iter().map(|a| a.to_string()).collect(), log: log.to_path_buf(), child: None };
        c.spawn();
        c
    }

    /// Start the process (again).
    pub fn spawn(&mut self) {
        let log = std::fs::File::options().create(true).append(true).open(&self.log).expect("component log");
        let child = Command::new(ferrovirt_binary().expect("the ferrovirt binary"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ferrovirt {}: {e}", self.args.join(" ")));
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process runs").id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A TCP proxy on 127.0.0.1 to one target. [`Partition::cut`] drops every connection through it
/// and refuses new ones until [`Partition::heal`]: to the client it is as if the network between
/// it and the target went away.
pub struct Partition {
    pub addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Partition {
    pub async fn start(target: std::net::SocketAddr) -> std::io::Result<Partition> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let task = {
            let (cut, generation) = (cut.clone(), generation.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let mut dropped = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = dropped.changed() => {}
                        }
                    });
                }
            })
        };
        Ok(Partition { addr, cut, generation, task })
    }

    /// Drop every connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A copy of `kubeconfig` whose server is `https://<addr>` (e.g. a [`Partition`]), written to `to`.
pub fn kubeconfig_via(kubeconfig: &Path, addr: std::net::SocketAddr, to: &Path) -> std::io::Result<()> {
    let text = std::fs::read_to_string(kubeconfig)?;
    let rewritten: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("server: ") {
            Some(_) => format!("{}server: https://{addr}", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect();
    std::fs::write(to, rewritten.join("\n") + "\n")
}
