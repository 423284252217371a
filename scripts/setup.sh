#!/usr/bin/env bash
# Everything a fresh Debian 12 machine needs to build ferrovirt and run its tests.
# Idempotent; run as root (or through sudo).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
  ca-certificates curl build-essential pkg-config protobuf-compiler \
  etcd-server etcd-client qemu-utils
# A Rust toolchain, if the machine has none (Debian's rustc is too old for the dependencies).
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
# kubectl 1.20 (Debian's kubernetes-client), unpacked into the project, for the end-to-end tests.
if [ -x "$here/fetch-kubectl-1.20.sh" ]; then
  "$here/fetch-kubectl-1.20.sh"
fi
