//! Finding and extracting the one disk file of a containerDisk image, or the kernel and initrd of
//! a kernelBoot container.
//!
//! The layers are applied in order, as a container runtime would stack them, OCI whiteouts
//! included (`.wh.NAME` hides `NAME` of lower layers, `.wh..wh..opq` hides a folder's lower
//! content). [`LayerWalk`] decides, entry by entry and without I/O, what is extracted, what an
//! earlier layer's file is now hidden by, and what makes the image unsafe:
//!
//! ```text
//!   tar entry ──► normalize path ──► absolute / ".."                 ──► refuse the image
//!                                 ├► link (sym or hard) at or in disk/ ──► refuse
//!                                 ├► device, fifo... in disk/          ──► refuse
//!                                 ├► whiteout                          ──► drop hidden files
//!                                 ├► regular file in disk/             ──► extract (replaces)
//!                                 └► anything else                     ──► skip
//!   end of the last layer: exactly one file left, or refuse (none / several)
//! ```
//!
//! A kernelBoot container runs one walk per file it names (`kernelPath`, `initrdPath`), each
//! looking for exactly that path, with the same rules: links or special files on the way to it are
//! refused (they could point anywhere on the node), whiteouts hide it.
//!
//! [`Extraction`] carries that out on layer blobs on disk (tar, or gzip-compressed tar), writing
//! candidate files sparsely into the pull's temporary folder.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::cache::{BootPaths, INITRD_FILE, KERNEL_FILE};
use crate::format::read_header;
use crate::DiskFormat;

/// A path in an image as a user writes it (`/boot/vmlinuz`), as the tar entries name it
/// (`boot/vmlinuz`): `None` unless absolute, without `..`, and naming more than the root.
pub(crate) fn image_file_path(raw: &str) -> Option<String> {
    if !raw.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// One of the files of a kernelBoot container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BootFile {
    /// `kernelPath`.
    Kernel,
    /// `initrdPath`.
    Initrd,
}

impl BootFile {
    /// The spec field that names the file.
    pub fn field(self) -> &'static str {
        match self {
            BootFile::Kernel => "spec.domain.firmware.kernelBoot.container.kernelPath",
            BootFile::Initrd => "spec.domain.firmware.kernelBoot.container.initrdPath",
        }
    }

    /// The file's name in its cache entry.
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            BootFile::Kernel => KERNEL_FILE,
            BootFile::Initrd => INITRD_FILE,
        }
    }
}

/// What a pull takes out of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// A containerDisk's disk file.
    Disk(DiskLocation),
    /// A kernelBoot container's files (relative, normalized paths).
    Boot(BootPaths),
}

impl Wanted {
    /// The files of a kernelBoot container, from `kernelPath` and `initrdPath` as written.
    pub(crate) fn boot(kernel: Option<&str>, initrd: Option<&str>) -> Result<Self, ImageError> {
        let clean = |file: BootFile, raw: Option<&str>| {
            raw.map(|raw| {
                image_file_path(raw).ok_or_else(|| ImageError::BadBootPath {
                    file,
                    path: raw.to_string(),
                })
            })
            .transpose()
        };
        Ok(Wanted::Boot(BootPaths {
            kernel: clean(BootFile::Kernel, kernel)?,
            initrd: clean(BootFile::Initrd, initrd)?,
        }))
    }
}

/// Where the disk file sits in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DiskLocation {
    /// The single regular file under `/disk/` (KubeVirt's default).
    DiskDir,
    /// Exactly this file (`containerDisk.path`), as a relative path (`custom/disk.img`).
    Path(String),
}

impl DiskLocation {
    /// From `containerDisk.path`: `None` is the default `/disk/` folder.
    pub(crate) fn from_image_path(image_path: Option<&str>) -> Result<Self, ImageError> {
        let Some(raw) = image_path else {
            return Ok(DiskLocation::DiskDir);
        };
        image_file_path(raw)
            .map(DiskLocation::Path)
            .ok_or_else(|| ImageError::BadImagePath {
                path: raw.to_string(),
            })
    }

    fn describe(&self) -> String {
        match self {
            DiskLocation::DiskDir => "under /disk/".to_string(),
            DiskLocation::Path(p) => format!("at /{p}"),
        }
    }

    /// Whether a regular file at `path` is a disk candidate.
    fn wants(&self, path: &str) -> bool {
        match self {
            DiskLocation::DiskDir => path.starts_with("disk/"),
            DiskLocation::Path(p) => path == p,
        }
    }

    /// Whether `path` is on the way to the disk file (the file itself, its folder, an ancestor):
    /// a link or a special file there is refused.
    fn guards(&self, path: &str) -> bool {
        match self {
            DiskLocation::DiskDir => path == "disk" || path.starts_with("disk/"),
            DiskLocation::Path(p) => {
                p == path || (p.starts_with(path) && p.as_bytes().get(path.len()) == Some(&b'/'))
            }
        }
    }
}

/// Why an image is not a usable containerDisk.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// No disk file where one was expected.
    #[error("the image has no disk file {location}; a containerDisk holds exactly one file under /disk/ (e.g. /disk/disk.qcow2)")]
    NoDiskFile {
        /// Where it was looked for.
        location: String,
    },
    /// More than one file under `/disk/`.
    #[error("the image has {} files under /disk/ ({}); a containerDisk holds exactly one", .paths.len(), .paths.join(", "))]
    SeveralDiskFiles {
        /// Their paths in the image.
        paths: Vec<String>,
    },
    /// A tar entry with an absolute path.
    #[error("layer {layer}: entry {path:?} has an absolute path")]
    AbsolutePath {
        /// Index of the layer in the manifest.
        layer: usize,
        /// The entry's path as stored.
        path: String,
    },
    /// A tar entry with a `..` component.
    #[error("layer {layer}: entry {path:?} contains '..'")]
    ParentDir {
        /// Index of the layer in the manifest.
        layer: usize,
        /// The entry's path as stored.
        path: String,
    },
    /// A symbolic or hard link where the disk file or its folder is.
    #[error("layer {layer}: {path:?} is a {kind}; links are not allowed {location}")]
    Link {
        /// Index of the layer in the manifest.
        layer: usize,
        /// The entry's path.
        path: String,
        /// `symlink` or `hard link`.
        kind: &'static str,
        /// Where links are refused.
        location: String,
    },
    /// A device, fifo or other special entry where the disk file or its folder is.
    #[error("layer {layer}: {path:?} is a {kind} entry, not a regular file")]
    UnsupportedEntry {
        /// Index of the layer in the manifest.
        layer: usize,
        /// The entry's path.
        path: String,
        /// The tar entry type.
        kind: String,
    },
    /// A zstd-compressed layer.
    #[error("layer {layer} is compressed with zstd, which ferrovirt does not read; push the image with gzip-compressed or uncompressed layers")]
    Zstd {
        /// Index of the layer in the manifest.
        layer: usize,
    },
    /// A layer that is not a readable tar (or gzip) stream.
    #[error("layer {layer} is not a valid tar archive: {reason}")]
    Malformed {
        /// Index of the layer in the manifest.
        layer: usize,
        /// What the reader said.
        reason: String,
    },
    /// The disk file is a qcow2 image that refers to other files.
    #[error("{0}")]
    NotSelfContained(String),
    /// `containerDisk.path` is not a clean absolute path.
    #[error("containerDisk.path {path:?} must be an absolute path without '..'")]
    BadImagePath {
        /// The path given.
        path: String,
    },
    /// `kernelPath` or `initrdPath` is not a clean absolute path in the image.
    #[error("{} {path:?} must be an absolute path inside the image, without '..'", .file.field())]
    BadBootPath {
        /// Which file.
        file: BootFile,
        /// The path given.
        path: String,
    },
    /// Neither `kernelPath` nor `initrdPath`.
    #[error("spec.domain.firmware.kernelBoot.container names no file: set kernelPath (and initrdPath if the kernel needs one)")]
    NoBootFiles,
    /// No regular file at `kernelPath` or `initrdPath`.
    #[error("{} /{path}: the image has no regular file there", .file.field())]
    MissingBootFile {
        /// Which file.
        file: BootFile,
        /// Its path in the image.
        path: String,
    },
    /// A link or special file where `kernelPath` or `initrdPath` leads.
    #[error("{}: {source}", .file.field())]
    BootFileEntry {
        /// Which file.
        file: BootFile,
        /// What is there.
        #[source]
        source: Box<ImageError>,
    },
}

/// The kind of a tar entry, as far as the walk cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Dir,
    Symlink,
    HardLink,
    Other(String),
}

/// What to do with one entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Extract the entry's content as the candidate at this path.
    pub(crate) extract: Option<String>,
    /// Candidates of earlier entries that are gone now (hidden or replaced).
    pub(crate) dropped: Vec<String>,
}

impl Outcome {
    fn skip() -> Self {
        Outcome {
            extract: None,
            dropped: Vec::new(),
        }
    }
}

/// The pure state of applying layers: which candidate files exist, from which layer.
#[derive(Debug)]
pub(crate) struct LayerWalk {
    location: DiskLocation,
    layer: usize,
    files: BTreeMap<String, usize>,
}

impl LayerWalk {
    pub(crate) fn new(location: DiskLocation) -> Self {
        LayerWalk {
            location,
            layer: 0,
            files: BTreeMap::new(),
        }
    }

    /// The one path this walk looks for, if it looks for one path.
    pub(crate) fn wanted_path(&self) -> Option<&str> {
        match &self.location {
            DiskLocation::DiskDir => None,
            DiskLocation::Path(p) => Some(p),
        }
    }

    /// Entries that follow belong to layer `index` (in manifest order).
    pub(crate) fn begin_layer(&mut self, index: usize) {
        self.layer = index;
    }

    /// One entry of the current layer.
    pub(crate) fn entry(&mut self, raw_path: &str, kind: EntryKind) -> Result<Outcome, ImageError> {
        let layer = self.layer;
        if raw_path.starts_with('/') {
            return Err(ImageError::AbsolutePath {
                layer,
                path: raw_path.to_string(),
            });
        }
        let parts: Vec<&str> = raw_path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if parts.contains(&"..") {
            return Err(ImageError::ParentDir {
                layer,
                path: raw_path.to_string(),
            });
        }
        let Some((name, parents)) = parts.split_last() else {
            return Ok(Outcome::skip());
        };
        let path = parts.join("/");
        let parent = parents.join("/");

        if let Some(hidden) = name.strip_prefix(".wh.") {
            let dropped = if hidden == ".wh..opq" {
                self.drop_lower(|p| parent.is_empty() || is_under(p, &parent))
            } else {
                let target = join(&parent, hidden);
                self.drop_lower(|p| p == target || is_under(p, &target))
            };
            return Ok(Outcome {
                extract: None,
                dropped,
            });
        }

        let link = |kind: &'static str, path: String| ImageError::Link {
            layer,
            path,
            kind,
            location: self.location.describe(),
        };
        match kind {
            EntryKind::Symlink if self.location.guards(&path) => Err(link("symlink", path)),
            EntryKind::HardLink if self.location.guards(&path) => Err(link("hard link", path)),
            EntryKind::Other(kind) if self.location.guards(&path) => {
                Err(ImageError::UnsupportedEntry { layer, path, kind })
            }
            EntryKind::File if self.location.wants(&path) => {
                let dropped = self
                    .files
                    .insert(path.clone(), layer)
                    .map(|_| vec![path.clone()])
                    .unwrap_or_default();
                Ok(Outcome {
                    extract: Some(path),
                    dropped,
                })
            }
            // A folder where a candidate file was replaces it.
            EntryKind::Dir => {
                let dropped = self
                    .files
                    .remove(&path)
                    .map(|_| vec![path])
                    .unwrap_or_default();
                Ok(Outcome {
                    extract: None,
                    dropped,
                })
            }
            _ => Ok(Outcome::skip()),
        }
    }

    /// The path of the disk file, once all layers are applied.
    pub(crate) fn finish(&self) -> Result<String, ImageError> {
        let mut paths = self.files.keys();
        match (paths.next(), paths.next()) {
            (Some(only), None) => Ok(only.clone()),
            (None, _) => Err(ImageError::NoDiskFile {
                location: self.location.describe(),
            }),
            (Some(_), Some(_)) => Err(ImageError::SeveralDiskFiles {
                paths: self.files.keys().map(|p| format!("/{p}")).collect(),
            }),
        }
    }

    fn drop_lower(&mut self, hidden: impl Fn(&str) -> bool) -> Vec<String> {
        let layer = self.layer;
        let gone: Vec<String> = self
            .files
            .iter()
            .filter(|(p, l)| **l < layer && hidden(p))
            .map(|(p, _)| p.clone())
            .collect();
        for p in &gone {
            self.files.remove(p);
        }
        gone
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Why extracting failed: the image, or the node.
#[derive(Debug)]
pub(crate) enum ExtractError {
    Image(ImageError),
    Io(io::Error),
}

impl From<ImageError> for ExtractError {
    fn from(e: ImageError) -> Self {
        ExtractError::Image(e)
    }
}

impl From<io::Error> for ExtractError {
    fn from(e: io::Error) -> Self {
        ExtractError::Io(e)
    }
}

/// The disk file extracted from an image (`disk.<format>` in the pull's temporary folder).
#[derive(Debug)]
pub(crate) struct ExtractedDisk {
    pub(crate) format: DiskFormat,
    pub(crate) size: u64,
}

/// One walk of an extraction: the disk, or one kernelBoot file.
#[derive(Debug)]
struct Walk {
    /// `None` for a containerDisk's disk.
    boot_file: Option<BootFile>,
    walk: LayerWalk,
    /// Candidates extracted so far: path in the image -> file in the temporary folder.
    extracted: BTreeMap<String, PathBuf>,
}

/// Applies layer blobs in order and extracts the wanted files' candidates into `dir`.
#[derive(Debug)]
pub(crate) struct Extraction {
    walks: Vec<Walk>,
    dir: PathBuf,
    next: usize,
}

impl Extraction {
    pub(crate) fn new(wanted: Wanted, dir: &Path) -> Self {
        let walk = |boot_file, location| Walk {
            boot_file,
            walk: LayerWalk::new(location),
            extracted: BTreeMap::new(),
        };
        let walks = match wanted {
            Wanted::Disk(location) => vec![walk(None, location)],
            Wanted::Boot(BootPaths { kernel, initrd }) => {
                [(BootFile::Kernel, kernel), (BootFile::Initrd, initrd)]
                    .into_iter()
                    .filter_map(|(file, path)| Some(walk(Some(file), DiskLocation::Path(path?))))
                    .collect()
            }
        };
        Extraction {
            walks,
            dir: dir.to_path_buf(),
            next: 0,
        }
    }

    /// Reads the layer blob at `blob` (a tar, gzip-compressed or not).
    pub(crate) fn apply_layer(&mut self, index: usize, blob: &Path) -> Result<(), ExtractError> {
        for w in &mut self.walks {
            w.walk.begin_layer(index);
        }
        let mut file = File::open(blob)?;
        let mut magic = [0u8; 4];
        let n = read_full(&mut file, &mut magic)?;
        file.seek(SeekFrom::Start(0))?;
        let reader: Box<dyn Read> = match &magic[..n] {
            [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
            [0x28, 0xb5, 0x2f, 0xfd] => return Err(ImageError::Zstd { layer: index }.into()),
            _ => Box::new(BufReader::new(file)),
        };
        let malformed = |e: io::Error| ImageError::Malformed {
            layer: index,
            reason: e.to_string(),
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(malformed)? {
            let mut entry = entry.map_err(malformed)?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let kind = match entry.header().entry_type() {
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => EntryKind::File,
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => EntryKind::Symlink,
                tar::EntryType::Link => EntryKind::HardLink,
                other => EntryKind::Other(format!("{other:?}").to_lowercase()),
            };
            // The entry's content can be read once: into the first walk that wants it, copied
            // for the others (a kernelPath equal to the initrdPath).
            let mut first_copy: Option<PathBuf> = None;
            for w in &mut self.walks {
                let outcome =
                    w.walk
                        .entry(&path, kind.clone())
                        .map_err(|e| match (w.boot_file, e) {
                            (
                                Some(file),
                                e @ (ImageError::Link { .. } | ImageError::UnsupportedEntry { .. }),
                            ) => ImageError::BootFileEntry {
                                file,
                                source: Box::new(e),
                            },
                            (_, e) => e,
                        })?;
                for gone in outcome.dropped {
                    if let Some(file) = w.extracted.remove(&gone) {
                        fs::remove_file(file)?;
                    }
                }
                let Some(candidate) = outcome.extract else {
                    continue;
                };
                let target = self.dir.join(format!("extract-{}", self.next));
                self.next += 1;
                match &first_copy {
                    Some(first) => {
                        fs::copy(first, &target)?;
                    }
                    None => {
                        let mut out = File::create_new(&target)?;
                        copy_sparse(&mut entry, &mut out).map_err(|(side, e)| match side {
                            CopySide::Read => ExtractError::Image(malformed(e)),
                            CopySide::Write => ExtractError::Io(e),
                        })?;
                        first_copy = Some(target.clone());
                    }
                }
                w.extracted.insert(candidate, target);
            }
        }
        Ok(())
    }

    /// After the last layer, for a containerDisk: the one disk file, renamed to
    /// `disk.<format>`, read-only, synced.
    pub(crate) fn finish_disk(mut self) -> Result<ExtractedDisk, ExtractError> {
        let [mut w] = <[Walk; 1]>::try_from(std::mem::take(&mut self.walks))
            .map_err(|_| io::Error::other("a disk extraction has one walk"))?;
        let chosen = w.walk.finish()?;
        let source = w
            .extracted
            .remove(&chosen)
            .ok_or_else(|| io::Error::other("extracted disk file missing"))?;
        for (_, other) in std::mem::take(&mut w.extracted) {
            fs::remove_file(other)?;
        }
        let format = DiskFormat::check_self_contained(&read_header(&source)?)
            .map_err(ImageError::NotSelfContained)?;
        let path = self.dir.join(format!("disk.{}", format.as_str()));
        fs::rename(&source, &path)?;
        let file = File::open(&path)?;
        file.sync_all()?;
        let size = file.metadata()?.len();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444))?;
        Ok(ExtractedDisk { format, size })
    }

    /// After the last layer, for a kernelBoot container: each wanted file renamed to `kernel` or
    /// `initrd` in the folder, read-only, synced.
    pub(crate) fn finish_boot(mut self) -> Result<(), ExtractError> {
        for mut w in std::mem::take(&mut self.walks) {
            let file = w
                .boot_file
                .ok_or_else(|| io::Error::other("a disk walk in a kernelBoot extraction"))?;
            let chosen = w.walk.finish().map_err(|e| match e {
                ImageError::NoDiskFile { .. } => ImageError::MissingBootFile {
                    file,
                    path: w.walk.wanted_path().unwrap_or_default().to_string(),
                },
                e => e,
            })?;
            let source = w
                .extracted
                .remove(&chosen)
                .ok_or_else(|| io::Error::other("extracted kernelBoot file missing"))?;
            for (_, other) in std::mem::take(&mut w.extracted) {
                fs::remove_file(other)?;
            }
            let path = self.dir.join(file.file_name());
            fs::rename(&source, &path)?;
            File::open(&path)?.sync_all()?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o444))?;
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(from: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match from.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Which side of a copy failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CopySide {
    Read,
    Write,
}

/// Copies `from` into `to`, leaving holes for all-zero blocks (raw disk images are mostly zeros).
pub(crate) fn copy_sparse(
    from: &mut impl Read,
    to: &mut File,
) -> Result<u64, (CopySide, io::Error)> {
    const BLOCK: usize = 64 * 1024;
    let write = |e| (CopySide::Write, e);
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = read_full(from, &mut buf).map_err(|e| (CopySide::Read, e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            to.seek(SeekFrom::Current(n as i64)).map_err(write)?;
        } else {
            to.write_all(&buf[..n]).map_err(write)?;
        }
        total += n as u64;
        if n < BLOCK {
            break;
        }
    }
    to.set_len(total).map_err(write)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(layers: &[&[(&str, EntryKind)]]) -> Result<String, ImageError> {
        walk_at(DiskLocation::DiskDir, layers)
    }

    fn walk_at(
        location: DiskLocation,
        layers: &[&[(&str, EntryKind)]],
    ) -> Result<String, ImageError> {
        let mut w = LayerWalk::new(location);
        for (i, entries) in layers.iter().enumerate() {
            w.begin_layer(i);
            for (path, kind) in entries.iter() {
                w.entry(path, kind.clone())?;
            }
        }
        w.finish()
    }

    use EntryKind::*;

    #[test]
    fn the_single_file_under_disk_is_the_disk() {
        assert_eq!(
            walk(&[&[("disk/", Dir), ("disk/disk.qcow2", File)]]),
            Ok("disk/disk.qcow2".into())
        );
        assert_eq!(
            walk(&[&[("./disk/./disk.img", File), ("etc/passwd", File)]]),
            Ok("disk/disk.img".into())
        );
        // Files elsewhere and links elsewhere do not count.
        assert_eq!(
            walk(&[&[
                ("bin/sh", Symlink),
                ("diskette", File),
                ("disk/x.img", File)
            ]]),
            Ok("disk/x.img".into())
        );
    }

    #[test]
    fn zero_or_several_files_are_refused() {
        assert!(matches!(
            walk(&[&[("disk/", Dir), ("etc/hosts", File)]]),
            Err(ImageError::NoDiskFile { .. })
        ));
        let err = walk(&[&[("disk/a.img", File), ("disk/b.qcow2", File)]]).unwrap_err();
        assert_eq!(
            err,
            ImageError::SeveralDiskFiles {
                paths: vec!["/disk/a.img".into(), "/disk/b.qcow2".into()]
            }
        );
        assert!(err.to_string().contains("/disk/a.img, /disk/b.qcow2"));
        // Across layers too, and in sub-folders.
        assert!(matches!(
            walk(&[&[("disk/a.img", File)], &[("disk/sub/b.img", File)]]),
            Err(ImageError::SeveralDiskFiles { .. })
        ));
    }

    #[test]
    fn path_tricks_are_refused() {
        assert!(matches!(
            walk(&[&[("/disk/disk.img", File)]]),
            Err(ImageError::AbsolutePath { .. })
        ));
        assert!(matches!(
            walk(&[&[("disk/../../etc/shadow", File)]]),
            Err(ImageError::ParentDir { .. })
        ));
        assert!(matches!(
            walk(&[&[("../disk.img", File)]]),
            Err(ImageError::ParentDir { .. })
        ));
        for kind in [Symlink, HardLink] {
            let err = walk(&[&[("disk/disk.img", kind.clone())]]).unwrap_err();
            assert!(matches!(err, ImageError::Link { .. }), "{err}");
            // The folder itself as a link.
            let err = walk(&[&[("disk", kind.clone()), ("disk/x.img", File)]]).unwrap_err();
            assert!(matches!(err, ImageError::Link { .. }), "{err}");
        }
        let err = walk(&[&[("disk/null", Other("char".into()))]]).unwrap_err();
        assert!(err.to_string().contains("char"), "{err}");
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        // A later layer replaces the disk.
        assert_eq!(
            walk(&[
                &[("disk/old.img", File)],
                &[("disk/.wh.old.img", File), ("disk/new.qcow2", File)]
            ]),
            Ok("disk/new.qcow2".into())
        );
        // An opaque folder hides everything below from lower layers, not its own layer's files.
        assert_eq!(
            walk(&[
                &[("disk/a.img", File), ("disk/b.img", File)],
                &[("disk/c.img", File), ("disk/.wh..wh..opq", File)]
            ]),
            Ok("disk/c.img".into())
        );
        // Whiting out the folder hides all of it.
        assert!(matches!(
            walk(&[&[("disk/a.img", File)], &[(".wh.disk", File)]]),
            Err(ImageError::NoDiskFile { .. })
        ));
        // A whiteout in the same layer does not hide its own layer's file.
        assert_eq!(
            walk(&[&[("disk/a.img", File), ("disk/.wh.a.img", File)]]),
            Ok("disk/a.img".into())
        );
    }

    #[test]
    fn outcome_reports_replaced_files() {
        let mut w = LayerWalk::new(DiskLocation::DiskDir);
        w.begin_layer(0);
        let first = w.entry("disk/a.img", File).unwrap();
        assert_eq!(first.extract.as_deref(), Some("disk/a.img"));
        assert!(first.dropped.is_empty());
        w.begin_layer(1);
        let again = w.entry("disk/a.img", File).unwrap();
        assert_eq!(again.dropped, ["disk/a.img"]);
        let gone = w.entry("disk/.wh.a.img", File).unwrap();
        assert!(gone.dropped.is_empty(), "same layer");
        w.begin_layer(2);
        let gone = w.entry("disk/.wh.a.img", File).unwrap();
        assert_eq!(gone.dropped, ["disk/a.img"]);
    }

    #[test]
    fn a_custom_path_picks_that_file() {
        let loc = DiskLocation::from_image_path(Some("/images//boot.qcow2")).unwrap();
        assert_eq!(loc, DiskLocation::Path("images/boot.qcow2".into()));
        assert_eq!(
            walk_at(
                loc.clone(),
                &[&[("disk/other.img", File), ("images/boot.qcow2", File)]]
            ),
            Ok("images/boot.qcow2".into())
        );
        assert!(matches!(
            walk_at(loc.clone(), &[&[("images", Symlink)]]),
            Err(ImageError::Link { .. })
        ));
        assert!(walk_at(
            loc.clone(),
            &[&[("images-other", Symlink), ("images/boot.qcow2", File)]]
        )
        .is_ok());
        assert!(matches!(
            walk_at(loc, &[&[("disk/x.img", File)]]),
            Err(ImageError::NoDiskFile { .. })
        ));
        for bad in ["relative/x", "/a/../b", "/"] {
            assert!(DiskLocation::from_image_path(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            DiskLocation::from_image_path(None).unwrap(),
            DiskLocation::DiskDir
        );
    }

    #[test]
    fn boot_paths_are_clean_absolute_paths_in_the_image() {
        assert_eq!(
            Wanted::boot(Some("/boot//./vmlinuz"), None),
            Ok(Wanted::Boot(BootPaths {
                kernel: Some("boot/vmlinuz".into()),
                initrd: None
            }))
        );
        for bad in ["boot/vmlinuz", "/boot/../../x", "/", "", "/.."] {
            assert_eq!(
                Wanted::boot(Some("/k"), Some(bad)),
                Err(ImageError::BadBootPath {
                    file: BootFile::Initrd,
                    path: bad.into()
                }),
                "{bad}"
            );
        }
    }

    /// One layer blob (plain tar) with these regular files, in a temporary folder.
    fn blob(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        let path = dir.join("layer.tar");
        fs::write(&path, builder.into_inner().unwrap()).unwrap();
        path
    }

    #[test]
    fn boot_extraction_writes_kernel_and_initrd_even_from_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let layer = blob(
            dir.path(),
            &[("boot/vmlinuz", b"K1"), ("boot/vmlinuz", b"K2"), ("x", b"")],
        );
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let wanted = Wanted::boot(Some("/boot/vmlinuz"), Some("/boot/vmlinuz")).unwrap();
        let mut extraction = Extraction::new(wanted, &out);
        extraction.apply_layer(0, &layer).unwrap();
        extraction.finish_boot().unwrap();
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [INITRD_FILE, KERNEL_FILE],
            "replaced candidates removed"
        );
        assert_eq!(fs::read(out.join(KERNEL_FILE)).unwrap(), b"K2");
        assert_eq!(fs::read(out.join(INITRD_FILE)).unwrap(), b"K2");
        let mode = fs::metadata(out.join(KERNEL_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);

        let out2 = dir.path().join("out2");
        fs::create_dir(&out2).unwrap();
        let wanted = Wanted::boot(Some("/boot/vmlinuz"), Some("/boot/initrd")).unwrap();
        let mut extraction = Extraction::new(wanted, &out2);
        extraction.apply_layer(0, &layer).unwrap();
        match extraction.finish_boot() {
            Err(ExtractError::Image(ImageError::MissingBootFile { file, path })) => {
                assert_eq!((file, path.as_str()), (BootFile::Initrd, "boot/initrd"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sparse_copy_keeps_content_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 300 * 1024];
        data[70_000] = 7;
        data[300 * 1024 - 1] = 9;
        let path = dir.path().join("out");
        let mut out = fs::File::create(&path).unwrap();
        let n = copy_sparse(&mut &data[..], &mut out).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(fs::read(&path).unwrap(), data);
        // Trailing zeros are a hole, but the length stays.
        let zeros = dir.path().join("zeros");
        let mut out = fs::File::create(&zeros).unwrap();
        copy_sparse(&mut &vec![0u8; 200_000][..], &mut out).unwrap();
        assert_eq!(fs::metadata(&zeros).unwrap().len(), 200_000);
    }
}
