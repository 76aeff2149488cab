#!/usr/bin/env bats
# ocb-backup: the backup pipe under a lock, with its settings (the work dir above all) asked of
# `ocb-plan --show-config`; flags passed to ocb-plan; the final document and the first failing
# stage's code passed on; the sweep of the run dirs that dead runs under the lock left, and
# only those; the settings of the env file under cron's bare environment.

load test_helper

setup_file() {
    hub_start --token ocb-test-token   # for HF_ENDPOINT read from the env file
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    printf 'state\n' >"$HOME/.openclaw/a.txt"
    HELD=""
}

teardown() {
    touch "$BATS_TEST_TMPDIR/release"   # lets a held ocb-backup finish
    if [ -n "$HELD" ]; then kill -s KILL -- "-$HELD" 2>/dev/null || true; fi
}

doc() { echo "$output" >"$BATS_TEST_TMPDIR/doc.json"; echo "$BATS_TEST_TMPDIR/doc.json"; }

# work_dir_left: what the work dir holds besides the lock
work_dir_left() { find "$1" -mindepth 1 -maxdepth 1 ! -name .lock ! -name .lock.d | sort; }

@test "ocb-backup --help describes the pipe, its settings, the lock, the sweep and the exit status" {
    run -0 --separate-stderr ocb-backup --help
    [[ "$output" == *"Usage: ocb-backup"* ]]
    for word in "ocb-plan --show-config" jq "WORK/.lock" ".ocb-under-lock" "Exit status" 11; do
        [[ "$output" == *"$word"* ]] || { echo "--help lacks $word" >&2; return 1; }
    done
    [ ! -e "$OCB_WORK_DIR" ]   # help does nothing else
    grep -q 'ocb-backup' "$OCB_ROOT/README.md"
}

@test "ocb-backup takes a full snapshot, then an incremental on it, then skips when nothing changed" {
    run -0 --separate-stderr ocb-backup
    first=$(jq -r .id "$(doc)")
    assert_doc_ok "$BATS_TEST_TMPDIR/doc.json"
    jq -e '(.kind == "backup") and (.id | test("^openclaw-backup-[0-9]{8}-[0-9]{6}$"))
        and .plan.type == "full" and .push.meta == "backups/\(.id).meta.json"
        and .settings.work_dir == env.OCB_WORK_DIR' "$BATS_TEST_TMPDIR/doc.json"
    jq -e --arg id "$first" '.id == $id and .latest == "backups/\($id).meta.json"' "$STORE_DIR/latest-backup.json"
    [ -z "$(work_dir_left "$OCB_WORK_DIR")" ]   # the run dir went with the push

    printf 'more\n' >>"$HOME/.openclaw/a.txt"
    run -0 --separate-stderr ocb-backup
    jq -e --arg first "$first" '.plan.type == "incremental" and .plan.parent == $first and .error == null' "$(doc)"
    second=$(jq -r .id "$BATS_TEST_TMPDIR/doc.json")
    jq -e --arg id "$second" '.id == $id' "$STORE_DIR/latest-backup.json"

    before=$(store_listing)
    run -0 --separate-stderr ocb-backup
    jq -e '.skip != null and .push == null and .error == null' "$(doc)"
    [ "$(store_listing)" = "$before" ]
    [ -z "$(work_dir_left "$OCB_WORK_DIR")" ]
}

@test "ocb-backup passes its flags to ocb-plan: --full and --store" {
    backup_ok
    printf 'more\n' >>"$HOME/.openclaw/a.txt"
    backup_ok --full
    jq -e '.plan.type == "full"' "$BATS_TEST_TMPDIR/last.json"
    before=$(store_listing)
    other="$BATS_TEST_TMPDIR/other-store"
    printf 'again\n' >>"$HOME/.openclaw/a.txt"
    backup_ok --store "file://$other"
    jq -e --arg id "$(last_id)" '.id == $id' "$other/latest-backup.json"
    [ "$(store_listing)" = "$before" ]
}

@test "a bad flag or setting is ocb-plan's error document on stdout and exit 2, with nothing done" {
    run -2 --separate-stderr ocb-backup --bogus
    assert_doc_error plan 2 "$(doc)"
    jq -e '.kind == "backup" and (.error.message | contains("--bogus"))' "$BATS_TEST_TMPDIR/doc.json"
    [ "$(jq -s length "$BATS_TEST_TMPDIR/doc.json")" -eq 1 ]   # one document, not one per stage
    [[ "$stderr" == *"--bogus"* ]]
    [ ! -e "$OCB_WORK_DIR" ] && [ ! -e "$STORE_DIR" ]          # no lock, no sweep, no pipe

    OCB_VOLUME_SIZE=1X run -2 --separate-stderr ocb-backup
    assert_doc_error plan 2 "$(doc)"
    jq -e '.error.message | contains("OCB_VOLUME_SIZE")' "$BATS_TEST_TMPDIR/doc.json"
    [ ! -e "$OCB_WORK_DIR" ] && [ ! -e "$STORE_DIR" ]

    run -2 --separate-stderr ocb-backup --store
    assert_doc_error plan 2 "$(doc)"
    jq -e '.error.message | contains("--store")' "$BATS_TEST_TMPDIR/doc.json"
}

@test "a later stage's failure comes out of ocb-backup: its document and its code" {
    # the stages after the plan run as ocb-stages (their own handing on: pipe.bats)
    bin=$(bin_with ocb-stages <<'EOF'
#!/bin/sh
cat >/dev/null
printf '%s\n' '{"ocb": 1, "kind": "backup", "error": {"stage": "split", "code": 4, "message": "stub split failed"}}'
exit 4
EOF
)
    run -4 --separate-stderr "$bin/ocb-backup"
    assert_doc_error split 4 "$(doc)"
    [ ! -e "$STORE_DIR/latest-backup.json" ]   # push passed it on and published nothing
}

@test "ocb-backup without jq: exit 1 saying so, nothing done" {
    nojq=$(path_without jq)
    run -1 --separate-stderr env PATH="$nojq" "$OCB_ROOT/bin/ocb-backup"
    [ -z "$output" ]
    [[ "$stderr" == *"ocb-backup: error: jq is not installed"* ]]
    [ ! -e "$OCB_WORK_DIR" ] && [ ! -e "$STORE_DIR" ]
}

# --- the lock -----------------------------------------------------------------------------------

@test "two ocb-backup at once: the second exits 11 touching nothing, the first completes" {
    # a copy of bin/ whose stages (ocb-stages, run once the lock is taken) hold the first run
    # until we release it; the settings asked for before the lock come at once
    held=$(bin_with ocb-stages <<EOF
#!/bin/sh
touch "$BATS_TEST_TMPDIR/first-holds-lock"
until [ -e "$BATS_TEST_TMPDIR/release" ]; do sleep 0.1; done
exec "$OCB_ROOT/bin/ocb-stages" "\$@"
EOF
)
    "$held/ocb-backup" >"$BATS_TEST_TMPDIR/first.json" 2>"$BATS_TEST_TMPDIR/first.err" &
    first=$!
    WAIT_FOR_LOG="$BATS_TEST_TMPDIR/first.err" wait_for 15 test -e "$BATS_TEST_TMPDIR/first-holds-lock"

    # looks like a dead run's leftover (run under the lock: marked)
    mkdir -p "$OCB_WORK_DIR/openclaw-backup-20200101-000000"
    touch "$OCB_WORK_DIR/openclaw-backup-20200101-000000/.ocb-under-lock"
    store_listing >"$BATS_TEST_TMPDIR/store-before"
    (cd "$OCB_WORK_DIR" && find . | sort) >"$BATS_TEST_TMPDIR/work-before"
    run -11 --separate-stderr ocb-backup
    [ -z "$output" ]
    [[ "$stderr" == *"ocb-backup: error: another ocb-backup or ocb-restore holds the lock"* ]]
    # a restore waits its turn too: it would race the backup over the same state (with no
    # wait allowed it gives up at once; restore-txn.bats tests the wait itself)
    OCB_LOCK_WAIT=0 run -11 --separate-stderr ocb-restore
    [[ "$stderr" == *"ocb-restore: error: another ocb-backup or ocb-restore holds the lock"* ]]
    diff "$BATS_TEST_TMPDIR/store-before" <(store_listing)
    diff "$BATS_TEST_TMPDIR/work-before" <(cd "$OCB_WORK_DIR" && find . | sort)

    touch "$BATS_TEST_TMPDIR/release"
    wait "$first"
    assert_doc_ok "$BATS_TEST_TMPDIR/first.json"
    [ -n "$(store_listing)" ]
    # once the lock is free, the next run clears what dead runs left
    backup_ok
    [ ! -e "$OCB_WORK_DIR/openclaw-backup-20200101-000000" ]
}

@test "without flock, the lock is a dir with the holder's pid, and a dead holder's lock is stale" {
    # a PATH with what ocb-backup and the stages need, but no flock
    nofl="$BATS_TEST_TMPDIR/no-flock-bin"
    mkdir -p "$nofl"
    ln -s "$PYTHON" "$nofl/python3"
    for tool in env dirname readlink mkdir cat rm sed sleep date uname jq; do
        ln -s "$(command -v "$tool")" "$nofl/$tool"
    done
    lockdir="$OCB_WORK_DIR/.lock.d"
    mkdir -p "$lockdir"
    store_listing >"$BATS_TEST_TMPDIR/store-before"

    sleep 30 &
    holder=$!
    echo "$holder" >"$lockdir/pid"
    run -11 --separate-stderr env PATH="$nofl" "$OCB_ROOT/bin/ocb-backup"
    [[ "$stderr" == *"(pid $holder) holds the lock"* ]]
    diff "$BATS_TEST_TMPDIR/store-before" <(store_listing)
    kill "$holder" && wait "$holder" || true

    # the holder is gone: its lock is stale, taken over, and released at the end
    run -0 --separate-stderr env PATH="$nofl" "$OCB_ROOT/bin/ocb-backup"
    [[ "$stderr" == *"removing the stale lock $lockdir of pid $holder"* ]]
    [ ! -e "$lockdir" ]
    [ -n "$(store_listing)" ]
}

# --- the sweep of dead runs -----------------------------------------------------------------

@test "ocb-backup sweeps the run dirs that dead runs under the lock left, and nothing else" {
    w=$OCB_WORK_DIR
    mkdir -p "$w/openclaw-backup-20200101-000000/x" "$w/restore-openclaw-backup-20200101-000000" \
        "$w/openclaw-backup-20200102-000000" "$w/restore-openclaw-backup-20200102-000000" \
        "$BATS_TEST_TMPDIR/elsewhere"
    # dead runs under the lock: marked
    touch "$w/openclaw-backup-20200101-000000/.ocb-under-lock" "$w/restore-openclaw-backup-20200101-000000/.ocb-under-lock"
    # pipes run by hand (someone may still replay them): no marker
    printf 'plan\n' >"$w/openclaw-backup-20200102-000000/plan-index"
    # a link is never followed, marked or not
    touch "$BATS_TEST_TMPDIR/elsewhere/.ocb-under-lock"
    ln -s "$BATS_TEST_TMPDIR/elsewhere" "$w/openclaw-backup-20200103-000000"
    printf 'keep\n' >"$w/unrelated.txt"
    backup_ok
    [ ! -e "$w/openclaw-backup-20200101-000000" ]
    [ ! -e "$w/restore-openclaw-backup-20200101-000000" ]
    grep -q "removing $w/openclaw-backup-20200101-000000, left by an earlier run" "$BATS_TEST_TMPDIR/last.err"
    [ "$(cat "$w/openclaw-backup-20200102-000000/plan-index")" = plan ]
    [ -d "$w/restore-openclaw-backup-20200102-000000" ]
    [ -L "$w/openclaw-backup-20200103-000000" ] && [ -f "$BATS_TEST_TMPDIR/elsewhere/.ocb-under-lock" ]
    [ -f "$w/unrelated.txt" ]
    run -1 grep -e 20200102 -e 20200103 "$BATS_TEST_TMPDIR/last.err"
}

@test "an ocb-backup killed under the lock leaves a marked run dir, which the next ocb-backup sweeps" {
    # a copy of bin/ whose stages (ocb-stages) never end after the plan: the run dies there,
    # killed with its group
    bin=$(bin_with ocb-stages <<EOF
#!/bin/sh
"$OCB_ROOT/bin/ocb-stages" plan >"$BATS_TEST_TMPDIR/plan.json"
touch "$BATS_TEST_TMPDIR/in-pack"
exec sleep 600
EOF
)
    setsid "$bin/ocb-backup" >/dev/null 2>"$BATS_TEST_TMPDIR/killed.err" &
    HELD=$!
    WAIT_FOR_LOG="$BATS_TEST_TMPDIR/killed.err" wait_for 20 test -e "$BATS_TEST_TMPDIR/in-pack"
    kill -s KILL -- "-$HELD"
    wait "$HELD" || true
    HELD=""
    run_dir=$(jq -r .plan.dir "$BATS_TEST_TMPDIR/plan.json")
    [[ "$run_dir" == "$OCB_WORK_DIR/openclaw-backup-"* ]]
    [ -d "$run_dir" ] && [ -f "$run_dir/.ocb-under-lock" ]
    backup_ok
    [ ! -e "$run_dir" ]
    grep -q "removing $run_dir, left by an earlier run" "$BATS_TEST_TMPDIR/last.err"
    [ -z "$(work_dir_left "$OCB_WORK_DIR")" ]
}

# --- the env file, under cron's bare environment ------------------------------------------

@test "a work dir whose name JSON escapes (a quote, a backslash, non-ASCII) is the lock's and the stages' all the same" {
    for name in 'wörk "dir"' 'back\slash' 'plain-dir'; do
        wd="$BATS_TEST_TMPDIR/$name"
        run -0 --separate-stderr env OCB_WORK_DIR="$wd" "$OCB_ROOT/bin/ocb-backup" --full
        jq -e --arg wd "$wd" '.settings.work_dir == $wd and .push.meta != null' <<<"$output"
        [ -f "$wd/.lock" ]  # taken there (flock is installed wherever make test runs)
    done
}

@test "with the work dir set only in the env file, ocb-backup's lock, sweep and stages all use it under env -i" {
    wd="$BATS_TEST_TMPDIR/env-file-work"
    default="$HOME/.cache/ocb/work"
    mkdir -p "$HOME/.env.d"
    printf '# written by the test\nOPENCLAW_BACKUP_WORK_DIR=%s\n' "$wd" >"$HOME/.env.d/openclaw-backup.env"
    # a dead locked run's dir in each: only the env file's is the work dir, so only it is swept
    for dir in "$wd" "$default"; do
        mkdir -p "$dir/openclaw-backup-20200101-000000"
        touch "$dir/openclaw-backup-20200101-000000/.ocb-under-lock"
    done
    # a copy of bin/ whose stages (ocb-stages) note what the work dirs hold after the plan
    bin=$(bin_with ocb-stages <<EOF
#!/bin/sh
"$OCB_ROOT/bin/ocb-stages" plan >"$BATS_TEST_TMPDIR/plan.json"
find "$wd" "$default" -mindepth 1 -maxdepth 2 | sort >"$BATS_TEST_TMPDIR/during-push"
exec "$OCB_ROOT/bin/ocb-stages" pack seal split push prune <"$BATS_TEST_TMPDIR/plan.json"
EOF
)
    run -0 --separate-stderr env -i HOME="$HOME" PATH=/usr/bin:/bin OCB_STORE="$OCB_STORE" "$bin/ocb-backup"
    assert_doc_ok "$(doc)"
    id=$(jq -r .id "$BATS_TEST_TMPDIR/doc.json")
    jq -e --arg wd "$wd" '.settings.work_dir == $wd and .plan.dir == "\($wd)/\(.id)"' "$BATS_TEST_TMPDIR/doc.json"
    # while the stages run: the lock and the snapshot's run dir (marked) in the env file's dir,
    # the dead run there already swept; the default dir as it was
    during="$BATS_TEST_TMPDIR/during-push"
    grep -qx "$wd/.lock" "$during"
    grep -qx "$wd/$id/.ocb-under-lock" "$during"
    diff <(printf '%s\n' "$default/openclaw-backup-20200101-000000" \
            "$default/openclaw-backup-20200101-000000/.ocb-under-lock" "$wd/$id" | sort) \
        <(grep -v -e "^$wd/$id/" -e "^$wd/.lock\$" "$during")
    [ ! -e "$default/.lock" ] && [ ! -e "$OCB_WORK_DIR" ]
    [[ "$stderr" == *"removing $wd/openclaw-backup-20200101-000000"* ]]
    [ -z "$(work_dir_left "$wd")" ]
}

@test "with HF_ENDPOINT, the token and the store only in the env file, a backup under env -i lands on the test Hub" {
    repo="ocb-test/env-file-$RANDOM"
    mkdir -p "$HOME/.env.d"
    printf 'OCB_STORE=hf://datasets/%s\nHF_ENDPOINT=%s\nHF_TOKEN=ocb-test-token\n' "$repo" "$HUB_URL" \
        >"$HOME/.env.d/openclaw-backup.env"
    bare=(env -i HOME="$HOME" PATH=/usr/bin:/bin HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1
        HF_HOME="$BATS_TEST_TMPDIR/hf-home" OCB_RETRY_SECONDS=5)
    run -0 --separate-stderr "${bare[@]}" "$OCB_ROOT/bin/ocb-backup"
    assert_doc_ok "$(doc)"
    id=$(jq -r .id "$BATS_TEST_TMPDIR/doc.json")
    hub_get "/__hub/repo/dataset/$repo" | jq -e --arg id "$id" \
        '.files["latest-backup.json"] and .files["backups/\($id).meta.json"]'
    run -0 --separate-stderr "${bare[@]}" "$OCB_ROOT/bin/ocb-restore" --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}
