//! prepare_disks end to end (real registry, qemu-img) and its undo: a failure injected after each
//! step, and real failures midway, leave the VM folder and the host disk folder as they were.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::{qemu_img_info, tree};
use ferrovirt_api::kubevirt::VirtualMachineInstanceSpec;
use ferrovirt_disks::container_disk::is_not_found;
use ferrovirt_disks::testing::{qcow2_disk_image, RegistryProcess};
use ferrovirt_disks::{
    prepare_disks, prepare_disks_with, DiskContext, DiskError, DiskFormat, PrepareHooks,
    PreparedDisk, Step, StepKind,
};
use serde_json::json;

struct Fixture {
    registry: RegistryProcess,
    root: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let registry = RegistryProcess::start().unwrap();
        registry
            .push_disk("os:v1", "disk.qcow2", &qcow2_disk_image(32 << 20).unwrap())
            .await
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("hostdisks")).unwrap();
        Fixture { registry, root }
    }

    fn ctx(&self, vm: &str) -> DiskContext {
        let vm_dir = self.root.path().join("pods").join(vm);
        fs::create_dir_all(&vm_dir).unwrap();
        DiskContext {
            vmi_name: "vm1".into(),
            vmi_uid: "8d5e57e1-uid".into(),
            vm_dir,
            cache_dir: self.root.path().join("cache"),
            allowed_host_disk_dirs: vec![self.host_dir()],
            ..DiskContext::default()
        }
    }

    fn host_dir(&self) -> PathBuf {
        self.root.path().join("hostdisks")
    }

    /// root (containerDisk), cloudinit, scratch (emptyDisk), data (hostDisk, created).
    fn spec(&self, image: &str) -> VirtualMachineInstanceSpec {
        serde_json::from_value(json!({
            "domain": {"devices": {"disks": [
                {"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1},
                {"name": "cloudinit", "disk": {}},
                {"name": "scratch", "disk": {"bus": "sata"}, "serial": "SCRATCH1"},
                {"name": "data", "disk": {"readonly": true}},
            ]}},
            "volumes": [
                {"name": "data", "hostDisk": {
                    "path": self.host_dir().join("vm1/data.img").to_str().unwrap(),
                    "type": "DiskOrCreate", "capacity": "64Mi"}},
                {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#!/bin/sh\necho hi\n"}},
                {"name": "root", "containerDisk": {"image": self.registry.image(image)}},
            ],
        }))
        .unwrap()
    }
}

#[tokio::test]
async fn every_kind_of_volume_is_prepared_in_disk_order() {
    let f = Fixture::new().await;
    let ctx = f.ctx("a");
    let disks = prepare_disks(&f.spec("os:v1"), &ctx).await.unwrap();
    let host_image = fs::canonicalize(f.host_dir()).unwrap().join("vm1/data.img");
    let expected = vec![
        PreparedDisk {
            name: "root".into(),
            path: ctx.vm_dir.join("root.qcow2"),
            format: DiskFormat::Qcow2,
            readonly: false,
            bus: "virtio".into(),
            boot_order: Some(1),
            serial: None,
            cdrom: false,
        },
        PreparedDisk {
            name: "cloudinit".into(),
            path: ctx.vm_dir.join("cloudinit.img"),
            format: DiskFormat::Raw,
            readonly: false,
            bus: "virtio".into(),
            boot_order: None,
            serial: None,
            cdrom: false,
        },
        PreparedDisk {
            name: "scratch".into(),
            path: ctx.vm_dir.join("scratch.qcow2"),
            format: DiskFormat::Qcow2,
            readonly: false,
            bus: "sata".into(),
            boot_order: None,
            serial: Some("SCRATCH1".into()),
            cdrom: false,
        },
        PreparedDisk {
            name: "data".into(),
            path: host_image.clone(),
            format: DiskFormat::Raw,
            readonly: true,
            bus: "virtio".into(),
            boot_order: None,
            serial: None,
            cdrom: false,
        },
    ];
    assert_eq!(disks, expected);

    let root = qemu_img_info(&disks[0].path);
    assert_eq!(root["backing-filename-format"], "qcow2");
    let backing = PathBuf::from(root["backing-filename"].as_str().unwrap());
    assert!(
        backing.starts_with(ctx.cache_dir.join("images/sha256")),
        "{backing:?}"
    );
    let scratch = qemu_img_info(&disks[2].path);
    assert_eq!(
        (scratch["format"].as_str(), scratch["virtual-size"].as_u64()),
        (Some("qcow2"), Some(1 << 30))
    );
    assert_eq!(fs::metadata(&host_image).unwrap().len(), 64 << 20);
    assert_eq!(
        tree(&ctx.vm_dir),
        ["cloudinit.img", "root.qcow2", "scratch.qcow2"]
    );
}

/// Records every step; fails after the one numbered `fail_at`, if any.
struct Injector {
    fail_at: Option<usize>,
    seen: Mutex<Vec<Step>>,
}

impl Injector {
    fn new(fail_at: Option<usize>) -> Self {
        Injector {
            fail_at,
            seen: Mutex::new(Vec::new()),
        }
    }
}

impl PrepareHooks for Injector {
    fn after_step(&self, step: &Step) -> Result<(), String> {
        self.seen.lock().unwrap().push(step.clone());
        if Some(step.index) == self.fail_at {
            return Err("injected failure".into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failure_after_any_step_undoes_everything_for_the_vmi() {
    let f = Fixture::new().await;
    let spec = f.spec("os:v1");

    let all = Injector::new(None);
    prepare_disks_with(&spec, &f.ctx("count"), &all)
        .await
        .unwrap();
    let steps: Vec<(String, StepKind)> = all
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.volume.clone(), s.kind))
        .collect();
    assert_eq!(
        steps,
        [
            ("root".to_string(), StepKind::PullImage),
            ("root".to_string(), StepKind::CreateOverlay),
            ("cloudinit".to_string(), StepKind::WriteCloudInit),
            ("scratch".to_string(), StepKind::CreateEmptyDisk),
            ("data".to_string(), StepKind::PrepareHostDisk),
        ]
    );
    // The host disk made by the counting run is the node's, not this test's: start clean.
    fs::remove_dir_all(f.host_dir().join("vm1")).unwrap();

    for fail_at in 0..steps.len() {
        let ctx = f.ctx(&format!("fail-{fail_at}"));
        let injector = Injector::new(Some(fail_at));
        let err = prepare_disks_with(&spec, &ctx, &injector)
            .await
            .unwrap_err();
        match &err {
            DiskError::Stopped { step, reason } => {
                assert_eq!(step.index, fail_at);
                assert_eq!(reason, "injected failure");
            }
            other => panic!("step {fail_at}: {other:?}"),
        }
        assert!(
            err.to_string().contains(&format!("step {fail_at}")),
            "{err}"
        );
        assert_eq!(injector.seen.lock().unwrap().len(), fail_at + 1);
        assert!(
            tree(&ctx.vm_dir).is_empty(),
            "step {fail_at}: {:?}",
            tree(&ctx.vm_dir)
        );
        assert!(
            tree(&f.host_dir()).is_empty(),
            "step {fail_at}: {:?}",
            tree(&f.host_dir())
        );
        // Pulled images stay in the node's cache: they are not the VMI's.
        assert_eq!(common::cache_entries(&ctx.cache_dir).len(), 1);

        // The same VMI can then be prepared from scratch.
        prepare_disks(&spec, &ctx).await.unwrap();
        assert_eq!(tree(&ctx.vm_dir).len(), 3);
        fs::remove_dir_all(f.host_dir().join("vm1")).unwrap();
    }
}

#[tokio::test]
async fn a_real_failure_midway_removes_the_disks_made_before_it() {
    let f = Fixture::new().await;
    let ctx = f.ctx("missing-image");
    // Disk order: root comes first in the spec; put it last so that others are made first.
    let mut spec = f.spec("os:does-not-exist");
    let disks = spec.domain.devices.disks.as_mut().unwrap();
    disks.rotate_left(1);
    let err = prepare_disks(&spec, &ctx).await.unwrap_err();
    match &err {
        DiskError::ContainerDisk { volume, source } => {
            assert_eq!(volume, "root");
            assert!(is_not_found(source), "{source:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(tree(&ctx.vm_dir).is_empty(), "{:?}", tree(&ctx.vm_dir));
    assert!(tree(&f.host_dir()).is_empty(), "{:?}", tree(&f.host_dir()));
}

#[tokio::test]
async fn an_existing_host_disk_survives_an_undo() {
    let f = Fixture::new().await;
    let image = f.host_dir().join("vm1/data.img");
    fs::create_dir_all(image.parent().unwrap()).unwrap();
    fs::write(&image, b"precious").unwrap();
    let ctx = f.ctx("existing");
    let last = Injector::new(Some(4));
    let err = prepare_disks_with(&f.spec("os:v1"), &ctx, &last)
        .await
        .unwrap_err();
    assert!(matches!(err, DiskError::Stopped { .. }), "{err}");
    assert_eq!(fs::read(&image).unwrap(), b"precious");
    assert!(tree(&ctx.vm_dir).is_empty());
}

#[tokio::test]
async fn a_vm_folder_that_did_not_exist_is_removed_again() {
    let f = Fixture::new().await;
    let mut ctx = f.ctx("unused");
    ctx.vm_dir = f.root.path().join("pods/new-vm");
    let err = prepare_disks_with(&f.spec("os:v1"), &ctx, &Injector::new(Some(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, DiskError::Stopped { .. }), "{err}");
    assert!(!Path::new(&ctx.vm_dir).exists());
}
