#!/usr/bin/env bash
# The whole fault-injection suite (issue 8, docs/faults.md): every scenario, fast subset and
# #[ignore]d ones, one at a time (each runs a real 3-5 node cluster in its own network
# namespaces; one at a time keeps the timings meaningful on a small machine). Needs root
# (network namespaces, veth, nftables). Optional arguments: scenario name filters, e.g.
#   scripts/fault-suite.sh partition          # every scenario whose name contains "partition"
# Prints one summary line per scenario (also collected in $PGHA_FAULT_SUMMARY, default
# target/fault-summary.txt) and fails if any scenario fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/fault-suite.sh needs root (network namespaces); try: sudo $0 $*" >&2
  exit 1
fi
command -v nft >/dev/null || { echo "nft is missing: run scripts/install-deps.sh" >&2; exit 1; }
# Namespaces left by a run that was killed outright (Drop never ran): pgf<pid>x<n><role>,
# removed only when that test process is gone.
for ns in $(ip netns list | awk '{print $1}' | grep -E '^pgf[0-9]+x' || true); do
  pid=${ns#pgf}; pid=${pid%%x*}
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "removing leftover namespace $ns (test process $pid is gone)"
    ip netns del "$ns"
  fi
done
summary="${PGHA_FAULT_SUMMARY:-$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/fault-summary.txt}"
: > "$summary"
start=$(date +%s)
status=0
PGHA_FAULT_SUMMARY="$summary" cargo test --test fault -- --include-ignored --test-threads=1 --nocapture "$@" || status=$?
echo "== fault suite: $(( $(date +%s) - start )) s"
cat "$summary"
exit "$status"
