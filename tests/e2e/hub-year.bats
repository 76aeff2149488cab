#!/usr/bin/env bats
# A year of 10-minute backups against the test Hub in compressed time, thinned to fit the
# suite: tests/hub/year.py runs the real ocb-backup (every default: the retention policy, its
# auto-prune after each full backup, OCB_SQUASH_COMMITS) under libfaketime, one window of two
# backups 10 minutes apart (23:50 and 00:00: two hours, two days) every 14 days for 365 days:
# 54 backups, 54 hours, 54 days, 27 ISO weeks, 13 months, so every rule of the policy (last 24,
# hourly 48, daily 14, weekly 8, monthly 12) has more to choose from than it keeps. A backup
# costs ~2-3 s here (five Python stages), so the full year (52,560 backups) is ~29 h:
# `make year` runs a denser one (docs/hub.md has its figures). Asserted: no backup or prune
# failed (no folder limit, no quota hit), the store's snapshots, folder entries and commits stay
# under bounds drawn from the settings, the Hub stores no LFS byte that no kept file references,
# requests per backup do not grow with the store, and 12 snapshots spread over those left
# (oldest to newest) restore exactly (`make year` restores every one).

load test_helper

setup() {
    ocb_setup
}

@test "a thinned year of backups on the test Hub stays within the Hub's limits and the snapshots left restore exactly" {
    figures=$BATS_TEST_TMPDIR/year.json
    # a private-storage quota on the namespace: crossing it would fail a backup with the Hub's 403
    # 12 of the ~50 snapshots left are restored (the oldest, the newest, fulls and incrementals
    # between): restoring all of them took as long as the year's backups; make year restores all
    "$PYTHON" "$OCB_ROOT/tests/hub/year.py" --dir "$BATS_TEST_TMPDIR/year" --days 365 --every 14 --window 2 \
        --quota $((64 * 1024 * 1024)) --restore-sample 12 >"$figures" 2>"$BATS_TEST_TMPDIR/year.err" || {
        cat "$BATS_TEST_TMPDIR/year.err"; return 1; }
    jq -c '{backups, full, prunes, removed_snapshots, squashes, final, max, requests: .requests_per_backup.all,
        restore: (.restore | del(.mismatched)), seconds}' "$figures" | sed 's/^/# /' >&3
    # every backup and every prune after one succeeded, and the policy had something to remove
    jq -e '.failed == null and .backups == .schedule.planned and .backups == 54
        and .prunes > 0 and .removed_snapshots > 0 and .reclaimed_bytes > 0' "$figures"
    # the bounds, from the settings the stages used: what the policy keeps (each kept snapshot
    # with its chain, at most full_every + 1 long) plus the chain grown since the last prune;
    # two entries per snapshot (its meta and its one volume: no leftovers), far under the Hub's
    # 10,000; commits at most the squash threshold plus what lands between two prunes
    jq -e '.settings as $s | ($s.full_every + 1) as $chain
        | ($s.keep_last + $s.keep_hourly + $s.keep_daily + $s.keep_weekly + $s.keep_monthly + $s.keep_yearly) as $rules
        | all(.rows[]; .snapshots <= ($rules + 1) * $chain and .folder_entries == 2 * .snapshots
              and .folder_entries < 10000 and .commits <= $s.squash_commits + $chain + 2)' "$figures"
    # storage: after every backup the Hub holds exactly the LFS bytes the kept files reference,
    # and what it holds at the end is what was uploaded less what the prunes deleted for good
    jq -e 'all(.rows[]; .lfs_bytes == .lfs_bytes_at_head)
        and .final.lfs_bytes == .uploaded_bytes - .reclaimed_bytes' "$figures"
    jq -e '.max.private_bytes < .schedule.quota' "$figures"
    # requests per backup do not grow with the store: an incremental of the second half of the
    # year needs no more than the most one of the first half needed
    jq -e '[.rows[] | select(.type == "incremental")] as $inc | ($inc | length / 2 | floor) as $half
        | ($inc[$half:] | map(.requests) | max) <= ($inc[:$half] | map(.requests) | max)' "$figures"
    # 12 snapshots the store holds, spread from its oldest to its newest, restored with
    # ocb-restore --id, each matching, entry by entry, the manifest saved when it was made
    jq -e '.restore.snapshots == .final.snapshots and .restore.sampled == 12 and .restore.checked == 12
        and .restore.equal == 12 and .restore.mismatched == []' "$figures"
}
