#!/usr/bin/env bats
# The README's walkthroughs, run as written: every command block marked <!-- tested --> runs
# in order, in a fresh home, with /opt/ocb standing for this checkout and the walkthroughs'
# Hugging Face repo on the test Hub. A block of a walkthrough without a mark fails the suite.

load test_helper

setup_file() {
    hub_setup_file --token ocb-test-token
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    # a new user's shell: no ocb settings beyond what the walkthrough sets
    unset OCB_STORE OCB_WORK_DIR OCB_CACHE_DIR HF_TOKEN
    REPO="ocb-test/readme-$BATS_TEST_NUMBER-$RANDOM"
    BLOCKS="$BATS_TEST_TMPDIR/blocks"
    "$PYTHON" - "$OCB_ROOT/README.md" "$BLOCKS" <<'EOF_PY'
import os, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
out = sys.argv[2]
os.makedirs(out)
section = text[text.index("## Walkthroughs"):text.index("\n## ", text.index("## Walkthroughs") + 3)]
walk = None
count = {}
for match in re.finditer(r"^### (\d+)\.|^(<!-- (?:tested|untested: [^>]*) -->\n)?```sh\n(.*?)^```", section, re.S | re.M):
    if match.group(1):
        walk = match.group(1)
        continue
    mark, body = match.group(2), match.group(3)
    if mark is None:
        sys.exit(f"walkthrough {walk}: a command block without <!-- tested --> or <!-- untested: why -->:\n{body}")
    if "untested" in mark:
        continue
    count[walk] = count.get(walk, 0) + 1
    with open(os.path.join(out, f"{walk}-{count[walk]}.sh"), "w", encoding="utf-8") as handle:
        handle.write(body)
EOF_PY
}

teardown() {
    hub_clear_faults
}

# run_block W-N: one block as a user's shell would run it (bash, stopping at the first failure,
# a failing command in a pipe included), the placeholders made local
run_block() {
    local saved="$BATS_TEST_TMPDIR/shell.env"
    {
        # the same shell as the blocks before: what they exported is still set
        [ ! -f "$saved" ] || echo ". '$saved'"
        sed -e "s|/opt/ocb|$OCB_ROOT|g" -e "s|hf://datasets/OWNER/openclaw-state|hf://datasets/$REPO|g" \
            -e "s|hf_YOUR_WRITE_TOKEN|ocb-test-token|g" "$BLOCKS/$1.sh"
        echo "export -p >'$saved'"
    } >"$BATS_TEST_TMPDIR/$1.run"
    (cd "$BATS_TEST_TMPDIR" && bash -eo pipefail "$BATS_TEST_TMPDIR/$1.run")
}

@test "every walkthrough command block is marked tested or says why not" {
    [ -d "$BLOCKS" ]
    for walk in 1 2 3; do [ -f "$BLOCKS/$walk-1.sh" ]; done
}

@test "walkthrough 1: the Space's entrypoint restores nothing on a first start, then restores and backs up" {
    export HF_TOKEN=ocb-test-token
    printf 'Be kind.\n' >"$HOME/.openclaw/SOUL.md"
    run -0 --separate-stderr run_block 1-1
    [[ "$stderr" == *"the store has no snapshot yet"* ]]
    [[ "$stderr" == *"entrypoint: stop: a stop needs up to 3s for the app"* ]]
    [[ "$stderr" == *"final backup done"* ]]
    [[ "$output" == *"the gateway would run here"* ]]
    rm -rf "$HOME/.openclaw" && mkdir "$HOME/.openclaw"
    run -0 --separate-stderr run_block 1-1
    [[ "$stderr" == *"entrypoint: restore: done"* ]]
    [ "$(cat "$HOME/.openclaw/SOUL.md")" = "Be kind." ]
    # sealed on the Hub: the repo holds no file name of the state
    hub_get "/__hub/repo/dataset/$REPO" | jq -e '.private == true and (.files | keys | map(select(contains("SOUL"))) | length == 0)'
}

@test "walkthrough 2: the VPS env file and what cron runs" {
    printf 'state\n' >"$HOME/.openclaw/a.txt"
    run -0 --separate-stderr run_block 2-1
    [[ "$output" == openclaw-backup-* ]]
    [ -f "$HOME/ocb-backup.log" ]
    [ "$(stat -c %a "$HOME/.env.d/openclaw-backup.env")" = 600 ]
}

@test "walkthrough 3: jq over the documents, a replayed plan, one file restored" {
    run -0 --separate-stderr run_block 3-1
    [[ "$output" == *'"backup_type": "full"'* ]]
    [[ "$output" == *$'\tfull\t'* ]]
    run -0 --separate-stderr run_block 3-2
    [[ "$output" == *'"type": "incremental"'* ]]
    [[ "$output" == *"backups/openclaw-backup-"*".meta.json"* ]]
    printf 'untouched\n' >"$HOME/.openclaw/other.txt"
    run -0 --separate-stderr run_block 3-3
    [[ "$output" == *"Be very kind."* ]]
    [ "$(cat "$HOME/.openclaw/other.txt")" = untouched ]
}
