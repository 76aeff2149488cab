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

# --- the full/incremental decision, as a table ------------------------------------------------
# Each row: a situation made black-box (backups, a clock moved on with faketime, another
# machine's backup), then one ocb-plan; its .plan.type and .plan.reasons are what is checked.
# The clock is faked with libfaketime (Debian's faketime; `make test` installs it).

# decision [ENV=VALUE...] [-- PLAN FLAGS...]: run ocb-plan with those, print "TYPE<tab>REASONS"
# (the reasons joined with " | "), keep the document in $BATS_TEST_TMPDIR/decision.json
decision() {
    local envs=() flags=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
    [ "${1:-}" != -- ] || { shift; flags=("$@"); }
    env "${envs[@]}" ocb-plan "${flags[@]}" >"$BATS_TEST_TMPDIR/decision.json" 2>"$BATS_TEST_TMPDIR/decision.err" || {
        echo "ocb-plan failed ($?):" >&2; cat "$BATS_TEST_TMPDIR/decision.err" >&2; return 1; }
    jq -r '[.plan.type, (.plan.reasons | join(" | "))] | @tsv' "$BATS_TEST_TMPDIR/decision.json"
}

# expect TYPE REGEX [ENV=VALUE...] [-- FLAGS...]: the decision is TYPE; a full one has exactly
# one reason, matching REGEX; an incremental one none (REGEX is then "")
expect() {
    local type=$1 regex=$2 got
    shift 2
    got=$(decision "$@") || return 1
    echo "${*/LD_PRELOAD=*/(faketime)} -> $got" >&3
    jq -e --arg type "$type" --arg re "$regex" '.plan.type == $type and
        (if $type == "full" then (.plan.reasons | length) == 1 and (.plan.reasons[0] | test($re))
         else .plan.reasons == [] end)' "$BATS_TEST_TMPDIR/decision.json" >/dev/null || {
        echo "with $*: expected $type /$regex/, got: $got" >&2; return 1; }
}

change() { printf '%s\n' "$RANDOM" >>"$HOME/.openclaw/a.txt"; }

# in_hours N: the VAR=VALUE words that move a command's clock N hours on (libfaketime)
in_hours() { echo "FAKETIME=+$1h" "LD_PRELOAD=$FAKETIME_LIB" FAKETIME_DONT_FAKE_MONOTONIC=1; }

@test "plan's full/incremental decision: a table of situations, each with its reason" {
    FAKETIME_LIB=$(find /usr/lib /usr/lib64 -name libfaketime.so.1 2>/dev/null | head -n1)
    [ -n "$FAKETIME_LIB" ] || { echo "libfaketime is missing: make test installs Debian's faketime" >&2; return 1; }
    # the clock really moves under libfaketime
    # shellcheck disable=SC2046
    [ "$(env $(in_hours 25) date -u +%s)" -ge $(( $(date -u +%s) + 24 * 3600 )) ]

    # no cache yet: the first snapshot is full
    expect full 'no local index'
    backup_ok
    change
    # the plain case: one snapshot behind, something changed
    expect incremental ''
    expect full '--full' -- --full
    expect full 'OCB_INCREMENTAL|incremental backups are off' OCB_INCREMENTAL=false
    expect full 'OCB_INCREMENTAL|OPENCLAW_INCREMENTAL_BACKUP|incremental backups are off' OPENCLAW_INCREMENTAL_BACKUP=false
    expect incremental '' OCB_INCREMENTAL=true

    # OCB_FULL_EVERY: after one incremental, a limit of 1 is reached and a limit of 2 is not
    backup_ok
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
    change
    expect full 'OCB_FULL_EVERY' OCB_FULL_EVERY=1
    expect incremental '' OCB_FULL_EVERY=2
    expect full 'OCB_FULL_EVERY|OPENCLAW_MAX_INCREMENTAL_BACKUPS' OPENCLAW_MAX_INCREMENTAL_BACKUPS=1
    expect incremental '' OPENCLAW_MAX_INCREMENTAL_BACKUPS=2
    expect incremental '' OCB_FULL_EVERY=2 OPENCLAW_MAX_INCREMENTAL_BACKUPS=1   # OCB_* wins

    # OCB_FULL_HOURS: the chain's full snapshot grows old on a clock moved forward
    # shellcheck disable=SC2046  # in_hours is a list of VAR=VALUE words
    expect full 'OCB_FULL_HOURS' $(in_hours 25)                      # the default is 24 h
    # shellcheck disable=SC2046
    expect incremental '' $(in_hours 23)
    # shellcheck disable=SC2046
    expect full 'OCB_FULL_HOURS' OCB_FULL_HOURS=2 $(in_hours 3)
    # shellcheck disable=SC2046
    expect incremental '' OCB_FULL_HOURS=2 $(in_hours 1)
    # shellcheck disable=SC2046
    expect full 'OCB_FULL_HOURS|OPENCLAW_FULL_BACKUP_INTERVAL_HOURS' OPENCLAW_FULL_BACKUP_INTERVAL_HOURS=2 $(in_hours 3)
    # shellcheck disable=SC2046
    expect incremental '' OCB_FULL_HOURS=0 $(in_hours 1000)          # 0: never

    # diverged lineage: another machine's backup landed on the same store since ours
    other="$BATS_TEST_TMPDIR/other"
    mkdir -p "$other"
    cp -a "$HOME" "$other/home" && cp -a "$OCB_CACHE_DIR" "$other/cache"
    printf 'other machine\n' >"$other/home/.openclaw/other.txt"
    sleep 1   # another second, another id
    HOME="$other/home" OCB_CACHE_DIR="$other/cache" OCB_WORK_DIR="$other/work" backup_ok
    theirs=$(last_id)
    expect full 'diverged'
    jq -e --arg theirs "$theirs" '.plan.diverged_from == $theirs' "$BATS_TEST_TMPDIR/decision.json"
    grep -q "$theirs" "$BATS_TEST_TMPDIR/decision.err"   # the warning says which snapshot
}
