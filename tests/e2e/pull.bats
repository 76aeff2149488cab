#!/usr/bin/env bats
# ocb-pull: verification before anything is touched, dry runs, and the cache it writes.

load test_helper

setup() {
    ocb_setup
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 100 5
}

@test "pull refuses a damaged volume with exit 4 and leaves the target untouched" {
    backup_ok
    printf 'after\n' >"$HOME/.openclaw/after.txt"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    volume=$(find "$STORE_DIR/backups" -name '*.tar.zst' | head -n1)
    size=$(stat -c %s "$volume")
    cp "$volume" "$BATS_TEST_TMPDIR/pristine"
    flip_byte "$volume" $((size / 2))
    run -1 cmp -s "$BATS_TEST_TMPDIR/pristine" "$volume"   # the byte did change
    run -4 --separate-stderr ocb-restore
    [[ "$stderr" == *"$(basename "$volume")"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
    [ -z "$(find "$HOME" -maxdepth 1 -name '*.ocb-staging*')" ]
}

@test "pull refuses a truncated volume and a missing volume" {
    backup_ok
    volume=$(find "$STORE_DIR/backups" -name '*.tar.zst' | head -n1)
    [ "$(stat -c %s "$volume")" -gt 100 ]   # so that the truncation does cut it
    truncate -s 100 "$volume"
    run -4 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    [ ! -e "$BATS_TEST_TMPDIR/r/.openclaw" ]
    rm "$volume"
    run -4 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    [[ "$stderr" == *"missing"* ]]
}

@test "pull --dry-run says what would change and writes nothing" {
    backup_ok
    rm "$HOME/.openclaw/with space.txt"
    printf 'extra\n' >"$HOME/.openclaw/extra.txt"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    run -0 --separate-stderr ocb-restore --dry-run
    jq -e '.pull.dry_run == true and .pull.changes.add == 1 and .pull.changes.remove == 1' <<<"$output"
    [[ "$stderr" == *"would remove openclaw-state/extra.txt"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
}

@test "pull splits across volumes and joins them back" {
    OCB_VOLUME_SIZE=64K backup_ok
    [ "$(jq '.volumes.files | length' "$BATS_TEST_TMPDIR/last.json")" -gt 1 ]
    [ -n "$(find "$STORE_DIR/backups" -name '*.part-0002')" ]
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "pull restores a gzip snapshot too" {
    OCB_COMPRESSION=gzip backup_ok
    [ -n "$(find "$STORE_DIR/backups" -name '*.tar.gz')" ]
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "pull on a fresh machine restores, and the next backup there is incremental" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/before"
    rm -rf "$HOME" "$OCB_CACHE_DIR" "$OCB_WORK_DIR"
    run -0 --separate-stderr ocb-restore
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/before" -
    run -0 --separate-stderr ocb-backup
    jq -e '.skip != null' <<<"$output"
    printf 'new\n' >"$HOME/.openclaw/new.txt"
    backup_ok
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
}
