#!/bin/sh
# Runs every suite (bats, then pytest) and ends with one line counting all tests, so CI,
# which reads the closing line, sees the failures of both.
set -u
cd "$(dirname "$0")/.." || exit 2
venv=.venv/bin
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
# bats runs OCB_TEST_JOBS tests at once (default 2, the cores of the machines this runs on)
# when GNU parallel is there, which it needs for that: every test has its own HOME, store, work
# dir and cache, and the files whose tests share one test Hub's faults and counters run theirs
# one at a time (hub_setup_file).
set -- --formatter tap
if command -v parallel >/dev/null 2>&1; then
    set -- "$@" --jobs "${OCB_TEST_JOBS:-2}"
else
    echo "run-all.sh: GNU parallel is missing, so bats runs one test at a time (make test installs it)" >&2
fi
started=$(date +%s)
"$venv/bats" "$@" tests/e2e >"$out/local.tap" || status=1
cat "$out/local.tap"
# the round trip again against the test Hub: the same file, parameterised by store
OCB_TEST_STORE=hf BATS_TEST_NAME_PREFIX="[hf] " "$venv/bats" "$@" tests/e2e/roundtrip.bats >"$out/hf.tap" || status=1
cat "$out/hf.tap"
# and against the S3 test server (moto behind the fault proxy, tests/s3/s3server.py)
OCB_TEST_STORE=s3 BATS_TEST_NAME_PREFIX="[s3] " "$venv/bats" "$@" tests/e2e/roundtrip.bats >"$out/s3.tap" || status=1
cat "$out/s3.tap"
bats_seconds=$(($(date +%s) - started))
"$venv/python" -m pytest -q tests/unit >"$out/pytest.log" 2>&1 || status=1
cat "$out/pytest.log"
pytest_seconds=$(($(date +%s) - started - bats_seconds))
count() { n=$(grep -Eo "[0-9]+ $1" "$out/pytest.log" | tail -n1 | cut -d' ' -f1); echo "${n:-0}"; }
bats_passed=$(cat "$out"/*.tap | grep -c '^ok ')
bats_failed=$(cat "$out"/*.tap | grep -c '^not ok ')
py_passed=$(count passed)
py_failed=$(( $(count failed) + $(count error) ))
passed=$((bats_passed + py_passed))
failed=$((bats_failed + py_failed))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # a suite crashed before counting
if [ "$passed" -eq 0 ]; then failed=$((failed + 1)); fi            # a run with no test is a failure
# the fault matrix (issue 7): the bats cases tagged `# bats test_tags=matrix`, counted by name
awk '/^# bats test_tags=.*matrix/ {tagged = 1; next}
     tagged && /^@test / {sub(/^@test "/, ""); sub(/" *\{ *$/, ""); print}
     {tagged = 0}' tests/e2e/*.bats | sort -u >"$out/matrix.names"
sed -n 's/^\(not \)\{0,1\}ok [0-9]* //p' "$out"/*.tap | sed 's/ # skip.*$//' >"$out/run.names"
matrix_run=$(grep -cxFf "$out/matrix.names" "$out/run.names")
matrix_passed=$(grep -h '^ok ' "$out"/*.tap | grep -v ' # skip' | sed 's/^ok [0-9]* //' | grep -cxFf "$out/matrix.names")
echo "== fault matrix: $matrix_run cases run, $matrix_passed passed (of $(wc -l <"$out/matrix.names") tagged) =="
echo "== time: bats ${bats_seconds}s, pytest ${pytest_seconds}s =="
echo "== $passed passed, $failed failed (bats: $bats_passed passed, $bats_failed failed; pytest: $py_passed passed, $py_failed failed) =="
[ "$failed" -eq 0 ]
