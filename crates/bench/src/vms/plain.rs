//! The same guest booted by plain QEMU with the launcher's own arguments, for comparison.
//!
//! ```text
//!  pod folder (while the VM runs) ──prepare──▶ <plain dir>/<name>/: a new qcow2 overlay on the same
//!                                                cached base image, a copy of the cloud-init image
//!  spawn qemu <argv moved to the plain dir, -S dropped> ──▶ connect to its serial socket (retry
//!  every millisecond) ──▶ first byte, boot line, marker ──▶ RSS ──▶ SIGTERM, then SIGKILL, by PID
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferrovirt_disks::{qemu_img, DiskFormat};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use super::argv::{self, FolderRef, Role};
use super::console::Scan;
use super::procfs;

/// The launcher's QEMU command line, as read from `/proc/<pid>/cmdline`.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub binary: String,
    pub args: Vec<String>,
    /// The pod folder the paths are in.
    pub pod_dir: String,
    pub refs: Vec<FolderRef>,
}

impl Recorded {
    /// Reads the command line of `qemu_pid`, which must name `pod_dir`.
    pub fn read(qemu_pid: u32, pod_dir: &Path) -> anyhow::Result<Recorded> {
        let pod_dir = pod_dir
            .to_str()
            .context("pod folder is not UTF-8")?
            .to_owned();
        let raw = procfs::cmdline(qemu_pid).context("QEMU is gone")?;
        anyhow::ensure!(
            procfs::cmdline_contains(&raw, &pod_dir),
            "process {qemu_pid} is not the QEMU of {pod_dir}"
        );
        let mut all = argv::parse_cmdline(&raw);
        anyhow::ensure!(!all.is_empty(), "empty command line");
        let binary = all.remove(0);
        let refs = argv::folder_refs(&all, &pod_dir);
        Ok(Recorded {
            binary,
            args: all,
            pod_dir,
            refs,
        })
    }

    /// Makes `dir` ready to run this command line in: a new overlay for each qcow2 disk with a
    /// backing image (on the same backing image), a copy of every other disk file.
    pub async fn prepare(&self, dir: &Path) -> anyhow::Result<()> {
        for r in self.refs.iter().filter(|r| r.role == Role::Disk) {
            let src = Path::new(&self.pod_dir).join(&r.name);
            let dst = dir.join(&r.name);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match backing_of(&src).await? {
                Some((backing, format)) => {
                    qemu_img::run(&qemu_img::overlay_args(&backing, format, &dst))
                        .await
                        .with_context(|| format!("creating an overlay on {}", backing.display()))?
                }
                None => {
                    std::fs::copy(&src, &dst)
                        .with_context(|| format!("copying {}", src.display()))?;
                }
            }
        }
        Ok(())
    }

    /// The arguments for a plain run in `dir`.
    pub fn args_in(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
        let to = dir.to_str().context("folder is not UTF-8")?;
        Ok(argv::rewrite(&self.args, &self.pod_dir, to)?)
    }

    pub fn started_paused(&self) -> bool {
        self.args.iter().any(|a| a == "-S")
    }
}

/// `qemu-img info` of an image: its backing file and format, if it has one.
async fn backing_of(image: &Path) -> anyhow::Result<Option<(PathBuf, DiskFormat)>> {
    let out = tokio::process::Command::new(qemu_img::qemu_img_binary())
        .args(["info", "--output=json", "-U"])
        .arg(image)
        .output()
        .await
        .context("running qemu-img info")?;
    if !out.status.success() {
        bail!(
            "qemu-img info {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let Some(path) = info
        .get("full-backing-filename")
        .or_else(|| info.get("backing-filename"))
        .and_then(|v| v.as_str())
    else {
        return Ok(None);
    };
    let format = match info.get("backing-filename-format").and_then(|v| v.as_str()) {
        Some("qcow2") => DiskFormat::Qcow2,
        _ => DiskFormat::Raw,
    };
    Ok(Some((PathBuf::from(path), format)))
}

/// What one plain QEMU showed, relative to the instant just before it was spawned.
#[derive(Debug, Clone)]
pub struct PlainBoot {
    pub spawned: Instant,
    pub connected: Option<Instant>,
    pub scan: Scan<Instant>,
    pub rss_kib: Option<u64>,
    pub pid: u32,
}

/// A plain QEMU being watched.
struct Running {
    child: tokio::process::Child,
    pid: u32,
    spawned: Instant,
    state: Arc<Mutex<(Option<Instant>, Scan<Instant>)>>,
    reader: tokio::task::JoinHandle<()>,
}

/// Boots one plain QEMU per folder of `dirs`, `interval` apart, waits until every console shows
/// every needle (or `timeout`), reads each QEMU's RSS, and stops them all.
pub async fn boot(
    rec: &Recorded,
    dirs: &[PathBuf],
    interval: Duration,
    needles: &[String],
    timeout: Duration,
) -> anyhow::Result<Vec<PlainBoot>> {
    let mut running: Vec<Running> = Vec::new();
    let result = boot_inner(rec, dirs, interval, needles, timeout, &mut running).await;
    let rss: Vec<Option<u64>> = running.iter().map(|r| procfs::rss_kib(r.pid)).collect();
    stop_all(&mut running).await;
    result?;
    Ok(running
        .iter()
        .zip(rss)
        .map(|(r, rss_kib)| {
            let st = r.state.lock().unwrap_or_else(|e| e.into_inner());
            PlainBoot {
                spawned: r.spawned,
                connected: st.0,
                scan: st.1.clone(),
                rss_kib,
                pid: r.pid,
            }
        })
        .collect())
}

async fn boot_inner(
    rec: &Recorded,
    dirs: &[PathBuf],
    interval: Duration,
    needles: &[String],
    timeout: Duration,
    running: &mut Vec<Running>,
) -> anyhow::Result<()> {
    let t0 = tokio::time::Instant::now();
    for (i, dir) in dirs.iter().enumerate() {
        tokio::time::sleep_until(t0 + interval * i as u32).await;
        let args = rec.args_in(dir)?;
        let socket = argv::serial_socket(&args).context("the command line has no serial socket")?;
        let log = std::fs::File::create(dir.join("qemu.log"))?;
        let spawned = Instant::now();
        let child = tokio::process::Command::new(&rec.binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", rec.binary))?;
        let pid = child.id().context("QEMU exited at once")?;
        let state = Arc::new(Mutex::new((None, Scan::new(needles))));
        let reader = tokio::spawn(read_serial(PathBuf::from(socket), state.clone()));
        running.push(Running {
            child,
            pid,
            spawned,
            state,
            reader,
        });
    }
    let deadline = Instant::now() + timeout;
    loop {
        let done = running
            .iter()
            .all(|r| r.state.lock().map(|s| s.1.done()).unwrap_or(false));
        if done {
            return Ok(());
        }
        for (r, dir) in running.iter_mut().zip(dirs) {
            if let Ok(Some(status)) = r.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
                bail!(
                    "plain QEMU {} exited early ({status}): {}",
                    r.pid,
                    log.trim()
                );
            }
        }
        if Instant::now() > deadline {
            eprintln!("plain QEMU: timed out after {timeout:?} waiting for the console");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Connects to the serial socket as soon as QEMU creates it and records what arrives.
async fn read_serial(socket: PathBuf, state: Arc<Mutex<(Option<Instant>, Scan<Instant>)>>) {
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(_) => return,
        }
    };
    if let Ok(mut s) = state.lock() {
        s.0 = Some(Instant::now());
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let now = Instant::now();
                if let Ok(mut s) = state.lock() {
                    s.1.feed(&buf[..n], now);
                }
            }
        }
    }
}

/// SIGTERM (QEMU exits at once on it), then SIGKILL after 5 s; always by PID.
async fn stop_all(running: &mut [Running]) {
    for r in running.iter() {
        if procfs::alive(r.pid) {
            let _ = kill(Pid::from_raw(r.pid as i32), Signal::SIGTERM);
        }
    }
    for r in running.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), r.child.wait())
            .await
            .is_err()
        {
            let _ = r.child.kill().await;
        }
        r.reader.abort();
    }
}
