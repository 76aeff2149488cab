#!/usr/bin/env bats
# ocb-prune: the policy's kept snapshots restore file by file and the removed ones are gone,
# in one step (one commit on the Hub, the LFS bytes it reports freed, the history squashed
# when long); a push during the prune makes it exit 5 with nothing deleted; incomplete
# knowledge is exit 1; leftovers go, legacy files stay unless --include-legacy; ocb-backup
# prunes by itself after backups that start a chain; a push that would take the Hub folder
# past 10,000 entries is refused before uploading anything.

load test_helper

setup_file() {
    hub_setup_file --lfs-threshold 8000 --page-size 1000   # listings of 10,000 files: pages of 1,000, as the Hub
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    use_store local
    printf 'first\n' >"$HOME/.openclaw/a.txt"
}

teardown() {
    hub_clear_faults
}

# snap N: change the state, back up, keep the state's manifest as m-<id> and the id as $ID
snap() {
    head -c 12000 /dev/urandom >"$HOME/.openclaw/noise-$1"   # incompressible: an LFS volume on the Hub (metas stay regular)
    printf '%s\n' "$1" >>"$HOME/.openclaw/a.txt"
    sleep 1   # ids are per second
    backup_ok "${@:2}"
    ID=$(last_id)
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/m-$ID"
}

listed() { ocb-chain --list 2>/dev/null | jq -r '.list.snapshots[].id'; }

# restores_exactly ID: ocb-restore --id ID into a fresh dir equals the state it was taken from
restores_exactly() {
    local to="$BATS_TEST_TMPDIR/restored-$1"
    ocb-restore --id "$1" --to "$to" >/dev/null 2>"$BATS_TEST_TMPDIR/restore.err" || {
        cat "$BATS_TEST_TMPDIR/restore.err" >&2; return 1; }
    manifest "$to/.openclaw" | diff "$BATS_TEST_TMPDIR/m-$1" -
}

hub_state() { hub_get "/__hub/repo/dataset/$HUB_REPO"; }

@test "ocb-prune --help says what it keeps and why, and a bad policy is exit 2" {
    run -0 ocb-prune --help
    for word in Summary: --keep-last --keep-within --dry-run --include-legacy OCB_PRUNE_EVERY OCB_SQUASH_COMMITS \
        OCB_RECLAIM OPENCLAW_BACKUP_KEEP_COUNT "chain of" "Exit status"; do
        [[ "$output" == *"$word"* ]] || { echo "help lacks $word"; return 1; }
    done
    run -2 --separate-stderr ocb-prune --keep-within 2w
    assert_doc_error prune 2 <(printf '%s\n' "$output")
    OCB_KEEP_DAILY=x run -2 --separate-stderr ocb-prune
    [[ "$stderr" == *OCB_KEEP_DAILY* ]]
    run -2 --separate-stderr ocb-prune --keep-last 0
    run -0 --separate-stderr ocb-prune   # an empty store: nothing to do
    jq -e '.skip and .prune.removed.snapshots == 0' <<<"$output"
}

@test "a prune keeps the policy's snapshots with their chains, each restores exactly, the rest is gone" {
    export OCB_FULL_EVERY=2 OCB_PRUNE_EVERY=off
    for n in 1 2 3 4 5; do snap "$n"; ids+=("$ID"); done   # full inc inc full inc
    # a dry run: the same decision, nothing changed, a table on stderr
    before=$(store_listing)
    run -0 --separate-stderr ocb-prune --keep-last 1 --dry-run
    [ "$(store_listing)" = "$before" ]
    jq -e --arg full "${ids[3]}" --arg latest "${ids[4]}" '.prune.dry_run and .prune.kept == 2
        and ([.prune.snapshots[] | select(.kept) | .id] == [$full, $latest])
        and (.prune.snapshots[] | select(.id == $full) | .why == ["chain of " + $latest])
        and .prune.removed.snapshots == 3' <<<"$output"
    [[ "$stderr" == *"${ids[0]}"*"full"*"remove"* ]]
    [[ "$stderr" == *"${ids[4]}"*"incremental"*"keep"*"last #1, latest"* ]]

    run -0 --separate-stderr ocb-prune --keep-last 1
    jq -e '.prune.removed == {"snapshots": 3, "files": 6, "bytes": .prune.removed.bytes}
        and .prune.removed.bytes > 0 and .prune.commits == 0' <<<"$output"
    [ "$(listed | tr '\n' ' ')" = "${ids[3]} ${ids[4]} " ]
    for id in "${ids[@]:0:3}"; do [ ! -e "$STORE_DIR/backups/$id.meta.json" ]; done
    restores_exactly "${ids[3]}"
    restores_exactly "${ids[4]}"
    # the next backup builds on what is left
    snap 6
    [ "$(jq -r .plan.parent "$BATS_TEST_TMPDIR/last.json")" = "${ids[4]}" ]
    restores_exactly "$ID"
}

@test "prune refuses on incomplete knowledge: a damaged catalog or pointer is exit 1, nothing deleted" {
    export OCB_PRUNE_EVERY=off OCB_FULL_EVERY=0
    snap 1
    snap 2
    before=$(store_listing)
    flip_byte "$STORE_DIR/ocb-catalog.json" 20 1
    run -1 --separate-stderr ocb-prune --keep-last 1
    [[ "$stderr" == *"incomplete knowledge"* ]] && [[ "$stderr" == *ocb-catalog.json* ]]
    flip_byte "$STORE_DIR/ocb-catalog.json" 20 1
    [ "$(store_listing)" = "$before" ]
    flip_byte "$STORE_DIR/latest-backup.json" 30 1
    run -1 --separate-stderr ocb-prune --keep-last 1
    [[ "$stderr" == *latest-backup.json* ]]
    flip_byte "$STORE_DIR/latest-backup.json" 30 1
    rm "$STORE_DIR/ocb-catalog.json"
    run -1 --separate-stderr ocb-prune --keep-last 1
    [[ "$stderr" == *"no catalog"* ]]
}

@test "leftovers of interrupted pushes are removed, legacy files only with --include-legacy" {
    export OCB_PRUNE_EVERY=off
    snap 1
    b=$STORE_DIR/backups
    printf 'orphan' >"$b/openclaw-backup-20250101-000000.tar.zst"             # a volume with no meta
    cp "$b/$ID.meta.json" "$b/openclaw-backup-20250102-000000.meta.json"     # a meta whose volumes are missing
    for f in openclaw-backup-20240101-000000.tar.gz.enc.part-aa openclaw-backup-20240101-000000.tar.gz.enc.meta.json \
        openclaw-backup-20240101-000000.tar.gz.checkpoint.json other-notes.txt; do printf 'legacy' >"$b/$f"; done
    run -0 --separate-stderr ocb-prune
    jq -e '(.prune.leftovers | sort) == ["openclaw-backup-20250101-000000.tar.zst", "openclaw-backup-20250102-000000.meta.json"]
        and .prune.legacy == {"files": 3, "removed": false} and .prune.removed.files == 2' <<<"$output"
    [[ "$stderr" == *"--include-legacy"* ]]
    [ -e "$b/openclaw-backup-20240101-000000.tar.gz.enc.part-aa" ] && [ -e "$b/other-notes.txt" ]
    [ ! -e "$b/openclaw-backup-20250101-000000.tar.zst" ]
    run -0 --separate-stderr ocb-prune --include-legacy
    jq -e '.prune.legacy == {"files": 3, "removed": true} and .prune.removed.files == 3' <<<"$output"
    [ "$(cd "$b" && ls | tr '\n' ' ')" = "$ID.meta.json $ID.tar.zst other-notes.txt " ]
    restores_exactly "$ID"
}

@test "ocb-backup prunes by itself after each backup that starts a chain, never after a failed one" {
    export OCB_FULL_EVERY=1 OCB_KEEP_LAST=1
    snap 1   # full: a prune, nothing to remove
    jq -e '.prune.due and .prune.removed.snapshots == 0' "$BATS_TEST_TMPDIR/last.json"
    snap 2   # incremental: no prune
    jq -e '.prune == null' "$BATS_TEST_TMPDIR/last.json"
    [ "$(listed | wc -l)" -eq 2 ]
    snap 3   # full: the first chain goes
    jq -e '.prune.due and .prune.removed.snapshots == 2 and .prune.policy == "last 1"' "$BATS_TEST_TMPDIR/last.json"
    [ "$(listed)" = "$ID" ]
    # a backup that fails: no prune section, its code
    printf 'x\n' >>"$HOME/.openclaw/a.txt"
    OCB_VOLUME_SIZE=1X run -2 --separate-stderr ocb-backup
    jq -e '.prune == null and .error.stage == "plan"' <<<"$output"
    # every 2nd backup (by publish number), or never
    OCB_PRUNE_EVERY=2 snap 4
    jq -e '.prune.due and .prune.reason == "backup number 4, OCB_PRUNE_EVERY=2"' "$BATS_TEST_TMPDIR/last.json"
    [ "$(listed | wc -l)" -eq 2 ]   # 4 and the full 3 it builds on
    OCB_PRUNE_EVERY=off snap 5 --full
    jq -e '.prune == null' "$BATS_TEST_TMPDIR/last.json"
    [ "$(listed | wc -l)" -eq 3 ]
}

@test "on the test Hub a prune is one commit, frees the LFS bytes it reports, squashes a long history" {
    use_store hf
    export OCB_FULL_EVERY=1 OCB_PRUNE_EVERY=off OCB_SQUASH_COMMITS=3
    for n in 1 2 3 4; do snap "$n"; ids+=("$ID"); done   # full inc full inc
    lfs_before=$(hub_state | jq .lfs_size)
    hub_post /__hub/stats/reset '{}' >/dev/null
    run -0 --separate-stderr ocb-prune --keep-last 1
    jq -e '.prune.removed.snapshots == 2 and .prune.removed.files == 4 and .prune.commits == 1
        and .prune.reclaimed.objects == 2 and .prune.reclaimed.bytes > 0 and .prune.commits_squashed >= 5' <<<"$output"
    reclaimed=$(jq .prune.reclaimed.bytes <<<"$output")
    [ "$(hub_state | jq .lfs_size)" -eq $((lfs_before - reclaimed)) ]
    hub_get /__hub/stats | jq -e '.commits == 1 and .by_route.squash == 1'
    hub_state | jq -e '.commits == 1'
    [ "$(listed | tr '\n' ' ')" = "${ids[2]} ${ids[3]} " ]
    restores_exactly "${ids[2]}"
    restores_exactly "${ids[3]}"
    # with OCB_RECLAIM=off: the commit only
    snap 5
    hub_post /__hub/stats/reset '{}' >/dev/null
    OCB_RECLAIM=off run -0 --separate-stderr ocb-prune --keep-last 1
    jq -e '.prune.removed.snapshots == 2 and .prune.reclaimed.bytes == 0 and .prune.commits_squashed == 0' <<<"$output"
    hub_get /__hub/stats | jq -e '(.by_route.lfs_files // 0) == 0 and (.by_route.squash // 0) == 0'
    restores_exactly "$ID"
}

@test "a commit that lands while a prune runs on the test Hub makes it exit 5 with nothing deleted" {
    use_store hf
    export OCB_FULL_EVERY=0 OCB_PRUNE_EVERY=off
    snap 1
    snap 2
    # the prune looks up what it deletes, slowly; meanwhile another writer commits (the test
    # Hub's move-head: what a push that lands then does to the branch)
    hub_post /__hub/faults '{"route": "paths_info", "delay": 4, "times": 1}' >/dev/null
    ocb-prune --keep-last 1 >"$BATS_TEST_TMPDIR/prune.json" 2>"$BATS_TEST_TMPDIR/prune.err" &
    pruner=$!
    WAIT_FOR_LOG="$BATS_TEST_TMPDIR/prune.err" wait_for 60 \
        eval 'hub_get /__hub/faults | jq -e ".rules[0].fired == 1" >/dev/null'
    hub_post /__hub/move-head "{\"repo\": \"$HUB_REPO\"}" >/dev/null
    before=$(hub_state | jq -S '.files')
    code=0
    wait "$pruner" || code=$?
    [ "$code" -eq 5 ] || { cat "$BATS_TEST_TMPDIR/prune.err"; return 1; }
    assert_doc_error prune 5 "$BATS_TEST_TMPDIR/prune.json"
    [ "$(hub_state | jq -S '.files')" = "$before" ]
    [ "$(listed | wc -l)" -eq 2 ]
    # run again: it prunes on the new head, and the next backup builds on what is left
    run -0 --separate-stderr ocb-prune --keep-last 1
    [ "$(listed)" = "$ID" ]
    snap 3
    restores_exactly "$ID"
}

@test "a push that would take the Hub folder past 10,000 entries is refused before uploading anything" {
    use_store hf
    export OCB_PRUNE_EVERY=off
    snap 1
    # fill backups/ to 9,999 entries with one commit of empty files, as a crowded store would be
    "$PYTHON" - "$HUB_URL" "$HUB_REPO" 9997 <<'EOF_PY'
import json, sys, urllib.request
url, repo, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = [{"key": "header", "value": {"summary": "crowd"}}] + [
    {"key": "file", "value": {"path": f"backups/filler-{n:05d}", "content": "", "encoding": "base64"}} for n in range(count)]
request = urllib.request.Request(f"{url}/api/datasets/{repo}/commit/main", method="POST",
                                 data="\n".join(map(json.dumps, lines)).encode(),
                                 headers={"Authorization": "Bearer ocb-test-token", "Content-Type": "application/x-ndjson"})
assert urllib.request.urlopen(request, timeout=120).status == 200
EOF_PY
    [ "$(hub_state | jq '[.files | keys[] | select(startswith("backups/"))] | length')" -eq 9999 ]
    hub_post /__hub/stats/reset '{}' >/dev/null
    printf 'more\n' >>"$HOME/.openclaw/a.txt"
    run -1 --separate-stderr ocb-backup
    [[ "$stderr" == *"10001 entries"* ]] && [[ "$stderr" == *"10000"* ]] && [[ "$stderr" == *ocb-prune* ]]
    assert_doc_error push 1 <(printf '%s\n' "$output")
    hub_get /__hub/stats | jq -e '.commits == 0 and .lfs_bytes == 0'
    # the Hub itself answers 400 past the limit
    run -0 "$PYTHON" -c 'import sys, urllib.request, urllib.error
body = "\n".join(["{\"key\": \"header\", \"value\": {\"summary\": \"x\"}}",
                  "{\"key\": \"file\", \"value\": {\"path\": \"backups/a\", \"content\": \"\", \"encoding\": \"base64\"}}",
                  "{\"key\": \"file\", \"value\": {\"path\": \"backups/b\", \"content\": \"\", \"encoding\": \"base64\"}}"])
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=body.encode(), method="POST",
                           headers={"Authorization": "Bearer t", "Content-Type": "application/x-ndjson"}))
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())' "$HUB_URL/api/datasets/$HUB_REPO/commit/main"
    [[ "$output" == "400 "*"at most 10000 entries"* ]]
}
