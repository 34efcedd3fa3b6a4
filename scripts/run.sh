#!/usr/bin/env bash
# Sets up, builds and runs Omega on this machine. With folders as arguments
# they are indexed in place into the store (never copied or modified) and the
# store's figures are printed; without, the store's figures are printed.
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
