#!/usr/bin/env bats
# Live SQLite databases (copied through the backup API) and block-level deltas of large files.

load test_helper

SQL="$BATS_TEST_DIRNAME/fixtures/sqlite/sqlite_tool.py"

setup() {
    ocb_setup
    DB="$HOME/.openclaw/memory/main.sqlite"
    mkdir -p "$(dirname "$DB")"
}

sql() { "$PYTHON" "$SQL" "$@"; }

wait_for() {  # wait_for FILE: up to 20 s
    for _ in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.1; done
    echo "timed out waiting for $1" >&2; return 1
}

@test "a database is recognised by its header and archived without its -wal and -shm" {
    sql create "$BATS_TEST_TMPDIR/seed.db" 1
    cp "$BATS_TEST_TMPDIR/seed.db" "$HOME/.openclaw/memory/no-extension"
    printf 'not a db' >"$HOME/.openclaw/memory/fake.sqlite"
    sql wal-only "$HOME/.openclaw/memory/no-extension" 50 "$BATS_TEST_TMPDIR/hold" &
    wait_for "$BATS_TEST_TMPDIR/hold.ready"
    [ -s "$HOME/.openclaw/memory/no-extension-wal" ]
    backup_ok
    touch "$BATS_TEST_TMPDIR/hold"; wait
    jq -e '.archive.stats.databases == 1' "$BATS_TEST_TMPDIR/last.json"
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    [ ! -e "$BATS_TEST_TMPDIR/r/.openclaw/memory/no-extension-wal" ]
    [ ! -e "$BATS_TEST_TMPDIR/r/.openclaw/memory/no-extension-shm" ]
    [ "$(cat "$BATS_TEST_TMPDIR/r/.openclaw/memory/fake.sqlite")" = "not a db" ]
    run -0 sql check "$BATS_TEST_TMPDIR/r/.openclaw/memory/no-extension"
    "$PYTHON" -c 'import sqlite3, sys; assert sqlite3.connect(sys.argv[1]).execute("select count(*) from walrows").fetchone()[0] == 50' \
        "$BATS_TEST_TMPDIR/r/.openclaw/memory/no-extension"
}

@test "a change that sits only in the -wal file is a change" {
    sql create "$DB" 1
    backup_ok
    mtime=$(stat -c %Y "$DB"); size=$(stat -c %s "$DB")
    sql wal-only "$DB" 25 "$BATS_TEST_TMPDIR/hold" &
    wait_for "$BATS_TEST_TMPDIR/hold.ready"
    [ "$(stat -c %s "$DB")" = "$size" ] && [ -s "$DB-wal" ]
    backup_ok
    touch "$BATS_TEST_TMPDIR/hold"; wait
    jq -e '.plan.type == "incremental" and .archive.stats.databases == 1' "$BATS_TEST_TMPDIR/last.json"
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    "$PYTHON" -c 'import sqlite3, sys; assert sqlite3.connect(sys.argv[1]).execute("select count(*) from walrows").fetchone()[0] == 25' \
        "$BATS_TEST_TMPDIR/r/.openclaw/memory/main.sqlite"
    [ "$mtime" -gt 0 ]
}

@test "a database locked past OCB_SQLITE_TIMEOUT is exit 1 naming it, nothing published" {
    sql create "$DB" 1
    sql lock "$DB" "$BATS_TEST_TMPDIR/hold" &
    wait_for "$BATS_TEST_TMPDIR/hold.ready"
    OCB_SQLITE_TIMEOUT=1 run -1 --separate-stderr ocb-backup
    touch "$BATS_TEST_TMPDIR/hold"; wait
    [[ "$stderr" == *"main.sqlite"*"locked"* ]]
    [ ! -e "$STORE_DIR/latest-backup.json" ]
}

@test "a writer inserting during backups: every restored snapshot is intact and holds a prefix" {
    sql writer "$DB" "$BATS_TEST_TMPDIR/stop" &
    wait_for "$DB.last"
    ids=()
    for n in 1 2 3; do
        sleep 0.3
        backup_ok
        ids+=("$(last_id)")
    done
    touch "$BATS_TEST_TMPDIR/stop"; wait
    previous=0
    for id in "${ids[@]}"; do
        rm -rf "$BATS_TEST_TMPDIR/r"
        run -0 --separate-stderr ocb-restore --id "$id" --to "$BATS_TEST_TMPDIR/r"
        run -0 sql check "$BATS_TEST_TMPDIR/r/.openclaw/memory/main.sqlite"
        rows=${output#ok }
        echo "$id: $rows rows" >&3
        [ "$rows" -gt "$previous" ]
        previous=$rows
    done
}

@test "100 rows updated in a 256 MB database: the incremental is under 2% and restores byte-identical" {
    sql create "$DB" 256
    backup_ok
    sql update "$DB" 100 7
    backup_ok
    db_size=$(stat -c %s "$DB")
    archive=$(jq .archive.size "$BATS_TEST_TMPDIR/last.json")
    jq -c '.archive.stats | {files, delta_files, blocks_changed, bytes_in, bytes_stored}' "$BATS_TEST_TMPDIR/last.json" >&3
    echo "incremental archive: $archive bytes for a $db_size-byte database" >&3
    [ "$archive" -lt $((db_size / 50)) ]
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    # the source's own consistent copy, taken the same way the backup took it
    "$PYTHON" -c 'import sqlite3, sys; s = sqlite3.connect(sys.argv[1]); d = sqlite3.connect(sys.argv[2]); s.backup(d); d.close()' \
        "$DB" "$BATS_TEST_TMPDIR/expected.sqlite"
    cmp "$BATS_TEST_TMPDIR/expected.sqlite" "$BATS_TEST_TMPDIR/r/.openclaw/memory/main.sqlite"
    run -0 sql check "$BATS_TEST_TMPDIR/r/.openclaw/memory/main.sqlite"
}

@test "1 MB appended to a 100 MB JSONL file: the incremental is under 2 MB" {
    log="$HOME/.openclaw/agents/main/sessions/s.jsonl"
    mkdir -p "$(dirname "$log")"
    "$PYTHON" -c 'import os, sys
with open(sys.argv[1], "w") as f:
    line = "{\"role\": \"user\", \"text\": \"%s\"}\n"
    while f.tell() < 100 * 1024 * 1024: f.write(line % os.urandom(64).hex())' "$log"
    backup_ok
    "$PYTHON" -c 'import os, sys
with open(sys.argv[1], "a") as f:
    start = f.tell()
    while f.tell() - start < 1024 * 1024: f.write("{\"role\": \"assistant\", \"text\": \"%s\"}\n" % os.urandom(64).hex())' "$log"
    backup_ok
    archive=$(jq .archive.size "$BATS_TEST_TMPDIR/last.json")
    echo "incremental archive: $archive bytes" >&3
    [ "$archive" -lt $((2 * 1024 * 1024)) ]
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    cmp "$log" "$BATS_TEST_TMPDIR/r/.openclaw/agents/main/sessions/s.jsonl"
}

@test "a full and five delta incrementals each restore byte-identical; a corrupted block is exit 4" {
    big="$HOME/.openclaw/big.bin"
    head -c 20000000 /dev/urandom >"$big"
    backup_ok
    ids=("$(last_id)")
    cp "$big" "$BATS_TEST_TMPDIR/v0"
    for n in 1 2 3 4 5; do
        # overwrite a few scattered 100-byte runs, grow once, shrink once
        for at in $((n * 1234567)) $((n * 2345678)) $((n * 345678)); do
            head -c 100 /dev/urandom | dd of="$big" bs=1 seek="$at" conv=notrunc status=none
        done
        [ "$n" = 2 ] && head -c 50000 /dev/urandom >>"$big"
        [ "$n" = 4 ] && truncate -s 19000000 "$big"
        sleep 1
        backup_ok
        jq -e '.archive.stats.delta_files == 1' "$BATS_TEST_TMPDIR/last.json"
        ids+=("$(last_id)")
        cp "$big" "$BATS_TEST_TMPDIR/v$n"
    done
    for n in 0 1 2 3 4 5; do
        rm -rf "$BATS_TEST_TMPDIR/r"
        run -0 --separate-stderr ocb-restore --id "${ids[$n]}" --to "$BATS_TEST_TMPDIR/r"
        cmp "$BATS_TEST_TMPDIR/v$n" "$BATS_TEST_TMPDIR/r/.openclaw/big.bin"
    done
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    "$PYTHON" "$OCB_ROOT/tests/tamper.py" "$STORE_DIR" "${ids[3]}.tar.zst" delta-block-bit
    run -4 --separate-stderr ocb-restore
    [[ "$stderr" == *"big.bin"*"sha256"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
}

@test "the empty -wal a backup's own copy made is no change of the database: nothing is copied again for it" {
    sql create "$DB" 1
    [ ! -e "$DB-wal" ]  # closed: SQLite removed it
    backup_ok
    [ -e "$DB-wal" ] && [ ! -s "$DB-wal" ]  # the backup's read-only connection made an empty one
    # what changed is the directory that holds it (two names more), not the database
    run -0 --separate-stderr ocb-plan
    jq -e '.plan.changes.changed == 1 and .plan.changes.bytes_to_pack == 0' <<<"$output"
    backup_ok
    jq -e '.archive.stats.databases == 0' "$BATS_TEST_TMPDIR/last.json"
    run -0 --separate-stderr ocb-plan
    jq -e '.skip.stage == "plan"' <<<"$output"
    # a commit into that -wal is still a change
    sql wal-only "$DB" 5 "$BATS_TEST_TMPDIR/hold" &
    wait_for "$BATS_TEST_TMPDIR/hold.ready"
    run -0 --separate-stderr ocb-plan
    touch "$BATS_TEST_TMPDIR/hold"; wait
    jq -e '.skip == null and .plan.changes.bytes_to_pack > 0' <<<"$output"
}
