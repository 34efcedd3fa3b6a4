#!/usr/bin/env bash
# Installs what Omega needs to build, run and test on Debian (run as root):
# clang/libclang for RocksDB's bindings, ffmpeg, restic and etcd (benchmark peers),
# a Rust toolchain, cargo-nextest, moto's S3 server for the S3 tests, the
# m3u8 playlist parser the HLS tests check playlists with, the Python
# packages that validate deploy/ and the client libraries of the protocol
# tests (py-sonic, feedparser, jellyfin-apiclient-python), Node.js and npm
# (the web app's toolchain, from the npm registry) and Chromium (the web
# app's end-to-end tests), iproute2 and nftables (the chaos harness's
# network namespaces and partitions), curl (the image's healthcheck, which
# scripts/deploy_local.py runs), mpv (a player the HLS tests open masters
# with), and schemathesis in a virtual environment (the API conformance
# test). Then it builds the web app, which the `omega`
# binary embeds.
# Safe to run again: each step is skipped when already done.
set -euo pipefail

need_apt=()
command -v clang >/dev/null || need_apt+=(clang)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
command -v restic >/dev/null || need_apt+=(restic)
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip python3-venv)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nft >/dev/null || need_apt+=(nftables)
command -v curl >/dev/null || need_apt+=(curl)
command -v mpv >/dev/null || need_apt+=(mpv)
command -v cargo >/dev/null || [ -x "$HOME/.cargo/bin/cargo" ] || need_apt+=(rustup)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
  rustup default stable >&2
fi
if ! command -v cargo-nextest >/dev/null; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >&2
fi
if ! python3 -c 'import moto.server' 2>/dev/null; then
  echo "setup: installing moto[server] (S3 server for the cold-tier tests)" >&2
  python3 -m pip install --quiet 'moto[server]' >&2 || python3 -m pip install --quiet --break-system-packages 'moto[server]' >&2
fi
for module in yaml:pyyaml jsonschema:jsonschema kubernetes_validate:kubernetes-validate dockerfile_parse:dockerfile-parse libsonic:py-sonic feedparser:feedparser jellyfin_apiclient_python:jellyfin-apiclient-python; do
  if ! python3 -c "import ${module%%:*}" 2>/dev/null; then
    echo "setup: installing ${module#*:} (deploy validation, client compatibility tests)" >&2
    python3 -m pip install --quiet "${module#*:}" >&2 || python3 -m pip install --quiet --break-system-packages "${module#*:}" >&2
  fi
done
if ! python3 -c 'import m3u8' 2>/dev/null; then
  echo "setup: installing m3u8 (HLS playlist parser for the HLS tests)" >&2
  python3 -m pip install --quiet m3u8 >&2 || python3 -m pip install --quiet --break-system-packages m3u8 >&2
fi
# schemathesis (the API conformance test) in its own virtual environment:
# it pins versions of libraries that the tools above also use.
schemathesis_version=4.32.5
venv="$HOME/.cache/omega-venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$schemathesis_version"; then
  echo "setup: installing schemathesis $schemathesis_version (API conformance test) into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet "schemathesis==$schemathesis_version" >&2
fi

# The web app: dependencies exactly as locked (again only when the lock
# changed), then a production build into node/web/dist.
web="$(cd "$(dirname "$0")/.." && pwd)/node/web"
if [ ! -d "$web/node_modules" ] || ! cmp -s "$web/package-lock.json" "$web/node_modules/.omega-lock"; then
  echo "setup: installing the web app's dependencies (npm ci)" >&2
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error >&2 && cp package-lock.json node_modules/.omega-lock)
fi
echo "setup: building the web app" >&2
(cd "$web" && npm run --silent build >&2)
