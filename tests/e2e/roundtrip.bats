#!/usr/bin/env bats
# The whole pipe on a generated state of >= 5,000 files (1,000 on the other stores, whose runs
# test what the store does with the same snapshots, not the scan again): a full snapshot and
# three incrementals, each restored by id into an empty root and compared file by file.

load test_helper

setup_file() {
    store_setup_file
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
}

@test "full plus three incrementals restore each snapshot exactly, and a flipped byte is caught" {
    state="$HOME/.openclaw"
    files=5000
    [ "${OCB_TEST_STORE:-local}" = local ] || files=1000
    "$PYTHON" "$TREE" generate "$state" "$files" 7
    mkdir -p "$HOME/.ssh" && printf 'ssh-key\n' >"$HOME/.ssh/id_ed25519" && chmod 600 "$HOME/.ssh/id_ed25519"
    chmod 700 "$HOME/.ssh"
    ln -s ../.openclaw/workspace/AGENTS.md "$HOME/.ssh/agents-link"

    backup_ok
    ids=("$(last_id)")
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = full ]
    manifest "$state" >"$BATS_TEST_TMPDIR/m0-state"
    manifest "$HOME/.ssh" >"$BATS_TEST_TMPDIR/m0-ssh"

    # 1: edits, additions, deletions, a rename, a mode change 0600 -> 0644
    nth_file() { find "$state/$1" -maxdepth 1 -type f | sort | sed -n "$2p"; }
    printf 'edited\n' >>"$(nth_file dir01 1)"
    printf 'new file\n' >"$state/dir02/added.txt"
    mkdir -p "$state/new dir/deeper" && printf 'x' >"$state/new dir/deeper/x"
    rm "$(nth_file dir03 1)" "$(nth_file dir04 2)"
    mv "$(nth_file dir05 1)" "$state/dir05/renamed.bin"
    f0600=$(find "$state" -type f -perm 0600 | head -n1)
    chmod 0644 "$f0600"
    backup_ok
    ids+=("$(last_id)")
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
    manifest "$state" >"$BATS_TEST_TMPDIR/m1-state"
    manifest "$HOME/.ssh" >"$BATS_TEST_TMPDIR/m1-ssh"

    # 2: the mode goes back, a file is replaced by a symlink, a dir by a file
    chmod 0600 "$f0600"
    swapped=$(nth_file dir06 1)
    rm "$swapped" && ln -s ../dir07 "$swapped"
    rm -r "$state/dir08" && printf 'now a file\n' >"$state/dir08"
    backup_ok
    ids+=("$(last_id)")
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
    manifest "$state" >"$BATS_TEST_TMPDIR/m2-state"
    manifest "$HOME/.ssh" >"$BATS_TEST_TMPDIR/m2-ssh"

    # 3: a symlink back to a file, a file back to a dir, and an ssh change
    rm "$swapped" && printf 'a file again\n' >"$swapped"
    rm "$state/dir08" && mkdir "$state/dir08" && printf 'inside\n' >"$state/dir08/inner.txt"
    printf 'second key\n' >"$HOME/.ssh/id_rsa" && chmod 600 "$HOME/.ssh/id_rsa"
    backup_ok
    ids+=("$(last_id)")
    [ "$(jq -r '.plan.chain | length' "$BATS_TEST_TMPDIR/last.json")" -eq 4 ]
    manifest "$state" >"$BATS_TEST_TMPDIR/m3-state"
    manifest "$HOME/.ssh" >"$BATS_TEST_TMPDIR/m3-ssh"

    for n in 0 1 2 3; do
        target="$BATS_TEST_TMPDIR/restore-$n"
        run -0 --separate-stderr ocb-restore --id "${ids[$n]}" --to "$target"
        manifest "$target/.openclaw" >"$BATS_TEST_TMPDIR/r$n-state"
        manifest "$target/.ssh" >"$BATS_TEST_TMPDIR/r$n-ssh"
        diff "$BATS_TEST_TMPDIR/m$n-state" "$BATS_TEST_TMPDIR/r$n-state"
        diff "$BATS_TEST_TMPDIR/m$n-ssh" "$BATS_TEST_TMPDIR/r$n-ssh"
    done
    [ "$(wc -l <"$BATS_TEST_TMPDIR/r0-state")" -ge "$files" ]

    # one flipped byte in a volume of the chain: exit 4 naming it, the target untouched
    store_is_inspectable || return 0
    name=$(store_volume_names | grep "^${ids[1]}\.tar\.zst" | head -n1)
    volume=$(store_file "backups/$name")
    [ -f "$volume" ]
    flip_byte "$volume" 100
    target="$BATS_TEST_TMPDIR/restore-3"
    run -4 --separate-stderr ocb-restore --to "$target"
    [[ "$stderr" == *"$name"* ]]
    manifest "$target/.openclaw" | diff "$BATS_TEST_TMPDIR/m3-state" -
}

@test "an in-place restore makes the state equal the snapshot, and the next backup is incremental" {
    state="$HOME/.openclaw"
    "$PYTHON" "$TREE" generate "$state" 300 3
    backup_ok
    manifest "$state" >"$BATS_TEST_TMPDIR/before"
    rm -r "$state/dir01" && printf 'stray\n' >"$state/stray.txt" && chmod 700 "$state/dir02"
    run -0 --separate-stderr ocb-restore
    manifest "$state" | diff "$BATS_TEST_TMPDIR/before" -
    [ ! -e "$(dirname "$state")/.openclaw.ocb-staging" ]
    [ -z "$(find "$(dirname "$state")" -maxdepth 1 -name '*.ocb-staging*' -o -maxdepth 1 -name '*.ocb-old*')" ]
    run -0 --separate-stderr ocb-backup
    jq -e '.skip.stage == "plan"' <<<"$output"
    printf 'changed\n' >>"$state/with space.txt"
    backup_ok
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
}

@test "an unchanged state gives skip, writes nothing to the store and exits 0" {
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 50 1
    backup_ok
    before=$(store_listing)
    run -0 --separate-stderr ocb-backup
    jq -e '.skip.stage == "plan" and .skip.reason != null and .push == null' <<<"$output"
    store_is_inspectable || return 0
    [ "$(store_listing)" = "$before" ]
}

@test "two containers on one store: the second lineage is a full snapshot recording diverged_from" {
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 40 2
    backup_ok
    base=$(last_id)
    home_a=$HOME cache_a=$OCB_CACHE_DIR
    # container B restores the same snapshot, then A's last backup lands after that
    export HOME="$BATS_TEST_TMPDIR/home-b" OCB_CACHE_DIR="$BATS_TEST_TMPDIR/cache-b" OCB_WORK_DIR="$BATS_TEST_TMPDIR/work-b"
    run -0 --separate-stderr ocb-restore
    export HOME=$home_a OCB_CACHE_DIR=$cache_a OCB_WORK_DIR="$BATS_TEST_TMPDIR/work"
    printf 'old container last words\n' >"$HOME/.openclaw/a-final.txt"
    sleep 1
    backup_ok
    from_a=$(last_id)
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/state-a"
    # B backs up: the store's latest is not what B descends from
    export HOME="$BATS_TEST_TMPDIR/home-b" OCB_CACHE_DIR="$BATS_TEST_TMPDIR/cache-b" OCB_WORK_DIR="$BATS_TEST_TMPDIR/work-b"
    printf 'new container work\n' >"$HOME/.openclaw/b-work.txt"
    sleep 1
    backup_ok
    jq -e --arg a "$from_a" '.plan.type == "full" and .plan.diverged_from == $a' "$BATS_TEST_TMPDIR/last.json"
    grep -q "not the one this machine descends from" "$BATS_TEST_TMPDIR/last.err"
    from_b=$(last_id)
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/state-b"
    # both lineages stay restorable by id
    run -0 --separate-stderr ocb-restore --id "$from_a" --to "$BATS_TEST_TMPDIR/ra"
    manifest "$BATS_TEST_TMPDIR/ra/.openclaw" | diff "$BATS_TEST_TMPDIR/state-a" -
    run -0 --separate-stderr ocb-restore --id "$from_b" --to "$BATS_TEST_TMPDIR/rb"
    manifest "$BATS_TEST_TMPDIR/rb/.openclaw" | diff "$BATS_TEST_TMPDIR/state-b" -
    [ "$base" != "$from_a" ]
}

@test "a sealed full plus incremental chain round-trips, and a wrong password changes nothing" {
    export OCB_PASSWORD='s3cret pass'
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 200 9
    backup_ok
    jq -e '.seal.sealed == true' "$BATS_TEST_TMPDIR/last.json"
    first=$(last_id)
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/m0"
    rm -r "$HOME/.openclaw/dir02" && printf 'added\n' >"$HOME/.openclaw/new.txt"
    backup_ok
    [ "$(jq -r .plan.type "$BATS_TEST_TMPDIR/last.json")" = incremental ]
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/m1"
    run -0 --separate-stderr ocb-restore --id "$first" --to "$BATS_TEST_TMPDIR/r0"
    manifest "$BATS_TEST_TMPDIR/r0/.openclaw" | diff "$BATS_TEST_TMPDIR/m0" -
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r1"
    manifest "$BATS_TEST_TMPDIR/r1/.openclaw" | diff "$BATS_TEST_TMPDIR/m1" -
    OCB_PASSWORD=wrong run -4 --separate-stderr ocb-restore
    [[ "$stderr" == *"wrong password"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/m1" -
}
