#!/usr/bin/env bash
# The main job on the embedded default: installs what it needs, builds, and
# starts the orchestrator with SQLite in ./data and no config file.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
cargo build --release -p vetting-cli -p vetting-agent
# `vetting demo` vets this machine end to end; pass `serve` to run the
# orchestrator instead.
exec ./target/release/vetting "${@:-demo}"
