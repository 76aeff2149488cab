# Shared by every .bats file: a fresh HOME, store, work dir and cache per test, bin/ first on
# PATH, a cheap KDF, and assertions on documents built on jq -e.
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
    # the suite's cheap KDF: scrypt at cost 2**10 (setting OCB_SCRYPT_LOG_N alone picks scrypt),
    # a few ms a derivation where the default Argon2id (64 MiB, t=3) takes about a second; a
    # test of the default KDF unsets it (seal-store.bats)
    export OCB_SCRYPT_LOG_N=10
    # no key cache (lib/ocb/keycache.py) by default: it lives in /dev/shm, shared by every test
    # of this user, so a test would find keys other tests left; key-cache.bats gives its own
    export OCB_KEY_CACHE=off
    unset OCB_KDF OCB_ARGON2_MEMORY
    unset OCB_UNDER_LOCK OCB_RESTORE_STORE OPENCLAW_RESTORE_DATASET_REPO OPENCLAW_BACKUP_DATASET_REPO OCB_STATE_DIR \
        OPENCLAW_STATE_DIR OCB_PASSWORD OCB_PASSWORD_FILE OCB_SEAL OCB_VOLUME_SIZE OCB_EXCLUDE
    mkdir -p "$HOME/.openclaw"
    STORE_DIR="$BATS_TEST_TMPDIR/store"
    use_test_store
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
    if [ "${OCB_TEST_STORE:-local}" = hf ]; then
        hub_get "/__hub/repo/dataset/$HUB_REPO" 2>/dev/null | jq -S '{head, files}' || echo "no repo"
    elif [ "${OCB_TEST_STORE:-local}" = s3 ]; then
        s3_ctl listing "$S3_BUCKET"
    elif [ -d "$STORE_DIR" ]; then
        (cd "$STORE_DIR" && find . -type f ! -name .ocb-store.lock -exec sha256sum {} + | sort)
    fi
}

manifest() { "$PYTHON" "$TREE" manifest "$1"; }

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds; fail after SECONDS, showing
# the file named by $WAIT_FOR_LOG if there is one (e.g. the stderr of what is awaited)
wait_for() {
    local tries=$(($1 * 10))
    shift
    until "$@"; do
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            echo "timed out waiting for: $*" >&2
            if [ -f "${WAIT_FOR_LOG:-}" ]; then echo "$WAIT_FOR_LOG:" >&2; cat "$WAIT_FOR_LOG" >&2; fi
            return 1
        fi
        sleep 0.1
    done
}

# bin_with STAGE: a copy of bin/ whose STAGE (e.g. ocb-plan) is the script on stdin and whose
# other commands are the real ones; prints the copy's dir. ocb-backup and ocb-restore find
# their stages and lib/ next to themselves, so a test can hold or replace one stage.
bin_with() {
    local dir="$BATS_TEST_TMPDIR/bin-with-$1" tool
    mkdir -p "$dir/bin"
    [ -e "$dir/lib" ] || ln -s "$OCB_ROOT/lib" "$dir/lib"
    for tool in "$OCB_ROOT"/bin/*; do
        case "${tool##*/}" in
            ocb-backup | ocb-restore) cp "$tool" "$dir/bin/" ;;
            *) ln -sf "$tool" "$dir/bin/" ;;
        esac
    done
    rm -f "$dir/bin/$1"
    cat >"$dir/bin/$1"
    chmod +x "$dir/bin/$1"
    echo "$dir/bin"
}

# path_without TOOL: a dir of links to every command of /usr/bin and /bin but TOOL, for a PATH
# on which TOOL is missing; prints the dir
path_without() {
    local dir="$BATS_TEST_TMPDIR/path-without-$1" tool
    mkdir -p "$dir"
    for tool in /usr/bin/* /bin/*; do
        [ "${tool##*/}" != "$1" ] && [ ! -e "$dir/${tool##*/}" ] && ln -s "$tool" "$dir/" || true
    done
    echo "$dir"
}

# flip_byte FILE OFFSET [MASK]: xor the byte at OFFSET with MASK (default 0xff, never 0), so
# that the byte always changes, whatever it was
flip_byte() {
    "$PYTHON" - "$1" "$2" "${3:-255}" <<'EOF_PY'
import os, sys
path, offset, mask = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 0)
assert 0 < mask < 256, f"mask {mask} would not change the byte"
assert 0 <= offset < os.path.getsize(path), f"offset {offset} is outside {path}"
with open(path, "r+b") as handle:
    handle.seek(offset)
    byte = handle.read(1)[0]
    handle.seek(offset)
    handle.write(bytes([byte ^ mask]))
EOF_PY
    case $1 in  # a store file's copy (store_file on S3): the flipped bytes go back to the bucket
        "$BATS_TEST_TMPDIR/s3-mirror/"*) s3_ctl put "$S3_BUCKET" "state/${1#"$BATS_TEST_TMPDIR/s3-mirror/"}" "$1" ;;
    esac
}

# backup_ok: run the whole pipe, keep the final document in $BATS_TEST_TMPDIR/last.json
backup_ok() {
    ocb-backup "$@" >"$BATS_TEST_TMPDIR/last.json" 2>"$BATS_TEST_TMPDIR/last.err" || {
        echo "backup failed ($?):" >&2; cat "$BATS_TEST_TMPDIR/last.err" >&2; return 1; }
    assert_doc_ok "$BATS_TEST_TMPDIR/last.json"
}

last_id() { jq -r .id "$BATS_TEST_TMPDIR/last.json"; }

# --- the store under test: local folder (default), the test Hub (OCB_TEST_STORE=hf) or the S3
# test server (OCB_TEST_STORE=s3) ------
# A .bats file that runs against both calls store_setup_file in setup_file and
# store_teardown_file in teardown_file; ocb_setup then points OCB_STORE at a fresh store.
# A file whose tests all use the test Hub (or switch to it with use_store hf) calls
# hub_setup_file [testhub options] instead, and hub_clear_faults in its teardown.

# hub_start [testhub options]: start the test Hub for this file (tests/hub/start-hub.sh);
# exports HUB_URL, HUB_PID and HUB_DATA, where its repos' bytes lie
hub_start() {
    export HUB_DATA="$BATS_FILE_TMPDIR/hub"
    read -r HUB_URL HUB_PID < <("$OCB_ROOT/tests/hub/start-hub.sh" "$HUB_DATA" "$@")
    [ -n "${HUB_PID:-}" ] || { echo "the test Hub did not start" >&2; return 1; }
    export HUB_URL HUB_PID
}

store_setup_file() {
    if [ "${OCB_TEST_STORE:-local}" = hf ]; then
        # shellcheck disable=SC2086  # HUB_ARGS is a list of options
        hub_start ${HUB_ARGS:-}
    elif [ "${OCB_TEST_STORE:-local}" = s3 ]; then
        s3_start
    fi
}

# --- S3 (OCB_TEST_STORE=s3): moto's server behind the fault proxy (tests/s3/s3server.py) ------
# s3_start: start it for this file; exports S3_URL (the proxy) and S3_PID
s3_start() {
    read -r S3_URL S3_PID < <("$OCB_ROOT/tests/s3/start-s3.sh" "$BATS_FILE_TMPDIR/s3.log")
    [ -n "${S3_PID:-}" ] || { echo "the S3 test server did not start" >&2; return 1; }
    export S3_URL S3_PID
}

# s3_setup_file: the S3 server for every test of the file; its faults are the proxy's, so the
# file's tests run one at a time (as hub_setup_file)
s3_setup_file() {
    export OCB_TEST_STORE=s3 BATS_NO_PARALLELIZE_WITHIN_FILE=true
    s3_start
}

# s3_ctl COMMAND ARGS...: tests/s3/ctl.py against the test server (mkbucket, listing, get, put,
# uploads, fault JSON, clear, release, stats)
s3_ctl() { "$PYTHON" "$OCB_ROOT/tests/s3/ctl.py" "$S3_URL" "$@"; }

# hub_setup_file [testhub options]: the test Hub for every test of the file (OCB_TEST_STORE=hf).
# Its faults and counters are the Hub's, not a repo's: under bats --jobs the file's tests run
# one at a time, so that one test's injected fault or counted request is never another's.
hub_setup_file() {
    export OCB_TEST_STORE=hf HUB_ARGS="$*" BATS_NO_PARALLELIZE_WITHIN_FILE=true
    hub_start "$@"
}

store_teardown_file() {
    if [ -n "${HUB_PID:-}" ]; then kill "$HUB_PID" 2>/dev/null || true; fi
    if [ -n "${S3_PID:-}" ]; then kill "$S3_PID" 2>/dev/null || true; fi
}

# hub_clear_faults: forget the faults a test injected into the test Hub (if one runs)
hub_clear_faults() {
    [ -z "${HUB_URL:-}" ] || hub_delete /__hub/faults
}

use_test_store() {
    if [ "${OCB_TEST_STORE:-local}" = hf ]; then
        HUB_REPO="ocb-test/state-$BATS_TEST_NUMBER-$RANDOM"
        export OCB_STORE="hf://datasets/$HUB_REPO" HF_ENDPOINT="$HUB_URL" \
            HF_HUB_DISABLE_TELEMETRY=1 HF_HOME="$BATS_TEST_TMPDIR/hf-home" HF_TOKEN=ocb-test-token \
            OCB_RETRY_SECONDS=5
    elif [ "${OCB_TEST_STORE:-local}" = live ]; then
        # make test-live: the real Hub, one repo the tester owns, a fresh prefix per run
        export OCB_STORE="hf://datasets/$OCB_LIVE_REPO" OCB_PATH_PREFIX="ocb-live-${OCB_LIVE_RUN:?}"
    elif [ "${OCB_TEST_STORE:-local}" = s3 ]; then
        # a bucket of its own per test (bucket names: lower case, at most 63)
        S3_BUCKET="ocb-test-$BATS_TEST_NUMBER-$RANDOM$RANDOM"
        s3_ctl mkbucket "$S3_BUCKET"
        export OCB_STORE="s3://$S3_BUCKET/state" OCB_S3_ENDPOINT="$S3_URL" OCB_S3_REGION=us-east-1 \
            AWS_ACCESS_KEY_ID=ocb-test-key AWS_SECRET_ACCESS_KEY=ocb-test-secret AWS_EC2_METADATA_DISABLED=true \
            OCB_RETRY_SECONDS=5
        unset AWS_PROFILE AWS_SESSION_TOKEN
    elif [ "${OCB_TEST_STORE:-local}" = live-s3 ]; then
        # make test-live with AWS_* and OCB_LIVE_S3=s3://BUCKET/PREFIX: a fresh prefix per run
        export OCB_STORE="${OCB_LIVE_S3%/}/ocb-live-${OCB_LIVE_RUN:?}-$BATS_TEST_NUMBER"
    elif [ "${OCB_TEST_STORE:-local}" = live-hf-bucket ]; then
        # make test-live with OCB_LIVE_HF_BUCKET=NAMESPACE/BUCKET and the gateway's keys
        export OCB_STORE="s3://${OCB_LIVE_HF_BUCKET#*/}/ocb-live-${OCB_LIVE_RUN:?}-$BATS_TEST_NUMBER" \
            OCB_S3_PRESET="hf:${OCB_LIVE_HF_BUCKET%%/*}"
    fi
}

# store_is_inspectable: whether tests can reach the store's bytes (not on a real service)
store_is_inspectable() { case ${OCB_TEST_STORE:-local} in live*) return 1 ;; esac; }

# hub_get PATH: GET a test Hub control path, print the JSON answer
hub_get() {
    "$PYTHON" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "$HUB_URL$1"
}

# hub_post PATH JSON: POST JSON to a test Hub control path
hub_post() {
    "$PYTHON" -c 'import sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="POST", headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req).read().decode())' "$HUB_URL$1" "$2"
}

# hub_delete PATH: DELETE a test Hub control path
hub_delete() {
    "$PYTHON" -c 'import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="DELETE")).read()' "$HUB_URL$1"
}

# store_file PATH: where the bytes of a store file (e.g. backups/ID.tar.zst) lie on disk
# (on S3: a copy downloaded under $BATS_TEST_TMPDIR/s3-mirror, which flip_byte puts back)
store_file() {
    if [ "${OCB_TEST_STORE:-local}" = s3 ]; then
        mkdir -p "$(dirname "$BATS_TEST_TMPDIR/s3-mirror/$1")"
        s3_ctl get "$S3_BUCKET" "state/$1" "$BATS_TEST_TMPDIR/s3-mirror/$1" && echo "$BATS_TEST_TMPDIR/s3-mirror/$1"
    elif [ "${OCB_TEST_STORE:-local}" = hf ]; then
        sha=$(hub_get "/__hub/repo/dataset/$HUB_REPO" | jq -r --arg p "$1" '.files[$p].sha256')
        find "$HUB_DATA" -type f ! -name '*.json' -exec sha256sum {} + | awk -v s="$sha" '$1 == s {print $2; exit}'
    else
        echo "$STORE_DIR/$1"
    fi
}

# store_volume_names: the names of the store's files under backups/
store_volume_names() {
    if [ "${OCB_TEST_STORE:-local}" = s3 ]; then
        s3_ctl listing "$S3_BUCKET" state/backups/ | jq -r 'keys[] | ltrimstr("state/backups/")'
    elif [ "${OCB_TEST_STORE:-local}" = hf ]; then
        hub_get "/__hub/repo/dataset/$HUB_REPO" | jq -r '.files | keys[] | select(startswith("backups/")) | ltrimstr("backups/")'
    else
        (cd "$STORE_DIR/backups" && ls)
    fi
}

# use_store local|hf: switch the running test to a fresh store of that kind, with a work dir and
# a cache of its own, so that one test can run a case on both stores in turn (its .bats file
# starts the test Hub in setup_file, with OCB_TEST_STORE=hf)
use_store() {
    export OCB_TEST_STORE=$1 OCB_WORK_DIR="$BATS_TEST_TMPDIR/work-$1" OCB_CACHE_DIR="$BATS_TEST_TMPDIR/cache-$1"
    STORE_DIR="$BATS_TEST_TMPDIR/store-$1"
    export OCB_STORE="file://$STORE_DIR"
    use_test_store
}
