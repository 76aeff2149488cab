#!/bin/sh
# Summary: a container's entrypoint: restore the agent's state, run the app, back it up every
# OCB_INTERVAL while it runs and once more when it stops.
#
# Usage: entrypoint.sh [--] CMD [ARGS...]
#        entrypoint.sh --help | --version    (answer and exit, nothing run)
# A first word that starts with "-" and is none of these is a usage error (exit 2); put "--"
# before an app whose name starts with "-".
#
# 1. Restores the latest snapshot (bin/ocb-restore). No snapshot yet is a normal first start.
# 2. Starts CMD as a child and backs up (bin/ocb-backup, never two at once) every OCB_INTERVAL.
# 3. SIGTERM or SIGINT goes on to the app; once it has exited (after OCB_STOP_TIMEOUT it gets
#    SIGKILL), a final backup; the exit status is the app's. An app that exits by itself gets
#    the same final backup and its status is passed on too.
# Each backup is bin/ocb-backup, which also prunes when OCB_PRUNE_EVERY says so (README:
# Retention). A restore that fails never leads to a backup, so neither to a prune: an empty
# or partial state never lands on top of the good snapshots nor thins them out.
# OCB_ON_RESTORE_FAIL=stop (default) exits with the restore's status before the app starts;
# =continue starts the app with every backup off and repeats the warning each interval.
#
# Environment:
#   OCB_INTERVAL         time between backups: 600, 90s, 10m, 1h; 0 = only the final backup
#                        (default 10m; legacy OPENCLAW_INCREMENTAL_INTERVAL_MINUTES, minutes)
#   OCB_STOP_GRACE       how long the platform waits between SIGTERM and SIGKILL (default 10s:
#                        docker stop's and a Hugging Face Space's, raisable there to 10 minutes
#                        in the Space's settings); the app's stop and the final backup share it
#   OCB_STOP_TIMEOUT     how long the app may take to stop after the signal (default: 3/10 of
#                        OCB_STOP_GRACE, 3s of 10s); the rest is the final backup's. The log
#                        says at start what the stop needs, and warns when a backup took longer
#                        than the grace period leaves it
#   OCB_ON_RESTORE_FAIL  stop | continue (default stop)
#   OCB_CHECK_EVERY      off | chain | backup (default off): run the cheap ocb-check (every
#                        meta, chain and volume size, nothing downloaded) after each periodic
#                        backup that starts a new chain (chain), or after every one (backup)
#   OCB_RESTORE_DONE_FILE     touched after a restore, or when there was nothing to restore
#                             (default /tmp/openclaw-restore-completed)
#   OCB_RESTORE_SKIPPED_FILE  touched when the store had no snapshot yet
#                             (default /tmp/openclaw-restore-skipped-no-backup)
# and everything the ocb-* commands read (OCB_STORE, HF_TOKEN, ...).
#
# Log lines go to stderr as "TIME entrypoint: STAGE: MESSAGE" (UTC).
# Needs jq (documents are read as JSON): without it, exit 1 before anything runs.
# Example:
#   OCB_STORE=hf://datasets/me/openclaw-state entrypoint.sh openclaw gateway --port 7860
#   docker run --stop-timeout 60 -e OCB_STOP_GRACE=60s ... image   (a longer stop)
# Exit status: the app's; 2 for a bad setting or an unknown flag, of the entrypoint or of ocb (ocb-plan and
# ocb-chain --show-config check them all before anything runs); the restore's status
# when it failed and OCB_ON_RESTORE_FAIL=stop; 130/143 when stopped during the restore.
set -u
[ "${OCB_DEBUG:-}" = 1 ] && set -x
case "${1:-}" in -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
here=$(dirname -- "$(readlink -f -- "$0")")
# --version answers before anything runs (never a restore, never "--version" run as the app)
case "${1:-}" in --version) "$here/bin/ocb-chain" --version | sed 's/^ocb-chain/entrypoint.sh (ocb)/'; exit 0 ;; esac
case "${1:-}" in
    --) shift ;;
    -*) printf 'entrypoint.sh: unknown flag %s\nusage: entrypoint.sh [--] CMD [ARGS...] | --help | --version\n' "$1" >&2; exit 2 ;;
esac

log() { printf '%s entrypoint: %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" >&2; }
now() { date +%s; }

# seconds NAME VALUE: VALUE (600, 90s, 10m, 1h) in seconds, or exit 2 naming NAME
seconds() {
    number=${2%[smh]}
    case "$number" in '' | *[!0-9]*) log config "$1=$2: expected seconds, or a number with s, m or h (90s, 10m, 1h)"; exit 2 ;; esac
    number=${number#"${number%%[!0]*}"}   # no leading zeros: $((010)) would be octal
    [ "${#number}" -le 7 ] || { log config "$1=$2: too large"; exit 2; }
    case "$2" in
        *m) echo $((${number:-0} * 60)) ;;
        *h) echo $((${number:-0} * 3600)) ;;
        *) echo "${number:-0}" ;;
    esac
}

# --- settings: all checked before anything runs ---------------------------------------------
[ $# -gt 0 ] || { log config "usage: entrypoint.sh CMD [ARGS...] (see entrypoint.sh --help)"; exit 2; }
on_fail=${OCB_ON_RESTORE_FAIL:-stop}
case "$on_fail" in
    stop | continue) ;;
    *) log config "OCB_ON_RESTORE_FAIL=$on_fail: expected stop or continue"; exit 2 ;;
esac
if [ -n "${OCB_INTERVAL:-}" ]; then
    interval=$(seconds OCB_INTERVAL "$OCB_INTERVAL") || exit 2
elif [ -n "${OPENCLAW_INCREMENTAL_INTERVAL_MINUTES:-}" ]; then
    case "$OPENCLAW_INCREMENTAL_INTERVAL_MINUTES" in
        *[!0-9]*) log config "OPENCLAW_INCREMENTAL_INTERVAL_MINUTES=$OPENCLAW_INCREMENTAL_INTERVAL_MINUTES: expected whole minutes"; exit 2 ;;
    esac
    interval=$(seconds OPENCLAW_INCREMENTAL_INTERVAL_MINUTES "${OPENCLAW_INCREMENTAL_INTERVAL_MINUTES}m") || exit 2
else
    interval=600
fi
check_every=${OCB_CHECK_EVERY:-off}
case "$check_every" in
    off | chain | backup) ;;
    *) log config "OCB_CHECK_EVERY=$check_every: expected off, chain or backup"; exit 2 ;;
esac
stop_grace=$(seconds OCB_STOP_GRACE "${OCB_STOP_GRACE:-10}") || exit 2
stop_timeout=$(seconds OCB_STOP_TIMEOUT "${OCB_STOP_TIMEOUT:-$((stop_grace * 3 / 10))}") || exit 2
command -v jq >/dev/null 2>&1 || { log config "jq is not installed: the entrypoint and ocb-backup/ocb-restore read documents with it (Debian: apt-get install jq)"; exit 1; }
# the whole ocb configuration, as the backup and the restore will read it: a bad value is their
# error document's message and exit 2 now, not a restored app whose every backup fails
for stage in ocb-plan ocb-chain; do
    "$here/bin/$stage" --show-config >/dev/null || {
        status=$?
        log config "$stage --show-config failed with status $status (its message is above): nothing is restored or started"
        exit "$status"
    }
done
done_file=${OCB_RESTORE_DONE_FILE:-/tmp/openclaw-restore-completed}
skipped_file=${OCB_RESTORE_SKIPPED_FILE:-/tmp/openclaw-restore-skipped-no-backup}

# --- signals: noted here, acted on by the loop below -----------------------------------------
signals=""       # received and not yet forwarded to the app
stop_signal=""   # the first one: it decides the exit status when the app never ran
app_pid=""
sleeper=""
backup_pid=""
backup_began=0
# shellcheck disable=SC2329  # called by the traps below
on_signal() { signals="$signals $1"; [ -n "$stop_signal" ] || stop_signal=$1; }
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
# Whatever way this script ends, it leaves nothing running behind it.
# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
    [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null
    if [ -n "$app_pid" ] && kill -0 "$app_pid" 2>/dev/null; then
        log stop "the app (pid $app_pid) is still running as the entrypoint ends: SIGKILL"
        kill -s KILL "$app_pid" 2>/dev/null
    fi
}
trap cleanup EXIT

# pause: about one second, cut short by a signal (a trap runs only once `wait` returns)
pause() {
    [ -z "$signals" ] || return 0
    sleep 1 &
    sleeper=$!
    wait "$sleeper" 2>/dev/null
    kill "$sleeper" 2>/dev/null && wait "$sleeper" 2>/dev/null
    sleeper=""
}

# --- 1. restore ------------------------------------------------------------------------------
rm -f -- "$done_file" "$skipped_file"
log restore "restoring the state (ocb-restore)"
doc=$("$here/bin/ocb-restore")
restore_status=$?
backups=on
if [ "$restore_status" -eq 0 ]; then
    # the document read as JSON: ocb-chain's skip says whether the store had no snapshot
    if printf '%s\n' "$doc" | jq -e '.skip.no_snapshot == true' >/dev/null 2>&1; then
        log restore "the store has no snapshot yet: a first start, nothing to restore"
        touch -- "$skipped_file" "$done_file" || log restore "warning: cannot write the readiness files"
    else
        log restore "done"
        touch -- "$done_file" || log restore "warning: cannot write the readiness file $done_file"
    fi
elif [ -n "$stop_signal" ]; then
    : # interrupted: said below
elif [ "$on_fail" = stop ]; then
    log restore "failed with status $restore_status (see the ocb-* messages above): the app is not started, so that no empty or partial state is backed up over the good snapshots (OCB_ON_RESTORE_FAIL=continue would start it with backups off)"
    exit "$restore_status"
else
    backups=off
    warning="the restore failed with status $restore_status: backups are OFF, so that this state never replaces the good snapshots; fix the cause and restart (OCB_ON_RESTORE_FAIL=continue)"
    log restore "$warning"
fi
if [ -n "$stop_signal" ]; then
    log stop "SIG$stop_signal during the restore: the app is not started"
    [ "$stop_signal" = INT ] && exit 130
    exit 143
fi

# --- 2. the app ------------------------------------------------------------------------------
# An asynchronous command starts with SIGINT and SIGQUIT ignored and stdin on /dev/null
# (POSIX, without job control). The app gets them back: the default signal dispositions when
# env(1) can restore them (coreutils >= 8.31), and our stdin through fd 3.
log app "starting: $*"
if env --default-signal=INT,QUIT true 2>/dev/null; then
    set -- env --default-signal=INT,QUIT "$@"
fi
if { command exec 3<&0; } 2>/dev/null; then
    "$@" 0<&3 3<&- &
    app_pid=$!
    exec 3<&-
else
    "$@" &
    app_pid=$!
fi
if [ "$backups" = on ]; then
    log stop "a stop needs up to ${stop_timeout}s for the app (OCB_STOP_TIMEOUT), then the final backup, within the ${stop_grace}s the platform gives between SIGTERM and SIGKILL (OCB_STOP_GRACE; a Space gives 10s unless raised in its settings): $((stop_grace - stop_timeout))s left for the backup"
fi
if [ "$backups" = on ] && [ "$interval" -gt 0 ]; then
    log backup "every ${interval}s while the app runs, and once more when it stops"
elif [ "$backups" = on ]; then
    log backup "OCB_INTERVAL=0: only a final backup when the app stops"
fi

# --- 3. the loop: signals, the timer, the app's end -------------------------------------------
backup_start() {
    if [ "$check_every" = off ]; then
        "$here/bin/ocb-backup" >/dev/null &
    else
        # the backup's document says whether it started a new chain; the check follows it
        (   doc=$("$here/bin/ocb-backup"); status=$?
            case "$status" in 0 | 6) ;; *) exit "$status" ;; esac
            if [ "$check_every" = backup ]; then
                why="OCB_CHECK_EVERY=backup"
            elif printf '%s\n' "$doc" | jq -e '.skip == null and .plan.type == "full"' >/dev/null 2>&1; then
                why="the backup started a new chain"
            else
                exit "$status"
            fi
            log check "$why: checking the store (ocb-check)"
            "$here/bin/ocb-check" >/dev/null
            checked=$?
            if [ "$checked" -eq 0 ]; then log check "the store is whole"
            else log check "ocb-check failed with status $checked (its messages are above)"; fi
            exit "$status" ) &
    fi
    backup_pid=$!
    backup_began=$(now)
}
backup_reap() {   # once the periodic backup has ended, say how
    if [ -z "$backup_pid" ] || kill -0 "$backup_pid" 2>/dev/null; then return 0; fi
    wait "$backup_pid"
    status=$?
    took=$(($(now) - backup_began))
    if [ "$status" -eq 0 ] || [ "$status" -eq 6 ]; then
        [ "$took" -le $((stop_grace - stop_timeout)) ] ||
            log stop "warning: that backup took ${took}s, more than the $((stop_grace - stop_timeout))s a stop leaves the final backup (OCB_STOP_GRACE=${stop_grace}s less OCB_STOP_TIMEOUT=${stop_timeout}s): raise the platform's grace period and OCB_STOP_GRACE with it"
    fi
    case "$status" in
        0) log backup "done in ${took}s" ;;
        6) log backup "done, but some entries could not be read and are not in it (see the ocb-* warnings above)" ;;
        11) log backup "skipped: another ocb-backup holds the lock" ;;
        *) log backup "failed with status $status (see the ocb-* messages above); next try in ${interval}s" ;;
    esac
    backup_pid=""
}

next_backup=$(($(now) + interval))
stop_deadline=""
while kill -0 "$app_pid" 2>/dev/null; do
    if [ -n "$signals" ]; then
        for sig in $signals; do
            log stop "SIG$sig: passing it on to the app (pid $app_pid)"
            kill -s "$sig" "$app_pid" 2>/dev/null
        done
        signals=""
        [ -n "$stop_deadline" ] || stop_deadline=$(($(now) + stop_timeout))
    fi
    backup_reap
    t=$(now)
    if [ -n "$stop_deadline" ]; then
        if [ "$t" -ge "$stop_deadline" ]; then
            log stop "the app did not stop within ${stop_timeout}s: SIGKILL"
            kill -s KILL "$app_pid" 2>/dev/null
            stop_deadline=$((t + 3600))
        fi
    elif [ "$interval" -gt 0 ] && [ "$t" -ge "$next_backup" ]; then
        next_backup=$((t + interval))
        if [ "$backups" = off ]; then
            log backup "$warning"
        elif [ -n "$backup_pid" ]; then
            log backup "skipped: the previous backup is still running"
        else
            log backup "starting (ocb-backup)"
            backup_start
        fi
    fi
    pause
done
wait "$app_pid"
app_status=$?
app_pid=""
log app "exited with status $app_status"

# --- 4. the final backup ---------------------------------------------------------------------
if [ "$backups" = off ]; then
    log backup "no final backup: $warning"
    exit "$app_status"
fi
[ -z "$backup_pid" ] || log backup "waiting for the periodic backup to end"
while [ -n "$backup_pid" ]; do
    signals=""
    pause
    backup_reap
done
give_up=$(($(now) + stop_timeout))
while :; do
    log backup "final backup (ocb-backup)"
    "$here/bin/ocb-backup" >/dev/null
    status=$?
    [ "$status" -eq 11 ] && [ "$(now)" -lt "$give_up" ] || break
    log backup "another ocb-backup holds the lock: trying again"
    signals=""
    pause
done
case "$status" in
    0) log backup "final backup done" ;;
    6) log backup "final backup done, but some entries could not be read and are not in it (see the ocb-* warnings above)" ;;
    *) log backup "the final backup failed with status $status: changes since the last snapshot are not saved" ;;
esac
exit "$app_status"
