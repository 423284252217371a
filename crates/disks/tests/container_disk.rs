//! containerDisk pulls against a real registry (Debian's docker-registry on 127.0.0.1), with real
//! qemu-img and qemu-io for the overlays.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::{cache_entries, cache_temp, qemu_img_info};
use ferrovirt_disks::container_disk::{
    is_not_found, list_cached, overlay, pull, ImageError, PullError, PullOptions, PullPolicy,
};
use ferrovirt_disks::testing::{
    disk_layer, qcow2_disk_image, raw_disk_image, sha256, Layer, RegistryProcess, TarBuilder,
};
use ferrovirt_disks::DiskFormat;

fn options(policy: PullPolicy) -> PullOptions {
    PullOptions {
        policy,
        ..PullOptions::default()
    }
}

/// The pull must fail because of the image's content; nothing may be left in the cache.
async fn assert_refused(
    registry: &RegistryProcess,
    tag: &str,
    layers: Vec<Layer>,
    check: impl Fn(&ImageError) -> bool,
) -> String {
    registry.push(tag, layers).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = pull(cache.path(), &registry.image(tag), &PullOptions::default())
        .await
        .unwrap_err();
    match &err {
        PullError::Image { source, .. } if check(source) => {}
        other => panic!("{tag}: unexpected error {other:?}"),
    }
    assert!(
        cache_entries(cache.path()).is_empty(),
        "{tag}: no cache entry"
    );
    assert!(
        cache_temp(cache.path()).is_empty(),
        "{tag}: no temporary files"
    );
    assert!(list_cached(cache.path()).unwrap().is_empty());
    err.to_string()
}

#[tokio::test]
async fn a_raw_disk_is_pulled_into_the_cache_read_only_and_sparse() {
    let registry = RegistryProcess::start().unwrap();
    let disk = raw_disk_image(3 << 20, 1);
    let digest = registry
        .push_disk("os:v1", "disk.img", &disk)
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();

    let got = pull(
        cache.path(),
        &registry.image("os:v1"),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert!(got.downloaded);
    assert_eq!(got.digest, digest);
    assert_eq!(got.format, DiskFormat::Raw);
    assert_eq!(got.size, disk.len() as u64);
    assert_eq!(got.reference, registry.image("os:v1"));
    assert_eq!(
        got.path,
        cache
            .path()
            .join("images/sha256")
            .join(&digest["sha256:".len()..])
            .join("disk.raw")
    );
    assert_eq!(fs::read(&got.path).unwrap(), disk);
    let meta = fs::metadata(&got.path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert!(
        meta.blocks() * 512 < disk.len() as u64 / 2,
        "sparse: {} blocks",
        meta.blocks()
    );
    assert!(cache_temp(cache.path()).is_empty());

    let listed = list_cached(cache.path()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reference, registry.image("os:v1"));
    assert_eq!(listed[0].digest, digest);
    assert_eq!(listed[0].format, DiskFormat::Raw);
    assert_eq!(listed[0].size, disk.len() as u64);
    assert_eq!(listed[0].path, got.path);

    // An overlay over the raw image: raw backing format, the guest's size.
    let vm = tempfile::tempdir().unwrap();
    let path = overlay(&got, vm.path(), "root").await.unwrap();
    assert_eq!(path, vm.path().join("root.qcow2"));
    let info = qemu_img_info(&path);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["backing-filename-format"], "raw");
    assert_eq!(info["virtual-size"], disk.len() as u64);
    // Never over an existing file.
    let err = overlay(&got, vm.path(), "root").await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[tokio::test]
async fn qcow2_is_told_by_its_magic_and_the_overlay_takes_all_writes() {
    let registry = RegistryProcess::start().unwrap();
    // Named .img on purpose: the format comes from the content.
    let qcow2 = qcow2_disk_image(64 << 20).unwrap();
    registry
        .push_disk("os:qcow2", "disk.img", &qcow2)
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let got = pull(
        cache.path(),
        &registry.image("os:qcow2"),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(got.format, DiskFormat::Qcow2);
    assert!(got.path.ends_with("disk.qcow2"));
    let before = fs::read(&got.path).unwrap();

    let vm = tempfile::tempdir().unwrap();
    let path = overlay(&got, vm.path(), "root").await.unwrap();
    let info = qemu_img_info(&path);
    assert_eq!(info["backing-filename"], got.path.to_str().unwrap());
    assert_eq!(info["backing-filename-format"], "qcow2");
    assert_eq!(info["virtual-size"], 64u64 << 20);

    let io = |cmd: &str| {
        let out = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", cmd])
            .arg(&path)
            .output()
            .expect("qemu-io runs (qemu-utils)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    io("write -P 0xab 0 1M");
    let read = io("read -P 0xab 0 1M");
    assert!(!read.contains("Pattern verification failed"), "{read}");
    assert_eq!(
        fs::read(&got.path).unwrap(),
        before,
        "the cached image is never written"
    );
}

#[tokio::test]
async fn layers_stack_with_whiteouts_and_plain_or_gzip_tars() {
    let registry = RegistryProcess::start().unwrap();
    let old = raw_disk_image(1 << 20, 1);
    let new = raw_disk_image(2 << 20, 2);
    let lower = TarBuilder::new()
        .dir("disk/")
        .file("disk/old.img", &old)
        .file("etc/hostname", b"base\n")
        .build();
    let upper = TarBuilder::new()
        .file("disk/.wh.old.img", b"")
        .file("disk/new.img", &new)
        .build();
    registry
        .push("stack:v1", vec![Layer::tar(&lower), Layer::gzip(&upper)])
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let got = pull(
        cache.path(),
        &registry.image("stack:v1"),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), new);
    assert_eq!(tree_of_entry(&got.path), ["disk.raw"]);
}

fn tree_of_entry(disk: &std::path::Path) -> Vec<String> {
    common::tree(disk.parent().unwrap())
}

#[tokio::test]
async fn pull_policies_always_if_not_present_never() {
    let mut registry = RegistryProcess::start().unwrap();
    let image = registry.image("os:v1");
    let a = registry
        .push_disk("os:v1", "disk.img", &raw_disk_image(1 << 20, 1))
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let first = pull(cache.path(), &image, &options(PullPolicy::IfNotPresent))
        .await
        .unwrap();
    assert!(first.downloaded);
    assert_eq!(first.digest, a);

    // The tag moves to new content.
    let b = registry
        .push_disk("os:v1", "disk.img", &raw_disk_image(1 << 20, 2))
        .await
        .unwrap();
    assert_ne!(a, b);
    let cached = pull(cache.path(), &image, &options(PullPolicy::IfNotPresent))
        .await
        .unwrap();
    assert_eq!(
        (cached.digest.as_str(), cached.downloaded),
        (a.as_str(), false)
    );
    let always = pull(cache.path(), &image, &options(PullPolicy::Always))
        .await
        .unwrap();
    assert_eq!(
        (always.digest.as_str(), always.downloaded),
        (b.as_str(), true)
    );
    let again = pull(cache.path(), &image, &options(PullPolicy::Always))
        .await
        .unwrap();
    assert_eq!(
        (again.digest.as_str(), again.downloaded),
        (b.as_str(), false)
    );

    // Without the registry: IfNotPresent and Never use the cache, Always fails.
    registry.kill();
    for policy in [PullPolicy::IfNotPresent, PullPolicy::Never] {
        let got = pull(cache.path(), &image, &options(policy)).await.unwrap();
        assert_eq!(got.digest, b, "{policy:?}");
        assert!(!got.downloaded);
    }
    let err = pull(cache.path(), &image, &options(PullPolicy::Always))
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Registry { .. }), "{err}");
    let err = pull(
        cache.path(),
        &registry.image("os:v2"),
        &options(PullPolicy::Never),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PullError::NotPresent { .. }), "{err}");

    // A digest reference is served from the cache under any policy.
    let by_digest = format!("{}/os@{a}", registry.host());
    let got = pull(cache.path(), &by_digest, &options(PullPolicy::Always))
        .await
        .unwrap();
    assert_eq!(got.path, first.path);

    let listed = list_cached(cache.path()).unwrap();
    let refs: Vec<(&str, &str)> = listed
        .iter()
        .map(|i| (i.reference.as_str(), i.digest.as_str()))
        .collect();
    assert_eq!(
        refs,
        [
            (image.as_str(), b.as_str()),
            (by_digest.as_str(), a.as_str())
        ]
    );
    assert_eq!(cache_entries(cache.path()).len(), 2);
}

#[tokio::test]
async fn a_missing_tag_is_reported_as_not_found() {
    let registry = RegistryProcess::start().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = pull(
        cache.path(),
        &registry.image("nothing:here"),
        &PullOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(is_not_found(&err), "{err:?}");
    assert!(err.to_string().contains("nothing"), "{err}");
}

#[tokio::test]
async fn images_that_are_not_one_safe_disk_file_are_refused() {
    let registry = RegistryProcess::start().unwrap();
    let disk = raw_disk_image(1 << 20, 3);
    let msg = assert_refused(
        &registry,
        "two:v1",
        vec![Layer::gzip(
            &TarBuilder::new()
                .dir("disk/")
                .file("disk/a.img", &disk)
                .file("disk/b.qcow2", &disk)
                .build(),
        )],
        |e| matches!(e, ImageError::SeveralDiskFiles { .. }),
    )
    .await;
    assert!(msg.contains("/disk/a.img, /disk/b.qcow2"), "{msg}");

    let msg = assert_refused(
        &registry,
        "none:v1",
        vec![Layer::gzip(
            &TarBuilder::new().dir("disk/").file("README", b"hi").build(),
        )],
        |e| matches!(e, ImageError::NoDiskFile { .. }),
    )
    .await;
    assert!(msg.contains("no disk file under /disk/"), "{msg}");

    let msg = assert_refused(
        &registry,
        "dotdot:v1",
        vec![Layer::tar(
            &TarBuilder::new()
                .file("disk/../../etc/cron.d/evil", b"* * * * * root sh\n")
                .file("disk/disk.img", &disk)
                .build(),
        )],
        |e| matches!(e, ImageError::ParentDir { .. }),
    )
    .await;
    assert!(msg.contains("'..'"), "{msg}");

    assert_refused(
        &registry,
        "absolute:v1",
        vec![Layer::tar(
            &TarBuilder::new().file("/disk/disk.img", &disk).build(),
        )],
        |e| matches!(e, ImageError::AbsolutePath { .. }),
    )
    .await;

    let msg = assert_refused(
        &registry,
        "symlink:v1",
        vec![Layer::tar(
            &TarBuilder::new()
                .dir("disk/")
                .symlink("disk/disk.img", "/etc/shadow")
                .build(),
        )],
        |e| {
            matches!(
                e,
                ImageError::Link {
                    kind: "symlink",
                    ..
                }
            )
        },
    )
    .await;
    assert!(msg.contains("links are not allowed"), "{msg}");

    assert_refused(
        &registry,
        "hardlink:v1",
        vec![Layer::tar(
            &TarBuilder::new()
                .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
                .dir("disk/")
                .hardlink("disk/disk.img", "etc/passwd")
                .build(),
        )],
        |e| {
            matches!(
                e,
                ImageError::Link {
                    kind: "hard link",
                    ..
                }
            )
        },
    )
    .await;

    // A qcow2 that names a backing file could make QEMU read any host file.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let with_backing = dir.path().join("top.qcow2");
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&base)
        .arg(&with_backing)
        .status()
        .unwrap();
    assert!(status.success());
    let msg = assert_refused(
        &registry,
        "backing:v1",
        vec![Layer::gzip(&disk_layer(
            "disk.qcow2",
            &fs::read(&with_backing).unwrap(),
        ))],
        |e| matches!(e, ImageError::NotSelfContained(_)),
    )
    .await;
    assert!(msg.contains("backing file"), "{msg}");

    let garbage = vec![0x42u8; 4096];
    assert_refused(
        &registry,
        "garbage:v1",
        vec![Layer::other(
            &garbage,
            "application/vnd.oci.image.layer.v1.tar",
        )],
        |e| matches!(e, ImageError::Malformed { .. }),
    )
    .await;

    // Not a filesystem layer at all.
    registry
        .push(
            "wasm:v1",
            vec![Layer::other(
                b"\0asm",
                "application/vnd.wasm.content.layer.v1+wasm",
            )],
        )
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = pull(
        cache.path(),
        &registry.image("wasm:v1"),
        &PullOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PullError::UnsupportedLayer { .. }), "{err}");
    assert!(cache_temp(cache.path()).is_empty());
}

#[tokio::test]
async fn a_plain_http_registry_off_loopback_needs_the_insecure_setting() {
    let registry = RegistryProcess::start().unwrap();
    registry
        .push_disk("os:v1", "disk.img", &raw_disk_image(1 << 20, 4))
        .await
        .unwrap();
    // 0.0.0.0 reaches the registry listening on 127.0.0.1, but is not a loopback address: it
    // stands for any registry on the network.
    let host = format!("0.0.0.0:{}", registry.port());
    let image = format!("{host}/os:v1");
    let cache = tempfile::tempdir().unwrap();
    let err = pull(cache.path(), &image, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::PlainHttpRefused { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("insecure_registries") && msg.contains(&host),
        "{msg}"
    );

    let allowed = PullOptions {
        insecure_registries: vec![host.clone()],
        ..PullOptions::default()
    };
    let got = pull(cache.path(), &image, &allowed).await.unwrap();
    assert!(got.downloaded);
}

#[tokio::test]
async fn a_corrupted_layer_fails_its_digest_check_and_leaves_nothing() {
    let registry = RegistryProcess::start().unwrap();
    let layer = Layer::gzip(&disk_layer("disk.img", &raw_disk_image(1 << 20, 5)));
    let layer_digest = sha256(&layer.data);
    registry.push("os:v1", vec![layer]).await.unwrap();
    // Flip one byte of the stored blob: same length, different content.
    let blob = registry.blob_path(&layer_digest);
    let mut data = fs::read(&blob).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    fs::write(&blob, &data).unwrap();

    let cache = tempfile::tempdir().unwrap();
    let err = pull(
        cache.path(),
        &registry.image("os:v1"),
        &PullOptions::default(),
    )
    .await
    .unwrap_err();
    match &err {
        PullError::DigestMismatch { digest, actual, .. } => {
            assert_eq!(digest, &layer_digest);
            assert_eq!(actual, &sha256(&data));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
    assert!(cache_entries(cache.path()).is_empty());
    assert!(cache_temp(cache.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_download_it_once() {
    let registry = RegistryProcess::start().unwrap();
    let disk = raw_disk_image(8 << 20, 6);
    registry
        .push_disk("os:v1", "disk.img", &disk)
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let image = registry.image("os:v1");
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let (cache, image) = (cache.path().to_path_buf(), image.clone());
            tokio::spawn(async move { pull(&cache, &image, &PullOptions::default()).await })
        })
        .collect();
    let mut results = Vec::new();
    for p in pulls {
        results.push(p.await.unwrap().unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.downloaded).count(), 1);
    assert!(results.iter().all(|r| r.path == results[0].path));
    assert_eq!(fs::read(&results[0].path).unwrap(), disk);
    assert_eq!(cache_entries(cache.path()).len(), 1);
    assert!(cache_temp(cache.path()).is_empty());
    assert_eq!(list_cached(cache.path()).unwrap().len(), 1);
}

#[tokio::test]
async fn a_partial_pull_left_by_a_crash_is_cleaned_up() {
    let registry = RegistryProcess::start().unwrap();
    let digest = registry
        .push_disk("os:v1", "disk.img", &raw_disk_image(1 << 20, 7))
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let stale = cache
        .path()
        .join("images/tmp")
        .join(format!("sha256-{}.crashed", &digest["sha256:".len()..]));
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("layer-0.blob"), b"half a layer").unwrap();
    let got = pull(
        cache.path(),
        &registry.image("os:v1"),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert!(got.downloaded);
    assert!(!stale.exists());
    assert!(cache_temp(cache.path()).is_empty());
}

#[tokio::test]
async fn container_disk_path_picks_another_file() {
    let registry = RegistryProcess::start().unwrap();
    let boot = raw_disk_image(1 << 20, 8);
    let other = raw_disk_image(1 << 20, 9);
    let tar = TarBuilder::new()
        .dir("disk/")
        .file("disk/other.img", &other)
        .dir("images/")
        .file("images/boot.img", &boot)
        .build();
    registry
        .push("multi:v1", vec![Layer::gzip(&tar)])
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let image = registry.image("multi:v1");
    let custom = PullOptions {
        image_path: Some("/images/boot.img".into()),
        ..PullOptions::default()
    };
    let got = pull(cache.path(), &image, &custom).await.unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), boot);
    let default = pull(cache.path(), &image, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(fs::read(&default.path).unwrap(), other);
    assert_ne!(got.path, default.path);
    let listed = list_cached(cache.path()).unwrap();
    let paths: Vec<Option<&str>> = listed.iter().map(|i| i.image_path.as_deref()).collect();
    assert_eq!(paths, [Some("/images/boot.img"), None]);

    let missing = PullOptions {
        image_path: Some("/images/nope.img".into()),
        ..PullOptions::default()
    };
    let err = pull(cache.path(), &image, &missing).await.unwrap_err();
    assert!(err.to_string().contains("/images/nope.img"), "{err}");
}

#[test]
fn registry_helper_kills_its_process_by_pid() {
    let mut registry = RegistryProcess::start().unwrap();
    let pid = registry.pid().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(registry.is_running());
    registry.restart().unwrap();
    let new_pid = registry.pid().unwrap();
    assert_ne!(pid, new_pid);
    drop(registry);
    let gone = std::fs::read_to_string(format!("/proc/{new_pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true);
    assert!(gone, "the registry process is gone after drop");
}
