#!/usr/bin/env bash
# Test of ferrovirt's test guest (see guest/README.md): builds it, boots it in QEMU with TCG as a plain
# disk (no -kernel) and checks what ferrovirt relies on. Exits non-zero if any check fails and ends with
# "N passed, N failed".
#
#     guest/check.sh            (root, or sudo for apt-get; needs Debian's archive the first time)
#
#  a. scripts/build-guest.sh builds disk.img and disk.qcow2
#  b. q35, disk.img on virtio-blk, a NoCloud disk (vfat, label CIDATA) on virtio-blk: the boot marker and
#     the line echoed by the user-data script appear on the serial console
#  d. typing `cat /proc/uptime` on the serial console (a unix socket) gives a number back, and exactly
#     one shell session has ttyS0 (none lost its terminal to another)
#  c. QMP system_powerdown: QEMU exits by itself (ACPI power button -> acpid -> poweroff)
#  f. the same on pc (i440fx) with disk.qcow2 and an ISO 9660 NoCloud disk (label cidata), as KubeVirt
#     makes it
#  e. Debian's docker-registry on 127.0.0.1 (a free port, a temporary store), scripts/push-guest.sh, and
#     the manifest and the layer (disk/disk.qcow2, 107:107, 0440) read back over the registry API; the
#     same for the kernelBoot image (GUEST_IMAGE=kernel-boot: boot/vmlinuz, boot/initrd.gz)
#
# Environment: GUEST_DIR (build output, default <repo>/target/guest), BOOT_TIMEOUT (seconds to the boot
# marker, default 90: TCG on a busy 2-core machine), POWERDOWN_TIMEOUT (default 20).
# Every QEMU and registry process it starts is stopped by its PID when it ends.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
guest_dir="${GUEST_DIR:-$repo_root/target/guest}"
boot_timeout="${BOOT_TIMEOUT:-90}"
powerdown_timeout="${POWERDOWN_TIMEOUT:-20}"
python=python3
command -v "$python" >/dev/null || python=/usr/bin/python3

tmp="$(mktemp -d /tmp/ferrovirt-guest-check.XXXXXX)"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill "$p" 2>/dev/null
            for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$p" 2>/dev/null
        fi
        wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$*"; }
note() { printf '      %s\n' "$*"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for FILE REGEX TIMEOUT: until grep -E finds REGEX in FILE.
wait_for() {
    local deadline=$(($(date +%s) + $3))
    while (($(date +%s) < deadline)); do
        grep -aqE "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# wait_exit PID TIMEOUT: until the process has exited (it is our child: reap it and keep its status).
exit_status=
wait_exit() {
    local deadline=$(($(date +%s) + $2))
    while (($(date +%s) < deadline)); do
        if ! kill -0 "$1" 2>/dev/null; then
            wait "$1"
            exit_status=$?
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# qmp SOCKET COMMAND: greeting, qmp_capabilities, COMMAND; prints COMMAND's reply.
qmp() {
    "$python" - "$1" "$2" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rw")
def reply():
    while True:
        msg = json.loads(f.readline())
        if "return" in msg or "error" in msg:
            return msg
json.loads(f.readline())  # greeting
f.write(json.dumps({"execute": "qmp_capabilities"}) + "\n"); f.flush()
reply()
f.write(json.dumps({"execute": sys.argv[2]}) + "\n"); f.flush()
msg = reply()
print(json.dumps(msg))
sys.exit(0 if "return" in msg else 1)
EOF
}

# serial_cmd SOCKET COMMAND REGEX TIMEOUT: type COMMAND on the serial console; print the first output
# line that matches REGEX.
serial_cmd() {
    "$python" - "$@" <<'EOF'
import re, socket, sys, time
path, cmd, pattern, timeout = sys.argv[1], sys.argv[2], re.compile(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.settimeout(0.5)
deadline = time.time() + timeout
buf = b""
s.sendall(b"\r")
time.sleep(0.5)
s.sendall(cmd.encode() + b"\r")
while time.time() < deadline:
    try:
        data = s.recv(4096)
    except socket.timeout:
        continue
    if not data:
        break
    buf += data
    for line in buf.decode("utf-8", "replace").replace("\r", "\n").split("\n"):
        if pattern.search(line):
            print(line.strip())
            sys.exit(0)
sys.stderr.write("no match; console said: %r\n" % buf[-500:])
sys.exit(1)
EOF
}

# start_qemu NAME MACHINE BOOT_DISK BOOT_FORMAT CIDATA CIDATA_FORMAT: start QEMU in the background; sets
# qemu_pid, qemu_t0 and the files $tmp/NAME.{serial.sock,serial.log,qmp.sock,stderr}.
start_qemu() {
    local name="$1" machine="$2" disk="$3" fmt="$4" cidata="$5" cifmt="$6"
    qemu-system-x86_64 -M "$machine" -accel tcg -m 256 -smp 1 -nographic -monitor none \
        -drive "file=$disk,if=virtio,format=$fmt,snapshot=on" \
        -drive "file=$cidata,if=virtio,format=$cifmt,readonly=on" \
        -chardev "socket,id=ser0,path=$tmp/$name.serial.sock,server=on,wait=off,logfile=$tmp/$name.serial.log" \
        -serial chardev:ser0 \
        -qmp "unix:$tmp/$name.qmp.sock,server=on,wait=off" \
        -net none \
        </dev/null >"$tmp/$name.stdout" 2>"$tmp/$name.stderr" &
    qemu_pid=$!
    qemu_t0="$(now)"
    pids+=("$qemu_pid")
}

show_tail() {
    note "last lines of $1:"
    tail -n "${2:-15}" "$1" 2>/dev/null | tr -d '\r' | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g; s/^/        | /'
}

# powerdown NAME: system_powerdown over QMP, QEMU must exit by itself.
powerdown() {
    local name="$1" t0
    t0="$(now)"
    if ! qmp "$tmp/$name.qmp.sock" system_powerdown >"$tmp/$name.qmp.out" 2>&1; then
        fail "$name: QMP system_powerdown: $(cat "$tmp/$name.qmp.out")"
        return
    fi
    if wait_exit "$qemu_pid" "$powerdown_timeout"; then
        if [[ "$exit_status" -eq 0 ]] && grep -aq 'ferrovirt-guest: ACPI power button pressed' "$tmp/$name.serial.log"; then
            pass "$name: system_powerdown -> the guest powered off, QEMU exited 0 in $(secs "$t0" "$(now)") s"
        else
            fail "$name: QEMU exited with status $exit_status after system_powerdown (power button seen: $(grep -ac 'power button pressed' "$tmp/$name.serial.log"))"
            show_tail "$tmp/$name.serial.log"
        fi
    else
        fail "$name: QEMU still running ${powerdown_timeout} s after system_powerdown"
        show_tail "$tmp/$name.serial.log"
    fi
}

# boot_checks NAME TOKEN: the marker and the user-data line.
boot_checks() {
    local name="$1" token="$2" t
    if wait_for "$tmp/$name.serial.log" 'ferrovirt-guest: booted' "$boot_timeout"; then
        t="$(secs "$qemu_t0" "$(now)")"
        pass "$name: boot marker after $t s (QEMU start to marker; $(grep -ao 'uptime [0-9.]*s' "$tmp/$name.serial.log" | head -n 1) of kernel)"
    else
        fail "$name: no boot marker within $boot_timeout s"
        show_tail "$tmp/$name.serial.log"
        show_tail "$tmp/$name.stderr" 5
        return 1
    fi
    if wait_for "$tmp/$name.serial.log" "^user-data says $token" 30; then
        pass "$name: the NoCloud user-data script ran (\"user-data says $token\" on the console after $(secs "$qemu_t0" "$(now)") s)"
    else
        fail "$name: no user-data output within 30 s of the marker"
        show_tail "$tmp/$name.serial.log"
    fi
}

echo "== a. build"
t0="$(now)"
if "$repo_root/scripts/build-guest.sh" "$guest_dir" >"$tmp/build.log" 2>&1 \
    && [[ -s "$guest_dir/disk.img" && -s "$guest_dir/disk.qcow2" ]]; then
    pass "build-guest.sh in $(secs "$t0" "$(now)") s: disk.img $(du -k "$guest_dir/disk.img" | cut -f1) KiB used, disk.qcow2 $(($(stat -c %s "$guest_dir/disk.qcow2") / 1024)) KiB"
else
    fail "build-guest.sh"
    tail -n 30 "$tmp/build.log"
    echo "$passed passed, $failed failed"
    exit 1
fi

for p in mtools dosfstools genisoimage; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        run=()
        [[ "$(id -u)" -eq 0 ]] || run=(sudo)
        DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -q --no-install-recommends "$p" >/dev/null 2>&1 \
            || { "${run[@]}" apt-get update -q >/dev/null 2>&1 \
                && DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -q --no-install-recommends "$p" >/dev/null 2>&1; }
    fi
done

token="check-$$-$RANDOM$RANDOM"
mkdir -p "$tmp/cidata"
printf '#!/bin/sh\necho "user-data says %s from $(hostname)"\n' "$token" >"$tmp/cidata/user-data"
printf 'instance-id: check-%s\nlocal-hostname: guest-check\n' "$token" >"$tmp/cidata/meta-data"

echo "== b. q35, disk.img as virtio-blk, NoCloud vfat disk"
truncate -s 1M "$tmp/cidata.vfat"
mkfs.vfat -n CIDATA "$tmp/cidata.vfat" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -i "$tmp/cidata.vfat" "$tmp/cidata/user-data" "$tmp/cidata/meta-data" ::/
start_qemu q35 q35 "$guest_dir/disk.img" raw "$tmp/cidata.vfat" raw
if boot_checks q35 "$token"; then
    echo "== d. serial console"
    if line="$(serial_cmd "$tmp/q35.serial.sock" 'cat /proc/uptime' '^[0-9]+\.[0-9]+ [0-9]+\.[0-9]+$' 30 2>"$tmp/serial.err")"; then
        pass "q35: 'cat /proc/uptime' on the serial console answered '$line'"
    else
        fail "q35: no answer to 'cat /proc/uptime' on the serial console: $(cat "$tmp/serial.err")"
    fi
    # Exactly one shell owns ttyS0 (tty 4:64 = 1088) and no shell session lost its terminal: shells
    # stealing the serial console from each other break job control.
    count='echo SHELLS $(for f in /proc/[0-9]*/stat; do read -r p c x pp pg se tn rest <"$f"; [ "$p" = "$se" ] && [ "$c" = "(sh)" ] && echo "$tn"; done | awk '"'"'{n[$1]++} END {printf "ttyS0=%d none=%d", n[1088], n[0]}'"'"')'
    if line="$(serial_cmd "$tmp/q35.serial.sock" "$count" '^SHELLS ttyS0=[0-9]+ none=[0-9]+$' 30 2>"$tmp/serial.err")" \
        && [[ "$line" == "SHELLS ttyS0=1 none=0" ]]; then
        pass "q35: one shell session on ttyS0, none without a terminal ('$line')"
    else
        fail "q35: shells on the serial console: '${line:-}' $(cat "$tmp/serial.err")"
    fi
    if grep -aq 'from guest-check' "$tmp/q35.serial.log"; then
        pass "q35: hostname set from meta-data's local-hostname"
    else
        fail "q35: hostname not set from meta-data"
    fi
    echo "== c. ACPI power-off"
    powerdown q35
fi

echo "== f. pc (i440fx), disk.qcow2 as virtio-blk, NoCloud ISO 9660 disk"
if genisoimage -quiet -o "$tmp/cidata.iso" -V cidata -J -r "$tmp/cidata" 2>"$tmp/geniso.err"; then
    start_qemu pc pc "$guest_dir/disk.qcow2" qcow2 "$tmp/cidata.iso" raw
    if boot_checks pc "$token"; then
        powerdown pc
    fi
else
    fail "pc: genisoimage could not make the ISO: $(cat "$tmp/geniso.err")"
fi

echo "== e. containerDisk in Debian's docker-registry"
if ! [[ -x /usr/bin/docker-registry ]]; then
    run=()
    [[ "$(id -u)" -eq 0 ]] || run=(sudo)
    DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -q --no-install-recommends docker-registry >/dev/null 2>&1
fi
if [[ -x /usr/bin/docker-registry ]]; then
    port="$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    mkdir -p "$tmp/registry"
    cat >"$tmp/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $tmp/registry
http:
  addr: 127.0.0.1:$port
EOF
    /usr/bin/docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
    registry_pid=$!
    pids+=("$registry_pid")
    up=
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && { up=1; break; }
        kill -0 "$registry_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$up" ]]; then
        fail "docker-registry did not answer on 127.0.0.1:$port"
        tail -n 10 "$tmp/registry.log"
    elif digest="$("$repo_root/scripts/push-guest.sh" "127.0.0.1:$port" 2>"$tmp/push.err")"; then
        pass "push-guest.sh 127.0.0.1:$port pushed ferrovirt/guest:latest ($digest)"
        accept='application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'
        if curl -sf -H "Accept: $accept" -D "$tmp/manifest.headers" -o "$tmp/manifest.json" \
            "http://127.0.0.1:$port/v2/ferrovirt/guest/manifests/latest" \
            && layer="$("$python" -c '
import json, sys
m = json.load(open(sys.argv[1]))
assert m["schemaVersion"] == 2, m
assert m["mediaType"] == "application/vnd.oci.image.manifest.v1+json", m
assert len(m["layers"]) == 1, m
print(m["layers"][0]["digest"])' "$tmp/manifest.json")" \
            && grep -qi "docker-content-digest: $digest" "$tmp/manifest.headers"; then
            pass "GET /v2/ferrovirt/guest/manifests/latest: an OCI manifest with one layer, digest $digest"
            if curl -sf -o "$tmp/layer.tgz" "http://127.0.0.1:$port/v2/ferrovirt/guest/blobs/$layer" \
                && tar -tvzf "$tmp/layer.tgz" --numeric-owner >"$tmp/layer.list" \
                && grep -qE '^-r--r----- 107/107 .* disk/disk\.qcow2$' "$tmp/layer.list" \
                && tar -xzf "$tmp/layer.tgz" -C "$tmp" disk/disk.qcow2 \
                && cmp -s "$tmp/disk/disk.qcow2" "$guest_dir/disk.qcow2"; then
                pass "the layer holds disk/disk.qcow2 (107:107, 0440), identical to the built disk"
            else
                fail "the layer is not disk/disk.qcow2 107:107 0440 with the built disk: $(cat "$tmp/layer.list" 2>/dev/null)"
            fi
        else
            fail "manifest check: $(cat "$tmp/manifest.json" 2>/dev/null)"
        fi
    else
        fail "push-guest.sh: $(tail -n 5 "$tmp/push.err")"
    fi
    if kdigest="$(GUEST_IMAGE=kernel-boot "$repo_root/scripts/push-guest.sh" "127.0.0.1:$port" 2>"$tmp/push-kernel.err")" \
        && curl -sf -H "Accept: $accept" -o "$tmp/kmanifest.json" \
            "http://127.0.0.1:$port/v2/ferrovirt/guest-kernel/manifests/$kdigest" \
        && klayer="$("$python" -c '
import json, sys
m = json.load(open(sys.argv[1]))
assert len(m["layers"]) == 1, m
print(m["layers"][0]["digest"])' "$tmp/kmanifest.json")" \
        && curl -sf -o "$tmp/klayer.tgz" "http://127.0.0.1:$port/v2/ferrovirt/guest-kernel/blobs/$klayer" \
        && mkdir -p "$tmp/k" && tar -xzf "$tmp/klayer.tgz" -C "$tmp/k" \
        && cmp -s "$tmp/k/boot/vmlinuz" "$guest_dir/vmlinuz" && cmp -s "$tmp/k/boot/initrd.gz" "$guest_dir/initrd.gz"; then
        pass "GUEST_IMAGE=kernel-boot push-guest.sh pushed ferrovirt/guest-kernel:latest ($kdigest) with boot/vmlinuz and boot/initrd.gz"
    else
        fail "kernel-boot image: $(tail -n 5 "$tmp/push-kernel.err")"
    fi
else
    fail "docker-registry is not installed and apt-get could not install it"
fi

echo "$passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
