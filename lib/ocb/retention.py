"""Retention: which snapshots a policy keeps, and why. Pure: catalog entries in, a decision out.

The one owner of the policy's meaning (restic's): snapshots are taken newest first (by their
time, then publish order); `last N` keeps the N newest; `hourly/daily/weekly/monthly/yearly N`
keep the newest snapshot of each of the N newest hours, days, ISO weeks, months, years (UTC)
that hold one; `within D` keeps every snapshot taken within D of the newest one. On top of
that (chain safety): the latest snapshot (the pointer's) is always kept, and a kept snapshot
keeps every ancestor back to its full snapshot, so whatever is kept stays restorable. Entries
seeded from a listing before catalogs existed (`from_listing`) carry no chain: they are kept.

Each kept snapshot says why (borg's `kept_because`): its own rules ("last #1", "daily #3",
"within 2d", "latest"), or "chain of ID" for an ancestor kept for a newer snapshot.

No I/O, no clock, no printing: the stage reads the catalog and carries out the decision.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import re
from dataclasses import dataclass, fields

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?$")
BUCKETS = ("hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class Duration:
    """restic's duration: years, months, days, hours (`1y6m`, `14d`, `36h`), by the calendar."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def before(self, moment: dt.datetime) -> dt.datetime:
        """`moment` less this duration (months by the calendar, the day clamped to the month)."""
        month_index = moment.year * 12 + (moment.month - 1) - self.years * 12 - self.months
        year, month = divmod(month_index, 12)
        if year < 1:
            return dt.datetime.min.replace(tzinfo=moment.tzinfo)
        day = min(moment.day, _days_in_month(year, month + 1))
        shifted = moment.replace(year=year, month=month + 1, day=day)
        try:
            return shifted - dt.timedelta(days=self.days, hours=self.hours)
        except OverflowError:
            return dt.datetime.min.replace(tzinfo=moment.tzinfo)

    def __str__(self) -> str:
        text = "".join(f"{n}{unit}" for n, unit in ((self.years, "y"), (self.months, "m"),
                                                    (self.days, "d"), (self.hours, "h")) if n)
        return text or "0h"

    @property
    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)


def _days_in_month(year: int, month: int) -> int:
    following = dt.date(year + (month == 12), month % 12 + 1, 1)
    return (following - dt.timedelta(days=1)).day


def parse_duration(text: str) -> Duration:
    """`1y2m3d4h` (any of the parts, in that order) -> Duration; ValueError saying what is wrong."""
    match = DURATION.match(text.strip()) if text.strip() else None
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 2d, 36h, 1m15d or 1y (years, months, days, hours)")
    return Duration(*(int(part or 0) for part in match.groups()))


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration = Duration()

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self) if f.name != "within") and self.within.zero

    def __str__(self) -> str:
        parts = [f"{f.name} {getattr(self, f.name)}" for f in fields(self) if f.name != "within" and getattr(self, f.name)]
        if not self.within.zero:
            parts.append(f"within {self.within}")
        return ", ".join(parts) or "nothing"


# The documented default (README, Retention): with one backup every 10 minutes and a full one
# every 11 (the OCB_FULL_EVERY default), a year keeps at most ~660 snapshots (the year simulated
# in tests/unit/test_retention.py).
DEFAULT_POLICY = Policy(last=24, hourly=48, daily=14, weekly=8, monthly=12)


@dataclass(frozen=True)
class Decision:
    """What to keep (id -> why, in catalog order) and what to remove (catalog order).

    `broken`: kept snapshots whose chain has a link the catalog does not list (their chain
    was broken before this decision; nothing here can mend it)."""

    keep: dict[str, list[str]]
    remove: list[str]
    broken: list[str]


@functools.lru_cache(maxsize=65536)
def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, UTC_FORMAT).replace(tzinfo=dt.timezone.utc)


def _bucket_start(rule: str, t: dt.datetime) -> dt.datetime:
    """The first moment of the hour, day, ISO week, month or year (UTC) that `t` falls in."""
    if rule == "hourly":
        return t.replace(minute=0, second=0, microsecond=0)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if rule == "daily":
        return day
    if rule == "weekly":
        return day - dt.timedelta(days=t.weekday())  # ISO weeks start on Monday
    if rule == "monthly":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def decide(entries: list[dict], policy: Policy, latest: str | None) -> Decision:
    """The decision for catalog `entries` (publish order) under `policy`; `latest` is the
    pointer's snapshot (always kept). Every kept snapshot's chain is kept whole."""
    ids = [e["id"] for e in entries]
    index = {snapshot_id: n for n, snapshot_id in enumerate(ids)}
    times = [_parse_time(e["created_at_utc"]) for e in entries]
    reasons: dict[int, list[str]] = {}

    def keep(n: int, why: str) -> None:
        reasons.setdefault(n, []).append(why)

    # newest first: by time, then by publish order (a clock that went back)
    newest_first = [n for _, n in sorted(zip(times, range(len(ids))), reverse=True)]
    for number, n in enumerate(newest_first[: policy.last], start=1):
        keep(n, f"last #{number}")
    # oldest first, for bisect: the newest snapshot of the bucket before one that starts at B
    # is the newest taken before B
    ascending = [times[n] for n in reversed(newest_first)]
    for rule in BUCKETS:
        count = getattr(policy, rule)
        position = len(ascending)  # newest_first[len - position] is the next candidate
        for number in range(1, count + 1):
            if position == 0:
                break
            n = newest_first[len(ascending) - position]
            keep(n, f"{rule} #{number}")
            position = bisect.bisect_left(ascending, _bucket_start(rule, times[n]), 0, position)
    if not policy.within.zero and newest_first:
        cutoff = policy.within.before(times[newest_first[0]])
        for n in newest_first:
            if times[n] < cutoff:
                break
            keep(n, f"within {policy.within}")
    if latest is not None and latest in index:
        keep(index[latest], "latest")
    for n, entry in enumerate(entries):
        if entry.get("from_listing"):
            keep(n, "listed before the catalog existed (its chain is unknown)")

    # chain safety: a parent is listed before its children (catalog.check), so one pass from
    # the newest back keeps every ancestor of whatever is kept, naming the newest dependant
    # that had a reason of its own
    dependant: dict[int, str] = {}
    missing: set[int] = set()
    for n in range(len(ids) - 1, -1, -1):
        if n not in reasons:
            continue
        parent_id = entries[n].get("parent_id")
        if parent_id is None:
            continue
        parent = index.get(parent_id)
        if parent is None or parent > n:
            missing.add(n)
            continue
        because = dependant.get(n, ids[n])
        if parent not in reasons:
            reasons[parent] = [f"chain of {because}"]
            dependant[parent] = because
        elif parent not in dependant:
            reasons[parent].append(f"chain of {because}")
            dependant[parent] = because
    # a kept snapshot whose chain lacks a link (broken before this decision)
    broken: set[int] = set()
    for n in sorted(reasons):
        parent = index.get(entries[n].get("parent_id") or "")
        if n in missing or (parent is not None and parent in broken):
            broken.add(n)
    return Decision({ids[n]: reasons[n] for n in sorted(reasons)},
                    [snapshot_id for n, snapshot_id in enumerate(ids) if n not in reasons],
                    [ids[n] for n in sorted(broken)])
