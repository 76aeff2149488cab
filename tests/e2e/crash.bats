#!/usr/bin/env bats
# kill -9 at each stage, at random byte offsets of what the stage writes (in the work dir, the
# store or the staging dir) or after random delays, on the local store and the test Hub, sealed.
# After each kill: the store's latest snapshot is the previous intact one or the new complete
# one, and a restore of it is exact; a restore's target is wholly old or wholly new; the next
# run succeeds and leaves nothing of the dead one behind. Offsets are printed on failure.

load test_helper

setup_file() {
    hub_setup_file --token ocb-test-token --lfs-threshold 4096
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    # the stages run and killed here by hand stand in for those of a cron ocb-backup or
    # ocb-restore, which run under the lock: their run dirs carry its mark, so the next locked
    # run sweeps them (a pipe run by hand without it is never swept: backup.bats)
    export OCB_UNDER_LOCK=1
    export OCB_PASSWORD='crash test password' OCB_VOLUME_SIZE=1M
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 120 9
    # incompressible bulk: the archive, the sealed archive and the volumes run to ~3 MB
    for n in 1 2 3; do head -c 800000 /dev/urandom >"$HOME/.openclaw/bulk-$n.bin"; done
}

teardown() {
    [ -z "${MOUNTED:-}" ] || umount "$MOUNTED" 2>/dev/null || true
    hub_clear_faults
}

# on_store local|hf: a fresh store of that kind, and a folder for the manifests of its snapshots
on_store() {
    use_store "$1"
    SNAPS="$BATS_TEST_TMPDIR/manifests-$1"
    mkdir -p "$SNAPS"
}

latest_id() { ocb-chain 2>/dev/null | jq -r '.chain.target // empty'; }

# first_backup: the previous snapshot every crash must leave intact; its manifest is kept by id
first_backup() {
    backup_ok
    PREVIOUS=$(last_id)
    manifest "$HOME/.openclaw" >"$SNAPS/$PREVIOUS"
    ARCHIVE_SIZE=$(jq .archive.size "$BATS_TEST_TMPDIR/last.json")
    STATE_BYTES=$(jq .archive.bytes "$BATS_TEST_TMPDIR/last.json")
}

# change_state: what the snapshot taken while crashing would hold
change_state() {
    head -c 700000 /dev/urandom >>"$HOME/.openclaw/bulk-2.bin"
    printf 'new\n' >"$HOME/.openclaw/dir03/new-after-first.txt"
    rm -f "$HOME/.openclaw/with space.txt"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
}

# random_below N: a random number in 1..N
random_below() { echo $(((RANDOM * 32768 + RANDOM) % $1 + 1)); }

# kill_when_written PID BYTES GLOB...: SIGKILL PID once the globs hold BYTES; then reap it
kill_when_written() {
    local pid=$1 bytes=$2 status=0
    shift 2
    "$PYTHON" "$OCB_ROOT/tests/hostile.py" kill-at "$pid" "$bytes" "$@" >/dev/null || {
        echo "pid $pid ended before $bytes bytes were written to $*" >&2; wait "$pid" || true; return 1; }
    wait "$pid" || status=$?
    [ "$status" -eq 137 ] || { echo "pid $pid: exit $status, not killed" >&2; return 1; }
}

# store_is_consistent: the latest snapshot is the previous one or a complete new one, and it
# restores exactly what was backed up
store_is_consistent() {
    local latest
    latest=$(latest_id)
    [ -n "$latest" ] || { echo "the store has no latest snapshot" >&2; return 1; }
    if [ "$latest" != "$PREVIOUS" ]; then
        echo "the new snapshot $latest landed" >&3
        cp "$BATS_TEST_TMPDIR/live" "$SNAPS/$latest"
    fi
    rm -rf "$BATS_TEST_TMPDIR/r"
    ocb-restore --to "$BATS_TEST_TMPDIR/r" >/dev/null 2>"$BATS_TEST_TMPDIR/restore.err" || {
        echo "restoring $latest failed:" >&2; cat "$BATS_TEST_TMPDIR/restore.err" >&2; return 1; }
    manifest "$BATS_TEST_TMPDIR/r/.openclaw" | diff "$SNAPS/$latest" - >&2
}

# next_backup_cleans_up: the next ocb-backup succeeds, restores exactly, and neither the work
# dir nor a local store keeps anything of the dead run
next_backup_cleans_up() {
    backup_ok
    if jq -e '.skip' "$BATS_TEST_TMPDIR/last.json" >/dev/null; then
        # the dead run had pushed and cached its snapshot: nothing is left to take
        PREVIOUS=$(latest_id)
        manifest "$HOME/.openclaw" | diff "$SNAPS/$PREVIOUS" - >&2
    else
        PREVIOUS=$(last_id)
        manifest "$HOME/.openclaw" >"$SNAPS/$PREVIOUS"
    fi
    store_is_consistent
    [ -z "$(find "$OCB_WORK_DIR" -mindepth 1 ! -name .lock)" ] || { echo "left in the work dir:" >&2; find "$OCB_WORK_DIR" >&2; return 1; }
    if [ "$OCB_TEST_STORE" = local ]; then
        [ -z "$(find "$STORE_DIR" -name '.ocb-tmp-*')" ] || { echo "temporary files left in the store" >&2; return 1; }
    fi
}

# the documents of the stages before STAGE, run for real
run_until() {
    local stage previous="" doc
    for stage in plan pack seal split push; do
        [ "$stage" = "$1" ] && return 0
        doc="$BATS_TEST_TMPDIR/$stage.json"
        if [ -z "$previous" ]; then ocb-plan >"$doc" 2>/dev/null
        # a pack that stops before ocb-seal leaves the sealing to it (with sealing on, ocb-pack
        # seals as it writes, and ocb-seal would only pass the document on)
        elif [ "$stage" = pack ] && [ "$1" = seal ]; then ocb-pack --plain <"$previous" >"$doc" 2>/dev/null
        else "ocb-$stage" <"$previous" >"$doc" 2>/dev/null; fi
        assert_doc_ok "$doc"
        previous=$doc
    done
}

input_of() {
    case $1 in pack) echo plan ;; seal) echo pack ;; split) echo seal ;; push) echo split ;; esac
}

# crash_stage STAGE BYTES GLOB...: run STAGE on its real input and kill it once GLOB holds BYTES
crash_stage() {
    local stage=$1 bytes=$2
    shift 2
    # started stopped: kill-at lets it go on only once it watches (hostile.py paces it), as an
    # unsynced stage writes its archive faster than kill-at itself starts
    (kill -STOP "$BASHPID"; exec "ocb-$stage" <"$BATS_TEST_TMPDIR/$(input_of "$stage").json" >/dev/null 2>"$BATS_TEST_TMPDIR/$stage.err") &
    kill_when_written $! "$bytes" "$@" || { echo "offset $bytes" >&2; return 1; }
}

# crash_writes STAGE SIZE PATTERN...: on both stores, kill STAGE at a random offset below what
# it will write to PATTERN (@WORK@: the work dir, @ID@: the new snapshot's id; SIZE: a jq
# expression on the stage's input document saying how much that is); then check everything
crash_writes() {
    local stage=$1 size=$2 store offset id patterns input
    shift 2
    for store in local hf; do
        on_store "$store"
        first_backup
        change_state
        run_until "$stage"
        id=$(jq -r .id "$BATS_TEST_TMPDIR/plan.json")
        input="$BATS_TEST_TMPDIR/$(input_of "$stage").json"
        offset=$(random_below "$(jq "($size) * 0.95 | floor" "$input")")
        echo "[$store] $stage killed at $offset bytes" >&3
        patterns=("${@//@ID@/$id}")
        crash_stage "$stage" "$offset" "${patterns[@]//@WORK@/$OCB_WORK_DIR}" || return 1
        store_is_consistent || { echo "[$store] after killing $stage at $offset" >&2; return 1; }
        next_backup_cleans_up || { echo "[$store] after killing $stage at $offset" >&2; return 1; }
    done
}

# bats test_tags=matrix
@test "kill -9 of ocb-plan at a random moment: the previous snapshot stays latest, the next backup succeeds" {
    for store in local hf; do
        on_store "$store"
        first_backup
        change_state
        delay=0.$(printf '%03d' $((RANDOM % 400)))
        ocb-plan >/dev/null 2>&1 &
        pid=$!
        sleep "$delay"
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" || true
        echo "[$store] plan killed after ${delay}s" >&3
        [ "$(latest_id)" = "$PREVIOUS" ]
        store_is_consistent
        next_backup_cleans_up
    done
}

# bats test_tags=matrix
@test "kill -9 of ocb-pack at a random byte of its archive: the previous snapshot stays latest, the next backup succeeds" {
    # sealing is on: ocb-pack writes the sealed archive itself
    crash_writes pack .plan.changes.bytes_to_pack "@WORK@/@ID@/@ID@.tar.zst.ocbs"
}

# bats test_tags=matrix
@test "kill -9 of ocb-seal at a random byte of the sealed archive: the previous snapshot stays latest, the next backup succeeds" {
    crash_writes seal .archive.size "@WORK@/@ID@/@ID@.tar.zst.ocbs"
}

# bats test_tags=matrix
@test "kill -9 of ocb-split at a random byte of its volumes: the previous snapshot stays latest, the next backup succeeds" {
    crash_writes split .seal.size "@WORK@/@ID@/@ID@.tar.zst.ocbs.part-*"
}

# bats test_tags=matrix
@test "kill -9 of ocb-push at a random byte moved or copied into the local store: the latest is the previous or the new snapshot, whole" {
    # the store on the work dir's filesystem (volumes renamed in), then on a tmpfs of its own
    # (volumes copied)
    for placement in moved copied; do
        on_store local
        if [ "$placement" = copied ]; then
            STORE_DIR="$BATS_TEST_TMPDIR/store-tmpfs"
            export OCB_STORE="file://$STORE_DIR"
            mkdir -p "$STORE_DIR"
            mount -t tmpfs tmpfs "$STORE_DIR" 2>/dev/null || { echo "cannot mount a tmpfs here: copy path not crashed" >&3; break; }
            MOUNTED=$STORE_DIR
        fi
        first_backup
        change_state
        run_until push
        id=$(jq -r .id "$BATS_TEST_TMPDIR/plan.json")
        offset=$(random_below "$(jq '[.volumes.files[].size] | add' "$BATS_TEST_TMPDIR/split.json")")
        echo "[$placement] push killed at $offset bytes" >&3
        crash_stage push "$offset" "$STORE_DIR/backups/*$id*" "$STORE_DIR/backups/.ocb-tmp-*" "$STORE_DIR/.ocb-tmp-*"
        store_is_consistent
        next_backup_cleans_up
    done
}

# bats test_tags=matrix
@test "kill -9 of ocb-push at a random moment of its Hub commit: the latest is the previous or the new snapshot, whole" {
    on_store hf
    first_backup
    for round in 1 2; do
        change_state
        run_until push
        # the Hub takes a second over the commit, so kills land before, during and after it
        hub_post /__hub/faults '{"route": "commit", "delay": 1.0, "times": 1}' >/dev/null
        delay=$((RANDOM % 2)).$(printf '%03d' $((RANDOM % 1000)))
        ocb-push <"$BATS_TEST_TMPDIR/split.json" >/dev/null 2>&1 &
        pid=$!
        sleep "$delay"
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" || true
        echo "[round $round] push killed after ${delay}s" >&3
        sleep 1  # a commit the Hub was still making when its client died lands now
        store_is_consistent
        next_backup_cleans_up
        hub_clear_faults
    done
}

# crash_pull STORE: an in-place restore killed at a random byte of what it downloads and stages
crash_pull() {
    on_store "$1"
    first_backup
    change_state
    # what it downloads (from the Hub only) and extracts
    if [ "$1" = hf ]; then offset=$(random_below $(((ARCHIVE_SIZE + STATE_BYTES) * 95 / 100)))
    else offset=$(random_below $((STATE_BYTES * 95 / 100))); fi
    echo "[$1] pull killed at $offset bytes" >&3
    ocb-chain >"$BATS_TEST_TMPDIR/chain.json" 2>/dev/null
    ocb-pull <"$BATS_TEST_TMPDIR/chain.json" >/dev/null 2>"$BATS_TEST_TMPDIR/pull.err" &
    kill_when_written $! "$offset" "$OCB_WORK_DIR/restore-*" "$HOME/..openclaw.ocb-staging*" \
        || { echo "[$1] offset $offset" >&2; return 1; }
    # wholly old or wholly new
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/target"
    if ! diff -q "$BATS_TEST_TMPDIR/live" "$BATS_TEST_TMPDIR/target" >/dev/null; then
        diff "$SNAPS/$PREVIOUS" "$BATS_TEST_TMPDIR/target" >&2 || { echo "[$1] the target is neither old nor new" >&2; return 1; }
    fi
    # the next restore succeeds, exactly, and sweeps what the dead one left
    run -0 --separate-stderr ocb-restore
    manifest "$HOME/.openclaw" | diff "$SNAPS/$PREVIOUS" -
    [ ! -e "$HOME/..openclaw.ocb-staging" ] && [ ! -e "$HOME/..openclaw.ocb-old" ]
    [ -z "$(find "$HOME" -maxdepth 1 -name '*.ocb-staging*' -o -maxdepth 1 -name '*.ocb-old*')" ]
    [ ! -e "$OCB_WORK_DIR/restore-journal.json" ]
    [ -z "$(find "$OCB_WORK_DIR" -mindepth 1 -maxdepth 1 -name 'restore-*')" ]
    # and the next backup too
    printf 'after\n' >"$HOME/.openclaw/after-restore.txt"
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    next_backup_cleans_up
}

# bats test_tags=matrix
@test "kill -9 of an in-place ocb-pull at a random byte on the local store: the target is wholly old or wholly new" {
    crash_pull local
}

# bats test_tags=matrix
@test "kill -9 of an in-place ocb-pull at a random byte from the Hub: the target is wholly old or wholly new" {
    crash_pull hf
}

# bats test_tags=matrix
@test "kill -9 of the whole ocb-backup pipe after random delays: every time the store stays consistent" {
    for store in local hf; do
        on_store "$store"
        first_backup
        for round in 1 2; do
            change_state
            delay=$((RANDOM % 2)).$(printf '%03d' $((RANDOM % 1000)))
            setsid ocb-backup >/dev/null 2>&1 &
            pid=$!
            sleep "$delay"
            kill -9 -- "-$pid" 2>/dev/null || true
            wait "$pid" || true
            echo "[$store] ocb-backup killed after ${delay}s" >&3
            store_is_consistent
            latest=$(latest_id)
            [ "$latest" = "$PREVIOUS" ] || PREVIOUS=$latest
        done
        next_backup_cleans_up
    done
}
