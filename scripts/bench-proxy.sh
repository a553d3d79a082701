#!/usr/bin/env bash
# Proxy figures (a benchmark: prints, never asserts). On a local 3-node pgha cluster
# (`pgha demo`, release build), pgbench against the primary three ways, alternating runs:
#   direct    the primary's Postgres port
#   pgha      the writer port of pgha's built-in proxy (on the primary's node)
#   haproxy   Debian's HAProxy in tcp mode in front of the same Postgres (static backend)
# Workloads (ROUNDS each, median tps): `pgbench -S -c 8 -j 2` (select-only) and
# `pgbench -c 8 -j 2` (TPC-B-like); connection setup: `pgbench -C -S -c 4 -j 2` (average latency
# per transaction, each with a new connection). Then the RSS of one pgha process before and
# with 1,000 idle client connections on its writer port.
# Usage: scripts/bench-proxy.sh   (ROUNDS=3 SECONDS_PER_RUN=15; PGHA=<binary> to skip the build)
# Needs pgbench, psql, haproxy, jq, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
T=${SECONDS_PER_RUN:-15}
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
if [ -z "${PGHA:-}" ]; then
  cargo build --release --quiet
  PGHA="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release/pgha"
fi
work=$(mktemp -d /tmp/pgha-bench-proxy.XXXXXX)
chmod 755 "$work"
demo_pid= haproxy_pid= idle_pid=
cleanup() {
  [ -n "$idle_pid" ] && kill "$idle_pid" 2>/dev/null || true
  [ -n "$haproxy_pid" ] && kill "$haproxy_pid" 2>/dev/null || true
  [ -n "$demo_pid" ] && kill -TERM "$demo_pid" 2>/dev/null || true
  for p in $idle_pid $haproxy_pid $demo_pid; do wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

"$PGHA" demo --dir "$work/c" ${KEEP:+--keep} > "$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
for _ in $(seq 1800); do grep -q "Ctrl-C stops" "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
grep -q "Ctrl-C stops" "$work/demo.out" || { tail "$work/demo.err"; echo "demo did not come up" >&2; exit 1; }

CA="$work/c/node1/tls/ca.crt"
API=$(grep -E '^node1: pid' "$work/demo.out" | awk '{print $6}' | sed 's|https://||')
leader=$(curl -sf --cacert "$CA" "https://$API/cluster" | jq -r '.members[] | select(.role == "leader") | .name')
PGPORT=$(curl -sf --cacert "$CA" "https://$API/cluster" | jq -r ".members[] | select(.name == \"$leader\") | .port")
cfg="$work/c/$leader/pgha.yml"
PROXY=$(awk '/^proxy:/ {p=1} p && /listen:/ {print $2; exit}' "$cfg" | sed 's/.*://')
PID=$(grep -E "^$leader: pid" "$work/demo.out" | awk '{print $3}')
export PGPASSWORD
PGPASSWORD=$(grep -o '//postgres:[^@]*@' "$work/demo.out" | head -1 | sed 's#//postgres:##; s/@$//')
export PGUSER=postgres PGHOST=127.0.0.1 PGDATABASE=postgres
HAPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/haproxy.cfg" <<EOF
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 30m
  timeout server 30m
frontend pg
  bind 127.0.0.1:$HAPORT
  default_backend primary
backend primary
  server $leader 127.0.0.1:$PGPORT
EOF
haproxy -f "$work/haproxy.cfg" -db > "$work/haproxy.log" 2>&1 &
haproxy_pid=$!
sleep 1

echo "primary: $leader (Postgres port $PGPORT, pgha writer port $PROXY, HAProxy port $HAPORT); ${ROUNDS} rounds of ${T} s" >&2
"$PGBENCH" -i -q -s 10 -p "$PGPORT" >/dev/null 2>"$work/pgbench-init.err" || { cat "$work/pgbench-init.err" >&2; exit 1; }

declare -A PORT=([direct]=$PGPORT [pgha]=$PROXY [haproxy]=$HAPORT)
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
tps() { # port args... -> tps
  local port=$1; shift
  "$PGBENCH" -n -p "$port" -T "$T" "$@" 2>>"$work/pgbench.err" | awk '/^tps =/ {print $3; exit}' || { echo "pgbench failed on port $port:" >&2; tail -3 "$work/pgbench.err" >&2; exit 1; }
}
latency() { # port args... -> average ms
  local port=$1; shift
  "$PGBENCH" -n -p "$port" -T "$T" "$@" 2>>"$work/pgbench.err" | awk '/^latency average/ {print $4; exit}' || { echo "pgbench failed on port $port:" >&2; tail -3 "$work/pgbench.err" >&2; exit 1; }
}
run() { # name kind args...: `name_{direct,pgha,haproxy}` and ratios (tps) or added ms (latency)
  local label=$1 kind=$2; shift 2
  declare -A got=([direct]="" [pgha]="" [haproxy]="")
  for _ in $(seq "$ROUNDS"); do
    for how in direct pgha haproxy; do
      got[$how]="${got[$how]} $($kind "${PORT[$how]}" "$@")"
    done
  done
  local d p h
  d=$(median ${got[direct]}); p=$(median ${got[pgha]}); h=$(median ${got[haproxy]})
  printf '%s_direct: %s\n%s_pgha: %s\n%s_haproxy: %s\n' "$label" "$d" "$label" "$p" "$label" "$h"
  if [ "$kind" = tps ]; then
    awk -v d="$d" -v p="$p" -v h="$h" -v l="$label" 'BEGIN {printf "%s_pgha_vs_direct: %.3f\n%s_haproxy_vs_direct: %.3f\n%s_pgha_vs_haproxy: %.3f\n", l, p / d, l, h / d, l, p / h}'
  else
    awk -v d="$d" -v p="$p" -v h="$h" -v l="$label" 'BEGIN {printf "%s_pgha_added_ms: %+.3f\n%s_haproxy_added_ms: %+.3f\n", l, p - d, l, h - d}'
  fi
}
run proxy_select_only_tps tps -S -c 8 -j 2                # pgbench -S -c 8 -j 2
run proxy_tpcb_tps tps -c 8 -j 2                          # pgbench -c 8 -j 2
run proxy_connect_per_transaction_ms latency -C -S -c 4 -j 2

# Round-trip cost: single client, select-only, latency per transaction.
run proxy_single_client_latency_ms latency -S -c 1

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
before=$(rss "$PID")
# Postgres keeps a backend per proxied connection: allow 1,000 of them first.
"$PGHA" ctl --config "$cfg" edit-config --pg max_connections=1100 --force >/dev/null
"$PGHA" ctl --config "$cfg" restart --pending --force >/dev/null || true
python3 - "$PROXY" "$work/idle.ready" <<'EOF' &
import socket, sys, time
port, ready = int(sys.argv[1]), sys.argv[2]
conns = []
for _ in range(1000):
    s = socket.create_connection(("127.0.0.1", port))
    conns.append(s)
open(ready, "w").close()
time.sleep(30)
EOF
idle_pid=$!
for _ in $(seq 300); do [ -f "$work/idle.ready" ] && break; sleep 0.1; done
sleep 3
open=$(curl -sf --cacert "$CA" "https://$(grep -E "^$leader: pid" "$work/demo.out" | awk '{print $6}' | sed 's|https://||')/metrics" \
  | awk '/^pgha_proxy_connections\{.*port="writer"/ {print $2}')
with=$(rss "$PID")
echo "proxy_pgha_rss_idle_kib: ${before}"
echo "proxy_open_client_connections: ${open}"
echo "proxy_pgha_rss_with_open_connections_kib: ${with}"
echo "proxy_bytes_per_idle_connection: $(( (with - before) * 1024 / 1000 ))"
