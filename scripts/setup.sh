#!/usr/bin/env bash
# Everything a fresh Debian 12 machine needs to build ferrovirt and run its tests.
# Idempotent; run as root (or through sudo).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ "$(id -u)" -ne 0 ]]; then
    exec sudo --preserve-env=PATH,HOME "$0" "$@"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends build-essential pkg-config ca-certificates curl
# A Rust toolchain, if the machine has none (Debian's rustc is too old for the dependencies).
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
# The tests' Debian packages (etcd, protoc, qemu-img) and kubectl 1.20 unpacked into .tools/.
"$here/install-test-deps.sh"
