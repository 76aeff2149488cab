#!/usr/bin/env bats
# entrypoint.sh as a container's ENTRYPOINT (under dash, and bash for the main scenario), with
# tests/e2e/fixtures/app/app.sh standing in for the app, and the crontab line. (The lock and
# the sweep of bin/ocb-backup: backup.bats.)
# Nothing here sleeps for a fixed time: every wait polls a condition with a timeout.

load test_helper

EP="$OCB_ROOT/entrypoint.sh"
APP="$OCB_ROOT/tests/e2e/fixtures/app/app.sh"

setup() {
    ocb_setup
    unset OCB_INTERVAL OCB_STOP_TIMEOUT OCB_ON_RESTORE_FAIL OPENCLAW_INCREMENTAL_INTERVAL_MINUTES \
        APP_EXIT APP_RUN_FOR APP_SIGNAL_EXIT APP_IGNORE_TERM
    export APP_RUN="$BATS_TEST_TMPDIR/app-run"
    export OCB_RESTORE_DONE_FILE="$BATS_TEST_TMPDIR/restore-completed"
    export OCB_RESTORE_SKIPPED_FILE="$BATS_TEST_TMPDIR/restore-skipped-no-backup"
    mkdir -p "$APP_RUN"
    EP_PID=""
    # shellcheck disable=SC2034  # read by wait_for (test_helper.bash)
    WAIT_FOR_LOG="$BATS_TEST_TMPDIR/ep.err"   # what wait_for shows when it times out
}

teardown() {
    # a failed test must not leave an entrypoint or an app behind
    if [ -n "$EP_PID" ]; then kill -s KILL "$EP_PID" 2>/dev/null || true; fi
    for pid in $(leftovers); do kill -s KILL "$pid" 2>/dev/null || true; done
}

# start_entrypoint SHELL: run SHELL entrypoint.sh APP in the background, marked so that every
# process it starts can be found again (leftovers). A background job starts with SIGINT
# ignored, which a shell cannot undo; env gives it the default back, as a container's PID 1 has.
start_entrypoint() {
    OCB_TEST_MARK="$BATS_TEST_TMPDIR" env --default-signal=INT "$1" "$EP" "$APP" \
        >"$BATS_TEST_TMPDIR/ep.out" 2>"$BATS_TEST_TMPDIR/ep.err" &
    EP_PID=$!
}

# stop_entrypoint SIGNAL: send it, wait for the entrypoint to end, keep its status in EP_STATUS
stop_entrypoint() {
    kill -s "$1" "$EP_PID"
    EP_STATUS=0
    wait "$EP_PID" || EP_STATUS=$?
    EP_PID=""
}

# leftovers: pids of processes still running from a marked entrypoint
leftovers() {
    grep -lszxF "OCB_TEST_MARK=$BATS_TEST_TMPDIR" /proc/[0-9]*/environ | cut -d/ -f3
}

no_leftovers() {
    local pid
    [ -z "$(leftovers)" ] || return 1
    for pid in "$APP_RUN/app.pid" "$APP_RUN/sleeper.pid"; do
        if [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null; then return 1; fi
    done
}

# fresh_container NAME: an empty HOME, work dir and cache, on the same store
fresh_container() {
    export HOME="$BATS_TEST_TMPDIR/$1/home"
    export OCB_WORK_DIR="$BATS_TEST_TMPDIR/$1/work"
    export OCB_CACHE_DIR="$BATS_TEST_TMPDIR/$1/cache"
    mkdir -p "$HOME"
}

# snapshot_has FILE TEXT: the store's latest snapshot holds ~/.openclaw/FILE with that text
# (restored aside, with a work dir and cache of its own)
snapshot_has() {
    local look="$BATS_TEST_TMPDIR/look-$RANDOM"
    OCB_WORK_DIR="$look/work" OCB_CACHE_DIR="$look/cache" ocb-restore --to "$look/tree" >/dev/null 2>&1 &&
        [ "$(cat "$look/tree/.openclaw/$1" 2>/dev/null)" = "$2" ]
}

# a snapshot left by an earlier container, then a new container on the same store
earlier_container_snapshot() {
    printf 'from the last container\n' >"$HOME/.openclaw/restored.txt"
    backup_ok
    fresh_container c1
}

# damage_store: flip one byte in the middle of every volume
damage_store() {
    local volume
    for volume in "$STORE_DIR"/backups/*.tar.zst; do
        "$PYTHON" -c 'import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0xFF; open(p, "wb").write(b)' "$volume"
    done
}

main_scenario() {
    earlier_container_snapshot
    export OCB_INTERVAL=1 APP_SIGNAL_EXIT=42
    start_entrypoint "$1"
    wait_for 15 test -f "$APP_RUN/ready"
    # the restore had finished when the app started
    [ "$(cat "$APP_RUN/seen-at-start")" = "from the last container" ]
    [ -f "$OCB_RESTORE_DONE_FILE" ]
    [ ! -e "$OCB_RESTORE_SKIPPED_FILE" ]
    # what the app wrote is in a periodic snapshot, taken while it runs
    wait_for 20 snapshot_has app-writes.txt "written by the app"
    kill -0 "$(cat "$APP_RUN/app.pid")"

    printf 'changed right before the stop\n' >"$HOME/.openclaw/late.txt"
    stop_entrypoint TERM
    [ "$EP_STATUS" -eq 42 ]
    [ "$(cat "$APP_RUN/signal")" = TERM ]
    wait_for 5 no_leftovers
    grep -q 'entrypoint: backup: final backup done' "$BATS_TEST_TMPDIR/ep.err"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/before-stop"

    # a fresh container restores the final snapshot: the late change and the app's last words
    fresh_container c2
    ocb-restore >/dev/null 2>"$BATS_TEST_TMPDIR/restore.err"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/restored"
    diff "$BATS_TEST_TMPDIR/before-stop" "$BATS_TEST_TMPDIR/restored"
    [ "$(cat "$HOME/.openclaw/late.txt")" = "changed right before the stop" ]
    [ "$(cat "$HOME/.openclaw/stopped.txt")" = "stopped by SIGTERM" ]
}

@test "under dash: restore before the app, periodic backups, SIGTERM passed on, a final snapshot a fresh container restores" {
    main_scenario dash
}

@test "under bash: restore before the app, periodic backups, SIGTERM passed on, a final snapshot a fresh container restores" {
    main_scenario bash
}

@test "an app that exits by itself gets a final backup and its status is the entrypoint's" {
    earlier_container_snapshot
    export APP_RUN_FOR=0 APP_EXIT=7
    run -7 --separate-stderr dash "$EP" "$APP"
    [ "$(cat "$APP_RUN/seen-at-start")" = "from the last container" ]
    [[ "$stderr" == *"entrypoint: app: exited with status 7"* ]]
    [[ "$stderr" == *"entrypoint: backup: final backup done"* ]]
    snapshot_has app-writes.txt "written by the app"
}

@test "the log lines carry a UTC timestamp and the stage" {
    export APP_RUN_FOR=0
    run -0 --separate-stderr dash "$EP" "$APP"
    grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z entrypoint: (restore|app|backup): ' <<<"$stderr"
    # no entrypoint line without the timestamp and the stage
    [ -z "$(grep ' entrypoint: ' <<<"$stderr" | grep -vE '^[0-9-]{10}T[0-9:]{8}Z entrypoint: [a-z]+: ')" ]
}

@test "a first start on an empty store writes the skipped readiness file and starts the app" {
    export APP_RUN_FOR=0
    run -0 --separate-stderr dash "$EP" "$APP"
    [ -f "$OCB_RESTORE_SKIPPED_FILE" ]
    [ -f "$OCB_RESTORE_DONE_FILE" ]
    [ "$(cat "$APP_RUN/seen-at-start")" = missing ]
    [[ "$stderr" == *"no snapshot yet"* ]]
    # and its final backup is the store's first snapshot
    snapshot_has app-writes.txt "written by the app"
}

@test "SIGINT reaches the app, which sh would start with SIGINT ignored, and its status comes back" {
    export OCB_INTERVAL=1h APP_SIGNAL_EXIT=5
    start_entrypoint bash
    wait_for 15 test -f "$APP_RUN/ready"
    stop_entrypoint INT
    [ "$EP_STATUS" -eq 5 ]
    [ "$(cat "$APP_RUN/signal")" = INT ]
    wait_for 5 no_leftovers
}

@test "an app that ignores SIGTERM is killed after OCB_STOP_TIMEOUT, and still gets its final backup" {
    export OCB_INTERVAL=1h OCB_STOP_TIMEOUT=1 APP_IGNORE_TERM=1
    start_entrypoint dash
    wait_for 15 test -f "$APP_RUN/ready"
    stop_entrypoint TERM
    [ "$EP_STATUS" -eq 137 ]
    [ ! -e "$APP_RUN/signal" ]
    grep -q 'did not stop within 1s: SIGKILL' "$BATS_TEST_TMPDIR/ep.err"
    grep -q 'final backup done' "$BATS_TEST_TMPDIR/ep.err"
    wait_for 5 no_leftovers
}

@test "a damaged store with OCB_ON_RESTORE_FAIL=stop: the app never starts and the restore's status is the exit" {
    earlier_container_snapshot
    damage_store
    store_listing >"$BATS_TEST_TMPDIR/store-before"
    run -4 --separate-stderr dash "$EP" "$APP"
    [ ! -e "$APP_RUN/app.pid" ]
    [[ "$stderr" == *"restore: failed with status 4"* ]]
    [[ "$stderr" == *"the app is not started"* ]]
    [ ! -e "$OCB_RESTORE_DONE_FILE" ] && [ ! -e "$OCB_RESTORE_SKIPPED_FILE" ]
    diff "$BATS_TEST_TMPDIR/store-before" <(store_listing)
}

@test "a wrong password with OCB_ON_RESTORE_FAIL unset (stop): the app never starts, exit 4, the store untouched" {
    export OCB_PASSWORD=right
    earlier_container_snapshot
    store_listing >"$BATS_TEST_TMPDIR/store-before"
    export OCB_PASSWORD=wrong
    run -4 --separate-stderr dash "$EP" "$APP"
    [ ! -e "$APP_RUN/app.pid" ]
    [[ "$stderr" == *"restore: failed with status 4"* ]]
    diff "$BATS_TEST_TMPDIR/store-before" <(store_listing)
}

@test "a wrong password with OCB_ON_RESTORE_FAIL=continue: the app runs, warned every interval, and nothing is backed up" {
    export OCB_PASSWORD=right
    earlier_container_snapshot
    store_listing >"$BATS_TEST_TMPDIR/store-before"
    export OCB_PASSWORD=wrong OCB_ON_RESTORE_FAIL=continue OCB_INTERVAL=1 APP_SIGNAL_EXIT=3
    start_entrypoint dash
    wait_for 15 test -f "$APP_RUN/ready"
    [ "$(cat "$APP_RUN/seen-at-start")" = missing ]
    warned_twice() { [ "$(grep -c 'backup: the restore failed with status 4: backups are OFF' "$BATS_TEST_TMPDIR/ep.err")" -ge 2 ]; }
    wait_for 15 warned_twice
    stop_entrypoint TERM
    [ "$EP_STATUS" -eq 3 ]
    grep -q 'no final backup' "$BATS_TEST_TMPDIR/ep.err"
    run -1 grep -q 'ocb-plan' "$BATS_TEST_TMPDIR/ep.err"
    [ ! -e "$OCB_RESTORE_DONE_FILE" ] && [ ! -e "$OCB_RESTORE_SKIPPED_FILE" ]
    diff "$BATS_TEST_TMPDIR/store-before" <(store_listing)
    wait_for 5 no_leftovers
}

@test "a bad setting is exit 2 naming the variable, before the restore or the app" {
    bad() {
        run -2 --separate-stderr env "$1=$2" dash "$EP" "$APP"
        [[ "$stderr" == *"entrypoint: config: $1=$2: expected"* ]] || { echo "$stderr" >&2; return 1; }
        [[ "$stderr" != *"restore"* ]]
        [ ! -e "$APP_RUN/app.pid" ]
    }
    bad OCB_INTERVAL 10x
    bad OCB_INTERVAL -5
    bad OCB_INTERVAL 1.5m
    bad OCB_STOP_TIMEOUT soon
    bad OCB_ON_RESTORE_FAIL ignore
    bad OPENCLAW_INCREMENTAL_INTERVAL_MINUTES 2h
    run -2 --separate-stderr dash "$EP"
    [[ "$stderr" == *"usage: entrypoint.sh CMD"* ]]
    [ -z "$(store_listing)" ]
}

@test "OCB_INTERVAL takes seconds, s, m or h; the legacy variable is minutes; the default is 10 minutes" {
    export APP_RUN_FOR=0
    every() {
        run -0 --separate-stderr env "$@" dash "$EP" "$APP"
        grep -o 'backup: every [0-9]*s' <<<"$stderr" | cut -d' ' -f3
    }
    [ "$(every OCB_INTERVAL=45)" = 45s ]
    [ "$(every OCB_INTERVAL=90s)" = 90s ]
    [ "$(every OCB_INTERVAL=010m)" = 600s ]
    [ "$(every OCB_INTERVAL=1h)" = 3600s ]
    [ "$(every OPENCLAW_INCREMENTAL_INTERVAL_MINUTES=5)" = 300s ]
    [ "$(every OCB_INTERVAL=2m OPENCLAW_INCREMENTAL_INTERVAL_MINUTES=5)" = 120s ]
    [ "$(every APP_EXIT=0)" = 600s ]
}

@test "entrypoint.sh --help describes the settings" {
    run -0 dash "$EP" --help
    [[ "$output" == *"Usage: entrypoint.sh [--] CMD [ARGS...]"* ]]
    for name in OCB_INTERVAL OCB_STOP_GRACE OCB_STOP_TIMEOUT OCB_ON_RESTORE_FAIL OCB_RESTORE_DONE_FILE OCB_RESTORE_SKIPPED_FILE Example; do
        [[ "$output" == *"$name"* ]]
    done
}

# entrypoint_with_pull DOC: a copy of the entrypoint and bin/ whose ocb-pull answers with the
# document in the file DOC; prints the copy of entrypoint.sh
entrypoint_with_pull() {
    local bin
    bin=$(bin_with ocb-pull <<EOF
#!/bin/sh
cat >/dev/null
cat "$1"
EOF
)
    cp "$EP" "$bin/../entrypoint.sh"
    echo "$bin/../entrypoint.sh"
}

@test "the entrypoint reads the restore's document as JSON: a no_snapshot skip however written, and never those words elsewhere" {
    export APP_RUN_FOR=0
    # compact JSON: no space after the colon
    printf '%s\n' '{"ocb":1,"kind":"restore","skip":{"stage":"chain","no_snapshot":true}}' >"$BATS_TEST_TMPDIR/compact.json"
    run -0 --separate-stderr dash "$(entrypoint_with_pull "$BATS_TEST_TMPDIR/compact.json")" "$APP"
    [[ "$stderr" == *"no snapshot yet"* ]]
    [ -f "$OCB_RESTORE_SKIPPED_FILE" ] && [ -f "$OCB_RESTORE_DONE_FILE" ]
    # the same words outside .skip, in the document of a restore that did happen, are no skip
    rm -rf "$APP_RUN" "$OCB_RESTORE_SKIPPED_FILE" "$OCB_RESTORE_DONE_FILE" && mkdir -p "$APP_RUN"
    jq -n '{ocb: 1, kind: "restore", chain: {target: "openclaw-backup-20200101-000000"},
        pull: {restored: 40}, earlier: {no_snapshot: true}}' >"$BATS_TEST_TMPDIR/restored.json"
    grep -qF '"no_snapshot": true' "$BATS_TEST_TMPDIR/restored.json"
    run -0 --separate-stderr dash "$(entrypoint_with_pull "$BATS_TEST_TMPDIR/restored.json")" "$APP"
    [[ "$stderr" == *"entrypoint: restore: done"* && "$stderr" != *"no snapshot yet"* ]]
    [ ! -e "$OCB_RESTORE_SKIPPED_FILE" ] && [ -f "$OCB_RESTORE_DONE_FILE" ]
}

@test "without jq the entrypoint exits 1 saying so, before the restore or the app" {
    nojq=$(path_without jq)
    run -1 --separate-stderr env PATH="$nojq" dash "$EP" "$APP"
    [[ "$stderr" == *"entrypoint: config: jq is not installed"* ]]
    [[ "$stderr" != *"entrypoint: restore:"* ]]
    [ ! -e "$APP_RUN/app.pid" ]
    [ -z "$(store_listing)" ]
}

@test "the crontab line of examples/crontab works as written, in cron's bare environment, for a non-root user" {
    line=$(grep -v '^[[:space:]]*#' "$OCB_ROOT/examples/crontab" | grep -v '^[[:space:]]*$')
    [ "$(printf '%s\n' "$line" | wc -l)" -eq 1 ]
    [[ "$line" != *%* ]]   # cron turns % into newlines
    # the five time fields, then the command, with the install dir made local
    command=$(printf '%s\n' "$line" | sed -E 's/^([^ ]+ +){5}//')
    command=${command//\/opt\/ocb/$OCB_ROOT}
    # the settings from the env file, as the comment says (a bare environment has none)
    mkdir -p "$HOME/.env.d"
    printf 'OCB_STORE=%s\nOCB_WORK_DIR=%s\nOCB_CACHE_DIR=%s\n' "$OCB_STORE" "$OCB_WORK_DIR" "$OCB_CACHE_DIR" \
        >"$HOME/.env.d/openclaw-backup.env"
    printf 'state\n' >"$HOME/.openclaw/a.txt"
    as=()
    if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
        # cron runs a user's line as that user: uid 1000, owning its home and nothing else
        for d in "$BATS_TEST_TMPDIR" "$OCB_ROOT"; do
            while [ "$d" != / ]; do
                [ -n "$(find "$d" -maxdepth 0 -perm -o+x)" ] || chmod o+x "$d"
                d=$(dirname "$d")
            done
        done
        mkdir -p "$OCB_WORK_DIR" "$OCB_CACHE_DIR" "$STORE_DIR"
        chown -R 1000:1000 "$HOME" "$OCB_WORK_DIR" "$OCB_CACHE_DIR" "$STORE_DIR"
        packages=$(echo "$OCB_ROOT"/.venv/lib/python3*/site-packages)
        as=(env PYTHONPATH="$packages" setpriv --reuid 1000 --regid 1000 --clear-groups)
    fi
    run -0 "${as[@]}" env -i HOME="$HOME" PATH=/usr/bin:/bin SHELL=/bin/sh ${as:+PYTHONPATH="$packages"} /bin/sh -c "$command"
    [ -z "$output" ]
    [ -f "$HOME/ocb-backup.log" ]
    [ -n "$(store_listing)" ]
    jq -e '.snapshots | length == 1' "$STORE_DIR/ocb-catalog.json"
}
