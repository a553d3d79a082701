#!/usr/bin/env bash
# False-alarm check of the lease defaults (a benchmark: prints, never asserts): a local 3-node
# pgha cluster under full pgbench load on every node for DURATION seconds (default 600) with no
# fault: read-write pgbench on the primary, select-only pgbench on both replicas, all at once on
# this machine's cores. Prints transactions per second, the number of promotions (failovers),
# lease epochs granted, and every lease renewal that failed or was rejected and every demotion
# in the node logs. With good defaults all of those are 0 (one epoch: the bootstrap's).
# Usage: scripts/soak-pgbench.sh   (DURATION=600 CLIENTS=8; PGHA=<binary> to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
CLIENTS=${CLIENTS:-8}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
if [ -z "${PGHA:-}" ]; then
  cargo build --release --quiet
  PGHA="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release/pgha"
fi
work=$(mktemp -d /tmp/pgha-soak.XXXXXX)
chmod 755 "$work"
demo_pid=
declare -a BENCH=()
cleanup() {
  for p in "${BENCH[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$demo_pid" ] && kill -TERM "$demo_pid" 2>/dev/null || true
  [ -n "$demo_pid" ] && wait "$demo_pid" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

"$PGHA" demo --dir "$work/c" --keep > "$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 1800); do grep -q "Ctrl-C stops" "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
grep -q "Ctrl-C stops" "$work/demo.out" || { tail "$work/demo.err"; echo "demo did not come up" >&2; exit 1; }
CFG1=$work/c/node1/pgha.yml
dsn_of() { "$PGHA" ctl --config "$CFG1" dsn --member "$1"; }
leader=$("$PGHA" ctl --config "$CFG1" list -f json | jq -r '.[] | select(.Role == "Leader") | .Member')
replicas=$("$PGHA" ctl --config "$CFG1" list -f json | jq -r '.[] | select(.Role != "Leader") | .Member')
"$PGBENCH" -i -q -s 20 "$(dsn_of "$leader")" >"$work/init.log" 2>&1
sleep 3
epochs_before=$("$PGHA" ctl --config "$CFG1" history -f json | jq length)
echo "soak: ${DURATION}s, pgbench -c $CLIENTS read-write on $leader, select-only on $(echo $replicas | tr '\n' ' ')" >&2
"$PGBENCH" -n -c "$CLIENTS" -j 2 -T "$DURATION" -P 60 "$(dsn_of "$leader")" >"$work/rw.log" 2>&1 &
BENCH+=("$!")
for r in $replicas; do
  "$PGBENCH" -n -S -c "$CLIENTS" -j 2 -T "$DURATION" "$(dsn_of "$r")" >"$work/ro-$r.log" 2>&1 &
  BENCH+=("$!")
done
for p in "${BENCH[@]}"; do wait "$p" || true; done
BENCH=()
echo "primary_read_write_tps: $(grep -oP 'tps = \K[0-9.]+' "$work/rw.log" | head -1)"
for r in $replicas; do echo "replica_${r}_select_only_tps: $(grep -oP 'tps = \K[0-9.]+' "$work/ro-$r.log" | head -1)"; done
echo "failovers_during_soak: $(( $("$PGHA" ctl --config "$CFG1" history -f json | jq length) - epochs_before ))"
echo "leader_after_soak: $("$PGHA" ctl --config "$CFG1" list -f json | jq -r '.[] | select(.Role == "Leader") | .Member')"
logs="$work/c/node1/pgha.log $work/c/node2/pgha.log $work/c/node3/pgha.log"
echo "lease_renewals_failed_or_rejected: $(cat $logs | grep -c 'action=RenewLease' || true)"
echo "demotions_writable_without_lease: $(cat $logs | grep -c 'without a valid lease' || true)"
echo "lease_acquisitions_after_bootstrap: $(cat $logs | grep -c 'AcquireLease.*the lease is free' || true)"
