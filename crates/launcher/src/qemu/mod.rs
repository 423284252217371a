//! The QEMU command line for one VM, as a pure function: [`qemu_argv`] turns a [`QemuConfig`] into
//! argv (without the binary) or refuses it with an [`ArgvError`].
//!
//! ```text
//!   QemuConfig ──validate (ids, serials, paths, topology)──▶ args ──escape values──▶ Vec<OsString>
//!
//!   -name guest=<name>            -chardev socket,id=fv-qmp,path=<vm>/qmp.sock,server=on,wait=off
//!   -machine q35,acpi=on,...      -mon chardev=fv-qmp,mode=control
//!   -accel tcg -cpu max           -chardev socket,id=fv-serial0,path=<vm>/serial.sock,...
//!   -smp / -m                     -serial chardev:fv-serial0
//!   -device VGA,id=fv-video0,vgamem_mb=16   -vnc vnc=unix:<vm>/vnc.sock
//!   -kernel <cache>/kernel   -initrd <cache>/initrd   -append <kernelArgs: one argv element>
//!   -blockdev driver=file,node-name=fv-disk0-file,filename=<vm>/root.qcow2,read-only=off
//!   -blockdev {"driver":"qcow2","node-name":"fv-disk0","file":"fv-disk0-file",...,"backing":null}
//!   -device virtio-blk-pci,id=ua-root,drive=fv-disk0,bootindex=1
//!   -netdev user,id=...,hostfwd=tcp:127.0.0.1:2222-:22   -device virtio-net-pci,...,mac=...
//! ```
//!
//! Safety of the command line:
//! - Every user-controlled string that lands in an option list (VM name, disk serial, every path)
//!   goes through [`optlist::escape`], which doubles commas: QEMU reads `,,` as a literal comma, so
//!   no value can end its element and add a key. Options QEMU does not parse as lists (`-kernel`,
//!   `-initrd`, `-append`, `-pidfile`, `-uuid`) get the string as one argv element, unchanged.
//! - Format nodes (`raw`, `qcow2` over a file node) are written in `-blockdev`'s JSON form; they
//!   hold only our own node names. A qcow2 node always says which backing node it reads through
//!   to, or `"backing": null`, so QEMU never follows a backing file named inside an image.
//! - Identifiers (disk and NIC ids) are validated instead: QEMU would refuse odd ones anyway.
//! - Every path must be absolute, without `..`, and inside the VM's folder, or inside one of the
//!   read-only folders when QEMU only reads it (see [`paths`]). Nothing touches the filesystem.
//! - Control characters are refused in names, serials and paths.
//!
//! `-nodefaults -no-user-config -display none -vga none`: the only devices are the ones listed
//! here, and QEMU opens no window. With a [`QemuConfig::vnc_socket`] the guest gets a small VGA
//! card (as KubeVirt gives one, `vgamem_mb` [`VGA_MEMORY_MIB`]: the framebuffer pages count only
//! once the guest draws on them) and QEMU serves its screen as VNC (RFB) on that Unix socket, for
//! the node agent to relay; without one the VM is headless. `-no-reboot` is not set, so a guest
//! reboot resets the VM; `-no-shutdown` is not set, so a guest power-off ends QEMU (after a
//! SHUTDOWN event on QMP).

pub mod optlist;
pub mod paths;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use optlist::OptList;
use paths::{Access, Confinement, PathProblem};
use serde_json::{json, Value};
use uuid::Uuid;

/// QEMU's limit for a Unix socket path (`sun_path` is 108 bytes including the NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// Disk serials longer than this are cut by virtio-blk and refused by IDE; we refuse them.
pub const MAX_SERIAL_LEN: usize = 20;
/// Longest disk or NIC id accepted.
pub const MAX_ID_LEN: usize = 63;
/// Ports of the AHCI controller (SATA disks per VM).
pub const AHCI_PORTS: usize = 6;
/// Video memory of the VGA card a VM with VNC gets (KubeVirt's default VGA has 16 MiB).
pub const VGA_MEMORY_MIB: u32 = 16;

/// TCG's translated-code buffer in MiB (the controller's memory overhead counts the same 64 MiB).
pub const TCG_TB_SIZE_MIB: u64 = 64;

/// Everything QEMU needs to run one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// Shown by `query-name` and in QEMU's messages; usually `namespace/name`.
    pub name: String,
    pub uuid: Uuid,
    pub machine: MachineType,
    pub accel: Accel,
    pub cpu: CpuTopology,
    /// Guest memory; rounded up to a whole MiB.
    pub memory_bytes: u64,
    pub firmware: Firmware,
    pub kernel_boot: Option<KernelBoot>,
    pub disks: Vec<DiskConfig>,
    pub nics: Vec<NicConfig>,
    /// The serial port's chardev socket (QEMU listens; the console connects).
    pub serial_socket: PathBuf,
    /// The QMP socket (QEMU listens; the launcher connects).
    pub qmp_socket: PathBuf,
    /// A VGA card whose screen QEMU serves as VNC on this socket (QEMU listens); `None`: no
    /// display at all.
    pub vnc_socket: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    /// The VM's folder: every path QEMU writes must be inside it.
    pub vm_dir: PathBuf,
    /// Folders QEMU may read from as well (an image cache, firmware); never opened for writing.
    pub read_only_dirs: Vec<PathBuf>,
    /// Start with the vCPUs stopped (`-S`): connect the console first, then `cont` over QMP.
    pub start_paused: bool,
    /// Run QEMU under its seccomp sandbox (`-sandbox on,...`).
    pub sandbox: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineType {
    Q35,
    Pc,
}

impl MachineType {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineType::Q35 => "q35",
            MachineType::Pc => "pc",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

impl CpuTopology {
    pub fn vcpus(self) -> u64 {
        u64::from(self.sockets) * u64::from(self.cores) * u64::from(self.threads)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// UEFI from two pflash images: the code (read-only, may live in a read-only folder) and this
    /// VM's own copy of the variable store (written by the guest, so inside the VM folder).
    Efi { code: PathBuf, vars: PathBuf },
}

/// Direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Becomes the device id `ua-<id>` (as KubeVirt names user disks).
    pub id: String,
    pub path: PathBuf,
    pub format: DiskFormat,
    pub bus: DiskBus,
    pub readonly: bool,
    /// A CD-ROM drive (always read-only; SATA or SCSI only).
    pub cdrom: bool,
    pub boot_order: Option<u32>,
    pub serial: Option<String>,
    pub cache: Option<CacheMode>,
    /// The image a qcow2 overlay reads through to (opened read-only). Without it, a qcow2 disk
    /// has no backing file, whatever its header names.
    pub backing: Option<BackingImage>,
}

/// The read-only base image under a qcow2 overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingImage {
    pub path: PathBuf,
    pub format: DiskFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Sata,
    Scsi,
}

/// QEMU's cache modes, as `-drive cache=` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// O_DIRECT, flushes honoured (`cache=none`).
    None,
    Writeback,
    Writethrough,
    Directsync,
    /// Flushes ignored; fastest, loses data on a host crash.
    Unsafe,
}

impl CacheMode {
    /// (`cache.direct`, `cache.no-flush`, device `write-cache`)
    fn flags(self) -> (bool, bool, bool) {
        match self {
            CacheMode::None => (true, false, true),
            CacheMode::Writeback => (false, false, true),
            CacheMode::Writethrough => (false, false, false),
            CacheMode::Directsync => (true, false, false),
            CacheMode::Unsafe => (false, true, true),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    /// Becomes the device id `ua-<id>` and the netdev id `fv-net-<id>`.
    pub id: String,
    pub mac: MacAddress,
    pub model: NicModel,
    pub backend: NicBackend,
    pub boot_order: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    VirtioNetPci,
    E1000,
    E1000e,
    Rtl8139,
}

impl NicModel {
    pub fn as_str(self) -> &'static str {
        match self {
            NicModel::VirtioNetPci => "virtio-net-pci",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicBackend {
    /// QEMU's user-mode NAT (slirp): the guest reaches out through the host; chosen guest ports
    /// are reachable on the host at `127.0.0.1:<host_port>`.
    User { port_forwards: Vec<PortForward> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub protocol: Protocol,
    pub host_port: u16,
    pub guest_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A MAC address; parses and prints as `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {0:?}: expected six hex pairs separated by colons, like 52:54:00:12:34:56"
)]
pub struct MacParseError(String);

impl FromStr for MacAddress {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_owned()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_owned()));
        }
        Ok(MacAddress(out))
    }
}

/// A refused [`QemuConfig`]: which VM, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build the QEMU command line for VM {vm:?}: {problem}")]
pub struct ArgvError {
    pub vm: String,
    pub problem: ArgvProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgvProblem {
    #[error("{what} {path:?} {problem}")]
    Path {
        what: String,
        path: PathBuf,
        problem: PathProblem,
    },
    #[error("the VM folder {path:?} {problem}")]
    VmDir { path: PathBuf, problem: PathProblem },
    #[error("{what} {path:?} is {len} bytes long; Unix socket paths must be at most {MAX_SOCKET_PATH} bytes: use a shorter data directory")]
    SocketPathTooLong {
        what: String,
        path: PathBuf,
        len: usize,
    },
    #[error("the VM name contains a control character")]
    NameControlCharacter,
    #[error("{what} id {id:?} is invalid: use 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit")]
    InvalidId { what: &'static str, id: String },
    #[error("{what} id {id:?} is used twice")]
    DuplicateId { what: &'static str, id: String },
    #[error(
        "disk {disk:?}: serial {serial:?} must be 1 to {MAX_SERIAL_LEN} printable ASCII characters"
    )]
    InvalidSerial { disk: String, serial: String },
    #[error(
        "boot order {order} is given to both {first:?} and {second:?}; each device needs its own"
    )]
    DuplicateBootOrder {
        order: u32,
        first: String,
        second: String,
    },
    #[error("{device:?}: boot order {order} is too large (at most {})", i32::MAX)]
    BootOrderTooLarge { device: String, order: u32 },
    #[error("disk {disk:?}: only a qcow2 disk can have a backing image; make the overlay qcow2")]
    BackingOnRaw { disk: String },
    #[error("disk {disk:?}: a CD-ROM cannot be on the virtio bus; use sata or scsi")]
    CdromOnVirtio { disk: String },
    #[error("disk {disk:?}: a read-only SATA hard disk is not supported by QEMU; use virtio or scsi, or a CD-ROM")]
    ReadOnlySataDisk { disk: String },
    #[error("{count} SATA disks requested; at most {AHCI_PORTS} fit on the SATA controller: put the others on virtio or scsi")]
    TooManySataDisks { count: usize },
    #[error("a CPU topology of {sockets} sockets x {cores} cores x {threads} threads is invalid: each must be at least 1 and the product at most 1024")]
    InvalidTopology {
        sockets: u32,
        cores: u32,
        threads: u32,
    },
    #[error("guest memory must be more than 0 bytes")]
    NoMemory,
    #[error("kernel command line contains a control character")]
    CmdlineControlCharacter,
    #[error("NIC {nic:?}: MAC address {mac} is a multicast address; use a unicast one (first octet even)")]
    MulticastMac { nic: String, mac: MacAddress },
    #[error("NIC {nic:?}: port forward {protocol}:{host_port} uses port 0; give a real port")]
    ZeroPort {
        nic: String,
        protocol: &'static str,
        host_port: u16,
    },
    #[error("host port {protocol}:127.0.0.1:{host_port} is forwarded twice")]
    DuplicateHostPort {
        protocol: &'static str,
        host_port: u16,
    },
}

/// One argv flag and its value.
enum Arg {
    Flag(&'static str),
    Opt(&'static str, String),
}

struct Builder<'a> {
    cfg: &'a QemuConfig,
    confinement: Confinement,
    args: Vec<Arg>,
}

impl Builder<'_> {
    fn err(&self, problem: ArgvProblem) -> ArgvError {
        ArgvError {
            vm: self.cfg.name.clone(),
            problem,
        }
    }

    fn path(
        &self,
        what: impl Into<String>,
        path: &std::path::Path,
        access: Access,
    ) -> Result<String, ArgvError> {
        self.confinement.check(path, access).map_err(|problem| {
            self.err(ArgvProblem::Path {
                what: what.into(),
                path: path.to_owned(),
                problem,
            })
        })
    }

    fn socket_path(&self, what: &str, path: &std::path::Path) -> Result<String, ArgvError> {
        let checked = self.path(what, path, Access::ReadWrite)?;
        if checked.len() > MAX_SOCKET_PATH {
            return Err(self.err(ArgvProblem::SocketPathTooLong {
                what: what.to_owned(),
                path: path.to_owned(),
                len: checked.len(),
            }));
        }
        Ok(checked)
    }

    fn flag(&mut self, flag: &'static str) {
        self.args.push(Arg::Flag(flag));
    }

    fn opt(&mut self, flag: &'static str, value: impl Into<String>) {
        self.args.push(Arg::Opt(flag, value.into()));
    }
}

/// Builds QEMU's arguments (everything after the binary) for `cfg`, or says why it cannot.
pub fn qemu_argv(cfg: &QemuConfig) -> Result<Vec<OsString>, ArgvError> {
    let confinement =
        Confinement::new(&cfg.vm_dir, &cfg.read_only_dirs).map_err(|(path, problem)| {
            ArgvError {
                vm: cfg.name.clone(),
                problem: ArgvProblem::VmDir { path, problem },
            }
        })?;
    let mut b = Builder {
        cfg,
        confinement,
        args: Vec::new(),
    };
    validate_identity(&b)?;
    validate_devices(&b)?;

    b.flag("-nodefaults");
    b.flag("-no-user-config");
    b.opt("-display", "none");
    b.opt("-vga", "none");
    b.opt("-msg", "timestamp=on");
    b.opt("-name", OptList::new().kv("guest", &cfg.name).finish());
    b.opt("-uuid", cfg.uuid.hyphenated().to_string());
    if cfg.sandbox {
        b.opt(
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        );
    }

    machine_and_cpu(&mut b)?;
    monitor_and_serial(&mut b)?;
    display(&mut b)?;
    kernel_boot(&mut b)?;
    disks(&mut b)?;
    nics(&mut b);

    if let Some(pidfile) = &cfg.pidfile {
        let p = b.path("pidfile", pidfile, Access::ReadWrite)?;
        b.opt("-pidfile", p);
    }
    b.opt("-boot", "strict=on");
    if cfg.start_paused {
        b.flag("-S");
    }

    let mut out = Vec::with_capacity(b.args.len() * 2);
    for arg in b.args {
        match arg {
            Arg::Flag(f) => out.push(OsString::from(f)),
            Arg::Opt(f, v) => {
                out.push(OsString::from(f));
                out.push(OsString::from(v));
            }
        }
    }
    Ok(out)
}

fn validate_identity(b: &Builder<'_>) -> Result<(), ArgvError> {
    let cfg = b.cfg;
    if cfg.name.chars().any(char::is_control) {
        return Err(b.err(ArgvProblem::NameControlCharacter));
    }
    let CpuTopology {
        sockets,
        cores,
        threads,
    } = cfg.cpu;
    if sockets == 0 || cores == 0 || threads == 0 || cfg.cpu.vcpus() > 1024 {
        return Err(b.err(ArgvProblem::InvalidTopology {
            sockets,
            cores,
            threads,
        }));
    }
    if cfg.memory_bytes == 0 {
        return Err(b.err(ArgvProblem::NoMemory));
    }
    Ok(())
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && id.len() <= MAX_ID_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate_devices(b: &Builder<'_>) -> Result<(), ArgvError> {
    let cfg = b.cfg;
    let mut ids = HashSet::new();
    let mut boot_orders: Vec<(u32, String)> = Vec::new();
    let mut check_boot = |order: Option<u32>, device: &str| -> Result<(), ArgvError> {
        let Some(order) = order else { return Ok(()) };
        if i32::try_from(order).is_err() {
            return Err(b.err(ArgvProblem::BootOrderTooLarge {
                device: device.to_owned(),
                order,
            }));
        }
        if let Some((_, first)) = boot_orders.iter().find(|(o, _)| *o == order) {
            return Err(b.err(ArgvProblem::DuplicateBootOrder {
                order,
                first: first.clone(),
                second: device.to_owned(),
            }));
        }
        boot_orders.push((order, device.to_owned()));
        Ok(())
    };

    for disk in &cfg.disks {
        if !valid_id(&disk.id) {
            return Err(b.err(ArgvProblem::InvalidId {
                what: "disk",
                id: disk.id.clone(),
            }));
        }
        if !ids.insert(disk.id.clone()) {
            return Err(b.err(ArgvProblem::DuplicateId {
                what: "disk",
                id: disk.id.clone(),
            }));
        }
        if let Some(serial) = &disk.serial {
            let printable = serial.bytes().all(|c| (0x20..0x7f).contains(&c));
            if serial.is_empty() || serial.len() > MAX_SERIAL_LEN || !printable {
                return Err(b.err(ArgvProblem::InvalidSerial {
                    disk: disk.id.clone(),
                    serial: serial.clone(),
                }));
            }
        }
        if disk.cdrom && disk.bus == DiskBus::Virtio {
            return Err(b.err(ArgvProblem::CdromOnVirtio {
                disk: disk.id.clone(),
            }));
        }
        if disk.readonly && !disk.cdrom && disk.bus == DiskBus::Sata {
            return Err(b.err(ArgvProblem::ReadOnlySataDisk {
                disk: disk.id.clone(),
            }));
        }
        check_boot(disk.boot_order, &format!("disk {}", disk.id))?;
    }
    let sata = cfg.disks.iter().filter(|d| d.bus == DiskBus::Sata).count();
    if sata > AHCI_PORTS {
        return Err(b.err(ArgvProblem::TooManySataDisks { count: sata }));
    }

    let mut host_ports = HashSet::new();
    for nic in &cfg.nics {
        if !valid_id(&nic.id) {
            return Err(b.err(ArgvProblem::InvalidId {
                what: "NIC",
                id: nic.id.clone(),
            }));
        }
        // Disk and NIC ids share the `ua-` device namespace.
        if !ids.insert(nic.id.clone()) {
            return Err(b.err(ArgvProblem::DuplicateId {
                what: "NIC",
                id: nic.id.clone(),
            }));
        }
        if nic.mac.is_multicast() {
            return Err(b.err(ArgvProblem::MulticastMac {
                nic: nic.id.clone(),
                mac: nic.mac,
            }));
        }
        let NicBackend::User { port_forwards } = &nic.backend;
        for fwd in port_forwards {
            let protocol = fwd.protocol.as_str();
            if fwd.host_port == 0 || fwd.guest_port == 0 {
                return Err(b.err(ArgvProblem::ZeroPort {
                    nic: nic.id.clone(),
                    protocol,
                    host_port: fwd.host_port,
                }));
            }
            if !host_ports.insert((fwd.protocol, fwd.host_port)) {
                return Err(b.err(ArgvProblem::DuplicateHostPort {
                    protocol,
                    host_port: fwd.host_port,
                }));
            }
        }
        check_boot(nic.boot_order, &format!("NIC {}", nic.id))?;
    }
    Ok(())
}

fn machine_and_cpu(b: &mut Builder<'_>) -> Result<(), ArgvError> {
    let cfg = b.cfg;
    let mut machine = OptList::implied(cfg.machine.as_str())
        .on_off("acpi", true)
        .on_off("usb", false)
        .on_off("dump-guest-core", false);
    if let Firmware::Efi { code, vars } = &cfg.firmware {
        let code = b.path("EFI firmware code", code, Access::ReadOnly)?;
        let vars = b.path("EFI variable store", vars, Access::ReadWrite)?;
        b.opt(
            "-blockdev",
            file_node_opts("fv-efi-code-file", &code, true, None),
        );
        b.opt(
            "-blockdev",
            format_node_json(
                DiskFormat::Raw,
                "fv-efi-code",
                "fv-efi-code-file",
                true,
                None,
                None,
            ),
        );
        b.opt(
            "-blockdev",
            file_node_opts("fv-efi-vars-file", &vars, false, None),
        );
        b.opt(
            "-blockdev",
            format_node_json(
                DiskFormat::Raw,
                "fv-efi-vars",
                "fv-efi-vars-file",
                false,
                None,
                None,
            ),
        );
        machine = machine
            .kv("pflash0", "fv-efi-code")
            .kv("pflash1", "fv-efi-vars");
    }
    b.opt("-machine", machine.finish());
    b.opt(
        "-accel",
        match cfg.accel {
            Accel::Kvm => "kvm".to_string(),
            // QEMU reserves 1 GiB for TCG's translated code by default and fills it as the guest
            // runs new code (a reboot nearly doubles it): bounded, so the VM fits its cgroup.
            Accel::Tcg => format!("tcg,tb-size={TCG_TB_SIZE_MIB}"),
        },
    );
    b.opt(
        "-cpu",
        match cfg.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        },
    );
    let CpuTopology {
        sockets,
        cores,
        threads,
    } = cfg.cpu;
    b.opt(
        "-smp",
        format!(
            "cpus={},sockets={sockets},cores={cores},threads={threads}",
            cfg.cpu.vcpus()
        ),
    );
    b.opt(
        "-m",
        format!("size={}M", cfg.memory_bytes.div_ceil(1 << 20)),
    );
    Ok(())
}

fn monitor_and_serial(b: &mut Builder<'_>) -> Result<(), ArgvError> {
    let qmp = b.socket_path("QMP socket", &b.cfg.qmp_socket)?;
    b.opt(
        "-chardev",
        OptList::implied("socket")
            .kv("id", "fv-qmp")
            .kv("path", qmp)
            .on_off("server", true)
            .on_off("wait", false)
            .finish(),
    );
    b.opt("-mon", "chardev=fv-qmp,mode=control");
    let serial = b.socket_path("serial socket", &b.cfg.serial_socket)?;
    b.opt(
        "-chardev",
        OptList::implied("socket")
            .kv("id", "fv-serial0")
            .kv("path", serial)
            .on_off("server", true)
            .on_off("wait", false)
            .finish(),
    );
    b.opt("-serial", "chardev:fv-serial0");
    Ok(())
}

fn display(b: &mut Builder<'_>) -> Result<(), ArgvError> {
    let Some(socket) = &b.cfg.vnc_socket else {
        return Ok(());
    };
    let vnc = b.socket_path("VNC socket", socket)?;
    b.opt(
        "-device",
        OptList::implied("VGA")
            .kv("id", "fv-video0")
            .kv("vgamem_mb", VGA_MEMORY_MIB.to_string())
            .finish(),
    );
    b.opt(
        "-vnc",
        OptList::new().kv("vnc", format!("unix:{vnc}")).finish(),
    );
    Ok(())
}

fn kernel_boot(b: &mut Builder<'_>) -> Result<(), ArgvError> {
    let Some(kb) = &b.cfg.kernel_boot else {
        return Ok(());
    };
    // -kernel, -initrd and -append take their whole argument as the value: no escaping.
    let kernel = b.path("kernel", &kb.kernel, Access::ReadOnly)?;
    b.opt("-kernel", kernel);
    if let Some(initrd) = &kb.initrd {
        let initrd = b.path("initrd", initrd, Access::ReadOnly)?;
        b.opt("-initrd", initrd);
    }
    if let Some(cmdline) = &kb.cmdline {
        if cmdline.chars().any(char::is_control) {
            return Err(b.err(ArgvProblem::CmdlineControlCharacter));
        }
        b.opt("-append", cmdline.clone());
    }
    Ok(())
}

fn disks(b: &mut Builder<'_>) -> Result<(), ArgvError> {
    let cfg = b.cfg;
    if cfg.disks.iter().any(|d| d.bus == DiskBus::Sata) {
        b.opt(
            "-device",
            OptList::implied("ich9-ahci").kv("id", "fv-ahci").finish(),
        );
    }
    if cfg.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
        b.opt(
            "-device",
            OptList::implied("virtio-scsi-pci")
                .kv("id", "fv-scsi")
                .finish(),
        );
    }
    let mut sata_port = 0;
    for (index, disk) in cfg.disks.iter().enumerate() {
        let read_only = disk.readonly || disk.cdrom;
        let access = if read_only {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        };
        let path = b.path(format!("disk {:?}", disk.id), &disk.path, access)?;
        let file_node = format!("fv-disk{index}-file");
        let format_node = format!("fv-disk{index}");
        let cache = disk.cache.map(CacheMode::flags);
        let node_cache = cache.map(|(direct, no_flush, _)| (direct, no_flush));
        let base_node = match &disk.backing {
            None => None,
            Some(_) if disk.format == DiskFormat::Raw => {
                return Err(b.err(ArgvProblem::BackingOnRaw {
                    disk: disk.id.clone(),
                }));
            }
            Some(base) => {
                let base_path = b.path(
                    format!("backing image of disk {:?}", disk.id),
                    &base.path,
                    Access::ReadOnly,
                )?;
                let base_file = format!("fv-disk{index}-base-file");
                let base_node = format!("fv-disk{index}-base");
                b.opt(
                    "-blockdev",
                    file_node_opts(&base_file, &base_path, true, node_cache),
                );
                b.opt(
                    "-blockdev",
                    format_node_json(base.format, &base_node, &base_file, true, node_cache, None),
                );
                Some(base_node)
            }
        };
        b.opt(
            "-blockdev",
            file_node_opts(&file_node, &path, read_only, node_cache),
        );
        b.opt(
            "-blockdev",
            format_node_json(
                disk.format,
                &format_node,
                &file_node,
                read_only,
                node_cache,
                base_node.as_deref(),
            ),
        );
        let write_cache = cache.map(|(_, _, write_cache)| write_cache);
        let (driver, bus) = match (disk.bus, disk.cdrom) {
            (DiskBus::Virtio, _) => ("virtio-blk-pci", None),
            (DiskBus::Sata, cdrom) => {
                let bus = format!("fv-ahci.{sata_port}");
                sata_port += 1;
                (if cdrom { "ide-cd" } else { "ide-hd" }, Some(bus))
            }
            (DiskBus::Scsi, cdrom) => (
                if cdrom { "scsi-cd" } else { "scsi-hd" },
                Some("fv-scsi.0".to_owned()),
            ),
        };
        let mut device = OptList::implied(driver)
            .kv("id", format!("ua-{}", disk.id))
            .kv("drive", &format_node)
            .kv_opt("bus", bus)
            .kv_opt("serial", disk.serial.as_deref())
            .kv_opt("bootindex", disk.boot_order.map(|o| o.to_string()));
        if let Some(w) = write_cache {
            device = device.on_off("write-cache", w);
        }
        b.opt("-device", device.finish());
    }
    Ok(())
}

/// A `file` protocol node: the one place a disk path appears, so key=value with escaping.
fn file_node_opts(node: &str, path: &str, read_only: bool, cache: Option<(bool, bool)>) -> String {
    let list = OptList::new()
        .kv("driver", "file")
        .kv("node-name", node)
        .kv("filename", path)
        .on_off("read-only", read_only);
    match cache {
        Some((direct, no_flush)) => list
            .on_off("cache.direct", direct)
            .on_off("cache.no-flush", no_flush)
            .finish(),
        None => list.finish(),
    }
}

/// A format node over a file node, in `-blockdev`'s JSON form: it holds only our node names,
/// and JSON is the only way to write `"backing": null`, which stops QEMU from following a
/// backing file named inside a qcow2 image (an image from a user could name any file).
fn format_node_json(
    format: DiskFormat,
    node: &str,
    file: &str,
    read_only: bool,
    cache: Option<(bool, bool)>,
    backing: Option<&str>,
) -> String {
    let mut value = json!({
        "driver": format.as_str(),
        "node-name": node,
        "file": file,
        "read-only": read_only,
    });
    if let Some((direct, no_flush)) = cache {
        value["cache"] = json!({ "direct": direct, "no-flush": no_flush });
    }
    if format == DiskFormat::Qcow2 {
        value["backing"] = backing.map_or(Value::Null, |b| json!(b));
    }
    value.to_string()
}

fn nics(b: &mut Builder<'_>) {
    for nic in &b.cfg.nics {
        let netdev_id = format!("fv-net-{}", nic.id);
        let NicBackend::User { port_forwards } = &nic.backend;
        let mut netdev = OptList::implied("user").kv("id", &netdev_id);
        for fwd in port_forwards {
            netdev = netdev.kv(
                "hostfwd",
                format!(
                    "{}:127.0.0.1:{}-:{}",
                    fwd.protocol.as_str(),
                    fwd.host_port,
                    fwd.guest_port
                ),
            );
        }
        b.opt("-netdev", netdev.finish());
        b.opt(
            "-device",
            OptList::implied(nic.model.as_str())
                .kv("id", format!("ua-{}", nic.id))
                .kv("netdev", &netdev_id)
                .kv("mac", nic.mac.to_string())
                .kv_opt("bootindex", nic.boot_order.map(|o| o.to_string()))
                .finish(),
        );
    }
}
