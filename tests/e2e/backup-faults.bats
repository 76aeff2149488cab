#!/usr/bin/env bats
# A backup in a hostile world: directories renamed and deleted while pack runs, unreadable
# entries, a broken chain, a lost pointer, a sealed store, a clock that jumps. Each case
# restores what was published and compares it, entry by entry, with the snapshot's index
# (what the document says was backed up).

load test_helper

CHECK="$OCB_ROOT/tests/against_index.py"

setup() {
    ocb_setup
    export OCB_SCRYPT_LOG_N=10
    STATE="$HOME/.openclaw"
}

# keep_index NAME: keep the index of the snapshot just published (the cache holds it)
keep_index() { cp "$OCB_CACHE_DIR/index.jsonl" "$BATS_TEST_TMPDIR/$1.index"; }

# restored_matches NAME [ARGS]: restore (ARGS: --id ...) into a fresh dir and compare the
# state root with the kept index NAME
restored_matches() {
    local name=$1 to="$BATS_TEST_TMPDIR/restored-$1"
    shift
    rm -rf "$to"
    ocb-restore --to "$to" "$@" >"$BATS_TEST_TMPDIR/restore.json" 2>"$BATS_TEST_TMPDIR/restore.err" || {
        echo "restore failed ($?):" >&2; cat "$BATS_TEST_TMPDIR/restore.err" >&2; return 1; }
    "$PYTHON" "$CHECK" "$BATS_TEST_TMPDIR/$name.index" "openclaw-state=$to/.openclaw"
}

# slow_file PATH MB: incompressible bytes, which zstd -19 packs slowly
slow_file() { head -c "$(($2 * 1024 * 1024))" /dev/urandom >"$1"; }

# when_packing: wait until ocb-pack has started writing its archive
when_packing() {
    wait_for 60 sh -c 'for a in "$1"/openclaw-backup-*/*.tar.zst; do [ -s "$a" ] && exit 0; done; exit 1' - "$OCB_WORK_DIR"
}

@test "a directory renamed and one deleted while pack runs: the snapshot restores exactly as its index says" {
    mkdir -p "$STATE/sessions" "$STATE/tmp/deep"
    for n in 1 2 3; do printf 'session %s\n' "$n" >"$STATE/sessions/s$n.jsonl"; done
    printf 'scratch\n' >"$STATE/tmp/deep/t1"
    printf 'keep\n' >"$STATE/keep.txt"
    backup_ok
    # the directories change (a new file each), their old files do not: the incremental
    # carries the directories and keeps the old files as planned
    printf 'session 4\n' >"$STATE/sessions/s4.jsonl"
    printf 'scratch 2\n' >"$STATE/tmp/deep/t2"
    slow_file "$STATE/aaa-large.bin" 24
    export OCB_COMPRESSION_LEVEL=19
    ocb-backup >"$BATS_TEST_TMPDIR/b.json" 2>"$BATS_TEST_TMPDIR/b.err" &
    backup=$!
    when_packing
    mv "$STATE/sessions" "$STATE/sessions-archived"
    rm -rf "$STATE/tmp"
    wait "$backup" || { cat "$BATS_TEST_TMPDIR/b.err" >&2; false; }
    assert_doc_ok "$BATS_TEST_TMPDIR/b.json"
    jq -e '.plan.type == "incremental" and .archive.stats.vanished >= 4' "$BATS_TEST_TMPDIR/b.json" >/dev/null || {
        cat "$BATS_TEST_TMPDIR/b.json" >&2; false; }
    keep_index second
    ! grep -q '"path": "sessions' "$BATS_TEST_TMPDIR/second.index"
    ! grep -q '"path": "tmp' "$BATS_TEST_TMPDIR/second.index"
    restored_matches second
    # the next backup sees the rename and restores exactly too
    unset OCB_COMPRESSION_LEVEL
    backup_ok
    keep_index third
    grep -q '"path": "sessions-archived/s1.jsonl"' "$BATS_TEST_TMPDIR/third.index"
    restored_matches third
}

@test "push refuses a snapshot whose index a restore would refuse: exit 1, nothing published" {
    mkdir -p "$STATE/sessions" && printf 'one\n' >"$STATE/sessions/s1.jsonl"
    backup_ok
    store_listing >"$BATS_TEST_TMPDIR/before"
    printf 'two\n' >"$STATE/two.txt"
    ocb-plan | ocb-pack | ocb-seal | ocb-split >"$BATS_TEST_TMPDIR/split.json"
    assert_doc_ok "$BATS_TEST_TMPDIR/split.json"
    index=$(jq -r .archive.index "$BATS_TEST_TMPDIR/split.json")
    # an entry below a directory the index does not hold
    printf '%s\n' '{"root": "openclaw-state", "path": "gone/orphan", "type": "file", "mode": 384, "size": 0, "mtime_ns": 0, "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}' >>"$index"
    run -1 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
    printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/push.json"
    assert_doc_error push 1 "$BATS_TEST_TMPDIR/push.json"
    [[ "$stderr" == *"not published"*"gone/orphan"* ]]
    store_listing >"$BATS_TEST_TMPDIR/after"
    diff "$BATS_TEST_TMPDIR/before" "$BATS_TEST_TMPDIR/after"
}
