"""retention.decide over synthetic timelines (borg test_prune style): the kept set is exactly
the expected one, every kept snapshot's chain is kept whole, and a simulated year of 10-minute
backups under the default policy stays inside the documented bounds."""

from __future__ import annotations

import datetime as dt

import pytest

from ocb import catalog, retention
from ocb.retention import DEFAULT_POLICY, Duration, Policy, decide, parse_duration
from ocb.snapshot import id_second

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Timeline:
    """Catalog entries built as ocb's pushes build them: a full one every `full_every` snapshots
    (or when asked), incrementals on the previous snapshot of the same lineage."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.tip: dict[str, dict] = {}  # lineage -> its last entry

    def add(self, moment: dt.datetime, full: bool, lineage: str = "a") -> dict:
        parent = None if full else self.tip[lineage]
        snapshot_id = id_second(moment)
        while any(e["id"] == snapshot_id for e in self.entries[-3:]):
            snapshot_id += "-2"
        entry = {"id": snapshot_id, "created_at_utc": stamp(moment),
                 "backup_type": "full" if full else "incremental",
                 "parent_id": parent["id"] if parent else None,
                 "chain_id": parent["chain_id"] if parent else snapshot_id,
                 "chain_length": parent["chain_length"] + 1 if parent else 1, "sealed": False,
                 "files": 1, "bytes": 1, "stored_bytes": 1, "volumes": [snapshot_id + ".tar.zst"],
                 "seq": self.entries[-1]["seq"] + 1 if self.entries else 1}
        self.entries.append(entry)
        self.tip[lineage] = entry
        return entry

    def regular(self, start: dt.datetime, step: dt.timedelta, count: int, full_every: int) -> "Timeline":
        for n in range(count):
            self.add(start + n * step, full=n % full_every == 0)
        return self

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.entries]

    @property
    def latest(self) -> str:
        return self.entries[-1]["id"]


def chain_of(entries: list[dict], snapshot_id: str) -> list[str]:
    by_id = {e["id"]: e for e in entries}
    chain = [snapshot_id]
    while by_id[chain[-1]]["parent_id"] is not None:
        chain.append(by_id[chain[-1]]["parent_id"])
    return chain


def assert_chains_whole(entries: list[dict], kept: set[str]) -> None:
    """Every kept snapshot's parent is kept (so, by induction, its whole chain)."""
    for entry in entries:
        if entry["id"] in kept and entry.get("parent_id") is not None:
            assert entry["parent_id"] in kept, f"{entry['id']} is kept without its parent {entry['parent_id']}"


def hourly_60_days(full_every: int = 10) -> Timeline:
    return Timeline().regular(T0, dt.timedelta(hours=1), 60 * 24, full_every)


def expected_from_indices(timeline: Timeline, indices: set[int], full_every: int) -> set[str]:
    """Each index with its chain back to its full one (index - index % full_every)."""
    ids = timeline.ids
    return {ids[j] for i in indices for j in range(i - i % full_every, i + 1)}


# -- the table -----------------------------------------------------------------------------------

def case_single() -> tuple[Timeline, Policy, set[str]]:
    timeline = Timeline()
    timeline.add(T0, full=True)
    return timeline, Policy(last=1), set(timeline.ids)


def case_daily_7_over_60_days() -> tuple[Timeline, Policy, set[str]]:
    # the newest of each of the last 7 days is its 23:00 snapshot; each keeps its chain
    timeline = hourly_60_days()
    days = {24 * d + 23 for d in range(53, 60)}
    return timeline, Policy(daily=7), expected_from_indices(timeline, days, 10)


def case_last_hourly_over_60_days() -> tuple[Timeline, Policy, set[str]]:
    # hourly snapshots: last 5 and hourly 5 pick the same five; their chains reach back to the full
    timeline = hourly_60_days()
    n = len(timeline.ids)
    return timeline, Policy(last=5, hourly=5), expected_from_indices(timeline, set(range(n - 5, n)), 10)


def case_weekly_and_monthly_over_60_days() -> tuple[Timeline, Policy, set[str]]:
    timeline = hourly_60_days()
    index = {e["id"]: n for n, e in enumerate(timeline.entries)}

    def newest(predicate) -> int:  # noqa: ANN001 (a test helper)
        return max(index[e["id"]] for e in timeline.entries if predicate(retention._parse_time(e["created_at_utc"])))

    last = retention._parse_time(timeline.entries[-1]["created_at_utc"])
    weeks = sorted({tuple(retention._parse_time(e["created_at_utc"]).isocalendar()[:2]) for e in timeline.entries})[-3:]
    picks = {newest(lambda t, w=w: tuple(t.isocalendar()[:2]) == w) for w in weeks}
    picks |= {newest(lambda t, m=m: t.month == m) for m in (1, 2)}
    assert last.month == 3  # 60 days from Jan 1: the newest month is March
    picks.add(len(timeline.ids) - 1)  # monthly 3: March's newest is the latest
    return timeline, Policy(weekly=3, monthly=3), expected_from_indices(timeline, picks, 10)


def case_chain_crosses_midnight_week_and_month() -> tuple[Timeline, Policy, set[str]]:
    # Sunday 2026-05-31 20:00 full, incrementals every hour into Monday June 1 (a new day, ISO
    # week and month): monthly 1 keeps the latest, whose chain reaches back into May
    timeline = Timeline()
    start = dt.datetime(2026, 5, 31, 20, tzinfo=UTC)
    old = timeline.add(dt.datetime(2026, 5, 20, tzinfo=UTC), full=True)
    for n in range(8):
        timeline.add(start + dt.timedelta(hours=n), full=n == 0)
    expected = set(timeline.ids) - {old["id"]}
    return timeline, Policy(monthly=1), expected


def case_daily_2_across_midnight() -> tuple[Timeline, Policy, set[str]]:
    # the same timeline, daily 2: Monday's newest (the latest) and Sunday's newest (23:00), one chain
    timeline, _, expected = case_chain_crosses_midnight_week_and_month()
    return timeline, Policy(daily=2), expected


def case_weekly_2_across_week() -> tuple[Timeline, Policy, set[str]]:
    # weekly 2: this ISO week (Monday: the latest, its chain) and last week's newest (Sunday
    # 23:00, in that chain); the week of May 20 is a third week
    timeline, _, expected = case_chain_crosses_midnight_week_and_month()
    return timeline, Policy(weekly=2), expected


def case_weekly_3_across_week() -> tuple[Timeline, Policy, set[str]]:
    timeline, _, _ = case_chain_crosses_midnight_week_and_month()
    return timeline, Policy(weekly=3), set(timeline.ids)


def case_gaps_of_days() -> tuple[Timeline, Policy, set[str]]:
    # buckets are days that hold a snapshot: daily 3 keeps days 1, 5 and 9, not 7..9
    timeline = Timeline()
    for day in (0, 1, 5, 9, 10):
        timeline.add(T0 + dt.timedelta(days=day), full=True)
    ids = timeline.ids
    return timeline, Policy(daily=3), {ids[2], ids[3], ids[4]}


def case_gap_inside_a_chain() -> tuple[Timeline, Policy, set[str]]:
    # a chain that spans a gap of three days: daily 1 keeps its newest and the whole chain
    timeline = Timeline()
    timeline.add(T0, full=True)
    timeline.add(T0 + dt.timedelta(hours=1), full=True)
    timeline.add(T0 + dt.timedelta(days=3), full=False)
    timeline.add(T0 + dt.timedelta(days=3, hours=1), full=False)
    return timeline, Policy(daily=1), set(timeline.ids[1:])


def case_clock_stepped_back() -> tuple[Timeline, Policy, set[str]]:
    # published 10:00 (full), 11:00 (full), then 10:30 (incremental on 11:00) after the clock
    # went back: last 1 is the newest by time (11:00); the latest by publish order is kept too
    timeline = Timeline()
    a = timeline.add(T0.replace(hour=10), full=True)
    b = timeline.add(T0.replace(hour=11), full=True)
    c = timeline.add(T0.replace(hour=10, minute=30), full=False)
    del a
    return timeline, Policy(last=1), {b["id"], c["id"]}


def case_two_lineages_both_kept() -> tuple[Timeline, Policy, set[str]]:
    # lineage a: full + 2 incrementals; lineage b (a container that diverged) starts a full
    # between them: last 2 keeps the newest of each, and each one's chain
    timeline = Timeline()
    timeline.add(T0, full=True, lineage="a")
    timeline.add(T0 + dt.timedelta(minutes=10), full=False, lineage="a")
    timeline.add(T0 + dt.timedelta(minutes=15), full=True, lineage="b")
    timeline.add(T0 + dt.timedelta(minutes=20), full=False, lineage="a")
    timeline.add(T0 + dt.timedelta(minutes=25), full=False, lineage="b")
    return timeline, Policy(last=2), set(timeline.ids)


def case_two_lineages_one_dropped() -> tuple[Timeline, Policy, set[str]]:
    # the same, last 1: only lineage b (the latest) is kept, until then both were restorable
    timeline, _, _ = case_two_lineages_both_kept()
    ids = timeline.ids
    return timeline, Policy(last=1), {ids[2], ids[4]}


def case_within() -> tuple[Timeline, Policy, set[str]]:
    # within 1d of the newest snapshot (not of now): the last 24 hourly ones, and their chains
    timeline = hourly_60_days()
    n = len(timeline.ids)
    return timeline, Policy(within=Duration(days=1)), expected_from_indices(timeline, set(range(n - 25, n)), 10)


def case_yearly() -> tuple[Timeline, Policy, set[str]]:
    timeline = Timeline()
    for year in (2023, 2024, 2025):
        for month in (3, 9):
            timeline.add(dt.datetime(year, month, 1, tzinfo=UTC), full=True)
    ids = timeline.ids
    return timeline, Policy(yearly=2), {ids[3], ids[5]}


def case_from_listing_kept() -> tuple[Timeline, Policy, set[str]]:
    # snapshots seeded from a listing (a store from before catalogs) carry no chain: kept
    timeline = Timeline()
    seeded = catalog.seed([id_second(T0), id_second(T0 + dt.timedelta(hours=1))])["snapshots"]
    timeline.entries = [dict(e) for e in seeded]
    timeline.tip = {}
    later = timeline.add(T0 + dt.timedelta(days=1), full=True)
    return timeline, Policy(last=1), set(timeline.ids) | {later["id"]}


CASES = [case_single, case_daily_7_over_60_days, case_last_hourly_over_60_days, case_weekly_and_monthly_over_60_days,
         case_chain_crosses_midnight_week_and_month, case_daily_2_across_midnight, case_weekly_2_across_week, case_weekly_3_across_week,
         case_gaps_of_days, case_gap_inside_a_chain, case_clock_stepped_back, case_two_lineages_both_kept,
         case_two_lineages_one_dropped, case_within, case_yearly, case_from_listing_kept]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_the_policy_keeps_exactly_the_expected_snapshots_and_whole_chains(case):
    timeline, policy, expected = case()
    decision = decide(timeline.entries, policy, timeline.latest)
    kept = set(decision.keep)
    assert kept == expected, f"extra {sorted(kept - expected)}, missing {sorted(expected - kept)}"
    assert set(decision.remove) == set(timeline.ids) - expected
    assert decision.remove == [i for i in timeline.ids if i not in expected]  # catalog order
    assert timeline.latest in kept and "latest" in decision.keep[timeline.latest]
    assert_chains_whole([e for e in timeline.entries if "parent_id" in e], {k for k in kept if k in
                        {e["id"] for e in timeline.entries if "parent_id" in e}})
    assert all(decision.keep[k] for k in kept) and not decision.broken


def test_kept_because_names_each_rule_and_the_chain():
    timeline = Timeline()
    full = timeline.add(T0, full=True)
    timeline.add(T0 + dt.timedelta(hours=1), full=False)
    latest = timeline.add(T0 + dt.timedelta(hours=2), full=False)
    decision = decide(timeline.entries, Policy(last=1, daily=1), latest["id"])
    assert decision.keep[latest["id"]] == ["last #1", "daily #1", "latest"]
    assert decision.keep[full["id"]] == [f"chain of {latest['id']}"]


def test_the_latest_is_kept_whatever_the_policy_and_a_missing_parent_is_reported():
    timeline = Timeline()
    timeline.add(T0, full=True)
    latest = timeline.add(T0 + dt.timedelta(hours=1), full=False)
    orphan = dict(latest, id=id_second(T0 + dt.timedelta(hours=2)), parent_id=id_second(T0 - dt.timedelta(days=1)),
                  seq=3)
    entries = timeline.entries + [orphan]
    decision = decide(entries, Policy(last=1), latest["id"])
    assert set(decision.keep) == {timeline.entries[0]["id"], latest["id"], orphan["id"]}
    assert decision.broken == [orphan["id"]]


@pytest.mark.parametrize("text, duration, canonical", [
    ("2d", Duration(days=2), "2d"), ("36h", Duration(hours=36), "36h"), ("1y6m", Duration(1, 6), "1y6m"),
    ("1y2m3d4h", Duration(1, 2, 3, 4), "1y2m3d4h"), ("0d", Duration(), "0h"),
])
def test_durations_read_as_restic_writes_them(text, duration, canonical):
    assert parse_duration(text) == duration and str(duration) == canonical


@pytest.mark.parametrize("text", ["", "2", "d", "2w", "1h2d", "-1d", "1.5d", "2 d"])
def test_a_bad_duration_is_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_months_go_by_the_calendar():
    assert Duration(months=1).before(dt.datetime(2026, 3, 31, tzinfo=UTC)) == dt.datetime(2026, 2, 28, tzinfo=UTC)
    assert Duration(years=1).before(dt.datetime(2028, 2, 29, tzinfo=UTC)) == dt.datetime(2027, 2, 28, tzinfo=UTC)
    assert Duration(days=1, hours=1).before(dt.datetime(2026, 3, 1, tzinfo=UTC)) == dt.datetime(2026, 2, 27, 23,
                                                                                                tzinfo=UTC)


def test_an_empty_policy_is_empty():
    assert Policy().empty and not Policy(within=Duration(hours=1)).empty and not DEFAULT_POLICY.empty


# -- a year of 10-minute backups under the default policy ------------------------------------

# The bounds README documents (section Retention), from this simulation: the default policy,
# a backup every 10 minutes, a full one after 10 incrementals (OCB_FULL_EVERY), one volume per
# snapshot, a prune after each full (OCB_PRUNE_EVERY=full).
MAX_KEPT = 410
MAX_FOLDER_ENTRIES = 2 * MAX_KEPT + 2 * 11


def simulate_year(policy: Policy, full_every: int = 10, days: int = 365) -> dict:
    entries: list[dict] = []
    tip: dict | None = None
    most_kept = most_entries = prunes = 0
    step = dt.timedelta(minutes=10)
    for n in range(days * 24 * 6):
        moment = T0 + n * step
        full = tip is None or tip["chain_length"] > full_every
        snapshot_id = id_second(moment)
        entry = {"id": snapshot_id, "created_at_utc": stamp(moment), "backup_type": "full" if full else "incremental",
                 "parent_id": None if full else tip["id"], "chain_length": 1 if full else tip["chain_length"] + 1,
                 "seq": n + 1}
        entries.append(entry)
        tip = entry
        # the folder before the prune: a meta and a volume per snapshot
        most_entries = max(most_entries, 2 * len(entries))
        if full:
            decision = decide(entries, policy, snapshot_id)
            kept = set(decision.keep)
            assert_chains_whole(entries, kept)
            entries = [e for e in entries if e["id"] in kept]
            most_kept = max(most_kept, len(entries))
            prunes += 1
    return {"most_kept": most_kept, "most_entries": most_entries, "prunes": prunes, "kept_at_end": len(entries)}


def test_a_year_of_ten_minute_backups_stays_inside_the_documented_bounds():
    result = simulate_year(DEFAULT_POLICY)
    print(f"year under the default policy: {result}")
    assert result["most_kept"] <= MAX_KEPT
    assert result["most_entries"] <= MAX_FOLDER_ENTRIES < 10_000
    assert result["prunes"] == 365 * 24 * 6 // 11 + 1
