//! Replaying the launcher's QEMU command line as a plain `qemu-system-x86_64` (pure functions).
//!
//! The launcher builds QEMU's argv from the VMI; every file it names that belongs to the VM lives
//! in the pod folder (`<pod dir>/qmp.sock`, `serial.sock`, `qemu.pid`, the containerDisk overlay,
//! the cloud-init image). To boot the same guest without ferrovirt, the benchmark reads that argv
//! from `/proc/<qemu pid>/cmdline`, and:
//!
//! ```text
//!   argv ──folder_refs(pod dir)──▶ [qmp.sock: socket, serial.sock: socket, qemu.pid: pidfile,
//!                                   <overlay>: disk, <cloud-init image>: disk]
//!        ──rewrite(pod dir → own dir)──▶ the same argv with every pod-folder path moved, `-S` dropped
//!        ──serial_socket──▶ the socket the guest's serial port listens on (read by the benchmark)
//! ```
//!
//! Paths appear inside QEMU option lists (where `,` is written `,,`) and inside `-blockdev` JSON
//! (where `"` and `\` are escaped). A plain folder path (no `,`, `"`, `\` or control characters)
//! reads the same in both, so moving one to another is a string replacement of `<from>/` by `<to>/`;
//! [`rewrite`] refuses a destination that is not plain.

use std::fmt;

/// Splits the NUL-separated `/proc/<pid>/cmdline` into arguments (binary first).
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// What a file of the pod folder named on QEMU's command line is to QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A `-chardev socket` QEMU listens on (QMP, serial): QEMU creates it.
    Socket,
    /// `-pidfile`: QEMU writes it.
    Pidfile,
    /// Anything else (a disk image): must exist before QEMU starts.
    Disk,
}

/// A file under the folder, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRef {
    /// Path relative to the folder, e.g. `serial.sock` or `disks/containerdisk.qcow2`.
    pub name: String,
    pub role: Role,
}

/// Every file under `dir` that `args` names, once each, in order of first mention.
///
/// A reference ends at an option-list separator (a `,` that is not `,,`), at a JSON string's `"`,
/// or at the end of the argument; `,,` in an option list is a literal comma.
pub fn folder_refs(args: &[String], dir: &str) -> Vec<FolderRef> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    let mut out: Vec<FolderRef> = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let option = i.checked_sub(1).map(|j| args[j].as_str());
        let role = match option {
            Some("-chardev") | Some("-vnc") => Role::Socket,
            Some("-pidfile") => Role::Pidfile,
            _ => Role::Disk,
        };
        let mut rest = arg.as_str();
        while let Some(at) = rest.find(&prefix) {
            let tail = &rest[at + prefix.len()..];
            let (name, used) = take_name(tail);
            rest = &tail[used..];
            if !name.is_empty() && !out.iter().any(|r| r.name == name) {
                out.push(FolderRef { name, role });
            }
        }
    }
    out
}

/// The name at the start of `s` up to its end marker; returns it and how many bytes it took.
fn take_name(s: &str) -> (String, usize) {
    let bytes = s.as_bytes();
    let mut name = String::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b',' if bytes.get(i + 1) == Some(&b',') => {
                name.push(',');
                i += 2;
            }
            b',' | b'"' => break,
            _ => {
                // Copy one whole UTF-8 character.
                let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                name.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    (name, i)
}

/// Why a command line cannot be moved to another folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteError {
    /// The destination would need escaping in option lists or JSON.
    UnsafeDestination(String),
    /// The source folder does not appear on the command line at all.
    FolderNotNamed(String),
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewriteError::UnsafeDestination(d) => write!(
                f,
                "folder {d:?} holds a ',', '\"', '\\' or control character; choose a plain folder"
            ),
            RewriteError::FolderNotNamed(d) => {
                write!(f, "the QEMU command line names nothing in {d:?}")
            }
        }
    }
}

impl std::error::Error for RewriteError {}

/// `args` (without the binary) for a plain QEMU whose files live in `to` instead of `from`: every
/// `<from>/...` becomes `<to>/...`, and `-S` (start with the vCPUs stopped, which the launcher uses
/// to attach the console before `cont`) is dropped so the guest runs at once. Everything else is
/// kept as it is.
pub fn rewrite(args: &[String], from: &str, to: &str) -> Result<Vec<String>, RewriteError> {
    if to.is_empty()
        || to
            .chars()
            .any(|c| matches!(c, ',' | '"' | '\\') || c.is_control())
    {
        return Err(RewriteError::UnsafeDestination(to.to_owned()));
    }
    let from_prefix = format!("{}/", from.trim_end_matches('/'));
    let to_prefix = format!("{}/", to.trim_end_matches('/'));
    if !args.iter().any(|a| a.contains(&from_prefix)) {
        return Err(RewriteError::FolderNotNamed(from.to_owned()));
    }
    Ok(args
        .iter()
        .filter(|a| a.as_str() != "-S")
        .map(|a| a.replace(&from_prefix, &to_prefix))
        .collect())
}

/// Splits a QEMU option list at its separators; `,,` is a literal comma.
pub fn split_optlist(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' && chars.peek() != Some(&',') {
            parts.push(std::mem::take(&mut current));
        } else {
            if c == ',' {
                chars.next();
            }
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

/// The path of the Unix socket the guest's first serial port is on: the `-chardev socket` whose
/// `id` the first `-serial chardev:<id>` names.
pub fn serial_socket(args: &[String]) -> Option<String> {
    let id = option_values(args, "-serial")
        .find_map(|v| v.strip_prefix("chardev:").map(str::to_owned))?;
    option_values(args, "-chardev").find_map(|v| {
        let parts = split_optlist(v);
        let is_socket = parts.first().map(String::as_str) == Some("socket")
            || parts.iter().any(|p| p == "backend=socket");
        let has_id = parts
            .iter()
            .any(|p| p.strip_prefix("id=") == Some(id.as_str()));
        if !(is_socket && has_id) {
            return None;
        }
        parts
            .iter()
            .find_map(|p| p.strip_prefix("path=").map(str::to_owned))
    })
}

/// The values given to `option` (each argument right after one `option`).
fn option_values<'a>(args: &'a [String], option: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    args.windows(2)
        .filter(move |w| w[0] == option)
        .map(|w| w[1].as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "/tmp/fv/nodes/node1/pods/0b5c-uid";

    /// A command line shaped like the launcher's (see `ferrovirt_launcher::qemu`).
    fn launcher_args() -> Vec<String> {
        [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-name",
            "guest=default/bench-vm-0",
            "-machine",
            "q35,acpi=on",
            "-accel",
            "tcg",
            "-chardev",
            "socket,id=fv-qmp,path=/tmp/fv/nodes/node1/pods/0b5c-uid/qmp.sock,server=on,wait=off",
            "-mon",
            "chardev=fv-qmp,mode=control",
            "-chardev",
            "socket,id=fv-serial0,path=/tmp/fv/nodes/node1/pods/0b5c-uid/serial.sock,server=on,wait=off",
            "-serial",
            "chardev:fv-serial0",
            "-blockdev",
            "driver=file,node-name=fv-disk0-backing-file,filename=/tmp/fv/nodes/node1/images/sha256-ab/disk.qcow2,read-only=on",
            "-blockdev",
            "driver=file,node-name=fv-disk0-file,filename=/tmp/fv/nodes/node1/pods/0b5c-uid/disks/containerdisk.qcow2",
            "-blockdev",
            r#"{"driver":"qcow2","node-name":"fv-disk0","file":"fv-disk0-file","backing":"fv-disk0-backing"}"#,
            "-blockdev",
            r#"{"driver":"raw","node-name":"fv-disk1","file":{"driver":"file","filename":"/tmp/fv/nodes/node1/pods/0b5c-uid/disks/cloudinit.img"}}"#,
            "-pidfile",
            "/tmp/fv/nodes/node1/pods/0b5c-uid/qemu.pid",
            "-boot",
            "strict=on",
            "-S",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    #[test]
    fn cmdline_splits_on_nul() {
        assert_eq!(
            parse_cmdline(b"qemu-system-x86_64\0-S\0-m\x00128M\0"),
            ["qemu-system-x86_64", "-S", "-m", "128M"]
        );
        assert_eq!(parse_cmdline(b"a\0\0b"), ["a", "", "b"]);
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn finds_every_folder_file_once_with_its_role() {
        let refs = folder_refs(&launcher_args(), POD);
        let got: Vec<(&str, Role)> = refs.iter().map(|r| (r.name.as_str(), r.role)).collect();
        assert_eq!(
            got,
            [
                ("qmp.sock", Role::Socket),
                ("serial.sock", Role::Socket),
                ("disks/containerdisk.qcow2", Role::Disk),
                ("disks/cloudinit.img", Role::Disk),
                ("qemu.pid", Role::Pidfile),
            ]
        );
        // The cached base image is outside the pod folder: shared, not copied.
        assert!(refs.iter().all(|r| !r.name.contains("images")));
        // A trailing slash on the folder makes no difference.
        assert_eq!(folder_refs(&launcher_args(), &format!("{POD}/")), refs);
    }

    #[test]
    fn doubled_commas_are_part_of_the_name() {
        let args =
            ["-blockdev", "driver=file,filename=/d/a,,b.img,read-only=on"].map(str::to_owned);
        let refs = folder_refs(&args, "/d");
        assert_eq!(
            refs,
            [FolderRef {
                name: "a,b.img".into(),
                role: Role::Disk
            }]
        );
    }

    #[test]
    fn a_longer_sibling_folder_is_not_the_folder() {
        let args = ["-pidfile", "/tmp/fv/nodes/node1/pods/0b5c-uid2/qemu.pid"].map(str::to_owned);
        assert!(folder_refs(&args, POD).is_empty());
    }

    #[test]
    fn rewrite_moves_every_path_and_drops_start_paused() {
        let to = "/tmp/bench/plain-0";
        let out = rewrite(&launcher_args(), POD, to).unwrap();
        assert_eq!(out.len(), launcher_args().len() - 1);
        assert!(!out.iter().any(|a| a == "-S"));
        assert!(!out.iter().any(|a| a.contains(POD)), "{out:?}");
        assert!(out.contains(&format!(
            "socket,id=fv-serial0,path={to}/serial.sock,server=on,wait=off"
        )));
        assert!(out.contains(&format!("{to}/qemu.pid")));
        assert!(out
            .iter()
            .any(|a| a.contains(&format!(r#""filename":"{to}/disks/cloudinit.img""#))));
        // The shared base image stays where it is; everything else is unchanged.
        assert!(out
            .iter()
            .any(|a| a.contains("/tmp/fv/nodes/node1/images/sha256-ab/disk.qcow2")));
        assert_eq!(&out[..10], &launcher_args()[..10]);
        // The moved command line names the same files, now under the new folder.
        assert_eq!(folder_refs(&out, to), folder_refs(&launcher_args(), POD));
    }

    #[test]
    fn rewrite_keeps_an_argv_without_start_paused() {
        let mut args = launcher_args();
        args.retain(|a| a != "-S");
        assert_eq!(rewrite(&args, POD, "/x").unwrap().len(), args.len());
    }

    #[test]
    fn rewrite_refuses_destinations_that_need_escaping_and_foreign_folders() {
        for bad in ["/tmp/a,b", "/tmp/a\"b", "/tmp/a\\b", "/tmp/a\nb", ""] {
            assert_eq!(
                rewrite(&launcher_args(), POD, bad),
                Err(RewriteError::UnsafeDestination(bad.to_owned()))
            );
        }
        assert_eq!(
            rewrite(&launcher_args(), "/elsewhere", "/x"),
            Err(RewriteError::FolderNotNamed("/elsewhere".into()))
        );
    }

    #[test]
    fn optlists_split_on_single_commas() {
        assert_eq!(
            split_optlist("socket,id=a,path=/x,,y"),
            ["socket", "id=a", "path=/x,y"]
        );
        assert_eq!(split_optlist(""), [""]);
    }

    #[test]
    fn serial_socket_is_the_chardev_the_serial_port_names() {
        assert_eq!(
            serial_socket(&launcher_args()).as_deref(),
            Some("/tmp/fv/nodes/node1/pods/0b5c-uid/serial.sock")
        );
        let moved = rewrite(&launcher_args(), POD, "/b").unwrap();
        assert_eq!(serial_socket(&moved).as_deref(), Some("/b/serial.sock"));
        // No serial port, or one on something other than a socket: nothing to read.
        let mut args = launcher_args();
        args.retain(|a| a != "-serial" && a != "chardev:fv-serial0");
        assert_eq!(serial_socket(&args), None);
        let pty = ["-chardev", "pty,id=s0", "-serial", "chardev:s0"].map(str::to_owned);
        assert_eq!(serial_socket(&pty), None);
    }
}
