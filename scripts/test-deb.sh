#!/usr/bin/env bash
# Installs a built vetting package on this machine and checks it, then
# removes every trace of it, also when a check fails:
#   1. `dpkg -i` (twice: the second is the upgrade path of the maintainer
#      scripts) creates the `vetting` user and /var/lib/vetting;
#   2. `systemd-analyze verify` accepts the installed unit, and
#      `systemd-analyze security` rates its exposure at most 3.0 (OK);
#   3. the installed binary with the installed config, as the vetting user
#      and without systemctl (`vetting serve --config /etc/vetting/config.yaml`
#      on a loopback port), answers `ok` on /healthz and keeps its data in
#      /var/lib/vetting;
#   4. `dpkg -r` keeps the data folder and the config, `dpkg --purge` removes
#      them; afterwards no file of the package is left.
# Refuses to run where a vetting package or /usr/bin/vetting already exists:
# the test would remove it. Needs root.
#
#   scripts/test-deb.sh target/deb/vetting_0.1.0_amd64.deb
set -euo pipefail

package=${1:?usage: test-deb.sh PACKAGE.deb}
package=$(realpath "$package")
fail() {
  echo "test-deb.sh: FAIL: $*" >&2
  exit 1
}
if [[ $(id -u) -ne 0 ]]; then
  fail "needs root (dpkg -i)"
fi
# one package test at a time on this machine
exec 9>/run/lock/vetting-test-deb.lock
flock -w 900 9 || fail "another test-deb.sh holds /run/lock/vetting-test-deb.lock"
if dpkg-query -W -f='${Status}' vetting 2>/dev/null | grep -q installed; then
  fail "a vetting package is installed on this machine; the test would remove it"
fi
for path in /usr/bin/vetting /usr/bin/vetting-agent /etc/vetting /var/lib/vetting /lib/systemd/system/vetting.service; do
  [[ -e $path ]] && fail "$path exists (an install.sh install?); the test would remove it"
done
user_existed=0
getent passwd vetting >/dev/null && user_existed=1

work=$(mktemp -d)
server_pid=""
cleanup() {
  local status=$?
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if dpkg-query -W -f='${Status}' vetting 2>/dev/null | grep -qv 'not-installed'; then
    dpkg --purge vetting >/dev/null 2>&1 || true
  fi
  rm -rf /var/lib/vetting /etc/vetting
  if ((user_existed == 0)) && getent passwd vetting >/dev/null; then
    userdel vetting 2>/dev/null || true
  fi
  if ((user_existed == 0)) && getent group vetting >/dev/null; then
    groupdel vetting 2>/dev/null || true
  fi
  rm -rf "$work"
  if ((status == 0)); then
    echo "test-deb.sh: ok"
  fi
  exit "$status"
}
trap cleanup EXIT

echo "== dpkg -i $package"
dpkg -i "$package"
dpkg -i "$package"
dpkg-query -W -f='${Status}\n' vetting | grep -q 'install ok installed' || fail "not installed"
getent passwd vetting >/dev/null || fail "postinst made no vetting user"
[[ $(stat -c '%U:%G %a' /var/lib/vetting) == "vetting:vetting 750" ]] ||
  fail "/var/lib/vetting is $(stat -c '%U:%G %a' /var/lib/vetting)"
[[ $(stat -c '%U:%G %a' /etc/vetting/config.yaml) == "root:vetting 640" ]] ||
  fail "/etc/vetting/config.yaml is $(stat -c '%U:%G %a' /etc/vetting/config.yaml)"
grep -qx /etc/vetting/config.yaml /var/lib/dpkg/info/vetting.conffiles || fail "the config is no conffile"
cmp -s /etc/vetting/config.yaml /usr/share/doc/vetting/config.example.yaml ||
  fail "/etc/vetting/config.yaml is not the example config"
zcat /usr/share/man/man1/vetting.1.gz | grep -q '^\.TH' || fail "no man page"
grep -q vetting /usr/share/bash-completion/completions/vetting || fail "no bash completion"

echo "== systemd-analyze"
if command -v systemd-analyze >/dev/null; then
  verify=$(systemd-analyze verify /lib/systemd/system/vetting.service 2>&1) ||
    fail "systemd-analyze verify: $verify"
  [[ -z $verify ]] || fail "systemd-analyze verify complains: $verify"
  exposure=$(systemd-analyze security --offline=yes /lib/systemd/system/vetting.service 2>&1 |
    sed -n 's/.*Overall exposure level for vetting.service: \([0-9.]*\).*/\1/p')
  [[ -n $exposure ]] || fail "systemd-analyze security gave no exposure level"
  echo "exposure level $exposure"
  awk -v level="$exposure" 'BEGIN { exit !(level <= 3.0) }' ||
    fail "the unit's exposure level $exposure is above 3.0"
else
  fail "systemd-analyze is missing (package systemd)"
fi

echo "== vetting serve --config /etc/vetting/config.yaml (as vetting)"
# what the unit runs, without systemd: the unit's user, working directory
# and config; a free loopback port instead of the config's 8080
cd /var/lib/vetting
setpriv --reuid vetting --regid vetting --init-groups -- \
  /usr/bin/vetting serve --config /etc/vetting/config.yaml --listen 127.0.0.1:0 \
  >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
cd /
url=""
for _ in $(seq 1 600); do
  url=$(sed -n 's/^vetting listening on \(http:[^ ]*\).*/\1/p' "$work/serve.out" | head -n1)
  [[ -n $url ]] && break
  kill -0 "$server_pid" 2>/dev/null || fail "vetting serve exited: $(cat "$work/serve.err")"
  sleep 0.1
done
[[ -n $url ]] || fail "vetting serve printed no URL: $(cat "$work/serve.err")"
body=""
for _ in $(seq 1 300); do
  body=$(curl -fsS --max-time 5 "$url/healthz" 2>/dev/null) && break
  sleep 0.1
done
[[ $body == ok ]] || fail "/healthz answered '$body'"
echo "$url/healthz: $body"
[[ $(stat -c %U /var/lib/vetting/vetting.db) == vetting ]] || fail "no database of vetting's in /var/lib/vetting"
[[ $(stat -c '%U %a' /var/lib/vetting/secret.key) == "vetting 600" ]] ||
  fail "secret.key is $(stat -c '%U %a' /var/lib/vetting/secret.key)"
kill "$server_pid"
wait "$server_pid" || true
server_pid=""

echo "== dpkg -r, then dpkg --purge"
dpkg -r vetting
[[ -e /usr/bin/vetting ]] && fail "/usr/bin/vetting is left after dpkg -r"
[[ -f /var/lib/vetting/vetting.db ]] || fail "dpkg -r deleted the data folder"
[[ -f /etc/vetting/config.yaml ]] || fail "dpkg -r deleted the config (a conffile)"
dpkg --purge vetting
if dpkg -s vetting >/dev/null 2>&1; then
  fail "dpkg -s vetting still knows the package"
fi
for path in /usr/bin/vetting /usr/bin/vetting-agent /lib/systemd/system/vetting.service \
  /etc/vetting /var/lib/vetting /usr/share/doc/vetting /usr/share/man/man1/vetting.1.gz \
  /usr/share/bash-completion/completions/vetting \
  /etc/systemd/system/multi-user.target.wants/vetting.service \
  /etc/systemd/system/vetting.service; do
  [[ -e $path || -L $path ]] && fail "$path is left after the purge"
done
echo "purged: nothing of the package is left (the vetting user is kept, as Debian does; this test deletes the one it made)"
