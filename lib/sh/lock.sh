# shellcheck shell=sh
# Sourced by bin/ocb-backup and bin/ocb-restore (POSIX sh): one backup or restore at a time
# per work dir. Defines say() and ocb_take_lock NAME STAGE [FLAGS...]; sets $work (the work
# dir) and $lock.
#
# The work dir is the one the stages will use, never worked out here: ocb_take_lock asks the
# pipe's first stage (STAGE --show-config FLAGS: ocb-plan for a backup, ocb-chain for a
# restore) and reads .settings.work_dir from its document (ocb_work_dir_of_config), so flags,
# OCB_*, the legacy names and the env files count exactly as they count for the stages. A bad setting: that
# stage's error document on stdout, its exit code (2), nothing done. jq missing: exit 1.
#
# With flock(1) the lock is WORK/.lock, released when its holder dies (fd 9 stays open for
# the life of the calling script and its pipe). Without flock it is the directory
# WORK/.lock.d holding the holder's pid; a lock whose pid is dead is stale and taken over.
# When another run holds the lock: a message on stderr, exit 11, nothing touched. A caller
# that sets ocb_lock_wait=1 first (ocb-restore) waits for it up to the stage's
# .settings.lock_wait seconds (OCB_LOCK_WAIT, default 15 minutes: one backup), saying so,
# so that a restarted container waits out an orphaned backup; ocb-backup never waits (a
# backup that is due while one runs is simply skipped).
#
# Once the lock is held, OCB_UNDER_LOCK=1 is exported: each run dir a stage then creates in the
# work dir holds an empty file .ocb-under-lock, by which ocb-backup's sweep tells the run dirs
# of dead runs under the lock from those of pipes someone runs or replays by hand.

say() { echo "$ocb_name: $1: $2" >&2; }

# ocb_work_dir_of_config: $work, .settings.work_dir of the document in $ocb_config. Taken
# from its text when the value holds no escape: a JSON string without a backslash is its
# value as written, and the document (document.dump) holds one "work_dir" key, whose quotes
# no string can hold unescaped. Else (an escape: a quote, a control or a non-ASCII
# character in the path) with jq. One jq start (~20 ms) fewer per backup and restore.
ocb_work_dir_of_config() {
    work=${ocb_config#*'"work_dir": "'}
    if [ "$work" != "$ocb_config" ]; then
        work=${work%%'"'*}
        case $work in *\\*) work= ;; esac
    else
        work=
    fi
    [ -n "$work" ] || work=$(printf '%s\n' "$ocb_config" | jq -r '.settings.work_dir // empty' 2>/dev/null)
}

ocb_take_lock() {
    ocb_name=$1
    ocb_stage=$2
    shift 2
    command -v jq >/dev/null 2>&1 || {
        say error "jq is not installed: $ocb_name reads the stages' documents with it (Debian: apt-get install jq)"
        exit 1
    }
    # the stage's own answer: its settings, or its error document and code
    ocb_config=$("$ocb_stage" --show-config "$@")
    ocb_status=$?
    if [ "$ocb_status" -ne 0 ]; then
        [ -z "$ocb_config" ] || printf '%s\n' "$ocb_config"
        exit "$ocb_status"
    fi
    ocb_work_dir_of_config
    case "$work" in
        /*) ;;
        *) say error "${ocb_stage##*/} --show-config gave no absolute .settings.work_dir (a bug)"; exit 70 ;;
    esac
    mkdir -p -- "$work" || { say error "cannot create the work dir $work"; exit 1; }
    if command -v flock >/dev/null 2>&1; then
        lock=$work/.lock
        exec 9>>"$lock" || { say error "cannot open the lock file $lock"; exit 1; }
        if ! flock -n 9; then
            ocb_wait=$(printf '%s\n' "$ocb_config" | jq -r '.settings.lock_wait // 0' 2>/dev/null)
            if [ "${ocb_lock_wait:-}" = 1 ] && [ "${ocb_wait:-0}" != 0 ]; then
                say info "another ocb-backup or ocb-restore holds the lock $lock: waiting up to ${ocb_wait}s (OCB_LOCK_WAIT)"
                if flock -w "$ocb_wait" 9; then
                    say info "got the lock"
                    OCB_UNDER_LOCK=1
                    export OCB_UNDER_LOCK
                    return 0
                fi
            fi
            say error "another ocb-backup or ocb-restore holds the lock $lock: nothing done"
            exit 11
        fi
        OCB_UNDER_LOCK=1
        export OCB_UNDER_LOCK
        return 0
    fi
    # mkdir is atomic: exactly one run creates the dir. The pid inside tells whether the
    # holder still lives; a dir with no pid yet is a holder between mkdir and its write.
    lock=$work/.lock.d
    tries=0
    waited=0
    ocb_wait=$(printf '%s\n' "$ocb_config" | jq -r '.settings.lock_wait // 0 | floor' 2>/dev/null)
    [ "${ocb_lock_wait:-}" = 1 ] || ocb_wait=0
    until mkdir -- "$lock" 2>/dev/null; do
        holder=$(cat -- "$lock/pid" 2>/dev/null)
        if { [ -z "$holder" ] || kill -0 "$holder" 2>/dev/null; } && [ "$waited" -lt "${ocb_wait:-0}" ]; then
            [ "$waited" -gt 0 ] || say info "another ocb-backup or ocb-restore holds the lock $lock: waiting up to ${ocb_wait}s (OCB_LOCK_WAIT)"
            sleep 1
            waited=$((waited + 1))
            continue
        fi
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
    OCB_UNDER_LOCK=1
    export OCB_UNDER_LOCK
}
