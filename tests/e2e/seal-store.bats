#!/usr/bin/env bats
# A sealed store against someone who can write it: planted unsealed snapshots, records edited
# with their unkeyed digest recomputed, and a pointer rolled back are all exit 4, the target
# untouched; what a fresh machine cannot tell (a rollback) is shown too.

load test_helper

PASSWORD='store seal password'

setup() {
    ocb_setup
    export OCB_PASSWORD="$PASSWORD"
    mkdir -p "$HOME/.openclaw/notes" "$HOME/.ssh"
    printf 'diary\n' >"$HOME/.openclaw/notes/diary.md"
    printf 'ssh-key\n' >"$HOME/.ssh/id_ed25519"
}

# edit_record FILE JQ: change a record as an attacker would, and recompute its record_sha256
# (and that of the meta a pointer carries)
edit_record() {
    jq "$2" "$1" >"$1.new" && mv "$1.new" "$1"
    "$PYTHON" - "$1" <<'EOF_PY'
import json, sys
sys.path.insert(0, sys.argv[0] and __import__("os").environ["OCB_ROOT"] + "/lib")
from ocb.snapshot import with_digest
path = sys.argv[1]
record = json.load(open(path))
if isinstance(record.get("meta"), dict):
    record["meta"] = with_digest(record["meta"])
json.dump(with_digest(record), open(path, "w"))
EOF_PY
}

live_manifest() { manifest "$HOME/.openclaw"; manifest "$HOME/.ssh"; }

@test "an unsealed snapshot planted in a sealed store is exit 4 naming it, the target untouched; OCB_SEAL=off restores it" {
    backup_ok
    # the attacker: another machine, no password, writing the store
    (
        export HOME="$BATS_TEST_TMPDIR/attacker" OCB_CACHE_DIR="$BATS_TEST_TMPDIR/attacker-cache" \
            OCB_WORK_DIR="$BATS_TEST_TMPDIR/attacker-work" OCB_SEAL=off
        unset OCB_PASSWORD
        mkdir -p "$HOME/.openclaw" "$HOME/.ssh"
        printf 'attacker key\n' >"$HOME/.ssh/authorized_keys"
        sleep 1
        ocb-backup >/dev/null 2>&1
    )
    planted=$(jq -r .id "$STORE_DIR/latest-backup.json")
    jq -e '.meta.sealed == false' "$STORE_DIR/latest-backup.json"
    live_manifest >"$BATS_TEST_TMPDIR/live"
    export OCB_ROOT
    run -4 --separate-stderr ocb-restore
    [[ "$stderr" == *"latest-backup.json"* ]]
    live_manifest | diff "$BATS_TEST_TMPDIR/live" -
    # a fresh machine (no cache) refuses it too, and names the unsealed snapshot
    OCB_CACHE_DIR="$BATS_TEST_TMPDIR/fresh" run -4 --separate-stderr ocb-restore --id "$planted"
    [[ "$stderr" == *"$planted"* ]]
    live_manifest | diff "$BATS_TEST_TMPDIR/live" -
    OCB_SEAL=off run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    [ -f "$BATS_TEST_TMPDIR/r/.ssh/authorized_keys" ]
}

@test "a pointer, meta or catalog edited with its digest recomputed is exit 4 naming it" {
    backup_ok
    first=$(last_id)
    printf 'more\n' >>"$HOME/.openclaw/notes/diary.md"
    sleep 1
    backup_ok
    cp -a "$STORE_DIR" "$BATS_TEST_TMPDIR/pristine"
    live_manifest >"$BATS_TEST_TMPDIR/live"
    export OCB_ROOT
    edit_record "$STORE_DIR/latest-backup.json" '.meta.file_count = 99'
    run -4 --separate-stderr ocb-restore
    [[ "$stderr" == *"latest-backup.json fails its MAC"* ]]
    rm -rf "$STORE_DIR" && cp -a "$BATS_TEST_TMPDIR/pristine" "$STORE_DIR"
    edit_record "$STORE_DIR/backups/$first.meta.json" '.chain[0].sealed = false'
    run -4 --separate-stderr ocb-restore --id "$first"
    [[ "$stderr" == *"$first.meta.json fails its MAC"* ]]
    rm -rf "$STORE_DIR" && cp -a "$BATS_TEST_TMPDIR/pristine" "$STORE_DIR"
    # a stripped MAC is no way round it
    edit_record "$STORE_DIR/backups/$first.meta.json" 'del(.record_mac)'
    OCB_CACHE_DIR="$BATS_TEST_TMPDIR/fresh" run -4 --separate-stderr ocb-restore --id "$first"
    [[ "$stderr" == *"$first.meta.json carries no MAC"* ]]
    rm -rf "$STORE_DIR" && cp -a "$BATS_TEST_TMPDIR/pristine" "$STORE_DIR"
    edit_record "$STORE_DIR/ocb-catalog.json" '.snapshots[1].files = 99'
    run -4 --separate-stderr ocb-restore --at "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    [[ "$stderr" == *"ocb-catalog.json fails its MAC"* ]]
    live_manifest | diff "$BATS_TEST_TMPDIR/live" -
    printf 'next\n' >>"$HOME/.openclaw/notes/diary.md"
    store_listing >"$BATS_TEST_TMPDIR/listing"
    run -4 --separate-stderr ocb-backup
    [[ "$stderr" == *"ocb-catalog.json fails its MAC"* ]]
    store_listing | diff "$BATS_TEST_TMPDIR/listing" -
}

@test "a pointer rolled back is exit 4 where this machine saw the newer one; --id restores the old one; a fresh machine cannot tell" {
    backup_ok
    first=$(last_id)
    cp "$STORE_DIR/latest-backup.json" "$BATS_TEST_TMPDIR/old-pointer"
    printf 'newer\n' >>"$HOME/.openclaw/notes/diary.md"
    sleep 1
    backup_ok
    cp "$BATS_TEST_TMPDIR/old-pointer" "$STORE_DIR/latest-backup.json"
    live_manifest >"$BATS_TEST_TMPDIR/live"
    run -4 --separate-stderr ocb-restore
    [[ "$stderr" == *"rolled back"* && "$stderr" == *"$first"* ]]
    live_manifest | diff "$BATS_TEST_TMPDIR/live" -
    run -0 --separate-stderr ocb-restore --id "$first" --to "$BATS_TEST_TMPDIR/r"
    [ "$(cat "$BATS_TEST_TMPDIR/r/.openclaw/notes/diary.md")" = diary ]
    # the limit (README): a machine that never saw the newer pointer takes the old one
    OCB_CACHE_DIR="$BATS_TEST_TMPDIR/fresh" run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r2"
    [ "$(cat "$BATS_TEST_TMPDIR/r2/.openclaw/notes/diary.md")" = diary ]
}

@test "Argon2id seals by default: recorded in the header and the meta, the salt kept 0600 in a 0700 folder" {
    unset OCB_SCRYPT_LOG_N
    export OCB_ARGON2_MEMORY=1M
    umask 022
    backup_ok
    jq -e '.meta.seal.kdf == {"name": "argon2id", "memory_kib": 1024, "iterations": 3, "lanes": 4}' "$STORE_DIR/latest-backup.json"
    jq -e '.record_mac.kdf.name == "argon2id" and (.record_mac.kdf_salt | length == 32)' "$STORE_DIR/latest-backup.json"
    [ "$(stat -c %a "$OCB_CACHE_DIR/seal")" = 700 ]
    [ "$(stat -c %a "$OCB_CACHE_DIR/seal/kdf.json")" = 600 ]
    # a fresh machine needs only the password: the KDF and salt are in the store
    OCB_CACHE_DIR="$BATS_TEST_TMPDIR/fresh" run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}
