#!/usr/bin/env bats
# Hostile archives: crafted snapshots (tests/hostile.py), each published as the latest of four
# stores: a local folder and a test Hub repo, sealed and not. A restore in place must refuse the
# snapshot with exit 4 and say why, or, where the case is a legitimate oddity, restore it. In
# every case nothing is written outside the staging dir: the target, the folder the case aims
# at (with a victim file in it) and everything around them stay exactly as they were.

load test_helper

PASSWORD='hostile test password'

setup_file() {
    hub_setup_file --token ocb-test-token --lfs-threshold 4096
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    export WORLD="$BATS_TEST_TMPDIR/world" OCB_PASSWORD="$PASSWORD"
    export OUTSIDE="$WORLD/outside"
}

VARIANTS="local local-sealed hf hf-sealed"

# reset_world: per variant, a home whose live target holds a file and a link out of it (which
# a restore must not follow either); and the folder escapes aim at, holding a victim file
reset_world() {
    rm -rf "$WORLD"
    mkdir -p "$OUTSIDE"
    printf 'victim\n' >"$OUTSIDE/victim.txt"
    for variant in $VARIANTS; do
        mkdir -p "$WORLD/home-$variant/.openclaw"
        printf 'live\n' >"$WORLD/home-$variant/.openclaw/live.txt"
        ln -s "$OUTSIDE" "$WORLD/home-$variant/.openclaw/link-out"
    done
}

# world_listing: every entry of the world with type, mode, size, mtime, link target and
# content hash; not the mtime of the homes themselves, which a staging dir beside the target
# changes by being created and removed
world_listing() {
    (cd "$WORLD" && find . -printf '%p\t%y\t%m\t%s\t%T@\t%l\n' \
        | awk -F'\t' -v OFS='\t' '$1 ~ /^\.\/home-[^\/]*$/ {$5 = ""} {print}' | LC_ALL=C sort
     find . -type f -exec sha256sum {} + | LC_ALL=C sort)
}

# but_targets: a world listing without the restore targets
but_targets() { grep -v -e '/\.openclaw/' -e $'/\\.openclaw\t'; }

# hostile_case CASE CODE MESSAGE [CHECK]: publish CASE as the latest of four stores (local
# folder and test Hub, sealed and not) and restore each in place, the four at once. Each exit
# must be CODE with MESSAGE on stderr; nothing in the world may change, except, when CODE is 0,
# the restored targets, which CHECK (a function, run with each variant's HOME) looks at.
hostile_case() {
    local case=$1 code=$2 message=$3 check=${4:-} variant status seal_mode
    local repo="ocb-test/hostile-$BATS_TEST_NUMBER-$RANDOM"
    local -A stores=([local]="file://$BATS_TEST_TMPDIR/store-plain" [local-sealed]="file://$BATS_TEST_TMPDIR/store-sealed"
                     [hf]="hf://datasets/$repo-plain" [hf-sealed]="hf://datasets/$repo-sealed")
    reset_world
    "$PYTHON" "$OCB_ROOT/tests/hostile.py" publish "$case" "$OUTSIDE" "${stores[local]}" "${stores[local-sealed]}+sealed" \
        "${stores[hf]}" "${stores[hf-sealed]}+sealed"
    jq -e '.meta.sealed == true' "$BATS_TEST_TMPDIR/store-sealed/latest-backup.json" >/dev/null
    jq -e '.meta.sealed == false' "$BATS_TEST_TMPDIR/store-plain/latest-backup.json" >/dev/null
    world_listing >"$BATS_TEST_TMPDIR/before"
    for variant in $VARIANTS; do
        # the password is set for all four: the unsealed stores are restored unsealed on
        # purpose (a sealed restore refuses unsealed snapshots, seal-store.bats)
        case $variant in *-sealed) seal_mode=auto ;; *) seal_mode=off ;; esac
        (HOME="$WORLD/home-$variant" OCB_STORE=${stores[$variant]} OCB_WORK_DIR="$BATS_TEST_TMPDIR/work-$variant" \
            OCB_CACHE_DIR="$BATS_TEST_TMPDIR/cache-$variant" OCB_SEAL=$seal_mode ocb-restore >"$BATS_TEST_TMPDIR/$variant.json" \
            2>"$BATS_TEST_TMPDIR/$variant.err" && status=0 || status=$?
         echo "$status" >"$BATS_TEST_TMPDIR/$variant.status") 3>&- &
    done
    wait
    for variant in $VARIANTS; do
        status=$(cat "$BATS_TEST_TMPDIR/$variant.status")
        [ "$status" -eq "$code" ] || { echo "[$variant] exit $status, expected $code:" >&2; cat "$BATS_TEST_TMPDIR/$variant.err" >&2; return 1; }
        if [ "$code" -ne 0 ]; then
            grep -qF "ocb-pull: error: " "$BATS_TEST_TMPDIR/$variant.err" && grep -qF -- "$message" "$BATS_TEST_TMPDIR/$variant.err" \
                || { echo "[$variant] no '$message' on stderr:" >&2; cat "$BATS_TEST_TMPDIR/$variant.err" >&2; return 1; }
        elif [ -n "$check" ]; then
            HOME="$WORLD/home-$variant" "$check" || { echo "[$variant] the restored target is not what $case holds" >&2; return 1; }
        fi
    done
    if [ "$code" -eq 0 ]; then
        world_listing | but_targets | diff <(but_targets <"$BATS_TEST_TMPDIR/before") -
    else
        world_listing | diff "$BATS_TEST_TMPDIR/before" -
    fi
}

restored_ok_txt() { [ "$(cat "$HOME/.openclaw/ok.txt")" = "a file that belongs here" ] && [ ! -e "$HOME/.openclaw/live.txt" ]; }

# bats test_tags=matrix
@test "the crafted snapshot of the control case restores on every store, sealed and not" {
    hostile_case benign 0 "" restored_ok_txt
}

# bats test_tags=matrix
@test "a member with an absolute path is refused, nothing written outside" {
    hostile_case absolute-path 4 "absolute path"
}

# bats test_tags=matrix
@test "a member climbing out with .. is refused, nothing written outside" {
    hostile_case dotdot-path 4 "'..' component"
}

# bats test_tags=matrix
@test "a member written through a symlink an earlier member made is refused" {
    hostile_case write-through-member-symlink 4 "written through 'link'"
}

# bats test_tags=matrix
@test "a member written through a symlink an earlier snapshot of the chain made is refused" {
    hostile_case write-through-earlier-snapshot-symlink 4 "written through 'link'"
}

replaced_link_by_file() { [ "$(cat "$HOME/.openclaw/note")" = overwritten ] && [ ! -L "$HOME/.openclaw/note" ]; }

# bats test_tags=matrix
@test "a file that replaces an earlier snapshot's link to a file outside replaces the link, not its target" {
    hostile_case overwrite-file-behind-earlier-symlink 0 "" replaced_link_by_file
}

# bats test_tags=matrix
@test "a root member that is a symlink is refused" {
    hostile_case root-member-is-a-symlink 4 "neither a directory nor a file"
}

# bats test_tags=matrix
@test "a hardlink to an absolute path outside is refused" {
    hostile_case hardlink-absolute 4 "is a hardlink: refused"
}

# bats test_tags=matrix
@test "a hardlink climbing out with .. is refused" {
    hostile_case hardlink-dotdot 4 "is a hardlink: refused"
}

# bats test_tags=matrix
@test "a hardlink even to a member inside the archive is refused" {
    hostile_case hardlink-inside 4 "is a hardlink: refused"
}

# bats test_tags=matrix
@test "a character device member is refused" {
    hostile_case character-device 4 "device, fifo or other special file"
}

# bats test_tags=matrix
@test "a block device member is refused" {
    hostile_case block-device 4 "device, fifo or other special file"
}

# bats test_tags=matrix
@test "a fifo member is refused" {
    hostile_case fifo 4 "device, fifo or other special file"
}

# bats test_tags=matrix
@test "a socket-like member of a type tar readers do not know is refused" {
    hostile_case socket-like-unknown-type 4 "device, fifo or other special file"
}

# bats test_tags=matrix
@test "two members with one name and different types are refused" {
    hostile_case one-name-two-types 4 "two members named"
}

# bats test_tags=matrix
@test "a member name with NUL in it is refused" {
    hostile_case nul-in-name 4 "contains NUL"
}

restored_invalid_utf8() {
    [ "$(cat "$HOME/.openclaw/$(printf '\xc0\xae\xc0\xae')/pwned-$(printf '\xff')")" = inside ]
}

# bats test_tags=matrix
@test "a member named in invalid UTF-8 (an overlong ..) is a plain name: restored byte for byte inside its root" {
    hostile_case invalid-utf8-name 0 "" restored_invalid_utf8
}

# bats test_tags=matrix
@test "a member far larger than the index says is refused after extraction into staging only" {
    hostile_case member-larger-than-index 4 "the index says 25"
}

# bats test_tags=matrix
@test "an index listing a path that climbs out of its root is refused before anything outside is touched" {
    hostile_case index-path-outside-root 4 "'..' component"
}

# bats test_tags=matrix
@test "an index listing a root named outside the roots is refused" {
    hostile_case index-root-outside 4 "outside its roots"
}

# bats test_tags=matrix
@test "an index listing a path under a symlink is refused: checking it never follows the link" {
    hostile_case index-path-under-a-symlink 4 "not one of its directories"
}

# bats test_tags=matrix
@test "a block delta on a path an earlier snapshot made a link to a file outside is refused" {
    hostile_case delta-through-earlier-symlink 4 "Too many levels of symbolic links"
}

# bats test_tags=matrix
@test "a staging path a dead restore left, as a link or holding links, is discarded, never written through" {
    hostile_case benign 0 "" restored_ok_txt
    reset_world
    export HOME="$WORLD/home-local"
    # a root's staging path was its target's name with a dot before and .ocb-staging after
    # (now also a transaction id after it): the next run sweeps both
    mkdir -p "$HOME/..openclaw.ocb-staging"
    ln -s "$OUTSIDE" "$HOME/..openclaw.ocb-staging/link"
    ln -s "$OUTSIDE" "$HOME/..config.ocb-staging"
    world_listing | grep -v ocb-staging >"$BATS_TEST_TMPDIR/before"
    OCB_STORE="file://$BATS_TEST_TMPDIR/store-plain" OCB_SEAL=off run -0 --separate-stderr ocb-restore
    restored_ok_txt
    [ ! -e "$HOME/..openclaw.ocb-staging" ]
    [ ! -L "$HOME/..config.ocb-staging" ]
    [ -z "$(find "$HOME" -maxdepth 1 -name '*.ocb-staging*')" ]
    world_listing | but_targets | diff <(but_targets <"$BATS_TEST_TMPDIR/before") -
}
