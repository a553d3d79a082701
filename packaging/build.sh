#!/usr/bin/env bash
# Builds pgha_<version>-1_amd64.deb and pgha-<version>-1.x86_64.rpm from the static binary
# (docs/packaging.md). Both packages hold the same staged files; only the directories differ
# where the distributions do (systemd units and udev rules under /lib on Debian, /usr/lib on
# RHEL; zsh completions). Completions and man pages come from the binary itself.
#
# Tools: dpkg-deb (every Debian) and rpmbuild (Debian's `rpm` package, which
# scripts/install-deps.sh installs; the CI also needs `rpm` to inspect the result). Both
# take a second; cargo-deb and cargo-generate-rpm would do the same job but cost ~4.5 min
# of compiling on a fresh 2-core CI machine.
#
# Usage: packaging/build.sh [STATIC_BINARY] [OUT_DIR]
#   STATIC_BINARY  default: built by scripts/build-static.sh
#   OUT_DIR        default: $CARGO_TARGET_DIR/packages (or ./target/packages)
# Prints the two package paths on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${1:-}
if [ -z "$bin" ]; then
  bin=$(scripts/build-static.sh)
fi
out=${2:-${CARGO_TARGET_DIR:-$root/target}/packages}
for tool in dpkg-deb rpmbuild gzip; do
  command -v "$tool" >/dev/null || { echo "packaging/build.sh: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done
if readelf -lW "$bin" | grep -q 'INTERP'; then
  echo "packaging/build.sh: $bin is not static (build it with scripts/build-static.sh)" >&2
  exit 1
fi
version=$("$bin" version | awk '{print $2}')
[ -n "$version" ] || { echo "packaging/build.sh: cannot read the version of $bin" >&2; exit 1; }
# Reproducible timestamps: the last commit's, when there is one.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
start=$(date +%s)

# stage DIR UNIT_DIR UDEV_DIR ZSH_DIR: the files both packages ship, laid out for one family.
stage() {
  local d=$1 unit_dir=$2 udev_dir=$3 zsh_dir=$4
  install -D -m 0755 "$bin" "$d/usr/bin/pgha"
  install -D -m 0644 packaging/pgha.service "$d$unit_dir/pgha.service"
  install -D -m 0644 packaging/60-pgha-watchdog.rules "$d$udev_dir/60-pgha-watchdog.rules"
  install -d -m 0755 "$d/usr/share/bash-completion/completions" "$d$zsh_dir" \
    "$d/usr/share/fish/vendor_completions.d" "$d/usr/share/man/man1" "$d/usr/share/doc/pgha" \
    "$d/etc/pgha" "$d/var/lib/pgha"
  "$bin" completions bash >"$d/usr/share/bash-completion/completions/pgha"
  "$bin" completions zsh >"$d$zsh_dir/_pgha"
  "$bin" completions fish >"$d/usr/share/fish/vendor_completions.d/pgha.fish"
  "$bin" man --dir "$d/usr/share/man/man1"
  gzip -9n "$d"/usr/share/man/man1/*.1
  install -m 0644 README.md "$d/usr/share/doc/pgha/README.md"
  for doc in packaging configuration operations defaults security rest-api; do
    install -m 0644 "docs/$doc.md" "$d/usr/share/doc/pgha/$doc.md"
  done
  printf 'pgha %s\nLicense: Apache-2.0\n' "$version" >"$d/usr/share/doc/pgha/copyright"
  chmod 0644 "$d"/usr/share/bash-completion/completions/pgha "$d$zsh_dir/_pgha" \
    "$d"/usr/share/fish/vendor_completions.d/pgha.fish "$d"/usr/share/man/man1/*.gz
}

# --- .deb
deb=$work/deb
stage "$deb" /lib/systemd/system /lib/udev/rules.d /usr/share/zsh/vendor-completions
install -d -m 0755 "$deb/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$deb" | cut -f1)
sed -e "s/@VERSION@/$version-1/" -e "s/@SIZE@/$size/" packaging/deb/control.in >"$deb/DEBIAN/control"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$deb/DEBIAN/"
(cd "$deb" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  >"$deb/DEBIAN/md5sums"
debfile=$out/pgha_${version}-1_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$deb" "$debfile" >/dev/null

# --- .rpm
rpmstage=$work/rpmstage
stage "$rpmstage" /usr/lib/systemd/system /usr/lib/udev/rules.d /usr/share/zsh/site-functions
rpmbuild -bb --quiet \
  --define "_topdir $work/rpmbuild" \
  --define "_rpmdir $out" \
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
  --define "_build_id_links none" \
  --define "use_source_date_epoch_as_buildtime 1" \
  --define "_binary_payload w6.xzdio" \
  --define "clamp_mtime_to_source_epoch 1" \
  --define "stage $rpmstage" \
  --define "pgha_version $version" \
  packaging/rpm/pgha.spec >&2
rpmfile=$out/pgha-${version}-1.x86_64.rpm
[ -f "$rpmfile" ] || { echo "packaging/build.sh: rpmbuild wrote no $rpmfile" >&2; exit 1; }

echo "packaging/build.sh: $(basename "$debfile") $(du -h "$debfile" | cut -f1), $(basename "$rpmfile") $(du -h "$rpmfile" | cut -f1), in $(( $(date +%s) - start )) s" >&2
echo "$debfile"
echo "$rpmfile"
