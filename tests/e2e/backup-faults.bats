#!/usr/bin/env bats
# A backup in a hostile world: directories renamed and deleted while pack runs, unreadable
# entries, a broken chain, a lost pointer, a sealed store, a clock that jumps. Each case
# restores what was published and compares it, entry by entry, with the snapshot's index
# (what the document says was backed up).

load test_helper

CHECK="$OCB_ROOT/tests/against_index.py"

setup() {
    ocb_setup
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
    run -1 grep -q '"path": "sessions' "$BATS_TEST_TMPDIR/second.index"
    # tmp itself was unchanged, so it stays as planned; what changed below it went with deep
    run -1 grep -q '"path": "tmp/deep' "$BATS_TEST_TMPDIR/second.index"
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

# as_user CMD...: run CMD as uid/gid 1000, no supplementary groups, with this test's env;
# the venv's interpreter may lie where uid 1000 cannot go (pyenv under /root): the system
# python3 then runs with the venv's packages, as on a machine where they are installed
as_user() {
    local packages
    packages=$(echo "$OCB_ROOT"/.venv/lib/python3*/site-packages)
    PATH="/usr/bin:$PATH" PYTHONPATH="$packages" setpriv --reuid 1000 --regid 1000 --clear-groups "$@"
}

# give_to_user: the test's dirs belong to uid 1000, and the way to them is open to it
give_to_user() {
    local d
    # the test's dirs, and the checkout the commands run from (a clone in a 0700 mktemp dir)
    for d in "$BATS_TEST_TMPDIR" "$OCB_ROOT"; do
        while [ "$d" != / ]; do
            [ -n "$(find "$d" -maxdepth 0 -perm -o+x)" ] || chmod o+x "$d"
            d=$(dirname "$d")
        done
    done
    mkdir -p "$OCB_WORK_DIR" "$OCB_CACHE_DIR" "$STORE_DIR" "$@"
    chown -R 1000:1000 "$HOME" "$OCB_WORK_DIR" "$OCB_CACHE_DIR" "$STORE_DIR" "$@"
}

@test "unreadable entries (another owner's 0600 file, a mode-000 dir, a path over 4096 bytes) are skipped and named, exit 6, the rest restores exactly" {
    command -v setpriv >/dev/null || skip "setpriv is not installed"
    mkdir -p "$STATE/sessions" "$HOME/.config/app" "$STATE/locked/inner"
    printf 'session\n' >"$STATE/sessions/s1.jsonl"
    printf 'setting\n' >"$HOME/.config/app/settings.json"
    printf 'in a locked dir\n' >"$STATE/locked/inner/f"
    # a path longer than 4096 bytes: 18 components of 240 characters, made a step at a time
    long=$(printf 'd%.0s' $(seq 240))
    (cd "$STATE" && mkdir deep && cd deep && for _ in $(seq 18); do mkdir "$long" && cd "$long"; done && printf 'deep\n' >leaf)
    give_to_user "$BATS_TEST_TMPDIR/restored-partial"
    printf 'root only\n' >"$HOME/.config/app/root-secret" && chmod 600 "$HOME/.config/app/root-secret"
    chmod 000 "$STATE/locked"

    run -6 --separate-stderr as_user ocb-backup
    printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/b.json"
    assert_doc_ok "$BATS_TEST_TMPDIR/b.json"
    jq -e '.push.skipped >= 3' "$BATS_TEST_TMPDIR/b.json" >/dev/null
    # named in the document, with the reason
    jq -e '[.plan.skipped[] | select(.path == "root-config/app/root-secret" and .reason == "Permission denied")] | length == 1' "$BATS_TEST_TMPDIR/b.json" >/dev/null
    jq -e '[.plan.skipped[] | select(.path == "openclaw-state/locked" and .reason == "Permission denied")] | length == 1' "$BATS_TEST_TMPDIR/b.json" >/dev/null
    jq -e '[.plan.skipped[] | select((.path | startswith("openclaw-state/deep/")) and .reason == "File name too long")] | length == 1' "$BATS_TEST_TMPDIR/b.json" >/dev/null
    [[ "$stderr" == *"warning: cannot read root-config/app/root-secret (Permission denied)"* ]]
    [[ "$stderr" == *"warning: cannot read openclaw-state/locked (Permission denied)"* ]]
    # and in the (unsealed) meta
    meta="$STORE_DIR/backups/$(jq -r .id "$BATS_TEST_TMPDIR/b.json").meta.json"
    jq -e '.skipped_count >= 3 and ([.skipped[].path] | index("openclaw-state/locked") != null)' "$meta" >/dev/null
    keep_index partial
    run -1 grep -q 'root-secret\|"path": "locked' "$BATS_TEST_TMPDIR/partial.index"
    grep -q '"path": "sessions/s1.jsonl"' "$BATS_TEST_TMPDIR/partial.index"
    grep -q '"path": "deep/' "$BATS_TEST_TMPDIR/partial.index"

    # restored (as the same user) exactly as the index says, for both roots
    to="$BATS_TEST_TMPDIR/restored-partial"
    as_user ocb-restore --to "$to" >"$BATS_TEST_TMPDIR/r.json" 2>"$BATS_TEST_TMPDIR/r.err" || { cat "$BATS_TEST_TMPDIR/r.err" >&2; false; }
    "$PYTHON" "$CHECK" "$BATS_TEST_TMPDIR/partial.index" "openclaw-state=$to/.openclaw" "root-config=$to/.config"

    # every later run warns again; with nothing else changed it takes no snapshot
    run -0 --separate-stderr as_user ocb-backup
    [[ "$stderr" == *"warning: cannot read root-config/app/root-secret (Permission denied)"* ]]
    [[ "$stderr" == *"warning: cannot read openclaw-state/locked (Permission denied)"* ]]
    jq -e '.skip.stage == "plan"' <<<"$output" >/dev/null
    # once readable again, the next snapshot holds them and exits 0
    chmod 700 "$STATE/locked"
    chown 1000:1000 "$HOME/.config/app/root-secret"
    rm -rf "$STATE/deep"
    run -0 --separate-stderr as_user ocb-backup
    keep_index whole
    grep -q '"path": "app/root-secret"' "$BATS_TEST_TMPDIR/whole.index"
    grep -q '"path": "locked/inner/f"' "$BATS_TEST_TMPDIR/whole.index"
}

@test "a volume of a middle snapshot deleted by hand: the next backup is a full one naming it, and restores exactly" {
    mkdir -p "$STATE/sessions"
    printf 'one\n' >"$STATE/sessions/s1.jsonl"
    backup_ok
    printf 'two\n' >"$STATE/sessions/s2.jsonl"
    backup_ok
    middle=$(last_id)
    printf 'three\n' >"$STATE/sessions/s3.jsonl"
    backup_ok
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
    volume=$(cd "$STORE_DIR/backups" && ls "$middle".tar.*)
    rm "$STORE_DIR/backups/$volume"
    run -4 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/broken"
    printf 'four\n' >"$STATE/sessions/s4.jsonl"
    backup_ok
    jq -e '.plan.type == "full" and (.plan.reasons | any(contains("broken in the store") and contains("'"$volume"'")))' \
        "$BATS_TEST_TMPDIR/last.json" >/dev/null
    grep -q "warning: the chain of .* is broken in the store: missing volume $volume" "$BATS_TEST_TMPDIR/last.err"
    keep_index fresh
    restored_matches fresh
    # and the next one builds on the new, whole chain again
    printf 'five\n' >"$STATE/sessions/s5.jsonl"
    backup_ok
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
    keep_index after
    restored_matches after
}

@test "the pointer deleted: restore is exit 4 naming the newest complete snapshot, --id and --at still work, a backup builds on it and writes the pointer again" {
    mkdir -p "$STATE/sessions"
    printf 'one\n' >"$STATE/sessions/s1.jsonl"
    backup_ok
    printf 'two\n' >"$STATE/sessions/s2.jsonl"
    backup_ok
    newest=$(last_id)
    keep_index newest
    sleep 1  # the next id is of a later second, so --at can tell them apart
    printf 'three\n' >"$STATE/sessions/s3.jsonl"
    backup_ok
    broken=$(last_id)
    # the newest snapshot loses a volume and the pointer goes: the one before is the newest complete
    rm "$STORE_DIR/latest-backup.json" "$STORE_DIR/backups/$broken".tar.*
    run -4 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/latest"
    [[ "$stderr" == *"holds snapshots but no latest-backup.json"*"the newest complete snapshot is $newest"* ]]
    [ ! -e "$BATS_TEST_TMPDIR/latest" ]
    restored_matches newest --id "$newest"
    stamp=${newest#openclaw-backup-}
    restored_matches newest --at "${stamp:0:4}-${stamp:4:2}-${stamp:6:2}T${stamp:9:2}:${stamp:11:2}:${stamp:13:2}Z"
    # a backup builds on the newest complete snapshot (the cache descends from the broken one,
    # so a full one), and its pointer makes the store whole again
    printf 'four\n' >"$STATE/sessions/s4.jsonl"
    backup_ok
    grep -q "holds snapshots but no pointer: building on its newest complete snapshot $newest" "$BATS_TEST_TMPDIR/last.err"
    jq -e --arg n "$newest" '.plan.base_snapshot == $n and .plan.type == "full"' "$BATS_TEST_TMPDIR/last.json" >/dev/null
    [ -f "$STORE_DIR/latest-backup.json" ]
    keep_index repaired
    restored_matches repaired
    # the pointer lost again, the cache descending from the newest: an incremental on it
    repaired_id=$(last_id)
    rm "$STORE_DIR/latest-backup.json"
    printf 'five\n' >"$STATE/sessions/s5.jsonl"
    backup_ok
    jq -e --arg n "$repaired_id" '.plan.type == "incremental" and .plan.parent == $n' "$BATS_TEST_TMPDIR/last.json" >/dev/null
    keep_index again
    restored_matches again
}

@test "a sealed store refuses an unsealed backup (exit 2, nothing written) unless OCB_SEAL=off; ocb's env file is never archived unsealed" {
    mkdir -p "$HOME/.env.d"
    printf 'HF_TOKEN=hf_env_file_token_never_in_clear\n' >"$HOME/.env.d/openclaw-backup.env"
    printf 'OTHER=1\n' >"$HOME/.env.d/other.env"
    printf 'state\n' >"$STATE/a.txt"
    OCB_PASSWORD=sealed-store-password backup_ok
    keep_index sealed
    # sealed, the env file is state like any other
    grep -q '"path": "openclaw-backup.env"' "$BATS_TEST_TMPDIR/sealed.index"
    store_listing >"$BATS_TEST_TMPDIR/before"
    printf 'more\n' >"$STATE/b.txt"
    run -2 --separate-stderr ocb-backup
    printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/refused.json"
    assert_doc_error plan 2 "$BATS_TEST_TMPDIR/refused.json"
    [[ "$stderr" == *"is sealed, and this one would not be"*"OCB_SEAL=off"* ]]
    store_listing >"$BATS_TEST_TMPDIR/after"
    diff "$BATS_TEST_TMPDIR/before" "$BATS_TEST_TMPDIR/after"
    [ -z "$(find "$OCB_WORK_DIR" -mindepth 1 -maxdepth 1 ! -name '.lock*')" ]
    # on purpose: unsealed, without the env file, the token nowhere in the store
    OCB_SEAL=off backup_ok
    jq -e '.seal.sealed != true' "$BATS_TEST_TMPDIR/last.json" >/dev/null
    meta="$STORE_DIR/backups/$(last_id).meta.json"
    jq -e '.sealed == false' "$meta" >/dev/null
    keep_index plain
    run -1 grep -q '"path": "openclaw-backup.env"' "$BATS_TEST_TMPDIR/plain.index"
    grep -q '"path": "other.env"' "$BATS_TEST_TMPDIR/plain.index"
    run -1 grep -rq hf_env_file_token_never_in_clear "$STORE_DIR"
    for volume in "$STORE_DIR"/backups/"$(last_id)".tar.zst*; do
        [ -s "$volume" ]
        run -1 sh -c 'zstd -q -t "$1" || exit 9; zstd -dc <"$1" | grep -q hf_env_file_token_never_in_clear' - "$volume"
    done
}

@test "the entrypoint checks the whole ocb configuration first: a bad value is exit 2, nothing restored or started" {
    printf 'state\n' >"$STATE/a.txt"
    backup_ok
    export OCB_RESTORE_DONE_FILE="$BATS_TEST_TMPDIR/done" OCB_RESTORE_SKIPPED_FILE="$BATS_TEST_TMPDIR/skipped"
    store_listing >"$BATS_TEST_TMPDIR/before"
    OCB_VOLUME_SIZE=1X run -2 --separate-stderr "$OCB_ROOT/entrypoint.sh" touch "$BATS_TEST_TMPDIR/app-ran"
    [[ "$stderr" == *"OCB_VOLUME_SIZE"* ]]
    [[ "$stderr" == *"ocb-plan --show-config failed with status 2"* ]]
    [ ! -e "$BATS_TEST_TMPDIR/app-ran" ] && [ ! -e "$BATS_TEST_TMPDIR/done" ]
    store_listing >"$BATS_TEST_TMPDIR/after"
    diff "$BATS_TEST_TMPDIR/before" "$BATS_TEST_TMPDIR/after"
    # a restore-only setting is checked too
    OCB_RESTORE_STORE=bogus://x run -2 --separate-stderr "$OCB_ROOT/entrypoint.sh" touch "$BATS_TEST_TMPDIR/app-ran"
    [ ! -e "$BATS_TEST_TMPDIR/app-ran" ]
}

@test "the gateway's cache/ and the node_modules of extensions/ are left out by default, kept with OCB_DEFAULT_EXCLUDES=off" {
    mkdir -p "$STATE/cache/ui" "$STATE/extensions/chat/node_modules/dep"
    printf 'asset\n' >"$STATE/cache/ui/app.js"
    printf 'dep\n' >"$STATE/extensions/chat/node_modules/dep/index.js"
    printf '{}\n' >"$STATE/extensions/chat/package.json"
    backup_ok
    keep_index default
    run -1 grep -q '"path": "cache' "$BATS_TEST_TMPDIR/default.index"
    run -1 grep -q '"path": "extensions/chat/node_modules' "$BATS_TEST_TMPDIR/default.index"
    grep -q '"path": "extensions/chat/package.json"' "$BATS_TEST_TMPDIR/default.index"
    restored_matches default
    OCB_DEFAULT_EXCLUDES=off backup_ok --full
    keep_index all
    grep -q '"path": "cache/ui/app.js"' "$BATS_TEST_TMPDIR/all.index"
    grep -q '"path": "extensions/chat/node_modules/dep/index.js"' "$BATS_TEST_TMPDIR/all.index"
}

# faked CMD...: run CMD with the clock moved by $SHIFT (libfaketime, e.g. -2h, +365d)
faked() {
    local lib
    lib=$(find /usr/lib /usr/lib64 -name libfaketime.so.1 2>/dev/null | head -n1)
    [ -n "$lib" ] || { echo "libfaketime is missing: make test installs Debian's faketime" >&2; return 1; }
    FAKETIME="$SHIFT" LD_PRELOAD="$lib" FAKETIME_DONT_FAKE_MONOTONIC=1 "$@"
}

@test "the clock goes back: ids stay unique, --list, --at and the latest follow publish order; a full from the future is due" {
    printf 'one\n' >"$STATE/a.txt"
    backup_ok
    first=$(last_id)
    # the clock set back two hours: a later snapshot with an earlier id
    printf 'two\n' >"$STATE/b.txt"
    SHIFT=-2h faked ocb-backup >"$BATS_TEST_TMPDIR/back.json" 2>"$BATS_TEST_TMPDIR/back.err" || { cat "$BATS_TEST_TMPDIR/back.err" >&2; false; }
    second=$(jq -r .id "$BATS_TEST_TMPDIR/back.json")
    [ "$second" != "$first" ] && [[ "$second" < "$first" ]]
    keep_index back
    run -0 --separate-stderr ocb-chain --list
    [ "$(jq -r '.list.snapshots | map(.id) | join(" ")' <<<"$output")" = "$first $second" ]
    [ "$(jq -r '.list.snapshots[-1] | "\(.id) \(.latest)"' <<<"$output")" = "$second true" ]
    # "now" and the latest both mean the one published last
    restored_matches back --at "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    restored_matches back
    # a full taken with the clock a year ahead: back on time, OCB_FULL_HOURS counts it as due
    printf 'three\n' >"$STATE/c.txt"
    SHIFT=+365d faked ocb-backup --full >"$BATS_TEST_TMPDIR/ahead.json" 2>"$BATS_TEST_TMPDIR/ahead.err" || { cat "$BATS_TEST_TMPDIR/ahead.err" >&2; false; }
    printf 'four\n' >"$STATE/d.txt"
    backup_ok
    jq -e '.plan.type == "full" and (.plan.reasons | any(contains("lies in the future")))' "$BATS_TEST_TMPDIR/last.json" >/dev/null
    keep_index now
    restored_matches now
    [ "$(ocb-chain --list | jq -r '.list.snapshots | length')" = 4 ]
}

@test "backups while a writer renames, creates and deletes directories at random: every snapshot restores exactly as its index says" {
    "$PYTHON" "$TREE" generate "$STATE/base" 300 5
    mkdir -p "$STATE/churn"
    # the writer: random mkdir, file writes, renames and rm -rf under churn/ until told to stop
    "$PYTHON" - "$STATE/churn" "$BATS_TEST_TMPDIR/stop" <<'EOF_PY' &
import os, random, shutil, sys, time
top, stop = sys.argv[1], sys.argv[2]
rng = random.Random(12)
def dirs():
    found = [top]
    for current, names, _ in os.walk(top):
        found += [os.path.join(current, n) for n in names]
    return found
while not os.path.exists(stop):
    try:
        place = rng.choice(dirs())
        act = rng.random()
        if act < 0.35:
            new = os.path.join(place, f"d{rng.randrange(10**6)}")
            os.mkdir(new)
            for n in range(rng.randrange(1, 5)):
                with open(os.path.join(new, f"f{n}"), "wb") as handle:
                    handle.write(os.urandom(rng.randrange(1, 20000)))
        elif act < 0.7 and place != top:
            os.rename(place, os.path.join(os.path.dirname(place), f"r{rng.randrange(10**6)}"))
        elif place != top:
            shutil.rmtree(place)
    except OSError:
        pass  # raced with itself: a path it chose moved on
    time.sleep(rng.random() / 50)
EOF_PY
    writer=$!
    ids=()
    for n in 1 2 3 4 5; do
        printf 'round %s\n' "$n" >>"$STATE/base/rounds.txt"
        backup_ok || { touch "$BATS_TEST_TMPDIR/stop"; wait "$writer"; false; }
        ids+=("$(last_id)")
        keep_index "round$n"
    done
    touch "$BATS_TEST_TMPDIR/stop"
    wait "$writer"
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
    for n in 1 2 3 4 5; do
        restored_matches "round$n" --id "${ids[$((n - 1))]}"
    done
}
