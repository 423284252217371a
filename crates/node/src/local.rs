//! A pod folder on this node, and the processes that belong to it: reading what is there into a
//! [`LocalState`], asking a launcher to stop, killing what outlived its grace period, removing
//! the folder.
//!
//! A pid is trusted only if `/proc/<pid>/cmdline` still shows a process of this folder (the
//! folder's path is an argument, or a prefix of one): a recycled pid never gets a signal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovirt_launcher::spec::{
    launcher_alive, read_state, ControlReply, ControlRequest, LaunchSpec, LauncherState, CONTROL_SOCKET, PID_FILE,
    SPEC_FILE,
};
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::decide::{LauncherProcess, LocalState};

/// The node agent's record of when it asked the launcher to stop (RFC 3339).
pub const STOP_REQUEST_FILE: &str = "stop-requested";
/// How long the agent waits for a launcher to answer on `control.sock`.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `name` can be a pod folder's name (a Pod UID): no path tricks.
pub fn is_uid(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The pid in `launcher.pid`.
pub fn launcher_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(PID_FILE)).ok()?.trim().parse().ok()
}

/// Whether process `pid` belongs to the folder `dir` (its command line names the folder or a file
/// in it).
pub fn pid_runs_in_dir(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let dir = dir.as_os_str().as_encoded_bytes();
    let mut inside = dir.to_vec();
    inside.push(b'/');
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == dir || arg.windows(inside.len()).any(|w| w == inside.as_slice()))
}

/// Whether `pid` is a live launcher of the folder `dir`.
pub fn launcher_of_dir_alive(pid: u32, dir: &Path) -> bool {
    launcher_alive(pid) && pid_runs_in_dir(pid, dir)
}

fn read_stop_request(dir: &Path) -> Option<Timestamp> {
    std::fs::read_to_string(dir.join(STOP_REQUEST_FILE)).ok()?.trim().parse().ok()
}

fn spec_grace_seconds(spec: &LaunchSpec) -> Option<u64> {
    spec.vmi
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(serde_json::Value::as_i64)
        .map(|g| g.max(0) as u64)
}

/// The folder's spec, if it has a readable one.
pub fn read_spec(dir: &Path) -> Option<LaunchSpec> {
    std::fs::read(dir.join(SPEC_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

/// Everything [`crate::decide::decide`] needs to know about the folder `dir`.
pub fn read_local(dir: &Path) -> LocalState {
    if !dir.is_dir() {
        return LocalState::default();
    }
    let spec = read_spec(dir);
    let launcher = match launcher_pid(dir) {
        None => LauncherProcess::NeverStarted,
        Some(pid) if launcher_of_dir_alive(pid, dir) => LauncherProcess::Alive { pid },
        Some(pid) => LauncherProcess::Exited { pid },
    };
    LocalState {
        dir_exists: true,
        spec_written: spec.is_some(),
        launcher,
        state: read_state(dir),
        stop_requested_at: read_stop_request(dir),
        grace_seconds: spec.as_ref().and_then(spec_grace_seconds),
    }
}

/// Send one command on the launcher's `control.sock` and read its answer.
pub async fn control(dir: &Path, request: &ControlRequest) -> std::io::Result<ControlReply> {
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(dir.join(CONTROL_SOCKET)).await?;
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader.read_line(&mut answer).await?;
        Ok::<_, std::io::Error>(serde_json::from_str(&answer)?)
    };
    tokio::time::timeout(CONTROL_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the launcher did not answer"))?
}

/// How a stop request reached the launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopSent {
    /// Over `control.sock`; the launcher's answer.
    Control { ok: bool, error: Option<String> },
    /// The launcher could not be reached; it got SIGTERM.
    Terminated,
    /// The launcher was already gone.
    Gone,
}

/// Ask the launcher `pid` of `dir` to stop the guest within `grace_seconds`, recording the time
/// of the first request in the folder. Falls back to SIGTERM if `control.sock` does not answer.
pub async fn request_stop(dir: &Path, pid: u32, grace_seconds: u64, now: Timestamp) -> std::io::Result<StopSent> {
    if read_stop_request(dir).is_none() {
        std::fs::write(dir.join(STOP_REQUEST_FILE), now.to_string())?;
    }
    match control(dir, &ControlRequest::Stop { grace_seconds }).await {
        Ok(reply) => Ok(StopSent::Control { ok: reply.ok, error: reply.error }),
        Err(_) => Ok(if signal_if_ours(pid, dir, Signal::SIGTERM, launcher_of_dir_alive) {
            StopSent::Terminated
        } else {
            StopSent::Gone
        }),
    }
}

fn signal_if_ours(pid: u32, dir: &Path, signal: Signal, ours: fn(u32, &Path) -> bool) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    ours(pid, dir) && kill(Pid::from_raw(raw), signal).is_ok()
}

/// SIGKILL the launcher `pid` of `dir`, and its QEMU. Returns whether the launcher got the signal.
pub fn kill_launcher(dir: &Path, pid: u32) -> bool {
    let killed = signal_if_ours(pid, dir, Signal::SIGKILL, launcher_of_dir_alive);
    kill_leftover_qemu(dir, read_state(dir).as_ref());
    killed
}

/// SIGKILL the QEMU named in `state` if it still runs and is really a QEMU of this folder.
pub fn kill_leftover_qemu(dir: &Path, state: Option<&LauncherState>) -> bool {
    match state.and_then(|s| s.qemu_pid) {
        Some(pid) => signal_if_ours(pid, dir, Signal::SIGKILL, pid_runs_in_dir),
        None => false,
    }
}

/// Why a pod folder could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("the launcher (pid {pid}) of {dir} still runs")]
    LauncherRuns { pid: u32, dir: PathBuf },
    #[error("cannot remove {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Remove the folder `dir`, after killing a QEMU its launcher left behind. Refuses while the
/// launcher runs.
pub fn remove_pod_dir(dir: &Path) -> Result<(), RemoveError> {
    if let Some(pid) = launcher_pid(dir).filter(|pid| launcher_of_dir_alive(*pid, dir)) {
        return Err(RemoveError::LauncherRuns { pid, dir: dir.to_path_buf() });
    }
    kill_leftover_qemu(dir, read_state(dir).as_ref());
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RemoveError::Io { dir: dir.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_plain_names() {
        assert!(is_uid("0f6c1d2e-1111-4a4a-9b9b-123456789abc"));
        for bad in ["", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(!is_uid(bad), "{bad:?}");
        }
    }

    #[test]
    fn an_empty_folder_reads_as_never_started() {
        let dir = tempfile::tempdir().unwrap();
        let local = read_local(dir.path());
        assert!(local.dir_exists && !local.spec_written);
        assert_eq!(local.launcher, LauncherProcess::NeverStarted);
        assert_eq!(read_local(&dir.path().join("missing")), LocalState::default());
    }

    #[test]
    fn a_pid_of_another_process_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        // This test process is neither a launcher nor a process of the folder.
        std::fs::write(dir.path().join(PID_FILE), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(read_local(dir.path()).launcher, LauncherProcess::Exited { pid: std::process::id() });
        assert!(!pid_runs_in_dir(std::process::id(), dir.path()));
        assert!(!kill_leftover_qemu(
            dir.path(),
            Some(&LauncherState {
                phase: ferrovirt_launcher::spec::LauncherPhase::Running,
                reason: String::new(),
                message: String::new(),
                qemu_pid: Some(std::process::id()),
                kvm: false,
                since: String::new(),
                mac: None,
                ip: None,
            })
        ));
    }

    #[test]
    fn a_folder_path_matches_whole_arguments_and_prefixes_only() {
        // `sh -c 'sleep 30; :' name arg`: a shell that stays (the `:` keeps it from exec'ing sleep).
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; :", "fake-qemu", "/data/pods/abc/disk.qcow2"])
            .spawn()
            .unwrap();
        let pid = child.id();
        // The kernel fills in the command line a moment after spawn returns.
        for _ in 0..100 {
            if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sh\0")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(pid_runs_in_dir(pid, Path::new("/data/pods/abc")));
        assert!(!pid_runs_in_dir(pid, Path::new("/data/pods/ab")));
        assert!(!pid_runs_in_dir(pid, Path::new("/data/pods/abc/disk")));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
