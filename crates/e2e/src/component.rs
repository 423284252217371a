//! One `ferrovirt <component>` process (controller, scheduler, node, ...).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::ferrovirt_binary;

/// A `ferrovirt <args>` process, its stderr appended to `log`; killed (SIGKILL, by PID) on drop.
pub struct Component {
    /// A command the binary runs under (e.g. `nsenter --net=NS --`), which must exec it.
    prefix: Vec<String>,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Component {
    pub fn start(args: &[&str], log: &Path) -> Component {
        Self::start_under(Vec::new(), args, log)
    }

    /// Start `prefix... ferrovirt args...`; the prefix must exec the binary (as `ip netns exec`
    /// does), so the PID is still ferrovirt's.
    pub fn start_under(prefix: Vec<String>, args: &[&str], log: &Path) -> Component {
        let mut c = Component { prefix, args: args.iter().map(|a| a.to_string()).collect(), log: log.to_path_buf(), child: None };
        c.spawn();
        c
    }

    /// Start the process (again).
    pub fn spawn(&mut self) {
        let log = std::fs::File::options().create(true).append(true).open(&self.log).expect("component log");
        let binary = ferrovirt_binary().expect("the ferrovirt binary");
        let mut command = match self.prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let child = command
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
