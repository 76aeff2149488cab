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

import datetime as dt
import re
from collections.abc import Callable
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


def _time(entry: dict) -> dt.datetime:
    return dt.datetime.strptime(entry["created_at_utc"], UTC_FORMAT).replace(tzinfo=dt.timezone.utc)


def _bucket_keys() -> dict[str, Callable[[dt.datetime], tuple[int, ...]]]:
    return {
        "hourly": lambda t: (t.year, t.month, t.day, t.hour),
        "daily": lambda t: (t.year, t.month, t.day),
        "weekly": lambda t: tuple(t.isocalendar()[:2]),
        "monthly": lambda t: (t.year, t.month),
        "yearly": lambda t: (t.year,),
    }


def decide(entries: list[dict], policy: Policy, latest: str | None) -> Decision:
    """The decision for catalog `entries` (publish order) under `policy`; `latest` is the
    pointer's snapshot (always kept). Every kept snapshot's chain is kept whole."""
    order = {e["id"]: n for n, e in enumerate(entries)}
    by_id = {e["id"]: e for e in entries}
    reasons: dict[str, list[str]] = {}

    def keep(snapshot_id: str, why: str) -> None:
        reasons.setdefault(snapshot_id, []).append(why)

    newest_first = sorted(entries, key=lambda e: (_time(e), order[e["id"]]), reverse=True)
    for n, entry in enumerate(newest_first[: policy.last], start=1):
        keep(entry["id"], f"last #{n}")
    keys = _bucket_keys()
    for rule in BUCKETS:
        count = getattr(policy, rule)
        seen: set[tuple[int, ...]] = set()
        for entry in newest_first:
            if len(seen) >= count:
                break
            key = keys[rule](_time(entry))
            if key not in seen:
                seen.add(key)
                keep(entry["id"], f"{rule} #{len(seen)}")
    if not policy.within.zero and newest_first:
        cutoff = policy.within.before(_time(newest_first[0]))
        for entry in newest_first:
            if _time(entry) >= cutoff:
                keep(entry["id"], f"within {policy.within}")
    if latest is not None and latest in by_id:
        keep(latest, "latest")
    for entry in entries:
        if entry.get("from_listing"):
            keep(entry["id"], "listed before the catalog existed (its chain is unknown)")

    # chain safety: every ancestor of a kept snapshot, newest dependants first
    broken: list[str] = []
    for snapshot_id in sorted(list(reasons), key=lambda i: order[i], reverse=True):
        parent = by_id[snapshot_id].get("parent_id")
        while parent is not None:
            if parent not in by_id:
                broken.append(snapshot_id)
                break
            if parent not in reasons:
                keep(parent, f"chain of {snapshot_id}")
            elif not any(r.startswith("chain of ") for r in reasons[parent]):
                reasons[parent].append(f"chain of {snapshot_id}")
            parent = by_id[parent].get("parent_id")
    kept = {e["id"]: reasons[e["id"]] for e in entries if e["id"] in reasons}
    return Decision(kept, [e["id"] for e in entries if e["id"] not in reasons], sorted(set(broken), key=order.get))
