#!/usr/bin/env bash
# The HA benchmark (issue 8): every figure pgha competes on, as `name: value` lines on stdout
# (progress on stderr). A benchmark prints and never asserts. Runs, one after the other, each
# against its own local 3-node cluster from `pgha demo` (built once, release):
#   scripts/bench-raft.sh    re-election after kill -9 of the Raft leader, Raft commit latency,
#                            idle CPU and RSS of `pgha run`
#   scripts/bench-ha.sh      bootstrap to 3 streaming nodes; write gap of switchover, kill -9 of
#                            the primary's node and of its postmaster (median and worst of
#                            ROUNDS); RSS; lost acknowledged rows — asynchronous, then
#                            SYNC_MODE=on and SYNC_MODE=quorum
#   scripts/bench-proxy.sh   pgbench through pgha's proxy vs direct vs HAProxy
# Usage: scripts/bench.sh   (ROUNDS=10 for the HA rounds; SKIP_SYNC=1 skips the synchronous
# runs, SKIP_PROXY=1 the proxy run). About 25 minutes on 2 cores. Needs psql, jq, pgbench,
# haproxy (scripts/install-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
PGHA="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release/pgha"
export PGHA
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r)"
echo "pgha_version: $("$PGHA" --version | awk '{print $2}')"
echo "== raft" >&2
scripts/bench-raft.sh
echo "== ha (asynchronous)" >&2
scripts/bench-ha.sh
if [ -z "${SKIP_SYNC:-}" ]; then
  echo "== ha (synchronous_mode on)" >&2
  SYNC_MODE=on scripts/bench-ha.sh | grep '^sync_'
  echo "== ha (synchronous_mode quorum)" >&2
  SYNC_MODE=quorum scripts/bench-ha.sh | grep '^sync_'
fi
if [ -z "${SKIP_PROXY:-}" ]; then
  echo "== proxy" >&2
  scripts/bench-proxy.sh
fi
