#!/usr/bin/env bats
# ocb-check on both stores: a whole store passes; a missing meta, a missing volume, a volume
# of the wrong size and (with --read-data) a flipped byte are exit 4 naming the problem.

load test_helper

TOKEN=ocb-check-token

setup_file() {
    # volumes above 4 KiB go through LFS, so the Hub records their sha256
    hub_setup_file --token "$TOKEN" --lfs-threshold 4096
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    on_store local
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 20 3
    head -c 20000 /dev/urandom >"$HOME/.openclaw/noise.bin"
}

teardown() {
    hub_clear_faults
}

on_store() {
    use_store "$1"
    export HF_TOKEN="$TOKEN"
}

# two snapshots: a full and an incremental on it; FULL and INCR hold their ids
two_snapshots() {
    backup_ok
    FULL=$(last_id)
    head -c 20000 /dev/urandom >"$HOME/.openclaw/noise.bin"
    sleep 1
    backup_ok
    INCR=$(last_id)
    jq -e '.plan.type == "incremental"' "$BATS_TEST_TMPDIR/last.json" >/dev/null
}

# hub_api PYTHON: run PYTHON with `api` (an HfApi on the test Hub) and `repo` (the test's repo)
# (another client, as a user's would be with Xet off: the test Hub has no Xet CAS)
hub_api() {
    HF_HUB_DISABLE_XET=1 "$PYTHON" -c "from huggingface_hub import HfApi
import sys
api, repo = HfApi(endpoint='$HUB_URL', token='$TOKEN'), '$HUB_REPO'
$1" "${@:2}"
}

# remove_store_file PATH: delete a file of the store (on the Hub: a commit, as another client would)
remove_store_file() {
    if [ "$OCB_TEST_STORE" = hf ]; then
        hub_api "api.delete_file(sys.argv[1], repo, repo_type='dataset')" "$1"
    else
        rm -- "$STORE_DIR/$1"
    fi
}

# put_store_file PATH SRC: replace a file of the store with SRC's bytes
put_store_file() {
    if [ "$OCB_TEST_STORE" = hf ]; then
        hub_api "api.upload_file(path_or_fileobj=sys.argv[2], path_in_repo=sys.argv[1], repo_id=repo, repo_type='dataset')" "$1" "$2"
    else
        cp -- "$2" "$STORE_DIR/$1"
    fi
}

check_fails() {
    run -4 --separate-stderr ocb-check "$@"
    assert_doc_error check 4 <(printf '%s\n' "$output")
}

@test "a whole sealed store passes the cheap check and --read-data on both stores" {
    export OCB_PASSWORD=check-secret
    for store in local hf; do
        on_store "$store"
        two_snapshots
        [ "$store" = local ] || hub_post /__hub/stats/reset '{}' >/dev/null
        run -0 --separate-stderr ocb-check
        jq -e --arg f "$FULL" --arg i "$INCR" '.kind == "check" and .check.snapshots == 2 and .check.volumes == 2
            and .check.problems == [] and .check.read_data == null and .check.restorable == [$f, $i]' <<<"$output"
        if [ "$store" = hf ]; then
            # the Hub's own sha256 of each LFS volume, compared without downloading one
            jq -e '.check.sha256_confirmed == 2' <<<"$output"
            volumes=$(jq '.check.bytes' <<<"$output")
            hub_get /__hub/stats | jq -e --argjson v "$volumes" '.downloaded_bytes < $v'
        fi
        run -0 --separate-stderr ocb-check --read-data
        jq -e --arg f "$FULL" --arg i "$INCR" '.check.read_data.snapshots == [$f, $i] and .check.problems == []' <<<"$output"
        [[ "$stderr" == *"is whole: 2 snapshots"* ]]
        run -0 --separate-stderr ocb-check --read-data-subset 50%
        jq -e '.check.read_data.snapshots | length == 1' <<<"$output"
        # a sealed snapshot cannot be read without the password: exit 2, saying so
        OCB_PASSWORD='' run -2 --separate-stderr ocb-check --read-data
        [[ "$stderr" == *"OCB_PASSWORD"* ]]
        OCB_PASSWORD=wrong run -4 --separate-stderr ocb-check --read-data
        [[ "$stderr" == *"wrong password"* ]]
    done
}

@test "a missing meta is exit 4 naming the snapshot, on both stores" {
    for store in local hf; do
        on_store "$store"
        two_snapshots
        remove_store_file "backups/$FULL.meta.json"
        check_fails
        jq -e --arg f "$FULL" '[.check.problems[] | select(.what == "meta" and .snapshot == $f)] | length == 1' <<<"$output"
        jq -e '.check.restorable == [] and (.check.problems[0].fix | length > 0)' <<<"$output"
        [[ "$stderr" == *"the meta of $FULL is missing"* ]]
        [[ "$stderr" == *"fix:"* ]]
    done
}

@test "a missing volume is exit 4 naming it and the snapshots that need it, on both stores" {
    for store in local hf; do
        on_store "$store"
        two_snapshots
        remove_store_file "backups/$FULL.tar.zst"
        check_fails
        jq -e --arg f "$FULL" '.check.problems | length == 1 and .[0].what == "volume" and .[0].snapshot == $f' <<<"$output"
        [[ "$stderr" == *"volume $FULL.tar.zst of $FULL is missing (needed by $FULL, $INCR)"* ]]
    done
}

@test "a volume of the wrong size is exit 4, on both stores" {
    for store in local hf; do
        on_store "$store"
        two_snapshots
        head -c 9000 /dev/urandom >"$BATS_TEST_TMPDIR/short.bin"
        put_store_file "backups/$INCR.tar.zst" "$BATS_TEST_TMPDIR/short.bin"
        check_fails
        jq -e --arg i "$INCR" '.check.problems | length == 1 and .[0].snapshot == $i' <<<"$output"
        jq -e --arg f "$FULL" '.check.restorable == [$f]' <<<"$output"
        [[ "$stderr" == *"volume $INCR.tar.zst of $INCR is 9000 bytes, its meta records"* ]]
    done
}

@test "a flipped byte passes the cheap check and is exit 4 with --read-data, on both stores" {
    for store in local hf; do
        on_store "$store"
        two_snapshots
        file=$(store_file "backups/$FULL.tar.zst")
        [ -f "$file" ]
        flip_byte "$file" 200
        run -0 --separate-stderr ocb-check
        check_fails --read-data
        jq -e --arg f "$FULL" --arg i "$INCR" '.check.read_data.snapshots == [$i]
            and (.check.problems | length == 1 and .[0].what == "archive" and .[0].snapshot == $f)' <<<"$output"
        [[ "$stderr" == *"$FULL.tar.zst: sha256 differs from the meta"* ]]
    done
}

@test "on the Hub, a volume replaced by other bytes of its size is found from the Hub's sha256, nothing downloaded" {
    on_store hf
    two_snapshots
    size=$(jq '.volumes.files[0].size' "$BATS_TEST_TMPDIR/last.json")
    head -c "$size" /dev/urandom >"$BATS_TEST_TMPDIR/same-size.bin"
    put_store_file "backups/$INCR.tar.zst" "$BATS_TEST_TMPDIR/same-size.bin"
    hub_post /__hub/stats/reset '{}' >/dev/null
    check_fails
    [[ "$stderr" == *"volume $INCR.tar.zst of $INCR: the store records sha256"* ]]
    hub_get /__hub/stats | jq -e --argjson v "$size" '.downloaded_bytes < $v'
}

@test "an unsealed snapshot after sealed ones is exit 4; one from before sealing began is a warning" {
    backup_ok
    OLD=$(last_id)
    export OCB_PASSWORD=check-secret
    sleep 1
    backup_ok --full
    run -0 --separate-stderr ocb-check
    jq -e --arg o "$OLD" '.check.warnings | length == 1 and .[0].what == "seal" and .[0].snapshot == $o' <<<"$output"
    printf 'x\n' >>"$HOME/.openclaw/noise.bin"
    sleep 1
    OCB_SEAL=off backup_ok
    PLANTED=$(last_id)
    check_fails
    jq -e --arg p "$PLANTED" '.check.problems | length == 1 and .[0].what == "seal" and .[0].snapshot == $p' <<<"$output"
}

@test "a bad --read-data-subset is exit 2, a store that does not exist exit 1, a damaged catalog exit 4" {
    run -2 --separate-stderr ocb-check --read-data-subset 0%
    [[ "$stderr" == *"--read-data-subset"* ]]
    run -2 --separate-stderr ocb-check --read-data --read-data-subset 5%
    run -1 --separate-stderr ocb-check
    [[ "$stderr" == *"does not exist"* ]]
    backup_ok
    flip_byte "$STORE_DIR/ocb-catalog.json" 30 1
    check_fails
    jq -e '.check.problems[0].what == "catalog" and .check.snapshots == 1' <<<"$output"
}

@test "the entrypoint runs ocb-check after a backup that starts a new chain when OCB_CHECK_EVERY=chain" {
    OCB_CHECK_EVERY=sometimes run -2 --separate-stderr "$OCB_ROOT/entrypoint.sh" true
    [[ "$stderr" == *"OCB_CHECK_EVERY=sometimes"* ]]
    export OCB_INTERVAL=1s OCB_CHECK_EVERY=chain
    run -0 --separate-stderr "$OCB_ROOT/entrypoint.sh" sh -c 'sleep 4'
    [[ "$stderr" == *"check: the backup started a new chain: checking the store (ocb-check)"* ]]
    [[ "$stderr" == *"check: the store is whole"* ]]
    OCB_CHECK_EVERY=off run -0 --separate-stderr "$OCB_ROOT/entrypoint.sh" sh -c 'sleep 3'
    [[ "$stderr" != *"ocb-check"* ]]
}
