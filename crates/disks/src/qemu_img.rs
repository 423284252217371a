//! `qemu-img create`: copy-on-write overlays and empty qcow2 disks.
//!
//! The argument lists are built by pure functions; [`run`] executes one. The binary is `qemu-img`
//! from `PATH` (Debian's `qemu-utils`), or `$FERROVIRT_QEMU_IMG` if set.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use crate::DiskFormat;

/// Why `qemu-img` did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum QemuImgError {
    /// The binary could not be started.
    #[error(
        "cannot run {binary}: {source} (install Debian's qemu-utils or set FERROVIRT_QEMU_IMG)"
    )]
    Spawn {
        /// The binary that was run.
        binary: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line, for the message.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
}

/// The `qemu-img` binary to run.
pub fn qemu_img_binary() -> PathBuf {
    std::env::var_os("FERROVIRT_QEMU_IMG")
        .map(PathBuf::from)
        .unwrap_or_else(|| "qemu-img".into())
}

/// `create -f qcow2 -F <backing format> -b <backing> <overlay>`: a qcow2 overlay whose reads fall
/// through to `backing` and whose writes stay in `overlay`; the size is the backing image's.
pub fn overlay_args(backing: &Path, backing_format: DiskFormat, overlay: &Path) -> Vec<OsString> {
    vec![
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-F".into(),
        backing_format.as_str().into(),
        "-b".into(),
        backing.into(),
        overlay.into(),
    ]
}

/// `create -f qcow2 <path> <bytes>`: an empty, sparse qcow2 image of `size_bytes` virtual bytes.
pub fn empty_qcow2_args(path: &Path, size_bytes: u64) -> Vec<OsString> {
    vec![
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        path.into(),
        size_bytes.to_string().into(),
    ]
}

/// Runs `qemu-img` with `args` and waits for it.
pub async fn run(args: &[OsString]) -> Result<(), QemuImgError> {
    let binary = qemu_img_binary();
    let output = tokio::process::Command::new(&binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| QemuImgError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let command = std::iter::once(binary.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    Err(QemuImgError::Failed {
        command,
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_names_the_backing_format() {
        let args = overlay_args(
            Path::new("/cache/images/sha256/ab/disk.raw"),
            DiskFormat::Raw,
            Path::new("/vm/root.qcow2"),
        );
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                "/cache/images/sha256/ab/disk.raw",
                "/vm/root.qcow2"
            ]
        );
    }

    #[test]
    fn empty_disk_size_is_in_bytes() {
        let args = empty_qcow2_args(Path::new("/vm/scratch.qcow2"), 1 << 30);
        assert_eq!(args.last().unwrap(), "1073741824");
        assert_eq!(args[4], "/vm/scratch.qcow2");
    }

    #[tokio::test]
    async fn failure_carries_stderr() {
        let err = run(&["info".into(), "/nonexistent/ferrovirt.img".into()])
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/ferrovirt.img"), "{msg}");
        assert!(matches!(err, QemuImgError::Failed { .. }), "{msg}");
    }
}
