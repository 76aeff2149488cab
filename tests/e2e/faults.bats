#!/usr/bin/env bats
# Faults: damaged bytes in the store, a full disk, bad documents, two writers at once, files
# written while they are packed, and secrets that must never leak. Where a store matters, each
# case runs on the local folder and on the test Hub. (Hostile archives: hostile.bats; kill -9:
# crash.bats; WAL-mode SQLite written during a backup: sqlite.bats.)

load test_helper

PASSWORD='faults-Pa55word-that-must-not-leak'
TOKEN='hf_faults_token_that_must_not_leak'

setup_file() {
    hub_setup_file --token "$TOKEN" --lfs-threshold 4096
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    export HF_TOKEN="$TOKEN"
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 60 11
    MOUNTS=()
}

teardown() {
    for mount in "${MOUNTS[@]}"; do umount "$mount" 2>/dev/null || true; done
    hub_clear_faults
}

# on_store local|hf: a fresh store of that kind (the test Hub here wants our token)
on_store() {
    use_store "$1"
    export HF_TOKEN="$TOKEN"
}

# store_names: every file of the store, relative to it
store_names() {
    if [ "$OCB_TEST_STORE" = hf ]; then
        hub_get "/__hub/repo/dataset/$HUB_REPO" | jq -r '.files | keys[]' | grep -v '^\.gitattributes$'
    else
        (cd "$STORE_DIR" && find . -type f ! -name .ocb-store.lock | sed 's|^\./||' | sort)
    fi
}

# flip FILE: flip one random bit of one random byte of FILE in place; prints the offset
flip() {
    "$PYTHON" - "$1" <<'EOF'
import os, random, sys
path = sys.argv[1]
offset = random.randrange(os.path.getsize(path))
with open(path, "r+b") as handle:
    handle.seek(offset)
    byte = handle.read(1)[0]
    handle.seek(offset)
    handle.write(bytes([byte ^ (1 << random.randrange(8))]))
print(offset)
EOF
}

# two_snapshots: a full and an incremental, each over several volumes
two_snapshots() {
    export OCB_VOLUME_SIZE=128K
    head -c 40000 /dev/urandom >"$HOME/.openclaw/bulk.bin"
    backup_ok
    FIRST=$(last_id)
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/m-$FIRST"
    head -c 30000 /dev/urandom >>"$HOME/.openclaw/bulk.bin"
    printf 'second\n' >"$HOME/.openclaw/second.txt"
    sleep 1
    backup_ok
    SECOND=$(last_id)
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/m-$SECOND"
    # the live state moves on, so an in-place restore that happened would show
    printf 'live\n' >"$HOME/.openclaw/live-only.txt"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    rm -rf "$BATS_TEST_TMPDIR/live-copy" && cp -a "$HOME/.openclaw" "$BATS_TEST_TMPDIR/live-copy"
}

# damaged_restore NAME [ocb-restore flags...]: flip a bit of store file NAME and restore in place;
# the restore must refuse with exit 4 naming a file of the store (the damaged one, or a volume
# the damaged record no longer matches) and leave the target untouched, or, when the bit was of
# no matter to it, restore exactly. Then the store gets its byte back.
damaged_restore() {
    local name=$1 file offset expected
    shift
    file=$(store_file "$name")
    [ -n "$file" ] && [ -f "$file" ] || { echo "no bytes found for $name" >&2; return 1; }
    cp "$file" "$BATS_TEST_TMPDIR/pristine"
    offset=$(flip "$file")
    run --separate-stderr ocb-restore "$@"
    cp "$BATS_TEST_TMPDIR/pristine" "$file"
    if [ "$status" -eq 4 ]; then
        grep -qF -e "$name" -e "$(basename "$name")" -e "latest-backup.json" <<<"$stderr" \
            || [[ "$stderr" =~ volume\ openclaw-backup-[0-9-]+\.tar\.zst ]] \
            || { echo "[$name @ $offset] exit 4 without naming a file: $stderr" >&2; return 1; }
        manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" - >&2 \
            || { echo "[$name @ $offset] the target changed" >&2; return 1; }
        FLIPS_CAUGHT=$((FLIPS_CAUGHT + 1))
    elif [ "$status" -eq 0 ]; then
        expected=$(jq -r .chain.target <<<"$output")
        manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/m-$expected" - >&2 \
            || { echo "[$name @ $offset] restored something else than $expected" >&2; return 1; }
        rm -rf "$HOME/.openclaw" && cp -a "$BATS_TEST_TMPDIR/live-copy" "$HOME/.openclaw"
        FLIPS_HARMLESS=$((FLIPS_HARMLESS + 1))
    else
        echo "[$name @ $offset] exit $status: $stderr" >&2
        return 1
    fi
    [ -z "$(find "$HOME" -maxdepth 1 -name '*.ocb-staging*')" ]
}

# bats test_tags=matrix
@test "a flipped bit anywhere in any volume is exit 4 naming the volume, the target untouched" {
    for store in local hf; do
        on_store "$store"
        two_snapshots
        for name in $(store_names | grep -v json); do
            damaged_restore "$name" || return 1
            [ "$status" -eq 4 ] || { echo "[$store] a flipped bit of $name went unnoticed" >&2; return 1; }
            [[ "$stderr" == *"$(basename "$name")"* ]]
        done
    done
}

# bats test_tags=matrix
@test "a flipped bit in the pointer or a meta is caught naming the file, or is of no matter: the restore stays exact" {
    FLIPS_CAUGHT=0 FLIPS_HARMLESS=0
    for store in local hf; do
        on_store "$store"
        two_snapshots
        # two random flips of each record per store (each a whole restore; the next test flips
        # the pointer eight more times on the local store)
        for _ in 1 2; do
            damaged_restore latest-backup.json || return 1
            # the latest meta rides in the pointer; the older one is read when restoring by id
            damaged_restore "backups/$FIRST.meta.json" --id "$FIRST" || return 1
            damaged_restore "backups/$SECOND.meta.json" || return 1
        done
    done
    echo "flips caught: $FLIPS_CAUGHT, of no matter: $FLIPS_HARMLESS" >&3
}

# bats test_tags=matrix
@test "every flipped bit of the pointer or a meta is caught, naming the file" {
    on_store local
    two_snapshots
    for _ in 1 2 3 4 5 6 7 8; do
        damaged_restore latest-backup.json
        [ "$status" -eq 4 ]
    done
}

# bats test_tags=matrix
@test "a full disk during pack is exit 1 saying so: no partial archive, no snapshot, the next backup succeeds" {
    for store in local hf; do
        on_store "$store"
        backup_ok
        before=$(store_listing)
        head -c 3000000 /dev/urandom >"$HOME/.openclaw/big.bin"
        # 1 MiB per file: the plan's index fits, the archive does not
        run --separate-stderr bash -c 'ulimit -f 1024; exec ocb-backup'
        [ "$status" -eq 1 ] || { echo "[$store] exit $status: $stderr" >&2; return 1; }
        [[ "$stderr" == *"ocb-pack: error: cannot write the archive"*"no space left on device"* ]]
        jq -e '.error.stage == "pack" and .error.code == 1' <<<"$output"
        [ "$(store_listing)" = "$before" ]
        [ -z "$(find "$OCB_WORK_DIR" -name '*.tar.zst*')" ]
        backup_ok
        run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r-$store"
        manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r-$store/.openclaw")
        rm "$HOME/.openclaw/big.bin"
    done
}

# bats test_tags=matrix
@test "a full disk during pull is exit 1 saying so, the target untouched, no staging left" {
    for store in local hf; do
        on_store "$store"
        head -c 3000000 /dev/urandom >"$HOME/.openclaw/big.bin"
        backup_ok
        printf 'live\n' >"$HOME/.openclaw/live-only.txt"
        manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
        run --separate-stderr bash -c 'ulimit -f 1024; exec ocb-restore'
        [ "$status" -eq 1 ] || { echo "[$store] exit $status: $stderr" >&2; return 1; }
        [[ "$stderr" == *"no space left on device"* ]]
        manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
        [ -z "$(find "$HOME" -maxdepth 1 -name '*.ocb-staging*')" ]
        rm "$HOME/.openclaw/big.bin"
    done
}

# small_disk DIR KBYTES: mount a tmpfs of that size on DIR (unmounted in teardown), or skip
small_disk() {
    mkdir -p "$1"
    mount -t tmpfs -o "size=${2}k" tmpfs "$1" 2>/dev/null || skip "cannot mount a tmpfs here (needs root)"
    MOUNTS+=("$1")
}

# bats test_tags=matrix
@test "a really full disk (ENOSPC) under the work dir during seal and split, and under the store during push, is exit 1 with the store as it was" {
    on_store local
    export OCB_PASSWORD="$PASSWORD" OCB_VOLUME_SIZE=256K
    backup_ok
    small_disk "$OCB_WORK_DIR" 1000   # the next archive fits; it and its sealed copy do not
    printf 'more\n' >>"$HOME/.openclaw/with space.txt"
    head -c 600000 /dev/urandom >"$HOME/.openclaw/big-2.bin"
    before=$(store_listing)
    run -1 --separate-stderr ocb-backup
    [[ "$stderr" == *"ocb-seal: error: cannot write the sealed archive"*"no space left on device"* \
        || "$stderr" == *"ocb-split: error: cannot write volumes"*"no space left on device"* ]]
    [ "$(store_listing)" = "$before" ]
    rm "$HOME/.openclaw/big-2.bin"
    backup_ok
    # the store's disk: the new volumes do not fit (the work dir has room again)
    umount "$OCB_WORK_DIR"
    used=$(du -sk "$STORE_DIR" | cut -f1)
    mv "$STORE_DIR" "$BATS_TEST_TMPDIR/store-aside"
    small_disk "$STORE_DIR" $((used + 300))
    cp -a "$BATS_TEST_TMPDIR/store-aside/." "$STORE_DIR/"
    before=$(store_listing)
    head -c 600000 /dev/urandom >"$HOME/.openclaw/big-3.bin"
    run -1 --separate-stderr ocb-backup
    [[ "$stderr" == *"ocb-push: error: store: cannot write"*"no space left on device"* ]]
    [ "$(store_listing)" = "$before" ]
    [ -z "$(find "$STORE_DIR" -name '.ocb-tmp-*')" ]
    rm "$HOME/.openclaw/big-3.bin"
    backup_ok
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

# --- bad documents ---------------------------------------------------------------------------

# stage_inputs: the real input document of every stage, and the work dir as each found it;
# made once for the file (the documents hold absolute paths, so the tests reuse its folders)
stage_inputs() {
    local shared="$BATS_FILE_TMPDIR/docs" stage next
    export OCB_TEST_STORE=local HOME="$shared/home" OCB_WORK_DIR="$shared/work" OCB_CACHE_DIR="$shared/cache" \
        OCB_PASSWORD="$PASSWORD" OCB_VOLUME_SIZE=16K
    STORE_DIR="$shared/store" DOCS="$shared"
    export OCB_STORE="file://$STORE_DIR"
    [ ! -e "$shared/ready" ] || return 0
    mkdir -p "$HOME" && cp -a "$BATS_TEST_TMPDIR/home/.openclaw" "$HOME/"
    head -c 40000 /dev/urandom >"$HOME/.openclaw/bulk.bin"
    backup_ok
    printf 'change\n' >>"$HOME/.openclaw/with space.txt"
    ocb-plan >"$DOCS/in-pack.json" 2>/dev/null
    cp -a "$OCB_WORK_DIR" "$DOCS/work-for-pack"
    for stage in pack seal split; do
        "ocb-$stage" <"$DOCS/in-$stage.json" >"$DOCS/out-$stage.json" 2>/dev/null
        case $stage in pack) next="seal" ;; seal) next="split" ;; split) next="push" ;; esac
        cp "$DOCS/out-$stage.json" "$DOCS/in-$next.json"
        cp -a "$OCB_WORK_DIR" "$DOCS/work-for-$next"
    done
    ocb-chain >"$DOCS/in-pull.json" 2>/dev/null
    cp -a "$OCB_WORK_DIR" "$DOCS/work-for-pull"
    touch "$shared/ready"
}

# everything a refused document must leave alone: the store, the state, the cache, the work dir
world_listing() {
    store_listing
    manifest "$HOME"
    find "$OCB_CACHE_DIR" "$OCB_WORK_DIR" -printf '%p %y %s %T@\n' 2>/dev/null | LC_ALL=C sort
}

# bad_document STAGE FRAGMENT JQ-FILTER: the stage's real input, changed by the filter (or, for
# the filter "raw:TEXT", replaced by TEXT), is exit 3 naming FRAGMENT, and nothing changed
bad_document() {
    local stage=$1 fragment=$2 filter=$3 input="$BATS_TEST_TMPDIR/bad.json"
    rm -rf "$OCB_WORK_DIR" && cp -a "$DOCS/work-for-$stage" "$OCB_WORK_DIR"
    case $filter in
        raw:*) printf '%s' "${filter#raw:}" >"$input" ;;
        truncate) head -c "$(($(wc -c <"$DOCS/in-$stage.json") / 2))" "$DOCS/in-$stage.json" >"$input" ;;
        *) jq "$filter" "$DOCS/in-$stage.json" >"$input" ;;
    esac
    world_listing >"$BATS_TEST_TMPDIR/world-before"
    run --separate-stderr "ocb-$stage" <"$input"
    [ "$status" -eq 3 ] || { echo "ocb-$stage <$filter>: exit $status, not 3: $stderr" >&2; return 1; }
    [[ "$stderr" == *"$fragment"* ]] || { echo "ocb-$stage <$filter>: no '$fragment' in: $stderr" >&2; return 1; }
    echo "$output" >"$BATS_TEST_TMPDIR/refused.json"
    assert_doc_error "$stage" 3 "$BATS_TEST_TMPDIR/refused.json"
    world_listing | diff "$BATS_TEST_TMPDIR/world-before" - >&2 || { echo "ocb-$stage <$filter> changed things" >&2; return 1; }
}

# the cases every stage shares
bad_documents_of() {
    local stage=$1 kind=backup other=restore
    [ "$stage" = pull ] && kind=restore other=backup
    bad_document "$stage" "empty input" "raw:"
    bad_document "$stage" "not JSON" truncate
    bad_document "$stage" "not JSON" "raw:{\"ocb\": 1, \"kind\": \"$kind\",,}"
    bad_document "$stage" "reads a $kind document" ".kind = \"$other\""
    bad_document "$stage" "'ocb' is 2" '.ocb = 2'
    bad_document "$stage" "'settings'" 'del(.settings)'
    bad_document "$stage" "'settings.work_dir'" '.settings.work_dir = 42'
    bad_document "$stage" "'settings.cache_dir'" '.settings.cache_dir = "relative/cache"'
    bad_document "$stage" "'document.id'" '.id = "../../etc/passwd"'
}

# bats test_tags=matrix
@test "ocb-pack refuses bad documents with exit 3 naming the field, with no side effect" {
    stage_inputs
    bad_documents_of pack
    bad_document pack "'plan'" 'del(.plan)'
    bad_document pack "'plan.roots'" '.plan.roots = "all"'
    bad_document pack "'plan.dir'" '.plan.dir = "/etc"'
    bad_document pack "outside the work dir" '.plan.index = "/etc/passwd"'
    bad_document pack "'settings.compression_level'" '.settings.compression_level = 1e30'
    bad_document pack "'settings.delta_min'" '.settings.delta_min = -1'
}

# bats test_tags=matrix
@test "ocb-seal refuses bad documents with exit 3 naming the field, with no side effect" {
    stage_inputs
    bad_documents_of seal
    bad_document seal "'archive'" 'del(.archive)'
    bad_document seal "'archive.size'" '.archive.size = "12"'
    bad_document seal "'archive.size'" '.archive.size = 99999999999999999999'
    bad_document seal "outside the work dir" '.archive.path = "/etc/passwd"'
    bad_document seal "'settings.scrypt_log_n'" '.settings.scrypt_log_n = 40'
}

# bats test_tags=matrix
@test "ocb-split refuses bad documents with exit 3 naming the field, with no side effect" {
    stage_inputs
    bad_documents_of split
    bad_document split "'archive'" 'del(.archive) | del(.seal)'
    bad_document split "'seal.sha256'" '.seal.sha256 = "not a hash"'
    bad_document split "'seal.size'" '.seal.size = -1'
    bad_document split "outside the work dir" ".seal.path = \"$BATS_TEST_TMPDIR/elsewhere.ocbs\""
    bad_document split "'settings.volume_size'" '.settings.volume_size = 0'
}

# bats test_tags=matrix
@test "ocb-push refuses bad documents with exit 3 naming the field, with no side effect" {
    stage_inputs
    bad_documents_of push
    bad_document push "'volumes'" 'del(.volumes)'
    bad_document push "'volumes.files'" '.volumes.files = []'
    bad_document push "'volumes.files[0].name'" '.volumes.files[0].name = "../../latest-backup.json"'
    bad_document push "'volumes.files[0].size'" '.volumes.files[0].size = 1e300'
    bad_document push "outside the work dir" '.volumes.files[0].path = "/etc/passwd"'
    bad_document push "'plan.parent_chain'" '.plan.parent_chain = {}'
    bad_document push "'plan.base'" 'del(.plan.base)'
    bad_document push "'settings.path_prefix'" '.settings.path_prefix = "../outside"'
}

# bats test_tags=matrix
@test "ocb-pull refuses bad documents with exit 3 naming the field, with no side effect" {
    stage_inputs
    bad_documents_of pull
    bad_document pull "'chain'" 'del(.chain)'
    bad_document pull "'chain.target'" '.chain.target = "latest"'
    bad_document pull "'meta'" '.meta.chain = []'
    bad_document pull "'store'" 'del(.store)'
    bad_document pull "'settings.roots[0]" '.settings.roots[0] = "x"'
    bad_document pull "'settings.roots[0].path'" '.settings.roots[0].path = "relative"'
}

# bats test_tags=matrix
@test "a volume changed in the work dir after ocb-split is never published: exit 4, the store as it was" {
    for store in local hf; do
        on_store "$store"
        backup_ok
        printf 'change\n' >>"$HOME/.openclaw/with space.txt"
        ocb-plan 2>/dev/null | ocb-pack 2>/dev/null | ocb-seal | ocb-split >"$BATS_TEST_TMPDIR/split.json"
        volume=$(jq -r '.volumes.files[0].path' "$BATS_TEST_TMPDIR/split.json")
        flip "$volume" >/dev/null
        before=$(store_listing)
        run -4 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
        [[ "$stderr" == *"$(basename "$volume")"* ]]
        [ "$(store_listing)" = "$before" ]
    done
}

# --- concurrency -------------------------------------------------------------------------------

# bats test_tags=matrix
@test "two ocb-backup at once on one host: one runs, the other exits 11 touching nothing" {
    on_store local
    head -c 40000000 /dev/urandom >"$HOME/.openclaw/big.bin"  # the first takes a while
    ocb-backup >"$BATS_TEST_TMPDIR/first.json" 2>"$BATS_TEST_TMPDIR/first.err" &
    first=$!
    # the first holds the lock once its work dir has the snapshot's folder
    for _ in $(seq 100); do [ -n "$(find "$OCB_WORK_DIR" -maxdepth 1 -name 'openclaw-backup-*' 2>/dev/null)" ] && break; sleep 0.05; done
    run -11 --separate-stderr ocb-backup
    [[ "$stderr" == *"holds the lock"* ]]
    [ -z "$output" ]
    kill -0 "$first"  # still running: the second really ran alongside it
    wait "$first"
    assert_doc_ok "$BATS_TEST_TMPDIR/first.json"
    [ "$(store_volume_names | grep -c '\.meta\.json$')" -eq 1 ]
}

# bats test_tags=matrix
@test "two writers on one store: one commit wins, the other exits 5 and leaves nothing of its snapshot" {
    for store in local hf; do
        on_store "$store"
        backup_ok
        # a second host: its own state, work dir and cache, the same store
        for host in a b; do
            rm -rf "${BATS_TEST_TMPDIR:?}/$host" && mkdir -p "$BATS_TEST_TMPDIR/$host"
            cp -a "$HOME" "$BATS_TEST_TMPDIR/$host/home"
            cp -a "$OCB_CACHE_DIR" "$BATS_TEST_TMPDIR/$host/cache"
            printf '%s\n' "$host" >"$BATS_TEST_TMPDIR/$host/home/.openclaw/host-$host.txt"
            HOME="$BATS_TEST_TMPDIR/$host/home" OCB_WORK_DIR="$BATS_TEST_TMPDIR/$host/work" \
                OCB_CACHE_DIR="$BATS_TEST_TMPDIR/$host/cache" \
                sh -c 'ocb-plan | ocb-pack | ocb-seal | ocb-split' >"$BATS_TEST_TMPDIR/$host/split.json" 2>/dev/null
            sleep 1  # another second, another id
        done
        before=$(store_names)
        for host in a b; do
            (HOME="$BATS_TEST_TMPDIR/$host/home" OCB_WORK_DIR="$BATS_TEST_TMPDIR/$host/work" \
                OCB_CACHE_DIR="$BATS_TEST_TMPDIR/$host/cache" ocb-push <"$BATS_TEST_TMPDIR/$host/split.json" \
                >"$BATS_TEST_TMPDIR/$host/push.json" 2>"$BATS_TEST_TMPDIR/$host/push.err" && s=0 || s=$?
             echo "$s" >"$BATS_TEST_TMPDIR/$host/status") 3>&- &
        done
        wait
        statuses=$(cat "$BATS_TEST_TMPDIR/a/status" "$BATS_TEST_TMPDIR/b/status" | sort | tr '\n' ' ')
        [ "$statuses" = "0 5 " ] || { echo "[$store] exits: $statuses" >&2; cat "$BATS_TEST_TMPDIR"/?/push.err >&2; return 1; }
        winner=a loser=b
        [ "$(cat "$BATS_TEST_TMPDIR/a/status")" -eq 0 ] || { winner=b loser=a; }
        grep -q 're-plan' "$BATS_TEST_TMPDIR/$loser/push.err"
        won=$(jq -r .id "$BATS_TEST_TMPDIR/$winner/push.json")
        lost=$(jq -r .id "$BATS_TEST_TMPDIR/$loser/split.json")
        # the store holds what it held plus the winner's snapshot, and nothing of the loser's
        diff <(printf '%s\n' "$before" | sort) <(store_names | grep -v "$won" | sort)
        [ -z "$(store_names | grep -F "$lost")" ]
        [ "$(latest_id_of_store)" = "$won" ]
    done
}

latest_id_of_store() { ocb-chain 2>/dev/null | jq -r .chain.target; }

# --- live data ---------------------------------------------------------------------------------

# bats test_tags=matrix
@test "files appended while they are packed are archived as one whole version each: sizes and hashes match the index" {
    on_store local
    for n in 1 2 3; do head -c 2000000 /dev/urandom >"$HOME/.openclaw/growing-$n.log.bin"; done
    # a writer appends to the three files, 4 KiB at a time, until told to stop
    "$PYTHON" - "$HOME/.openclaw" "$BATS_TEST_TMPDIR/stop" <<'EOF' 3>&- &
import os, sys, time
top, stop = sys.argv[1], sys.argv[2]
while not os.path.exists(stop):
    for n in (1, 2, 3):
        with open(f"{top}/growing-{n}.log.bin", "ab") as handle:
            handle.write(os.urandom(4096))
    time.sleep(0.001)
EOF
    writer=$!
    sleep 0.2
    backup_ok
    touch "$BATS_TEST_TMPDIR/stop"
    wait "$writer"
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    # every restored file is what the index says (the restore checked it too) and a prefix of
    # the live file, which only ever grew: one whole version, never a mix
    "$PYTHON" - "$OCB_CACHE_DIR/index.jsonl" "$BATS_TEST_TMPDIR/r/.openclaw" "$HOME/.openclaw" <<'EOF'
import hashlib, json, os, sys
index, restored, live = sys.argv[1:]
checked = 0
with open(index) as handle:
    next(handle)
    for line in handle:
        entry = json.loads(line)
        if entry["root"] != "openclaw-state" or entry["type"] != "file" or not entry["path"].startswith("growing-"):
            continue
        data = open(os.path.join(restored, entry["path"]), "rb").read()
        assert len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
        with open(os.path.join(live, entry["path"]), "rb") as current:
            assert current.read(len(data)) == data, f"{entry['path']} is not a version the file went through"
        assert len(data) > 2_000_000, f"{entry['path']}: the writer had not started"
        checked += 1
assert checked == 3, checked
EOF
}

# --- secrets -----------------------------------------------------------------------------------

# bats test_tags=matrix
@test "the password and the HF token never appear in a document, a log line, a process argv or the sealed store" {
    on_store hf
    export OCB_PASSWORD="$PASSWORD" OCB_DEBUG=1
    "$PYTHON" "$TREE" generate "$HOME/.openclaw/more" 1500 12
    printf 'secret\n' >"$HOME/.openclaw/very-private-name.txt"
    printf '%s\n%s\n' "$PASSWORD" "$TOKEN" >"$BATS_TEST_TMPDIR/secrets"
    # every process's argv, sampled while the stages run
    "$PYTHON" - "$BATS_TEST_TMPDIR/stop" >"$BATS_TEST_TMPDIR/argv" 3>&- <<'EOF' &
import glob, os, sys
while not os.path.exists(sys.argv[1]):
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as handle:
                print(handle.read().replace(b"\0", b" ").decode("utf-8", "replace"))
        except OSError:
            pass  # ended in between
EOF
    sampler=$!
    out="$BATS_TEST_TMPDIR/out" && mkdir -p "$out"
    backup_ok && cp "$BATS_TEST_TMPDIR/last.json" "$BATS_TEST_TMPDIR/last.err" "$out/"
    printf 'more\n' >>"$HOME/.openclaw/with space.txt"
    OCB_LOG_FORMAT=json ocb-backup >"$out/2.json" 2>"$out/2.err"
    ocb-chain --list >"$out/list.json" 2>"$out/list.err"
    ocb-restore --to "$BATS_TEST_TMPDIR/r" >"$out/restore.json" 2>"$out/restore.err"
    ocb-restore --dry-run >"$out/dry.json" 2>"$out/dry.err"
    # failures say why without the secret: a wrong password, a refused token
    OCB_PASSWORD="wrong-$PASSWORD" ocb-restore >"$out/wrong.json" 2>"$out/wrong.err" || true
    HF_TOKEN="bad-$TOKEN" ocb-backup >"$out/token.json" 2>"$out/token.err" || true
    touch "$BATS_TEST_TMPDIR/stop"
    wait "$sampler"
    [ "$(wc -l <"$BATS_TEST_TMPDIR/argv")" -gt 100 ]
    grep -q 'ocb_stage.py .*pack' "$BATS_TEST_TMPDIR/argv"  # it saw the stages run
    grep -q 'wrong password' "$out/wrong.err"
    jq -e '.error.code == 13' "$out/token.json"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
    # grep exits 1 when nothing matches (2 on an error): `!` would not fail a bats test
    # every argv but the test Hub's own (the remote side: it is told its token on its command line)
    grep -vF "tests/hub/testhub.py" "$BATS_TEST_TMPDIR/argv" >"$out/argv"
    run -1 grep -rlF -f "$BATS_TEST_TMPDIR/secrets" "$out" "$OCB_WORK_DIR" "$OCB_CACHE_DIR"
    # the store: the test Hub's files for its repos
    run -1 grep -rlF -f "$BATS_TEST_TMPDIR/secrets" "$HUB_DATA/datasets"
    run -1 grep -rlF "very-private" "$HUB_DATA/datasets"
}
