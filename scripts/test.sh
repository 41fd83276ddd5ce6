#!/usr/bin/env bash
# Runs every test of vetting: installs what the tests need, starts a
# throwaway PostgreSQL, then fmt, clippy and the whole test suite. Prints how
# long each phase took. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

phase_start=$SECONDS
phase() {
  local now=$SECONDS
  if [[ -n "${phase_name:-}" ]]; then
    printf '== %-28s %4ds\n' "$phase_name" $((now - phase_start)) | tee -a target/phase-times.txt
  fi
  phase_name=$1
  phase_start=$now
  if [[ -n "$phase_name" ]]; then
    echo "== $phase_name"
  fi
}
mkdir -p target
: > target/phase-times.txt

phase "install dependencies"
bash scripts/install-deps.sh
[[ -x scripts/power-sushy-venv.sh ]] && bash scripts/power-sushy-venv.sh

phase "start PostgreSQL"
pg_out=$(bash scripts/postgres.sh 2>/tmp/vetting-pg-dir)
pg_dir=$(cat /tmp/vetting-pg-dir)
trap 'bash scripts/postgres.sh stop "$pg_dir"' EXIT
export VETTING_TEST_POSTGRES_URL="$pg_out"
export VETTING_REQUIRE_POSTGRES=1
echo "PostgreSQL at $VETTING_TEST_POSTGRES_URL"

phase "cargo fmt --check"
cargo fmt --all -- --check

phase "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

phase "cargo test"
export CI=${CI:-true}
export INSTA_UPDATE=no
cargo test --workspace --lib --bins --tests --examples --no-fail-fast -- --test-threads="${VETTING_TEST_THREADS:-4}"

phase "benches compile and run once (criterion test mode)"
cargo test --workspace --benches --no-fail-fast

phase "doc tests"
cargo test --workspace --doc

phase ""
echo "== phase times"
cat target/phase-times.txt
