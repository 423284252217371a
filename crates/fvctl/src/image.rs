//! `fvctl image push`: a disk image wrapped as a KubeVirt containerDisk and pushed with oci-client;
//! `fvctl image ls`: the containerDisks the nodes have cached (each Node's `status.images`).
//!
//! ```text
//!   disk.qcow2 [vmlinuz initrd] ─▶ layer.tar (disk/<file> 0440 107:107, boot/<kernel|initrd>)  sha256 while written
//!        ─▶ blob upload (skipped if the registry has it; progress bar) ─▶ config blob ─▶ manifest ─▶ REF@digest
//! ```
//!
//! The layer is an uncompressed tar (`application/vnd.oci.image.layer.v1.tar`): disk images are
//! mostly compressed or sparse already, and the node unpacks it without a gzip pass.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{self, OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::ListQuery;
use crate::cli::{ImageLsArgs, ImagePushArgs};
use crate::errors::{Error, Result};
use crate::output::{self, Format, Table};
use crate::resources;
use crate::Ctx;

/// KubeVirt's containerDisk files belong to qemu (107:107) and are read-only.
const DISK_UID: u64 = 107;

/// One file to put into the layer: where it comes from and its path in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub source: PathBuf,
    pub path: String,
}

/// The disk file of `source`: the file itself, or the one disk image in a folder.
pub fn disk_file(source: &Path) -> Result<PathBuf> {
    if source.is_file() {
        return Ok(source.to_path_buf());
    }
    if !source.is_dir() {
        return Err(Error::Usage(format!(
            "{} is neither a disk image file nor a folder",
            source.display()
        )));
    }
    let mut disks: Vec<PathBuf> = std::fs::read_dir(source)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", source.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("img" | "qcow2" | "raw")
                )
        })
        .collect();
    disks.sort();
    match disks.len() {
        1 => Ok(disks.remove(0)),
        0 => Err(Error::Usage(format!(
            "{} holds no .img, .qcow2 or .raw file",
            source.display()
        ))),
        _ => Err(Error::Usage(format!(
            "{} holds several disk images ({}); name the file to push",
            source.display(),
            disks
                .iter()
                .filter_map(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The files of the layer: the disk under `disk/`, kernel and initrd under `boot/`.
pub fn entries(disk: &Path, kernel: Option<&Path>, initrd: Option<&Path>) -> Result<Vec<Entry>> {
    let name = |p: &Path| -> Result<String> {
        p.file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .ok_or_else(|| Error::Usage(format!("{} has no usable file name", p.display())))
    };
    let mut out = vec![Entry {
        source: disk.to_path_buf(),
        path: format!("disk/{}", name(disk)?),
    }];
    for (file, what) in [(kernel, "kernel"), (initrd, "initrd")] {
        if let Some(f) = file {
            if !f.is_file() {
                return Err(Error::Usage(format!(
                    "--{what} {}: no such file",
                    f.display()
                )));
            }
            out.push(Entry {
                source: f.to_path_buf(),
                path: format!("boot/{}", name(f)?),
            });
        }
    }
    Ok(out)
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that reports progress.
struct Progress<R, F> {
    inner: R,
    on_read: F,
}

impl<R: Read, F: FnMut(u64)> Read for Progress<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(n as u64);
        Ok(n)
    }
}

/// Writes the layer tar of `entries` to `out`; returns its `sha256:` digest and size.
pub fn write_layer(
    out: impl Write,
    entries: &[Entry],
    mut on_read: impl FnMut(u64),
) -> io::Result<(String, u64)> {
    let mut hashing = Hashing {
        inner: out,
        hash: Sha256::new(),
        written: 0,
    };
    {
        let mut tar = tar::Builder::new(&mut hashing);
        let mut dirs: Vec<&str> = Vec::new();
        for e in entries {
            let dir = e.path.split_once('/').map(|(d, _)| d).unwrap_or("");
            if !dir.is_empty() && !dirs.contains(&dir) {
                dirs.push(dir);
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o555);
                h.set_uid(DISK_UID);
                h.set_gid(DISK_UID);
                h.set_size(0);
                h.set_mtime(0);
                tar.append_data(&mut h, format!("{dir}/"), io::empty())?;
            }
            let file = File::open(&e.source)?;
            let size = file.metadata()?.len();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o440);
            h.set_uid(DISK_UID);
            h.set_gid(DISK_UID);
            h.set_size(size);
            h.set_mtime(0);
            tar.append_data(
                &mut h,
                &e.path,
                Progress {
                    inner: file,
                    on_read: &mut on_read,
                },
            )?;
        }
        tar.finish()?;
    }
    hashing.flush()?;
    let digest = format!("sha256:{}", hex(&hashing.hash.finalize()));
    Ok((digest, hashing.written))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a registry host is on loopback (spoken to over plain HTTP).
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(registry)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A byte-count progress bar on a terminal (stderr), nothing otherwise.
fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{msg:14} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

fn registry_error(what: &str, reference: &Reference, e: impl std::fmt::Display) -> Error {
    Error::Failed(format!("{what} {reference}: {e}"))
}

/// `fvctl image push`.
pub async fn push(args: &ImagePushArgs) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reference: Reference = args.reference.parse().map_err(|e| {
        Error::Usage(format!(
            "{:?} is not an image reference (registry/repository:tag): {e}",
            args.reference
        ))
    })?;
    let disk = disk_file(&args.source)?;
    let files = entries(&disk, args.kernel.as_deref(), args.initrd.as_deref())?;
    let total: u64 = files
        .iter()
        .map(|e| std::fs::metadata(&e.source).map(|m| m.len()).unwrap_or(0))
        .sum();

    // 1. The layer, hashed as it is written.
    let layer_file = tempfile::Builder::new()
        .prefix("fvctl-layer-")
        .suffix(".tar")
        .tempfile()
        .map_err(|e| Error::io("cannot create a temporary file for the layer", e))?;
    eprintln!(
        "Packing {} ({}) as a containerDisk layer",
        disk.display(),
        human_bytes(total)
    );
    let pack = bar(total, "packing");
    let (digest, size) = {
        let out = io::BufWriter::with_capacity(1 << 20, layer_file.as_file());
        write_layer(out, &files, |n| pack.inc(n))
            .map_err(|e| Error::io("cannot write the layer", e))?
    };
    pack.finish_and_clear();

    // 2. The registry.
    let registry = reference.resolve_registry().to_string();
    let protocol = if args.insecure || is_loopback_registry(&registry) {
        ClientProtocol::HttpsExcept(vec![registry.clone()])
    } else {
        ClientProtocol::Https
    };
    let client = oci_client::Client::new(ClientConfig {
        protocol,
        ..Default::default()
    });
    let auth = match &args.username {
        Some(user) => RegistryAuth::Basic(
            user.clone(),
            std::env::var("FVCTL_REGISTRY_PASSWORD").unwrap_or_default(),
        ),
        None => RegistryAuth::Anonymous,
    };
    client.store_auth_if_needed(&registry, &auth).await;

    let exists = client
        .blob_exists(&reference, &digest)
        .await
        .map_err(|e| registry_error("cannot reach the registry for", &reference, e))?;
    if exists {
        eprintln!("Layer {} is already in the registry", short(&digest));
    } else {
        eprintln!("Uploading layer {} ({})", short(&digest), human_bytes(size));
        let upload = bar(size, "uploading");
        let file = std::fs::File::open(layer_file.path())
            .map_err(|e| Error::io("cannot read the layer back", e))?;
        let progress = upload.clone();
        let chunks = futures::stream::unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 4 << 20];
            match f.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(oci_client::errors::OciDistributionError::IoError(e)), f)),
            }
        })
        .inspect(move |chunk| {
            if let Ok(c) = chunk {
                progress.inc(c.len() as u64);
            }
        });
        client
            .push_blob_stream(&reference, chunks, &digest, Some(size))
            .await
            .map_err(|e| registry_error("cannot upload the layer of", &reference, e))?;
        upload.finish_and_clear();
    }

    // 3. Config and manifest.
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest]},
    }))
    .map_err(|e| Error::Failed(format!("cannot encode the image config: {e}")))?;
    let config_digest = format!("sha256:{}", hex(&Sha256::digest(&config)));
    let config_size = config.len() as i64;
    client
        .push_blob(&reference, config, &config_digest)
        .await
        .map_err(|e| registry_error("cannot upload the config of", &reference, e))?;
    let image_manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(manifest::OCI_IMAGE_MEDIA_TYPE.to_string()),
        config: OciDescriptor {
            media_type: manifest::IMAGE_CONFIG_MEDIA_TYPE.to_string(),
            digest: config_digest,
            size: config_size,
            ..Default::default()
        },
        layers: vec![OciDescriptor {
            media_type: manifest::IMAGE_LAYER_MEDIA_TYPE.to_string(),
            digest: digest.clone(),
            size: size as i64,
            ..Default::default()
        }],
        ..Default::default()
    };
    client
        .push_manifest(&reference, &OciManifest::Image(image_manifest))
        .await
        .map_err(|e| registry_error("cannot push the manifest of", &reference, e))?;
    let manifest_digest = client
        .fetch_manifest_digest(&reference, &auth)
        .await
        .map_err(|e| registry_error("cannot read back the digest of", &reference, e))?;
    println!(
        "{}@{manifest_digest}",
        args.reference.split('@').next().unwrap_or(&args.reference)
    );
    Ok(())
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..12.min(hex.len())]
}

/// `1.5 GiB`, `312.0 MiB`, `12 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// One cached image on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub node: String,
    pub names: Vec<String>,
    pub size: Option<u64>,
}

/// The cached images of Nodes (their `status.images`).
pub fn cached_images(nodes: &[Value]) -> Vec<Cached> {
    let mut out = Vec::new();
    for n in nodes {
        let node = n
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        for image in n
            .pointer("/status/images")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let names: Vec<String> = image
                .get("names")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            let size = image.get("sizeBytes").and_then(Value::as_u64);
            out.push(Cached {
                node: node.clone(),
                names,
                size,
            });
        }
    }
    out
}

/// The table of `image ls`: NODE IMAGE DIGEST SIZE (a name with `@` is the digest).
pub fn images_table(cached: &[Cached]) -> Table {
    let mut rows = Vec::new();
    for c in cached {
        let digest = c
            .names
            .iter()
            .find_map(|n| n.split_once('@').map(|(_, d)| d.to_string()))
            .unwrap_or_default();
        let tags: Vec<&String> = c.names.iter().filter(|n| !n.contains('@')).collect();
        let image = if tags.is_empty() {
            c.names
                .first()
                .map(|n| n.split('@').next().unwrap_or("").to_string())
                .unwrap_or_default()
        } else {
            tags.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        rows.push(vec![
            c.node.clone(),
            image,
            short(&digest).to_string(),
            c.size
                .map(human_bytes)
                .unwrap_or_else(|| "<unknown>".into()),
        ]);
    }
    Table {
        headers: ["NODE", "IMAGE", "DIGEST", "SIZE"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rows,
    }
}

/// `fvctl image ls`.
pub async fn ls(ctx: &Ctx, args: &ImageLsArgs) -> Result<()> {
    let nodes = ctx
        .rest
        .list(
            resources::find("nodes").expect("known kind"),
            None,
            &ListQuery::default(),
        )
        .await?;
    let items = nodes
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let cached = cached_images(&items);
    match args.output {
        Format::Json | Format::Yaml => {
            let v: Vec<Value> = cached
                .iter()
                .map(|c| json!({"node": c.node, "names": c.names, "sizeBytes": c.size}))
                .collect();
            let v = Value::Array(v);
            print!(
                "{}",
                if args.output == Format::Json {
                    output::to_json(&v)
                } else {
                    output::to_yaml(&v)
                }
            );
        }
        _ => {
            if cached.is_empty() {
                eprintln!("No images cached on any node ({} nodes)", items.len());
            } else {
                print!("{}", images_table(&cached).render(true));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_has_the_disk_under_disk_and_boot_files_under_boot() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("guest.qcow2");
        std::fs::write(&disk, b"QFI\xfbdisk-bytes").unwrap();
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, b"kernel").unwrap();
        let files = entries(&disk, Some(&kernel), None).unwrap();
        let mut out = Vec::new();
        let mut seen = 0;
        let (digest, size) = write_layer(&mut out, &files, |n| seen += n).unwrap();
        assert_eq!(seen, 14 + 6);
        assert_eq!(size, out.len() as u64);
        assert_eq!(digest, format!("sha256:{}", hex(&Sha256::digest(&out))));
        let mut archive = tar::Archive::new(&out[..]);
        let listed: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                    e.header().uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("disk/".to_string(), 0o555, 107),
                ("disk/guest.qcow2".to_string(), 0o440, 107),
                ("boot/".to_string(), 0o555, 107),
                ("boot/vmlinuz".to_string(), 0o440, 107)
            ]
        );
    }

    #[test]
    fn folders_hold_exactly_one_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert!(disk_file(dir.path()).is_err());
        std::fs::write(dir.path().join("a.qcow2"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert_eq!(disk_file(dir.path()).unwrap(), dir.path().join("a.qcow2"));
        std::fs::write(dir.path().join("b.img"), b"x").unwrap();
        let e = disk_file(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a.qcow2, b.img"), "{e}");
        assert!(disk_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn loopback_registries_use_http() {
        for r in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.0.0.2",
        ] {
            assert!(is_loopback_registry(r), "{r}");
        }
        for r in [
            "registry.example:5000",
            "10.0.0.1:5000",
            "docker.io",
            "index.docker.io",
        ] {
            assert!(!is_loopback_registry(r), "{r}");
        }
    }

    #[test]
    fn node_images_are_listed() {
        let nodes = [
            json!({"metadata": {"name": "node1"}, "status": {"images": [
                {"names": ["127.0.0.1:5000/guest@sha256:0123456789abcdef0123", "127.0.0.1:5000/guest:latest"], "sizeBytes": 10661888}
            ]}}),
            json!({"metadata": {"name": "node2"}, "status": {}}),
        ];
        let cached = cached_images(&nodes);
        assert_eq!(cached.len(), 1);
        assert_eq!(
            images_table(&cached).render(true),
            "NODE    IMAGE                         DIGEST         SIZE\nnode1   127.0.0.1:5000/guest:latest   0123456789ab   10.2 MiB\n"
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10661888), "10.2 MiB");
    }
}
