#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment holding sushy-tools'
# Redfish emulator, which the Redfish power tests drive. Idempotent: a venv
# that already has a working `sushy-emulator` is left as it is.
#
# Usage: scripts/power-sushy-venv.sh [VENV_DIR]
#   VENV_DIR defaults to target/sushy-venv under the workspace root.
set -euo pipefail

workspace_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_dir="${1:-$workspace_root/target/sushy-venv}"
# Debian's own Python has the venv module (package python3-venv); a pyenv
# shim earlier on PATH may not.
python_bin="/usr/bin/python3"
[[ -x "$python_bin" ]] || python_bin="$(command -v python3)"

if [[ -x "$venv_dir/bin/sushy-emulator" ]] && "$venv_dir/bin/python" -c 'import sushy_tools' 2>/dev/null; then
  echo "power-sushy-venv: $venv_dir ready"
  exit 0
fi

echo "power-sushy-venv: creating $venv_dir"
rm -rf "$venv_dir"
"$python_bin" -m venv "$venv_dir"
"$venv_dir/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$venv_dir/bin/pip" install --quiet --disable-pip-version-check "sushy-tools>=1.0"
"$venv_dir/bin/python" -c 'import sushy_tools' 
echo "power-sushy-venv: $venv_dir ready"
