#!/usr/bin/env bash
# Install what ferrovirt's tests need on Debian 12, then unpack kubectl 1.20 for the end-to-end tests.
# Idempotent; run as root (or through sudo).
#
#   etcd-server, etcd-client  a real etcd for the etcd store's tests and the end-to-end tests
#   protobuf-compiler         protoc, to build the etcd-client crate
#   qemu-utils                qemu-img, for disk images
#   ca-certificates, curl     fetching over HTTPS in set-up scripts
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
    curl

"$repo_root/scripts/fetch-kubectl-1.20.sh"
