#!/usr/bin/env bats
# ocb-plan: sources, excludes, full/incremental/skip decisions, and its usage errors.

load test_helper

setup() {
    ocb_setup
    printf 'state\n' >"$HOME/.openclaw/a.txt"
}

@test "plan notes a missing optional root and exits 2 on a missing state dir" {
    run -0 --separate-stderr ocb-plan
    jq -e '.plan.missing_roots | index("root-ssh") != null' <<<"$output"
    [[ "$stderr" == *"absent roots"* ]]
    rm -r "$HOME/.openclaw"
    run -2 --separate-stderr ocb-plan
    [[ "$stderr" == *"does not exist"* ]]
}

@test "plan names a bad env value or flag and exits 2" {
    OCB_VOLUME_SIZE=lots run -2 --separate-stderr ocb-plan
    [[ "$stderr" == *"OCB_VOLUME_SIZE"* ]]
    OPENCLAW_BACKUP_EXTRA_DIRS="nocolon" run -2 --separate-stderr ocb-plan
    [[ "$stderr" == *"OPENCLAW_BACKUP_EXTRA_DIRS"* ]]
    OCB_FULL_EVERY=-1 run -2 --separate-stderr ocb-plan
    [[ "$stderr" == *"OCB_FULL_EVERY"* ]]
    run -2 --separate-stderr ocb-plan --no-such-flag
    [[ "$stderr" == *"no-such-flag"* ]]
}

@test "plan leaves out the default excludes and OCB_EXCLUDE patterns, unless turned off" {
    s="$HOME/.openclaw"
    mkdir -p "$s/node_modules/pkg" "$s/logs" "$s/keep"
    printf 'x' >"$s/node_modules/pkg/index.js"; printf 'x' >"$s/logs/today.log"
    printf 'x' >"$s/keep/secret.tmp"; printf 'x' >"$s/keep/kept.txt"
    OCB_EXCLUDE='*.tmp' backup_ok
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    [ -f "$BATS_TEST_TMPDIR/r/.openclaw/keep/kept.txt" ]
    [ ! -e "$BATS_TEST_TMPDIR/r/.openclaw/keep/secret.tmp" ]
    [ ! -e "$BATS_TEST_TMPDIR/r/.openclaw/node_modules" ]
    [ ! -e "$BATS_TEST_TMPDIR/r/.openclaw/logs" ]
    OCB_DEFAULT_EXCLUDES=off backup_ok
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r2"
    [ -f "$BATS_TEST_TMPDIR/r2/.openclaw/node_modules/pkg/index.js" ]
    [ -f "$BATS_TEST_TMPDIR/r2/.openclaw/logs/today.log" ]
}

@test "plan takes a full snapshot after OCB_FULL_EVERY incrementals and on --full" {
    backup_ok
    for n in 1 2; do
        printf '%s\n' "$n" >>"$HOME/.openclaw/a.txt"
        OCB_FULL_EVERY=2 backup_ok
        [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
    done
    printf 'three\n' >>"$HOME/.openclaw/a.txt"
    OCB_FULL_EVERY=2 backup_ok
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = full ]
    backup_ok --full
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = full ]
}

@test "plan takes a full snapshot when the local cache is gone" {
    backup_ok
    rm -r "$OCB_CACHE_DIR"
    backup_ok
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = full ]
}

@test "plan backs up the legacy extra dirs and files under their names" {
    mkdir -p "$BATS_TEST_TMPDIR/extra" && printf 'e' >"$BATS_TEST_TMPDIR/extra/e.txt"
    printf 'f' >"$BATS_TEST_TMPDIR/single.conf"
    export OPENCLAW_BACKUP_EXTRA_DIRS="my-extra:$BATS_TEST_TMPDIR/extra"
    export OPENCLAW_BACKUP_EXTRA_FILES="one-file:$BATS_TEST_TMPDIR/single.conf"
    backup_ok
    rm -r "$BATS_TEST_TMPDIR/extra" "$BATS_TEST_TMPDIR/single.conf"
    run -0 --separate-stderr ocb-restore
    [ "$(cat "$BATS_TEST_TMPDIR/extra/e.txt")" = e ]
    [ "$(cat "$BATS_TEST_TMPDIR/single.conf")" = f ]
}
