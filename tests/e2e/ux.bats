#!/usr/bin/env bats
# At a terminal and in a pipe: under a pseudo-terminal (script -qc) the listing is a table and
# the long steps draw bars that are erased, leaving one summary line each; piped, stdout is
# exactly the JSON document and stderr has no bars; -q and -v; no such snapshot; the
# entrypoint's stop budget.

load test_helper

setup() {
    ocb_setup
    printf 'soul\n' >"$HOME/.openclaw/SOUL.md"
    # random, so that zstd cannot shrink it to nothing and the bars have bytes to count
    head -c 6000000 /dev/urandom >"$HOME/.openclaw/big.bin"
}

# at_terminal CMD: run CMD (a shell command line) with stdout and stderr on a pseudo-terminal;
# the terminal's output (both, with their carriage returns) lands in $output
at_terminal() {
    script -qec "$1" /dev/null
}

@test "ocb-chain --list is a table at a terminal and exactly the document in a pipe" {
    backup_ok
    printf 'more\n' >>"$HOME/.openclaw/SOUL.md"
    backup_ok
    run -0 at_terminal "ocb-chain --list 2>/dev/null"
    [[ "$output" == *"ID"*"TIME (UTC)"*"TYPE"*"FILES"*"SIZE"*"SEALED"*"CHAIN"*"LINEAGE"* ]]
    [[ "$output" == *"incremental"*"(latest, this machine)"* ]]
    [[ "$output" == *"2 snapshots in"* ]]
    [[ "$output" != *'"ocb": 1'* ]]
    # --json at a terminal, and any pipe: the document, the same bytes
    run -0 at_terminal "ocb-chain --list --json 2>/dev/null"
    tr -d '\r' <<<"$output" >"$BATS_TEST_TMPDIR/tty.json"
    ocb-chain --list >"$BATS_TEST_TMPDIR/piped.json" 2>/dev/null
    jq -e '.list.snapshots | length == 2 and .[1].backup_type == "incremental" and .[1].chain_length == 2' "$BATS_TEST_TMPDIR/piped.json"
    cmp "$BATS_TEST_TMPDIR/tty.json" "$BATS_TEST_TMPDIR/piped.json"
    "$PYTHON" -c 'import json, sys; raw = open(sys.argv[1]).read(); assert raw == json.dumps(json.loads(raw), indent=2) + "\n"' \
        "$BATS_TEST_TMPDIR/piped.json"
}

@test "at a terminal the long steps draw bars and leave one summary line each; piped, no bars" {
    export OCB_VOLUME_SIZE=2M OCB_PASSWORD=pw
    run -0 at_terminal "ocb-backup >/dev/null"
    # the bars (percent, bytes, rate) as they were drawn, on stderr
    [[ "$output" == *"ocb-pack: pack:"*"%|"* ]]
    [[ "$output" == *"ocb-split: split:"*"%|"* ]]
    # and the lines that stay (sealing on: ocb-pack seals as it writes, ocb-seal has nothing to do)
    for step in "ocb-plan: info: scan:" "ocb-pack: info: pack:" "ocb-pack: info: sealed as packed:" \
        "ocb-split: info: split:" "ocb-push: info: push:"; do
        [[ "$output" == *"$step "*" in "*"/s)"* ]] || { echo "no summary: $step" >&2; return 1; }
    done
    run -0 at_terminal "ocb-restore --to '$BATS_TEST_TMPDIR/r' >/dev/null"
    [[ "$output" == *"ocb-pull: extract:"*"%|"* ]]
    [[ "$output" == *"ocb-pull: info: fetch: "* && "$output" == *"ocb-pull: info: extract: "*" in "*"/s)"* ]]
    # no terminal: the same summary lines, no bar, no carriage return
    printf 'changed\n' >>"$HOME/.openclaw/SOUL.md"
    run -0 --separate-stderr ocb-backup
    jq -e '.push.meta' <<<"$output" >/dev/null
    [[ "$stderr" == *"ocb-pack: info: pack: "* ]]
    [[ "$stderr" != *"%|"* && "$stderr" != *$'\r'* ]]
}

@test "-q keeps stderr to warnings and errors, -v adds debug lines; both reach the stages of the wrappers" {
    run -0 --separate-stderr ocb-backup -q
    [ -z "$stderr" ]
    jq -e '.push' <<<"$output" >/dev/null
    for n in $(seq 10 31); do printf '%s\n' "$n" >"$HOME/.openclaw/new-$n.txt"; done
    # a dry run names 20 paths of a kind per root; -v all of them, as debug lines
    run -0 --separate-stderr ocb-restore --dry-run
    [ "$(grep -c 'would remove openclaw-state/new-' <<<"$stderr")" -eq 20 ]
    [[ "$stderr" == *"... and 2 more to remove in openclaw-state (-v lists them all)"* ]]
    run -0 --separate-stderr ocb-restore -v --dry-run
    [ "$(grep -c 'would remove openclaw-state/new-' <<<"$stderr")" -eq 22 ]
    [[ "$stderr" == *"ocb-pull: debug: would remove openclaw-state/new-"* ]]
    run -0 --separate-stderr ocb-restore -q --dry-run
    [ -z "$stderr" ]
    run -0 --separate-stderr ocb-chain -q --list
    [ -z "$stderr" ]
}

@test "ocb-restore --dry-run reads as a list at a terminal: per root, counts and the first 20 paths of each kind" {
    backup_ok
    for n in $(seq 1 23); do printf '%s\n' "$n" >"$HOME/.openclaw/new-$n.txt"; done
    rm "$HOME/.openclaw/SOUL.md"
    run -0 at_terminal "ocb-restore --dry-run 2>/dev/null"
    [[ "$output" == *"openclaw-state  $HOME/.openclaw"* ]]
    [[ "$output" == *"1 to add, 1 to change, 23 to remove, 0 to keep"* ]]
    [[ "$output" == *"+ SOUL.md"* && "$output" == *"- new-1.txt"* ]]
    [[ "$output" == *"- ... and 3 more"* ]]
    [ "$(grep -c -- '  - new-' <<<"$output")" -eq 20 ]
    run -0 --separate-stderr ocb-restore --dry-run
    jq -e '.pull.by_root["openclaw-state"] | .remove == 23 and (.first.remove | length) == 20 and .first.add == ["SOUL.md"]' <<<"$output"
    [ -f "$HOME/.openclaw/new-1.txt" ] && [ ! -e "$HOME/.openclaw/SOUL.md" ]
}

@test "an --id the store does not hold or an --at before the first snapshot: no such snapshot, exit 2, with the hint" {
    backup_ok
    manifest "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/before"
    run -2 --separate-stderr ocb-restore --id openclaw-backup-20000101-000000
    [[ "$stderr" == *"no such snapshot"*"ocb-chain --list"* ]]
    [[ "$stderr" != *"integrity"* ]]
    jq -e '.error.stage == "chain" and .error.code == 2' <<<"$output"
    run -2 --separate-stderr ocb-restore --at 2001-01-01T00:00:00Z
    [[ "$stderr" == *"no such snapshot"*"ocb-chain --list"* ]]
    manifest "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/before" -
}

@test "the entrypoint says at start what the stop needs, and refuses an unknown flag with its usage" {
    run -2 --separate-stderr "$OCB_ROOT/entrypoint.sh" --bogus
    [[ "$stderr" == *"unknown flag --bogus"*"usage: entrypoint.sh"* ]]
    OCB_INTERVAL=0 OCB_STOP_GRACE=60s run -0 --separate-stderr "$OCB_ROOT/entrypoint.sh" true
    [[ "$stderr" == *"a stop needs up to 18s for the app (OCB_STOP_TIMEOUT), then the final backup, within the 60s"*"42s left for the backup"* ]]
    OCB_INTERVAL=0 run -0 --separate-stderr "$OCB_ROOT/entrypoint.sh" -- true
    [[ "$stderr" == *"up to 3s for the app"*"within the 10s"* ]]
}
