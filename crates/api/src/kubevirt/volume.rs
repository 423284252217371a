//! `spec.volumes` and `spec.networks`: what backs the guest's disks and interfaces.

use k8s_openapi::api::core::v1::DownwardAPIVolumeFile;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

use super::{Empty, LocalObjectReference};

/// A named volume; exactly one source must be set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    /// Volume name (DNS label, unique); disks refer to it.
    pub name: String,
    /// An OCI image holding one disk image under `/disk/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_disk: Option<ContainerDiskSource>,
    /// cloud-init NoCloud data, attached as a small disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_init_no_cloud: Option<CloudInitSource>,
    /// cloud-init ConfigDrive data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_init_config_drive: Option<CloudInitSource>,
    /// A sparse scratch disk living as long as the VMI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_disk: Option<EmptyDiskSource>,
    /// A disk image file on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_disk: Option<HostDisk>,
    /// A PersistentVolumeClaim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// A CDI DataVolume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeSource>,
    /// A copy-on-write layer over a PVC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<EphemeralVolumeSource>,
    /// A ConfigMap as a disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolumeSource>,
    /// A Secret as a disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
    /// A ServiceAccount token as a disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountVolumeSource>,
    /// Downward API data as a disk.
    #[serde(rename = "downwardAPI", skip_serializing_if = "Option::is_none")]
    pub downward_api: Option<DownwardApiVolumeSource>,
    /// Host and guest metrics as a disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downward_metrics: Option<Empty>,
    /// A Windows sysprep answer file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysprep: Option<SysprepSource>,
    /// A PVC receiving memory dumps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_dump: Option<MemoryDumpVolumeSource>,
}

impl Volume {
    /// The JSON names of the sources set on this volume, in field order.
    pub fn source_kinds(&self) -> Vec<&'static str> {
        let candidates: [(&'static str, bool); 15] = [
            ("containerDisk", self.container_disk.is_some()),
            ("cloudInitNoCloud", self.cloud_init_no_cloud.is_some()),
            (
                "cloudInitConfigDrive",
                self.cloud_init_config_drive.is_some(),
            ),
            ("emptyDisk", self.empty_disk.is_some()),
            ("hostDisk", self.host_disk.is_some()),
            (
                "persistentVolumeClaim",
                self.persistent_volume_claim.is_some(),
            ),
            ("dataVolume", self.data_volume.is_some()),
            ("ephemeral", self.ephemeral.is_some()),
            ("configMap", self.config_map.is_some()),
            ("secret", self.secret.is_some()),
            ("serviceAccount", self.service_account.is_some()),
            ("downwardAPI", self.downward_api.is_some()),
            ("downwardMetrics", self.downward_metrics.is_some()),
            ("sysprep", self.sysprep.is_some()),
            ("memoryDump", self.memory_dump.is_some()),
        ];
        candidates
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| name)
            .collect()
    }
}

/// An OCI image holding a disk image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDiskSource {
    /// Image reference.
    pub image: String,
    /// Registry pull secret name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Path of the disk file inside the image (defaults to the single file under `/disk/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `Always`, `Never` or `IfNotPresent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

/// cloud-init user and network data (NoCloud or ConfigDrive).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudInitSource {
    /// Secret holding the user data.
    #[serde(rename = "secretRef", skip_serializing_if = "Option::is_none")]
    pub user_data_secret_ref: Option<LocalObjectReference>,
    /// User data, base64-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data_base64: Option<String>,
    /// User data inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Secret holding the network data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_data_secret_ref: Option<LocalObjectReference>,
    /// Network data, base64-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_data_base64: Option<String>,
    /// Network data inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_data: Option<String>,
}

/// A sparse scratch disk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyDiskSource {
    /// Size of the disk (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Quantity>,
}

/// Whether a host disk image must exist or may be created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostDiskType {
    /// The image must exist at `path`.
    #[default]
    Disk,
    /// The image is created at `path` with `capacity` if it does not exist.
    DiskOrCreate,
}

/// A disk image file on the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostDisk {
    /// Absolute path of the image on the host.
    pub path: String,
    /// `Disk` or `DiskOrCreate`.
    #[serde(rename = "type")]
    pub type_: HostDiskType,
    /// Size of a created image (required with `DiskOrCreate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Quantity>,
    /// Whether the path is shared between nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
}

/// A PersistentVolumeClaim volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeClaimVolumeSource {
    /// Claim name.
    pub claim_name: String,
    /// Attach read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Whether the volume can be hot(un)plugged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotpluggable: Option<bool>,
}

/// A plain PVC reference (inside `ephemeral`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimReference {
    /// Claim name.
    pub claim_name: String,
    /// Attach read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A CDI DataVolume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataVolumeSource {
    /// DataVolume (and PVC) name.
    pub name: String,
    /// Whether the volume can be hot(un)plugged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotpluggable: Option<bool>,
}

/// A copy-on-write layer over a PVC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EphemeralVolumeSource {
    /// The PVC underneath.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimReference>,
}

/// A ConfigMap as a disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapVolumeSource {
    /// ConfigMap name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the ConfigMap may be missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Volume label of the disk, e.g. `cidata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_label: Option<String>,
}

/// A Secret as a disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretVolumeSource {
    /// Secret name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Whether the Secret may be missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Volume label of the disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_label: Option<String>,
}

/// A ServiceAccount as a disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountVolumeSource {
    /// ServiceAccount name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// Downward API data as a disk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DownwardApiVolumeSource {
    /// Files to create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<DownwardAPIVolumeFile>>,
    /// Volume label of the disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_label: Option<String>,
}

/// A Windows sysprep answer file from a Secret or ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SysprepSource {
    /// Secret holding `autounattend.xml`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<LocalObjectReference>,
    /// ConfigMap holding `autounattend.xml`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map: Option<LocalObjectReference>,
}

/// A PVC receiving memory dumps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryDumpVolumeSource {
    /// Claim name.
    pub claim_name: String,
    /// Attach read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Whether the volume can be hot(un)plugged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotpluggable: Option<bool>,
}

/// A network the guest's interfaces connect to; exactly one source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// Network name (DNS label, unique); an interface of the same name connects to it.
    pub name: String,
    /// The pod network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodNetwork>,
    /// A Multus secondary network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multus: Option<MultusNetwork>,
}

/// The pod network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodNetwork {
    /// IPv4 CIDR of the guest side of masquerade (default `10.0.2.0/24`).
    #[serde(rename = "vmNetworkCIDR", skip_serializing_if = "Option::is_none")]
    pub vm_network_cidr: Option<String>,
    /// IPv6 CIDR of the guest side of masquerade (default `fd10:0:2::/120`).
    #[serde(rename = "vmIPv6NetworkCIDR", skip_serializing_if = "Option::is_none")]
    pub vm_ipv6_network_cidr: Option<String>,
}

/// A Multus network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MultusNetwork {
    /// NetworkAttachmentDefinition, `name` or `namespace/name`.
    pub network_name: String,
    /// Make it the pod's default network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
}
