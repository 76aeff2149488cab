#!/usr/bin/env bats
# The Hugging Face store against the test Hub: credentials, one commit per snapshot, rival
# writers, 429/5xx within the retry budget, dropped connections, and the request economy.

load test_helper

setup_file() {
    # binary volumes go through LFS whatever their size, as on the real Hub; whoami names the
    # token's user a member of ocb-test only
    hub_setup_file --token ocb-test-token --read-only-token ocb-read-only --lfs-threshold 4096 --orgs ocb-test
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 60 4
}

repo_state() { hub_get "/__hub/repo/dataset/$HUB_REPO"; }
commits() { repo_state | jq .commits; }
stats() { hub_get /__hub/stats; }
reset_stats() { hub_post /__hub/stats/reset '{}' >/dev/null; }
fault() { hub_post /__hub/faults "$1" >/dev/null; }

teardown() {
    hub_clear_faults
}

@test "the first backup creates a private repo with exactly one commit for the snapshot" {
    backup_ok
    repo_state | jq -e '.private == true'
    id=$(last_id)
    repo_state | jq -e --arg id "$id" '.files["latest-backup.json"] and .files["backups/\($id).meta.json"] and .files["backups/\($id).tar.zst"]'
    # the repo's initial commit, then ours
    [ "$(commits)" -eq 2 ]
    OPENCLAW_BACKUP_PRIVATE=false OCB_STORE="hf://datasets/$HUB_REPO-public" backup_ok
    hub_get "/__hub/repo/dataset/$HUB_REPO-public" | jq -e '.private == false'
}

@test "a refused token is exit 13 and a malformed repo name exit 2, each saying why" {
    HF_TOKEN=wrong-token run -13 --separate-stderr ocb-backup
    [[ "$stderr" == *"refused the token"* ]]
    backup_ok
    printf 'change\n' >>"$HOME/.openclaw/with space.txt"
    before=$(store_listing)
    HF_TOKEN=ocb-read-only run -13 --separate-stderr ocb-backup
    [[ "$stderr" == *"403"* ]]
    [ "$(store_listing)" = "$before" ]
    OCB_STORE="hf://datasets/bad..name/--x" run -2 --separate-stderr ocb-plan
    [[ "$stderr" == *"bad..name"* ]]
}

@test "an incremental backup costs one commit and at most 8 requests besides volume transfers" {
    backup_ok
    # incompressible, so the volume is over the LFS threshold and goes through the LFS path
    head -c 20000 /dev/urandom >>"$HOME/.openclaw/with space.txt"
    reset_stats
    backup_ok
    stats | jq -e '.commits == 1'
    stats | jq -e '.by_route.lfs_upload >= 1'
    other=$(stats | jq '.requests - (.by_route.lfs_upload // 0) - (.by_route.lfs_verify // 0)')
    echo "requests besides transfers: $other" >&3
    [ "$other" -le 8 ]
}

@test "restoring a chain of N snapshots costs at most N+3 requests besides transfers, reading no meta" {
    backup_ok
    for n in 1 2 3; do printf '%s\n' "$n" >>"$HOME/.openclaw/with space.txt"; sleep 1; backup_ok; done
    reset_stats
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
    volumes=$(jq '[.chain.snapshots[].volumes[]] | length' <<<"$output")
    n=$(jq '.chain.snapshots | length' <<<"$output")
    [ "$n" -eq 4 ]
    # each volume: a HEAD, a GET answered 302, the transfer from the CDN (another port)
    stats | jq -e --argjson v "$volumes" '.by_route.cdn_get == $v'
    other=$(stats | jq --argjson v "$volumes" '.requests - .by_route.cdn_get - $v')
    echo "chain of $n, $volumes volumes: $other requests besides transfers" >&3
    [ "$other" -le $((n + 3)) ]
    # the pointer and the volumes only: no .meta.json was read
    [ "$(stats | jq .by_route.resolve_get)" -eq $((volumes + 1)) ]
}

@test "a head moved by another writer makes push exit 5 and leaves nothing of ours" {
    backup_ok
    previous=$(last_id)
    printf 'change\n' >>"$HOME/.openclaw/with space.txt"
    ocb-plan 2>/dev/null | ocb-pack 2>/dev/null | ocb-seal | ocb-split >"$BATS_TEST_TMPDIR/split.json"
    hub_post /__hub/move-head "{\"repo\": \"$HUB_REPO\", \"type\": \"dataset\"}" >/dev/null
    before=$(store_listing)
    run -5 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
    [[ "$stderr" == *"re-plan"* ]]
    [ "$(store_listing)" = "$before" ]
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    jq -e --arg p "$previous" '.chain.target == $p' <<<"$output"
}

@test "a 429 with Retry-After on the commit is waited out: one commit, not two" {
    backup_ok
    printf 'change\n' >>"$HOME/.openclaw/with space.txt"
    fault '{"route": "commit", "status": 429, "retry_after": 1, "times": 2, "message": "You have exceeded the rate limit for repository commits (128 per hour)"}'
    reset_stats
    backup_ok
    stats | jq -e '.commits == 1 and .by_route.commit == 3'
}

@test "a 429 past the retry budget is exit 14 with the Hub's message, and nothing is committed" {
    backup_ok
    printf 'change\n' >>"$HOME/.openclaw/with space.txt"
    before=$(store_listing)
    fault '{"route": "commit", "status": 429, "retry_after": 1, "message": "commits rate limit reached"}'
    OCB_RETRY_SECONDS=2 run -14 --separate-stderr ocb-backup
    [[ "$stderr" == *"commits rate limit reached"* ]]
    [ "$(store_listing)" = "$before" ]
}

@test "a 500 on the commit is retried; a commit whose answer is lost is not made twice" {
    backup_ok
    printf 'one\n' >>"$HOME/.openclaw/with space.txt"
    fault '{"route": "commit", "status": 500, "times": 1}'
    reset_stats
    backup_ok
    stats | jq -e '.commits == 1'
    printf 'two\n' >>"$HOME/.openclaw/with space.txt"
    sleep 1
    fault '{"route": "commit", "drop_after_bytes": 0, "times": 1}'
    reset_stats
    backup_ok
    stats | jq -e '.commits == 1'
    repo_state | jq -e --arg id "$(last_id)" '.files["backups/\($id).meta.json"] != null'
}

@test "a push replayed after a failure does not upload the volumes again" {
    backup_ok
    printf 'change\n' >>"$HOME/.openclaw/with space.txt"
    ocb-plan 2>/dev/null | ocb-pack 2>/dev/null | ocb-seal | ocb-split >"$BATS_TEST_TMPDIR/split.json"
    fault '{"route": "commit", "status": 503}'
    OCB_RETRY_SECONDS=1 run -14 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
    hub_clear_faults
    reset_stats
    run -0 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
    stats | jq -e '.commits == 1 and .lfs_bytes == 0'
}

@test "a connection dropped mid-upload and mid-download is recovered, the restore exact" {
    fault '{"route": "lfs_upload", "drop_after_bytes": 100, "times": 1}'
    reset_stats
    backup_ok
    stats | jq -e '.faults_fired == 1 and .commits == 1'
    hub_clear_faults
    fault '{"route": "cdn_get", "drop_after_bytes": 50, "times": 1}'
    reset_stats
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    stats | jq -e '.faults_fired == 1'
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "a Hub down for good is exit 14 and the target is untouched" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    fault '{"route": "resolve", "status": 503}'
    OCB_RETRY_SECONDS=1 run -14 --separate-stderr ocb-restore
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
}

@test "slow replies only slow things down" {
    fault '{"route": "commit", "delay": 1.5, "times": 1}'
    backup_ok
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "a restore repo that does not exist falls back to the backup repo, saying so" {
    backup_ok
    OPENCLAW_RESTORE_DATASET_REPO="ocb-test/no-such-repo" run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    [[ "$stderr" == *"does not exist"* ]]
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}
