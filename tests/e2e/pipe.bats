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
