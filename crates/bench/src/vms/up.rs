//! `ferrovirt up` as a child process on a data folder of its own, and the guest and binaries the
//! benchmark needs.
//!
//! Stopping (explicitly, or on drop after an error or Ctrl-C): SIGINT to `ferrovirt up` by its
//! PID, which stops the node's VMs (ACPI power button, then kill after a grace period) and exits;
//! SIGKILL if it has not exited in time; then every launcher and QEMU still recorded in a pod
//! folder (`launcher.pid`, `state.json`'s `qemuPid`) is killed by PID, after checking that its
//! `/proc/<pid>/cmdline` names that folder.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use ferrovirt_launcher::spec;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::procfs;

/// How long `ferrovirt up` may take to print its kubeconfig.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop its VMs and exit after SIGINT (its VM grace period is 30 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| manifest.join("../.."), Path::to_path_buf)
}

/// The test guest's qcow2 disk, built with `scripts/build-guest.sh` if it is missing.
pub fn guest_disk() -> anyhow::Result<PathBuf> {
    let root = repo_root();
    let disk = root.join("target/guest/disk.qcow2");
    if !disk.is_file() {
        eprintln!("building the test guest: scripts/build-guest.sh");
        let status = Command::new(root.join("scripts/build-guest.sh"))
            .current_dir(&root)
            .status()
            .context("cannot run scripts/build-guest.sh")?;
        ensure!(status.success(), "scripts/build-guest.sh failed ({status})");
        ensure!(
            disk.is_file(),
            "scripts/build-guest.sh did not make {}",
            disk.display()
        );
    }
    Ok(disk)
}

/// The `ferrovirt` binary: `$FERROVIRT_BIN`, or built with `cargo build -p ferrovirt` in the
/// profile and target folder this benchmark runs from (`--release` under `cargo run --release`).
pub fn ferrovirt_binary() -> anyhow::Result<PathBuf> {
    ferrovirt_e2e::ferrovirt_binary()
}

/// What stopping `ferrovirt up` took.
#[derive(Debug, Clone, Default)]
pub struct Stopped {
    /// From SIGINT to its exit, if it exited by itself in time.
    pub exited_after: Option<Duration>,
    /// Leftover processes killed by PID from the pod folders.
    pub swept: Vec<u32>,
}

/// A running `ferrovirt up`.
pub struct UpProcess {
    child: Option<Child>,
    data_dir: PathBuf,
    node: String,
    pub kubeconfig: PathBuf,
}

impl UpProcess {
    /// Starts `ferrovirt up` on `data_dir` with one node named `node`; returns once it printed its
    /// kubeconfig. Its log (stderr) goes to `<data_dir>/up.log`.
    pub fn start(binary: &Path, data_dir: &Path, node: &str) -> anyhow::Result<UpProcess> {
        let data_dir = data_dir.canonicalize()?;
        let log = std::fs::File::create(data_dir.join("up.log"))?;
        let mut child = Command::new(binary)
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--node-name",
                node,
                "--data-dir",
            ])
            .arg(&data_dir)
            .env("RUST_LOG", "info,hyper=warn,h2=warn,tonic=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        // Reads the kubeconfig line, then drains stdout for as long as the process lives.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(p) = line.strip_prefix("kubeconfig: ") {
                    let _ = tx.send(PathBuf::from(p.trim()));
                }
            }
        });
        let mut up = UpProcess {
            child: Some(child),
            data_dir,
            node: node.to_owned(),
            kubeconfig: PathBuf::new(),
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(k) => up.kubeconfig = k,
            Err(_) => bail!(
                "ferrovirt up printed no kubeconfig within {START_TIMEOUT:?}\n{}",
                up.log_tail(30)
            ),
        }
        Ok(up)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn node_dir(&self) -> PathBuf {
        self.data_dir.join("nodes").join(&self.node)
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.node_dir().join("pods")
    }

    /// The last `n` lines of `up.log`.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.data_dir.join("up.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGINT, wait, SIGKILL if needed, then sweep the pod folders. Idempotent.
    pub fn stop(&mut self) -> Stopped {
        let mut stopped = Stopped::default();
        if let Some(mut child) = self.child.take() {
            eprintln!("stopping ferrovirt up (SIGINT): it gives its VMs up to 30 s to power off");
            let started = Instant::now();
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            while started.elapsed() < STOP_TIMEOUT {
                if let Ok(Some(_)) = child.try_wait() {
                    stopped.exited_after = Some(started.elapsed());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if stopped.exited_after.is_none() {
                eprintln!("ferrovirt up did not exit {STOP_TIMEOUT:?} after SIGINT: SIGKILL");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        stopped.swept = sweep(&self.pods_dir());
        stopped
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        let s = self.stop();
        if !s.swept.is_empty() {
            eprintln!("killed leftover processes {:?}", s.swept);
        }
    }
}

/// Kills (SIGKILL) every launcher and QEMU recorded in a folder under `pods` that is still alive
/// and whose command line names its folder; returns their PIDs.
pub fn sweep(pods: &Path) -> Vec<u32> {
    let mut killed = Vec::new();
    for entry in std::fs::read_dir(pods).into_iter().flatten().flatten() {
        let dir = entry.path();
        let Some(dir_str) = dir.to_str() else {
            continue;
        };
        let launcher = std::fs::read_to_string(dir.join(spec::PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        let qemu = spec::read_state(&dir).and_then(|s| s.qemu_pid);
        for pid in [qemu, launcher].into_iter().flatten() {
            if procfs::alive_and_names(pid, dir_str)
                && kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
            {
                killed.push(pid);
            }
        }
    }
    // Give the kernel a moment to take them down (their parents reap them).
    let deadline = Instant::now() + Duration::from_secs(5);
    while killed.iter().any(|p| procfs::alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    killed
}
