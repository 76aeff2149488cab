#!/usr/bin/env bats
# A fresh clone installs by itself: `make install` in a bare environment (what a Dockerfile's
# RUN or a first login has), with nothing from this checkout's .venv, and then bin/ocb-* run
# by path from any directory. pip fetches the pinned wheels (from its cache dirs or the
# registry): about a minute, so the test is tagged slow.

load test_helper

# bats test_tags=slow
@test "a fresh clone installs with make install under env -i, and its commands run from another directory" {
    clone="$BATS_TEST_TMPDIR/clone"
    bare_home="$BATS_TEST_TMPDIR/h"
    mkdir -p "$bare_home" "$BATS_TEST_TMPDIR/elsewhere"
    git clone --quiet "$OCB_ROOT" "$clone"
    [ ! -e "$clone/.venv" ]   # nothing of this checkout's venv comes with the clone
    cd "$clone"
    run -0 timeout 600 env -i HOME="$bare_home" PATH=/usr/bin:/bin make install
    [ -x "$clone/.venv/bin/python" ]
    # the venv is the clone's own, not this checkout's
    run -0 "$clone/.venv/bin/python" -c 'import ocb, sys; print(ocb.__file__); print(sys.prefix)'
    [[ "${lines[0]}" == "$clone/lib/ocb/"* ]]
    [ "${lines[1]}" = "$clone/.venv" ]
    cd "$BATS_TEST_TMPDIR/elsewhere"
    run -0 --separate-stderr env -i HOME="$bare_home" PATH=/usr/bin:/bin "$clone/bin/ocb-plan" --help
    [[ "$output" == *"Usage: ocb-plan"* ]]
    # and git status in the clone stays clean: make install writes only ignored paths
    run -0 git -C "$clone" status --porcelain
    [ -z "$output" ]
}
