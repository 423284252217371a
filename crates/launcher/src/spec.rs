//! The contract between the node agent and a launcher: one folder per launcher Pod.
//!
//! ```text
//!  <node data>/pods/<pod-uid>/
//!     spec.json       LaunchSpec, written by the node agent before it starts the launcher
//!     launcher.pid    the launcher's pid (the node agent finds running launchers again from it)
//!     launcher.log    the launcher's own log (stderr)
//!     state.json      LauncherState, rewritten atomically by the launcher on every change
//!     control.sock    JSON-lines commands to the launcher (ControlRequest -> ControlReply)
//!     console.sock    the serial console (raw bytes both ways), serial.log* its rotated log
//!     vnc.sock        QEMU's VNC server (RFB) for the VM's screen (absent if autoattachGraphicsDevice: false)
//!     qmp.sock, serial.sock, disks ...   the launcher's and QEMU's own files
//! ```
//!
//! The launcher runs in its own session: killing the node agent (even with SIGKILL) leaves it and
//! its guest running, and a restarted node agent picks it up from this folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const SPEC_FILE: &str = "spec.json";
pub const STATE_FILE: &str = "state.json";
pub const PID_FILE: &str = "launcher.pid";
pub const LOG_FILE: &str = "launcher.log";
pub const CONTROL_SOCKET: &str = "control.sock";
pub const CONSOLE_SOCKET: &str = "console.sock";
/// QEMU's VNC server (raw RFB) showing the VM's VGA screen; the node agent relays it to clients.
pub const VNC_SOCKET: &str = "vnc.sock";
pub const SERIAL_LOG: &str = "serial.log";

/// Everything a launcher needs to run one VMI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchSpec {
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    /// The VMI as stored by the API server (its spec is what runs).
    pub vmi: serde_json::Value,
    /// Use KVM (the node's probe says it works and the VM allows it) or TCG.
    pub kvm: bool,
    pub qemu_binary: PathBuf,
    /// The node's image cache for containerDisks.
    pub cache_dir: PathBuf,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    #[serde(default)]
    pub allowed_host_disk_dirs: Vec<PathBuf>,
    /// Secrets the VMI refers to, resolved by the node agent: name -> key -> bytes (base64 in JSON).
    #[serde(default)]
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// cgroup root (e.g. /sys/fs/cgroup) and the limits from the Pod's resources.
    pub cgroup_root: PathBuf,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
}

/// Where a launcher's VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LauncherPhase {
    /// Disks are being prepared, QEMU is starting.
    Preparing,
    Running,
    Paused,
    /// A graceful stop is under way.
    Stopping,
    /// The guest stopped: it shut itself down, or was stopped on request.
    Succeeded,
    /// QEMU crashed, the guest panicked, or preparing the VM failed.
    Failed,
}

impl LauncherPhase {
    pub fn is_final(self) -> bool {
        matches!(self, LauncherPhase::Succeeded | LauncherPhase::Failed)
    }
}

/// What a launcher reports in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LauncherState {
    pub phase: LauncherPhase,
    /// Short machine-readable reason (e.g. GuestShutdown, StopRequested, QemuCrashed, PrepareFailed).
    pub reason: String,
    pub message: String,
    pub qemu_pid: Option<u32>,
    pub kvm: bool,
    /// RFC 3339 time of the last change.
    pub since: String,
    /// The guest's MAC and the address QEMU's user-mode network gives it.
    pub mac: Option<String>,
    pub ip: Option<String>,
}

/// A command for a launcher, one JSON object per line on `control.sock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ControlRequest {
    Pause,
    Unpause,
    /// ACPI power button, then QEMU is killed after `grace_seconds`.
    Stop { grace_seconds: u64 },
    SoftReboot,
    Reset,
    Status,
    /// Make the guest's TCP `guest_port` reachable on a loopback port of the host (QEMU's user-mode
    /// network `hostfwd`); the reply's `port` names it. Asking again gives the same port.
    Forward { guest_port: u16 },
}

/// The answer to a [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<LauncherState>,
    /// The host port of a [`ControlRequest::Forward`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Read a launcher's state from its folder.
pub fn read_state(dir: &Path) -> Option<LauncherState> {
    std::fs::read(dir.join(STATE_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

/// Write a file atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Whether `pid` is a live launcher (not a recycled pid of something else).
pub fn launcher_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.iter().any(|a| *a == b"launcher")
        })
        .unwrap_or(false)
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
            .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_requests_are_tagged_json() {
        let r: ControlRequest = serde_json::from_str(r#"{"command":"stop","graceSeconds":30}"#).unwrap();
        assert_eq!(r, ControlRequest::Stop { grace_seconds: 30 });
        assert_eq!(serde_json::to_string(&ControlRequest::Pause).unwrap(), r#"{"command":"pause"}"#);
    }

    #[test]
    fn this_process_is_not_a_launcher() {
        assert!(!launcher_alive(std::process::id()));
        assert!(!launcher_alive(u32::MAX));
    }
}
