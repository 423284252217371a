#!/usr/bin/env bash
# The test command: set up what the tests need, then run every test of the workspace.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$(id -u)" = 0 ]; then "$root/scripts/setup.sh"; else sudo "$root/scripts/setup.sh"; fi
export PATH="$HOME/.cargo/bin:$PATH"
cd "$root"
cargo test --workspace --no-fail-fast -- --test-threads=2
