#!/usr/bin/env bats
# Document flow: a failure travels down the pipe with its code; nothing is touched.

load test_helper

setup() {
    ocb_setup
    printf 'state\n' >"$HOME/.openclaw/a.txt"
}

@test "an empty stdin makes every later stage exit 3 without touching the store" {
    backup_ok
    before=$(store_listing)
    run -3 --separate-stderr sh -c 'true | ocb-pack | ocb-seal | ocb-split | ocb-push'
    [[ "$stderr" == *"empty input"* ]]
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error pack 3 "$BATS_TEST_TMPDIR/doc.json"
    [ "$(store_listing)" = "$before" ]
}

@test "a failing ocb-plan makes every later stage exit with its code" {
    rm -r "$HOME/.openclaw"
    run -2 --separate-stderr sh -c 'ocb-plan | ocb-pack | ocb-seal | ocb-split | ocb-push'
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error plan 2 "$BATS_TEST_TMPDIR/doc.json"
    [[ "$stderr" == *"state dir"*"does not exist"* ]]
    [ ! -e "$STORE_DIR" ]
    for stage in pack seal split push; do
        run -2 --separate-stderr "ocb-$stage" <"$BATS_TEST_TMPDIR/doc.json"
        [ "$(jq -r .error.stage <<<"$output")" = plan ]
    done
}

@test "a saved document can be replayed stage by stage" {
    ocb-plan >"$BATS_TEST_TMPDIR/plan.json" 2>/dev/null
    ocb-pack <"$BATS_TEST_TMPDIR/plan.json" >"$BATS_TEST_TMPDIR/pack.json" 2>/dev/null
    run -0 --separate-stderr sh -c "ocb-seal <'$BATS_TEST_TMPDIR/pack.json' | ocb-split | ocb-push"
    jq -e '.push.meta | startswith("backups/openclaw-backup-")' <<<"$output"
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "the same document pushed twice is refused the second time: the store moved" {
    ocb-plan 2>/dev/null | ocb-pack 2>/dev/null | ocb-seal | ocb-split >"$BATS_TEST_TMPDIR/split.json"
    cp -r "$OCB_WORK_DIR" "$BATS_TEST_TMPDIR/work-copy"
    run -0 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
    rm -rf "$OCB_WORK_DIR" && cp -r "$BATS_TEST_TMPDIR/work-copy" "$OCB_WORK_DIR"
    before=$(store_listing)
    run -5 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
    [[ "$stderr" == *"re-plan"* ]]
    [ "$(store_listing)" = "$before" ]
}

@test "an unwritable store is exit 1 naming it; nothing is published and the cache is untouched" {
    backup_ok
    cp -a "$OCB_CACHE_DIR" "$BATS_TEST_TMPDIR/cache-before"
    printf 'not a folder\n' >"$BATS_TEST_TMPDIR/blocker"
    printf 'change\n' >>"$HOME/.openclaw/a.txt"
    OCB_STORE="file://$BATS_TEST_TMPDIR/blocker/store" run -1 --separate-stderr ocb-backup
    [[ "$stderr" == *"blocker/store"* ]]
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error plan 1 "$BATS_TEST_TMPDIR/doc.json"   # found before anything is packed
    [ "$(cat "$BATS_TEST_TMPDIR/blocker")" = "not a folder" ]
    diff -r "$BATS_TEST_TMPDIR/cache-before" "$OCB_CACHE_DIR"
    # the store becomes unwritable between plan and push
    ocb-plan 2>/dev/null | ocb-pack 2>/dev/null | ocb-seal | ocb-split >"$BATS_TEST_TMPDIR/split.json"
    mv "$STORE_DIR" "$BATS_TEST_TMPDIR/store-aside" && printf 'in the way\n' >"$STORE_DIR"
    run -1 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error push 1 "$BATS_TEST_TMPDIR/doc.json"
    [ "$(cat "$STORE_DIR")" = "in the way" ]
    diff -r "$BATS_TEST_TMPDIR/cache-before" "$OCB_CACHE_DIR"
}

# work_dir_is_empty: no stage left anything in the work dir (or it was never made)
work_dir_is_empty() { [ ! -e "$OCB_WORK_DIR" ] || [ -z "$(ls -A "$OCB_WORK_DIR")" ]; }

@test "an unknown flag is a usage error document from its stage: the backup pipe exits 2 naming plan" {
    run -2 --separate-stderr sh -c 'ocb-plan --bogus | ocb-pack | ocb-seal | ocb-split | ocb-push'
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error plan 2 "$BATS_TEST_TMPDIR/doc.json"
    jq -e '.kind == "backup" and (.error.message | contains("--bogus"))' "$BATS_TEST_TMPDIR/doc.json"
    [[ "$stderr" == *"ocb-plan: error: "*"--bogus"* ]]
    # the later stages only passed it on
    [[ "$stderr" != *"ocb-pack: error"* && "$stderr" != *"ocb-push: error"* ]]
    [ ! -e "$STORE_DIR" ]
    work_dir_is_empty
}

@test "an unknown flag is a usage error document from its stage: the restore pipe exits 2 naming chain" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    before=$(store_listing)
    run -2 --separate-stderr sh -c 'ocb-chain --bogus | ocb-pull'
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error chain 2 "$BATS_TEST_TMPDIR/doc.json"
    jq -e '.kind == "restore" and (.error.message | contains("--bogus"))' "$BATS_TEST_TMPDIR/doc.json"
    [[ "$stderr" != *"ocb-pull: error"* ]]
    [ "$(store_listing)" = "$before" ]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
}

@test "a bad flag value and a bad env value are usage error documents naming them: exit 2 through the pipe" {
    OCB_VOLUME_SIZE=1X run -2 --separate-stderr sh -c 'ocb-plan | ocb-pack | ocb-seal | ocb-split | ocb-push'
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error plan 2 "$BATS_TEST_TMPDIR/doc.json"
    jq -e '.error.message | contains("OCB_VOLUME_SIZE")' "$BATS_TEST_TMPDIR/doc.json"
    [[ "$stderr" == *"OCB_VOLUME_SIZE"* ]]
    [ ! -e "$STORE_DIR" ]
    work_dir_is_empty
    # a legacy name is named as it was set
    OPENCLAW_BACKUP_SPLIT_SIZE=lots run -2 --separate-stderr sh -c 'ocb-plan | ocb-pack | ocb-seal | ocb-split | ocb-push'
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error plan 2 "$BATS_TEST_TMPDIR/doc.json"
    jq -e '.error.message | contains("OPENCLAW_BACKUP_SPLIT_SIZE")' "$BATS_TEST_TMPDIR/doc.json"
    # a flag's bad value: ocb-chain --at
    backup_ok
    run -2 --separate-stderr sh -c 'ocb-chain --at yesterday | ocb-pull'
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error chain 2 "$BATS_TEST_TMPDIR/doc.json"
    jq -e '.error.message | contains("--at")' "$BATS_TEST_TMPDIR/doc.json"
}

@test "a saved plan can be replayed after an ocb-backup: the sweep leaves hand-run work dirs alone" {
    ocb-plan >"$BATS_TEST_TMPDIR/plan.json" 2>/dev/null
    assert_doc_ok "$BATS_TEST_TMPDIR/plan.json"
    run_dir=$(jq -r '.plan.dir' "$BATS_TEST_TMPDIR/plan.json")
    [ -d "$run_dir" ] && [ ! -e "$run_dir/.ocb-under-lock" ]   # run by hand: no marker
    # an ocb-backup in the same work dir, to another store, sweeps while the plan waits
    OCB_STORE="file://$BATS_TEST_TMPDIR/other-store" OCB_CACHE_DIR="$BATS_TEST_TMPDIR/other-cache" backup_ok
    [ -d "$run_dir" ]
    run -0 --separate-stderr sh -c "ocb-pack <'$BATS_TEST_TMPDIR/plan.json' | ocb-seal | ocb-split | ocb-push"
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_ok "$BATS_TEST_TMPDIR/doc.json"
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "ocb-stages runs stages in one interpreter as their pipe would: each logs as itself, a failure's code comes out" {
    ocb-plan >"$BATS_TEST_TMPDIR/plan.json" 2>/dev/null
    run -0 --separate-stderr ocb-stages pack seal split push <"$BATS_TEST_TMPDIR/plan.json"
    jq -e '(.push.meta | startswith("backups/openclaw-backup-")) and (.archive.sha256 | length == 64)' <<<"$output"
    for stage in pack split push; do [[ "$stderr" == *"ocb-$stage: info:"* ]]; done
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
    # a plan whose store moved before its push (another backup published): push refuses with 5
    printf 'more\n' >>"$HOME/.openclaw/a.txt"
    ocb-plan >"$BATS_TEST_TMPDIR/plan.json" 2>/dev/null
    backup_ok
    run -5 --separate-stderr ocb-stages pack seal split push <"$BATS_TEST_TMPDIR/plan.json"
    [[ "$stderr" == *"ocb-push: error:"*"re-plan"* ]]
    printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error push 5 "$BATS_TEST_TMPDIR/doc.json"
    # an error handed in goes through every stage with its code, nothing touched
    before=$(store_listing)
    run -3 --separate-stderr sh -c 'true | ocb-stages pack seal split push'
    printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error pack 3 "$BATS_TEST_TMPDIR/doc.json"
    [ "$(store_listing)" = "$before" ]
}

@test "ocb-stages plan ... -- FLAG: the plan starts the document with its flags, a skip goes through, prune runs when due" {
    # what ocb-backup runs under its lock
    run -0 --separate-stderr ocb-stages plan pack seal split push prune
    jq -e '.plan.type == "full" and .prune.due and (.push.meta | startswith("backups/openclaw-backup-"))' <<<"$output"
    for stage in plan pack push prune; do [[ "$stderr" == *"ocb-$stage: info:"* ]]; done
    before=$(store_listing)
    run -0 --separate-stderr ocb-stages plan pack seal split push prune
    jq -e '.skip.stage == "plan" and .prune == null and .push == null' <<<"$output"
    [ "$(store_listing)" = "$before" ]
    printf 'more\n' >>"$HOME/.openclaw/a.txt"
    run -0 --separate-stderr ocb-stages plan pack seal split push prune
    jq -e '.plan.type == "incremental" and .prune == null and .push.meta != null' <<<"$output"
    run -0 --separate-stderr ocb-stages -q plan pack seal split push prune -- --full
    jq -e '.plan.type == "full" and .prune.due' <<<"$output"
    [ -z "$stderr" ]
    # the first stage's bad flag: its usage error, passed on by the others, nothing done
    before=$(store_listing)
    run -2 --separate-stderr ocb-stages plan pack seal split push -- --no-such-flag
    printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error plan 2 "$BATS_TEST_TMPDIR/doc.json"
    [ "$(store_listing)" = "$before" ]
}

@test "ocb-stages takes stages in their places only: anything else is exit 2, nothing run" {
    for case in "pack plan|plan starts the document" "|not a stage: (none)" "pack --full|not a stage: --full" \
            "prune|prune is the prune after a backup" "push prune pack|prune is the prune after a backup" \
            "chain pull|not a stage: chain"; do
        # shellcheck disable=SC2086 # the stages are words
        run -2 --separate-stderr ocb-stages ${case%%|*} </dev/null
        [[ "$stderr" == *"usage: ocb-stages STAGE... [-- FLAG...]"*"${case#*|}"* ]]
        printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/doc.json"
        assert_doc_error stages 2 "$BATS_TEST_TMPDIR/doc.json"
    done
    [ ! -e "$STORE_DIR" ] && [ ! -e "$OCB_WORK_DIR" ]
    run -0 ocb-stages --help
    [[ "$output" == *"Usage: ocb-stages STAGE..."*"Exit status:"* ]]
    run -0 ocb-stages --version
    [[ "$output" == "ocb-stages "* ]]
}
