#!/usr/bin/env bats
# bench/run.py (make bench) at a tiny scale, so the harness cannot rot: it must run every case
# and write well-formed results. No timing is asserted, ever.

load test_helper

setup() {
    ocb_setup
    export OCB_SCRYPT_LOG_N=10  # the bench proper runs the default KDF
}

@test "the bench harness runs every case at a tiny scale and writes well-formed results" {
    run -0 --separate-stderr nice "$PYTHON" "$OCB_ROOT/bench/run.py" --scale 0.002 --runs 1 --no-restic \
        --dir "$BATS_TEST_TMPDIR/bench" --restore-dir "$BATS_TEST_TMPDIR" --out "$BATS_TEST_TMPDIR/results.json"
    [[ "$output" == *"targets:"* ]]
    [ ! -e "$BATS_TEST_TMPDIR/bench" ]  # the bench dir is removed afterwards
    jq -e '
        .bench == 1 and .runs == 1 and .home.files > 0 and .home.bytes > 0
        and ([.cases | keys[]] | sort) == (["full-sealed", "full-unsealed", "incremental", "list", "restore", "skip"])
        and ([.cases[] | .ocb.median | (.wall, .cpu) | select(type == "number" and . > 0)] | length) == 12
        and ([.cases[] | .ocb.median.rss | select(. > 0)] | length) == 6
        and .cases["full-sealed"].ocb.ratios["tar-zstd"].wall > 0
        and .cases["full-sealed"].ocb.median.bytes > 0
        and .cases.incremental.ocb.median.bytes > 0
        and .cases.restore["tar-gzip"].median.wall > 0
        and (.targets | length) == 7
        and all(.targets[]; has("target") and has("goal") and has("met"))
    ' "$BATS_TEST_TMPDIR/results.json" >/dev/null
}
