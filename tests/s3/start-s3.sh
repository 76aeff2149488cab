#!/bin/sh
# Start tests/s3/s3server.py (moto behind the fault proxy) in the background for bats
# setup_file; print "URL PID" once it listens.
#
# Usage: tests/s3/start-s3.sh LOG_FILE
#   read -r S3_URL S3_PID < <(tests/s3/start-s3.sh "$BATS_FILE_TMPDIR/s3.log")
#   ...; kill "$S3_PID"        # in teardown_file
# Environment: PYTHON (default: the repo's .venv/bin/python), S3_READY_TIMEOUT (default 20 s).
# Exit status: 0 ready, 1 the server failed to start (its log goes to stderr), 2 usage.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 LOG_FILE" >&2
    exit 2
fi
log=$1
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
root=$(dirname -- "$(dirname -- "$here")")
PYTHON=${PYTHON:-$root/.venv/bin/python}
ready=$(mktemp "${TMPDIR:-/tmp}/s3server-ready.XXXXXX")
# stdout to a file, stderr to the log, fd 3 closed: see tests/hub/start-hub.sh
"$PYTHON" "$here/s3server.py" >"$ready" 2>>"$log" </dev/null 3>&- &
pid=$!
tries=$(( ${S3_READY_TIMEOUT:-20} * 20 ))
url=
while [ "$tries" -gt 0 ]; do
    url=$(head -n 1 -- "$ready")
    case $url in http://*) break ;; esac
    kill -0 "$pid" 2>/dev/null || break
    tries=$((tries - 1))
    sleep 0.05
done
rm -f -- "$ready"
case $url in
    http://*) echo "$url $pid" ;;
    *)
        kill "$pid" 2>/dev/null || true
        echo "start-s3.sh: the S3 test server did not become ready; its log ($log):" >&2
        cat -- "$log" >&2 || true
        exit 1
        ;;
esac
