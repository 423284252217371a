//! The node's image cache: one folder per manifest digest (and what was taken from the image),
//! made complete before it appears.
//!
//! ```text
//!   <cache_dir>/images/
//!     sha256/<hex>/disk.raw | disk.qcow2        complete entries (0444), never written again
//!     sha256/<hex>-path-<16 hex>/disk.*          the same for a custom containerDisk.path
//!     sha256/<hex>-boot-<16 hex>/kernel, initrd  a kernelBoot container's files (either may be absent)
//!     tmp/sha256-<hex>.<random>/                 a pull in progress (layers, extracted files)
//!     locks/sha256-<hex>.lock, locks/index.lock  flock(2) files, never deleted
//!     index.json                                 image reference -> digest, for IfNotPresent and `fvctl image ls`
//! ```
//!
//! A pull of a digest that is not cached takes the digest's lock (so concurrent pulls on the node,
//! in one process or several, download once), removes temporary folders left by a crashed pull of
//! that digest, downloads and extracts into a fresh temporary folder and renames it into place: an
//! entry folder exists only once complete. The index is rewritten whole (temporary file + rename)
//! under its own lock.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

use crate::DiskFormat;

/// What a cache entry holds of its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Holds {
    /// A containerDisk's disk file: the single file under `/disk/`, or the one at `image_path`
    /// (relative, normalized).
    Disk { image_path: Option<String> },
    /// A kernelBoot container's kernel and initrd (relative, normalized paths in the image).
    Boot(BootPaths),
}

/// The files a kernelBoot entry holds: where they are in the image (relative, normalized).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BootPaths {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) initrd: Option<String>,
}

/// File names of a kernelBoot entry's files.
pub(crate) const KERNEL_FILE: &str = "kernel";
pub(crate) const INITRD_FILE: &str = "initrd";

/// Identifies one cache entry: a manifest digest and what was taken from the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CacheKey {
    algorithm: String,
    hex: String,
    holds: Holds,
}

impl CacheKey {
    /// From a digest (`sha256:<64 hex>`, or sha384/sha512) and `containerDisk.path`.
    #[cfg(test)]
    pub(crate) fn new(digest: &str, image_path: Option<&str>) -> Result<Self, String> {
        Self::holding(
            digest,
            Holds::Disk {
                image_path: image_path.map(str::to_string),
            },
        )
    }

    /// From a digest (`sha256:<64 hex>`, or sha384/sha512) and what the entry holds.
    pub(crate) fn holding(digest: &str, holds: Holds) -> Result<Self, String> {
        let bad = || format!("unsupported manifest digest {digest:?}");
        let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
        let len = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(bad()),
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(bad());
        }
        Ok(CacheKey {
            algorithm: algorithm.to_string(),
            hex: hex.to_string(),
            holds,
        })
    }

    pub(crate) fn digest(&self) -> String {
        format!("{}:{}", self.algorithm, self.hex)
    }

    pub(crate) fn holds(&self) -> &Holds {
        &self.holds
    }

    fn dir_name(&self) -> String {
        let short = |text: &str| hex(&Sha256::digest(text.as_bytes()))[..16].to_string();
        match &self.holds {
            Holds::Disk { image_path: None } => self.hex.clone(),
            Holds::Disk {
                image_path: Some(p),
            } => format!("{}-path-{}", self.hex, short(p)),
            // NUL cannot be in a path: the two paths cannot run into each other.
            Holds::Boot(BootPaths { kernel, initrd }) => format!(
                "{}-boot-{}",
                self.hex,
                short(&format!(
                    "kernel\0{}\0initrd\0{}",
                    kernel.as_deref().unwrap_or("-"),
                    initrd.as_deref().unwrap_or("-")
                ))
            ),
        }
    }

    /// A flat name for lock and temporary files.
    fn flat_name(&self) -> String {
        format!("{}-{}", self.algorithm, self.dir_name())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A complete cache entry's disk file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CachedFile {
    pub(crate) path: PathBuf,
    pub(crate) format: DiskFormat,
    pub(crate) size: u64,
}

/// A complete kernelBoot entry's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CachedBootFiles {
    pub(crate) kernel: Option<PathBuf>,
    pub(crate) initrd: Option<PathBuf>,
}

/// A complete cache entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CachedEntry {
    Disk(CachedFile),
    Boot(CachedBootFiles),
}

/// One line of the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IndexEntry {
    pub(crate) reference: String,
    pub(crate) digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_path: Option<String>,
    /// Set for kernelBoot entries (then `image_path` is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kernel_boot: Option<BootPaths>,
    pub(crate) pulled_at: DateTime<Utc>,
}

impl IndexEntry {
    pub(crate) fn holds(&self) -> Holds {
        match &self.kernel_boot {
            Some(boot) => Holds::Boot(boot.clone()),
            None => Holds::Disk {
                image_path: self.image_path.clone(),
            },
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: Vec<IndexEntry>,
}

/// The cache under `<cache_dir>/images`.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    images: PathBuf,
}

impl Cache {
    pub(crate) fn new(cache_dir: &Path) -> Self {
        Cache {
            images: cache_dir.join("images"),
        }
    }

    pub(crate) fn entry_dir(&self, key: &CacheKey) -> PathBuf {
        self.images.join(&key.algorithm).join(key.dir_name())
    }

    fn index_path(&self) -> PathBuf {
        self.images.join("index.json")
    }

    fn tmp_root(&self) -> PathBuf {
        self.images.join("tmp")
    }

    /// The entry's files, if the entry is complete.
    pub(crate) fn lookup_entry(&self, key: &CacheKey) -> io::Result<Option<CachedEntry>> {
        match &key.holds {
            Holds::Disk { .. } => Ok(self.lookup(key)?.map(CachedEntry::Disk)),
            Holds::Boot(paths) => {
                let dir = self.entry_dir(key);
                match fs::metadata(&dir) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                }
                // The folder appears complete (renamed into place): its files are there.
                let file = |wanted: &Option<String>, name: &str| -> io::Result<Option<PathBuf>> {
                    let Some(_) = wanted else { return Ok(None) };
                    let path = dir.join(name);
                    if fs::metadata(&path)?.is_file() {
                        Ok(Some(path))
                    } else {
                        Err(io::Error::other(format!(
                            "{} is not a regular file",
                            path.display()
                        )))
                    }
                };
                Ok(Some(CachedEntry::Boot(CachedBootFiles {
                    kernel: file(&paths.kernel, KERNEL_FILE)?,
                    initrd: file(&paths.initrd, INITRD_FILE)?,
                })))
            }
        }
    }

    /// The entry's disk file, if the entry is complete (`None` for other kinds of entries).
    pub(crate) fn lookup(&self, key: &CacheKey) -> io::Result<Option<CachedFile>> {
        if !matches!(key.holds, Holds::Disk { .. }) {
            return Ok(None);
        }
        let dir = self.entry_dir(key);
        for format in [DiskFormat::Raw, DiskFormat::Qcow2] {
            let path = dir.join(format!("disk.{}", format.as_str()));
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    return Ok(Some(CachedFile {
                        path,
                        format,
                        size: meta.len(),
                    }))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Takes the entry's exclusive lock, blocking until it is free. Released when the file is
    /// closed.
    pub(crate) fn lock(&self, key: &CacheKey) -> io::Result<File> {
        lock_file(
            &self
                .images
                .join("locks")
                .join(format!("{}.lock", key.flat_name())),
        )
    }

    /// Removes temporary folders of `key` left by pulls that died. Call with the key's lock held.
    pub(crate) fn remove_stale_temp_dirs(&self, key: &CacheKey) -> io::Result<()> {
        let prefix = format!("{}.", key.flat_name());
        let entries = match fs::read_dir(self.tmp_root()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::info!(path = %entry.path().display(), "removing a partial pull left behind");
                fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// A fresh temporary folder for a pull of `key` (removed when dropped, unless committed).
    pub(crate) fn temp_dir(&self, key: &CacheKey) -> io::Result<TempDir> {
        let root = self.tmp_root();
        fs::create_dir_all(&root)?;
        tempfile::Builder::new()
            .prefix(&format!("{}.", key.flat_name()))
            .tempdir_in(root)
    }

    /// Renames a complete temporary folder into place.
    pub(crate) fn commit(&self, key: &CacheKey, temp: TempDir) -> io::Result<PathBuf> {
        let target = self.entry_dir(key);
        let parent = target.parent().expect("entry dirs have a parent");
        fs::create_dir_all(parent)?;
        match fs::rename(temp.path(), &target) {
            Ok(()) => {
                let _ = temp.keep();
                File::open(parent)?.sync_all()?;
            }
            // Completed meanwhile by a puller that did not share our lock (another cache user on
            // a shared folder): theirs is as good; ours is dropped.
            Err(_) if self.lookup_entry(key)?.is_some() => {}
            Err(e) => return Err(e),
        }
        Ok(target)
    }

    /// The index entries, oldest first. A missing index is empty.
    pub(crate) fn read_index(&self) -> io::Result<Vec<IndexEntry>> {
        match fs::read(self.index_path()) {
            Ok(bytes) => serde_json::from_slice::<IndexFile>(&bytes)
                .map(|f| f.images)
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", self.index_path().display()),
                    )
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The digest the index has for `reference` (and what is taken from it).
    pub(crate) fn index_digest(
        &self,
        reference: &str,
        holds: &Holds,
    ) -> io::Result<Option<String>> {
        Ok(self
            .read_index()?
            .into_iter()
            .find(|e| e.reference == reference && e.holds() == *holds)
            .map(|e| e.digest))
    }

    /// Records that `reference` resolved to `digest`. Keeps the earlier pull time if the
    /// reference already pointed at this digest. Blocking.
    pub(crate) fn record(
        &self,
        reference: &str,
        digest: &str,
        holds: &Holds,
        now: DateTime<Utc>,
    ) -> io::Result<()> {
        let same = |e: &IndexEntry| e.reference == reference && e.holds() == *holds;
        // Most pulls are cache hits of a recorded reference: nothing to write.
        if let Ok(images) = self.read_index() {
            if images.iter().any(|e| same(e) && e.digest == digest) {
                return Ok(());
            }
        }
        let _lock = lock_file(&self.images.join("locks").join("index.lock"))?;
        let mut images = match self.read_index() {
            Ok(images) => images,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(error = %e, "the image cache index is unreadable; starting a new one");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let pulled_at = images
            .iter()
            .find(|e| same(e) && e.digest == digest)
            .map_or(now, |e| e.pulled_at);
        images.retain(|e| !same(e));
        let (image_path, kernel_boot) = match holds {
            Holds::Disk { image_path } => (image_path.clone(), None),
            Holds::Boot(paths) => (None, Some(paths.clone())),
        };
        images.push(IndexEntry {
            reference: reference.to_string(),
            digest: digest.to_string(),
            image_path,
            kernel_boot,
            pulled_at,
        });
        let mut bytes = serde_json::to_vec_pretty(&IndexFile { version: 1, images })
            .map_err(io::Error::other)?;
        bytes.push(b'\n');
        let mut tmp = tempfile::Builder::new()
            .prefix("index.json.")
            .tempfile_in(&self.images)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.index_path()).map_err(|e| e.error)?;
        Ok(())
    }
}

fn lock_file(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.lock()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn keys_are_validated_digests() {
        let key = CacheKey::new(DIGEST, None).unwrap();
        assert_eq!(key.digest(), DIGEST);
        assert_eq!(key.dir_name(), &DIGEST[7..]);
        for bad in [
            "sha256:../../etc",
            "sha256:2C26B46B68FFC68FF99B453C1D30413413422D706483BFA0F98A5E886266E7AE",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
            "sha256:abc",
        ] {
            assert!(CacheKey::new(bad, None).is_err(), "{bad}");
        }
        let custom = CacheKey::new(DIGEST, Some("images/boot.qcow2")).unwrap();
        assert!(custom
            .dir_name()
            .starts_with(&format!("{}-path-", &DIGEST[7..])));
        assert_ne!(
            custom.dir_name(),
            CacheKey::new(DIGEST, Some("images/other.qcow2"))
                .unwrap()
                .dir_name()
        );
    }

    const DISK: Holds = Holds::Disk { image_path: None };

    fn boot(kernel: Option<&str>, initrd: Option<&str>) -> Holds {
        Holds::Boot(BootPaths {
            kernel: kernel.map(str::to_string),
            initrd: initrd.map(str::to_string),
        })
    }

    #[test]
    fn kernel_boot_keys_name_their_files_apart() {
        let names: Vec<String> = [
            boot(Some("boot/vmlinuz"), None),
            boot(None, Some("boot/vmlinuz")),
            boot(Some("boot/vmlinuz"), Some("boot/initrd")),
            boot(Some("boot/vmlinuz"), Some("boot/initrd2")),
        ]
        .into_iter()
        .map(|h| CacheKey::holding(DIGEST, h).unwrap().dir_name())
        .collect();
        for (i, a) in names.iter().enumerate() {
            assert!(a.starts_with(&format!("{}-boot-", &DIGEST[7..])), "{a}");
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(
            CacheKey::holding(DIGEST, boot(Some("disk/x"), None))
                .unwrap()
                .dir_name(),
            CacheKey::new(DIGEST, Some("disk/x")).unwrap().dir_name()
        );
    }

    #[test]
    fn boot_entries_are_found_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let key = CacheKey::holding(DIGEST, boot(Some("boot/vmlinuz"), None)).unwrap();
        assert_eq!(cache.lookup_entry(&key).unwrap(), None);
        let entry = cache.entry_dir(&key);
        fs::create_dir_all(&entry).unwrap();
        fs::write(entry.join(KERNEL_FILE), b"kernel").unwrap();
        assert_eq!(
            cache.lookup_entry(&key).unwrap(),
            Some(CachedEntry::Boot(CachedBootFiles {
                kernel: Some(entry.join(KERNEL_FILE)),
                initrd: None,
            }))
        );
        // A disk lookup never returns a boot entry.
        assert_eq!(cache.lookup(&key).unwrap(), None);
    }

    #[test]
    fn index_keeps_one_entry_per_reference_and_the_first_pull_time() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        fs::create_dir_all(dir.path().join("images")).unwrap();
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let t1 = DateTime::from_timestamp(1_700_000_100, 0).unwrap();
        cache.record("r/a:1", DIGEST, &DISK, t0).unwrap();
        cache.record("r/a:1", DIGEST, &DISK, t1).unwrap();
        let other = "sha256:".to_string() + &"0".repeat(64);
        cache.record("r/b:1", &other, &DISK, t1).unwrap();
        let index = cache.read_index().unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(index[0].pulled_at, t0, "same digest keeps its pull time");
        cache.record("r/a:1", &other, &DISK, t1).unwrap();
        assert_eq!(cache.index_digest("r/a:1", &DISK).unwrap(), Some(other));
        let custom = Holds::Disk {
            image_path: Some("x".into()),
        };
        assert_eq!(cache.index_digest("r/a:1", &custom).unwrap(), None);
        // A kernelBoot pull of the same reference is an entry of its own.
        let kernel = boot(Some("boot/vmlinuz"), Some("boot/initrd"));
        assert_eq!(cache.index_digest("r/a:1", &kernel).unwrap(), None);
        cache.record("r/a:1", DIGEST, &kernel, t1).unwrap();
        assert_eq!(
            cache.index_digest("r/a:1", &kernel).unwrap().as_deref(),
            Some(DIGEST)
        );
        assert_eq!(cache.read_index().unwrap().len(), 3);
        // A corrupt index is replaced on the next write, and reported on read.
        fs::write(dir.path().join("images/index.json"), b"{not json").unwrap();
        assert!(cache.read_index().is_err());
        cache.record("r/c:1", DIGEST, &DISK, t0).unwrap();
        assert_eq!(cache.read_index().unwrap().len(), 1);
    }
}
