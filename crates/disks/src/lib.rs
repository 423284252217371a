//! ferrovirt's node-side disk preparation: turns a VMI's disks and volumes into files QEMU can open.
//!
//! ```text
//!   spec.domain.devices.disks + spec.volumes          DiskContext (vm_dir, cache_dir, node settings,
//!                  │                                               resolved Secrets)
//!                  ▼                                                   │
//!        prepare::plan_disks (pure: match, default, validate) ◄────────┘
//!                  │  Vec<PlannedDisk>
//!                  ▼
//!        prepare::prepare_disks (I/O, in disk order, undone on failure)
//!          containerDisk ─► container_disk::pull ─► node cache ─► container_disk::overlay (vm_dir)
//!          cloudInitNoCloud ─► cloud_init::write_nocloud_image (vm_dir)
//!          emptyDisk ─► empty_disk::create_empty_disk (vm_dir)
//!          hostDisk ─► host_disk::prepare_host_disk (allowed host folders)
//!                  │
//!                  ▼
//!        Vec<PreparedDisk> (path, format, bus, readonly, boot order, serial, cdrom) for the QEMU argv
//!
//!   spec.domain.firmware.kernelBoot ─► kernel_boot::plan_kernel_boot (pure)
//!        ─► kernel_boot::prepare_kernel_boot ─► container_disk::pull_kernel_boot ─► node cache
//!        ─► PreparedKernelBoot (kernel, initrd, kernelArgs) for the QEMU argv
//! ```
//!
//! Modules that hold only logic (`plan_disks`, the layer walk of `container_disk`, the NoCloud
//! data resolution, the host path checks, qemu-img argv) are tested without I/O; the I/O is tested
//! against a real registry (Debian's `docker-registry`), real `qemu-img`, `blkid` and mtools.
//!
//! With the cargo feature `testing`, [`testing`] starts such a registry and pushes containerDisk
//! images to it, for this crate's tests and for end-to-end tests elsewhere.

pub mod cloud_init;
pub mod container_disk;
pub mod empty_disk;
mod format;
pub mod host_disk;
pub mod kernel_boot;
pub mod prepare;
pub mod qemu_img;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use format::{DiskFormat, QCOW2_MAGIC};
pub use prepare::{
    plan_disks, prepare_disks, prepare_disks_with, DiskContext, DiskError, NoHooks, PlannedDisk,
    PlannedSource, PrepareHooks, PreparedDisk, Step, StepKind,
};

/// The data of one Secret, key to value (already base64-decoded), as the caller read it from the API.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Secrets of the VMI's namespace that its volumes refer to, by Secret name.
pub type Secrets = BTreeMap<String, SecretData>;

/// Why a disk file could not be placed in the VM folder.
#[derive(Debug, thiserror::Error)]
pub enum VmFileError {
    /// The volume name cannot be a file name.
    #[error("volume name {name:?} cannot name a file in the VM folder (it must be a DNS label)")]
    BadName {
        /// The volume name.
        name: String,
    },
    /// Something is already there.
    #[error("{path} already exists; ferrovirt does not overwrite files in the VM folder")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// `<vm_dir>/<name>.<extension>`, checked to be a plain new file name with nothing there yet.
pub(crate) fn new_vm_file(
    vm_dir: &Path,
    name: &str,
    extension: &str,
) -> Result<PathBuf, VmFileError> {
    if !is_safe_file_stem(name) {
        return Err(VmFileError::BadName {
            name: name.to_string(),
        });
    }
    let path = vm_dir.join(format!("{name}.{extension}"));
    match fs::symlink_metadata(&path) {
        Ok(_) => Err(VmFileError::Exists { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path),
        Err(source) => Err(VmFileError::Io { path, source }),
    }
}

/// Removes what a failed step may have left at `path` (which it created).
pub(crate) fn remove_partial(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a partial file")
        }
    }
}

/// Whether `name` can be used as a file name in the VM folder: a DNS label (what admission
/// requires of volume names), so no `/`, no `..`, no leading dot.
pub(crate) fn is_safe_file_stem(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_file_stems_are_dns_labels() {
        for good in ["root", "cloudinit", "disk-0", "a"] {
            assert!(is_safe_file_stem(good), "{good}");
        }
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "-a",
            "a-",
            "A",
            "a.b",
            &"x".repeat(64),
        ] {
            assert!(!is_safe_file_stem(bad), "{bad}");
        }
    }
}
