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

load test_helper

setup() {
    ocb_setup
    command -v strace >/dev/null || skip "strace is not installed"
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
    for r in $ROOTS; do manifest "$HOME/$r" | diff -q "$BATS_TEST_TMPDIR/old$r" - >/dev/null; done
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

# which_state ROOT: old or new, or fail
which_state() {
    manifest "$HOME/$1" >"$BATS_TEST_TMPDIR/now"
    if diff -q "$BATS_TEST_TMPDIR/new$1" "$BATS_TEST_TMPDIR/now" >/dev/null; then echo new
    elif diff -q "$BATS_TEST_TMPDIR/old$1" "$BATS_TEST_TMPDIR/now" >/dev/null; then echo old
    else echo "$1 is neither wholly old nor wholly new:" >&2; diff "$BATS_TEST_TMPDIR/old$1" "$BATS_TEST_TMPDIR/now" >&2; return 1
    fi
}

# all_are STATE: every root is wholly STATE
all_are() {
    local r s
    for r in $ROOTS; do s=$(which_state "$r") || return 1; [ "$s" = "$1" ] || { echo "$r is $s, not $1" >&2; return 1; }; done
}

# no_staging: no staging or old tree beside or inside any root, and no journal
no_staging() {
    [ -z "$(find "$HOME" -maxdepth 2 -name '*ocb-staging*' -o -maxdepth 2 -name '*ocb-old*')" ] || {
        echo "left behind:" >&2; find "$HOME" -maxdepth 2 -name '*ocb-*' >&2; return 1; }
    [ ! -e "$OCB_WORK_DIR/restore-journal.json" ]
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
        states=""
        for r in $ROOTS; do states="$states $(which_state "$r")" || { echo "after the kill at $syscall $n" >&2; return 1; }; done
        case "$states" in *old*new* | *new*old*) seen_mixed=1 ;; esac
        # a staging tree a dead run left is private (0700), unless it is the old tree put aside
        for left in $(find "$HOME" -maxdepth 1 -name '*.ocb-staging.*' -type d); do
            name=${left##*/} && r=${name%%.ocb-staging.*} && r=${r#.}
            [ "$(stat -c %a "$left")" = 700 ] || [ "$(stat -c %i "$left")" = "$(cat "$BATS_TEST_TMPDIR/ino$r")" ] \
                || { echo "kill point $n: $left ($(stat -c "%a %i" "$left"), old $(cat "$BATS_TEST_TMPDIR/ino$r")) is not 0700 and not the old $r" >&2; cat "$OCB_WORK_DIR/restore-journal.json" >&2; return 1; }
        done
        if [ $((n % 2)) -eq 1 ]; then
            # a backup first finishes or rolls back, and publishes a wholly old or wholly new state
            backup_ok
            after=""
            for r in $ROOTS; do after="$after $(which_state "$r")"; done
            case "$after" in *old*new* | *new*old*) echo "mixed after the backup: $after" >&2; return 1 ;; esac
            grep -q 'rolled back' "$BATS_TEST_TMPDIR/last.err" && seen_rollback=1
            grep -q 'completed it' "$BATS_TEST_TMPDIR/last.err" && seen_complete=1
            if ! jq -e .skip "$BATS_TEST_TMPDIR/last.json" >/dev/null; then
                rm -rf "$BATS_TEST_TMPDIR/r"
                ocb-restore --to "$BATS_TEST_TMPDIR/r" >/dev/null 2>&1
                for r in $ROOTS; do
                    # the snapshot holds the tree as it was, minus what the excludes leave out
                    "$PYTHON" - "$TREE" "$BATS_TEST_TMPDIR/r/$r" "$HOME/$r" <<'EOF_PY'
import subprocess, sys, json
def m(p): return [json.loads(l) for l in subprocess.run([sys.executable, sys.argv[1], "manifest", p], capture_output=True, text=True, check=True).stdout.splitlines()]
skip = ("logs", "node_modules")
def keep(e): return not any(part in skip for part in e["path"].split("/"))
got = [e for e in m(sys.argv[2]) if e["path"] != ""]
want = [e for e in m(sys.argv[3]) if keep(e) and e["path"] != ""]
for e in got + want: e.pop("mtime_ns") if e["type"] == "dir" else None
assert got == want, (sys.argv[2], [e for e in got if e not in want][:3], [e for e in want if e not in got][:3])
EOF_PY
                done
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
    run -0 in_mount_ns '
        m() { "$PYTHON" "$TREE" manifest "$1"; }
        "$PYTHON" "$TREE" generate "$HOME/.openclaw" 40 2
        mkdir "$HOME/.openclaw/logs" && printf "log\n" >"$HOME/.openclaw/logs/a.log"
        ocb-backup >/dev/null 2>"$BATS_TEST_TMPDIR/b.err" || { cat "$BATS_TEST_TMPDIR/b.err"; exit 1; }
        m "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/new"
        printf "old\n" >"$HOME/.openclaw/only-old" && rm -r "$HOME/.openclaw/dir01"
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
            # the next backup finishes or rolls back first: wholly old or wholly new
            ocb-backup >/dev/null 2>"$BATS_TEST_TMPDIR/b.err" || { cat "$BATS_TEST_TMPDIR/b.err"; exit 1; }
            m "$HOME/.openclaw" >"$BATS_TEST_TMPDIR/now"
            if cmp -s "$BATS_TEST_TMPDIR/now" "$BATS_TEST_TMPDIR/new"; then state=new
            elif cmp -s "$BATS_TEST_TMPDIR/now" "$BATS_TEST_TMPDIR/old"; then state=old
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
