#!/usr/bin/env bash
# HA figures of a local 3-node pgha cluster with Postgres 15 (a benchmark: prints, never asserts).
# A writer inserts a numbered row every ~20 ms through the libpq multi-host DSN
# (target_session_attrs=read-write, a new connection each time, as a reconnecting application
# does); the write gap of a round is the time between the last acknowledged insert before the
# fault and the first one after it (the longest pause between acknowledged inserts after the
# fault, once writes have flowed again for 3 s). Scenarios, ROUNDS each (median and worst):
#   switchover          pgha ctl switchover (to the best replica)
#   kill_primary_node   kill -9 of the primary's pgha (its postmaster dies with it)
#   kill_postmaster     kill -9 of the primary's postmaster alone (pgha restarts it in place)
# Also: time from empty directories to 3 streaming nodes, RSS of pgha next to its Postgres, and
# whether every acknowledged row survived.
# SYNC_MODE=on|quorum runs everything with that synchronous_mode (figures then carry the mode
# as a prefix, and no acknowledged row may be missing).
# Usage: scripts/bench-ha.sh   (ROUNDS=10 SYNC_MODE=off; PGHA=<binary> to skip the build). Needs psql, jq.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
SYNC_MODE=${SYNC_MODE:-off}
case "$SYNC_MODE" in off) P= ;; on|quorum) P="sync_${SYNC_MODE}_" ;; *) echo "SYNC_MODE must be off, on or quorum" >&2; exit 2 ;; esac
if [ -z "${PGHA:-}" ]; then
  cargo build --release --quiet
  PGHA="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release/pgha"
fi
work=$(mktemp -d /tmp/pgha-bench-ha.XXXXXX)
chmod 755 "$work"
demo_pid= writer_pid=
declare -a STARTED=()
cleanup() {
  local status=$?
  [ -n "$writer_pid" ] && kill "$writer_pid" 2>/dev/null || true
  for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -n "$demo_pid" ] && kill -TERM "$demo_pid" 2>/dev/null || true
  for p in "${STARTED[@]}" $demo_pid; do wait "$p" 2>/dev/null || true; done
  # A failed run keeps its logs (node logs under $work/c, restarted nodes' in $work).
  if [ -n "${KEEP:-}" ] || [ "$status" != 0 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
now_ms() { date +%s%3N; }

t0=$(now_ms)
"$PGHA" demo --dir "$work/c" ${KEEP:+--keep} > "$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 1800); do grep -q "Ctrl-C stops" "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
grep -q "Ctrl-C stops" "$work/demo.out" || { tail "$work/demo.err"; echo "demo did not come up" >&2; exit 1; }
echo "bootstrap_to_3_streaming_nodes_s: $(awk -v ms=$(( $(now_ms) - t0 )) 'BEGIN {printf "%.1f", ms / 1000}')"

declare -a PID CFG PGPORT DATA
while read -r name _ pid _ _ _ _ _ _ cfg _; do
  i=${name%:}; i=${i#node}; PID[$i]=$pid; CFG[$i]=$cfg; DATA[$i]=$work/c/node$i/pg/data
done < <(grep -E '^node[0-9]+: pid' "$work/demo.out")
DSN=$(grep -A1 "multi-host" "$work/demo.out" | tail -1 | tr -d ' ')
DSN="$DSN&connect_timeout=1"
CA="$work/c/node1/tls/ca.crt"
APIS=$(grep -E '^node[0-9]+: pid' "$work/demo.out" | awk '{print $6}' | sed 's|https://||')
cluster() { # /cluster from the first node that answers
  for a in $APIS; do curl -sf --max-time 2 --cacert "$CA" "https://$a/cluster" && return 0; done; return 1
}
primary() {
  cluster | jq -r '.members[] | select(.role == "leader") | .name' | sed 's/node//'
}
healthy() { # one running leader and two streaming replicas
  cluster | jq -e '[.members[] | select((.role == "leader" and .state == "running") or ((.role == "replica" or .role == "sync_standby" or .role == "quorum_standby") and .state == "streaming"))] | length == 3' >/dev/null 2>&1
}
wait_healthy() { for _ in $(seq 600); do healthy && return 0; sleep 0.2; done; echo "cluster did not recover" >&2; exit 1; }
published() { # synchronous modes: a synchronous standby (or quorum) is published
  [ "$SYNC_MODE" = off ] || cluster | jq -e '(.synchronous_mode.sync_standbys // []) | length > 0' >/dev/null 2>&1
}
if [ "$SYNC_MODE" != off ]; then
  "$PGHA" ctl --config "${CFG[1]}" edit-config --set "synchronous_mode=$SYNC_MODE" --force >/dev/null
fi
wait_synchronous() { wait_healthy; for _ in $(seq 600); do published && return 0; sleep 0.2; done; echo "no synchronous standby published" >&2; exit 1; }

psql "$DSN" -XAtqc "CREATE TABLE IF NOT EXISTS bench_ha (n bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())"
# The writer: each acknowledged insert is logged as "<ms> <n>".
( n=0; while true; do n=$((n + 1));
    if psql "$DSN" -XAtqc "INSERT INTO bench_ha (n) VALUES ($n)" >/dev/null 2>&1; then echo "$(now_ms) $n"; fi
    sleep 0.02; done ) > "$work/acks" &
writer_pid=$!
sleep 2

gap_after() { # the longest pause between acknowledged inserts from $1 on, once writes have flowed again for 3 s
  local start=$1 res
  for _ in $(seq 1200); do
    sleep 0.1
    res=$(awk -v s="$start" '$1 <= s {prev=$1; next} prev && $1 - prev > gap {gap = $1 - prev; gap_end = $1} {prev=$1} END {printf "%d %d\n", gap, (gap_end ? prev - gap_end : 0)}' "$work/acks")
    [ "${res#* }" -ge 3000 ] && [ $(( $(now_ms) - start )) -ge 3000 ] && break
  done
  echo "${res% *}"
}
report() { # name values...
  local name=$1; shift
  local sorted; sorted=$(printf '%s\n' "$@" | sort -n)
  echo "${P}${name}_write_gap_median_ms: $(awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}' <<<"$sorted")"
  echo "${P}${name}_write_gap_worst_ms: $(tail -1 <<<"$sorted")"
}

gaps=()
for r in $(seq "$ROUNDS"); do
  wait_synchronous; sleep 1
  p=$(primary); t=$(now_ms)
  "$PGHA" ctl --config "${CFG[$p]}" switchover --force >/dev/null
  gaps+=("$(gap_after "$t")"); echo "switchover round $r: ${gaps[-1]} ms" >&2
done
report switchover "${gaps[@]}"

gaps=()
for r in $(seq "$ROUNDS"); do
  wait_synchronous; sleep 1
  p=$(primary); t=$(now_ms)
  kill -9 "${PID[$p]}"
  gaps+=("$(gap_after "$t")"); echo "kill_primary_node round $r: node$p, ${gaps[-1]} ms" >&2
  "$PGHA" run --config "${CFG[$p]}" 2>>"$work/restarted-node$p.log" &
  PID[$p]=$!; STARTED+=("$!")
done
report kill_primary_node "${gaps[@]}"

gaps=()
for r in $(seq "$ROUNDS"); do
  wait_synchronous; sleep 1
  p=$(primary); t=$(now_ms)
  kill -9 "$(head -1 "${DATA[$p]}/postmaster.pid")"
  gaps+=("$(gap_after "$t")"); echo "kill_postmaster round $r: node$p, ${gaps[-1]} ms" >&2
done
report kill_postmaster "${gaps[@]}"

wait_healthy; sleep 2
kill "$writer_pid"; wait "$writer_pid" 2>/dev/null || true; writer_pid=
acked=$(wc -l < "$work/acks")
missing=$(awk '{print $2}' "$work/acks" | psql "$DSN" -XAtq -c "CREATE TEMP TABLE a (n bigint)" -c "COPY a FROM STDIN" -c "SELECT count(*) FROM a LEFT JOIN bench_ha USING (n) WHERE bench_ha.n IS NULL" | tail -1)
echo "${P}acknowledged_writes: $acked"
if [ "$SYNC_MODE" = off ]; then
  echo "acknowledged_writes_missing_after_all_rounds: $missing   (asynchronous replication: a crash may lose the last unreplicated commits)"
else
  echo "${P}acknowledged_writes_missing_after_all_rounds: $missing"
fi
p=$(primary)
pg_pid=$(head -1 "${DATA[$p]}/postmaster.pid")
echo "pgha_rss_mib: $(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/${PID[$p]}/status")"
echo "postgres_postmaster_rss_mib: $(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pg_pid/status")"
