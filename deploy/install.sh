#!/bin/sh
# Installs vetting from a built tree: both binaries, the systemd unit, the
# example config as /etc/vetting/config.yaml (only when there is none: an
# operator's config is never overwritten), the docs, the `vetting` system
# user and its state directory /var/lib/vetting. Idempotent: run it again
# after a rebuild to upgrade the binaries.
#
#   cargo build --release -p vetting-cli -p vetting-agent
#   sudo deploy/install.sh                 # binaries from target/release
#   sudo BIN_DIR=path/to/bins deploy/install.sh
#
# With DESTDIR set, only the files are installed under DESTDIR (no user, no
# systemctl): scripts/build-deb.sh stages the Debian package this way, so the
# package and this script install the same files in the same places.
# Use either the package or this script on one machine, not both.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
BIN_DIR=${BIN_DIR:-$root/target/release}
DESTDIR=${DESTDIR:-}

for binary in vetting vetting-agent; do
  if [ ! -x "$BIN_DIR/$binary" ]; then
    echo "install.sh: $BIN_DIR/$binary is missing: build it first (cargo build --release -p vetting-cli -p vetting-agent)" >&2
    exit 2
  fi
done
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or set DESTDIR to stage the files)" >&2
  exit 2
fi

install -d -m 0755 "$DESTDIR/usr/bin" "$DESTDIR/lib/systemd/system" \
  "$DESTDIR/etc/vetting" "$DESTDIR/usr/share/doc/vetting"
# vetting-agent beside vetting: the live image is built with it, and
# `vetting demo` runs it from there
install -m 0755 "$BIN_DIR/vetting" "$DESTDIR/usr/bin/vetting"
install -m 0755 "$BIN_DIR/vetting-agent" "$DESTDIR/usr/bin/vetting-agent"
install -m 0644 "$here/vetting.service" "$DESTDIR/lib/systemd/system/vetting.service"
install -m 0644 "$here/config.example.yaml" "$DESTDIR/usr/share/doc/vetting/config.example.yaml"
# the man page and bash/zsh completions, generated from the CLI itself
install -d -m 0755 "$DESTDIR/usr/share/man/man1" \
  "$DESTDIR/usr/share/bash-completion/completions" "$DESTDIR/usr/share/zsh/vendor-completions"
"$BIN_DIR/vetting" man | gzip -9n >"$DESTDIR/usr/share/man/man1/vetting.1.gz"
"$BIN_DIR/vetting" completions bash >"$DESTDIR/usr/share/bash-completion/completions/vetting"
"$BIN_DIR/vetting" completions zsh >"$DESTDIR/usr/share/zsh/vendor-completions/_vetting"
for doc in operator-guide.md operator-api.md cli.md; do
  if [ -f "$root/docs/$doc" ]; then
    install -m 0644 "$root/docs/$doc" "$DESTDIR/usr/share/doc/vetting/$doc"
  fi
done
if [ ! -e "$DESTDIR/etc/vetting/config.yaml" ]; then
  # the config may hold secrets (database_url, secret_key): root and the
  # vetting group only; the group is set below once it exists
  install -m 0640 "$here/config.example.yaml" "$DESTDIR/etc/vetting/config.yaml"
fi

if [ -n "$DESTDIR" ]; then
  exit 0
fi

if ! getent group vetting >/dev/null; then
  groupadd --system vetting
fi
if ! getent passwd vetting >/dev/null; then
  useradd --system --gid vetting --home-dir /var/lib/vetting --no-create-home \
    --shell /usr/sbin/nologin --comment "vetting orchestrator" vetting
fi
install -d -m 0750 -o vetting -g vetting /var/lib/vetting
chgrp vetting /etc/vetting/config.yaml
chmod 0640 /etc/vetting/config.yaml

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install.sh: installed; start it with: systemctl enable --now vetting"
  if systemctl is-active --quiet vetting; then
    systemctl restart vetting
    echo "install.sh: vetting restarted on the new binaries"
  fi
else
  echo "install.sh: installed (systemd is not running here: start /usr/bin/vetting serve --config /etc/vetting/config.yaml as user vetting)"
fi
