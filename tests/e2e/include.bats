#!/usr/bin/env bats
# ocb-restore --include PATTERN...: exactly the matching paths come back (file by file),
# nothing else is touched, and only the snapshots of the chain that hold them are fetched
# (counted on the test Hub).

load test_helper

setup_file() {
    hub_setup_file --token ocb-test-token
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 40 7
    mkdir -p "$HOME/.openclaw/workspace" "$HOME/.ssh"
    printf 'be kind\n' >"$HOME/.openclaw/workspace/SOUL.md"
    printf 'key one\n' >"$HOME/.ssh/id_one"
    printf 'key two\n' >"$HOME/.ssh/id_two"
    chmod 700 "$HOME/.ssh"
    chmod 600 "$HOME/.ssh"/id_*
}

teardown() {
    hub_clear_faults
}

stats() { hub_get /__hub/stats; }
reset_stats() { hub_post /__hub/stats/reset '{}' >/dev/null; }
# entries OF ONE manifest line set (path, type, mode, mtime, sha) for the given paths
lines_for() { local dir=$1; shift; manifest "$dir" | jq -c --args 'select(.path as $p | $ARGS.positional | index($p))' "$@"; }

# three snapshots: the full holds SOUL.md and the keys, the second changes with space.txt
# (home-at-second: the tree then), the third adds a file
three_snapshots() {
    backup_ok
    FULL=$(last_id)
    sleep 1
    printf 'second\n' >>"$HOME/.openclaw/with space.txt"
    backup_ok
    cp -a "$HOME" "$BATS_TEST_TMPDIR/home-at-second"
    sleep 1
    printf 'third\n' >"$HOME/.openclaw/third.txt"
    backup_ok
    THIRD=$(last_id)
}

@test "--include --to restores exactly the matching paths, fetching only the snapshots that hold them" {
    three_snapshots
    reset_stats
    run -0 --separate-stderr ocb-restore --include .openclaw/workspace/SOUL.md "$HOME/.ssh/id_*" --to "$BATS_TEST_TMPDIR/r"
    # exactly those files, their directories and nothing else
    (cd "$BATS_TEST_TMPDIR/r" && find . -type f | sort) >"$BATS_TEST_TMPDIR/got"
    printf '%s\n' ./.openclaw/workspace/SOUL.md ./.ssh/id_one ./.ssh/id_two | diff - "$BATS_TEST_TMPDIR/got"
    # file by file: content, mode, mtime as in the snapshot
    diff <(lines_for "$HOME/.openclaw" workspace/SOUL.md) <(lines_for "$BATS_TEST_TMPDIR/r/.openclaw" workspace/SOUL.md)
    diff <(lines_for "$HOME/.ssh" id_one id_two) <(lines_for "$BATS_TEST_TMPDIR/r/.ssh" id_one id_two)
    # the full (it holds them) and the target (it holds the index): two of three snapshots
    jq -e --arg f "$FULL" --arg t "$THIRD" '.pull.snapshots_fetched == [$f] and (.chain.snapshots | length) == 3' <<<"$output"
    volumes=$(jq --arg f "$FULL" --arg t "$THIRD" '[.chain.snapshots[] | select(.id == $f or .id == $t) | .volumes[]] | length' <<<"$output")
    all=$(jq '[.chain.snapshots[].volumes[]] | length' <<<"$output")
    echo "resolve_get: $(stats | jq .by_route.resolve_get) (pointer + $volumes of $all volumes)" >&3
    [ "$(stats | jq .by_route.resolve_get)" -eq $((volumes + 1)) ]
    [ "$volumes" -lt "$all" ]
    [[ "$stderr" == *"fetched 2 of the 3 snapshots"* ]]
}

@test "--include in place replaces only the matching paths and touches nothing else" {
    three_snapshots
    printf 'damaged\n' >"$HOME/.openclaw/with space.txt"
    rm "$HOME/.openclaw/workspace/SOUL.md"
    printf 'new since\n' >"$HOME/.openclaw/workspace/NEW.md"
    printf 'new key\n' >"$HOME/.ssh/id_new"
    manifest "$HOME/.ssh" >"$BATS_TEST_TMPDIR/ssh-before"
    manifest "$HOME/.openclaw" | jq -c 'select(.path != "with space.txt" and .path != "workspace/SOUL.md" and .path != "workspace" and .path != "")' >"$BATS_TEST_TMPDIR/rest-before"
    run -0 --separate-stderr ocb-restore --include '.openclaw/with space.txt' .openclaw/workspace/SOUL.md
    # the two paths are as in the snapshot, file by file
    diff <(lines_for "$BATS_TEST_TMPDIR/home-at-second/.openclaw" "with space.txt" workspace/SOUL.md) \
        <(lines_for "$HOME/.openclaw" "with space.txt" workspace/SOUL.md)
    # everything else under the root is as it was (the file made since stays), and the
    # other roots were not swapped at all
    manifest "$HOME/.openclaw" | jq -c 'select(.path != "with space.txt" and .path != "workspace/SOUL.md" and .path != "workspace" and .path != "")' |
        diff "$BATS_TEST_TMPDIR/rest-before" -
    [ "$(cat "$HOME/.openclaw/workspace/NEW.md")" = "new since" ]
    manifest "$HOME/.ssh" | diff "$BATS_TEST_TMPDIR/ssh-before" -
    jq -e '.pull.roots | keys == ["openclaw-state"]' <<<"$output"
    # this machine's base stays the last backup: the next backup sees the live changes
    run -0 --separate-stderr ocb-plan
    jq -e '.plan.type == "incremental" and .plan.changes.new >= 1' <<<"$output"
}

@test "--include that names no root, or nothing in the snapshot, is exit 2 with nothing touched" {
    backup_ok
    manifest "$HOME" >"$BATS_TEST_TMPDIR/before"
    run -2 --separate-stderr ocb-restore --include /etc/passwd
    [[ "$stderr" == *"--include /etc/passwd: under none of the roots"* ]]
    run -2 --separate-stderr ocb-restore --include '.openclaw/no-such-*'
    [[ "$stderr" == *"matches --include"* ]]
    manifest "$HOME" | diff "$BATS_TEST_TMPDIR/before" -
}

@test "--include of a large file stored as block deltas fetches its whole copy and every delta on it" {
    export OCB_DELTA_MIN=64K
    head -c 400000 /dev/urandom >"$HOME/.openclaw/big.db.bin"
    backup_ok
    FULL=$(last_id)
    sleep 1
    printf 'patched' | dd of="$HOME/.openclaw/big.db.bin" bs=1 seek=100000 conv=notrunc 2>/dev/null
    backup_ok
    DELTA=$(last_id)
    jq -e '.archive.stats.delta_files == 1' "$BATS_TEST_TMPDIR/last.json"
    sleep 1
    printf 'other\n' >"$HOME/.openclaw/other.txt"
    backup_ok
    run -0 --separate-stderr ocb-restore --include .openclaw/big.db.bin --to "$BATS_TEST_TMPDIR/r"
    jq -e --arg f "$FULL" --arg d "$DELTA" '.pull.snapshots_fetched == [$f, $d]' <<<"$output"
    cmp "$HOME/.openclaw/big.db.bin" "$BATS_TEST_TMPDIR/r/.openclaw/big.db.bin"
}
