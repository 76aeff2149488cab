#!/usr/bin/env bats
# The s3:// store end to end, against moto's S3 server behind the fault proxy
# (tests/s3/s3server.py): writers racing, a push killed mid-volume, a flipped byte, a SlowDown
# storm, an endpoint that ignores conditional writes, a missing bucket. The round trip itself
# runs as roundtrip.bats with OCB_TEST_STORE=s3 (tests/run-all.sh).

load test_helper

setup_file() {
    s3_setup_file
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 30 4
}

teardown() {
    s3_ctl clear
}

pointer_id() {
    s3_ctl get "$S3_BUCKET" state/latest-backup.json "$BATS_TEST_TMPDIR/pointer.json" && jq -r .id "$BATS_TEST_TMPDIR/pointer.json"
}

# split_doc NAME: run the pipe up to ocb-split into $BATS_TEST_TMPDIR/NAME.json
split_doc() {
    ocb-plan | ocb-pack | ocb-seal | ocb-split >"$BATS_TEST_TMPDIR/$1.json" 2>"$BATS_TEST_TMPDIR/$1.err"
    assert_doc_ok "$BATS_TEST_TMPDIR/$1.json"
}

held() { [ "$(s3_ctl stats | jq .held)" -ge 1 ]; }

@test "two writers planned on one head: one wins at the conditional write, the other exits 5 and leaves nothing" {
    backup_ok
    base=$(last_id)
    printf 'a\n' >"$HOME/.openclaw/a.txt"
    split_doc a
    sleep 1 # another second, another id
    printf 'b\n' >"$HOME/.openclaw/b.txt"
    export OCB_WORK_DIR="$BATS_TEST_TMPDIR/work-b"
    split_doc b
    a_id=$(jq -r .id "$BATS_TEST_TMPDIR/a.json") b_id=$(jq -r .id "$BATS_TEST_TMPDIR/b.json")
    # b passes its head check, then the proxy holds its volume while a publishes whole
    s3_ctl fault "{\"hold\": true, \"method\": \"PUT\", \"match\": \"$b_id.tar\", \"times\": 1}"
    ocb-push <"$BATS_TEST_TMPDIR/b.json" >"$BATS_TEST_TMPDIR/b-out.json" 2>"$BATS_TEST_TMPDIR/b-push.err" &
    b_pid=$!
    WAIT_FOR_LOG="$BATS_TEST_TMPDIR/b-push.err" wait_for 30 held
    run -0 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/a.json"
    listing=$(store_listing)
    s3_ctl release
    status=0
    wait "$b_pid" || status=$?
    [ "$status" -eq 5 ]
    assert_doc_error push 5 "$BATS_TEST_TMPDIR/b-out.json"
    [ "$(store_listing)" = "$listing" ]
    [[ "$listing" != *"$b_id"* ]] && [[ "$listing" == *"$a_id.meta.json"* ]]
    [ "$(pointer_id)" = "$a_id" ]
    s3_ctl get "$S3_BUCKET" state/ocb-catalog.json "$BATS_TEST_TMPDIR/catalog.json"
    [ "$(jq -r '.snapshots | map(.id) | join(" ")' "$BATS_TEST_TMPDIR/catalog.json")" = "$base $a_id" ]
}

@test "kill -9 in the middle of a multipart volume: the previous snapshot stays the latest, the upload is left to abort" {
    backup_ok
    before=$(last_id)
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/m0"
    head -c $((11 * 1024 * 1024)) /dev/urandom >"$HOME/.openclaw/big.bin" # three parts of 5 MiB
    export OCB_S3_PART_SIZE=5M
    split_doc next
    s3_ctl fault '{"hold": true, "method": "PUT", "match": "partNumber=2", "times": 1}'
    ocb-push <"$BATS_TEST_TMPDIR/next.json" >/dev/null 2>"$BATS_TEST_TMPDIR/push.err" &
    pid=$!
    WAIT_FOR_LOG="$BATS_TEST_TMPDIR/push.err" wait_for 30 held
    kill -9 "$pid"
    wait "$pid" || true
    s3_ctl release
    [ "$(pointer_id)" = "$before" ]
    [ "$(s3_ctl uploads "$S3_BUCKET")" = "state/backups/$(jq -r .id "$BATS_TEST_TMPDIR/next.json").tar.zst" ]
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$BATS_TEST_TMPDIR/r/.openclaw" | diff "$BATS_TEST_TMPDIR/m0" -
    # what ocb-prune calls after its removal (with a cutoff of 24 h ago there; now here): the
    # unfinished upload is found and aborted, its parts freed
    run -0 "$PYTHON" -c 'import datetime as dt, json, sys; sys.path.insert(0, sys.argv[1])
from ocb import config; from ocb.stores import open_store
env = config.load_environment(); settings = config.resolve_settings(env, "backup")
store = open_store(config.resolve_store(env, None), settings, config.store_secrets(env))
print(json.dumps(store.reclaim([], dt.datetime.now(dt.timezone.utc))))' "$OCB_ROOT/lib"
    jq -e '.objects_reclaimed == 1 and .bytes_reclaimed >= 5242880' <<<"$output"
    [ -z "$(s3_ctl uploads "$S3_BUCKET")" ]
    # and the next backup goes through whole
    backup_ok
    [ "$(pointer_id)" = "$(last_id)" ]
}

@test "ocb-prune on S3 removes the snapshots the policy drops in one step, their objects gone at once, the kept one restores" {
    backup_ok --full
    first=$(last_id)
    echo "second" >"$HOME/.openclaw/second.txt"
    backup_ok --full
    second=$(last_id)
    echo "third" >"$HOME/.openclaw/third.txt"
    backup_ok --full
    third=$(last_id)
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/m3"
    run -0 --separate-stderr ocb-prune --keep-last 1
    jq -e '.prune.removed.snapshots == 2 and .prune.removed.files >= 4 and .prune.kept == 1' <<<"$output"
    listing=$(s3_ctl listing "$S3_BUCKET" state/)
    [[ "$listing" != *"$first"* && "$listing" != *"$second"* && "$listing" == *"$third.meta.json"* ]]
    run -0 --separate-stderr ocb-chain --list --json
    jq -e --arg id "$third" '[.list.snapshots[].id] == [$id]' <<<"$output"
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$BATS_TEST_TMPDIR/r/.openclaw" | diff "$BATS_TEST_TMPDIR/m3" -
}

@test "a flipped byte in a volume in the bucket is exit 4 naming it, the target untouched" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/m0"
    name=$(store_volume_names | grep "^$(last_id)\.tar\.zst" | head -n1)
    flip_byte "$(store_file "backups/$name")" 50
    run -4 --separate-stderr ocb-restore
    [[ "$stderr" == *"$name"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/m0" -
}

@test "a 503 SlowDown storm is waited out within OCB_RETRY_SECONDS, then exit 14 and the store unchanged" {
    backup_ok
    before=$(store_listing)
    printf 'more\n' >"$HOME/.openclaw/more.txt"
    s3_ctl fault '{"status": 503, "code": "SlowDown", "method": "PUT", "times": -1, "message": "Please reduce your request rate."}'
    OCB_RETRY_SECONDS=3 run -14 --separate-stderr ocb-backup
    assert_doc_error push 14 <(echo "$output")
    [[ "$stderr" == *"503 SlowDown past the retry budget of 3s"* ]]
    [ "$(s3_ctl stats | jq .faulted)" -le 4 ] # 1 s, then 2 s: bounded, then given up
    [ "$(store_listing)" = "$before" ]
    # a short storm is waited out
    s3_ctl clear
    s3_ctl fault '{"status": 503, "code": "SlowDown", "method": "PUT", "times": 2}'
    backup_ok
    [ "$(pointer_id)" = "$(last_id)" ]
}

@test "an endpoint that ignores conditional writes is found once, said, recorded, and a backup still lands" {
    s3_ctl fault '{"strip_conditional": true}'
    backup_ok
    grep -q "does not honour conditional writes" "$BATS_TEST_TMPDIR/last.err"
    jq -e 'to_entries | .[0].value.honoured == false' "$OCB_CACHE_DIR/s3-conditional-writes.json"
    jq -e '.push.stats.conditional_writes == false' "$BATS_TEST_TMPDIR/last.json"
    [ "$(pointer_id)" = "$(last_id)" ]
    [ -z "$(store_volume_names | grep -v "^openclaw-backup-")" ] # the probe object is gone
}

@test "a bucket that does not exist is its own clear error, and no key or secret is printed" {
    export OCB_STORE="s3://ocb-no-such-bucket/state"
    run -1 --separate-stderr ocb-backup
    assert_doc_error push 1 <(echo "$output")
    [[ "$stderr" == *"the bucket ocb-no-such-bucket does not exist"*"create it first"* ]]
    [[ "$output$stderr" != *"$AWS_SECRET_ACCESS_KEY"* ]]
}
