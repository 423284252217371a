//! containerDisk: a VM disk shipped as an OCI image (one file under `/disk/`, raw or qcow2), pulled
//! into the node's cache once and given to each VMI as a copy-on-write overlay. The same pull,
//! cache and registry rules serve a kernelBoot container ([`pull_kernel_boot`]): its kernel and
//! initrd are taken out of the image at `kernelPath` and `initrdPath` and kept in the cache by
//! digest, read-only; QEMU reads them from there.
//!
//! ```text
//!   pull(cache_dir, image, options)
//!     │ IfNotPresent / Never, or a digest reference: index.json + cache entry ──► done (no network)
//!     │ Never and not cached ──► PullError::NotPresent
//!     ▼
//!   registry: HTTPS, or plain HTTP for loopback / insecure_registries  (transport)
//!     manifest (linux/amd64 from an index) ──► digest ──► cached? ──► done
//!     ▼
//!   flock(digest) ─► cached now? ─► done          (concurrent pulls download once)
//!     per layer: blob ─► tmp/<digest>.<rand>/layer-N.blob (digest and size checked)
//!                      ─► tar / tar+gzip walk, candidates extracted sparsely   (layers)
//!     one disk file ─► self-contained qcow2 or raw ─► disk.<fmt>, 0444
//!       (kernelBoot: the files at kernelPath / initrdPath ─► kernel, initrd, 0444)
//!     rename tmp/<digest>.<rand> ─► images/sha256/<digest>; index.json updated     (cache)
//!
//!   overlay(cached, vm_dir, name): qemu-img create -f qcow2 -F <fmt> -b <cached> <vm_dir>/<name>.qcow2
//! ```
//!
//! The cached file is never written: QEMU writes the overlay only. A failed pull leaves no partial
//! entry behind (its temporary folder is removed, or removed by the next pull of that digest if the
//! process died). Layers' `urls` (foreign layers) are ignored: blobs come from the registry only.

mod auth;
mod cache;
mod layers;
mod transport;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{self, OciDescriptor};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use crate::qemu_img::{self, QemuImgError};
use crate::{DiskFormat, VmFileError};

pub use auth::{credentials_from_pull_secret, RegistryCredentials};
#[cfg(feature = "testing")]
pub(crate) use cache::hex;
use cache::{BootPaths, Cache, CacheKey, CachedEntry, Holds};
pub(crate) use layers::image_file_path;
pub use layers::{BootFile, ImageError};
use layers::{DiskLocation, ExtractError, Extraction, Wanted};
use transport::Transport;

/// KubeVirt's `imagePullPolicy` (Kubernetes' semantics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum PullPolicy {
    /// Ask the registry every time; download only if the digest is not cached.
    Always,
    /// Use the cached image of this reference if there is one.
    #[default]
    IfNotPresent,
    /// Never contact a registry; fail if the image is not cached.
    Never,
}

impl PullPolicy {
    /// Kubernetes' default: `Always` for a `:latest` or untagged reference, `IfNotPresent`
    /// otherwise (and for digest references).
    pub fn default_for(image: &str) -> PullPolicy {
        match image.parse::<Reference>() {
            Ok(r) if r.digest().is_none() && r.tag() == Some("latest") => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }

    /// `imagePullPolicy` as written in the spec, defaulted as Kubernetes does when absent.
    pub fn parse(value: Option<&str>, image: &str) -> Result<PullPolicy, String> {
        match value {
            None | Some("") => Ok(PullPolicy::default_for(image)),
            Some("Always") => Ok(PullPolicy::Always),
            Some("IfNotPresent") => Ok(PullPolicy::IfNotPresent),
            Some("Never") => Ok(PullPolicy::Never),
            Some(other) => Err(format!(
                "imagePullPolicy {other:?} is not one of Always, IfNotPresent, Never"
            )),
        }
    }
}

/// How to pull.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullOptions {
    /// When to contact the registry.
    pub policy: PullPolicy,
    /// `containerDisk.path`: the disk file's absolute path in the image, instead of the single
    /// file under `/disk/`.
    pub image_path: Option<String>,
    /// The node setting `insecure_registries`: registries (`host` or `host:port`) reached over
    /// plain HTTP although not on loopback.
    pub insecure_registries: Vec<String>,
    /// Credentials for the image's registry.
    pub credentials: RegistryCredentials,
}

/// A containerDisk in the node's cache, ready to be the backing file of an overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedDisk {
    /// The image reference, normalized (`registry/repository:tag` or `...@digest`).
    pub reference: String,
    /// The manifest digest (`sha256:...`).
    pub digest: String,
    /// The disk file (read-only, never written).
    pub path: PathBuf,
    /// Its format, from its content.
    pub format: DiskFormat,
    /// Its size in bytes (the image's virtual size for raw).
    pub size: u64,
    /// Whether this call downloaded it (false: it was in the cache).
    pub downloaded: bool,
}

/// The files of a kernelBoot container, as `kernelBoot.container` names them: absolute paths in
/// the image. At least one is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelBootFiles {
    /// `kernelPath`.
    pub kernel_path: Option<String>,
    /// `initrdPath`.
    pub initrd_path: Option<String>,
}

/// A kernelBoot container's files in the node's cache (read-only, never written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedKernelBoot {
    /// The image reference, normalized.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// The kernel, if `kernelPath` was given.
    pub kernel: Option<PathBuf>,
    /// The initrd, if `initrdPath` was given.
    pub initrd: Option<PathBuf>,
    /// Whether this call downloaded it (false: it was in the cache).
    pub downloaded: bool,
}

/// What an image is pulled as, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageUse {
    /// A `containerDisk` volume.
    ContainerDisk,
    /// `spec.domain.firmware.kernelBoot.container`.
    KernelBoot,
}

impl std::fmt::Display for ImageUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageUse::ContainerDisk => "containerDisk",
            ImageUse::KernelBoot => "kernelBoot container",
        })
    }
}

/// One image in the node's cache, as `fvctl image ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedImage {
    /// The image reference, normalized.
    pub reference: String,
    /// The manifest digest it resolved to.
    pub digest: String,
    /// `containerDisk.path`, when not the default `/disk/` file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_path: Option<String>,
    /// Format of the disk file.
    pub format: DiskFormat,
    /// Size of the disk file in bytes.
    pub size: u64,
    /// When this node first pulled this reference at this digest.
    pub pulled_at: DateTime<Utc>,
    /// The disk file.
    pub path: PathBuf,
}

/// Why a containerDisk could not be pulled.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse.
    #[error("image reference {image:?} is invalid: {source}")]
    InvalidReference {
        /// The reference as given.
        image: String,
        /// The parser's reason.
        #[source]
        source: oci_client::ParseError,
    },
    /// `imagePullPolicy: Never` and not cached.
    #[error("image {image} is not in this node's cache and its imagePullPolicy is Never")]
    NotPresent {
        /// The image.
        image: String,
    },
    /// A registry that is neither loopback nor listed as insecure answered over plain HTTP.
    #[error("registry {registry} answers over plain HTTP, not HTTPS; ferrovirt uses plain HTTP only for loopback registries and for those in the node's insecure_registries setting (add \"{registry}\" there to pull {image})")]
    PlainHttpRefused {
        /// The image.
        image: String,
        /// The registry (`host:port`).
        registry: String,
    },
    /// The registry refused or failed, or could not be reached.
    #[error("cannot pull {image} from {registry}: {source}")]
    Registry {
        /// The image.
        image: String,
        /// The registry (`host:port`).
        registry: String,
        /// oci-client's error.
        #[source]
        source: OciDistributionError,
    },
    /// A layer's content does not hash to its digest.
    #[error("image {image}: layer {digest} does not match its digest (the data hashes to {actual}); the registry or the network corrupted it")]
    DigestMismatch {
        /// The image.
        image: String,
        /// The digest the manifest names.
        digest: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A layer's length differs from the manifest's.
    #[error("image {image}: layer {digest} is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The image.
        image: String,
        /// The layer's digest.
        digest: String,
        /// Size in the manifest.
        expected: i64,
        /// Size received.
        actual: u64,
    },
    /// A layer that is not a filesystem tar.
    #[error("image {image}: layer {digest} has media type {media_type:?}, not a filesystem layer (tar or tar+gzip)")]
    UnsupportedLayer {
        /// The image.
        image: String,
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// The manifest digest cannot name a cache entry.
    #[error("image {image}: manifest digest {digest:?} is not a sha256, sha384 or sha512 digest")]
    UnsupportedDigest {
        /// The image.
        image: String,
        /// The digest.
        digest: String,
    },
    /// The image's content is not usable as what it was pulled for.
    #[error("image {image} is not a usable {used_as}: {source}")]
    Image {
        /// The image.
        image: String,
        /// What it was pulled as.
        used_as: ImageUse,
        /// What is wrong with it.
        #[source]
        source: ImageError,
    },
    /// The node's cache folder could not be read or written.
    #[error("image cache {path}: {source}")]
    Cache {
        /// The cache folder or file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// Why an overlay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The overlay's file name or place.
    #[error(transparent)]
    File(#[from] VmFileError),
    /// `qemu-img create` failed.
    #[error("cannot create the overlay of {backing}: {source}")]
    QemuImg {
        /// The cached disk.
        backing: PathBuf,
        /// What qemu-img said.
        #[source]
        source: QemuImgError,
    },
}

/// Pulls `image` into the cache under `cache_dir` (see the module docs) and returns its disk file.
pub async fn pull(
    cache_dir: &Path,
    image: &str,
    options: &PullOptions,
) -> Result<CachedDisk, PullError> {
    let reference: Reference = image
        .parse()
        .map_err(|source| PullError::InvalidReference {
            image: image.to_string(),
            source,
        })?;
    let span = tracing::info_span!("pull", image = %reference.whole());
    let puller = Puller {
        cache: Cache::new(cache_dir),
        cache_dir: cache_dir.to_path_buf(),
        whole: reference.whole(),
        reference,
        options,
        used_as: ImageUse::ContainerDisk,
    };
    let location = DiskLocation::from_image_path(options.image_path.as_deref())
        .map_err(|source| puller.image_error(source))?;
    let pulled = puller.run(Wanted::Disk(location)).instrument(span).await?;
    match pulled.entry {
        CachedEntry::Disk(file) => Ok(CachedDisk {
            reference: puller.whole,
            digest: pulled.digest,
            path: file.path,
            format: file.format,
            size: file.size,
            downloaded: pulled.downloaded,
        }),
        CachedEntry::Boot(_) => Err(puller.cache_error(io::Error::other(
            "a containerDisk pull found a kernelBoot cache entry",
        ))),
    }
}

/// Pulls the kernelBoot container `image` into the cache under `cache_dir` (as [`pull`] does a
/// containerDisk: same policies, registries and cache) and returns its kernel and initrd, taken
/// from the image at `files`. `options.image_path` is not used.
pub async fn pull_kernel_boot(
    cache_dir: &Path,
    image: &str,
    files: &KernelBootFiles,
    options: &PullOptions,
) -> Result<CachedKernelBoot, PullError> {
    let reference: Reference = image
        .parse()
        .map_err(|source| PullError::InvalidReference {
            image: image.to_string(),
            source,
        })?;
    let span = tracing::info_span!("pull_kernel_boot", image = %reference.whole());
    let puller = Puller {
        cache: Cache::new(cache_dir),
        cache_dir: cache_dir.to_path_buf(),
        whole: reference.whole(),
        reference,
        options,
        used_as: ImageUse::KernelBoot,
    };
    let wanted = Wanted::boot(files.kernel_path.as_deref(), files.initrd_path.as_deref())
        .map_err(|source| puller.image_error(source))?;
    if matches!(
        &wanted,
        Wanted::Boot(BootPaths {
            kernel: None,
            initrd: None
        })
    ) {
        return Err(puller.image_error(ImageError::NoBootFiles));
    }
    let pulled = puller.run(wanted).instrument(span).await?;
    match pulled.entry {
        CachedEntry::Boot(files) => Ok(CachedKernelBoot {
            reference: puller.whole,
            digest: pulled.digest,
            kernel: files.kernel,
            initrd: files.initrd,
            downloaded: pulled.downloaded,
        }),
        CachedEntry::Disk(_) => Err(puller.cache_error(io::Error::other(
            "a kernelBoot pull found a containerDisk cache entry",
        ))),
    }
}

/// The images in the node's cache, in the order they were recorded. Entries whose files are gone
/// are left out.
pub fn list_cached(cache_dir: &Path) -> Result<Vec<CachedImage>, PullError> {
    let cache = Cache::new(cache_dir);
    let cache_error = |source| PullError::Cache {
        path: cache_dir.join("images"),
        source,
    };
    let mut images = Vec::new();
    for entry in cache.read_index().map_err(cache_error)? {
        // kernelBoot entries hold no disk: not listed here.
        let holds @ Holds::Disk { .. } = entry.holds() else {
            continue;
        };
        let Ok(key) = CacheKey::holding(&entry.digest, holds) else {
            continue;
        };
        if let Some(file) = cache.lookup(&key).map_err(cache_error)? {
            images.push(CachedImage {
                reference: entry.reference,
                digest: entry.digest,
                image_path: entry.image_path.map(|p| format!("/{p}")),
                format: file.format,
                size: file.size,
                pulled_at: entry.pulled_at,
                path: file.path,
            });
        }
    }
    Ok(images)
}

/// Creates `<vm_dir>/<name>.qcow2`, a qcow2 overlay over the cached disk: the guest's writes go to
/// the overlay, the cached file is only read.
pub async fn overlay(
    cached: &CachedDisk,
    vm_dir: &Path,
    name: &str,
) -> Result<PathBuf, OverlayError> {
    let path = crate::new_vm_file(vm_dir, name, "qcow2")?;
    let args = qemu_img::overlay_args(&cached.path, cached.format, &path);
    if let Err(source) = qemu_img::run(&args).await {
        crate::remove_partial(&path);
        return Err(OverlayError::QemuImg {
            backing: cached.path.clone(),
            source,
        });
    }
    Ok(path)
}

/// One pull in progress.
struct Puller<'a> {
    cache: Cache,
    cache_dir: PathBuf,
    reference: Reference,
    whole: String,
    options: &'a PullOptions,
    used_as: ImageUse,
}

/// A complete cache entry a pull found or made.
struct Pulled {
    digest: String,
    entry: CachedEntry,
    downloaded: bool,
}

impl Puller<'_> {
    async fn run(&self, wanted: Wanted) -> Result<Pulled, PullError> {
        let holds = match &wanted {
            Wanted::Disk(DiskLocation::DiskDir) => Holds::Disk { image_path: None },
            Wanted::Disk(DiskLocation::Path(p)) => Holds::Disk {
                image_path: Some(p.clone()),
            },
            Wanted::Boot(paths) => Holds::Boot(paths.clone()),
        };

        if self.options.policy != PullPolicy::Always || self.reference.digest().is_some() {
            let known = match self.reference.digest() {
                Some(d) => Some(d.to_string()),
                None => self
                    .cache
                    .index_digest(&self.whole, &holds)
                    .map_err(|e| self.cache_error(e))?,
            };
            if let Some(digest) = known {
                let key = self.key(&digest, &holds)?;
                if let Some(hit) = self.cached(&key).await? {
                    tracing::debug!(digest, "using the cached image");
                    return Ok(hit);
                }
            }
            if self.options.policy == PullPolicy::Never {
                return Err(PullError::NotPresent {
                    image: self.whole.clone(),
                });
            }
        }

        let registry = self.reference.resolve_registry().to_string();
        let transport = transport::transport_for(&registry, &self.options.insecure_registries);
        let client = client(transport).map_err(|source| self.registry_error(&registry, source))?;
        let auth = match &self.options.credentials {
            RegistryCredentials::Anonymous => RegistryAuth::Anonymous,
            RegistryCredentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
        };
        let (manifest, digest) = match client.pull_image_manifest(&self.reference, &auth).await {
            Ok(found) => found,
            Err(source) => return Err(self.classify(&registry, transport, source).await),
        };
        let key = self.key(&digest, &holds)?;
        if let Some(hit) = self.cached(&key).await? {
            tracing::debug!(digest, "the registry's digest is cached");
            return Ok(hit);
        }

        let _lock = self
            .blocking({
                let (cache, key) = (self.cache.clone(), key.clone());
                move || cache.lock(&key)
            })
            .await?;
        if let Some(hit) = self.cached(&key).await? {
            tracing::debug!(digest, "pulled meanwhile by another pull");
            return Ok(hit);
        }
        let mut work = self
            .blocking({
                let (cache, key) = (self.cache.clone(), key.clone());
                move || {
                    cache.remove_stale_temp_dirs(&key)?;
                    let temp = cache.temp_dir(&key)?;
                    let extraction = Extraction::new(wanted, temp.path());
                    Ok((temp, extraction))
                }
            })
            .await?;
        tracing::info!(digest, layers = manifest.layers.len(), "downloading");
        for (index, layer) in manifest.layers.iter().enumerate() {
            self.check_media_type(layer)?;
            let blob = work.0.path().join(format!("layer-{index}.blob"));
            self.download(&client, layer, &blob).await?;
            work = tokio::task::spawn_blocking(move || {
                let (temp, mut extraction) = work;
                let applied = extraction
                    .apply_layer(index, &blob)
                    .and_then(|()| fs::remove_file(&blob).map_err(ExtractError::Io));
                applied.map(|()| (temp, extraction))
            })
            .await
            .map_err(|e| self.cache_error(io::Error::other(e)))?
            .map_err(|e| self.extract_error(e))?;
        }
        let (temp, extraction) = work;
        let boot = matches!(holds, Holds::Boot(_));
        let temp = tokio::task::spawn_blocking(move || {
            if boot {
                extraction.finish_boot()
            } else {
                extraction.finish_disk().map(|disk| {
                    tracing::info!(format = %disk.format, size = disk.size, "disk extracted");
                })
            }
            .map(|()| temp)
        })
        .await
        .map_err(|e| self.cache_error(io::Error::other(e)))?
        .map_err(|e| self.extract_error(e))?;
        self.blocking({
            let (cache, key) = (self.cache.clone(), key.clone());
            move || cache.commit(&key, temp)
        })
        .await?;
        let Some(pulled) = self.cached(&key).await? else {
            return Err(self.cache_error(io::Error::other(format!(
                "the entry of {digest} is incomplete right after it was made"
            ))));
        };
        tracing::info!(digest, "pulled");
        Ok(Pulled {
            downloaded: true,
            ..pulled
        })
    }

    /// The cache entry of `key`, recorded in the index under this reference, if complete.
    async fn cached(&self, key: &CacheKey) -> Result<Option<Pulled>, PullError> {
        let Some(entry) = self
            .cache
            .lookup_entry(key)
            .map_err(|e| self.cache_error(e))?
        else {
            return Ok(None);
        };
        self.record(key).await?;
        Ok(Some(Pulled {
            digest: key.digest(),
            entry,
            downloaded: false,
        }))
    }

    async fn record(&self, key: &CacheKey) -> Result<(), PullError> {
        let cache = self.cache.clone();
        let (reference, digest) = (self.whole.clone(), key.digest());
        let holds = key.holds().clone();
        self.blocking(move || cache.record(&reference, &digest, &holds, Utc::now()))
            .await
    }

    async fn download(
        &self,
        client: &Client,
        layer: &OciDescriptor,
        path: &Path,
    ) -> Result<(), PullError> {
        let file = tokio::fs::File::create_new(path)
            .await
            .map_err(|e| self.cache_error(e))?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        // Blobs come from the registry only, never from the layer's `urls`.
        let descriptor = OciDescriptor {
            urls: None,
            ..layer.clone()
        };
        if let Err(source) = client
            .pull_blob(&self.reference, &descriptor, &mut out)
            .await
        {
            return Err(match source {
                OciDistributionError::DigestError(
                    oci_client::errors::DigestError::VerificationError { actual, .. },
                ) => PullError::DigestMismatch {
                    image: self.whole.clone(),
                    digest: layer.digest.clone(),
                    actual,
                },
                OciDistributionError::IoError(e) => self.cache_error(e),
                source => self.registry_error(self.reference.resolve_registry(), source),
            });
        }
        out.flush().await.map_err(|e| self.cache_error(e))?;
        let file = out.into_inner();
        file.sync_all().await.map_err(|e| self.cache_error(e))?;
        let actual = file
            .metadata()
            .await
            .map_err(|e| self.cache_error(e))?
            .len();
        if layer.size >= 0 && actual != layer.size as u64 {
            return Err(PullError::SizeMismatch {
                image: self.whole.clone(),
                digest: layer.digest.clone(),
                expected: layer.size,
                actual,
            });
        }
        Ok(())
    }

    fn check_media_type(&self, layer: &OciDescriptor) -> Result<(), PullError> {
        match layer.media_type.as_str() {
            manifest::IMAGE_LAYER_MEDIA_TYPE
            | manifest::IMAGE_LAYER_GZIP_MEDIA_TYPE
            | manifest::IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE
            | manifest::IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE => Ok(()),
            // zstd layers are recognized by content, for a clearer message.
            "application/vnd.oci.image.layer.v1.tar+zstd" => Ok(()),
            other => Err(PullError::UnsupportedLayer {
                image: self.whole.clone(),
                digest: layer.digest.clone(),
                media_type: other.to_string(),
            }),
        }
    }

    /// Turns a failed manifest request into the error a user can act on.
    async fn classify(
        &self,
        registry: &str,
        transport: Transport,
        source: OciDistributionError,
    ) -> PullError {
        if transport == Transport::Https
            && matches!(source, OciDistributionError::RequestError(_))
            && transport::answers_plain_http(registry).await
        {
            return PullError::PlainHttpRefused {
                image: self.whole.clone(),
                registry: registry.to_string(),
            };
        }
        self.registry_error(registry, source)
    }

    fn key(&self, digest: &str, holds: &Holds) -> Result<CacheKey, PullError> {
        CacheKey::holding(digest, holds.clone()).map_err(|_| PullError::UnsupportedDigest {
            image: self.whole.clone(),
            digest: digest.to_string(),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, PullError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| self.cache_error(e))
    }

    fn registry_error(&self, registry: &str, source: OciDistributionError) -> PullError {
        PullError::Registry {
            image: self.whole.clone(),
            registry: registry.to_string(),
            source,
        }
    }

    fn image_error(&self, source: ImageError) -> PullError {
        PullError::Image {
            image: self.whole.clone(),
            used_as: self.used_as,
            source,
        }
    }

    fn cache_error(&self, source: io::Error) -> PullError {
        PullError::Cache {
            path: self.cache_dir.join("images"),
            source,
        }
    }

    fn extract_error(&self, e: ExtractError) -> PullError {
        match e {
            ExtractError::Image(source) => self.image_error(source),
            ExtractError::Io(e) => self.cache_error(e),
        }
    }
}

/// Whether a registry error means the manifest (image or tag) does not exist.
pub fn is_not_found(error: &PullError) -> bool {
    match error {
        PullError::Registry {
            source: OciDistributionError::RegistryError { envelope, .. },
            ..
        } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
            )
        }),
        PullError::Registry {
            source: OciDistributionError::ImageManifestNotFoundError(_),
            ..
        } => true,
        _ => false,
    }
}

/// A client for one transport. ferrovirt's TLS is rustls with ring: installed as the process
/// default here if no default is set yet.
fn client(transport: Transport) -> Result<Client, OciDistributionError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ClientConfig {
        protocol: match transport {
            Transport::Https => ClientProtocol::Https,
            Transport::PlainHttp => ClientProtocol::Http,
        },
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(120)),
        ..ClientConfig::default()
    };
    Client::try_from(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_like_kubernetes() {
        assert_eq!(PullPolicy::default_for("quay.io/x/y"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::default_for("quay.io/x/y:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::default_for("quay.io/x/y:v1"),
            PullPolicy::IfNotPresent
        );
        let digest = format!("quay.io/x/y@sha256:{}", "a".repeat(64));
        assert_eq!(PullPolicy::default_for(&digest), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::parse(Some("Never"), "x"), Ok(PullPolicy::Never));
        assert_eq!(PullPolicy::parse(None, "x:1"), Ok(PullPolicy::IfNotPresent));
        assert!(PullPolicy::parse(Some("Sometimes"), "x")
            .unwrap_err()
            .contains("Sometimes"));
    }

    #[tokio::test]
    async fn never_without_cache_does_not_touch_the_network() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on this registry; Never must not try.
        let options = PullOptions {
            policy: PullPolicy::Never,
            ..PullOptions::default()
        };
        let err = pull(dir.path(), "127.0.0.1:1/x/y:v1", &options)
            .await
            .unwrap_err();
        assert!(matches!(err, PullError::NotPresent { .. }), "{err}");
        assert!(err.to_string().contains("Never"), "{err}");
        let err = pull(dir.path(), "Not A Reference", &options)
            .await
            .unwrap_err();
        assert!(matches!(err, PullError::InvalidReference { .. }), "{err}");
        assert!(list_cached(dir.path()).unwrap().is_empty());
    }
}
