#!/usr/bin/env bash
# The release as an operator meets it (issue 6), run by scripts/test.sh as root:
#  1. the static binary (scripts/build-static.sh): `ldd` finds nothing to load (static-pie); it resolves
#     `localhost` and names from /etc/hosts without libc (in a private mount namespace with a
#     test /etc/hosts, and an /etc/resolv.conf whose server is a closed local port, so no query
#     leaves the machine); a user missing from /etc/passwd is a clear error, not an NSS crash;
#  2. packaging/build.sh builds the .deb and the .rpm; the .rpm is inspected with rpm -qp;
#  3. the .deb is installed with dpkg -i, checked (files, owners, unit accepted by
#     `systemd-analyze verify`), `pgha version` and `pgha init` run from /usr/bin at the
#     default paths, one node runs as the unit would run it (as postgres) until it serves as
#     primary, and `dpkg --purge` leaves /etc/pgha and /var/lib/pgha in place.
# It refuses to run where pgha is installed or /etc/pgha or /var/lib/pgha exist, and removes
# what it created on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test-packages: needs root (dpkg -i, unshare, setpriv)" >&2
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
tmp=$(mktemp -d)
run_pid=
installed=
made_state=
cleanup() {
  local rc=$?
  if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
    kill -TERM "$run_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$run_pid" 2>/dev/null || true
  fi
  if [ -n "$installed" ]; then dpkg --purge pgha >/dev/null 2>&1 || true; fi
  if [ -n "$made_state" ]; then rm -rf /etc/pgha /var/lib/pgha; fi
  if [ $rc != 0 ] && [ -f "$tmp/run.log" ]; then
    echo "--- pgha run log:" >&2
    tail -n 40 "$tmp/run.log" >&2
  fi
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
fail() {
  echo "test-packages: FAILED: $*" >&2
  exit 1
}
# expect_contains TEXT NEEDLE...: every needle is a line (or part of one) of TEXT.
expect_contains() {
  local text=$1
  shift
  for needle in "$@"; do
    grep -qF -- "$needle" <<<"$text" || fail "missing '$needle' in:
$text"
  done
}

echo "== static binary"
start=$(date +%s)
bin=$(scripts/build-static.sh)
build_s=$(( $(date +%s) - start ))
# A static-pie: ldd says "statically linked" (a non-PIE static binary: "not a dynamic executable").
ldd "$bin" 2>&1 | grep -qE "statically linked|not a dynamic executable" || fail "ldd $bin: $(ldd "$bin" 2>&1)"
version=$("$bin" version | awk '{print $2}')

echo "== static binary resolves localhost and /etc/hosts names without libc"
printf '# test hosts file\n127.0.0.1 localhost\n192.0.2.7 pgha-hosts-test alias7\n2001:db8::7 pgha-hosts-test\n' \
  >"$tmp/hosts"
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$tmp/resolv.conf"
in_ns() {
  unshare --mount sh -c 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"' \
    sh "$tmp/hosts" "$tmp/resolv.conf" "$@"
}
got=$(in_ns "$bin" resolve localhost pgha-hosts-test ALIAS7:5432)
want="localhost 127.0.0.1
pgha-hosts-test 192.0.2.7
pgha-hosts-test 2001:db8::7
ALIAS7:5432 192.0.2.7:5432"
[ "$got" = "$want" ] || fail "pgha resolve said:
$got
want:
$want"
set +e
err=$(in_ns "$bin" resolve pgha-no-such-host 2>&1)
rc=$?
set -e
[ $rc = 1 ] || fail "resolving an unknown name: exit $rc (want 1): $err"
expect_contains "$err" 'cannot resolve "pgha-no-such-host"'
# Also the machine's own /etc/hosts, compared with what glibc (getent) says.
getent hosts localhost >/dev/null && expect_contains "$("$bin" resolve localhost)" "localhost 127.0.0.1"

echo "== static binary: a service user missing from /etc/passwd is an error, not an NSS crash"
cat >"$tmp/nouser.yml" <<EOF
scope: pgha
name: node1
user: pgha-no-such-user
restapi: { listen: "127.0.0.1:1", connect_address: "127.0.0.1:1" }
raft: { listen: "127.0.0.1:2", connect_address: "127.0.0.1:2", data_dir: $tmp/raft }
postgresql: { listen: "127.0.0.1:3", data_dir: $tmp/data }
tls: { cafile: $tmp/ca.crt, certfile: $tmp/n.crt, keyfile: $tmp/n.key }
ctl: { certfile: $tmp/c.crt, keyfile: $tmp/c.key, cacert: $tmp/ca.crt }
EOF
set +e
err=$("$bin" init --config "$tmp/nouser.yml" 2>&1)
rc=$?
set -e
[ $rc = 1 ] || fail "init with a missing user: exit $rc (want 1): $err"
expect_contains "$err" 'OS user "pgha-no-such-user" does not exist in /etc/passwd'

echo "== packages"
start=$(date +%s)
mapfile -t pkgs < <(packaging/build.sh "$bin" "$tmp/packages")
package_s=$(( $(date +%s) - start ))
deb=${pkgs[0]}
rpm=${pkgs[1]}
[ -f "$deb" ] && [ -f "$rpm" ] || fail "packaging/build.sh made: ${pkgs[*]}"

echo "== rpm: contents, requirements, scripts"
files=$(rpm -qlvp "$rpm")
expect_contains "$files" /usr/bin/pgha /usr/lib/systemd/system/pgha.service \
  /usr/lib/udev/rules.d/60-pgha-watchdog.rules /usr/share/bash-completion/completions/pgha \
  /usr/share/zsh/site-functions/_pgha /usr/share/fish/vendor_completions.d/pgha.fish \
  /usr/share/man/man1/pgha.1.gz /usr/share/man/man1/pgha-ctl-switchover.1.gz /etc/pgha
grep -E '^d.* postgres +postgres .* /var/lib/pgha$' <<<"$files" >/dev/null ||
  fail "/var/lib/pgha is not a postgres-owned directory in the rpm: $(grep /var/lib/pgha <<<"$files")"
if grep -q '/etc/pgha/' <<<"$files"; then fail "the rpm ships a file under /etc/pgha"; fi
requires=$(rpm -qp --requires "$rpm")
expect_contains "$requires" "(postgresql-server >= 15 or postgresql15-server" "shadow-utils"
if grep -q 'libc.so' <<<"$requires"; then fail "the static binary's rpm requires libc: $requires"; fi
scripts=$(rpm -qp --scripts "$rpm")
expect_contains "$scripts" "preinstall scriptlet" "useradd" "postinstall scriptlet" "preuninstall scriptlet"
if grep -qE 'rm +-[a-z]*r' <<<"$scripts"; then fail "an rpm scriptlet deletes a tree: $scripts"; fi
[ "$(rpm -qp --qf '%{VERSION}' "$rpm")" = "$version" ] || fail "rpm version is not $version"

echo "== deb: install with dpkg -i"
if dpkg-query -W -f='${Status}' pgha 2>/dev/null | grep -q installed; then
  fail "pgha is installed on this machine; refusing to replace it"
fi
for d in /etc/pgha /var/lib/pgha; do
  [ ! -e "$d" ] || fail "$d exists; refusing to touch an existing installation"
done
made_state=1
installed=1
dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$tmp/dpkg.log")"
[ "$(/usr/bin/pgha version)" = "pgha $version" ] || fail "/usr/bin/pgha version: $(/usr/bin/pgha version)"
[ "$(stat -c '%U:%G %a' /var/lib/pgha)" = "postgres:postgres 750" ] ||
  fail "/var/lib/pgha: $(stat -c '%U:%G %a' /var/lib/pgha)"
for f in /lib/systemd/system/pgha.service /lib/udev/rules.d/60-pgha-watchdog.rules \
  /usr/share/bash-completion/completions/pgha /usr/share/zsh/vendor-completions/_pgha \
  /usr/share/fish/vendor_completions.d/pgha.fish /usr/share/doc/pgha/packaging.md; do
  [ -s "$f" ] || fail "$f is missing"
done
[ -z "$(ls -A /etc/pgha)" ] || fail "the deb shipped files into /etc/pgha: $(ls /etc/pgha)"
man -w pgha-run >/dev/null || fail "man pgha-run finds no page"
bash -c 'source /usr/share/bash-completion/completions/pgha && complete -p pgha' >/dev/null ||
  fail "the bash completion does not load"
systemd-analyze verify /lib/systemd/system/pgha.service || fail "systemd-analyze verify rejects pgha.service"

echo "== deb: pgha init at the default paths, then one node as pgha.service runs it"
# As configuration management would: the file first, with free loopback ports instead of
# 8008/5010/5432 (something else may hold them here), then `pgha init` fills in the rest.
# (Addresses must be right before init: they go into the certificates and the cluster state.)
free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}
api=$(free_port)
raft=$(free_port)
pg=$(free_port)
[ "$api" != "$raft" ] && [ "$raft" != "$pg" ] && [ "$api" != "$pg" ] || fail "port draw collided; run again"
cat >/etc/pgha/pgha.yml <<EOF
scope: pgha
name: node1
restapi: { listen: "127.0.0.1:$api" }
raft: { listen: "127.0.0.1:$raft" }
postgresql: { listen: "127.0.0.1:$pg" }
proxy: { listen: "off", replicas_listen: "off" }
watchdog: { mode: "off" }
EOF
token=$(pgha init --name node1 2>"$tmp/init.log") || fail "pgha init: $(cat "$tmp/init.log")"
[ -n "$token" ] || fail "pgha init printed no join token"
[ "$(stat -c '%U %a' /etc/pgha/node.key)" = "postgres 600" ] || fail "node.key: $(stat -c '%U %a' /etc/pgha/node.key)"
[ "$(stat -c '%U %a' /etc/pgha/ctl.key)" = "postgres 600" ] || fail "ctl.key: $(stat -c '%U %a' /etc/pgha/ctl.key)"
[ "$(stat -c '%U' /var/lib/pgha/raft)" = "postgres" ] || fail "init made no postgres-owned /var/lib/pgha/raft"
# As the unit: User=postgres, /usr/bin/pgha run, the default config path (setpriv execs, so
# the pid is pgha's own and gets the SIGTERM systemd would send).
setpriv --reuid=postgres --regid=postgres --init-groups /usr/bin/pgha run >"$tmp/run.log" 2>&1 &
run_pid=$!
for i in $(seq 1 120); do
  if list=$(pgha ctl list --format json 2>&1) && grep -q '"Role": *"Leader"' <<<"$list" &&
    grep -q '"State": *"running"' <<<"$list"; then
    break
  fi
  kill -0 "$run_pid" 2>/dev/null || fail "pgha run exited"
  [ "$i" = 120 ] || sleep 0.5
done
grep -q '"Role": *"Leader"' <<<"$list" || fail "no running leader within 60 s: $list"
ctl_version=$(pgha ctl version 2>&1) || fail "pgha ctl version: $ctl_version"
expect_contains "$ctl_version" "node1: pgha $version"
extended=$(pgha ctl list -e 2>&1) || fail "pgha ctl list -e: $extended"
expect_contains "$extended" "Version" "$version"
kill -TERM "$run_pid"
wait "$run_pid" || fail "pgha run did not stop cleanly on SIGTERM (exit $?)"
run_pid=
[ -f /var/lib/pgha/data/PG_VERSION ] || fail "no Postgres data in /var/lib/pgha/data"

echo "== deb: purge leaves the data"
dpkg --purge pgha >"$tmp/dpkg.log" 2>&1 || fail "dpkg --purge: $(cat "$tmp/dpkg.log")"
installed=
[ ! -e /usr/bin/pgha ] || fail "/usr/bin/pgha is still there after purge"
for f in /etc/pgha/pgha.yml /etc/pgha/node.key /var/lib/pgha/raft /var/lib/pgha/data/PG_VERSION; do
  [ -e "$f" ] || fail "purge deleted $f"
done
id postgres >/dev/null || fail "purge removed the postgres user"
echo "test-packages: static binary $(du -h "$bin" | cut -f1) (built in ${build_s} s), packages built in ${package_s} s"
echo "test-packages: ok"
