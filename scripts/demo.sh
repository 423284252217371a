#!/usr/bin/env bash
# The main job: `ferrovirt up` on this machine with the example VM (examples/vm.yaml) booted to its
# serial console. It builds ferrovirt and the test guest, serves the guest as a containerDisk from a
# registry on 127.0.0.1:5000 (Debian's docker-registry), starts ferrovirt, applies the VM with
# kubectl, and shows the guest's console until the cloud-init line appears.
#
#   scripts/setup.sh && scripts/demo.sh
#
# Ctrl-C stops ferrovirt, which stops the VM. FERROVIRT_DEMO_EXIT=1 stops as soon as the line shows.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
cd "$root"
data="${FERROVIRT_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/ferrovirt}"
mkdir -p "$data"

echo "== building ferrovirt and the test guest"
cargo build --release -p ferrovirt
scripts/build-guest.sh >/dev/null

up=""
registry=""
cleanup() {
    # ferrovirt up stops its VMs on SIGINT (as on Ctrl-C); then the registry.
    if [ -n "$up" ]; then kill -INT "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; fi
    if [ -n "$registry" ]; then kill -TERM "$registry" 2>/dev/null || true; wait "$registry" 2>/dev/null || true; fi
}
trap cleanup EXIT

echo "== serving the guest as a containerDisk at 127.0.0.1:5000/ferrovirt/guest:latest"
mkdir -p "$data/registry"
cat >"$data/registry/config.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $data/registry/storage
http:
  addr: 127.0.0.1:5000
YAML
/usr/bin/docker-registry serve "$data/registry/config.yml" >"$data/registry/registry.log" 2>&1 &
registry=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && break; sleep 0.1; done
scripts/push-guest.sh 127.0.0.1:5000 >/dev/null

echo "== ferrovirt up"
target/release/ferrovirt up --data-dir "$data" --node-name node1 >"$data/up.out" 2>"$data/up.log" &
up=$!
for _ in $(seq 100); do grep -q "^kubeconfig:" "$data/up.out" 2>/dev/null && break; sleep 0.1; done
cat "$data/up.out"
export KUBECONFIG="$data/control-plane/kubeconfig"
kubectl_bin="$(command -v kubectl || echo "$root/.tools/kubectl-1.20/usr/bin/kubectl")"

echo "== kubectl apply -f examples/vm.yaml"
"$kubectl_bin" apply -f examples/vm.yaml
for _ in $(seq 600); do
    phase="$("$kubectl_bin" get vmi testvm -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    [ "$phase" = Running ] && break
    sleep 0.2
done
"$kubectl_bin" get vms
"$kubectl_bin" get vmis
uid="$("$kubectl_bin" get vmi testvm -o jsonpath='{.metadata.uid}')"
pod="$("$kubectl_bin" get pods -l "kubevirt.io/created-by=$uid" -o jsonpath='{.items[0].metadata.uid}')"
log="$data/nodes/node1/pods/$pod/serial.log"

echo "== the guest's serial console ($log)"
for _ in $(seq 900); do
    [ -f "$log" ] && grep -q "hello from ferrovirt cloud-init" "$log" && break
    sleep 0.2
done
tr -d '\r' <"$log" | grep -a -E "ferrovirt-guest|cloud-init|hello from" || true
if ! grep -q "hello from ferrovirt cloud-init" "$log"; then
    echo "the cloud-init line did not appear; see $data/up.log" >&2
    exit 1
fi
echo "== testvm is running. Console log: $log"
if [ "${FERROVIRT_DEMO_EXIT:-0}" != 1 ] && [ -t 0 ]; then
    echo "Press Ctrl-C to stop ferrovirt (it stops the VM)."
    wait "$up" || true
fi
