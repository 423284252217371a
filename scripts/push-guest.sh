#!/usr/bin/env bash
# Push ferrovirt's test guest to a registry as a KubeVirt containerDisk (or as a kernelBoot container):
#
#     scripts/push-guest.sh REGISTRY_HOST:PORT [REPO:TAG]     (default REPO:TAG: ferrovirt/guest:latest)
#
# e.g. scripts/push-guest.sh 127.0.0.1:5000  then  containerDisk.image: 127.0.0.1:5000/ferrovirt/guest:latest
#
#     GUEST_IMAGE=kernel-boot scripts/push-guest.sh 127.0.0.1:5000   (default REPO:TAG ferrovirt/guest-kernel:latest)
#
# pushes the guest's kernel and initramfs instead, as boot/vmlinuz and boot/initrd.gz (0444): use it as
#     firmware: {kernelBoot: {kernelArgs: "console=ttyS0,115200 quiet", container: {
#         image: 127.0.0.1:5000/ferrovirt/guest-kernel:latest, kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.gz}}}
# (the whole guest lives in the initramfs, so it needs no disk).
#
# The image is what KubeVirt expects of a containerDisk: one layer, a tar holding disk/disk.qcow2 owned by
# 107:107 with mode 0440 (guest/make-oci-layout.py writes it as an OCI image layout, with sha256 digests),
# pushed over plain HTTP by Debian's skopeo:
#     skopeo copy oci:LAYOUT:TAG docker://HOST:PORT/REPO:TAG --dest-tls-verify=false
# The disk comes from scripts/build-guest.sh, which is run first (it is cached: a no-op when up to date).
#
# Environment:
#   GUEST_DIR     build output folder (default <repo>/target/guest)
#   GUEST_FORMAT  qcow2 (default) or raw: which disk goes into the image (disk/disk.qcow2 or disk/disk.img)
#   GUEST_IMAGE   container-disk (default) or kernel-boot
# Installs skopeo with apt-get if it is missing. Prints the pushed manifest's digest on stdout.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -lt 1 || $# -gt 2 || "$1" == -h || "$1" == --help ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
registry="$1"
kind="${GUEST_IMAGE:-container-disk}"
case "$kind" in
container-disk) ref="${2:-ferrovirt/guest:latest}" ;;
kernel-boot) ref="${2:-ferrovirt/guest-kernel:latest}" ;;
*) echo "push-guest: GUEST_IMAGE must be container-disk or kernel-boot" >&2; exit 2 ;;
esac
if [[ "${ref##*/}" == *:* ]]; then
    repo="${ref%:*}"
    tag="${ref##*:}"
else
    repo="$ref"
    tag=latest
fi
guest_dir="${GUEST_DIR:-$repo_root/target/guest}"
case "${GUEST_FORMAT:-qcow2}" in
qcow2) disk="$guest_dir/disk.qcow2" ;;
raw) disk="$guest_dir/disk.img" ;;
*) echo "push-guest: GUEST_FORMAT must be qcow2 or raw" >&2; exit 2 ;;
esac

log() { printf 'push-guest: %s\n' "$*" >&2; }

"$repo_root/scripts/build-guest.sh" "$guest_dir" >/dev/null

if ! command -v skopeo >/dev/null; then
    log "installing skopeo"
    run=()
    [[ "$(id -u)" -eq 0 ]] || run=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${run[@]}" apt-get update -q >&2
    "${run[@]}" apt-get install -y -q --no-install-recommends skopeo >&2
fi
python=python3
command -v "$python" >/dev/null || python=/usr/bin/python3

layout="$(mktemp -d)"
trap 'rm -rf "$layout"' EXIT
if [[ "$kind" == kernel-boot ]]; then
    log "writing the OCI layout for vmlinuz and initrd.gz"
    "$python" "$repo_root/guest/make-oci-layout.py" --kernel-boot "$guest_dir/vmlinuz" "$guest_dir/initrd.gz" \
        "$layout" "$tag" >/dev/null
else
    log "writing the OCI layout for $(basename "$disk")"
    "$python" "$repo_root/guest/make-oci-layout.py" "$disk" "$layout" "$tag" >/dev/null
fi

policy=()
[[ -f /etc/containers/policy.json ]] || policy=(--insecure-policy)
log "pushing to $registry/$repo:$tag"
skopeo "${policy[@]}" copy --quiet --dest-tls-verify=false \
    --digestfile "$layout/pushed-digest" \
    "oci:$layout:$tag" "docker://$registry/$repo:$tag" >&2
cat "$layout/pushed-digest"
echo
