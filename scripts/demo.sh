#!/usr/bin/env bash
# Sets up what a fresh Debian 12 machine lacks, builds pgha and starts `pgha demo`: a local
# 3-node cluster on 127.0.0.1 in a temporary directory. Ctrl-C stops it and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
exec "$target_dir/release/pgha" demo "$@"
