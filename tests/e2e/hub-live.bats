#!/usr/bin/env bats
# The Hub store against huggingface.co itself (make test-live: HF_TOKEN and OCB_LIVE_REPO set):
# a push and a restore, a prune that removes snapshots in one commit, deletes their LFS objects
# for good and squashes the history (the reclaim), the restores of what it kept, and "does not
# exist" told from "cannot see". Skipped in the ordinary suite; the same tests run against the
# test Hub with OCB_TEST_STORE=hf (`OCB_TEST_STORE=hf .venv/bin/bats tests/e2e/hub-live.bats`),
# so that what runs on the real Hub has run here first. Everything it reads back from the Hub
# (LFS objects, commits, files) it reads with huggingface_hub, as it would read any Hub.

load test_helper

setup_file() {
    if [ "${OCB_TEST_STORE:-}" = hf ]; then
        hub_setup_file --token ocb-test-token --orgs ocb-test
    fi
}

teardown_file() {
    store_teardown_file
}

setup() {
    case ${OCB_TEST_STORE:-} in
        live | hf) ;;
        *) skip "the real Hub: make test-live (OCB_TEST_STORE=hf runs it against the test Hub)" ;;
    esac
    ocb_setup
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 10 2
    RUN=${OCB_LIVE_RUN:-$BATS_ROOT_PID}
    if [ "$OCB_TEST_STORE" = live ]; then OWNER=${OCB_LIVE_REPO%%/*}; else OWNER=ocb-test; fi
    OWN_REPO=
}

teardown() {
    # a repo a test made for itself goes again (on the real Hub: nothing left behind)
    if [ -n "${OWN_REPO:-}" ]; then hub_api delete "$OWN_REPO" || true; fi
}

# hub_api facts|delete REPO: what huggingface_hub sees of a dataset repo (its LFS objects, with
# their total size, its commits and files, as JSON), or the repo deleted
hub_api() {
    "$PYTHON" - "$@" <<'EOF_PY'
import json, sys
from huggingface_hub import HfApi
action, repo = sys.argv[1], sys.argv[2]
api = HfApi()
if action == "delete":
    api.delete_repo(repo, repo_type="dataset", missing_ok=True)
else:
    lfs = list(api.list_lfs_files(repo, repo_type="dataset"))
    print(json.dumps({"lfs_objects": sorted(f.file_oid for f in lfs), "lfs_bytes": sum(f.size for f in lfs),
                      "commits": len(api.list_repo_commits(repo, repo_type="dataset")),
                      "files": sorted(api.list_repo_files(repo, repo_type="dataset"))}))
EOF_PY
}

# snap N: change the state, back up, keep the state's manifest as m-<id> and the id as $ID
snap() {
    head -c 12000 /dev/urandom >"$HOME/.openclaw/noise-$1"   # incompressible: an LFS volume
    printf '%s\n' "$1" >>"$HOME/.openclaw/with space.txt"
    sleep 1   # ids are per second
    OCB_HUB_TIMEOUT=30 backup_ok
    ID=$(last_id)
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/m-$ID"
}

# restores_exactly ID: ocb-restore --id ID into a fresh dir equals the state it was taken from
restores_exactly() {
    local to="$BATS_TEST_TMPDIR/restored-$1"
    OCB_HUB_TIMEOUT=30 ocb-restore --id "$1" --to "$to" >/dev/null 2>"$BATS_TEST_TMPDIR/restore.err" || {
        cat "$BATS_TEST_TMPDIR/restore.err" >&2; return 1; }
    manifest "$to/.openclaw" | diff "$BATS_TEST_TMPDIR/m-$1" -
}

@test "a backup and a restore over LFS with short timeouts, the library's Xet left installed" {
    "$PYTHON" -c 'import hf_xet'
    OCB_HUB_TIMEOUT=30 backup_ok
    OCB_HUB_TIMEOUT=30 run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "a prune removes snapshots in one commit, deletes their LFS objects for good, squashes the history; what it kept restores exactly" {
    # a repo of its own, made by the first backup and deleted afterwards: the pointer and the
    # catalog sit at a repo's root, so a prune in a shared repo would judge other runs' snapshots
    OWN_REPO="$OWNER/ocb-live-prune-$RUN"
    export OCB_STORE="hf://datasets/$OWN_REPO" OCB_FULL_EVERY=1 OCB_PRUNE_EVERY=off OCB_SQUASH_COMMITS=3
    unset OCB_PATH_PREFIX
    hub_api delete "$OWN_REPO"
    for n in 1 2 3 4; do snap "$n"; ids+=("$ID"); done   # full inc full inc
    before=$(hub_api facts "$OWN_REPO")
    jq -e '(.lfs_objects | length) == 4 and .commits >= 5' <<<"$before"
    OCB_HUB_TIMEOUT=30 run -0 --separate-stderr ocb-prune --keep-last 1
    pruned=$output
    jq -e '.prune.removed.snapshots == 2 and .prune.removed.files == 4 and .prune.commits == 1
        and .prune.reclaimed.objects == 2 and .prune.reclaimed.bytes > 0 and .prune.commits_squashed >= 5' <<<"$pruned"
    # what the Hub itself now says: two LFS objects fewer by the bytes the prune reported, one
    # commit, the first chain's files gone (the Hub may take a moment to list deletions)
    settled() {
        hub_api facts "$OWN_REPO" | jq -e --argjson b "$before" --argjson p "$pruned" '(.lfs_objects | length) == 2
            and .lfs_bytes == $b.lfs_bytes - $p.prune.reclaimed.bytes and .commits == 1' >/dev/null
    }
    wait_for 120 settled
    after=$(hub_api facts "$OWN_REPO")
    for id in "${ids[@]:0:2}"; do
        jq -e --arg id "$id" 'all(.files[]; contains($id) | not)' <<<"$after"
    done
    ocb-chain --list 2>/dev/null | jq -e --arg a "${ids[2]}" --arg b "${ids[3]}" '[.list.snapshots[].id] == [$a, $b]'
    restores_exactly "${ids[2]}"
    restores_exactly "${ids[3]}"
    # the next backup (a full one: OCB_FULL_EVERY=1) follows the pruned and squashed head, on
    # the same lineage, and restores too
    snap 5
    jq -e --arg id "${ids[3]}" '.plan.base_snapshot == $id and .plan.diverged_from == null' "$BATS_TEST_TMPDIR/last.json"
    [[ "$(cat "$BATS_TEST_TMPDIR/last.err")" != *diverged* ]]
    restores_exactly "$ID"
}

@test "a repo missing from the token's own namespace is a first start; one in a namespace it cannot see is exit 13" {
    OCB_STORE="hf://datasets/$OWNER/ocb-no-such-repo-$RUN" run -0 --separate-stderr ocb-chain
    jq -e '.skip.no_snapshot == true' <<<"$output"
    OCB_STORE="hf://datasets/huggingface/ocb-no-such-repo-$RUN" run -13 --separate-stderr ocb-chain
    [[ "$stderr" == *"may exist and be private"* ]]
}
