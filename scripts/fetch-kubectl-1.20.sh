#!/usr/bin/env bash
# Unpack Debian 12's kubectl 1.20 (package `kubernetes-client`) into <repo>/.tools/kubectl-1.20/,
# without installing it: the package conflicts with a kubectl that some machines already have at
# /usr/bin/kubectl. The end-to-end tests run kubectl scenarios with this binary:
#   <repo>/.tools/kubectl-1.20/usr/bin/kubectl
# Idempotent: does nothing when the binary is already there.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo_root/.tools/kubectl-1.20"
kubectl="$dest/usr/bin/kubectl"

if [[ -x "$kubectl" ]]; then
    echo "kubectl 1.20 already at $kubectl"
    exit 0
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
# `apt-get download` writes into the current directory; the _apt user must be able to write there.
chmod 0777 "$workdir"

cd "$workdir"
if ! apt-get download kubernetes-client; then
    echo "apt-get download failed; refreshing the package lists and trying once more" >&2
    apt-get update
    apt-get download kubernetes-client
fi

deb=(kubernetes-client_*.deb)
if [[ ! -f "${deb[0]}" ]]; then
    echo "error: apt-get download produced no kubernetes-client .deb in $workdir" >&2
    exit 1
fi

# Unpack into a staging folder first, so an interrupted run never leaves a half-filled $dest.
staging="$workdir/unpacked"
dpkg -x "${deb[0]}" "$staging"
if [[ ! -x "$staging/usr/bin/kubectl" ]]; then
    echo "error: ${deb[0]} has no usr/bin/kubectl" >&2
    exit 1
fi
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$staging" "$dest"

"$kubectl" version --client=true 2>/dev/null | head -n 1 || true
echo "kubectl 1.20 unpacked to $kubectl"
