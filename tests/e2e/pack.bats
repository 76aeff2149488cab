#!/usr/bin/env bats
# ocb-pack (and the stages after it) refuse bad documents with exit 3, naming the problem.

load test_helper

setup() {
    ocb_setup
    printf 'state\n' >"$HOME/.openclaw/a.txt"
}

@test "pack refuses empty input, non-JSON, another kind and an unknown version" {
    run -3 --separate-stderr ocb-pack </dev/null
    [[ "$stderr" == *"empty input"* ]]
    run -3 --separate-stderr ocb-pack <<<'not json {'
    [[ "$stderr" == *"not JSON"* ]]
    run -3 --separate-stderr ocb-pack <<<'[1, 2]'
    [[ "$stderr" == *"JSON list"* ]]
    run -3 --separate-stderr ocb-pack <<<'{"ocb": 1, "kind": "restore"}'
    [[ "$stderr" == *"reads a backup document"* ]]
    run -3 --separate-stderr ocb-pack <<<'{"ocb": 99, "kind": "backup"}'
    [[ "$stderr" == *"'ocb' is 99"* ]]
    run -3 --separate-stderr ocb-pack <<<'{"ocb": 1, "kind": "backup", "settings": {"work_dir": "/tmp", "cache_dir": "/tmp"}}'
    [[ "$stderr" == *"'plan'"* ]]
    [ ! -e "$OCB_WORK_DIR" ] || [ -z "$(ls -A "$OCB_WORK_DIR")" ]
}

@test "pack refuses a document whose work files are gone" {
    ocb-plan >"$BATS_TEST_TMPDIR/plan.json" 2>/dev/null
    rm -r "$OCB_WORK_DIR"
    run -3 --separate-stderr ocb-pack <"$BATS_TEST_TMPDIR/plan.json"
    [[ "$stderr" == *"is gone"* ]]
    [ ! -e "$STORE_DIR" ]
}

@test "pack refuses a plan index path outside the work dir" {
    ocb-plan 2>/dev/null | jq '.plan.index = "/etc/passwd"' >"$BATS_TEST_TMPDIR/plan.json"
    run -3 --separate-stderr ocb-pack <"$BATS_TEST_TMPDIR/plan.json"
    [[ "$stderr" == *"outside the work dir"* ]]
}

@test "pack keeps modes, symlinks, empty dirs and files, odd names" {
    s="$HOME/.openclaw"
    mkdir -p "$s/empty/deeper" && : >"$s/empty-file" && printf 'x' >"$s/line
break ü.txt" && chmod 0751 "$s/empty"
    ln -s /absolute/target "$s/abs" && ln -s ../.openclaw/a.txt "$s/rel" && ln -s nowhere "$s/dangling"
    backup_ok
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$s" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
    [ "$(readlink "$BATS_TEST_TMPDIR/r/.openclaw/dangling")" = nowhere ]
}
