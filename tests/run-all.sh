#!/bin/sh
# Runs every suite (the bats files, the round trip on the test Hub and on S3, pytest; side by
# side) and ends with one line counting all tests, so CI, which reads the closing line, sees
# the failures of each.
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
# The bats files, the longest first: GNU parallel starts them in this order as jobs free up,
# so a long file (above all one whose tests run one at a time) starts at once instead of
# ending the run alone on one core while the other idles. Longest as `bats --timing` measured
# them; a file not named here runs after these, in name order.
first="restore-txn faults crash entrypoint sqlite hostile s3 prune hub backup-faults hub-year hub-strict check"
files=
for name in $first; do
    [ -f "tests/e2e/$name.bats" ] && files="$files tests/e2e/$name.bats"
done
for file in tests/e2e/*.bats; do
    case " $files " in *" $file "*) ;; *) files="$files $file" ;; esac
done
started=$(date +%s)
# The round trip again against the test Hub and against the S3 test server (moto behind the
# fault proxy, tests/s3/s3server.py): the same file, parameterised by store. These and pytest
# run beside the local suite: the round trips at a lower priority, their long chains filling
# the cores the local suite leaves idle instead of running after it on one; pytest at the
# same priority, as it mostly waits on its servers (a quarter of a core) and, niced on a
# loaded machine, took five times as long. Each suite writes its own output file and its own
# status, read once all are done.
suite() {  # suite NAME COMMAND...: run it in the background, its status in $out/NAME.status
    name=$1
    shift
    { "$@"; echo "$?" >"$out/$name.status"; date +%s >"$out/$name.ended"; } &
}
suite hf env OCB_TEST_STORE=hf BATS_TEST_NAME_PREFIX="[hf] " nice -n 5 "$venv/bats" "$@" tests/e2e/roundtrip.bats >"$out/hf.tap"
suite s3 env OCB_TEST_STORE=s3 BATS_TEST_NAME_PREFIX="[s3] " nice -n 5 "$venv/bats" "$@" tests/e2e/roundtrip.bats >"$out/s3.tap"
suite pytest "$venv/python" -m pytest -q tests/unit >"$out/pytest.log" 2>&1
# shellcheck disable=SC2086  # $files is a list of paths without spaces (tests/e2e/NAME.bats)
"$venv/bats" "$@" $files >"$out/local.tap" || status=1
date +%s >"$out/local.ended"
wait
for name in hf s3 pytest; do
    [ "$(cat "$out/$name.status" 2>/dev/null)" = 0 ] || status=1
done
cat "$out/local.tap" "$out/hf.tap" "$out/s3.tap" "$out/pytest.log"
ended() { echo $(($(cat "$out/$1.ended") - started)); }
bats_seconds=$(ended local)
for name in hf s3; do [ "$(ended "$name")" -le "$bats_seconds" ] || bats_seconds=$(ended "$name"); done
pytest_seconds=$(ended pytest)
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
echo "== time: bats ${bats_seconds}s, pytest ${pytest_seconds}s (at once, each from the start), all $(($(date +%s) - started))s =="
echo "== $passed passed, $failed failed (bats: $bats_passed passed, $bats_failed failed; pytest: $py_passed passed, $py_failed failed) =="
[ "$failed" -eq 0 ]
