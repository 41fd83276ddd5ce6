#!/usr/bin/env bash
# Installs every Debian package the tests and the demo need, on a fresh
# Debian 12 machine. Idempotent: packages already present are skipped.
set -euo pipefail

packages=(
  # hardware tools the agent runs (also in the live image)
  smartmontools dmidecode lshw pciutils nvme-cli stress-ng fio e2fsprogs
  iperf3 memtester util-linux fdisk ipmitool ethtool
  # the boot chain and its tests
  dnsmasq-base busybox-static iproute2 ipxe ipxe-qemu qemu-system-x86 ovmf
  openipmi
  # the UEFI VM's local disk: a FAT image booting a standalone GRUB
  grub-efi-amd64-bin dosfstools mtools
  # FUSE for the failing-disk test
  fuse3 python3-fuse
  # PostgreSQL for the store tests
  postgresql
  # the package test: systemd-analyze verify of the unit, objdump for its Depends
  systemd binutils
  # misc
  python3-venv python3-pip curl ca-certificates procps psmisc
  # a pseudo-terminal for the `runs watch` screen test
  tmux
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi
# the PostgreSQL package starts a cluster on 5432 that the tests do not use
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_ctlcluster --force 15 main stop 2>/dev/null || true
fi
# the OpenAPI 3.1 validator of the operator API's document test
if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  echo "install-deps: installing openapi-spec-validator"
  # Debian 12's Python is externally managed: pip needs the flag there
  python3 -m pip install -q --break-system-packages openapi-spec-validator==0.9.0 ||
    python3 -m pip install -q openapi-spec-validator==0.9.0
fi
