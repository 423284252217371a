//! Helpers for tests, of this crate and of others (cargo feature `testing`): a real OCI registry
//! (Debian's `docker-registry`) on 127.0.0.1 with a free port and a throw-away store, and
//! containerDisk and kernelBoot images built in memory and pushed to it with oci-client.
//!
//! The registry process is killed by its PID (SIGKILL) when its handle is dropped. The binary is
//! `/usr/bin/docker-registry`, or `$FERROVIRT_DOCKER_REGISTRY` if set; a missing binary is an
//! error that says what to install.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use ferrovirt_disks::testing::{raw_disk_image, RegistryProcess};
//! let registry = RegistryProcess::start()?;
//! let digest = registry.push_disk("guest:v1", "disk.img", &raw_disk_image(1 << 20, 7)).await?;
//! let image = registry.image("guest:v1"); // "127.0.0.1:<port>/guest:v1", pullable without settings
//! # Ok(()) }
//! ```

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

use crate::DiskFormat;

/// The registry binary tests run.
pub fn registry_binary() -> PathBuf {
    std::env::var_os("FERROVIRT_DOCKER_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/docker-registry".into())
}

/// How long the registry may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `docker-registry serve` process on 127.0.0.1. Dropping it kills the process and deletes its
/// store.
pub struct RegistryProcess {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl RegistryProcess {
    /// Starts a registry on a free port and waits until it answers `/v2/`.
    pub fn start() -> io::Result<Self> {
        let port = free_port()?;
        let dir = tempfile::Builder::new()
            .prefix("ferrovirt-registry-")
            .tempdir()?;
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n\
             health:\n  storagedriver:\n    enabled: false\n",
            root = dir.path().join("storage").display(),
        );
        fs::write(dir.path().join("config.yml"), config)?;
        let mut registry = RegistryProcess {
            dir,
            port,
            child: None,
        };
        registry.spawn()?;
        registry.wait_ready()?;
        Ok(registry)
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>/<repository_and_tag>`.
    pub fn image(&self, repository_and_tag: &str) -> String {
        format!("{}/{repository_and_tag}", self.host())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The registry's storage root (its filesystem driver's `rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The file holding the blob `digest` (`sha256:...`) in the registry's store; tests corrupt it
    /// to check digest verification.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2.min(hex.len())])
            .join(hex)
            .join("data")
    }

    /// Kills the process (SIGKILL, by PID) and reaps it. The store stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process and starts it again on the same port and store.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready()
    }

    /// Pushes an image of `layers` as `repository_and_tag`; returns the manifest digest.
    pub async fn push(&self, repository_and_tag: &str, layers: Vec<Layer>) -> io::Result<String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let reference: Reference = self
            .image(repository_and_tag)
            .parse()
            .map_err(io::Error::other)?;
        let client = Client::try_from(ClientConfig {
            protocol: ClientProtocol::Http,
            ..ClientConfig::default()
        })
        .map_err(io::Error::other)?;
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = Config::oci_v1(serde_json::to_vec(&config)?, None);
        let layers: Vec<ImageLayer> = layers
            .into_iter()
            .map(|l| ImageLayer::new(l.data, l.media_type, None))
            .collect();
        let auth = RegistryAuth::Anonymous;
        client
            .push(&reference, &layers, config, &auth, None)
            .await
            .map_err(|e| io::Error::other(format!("push {reference}: {e}")))?;
        client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .map_err(|e| io::Error::other(format!("digest of {reference}: {e}")))
    }

    /// Pushes a containerDisk: one gzip layer holding `disk/<file_name>` (0440, owner 107:107, as
    /// KubeVirt's images have it).
    pub async fn push_disk(
        &self,
        repository_and_tag: &str,
        file_name: &str,
        disk: &[u8],
    ) -> io::Result<String> {
        let layer = Layer::gzip(&disk_layer(file_name, disk));
        self.push(repository_and_tag, vec![layer]).await
    }

    /// Pushes the image file at `path` as a containerDisk (`disk/disk.qcow2` or `disk/disk.img`,
    /// by its content).
    pub async fn push_disk_file(
        &self,
        repository_and_tag: &str,
        path: &Path,
    ) -> io::Result<String> {
        let data = fs::read(path)?;
        let name = match DiskFormat::from_header(&data) {
            DiskFormat::Qcow2 => "disk.qcow2",
            DiskFormat::Raw => "disk.img",
        };
        self.push_disk(repository_and_tag, name, &data).await
    }

    /// Pushes a kernelBoot container: one gzip layer holding `boot/` with `boot/vmlinuz` and
    /// `boot/initrd.gz` (as [`KERNEL_PATH`] and [`INITRD_PATH`] name them).
    pub async fn push_kernel_boot(
        &self,
        repository_and_tag: &str,
        kernel: &[u8],
        initrd: &[u8],
    ) -> io::Result<String> {
        let layer = Layer::gzip(&kernel_boot_layer(kernel, initrd));
        self.push(repository_and_tag, vec![layer]).await
    }

    /// Pushes the kernel and initrd files at `kernel` and `initrd` as a kernelBoot container
    /// (see [`RegistryProcess::push_kernel_boot`]).
    pub async fn push_kernel_boot_files(
        &self,
        repository_and_tag: &str,
        kernel: &Path,
        initrd: &Path,
    ) -> io::Result<String> {
        self.push_kernel_boot(repository_and_tag, &fs::read(kernel)?, &fs::read(initrd)?)
            .await
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    fn spawn(&mut self) -> io::Result<()> {
        let binary = registry_binary();
        if !binary.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "registry binary {} not found: install Debian's docker-registry package \
                     (apt-get install docker-registry) or set FERROVIRT_DOCKER_REGISTRY",
                    binary.display()
                ),
            ));
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&binary)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start {}: {e}", binary.display()))
            })?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(self.start_error(&format!("docker-registry exited with {status}")));
                }
            }
            if answers_v2(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.start_error(&format!(
                    "docker-registry not answering after {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_error(&self, what: &str) -> io::Error {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::other(format!("{what}; log:\n{}", tail.join("\n")))
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn answers_v2(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    // "HTTP/1.1 200" (Go answers an HTTP/1.0 request with "HTTP/1.0").
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[8..] == b" 200"
}

/// One layer to push: its bytes, media type and the digest of its uncompressed tar.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The blob.
    pub data: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// `sha256:` of the uncompressed content (the image config's `diff_ids`).
    pub diff_id: String,
}

impl Layer {
    /// An uncompressed tar layer.
    pub fn tar(tar: &[u8]) -> Layer {
        Layer {
            data: tar.to_vec(),
            media_type: manifest::IMAGE_LAYER_MEDIA_TYPE.to_string(),
            diff_id: sha256(tar),
        }
    }

    /// A gzip-compressed tar layer.
    pub fn gzip(tar: &[u8]) -> Layer {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(tar).expect("writing to memory");
        Layer {
            data: encoder.finish().expect("writing to memory"),
            media_type: manifest::IMAGE_LAYER_GZIP_MEDIA_TYPE.to_string(),
            diff_id: sha256(tar),
        }
    }

    /// Any blob with any media type (for refusal tests).
    pub fn other(data: &[u8], media_type: &str) -> Layer {
        Layer {
            data: data.to_vec(),
            media_type: media_type.to_string(),
            diff_id: sha256(data),
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        crate::container_disk::hex(&Sha256::digest(data))
    )
}

/// Builds tar archives entry by entry, writing paths verbatim (so tests can make the absolute
/// and `..` paths that careful tar writers refuse). Paths and link targets up to 99 bytes.
pub struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder::new()
    }
}

impl TarBuilder {
    /// An empty archive.
    pub fn new() -> Self {
        TarBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn entry(
        mut self,
        kind: tar::EntryType,
        path: &str,
        link: Option<&str>,
        data: &[u8],
        mode: u32,
    ) -> Self {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(107);
        header.set_gid(107);
        header.set_mtime(1_700_000_000);
        let old = header.as_old_mut();
        assert!(
            path.len() < old.name.len(),
            "path too long for TarBuilder: {path}"
        );
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            assert!(link.len() < old.linkname.len(), "link too long: {link}");
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        self.builder
            .append(&header, data)
            .expect("writing to memory");
        self
    }

    /// A folder.
    pub fn dir(self, path: &str) -> Self {
        self.entry(tar::EntryType::Directory, path, None, &[], 0o755)
    }

    /// A regular file (mode 0440).
    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(tar::EntryType::Regular, path, None, data, 0o440)
    }

    /// A symbolic link to `target`.
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(tar::EntryType::Symlink, path, Some(target), &[], 0o777)
    }

    /// A hard link to `target`.
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(tar::EntryType::Link, path, Some(target), &[], 0o644)
    }

    /// The archive.
    pub fn build(self) -> Vec<u8> {
        self.builder.into_inner().expect("writing to memory")
    }
}

/// A containerDisk layer: `disk/` and `disk/<file_name>` holding `disk`.
pub fn disk_layer(file_name: &str, disk: &[u8]) -> Vec<u8> {
    TarBuilder::new()
        .dir("disk/")
        .file(&format!("disk/{file_name}"), disk)
        .build()
}

/// Where [`kernel_boot_layer`] puts the kernel (`kernelPath`).
pub const KERNEL_PATH: &str = "/boot/vmlinuz";
/// Where [`kernel_boot_layer`] puts the initrd (`initrdPath`).
pub const INITRD_PATH: &str = "/boot/initrd.gz";

/// A kernelBoot container layer: `boot/`, `boot/vmlinuz` and `boot/initrd.gz`.
pub fn kernel_boot_layer(kernel: &[u8], initrd: &[u8]) -> Vec<u8> {
    TarBuilder::new()
        .dir("boot/")
        .file(&KERNEL_PATH[1..], kernel)
        .file(&INITRD_PATH[1..], initrd)
        .build()
}

/// A raw disk image of `size` bytes, mostly zeros, with a recognizable pattern from `seed` at
/// the start of every MiB (so tests can tell images apart and check content).
pub fn raw_disk_image(size: usize, seed: u8) -> Vec<u8> {
    let mut data = vec![0u8; size];
    for (i, chunk) in data.chunks_mut(1 << 20).enumerate() {
        let marker = format!("ferrovirt test disk seed={seed} mib={i}\n");
        let n = marker.len().min(chunk.len());
        chunk[..n].copy_from_slice(&marker.as_bytes()[..n]);
    }
    data
}

/// An empty qcow2 image of `virtual_size` bytes, made with `qemu-img create`.
pub fn qcow2_disk_image(virtual_size: u64) -> io::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("disk.qcow2");
    let status = Command::new(crate::qemu_img::qemu_img_binary())
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg(virtual_size.to_string())
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "qemu-img create failed: {status}"
        )));
    }
    fs::read(&path)
}
