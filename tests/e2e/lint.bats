#!/usr/bin/env bats
# Every sh file is POSIX sh that dash parses and shellcheck passes.

load test_helper

SH_FILES="entrypoint.sh bin/ocb-backup bin/ocb-restore lib/sh/lock.sh examples/demo.sh tests/run-all.sh tests/hub/start-hub.sh tests/e2e/fixtures/app/app.sh"

@test "every sh file passes shellcheck" {
    cd "$OCB_ROOT"
    # shellcheck disable=SC2086
    run -0 "$OCB_ROOT/.venv/bin/shellcheck" -x $SH_FILES
}

@test "every sh file parses under dash" {
    cd "$OCB_ROOT"
    for f in $SH_FILES; do
        run -0 dash -n "$f"
    done
}
