# shellcheck shell=sh
# Sourced by bin/ocb-backup and bin/ocb-restore (POSIX sh): one backup or restore at a time
# per work dir. Defines say() and ocb_take_lock NAME; sets $work (the work dir) and $lock.
#
# With flock(1) the lock is WORK/.lock, released when its holder dies (fd 9 stays open for
# the life of the calling script and its pipe). Without flock it is the directory
# WORK/.lock.d holding the holder's pid; a lock whose pid is dead is stale and taken over.
# When another run holds the lock: a message on stderr, exit 11, nothing touched.

say() { echo "$ocb_name: $1: $2" >&2; }

ocb_take_lock() {
    ocb_name=$1
    work=${OCB_WORK_DIR:-${OPENCLAW_BACKUP_WORK_DIR:-${HOME:?HOME is not set}/.cache/ocb/work}}
    mkdir -p -- "$work" || { say error "cannot create the work dir $work"; exit 1; }
    if command -v flock >/dev/null 2>&1; then
        lock=$work/.lock
        exec 9>>"$lock" || { say error "cannot open the lock file $lock"; exit 1; }
        if ! flock -n 9; then
            say error "another ocb-backup or ocb-restore holds the lock $lock: nothing done"
            exit 11
        fi
        return 0
    fi
    # mkdir is atomic: exactly one run creates the dir. The pid inside tells whether the
    # holder still lives; a dir with no pid yet is a holder between mkdir and its write.
    lock=$work/.lock.d
    tries=0
    until mkdir -- "$lock" 2>/dev/null; do
        holder=$(cat -- "$lock/pid" 2>/dev/null)
        if [ -z "$holder" ] || kill -0 "$holder" 2>/dev/null || [ "$tries" -gt 0 ]; then
            say error "another ocb-backup or ocb-restore (pid ${holder:-unknown}) holds the lock $lock: nothing done"
            exit 11
        fi
        say warning "removing the stale lock $lock of pid $holder, which is gone"
        rm -rf -- "$lock"
        tries=1
    done
    echo "$$" >"$lock/pid"
    trap 'rm -rf -- "$lock"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
