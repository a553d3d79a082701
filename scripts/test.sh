#!/usr/bin/env bash
# The test command (README): static checks, the release as an operator meets it (static
# binary, .deb and .rpm, installed and purged: scripts/test-packages.sh, as root), then every
# test — unit tables, the deterministic Raft/lease simulation (tests/sim) and the integration
# suite with real `pgha` processes (tests/it) and the fast subset of the fault suite
# (tests/fault, network namespaces: as root; docs/faults.md). Fails on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== format"
cargo fmt --all -- --check
echo "== one crypto provider (STACK.md item 1: aws-lc-rs next to ring panics at run time)"
if cargo tree -q -i aws-lc-rs >/dev/null 2>&1; then
  echo "aws-lc-rs is in the dependency tree" >&2
  exit 1
fi
echo "== clippy"
cargo clippy --all-targets -- -D warnings
echo "== packages"
if [ "$(id -u)" = 0 ]; then
  scripts/test-packages.sh
else
  echo "skipped: scripts/test-packages.sh installs a .deb and needs root (CI runs as root)"
fi
echo "== tests"
cargo test -- --test-threads=2
