#!/usr/bin/env bash
# The main job, as far as ferrovirt goes today: build, start the API server on the embedded store,
# and drive it with kubectl the way a KubeVirt user would. (Booting the VM comes with `ferrovirt up`.)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
cd "$root"
cargo build --release -p ferrovirt
data="${FERROVIRT_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/ferrovirt}"
mkdir -p "$data"
log="$data/apiserver.log"
port="${FERROVIRT_PORT:-6443}"
target/release/ferrovirt apiserver --data-dir "$data" --listen "127.0.0.1:$port" >"$log.out" 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "ready at" "$log.out" 2>/dev/null && break; sleep 0.1; done
cat "$log.out"
kubectl_bin="$(command -v kubectl || echo "$root/.tools/kubectl-1.20/usr/bin/kubectl")"
export KUBECONFIG="$data/kubeconfig"
set -x
"$kubectl_bin" apply -f examples/vm.yaml
"$kubectl_bin" get vms
"$kubectl_bin" get vm testvm -o yaml
"$kubectl_bin" patch vm testvm --type=merge -p '{"spec":{"runStrategy":"Halted"}}'
"$kubectl_bin" get vms
