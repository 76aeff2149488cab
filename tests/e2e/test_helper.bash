# Shared by every .bats file: a fresh HOME, store, work dir and cache per test, bin/ first on
# PATH, and assertions on documents built on jq -e.
bats_require_minimum_version 1.5.0

OCB_ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
PYTHON="$OCB_ROOT/.venv/bin/python"
TREE="$OCB_ROOT/tests/tree.py"

ocb_setup() {
    export PATH="$OCB_ROOT/bin:$PATH"
    export HOME="$BATS_TEST_TMPDIR/home"
    export OCB_STORE="file://$BATS_TEST_TMPDIR/store"
    export OCB_WORK_DIR="$BATS_TEST_TMPDIR/work"
    export OCB_CACHE_DIR="$BATS_TEST_TMPDIR/cache"
    export OCB_LOG_FORMAT=text
    unset OCB_RESTORE_STORE OPENCLAW_RESTORE_DATASET_REPO OPENCLAW_BACKUP_DATASET_REPO OCB_STATE_DIR \
        OPENCLAW_STATE_DIR OCB_PASSWORD OCB_PASSWORD_FILE OCB_SEAL OCB_VOLUME_SIZE OCB_EXCLUDE
    mkdir -p "$HOME/.openclaw"
    STORE_DIR="$BATS_TEST_TMPDIR/store"
}

# assert_doc_ok FILE: a document without error
assert_doc_ok() {
    jq -e '(.ocb == 1) and (.error == null)' "$1" >/dev/null || {
        echo "document $1 is not ok:" >&2; cat "$1" >&2; return 1; }
}

# assert_doc_error STAGE CODE FILE: the document carries that stage's error with that code
assert_doc_error() {
    jq -e --arg stage "$1" --argjson code "$2" \
        '.error.stage == $stage and .error.code == $code and (.error.message | length > 0)' "$3" >/dev/null || {
        echo "expected error {stage: $1, code: $2} in $3:" >&2; cat "$3" >&2; return 1; }
}

# store_listing: every file of the local store with its hash, to prove a command left it alone
store_listing() {
    if [ -d "$STORE_DIR" ]; then
        (cd "$STORE_DIR" && find . -type f ! -name .ocb-store.lock -exec sha256sum {} + | sort)
    fi
}

manifest() { "$PYTHON" "$TREE" manifest "$1"; }

# backup_ok: run the whole pipe, keep the final document in $BATS_TEST_TMPDIR/last.json
backup_ok() {
    ocb-backup "$@" >"$BATS_TEST_TMPDIR/last.json" 2>"$BATS_TEST_TMPDIR/last.err" || {
        echo "backup failed ($?):" >&2; cat "$BATS_TEST_TMPDIR/last.err" >&2; return 1; }
    assert_doc_ok "$BATS_TEST_TMPDIR/last.json"
}

last_id() { jq -r .id "$BATS_TEST_TMPDIR/last.json"; }
