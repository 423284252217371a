use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::optlist::{parse, OptElement};
use super::paths::PathProblem;
use super::*;

fn base(vm_dir: &str) -> QemuConfig {
    QemuConfig {
        name: "default/vm1".into(),
        uuid: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        machine: MachineType::Q35,
        accel: Accel::Tcg,
        cpu: CpuTopology {
            sockets: 1,
            cores: 2,
            threads: 1,
        },
        memory_bytes: 512 << 20,
        firmware: Firmware::Bios,
        kernel_boot: None,
        disks: vec![],
        nics: vec![],
        serial_socket: Path::new(vm_dir).join("serial.sock"),
        qmp_socket: Path::new(vm_dir).join("qmp.sock"),
        vnc_socket: None,
        pidfile: None,
        vm_dir: vm_dir.into(),
        read_only_dirs: vec![PathBuf::from("/cache")],
        start_paused: false,
        sandbox: false,
    }
}

fn disk(id: &str, path: &str) -> DiskConfig {
    DiskConfig {
        id: id.into(),
        path: path.into(),
        format: DiskFormat::Qcow2,
        bus: DiskBus::Virtio,
        readonly: false,
        cdrom: false,
        boot_order: None,
        serial: None,
        cache: None,
        backing: None,
    }
}

fn strings(argv: &[OsString]) -> Vec<String> {
    argv.iter()
        .map(|a| a.to_str().unwrap().to_owned())
        .collect()
}

/// (flag, value) pairs; flags without a value get `None`.
fn pairs(argv: &[OsString]) -> Vec<(String, Option<String>)> {
    const NO_VALUE: [&str; 3] = ["-nodefaults", "-no-user-config", "-S"];
    let s = strings(argv);
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if NO_VALUE.contains(&s[i].as_str()) {
            out.push((s[i].clone(), None));
            i += 1;
        } else {
            out.push((s[i].clone(), Some(s[i + 1].clone())));
            i += 2;
        }
    }
    out
}

fn values<'a>(pairs: &'a [(String, Option<String>)], flag: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(f, _)| f == flag)
        .filter_map(|(_, v)| v.as_deref())
        .collect()
}

fn get<'a>(list: &'a [OptElement], key: &str) -> Option<&'a str> {
    list.iter()
        .find(|e| e.key.as_deref() == Some(key))
        .map(|e| e.value.as_str())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn keys(list: &[OptElement]) -> BTreeSet<String> {
    list.iter().filter_map(|e| e.key.clone()).collect()
}

#[test]
fn minimal_vm_is_headless_with_qmp_and_serial() {
    let argv = qemu_argv(&base("/data/vm1")).unwrap();
    assert_eq!(
        strings(&argv),
        [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-vga",
            "none",
            "-msg",
            "timestamp=on",
            "-name",
            "guest=default/vm1",
            "-uuid",
            "12345678-9abc-def0-1234-56789abcdef0",
            "-machine",
            "q35,acpi=on,usb=off,dump-guest-core=off",
            "-accel",
            "tcg,tb-size=64",
            "-cpu",
            "max",
            "-smp",
            "cpus=2,sockets=1,cores=2,threads=1",
            "-m",
            "size=512M",
            "-chardev",
            "socket,id=fv-qmp,path=/data/vm1/qmp.sock,server=on,wait=off",
            "-mon",
            "chardev=fv-qmp,mode=control",
            "-chardev",
            "socket,id=fv-serial0,path=/data/vm1/serial.sock,server=on,wait=off",
            "-serial",
            "chardev:fv-serial0",
            "-boot",
            "strict=on",
        ]
    );
    assert!(!strings(&argv)
        .iter()
        .any(|a| a == "-no-reboot" || a == "-no-shutdown"));
}

#[test]
fn kvm_uses_host_cpu_and_tcg_never_does() {
    let mut cfg = base("/data/vm1");
    cfg.accel = Accel::Kvm;
    let p = pairs(&qemu_argv(&cfg).unwrap());
    assert_eq!(values(&p, "-accel"), ["kvm"]);
    assert_eq!(values(&p, "-cpu"), ["host"]);
    cfg.accel = Accel::Tcg;
    let p = pairs(&qemu_argv(&cfg).unwrap());
    assert_eq!(values(&p, "-cpu"), ["max"]);
}

#[test]
fn memory_is_rounded_up_to_whole_mib() {
    let mut cfg = base("/data/vm1");
    cfg.memory_bytes = 1_000_000_000; // "1G"
    let p = pairs(&qemu_argv(&cfg).unwrap());
    assert_eq!(values(&p, "-m"), ["size=954M"]);
}

#[test]
fn disks_of_every_bus() {
    let mut cfg = base("/data/vm1");
    let mut root = disk("root", "/data/vm1/root.qcow2");
    root.boot_order = Some(1);
    root.serial = Some("ROOT-1".into());
    root.cache = Some(CacheMode::None);
    let mut iso = disk("iso", "/cache/installer.iso");
    iso.format = DiskFormat::Raw;
    iso.bus = DiskBus::Sata;
    iso.cdrom = true;
    iso.boot_order = Some(2);
    let mut data = disk("data", "/data/vm1/data.raw");
    data.format = DiskFormat::Raw;
    data.bus = DiskBus::Scsi;
    let mut sata = disk("sata", "/data/vm1/sata.raw");
    sata.bus = DiskBus::Sata;
    cfg.disks = vec![root, iso, data, sata];
    let p = pairs(&qemu_argv(&cfg).unwrap());
    assert_eq!(
        values(&p, "-blockdev"),
        [
            "driver=file,node-name=fv-disk0-file,filename=/data/vm1/root.qcow2,read-only=off,cache.direct=on,cache.no-flush=off",
            r#"{"driver":"qcow2","node-name":"fv-disk0","file":"fv-disk0-file","read-only":false,"cache":{"direct":true,"no-flush":false},"backing":null}"#,
            "driver=file,node-name=fv-disk1-file,filename=/cache/installer.iso,read-only=on",
            r#"{"driver":"raw","node-name":"fv-disk1","file":"fv-disk1-file","read-only":true}"#,
            "driver=file,node-name=fv-disk2-file,filename=/data/vm1/data.raw,read-only=off",
            r#"{"driver":"raw","node-name":"fv-disk2","file":"fv-disk2-file","read-only":false}"#,
            "driver=file,node-name=fv-disk3-file,filename=/data/vm1/sata.raw,read-only=off",
            r#"{"driver":"qcow2","node-name":"fv-disk3","file":"fv-disk3-file","read-only":false,"backing":null}"#,
        ]
    );
    assert_eq!(
        values(&p, "-device"),
        [
            "ich9-ahci,id=fv-ahci",
            "virtio-scsi-pci,id=fv-scsi",
            "virtio-blk-pci,id=ua-root,drive=fv-disk0,serial=ROOT-1,bootindex=1,write-cache=on",
            "ide-cd,id=ua-iso,drive=fv-disk1,bus=fv-ahci.0,bootindex=2",
            "scsi-hd,id=ua-data,drive=fv-disk2,bus=fv-scsi.0",
            "ide-hd,id=ua-sata,drive=fv-disk3,bus=fv-ahci.1",
        ]
    );
}

#[test]
fn qcow2_overlays_name_their_backing_image_explicitly() {
    let mut cfg = base("/data/vm1");
    let mut root = disk("root", "/data/vm1/root.qcow2");
    root.backing = Some(BackingImage {
        path: "/cache/base.qcow2".into(),
        format: DiskFormat::Qcow2,
    });
    cfg.disks = vec![root.clone()];
    let p = pairs(&qemu_argv(&cfg).unwrap());
    assert_eq!(
        values(&p, "-blockdev"),
        [
            "driver=file,node-name=fv-disk0-base-file,filename=/cache/base.qcow2,read-only=on",
            r#"{"driver":"qcow2","node-name":"fv-disk0-base","file":"fv-disk0-base-file","read-only":true,"backing":null}"#,
            "driver=file,node-name=fv-disk0-file,filename=/data/vm1/root.qcow2,read-only=off",
            r#"{"driver":"qcow2","node-name":"fv-disk0","file":"fv-disk0-file","read-only":false,"backing":"fv-disk0-base"}"#,
        ]
    );

    root.backing = Some(BackingImage {
        path: "/etc/shadow".into(),
        format: DiskFormat::Raw,
    });
    cfg.disks = vec![root.clone()];
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::Path {
            problem: PathProblem::Outside { .. },
            ..
        }
    ));

    root.format = DiskFormat::Raw;
    root.backing = Some(BackingImage {
        path: "/cache/base.raw".into(),
        format: DiskFormat::Raw,
    });
    cfg.disks = vec![root];
    assert!(matches!(problem(&cfg), ArgvProblem::BackingOnRaw { .. }));
}

#[test]
fn efi_kernel_nics_pidfile_and_paused() {
    let mut cfg = base("/data/vm1");
    cfg.firmware = Firmware::Efi {
        code: "/cache/OVMF_CODE.fd".into(),
        vars: "/data/vm1/OVMF_VARS.fd".into(),
    };
    cfg.kernel_boot = Some(KernelBoot {
        kernel: "/cache/vmlinuz".into(),
        initrd: Some("/data/vm1/initrd,1.gz".into()),
        cmdline: Some("console=ttyS0,115200 root=/dev/vda".into()),
    });
    cfg.nics = vec![NicConfig {
        id: "default".into(),
        mac: "52:54:00:12:34:56".parse().unwrap(),
        model: NicModel::VirtioNetPci,
        backend: NicBackend::User {
            port_forwards: vec![
                PortForward {
                    protocol: Protocol::Tcp,
                    host_port: 2222,
                    guest_port: 22,
                },
                PortForward {
                    protocol: Protocol::Udp,
                    host_port: 5353,
                    guest_port: 53,
                },
            ],
        },
        boot_order: Some(3),
    }];
    cfg.pidfile = Some("/data/vm1/qemu.pid".into());
    cfg.start_paused = true;
    cfg.sandbox = true;
    let p = pairs(&qemu_argv(&cfg).unwrap());
    assert_eq!(
        values(&p, "-machine"),
        ["q35,acpi=on,usb=off,dump-guest-core=off,pflash0=fv-efi-code,pflash1=fv-efi-vars"]
    );
    assert_eq!(values(&p, "-blockdev").len(), 4);
    assert_eq!(values(&p, "-kernel"), ["/cache/vmlinuz"]);
    assert_eq!(values(&p, "-initrd"), ["/data/vm1/initrd,1.gz"]);
    assert_eq!(
        values(&p, "-append"),
        ["console=ttyS0,115200 root=/dev/vda"]
    );
    assert_eq!(
        values(&p, "-netdev"),
        ["user,id=fv-net-default,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:127.0.0.1:5353-:53"]
    );
    assert_eq!(
        values(&p, "-device"),
        ["virtio-net-pci,id=ua-default,netdev=fv-net-default,mac=52:54:00:12:34:56,bootindex=3"]
    );
    assert_eq!(values(&p, "-pidfile"), ["/data/vm1/qemu.pid"]);
    assert_eq!(p.last().unwrap().0, "-S");
    assert_eq!(values(&p, "-sandbox").len(), 1);
}

#[test]
fn vnc_gives_a_small_vga_card_and_a_unix_socket_in_the_vm_folder() {
    let mut cfg = base("/data/vm,1");
    cfg.vnc_socket = Some("/data/vm,1/vnc.sock".into());
    let p = pairs(&qemu_argv(&cfg).unwrap());
    assert_eq!(values(&p, "-device"), ["VGA,id=fv-video0,vgamem_mb=16"]);
    assert_eq!(values(&p, "-vnc"), ["vnc=unix:/data/vm,,1/vnc.sock"]);
    assert_eq!(
        parse(values(&p, "-vnc")[0]),
        [OptElement {
            key: Some("vnc".into()),
            value: "unix:/data/vm,1/vnc.sock".into()
        }]
    );
    // QEMU itself opens no window and adds no card of its own.
    assert_eq!(values(&p, "-display"), ["none"]);
    assert_eq!(values(&p, "-vga"), ["none"]);

    cfg.vnc_socket = Some("/tmp/vnc.sock".into());
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::Path { what, .. } if what == "VNC socket"
    ));
    cfg.vnc_socket = Some(format!("/data/vm,1/{}.sock", "v".repeat(100)).into());
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::SocketPathTooLong { what, .. } if what == "VNC socket"
    ));
    cfg.vnc_socket = None;
    let p = pairs(&qemu_argv(&cfg).unwrap());
    assert!(values(&p, "-vnc").is_empty() && values(&p, "-device").is_empty());
}

#[test]
fn kernel_args_are_one_argument_whatever_they_hold() {
    let mut cfg = base("/data/vm1");
    let hostile = "-kernel /etc/passwd -append x,initrd=/etc/shadow -hda /dev/sda";
    cfg.kernel_boot = Some(KernelBoot {
        kernel: "/cache/kernel".into(),
        initrd: None,
        cmdline: Some(hostile.into()),
    });
    let argv = strings(&qemu_argv(&cfg).unwrap());
    let at = argv.iter().position(|a| a == "-append").unwrap();
    assert_eq!(argv[at + 1], hostile);
    assert_eq!(argv.iter().filter(|a| *a == "-kernel").count(), 1);
    assert!(!argv.iter().any(|a| a == "-hda" || a == "-initrd"));
}

fn problem(cfg: &QemuConfig) -> ArgvProblem {
    let err = qemu_argv(cfg).unwrap_err();
    assert_eq!(err.vm, cfg.name);
    err.problem
}

#[test]
fn refusals_name_the_vm_and_the_problem() {
    let mut cfg = base("/data/vm1");
    cfg.disks = vec![disk("root", "/data/vm2/root.qcow2")];
    let err = qemu_argv(&cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot build the QEMU command line for VM \"default/vm1\": disk \"root\" \"/data/vm2/root.qcow2\" \
         is outside the VM folder /data/vm1 and the read-only folders [/cache]"
    );

    cfg.disks = vec![disk("root", "/cache/base.qcow2")];
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::Path {
            problem: PathProblem::WritableInReadOnlyDir { .. },
            ..
        }
    ));

    cfg.disks = vec![disk("root", "/data/vm1/../vm2/root.qcow2")];
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::Path {
            problem: PathProblem::ParentComponent,
            ..
        }
    ));

    cfg.disks = vec![disk("bad,id", "/data/vm1/a")];
    assert!(matches!(problem(&cfg), ArgvProblem::InvalidId { .. }));

    cfg.disks = vec![disk("a", "/data/vm1/a"), disk("a", "/data/vm1/b")];
    assert!(matches!(problem(&cfg), ArgvProblem::DuplicateId { .. }));

    let mut d = disk("a", "/data/vm1/a");
    d.serial = Some("x".repeat(21));
    cfg.disks = vec![d.clone()];
    assert!(matches!(problem(&cfg), ArgvProblem::InvalidSerial { .. }));
    d.serial = Some("tab\there".into());
    cfg.disks = vec![d];
    assert!(matches!(problem(&cfg), ArgvProblem::InvalidSerial { .. }));

    let mut a = disk("a", "/data/vm1/a");
    a.boot_order = Some(1);
    let mut b = disk("b", "/data/vm1/b");
    b.boot_order = Some(1);
    cfg.disks = vec![a.clone(), b];
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::DuplicateBootOrder { order: 1, .. }
    ));
    a.boot_order = Some(u32::MAX);
    cfg.disks = vec![a];
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::BootOrderTooLarge { .. }
    ));

    let mut cd = disk("cd", "/cache/x.iso");
    cd.cdrom = true;
    cfg.disks = vec![cd];
    assert!(matches!(problem(&cfg), ArgvProblem::CdromOnVirtio { .. }));

    let mut ro = disk("ro", "/cache/x.raw");
    ro.bus = DiskBus::Sata;
    ro.readonly = true;
    cfg.disks = vec![ro];
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::ReadOnlySataDisk { .. }
    ));

    cfg.disks = (0..7)
        .map(|i| DiskConfig {
            bus: DiskBus::Sata,
            ..disk(&format!("s{i}"), &format!("/data/vm1/s{i}"))
        })
        .collect();
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::TooManySataDisks { count: 7 }
    ));
    cfg.disks.clear();

    cfg.cpu.cores = 0;
    assert!(matches!(problem(&cfg), ArgvProblem::InvalidTopology { .. }));
    cfg.cpu.cores = 1;
    cfg.memory_bytes = 0;
    assert!(matches!(problem(&cfg), ArgvProblem::NoMemory));
    cfg.memory_bytes = 1 << 30;

    cfg.name = "evil\nname".into();
    assert!(matches!(problem(&cfg), ArgvProblem::NameControlCharacter));
    cfg.name = "ok".into();

    cfg.qmp_socket = PathBuf::from(format!("/data/vm1/{}.sock", "q".repeat(100)));
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::SocketPathTooLong { .. }
    ));
    cfg.qmp_socket = "/data/vm1/qmp.sock".into();

    cfg.firmware = Firmware::Efi {
        code: "/cache/code.fd".into(),
        vars: "/cache/vars.fd".into(),
    };
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::Path {
            problem: PathProblem::WritableInReadOnlyDir { .. },
            ..
        }
    ));
    cfg.firmware = Firmware::Bios;

    cfg.kernel_boot = Some(KernelBoot {
        kernel: "/boot/vmlinuz".into(),
        initrd: None,
        cmdline: None,
    });
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::Path {
            problem: PathProblem::Outside { .. },
            ..
        }
    ));
    cfg.kernel_boot = None;

    cfg.pidfile = Some("/run/qemu.pid".into());
    assert!(matches!(problem(&cfg), ArgvProblem::Path { .. }));
    cfg.pidfile = None;

    cfg.vm_dir = "relative/vm".into();
    assert!(matches!(problem(&cfg), ArgvProblem::VmDir { .. }));
}

#[test]
fn nic_refusals() {
    let nic = |id: &str, mac: &str, fwd: Vec<PortForward>| NicConfig {
        id: id.into(),
        mac: mac.parse().unwrap(),
        model: NicModel::E1000,
        backend: NicBackend::User { port_forwards: fwd },
        boot_order: None,
    };
    let tcp = |h, g| PortForward {
        protocol: Protocol::Tcp,
        host_port: h,
        guest_port: g,
    };
    let mut cfg = base("/data/vm1");
    cfg.nics = vec![nic("n", "53:54:00:00:00:01", vec![])];
    assert!(matches!(problem(&cfg), ArgvProblem::MulticastMac { .. }));
    cfg.nics = vec![nic("n", "52:54:00:00:00:01", vec![tcp(0, 22)])];
    assert!(matches!(problem(&cfg), ArgvProblem::ZeroPort { .. }));
    cfg.nics = vec![nic(
        "n",
        "52:54:00:00:00:01",
        vec![tcp(2222, 22), tcp(2222, 23)],
    )];
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::DuplicateHostPort {
            host_port: 2222,
            ..
        }
    ));
    cfg.nics = vec![
        nic("n", "52:54:00:00:00:01", vec![]),
        nic("n", "52:54:00:00:00:02", vec![]),
    ];
    assert!(matches!(problem(&cfg), ArgvProblem::DuplicateId { .. }));
    cfg.disks = vec![disk("n", "/data/vm1/n")];
    cfg.nics = vec![nic("n", "52:54:00:00:00:01", vec![])];
    assert!(matches!(
        problem(&cfg),
        ArgvProblem::DuplicateId { what: "NIC", .. }
    ));
}

#[test]
fn mac_addresses_parse_strictly() {
    assert_eq!(
        "52:54:00:AB:cd:ef"
            .parse::<MacAddress>()
            .unwrap()
            .to_string(),
        "52:54:00:ab:cd:ef"
    );
    for bad in [
        "",
        "52:54:00:ab:cd",
        "52:54:00:ab:cd:ef:01",
        "5:54:00:ab:cd:ef",
        "52-54-00-ab-cd-ef",
        "zz:54:00:ab:cd:ef",
    ] {
        assert!(bad.parse::<MacAddress>().is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests: arbitrary names, serials, paths and command lines.

/// An oracle written independently of `paths`: splits on '/' as text.
/// Returns the normalised path if a path used with `read_only` access is acceptable.
fn oracle(path: &str, vm_dir: &str, ro_dirs: &[&str], read_only: bool) -> Option<String> {
    if !path.starts_with('/') || path.chars().any(char::is_control) {
        return None;
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return None;
    }
    let normal = format!("/{}", parts.join("/"));
    let inside = |dir: &str| normal.starts_with(&format!("{dir}/"));
    if inside(vm_dir) || (read_only && ro_dirs.iter().any(|d| inside(d))) {
        Some(normal)
    } else {
        None
    }
}

const RO_DIR: &str = "/cache/img,s=1";

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just(String::new()),
        30 => "[a-z,= .:-]{1,8}",
        1 => ".{1,5}",
    ]
}

/// Paths under the VM folder, the read-only folder, elsewhere, or relative.
fn path_in(vm_dir: String) -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        16 => Just(vm_dir),
        6 => Just(RO_DIR.to_owned()),
        1 => Just("/etc".to_owned()),
        1 => Just("relative".to_owned()),
        1 => Just("/cache".to_owned()),
    ];
    (prefix, proptest::collection::vec(component(), 1..4))
        .prop_map(|(p, c)| format!("{p}/{}", c.join("/")))
}

#[derive(Debug, Clone)]
struct GenDisk {
    path: String,
    backing: Option<String>,
    readonly: bool,
    serial: Option<String>,
    bus: DiskBus,
}

fn gen_disk(vm_dir: String) -> impl Strategy<Value = GenDisk> {
    (
        path_in(vm_dir.clone()),
        proptest::option::weighted(0.3, path_in(vm_dir)),
        any::<bool>(),
        proptest::option::of("[ -~]{1,20}"),
        prop_oneof![
            Just(DiskBus::Virtio),
            Just(DiskBus::Scsi),
            Just(DiskBus::Sata)
        ],
    )
        .prop_map(|(path, backing, readonly, serial, bus)| GenDisk {
            path,
            backing,
            readonly,
            serial,
            bus,
        })
}

/// Kernel command lines, many of them trying to look like more QEMU options.
fn kernel_args() -> impl Strategy<Value = String> {
    let option = prop_oneof![
        Just("-kernel".to_owned()),
        Just("-initrd".to_owned()),
        Just("-append".to_owned()),
        Just("-hda".to_owned()),
        Just("-drive file=/etc/shadow,if=virtio".to_owned()),
        Just(",initrd=/etc/passwd".to_owned()),
        Just("--".to_owned()),
        "[ -~]{0,12}",
    ];
    prop_oneof![
        1 => ".{0,40}",
        2 => "[ -~]{0,40}",
        3 => proptest::collection::vec(option, 0..6).prop_map(|parts| parts.join(" ")),
    ]
}

fn gen_config() -> impl Strategy<Value = (QemuConfig, Vec<GenDisk>)> {
    "/data/[a-z0-9,= .-]{1,12}"
        .prop_filter("no dot components in the VM folder", |d: &String| {
            d.split('/').all(|c| c != "." && c != "..")
        })
        .prop_flat_map(|vm_dir| {
            (
                Just(vm_dir.clone()),
                prop_oneof![1 => ".{0,24}", 4 => "[a-z,=/ ]{0,24}"],
                proptest::collection::vec(gen_disk(vm_dir.clone()), 0..4),
                proptest::option::of((
                    path_in(vm_dir.clone()),
                    proptest::option::of(path_in(vm_dir.clone())),
                    proptest::option::of(kernel_args()),
                )),
                proptest::option::of(path_in(vm_dir.clone())),
                proptest::option::of(path_in(vm_dir)),
            )
        })
        .prop_map(|(vm_dir, name, disks, kernel, pidfile, vnc)| {
            let mut cfg = base(&vm_dir);
            cfg.read_only_dirs = vec![RO_DIR.into()];
            cfg.name = name;
            cfg.disks = disks
                .iter()
                .enumerate()
                .map(|(i, g)| DiskConfig {
                    readonly: g.readonly && g.bus != DiskBus::Sata,
                    cdrom: g.readonly && g.bus == DiskBus::Sata,
                    serial: g.serial.clone(),
                    bus: g.bus,
                    boot_order: Some(i as u32 + 1),
                    backing: g.backing.as_ref().map(|b| BackingImage {
                        path: b.into(),
                        format: DiskFormat::Raw,
                    }),
                    ..disk(&format!("disk{i}"), &g.path)
                })
                .collect();
            cfg.kernel_boot = kernel.map(|(k, i, c)| KernelBoot {
                kernel: k.into(),
                initrd: i.map(Into::into),
                cmdline: c,
            });
            cfg.pidfile = pidfile.map(Into::into);
            cfg.vnc_socket = vnc.map(Into::into);
            (cfg, disks)
        })
}

/// What we expect: `None` if the config must be refused, else the normalised disk paths.
fn expected(cfg: &QemuConfig) -> Option<Vec<String>> {
    let vm = cfg.vm_dir.to_str().unwrap();
    let vm = format!(
        "/{}",
        vm.split('/')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    );
    let ok = |p: &Path, ro: bool| oracle(p.to_str().unwrap(), &vm, &[RO_DIR], ro);
    if cfg.name.chars().any(char::is_control) {
        return None;
    }
    if let Some(kb) = &cfg.kernel_boot {
        ok(&kb.kernel, true)?;
        if let Some(i) = &kb.initrd {
            ok(i, true)?;
        }
        if kb
            .cmdline
            .as_deref()
            .is_some_and(|c| c.chars().any(char::is_control))
        {
            return None;
        }
    }
    if let Some(p) = &cfg.pidfile {
        ok(p, false)?;
    }
    if let Some(p) = &cfg.vnc_socket {
        ok(p, false)?;
    }
    for d in &cfg.disks {
        if let Some(base) = &d.backing {
            ok(&base.path, true)?;
        }
    }
    cfg.disks
        .iter()
        .map(|d| ok(&d.path, d.readonly || d.cdrom))
        .collect()
}

/// Every path-valued thing QEMU will open, with whether it may be read-only.
fn emitted_paths(p: &[(String, Option<String>)]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for (flag, value) in p {
        let Some(value) = value else { continue };
        match flag.as_str() {
            "-kernel" | "-initrd" => out.push((value.clone(), true)),
            "-pidfile" => out.push((value.clone(), false)),
            "-vnc" => {
                let list = parse(value);
                if let Some(v) = get(&list, "vnc") {
                    out.push((v.strip_prefix("unix:").unwrap_or(v).to_owned(), false));
                }
            }
            "-blockdev" | "-chardev" => {
                let list = parse(value);
                let ro = get(&list, "read-only") == Some("on");
                for key in ["filename", "path"] {
                    if let Some(v) = get(&list, key) {
                        out.push((v.to_owned(), ro));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn argv_reads_back_exactly_and_never_escapes_the_vm_folder((cfg, _gen) in gen_config()) {
        let want = expected(&cfg);
        let result = qemu_argv(&cfg);
        let (Some(disk_paths), Ok(argv)) = (&want, &result) else {
            // Refused exactly when the oracle refuses, with a path or name problem.
            prop_assert!(want.is_none() && result.is_err(), "oracle {:?} vs {:?}", want, result);
            let problem = result.unwrap_err().problem;
            let path_or_name = matches!(
                problem,
                ArgvProblem::Path { .. } | ArgvProblem::NameControlCharacter | ArgvProblem::CmdlineControlCharacter
            );
            prop_assert!(path_or_name, "{:?}", problem);
            return Ok(());
        };
        let p = pairs(argv);

        // The name reads back as exactly one key with exactly the value given.
        let name = parse(values(&p, "-name")[0]);
        prop_assert_eq!(name, vec![OptElement { key: Some("guest".into()), value: cfg.name.clone() }]);

        // Disk paths and serials read back exactly; no option gains a key we did not write.
        let vm = cfg.vm_dir.to_str().unwrap();
        let (json_nodes, kv_nodes): (Vec<&str>, Vec<&str>) =
            values(&p, "-blockdev").into_iter().partition(|v| v.starts_with('{'));
        let files: Vec<Vec<OptElement>> = kv_nodes.into_iter().map(parse).collect();
        let backings = cfg.disks.iter().filter(|d| d.backing.is_some()).count();
        prop_assert_eq!(files.len(), cfg.disks.len() + backings);
        for list in &files {
            prop_assert_eq!(keys(list), set(&["driver", "filename", "node-name", "read-only"]));
            prop_assert_eq!(list.len(), 4);
            prop_assert_eq!(get(list, "driver"), Some("file"));
        }
        let filename_of = |node: String| {
            files.iter().find(|l| get(l, "node-name") == Some(node.as_str())).and_then(|l| get(l, "filename"))
        };
        for (i, (d, want_path)) in cfg.disks.iter().zip(disk_paths).enumerate() {
            prop_assert_eq!(filename_of(format!("fv-disk{i}-file")), Some(want_path.as_str()));
            if let Some(base) = &d.backing {
                let want_base = oracle(base.path.to_str().unwrap(), vm, &[RO_DIR], true);
                prop_assert_eq!(filename_of(format!("fv-disk{i}-base-file")), want_base.as_deref());
            }
        }
        // Format nodes are JSON with our node names only.
        for node in json_nodes {
            let value: serde_json::Value = serde_json::from_str(node).unwrap();
            let object = value.as_object().unwrap();
            let allowed = set(&["driver", "node-name", "file", "read-only", "cache", "backing"]);
            prop_assert!(object.keys().all(|k| allowed.contains(k)), "{}", node);
            prop_assert!(object["node-name"].as_str().unwrap().starts_with("fv-disk"));
        }
        let devices: Vec<Vec<OptElement>> = values(&p, "-device")
            .into_iter()
            .map(parse)
            .filter(|d| !["ich9-ahci", "virtio-scsi-pci", "VGA"].contains(&d[0].value.as_str()))
            .collect();
        prop_assert_eq!(devices.len(), cfg.disks.len());
        for (dev, d) in devices.iter().zip(&cfg.disks) {
            prop_assert_eq!(get(dev, "serial"), d.serial.as_deref());
            let want_id = format!("ua-{}", d.id);
            prop_assert_eq!(get(dev, "id"), Some(want_id.as_str()));
            let mut want_keys = set(&["id", "drive", "bootindex"]);
            if d.serial.is_some() { want_keys.insert("serial".into()); }
            if d.bus != DiskBus::Virtio { want_keys.insert("bus".into()); }
            prop_assert_eq!(keys(dev), want_keys);
        }
        for chardev in values(&p, "-chardev") {
            let list = parse(chardev);
            prop_assert_eq!(keys(&list), set(&["id", "path", "server", "wait"]));
        }
        if let Some(kb) = &cfg.kernel_boot {
            prop_assert_eq!(values(&p, "-append"), kb.cmdline.as_deref().into_iter().collect::<Vec<_>>());
            // The command line is one argv element: with a harmless one instead, every other
            // element is the same, so nothing in it can become an option of its own.
            if kb.cmdline.is_some() {
                let mut plain = cfg.clone();
                plain.kernel_boot.as_mut().unwrap().cmdline = Some("quiet".into());
                let plain = strings(&qemu_argv(&plain).unwrap());
                let mine = strings(argv);
                prop_assert_eq!(plain.len(), mine.len());
                let at = mine.iter().position(|a| a == "-append").unwrap();
                for (i, (a, b)) in plain.iter().zip(&mine).enumerate() {
                    if i != at + 1 {
                        prop_assert_eq!(a, b);
                    }
                }
            }
        }
        // The VNC socket reads back as one key with exactly the path given.
        match &cfg.vnc_socket {
            Some(socket) => {
                let list = parse(values(&p, "-vnc")[0]);
                prop_assert_eq!(keys(&list), set(&["vnc"]));
                let want = format!("unix:{}", oracle(socket.to_str().unwrap(), vm, &[], false).unwrap());
                prop_assert_eq!(get(&list, "vnc"), Some(want.as_str()));
            }
            None => prop_assert!(values(&p, "-vnc").is_empty()),
        }

        // Nothing outside the allowed folders, and nothing writable outside the VM folder.
        for (path, ro) in emitted_paths(&p) {
            let in_vm = oracle(&path, vm, &[], false).is_some();
            let in_ro = ro && oracle(&path, vm, &[RO_DIR], true).is_some();
            prop_assert!(in_vm || in_ro, "emitted {:?} (read-only {})", path, ro);
        }
    }
}
