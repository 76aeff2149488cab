#!/bin/sh
# Summary: restore the agent's state, then run the app (first version: the full supervisor,
# with periodic and final backups, is its own issue).
#
# Usage: entrypoint.sh CMD [ARGS...]
#
# "No snapshot yet" is a normal first start. A failed restore stops here, before the app
# starts, so an empty or partial state is never backed up over the good snapshots.
set -u
[ "${OCB_DEBUG:-}" = 1 ] && set -x
here=$(dirname -- "$(readlink -f -- "$0")")
log() { printf '%s entrypoint: %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" >&2; }
[ $# -gt 0 ] || { log error "usage: entrypoint.sh CMD [ARGS...]"; exit 2; }
log restore "restoring the state from the store"
"$here/bin/ocb-restore" >/dev/null
status=$?
if [ "$status" -ne 0 ]; then
    log restore "restore failed with status $status: not starting the app"
    exit "$status"
fi
log app "starting: $*"
exec "$@"
