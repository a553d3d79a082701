#!/usr/bin/env bash
# Installs the Debian packages pgha's build, tests and benchmarks need, if missing:
# PostgreSQL 15 server binaries, curl and jq (benchmark scripts), gcc (for ring's C parts), haproxy
# (the integration test that puts HAProxy in front of pgha's health checks, as the seeds do),
# rpm (rpmbuild makes the .rpm and `rpm -qp` inspects it) and systemd (`systemd-analyze
# verify` checks the unit, man-db finds its man pages) for scripts/test-packages.sh, nftables
# (the fault suite's packet filters inside its network namespaces) and libfaketime (its
# wall-clock jump), docs/faults.md.
set -euo pipefail
need=()
for p in postgresql-15 curl jq gcc ca-certificates haproxy rpm systemd man-db nftables libfaketime; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need[*]} (run as root or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
# The `postgres` service user (created by the postgresql package) runs pgha's nodes as root.
id postgres >/dev/null 2>&1 || { echo "user postgres is missing: install postgresql-15" >&2; exit 1; }
