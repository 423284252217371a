#!/usr/bin/env python3
"""Write a KubeVirt containerDisk, or a kernelBoot container, as an OCI image layout directory (used by
scripts/push-guest.sh).

    make-oci-layout.py DISK OUT_DIR TAG [NAME_IN_IMAGE]
    make-oci-layout.py --kernel-boot KERNEL INITRD OUT_DIR TAG

The image has one layer: a gzip-compressed tar holding the directory disk/ and the file
disk/NAME_IN_IMAGE (default: DISK's file name), owned by 107:107 (the qemu user KubeVirt runs QEMU as)
with mode 0440, as KubeVirt's `ADD --chown=107:107 disk.qcow2 /disk/` images have. It writes OUT_DIR/
oci-layout, OUT_DIR/index.json (the manifest tagged TAG through org.opencontainers.image.ref.name) and the
config, layer and manifest blobs under OUT_DIR/blobs/sha256/. Timestamps come from DISK's mtime, so the
same disk always gives the same digests. Prints the manifest's digest.

With --kernel-boot the layer holds boot/vmlinuz (KERNEL) and boot/initrd.gz (INITRD) instead, 0444, for
`kernelBoot.container` with kernelPath /boot/vmlinuz and initrdPath /boot/initrd.gz.
"""

import datetime
import gzip
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile

CHUNK = 1 << 20


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def put_blob(out_dir, data_or_path):
    """Store a blob (bytes, or a file to move in) under blobs/sha256; return (digest, size)."""
    blobs = os.path.join(out_dir, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    if isinstance(data_or_path, bytes):
        digest = hashlib.sha256(data_or_path).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data_or_path)
        return "sha256:" + digest, len(data_or_path)
    digest = sha256_file(data_or_path)
    size = os.path.getsize(data_or_path)
    shutil.move(data_or_path, os.path.join(blobs, digest))
    return "sha256:" + digest, size


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def tar_info(name, mtime, mode, size=0, directory=False):
    info = tarfile.TarInfo(name)
    if directory:
        info.type = tarfile.DIRTYPE
    info.size = size
    info.mode = mode
    info.uid = info.gid = 107
    info.uname = info.gname = "qemu"
    info.mtime = mtime
    return info


def main(argv):
    if len(argv) == 6 and argv[1] == "--kernel-boot":
        kernel, initrd, out_dir, tag = argv[2:6]
        folder, mode = "boot", 0o444
        files = [(kernel, "vmlinuz"), (initrd, "initrd.gz")]
        title = "ferrovirt test guest (kernelBoot container)"
    elif len(argv) in (4, 5) and not argv[1].startswith("--"):
        disk, out_dir, tag = argv[1], argv[2], argv[3]
        folder, mode = "disk", 0o440
        files = [(disk, argv[4] if len(argv) == 5 else os.path.basename(disk))]
        title = "ferrovirt test guest (containerDisk)"
    else:
        sys.stderr.write(__doc__)
        return 2
    mtime = max(int(os.stat(src).st_mtime) for src, _ in files)
    os.makedirs(out_dir, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tar_path = os.path.join(tmp, "layer.tar")
        with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(tar_info(folder, mtime, 0o555, directory=True))
            for src, name in files:
                with open(src, "rb") as f:
                    tar.addfile(tar_info(folder + "/" + name, mtime, mode, os.path.getsize(src)), f)
        diff_id = "sha256:" + sha256_file(tar_path)

        gz_path = os.path.join(tmp, "layer.tar.gz")
        with open(tar_path, "rb") as src, open(gz_path, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                shutil.copyfileobj(src, gz, CHUNK)
        layer_digest, layer_size = put_blob(out_dir, gz_path)

    created = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": created,
                "created_by": "ferrovirt scripts/push-guest.sh: "
                + ", ".join(folder + "/" + name for _, name in files),
            }
        ],
    }
    config_digest, config_size = put_blob(out_dir, canonical(config))

    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
        "annotations": {"org.opencontainers.image.title": title},
    }
    manifest_digest, manifest_size = put_blob(out_dir, canonical(manifest))

    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    with open(os.path.join(out_dir, "index.json"), "wb") as f:
        f.write(canonical(index))
    with open(os.path.join(out_dir, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    print(manifest_digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
