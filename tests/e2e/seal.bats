#!/usr/bin/env bats
# Sealed snapshots: unreadable and tamper-evident without the password, opened by ocb-pull.
# The tampering below also fixes the sizes and hashes recorded in the metas and the pointer,
# as an attacker who can write the store would; the records' MACs notice (the seal's own
# checks of the same damage: tests/unit/test_seal.py and the independent decoder).

load test_helper

PASSWORD='correct horse battery staple'

setup() {
    ocb_setup
    export OCB_PASSWORD="$PASSWORD"
    mkdir -p "$HOME/.openclaw/notes" "$HOME/.ssh"
    printf 'my diary\n' >"$HOME/.openclaw/notes/very-private-diary.md"
    printf 'ssh-key\n' >"$HOME/.ssh/id_ed25519"
    # incompressible bulk so the sealed archive spans three 1 MiB segments
    head -c 2600000 /dev/urandom >"$HOME/.openclaw/bulk.bin"
}

volume_of() { (cd "$STORE_DIR/backups" && ls "$1".tar.zst.ocbs*); }

@test "OCB_SEAL=on without a password is exit 2 before anything is written" {
    unset OCB_PASSWORD
    OCB_SEAL=on run -2 --separate-stderr ocb-backup
    [[ "$stderr" == *"OCB_SEAL=on"* ]]
    [ ! -e "$STORE_DIR" ]
    [ ! -e "$OCB_WORK_DIR" ] || [ -z "$(find "$OCB_WORK_DIR" -name "openclaw-backup-*")" ]
}

@test "a sealed snapshot hides names and secrets: no password or file name in documents, logs or the store" {
    backup_ok
    printf 'more\n' >>"$HOME/.openclaw/notes/very-private-diary.md"
    backup_ok
    cat "$BATS_TEST_TMPDIR/last.json" "$BATS_TEST_TMPDIR/last.err" >"$BATS_TEST_TMPDIR/all-output"
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    printf '%s\n%s\n' "$output" "$stderr" >>"$BATS_TEST_TMPDIR/all-output"
    jq -e '.seal.sealed == true' "$BATS_TEST_TMPDIR/last.json"
    jq -e '.meta.sealed == true and .meta.seal.kdf.name == "scrypt"' "$STORE_DIR/latest-backup.json"
    run -1 grep -rqF "$PASSWORD" "$STORE_DIR" "$BATS_TEST_TMPDIR/all-output"
    run -1 grep -rqF "very-private-diary" "$STORE_DIR"
    run -1 grep -rqF "my diary" "$STORE_DIR"
    run -1 grep -rqF "id_ed25519" "$STORE_DIR"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "a wrong password is exit 4 naming the volume, the target untouched" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    printf 'after\n' >"$HOME/.openclaw/after.txt"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    OCB_PASSWORD=wrong run -4 --separate-stderr ocb-restore
    # the pointer's MAC is the first thing the password opens
    [[ "$stderr" == *"wrong password"* && "$stderr" == *"latest-backup.json"* ]]
    OCB_PASSWORD=wrong run -4 --separate-stderr ocb-restore --id "$(last_id)"
    [[ "$stderr" == *"wrong password"* && "$stderr" == *"$(last_id).meta.json"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
    unset OCB_PASSWORD
    run -2 --separate-stderr ocb-restore
    [[ "$stderr" == *"sealed"* ]]
}

@test "the legacy encryption variables seal too" {
    unset OCB_PASSWORD
    export OPENCLAW_BACKUP_ENCRYPTION_ENABLED=true OPENCLAW_BACKUP_ENCRYPTION_PASSWORD="$PASSWORD"
    backup_ok
    jq -e '.seal.sealed == true' "$BATS_TEST_TMPDIR/last.json"
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    printf '%s' "$PASSWORD" >"$BATS_TEST_TMPDIR/pw"
    unset OPENCLAW_BACKUP_ENCRYPTION_PASSWORD OPENCLAW_BACKUP_ENCRYPTION_ENABLED
    OCB_PASSWORD_FILE="$BATS_TEST_TMPDIR/pw" run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r2"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r2/.openclaw")
}

@test "every kind of tampering with a sealed volume is exit 4 naming it, the target untouched" {
    backup_ok
    first=$(last_id)
    printf 'more\n' >>"$HOME/.openclaw/notes/very-private-diary.md"
    head -c 2600000 /dev/urandom >"$HOME/.openclaw/bulk.bin"
    sleep 1
    backup_ok
    second=$(last_id)
    cp -a "$STORE_DIR" "$BATS_TEST_TMPDIR/pristine"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    for mode in header-bit segment-bit tag-bit truncate-boundary truncate-mid append swap-segments substitute; do
        rm -rf "$STORE_DIR" && cp -a "$BATS_TEST_TMPDIR/pristine" "$STORE_DIR"
        "$PYTHON" "$OCB_ROOT/tests/tamper.py" "$STORE_DIR" "$(volume_of "$second")" "$mode" "$(volume_of "$first")"
        run -4 --separate-stderr ocb-restore
        # the records name the new hash: their MAC fails first, naming the pointer
        [[ "$stderr" == *"latest-backup.json fails its MAC"* ]]
        manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
    done
}

@test "snapshots sealed by the first format (scrypt, no record MACs) still restore, multi-volume chain included" {
    fixture="$OCB_ROOT/tests/e2e/fixtures/sealed-v1"
    tar -C "$BATS_TEST_TMPDIR" -xzf "$fixture/store.tar.gz"
    mkdir -p "$BATS_TEST_TMPDIR/expected"
    tar -C "$BATS_TEST_TMPDIR/expected" -xzf "$fixture/state.tar.gz"
    OCB_PASSWORD='fixture password' run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$BATS_TEST_TMPDIR/expected/home/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
    manifest "$BATS_TEST_TMPDIR/expected/home/.ssh" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.ssh")
    OCB_PASSWORD='fixture password' run -0 --separate-stderr ocb-restore --id "$(cd "$STORE_DIR/backups" && ls | head -1 | cut -d. -f1)" --to "$BATS_TEST_TMPDIR/r1"
    [ "$(cat "$BATS_TEST_TMPDIR/r1/.openclaw/notes/diary.md")" = "first diary" ]
}
