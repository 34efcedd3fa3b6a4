#!/usr/bin/env bash
# Sets up, builds and runs Omega on this machine. Folders given as arguments
# are indexed in place into the store (never copied or modified) and the
# store's figures are printed; then the node runs in the foreground
# (`omega serve`: a cluster of one on first start) until Ctrl-C.
# Extra `omega serve` flags go in OMEGA_SERVE_ARGS, e.g.
#   OMEGA_JOIN_TOKEN=omega-join-… OMEGA_SERVE_ARGS="--join 10.0.0.5:8421"
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/omega-target}"
cargo build --quiet --bin omega
omega="$CARGO_TARGET_DIR/debug/omega"
if [ $# -gt 0 ]; then
  "$omega" store ingest --in-place "$@"
fi
"$omega" store stats
# shellcheck disable=SC2086 # OMEGA_SERVE_ARGS is split into flags on purpose
exec "$omega" serve ${OMEGA_SERVE_ARGS:-}
