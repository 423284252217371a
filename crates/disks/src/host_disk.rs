//! hostDisk: a raw image file on the host, allowed only under the folders the node lists in its
//! `allowed_host_disk_dirs` setting.
//!
//! The path is checked after resolving symlinks (the deepest existing ancestor is canonicalized,
//! the missing rest cannot hold links), so a link inside an allowed folder cannot lead out of it.
//! `DiskOrCreate` creates a missing image as a sparse file of `capacity` bytes, and the folders
//! leading to it; what it created is reported so that a failed VMI start can remove it again.
//! Host disks are always attached as raw: a qcow2 header in a host file is not interpreted (it
//! could name a backing file anywhere on the host).

use std::fs::{self, File};
use std::io;
use std::path::{Component, Path, PathBuf};

use ferrovirt_api::kubevirt::{HostDisk, HostDiskType};
use ferrovirt_api::quantity::parse_quantity_bytes;

/// Why a host disk cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostDiskError {
    /// Not an absolute path, or with `..`.
    #[error("hostDisk.path {path:?} must be an absolute path without '..'")]
    BadPath {
        /// The path as written.
        path: String,
    },
    /// Outside every allowed folder (after resolving symlinks).
    #[error("hostDisk.path {path:?} resolves to {resolved}, which is not under a folder of the node's allowed_host_disk_dirs setting ({allowed})")]
    NotAllowed {
        /// The path as written.
        path: String,
        /// Where it leads.
        resolved: PathBuf,
        /// The allowed folders, for the message.
        allowed: String,
    },
    /// A symlink on the way that leads nowhere.
    #[error("hostDisk.path {path:?}: {link} is a dangling symlink")]
    DanglingLink {
        /// The path as written.
        path: String,
        /// The link.
        link: PathBuf,
    },
    /// `type: Disk` and no image there.
    #[error("hostDisk.path {path:?} does not exist; type Disk needs an existing image (DiskOrCreate with a capacity creates one)")]
    Missing {
        /// The path as written.
        path: String,
    },
    /// Something that is not a regular file.
    #[error("hostDisk.path {path:?} is not a regular file")]
    NotAFile {
        /// The path as written.
        path: String,
    },
    /// `capacity` missing, zero or malformed for a disk to create.
    #[error("hostDisk.capacity {capacity:?}: {reason}")]
    Capacity {
        /// The capacity as written.
        capacity: String,
        /// What is wrong.
        reason: String,
    },
    /// The file system said no.
    #[error("hostDisk {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// A usable host disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedHostDisk {
    /// The image, canonical.
    pub path: PathBuf,
    /// What this call created (folders, then the image), in creation order; empty if the image
    /// existed.
    pub created: Vec<PathBuf>,
}

/// Checks `disk` against `allowed_dirs` and, for `DiskOrCreate`, creates a missing image.
pub fn prepare_host_disk(
    disk: &HostDisk,
    allowed_dirs: &[PathBuf],
) -> Result<PreparedHostDisk, HostDiskError> {
    let raw = disk.path.as_str();
    let path = Path::new(raw);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(HostDiskError::BadPath {
            path: raw.to_string(),
        });
    }
    let (resolved, missing) = resolve(raw, path)?;
    let allowed: Vec<PathBuf> = allowed_dirs
        .iter()
        .filter_map(|d| match fs::canonicalize(d) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "an allowed host disk folder is unusable");
                None
            }
        })
        .collect();
    if !allowed
        .iter()
        .any(|dir| resolved.starts_with(dir) && &resolved != dir)
    {
        return Err(HostDiskError::NotAllowed {
            path: raw.to_string(),
            resolved,
            allowed: if allowed_dirs.is_empty() {
                "none are set".to_string()
            } else {
                allowed_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }

    if missing == 0 {
        let meta = fs::metadata(&resolved).map_err(|source| HostDiskError::Io {
            path: resolved.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(HostDiskError::NotAFile {
                path: raw.to_string(),
            });
        }
        return Ok(PreparedHostDisk {
            path: resolved,
            created: Vec::new(),
        });
    }
    if disk.type_ == HostDiskType::Disk {
        return Err(HostDiskError::Missing {
            path: raw.to_string(),
        });
    }
    let size = capacity(disk)?;
    let mut created = Vec::new();
    match create(&resolved, missing, size, &mut created) {
        Ok(()) => Ok(PreparedHostDisk {
            path: resolved,
            created,
        }),
        Err(e) => {
            remove_created(&created);
            Err(e)
        }
    }
}

/// The canonical form of `path` and how many of its last components do not exist yet.
fn resolve(raw: &str, path: &Path) -> Result<(PathBuf, usize), HostDiskError> {
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    for missing in 0..=names.len() {
        let existing: PathBuf = std::iter::once(Path::new("/").as_os_str())
            .chain(names[..names.len() - missing].iter().copied())
            .collect();
        match fs::canonicalize(&existing) {
            Ok(canonical) => {
                let resolved = names[names.len() - missing..]
                    .iter()
                    .fold(canonical, |p, n| p.join(n));
                return Ok((resolved, missing));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if fs::symlink_metadata(&existing).is_ok() {
                    return Err(HostDiskError::DanglingLink {
                        path: raw.to_string(),
                        link: existing,
                    });
                }
            }
            Err(source) => {
                return Err(HostDiskError::Io {
                    path: existing,
                    source,
                })
            }
        }
    }
    unreachable!("the root folder always resolves")
}

fn capacity(disk: &HostDisk) -> Result<u64, HostDiskError> {
    let written = disk.capacity.as_ref().map(|q| q.0.clone());
    let bad = |reason: String| HostDiskError::Capacity {
        capacity: written.clone().unwrap_or_default(),
        reason,
    };
    match written.as_deref().map(parse_quantity_bytes) {
        None => Err(bad(
            "type DiskOrCreate needs a capacity to create the image".to_string(),
        )),
        Some(Ok(0)) => Err(bad("must be greater than 0".to_string())),
        Some(Ok(bytes)) => Ok(bytes),
        Some(Err(e)) => Err(bad(e.to_string())),
    }
}

/// Creates the `missing` last components of `path`: folders, then a sparse file of `size` bytes.
fn create(
    path: &Path,
    missing: usize,
    size: u64,
    created: &mut Vec<PathBuf>,
) -> Result<(), HostDiskError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HostDiskError::Io { path, source }
    };
    let ancestors: Vec<&Path> = path.ancestors().skip(1).take(missing - 1).collect();
    for dir in ancestors.into_iter().rev() {
        fs::create_dir(dir).map_err(io_error(dir))?;
        created.push(dir.to_path_buf());
    }
    let file = File::create_new(path).map_err(io_error(path))?;
    created.push(path.to_path_buf());
    file.set_len(size).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))?;
    Ok(())
}

/// Removes what [`prepare_host_disk`] created, newest first. Errors are logged.
pub fn remove_created(created: &[PathBuf]) {
    for path in created.iter().rev() {
        let removed = if path.is_dir() {
            fs::remove_dir(path)
        } else {
            fs::remove_file(path)
        };
        if let Err(e) = removed {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a created host disk path");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn host_disk(path: &Path, type_: HostDiskType, capacity: Option<&str>) -> HostDisk {
        serde_json::from_value(serde_json::json!({
            "path": path.to_str().unwrap(),
            "type": match type_ { HostDiskType::Disk => "Disk", HostDiskType::DiskOrCreate => "DiskOrCreate" },
            "capacity": capacity,
        }))
        .unwrap()
    }

    #[test]
    fn an_existing_image_under_an_allowed_folder_is_used_as_is() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("disks");
        fs::create_dir(&allowed).unwrap();
        let image = allowed.join("data.img");
        fs::write(&image, b"data").unwrap();
        let got = prepare_host_disk(
            &host_disk(&image, HostDiskType::Disk, None),
            std::slice::from_ref(&allowed),
        )
        .unwrap();
        assert_eq!(got.path, fs::canonicalize(&image).unwrap());
        assert!(got.created.is_empty());
        assert_eq!(fs::read(&image).unwrap(), b"data");
    }

    #[test]
    fn paths_outside_or_escaping_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("disks");
        let outside = root.path().join("secret");
        fs::create_dir(&allowed).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("shadow"), b"x").unwrap();
        symlink(&outside, allowed.join("escape")).unwrap();
        symlink(root.path().join("nowhere"), allowed.join("dangling")).unwrap();
        let allowed_dirs = vec![allowed.clone()];

        let err = prepare_host_disk(
            &host_disk(&outside.join("shadow"), HostDiskType::Disk, None),
            &allowed_dirs,
        )
        .unwrap_err();
        assert!(matches!(err, HostDiskError::NotAllowed { .. }), "{err}");
        assert!(err.to_string().contains("allowed_host_disk_dirs"), "{err}");

        let err = prepare_host_disk(
            &host_disk(&allowed.join("escape/shadow"), HostDiskType::Disk, None),
            &allowed_dirs,
        )
        .unwrap_err();
        assert!(matches!(err, HostDiskError::NotAllowed { .. }), "{err}");

        // Creating through a link that leads out is refused too, and creates nothing.
        let err = prepare_host_disk(
            &host_disk(
                &allowed.join("escape/new.img"),
                HostDiskType::DiskOrCreate,
                Some("1Mi"),
            ),
            &allowed_dirs,
        )
        .unwrap_err();
        assert!(matches!(err, HostDiskError::NotAllowed { .. }), "{err}");
        assert!(!outside.join("new.img").exists());

        let err = prepare_host_disk(
            &host_disk(
                &allowed.join("dangling"),
                HostDiskType::DiskOrCreate,
                Some("1Mi"),
            ),
            &allowed_dirs,
        )
        .unwrap_err();
        assert!(matches!(err, HostDiskError::DanglingLink { .. }), "{err}");
        assert!(!root.path().join("nowhere").exists());

        let dotdot = HostDisk {
            path: format!("{}/../secret/shadow", allowed.display()),
            ..Default::default()
        };
        assert!(matches!(
            prepare_host_disk(&dotdot, &allowed_dirs).unwrap_err(),
            HostDiskError::BadPath { .. }
        ));
        // The allowed folder itself is not a disk; nothing is allowed without the setting.
        assert!(prepare_host_disk(
            &host_disk(&allowed, HostDiskType::Disk, None),
            &allowed_dirs
        )
        .is_err());
        let err = prepare_host_disk(
            &host_disk(
                &allowed.join("x.img"),
                HostDiskType::DiskOrCreate,
                Some("1Mi"),
            ),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("none are set"), "{err}");
    }

    #[test]
    fn disk_or_create_makes_a_sparse_file_and_its_folders() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("disks");
        fs::create_dir(&allowed).unwrap();
        let image = allowed.join("vm1/data/disk.img");
        let got = prepare_host_disk(
            &host_disk(&image, HostDiskType::DiskOrCreate, Some("1Gi")),
            std::slice::from_ref(&allowed),
        )
        .unwrap();
        let canonical_allowed = fs::canonicalize(&allowed).unwrap();
        assert_eq!(
            got.created,
            [
                canonical_allowed.join("vm1"),
                canonical_allowed.join("vm1/data"),
                canonical_allowed.join("vm1/data/disk.img")
            ]
        );
        let meta = fs::metadata(&image).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "sparse: {} blocks",
            meta.blocks()
        );

        // A second time it exists: used, nothing created.
        let again = prepare_host_disk(
            &host_disk(&image, HostDiskType::DiskOrCreate, Some("1Gi")),
            std::slice::from_ref(&allowed),
        )
        .unwrap();
        assert!(again.created.is_empty());

        remove_created(&got.created);
        assert!(fs::read_dir(&allowed).unwrap().next().is_none());
    }

    #[test]
    fn missing_disk_and_bad_capacity() {
        let root = tempfile::tempdir().unwrap();
        let allowed = vec![root.path().to_path_buf()];
        let image = root.path().join("none.img");
        assert!(matches!(
            prepare_host_disk(&host_disk(&image, HostDiskType::Disk, None), &allowed).unwrap_err(),
            HostDiskError::Missing { .. }
        ));
        for capacity in [None, Some("0"), Some("big")] {
            let err = prepare_host_disk(
                &host_disk(&image, HostDiskType::DiskOrCreate, capacity),
                &allowed,
            )
            .unwrap_err();
            assert!(matches!(err, HostDiskError::Capacity { .. }), "{err}");
        }
        fs::create_dir(root.path().join("dir.img")).unwrap();
        assert!(matches!(
            prepare_host_disk(
                &host_disk(&root.path().join("dir.img"), HostDiskType::Disk, None),
                &allowed
            )
            .unwrap_err(),
            HostDiskError::NotAFile { .. }
        ));
        assert!(!image.exists());
    }
}
