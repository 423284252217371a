//! kernelBoot containers against a real registry (Debian's docker-registry on 127.0.0.1): the kernel
//! and initrd are taken out of the image into the node cache by digest, read-only; links, escapes and
//! missing files are refused by field name and leave nothing behind.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{cache_entries, cache_temp};
use ferrovirt_disks::container_disk::{
    list_cached, pull, pull_kernel_boot, BootFile, ImageError, ImageUse, KernelBootFiles,
    PullError, PullOptions, PullPolicy,
};
use ferrovirt_disks::kernel_boot::{plan_kernel_boot, prepare_kernel_boot};
use ferrovirt_disks::testing::{
    kernel_boot_layer, raw_disk_image, Layer, RegistryProcess, TarBuilder, INITRD_PATH, KERNEL_PATH,
};
use ferrovirt_disks::DiskContext;
use serde_json::json;

fn files(kernel: Option<&str>, initrd: Option<&str>) -> KernelBootFiles {
    KernelBootFiles {
        kernel_path: kernel.map(str::to_string),
        initrd_path: initrd.map(str::to_string),
    }
}

fn both() -> KernelBootFiles {
    files(Some(KERNEL_PATH), Some(INITRD_PATH))
}

/// The pull must fail because of the image's content; nothing may be left in the cache.
async fn refused(
    registry: &RegistryProcess,
    tag: &str,
    layers: Vec<Layer>,
    wanted: KernelBootFiles,
) -> ImageError {
    registry.push(tag, layers).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = pull_kernel_boot(
        cache.path(),
        &registry.image(tag),
        &wanted,
        &PullOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not a usable kernelBoot container"),
        "{err}"
    );
    assert!(cache_entries(cache.path()).is_empty(), "{tag}: no entry");
    assert!(cache_temp(cache.path()).is_empty(), "{tag}: no temp files");
    match err {
        PullError::Image {
            source,
            used_as: ImageUse::KernelBoot,
            ..
        } => source,
        other => panic!("{tag}: unexpected error {other:?}"),
    }
}

#[tokio::test]
async fn kernel_and_initrd_are_cached_by_digest_read_only() {
    let registry = RegistryProcess::start().unwrap();
    let (kernel, initrd) = (b"kernel bytes \x00\x01".repeat(1000), b"initrd".repeat(999));
    let digest = registry
        .push_kernel_boot("kernel:v1", &kernel, &initrd)
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let image = registry.image("kernel:v1");

    let got = pull_kernel_boot(cache.path(), &image, &both(), &PullOptions::default())
        .await
        .unwrap();
    assert!(got.downloaded);
    assert_eq!(got.digest, digest);
    let (k, i) = (got.kernel.clone().unwrap(), got.initrd.clone().unwrap());
    assert_eq!(fs::read(&k).unwrap(), kernel);
    assert_eq!(fs::read(&i).unwrap(), initrd);
    for f in [&k, &i] {
        assert!(f.starts_with(cache.path().join("images/sha256")), "{f:?}");
        assert_eq!(fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o444);
    }
    assert_eq!(k.parent(), i.parent(), "one entry holds both");
    assert!(cache_temp(cache.path()).is_empty());

    // Again: from the cache, even with the registry gone (IfNotPresent).
    let mut registry = registry;
    registry.kill();
    let again = pull_kernel_boot(cache.path(), &image, &both(), &PullOptions::default())
        .await
        .unwrap();
    assert!(!again.downloaded);
    assert_eq!((again.kernel, again.initrd), (Some(k), Some(i)));
    // kernelBoot entries are not containerDisks.
    assert!(list_cached(cache.path()).unwrap().is_empty());
    let never = PullOptions {
        policy: PullPolicy::Never,
        ..PullOptions::default()
    };
    let err = pull(cache.path(), &image, &never).await.unwrap_err();
    assert!(matches!(err, PullError::NotPresent { .. }), "{err}");
}

#[tokio::test]
async fn a_kernel_alone_and_one_image_for_both_uses() {
    let registry = RegistryProcess::start().unwrap();
    // One image holding a containerDisk and a kernel, in two layers.
    let disk = raw_disk_image(1 << 20, 3);
    let layers = vec![
        Layer::gzip(
            &TarBuilder::new()
                .dir("disk/")
                .file("disk/disk.img", &disk)
                .build(),
        ),
        Layer::tar(
            &TarBuilder::new()
                .dir("boot/")
                .file("boot/vmlinuz", b"K")
                .build(),
        ),
    ];
    registry.push("both:v1", layers).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let image = registry.image("both:v1");
    let got = pull_kernel_boot(
        cache.path(),
        &image,
        &files(Some("/boot//./vmlinuz"), None),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(got.initrd, None);
    assert_eq!(fs::read(got.kernel.unwrap()).unwrap(), b"K");
    let disk_pull = pull(cache.path(), &image, &PullOptions::default())
        .await
        .unwrap();
    assert!(disk_pull.downloaded, "a separate entry");
    assert_eq!(fs::read(&disk_pull.path).unwrap(), disk);
    assert_eq!(cache_entries(cache.path()).len(), 2);
    assert_eq!(list_cached(cache.path()).unwrap().len(), 1);
}

#[tokio::test]
async fn missing_linked_and_hidden_files_are_refused_by_field() {
    let registry = RegistryProcess::start().unwrap();
    let base = || Layer::gzip(&kernel_boot_layer(b"K", b"I"));

    let err = refused(
        &registry,
        "missing:v1",
        vec![base()],
        files(Some(KERNEL_PATH), Some("/boot/initramfs")),
    )
    .await;
    assert_eq!(
        err,
        ImageError::MissingBootFile {
            file: BootFile::Initrd,
            path: "boot/initramfs".into()
        }
    );
    assert!(err
        .to_string()
        .starts_with("spec.domain.firmware.kernelBoot.container.initrdPath /boot/initramfs"));

    // A symlink to a node file must never be followed or copied.
    let link = Layer::tar(
        &TarBuilder::new()
            .dir("boot/")
            .symlink("boot/vmlinuz", "/etc/shadow")
            .build(),
    );
    let err = refused(&registry, "link:v1", vec![link], both()).await;
    assert!(
        matches!(&err, ImageError::BootFileEntry { file: BootFile::Kernel, source } if matches!(**source, ImageError::Link { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("kernelPath"), "{err}");
    // A linked folder on the way is refused too.
    let dir_link = Layer::tar(
        &TarBuilder::new()
            .symlink("boot", "/")
            .file("boot/initrd.gz", b"I")
            .build(),
    );
    let err = refused(&registry, "dirlink:v1", vec![dir_link], both()).await;
    assert!(matches!(err, ImageError::BootFileEntry { .. }), "{err:?}");

    // A later layer's whiteout hides the kernel.
    let whiteout = Layer::tar(&TarBuilder::new().file("boot/.wh.vmlinuz", b"").build());
    let err = refused(&registry, "hidden:v1", vec![base(), whiteout], both()).await;
    assert!(
        matches!(
            err,
            ImageError::MissingBootFile {
                file: BootFile::Kernel,
                ..
            }
        ),
        "{err:?}"
    );

    // Entries escaping the image's root are refused whatever they are.
    let escape = Layer::tar(
        &TarBuilder::new()
            .file("boot/vmlinuz", b"K")
            .file("../../etc/cron.d/x", b"x")
            .build(),
    );
    let err = refused(
        &registry,
        "escape:v1",
        vec![escape],
        files(Some(KERNEL_PATH), None),
    )
    .await;
    assert!(matches!(err, ImageError::ParentDir { .. }), "{err:?}");

    // Paths that leave the image are refused before the registry is asked.
    let cache = tempfile::tempdir().unwrap();
    for (wanted, field) in [
        (files(Some("/boot/../../etc/shadow"), None), "kernelPath"),
        (
            files(Some(KERNEL_PATH), Some("boot/initrd.gz")),
            "initrdPath",
        ),
    ] {
        let err = pull_kernel_boot(
            cache.path(),
            "127.0.0.1:1/nothing:v1",
            &wanted,
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                &err,
                PullError::Image {
                    source: ImageError::BadBootPath { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[tokio::test]
async fn a_vmi_kernel_boot_is_planned_and_prepared() {
    let registry = RegistryProcess::start().unwrap();
    registry
        .push_kernel_boot("kernel:v2", b"KERNEL", b"INITRD")
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let spec = serde_json::from_value(json!({
        "domain": {"devices": {}, "firmware": {"kernelBoot": {
            "kernelArgs": "console=ttyS0 ferrovirt.marker=abc",
            "container": {"image": registry.image("kernel:v2"), "kernelPath": KERNEL_PATH, "initrdPath": INITRD_PATH}
        }}}
    }))
    .unwrap();
    let ctx = DiskContext {
        vmi_name: "vm1".into(),
        vmi_uid: "uid-1".into(),
        cache_dir: cache.path().to_path_buf(),
        ..DiskContext::default()
    };
    let plan = plan_kernel_boot(&spec, &ctx).unwrap().unwrap();
    let prepared = prepare_kernel_boot(&plan, &ctx).await.unwrap();
    assert_eq!(fs::read(&prepared.kernel).unwrap(), b"KERNEL");
    assert_eq!(fs::read(prepared.initrd.unwrap()).unwrap(), b"INITRD");
    assert_eq!(
        prepared.kernel_args.as_deref(),
        Some("console=ttyS0 ferrovirt.marker=abc")
    );
}
