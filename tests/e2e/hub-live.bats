#!/usr/bin/env bats
# The Hub store against huggingface.co itself (make test-live: HF_TOKEN and OCB_LIVE_REPO set):
# what the test Hub imitates, checked on the real one. Skipped in the ordinary suite.

load test_helper

setup() {
    [ "${OCB_TEST_STORE:-}" = live ] || skip "the real Hub: make test-live"
    ocb_setup
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 10 2
}

@test "a backup and a restore over LFS with short timeouts, the library's Xet left installed" {
    "$PYTHON" -c 'import hf_xet'
    OCB_HUB_TIMEOUT=30 backup_ok
    OCB_HUB_TIMEOUT=30 run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    manifest "$HOME/.openclaw" | diff - <(manifest "$BATS_TEST_TMPDIR/r/.openclaw")
}

@test "a repo missing from the token's own namespace is a first start; one in a namespace it cannot see is exit 13" {
    owner=${OCB_LIVE_REPO%%/*}
    OCB_STORE="hf://datasets/$owner/ocb-no-such-repo-$OCB_LIVE_RUN" run -0 --separate-stderr ocb-chain
    jq -e '.skip.no_snapshot == true' <<<"$output"
    OCB_STORE="hf://datasets/huggingface/ocb-no-such-repo-$OCB_LIVE_RUN" run -13 --separate-stderr ocb-chain
    [[ "$stderr" == *"may exist and be private"* ]]
}
