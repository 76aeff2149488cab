#!/usr/bin/env bats
# The Hub store against a test Hub as strict as huggingface.co: binary files to LFS whatever
# their size, LFS downloads redirected to a CDN on another port, the Xet token endpoints, a
# storage quota, RateLimit without Retry-After, stalled connections and late commit answers,
# whoami telling "does not exist" from "cannot see". Every test runs the transfer path users
# get: hf_xet installed, no HF_HUB_DISABLE_XET in the environment (docs/hub.md).

load test_helper

setup_file() {
    # the Hub's own LFS threshold (10 MiB): the small volumes here go to LFS for being binary
    hub_setup_file --token ocb-test-token --read-only-token ocb-read-only --orgs ocb-test
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 20 3
}

teardown() {
    hub_clear_faults
    hub_post /__hub/quota '{"namespace": "ocb-test", "bytes": null}' >/dev/null
}

repo_state() { hub_get "/__hub/repo/dataset/$HUB_REPO"; }
stats() { hub_get /__hub/stats; }
reset_stats() { hub_post /__hub/stats/reset '{}' >/dev/null; }
fault() { hub_post /__hub/faults "$1" >/dev/null; }
change() { printf '%s\n' "$1" >>"$HOME/.openclaw/with space.txt"; }

@test "with hf_xet installed and Xet not disabled, volumes go over LFS both ways and no Xet token is asked" {
    "$PYTHON" -c 'import hf_xet'
    [ -z "${HF_HUB_DISABLE_XET:-}" ]
    reset_stats
    backup_ok
    id=$(last_id)
    # a volume of a few KiB, far under the 10 MiB threshold: LFS because it is binary
    repo_state | jq -e --arg id "$id" '.files["backups/\($id).tar.zst"] | .lfs == true and .size < 1048576'
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
    stats | jq -e '.by_route.lfs_upload >= 1 and .by_route.cdn_get >= 1 and (.by_route.xet_token // 0) == 0'
}

@test "a stalled upload is retried within the budget, then exit 14; the lock is free afterwards" {
    backup_ok
    change stalled
    fault '{"route": "preupload", "delay": 600}'
    before=$(store_listing)
    # bounded: OCB_RETRY_SECONDS + OCB_HUB_TIMEOUT + the library's last backoff, far under 120 s (the stall lasts 600 s)
    OCB_RETRY_SECONDS=4 OCB_HUB_TIMEOUT=2 run -14 --separate-stderr timeout 120 ocb-backup
    [[ "$stderr" == *"retry budget"* ]]
    [ "$(store_listing)" = "$before" ]
    hub_clear_faults
    backup_ok
}

@test "a stalled download is exit 14 within the budget and the target is untouched" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/live"
    fault '{"route": "cdn_get", "delay": 600}'
    OCB_RETRY_SECONDS=4 OCB_HUB_TIMEOUT=2 run -14 --separate-stderr timeout 120 ocb-restore
    [[ "$stderr" == *"did not answer within 2s"* || "$stderr" == *"retry budget"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/live" -
}

@test "a commit that lands after the client timed out is recognised as ours: exit 0, one commit, the cache updated" {
    backup_ok
    # the Hub works on it past the client's timeout, then commits: the look-up after the
    # timeout may miss it, and the repeat then meets 412
    change late
    fault '{"route": "commit", "delay": 2.5, "times": 1}'
    reset_stats
    OCB_HUB_TIMEOUT=2 OCB_RETRY_SECONDS=20 backup_ok
    first=$(last_id)
    stats | jq -e '.commits == 1'
    repo_state | jq -e --arg id "$first" '.files["backups/\($id).meta.json"] != null'
    # the answer alone is late: the commit has landed at once
    change "late answer"
    sleep 1
    fault '{"route": "commit", "answer_delay": 3, "times": 1}'
    reset_stats
    OCB_HUB_TIMEOUT=2 OCB_RETRY_SECONDS=20 backup_ok
    stats | jq -e '.commits == 1'
    # the cache knows both: the next backup builds on the last, without a "diverged" warning
    change after
    sleep 1
    backup_ok
    jq -e '.plan.type == "incremental" and .plan.diverged_from == null' "$BATS_TEST_TMPDIR/last.json"
    run -1 grep -q diverged "$BATS_TEST_TMPDIR/last.err"
}

@test "a 429 with RateLimit and no Retry-After is waited out as it says; one past the budget is exit 14 at once" {
    backup_ok
    change rate
    fault '{"route": "commit", "status": 429, "ratelimit": 1, "times": 1, "message": "You have exceeded the rate limit for repository commits"}'
    reset_stats
    backup_ok
    stats | jq -e '.commits == 1 and .by_route.commit == 2'
    change "rate again"
    sleep 1
    before=$(store_listing)
    # the library's own upload retries would sleep 301 s: held to the budget, it gives up now
    fault '{"route": "lfs_upload", "status": 429, "ratelimit": 300, "message": "LFS upload rate limit reached"}'
    OCB_RETRY_SECONDS=5 run -14 --separate-stderr timeout 120 ocb-backup
    [[ "$stderr" == *"LFS upload rate limit reached"* ]]
    [[ "$stderr" == *"asked to wait 300s"* ]]
    [ "$(store_listing)" = "$before" ]
}

@test "a storage quota reached is exit 1 naming the quota and how to free it, nothing committed" {
    backup_ok
    change quota
    hub_post /__hub/quota '{"namespace": "ocb-test", "bytes": 1}' >/dev/null
    before=$(store_listing)
    run -1 --separate-stderr ocb-backup
    [[ "$stderr" == *"Private repository storage limit reached"* ]]
    [[ "$stderr" == *"ocb-prune"* ]]
    [[ "$stderr" != *"refused the token"* ]]
    [ "$(store_listing)" = "$before" ]
    hub_post /__hub/quota '{"namespace": "ocb-test", "bytes": null}' >/dev/null
    backup_ok
}

@test "the entries-per-folder limit is exit 1 naming the limit and ocb-prune, not a usage error" {
    backup_ok
    change folder
    fault '{"route": "commit", "status": 400, "message": "too many files per directory: a folder holds at most 10000 entries"}'
    run -1 --separate-stderr ocb-backup
    [[ "$stderr" == *"10,000 entries"* && "$stderr" == *"ocb-prune"* ]]
}

@test "a repo the token cannot see is exit 13, never an empty store; the entrypoint then follows OCB_ON_RESTORE_FAIL" {
    # another user's namespace: the Hub answers 404 whether the repo is missing or private to them
    export OCB_STORE="hf://datasets/someone-else/state"
    run -13 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    [[ "$stderr" == *"someone-else"* && "$stderr" == *"may exist and be private"* ]]
    run -13 --separate-stderr "$OCB_ROOT/entrypoint.sh" touch "$BATS_TEST_TMPDIR/app-started"
    [ ! -e "$BATS_TEST_TMPDIR/app-started" ]
    [[ "$stderr" == *"the app is not started"* ]]
    # in the token's own namespace a 404 is a repo that does not exist: a first start
    export OCB_STORE="hf://datasets/ocb-test/not-yet-$RANDOM"
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r2"
    jq -e '.skip.no_snapshot == true' <<<"$output"
}
