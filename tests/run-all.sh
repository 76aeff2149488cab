#!/bin/sh
# Runs every suite (bats, then pytest) and ends with one line counting all tests, so CI,
# which reads the closing line, sees the failures of both.
set -u
cd "$(dirname "$0")/.."
venv=.venv/bin
tap=$(mktemp)
log=$(mktemp)
trap 'rm -f "$tap" "$log"' EXIT
"$venv/bats" --formatter tap tests/e2e | tee "$tap"
bats_status=$?
"$venv/python" -m pytest -q tests/unit | tee "$log"
pytest_status=$?
count() { grep -Eo "[0-9]+ $1" "$2" | tail -n1 | cut -d' ' -f1; }
bats_passed=$(grep -c '^ok ' "$tap")
bats_failed=$(grep -c '^not ok ' "$tap")
py_passed=$(count passed "$log"); py_failed=$(count failed "$log"); py_errors=$(count error "$log")
passed=$((bats_passed + ${py_passed:-0}))
failed=$((bats_failed + ${py_failed:-0} + ${py_errors:-0}))
if [ "$bats_status" -ne 0 ] || [ "$pytest_status" -ne 0 ] || [ "$passed" -eq 0 ]; then
    [ "$failed" -gt 0 ] || failed=1
fi
echo "== $passed passed, $failed failed (bats: $bats_passed passed, $bats_failed failed; pytest: ${py_passed:-0} passed, $((${py_failed:-0} + ${py_errors:-0})) failed) =="
[ "$failed" -eq 0 ]
