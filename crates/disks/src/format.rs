//! Disk image formats, told apart by content (the qcow2 magic), never by file name.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The first four bytes of every qcow2 image.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Bytes of a qcow2 header that [`DiskFormat::check_self_contained`] reads (version 3 header up to
/// `header_length`).
pub(crate) const HEADER_PROBE_LEN: usize = 104;

/// The format of a disk image file, as QEMU's `format=` option names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A plain image, byte for byte the guest's disk.
    Raw,
    /// QEMU's copy-on-write format.
    Qcow2,
}

impl DiskFormat {
    /// QEMU's name of the format (`raw`, `qcow2`); also the file extension ferrovirt uses.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }

    /// The format of an image whose first bytes are `header`: qcow2 if it starts with the qcow2
    /// magic, raw otherwise.
    pub fn from_header(header: &[u8]) -> DiskFormat {
        if header.starts_with(&QCOW2_MAGIC) {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        }
    }

    /// The format of the image file at `path`, from its first bytes.
    pub fn detect(path: &Path) -> io::Result<DiskFormat> {
        Ok(DiskFormat::from_header(&read_header(path)?))
    }

    /// Refuses a qcow2 header that makes QEMU open other files: a backing file or an external data
    /// file (either could point anywhere on the host). Raw headers always pass.
    pub(crate) fn check_self_contained(header: &[u8]) -> Result<DiskFormat, String> {
        let format = DiskFormat::from_header(header);
        if format == DiskFormat::Raw {
            return Ok(format);
        }
        let be32 = |at: usize| {
            header
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let be64 = |at: usize| {
            header.get(at..at + 8).map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                u64::from_be_bytes(a)
            })
        };
        let truncated = || "the qcow2 header is truncated".to_string();
        let version = be32(4).ok_or_else(truncated)?;
        let backing_offset = be64(8).ok_or_else(truncated)?;
        if backing_offset != 0 {
            return Err(
                "the qcow2 image names a backing file; a containerDisk must be self-contained"
                    .to_string(),
            );
        }
        if version >= 3 {
            let incompatible = be64(72).ok_or_else(truncated)?;
            // Bit 2: the guest data lives in an external data file named in a header extension.
            if incompatible & (1 << 2) != 0 {
                return Err(
                    "the qcow2 image uses an external data file; a containerDisk must be self-contained"
                        .to_string(),
                );
            }
        }
        Ok(format)
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Up to [`HEADER_PROBE_LEN`] bytes from the start of `path` (fewer if the file is shorter).
pub(crate) fn read_header(path: &Path) -> io::Result<Vec<u8>> {
    let mut header = Vec::with_capacity(HEADER_PROBE_LEN);
    File::open(path)?
        .take(HEADER_PROBE_LEN as u64)
        .read_to_end(&mut header)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2_header(version: u32, backing_offset: u64, incompatible: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_PROBE_LEN];
        h[..4].copy_from_slice(&QCOW2_MAGIC);
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[8..16].copy_from_slice(&backing_offset.to_be_bytes());
        h[72..80].copy_from_slice(&incompatible.to_be_bytes());
        h
    }

    #[test]
    fn format_comes_from_the_magic() {
        assert_eq!(
            DiskFormat::from_header(b"QFI\xfb\0\0\0\x03"),
            DiskFormat::Qcow2
        );
        assert_eq!(DiskFormat::from_header(b"QFI"), DiskFormat::Raw);
        assert_eq!(DiskFormat::from_header(b""), DiskFormat::Raw);
        assert_eq!(DiskFormat::from_header(&[0u8; 512]), DiskFormat::Raw);
        assert_eq!(DiskFormat::Qcow2.as_str(), "qcow2");
        assert_eq!(DiskFormat::Raw.to_string(), "raw");
        assert_eq!(
            serde_json::to_string(&DiskFormat::Qcow2).unwrap(),
            "\"qcow2\""
        );
    }

    #[test]
    fn qcow2_with_backing_or_external_data_is_refused() {
        assert_eq!(
            DiskFormat::check_self_contained(&qcow2_header(3, 0, 0)),
            Ok(DiskFormat::Qcow2)
        );
        assert_eq!(
            DiskFormat::check_self_contained(&qcow2_header(2, 0, 0)),
            Ok(DiskFormat::Qcow2)
        );
        let backing = DiskFormat::check_self_contained(&qcow2_header(3, 0x200, 0)).unwrap_err();
        assert!(backing.contains("backing file"), "{backing}");
        let external = DiskFormat::check_self_contained(&qcow2_header(3, 0, 4)).unwrap_err();
        assert!(external.contains("external data file"), "{external}");
        // Other incompatible bits (dirty, corrupt, compression type) are QEMU's business.
        assert!(DiskFormat::check_self_contained(&qcow2_header(3, 0, 1)).is_ok());
        let truncated = DiskFormat::check_self_contained(b"QFI\xfb\0\0\0\x03").unwrap_err();
        assert!(truncated.contains("truncated"), "{truncated}");
        assert_eq!(
            DiskFormat::check_self_contained(b"anything"),
            Ok(DiskFormat::Raw)
        );
    }
}
