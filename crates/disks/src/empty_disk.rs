//! emptyDisk: a sparse qcow2 scratch disk in the VM folder, gone with the VMI.

use std::path::{Path, PathBuf};

use ferrovirt_api::quantity::parse_quantity_bytes;

use crate::qemu_img::{self, QemuImgError};
use crate::VmFileError;

/// Why an empty disk could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EmptyDiskError {
    /// `capacity` is missing, zero or not a quantity.
    #[error("emptyDisk.capacity {capacity:?}: {reason}")]
    Capacity {
        /// The capacity as written.
        capacity: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The disk's place in the VM folder.
    #[error(transparent)]
    File(#[from] VmFileError),
    /// `qemu-img create` failed.
    #[error("cannot create the empty disk: {0}")]
    QemuImg(#[from] QemuImgError),
}

/// The size in bytes of an emptyDisk `capacity` (a Kubernetes quantity such as `"2Gi"`).
pub fn capacity_bytes(capacity: Option<&str>) -> Result<u64, EmptyDiskError> {
    let Some(capacity) = capacity else {
        return Err(EmptyDiskError::Capacity {
            capacity: String::new(),
            reason: "an emptyDisk needs a capacity, e.g. \"2Gi\"".to_string(),
        });
    };
    let bad = |reason: String| EmptyDiskError::Capacity {
        capacity: capacity.to_string(),
        reason,
    };
    match parse_quantity_bytes(capacity) {
        Ok(0) => Err(bad("must be greater than 0".to_string())),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Creates `<vm_dir>/<name>.qcow2`, an empty qcow2 image of `size_bytes` virtual bytes.
pub async fn create_empty_disk(
    vm_dir: &Path,
    name: &str,
    size_bytes: u64,
) -> Result<PathBuf, EmptyDiskError> {
    let path = crate::new_vm_file(vm_dir, name, "qcow2")?;
    if let Err(e) = qemu_img::run(&qemu_img::empty_qcow2_args(&path, size_bytes)).await {
        crate::remove_partial(&path);
        return Err(e.into());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_a_positive_quantity() {
        assert_eq!(capacity_bytes(Some("2Gi")).unwrap(), 2 << 30);
        assert_eq!(capacity_bytes(Some("1M")).unwrap(), 1_000_000);
        for bad in [None, Some("0"), Some("-1Gi"), Some("lots")] {
            let err = capacity_bytes(bad).unwrap_err();
            assert!(matches!(err, EmptyDiskError::Capacity { .. }), "{err}");
        }
    }
}
