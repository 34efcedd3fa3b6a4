#!/bin/sh
# omega-entrypoint: starts `omega serve` in a container.
#
# On the first start of a node that should join an existing cluster (its data
# directory has no cluster identity yet), it adds `--join` with the token;
# on every later start the node restarts as the member it already is and no
# token is passed (a token is single-use, and `omega serve` refuses
# OMEGA_JOIN_TOKEN without --join).
#
# Variables read here (everything else, and all arguments, go to `omega serve`):
#   OMEGA_DATA_DIR          the data directory (set by the image: /var/lib/omega)
#   OMEGA_JOIN_ADDR         cluster address (host:8421) of a member to join
#   OMEGA_JOIN_ADDR_FILE    or a file holding it (read only if it exists)
#   OMEGA_JOIN_TOKEN        token printed by `omega cluster token` on a member
#   OMEGA_JOIN_TOKEN_FILE   or a file holding it (a Docker/Kubernetes secret)
# With no join address, a node with an empty data directory creates a new
# cluster of one. With a join address but no token, it stops with an error
# rather than create a cluster of its own.
set -eu

data="${OMEGA_DATA_DIR:?OMEGA_DATA_DIR must name the data directory}"

read_file() {
    # The first line of a file, whitespace trimmed; empty if it is missing.
    if [ -n "$1" ] && [ -r "$1" ]; then
        head -n 1 "$1" | tr -d ' \t\r\n'
    fi
}

join_addr="${OMEGA_JOIN_ADDR:-}"
if [ -z "$join_addr" ]; then
    join_addr="$(read_file "${OMEGA_JOIN_ADDR_FILE:-}")"
fi

if [ -s "$data/cluster/identity" ] || [ -z "$join_addr" ]; then
    # Already a member (a restart), or the node that creates the cluster.
    unset OMEGA_JOIN_TOKEN OMEGA_JOIN_TOKEN_FILE OMEGA_JOIN_ADDR OMEGA_JOIN_ADDR_FILE
    exec omega serve "$@"
fi

token="${OMEGA_JOIN_TOKEN:-}"
if [ -z "$token" ]; then
    token="$(read_file "${OMEGA_JOIN_TOKEN_FILE:-}")"
fi
if [ -z "$token" ]; then
    echo "omega-entrypoint: $data is not a cluster member yet and no join token is set;" >&2
    echo "omega-entrypoint: run 'omega cluster token' on a member and pass it as OMEGA_JOIN_TOKEN (or OMEGA_JOIN_TOKEN_FILE)" >&2
    exit 64
fi
unset OMEGA_JOIN_TOKEN_FILE OMEGA_JOIN_ADDR OMEGA_JOIN_ADDR_FILE
OMEGA_JOIN_TOKEN="$token"
export OMEGA_JOIN_TOKEN
echo "omega-entrypoint: first start: joining the cluster through $join_addr" >&2
exec omega serve --join "$join_addr" "$@"
