//! Does hardware acceleration really work here? Boot a tiny guest under KVM and see.
//!
//! `/dev/kvm` opening proves little: on some hosts (nested virtualization) KVM initialises, runs
//! the first real-mode instructions, and then crawls at a few hundred thousand guest
//! instructions per second, so a Linux guest "hangs" in its decompressor. The probe therefore
//! boots a 512-byte boot sector that walks the same path a kernel does and then does real work:
//!
//! ```text
//!   SeaBIOS ─▶ 0x7c00, 16-bit real mode ── "FV:real"
//!           ─▶ GDT, CR0.PE, far jump ─────── "FV:protected"     (32-bit)
//!           ─▶ page tables, CR4.PAE, EFER.LME, CR0.PG, far jump ── "FV:long"   (64-bit)
//!           ─▶ 16 x 1 MiB of byte stores ─── "FV:work" "FERROVIRT-PROBE-OK"  then cli; hlt
//!   each line goes out of the COM1 data port (0x3f8), which QEMU sends to stdout
//! ```
//!
//! KVM counts as usable only if [`MARKER`] arrives within the timeout; the stages seen say how far
//! a failing guest got. The same sector boots under TCG in well under a second, which the tests
//! check, so a KVM failure is KVM's, not the sector's.
//!
//! The sector, hand-assembled (addresses as loaded at 0x7c00; `lodsb/test/jz/out/jmp/ret` is a
//! "print the NUL-terminated string at SI/ESI/RSI" routine, repeated once per CPU mode):
//!
//! ```text
//!   7c00 fa                cli                       7c31 66 b8 10 00       mov ax, 0x10
//!   7c01 31 c0             xor ax, ax                7c35 8e d8/8e c0/8e d0 mov ds/es/ss, ax
//!   7c03 8e d8             mov ds, ax                7c3b be 20 7d 00 00    mov esi, msg_protected
//!   7c05 8e c0             mov es, ax                7c40 e8 5f 00 00 00    call print32 (7ca4)
//!   7c07 8e d0             mov ss, ax                7c45 bf 00 10 00 00    mov edi, 0x1000
//!   7c09 bc 00 7c          mov sp, 0x7c00            7c4a 31 c0             xor eax, eax
//!   7c0c fc                cld                       7c4c b9 00 0c 00 00    mov ecx, 3072
//!   7c0d ba f8 03          mov dx, 0x3f8             7c51 f3 ab             rep stosd   ; zero 0x1000-0x3fff
//!   7c10 be 16 7d          mov si, msg_real          7c53 c6 05 00 10 00 00 03  mov byte [0x1000], 0x03 ; PML4[0] =
//!   7c13 e8 12 00          call print16 (7c28)       7c5a c6 05 01 10 00 00 20  mov byte [0x1001], 0x20 ;  0x2003
//!   7c16 0f 01 16 10 7d    lgdt [gdt_desc]           7c61 c6 05 00 20 00 00 03  mov byte [0x2000], 0x03 ; PDPT[0] =
//!   7c1b 0f 20 c0          mov eax, cr0              7c68 c6 05 01 20 00 00 30  mov byte [0x2001], 0x30 ;  0x3003
//!   7c1e 0c 01             or al, 1                  7c6f c6 05 00 30 00 00 83  mov byte [0x3000], 0x83 ; PD[0]: 2 MiB page
//!   7c20 0f 22 c0          mov cr0, eax              7c76 b8 00 10 00 00    mov eax, 0x1000
//!   7c23 ea 31 7c 08 00    jmp 0x08:pm32             7c7b 0f 22 d8          mov cr3, eax
//!   7c28 ac 84 c0 74 03 ee eb f8 c3   print16        7c7e 0f 20 e0 0c 20 0f 22 e0   cr4 |= PAE
//!                                                    7c86 b9 80 00 00 c0    mov ecx, 0xc0000080 (EFER)
//!   7cad 66 ba f8 03       mov dx, 0x3f8 (rdmsr      7c8b 0f 32 80 cc 01 0f 30      rdmsr; or ah, 1 (LME); wrmsr
//!                          clobbered edx)            7c92 0f 20 c0 0d 00 00 00 80 0f 22 c0   cr0 |= PG
//!   7cb1 be 2f 7d 00 00    mov esi, msg_long         7c9d ea ad 7c 00 00 18 00      jmp 0x18:lm64
//!   7cb6 e8 28 00 00 00    call print64 (7ce3)       7ca4 ac 84 c0 74 03 ee eb f8 c3   print32
//!   7cbb bb 10 00 00 00    mov ebx, 16               7cd5 be 39 7d 00 00    mov esi, msg_done
//!   7cc0 bf 00 00 10 00    mov edi, 0x100000         7cda e8 04 00 00 00    call print64
//!   7cc5 88 1f             mov [rdi], bl             7cdf fa f4 eb fc       cli; hlt; jmp 7cdf
//!   7cc7 ff c7             inc edi                   7ce3 ac 84 c0 74 03 ee eb f8 c3   print64
//!   7cc9 81 ff 00 00 20 00 cmp edi, 0x200000         7cf0 GDT: null; 0x08 code32 (00cf9a00 0000ffff);
//!   7ccf 72 f4             jb 7cc5                        0x10 data (00cf9200 0000ffff); 0x18 code64 (00af9a00 0000ffff)
//!   7cd1 ff cb 75 eb       dec ebx; jnz 7cc0         7d10 gdt_desc: limit 31, base 0x7cf0
//!                                                    7d16.. the four messages; 7dfe 55 aa
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::qemu::optlist::escape;
use crate::qemu::Accel;

/// The line the probe guest prints when it is done.
pub const MARKER: &str = "FERROVIRT-PROBE-OK";
/// The stages the probe guest reports, in order.
pub const STAGES: [&str; 4] = ["real", "protected", "long", "work"];
/// Size of the probe disk image (SeaBIOS does not boot a 512-byte virtio disk).
pub const PROBE_DISK_BYTES: u64 = 1 << 20;

/// Machine code from 0x7c00 up to the GDT (see the module listing).
const CODE: [u8; 0xec] = [
    // 16-bit: segments, stack, COM1, print "FV:real", load GDT, enter protected mode
    0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xfc, 0xba, 0xf8,
    0x03, //
    0xbe, 0x16, 0x7d, 0xe8, 0x12, 0x00, 0x0f, 0x01, 0x16, 0x10, 0x7d, 0x0f, 0x20, 0xc0, 0x0c,
    0x01, //
    0x0f, 0x22, 0xc0, 0xea, 0x31, 0x7c, 0x08, 0x00, //
    // print16
    0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xc3, //
    // 32-bit: data segments, print "FV:protected", identity page tables, PAE, LME, paging
    0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0xbe, 0x20, 0x7d, 0x00,
    0x00, //
    0xe8, 0x5f, 0x00, 0x00, 0x00, 0xbf, 0x00, 0x10, 0x00, 0x00, 0x31, 0xc0, 0xb9, 0x00, 0x0c,
    0x00, //
    0x00, 0xf3, 0xab, 0xc6, 0x05, 0x00, 0x10, 0x00, 0x00, 0x03, 0xc6, 0x05, 0x01, 0x10, 0x00,
    0x00, //
    0x20, 0xc6, 0x05, 0x00, 0x20, 0x00, 0x00, 0x03, 0xc6, 0x05, 0x01, 0x20, 0x00, 0x00, 0x30,
    0xc6, //
    0x05, 0x00, 0x30, 0x00, 0x00, 0x83, 0xb8, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x22, 0xd8, 0x0f,
    0x20, //
    0xe0, 0x0c, 0x20, 0x0f, 0x22, 0xe0, 0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32, 0x80, 0xcc,
    0x01, //
    0x0f, 0x30, 0x0f, 0x20, 0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, 0xea, 0xad,
    0x7c, //
    0x00, 0x00, 0x18, 0x00, //
    // print32
    0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xc3, //
    // 64-bit: COM1 again, print "FV:long", 16 passes of byte stores over 1 MiB..2 MiB,
    // print "FV:work" and the marker, halt
    0x66, 0xba, 0xf8, 0x03, 0xbe, 0x2f, 0x7d, 0x00, 0x00, 0xe8, 0x28, 0x00, 0x00, 0x00, 0xbb,
    0x10, //
    0x00, 0x00, 0x00, 0xbf, 0x00, 0x00, 0x10, 0x00, 0x88, 0x1f, 0xff, 0xc7, 0x81, 0xff, 0x00,
    0x00, //
    0x20, 0x00, 0x72, 0xf4, 0xff, 0xcb, 0x75, 0xeb, 0xbe, 0x39, 0x7d, 0x00, 0x00, 0xe8, 0x04,
    0x00, //
    0x00, 0x00, 0xfa, 0xf4, 0xeb, 0xfc, //
    // print64
    0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xc3,
];

const GDT_OFFSET: usize = 0xf0;
const GDT: [u64; 4] = [
    0,
    0x00cf_9a00_0000_ffff,
    0x00cf_9200_0000_ffff,
    0x00af_9a00_0000_ffff,
];
const GDT_DESC_OFFSET: usize = 0x110;
/// Message offsets in the sector, as the code above refers to them (0x7c00 + offset).
const MESSAGES: [(usize, &str); 4] = [
    (0x116, "FV:real\r\n"),
    (0x120, "FV:protected\r\n"),
    (0x12f, "FV:long\r\n"),
    (0x139, "FV:work\r\nFERROVIRT-PROBE-OK\r\n"),
];

/// The probe's boot sector.
pub fn boot_sector() -> [u8; 512] {
    let mut s = [0u8; 512];
    s[..CODE.len()].copy_from_slice(&CODE);
    for (i, entry) in GDT.iter().enumerate() {
        s[GDT_OFFSET + 8 * i..GDT_OFFSET + 8 * (i + 1)].copy_from_slice(&entry.to_le_bytes());
    }
    s[GDT_DESC_OFFSET..GDT_DESC_OFFSET + 2].copy_from_slice(&31u16.to_le_bytes());
    s[GDT_DESC_OFFSET + 2..GDT_DESC_OFFSET + 6]
        .copy_from_slice(&(0x7c00 + GDT_OFFSET as u32).to_le_bytes());
    for (offset, text) in MESSAGES {
        s[offset..offset + text.len()].copy_from_slice(text.as_bytes());
        // The byte after each message stays 0: its terminator.
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// Writes the probe disk: the boot sector, padded (sparsely) to [`PROBE_DISK_BYTES`].
pub fn write_probe_disk(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(&boot_sector())?;
    file.set_len(PROBE_DISK_BYTES)?;
    file.sync_all()
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot write the probe disk {path}: {source}")]
    Disk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {binary}: {source}; install qemu-system-x86")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the probe guest's serial output failed: {0}")]
    Output(#[source] io::Error),
}

/// What one probe boot showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootProbe {
    pub reached_marker: bool,
    /// The stages seen, in order (a prefix of [`STAGES`] for a healthy guest).
    pub stages: Vec<String>,
    pub elapsed: Duration,
    /// QEMU's stderr if it exited by itself (it failed to start, say).
    pub qemu_exit: Option<String>,
}

/// Boots the probe sector under `accel` and waits up to `timeout` for the marker.
pub async fn boot_probe(
    qemu_binary: &Path,
    accel: Accel,
    timeout: Duration,
) -> Result<BootProbe, ProbeError> {
    let dir = tempfile::tempdir().map_err(|source| ProbeError::Disk {
        path: std::env::temp_dir(),
        source,
    })?;
    let disk = dir.path().join("probe.img");
    write_probe_disk(&disk).map_err(|source| ProbeError::Disk {
        path: disk.clone(),
        source,
    })?;
    boot_image(qemu_binary, accel, &disk, timeout).await
}

/// Boots a raw disk image under `accel` with COM1 on stdout, and waits up to `timeout` for the
/// probe's [`MARKER`]. QEMU is killed (by PID) before this returns.
pub async fn boot_image(
    qemu_binary: &Path,
    accel: Accel,
    image: &Path,
    timeout: Duration,
) -> Result<BootProbe, ProbeError> {
    let image = image.to_str().ok_or_else(|| ProbeError::Disk {
        path: image.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"),
    })?;
    let mut cmd = Command::new(qemu_binary);
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "pc",
        "-m",
        "32",
    ])
    .args(["-accel", accel.as_str()])
    .args(["-cpu", if accel == Accel::Kvm { "host" } else { "max" }])
    .arg("-blockdev")
    .arg(format!(
        "driver=file,node-name=fv-probe-file,filename={},read-only=on",
        escape(image)
    ))
    .args([
        "-blockdev",
        "driver=raw,node-name=fv-probe,file=fv-probe-file,read-only=on",
    ])
    .args(["-device", "virtio-blk-pci,drive=fv-probe,bootindex=1"])
    .args(["-serial", "stdio"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| ProbeError::Spawn {
        binary: qemu_binary.to_owned(),
        source,
    })?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| ProbeError::Output(io::Error::other("no stdout")))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| ProbeError::Output(io::Error::other("no stderr")))?;
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let deadline = tokio::time::Instant::now() + timeout;
    let mut output = String::new();
    let mut buf = [0u8; 512];
    let mut exited = false;
    let mut read_error = None;
    while !output.contains(MARKER) {
        match tokio::time::timeout_at(deadline, stdout.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) => {
                exited = true;
                break;
            }
            Ok(Ok(n)) => output.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(e)) => {
                read_error = Some(e);
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    // Kill by PID (tokio sends SIGKILL to the child's pid) and reap.
    let _ = child.start_kill();
    let _ = child.wait().await;
    let stderr_text = stderr_task.await.unwrap_or_default();
    if let Some(e) = read_error {
        return Err(ProbeError::Output(e));
    }
    Ok(BootProbe {
        reached_marker: output.contains(MARKER),
        stages: parse_stages(&output),
        elapsed,
        qemu_exit: exited.then(|| stderr_text.trim().to_owned()),
    })
}

/// The `FV:<stage>` lines in the guest's output.
pub fn parse_stages(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FV:"))
        .map(str::to_owned)
        .collect()
}

/// What opening `/dev/kvm` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevKvm {
    Opened,
    Failed(String),
}

/// Opens `/dev/kvm` read-write, as QEMU does.
pub fn open_dev_kvm() -> DevKvm {
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(file) => {
            drop::<File>(file);
            DevKvm::Opened
        }
        Err(e) => DevKvm::Failed(e.to_string()),
    }
}

/// Whether VMs on this host should use KVM, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelProbe {
    pub kvm_usable: bool,
    /// One sentence for the node's status and the VMI's SoftwareEmulation condition.
    pub reason: String,
    pub dev_kvm: DevKvm,
}

/// Opens `/dev/kvm`, then boots the probe guest under KVM; KVM is usable only if the guest
/// finishes within `timeout`.
pub async fn probe_accel(qemu_binary: &Path, timeout: Duration) -> AccelProbe {
    let dev_kvm = open_dev_kvm();
    if let DevKvm::Failed(e) = &dev_kvm {
        return AccelProbe {
            kvm_usable: false,
            reason: format!("cannot open /dev/kvm: {e}"),
            dev_kvm,
        };
    }
    let (kvm_usable, reason) = match boot_probe(qemu_binary, Accel::Kvm, timeout).await {
        Err(e) => (
            false,
            format!("/dev/kvm opens, but the KVM probe could not run: {e}"),
        ),
        Ok(probe) => judge(&probe, timeout),
    };
    AccelProbe {
        kvm_usable,
        reason,
        dev_kvm,
    }
}

/// The verdict on a KVM probe boot. Pure.
pub fn judge(probe: &BootProbe, timeout: Duration) -> (bool, String) {
    if probe.reached_marker {
        return (
            true,
            format!(
                "a probe guest ran under KVM to its marker in {:.2}s",
                probe.elapsed.as_secs_f64()
            ),
        );
    }
    if let Some(stderr) = &probe.qemu_exit {
        let stderr = if stderr.is_empty() {
            "no message"
        } else {
            stderr.as_str()
        };
        return (
            false,
            format!("/dev/kvm opens, but QEMU exited under KVM: {stderr}"),
        );
    }
    let how_far = match probe.stages.last() {
        Some(stage) => format!(
            "got as far as {stage:?} ({} of {} stages)",
            probe.stages.len(),
            STAGES.len()
        ),
        None => "printed nothing".to_owned(),
    };
    (
        false,
        format!(
            "/dev/kvm opens, but a probe guest under KVM {how_far} and did not finish within {:.1}s \
             (nested virtualization that does not really work?); using TCG",
            timeout.as_secs_f64()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sector_layout_matches_the_code() {
        let s = boot_sector();
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        let imm16 = |at: usize| usize::from(u16::from_le_bytes([s[at], s[at + 1]]));
        let imm32 =
            |at: usize| u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]) as usize;
        // The immediates in the code point at the right data.
        assert_eq!(imm16(0x11), 0x7c00 + MESSAGES[0].0); // mov si, msg_real
        assert_eq!(imm16(0x19), 0x7c00 + GDT_DESC_OFFSET); // lgdt [gdt_desc]
        assert_eq!(imm32(0x3c), 0x7c00 + MESSAGES[1].0); // mov esi, msg_protected
        assert_eq!(imm32(0xb2), 0x7c00 + MESSAGES[2].0); // mov esi, msg_long
        assert_eq!(imm32(0xd6), 0x7c00 + MESSAGES[3].0); // mov esi, msg_done
        assert_eq!(imm16(0x24), 0x7c31); // jmp 0x08:pm32
        assert_eq!(imm32(0x9e), 0x7cad); // jmp 0x18:lm64
        assert_eq!(imm32(0x112), 0x7c00 + GDT_OFFSET); // gdt_desc base
                                                       // Every message is NUL-terminated and they do not overlap the code or each other.
        for (offset, text) in MESSAGES {
            assert_eq!(&s[offset..offset + text.len()], text.as_bytes());
            assert_eq!(s[offset + text.len()], 0);
        }
        assert!(CODE.len() <= GDT_OFFSET);
        for pair in MESSAGES.windows(2) {
            assert!(pair[0].0 + pair[0].1.len() < pair[1].0);
        }
        let last = MESSAGES[3];
        assert!(last.0 + last.1.len() < 510);
        assert!(MESSAGES[3].1.contains(MARKER));
    }

    #[test]
    fn stages_parse() {
        assert_eq!(
            parse_stages("FV:real\r\nFV:protected\r\nFV:lo"),
            ["real", "protected", "lo"]
        );
        assert_eq!(parse_stages("garbage"), Vec::<String>::new());
    }

    #[test]
    fn verdicts() {
        let probe = |marker, stages: &[&str], exit: Option<&str>| BootProbe {
            reached_marker: marker,
            stages: stages.iter().map(|s| (*s).to_owned()).collect(),
            elapsed: Duration::from_millis(120),
            qemu_exit: exit.map(str::to_owned),
        };
        let t = Duration::from_secs(5);
        assert!(judge(&probe(true, &STAGES, None), t).0);
        let (ok, why) = judge(&probe(false, &["real", "protected", "long"], None), t);
        assert!(!ok);
        assert!(
            why.contains("\"long\" (3 of 4 stages)") && why.contains("5.0s"),
            "{why}"
        );
        let (ok, why) = judge(
            &probe(false, &[], Some("Could not access KVM kernel module")),
            t,
        );
        assert!(!ok && why.contains("Could not access KVM"), "{why}");
    }
}
