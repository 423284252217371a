//! A network namespace for one component of a test cluster, so that a test can cut it off.
//!
//! ```text
//!   root namespace                               namespace "fv-<name>-<pid>"
//!   127.0.0.1:P (API server, registry) ◀── relay ── 127.0.0.1:P  ◀── ferrovirt node, its QEMUs
//!                                                 lo down = cut off, lo up = healed
//! ```
//!
//! Everything stays on loopback addresses: inside the namespace, a relay listens on the
//! namespace's own 127.0.0.1 at the same port numbers as the servers outside, and connects to
//! them on the root namespace's 127.0.0.1 (the relay thread creates its listening socket inside
//! the namespace and its outgoing sockets outside it). Taking the namespace's loopback down cuts the
//! component off from everything; the namespace is deleted on drop.

use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use nix::sched::{setns, CloneFlags};

/// A named network namespace (`ip netns`), deleted on drop.
pub struct NetNs {
    name: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl NetNs {
    /// Create `fv-<name>-<test pid>` with its loopback up.
    pub fn create(name: &str) -> anyhow::Result<NetNs> {
        let ns = NetNs { name: format!("fv-{name}-{}", std::process::id()) };
        let _ = ip(&["netns", "del", &ns.name]);
        ip(&["netns", "add", &ns.name])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Make 127.0.0.1:`port` of the root namespace reachable at 127.0.0.1:`port` inside this one.
    pub fn forward_loopback_port(&self, port: u16) -> anyhow::Result<()> {
        let inside = File::open(self.path()).with_context(|| format!("cannot open {}", self.path().display()))?;
        let outside = File::open("/proc/self/ns/net").context("cannot open this process's network namespace")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // This thread alone moves into the namespace to bind, then back to connect.
            let bound = setns(&inside, CloneFlags::CLONE_NEWNET)
                .map_err(anyhow::Error::from)
                .and_then(|_| TcpListener::bind(("127.0.0.1", port)).map_err(anyhow::Error::from));
            let back = setns(&outside, CloneFlags::CLONE_NEWNET);
            let listener = match (bound, back) {
                (Ok(l), Ok(())) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                (Err(e), _) => return drop(tx.send(Err(e))),
                (_, Err(e)) => return drop(tx.send(Err(e.into()))),
            };
            for inbound in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", port)) else { return };
                    relay(inbound, outbound);
                });
            }
        });
        rx.recv().context("the relay thread ended")?
    }

    /// Cut the namespace off (its loopback goes down).
    pub fn cut(&self) -> anyhow::Result<()> {
        ip(&["-n", &self.name, "link", "set", "lo", "down"])
    }

    /// Reconnect it (its loopback comes up).
    pub fn heal(&self) -> anyhow::Result<()> {
        ip(&["-n", &self.name, "link", "set", "lo", "up"])
    }

    /// `nsenter --net=<ns> --`: prefix for a command that runs inside (nsenter execs it: the PID is
    /// the command's own). Not `ip netns exec`, which also remounts /sys and so hides the cgroup
    /// file systems the launchers need.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec!["nsenter".into(), format!("--net={}", self.path().display()), "--".into()]
    }
}

fn relay(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else { return };
    let one = std::thread::spawn(move || copy(a, b2));
    copy(b, a2);
    let _ = one.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
