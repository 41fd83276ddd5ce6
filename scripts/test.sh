#!/usr/bin/env bash
# Runs every test of vetting: installs what the tests need, starts a
# throwaway PostgreSQL, then fmt, clippy and the whole test suite. Prints how
# long each phase took. This is the README's test command and what CI runs.
#
# Every test must run: VETTING_REQUIRE_ALL=1 makes a test whose prerequisite
# (root, loop devices, namespaces, a tool) is missing fail, naming it
# (vetting-testkit). Run with VETTING_REQUIRE_ALL=0 to let such tests skip
# instead; each skip is appended to VETTING_SKIP_LOG. The script ends with a
# summary whose last line is `N passed, N failed, N skipped` (CI reads it);
# "passed" does not count skipped tests.
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
export VETTING_REQUIRE_ALL=${VETTING_REQUIRE_ALL:-1}
export VETTING_SKIP_LOG="$PWD/target/skipped-tests.txt"
: > "$VETTING_SKIP_LOG"
: > target/test-output.txt
test_status=0
# the output is kept so that the summary can count libtest's result lines
tests() {
  local status=0
  "$@" 2>&1 | tee -a target/test-output.txt || status=$?
  if ((status != 0)); then
    echo "test.sh: \`$*\` exited with status $status" | tee -a target/test-failures.txt
    test_status=$status
  fi
}
: > target/test-failures.txt
: > target/examples-output.txt
tests cargo test --workspace --lib --bins --tests --examples --no-fail-fast -- --test-threads="${VETTING_TEST_THREADS:-4}"

phase "benches compile and run once (criterion test mode)"
tests cargo test --workspace --benches --no-fail-fast

phase "doc tests"
tests cargo test --workspace --doc

phase "examples"
# each example runs to completion on loopback and exits non-zero on failure;
# one example is one test in the summary
examples_passed=0
examples_failed=0
for example in custom_server scripted_run fleet; do
  status=0
  timeout 600 cargo run --quiet -p vetting-examples --example "$example" 2>&1 |
    tee -a target/examples-output.txt || status=${PIPESTATUS[0]}
  if ((status == 0)); then
    examples_passed=$((examples_passed + 1))
    echo "example $example: ok"
  else
    examples_failed=$((examples_failed + 1))
    echo "test.sh: example $example exited with status $status" | tee -a target/test-failures.txt
    test_status=$status
  fi
done

phase ""
echo "== phase times"
cat target/phase-times.txt

echo "== test summary"
# libtest: "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; ..."
read -r passed failed ignored < <(
  sed -n 's/.*test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored;.*/\1 \2 \3/p' \
    target/test-output.txt |
    awk '{ p += $1; f += $2; i += $3 } END { print p + 0, f + 0, i + 0 }'
)
passed=$((passed + examples_passed))
failed=$((failed + examples_failed))
# one line per skipped test (a test may have asked more than once)
skipped=$(cut -f1 "$VETTING_SKIP_LOG" | sort -u | wc -l)
echo "ignored (#[ignore], run by other tests or by hand): $ignored"
echo "skipped (a prerequisite missing, VETTING_REQUIRE_ALL=$VETTING_REQUIRE_ALL): $skipped"
if ((skipped > 0)); then
  sort -u "$VETTING_SKIP_LOG" | sed 's/^/  /'
fi
if ((test_status != 0)); then
  cat target/test-failures.txt
  if ((failed == 0)); then
    echo "a test command failed without a failing test (a build error?), counted as 1 failure: see above"
    failed=1
  fi
fi
if ((failed > 0 && test_status == 0)); then
  test_status=1
fi
echo "$((passed - skipped)) passed, $failed failed, $skipped skipped"
exit "$test_status"
