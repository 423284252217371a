//! The launcher process (`ferrovirt launcher --dir <pod dir>`): one VM from spec to exit.
//!
//! ```text
//!  spec.json ─► Preparing: kernelBoot files into the node cache, prepare disks (undo on failure)
//!    ─► qemu_argv ─► spawn QEMU (-S, paused)
//!    ─► QEMU into the VM's cgroup ─► QMP connect ─► console attached ─► cont ─► Running
//!    ◀─► Paused (pause/unpause)      ─► Stopping (stop: ACPI power button, kill after the grace period)
//!    ─► Succeeded (guest shut down, or stopped on request) | Failed (crash, panic, prepare failed)
//! ```
//!
//! One task (this one) owns QEMU and its QMP connection; control-socket clients send it commands with
//! a reply channel. Every change of phase is written atomically to `state.json`, which the node
//! agent follows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use ferrovirt_api::kubevirt::VirtualMachineInstance;
use ferrovirt_disks::kernel_boot::{plan_kernel_boot, prepare_kernel_boot, PreparedKernelBoot};
use ferrovirt_disks::{DiskContext, PreparedDisk};

use crate::cgroup::{CgroupLimits, VmCgroup};
use crate::console::{Console, ConsoleConfig};
use crate::qemu::{
    qemu_argv, Accel, BackingImage, CpuTopology, DiskBus, DiskConfig, DiskFormat, Firmware, KernelBoot, MachineType, MacAddress,
    NicBackend, NicConfig, NicModel, QemuConfig,
};
use crate::qmp::{Qmp, QmpEvent};
use crate::spec::{self, ControlReply, ControlRequest, LaunchSpec, LauncherPhase, LauncherState};

/// The address QEMU's user-mode network gives the guest.
pub const USER_NET_GUEST_IP: &str = "10.0.2.15";
/// Where Debian's OVMF keeps its firmware.
const OVMF_DIR: &str = "/usr/share/OVMF";

/// Build the QEMU configuration for a VMI from its prepared disks and kernelBoot files (pure).
pub fn qemu_config(
    spec: &LaunchSpec,
    vmi: &VirtualMachineInstance,
    disks: &[PreparedDisk],
    backing: &[Option<BackingImage>],
    kernel_boot: Option<&PreparedKernelBoot>,
    dir: &Path,
) -> anyhow::Result<QemuConfig> {
    let domain = &vmi.spec.domain;
    let name = format!(
        "{}/{}",
        vmi.metadata.namespace.as_deref().unwrap_or("default"),
        vmi.metadata.name.as_deref().unwrap_or("vm")
    );
    let uuid = domain
        .firmware
        .as_ref()
        .and_then(|f| f.uuid.as_deref())
        .and_then(|u| uuid::Uuid::parse_str(u).ok())
        .unwrap_or_else(|| uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, spec.pod_uid.as_bytes()));
    let machine = match domain.machine.as_ref().map(|m| m.type_.as_str()) {
        Some("pc") => MachineType::Pc,
        _ => MachineType::Q35,
    };
    let cpu = domain.cpu.clone().unwrap_or_default();
    let memory = domain
        .memory
        .as_ref()
        .and_then(|m| m.guest.as_ref())
        .or_else(|| domain.resources.request("memory"))
        .or_else(|| domain.resources.limit("memory"))
        .context("the VMI gives no guest memory")?;
    let memory_bytes = ferrovirt_api::quantity::parse_quantity_bytes(&memory.0)
        .map_err(|e| anyhow::anyhow!("guest memory {:?}: {e}", memory.0))?;
    // As KubeVirt: a VGA card with VNC unless devices.autoattachGraphicsDevice is false.
    let vnc_socket = (domain.devices.autoattach_graphics_device != Some(false)).then(|| dir.join(spec::VNC_SOCKET));
    let efi = domain.firmware.as_ref().and_then(|f| f.bootloader.as_ref()).and_then(|b| b.efi.as_ref()).is_some();
    let firmware = if efi {
        Firmware::Efi { code: PathBuf::from(OVMF_DIR).join("OVMF_CODE.fd"), vars: dir.join("OVMF_VARS.fd") }
    } else {
        Firmware::Bios
    };
    let disks = disks
        .iter()
        .zip(backing)
        .map(|(d, b)| {
            let bus = match d.bus.as_str() {
                "sata" => DiskBus::Sata,
                "scsi" => DiskBus::Scsi,
                "virtio" | "" => DiskBus::Virtio,
                other => anyhow::bail!("disk {}: bus {other:?} is not supported by this launcher", d.name),
            };
            Ok(DiskConfig {
                id: d.name.clone(),
                path: d.path.clone(),
                format: match d.format {
                    ferrovirt_disks::DiskFormat::Raw => DiskFormat::Raw,
                    ferrovirt_disks::DiskFormat::Qcow2 => DiskFormat::Qcow2,
                },
                bus,
                readonly: d.readonly,
                cdrom: d.cdrom,
                boot_order: d.boot_order,
                serial: d.serial.clone(),
                cache: None,
                backing: b.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut nics = Vec::new();
    for iface in domain.devices.interfaces() {
        if iface.masquerade.is_none() {
            anyhow::bail!("interface {}: only masquerade (pod network) is supported by this launcher", iface.name);
        }
        let mac = match iface.mac_address.as_deref() {
            Some(m) => m.parse::<MacAddress>().map_err(|e| anyhow::anyhow!("interface {}: {e:?}", iface.name))?,
            None => derived_mac(&spec.pod_uid, &iface.name),
        };
        let model = match iface.model.as_deref() {
            None | Some("virtio") => NicModel::VirtioNetPci,
            Some("e1000") => NicModel::E1000,
            Some("e1000e") => NicModel::E1000e,
            Some("rtl8139") => NicModel::Rtl8139,
            Some(other) => anyhow::bail!("interface {}: model {other:?} is not supported", iface.name),
        };
        nics.push(NicConfig {
            id: iface.name.clone(),
            mac,
            model,
            backend: NicBackend::User { port_forwards: Vec::new() },
            boot_order: iface.boot_order,
        });
    }
    let mut read_only_dirs = vec![spec.cache_dir.clone()];
    if efi {
        read_only_dirs.push(PathBuf::from(OVMF_DIR));
    }
    Ok(QemuConfig {
        name,
        uuid,
        machine,
        accel: if spec.kvm { Accel::Kvm } else { Accel::Tcg },
        cpu: CpuTopology { sockets: cpu.sockets.unwrap_or(1).max(1), cores: cpu.cores.unwrap_or(1).max(1), threads: cpu.threads.unwrap_or(1).max(1) },
        memory_bytes,
        firmware,
        kernel_boot: kernel_boot.map(|k| KernelBoot {
            kernel: k.kernel.clone(),
            initrd: k.initrd.clone(),
            cmdline: k.kernel_args.clone(),
        }),
        disks,
        nics,
        serial_socket: dir.join("serial.sock"),
        qmp_socket: dir.join("qmp.sock"),
        vnc_socket,
        pidfile: Some(dir.join("qemu.pid")),
        vm_dir: dir.to_path_buf(),
        read_only_dirs,
        start_paused: true,
        sandbox: false,
    })
}

/// A stable, locally administered MAC for an interface of a pod.
pub fn derived_mac(pod_uid: &str, iface: &str) -> MacAddress {
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{pod_uid}/{iface}").as_bytes());
    let b = id.as_bytes();
    MacAddress([0x02, b[0], b[1], b[2], b[3], b[4]])
}

struct Reporter {
    dir: PathBuf,
    state: LauncherState,
}

impl Reporter {
    fn set(&mut self, phase: LauncherPhase, reason: &str, message: impl Into<String>) {
        self.state.phase = phase;
        self.state.reason = reason.to_string();
        self.state.message = message.into();
        self.state.since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.write();
    }

    fn write(&self) {
        match serde_json::to_vec_pretty(&self.state) {
            Ok(b) => {
                if let Err(e) = spec::write_atomic(&self.dir.join(spec::STATE_FILE), &b) {
                    tracing::error!(error = %e, "cannot write state.json");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the state"),
        }
    }
}

type Command = (ControlRequest, oneshot::Sender<ControlReply>);

/// Forward a loopback port of the host to the guest's TCP `guest_port` through QEMU's user-mode
/// network (`hostfwd_add`), once per guest port.
async fn forward(qmp: &Qmp, netdev: Option<&str>, forwards: &mut HashMap<u16, u16>, guest_port: u16) -> Result<u16, String> {
    if let Some(port) = forwards.get(&guest_port) {
        return Ok(*port);
    }
    let netdev = netdev.ok_or("the VM has no pod network interface to forward a port to")?;
    // A free loopback port; QEMU binds it right after (a race only with other local binders).
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| format!("no free local port: {e}"))?.port();
    let command = format!("hostfwd_add {netdev} tcp:127.0.0.1:{port}-:{guest_port}");
    let out = qmp
        .execute("human-monitor-command", Some(serde_json::json!({ "command-line": command })))
        .await
        .map_err(|e| e.to_string())?;
    // HMP answers an empty string on success, a message otherwise.
    match out.as_str().map(str::trim) {
        Some("") | None => {
            forwards.insert(guest_port, port);
            Ok(port)
        }
        Some(message) => Err(format!("QEMU refused the port forward: {message}")),
    }
}

/// Serve `control.sock`: one JSON request per line, one JSON reply per line.
async fn serve_control(listener: UnixListener, tx: mpsc::Sender<Command>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = match serde_json::from_str::<ControlRequest>(&line) {
                    Err(e) => ControlReply { ok: false, error: Some(format!("bad request: {e}")), state: None, port: None },
                    Ok(req) => {
                        let (rtx, rrx) = oneshot::channel();
                        if tx.send((req, rtx)).await.is_err() {
                            return;
                        }
                        rrx.await.unwrap_or(ControlReply { ok: false, error: Some("the launcher is exiting".into()), state: None, port: None })
                    }
                };
                let mut out = serde_json::to_vec(&reply).unwrap_or_default();
                out.push(b'\n');
                if w.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// `qemu-img info` of an overlay this launcher made: its backing image, which QEMU is then told
/// explicitly (QEMU never follows a backing name from an image header on its own).
async fn backing_of(disk: &PreparedDisk) -> anyhow::Result<Option<BackingImage>> {
    if disk.format != ferrovirt_disks::DiskFormat::Qcow2 {
        return Ok(None);
    }
    let out = tokio::process::Command::new(std::env::var_os("FERROVIRT_QEMU_IMG").unwrap_or_else(|| "qemu-img".into()))
        .args(["info", "--output=json", "-U"])
        .arg(&disk.path)
        .output()
        .await
        .context("running qemu-img info")?;
    anyhow::ensure!(out.status.success(), "qemu-img info {}: {}", disk.path.display(), String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let Some(path) = info.get("full-backing-filename").or_else(|| info.get("backing-filename")).and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let format = match info.get("backing-filename-format").and_then(|v| v.as_str()) {
        Some("qcow2") => DiskFormat::Qcow2,
        _ => DiskFormat::Raw,
    };
    Ok(Some(BackingImage { path: PathBuf::from(path), format }))
}

fn secrets(spec: &LaunchSpec) -> ferrovirt_disks::Secrets {
    spec.secrets
        .iter()
        .map(|(name, data)| {
            let decoded = data
                .iter()
                .filter_map(|(k, v)| base64::engine::general_purpose::STANDARD.decode(v).ok().map(|b| (k.clone(), b)))
                .collect();
            (name.clone(), decoded)
        })
        .collect()
}

/// Run the VM described by `<dir>/spec.json` until it ends. Returns when QEMU has exited and the
/// final state is written.
pub async fn run(dir: &Path) -> anyhow::Result<()> {
    let dir = dir.canonicalize().with_context(|| format!("pod folder {}", dir.display()))?;
    let spec: LaunchSpec = serde_json::from_slice(&std::fs::read(dir.join(spec::SPEC_FILE)).context("reading spec.json")?)
        .context("decoding spec.json")?;
    spec::write_atomic(&dir.join(spec::PID_FILE), std::process::id().to_string().as_bytes())?;
    let mut rep = Reporter {
        dir: dir.clone(),
        state: LauncherState {
            phase: LauncherPhase::Preparing,
            reason: "Preparing".into(),
            message: "preparing disks".into(),
            qemu_pid: None,
            kvm: spec.kvm,
            since: String::new(),
            mac: None,
            ip: None,
        },
    };
    rep.set(LauncherPhase::Preparing, "Preparing", "preparing disks");
    match launch(&spec, &dir, &mut rep).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "the VM failed");
            if !rep.state.phase.is_final() {
                let reason = if rep.state.qemu_pid.is_some() { "LauncherFailed" } else { "PrepareFailed" };
                rep.set(LauncherPhase::Failed, reason, format!("{e:#}"));
            }
            Ok(())
        }
    }
}

async fn launch(spec: &LaunchSpec, dir: &Path, rep: &mut Reporter) -> anyhow::Result<()> {
    let vmi: VirtualMachineInstance = serde_json::from_value(spec.vmi.clone()).context("decoding the VMI")?;
    let ctx = DiskContext {
        vmi_name: vmi.metadata.name.clone().unwrap_or_default(),
        vmi_uid: vmi.metadata.uid.clone().unwrap_or_default(),
        vm_dir: dir.to_path_buf(),
        cache_dir: spec.cache_dir.clone(),
        insecure_registries: spec.insecure_registries.clone(),
        allowed_host_disk_dirs: spec.allowed_host_disk_dirs.clone(),
        secrets: secrets(spec),
    };
    // Both plans are checked before anything is fetched or written.
    let kernel_plan = plan_kernel_boot(&vmi.spec, &ctx).context("preparing the kernelBoot")?;
    ferrovirt_disks::plan_disks(&vmi.spec, &ctx).context("preparing disks")?;
    let kernel_boot = match &kernel_plan {
        Some(plan) => Some(prepare_kernel_boot(plan, &ctx).await.context("preparing the kernelBoot")?),
        None => None,
    };
    let disks = ferrovirt_disks::prepare_disks(&vmi.spec, &ctx).await.context("preparing disks")?;
    let mut backing = Vec::new();
    for d in &disks {
        backing.push(backing_of(d).await?);
    }
    let cfg = qemu_config(spec, &vmi, &disks, &backing, kernel_boot.as_ref(), dir)?;
    if let Firmware::Efi { vars, .. } = &cfg.firmware {
        if !vars.exists() {
            std::fs::copy(Path::new(OVMF_DIR).join("OVMF_VARS.fd"), vars).context("copying the EFI variables")?;
        }
    }
    let argv = qemu_argv(&cfg)?;
    for stale in ["qmp.sock", "serial.sock", spec::VNC_SOCKET, spec::CONSOLE_SOCKET, spec::CONTROL_SOCKET] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let log = std::fs::File::create(dir.join("qemu.log"))?;
    let mut child = tokio::process::Command::new(&spec.qemu_binary)
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", spec.qemu_binary.display()))?;
    let qemu_pid = child.id().context("QEMU exited at once")?;
    rep.state.qemu_pid = Some(qemu_pid);
    rep.state.mac = cfg.nics.first().map(|n| n.mac.to_string());
    rep.state.ip = (!cfg.nics.is_empty()).then(|| USER_NET_GUEST_IP.to_string());
    // QEMU starts with its vCPUs stopped (-S): into the cgroup before the guest runs a cycle.
    let limits = CgroupLimits {
        memory_bytes: spec.memory_limit_bytes,
        cpu_millis: spec.cpu_limit_millis,
        pids: Some(4096),
    };
    let cgroup_name = format!("ferrovirt/{}", spec.pod_uid);
    let cgroup = {
        let root = spec.cgroup_root.clone();
        let name = cgroup_name.clone();
        tokio::task::spawn_blocking(move || {
            let cg = VmCgroup::create(&root, &name, &limits)?;
            cg.add_pid(qemu_pid)?;
            Ok::<_, crate::cgroup::CgroupError>(cg)
        })
        .await?
    };
    let cgroup = match cgroup {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(anyhow::anyhow!(e).context("creating the VM's cgroup"));
        }
    };
    let result = drive(spec, dir, rep, &cfg, &mut child).await;
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    if let Some(cg) = cgroup {
        let _ = tokio::task::spawn_blocking(move || cg.remove(true)).await;
    }
    for sock in [spec::CONTROL_SOCKET, spec::CONSOLE_SOCKET, spec::VNC_SOCKET] {
        let _ = std::fs::remove_file(dir.join(sock));
    }
    result
}

async fn drive(spec: &LaunchSpec, dir: &Path, rep: &mut Reporter, cfg: &QemuConfig, child: &mut tokio::process::Child) -> anyhow::Result<()> {
    let (qmp, mut events) = Qmp::connect_with_retry(&cfg.qmp_socket, Duration::from_secs(20)).await.context("connecting to QMP")?;
    let console = Console::start(ConsoleConfig::in_vm_dir(dir, cfg.serial_socket.clone())).await.context("attaching the serial console")?;
    qmp.cont().await.context("starting the vCPUs")?;
    let accel = if spec.kvm { "KVM" } else { "TCG (software emulation)" };
    rep.set(LauncherPhase::Running, "Running", format!("the guest is running under {accel}"));

    let (tx, mut rx) = mpsc::channel::<Command>(16);
    let listener = UnixListener::bind(dir.join(spec::CONTROL_SOCKET)).context("binding control.sock")?;
    let control = tokio::spawn(serve_control(listener, tx));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let default_grace = serde_json::from_value::<VirtualMachineInstance>(spec.vmi.clone())
        .ok()
        .and_then(|v| v.spec.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0) as u64;

    let mut forwards: HashMap<u16, u16> = HashMap::new();
    let mut guest_shutdown = false;
    let mut panicked = false;
    let mut stop_requested = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let status = loop {
        let deadline = async {
            match kill_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => break status?,
            ev = events.recv() => match ev {
                Ok(QmpEvent::Shutdown { guest, .. }) => guest_shutdown |= guest,
                Ok(QmpEvent::GuestPanicked) => {
                    panicked = true;
                    let _ = qmp.quit().await;
                }
                Ok(QmpEvent::Stop) if rep.state.phase == LauncherPhase::Running => {
                    rep.set(LauncherPhase::Paused, "Paused", "the guest is paused");
                }
                Ok(QmpEvent::Resume) if rep.state.phase == LauncherPhase::Paused => {
                    rep.set(LauncherPhase::Running, "Running", format!("the guest is running under {accel}"));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    // QMP went away: QEMU is exiting; the child's exit decides.
                    let status = child.wait().await?;
                    break status;
                }
            },
            _ = sigterm.recv() => {
                stop_requested = true;
                rep.set(LauncherPhase::Stopping, "StopRequested", "stopping: ACPI power button pressed");
                let _ = qmp.system_powerdown().await;
                kill_at.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(default_grace));
            }
            _ = deadline => {
                tracing::warn!("the guest did not power off within its grace period: killing QEMU");
                let _ = qmp.quit().await;
                let _ = child.start_kill();
                kill_at = None;
            }
            Some((req, reply)) = rx.recv() => {
                if let ControlRequest::Forward { guest_port } = req {
                    let netdev = cfg.nics.first().map(|n| format!("fv-net-{}", n.id));
                    let _ = reply.send(match forward(&qmp, netdev.as_deref(), &mut forwards, guest_port).await {
                        Ok(port) => ControlReply { ok: true, error: None, state: Some(rep.state.clone()), port: Some(port) },
                        Err(e) => ControlReply { ok: false, error: Some(e), state: Some(rep.state.clone()), port: None },
                    });
                    continue;
                }
                let r = match req {
                    ControlRequest::Forward { .. } => unreachable!("answered above"),
                    ControlRequest::Status => Ok(()),
                    ControlRequest::Pause => qmp.stop().await.map(|_| rep.set(LauncherPhase::Paused, "Paused", "the guest is paused")),
                    ControlRequest::Unpause => qmp.cont().await.map(|_| rep.set(LauncherPhase::Running, "Running", format!("the guest is running under {accel}"))),
                    ControlRequest::Reset => qmp.system_reset().await,
                    ControlRequest::SoftReboot => qmp
                        .execute("send-key", Some(serde_json::json!({"keys": [
                            {"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}]})))
                        .await
                        .map(drop),
                    ControlRequest::Stop { grace_seconds } => {
                        stop_requested = true;
                        rep.set(LauncherPhase::Stopping, "StopRequested", "stopping: ACPI power button pressed");
                        let until = tokio::time::Instant::now() + Duration::from_secs(grace_seconds);
                        kill_at = Some(kill_at.map_or(until, |k| k.min(until)));
                        if grace_seconds == 0 {
                            Ok(())
                        } else {
                            qmp.system_powerdown().await
                        }
                    }
                };
                let _ = reply.send(match r {
                    Ok(()) => ControlReply { ok: true, error: None, state: Some(rep.state.clone()), port: None },
                    Err(e) => ControlReply { ok: false, error: Some(e.to_string()), state: Some(rep.state.clone()), port: None },
                });
            }
        }
    };
    control.abort();
    let _ = console.stop().await;
    rep.state.qemu_pid = None;
    if panicked {
        rep.set(LauncherPhase::Failed, "GuestPanicked", "the guest kernel panicked");
    } else if stop_requested {
        rep.set(LauncherPhase::Succeeded, "StopRequested", "the VM was stopped");
    } else if guest_shutdown {
        rep.set(LauncherPhase::Succeeded, "GuestShutdown", "the guest shut itself down");
    } else {
        let tail = std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
        let tail: String = tail.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
        rep.set(LauncherPhase::Failed, "QemuCrashed", format!("QEMU exited unexpectedly ({status}): {tail}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch_spec(vmi: serde_json::Value) -> (LaunchSpec, VirtualMachineInstance) {
        let spec = LaunchSpec {
            pod_namespace: "default".into(),
            pod_name: "virt-launcher-vm1-abcde".into(),
            pod_uid: "uid-1".into(),
            vmi: vmi.clone(),
            kvm: false,
            qemu_binary: "qemu-system-x86_64".into(),
            cache_dir: "/node/cache".into(),
            insecure_registries: vec![],
            allowed_host_disk_dirs: vec![],
            secrets: Default::default(),
            cgroup_root: "/sys/fs/cgroup".into(),
            memory_limit_bytes: None,
            cpu_limit_millis: None,
        };
        (spec, serde_json::from_value(vmi).unwrap())
    }

    #[test]
    fn kernel_boot_and_vnc_reach_the_qemu_config() {
        let (spec, vmi) = launch_spec(serde_json::json!({
            "metadata": {"name": "vm1", "namespace": "default"},
            "spec": {"domain": {
                "devices": {},
                "resources": {"requests": {"memory": "128Mi"}},
                "firmware": {"kernelBoot": {"kernelArgs": "console=ttyS0 ferrovirt.marker=x", "container": {"image": "r/k:1", "kernelPath": "/k"}}}
            }}
        }));
        let dir = Path::new("/node/pods/uid-1");
        let prepared = PreparedKernelBoot {
            image: "r/k:1".into(),
            digest: "sha256:00".into(),
            kernel: "/node/cache/images/sha256/x-boot-y/kernel".into(),
            initrd: Some("/node/cache/images/sha256/x-boot-y/initrd".into()),
            kernel_args: Some("console=ttyS0 ferrovirt.marker=x".into()),
        };
        let cfg = qemu_config(&spec, &vmi, &[], &[], Some(&prepared), dir).unwrap();
        assert_eq!(
            cfg.kernel_boot,
            Some(KernelBoot {
                kernel: prepared.kernel.clone(),
                initrd: prepared.initrd.clone(),
                cmdline: prepared.kernel_args.clone(),
            })
        );
        assert_eq!(cfg.vnc_socket, Some(dir.join(spec::VNC_SOCKET)));
        let argv: Vec<String> = qemu_argv(&cfg).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let at = argv.iter().position(|a| a == "-append").unwrap();
        assert_eq!(argv[at + 1], "console=ttyS0 ferrovirt.marker=x");
        assert_eq!(argv[argv.iter().position(|a| a == "-kernel").unwrap() + 1], prepared.kernel.to_str().unwrap());

        // autoattachGraphicsDevice: false means no display at all, as in KubeVirt.
        let (spec, vmi) = launch_spec(serde_json::json!({
            "metadata": {"name": "vm1"},
            "spec": {"domain": {"devices": {"autoattachGraphicsDevice": false}, "resources": {"requests": {"memory": "128Mi"}}}}
        }));
        let cfg = qemu_config(&spec, &vmi, &[], &[], None, dir).unwrap();
        assert_eq!((cfg.vnc_socket, cfg.kernel_boot), (None, None));
    }

    #[test]
    fn derived_macs_are_stable_unicast_and_local() {
        let a = derived_mac("uid-1", "default");
        assert_eq!(a, derived_mac("uid-1", "default"));
        assert_ne!(a, derived_mac("uid-2", "default"));
        assert_eq!(a.0[0], 0x02);
        assert!(!a.is_multicast());
    }
}
