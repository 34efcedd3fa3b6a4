#!/usr/bin/env bash
# Sets up and runs Omega's whole test suite: formatting, lints, and every
# unit, property and integration test through cargo-nextest. One build
# profile (dev, dependencies optimised) serves everything.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/omega-target}"
export CARGO_TERM_COLOR=never

# An S3-compatible server on loopback for the cold-tier integration test.
moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$moto_port" >"${TMPDIR:-/tmp}/omega-moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$moto_port/')" 2>/dev/null; then break; fi
  sleep 0.1
done
export OMEGA_TEST_S3_ENDPOINT="http://127.0.0.1:$moto_port"

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo nextest"
cargo nextest run --workspace --profile ci
