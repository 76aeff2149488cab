#!/bin/sh
# Start tests/hub/testhub.py in the background for bats setup_file; print "URL PID" once it listens.
#
# Usage: tests/hub/start-hub.sh DATA_DIR [testhub options: --token T --lfs-threshold N ...]
#   read -r HUB_URL HUB_PID < <(tests/hub/start-hub.sh "$BATS_FILE_TMPDIR/hub")
#   ...; kill "$HUB_PID"        # in teardown_file
# Environment:
#   PYTHON             interpreter (default: the repo's .venv/bin/python, else python3)
#   HUB_LOG            server stderr (default: DATA_DIR/testhub.log)
#   HUB_READY_TIMEOUT  seconds to wait for the ready line (default 15)
# Exit status: 0 ready, 1 the server failed to start (its log goes to stderr), 2 usage.
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 DATA_DIR [testhub options]" >&2
    exit 2
fi
data=$1
shift
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
root=$(dirname -- "$(dirname -- "$here")")
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p -- "$data"
log=${HUB_LOG:-$data/testhub.log}
ready=$(mktemp "${TMPDIR:-/tmp}/testhub-ready.XXXXXX")

# The server's stdout goes to a file and its stderr to the log, and fd 3 is closed: a background
# process holding the caller's pipes (or bats's fd 3) would make `run`, `$(...)` or bats itself
# wait for it forever.
"$PYTHON" "$here/testhub.py" --port 0 --data "$data" "$@" >"$ready" 2>>"$log" </dev/null 3>&- &
pid=$!

# Poll in small steps: the ready line appears once the port is bound, usually well under a second.
tries=$(( ${HUB_READY_TIMEOUT:-15} * 20 ))
url=
while [ "$tries" -gt 0 ]; do
    url=$(head -n 1 -- "$ready")
    case $url in
        http://*) break ;;
    esac
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    tries=$((tries - 1))
    sleep 0.05
done
rm -f -- "$ready"

case $url in
    http://*)
        echo "$url $pid"
        ;;
    *)
        kill "$pid" 2>/dev/null || true
        echo "start-hub.sh: testhub did not become ready; its log ($log):" >&2
        cat -- "$log" >&2 || true
        exit 1
        ;;
esac
