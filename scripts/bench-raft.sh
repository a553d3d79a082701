#!/usr/bin/env bash
# Raft figures of a local 3-node pgha cluster (a benchmark, not a test: it prints, never asserts):
#   - Raft leader re-election time after kill -9 of the leader (median and worst of ROUNDS)
#   - proposal commit latency p50/p99 (with fsync) on the leader and through a follower
#   - idle CPU and RSS of one `pgha run`
# Usage: scripts/bench-raft.sh            (ROUNDS=10 PROPOSALS=200; PGHA=<binary> to skip the build)
# Needs curl and jq. Runs the release build (built if missing). Every process it starts is
# stopped by PID on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
PROPOSALS=${PROPOSALS:-200}
if [ -z "${PGHA:-}" ]; then
  cargo build --release --quiet
  PGHA="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release/pgha"
fi
PGHA=$(realpath "$PGHA")

work=$(mktemp -d /tmp/pgha-bench.XXXXXX)
chmod 755 "$work"
declare -a PIDS API CFG STARTED=()
demo_pid=
cleanup() {
  for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -n "$demo_pid" ] && kill -INT "$demo_pid" 2>/dev/null || true
  for p in "${STARTED[@]}" $demo_pid; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$PGHA" demo --dir "$work/c" > "$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 600); do grep -q "Ctrl-C stops" "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
grep -q "Ctrl-C stops" "$work/demo.out" || { cat "$work/demo.err"; echo "demo did not come up" >&2; exit 1; }
while read -r name _ pid _ _ api _ _ _ cfg _; do
  i=${name%:}; i=${i#node}
  PIDS[$i]=$pid; API[$i]=${api#https://}; CFG[$i]=$cfg
done < <(grep -E '^node[0-9]+: pid' "$work/demo.out")
CA="$work/c/node1/tls/ca.crt"

now_ms() { date +%s%3N; }
status() { curl -s --max-time 1 --cacert "$CA" "https://${API[$1]}/raft/status" || true; }
field() { status "$1" | jq -r "$2" 2>/dev/null || true; }
leader() {
  for i in 1 2 3; do [ "$(field "$i" .raft.role)" = leader ] && { echo "$i"; return; }; done
  echo 0
}
wait_leader() {
  for _ in $(seq 300); do l=$(leader); [ "$l" != 0 ] && { echo "$l"; return; }; sleep 0.05; done
  echo "no leader" >&2; exit 1
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Re-election after kill -9 of the Raft leader.
elections=()
for r in $(seq "$ROUNDS"); do
  l=$(wait_leader); term=$(field "$l" .raft.term)
  # wait until every member is caught up, so the round starts from a healthy cluster
  for _ in $(seq 200); do
    c=$(field "$l" .raft.commit_index); ok=1
    for i in 1 2 3; do [ "$(field "$i" .raft.applied_index)" = "$c" ] || ok=0; done
    [ $ok = 1 ] && break; sleep 0.05
  done
  t0=$(now_ms)
  kill -9 "${PIDS[$l]}"
  new=0
  while [ "$new" = 0 ]; do
    for i in 1 2 3; do
      [ "$i" = "$l" ] && continue
      s=$(status "$i")
      if [ "$(jq -r .raft.role <<<"$s" 2>/dev/null)" = leader ] && [ "$(jq -r .raft.term <<<"$s")" -gt "$term" ]; then new=$i; fi
    done
    [ $(( $(now_ms) - t0 )) -gt 20000 ] && { echo "no new leader within 20 s" >&2; exit 1; }
  done
  t1=$(now_ms); elections+=($((t1 - t0)))
  echo "round $r: leader node$l killed, node$new elected after $((t1 - t0)) ms" >&2
  "$PGHA" run --config "${CFG[$l]}" 2>>"$work/restarted-node$l.log" &
  PIDS[$l]=$!; STARTED+=("$!")
  for _ in $(seq 200); do [ -n "$(field "$l" .raft.role)" ] && break; sleep 0.05; done
done
sorted=$(printf '%s\n' "${elections[@]}" | sort -n)
median=$(awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}' <<<"$sorted")
echo "raft_reelection_after_kill9_median_ms: $median"
echo "raft_reelection_after_kill9_worst_ms: $(tail -1 <<<"$sorted")"
echo "raft_reelection_rounds: $ROUNDS"

# Commit latency: proposals (join tokens) on the leader, then through a follower.
l=$(wait_leader); f=$(( l % 3 + 1 ))
for _ in $(seq "$PROPOSALS"); do "$PGHA" ctl --config "${CFG[1]}" --endpoint "${API[$l]}" token create --ttl 1 >/dev/null; done
echo "raft_commit_latency_leader_p50_us: $(field "$l" .commit_latency.p50_us)"
echo "raft_commit_latency_leader_p99_us: $(field "$l" .commit_latency.p99_us)"
for _ in $(seq "$PROPOSALS"); do "$PGHA" ctl --config "${CFG[1]}" --endpoint "${API[$f]}" token create --ttl 1 >/dev/null; done
echo "raft_commit_latency_via_follower_p50_us: $(field "$f" .commit_latency.p50_us)"
echo "raft_commit_latency_via_follower_p99_us: $(field "$f" .commit_latency.p99_us)"

# Idle CPU and RSS of each node over 10 s.
sleep 2
declare -a T0
for i in 1 2 3; do T0[$i]=$(cpu_ticks "${PIDS[$i]}"); done
sleep 10
hz=$(getconf CLK_TCK)
for i in 1 2 3; do
  t=$(( $(cpu_ticks "${PIDS[$i]}") - T0[i] ))
  echo "node${i}_idle_cpu_percent: $(awk -v t="$t" -v hz="$hz" 'BEGIN {printf "%.2f", 100 * t / hz / 10}')"
  echo "node${i}_rss_mib: $(awk -v k="$(rss_kb "${PIDS[$i]}")" 'BEGIN {printf "%.1f", k / 1024}')"
done
