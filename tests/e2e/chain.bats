#!/usr/bin/env bats
# ocb-chain: which snapshot, which chain, and the listing.

load test_helper

setup() {
    ocb_setup
    printf 'state\n' >"$HOME/.openclaw/a.txt"
}

@test "chain on an empty store says there is nothing to restore and exits 0" {
    run -0 --separate-stderr ocb-chain
    jq -e '.skip.no_snapshot == true' <<<"$output"
    run -0 --separate-stderr ocb-restore
    jq -e '.skip.no_snapshot == true' <<<"$output"
    [ "$(cat "$HOME/.openclaw/a.txt")" = state ]
}

@test "chain resolves the latest snapshot's whole chain, full first" {
    backup_ok
    first=$(last_id)
    printf 'more\n' >>"$HOME/.openclaw/a.txt"
    backup_ok
    second=$(last_id)
    run -0 --separate-stderr ocb-chain
    jq -e --arg a "$first" --arg b "$second" \
        '.chain.target == $b and ([.chain.snapshots[].id] == [$a, $b]) and .chain.snapshots[0].backup_type == "full"' <<<"$output"
}

@test "chain --list lists every snapshot and marks the latest" {
    backup_ok
    printf 'more\n' >>"$HOME/.openclaw/a.txt"
    backup_ok
    run -0 --separate-stderr ocb-chain --list
    jq -e '(.list.snapshots | length) == 2 and .list.snapshots[1].latest == true and .skip != null' <<<"$output"
}

@test "chain --at picks the newest snapshot taken at or before the time" {
    backup_ok
    first=$(last_id)
    run -0 --separate-stderr ocb-chain --at 2999-01-01T00:00:00Z
    jq -e --arg a "$first" '.chain.target == $a' <<<"$output"
    run -2 --separate-stderr ocb-chain --at 2000-01-01T00:00:00Z
    [[ "$stderr" == *"no such snapshot"*"ocb-chain --list"* ]]
    run -2 --separate-stderr ocb-chain --at yesterday
    [[ "$stderr" == *"--at"* ]]
}

@test "chain refuses an unknown or malformed id" {
    backup_ok
    run -2 --separate-stderr ocb-chain --id openclaw-backup-20000101-000000
    [[ "$stderr" == *"no such snapshot"*"ocb-chain --list"* ]]
    # a snapshot the store knows but whose meta is gone stays a broken chain
    first=$(last_id)
    printf 'more\n' >>"$HOME/.openclaw/a.txt"
    backup_ok
    rm "$STORE_DIR/backups/$first.meta.json"
    run -4 --separate-stderr ocb-chain --id "$first"
    [[ "$stderr" == *"no meta"* ]]
    run -2 --separate-stderr ocb-chain --id ../../etc/passwd
    [[ "$stderr" == *"not a snapshot id"* ]]
}

@test "chain refuses a hand-edited meta or pointer, naming it: each carries its own sha256" {
    backup_ok
    first=$(last_id)
    printf 'more\n' >>"$HOME/.openclaw/a.txt"
    backup_ok
    meta="$STORE_DIR/backups/$first.meta.json"
    jq '.chain[0].backup_type = "incremental"' "$meta" >"$meta.new" && mv "$meta.new" "$meta"
    run -4 --separate-stderr ocb-chain --id "$first"
    [[ "$stderr" == *"$first.meta.json is damaged"* ]]
    pointer="$STORE_DIR/latest-backup.json"
    jq '.meta.file_count += 1' "$pointer" >"$pointer.new" && mv "$pointer.new" "$pointer"
    run -4 --separate-stderr ocb-chain
    [[ "$stderr" == *"latest-backup.json is damaged"* ]]
}
