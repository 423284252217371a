//! Preparing all disks of a VMI: a pure plan, then the steps, undone as a whole if one fails.
//!
//! ```text
//!   plan_disks(spec, ctx)       pure: each disk (in spec order) matched with its volume, bus,
//!        │                      read-only and CD-ROM defaults applied, sources checked, pull
//!        │                      policies, pull Secrets and cloud-init data resolved
//!        ▼
//!   for each planned disk:      step                      undo entry
//!     containerDisk             pull-image                (none: the cache is the node's)
//!                               create-overlay            remove <vm_dir>/<name>.qcow2
//!     cloudInitNoCloud          write-cloud-init          remove <vm_dir>/<name>.img
//!     emptyDisk                 create-empty-disk         remove <vm_dir>/<name>.qcow2
//!     hostDisk                  prepare-host-disk         remove the image and folders it created
//!     after every step: hooks.after_step(step)  (tests inject failures here)
//!        │
//!   any error (or the future dropped) ─► undo entries run newest first ─► VM folder as before
//! ```

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ferrovirt_api::kubevirt::{HostDisk, VirtualMachineInstanceSpec, Volume};
use tracing::Instrument;

use crate::cloud_init::{self, CloudInitError, NoCloudData};
use crate::container_disk::{
    self, credentials_from_pull_secret, OverlayError, PullError, PullOptions, PullPolicy,
    RegistryCredentials,
};
use crate::empty_disk::{self, EmptyDiskError};
use crate::host_disk::{self, HostDiskError};
use crate::{DiskFormat, Secrets};

/// What the node knows about the VMI whose disks it prepares.
#[derive(Clone, Debug, Default)]
pub struct DiskContext {
    /// The VMI's name (the default hostname in cloud-init's meta-data).
    pub vmi_name: String,
    /// The VMI's UID (cloud-init's instance-id).
    pub vmi_uid: String,
    /// The VM's own folder: overlays, empty disks and the cloud-init disk go here.
    pub vm_dir: PathBuf,
    /// The node's cache folder (containerDisks under `images/`).
    pub cache_dir: PathBuf,
    /// Node setting: registries (`host` or `host:port`) pulled over plain HTTP although not on
    /// loopback.
    pub insecure_registries: Vec<String>,
    /// Node setting: folders hostDisk paths must be under.
    pub allowed_host_disk_dirs: Vec<PathBuf>,
    /// Secrets the volumes name (cloud-init `secretRef`s, `imagePullSecret`s), read by the caller.
    pub secrets: Secrets,
}

/// A disk ready for QEMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedDisk {
    /// The disk's (and its volume's) name.
    pub name: String,
    /// The image file QEMU opens.
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
    /// Attach read-only.
    pub readonly: bool,
    /// `virtio`, `sata`, `scsi` or `usb`.
    pub bus: String,
    /// Boot order, if set.
    pub boot_order: Option<u32>,
    /// Serial number, if set.
    pub serial: Option<String>,
    /// Attach as a CD-ROM.
    pub cdrom: bool,
}

/// A disk as planned: its device settings and where its image comes from.
#[derive(Clone, Debug)]
pub struct PlannedDisk {
    /// The disk's (and its volume's) name.
    pub name: String,
    /// Bus, defaulted (`virtio` for disks, `sata` for CD-ROMs).
    pub bus: String,
    /// Read-only, defaulted (CD-ROMs are read-only unless told otherwise).
    pub readonly: bool,
    /// Attach as a CD-ROM.
    pub cdrom: bool,
    /// Boot order.
    pub boot_order: Option<u32>,
    /// Serial number.
    pub serial: Option<String>,
    /// The image's source.
    pub source: PlannedSource,
}

/// Where a planned disk's image comes from.
#[derive(Clone, Debug)]
pub enum PlannedSource {
    /// Pull the image, then an overlay in the VM folder.
    ContainerDisk {
        /// Image reference.
        image: String,
        /// Policy, path, registry settings and credentials.
        options: PullOptions,
    },
    /// A NoCloud FAT image with these files.
    CloudInitNoCloud(NoCloudData),
    /// An empty qcow2 of this many bytes.
    EmptyDisk {
        /// Virtual size.
        size_bytes: u64,
    },
    /// A file on the host.
    HostDisk(HostDisk),
}

/// A side-effecting step of [`prepare_disks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// A containerDisk was pulled (or found in the cache).
    PullImage,
    /// Its overlay was created.
    CreateOverlay,
    /// The cloud-init disk was written.
    WriteCloudInit,
    /// An empty disk was created.
    CreateEmptyDisk,
    /// A host disk was checked (and created if missing).
    PrepareHostDisk,
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepKind::PullImage => "pull-image",
            StepKind::CreateOverlay => "create-overlay",
            StepKind::WriteCloudInit => "write-cloud-init",
            StepKind::CreateEmptyDisk => "create-empty-disk",
            StepKind::PrepareHostDisk => "prepare-host-disk",
        })
    }
}

/// One step taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// 0 for the first step of this preparation, then 1, 2...
    pub index: usize,
    /// The volume it was for.
    pub volume: String,
    /// What it did.
    pub kind: StepKind,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} ({} of volume {:?})",
            self.index, self.kind, self.volume
        )
    }
}

/// Observes the steps of [`prepare_disks_with`]; tests use it to inject failures.
pub trait PrepareHooks: Sync {
    /// Called after each step took effect. An error stops the preparation: everything done for
    /// this VMI is undone and [`DiskError::Stopped`] is returned.
    fn after_step(&self, step: &Step) -> Result<(), String>;
}

/// Hooks that do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl PrepareHooks for NoHooks {
    fn after_step(&self, _step: &Step) -> Result<(), String> {
        Ok(())
    }
}

/// Why a VMI's disks could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A disk without a volume.
    #[error("disk {disk:?} has no volume of the same name in spec.volumes")]
    MissingVolume {
        /// The disk.
        disk: String,
    },
    /// A disk or volume feature the node does not implement.
    #[error("disk {disk:?}: {what} is not supported by ferrovirt")]
    Unsupported {
        /// The disk.
        disk: String,
        /// The feature.
        what: String,
    },
    /// A volume that cannot be used as written.
    #[error("volume {volume:?}: {reason}")]
    Invalid {
        /// The volume.
        volume: String,
        /// Why.
        reason: String,
    },
    /// The containerDisk could not be pulled.
    #[error("volume {volume:?}: {source}")]
    ContainerDisk {
        /// The volume.
        volume: String,
        /// Why.
        #[source]
        source: Box<PullError>,
    },
    /// Its overlay could not be created.
    #[error("volume {volume:?}: {source}")]
    Overlay {
        /// The volume.
        volume: String,
        /// Why.
        #[source]
        source: OverlayError,
    },
    /// The cloud-init disk could not be made.
    #[error("volume {volume:?}: {source}")]
    CloudInit {
        /// The volume.
        volume: String,
        /// Why.
        #[source]
        source: CloudInitError,
    },
    /// The empty disk could not be made.
    #[error("volume {volume:?}: {source}")]
    EmptyDisk {
        /// The volume.
        volume: String,
        /// Why.
        #[source]
        source: EmptyDiskError,
    },
    /// The host disk cannot be used.
    #[error("volume {volume:?}: {source}")]
    HostDisk {
        /// The volume.
        volume: String,
        /// Why.
        #[source]
        source: HostDiskError,
    },
    /// The VM folder could not be created.
    #[error("VM folder {path}: {source}")]
    VmDir {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A hook stopped the preparation.
    #[error("disk preparation stopped after {step}: {reason}")]
    Stopped {
        /// The step after which it stopped.
        step: Step,
        /// The hook's reason.
        reason: String,
    },
}

/// Plans the disks of `spec` without I/O: one [`PlannedDisk`] per disk, in order.
pub fn plan_disks(
    spec: &VirtualMachineInstanceSpec,
    ctx: &DiskContext,
) -> Result<Vec<PlannedDisk>, DiskError> {
    let hostname = spec
        .hostname
        .as_deref()
        .filter(|h| !h.is_empty())
        .unwrap_or(&ctx.vmi_name);
    spec.domain
        .devices
        .disks()
        .iter()
        .map(|disk| {
            let name = disk.name.clone();
            if disk.lun.is_some() {
                return Err(DiskError::Unsupported {
                    disk: name,
                    what: "a lun target".to_string(),
                });
            }
            let (bus, readonly, cdrom) = match &disk.cdrom {
                Some(cd) => (
                    cd.bus.clone().unwrap_or_else(|| "sata".to_string()),
                    cd.readonly.unwrap_or(true),
                    true,
                ),
                None => {
                    let target = disk.disk.as_ref();
                    (
                        target
                            .and_then(|t| t.bus.clone())
                            .unwrap_or_else(|| "virtio".to_string()),
                        target.and_then(|t| t.readonly).unwrap_or(false),
                        false,
                    )
                }
            };
            let volume = spec
                .volumes()
                .iter()
                .find(|v| v.name == disk.name)
                .ok_or_else(|| DiskError::MissingVolume { disk: name.clone() })?;
            if !crate::is_safe_file_stem(&volume.name) {
                return Err(DiskError::Invalid {
                    volume: volume.name.clone(),
                    reason: "the name must be a DNS label (lower-case letters, digits, '-')"
                        .to_string(),
                });
            }
            let source = plan_source(volume, &ctx.vmi_uid, hostname, ctx)?;
            Ok(PlannedDisk {
                name,
                bus,
                readonly,
                cdrom,
                boot_order: disk.boot_order,
                serial: disk.serial.clone(),
                source,
            })
        })
        .collect()
}

fn plan_source(
    volume: &Volume,
    instance_id: &str,
    hostname: &str,
    ctx: &DiskContext,
) -> Result<PlannedSource, DiskError> {
    let invalid = |reason: String| DiskError::Invalid {
        volume: volume.name.clone(),
        reason,
    };
    let kinds = volume.source_kinds();
    if kinds.len() > 1 {
        return Err(invalid(format!(
            "exactly one source may be set, found {}",
            kinds.join(", ")
        )));
    }
    if let Some(cd) = &volume.container_disk {
        let policy =
            PullPolicy::parse(cd.image_pull_policy.as_deref(), &cd.image).map_err(invalid)?;
        let credentials =
            pull_credentials(&cd.image, cd.image_pull_secret.as_deref(), &ctx.secrets)
                .map_err(invalid)?;
        return Ok(PlannedSource::ContainerDisk {
            image: cd.image.clone(),
            options: PullOptions {
                policy,
                image_path: cd.path.clone(),
                insecure_registries: ctx.insecure_registries.clone(),
                credentials,
            },
        });
    }
    if let Some(ci) = &volume.cloud_init_no_cloud {
        let data = cloud_init::nocloud_data(ci, instance_id, hostname, &ctx.secrets).map_err(
            |source| DiskError::CloudInit {
                volume: volume.name.clone(),
                source,
            },
        )?;
        return Ok(PlannedSource::CloudInitNoCloud(data));
    }
    if let Some(empty) = &volume.empty_disk {
        let size_bytes = empty_disk::capacity_bytes(empty.capacity.as_ref().map(|q| q.0.as_str()))
            .map_err(|source| DiskError::EmptyDisk {
                volume: volume.name.clone(),
                source,
            })?;
        return Ok(PlannedSource::EmptyDisk { size_bytes });
    }
    if let Some(host) = &volume.host_disk {
        return Ok(PlannedSource::HostDisk(host.clone()));
    }
    Err(match kinds.first() {
        Some(kind) => DiskError::Unsupported {
            disk: volume.name.clone(),
            what: format!("volume source {kind}"),
        },
        None => invalid(
            "no source is set; use one of containerDisk, cloudInitNoCloud, emptyDisk, hostDisk"
                .to_string(),
        ),
    })
}

/// The credentials for pulling `image` from the `imagePullSecret` named `secret` (none: anonymous),
/// or why they cannot be had.
pub(crate) fn pull_credentials(
    image: &str,
    secret: Option<&str>,
    secrets: &Secrets,
) -> Result<RegistryCredentials, String> {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Ok(RegistryCredentials::Anonymous);
    };
    let data = secrets
        .get(secret)
        .ok_or_else(|| format!("imagePullSecret {secret:?} was not found"))?;
    let registry = image
        .parse::<oci_client::Reference>()
        .map(|r| r.registry().to_string())
        .unwrap_or_default();
    credentials_from_pull_secret(data, &registry)
        .map_err(|reason| format!("imagePullSecret {secret:?}: {reason}"))
}

/// Prepares every disk of `spec` (see the module docs). On failure nothing made for this VMI
/// remains.
pub async fn prepare_disks(
    spec: &VirtualMachineInstanceSpec,
    ctx: &DiskContext,
) -> Result<Vec<PreparedDisk>, DiskError> {
    prepare_disks_with(spec, ctx, &NoHooks).await
}

/// [`prepare_disks`] with `hooks` called after every step.
pub async fn prepare_disks_with(
    spec: &VirtualMachineInstanceSpec,
    ctx: &DiskContext,
    hooks: &dyn PrepareHooks,
) -> Result<Vec<PreparedDisk>, DiskError> {
    let plan = plan_disks(spec, ctx)?;
    let span = tracing::info_span!("prepare_disks", vmi = %ctx.vmi_name, uid = %ctx.vmi_uid);
    execute(plan, ctx, hooks).instrument(span).await
}

async fn execute(
    plan: Vec<PlannedDisk>,
    ctx: &DiskContext,
    hooks: &dyn PrepareHooks,
) -> Result<Vec<PreparedDisk>, DiskError> {
    let mut undo = UndoLog::default();
    let vm_dir = &ctx.vm_dir;
    match fs::metadata(vm_dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(vm_dir).map_err(|source| DiskError::VmDir {
                path: vm_dir.clone(),
                source,
            })?;
            undo.push(Undo::Dir(vm_dir.clone()));
        }
        Err(source) => {
            return Err(DiskError::VmDir {
                path: vm_dir.clone(),
                source,
            })
        }
    }
    let mut steps = Steps { next: 0, hooks };
    let mut prepared = Vec::with_capacity(plan.len());
    for disk in plan {
        let volume = disk.name.clone();
        let (path, format) = match disk.source {
            PlannedSource::ContainerDisk { image, options } => {
                let cached = container_disk::pull(&ctx.cache_dir, &image, &options)
                    .await
                    .map_err(|source| DiskError::ContainerDisk {
                        volume: volume.clone(),
                        source: Box::new(source),
                    })?;
                steps.after(&volume, StepKind::PullImage)?;
                let path = container_disk::overlay(&cached, vm_dir, &volume)
                    .await
                    .map_err(|source| DiskError::Overlay {
                        volume: volume.clone(),
                        source,
                    })?;
                undo.push(Undo::File(path.clone()));
                steps.after(&volume, StepKind::CreateOverlay)?;
                (path, DiskFormat::Qcow2)
            }
            PlannedSource::CloudInitNoCloud(data) => {
                let path =
                    cloud_init::create_nocloud_disk(&data, vm_dir, &volume).map_err(|source| {
                        DiskError::CloudInit {
                            volume: volume.clone(),
                            source,
                        }
                    })?;
                undo.push(Undo::File(path.clone()));
                steps.after(&volume, StepKind::WriteCloudInit)?;
                (path, DiskFormat::Raw)
            }
            PlannedSource::EmptyDisk { size_bytes } => {
                let path = empty_disk::create_empty_disk(vm_dir, &volume, size_bytes)
                    .await
                    .map_err(|source| DiskError::EmptyDisk {
                        volume: volume.clone(),
                        source,
                    })?;
                undo.push(Undo::File(path.clone()));
                steps.after(&volume, StepKind::CreateEmptyDisk)?;
                (path, DiskFormat::Qcow2)
            }
            PlannedSource::HostDisk(host) => {
                let got = host_disk::prepare_host_disk(&host, &ctx.allowed_host_disk_dirs)
                    .map_err(|source| DiskError::HostDisk {
                        volume: volume.clone(),
                        source,
                    })?;
                undo.push(Undo::HostDisk(got.created));
                steps.after(&volume, StepKind::PrepareHostDisk)?;
                (got.path, DiskFormat::Raw)
            }
        };
        tracing::info!(volume, path = %path.display(), %format, "disk prepared");
        prepared.push(PreparedDisk {
            name: disk.name,
            path,
            format,
            readonly: disk.readonly,
            bus: disk.bus,
            boot_order: disk.boot_order,
            serial: disk.serial,
            cdrom: disk.cdrom,
        });
    }
    undo.commit();
    Ok(prepared)
}

/// Numbers steps and calls the hooks.
struct Steps<'h> {
    next: usize,
    hooks: &'h dyn PrepareHooks,
}

impl Steps<'_> {
    fn after(&mut self, volume: &str, kind: StepKind) -> Result<(), DiskError> {
        let step = Step {
            index: self.next,
            volume: volume.to_string(),
            kind,
        };
        self.next += 1;
        self.hooks
            .after_step(&step)
            .map_err(|reason| DiskError::Stopped { step, reason })
    }
}

/// Something to remove if the preparation does not complete.
#[derive(Debug)]
enum Undo {
    File(PathBuf),
    Dir(PathBuf),
    HostDisk(Vec<PathBuf>),
}

/// Undo entries, run newest first when dropped uncommitted (on error, or if the preparing future
/// is dropped).
#[derive(Debug, Default)]
struct UndoLog {
    entries: Vec<Undo>,
    committed: bool,
}

impl UndoLog {
    fn push(&mut self, undo: Undo) {
        self.entries.push(undo);
    }

    fn commit(&mut self) {
        self.committed = true;
    }
}

impl Drop for UndoLog {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for entry in self.entries.drain(..).rev() {
            tracing::debug!(?entry, "undoing");
            match entry {
                Undo::File(path) => crate::remove_partial(&path),
                Undo::Dir(path) => remove_dir(&path),
                Undo::HostDisk(created) => host_disk::remove_created(&created),
            }
        }
    }
}

fn remove_dir(path: &Path) {
    if let Err(e) = fs::remove_dir(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the VM folder");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(disks: serde_json::Value, volumes: serde_json::Value) -> VirtualMachineInstanceSpec {
        serde_json::from_value(json!({
            "domain": {"devices": {"disks": disks}},
            "volumes": volumes,
        }))
        .unwrap()
    }

    fn ctx() -> DiskContext {
        DiskContext {
            vmi_name: "vm1".into(),
            vmi_uid: "uid-1".into(),
            ..DiskContext::default()
        }
    }

    #[test]
    fn plan_follows_disk_order_and_defaults() {
        let s = spec(
            json!([
                {"name": "scratch", "disk": {"bus": "sata"}, "serial": "S1"},
                {"name": "root", "bootOrder": 1},
                {"name": "iso", "cdrom": {}},
                {"name": "ci", "disk": {"readonly": true}},
            ]),
            json!([
                {"name": "ci", "cloudInitNoCloud": {"userData": "#cloud-config\n"}},
                {"name": "root", "containerDisk": {"image": "127.0.0.1:5000/os:v1"}},
                {"name": "iso", "containerDisk": {"image": "127.0.0.1:5000/iso", "imagePullPolicy": "Never"}},
                {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}},
            ]),
        );
        let plan = plan_disks(&s, &ctx()).unwrap();
        let names: Vec<_> = plan.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["scratch", "root", "iso", "ci"]);
        assert_eq!(
            (
                plan[0].bus.as_str(),
                plan[0].readonly,
                plan[0].serial.as_deref()
            ),
            ("sata", false, Some("S1"))
        );
        assert_eq!(
            (plan[1].bus.as_str(), plan[1].boot_order),
            ("virtio", Some(1))
        );
        assert_eq!(
            (plan[2].bus.as_str(), plan[2].readonly, plan[2].cdrom),
            ("sata", true, true)
        );
        assert!(plan[3].readonly);
        match &plan[1].source {
            PlannedSource::ContainerDisk { image, options } => {
                assert_eq!(image, "127.0.0.1:5000/os:v1");
                assert_eq!(options.policy, PullPolicy::IfNotPresent);
            }
            other => panic!("{other:?}"),
        }
        match &plan[2].source {
            PlannedSource::ContainerDisk { options, .. } => {
                assert_eq!(options.policy, PullPolicy::Never)
            }
            other => panic!("{other:?}"),
        }
        match &plan[0].source {
            PlannedSource::EmptyDisk { size_bytes } => assert_eq!(*size_bytes, 1 << 30),
            other => panic!("{other:?}"),
        }
        match &plan[3].source {
            PlannedSource::CloudInitNoCloud(data) => {
                assert_eq!(data.meta_data, b"instance-id: uid-1\nlocal-hostname: vm1\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spec_hostname_goes_to_meta_data() {
        let mut s = spec(
            json!([{"name": "ci"}]),
            json!([{"name": "ci", "cloudInitNoCloud": {"userData": "x"}}]),
        );
        s.hostname = Some("web-0".into());
        let plan = plan_disks(&s, &ctx()).unwrap();
        let PlannedSource::CloudInitNoCloud(data) = &plan[0].source else {
            panic!()
        };
        assert_eq!(
            data.meta_data,
            b"instance-id: uid-1\nlocal-hostname: web-0\n"
        );
    }

    #[test]
    fn unusable_specs_are_refused_by_name() {
        let err = plan_disks(&spec(json!([{"name": "a"}]), json!([])), &ctx()).unwrap_err();
        assert!(matches!(err, DiskError::MissingVolume { .. }), "{err}");

        let err = plan_disks(
            &spec(
                json!([{"name": "a"}]),
                json!([{"name": "a", "persistentVolumeClaim": {"claimName": "c"}}]),
            ),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("persistentVolumeClaim"), "{err}");

        let err = plan_disks(
            &spec(
                json!([{"name": "a", "lun": {}}]),
                json!([{"name": "a", "emptyDisk": {"capacity": "1Gi"}}]),
            ),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("lun"), "{err}");

        let err = plan_disks(
            &spec(
                json!([{"name": "a"}]),
                json!([{"name": "a", "containerDisk": {"image": "x", "imagePullPolicy": "Sometimes"}}]),
            ),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("Sometimes"), "{err}");

        let err = plan_disks(
            &spec(
                json!([{"name": "a"}]),
                json!([{"name": "a", "containerDisk": {"image": "q.io/x", "imagePullSecret": "creds"}}]),
            ),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"creds\" was not found"), "{err}");

        let err = plan_disks(
            &spec(
                json!([{"name": "a"}]),
                json!([{"name": "a", "cloudInitNoCloud": {"secretRef": {"name": "ud"}}}]),
            ),
            &ctx(),
        )
        .unwrap_err();
        assert!(matches!(err, DiskError::CloudInit { .. }), "{err}");

        let err = plan_disks(
            &spec(
                json!([{"name": "a"}]),
                json!([{"name": "a", "emptyDisk": {}}]),
            ),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("capacity"), "{err}");

        let err = plan_disks(
            &spec(
                json!([{"name": "Bad"}]),
                json!([{"name": "Bad", "emptyDisk": {"capacity": "1Gi"}}]),
            ),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("DNS label"), "{err}");
    }

    #[test]
    fn pull_secrets_give_credentials_for_the_images_registry() {
        let mut c = ctx();
        c.secrets.insert(
            "creds".into(),
            [(
                ".dockerconfigjson".to_string(),
                br#"{"auths":{"registry.lab:5000":{"username":"u","password":"p"}}}"#.to_vec(),
            )]
            .into(),
        );
        let plan = plan_disks(
            &spec(
                json!([{"name": "a"}]),
                json!([{"name": "a", "containerDisk": {"image": "registry.lab:5000/os:1", "imagePullSecret": "creds"}}]),
            ),
            &c,
        )
        .unwrap();
        let PlannedSource::ContainerDisk { options, .. } = &plan[0].source else {
            panic!()
        };
        assert_eq!(
            options.credentials,
            RegistryCredentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
    }

    #[test]
    fn preparing_can_run_on_another_task() {
        fn assert_send<T: Send>(_: &T) {}
        let (s, c) = (spec(json!([]), json!([])), ctx());
        assert_send(&prepare_disks(&s, &c));
        assert_send(&prepare_disks_with(&s, &c, &NoHooks));
        let options = PullOptions::default();
        assert_send(&container_disk::pull(Path::new("/"), "x", &options));
    }

    #[tokio::test]
    async fn failures_before_any_step_leave_a_new_vm_folder_absent() {
        let root = tempfile::tempdir().unwrap();
        let mut c = ctx();
        c.vm_dir = root.path().join("pods/uid-1");
        c.cache_dir = root.path().join("cache");
        // The empty disk is made, then the containerDisk (Never, not cached) fails.
        let s = spec(
            json!([{"name": "scratch"}, {"name": "root"}]),
            json!([
                {"name": "scratch", "emptyDisk": {"capacity": "1Mi"}},
                {"name": "root", "containerDisk": {"image": "127.0.0.1:1/os:v1", "imagePullPolicy": "Never"}},
            ]),
        );
        let err = prepare_disks(&s, &c).await.unwrap_err();
        assert!(matches!(err, DiskError::ContainerDisk { .. }), "{err}");
        assert!(!c.vm_dir.exists(), "the VM folder it created is removed");
        assert!(root.path().join("pods").exists());
    }
}
