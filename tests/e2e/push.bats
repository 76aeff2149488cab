#!/usr/bin/env bats
# ocb-push: volumes, meta and pointer published together, only onto the snapshot the plan saw;
# the cache and the work dir after it; bad documents; pass-through.

load test_helper

setup() {
    ocb_setup
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 40 6
}

# split_doc: the document ocb-push reads, in $BATS_TEST_TMPDIR/split.json
split_doc() {
    ocb-plan 2>/dev/null | ocb-pack 2>/dev/null | ocb-seal 2>/dev/null | ocb-split >"$BATS_TEST_TMPDIR/split.json" 2>/dev/null
    assert_doc_ok "$BATS_TEST_TMPDIR/split.json"
}

doc() { echo "$output" >"$BATS_TEST_TMPDIR/doc.json"; echo "$BATS_TEST_TMPDIR/doc.json"; }

@test "ocb-push --help says what it publishes and when it refuses" {
    run -0 --separate-stderr ocb-push --help
    [[ "$output" == *"Usage: "*"ocb-push"* ]]
    for word in Reads: Writes: latest-backup.json meta "re-plan" "Exit status"; do
        [[ "$output" == *"$word"* ]] || { echo "--help lacks $word" >&2; return 1; }
    done
    grep -q 'ocb-push' "$OCB_ROOT/README.md"
}

@test "push publishes the volumes, the meta and the pointer to it, caches the index and clears the run dir" {
    OCB_VOLUME_SIZE=64K split_doc
    head -c 200000 /dev/urandom >"$HOME/.openclaw/later.bin"   # after the plan: not in this snapshot
    id=$(jq -r .id "$BATS_TEST_TMPDIR/split.json")
    run_dir=$(jq -r .plan.dir "$BATS_TEST_TMPDIR/split.json")
    [ -d "$run_dir" ]
    run -0 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
    assert_doc_ok "$(doc)"
    jq -e --arg id "$id" '.push.meta == "backups/\($id).meta.json"' "$BATS_TEST_TMPDIR/doc.json"
    [[ "$stderr" == *"$id"*"is the latest"* ]]
    # the pointer names the meta, and carries it; the meta names every volume as split made it
    jq -e --arg id "$id" '.id == $id and .latest == "backups/\($id).meta.json" and .meta.id == $id' \
        "$STORE_DIR/latest-backup.json"
    jq -e --slurpfile split "$BATS_TEST_TMPDIR/split.json" '.id == $split[0].id and .backup_type == "full"
        and ([.chain[-1].volumes[] | {name, size, sha256}] == [$split[0].volumes.files[] | {name, size, sha256}])' \
        "$STORE_DIR/backups/$id.meta.json"
    # each volume in the store is byte for byte what split wrote
    while IFS=$'\t' read -r name sha; do
        [ "$(sha256sum <"$STORE_DIR/backups/$name" | cut -d' ' -f1)" = "$sha" ]
    done < <(jq -r '.volumes.files[] | [.name, .sha256] | @tsv' "$BATS_TEST_TMPDIR/split.json")
    [ ! -e "$run_dir" ]
    # the cache now holds this snapshot's index: the next plan is an incremental on it
    run -0 --separate-stderr ocb-plan
    jq -e --arg id "$id" '.plan.type == "incremental" and .plan.parent == $id' <<<"$output"
}

@test "push refuses with exit 5 when another backup landed since the plan, leaving the store as that one left it" {
    split_doc
    # another writer (its own work dir and cache) publishes first
    OCB_WORK_DIR="$BATS_TEST_TMPDIR/other-work" OCB_CACHE_DIR="$BATS_TEST_TMPDIR/other-cache" backup_ok
    before=$(store_listing)
    cp -a "$OCB_CACHE_DIR" "$BATS_TEST_TMPDIR/cache-before" 2>/dev/null || mkdir -p "$BATS_TEST_TMPDIR/cache-before"
    run -5 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
    assert_doc_error push 5 "$(doc)"
    [[ "$stderr" == *"re-plan"* ]]
    [ "$(store_listing)" = "$before" ]
    if [ -d "$OCB_CACHE_DIR" ]; then diff -r "$BATS_TEST_TMPDIR/cache-before" "$OCB_CACHE_DIR"; fi
    # a new plan, on what landed, goes through
    backup_ok
}

@test "push refuses bad documents with exit 3, naming the problem, and publishes nothing" {
    run -3 --separate-stderr ocb-push </dev/null
    [[ "$stderr" == *"empty input"* ]]
    run -3 --separate-stderr ocb-push <<<'{"ocb": 1, "kind": "restore"}'
    split_doc
    jq 'del(.volumes)' "$BATS_TEST_TMPDIR/split.json" >"$BATS_TEST_TMPDIR/bad.json"
    run -3 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/bad.json"
    [[ "$stderr" == *"volumes"* ]]
    jq '.volumes.files = []' "$BATS_TEST_TMPDIR/split.json" >"$BATS_TEST_TMPDIR/bad.json"
    run -3 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/bad.json"
    [[ "$stderr" == *"volumes"* ]]
    jq '.volumes.files[0].path = "/etc/passwd"' "$BATS_TEST_TMPDIR/split.json" >"$BATS_TEST_TMPDIR/bad.json"
    run -3 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/bad.json"
    [[ "$stderr" == *"outside the work dir"* ]]
    volume=$(jq -r '.volumes.files[0].path' "$BATS_TEST_TMPDIR/split.json")
    mv "$volume" "$volume.aside"
    run -3 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/split.json"
    [[ "$stderr" == *"$(basename "$volume")"* ]]
    [ ! -e "$STORE_DIR/latest-backup.json" ]
    [ -z "$(find "$STORE_DIR" -name '*.tar.zst*' 2>/dev/null)" ]
}

@test "push passes an error document on with its code, and a skip document with 0, the store untouched" {
    printf '%s\n' '{"ocb": 1, "kind": "backup", "error": {"stage": "split", "code": 1, "message": "disk full"}, "later": [1, 2]}' \
        >"$BATS_TEST_TMPDIR/error.json"
    run -1 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/error.json"
    diff <(jq -S . "$BATS_TEST_TMPDIR/error.json") <(jq -S . <<<"$output")
    [ ! -e "$STORE_DIR" ]
    backup_ok
    before=$(store_listing)
    ocb-plan >"$BATS_TEST_TMPDIR/skip.json" 2>/dev/null   # nothing changed since
    jq -e '.skip != null' "$BATS_TEST_TMPDIR/skip.json"
    run -0 --separate-stderr ocb-push <"$BATS_TEST_TMPDIR/skip.json"
    diff <(jq -S . "$BATS_TEST_TMPDIR/skip.json") <(jq -S . <<<"$output")
    [ "$(store_listing)" = "$before" ]
}
