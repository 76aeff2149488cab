#!/usr/bin/env bats
# The key cache (lib/ocb/keycache.py): the KDF runs once per machine life, not in every stage of
# every backup; the key stays in memory (tmpfs), this user's only, and only for its password.
# Counted from the stages' debug lines ("password key (...): derived" / "from the key cache").

load test_helper

setup() {
    ocb_setup
    [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] || skip "/dev/shm is not a tmpfs here"
    export OCB_PASSWORD='key cache password'
    KEYS_PARENT=$(mktemp -d /dev/shm/ocb-bats-keys-XXXXXX)
    export OCB_KEY_CACHE="$KEYS_PARENT/keys"
    mkdir -p "$HOME/.openclaw/notes"
    printf 'one\n' >"$HOME/.openclaw/notes/a.md"
}

teardown() {
    [ -z "${KEYS_PARENT:-}" ] || rm -rf "$KEYS_PARENT"
}

derived() { grep -c 'password key (.*): derived' "$1" || true; }
from_cache() { grep -c 'password key (.*): from the key cache' "$1" || true; }

@test "a backup derives the key once, the backups after it not at all; the entry is 0600 in a 0700 tmpfs folder" {
    ocb-backup -v >"$BATS_TEST_TMPDIR/1.json" 2>"$BATS_TEST_TMPDIR/1.err"
    [ "$(derived "$BATS_TEST_TMPDIR/1.err")" -eq 1 ]
    [ "$(from_cache "$BATS_TEST_TMPDIR/1.err")" -ge 1 ]   # push signs with the key pack derived
    printf 'two\n' >>"$HOME/.openclaw/notes/a.md"
    ocb-backup -v >"$BATS_TEST_TMPDIR/2.json" 2>"$BATS_TEST_TMPDIR/2.err"
    jq -e '.plan.type == "incremental"' "$BATS_TEST_TMPDIR/2.json"
    [ "$(derived "$BATS_TEST_TMPDIR/2.err")" -eq 0 ]
    [ "$(stat -c %a "$OCB_KEY_CACHE")" = 700 ]
    run -0 find "$OCB_KEY_CACHE" -type f -name '*.key' -perm 600
    [ "${#lines[@]}" -eq 1 ]
    run -1 grep -rqF "$OCB_PASSWORD" "$OCB_KEY_CACHE"
    # what the cached key sealed opens with the password alone, on a machine with no cache
    OCB_KEY_CACHE=off run -0 ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "a fresh container restores with one KDF run, then backs up under the restored salt with none" {
    backup_ok
    rm -rf "$OCB_KEY_CACHE" "$OCB_CACHE_DIR" "$OCB_WORK_DIR" "$HOME"   # the container restarts
    mkdir -p "$HOME"
    run -0 --separate-stderr ocb-restore -v
    [ "$(derived <(printf '%s\n' "$stderr"))" -eq 1 ]
    printf 'after the restart\n' >"$HOME/.openclaw/notes/b.md"
    ocb-backup -v >"$BATS_TEST_TMPDIR/3.json" 2>"$BATS_TEST_TMPDIR/3.err"
    [ "$(derived "$BATS_TEST_TMPDIR/3.err")" -eq 0 ]
    OCB_KEY_CACHE=off run -0 ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "another password never gets the cached key: exit 4, the target untouched" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    OCB_PASSWORD='not the password' run -4 --separate-stderr ocb-restore
    [[ "$stderr" == *"MAC"* || "$stderr" == *"password"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
}

@test "OCB_KEY_CACHE=off derives in each stage that needs the key; a folder on disk is refused with a warning" {
    OCB_KEY_CACHE=off ocb-backup -v >"$BATS_TEST_TMPDIR/1.json" 2>"$BATS_TEST_TMPDIR/1.err"
    [ "$(derived "$BATS_TEST_TMPDIR/1.err")" -eq 3 ]   # pack seals, push signs, the prune after a full backup signs
    [ ! -e "$OCB_KEY_CACHE" ]
    printf 'two\n' >>"$HOME/.openclaw/notes/a.md"
    disk="$BATS_TEST_DIRNAME/../../.ocb-test-keys-$$"   # the checkout: not a memory filesystem
    [ "$(stat -f -c %T "$BATS_TEST_DIRNAME")" != tmpfs ] || skip "the checkout is on tmpfs"
    OCB_KEY_CACHE="$disk" ocb-backup -v >"$BATS_TEST_TMPDIR/2.json" 2>"$BATS_TEST_TMPDIR/2.err"
    assert_doc_ok "$BATS_TEST_TMPDIR/2.json"
    grep -q "warning: not caching password keys in .*not on a memory filesystem" "$BATS_TEST_TMPDIR/2.err"
    [ ! -e "$disk" ]
}
