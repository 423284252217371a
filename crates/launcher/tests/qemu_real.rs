//! The launcher's pieces against a real QEMU (TCG: KVM is not trusted on test machines):
//! the argv builder's output is accepted and read back intact, QMP drives the VM, the console
//! captures a real guest's serial output, and the acceleration probe boots its guest.
//!
//! Every QEMU started here is killed by PID when its guard drops (`kill_on_drop`), and each test
//! waits for its QEMU to exit.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrovirt_launcher::console::LOG_FILE;
use ferrovirt_launcher::probe::{self, MARKER, STAGES};
use ferrovirt_launcher::qemu::{
    Accel, CacheMode, CpuTopology, DiskBus, DiskConfig, DiskFormat, Firmware, MachineType,
    NicBackend, NicConfig, NicModel, PortForward, Protocol,
};
use ferrovirt_launcher::qmp::RunStatus;
use ferrovirt_launcher::{qemu_argv, Console, ConsoleConfig, DevKvm, QemuConfig, Qmp, QmpEvent};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::broadcast;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn qemu_binary() -> PathBuf {
    std::env::var_os("FERROVIRT_QEMU")
        .map_or_else(|| PathBuf::from("qemu-system-x86_64"), PathBuf::from)
}

fn config(vm_dir: &Path, name: &str) -> QemuConfig {
    QemuConfig {
        name: name.to_owned(),
        uuid: Uuid::new_v4(),
        machine: MachineType::Q35,
        accel: Accel::Tcg,
        cpu: CpuTopology {
            sockets: 1,
            cores: 1,
            threads: 1,
        },
        memory_bytes: 128 << 20,
        firmware: Firmware::Bios,
        kernel_boot: None,
        disks: vec![],
        nics: vec![],
        serial_socket: vm_dir.join("serial.sock"),
        qmp_socket: vm_dir.join("qmp.sock"),
        vnc_socket: None,
        pidfile: Some(vm_dir.join("qemu.pid")),
        vm_dir: vm_dir.to_owned(),
        read_only_dirs: vec![],
        start_paused: false,
        sandbox: true,
    }
}

/// Starts QEMU for `cfg`; the child is killed by PID if the test drops it.
fn start(cfg: &QemuConfig) -> Result<Child> {
    let argv = qemu_argv(cfg)?;
    let child = Command::new(qemu_binary())
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    Ok(child)
}

async fn next_event(
    events: &mut broadcast::Receiver<QmpEvent>,
    want: impl Fn(&QmpEvent) -> bool,
) -> Result<QmpEvent> {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await?;
            if want(&event) {
                return Ok(event);
            }
        }
    })
    .await
    .context("timed out waiting for a QMP event")?
}

async fn quit_and_reap(
    qmp: &Qmp,
    events: &mut broadcast::Receiver<QmpEvent>,
    child: &mut Child,
) -> Result<()> {
    qmp.quit().await?;
    let shutdown = next_event(events, |e| matches!(e, QmpEvent::Shutdown { .. })).await?;
    assert_eq!(
        shutdown,
        QmpEvent::Shutdown {
            guest: false,
            reason: "host-qmp-quit".into()
        }
    );
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .context("QEMU did not exit after quit")??;
    assert!(status.success(), "QEMU exit status {status}");
    tokio::time::timeout(WAIT, qmp.closed())
        .await
        .context("QMP stayed open after QEMU exited")?;
    Ok(())
}

#[tokio::test]
async fn qmp_drives_a_real_qemu() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(dir.path(), "default/qmp-test");
    let mut child = start(&cfg)?;
    let (qmp, mut events) = Qmp::connect_with_retry(&cfg.qmp_socket, WAIT).await?;
    assert!(qmp.greeting().version.major >= 7);
    let pid: u32 = std::fs::read_to_string(dir.path().join("qemu.pid"))?
        .trim()
        .parse()?;
    assert_eq!(Some(pid), child.id());

    // No boot device: SeaBIOS waits, the VM runs.
    assert_eq!(
        qmp.query_status().await?,
        RunStatus {
            running: true,
            status: "running".into()
        }
    );
    let kvm = qmp.query_kvm().await?;
    assert!(!kvm.enabled, "TCG was asked for");

    qmp.stop().await?;
    next_event(&mut events, |e| *e == QmpEvent::Stop).await?;
    assert_eq!(
        qmp.query_status().await?,
        RunStatus {
            running: false,
            status: "paused".into()
        }
    );

    qmp.cont().await?;
    next_event(&mut events, |e| *e == QmpEvent::Resume).await?;
    assert!(qmp.query_status().await?.running);

    qmp.system_reset().await?;
    next_event(&mut events, |e| *e == QmpEvent::Reset).await?;
    assert!(
        qmp.query_status().await?.running,
        "a reset VM keeps running (-no-reboot is not set)"
    );

    qmp.system_powerdown().await?;
    next_event(&mut events, |e| *e == QmpEvent::Powerdown).await?;

    // Errors come back typed, and the connection stays usable.
    let err = qmp.execute("no-such-command", None).await.unwrap_err();
    assert!(err.to_string().contains("CommandNotFound"), "{err}");
    assert_eq!(
        qmp.execute("query-name", None).await?,
        json!({"name": "default/qmp-test"})
    );

    quit_and_reap(&qmp, &mut events, &mut child).await
}

/// Names, serials and paths full of commas, `=`, spaces and option words reach QEMU intact.
#[tokio::test]
async fn hostile_strings_reach_qemu_intact() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let vm_dir = tmp.path().join("vm, a=b,,c");
    let cache = tmp.path().join("cache,readonly=off");
    std::fs::create_dir_all(&vm_dir)?;
    std::fs::create_dir_all(&cache)?;
    let data_path = vm_dir.join("data,file=passwd,x=y .raw");
    std::fs::File::create(&data_path)?.set_len(1 << 20)?;
    let iso_path = cache.join("installer,format=qcow2.iso");
    std::fs::File::create(&iso_path)?.set_len(1 << 20)?;
    let scsi_path = vm_dir.join("scsi=1,,.qcow2");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&scsi_path)
        .arg("1M")
        .status()?;
    if !status.success() {
        bail!("qemu-img create failed");
    }

    let name = "ns/evil,name=x,,help,debug-threads=on";
    let serial = "S,N=1,,readonly=on";
    let mut cfg = config(&vm_dir, name);
    cfg.read_only_dirs = vec![cache.clone()];
    cfg.start_paused = true;
    cfg.disks = vec![
        DiskConfig {
            id: "data".into(),
            path: data_path.clone(),
            format: DiskFormat::Raw,
            bus: DiskBus::Virtio,
            readonly: false,
            cdrom: false,
            boot_order: Some(1),
            serial: Some(serial.into()),
            cache: Some(CacheMode::Unsafe),
            backing: None,
        },
        DiskConfig {
            id: "iso".into(),
            path: iso_path.clone(),
            format: DiskFormat::Raw,
            bus: DiskBus::Sata,
            readonly: true,
            cdrom: true,
            boot_order: Some(2),
            serial: None,
            cache: None,
            backing: None,
        },
        DiskConfig {
            id: "scsi".into(),
            path: scsi_path.clone(),
            format: DiskFormat::Qcow2,
            bus: DiskBus::Scsi,
            readonly: false,
            cdrom: false,
            boot_order: None,
            serial: Some("sc,si".into()),
            cache: Some(CacheMode::Writethrough),
            backing: None,
        },
    ];
    cfg.nics = vec![NicConfig {
        id: "default".into(),
        mac: "52:54:00:fe:00:01".parse()?,
        model: NicModel::VirtioNetPci,
        backend: NicBackend::User {
            port_forwards: vec![PortForward {
                protocol: Protocol::Tcp,
                host_port: free_port()?,
                guest_port: 22,
            }],
        },
        boot_order: None,
    }];
    let mut child = start(&cfg)?;
    let (qmp, mut events) = Qmp::connect_with_retry(&cfg.qmp_socket, WAIT).await?;
    assert_eq!(qmp.query_status().await?.status, "prelaunch");

    assert_eq!(qmp.execute("query-name", None).await?["name"], name);
    assert_eq!(
        qmp.execute("query-uuid", None).await?["UUID"],
        cfg.uuid.hyphenated().to_string()
    );

    let nodes = qmp.execute("query-named-block-nodes", None).await?;
    let file_of = |node: &str| {
        nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node-name"] == node)
            .map(|n| (n["file"].clone(), n["ro"].clone()))
    };
    assert_eq!(
        file_of("fv-disk0-file"),
        Some((json!(data_path.to_str().unwrap()), json!(false)))
    );
    assert_eq!(
        file_of("fv-disk1-file"),
        Some((json!(iso_path.to_str().unwrap()), json!(true)))
    );
    assert_eq!(
        file_of("fv-disk2-file"),
        Some((json!(scsi_path.to_str().unwrap()), json!(false)))
    );

    let qom = |path: &str, property: &str| {
        qmp.execute("qom-get", Some(json!({"path": path, "property": property})))
    };
    assert_eq!(
        qom("/machine/peripheral/ua-data", "serial").await?,
        json!(serial)
    );
    assert_eq!(
        qom("/machine/peripheral/ua-scsi", "serial").await?,
        json!("sc,si")
    );
    assert_eq!(
        qom("/machine/peripheral/ua-data", "bootindex").await?,
        json!(1)
    );
    assert_eq!(
        qom("/machine/peripheral/ua-iso", "bootindex").await?,
        json!(2)
    );
    assert_eq!(
        qom("/machine/peripheral/ua-default", "mac").await?,
        json!("52:54:00:fe:00:01")
    );

    quit_and_reap(&qmp, &mut events, &mut child).await
}

/// QEMU accepts the VGA card and the VNC server on a Unix socket in a VM folder whose path has
/// commas: a client reads the RFB greeting there, and QMP reports the server.
#[tokio::test]
async fn vnc_socket_speaks_rfb() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let vm_dir = tmp.path().join("vm,vnc=x");
    std::fs::create_dir_all(&vm_dir)?;
    let mut cfg = config(&vm_dir, "default/vnc");
    cfg.vnc_socket = Some(vm_dir.join(ferrovirt_launcher::spec::VNC_SOCKET));
    let mut child = start(&cfg)?;
    let (qmp, mut events) = Qmp::connect_with_retry(&cfg.qmp_socket, WAIT).await?;
    let mut vnc = UnixStream::connect(vm_dir.join("vnc.sock")).await?;
    let mut greeting = [0u8; 12];
    tokio::time::timeout(WAIT, vnc.read_exact(&mut greeting))
        .await
        .context("no RFB greeting")??;
    assert_eq!(&greeting, b"RFB 003.008\n");
    let info = qmp.execute("query-vnc", None).await?;
    assert_eq!(info["enabled"], json!(true), "{info}");
    assert_eq!(info["family"], json!("unix"), "{info}");
    let video = qmp
        .execute(
            "qom-get",
            Some(json!({"path": "/machine/peripheral/fv-video0", "property": "vgamem_mb"})),
        )
        .await?;
    assert_eq!(video, json!(ferrovirt_launcher::qemu::VGA_MEMORY_MIB));
    drop(vnc);
    quit_and_reap(&qmp, &mut events, &mut child).await
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn efi_firmware_starts() -> Result<()> {
    let code = Path::new("/usr/share/OVMF/OVMF_CODE.fd");
    let vars = Path::new("/usr/share/OVMF/OVMF_VARS.fd");
    assert!(
        code.exists() && vars.exists(),
        "OVMF is not installed: run scripts/install-test-deps.sh (Debian package ovmf)"
    );
    let dir = tempfile::tempdir()?;
    let my_vars = dir.path().join("OVMF_VARS.fd");
    std::fs::copy(vars, &my_vars)?;
    let mut cfg = config(dir.path(), "default/efi");
    cfg.read_only_dirs = vec!["/usr/share/OVMF".into()];
    cfg.firmware = Firmware::Efi {
        code: code.to_owned(),
        vars: my_vars,
    };
    let mut child = start(&cfg)?;
    let (qmp, mut events) = Qmp::connect_with_retry(&cfg.qmp_socket, WAIT).await?;
    assert!(qmp.query_status().await?.running);
    let flash = qom_list(&qmp).await?;
    assert!(flash.contains(&"pflash0".to_owned()), "{flash:?}");
    quit_and_reap(&qmp, &mut events, &mut child).await
}

async fn qom_list(qmp: &Qmp) -> Result<Vec<String>> {
    let list = qmp
        .execute("qom-list", Some(json!({"path": "/machine"})))
        .await?;
    Ok(list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect())
}

/// The probe's boot sector as a VM disk: its serial output lands in serial.log and reaches an
/// attached console client.
#[tokio::test]
async fn console_captures_a_real_guest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let disk = dir.path().join("disk.img");
    probe::write_probe_disk(&disk)?;
    let mut cfg = config(dir.path(), "default/console");
    cfg.start_paused = true;
    cfg.disks = vec![DiskConfig {
        id: "root".into(),
        path: disk,
        format: DiskFormat::Raw,
        bus: DiskBus::Virtio,
        readonly: true,
        cdrom: false,
        boot_order: Some(1),
        serial: None,
        cache: None,
        backing: None,
    }];
    let mut child = start(&cfg)?;
    let (qmp, mut events) = Qmp::connect_with_retry(&cfg.qmp_socket, WAIT).await?;
    let console = Console::start(ConsoleConfig::in_vm_dir(
        dir.path(),
        cfg.serial_socket.clone(),
    ))
    .await?;
    let mut client = UnixStream::connect(dir.path().join("console.sock")).await?;
    // Let the console register the client before the guest runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    qmp.cont().await?;

    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains(MARKER) {
            let n = client.read(&mut buf).await?;
            if n == 0 {
                bail!("console closed");
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await
    .context("no marker on the console")??;
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("FV:real\r\n"), "{text:?}");

    // Typing reaches QEMU without disturbing anything.
    client.write_all(b"hello\r").await?;
    let log = std::fs::read_to_string(dir.path().join(LOG_FILE))?;
    assert!(log.contains("FV:work\r\nFERROVIRT-PROBE-OK"), "{log:?}");

    quit_and_reap(&qmp, &mut events, &mut child).await?;
    tokio::time::timeout(WAIT, console.wait())
        .await
        .context("console did not end with QEMU")??;
    assert!(!dir.path().join("console.sock").exists());
    Ok(())
}

#[tokio::test]
async fn tcg_probe_reaches_the_marker() -> Result<()> {
    let probe = probe::boot_probe(&qemu_binary(), Accel::Tcg, WAIT).await?;
    assert!(probe.reached_marker, "{probe:?}");
    assert_eq!(probe.stages, STAGES);
    eprintln!("TCG probe: {:?}", probe.elapsed);
    Ok(())
}

#[tokio::test]
async fn a_disk_that_does_not_boot_never_reaches_the_marker() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let blank = dir.path().join("blank.img");
    std::fs::File::create(&blank)?.set_len(1 << 20)?;
    let probe =
        probe::boot_image(&qemu_binary(), Accel::Tcg, &blank, Duration::from_secs(2)).await?;
    assert!(!probe.reached_marker);
    assert!(probe.stages.is_empty());
    assert!(probe.qemu_exit.is_none(), "QEMU kept running until killed");
    Ok(())
}

#[tokio::test]
async fn kvm_probe_gives_a_verdict_in_time() -> Result<()> {
    let timeout = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let result = probe::probe_accel(&qemu_binary(), timeout).await;
    eprintln!("KVM probe: {result:?}");
    assert!(started.elapsed() < timeout + Duration::from_secs(10));
    assert!(!result.reason.is_empty());
    if let DevKvm::Failed(_) = result.dev_kvm {
        assert!(!result.kvm_usable);
    }
    Ok(())
}

/// The test guest from `scripts/build-guest.sh`, if it has been built.
fn guest_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FERROVIRT_GUEST_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest"),
        PathBuf::from,
    );
    (dir.join("vmlinuz").is_file() && dir.join("initrd.gz").is_file()).then_some(dir)
}

/// A whole VM life on the real test guest: direct kernel boot from paths with commas, the boot
/// marker on the console, a command typed through the console and its answer, then an ACPI
/// power-off that the guest honours (SHUTDOWN with guest=true, QEMU exits).
#[tokio::test]
async fn linux_guest_boots_answers_the_console_and_powers_off() -> Result<()> {
    let guest = guest_dir().expect("the test guest is not built: run scripts/build-guest.sh (scripts/install-test-deps.sh does)");
    let dir = tempfile::tempdir()?;
    let boot = dir.path().join("boot,dir=x");
    std::fs::create_dir(&boot)?;
    std::fs::copy(guest.join("vmlinuz"), boot.join("vm,linuz"))?;
    std::fs::copy(guest.join("initrd.gz"), boot.join("init,rd=1"))?;
    let mut cfg = config(dir.path(), "default/linux");
    cfg.memory_bytes = 256 << 20;
    cfg.start_paused = true;
    cfg.kernel_boot = Some(ferrovirt_launcher::qemu::KernelBoot {
        kernel: boot.join("vm,linuz"),
        initrd: Some(boot.join("init,rd=1")),
        cmdline: Some("console=ttyS0,115200 quiet ferrovirt.marker=a,b=c".into()),
    });
    // With the VGA card and VNC server every VM gets by default.
    cfg.vnc_socket = Some(dir.path().join("vnc.sock"));
    let mut child = start(&cfg)?;
    let (qmp, mut events) = Qmp::connect_with_retry(&cfg.qmp_socket, WAIT).await?;
    let console = Console::start(ConsoleConfig::in_vm_dir(
        dir.path(),
        cfg.serial_socket.clone(),
    ))
    .await?;
    let mut client = UnixStream::connect(dir.path().join("console.sock")).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    qmp.cont().await?;

    let long = Duration::from_secs(120);
    read_until(&mut client, "ferrovirt-guest: booted", long).await?;
    read_until(&mut client, "ferrovirt-guest: marker a,b=c", long).await?;
    // The shell on ttyS0 may take a moment after the marker; type until it answers.
    let answered = tokio::time::timeout(long, async {
        loop {
            client.write_all(b"echo answer-$((6*7))\n").await?;
            if read_until(&mut client, "answer-42", Duration::from_secs(3))
                .await
                .is_ok()
            {
                return anyhow::Ok(());
            }
        }
    })
    .await;
    answered.context("the guest shell never answered through the console")??;

    qmp.system_powerdown().await?;
    let shutdown = tokio::time::timeout(long, async {
        loop {
            if let event @ QmpEvent::Shutdown { .. } = events.recv().await? {
                return anyhow::Ok(event);
            }
        }
    })
    .await
    .context("the guest ignored the ACPI power button")??;
    assert!(
        matches!(shutdown, QmpEvent::Shutdown { guest: true, .. }),
        "{shutdown:?}"
    );
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    assert!(status.success(), "{status}");
    tokio::time::timeout(WAIT, console.wait()).await??;
    let log = std::fs::read_to_string(dir.path().join(LOG_FILE))?;
    assert!(log.contains("ferrovirt-guest: booted") && log.contains("answer-42"));
    Ok(())
}

async fn read_until(client: &mut UnixStream, needle: &str, timeout: Duration) -> Result<()> {
    let mut seen = Vec::new();
    tokio::time::timeout(timeout, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = client.read(&mut buf).await?;
            if n == 0 {
                bail!("console closed before {needle:?}");
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await
    .with_context(|| format!("no {needle:?} on the console"))?
}

fn qemu_img_create(path: &Path, backing: Option<&Path>) -> Result<()> {
    let mut cmd = std::process::Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2"]);
    if let Some(b) = backing {
        cmd.arg("-b").arg(b).args(["-F", "raw"]);
    }
    if !cmd.arg(path).arg("1M").status()?.success() {
        bail!("qemu-img create {} failed", path.display());
    }
    Ok(())
}

/// An overlay reads through to the base image named in its config; an image whose header
/// names some other file gets no backing file at all, so QEMU never opens that file.
#[tokio::test]
async fn backing_files_come_from_the_config_never_from_the_image() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let vm_dir = tmp.path().join("vm");
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(&vm_dir)?;
    std::fs::create_dir_all(&cache)?;
    let base = cache.join("base.raw");
    std::fs::File::create(&base)?.set_len(1 << 20)?;
    let secret = tmp.path().join("secret.raw");
    std::fs::File::create(&secret)?.set_len(1 << 20)?;
    let overlay = vm_dir.join("root.qcow2");
    qemu_img_create(&overlay, Some(&base))?;
    let hostile = vm_dir.join("hostile.qcow2");
    qemu_img_create(&hostile, Some(&secret))?;

    let disk = |id: &str, path: &Path, backing| DiskConfig {
        id: id.into(),
        path: path.to_owned(),
        format: DiskFormat::Qcow2,
        bus: DiskBus::Virtio,
        readonly: false,
        cdrom: false,
        boot_order: None,
        serial: None,
        cache: None,
        backing,
    };
    let mut cfg = config(&vm_dir, "default/backing");
    cfg.read_only_dirs = vec![cache.clone()];
    cfg.start_paused = true;
    cfg.disks = vec![
        disk(
            "root",
            &overlay,
            Some(ferrovirt_launcher::qemu::BackingImage {
                path: base.clone(),
                format: DiskFormat::Raw,
            }),
        ),
        disk("hostile", &hostile, None),
    ];
    let mut child = start(&cfg)?;
    let (qmp, mut events) = Qmp::connect_with_retry(&cfg.qmp_socket, WAIT).await?;
    let nodes = qmp.execute("query-named-block-nodes", None).await?;
    let opened: Vec<(String, bool)> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["file"].as_str().unwrap_or_default().to_owned(),
                n["ro"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let base_str = base.to_str().unwrap().to_owned();
    assert!(
        opened.contains(&(base_str, true)),
        "the base is opened read-only: {opened:?}"
    );
    let secret_str = secret.to_str().unwrap();
    assert!(
        opened.iter().all(|(f, _)| !f.contains(secret_str)),
        "secret opened: {opened:?}"
    );
    let hostile_node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node-name"] == "fv-disk1")
        .unwrap();
    assert_eq!(hostile_node["backing_file_depth"], 0, "{hostile_node}");
    quit_and_reap(&qmp, &mut events, &mut child).await
}
