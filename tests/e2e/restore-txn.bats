#!/usr/bin/env bats
# A restore is one transaction across all roots (lib/ocb/journal.py): killed at every rename
# of the swap, or failing at a later root, every root is wholly old or wholly new; the next
# restore or backup finishes or rolls back what it finds and says which; a backup never
# publishes a mixed state; staging is private and never left behind.
#
# Kill points are real: strace's syscall fault injection (`-e inject=...:signal=SIGKILL:when=N`)
# kills ocb-pull just before its Nth renameat2 (each root's exchange), its Nth rename (each
# journal write, the commit, the cache), its Nth rmdir and unlink (removing the old trees
# and the journal after the commit), for every N until a run completes, so every step of the
# swap, between two roots included, is a point of death. `:error=EPERM` makes the
# Nth exchange fail for real. Nothing in lib/ knows about tests.
# (Not with strace --seccomp-bpf, which would stop the process at the traced syscall alone and
# cost far less: strace 6.1 then runs the syscall instead of killing before it.)

load test_helper

setup() {
    ocb_setup
    command -v strace >/dev/null || skip "strace is not installed"
    # these tests replay saved chain documents through many backups: no auto-prune under them
    export OCB_PRUNE_EVERY=off
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 60 4
    "$PYTHON" "$TREE" generate "$HOME/.config" 30 5
    mkdir -p "$HOME/.ssh" "$HOME/.config/tool"
    printf 'secret key\n' >"$HOME/.ssh/id_ed25519" && chmod 600 "$HOME/.ssh/id_ed25519"
    chmod 700 "$HOME/.ssh"
    printf 'v1\n' >"$HOME/.config/tool/settings.json"
    backup_ok
    SNAP=$(last_id)
    # the old state the restore must replace: every root changed
    printf 'old\n' >"$HOME/.openclaw/only-old.txt"
    rm -r "$HOME/.openclaw/dir02"
    printf 'old key\n' >"$HOME/.ssh/id_ed25519"
    printf 'v0\n' >"$HOME/.config/tool/settings.json"
    # what the snapshot's default excludes left out: carried over, never deleted
    mkdir -p "$HOME/.openclaw/logs" "$HOME/.config/tool/node_modules/dep" "$HOME/.config/gone/node_modules"
    printf 'log line\n' >"$HOME/.openclaw/logs/app.log"
    printf 'module\n' >"$HOME/.config/tool/node_modules/dep/index.js"
    printf 'kept\n' >"$HOME/.config/gone/node_modules/x.js"
    touch -d '2020-01-02 03:04:05' "$HOME/.config/gone" "$HOME/.config/tool"
    keep_old
}

ROOTS=".openclaw .config .ssh"

# keep_old / put_old: a copy of the old state, and putting it back exactly (modes, mtimes)
keep_old() {
    rm -rf "$BATS_TEST_TMPDIR/old-copy" && mkdir "$BATS_TEST_TMPDIR/old-copy"
    for r in $ROOTS; do cp -a "$HOME/$r" "$BATS_TEST_TMPDIR/old-copy/"; done
    for r in $ROOTS; do manifest "$HOME/$r" >"$BATS_TEST_TMPDIR/old$r"; done
}
put_old() {
    for r in $ROOTS; do rm -rf "${HOME:?}/$r" && cp -a "$BATS_TEST_TMPDIR/old-copy/$r" "$HOME/"; done
    all_are old
    for r in $ROOTS; do stat -c %i "$HOME/$r" >"$BATS_TEST_TMPDIR/ino$r"; done
}

# learn_new: restore once for real; what every root is, wholly new (excluded paths kept)
learn_new() {
    ocb-chain >"$BATS_TEST_TMPDIR/chain.json" 2>/dev/null
    ocb-pull <"$BATS_TEST_TMPDIR/chain.json" >/dev/null 2>"$BATS_TEST_TMPDIR/learn.err" || {
        cat "$BATS_TEST_TMPDIR/learn.err" >&2; return 1; }
    for r in $ROOTS; do manifest "$HOME/$r" >"$BATS_TEST_TMPDIR/new$r"; done
    put_old
}

# root_states: for each of $ROOTS in order, old or new (its manifest equals the one saved as
# $BATS_TEST_TMPDIR/old<root> or new<root>), on one line; fails naming a root that is neither.
# One interpreter for all roots: it runs after every kill point.
root_states() {
    # shellcheck disable=SC2086  # $ROOTS is a list of names without spaces
    "$PYTHON" - "$TREE" "$HOME" "$BATS_TEST_TMPDIR" $ROOTS <<'EOF_PY'
import difflib, json, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from tree import manifest
home, saved, states = sys.argv[2], sys.argv[3], []
for root in sys.argv[4:]:
    now = [json.dumps(e, ensure_ascii=True) + "\n" for e in manifest(os.path.join(home, root))]
    known = {state: open(os.path.join(saved, state + root)).readlines() for state in ("new", "old")
             if os.path.exists(os.path.join(saved, state + root))}  # no new one before learn_new
    state = next((state for state, lines in known.items() if lines == now), None)
    if state is None:
        sys.stderr.write(f"{root} is neither wholly old nor wholly new:\n" + "".join(difflib.unified_diff(known.get("old", []), now)))
        sys.exit(1)
    states.append(state)
print(" ".join(states))
EOF_PY
}

# all_are STATE: every root is wholly STATE
all_are() {
    local states s
    states=$(root_states) || return 1
    for s in $states; do [ "$s" = "$1" ] || { echo "the roots ($ROOTS) are $states, not all $1" >&2; return 1; }; done
}

# no_staging: no staging or old tree beside or inside any root, and no journal
no_staging() {
    [ -z "$(find "$HOME" -maxdepth 2 -name '*ocb-staging*' -o -maxdepth 2 -name '*ocb-old*')" ] || {
        echo "left behind:" >&2; find "$HOME" -maxdepth 2 -name '*ocb-*' >&2; return 1; }
    [ ! -e "$OCB_WORK_DIR/restore-journal.json" ]
    [ -z "$(find "$OCB_WORK_DIR" -maxdepth 1 -name '.ocb-tmp-*journal*' 2>/dev/null)" ]
}

# pull_dies_at SYSCALL N: run ocb-pull, SIGKILLed just before its Nth SYSCALL (strace counts
# each syscall on its own); its status
pull_dies_at() {
    local status=0
    strace -f -qq -o /dev/null -e "trace=$1" -e "inject=$1:signal=SIGKILL:when=$2" \
        "$OCB_ROOT/bin/ocb-pull" <"$BATS_TEST_TMPDIR/chain.json" >/dev/null 2>"$BATS_TEST_TMPDIR/pull.err" || status=$?
    echo "$status"
}

@test "kill -9 before every rename of a restore: each root wholly old or new, the next restore or backup finishes or rolls back and says so" {
    learn_new
    all_are old
    points=0 seen_mixed="" seen_rollback="" seen_complete=""
    for syscall in renameat2 rename rmdir unlink; do
        n=0
    while :; do
        n=$((n + 1))
        [ "$n" -lt 60 ] || { echo "the restore never completed" >&2; return 1; }
        status=$(pull_dies_at "$syscall" "$n")
        if [ "$status" -eq 0 ]; then all_are new; no_staging; put_old; break; fi
        points=$((points + 1))
        echo "killed before $syscall $n" >&3
        [ "$status" -eq 137 ] || { echo "kill point $n: exit $status" >&2; cat "$BATS_TEST_TMPDIR/pull.err" >&2; return 1; }
        states=$(root_states) || { echo "after the kill at $syscall $n" >&2; return 1; }
        case "$states" in *old*new* | *new*old*) seen_mixed=1 ;; esac
        # a staging tree a dead run left is private (0700), unless it is the old tree put aside
        while IFS= read -r left; do
            name=${left##*/} && r=${name%%.ocb-staging.*} && r=${r#.}
            [ "$(stat -c %a "$left")" = 700 ] || [ "$(stat -c %i "$left")" = "$(cat "$BATS_TEST_TMPDIR/ino$r")" ] \
                || { echo "kill point $n: $left ($(stat -c "%a %i" "$left"), old $(cat "$BATS_TEST_TMPDIR/ino$r")) is not 0700 and not the old $r" >&2; cat "$OCB_WORK_DIR/restore-journal.json" >&2; return 1; }
        done < <(find "$HOME" -maxdepth 1 -name '*.ocb-staging.*' -type d)
        if [ $((n % 2)) -eq 1 ]; then
            # a backup first finishes or rolls back, and publishes a wholly old or wholly new state
            backup_ok
            after=$(root_states) || return 1
            case "$after" in *old*new* | *new*old*) echo "mixed after the backup: $after" >&2; return 1 ;; esac
            grep -q 'rolled back' "$BATS_TEST_TMPDIR/last.err" && seen_rollback=1
            grep -q 'completed it' "$BATS_TEST_TMPDIR/last.err" && seen_complete=1
            if ! jq -e .skip "$BATS_TEST_TMPDIR/last.json" >/dev/null; then
                rm -rf "$BATS_TEST_TMPDIR/r"
                ocb-restore --to "$BATS_TEST_TMPDIR/r" >/dev/null 2>&1
                # the snapshot holds each root as it was, minus what the excludes leave out (one
                # interpreter for all roots: this runs at every other kill point)
                # shellcheck disable=SC2086  # $ROOTS is a list of names without spaces
                "$PYTHON" - "$TREE" "$BATS_TEST_TMPDIR/r" "$HOME" $ROOTS <<'EOF_PY'
import os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from tree import manifest
skip = ("logs", "node_modules")
def keep(e): return not any(part in skip for part in e["path"].split("/"))
for root in sys.argv[4:]:
    got = [e for e in manifest(os.path.join(sys.argv[2], root)) if e["path"] != ""]
    want = [e for e in manifest(os.path.join(sys.argv[3], root)) if keep(e) and e["path"] != ""]
    for e in got + want: e.pop("mtime_ns") if e["type"] == "dir" else None
    assert got == want, (root, [e for e in got if e not in want][:3], [e for e in want if e not in got][:3])
EOF_PY
            fi
        else
            run -0 --separate-stderr ocb-restore --id "$SNAP"  # the backups above moved the latest
            all_are new
            [[ "$stderr" == *"rolled back"* ]] && seen_rollback=1
            [[ "$stderr" == *"completed it"* ]] && seen_complete=1
        fi
        no_staging
        put_old
        # each kill point starts from the same old state and a cold cache
        rm -rf "$OCB_CACHE_DIR"
    done
    done
    echo "kill points: $points; mixed before recovery: ${seen_mixed:-no}; rolled back: ${seen_rollback:-no}; completed: ${seen_complete:-no}" >&3
    [ -n "$seen_mixed" ] && [ -n "$seen_rollback" ] && [ -n "$seen_complete" ]
}

@test "a later root's swap that fails swaps back the earlier ones: every root wholly old, nothing left, exit 1" {
    learn_new
    ocb-chain >"$BATS_TEST_TMPDIR/chain.json" 2>/dev/null
    # renameat2 is the exchange: the first (openclaw-state) succeeds, the second fails for real
    run -1 --separate-stderr strace -f -qq -o /dev/null -e trace=renameat2 -e inject=renameat2:error=EPERM:when=2 \
        "$OCB_ROOT/bin/ocb-pull" <"$BATS_TEST_TMPDIR/chain.json"
    [[ "$stderr" == *"cannot move the restored root-config"* ]]
    [[ "$stderr" == *"every root was put back as it was"* ]]
    jq -e '.error.code == 1 and .error.stage == "pull"' <<<"$output"
    all_are old
    no_staging
    # and the restore then succeeds
    run -0 --separate-stderr ocb-restore
    all_are new
    no_staging
}

@test "excluded paths survive an in-place restore, and --dry-run shows them as kept" {
    learn_new
    run -0 --separate-stderr ocb-restore --dry-run
    [[ "$stderr" == *"would keep openclaw-state/logs (left out of the snapshot by its excludes)"* ]]
    [[ "$stderr" == *"would keep root-config/tool/node_modules"* ]]
    [[ "$stderr" == *"would keep root-config/gone/node_modules"* ]]
    [[ "$stderr" != *"would remove openclaw-state/logs"* ]]
    jq -e '.pull.changes.keep == 3' <<<"$output"
    all_are old
    run -0 --separate-stderr ocb-restore
    all_are new
    [ "$(cat "$HOME/.openclaw/logs/app.log")" = "log line" ]
    [ "$(cat "$HOME/.config/tool/node_modules/dep/index.js")" = "module" ]
    [ "$(cat "$HOME/.config/gone/node_modules/x.js")" = "kept" ]
    [ "$(cat "$HOME/.config/tool/settings.json")" = "v1" ]
    [ ! -e "$HOME/.openclaw/only-old.txt" ]
    # the snapshot's own excludes decide, recorded in its index, not this run's settings
    OCB_DEFAULT_EXCLUDES=off run -0 --separate-stderr ocb-restore
    [ -e "$HOME/.openclaw/logs/app.log" ]
}

@test "a SQLite database's old -wal is not carried over onto its restored copy" {
    "$PYTHON" -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute("create table t(x)"); c.execute("insert into t values (1)"); c.commit()' "$HOME/.openclaw/db.sqlite"
    backup_ok
    printf 'stale wal\n' >"$HOME/.openclaw/db.sqlite-wal"
    run -0 --separate-stderr ocb-restore
    [ ! -e "$HOME/.openclaw/db.sqlite-wal" ]
}

# in_mount_ns SCRIPT: run SCRIPT (bash) in a private mount namespace where ~/.openclaw is a
# tmpfs mount point (as a Docker volume is), with this test's environment
in_mount_ns() {
    unshare -m bash -euc 'mount -t tmpfs tmpfs "$HOME/.openclaw"; '"$1"
}

@test "a root that is a mount point is restored by its top-level entries, kept a mount point, all or nothing" {
    command -v unshare >/dev/null && unshare -m true 2>/dev/null || skip "no mount namespaces here"
    rm -rf "$HOME/.openclaw" "$HOME/.config" "$HOME/.ssh" "$OCB_CACHE_DIR" && mkdir -p "$HOME/.openclaw"
    export PYTHON TREE BATS_TEST_TMPDIR
    # (OCB_PRUNE_EVERY=off, from setup: every round's backup is a full one, the cache wiped;
    # the default prune after each would drop the snapshot chain.json names after 24 rounds)
    run -0 in_mount_ns '
        m() { "$PYTHON" "$TREE" manifest "$1"; }
        # each top-level entry is moved on its own (twice: the old one aside, the new one in),
        # so each is two more kill points: a few of every kind (a tree, a dir the old state
        # lacks, a file the old state changed, a link, the excluded logs), the generated tree
        # one level down
        "$PYTHON" "$TREE" generate "$HOME/.openclaw/state" 40 2
        mkdir "$HOME/.openclaw/dir01" && printf "one\n" >"$HOME/.openclaw/dir01/f"
        printf "new\n" >"$HOME/.openclaw/top.txt" && ln -s state/dir00 "$HOME/.openclaw/link"
        mkdir "$HOME/.openclaw/logs" && printf "log\n" >"$HOME/.openclaw/logs/a.log"
        ocb-backup >/dev/null 2>"$BATS_TEST_TMPDIR/b.err" || { cat "$BATS_TEST_TMPDIR/b.err"; exit 1; }
        m "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/new"
        printf "old\n" >"$HOME/.openclaw/only-old" && rm -r "$HOME/.openclaw/dir01"
        printf "old\n" >"$HOME/.openclaw/top.txt" && touch -d "2020-01-02 03:04:05" "$HOME/.openclaw/top.txt"
        m "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/old"
        mkdir "$BATS_TEST_TMPDIR/mnt-old" && cp -a "$HOME/.openclaw/." "$BATS_TEST_TMPDIR/mnt-old/"
        ocb-chain >"$BATS_TEST_TMPDIR/chain.json" 2>/dev/null
        n=0
        while :; do
            n=$((n + 1)); [ "$n" -lt 80 ] || { echo "never completed"; exit 1; }
            status=0
            strace -f -qq -o /dev/null -e trace=rename -e "inject=rename:signal=SIGKILL:when=$n" \
                ocb-pull <"$BATS_TEST_TMPDIR/chain.json" >/dev/null 2>"$BATS_TEST_TMPDIR/p.err" || status=$?
            [ "$status" -eq 0 ] && break
            [ "$status" -eq 137 ] || { echo "exit $status at $n"; cat "$BATS_TEST_TMPDIR/p.err"; exit 1; }
            # at odd kill points the next backup finishes or rolls back first (wholly old or
            # wholly new), at even ones the next restore does and then completes (wholly new)
            if [ $((n % 2)) -eq 1 ]; then
                ocb-backup >/dev/null 2>"$BATS_TEST_TMPDIR/b.err" || { cat "$BATS_TEST_TMPDIR/b.err"; exit 1; }
            else
                ocb-pull <"$BATS_TEST_TMPDIR/chain.json" >/dev/null 2>"$BATS_TEST_TMPDIR/p.err" || { cat "$BATS_TEST_TMPDIR/p.err"; exit 1; }
            fi
            m "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/now"
            if cmp -s "$BATS_TEST_TMPDIR/now" "$BATS_TEST_TMPDIR/new"; then state=new
            elif cmp -s "$BATS_TEST_TMPDIR/now" "$BATS_TEST_TMPDIR/old" && [ $((n % 2)) -eq 1 ]; then state=old
            else echo "kill at rename $n: neither old nor new"; diff "$BATS_TEST_TMPDIR/old" "$BATS_TEST_TMPDIR/now"; exit 1; fi
            echo "kill at rename $n: $state"
            mountpoint -q "$HOME/.openclaw" || { echo "no longer a mount point"; exit 1; }
            [ -z "$(find "$HOME/.openclaw" -maxdepth 1 -name ".ocb-*")" ] || { echo "staging left inside"; exit 1; }
            find "$HOME/.openclaw" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
            cp -a "$BATS_TEST_TMPDIR/mnt-old/." "$HOME/.openclaw/"
            touch -r "$BATS_TEST_TMPDIR/mnt-old" "$HOME/.openclaw"
            rm -rf "$OCB_CACHE_DIR"
        done
        mountpoint -q "$HOME/.openclaw"
        m "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/new" -
        [ "$(cat "$HOME/.openclaw/logs/a.log")" = log ]
        [ -z "$(find "$HOME/.openclaw" -maxdepth 1 -name ".ocb-*")" ]
        echo "kill points: $((n - 1))"
    '
    echo "$output" >&3
}

@test "a root that is a symlink is backed up as what it points to; a restore writes there and keeps the link; pointing nowhere is refused" {
    rm -rf "$HOME/.config" "$HOME/.ssh" "$HOME/.openclaw" "$OCB_CACHE_DIR"
    data="$BATS_TEST_TMPDIR/volume/openclaw"
    "$PYTHON" "$TREE" generate "$data" 40 7
    ln -s "$data" "$HOME/.openclaw"
    backup_ok
    jq -e --arg d "$data" '.roots["openclaw-state"] == {"kind": "dir", "present": true, "link": $d}' \
        <(head -n1 "$OCB_CACHE_DIR/index.jsonl")
    manifest "$data" >"$BATS_TEST_TMPDIR/snap"
    printf 'stray\n' >"$data/stray.txt" && rm -r "$data/dir03"
    run -0 --separate-stderr ocb-restore
    [ -L "$HOME/.openclaw" ] && [ "$(readlink "$HOME/.openclaw")" = "$data" ]
    manifest "$data" | diff "$BATS_TEST_TMPDIR/snap" -
    [ -z "$(find "$HOME" "$BATS_TEST_TMPDIR/volume" -maxdepth 1 -name '*ocb-*')" ]
    # a fresh volume: the link's folder is missing, its parent is there: made and filled
    rm -rf "$data"
    run -0 --separate-stderr ocb-restore
    [ -L "$HOME/.openclaw" ]
    manifest "$data" | diff "$BATS_TEST_TMPDIR/snap" -
    # no volume at all: reported, the link not replaced, nothing written
    rm -rf "$BATS_TEST_TMPDIR/volume"
    run -1 --separate-stderr ocb-restore
    [[ "$stderr" == *"is the link $HOME/.openclaw -> $data, which points nowhere"* ]]
    [ -L "$HOME/.openclaw" ] && [ ! -e "$BATS_TEST_TMPDIR/volume" ]
    [ -z "$(find "$HOME" -maxdepth 1 -name '*ocb-*')" ]
}

# as_user CMD...: CMD as uid/gid 1000, no supplementary groups (as backup-faults.bats does:
# the system python3 with the venv's packages, the venv may lie where uid 1000 cannot go)
as_user() {
    local packages
    packages=$(echo "$OCB_ROOT"/.venv/lib/python3*/site-packages)
    PATH="/usr/bin:$PATH" PYTHONPATH="$packages" setpriv --reuid 1000 --regid 1000 --clear-groups "$@"
}

# open_way: the way to the test's dirs and the checkout is open to uid 1000
open_way() {
    local d
    for d in "$BATS_TEST_TMPDIR" "$OCB_ROOT"; do
        while [ "$d" != / ]; do
            [ -n "$(find "$d" -maxdepth 0 -perm -o+x)" ] || chmod o+x "$d"
            d=$(dirname "$d")
        done
    done
}

owners() { (cd "$1" && find . -printf '%P %U:%G\n' | sort); }

@test "owners: the index records numeric uid/gid, a restore as root restores them, one as another user owns what it writes" {
    command -v setpriv >/dev/null || skip "setpriv is not installed"
    [ "$(id -u)" = 0 ] || skip "needs root"
    rm -rf "$HOME/.config" "$HOME/.ssh" "$OCB_CACHE_DIR" "$HOME/.openclaw/logs"  # logs: kept, not restored
    chown -R 1000:1000 "$HOME/.openclaw"
    chown 1001:1002 "$HOME/.openclaw/dir01"
    ln -s dir01 "$HOME/.openclaw/owned-link" && chown -h 1003:1003 "$HOME/.openclaw/owned-link"
    backup_ok
    head -n2 "$OCB_CACHE_DIR/index.jsonl" | tail -n1 | jq -e '.uid == 1000 and .gid == 1000'
    owners "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/owners"
    chown -R 0:0 "$HOME/.openclaw"
    run -0 --separate-stderr ocb-restore
    owners "$HOME/.openclaw" | diff "$BATS_TEST_TMPDIR/owners" -
    # as uid 1000: every file is its own, modes and content as in the snapshot
    open_way
    to="$BATS_TEST_TMPDIR/as-user"
    mkdir -p "$to" "$BATS_TEST_TMPDIR/user-work" "$BATS_TEST_TMPDIR/user-cache"
    chown 1000:1000 "$to" "$BATS_TEST_TMPDIR/user-work" "$BATS_TEST_TMPDIR/user-cache"
    chmod -R a+rX "$STORE_DIR"
    OCB_WORK_DIR="$BATS_TEST_TMPDIR/user-work" OCB_CACHE_DIR="$BATS_TEST_TMPDIR/user-cache" \
        run -0 --separate-stderr as_user ocb-restore --to "$to"
    [ -z "$(find "$to/.openclaw" ! -user 1000)" ] && [ -z "$(find "$to/.openclaw" ! -group 1000)" ]
    manifest "$to/.openclaw" | diff <(manifest "$HOME/.openclaw") -
}

@test "a 256 MiB sparse file restores sparse: zero runs written as holes, disk usage close to the source's" {
    # (256 MiB: each of backup, restore and cmp reads every zero; at 1 GiB this one test cost a
    # minute of CPU in the suite, and holes are holes at any size)
    rm -rf "$HOME/.config" "$HOME/.ssh" "$OCB_CACHE_DIR"
    sparse="$HOME/.openclaw/disk.img"
    truncate -s 256M "$sparse"
    printf 'head\n' | dd of="$sparse" conv=notrunc status=none
    printf 'middle\n' | dd of="$sparse" bs=1M seek=128 conv=notrunc status=none
    source_kb=$(du -k "$sparse" | cut -f1)
    [ "$source_kb" -lt 1024 ]
    backup_ok
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/r"
    restored="$BATS_TEST_TMPDIR/r/.openclaw/disk.img"
    restored_kb=$(du -k "$restored" | cut -f1)
    echo "256 MiB sparse file: ${source_kb} KiB on disk in the source, ${restored_kb} KiB restored" >&3
    [ "$(stat -c %s "$restored")" = $((256 * 1024 * 1024)) ]
    [ "$restored_kb" -lt 1024 ]
    cmp "$sparse" "$restored"
}

@test "an in-place restore refuses while another process holds a file open under a target, naming it; --force goes on" {
    # sleep never reads it: the redirection only holds the file open, as an app would
    # shellcheck disable=SC2217
    sleep 60 <"$HOME/.openclaw/with space.txt" &
    holder=$!
    run -1 --separate-stderr ocb-restore
    [[ "$stderr" == *"open in other processes (pid $holder (sleep)"* ]]
    jq -e '.error.stage == "pull" and .error.code == 1' <<<"$output"
    all_are old
    no_staging
    run -0 --separate-stderr ocb-restore --to "$BATS_TEST_TMPDIR/elsewhere"  # not in place: no check
    run -0 --separate-stderr ocb-restore --force
    kill "$holder"
    [ "$(cat "$HOME/.config/tool/settings.json")" = v1 ]
}

@test "a restore waits for a held lock (OCB_LOCK_WAIT) and then succeeds; past the wait it is exit 11; ocb-backup never waits" {
    mkdir -p "$OCB_WORK_DIR"
    # the holder: an orphaned backup, say; it lets go after 15 s (a busy machine takes seconds
    # to start each command)
    flock "$OCB_WORK_DIR/.lock" sleep 15 &
    holder=$!
    wait_for 5 test -e "$OCB_WORK_DIR/.lock"
    sleep 0.5
    run -11 --separate-stderr ocb-backup
    run -0 --separate-stderr ocb-restore
    [[ "$stderr" == *"waiting up to 900s (OCB_LOCK_WAIT)"* ]]
    [[ "$stderr" == *"got the lock"* ]]
    # it ran only once the holder was gone (a zombie not yet reaped counts as gone)
    [ ! -e "/proc/$holder" ] || grep -q ') Z ' "/proc/$holder/stat"
    wait "$holder" || true
    [ "$(cat "$HOME/.config/tool/settings.json")" = v1 ]
    flock "$OCB_WORK_DIR/.lock" sleep 30 &
    holder=$!
    wait_for 5 test -e "$OCB_WORK_DIR/.lock"
    sleep 0.5
    OCB_LOCK_WAIT=1s run -11 --separate-stderr ocb-restore
    OCB_LOCK_WAIT=0 run -11 --separate-stderr ocb-restore
    [[ "$stderr" != *"waiting"* ]]
    kill "$holder" 2>/dev/null || true
}

@test "entrypoint.sh --help and --version answer and exit before anything runs" {
    export OCB_RESTORE_DONE_FILE="$BATS_TEST_TMPDIR/done" OCB_RESTORE_SKIPPED_FILE="$BATS_TEST_TMPDIR/skipped"
    touch "$OCB_RESTORE_DONE_FILE"
    for flag in --version --help; do
        run -0 --separate-stderr "$OCB_ROOT/entrypoint.sh" "$flag"
        [ -n "$output" ]
        [ -z "$stderr" ]
        all_are old   # no restore ran
        [ -e "$OCB_RESTORE_DONE_FILE" ]   # nothing was even cleared
    done
    run -0 --separate-stderr "$OCB_ROOT/entrypoint.sh" --version
    [[ "$output" == "entrypoint.sh (ocb) "[0-9]* ]]
}
