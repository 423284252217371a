//! cloud-init NoCloud: `user-data`, `meta-data` and `network-config` on a small FAT disk labelled
//! `CIDATA`, which cloud-init (and ferrovirt's test guest) finds by label.
//!
//! [`nocloud_data`] resolves a `cloudInitNoCloud` volume (inline, base64 or Secret, with KubeVirt's
//! Secret keys `userdata`/`userData` and `networkdata`/`networkData`) into file contents without
//! I/O; [`write_nocloud_image`] writes the FAT image. The label is in both places `mkfs.vfat -n`
//! puts it: the boot sector and the volume-label entry of the root folder, which is the one
//! libblkid (`blkid`, udev's `/dev/disk/by-label`) and busybox's `findfs` report.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ferrovirt_api::kubevirt::CloudInitSource;
use sha2::{Digest as _, Sha256};

use crate::{Secrets, VmFileError};

/// The FAT volume label of a NoCloud disk (FAT labels are upper case; cloud-init accepts both).
pub const NOCLOUD_LABEL: &str = "CIDATA";

/// The smallest image written; larger data gets a larger image.
const MIN_IMAGE_BYTES: u64 = 2 << 20;
/// The largest image written (Kubernetes Secrets hold at most 1 MiB each).
const MAX_IMAGE_BYTES: u64 = 16 << 20;

/// The files of a NoCloud disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoCloudData {
    /// `user-data` (empty if the VMI gave only network data).
    pub user_data: Vec<u8>,
    /// `meta-data`: instance id and hostname.
    pub meta_data: Vec<u8>,
    /// `network-config`, if given.
    pub network_config: Option<Vec<u8>>,
}

/// Why a NoCloud disk could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    /// Base64 data that does not decode.
    #[error("cloudInitNoCloud.{field} is not valid base64: {reason}")]
    Base64 {
        /// `userDataBase64` or `networkDataBase64`.
        field: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// A Secret reference without a name.
    #[error("cloudInitNoCloud.{field}.name is empty")]
    UnnamedSecret {
        /// `secretRef` or `networkDataSecretRef`.
        field: &'static str,
    },
    /// A referenced Secret that the caller did not resolve (it does not exist).
    #[error("Secret {secret:?} named in cloudInitNoCloud.{field} was not found")]
    MissingSecret {
        /// `secretRef` or `networkDataSecretRef`.
        field: &'static str,
        /// The Secret's name.
        secret: String,
    },
    /// A Secret without the expected keys.
    #[error("Secret {secret:?} named in cloudInitNoCloud.{field} has none of the keys {keys}")]
    MissingKey {
        /// `secretRef` or `networkDataSecretRef`.
        field: &'static str,
        /// The Secret's name.
        secret: String,
        /// The keys looked for.
        keys: &'static str,
    },
    /// More data than a NoCloud disk holds.
    #[error("cloud-init data is {size} bytes, more than a NoCloud disk of {max} bytes holds")]
    TooLarge {
        /// Bytes of data.
        size: u64,
        /// The image size limit.
        max: u64,
    },
    /// The image's place in the VM folder.
    #[error(transparent)]
    File(#[from] VmFileError),
    /// Writing the image failed.
    #[error("cannot write the cloud-init disk {path}: {source}")]
    Io {
        /// The image.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// `meta-data` as KubeVirt writes it: `instance-id` and `local-hostname`, YAML.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        yaml_scalar(instance_id),
        yaml_scalar(hostname)
    )
}

/// A YAML scalar: plain when obviously safe, else double-quoted (JSON strings are valid YAML).
fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !s.starts_with(['-', '.']);
    if plain {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn decode(field: &'static str, data: &str) -> Result<Vec<u8>, CloudInitError> {
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| CloudInitError::Base64 {
            field,
            reason: e.to_string(),
        })
}

/// The first of `keys` present in the Secret named by `reference` (in `field`).
fn secret_value<'s>(
    secrets: &'s Secrets,
    field: &'static str,
    name: Option<&str>,
    keys: &[&str],
) -> Result<Option<&'s Vec<u8>>, CloudInitError> {
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or(CloudInitError::UnnamedSecret { field })?;
    let data = secrets
        .get(name)
        .ok_or_else(|| CloudInitError::MissingSecret {
            field,
            secret: name.to_string(),
        })?;
    Ok(keys.iter().find_map(|k| data.get(*k)))
}

const USER_KEYS: [&str; 2] = ["userdata", "userData"];
const NETWORK_KEYS: [&str; 2] = ["networkdata", "networkData"];

/// The files of the NoCloud disk for `source`, with `meta-data` for this instance. Secrets named
/// by the source must be in `secrets` (missing ones are an error, as a missing Secret keeps a pod
/// from starting).
pub fn nocloud_data(
    source: &CloudInitSource,
    instance_id: &str,
    hostname: &str,
    secrets: &Secrets,
) -> Result<NoCloudData, CloudInitError> {
    let mut user_data = None;
    let mut secret_network = None;
    if let Some(data) = non_empty(&source.user_data) {
        user_data = Some(data.as_bytes().to_vec());
    } else if let Some(data) = non_empty(&source.user_data_base64) {
        user_data = Some(decode("userDataBase64", data)?);
    } else if let Some(reference) = &source.user_data_secret_ref {
        // Like KubeVirt: the user-data Secret may carry the network data too.
        let name = reference.name.as_deref();
        let user = secret_value(secrets, "secretRef", name, &USER_KEYS)?;
        let network = secret_value(secrets, "secretRef", name, &NETWORK_KEYS)?;
        if user.is_none() && network.is_none() {
            return Err(CloudInitError::MissingKey {
                field: "secretRef",
                secret: name.unwrap_or_default().to_string(),
                keys: "userdata, userData, networkdata, networkData",
            });
        }
        user_data = user.cloned();
        secret_network = network.cloned();
    }

    let network_config = if let Some(reference) = &source.network_data_secret_ref {
        let name = reference.name.as_deref();
        let value = secret_value(secrets, "networkDataSecretRef", name, &NETWORK_KEYS)?;
        Some(value.cloned().ok_or_else(|| CloudInitError::MissingKey {
            field: "networkDataSecretRef",
            secret: name.unwrap_or_default().to_string(),
            keys: "networkdata, networkData",
        })?)
    } else if let Some(data) = non_empty(&source.network_data) {
        Some(data.as_bytes().to_vec())
    } else if let Some(data) = non_empty(&source.network_data_base64) {
        Some(decode("networkDataBase64", data)?)
    } else {
        secret_network
    };

    Ok(NoCloudData {
        user_data: user_data.unwrap_or_default(),
        meta_data: meta_data(instance_id, hostname).into_bytes(),
        network_config,
    })
}

/// The image size for `data_bytes` of file content: at least 2 MiB, room to spare.
fn image_size(data_bytes: u64) -> Result<u64, CloudInitError> {
    const MIB: u64 = 1 << 20;
    let wanted = (data_bytes + data_bytes / 8 + MIB).div_ceil(MIB) * MIB;
    let size = wanted.max(MIN_IMAGE_BYTES);
    if size > MAX_IMAGE_BYTES {
        return Err(CloudInitError::TooLarge {
            size: data_bytes,
            max: MAX_IMAGE_BYTES,
        });
    }
    Ok(size)
}

/// Creates `<vm_dir>/<name>.img`, the NoCloud FAT image holding `data`.
pub fn create_nocloud_disk(
    data: &NoCloudData,
    vm_dir: &Path,
    name: &str,
) -> Result<PathBuf, CloudInitError> {
    let path = crate::new_vm_file(vm_dir, name, "img")?;
    write_nocloud_image(data, &path)?;
    Ok(path)
}

/// Writes the NoCloud FAT image to `path`, which must not exist; nothing is left there on failure.
pub fn write_nocloud_image(data: &NoCloudData, path: &Path) -> Result<(), CloudInitError> {
    let total = data.user_data.len()
        + data.meta_data.len()
        + data.network_config.as_ref().map_or(0, Vec::len);
    let size = image_size(total as u64)?;
    let io_error = |source| CloudInitError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::create_new(path).map_err(io_error)?;
    let written = write_fat(&mut file, size, data).and_then(|()| file.sync_all());
    if let Err(source) = written {
        drop(file);
        crate::remove_partial(path);
        return Err(io_error(source));
    }
    Ok(())
}

fn write_fat(file: &mut File, size: u64, data: &NoCloudData) -> io::Result<()> {
    let mut label = [b' '; 11];
    label[..NOCLOUD_LABEL.len()].copy_from_slice(NOCLOUD_LABEL.as_bytes());
    // A volume id derived from the content, so the same data gives the same image id.
    let digest = Sha256::new()
        .chain_update(&data.meta_data)
        .chain_update(&data.user_data)
        .finalize();
    let volume_id = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);

    file.set_len(size)?;
    fatfs::format_volume(
        &mut *file,
        fatfs::FormatVolumeOptions::new()
            .volume_label(label)
            .volume_id(volume_id),
    )?;

    let fs = fatfs::FileSystem::new(&mut *file, fatfs::FsOptions::new())?;
    {
        let root = fs.root_dir();
        let mut files: Vec<(&str, &[u8])> = vec![
            ("meta-data", &data.meta_data),
            ("user-data", &data.user_data),
        ];
        if let Some(network) = &data.network_config {
            files.push(("network-config", network));
        }
        for (name, content) in files {
            let mut f = root.create_file(name)?;
            f.truncate()?;
            f.write_all(content)?;
            f.flush()?;
        }
    }
    fs.unmount()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretData;
    use ferrovirt_api::kubevirt::LocalObjectReference;

    fn secret_ref(name: &str) -> Option<LocalObjectReference> {
        Some(LocalObjectReference {
            name: Some(name.to_string()),
        })
    }

    fn secrets(name: &str, pairs: &[(&str, &str)]) -> Secrets {
        let data: SecretData = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        Secrets::from([(name.to_string(), data)])
    }

    #[test]
    fn meta_data_names_the_instance() {
        assert_eq!(
            meta_data("6a1f-22", "vm1"),
            "instance-id: 6a1f-22\nlocal-hostname: vm1\n"
        );
        assert_eq!(
            meta_data("a: b", ""),
            "instance-id: \"a: b\"\nlocal-hostname: \"\"\n"
        );
    }

    #[test]
    fn inline_and_base64_forms() {
        let inline = CloudInitSource {
            user_data: Some("#!/bin/sh\necho hi\n".into()),
            network_data_base64: Some("dmVyc2lvbjogMgo=".into()),
            ..Default::default()
        };
        let d = nocloud_data(&inline, "uid-1", "vm1", &Secrets::new()).unwrap();
        assert_eq!(d.user_data, b"#!/bin/sh\necho hi\n");
        assert_eq!(d.network_config.as_deref(), Some(&b"version: 2\n"[..]));
        assert_eq!(d.meta_data, b"instance-id: uid-1\nlocal-hostname: vm1\n");

        let b64 = CloudInitSource {
            user_data_base64: Some("I2Nsb3VkLWNv\nbmZpZwo=".into()),
            ..Default::default()
        };
        let d = nocloud_data(&b64, "u", "h", &Secrets::new()).unwrap();
        assert_eq!(d.user_data, b"#cloud-config\n");
        assert_eq!(d.network_config, None);

        let bad = CloudInitSource {
            user_data_base64: Some("***".into()),
            ..Default::default()
        };
        let err = nocloud_data(&bad, "u", "h", &Secrets::new()).unwrap_err();
        assert!(err.to_string().contains("userDataBase64"), "{err}");
    }

    #[test]
    fn secrets_use_kubevirts_keys() {
        let source = CloudInitSource {
            user_data_secret_ref: secret_ref("ud"),
            ..Default::default()
        };
        let s = secrets(
            "ud",
            &[("userData", "#cloud-config\n"), ("networkdata", "net")],
        );
        let d = nocloud_data(&source, "u", "h", &s).unwrap();
        assert_eq!(d.user_data, b"#cloud-config\n");
        assert_eq!(
            d.network_config.as_deref(),
            Some(&b"net"[..]),
            "network data from the user-data Secret"
        );

        // The network Secret wins over the user-data Secret's network data.
        let both = CloudInitSource {
            user_data_secret_ref: secret_ref("ud"),
            network_data_secret_ref: secret_ref("nd"),
            ..Default::default()
        };
        let mut s2 = s.clone();
        s2.extend(secrets("nd", &[("networkData", "net2")]));
        let d = nocloud_data(&both, "u", "h", &s2).unwrap();
        assert_eq!(d.network_config.as_deref(), Some(&b"net2"[..]));

        let err = nocloud_data(&both, "u", "h", &s).unwrap_err();
        assert!(matches!(err, CloudInitError::MissingSecret { .. }), "{err}");
        assert!(err.to_string().contains("\"nd\""), "{err}");

        let empty = secrets("ud", &[("other", "x")]);
        let err = nocloud_data(&source, "u", "h", &empty).unwrap_err();
        assert!(err.to_string().contains("userdata, userData"), "{err}");

        let unnamed = CloudInitSource {
            user_data_secret_ref: Some(LocalObjectReference { name: None }),
            ..Default::default()
        };
        assert!(matches!(
            nocloud_data(&unnamed, "u", "h", &s).unwrap_err(),
            CloudInitError::UnnamedSecret { .. }
        ));
    }

    #[test]
    fn image_size_grows_with_data_and_is_capped() {
        assert_eq!(image_size(0).unwrap(), 2 << 20);
        assert_eq!(image_size(100 << 10).unwrap(), 2 << 20);
        assert_eq!(image_size(3 << 20).unwrap(), 5 << 20);
        assert!(matches!(
            image_size(15 << 20),
            Err(CloudInitError::TooLarge { .. })
        ));
    }
}
