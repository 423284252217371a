#!/usr/bin/env bash
# Install what ferrovirt's tests need on Debian 12, then unpack kubectl 1.20 for the end-to-end tests.
# Idempotent; run as root (or through sudo).
#
#   etcd-server, etcd-client  a real etcd for the etcd store's tests and the end-to-end tests
#   protobuf-compiler         protoc, to build the etcd-client crate
#   qemu-utils                qemu-img, for disk images
#   ca-certificates, curl     fetching over HTTPS in set-up scripts
#   qemu-system-x86, ovmf     real QEMU (BIOS and EFI) for the launcher's tests
#   docker-registry           a real OCI registry on loopback for containerDisk tests
#   mtools, dosfstools        reading cloud-init FAT images back in tests; building the test guest
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ "$(id -u)" -ne 0 ]]; then
    exec sudo --preserve-env=PATH "$0" "$@"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    etcd-server \
    etcd-client \
    protobuf-compiler \
    qemu-utils \
    ca-certificates \
    curl \
    qemu-system-x86 \
    ovmf \
    docker-registry \
    mtools \
    dosfstools \
    tmux \
    iproute2 \
    openssh-client

"$repo_root/scripts/fetch-kubectl-1.20.sh"
# The test guest (Debian kernel + busybox) that the QEMU tests boot.
"$repo_root/scripts/build-guest.sh"
