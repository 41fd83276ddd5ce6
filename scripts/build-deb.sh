#!/usr/bin/env bash
# Builds the Debian package of vetting with dpkg-deb alone (an equivalent of
# `cargo deb` that needs nothing beyond dpkg, present on every Debian):
# both binaries, the systemd unit, the example config as the conffile
# /etc/vetting/config.yaml, the docs under /usr/share/doc/vetting, and the
# maintainer scripts of deploy/debian/. The files are staged by
# deploy/install.sh (DESTDIR), so the package and install.sh agree.
#
#   scripts/build-deb.sh                      release build, static agent
#   scripts/build-deb.sh --bin-dir target/debug --out DIR
#                                             package already-built binaries
#                                             (the package test does this)
#
# The release build: `vetting` with cargo's release profile, `vetting-agent`
# static (`-C target-feature=+crt-static` for x86_64-unknown-linux-gnu, in its
# own target folder so the flag does not rebuild everything else), as the
# agent ships inside the live image's initramfs. Prints the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=""
out_dir="target/deb"
while (($#)); do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
arch=$(dpkg --print-architecture)
if [[ -z "$version" ]]; then
  echo "build-deb.sh: no version in Cargo.toml's [workspace.package]" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ -z "$bin_dir" ]]; then
  target=x86_64-unknown-linux-gnu
  cargo build --release --locked -p vetting-cli
  RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked -p vetting-agent --target "$target"
  bin_dir="$work/bin"
  mkdir -p "$bin_dir"
  cp target/release/vetting "$bin_dir/"
  cp "target/$target/release/vetting-agent" "$bin_dir/"
  strip "$bin_dir/vetting" "$bin_dir/vetting-agent"
  # static: no shared library needed (ldd's exit status does not tell)
  if objdump -p "$bin_dir/vetting-agent" | grep -q NEEDED; then
    echo "build-deb.sh: vetting-agent is not static" >&2
    exit 1
  fi
  compression=(-Zxz)
else
  # a test package: whatever the binaries are (a debug build is large and
  # not worth compressing hard)
  compression=(-Zgzip -z1)
fi

stage="$work/stage"
mkdir -p "$stage/DEBIAN"
DESTDIR="$stage" BIN_DIR="$bin_dir" deploy/install.sh
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$stage/DEBIAN/"
install -m 0644 deploy/debian/copyright "$stage/usr/share/doc/vetting/copyright"
echo /etc/vetting/config.yaml > "$stage/DEBIAN/conffiles"

# the C library version the binaries need, from their symbol versions
glibc=$(objdump -T "$stage/usr/bin/vetting" "$stage/usr/bin/vetting-agent" 2>/dev/null |
  sed -n 's/.*GLIBC_\([0-9][0-9.]*\).*/\1/p' | sort -uV | tail -n1)
depends="libc6 (>= ${glibc:-2.36}), libgcc-s1, passwd"
installed_kib=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)

cat > "$stage/DEBIAN/control" <<CONTROL
Package: vetting
Version: $version
Architecture: $arch
Maintainer: vetting maintainers <vetting@example.invalid>
Section: admin
Priority: optional
Installed-Size: $installed_kib
Depends: $depends
Recommends: dnsmasq-base, ipxe, iperf3
Suggests: ipmitool, sqlite3, postgresql-client
Homepage: https://example.invalid/vetting
Description: vets bare-metal servers before they go into service
 The vetting orchestrator PXE-boots servers on a vetting LAN into a live
 image whose agent tests the hardware stage by stage (inventory, spec check,
 SMART, CPU and memory stress, storage, network, GPU, PSU), with safety gates
 before any destructive disk test, and keeps a report per run.
 .
 This package holds the orchestrator (vetting, run by vetting.service as the
 vetting user, data in /var/lib/vetting) and the static agent (vetting-agent)
 for the live image.
CONTROL

(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
  xargs -0 md5sum) > "$stage/DEBIAN/md5sums"

mkdir -p "$out_dir"
package="$out_dir/vetting_${version}_${arch}.deb"
dpkg-deb "${compression[@]}" --root-owner-group --build "$stage" "$package" >/dev/null
echo "$package"
