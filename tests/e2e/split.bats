#!/usr/bin/env bats
# ocb-split: volumes of the planned size, each with its sha256, that join back into the archive;
# the volume size of the document, not of the environment; bad documents; pass-through.

load test_helper

setup() {
    ocb_setup
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 40 5
    head -c 300000 /dev/urandom >"$HOME/.openclaw/bulk.bin"   # incompressible: several volumes
}

# sealed_doc: the document ocb-split reads (ocb-seal's), kept in $BATS_TEST_TMPDIR/seal.json
sealed_doc() {
    ocb-plan 2>/dev/null | ocb-pack 2>/dev/null | ocb-seal >"$BATS_TEST_TMPDIR/seal.json" 2>/dev/null
    assert_doc_ok "$BATS_TEST_TMPDIR/seal.json"
}

# the file ocb-split cuts: the sealed archive, or the archive when nothing was sealed
source_of() { jq -r '(if .seal.sealed then .seal else .archive end) | .path' "$1"; }

@test "ocb-split --help says what it reads and writes" {
    run -0 --separate-stderr ocb-split --help
    [[ "$output" == *"Usage: "*"ocb-split"* ]]
    for word in Reads: Writes: volumes sha256 "Exit status"; do
        [[ "$output" == *"$word"* ]] || { echo "--help lacks $word" >&2; return 1; }
    done
    grep -q 'ocb-split' "$OCB_ROOT/README.md"
}

@test "split cuts the archive into volumes of OCB_VOLUME_SIZE, each with its sha256, that join back into it" {
    OCB_VOLUME_SIZE=64K sealed_doc
    id=$(jq -r .id "$BATS_TEST_TMPDIR/seal.json")
    archive_sha=$(sha256sum <"$(source_of "$BATS_TEST_TMPDIR/seal.json")" | cut -d' ' -f1)
    archive_size=$(stat -c %s "$(source_of "$BATS_TEST_TMPDIR/seal.json")")
    [ "$archive_size" -gt $((3 * 65536)) ]
    run -0 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/seal.json"
    echo "$output" >"$BATS_TEST_TMPDIR/split.json"
    assert_doc_ok "$BATS_TEST_TMPDIR/split.json"
    # every section before it is still there, unchanged
    jq -e --slurpfile before "$BATS_TEST_TMPDIR/seal.json" 'del(.volumes) == $before[0]' "$BATS_TEST_TMPDIR/split.json"
    jq -e --argjson n "$archive_size" --arg id "$id" '.volumes.volume_size == 65536
        and (.volumes.files | length) == (($n + 65535) / 65536 | floor)
        and ([.volumes.files[].size] | add) == $n
        and ([.volumes.files[:-1][].size] | all(. == 65536)) and .volumes.files[-1].size <= 65536
        and ([.volumes.files[].name] == [range(1; (.volumes.files | length) + 1)
             | "\($id).tar.zst.part-\(tostring | ("000" + .)[-4:])"])' "$BATS_TEST_TMPDIR/split.json"
    # each volume is what the document says, in the work dir, and in order they are the archive
    while IFS=$'\t' read -r path size sha; do
        [[ "$path" == "$OCB_WORK_DIR/$id/"* ]]
        [ "$(stat -c %s "$path")" -eq "$size" ]
        [ "$(sha256sum <"$path" | cut -d' ' -f1)" = "$sha" ]
    done < <(jq -r '.volumes.files[] | [.path, .size, .sha256] | @tsv' "$BATS_TEST_TMPDIR/split.json")
    joined=$(jq -r '.volumes.files[].path' "$BATS_TEST_TMPDIR/split.json" | xargs -d '\n' cat | sha256sum | cut -d' ' -f1)
    [ "$joined" = "$archive_sha" ]
}

@test "an archive that fits in one volume is that one volume, under the archive's name" {
    sealed_doc
    run -0 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/seal.json"
    jq -e '(.volumes.files | length) == 1 and .volumes.files[0].name == "\(.id).tar.zst"
        and .volumes.volume_size == 1073741824
        and .volumes.files[0].size == .archive.size and .volumes.files[0].sha256 == .archive.sha256' <<<"$output"
}

@test "split cuts at the volume size the plan wrote, whatever OCB_VOLUME_SIZE says when it runs" {
    OCB_VOLUME_SIZE=64K sealed_doc
    OCB_VOLUME_SIZE=1G run -0 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/seal.json"
    jq -e '.volumes.volume_size == 65536 and (.volumes.files | length) > 1' <<<"$output"
    rm -rf "$OCB_WORK_DIR"
    sealed_doc
    OCB_VOLUME_SIZE=64K run -0 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/seal.json"
    jq -e '(.volumes.files | length) == 1' <<<"$output"
    OCB_VOLUME_SIZE=nonsense run -0 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/seal.json"
}

@test "split refuses bad documents with exit 3 and a changed archive with exit 4, naming the problem" {
    run -3 --separate-stderr ocb-split </dev/null
    [[ "$stderr" == *"empty input"* ]]
    echo "$output" >"$BATS_TEST_TMPDIR/doc.json"
    assert_doc_error split 3 "$BATS_TEST_TMPDIR/doc.json"
    run -3 --separate-stderr ocb-split <<<'{"ocb": 1, "kind": "restore"}'
    run -3 --separate-stderr ocb-split <<<'{"ocb": 7, "kind": "backup"}'
    sealed_doc
    jq 'del(.archive) | del(.seal)' "$BATS_TEST_TMPDIR/seal.json" >"$BATS_TEST_TMPDIR/no-archive.json"
    run -3 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/no-archive.json"
    [[ "$stderr" == *"archive"* ]]
    jq '.archive.path = "/etc/passwd" | .seal.path = "/etc/passwd"' "$BATS_TEST_TMPDIR/seal.json" >"$BATS_TEST_TMPDIR/outside.json"
    run -3 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/outside.json"
    [[ "$stderr" == *"outside the work dir"* ]]
    # the archive grew since ocb-pack wrote the document: an integrity error
    source=$(source_of "$BATS_TEST_TMPDIR/seal.json")
    printf 'x' >>"$source"
    run -4 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/seal.json"
    [[ "$stderr" == *"$source"* ]]
    rm "$source"
    run -3 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/seal.json"
    [[ "$stderr" == *"is gone"* ]]
    [ -z "$(find "$OCB_WORK_DIR" -name '*.part-*')" ]
}

@test "split passes an error document on with its code, and a skip document with 0, both untouched" {
    printf '%s\n' '{"ocb": 1, "kind": "backup", "error": {"stage": "seal", "code": 4, "message": "wrong password"}, "later": {"x": 1}}' \
        >"$BATS_TEST_TMPDIR/error.json"
    run -4 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/error.json"
    diff <(jq -S . "$BATS_TEST_TMPDIR/error.json") <(jq -S . <<<"$output")
    backup_ok
    ocb-plan >"$BATS_TEST_TMPDIR/skip.json" 2>/dev/null   # nothing changed since
    jq -e '.skip != null' "$BATS_TEST_TMPDIR/skip.json"
    run -0 --separate-stderr ocb-split <"$BATS_TEST_TMPDIR/skip.json"
    diff <(jq -S . "$BATS_TEST_TMPDIR/skip.json") <(jq -S . <<<"$output")
    [ -z "$(find "$OCB_WORK_DIR" -name '*.tar.zst*')" ]
}
