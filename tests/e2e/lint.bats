#!/usr/bin/env bats
# Every sh file is POSIX sh that dash parses and shellcheck passes.

load test_helper

SH_FILES="entrypoint.sh $(cd "$OCB_ROOT" && echo bin/ocb-*) lib/sh/lock.sh lib/sh/stage.sh examples/demo.sh tests/run-all.sh tests/hub/start-hub.sh tests/s3/start-s3.sh tests/e2e/fixtures/app/app.sh"

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

@test "the repository tracks no ignored path and no build output" {
    cd "$OCB_ROOT"
    run -0 git ls-files -ci --exclude-standard
    [ -z "$output" ] || { echo "tracked although .gitignore lists them:" >&2; echo "$output" >&2; return 1; }
    run -0 git ls-files
    [ -n "$output" ]
    built=$(grep -E '(^|/)(\.venv|build|__pycache__)/|(^|/)[^/]*\.egg-info(/|$)' <<<"$output" || true)
    [ -z "$built" ] || { echo "tracked build output:" >&2; echo "$built" >&2; return 1; }
}

@test "examples/Dockerfile installs jq, which ocb-backup, ocb-restore and the entrypoint read documents with" {
    run -0 grep -E '^\s*(RUN|&&).*apt-get install .*\bjq\b' "$OCB_ROOT/examples/Dockerfile"
    grep -q 'jq' <(sed -n '/^## Running it/,/^## Snapshots/p' "$OCB_ROOT/README.md")
}

@test "every bats file and the helper pass shellcheck at warning level: no bare ! that cannot fail a test" {
    cd "$OCB_ROOT"
    run -0 "$OCB_ROOT/.venv/bin/shellcheck" -S warning -s bash -x tests/e2e/test_helper.bash tests/e2e/*.bats
}
