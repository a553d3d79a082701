#!/usr/bin/env bash
# Builds the static release binary the packages ship: glibc linked in (`+crt-static`), so it
# runs on any x86_64 Linux whatever its libc. rustc makes it a static-pie (ASLR kept): no
# PT_INTERP, no DT_NEEDED, which this script checks; `ldd` says "statically linked" (it says
# "not a dynamic executable" only of non-PIE static binaries). The flag is set here, not in
# .cargo/config.toml, and with an explicit --target, so it applies to pgha's own code only:
# build scripts and proc macros stay dynamic host programs, and the debug build of the tests
# is not rebuilt. The binary never calls libc's NSS (getaddrinfo, getpwnam), which cannot
# work statically (STACK.md item 2). Prints the binary's path on stdout.
#
# Env: CARGO_TARGET_DIR (default ./target).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
start=$(date +%s)
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" >&2
bin="$CARGO_TARGET_DIR/$target/release/pgha"
if readelf -lW "$bin" | grep -q 'INTERP' || readelf -dW "$bin" | grep -q '(NEEDED)'; then
  echo "build-static: $bin is dynamically linked:" >&2
  ldd "$bin" >&2 || true
  exit 1
fi
echo "build-static: $bin: $(du -h "$bin" | cut -f1), static, built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
