//! The NoCloud disk read back as a guest would find it: by fatfs, libblkid (`blkid`) and mtools.

use std::fs;
use std::path::Path;
use std::process::Command;

use ferrovirt_disks::cloud_init::{
    create_nocloud_disk, meta_data, write_nocloud_image, CloudInitError, NoCloudData,
};

fn data(network: bool) -> NoCloudData {
    NoCloudData {
        user_data: b"#!/bin/sh\necho ferrovirt-user-data-ran\n".to_vec(),
        meta_data: meta_data("0b7c3a4e-uid", "vm1").into_bytes(),
        network_config: network
            .then(|| b"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n".to_vec()),
    }
}

/// Volume label in the boot sector, in the root folder, and the files (name, content), sorted.
type ReadBack = (String, Option<String>, Vec<(String, Vec<u8>)>);

fn read_back(image: &Path) -> ReadBack {
    use std::io::Read;
    let file = fs::File::open(image).unwrap();
    let fs = fatfs::FileSystem::new(file, fatfs::FsOptions::new()).unwrap();
    let boot_label = fs.volume_label();
    let root_label = fs.read_volume_label_from_root_dir().unwrap();
    let mut files = Vec::new();
    for entry in fs.root_dir().iter() {
        let entry = entry.unwrap();
        let mut content = Vec::new();
        entry.to_file().read_to_end(&mut content).unwrap();
        files.push((entry.file_name(), content));
    }
    files.sort();
    (boot_label, root_label, files)
}

fn run(program: &str, args: &[&str], image: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(image)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("{program}: {e} (install util-linux and mtools: apt-get install mtools)")
        });
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mtools(program: &str, image: &Path, arg: &str) -> String {
    let out = Command::new(program)
        .args(["-i"])
        .arg(image)
        .arg(arg)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (apt-get install mtools)"));
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_image_holds_the_three_files_and_the_cidata_label() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(true);
    let image = create_nocloud_disk(&data, dir.path(), "cloudinit").unwrap();
    assert_eq!(image, dir.path().join("cloudinit.img"));
    assert_eq!(fs::metadata(&image).unwrap().len(), 2 << 20);

    let (boot_label, root_label, files) = read_back(&image);
    assert_eq!(boot_label, "CIDATA");
    assert_eq!(root_label.as_deref(), Some("CIDATA"));
    assert_eq!(
        files,
        [
            ("meta-data".to_string(), data.meta_data.clone()),
            (
                "network-config".to_string(),
                data.network_config.clone().unwrap()
            ),
            ("user-data".to_string(), data.user_data.clone()),
        ]
    );

    // What udev (/dev/disk/by-label) and cloud-init's `blkid -tLABEL=CIDATA` see.
    assert_eq!(
        run("blkid", &["-p", "-o", "value", "-s", "LABEL"], &image).trim(),
        "CIDATA"
    );
    assert_eq!(
        run("blkid", &["-p", "-o", "value", "-s", "TYPE"], &image).trim(),
        "vfat"
    );

    let listing = mtools("mdir", &image, "::");
    assert!(listing.contains("Volume in drive : is CIDATA"), "{listing}");
    for name in ["user-data", "meta-data", "network-config"] {
        assert!(listing.contains(name), "{name} in {listing}");
    }
    assert_eq!(
        mtools("mtype", &image, "::meta-data").as_bytes(),
        data.meta_data.as_slice()
    );
    assert_eq!(
        mtools("mtype", &image, "::user-data").as_bytes(),
        data.user_data.as_slice()
    );
}

#[test]
fn without_network_data_there_is_no_network_config() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ci.img");
    write_nocloud_image(&data(false), &image).unwrap();
    let (_, _, files) = read_back(&image);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["meta-data", "user-data"]);
}

#[test]
fn large_user_data_gets_a_larger_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut big = data(false);
    big.user_data = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let image = dir.path().join("ci.img");
    write_nocloud_image(&big, &image).unwrap();
    assert!(fs::metadata(&image).unwrap().len() > 2 << 20);
    let (_, _, files) = read_back(&image);
    assert_eq!(files[1].1, big.user_data);
    assert_eq!(
        run("blkid", &["-p", "-o", "value", "-s", "LABEL"], &image).trim(),
        "CIDATA"
    );

    let mut huge = data(false);
    huge.user_data = vec![b'x'; 20 << 20];
    let err = write_nocloud_image(&huge, &dir.path().join("huge.img")).unwrap_err();
    assert!(matches!(err, CloudInitError::TooLarge { .. }), "{err}");
    assert!(!dir.path().join("huge.img").exists());
}

#[test]
fn existing_files_are_not_overwritten_and_failures_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ci.img"), b"keep me").unwrap();
    let err = create_nocloud_disk(&data(false), dir.path(), "ci").unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(fs::read(dir.path().join("ci.img")).unwrap(), b"keep me");

    let err = create_nocloud_disk(&data(false), &dir.path().join("missing"), "ci").unwrap_err();
    assert!(matches!(err, CloudInitError::Io { .. }), "{err}");
    let err = create_nocloud_disk(&data(false), dir.path(), "../escape").unwrap_err();
    assert!(err.to_string().contains("DNS label"), "{err}");
}
