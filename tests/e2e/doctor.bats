#!/usr/bin/env bats
# ocb-doctor: each problem it knows, in a set-up made to have it, with its fix; a healthy
# set-up passes, on both stores.

load test_helper

TOKEN=ocb-doctor-token

setup_file() {
    hub_setup_file --token "$TOKEN" --read-only-token ocb-doctor-read --lfs-threshold 4096
}

teardown_file() {
    store_teardown_file
}

setup() {
    ocb_setup
    on_store local
    "$PYTHON" "$TREE" generate "$HOME/.openclaw" 10 2
    mkdir -p "$HOME/.ssh" && printf 'secret key\n' >"$HOME/.ssh/id_ed25519"
}

teardown() {
    hub_clear_faults
}

on_store() {
    use_store "$1"
    export HF_TOKEN="$TOKEN"
}

# doctor_fails CODE CHECK [ARGS]: ocb-doctor exits CODE, its document names CHECK as a problem with a fix
doctor_fails() {
    run "-$1" --separate-stderr ocb-doctor "${@:3}"
    assert_doc_error doctor "$1" <(printf '%s\n' "$output")
    jq -e --arg c "$2" '[.doctor.problems[] | select(.name == $c and (.fix | length > 0))] | length >= 1' <<<"$output"
    [[ "$stderr" == *"error: $2: "*"(fix: "* ]]
}

@test "a healthy set-up passes every check on both stores, the password checked without a download" {
    export OCB_PASSWORD=doctor-secret
    for store in local hf; do
        on_store "$store"
        run -0 --separate-stderr ocb-doctor
        jq -e '.kind == "doctor" and .doctor.problems == []' <<<"$output"
        [[ "$stderr" == *"does not exist yet: the first backup creates it"* ]]
        backup_ok
        id=$(last_id)
        [ "$store" = local ] || hub_post /__hub/stats/reset '{}' >/dev/null
        run -0 --separate-stderr ocb-doctor
        jq -e '.doctor.problems == [] and ([.doctor.checks[].name] | unique
            == ["disk", "limits", "password", "private", "sealed", "sources", "store", "token"])' <<<"$output"
        [[ "$stderr" == *"password: ok: the password opens the latest snapshot $id"* ]]
        if [ "$store" = hf ]; then
            [[ "$stderr" == *"private: ok: the repo is private"* ]]
            [[ "$stderr" == *"token: ok: may write"*"the token's role is write"* ]]
            jq -e '.doctor.limits.entries_per_folder == {"used": 2, "limit": 10000}' <<<"$output"
            # the seal header only: far fewer bytes than the volume
            size=$(jq '.volumes.files[0].size' "$BATS_TEST_TMPDIR/last.json")
            hub_get /__hub/stats | jq -e --argjson v "$size" '.downloaded_bytes < $v'
        fi
    done
}

@test "a refused token and a read-only token are exit 13 with their fix" {
    on_store hf
    backup_ok
    HF_TOKEN=not-a-token doctor_fails 13 token
    [[ "$stderr" == *"refused the token"* ]]
    HF_TOKEN=ocb-doctor-read doctor_fails 13 token
    [[ "$stderr" == *"the token's role is read"* ]]
    HF_TOKEN='' doctor_fails 13 token
}

@test "an unreachable store is exit 14" {
    on_store hf
    HF_ENDPOINT=http://127.0.0.1:9 OCB_RETRY_SECONDS=0 doctor_fails 14 store
}

@test "unsealed snapshots of ~/.ssh bound for a public repo are refused with exit 2; sealed, a warning" {
    on_store hf
    export OPENCLAW_BACKUP_PRIVATE=false
    doctor_fails 2 private
    [[ "$stderr" == *"refused: the next backup would put unsealed snapshots of $HOME/.ssh into a public repo"* ]]
    OCB_PASSWORD=doctor-secret backup_ok
    OCB_PASSWORD=doctor-secret run -0 --separate-stderr ocb-doctor
    jq -e '[.doctor.warnings[] | select(.name == "private")] | length == 1' <<<"$output"
    # the repo is public now, whatever OCB_PRIVATE says
    unset OPENCLAW_BACKUP_PRIVATE
    OCB_PASSWORD=doctor-secret OCB_SEAL=off doctor_fails 2 private
    [[ "$stderr" == *"into the public repo"* ]]
}

@test "a sealed latest snapshot without its password is exit 2, with a wrong one exit 4, on both stores" {
    for store in local hf; do
        on_store "$store"
        OCB_PASSWORD=doctor-secret backup_ok
        doctor_fails 2 password
        [[ "$stderr" == *"is sealed and no password is set"* ]]
        OCB_PASSWORD=not-it doctor_fails 4 password
        [[ "$stderr" == *"the password does not open the latest snapshot"* ]]
    done
}

@test "a missing state dir is exit 2" {
    OCB_STATE_DIR="$BATS_TEST_TMPDIR/no-such-state" doctor_fails 2 sources
    [[ "$stderr" == *"no-such-state does not exist"* ]]
}

@test "a work dir with less free space than the largest volume is a problem" {
    command -v unshare >/dev/null && unshare -m true 2>/dev/null || skip "no mount namespaces here"
    head -c 300000 /dev/urandom >"$HOME/.openclaw/big.bin"
    backup_ok
    mkdir -p "$OCB_WORK_DIR"
    run -1 --separate-stderr unshare -m sh -c 'mount -t tmpfs -o size=64k tmpfs "$OCB_WORK_DIR" && exec ocb-doctor'
    assert_doc_error doctor 1 <(printf '%s\n' "$output")
    [[ "$stderr" == *"error: disk: "*"the largest volume is"*"(fix: "* ]]
}

@test "an unsealed snapshot planted after sealed ones is exit 4" {
    export OCB_PASSWORD=doctor-secret
    backup_ok
    printf 'more\n' >>"$HOME/.openclaw/more.txt"
    sleep 1
    OCB_SEAL=off backup_ok
    doctor_fails 4 sealed
    [[ "$stderr" == *"$(last_id) is not sealed"* ]]
}
