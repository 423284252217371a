//! What the end-to-end tests that run real guests share: the test guest in a loopback registry, VM
//! manifests, a recorder of every VMI change seen on a watch, waiting for a VMI to run, the guest's
//! serial console (its log and its socket), and finding, checking and killing the processes of a
//! launcher Pod's folder, by PID.
//!
//! ```text
//!   test ──create VM──▶ API ──▶ controller ──▶ VMI ──▶ Pod ──▶ node agent ──▶ launcher ──▶ QEMU
//!     │                                         │                              │
//!     │◀──────────── VmiHistory (watch) ────────┘                              │
//!     └─────── <pods>/<pod uid>/console.sock, serial.log, state.json ◀─────────┘
//! ```
//!
//! Each test file includes this with `mod real_vm;` and uses the parts it needs.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_launcher::spec;
use k8s_openapi::api::core::v1::Pod;

/// What the test guest prints on its serial console once its init runs.
pub const BOOT_MARKER: &str = "ferrovirt-guest: booted";
/// How long a guest may take from VM create (or restart) to Running and its boot marker (TCG on 2
/// busy cores).
pub const BOOT_SECS: u64 = 180;

/// Push the test guest (built by scripts/build-guest.sh) to `registry`; returns its image reference.
pub async fn push_guest(registry: &RegistryProcess) -> String {
    let disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest/disk.qcow2");
    assert!(disk.is_file(), "the test guest is not built: run scripts/build-guest.sh");
    registry.push_disk_file("ferrovirt/guest:latest", &disk).await.unwrap();
    registry.image("ferrovirt/guest:latest")
}

/// A VM named `name` running the test guest from `image` with `run_strategy`, 128Mi.
pub fn vm_manifest(name: &str, image: &str, run_strategy: &str) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "runStrategy": run_strategy,
            "template": {"spec": {
                "domain": {
                    "devices": {"disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}]},
                    "resources": {"requests": {"memory": "128Mi"}}
                },
                "terminationGracePeriodSeconds": 30,
                "volumes": [{"name": "containerdisk", "containerDisk": {"image": image}}]
            }}
        }
    }))
    .unwrap()
}

/// Poll `f` every 250 ms until it gives `Some`, for at most `secs`; on timeout panic naming `what`
/// and quoting `logs()` (the components' logs).
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, logs: &(dyn Fn() -> String + Sync), mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The last `n` lines of the file at `path` (empty if unreadable).
pub fn file_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A VMI's phase as text (`"Running"`, `"Succeeded"`, ...), `""` when it has none yet.
pub fn phase_of(vmi: &VirtualMachineInstance) -> String {
    vmi.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}")).unwrap_or_default()
}

/// A VM's printableStatus as text, `""` when it has none yet.
pub fn printable_status(vm: &VirtualMachine) -> String {
    vm.status.as_ref().and_then(|s| s.printable_status).map(|p| format!("{p:?}")).unwrap_or_default()
}

/// One change of a VMI seen on the watch.
#[derive(Clone, Debug, PartialEq)]
pub struct VmiSeen {
    pub name: String,
    pub uid: String,
    /// The phase, `""` before the first status.
    pub phase: String,
    /// The object was deleted (this is its last state).
    pub deleted: bool,
}

/// Every VMI change in a namespace, recorded by a watch that runs from creation to drop, so that
/// short-lived states (a VMI that is Succeeded for a moment before the controller deletes it) are
/// not missed by polling.
pub struct VmiHistory {
    seen: Arc<Mutex<Vec<VmiSeen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl VmiHistory {
    pub fn start(vmis: Api<VirtualMachineInstance>) -> VmiHistory {
        let seen = Arc::new(Mutex::new(Vec::<VmiSeen>::new()));
        let sink = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut stream = watcher(vmis, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                let (vmi, deleted) = match event {
                    Ok(watcher::Event::Apply(v) | watcher::Event::InitApply(v)) => (v, false),
                    Ok(watcher::Event::Delete(v)) => (v, true),
                    Ok(_) | Err(_) => continue,
                };
                let entry = VmiSeen {
                    name: vmi.metadata.name.clone().unwrap_or_default(),
                    uid: vmi.metadata.uid.clone().unwrap_or_default(),
                    phase: phase_of(&vmi),
                    deleted,
                };
                let mut seen = sink.lock().unwrap();
                // Record changes only: a relist repeats what is known.
                let known = seen.iter().rev().find(|s| s.uid == entry.uid);
                if known != Some(&entry) {
                    seen.push(entry);
                }
            }
        });
        VmiHistory { seen, task }
    }

    /// Everything seen so far.
    pub fn all(&self) -> Vec<VmiSeen> {
        self.seen.lock().unwrap().clone()
    }

    /// The UIDs of the VMIs named `name` seen so far, in order of first sight.
    pub fn uids(&self, name: &str) -> Vec<String> {
        let mut uids = Vec::new();
        for s in self.seen.lock().unwrap().iter().filter(|s| s.name == name) {
            if !uids.contains(&s.uid) {
                uids.push(s.uid.clone());
            }
        }
        uids
    }

    /// The phases VMI `uid` went through (consecutive repeats folded).
    pub fn phases(&self, uid: &str) -> Vec<String> {
        let mut phases: Vec<String> = Vec::new();
        for s in self.seen.lock().unwrap().iter().filter(|s| s.uid == uid) {
            if phases.last() != Some(&s.phase) {
                phases.push(s.phase.clone());
            }
        }
        phases
    }

    /// Whether VMI `uid` was seen in `phase`.
    pub fn saw_phase(&self, uid: &str, phase: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|s| s.uid == uid && s.phase == phase)
    }

    /// What was seen of the VMIs named `name`, for failure messages.
    pub fn describe(&self, name: &str) -> String {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name)
            .map(|s| format!("  {} {}{}", s.uid, s.phase, if s.deleted { " (deleted)" } else { "" }))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for VmiHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The VMI named `name` once it is Running on `node` with a uid other than `not_uid`: its uid and
/// its launcher Pod's folder under `pods_dir`.
pub async fn running_vmi(
    vmis: &Api<VirtualMachineInstance>,
    pods: &Api<Pod>,
    pods_dir: &Path,
    node: &str,
    name: &str,
    not_uid: Option<&str>,
    logs: &(dyn Fn() -> String + Sync),
) -> (String, PathBuf) {
    eventually(BOOT_SECS, &format!("VMI {name} to be Running (not {not_uid:?})"), logs, || async {
        let vmi = vmis.get_opt(name).await.ok()??;
        let uid = vmi.metadata.uid.clone()?;
        if Some(uid.as_str()) == not_uid || phase_of(&vmi) != "Running" {
            return None;
        }
        assert_eq!(vmi.status.as_ref().unwrap().node_name.as_deref(), Some(node), "VMI {name} runs on {node}");
        let selector = format!("kubevirt.io/created-by={uid}");
        let pod = pods.list(&ListParams::default().labels(&selector)).await.ok()?.items.into_iter().next()?;
        Some((uid, pods_dir.join(pod.metadata.uid?)))
    })
    .await
}

/// Wait until the serial log in `dir` contains `needle`.
pub async fn console_shows(dir: &Path, needle: &str, secs: u64, logs: &(dyn Fn() -> String + Sync)) {
    eventually(secs, &format!("{needle:?} in {}", dir.join(spec::SERIAL_LOG).display()), logs, || async {
        std::fs::read_to_string(dir.join(spec::SERIAL_LOG)).ok().filter(|l| l.contains(needle)).map(|_| ())
    })
    .await;
}

/// Connect to the serial console of the VM in `dir`.
pub async fn console_connect(dir: &Path) -> std::io::Result<UnixStream> {
    UnixStream::connect(dir.join(spec::CONSOLE_SOCKET)).await
}

/// Type `poweroff` on the guest's serial console (its root shell), again every 15 s while the
/// launcher still reports the guest running (the shell may start a moment after the boot marker),
/// until the launcher reports a final phase or the folder is gone (the node agent removes it soon
/// after the launcher's end). Returns the final state if it was seen before the folder went.
pub async fn poweroff_from_inside(dir: &Path, secs: u64, logs: &(dyn Fn() -> String + Sync)) -> Option<spec::LauncherState> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last_state = None;
    // Some(final state), or None once the folder is gone; Err(()) while the guest still runs.
    let check = |last: &mut Option<spec::LauncherState>| -> Result<Option<spec::LauncherState>, ()> {
        match spec::read_state(dir) {
            Some(state) if state.phase.is_final() => Ok(Some(state)),
            Some(state) => {
                *last = Some(state);
                Err(())
            }
            None if !dir.exists() => Ok(None),
            None => Err(()),
        }
    };
    loop {
        if let Ok(done) = check(&mut last_state) {
            return done;
        }
        if let Ok(mut console) = console_connect(dir).await {
            // An empty line first: whatever was typed before is submitted and a fresh prompt comes.
            let _ = console.write_all("\npoweroff\n".to_string().as_bytes()).await;
            let _ = console.flush().await;
            let resend_at = tokio::time::Instant::now() + Duration::from_secs(15);
            let mut buf = [0u8; 4096];
            let mut open = true;
            // Drain the console (so the launcher never skips us) while waiting for the guest to stop.
            while tokio::time::Instant::now() < resend_at {
                if let Ok(done) = check(&mut last_state) {
                    return done;
                }
                if open {
                    match tokio::time::timeout(Duration::from_millis(100), console.read(&mut buf)).await {
                        // The console closed: QEMU is gone; the state will say how it ended.
                        Ok(Ok(0)) | Ok(Err(_)) => open = false,
                        Ok(Ok(_)) | Err(_) => {}
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the guest in {} did not power off within {secs}s of typing `poweroff`; launcher state {last_state:?}\n{}",
            dir.display(),
            logs()
        );
    }
}

/// Ask the guest for its uptime on the serial console (`cat /proc/uptime`, first number), retrying
/// for up to `secs`. Only output that arrives after the question counts.
pub async fn guest_uptime(dir: &Path, secs: u64) -> anyhow::Result<f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut attempt = 0u32;
    let mut transcript = String::new();
    while tokio::time::Instant::now() < deadline {
        attempt += 1;
        let mut console = match console_connect(dir).await {
            Ok(c) => c,
            Err(e) => {
                transcript.push_str(&format!("[connect: {e}]\n"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // The answer line is `UPTIME<n>=<seconds> <idle>`; the echo of the typed line has
        // `$(cat ...)` after the `=`, so it never parses as an answer.
        let tag = format!("UPTIME{attempt}=");
        console.write_all(format!("\necho {tag}$(cat /proc/uptime)\n").as_bytes()).await?;
        let mut seen = Vec::new();
        let ask_until = (tokio::time::Instant::now() + Duration::from_secs(10)).min(deadline);
        let mut buf = [0u8; 4096];
        while tokio::time::Instant::now() < ask_until {
            match tokio::time::timeout(Duration::from_millis(200), console.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => {
                    transcript.push_str(&format!("[read: {e}]\n"));
                    break;
                }
                Err(_) => {}
            }
            let text = String::from_utf8_lossy(&seen);
            for (at, _) in text.match_indices(&tag) {
                let rest = &text[at + tag.len()..];
                let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
                // A whole number: a space follows it (the idle time comes next).
                if !number.is_empty() && rest[number.len()..].starts_with(' ') {
                    if let Ok(v) = number.parse() {
                        return Ok(v);
                    }
                }
            }
        }
        transcript.push_str(&String::from_utf8_lossy(&seen));
    }
    anyhow::bail!("no uptime answer on the console of {} within {secs}s; the console said:\n{transcript}", dir.display())
}

/// Whether `pid` is a live process (a zombie, dead but not yet reaped, is not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// The command line of `pid`, arguments joined by spaces ("" if it is gone).
pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_string()
}

/// Whether process `pid` runs for the pod folder `dir` (its command line names the folder).
pub fn runs_in(pid: u32, dir: &Path) -> bool {
    alive(pid) && cmdline(pid).contains(dir.to_str().unwrap())
}

/// The QEMU pid the launcher in `dir` reports.
pub fn qemu_pid(dir: &Path) -> u32 {
    spec::read_state(dir).and_then(|s| s.qemu_pid).unwrap_or_else(|| panic!("no QEMU pid in {}/state.json", dir.display()))
}

/// The launcher pid recorded in `dir`.
pub fn launcher_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(spec::PID_FILE)).ok()?.trim().parse().ok()
}

/// Every live process whose command line names `dir` (its launcher and QEMU), as (pid, command line).
pub fn processes_of(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_str().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let cmd = cmdline(pid);
        if cmd.contains(needle) && alive(pid) {
            found.push((pid, cmd));
        }
    }
    found
}

/// The folders under `pods_dir` (one per launcher Pod).
pub fn pod_folders(pods_dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(pods_dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

/// SIGKILL `pid`.
pub fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
}

/// Kill (SIGKILL, by PID) every launcher and QEMU still running for a folder under `pods_dir`:
/// nothing a test started may outlive it.
pub fn sweep_pod_processes(pods_dir: &Path) {
    for dir in pod_folders(pods_dir) {
        let recorded = [spec::read_state(&dir).and_then(|s| s.qemu_pid), launcher_pid(&dir)];
        for pid in recorded.into_iter().flatten() {
            if runs_in(pid, &dir) {
                kill9(pid);
            }
        }
        for (pid, _) in processes_of(&dir) {
            kill9(pid);
        }
    }
}

/// `PUT /apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/<vm>/<action>`; returns
/// the HTTP status and the body.
pub async fn vm_subresource(client: &kube::Client, vm: &str, action: &str) -> (http::StatusCode, String) {
    let req = http::Request::builder()
        .method("PUT")
        .uri(format!("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{vm}/{action}"))
        .header("Content-Type", "application/json")
        .body(kube::client::Body::from(b"{}".to_vec()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect_bytes().await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    (status, body)
}

/// Type `command` on the serial console of the VM in `dir` (the guest's root shell) and return the
/// first whole output line after it for which `answer` is true, retrying for up to `secs` (the
/// shell may come up a moment after the boot marker). Lines are taken without their `\r`; the echo
/// of the typed line itself is never an answer.
pub async fn console_answer(dir: &Path, command: &str, answer: impl Fn(&str) -> bool, secs: u64) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut transcript = String::new();
    while tokio::time::Instant::now() < deadline {
        let mut console = match console_connect(dir).await {
            Ok(c) => c,
            Err(e) => {
                transcript.push_str(&format!("[connect: {e}]\n"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        console.write_all(format!("\n{command}\n").as_bytes()).await?;
        let mut seen = Vec::new();
        let ask_until = (tokio::time::Instant::now() + Duration::from_secs(10)).min(deadline);
        let mut buf = [0u8; 4096];
        while tokio::time::Instant::now() < ask_until {
            match tokio::time::timeout(Duration::from_millis(200), console.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => {
                    transcript.push_str(&format!("[read: {e}]\n"));
                    break;
                }
                Err(_) => {}
            }
            let text = String::from_utf8_lossy(&seen);
            // Only complete lines after the echo of the command count.
            let Some(echo) = text.find(command) else { continue };
            let after = &text[echo + command.len()..];
            let complete = &after[..after.rfind('\n').unwrap_or(0)];
            if let Some(line) = complete.split('\n').map(|l| l.trim_end_matches('\r')).find(|l| answer(l)) {
                return Ok(line.to_string());
            }
        }
        transcript.push_str(&String::from_utf8_lossy(&seen));
    }
    anyhow::bail!("no answer to {command:?} on the console of {} within {secs}s; the console said:\n{transcript}", dir.display())
}
