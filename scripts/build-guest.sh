#!/usr/bin/env bash
# Build ferrovirt's test guest from Debian's packages:
#
#     scripts/build-guest.sh [OUT_DIR]          (default OUT_DIR: <repo>/target/guest)
#
# The guest is the Debian kernel (linux-image-amd64's current linux-image-6.x-amd64, fetched with
# `apt-get download` and unpacked with `dpkg -x`, never installed) and an initramfs made of
# busybox-static, the files in guest/rootfs (its /init, inittab, cloud-init runner, ...) and the kernel
# modules listed in guest/modules.list with their dependencies from the kernel's modules.dep.
# See guest/README.md for what the guest does.
#
# Outputs, in OUT_DIR:
#   disk.img       a bootable raw disk (MBR with syslinux's mbr.bin, one active FAT16 partition holding
#                  syslinux, vmlinuz, initrd.gz and syslinux.cfg): boots on SeaBIOS as virtio-blk,
#                  SATA or IDE, with no -kernel. Use it as a containerDisk.
#   disk.qcow2     the same disk as qcow2
#   vmlinuz, initrd.gz, cmdline   the kernel, initramfs and kernel command line (for direct kernel boot)
#   kernel-version the kernel's version (uname -r)
#   work/          downloads and intermediate trees (kept for the cache)
#
# Idempotent and cached: a step whose output is newer than all its inputs is skipped, so a second run
# takes about a second. apt-get (update, then install) runs only if a needed package is missing, and the
# kernel package is downloaded again only when linux-image-amd64 points at a new version.
# Needs root (or sudo) for apt-get only. Environment: GUEST_CMDLINE overrides the kernel command line.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
guest_src="$repo_root/guest"
out="${1:-$repo_root/target/guest}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$out/work"
mkdir -p "$work"
self="$repo_root/scripts/build-guest.sh"

cmdline="${GUEST_CMDLINE:-console=tty0 console=ttyS0,115200 quiet}"
disk_mib=32          # whole disk; the FAT16 partition starts at 1 MiB
part_start=2048      # sectors

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { printf 'build-guest: error: %s\n' "$*" >&2; exit 1; }

# stale OUTPUT INPUT...: true if OUTPUT is missing or older than any INPUT.
stale() {
    local target="$1" f
    shift
    [[ -e "$target" ]] || return 0
    for f in "$@"; do
        [[ "$f" -nt "$target" ]] && return 0
    done
    return 1
}

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# --- 1. packages --------------------------------------------------------------------------------
packages=(busybox-static syslinux syslinux-common mtools dosfstools cpio gzip kmod qemu-utils qemu-system-x86)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
busybox_bin=/bin/busybox
[[ -x "$busybox_bin" ]] || die "busybox-static's /bin/busybox is missing"
mbr_bin=/usr/lib/syslinux/mbr/mbr.bin
[[ -f "$mbr_bin" ]] || die "$mbr_bin is missing (package syslinux-common)"

# --- 2. the Debian kernel --------------------------------------------------------------------------
kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)"
if [[ -z "$kpkg" ]]; then
    log "linux-image-amd64 is unknown to apt; running apt-get update"
    as_root apt-get update -q
    kpkg="$(apt-cache depends linux-image-amd64 \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)"
fi
[[ -n "$kpkg" ]] || die "cannot resolve linux-image-amd64 to a versioned kernel package"
kver="${kpkg#linux-image-}"
kdeb_dir="$work/debs"
mkdir -p "$kdeb_dir"
kdeb="$(ls "$kdeb_dir/${kpkg}_"*_amd64.deb 2>/dev/null | head -n 1 || true)"
if [[ -z "$kdeb" ]]; then
    log "downloading $kpkg"
    # apt's sandbox user cannot write into root's folders: download in a temporary folder it can.
    dl="$(mktemp -d)"
    chmod 0777 "$dl"
    (cd "$dl" && apt-get download -q "$kpkg" >&2)
    mv "$dl"/"${kpkg}"_*_amd64.deb "$kdeb_dir"/
    rmdir "$dl"
    kdeb="$(ls "$kdeb_dir/${kpkg}_"*_amd64.deb | head -n 1)"
fi
kroot="$work/kernel-$kver"
if stale "$kroot/.unpacked" "$kdeb"; then
    log "unpacking $(basename "$kdeb")"
    rm -rf "$kroot"
    dpkg -x "$kdeb" "$kroot"
    # modules.dep is made by the package's postinst, which we do not run: make it here.
    depmod -b "$kroot" "$kver"
    touch "$kroot/.unpacked"
fi
kmods="$kroot/lib/modules/$kver"
vmlinuz_src="$kroot/boot/vmlinuz-$kver"
[[ -f "$vmlinuz_src" ]] || die "$vmlinuz_src is missing from $kdeb"
if stale "$out/vmlinuz" "$vmlinuz_src"; then
    cp "$vmlinuz_src" "$out/vmlinuz"
fi
echo "$kver" >"$out/kernel-version.new"
cmp -s "$out/kernel-version.new" "$out/kernel-version" 2>/dev/null \
    && rm "$out/kernel-version.new" || mv "$out/kernel-version.new" "$out/kernel-version"

# --- 3. kernel modules in load order ----------------------------------------------------------------
# Depth-first over modules.dep: every module comes after everything it depends on.
declare -A mod_path=() mod_deps=() mod_seen=()
while IFS= read -r line; do
    path="${line%%:*}"
    name="${path##*/}"
    name="${name%%.ko*}"
    name="${name//-/_}"
    mod_path[$name]="$path"
    mod_deps[$name]="${line#*:}"
done <"$kmods/modules.dep"
load_order=()
add_module() {
    local name="${1//-/_}" dep depname
    [[ -n "${mod_seen[$name]:-}" ]] && return 0
    [[ -n "${mod_path[$name]:-}" ]] || die "module $1 is not in $kpkg"
    mod_seen[$name]=1
    for dep in ${mod_deps[$name]}; do
        depname="${dep##*/}"
        add_module "${depname%%.ko*}"
    done
    load_order+=("${mod_path[$name]}")
}
while read -r m _; do
    case "$m" in '' | '#'*) continue ;; esac
    add_module "$m"
done <"$guest_src/modules.list"

# --- 4. the initramfs --------------------------------------------------------------------------------
mapfile -t rootfs_files < <(find "$guest_src/rootfs" -type f -o -type l)
if stale "$out/initrd.gz" "$self" "$guest_src/modules.list" "$busybox_bin" "$kroot/.unpacked" \
    "${rootfs_files[@]}"; then
    log "building initrd.gz (busybox, ${#load_order[@]} modules)"
    ir="$work/initramfs"
    rm -rf "$ir"
    mkdir -p "$ir"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,root,var/log,mnt,lib/modules/"$kver"}
    cp "$busybox_bin" "$ir/bin/busybox"
    # One symlink per applet, where busybox says it lives (bin/sh, sbin/init, usr/bin/...).
    while read -r applet; do
        applet="${applet#/}"
        [[ "$applet" == bin/busybox ]] && continue
        mkdir -p "$ir/$(dirname "$applet")"
        [[ -e "$ir/$applet" ]] || ln -s /bin/busybox "$ir/$applet"
    done < <("$busybox_bin" --list-full)
    cp -a "$guest_src/rootfs/." "$ir/"
    : >"$ir/etc/modules.load"
    for rel in "${load_order[@]}"; do
        mkdir -p "$ir/lib/modules/$kver/$(dirname "$rel")"
        case "$rel" in
        *.ko) cp "$kmods/$rel" "$ir/lib/modules/$kver/$rel" ;;
        *.ko.xz) xz -dc "$kmods/$rel" >"$ir/lib/modules/$kver/${rel%.xz}"; rel="${rel%.xz}" ;;
        *.ko.zst) zstd -qdc "$kmods/$rel" >"$ir/lib/modules/$kver/${rel%.zst}"; rel="${rel%.zst}" ;;
        *.ko.gz) gzip -dc "$kmods/$rel" >"$ir/lib/modules/$kver/${rel%.gz}"; rel="${rel%.gz}" ;;
        *) die "unknown module file $rel" ;;
        esac
        echo "$rel" >>"$ir/etc/modules.load"
    done
    cp "$kmods/modules.order" "$kmods/modules.builtin" "$kmods/modules.builtin.modinfo" \
        "$ir/lib/modules/$kver/" 2>/dev/null || true
    # So that `modprobe NAME` works from the guest's shell for the modules it has.
    depmod -b "$ir" "$kver"
    chmod 0755 "$ir/init"
    (cd "$ir" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) \
        | gzip -9n >"$out/initrd.gz.tmp"
    mv "$out/initrd.gz.tmp" "$out/initrd.gz"
fi

# --- 5. the bootable disk -------------------------------------------------------------------------
echo "$cmdline" >"$out/cmdline.new"
cmp -s "$out/cmdline.new" "$out/cmdline" 2>/dev/null && rm "$out/cmdline.new" || mv "$out/cmdline.new" "$out/cmdline"
if stale "$out/disk.img" "$self" "$out/vmlinuz" "$out/initrd.gz" "$out/cmdline" \
    "$guest_src/syslinux.cfg" "$mbr_bin" /usr/bin/syslinux; then
    log "building disk.img (${disk_mib} MiB: MBR + FAT16 with syslinux)"
    img="$out/disk.img.tmp"
    rm -f "$img"
    truncate -s "${disk_mib}M" "$img"
    total_sectors=$((disk_mib * 2048))
    part_sectors=$((total_sectors - part_start))
    # The FAT file system inside the file at the partition's offset: no loop device, no mount.
    mkfs.fat -F 16 -n FERROVIRT -i 46565652 -h "$part_start" --offset="$part_start" \
        "$img" $((part_sectors / 2)) >/dev/null
    sed "s|@CMDLINE@|$cmdline|" "$guest_src/syslinux.cfg" >"$work/syslinux.cfg"
    export MTOOLS_SKIP_CHECK=1
    mcopy -o -i "$img@@$((part_start * 512))" "$out/vmlinuz" "$out/initrd.gz" "$work/syslinux.cfg" ::/
    syslinux --install --offset $((part_start * 512)) "$img"
    # MBR: syslinux's boot code, then one active partition of type 0x0e (FAT16, LBA).
    dd if="$mbr_bin" of="$img" bs=440 count=1 conv=notrunc status=none
    le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) \
        $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }
    chs() { # LBA -> 3 CHS bytes for 255 heads, 63 sectors per track
        local c=$(($1 / (255 * 63))) h=$((($1 / 63) % 255)) s=$(($1 % 63 + 1))
        ((c > 1023)) && { c=1023; h=254; s=63; }
        printf '\\x%02x\\x%02x\\x%02x' "$h" $(((s & 63) | ((c >> 2) & 192))) $((c & 255))
    }
    entry="\\x80$(chs $part_start)\\x0e$(chs $((total_sectors - 1)))$(le32 $part_start)$(le32 $part_sectors)"
    printf "$entry" | dd of="$img" bs=1 seek=446 conv=notrunc status=none
    printf 'FVRT' | dd of="$img" bs=1 seek=440 conv=notrunc status=none  # disk signature
    printf '\x55\xaa' | dd of="$img" bs=1 seek=510 conv=notrunc status=none
    mv "$img" "$out/disk.img"
fi
if stale "$out/disk.qcow2" "$out/disk.img"; then
    log "converting to disk.qcow2"
    qemu-img convert -f raw -O qcow2 -c "$out/disk.img" "$out/disk.qcow2.tmp"
    mv "$out/disk.qcow2.tmp" "$out/disk.qcow2"
fi

log "done: $out/disk.img $out/disk.qcow2 (kernel $kver)"
ls -l "$out/disk.img" "$out/disk.qcow2" "$out/vmlinuz" "$out/initrd.gz" >&2
