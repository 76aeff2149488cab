#!/usr/bin/env bats
# ocb-restore: ocb-chain | ocb-pull under the lock, with its settings asked of
# `ocb-chain --show-config`; --to and --dry-run go to ocb-pull, every other flag to ocb-chain;
# the final document and the first failing stage's code passed on.

load test_helper

setup() {
    ocb_setup
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 40 3
}

doc() { echo "$output" >"$BATS_TEST_TMPDIR/doc.json"; echo "$BATS_TEST_TMPDIR/doc.json"; }

# no_restore_dirs: no restore run dir left in the work dir
no_restore_dirs() { [ -z "$(find "$OCB_WORK_DIR" -mindepth 1 -maxdepth 1 -name 'restore-*' 2>/dev/null)" ]; }

@test "ocb-restore --help says which flags go to ocb-chain and which to ocb-pull" {
    run -0 --separate-stderr ocb-restore --help
    [[ "$output" == *"Usage: ocb-restore"* ]]
    for word in --to --dry-run --id --at --store ocb-chain ocb-pull "ocb-chain --show-config" jq "Exit status"; do
        [[ "$output" == *"$word"* ]] || { echo "--help lacks $word" >&2; return 1; }
    done
    [ ! -e "$OCB_WORK_DIR" ]
    grep -q 'ocb-restore' "$OCB_ROOT/README.md"
}

@test "ocb-restore brings the state back in place to the latest snapshot, exactly, and says so in its document" {
    backup_ok
    id=$(last_id)
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/snapshot"
    rm -r "$HOME/.openclaw/dir01"
    printf 'stray\n' >"$HOME/.openclaw/stray.txt"
    printf 'edited\n' >>"$HOME/.openclaw/with space.txt"
    run -0 --separate-stderr ocb-restore
    assert_doc_ok "$(doc)"
    jq -e --arg id "$id" '.kind == "restore" and .chain.target == $id and .pull != null
        and .settings.work_dir == env.OCB_WORK_DIR' "$BATS_TEST_TMPDIR/doc.json"
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/snapshot" -
    no_restore_dirs
}

@test "ocb-restore --to DIR and --to=DIR restore elsewhere, the live state untouched" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/snapshot"
    printf 'live only\n' >"$HOME/.openclaw/live.txt"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r1"
    manifest "$BATS_TEST_TMPDIR/r1/.openclaw" | diff "$BATS_TEST_TMPDIR/snapshot" -
    run -0 --separate-stderr ocb-restore --to="$BATS_TEST_TMPDIR/r2"
    manifest "$BATS_TEST_TMPDIR/r2/.openclaw" | diff "$BATS_TEST_TMPDIR/snapshot" -
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
}

@test "ocb-restore --id, --id=, --at pick an older snapshot" {
    backup_ok
    first=$(last_id)
    first_time=$(jq -r .created_at_utc "$BATS_TEST_TMPDIR/last.json")
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/m1"
    sleep 1
    printf 'second\n' >"$HOME/.openclaw/second.txt"
    backup_ok
    second=$(last_id)
    [ "$first" != "$second" ]
    run -0 --separate-stderr ocb-restore --id "$first" --to "$BATS_TEST_TMPDIR/a"
    jq -e --arg id "$first" '.chain.target == $id' "$(doc)"
    manifest "$BATS_TEST_TMPDIR/a/.openclaw" | diff "$BATS_TEST_TMPDIR/m1" -
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/b" --id="$first"
    manifest "$BATS_TEST_TMPDIR/b/.openclaw" | diff "$BATS_TEST_TMPDIR/m1" -
    run -0 --separate-stderr ocb-restore --at "$first_time" --to "$BATS_TEST_TMPDIR/c"
    jq -e --arg id "$first" '.chain.target == $id' "$(doc)"
    manifest "$BATS_TEST_TMPDIR/c/.openclaw" | diff "$BATS_TEST_TMPDIR/m1" -
    # and without them, the latest
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/d"
    jq -e --arg id "$second" '.chain.target == $id' "$(doc)"
    [ -f "$BATS_TEST_TMPDIR/d/.openclaw/second.txt" ]
}

@test "ocb-restore --dry-run --to DIR writes nothing anywhere" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    run -0 --separate-stderr ocb-restore --dry-run --to "$BATS_TEST_TMPDIR/r"
    jq -e '.pull.dry_run == true' "$(doc)"
    [ ! -e "$BATS_TEST_TMPDIR/r" ]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
    no_restore_dirs
}

@test "ocb-restore --store URL restores from that store" {
    other="$BATS_TEST_TMPDIR/other-store"
    backup_ok --store "file://$other"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/snapshot"
    [ ! -e "$STORE_DIR" ]
    run -0 --separate-stderr ocb-restore --store "file://$other" --to "$BATS_TEST_TMPDIR/r"
    jq -e --arg s "file://$other" '.store == $s' "$(doc)"
    manifest "$BATS_TEST_TMPDIR/r/.openclaw" | diff "$BATS_TEST_TMPDIR/snapshot" -
    # the default store is empty: nothing to restore there
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r2"
    jq -e '.skip.no_snapshot == true' "$(doc)"
}

@test "ocb-restore on an empty store: skip with no_snapshot, exit 0, nothing touched" {
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    run -0 --separate-stderr ocb-restore
    jq -e '.skip.no_snapshot == true and .error == null and .kind == "restore"' "$(doc)"
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
    no_restore_dirs
}

@test "a bad flag is ocb-chain's error document on stdout and exit 2, with nothing done" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    rm -rf "$OCB_WORK_DIR"
    run -2 --separate-stderr ocb-restore --bogus
    assert_doc_error chain 2 "$(doc)"
    jq -e '.kind == "restore" and (.error.message | contains("--bogus"))' "$BATS_TEST_TMPDIR/doc.json"
    [ "$(jq -s length "$BATS_TEST_TMPDIR/doc.json")" -eq 1 ]
    [[ "$stderr" == *"--bogus"* ]]
    [ ! -e "$OCB_WORK_DIR" ]   # no lock taken, nothing run
    # a flag's value that ocb-chain refuses, and a flag without its value
    run -2 --separate-stderr ocb-restore --at yesterday
    assert_doc_error chain 2 "$(doc)"
    jq -e '.error.message | contains("--at")' "$BATS_TEST_TMPDIR/doc.json"
    run -2 --separate-stderr ocb-restore --id
    assert_doc_error chain 2 "$(doc)"
    jq -e '.error.message | contains("--id")' "$BATS_TEST_TMPDIR/doc.json"
    run -2 --separate-stderr ocb-restore --id "$(last_id)" --at 2999-01-01T00:00:00Z
    assert_doc_error chain 2 "$(doc)"
    # --to without its directory: ocb-pull says so
    run -2 --separate-stderr ocb-restore --to
    assert_doc_error pull 2 "$(doc)"
    jq -e '.error.message | contains("--to")' "$BATS_TEST_TMPDIR/doc.json"
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
}

@test "a bad setting is ocb-chain's error document and exit 2, naming the variable" {
    OCB_RETRY_SECONDS=soon run -2 --separate-stderr ocb-restore
    assert_doc_error chain 2 "$(doc)"
    jq -e '.error.message | contains("OCB_RETRY_SECONDS")' "$BATS_TEST_TMPDIR/doc.json"
    [ ! -e "$OCB_WORK_DIR" ]
}

@test "a failing ocb-chain's error passes through ocb-pull with its code, the target untouched" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    run -2 --separate-stderr ocb-restore --id openclaw-backup-20000101-000000
    assert_doc_error chain 2 "$(doc)"
    [[ "$stderr" != *"ocb-pull: error"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
    no_restore_dirs
}

@test "ocb-restore without jq: exit 1 saying so, nothing done" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    nojq=$(path_without jq)
    run -1 --separate-stderr env PATH="$nojq" "$OCB_ROOT/bin/ocb-restore"
    [ -z "$output" ]
    [[ "$stderr" == *"ocb-restore: error: jq is not installed"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
}

@test "with the work dir set only in the env file, ocb-restore locks and stages there under env -i" {
    backup_ok
    wd="$BATS_TEST_TMPDIR/env-file-work"
    mkdir -p "$HOME/.env.d"
    printf 'OPENCLAW_BACKUP_WORK_DIR=%s\n' "$wd" >"$HOME/.env.d/openclaw-backup.env"
    run -0 --separate-stderr env -i HOME="$HOME" PATH=/usr/bin:/bin OCB_STORE="$OCB_STORE" \
        "$OCB_ROOT/bin/ocb-restore" --to "$BATS_TEST_TMPDIR/r"
    jq -e --arg wd "$wd" '.settings.work_dir == $wd' "$(doc)"
    [ -e "$wd/.lock" ] && [ ! -e "$HOME/.cache/ocb/work" ]
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}
