#!/usr/bin/env bats
# Restoring what the legacy script wrote: backups made here with the script's own tools
# (tests/legacy_fixture.py: tarfile gz, openssl enc, split -b, its metas and names) restore file
# by file to what the legacy restore gives, from a local folder and from the test Hub.

load test_helper

T0=1764000000 # 2025-11-24T16:00:00Z: the sources' times (whole seconds, see legacy_fixture.py)

setup_file() {
    hub_setup_file
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    use_store local
    FIXTURE="$OCB_ROOT/tests/legacy_fixture.py"
    LEGACY="$BATS_TEST_TMPDIR/legacy"
    export OPENCLAW_BACKUP_EXTRA_DIRS="notes:$HOME/notes" OPENCLAW_BACKUP_EXTRA_FILES="agent.env:$HOME/agent.env"
    unset OPENCLAW_BACKUP_ENCRYPTION_ENABLED OPENCLAW_BACKUP_ENCRYPTION_PASSWORD OPENCLAW_BACKUP_PATH_PREFIX \
        OPENCLAW_RESTORE_ARCHIVE OCB_PATH_PREFIX
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 40 7
    mkdir -p "$HOME/.config/app" "$HOME/.ssh" "$HOME/notes/deep"
    echo '{"theme": "dark"}' >"$HOME/.config/app/settings.json"
    echo "key" >"$HOME/.ssh/id_ed25519"
    chmod 600 "$HOME/.ssh/id_ed25519"
    chmod 700 "$HOME/.ssh"
    echo "a note" >"$HOME/notes/deep/a.md"
    echo "TOKEN=x" >"$HOME/agent.env"
    settle "$T0" "$HOME/.openclaw" "$HOME/.config" "$HOME/.ssh" "$HOME/notes" "$HOME/agent.env"
}

settle() { "$PYTHON" "$FIXTURE" settle "$@"; }

first_file() { find "$1" -maxdepth 1 -type f -printf '%f\n' | sort | head -1; }

# legacy_backup STAMP [--full] [--split BYTES]: one backup by the legacy script's rules into $LEGACY
legacy_backup() {
    "$PYTHON" "$FIXTURE" backup "$LEGACY" "$@" >/dev/null
}

# expected ROOT_DIR: the manifest a restore must give (directory times left out when
# $NO_DIR_TIMES is set: a legacy incremental records none), plus $EXTRA_LINE
expected() {
    { manifest "$1"; [ -z "${EXTRA_LINE:-}" ] || echo "$EXTRA_LINE"; } | without_dir_times
}

without_dir_times() {
    if [ -n "${NO_DIR_TIMES:-}" ]; then
        jq -c 'if .type == "dir" then del(.mtime_ns) else . end' | jq -s -c 'sort_by(.path)[]'
    else
        jq -c . | jq -s -c 'sort_by(.path)[]'
    fi
}

# restore_and_compare local|hf: restore the legacy store with ocb-restore --to, compare every root
restore_and_compare() {
    if [ "$1" = hf ]; then
        use_store hf
        "$PYTHON" "$FIXTURE" upload "$LEGACY" "$HUB_REPO"
    else
        export OCB_STORE="file://$LEGACY"
    fi
    local out="$BATS_TEST_TMPDIR/out-$1"
    run -0 --separate-stderr ocb-restore --to "$out"
    echo "$output" >"$BATS_TEST_TMPDIR/pull-$1.json"
    echo "$stderr" >"$BATS_TEST_TMPDIR/pull-$1.err"
    assert_doc_ok "$BATS_TEST_TMPDIR/pull-$1.json"
    jq -e '.chain.legacy and .pull.legacy' "$BATS_TEST_TMPDIR/pull-$1.json" >/dev/null
    diff <(expected "$HOME/.openclaw") <(manifest "$out/.openclaw" | without_dir_times)
    EXTRA_LINE="" diff <(EXTRA_LINE="" expected "$HOME/.config") <(manifest "$out/.config" | without_dir_times)
    EXTRA_LINE="" diff <(EXTRA_LINE="" expected "$HOME/.ssh") <(manifest "$out/.ssh" | without_dir_times)
    EXTRA_LINE="" diff <(EXTRA_LINE="" expected "$HOME/notes") <(manifest "$out/notes" | without_dir_times)
    cmp "$HOME/agent.env" "$out/agent.env"
    [ -f "$out/.backup-info/last-backup-metadata.json" ] || [ -d "$out/.backup-info" ]
}

@test "a plain legacy full backup restores file by file, from a local folder and from the test Hub" {
    legacy_backup 20251125-000000
    restore_and_compare local
    jq -e '.chain.snapshots | length == 1 and .[0].encrypted == false and .[0].checksum != null' \
        "$BATS_TEST_TMPDIR/pull-local.json" >/dev/null
    restore_and_compare hf
    run -0 --separate-stderr ocb-restore --dry-run
    echo "$output" | jq -e '.pull.dry_run == true and .pull.legacy == true' >/dev/null
}

@test "an early legacy meta (version 1.0: no checksum, no chain_id, named by its id) restores, with a warning" {
    legacy_backup 20251125-000000 --meta-version 1.0
    [ -f "$LEGACY/backups/openclaw-backup-20251125-000000.meta.json" ]
    restore_and_compare local
    grep -q "records no checksum" "$BATS_TEST_TMPDIR/pull-local.err"
}

@test "a legacy full and two incrementals merge in order: edits and additions restored, the deleted file back, said on stderr" {
    legacy_backup 20251125-000000
    local gone
    gone=$(first_file "$HOME/.openclaw/dir03")
    EXTRA_LINE=$(manifest "$HOME/.openclaw" | jq -c --arg p "dir03/$gone" 'select(.path == $p)')
    [ -n "$EXTRA_LINE" ]
    rm "$HOME/.openclaw/dir03/$gone"
    echo "edited once" >>"$HOME/.openclaw/dir00/$(first_file "$HOME/.openclaw/dir00")"
    echo "added" >"$HOME/.openclaw/dir01/added.txt"
    echo "new note" >"$HOME/notes/deep/b.md"
    settle 1764100000 "$HOME/.openclaw/dir00" "$HOME/.openclaw/dir01/added.txt" "$HOME/notes/deep/b.md"
    legacy_backup 20251126-000000
    echo "edited twice" >>"$HOME/.openclaw/dir01/added.txt"
    mkdir "$HOME/.openclaw/brand-new"
    echo "in a new dir" >"$HOME/.openclaw/brand-new/f.txt"
    settle 1764200000 "$HOME/.openclaw/dir01/added.txt" "$HOME/.openclaw/brand-new/f.txt"
    chmod 755 "$HOME/.openclaw/brand-new"
    legacy_backup 20251127-000000
    export EXTRA_LINE NO_DIR_TIMES=1
    restore_and_compare local
    jq -e '(.chain.snapshots | map(.backup_type) == ["full", "incremental", "incremental"])
           and (.pull.merge | test("no deletions"))' "$BATS_TEST_TMPDIR/pull-local.json" >/dev/null
    grep -q "record no deletions" "$BATS_TEST_TMPDIR/pull-local.err"
    restore_and_compare hf
}

@test "an encrypted legacy backup (openssl enc -aes-256-cbc -pbkdf2) restores with the legacy password" {
    export OPENCLAW_BACKUP_ENCRYPTION_ENABLED=true OPENCLAW_BACKUP_ENCRYPTION_PASSWORD='legacy pass: 1'
    legacy_backup 20251125-000000
    [ -f "$LEGACY/backups/openclaw-backup-20251125-000000.tar.gz.enc" ]
    unset OPENCLAW_BACKUP_ENCRYPTION_ENABLED  # the legacy restore needed only the password
    restore_and_compare local
    restore_and_compare hf
}

@test "an encrypted, split legacy chain joins its volumes in name order and restores" {
    export OPENCLAW_BACKUP_ENCRYPTION_ENABLED=true OPENCLAW_BACKUP_ENCRYPTION_PASSWORD=s3cret
    legacy_backup 20251125-000000 --split 8192
    echo "edited" >>"$HOME/notes/deep/a.md"
    settle 1764100000 "$HOME/notes/deep/a.md"
    legacy_backup 20251126-000000 --split 8192
    parts=("$LEGACY"/backups/openclaw-backup-20251125-000000.tar.gz.enc.part-a[a-z])
    [ "${#parts[@]}" -ge 3 ] && [ -f "${parts[2]}" ]
    export NO_DIR_TIMES=1
    restore_and_compare local
    jq -e '.chain.snapshots | all(.encrypted and (.volumes | length >= 1))' "$BATS_TEST_TMPDIR/pull-local.json" >/dev/null
    restore_and_compare hf
}

@test "a legacy backup under a path_prefix restores, and OPENCLAW_RESTORE_ARCHIVE picks an older one" {
    export OPENCLAW_BACKUP_PATH_PREFIX=team/openclaw
    legacy_backup 20251125-000000 --split 20000
    [ -f "$LEGACY/team/openclaw/openclaw-backup-20251125-000000.tar.gz.meta.json" ]
    restore_and_compare local
    restore_and_compare hf
    # a later full backup of other content; the archive name picks the first one again
    use_store local
    export OCB_STORE="file://$LEGACY"
    echo "later" >"$HOME/.config/app/later.txt"
    legacy_backup 20251126-000000 --full
    OPENCLAW_RESTORE_ARCHIVE=openclaw-backup-20251125-000000.tar.gz run -0 --separate-stderr ocb-chain
    [ "$(echo "$output" | jq -r .chain.target)" = openclaw-backup-20251125-000000 ]
    OPENCLAW_RESTORE_ARCHIVE=openclaw-backup-20251126-000000 run -0 --separate-stderr ocb-chain
    [ "$(echo "$output" | jq -r .chain.target)" = openclaw-backup-20251126-000000 ]
}

@test "a wrong legacy password is exit 4 naming the password, the targets untouched" {
    export OPENCLAW_BACKUP_ENCRYPTION_ENABLED=true OPENCLAW_BACKUP_ENCRYPTION_PASSWORD=right
    legacy_backup 20251125-000000
    export OCB_STORE="file://$LEGACY" OPENCLAW_BACKUP_ENCRYPTION_PASSWORD=wrong
    echo "live" >"$HOME/.openclaw/live.txt"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/before"
    run -4 --separate-stderr ocb-restore
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error pull 4 "$BATS_TEST_TMPDIR/doc.json"
    jq -e '.error.message | test("password is wrong")' "$BATS_TEST_TMPDIR/doc.json" >/dev/null
    diff "$BATS_TEST_TMPDIR/before" <(manifest "$HOME/.openclaw")
}

@test "a flipped byte in a legacy volume is exit 4 naming the recorded checksum, the targets untouched" {
    legacy_backup 20251125-000000 --split 8192
    export OCB_STORE="file://$LEGACY"
    flip_byte "$LEGACY/backups/openclaw-backup-20251125-000000.tar.gz.part-ab" 100
    echo "live" >"$HOME/.openclaw/live.txt"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/before"
    run -4 --separate-stderr ocb-restore
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error pull 4 "$BATS_TEST_TMPDIR/doc.json"
    jq -e '.error.message | test("recorded checksum check failed")' "$BATS_TEST_TMPDIR/doc.json" >/dev/null
    diff "$BATS_TEST_TMPDIR/before" <(manifest "$HOME/.openclaw")
}

@test "after a legacy restore a backup takes a full ocb snapshot, the legacy files stay, --list marks both" {
    legacy_backup 20251125-000000
    echo "x" >>"$HOME/notes/deep/a.md"
    settle 1764100000 "$HOME/notes/deep/a.md"
    legacy_backup 20251126-000000
    export OCB_STORE="file://$LEGACY" STORE_DIR="$LEGACY"
    before=$(cd "$LEGACY/backups" && ls | sort)
    rm -rf "$HOME/.openclaw"
    mkdir "$HOME/.openclaw"
    run -0 --separate-stderr ocb-restore
    [ -f "$HOME/.openclaw/with space.txt" ]
    backup_ok
    jq -e '.plan.type == "full"' "$BATS_TEST_TMPDIR/last.json" >/dev/null
    new_id=$(last_id)
    for name in $before; do [ -f "$LEGACY/backups/$name" ]; done
    run -0 --separate-stderr ocb-chain --list
    echo "$output" | jq -e --arg id "$new_id" '.list.snapshots | map([.id, .format, .latest]) == [
        ["openclaw-backup-20251125-000000", "legacy", false], ["openclaw-backup-20251126-000000", "legacy", false],
        [$id, "ocb", true]]' >/dev/null
    # the latest is the ocb snapshot now; the legacy ones stay restorable by id
    run -0 --separate-stderr ocb-chain
    echo "$output" | jq -e --arg id "$new_id" '.chain.target == $id and (.chain.legacy == null)' >/dev/null
    run -0 --separate-stderr ocb-chain --id openclaw-backup-20251125-000000
    echo "$output" | jq -e '.chain.legacy != null' >/dev/null
}
