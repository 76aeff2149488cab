"""lineage: the full/incremental decision, divergence and new ids (table-driven)."""

import datetime as dt

import pytest
from ocb import lineage
from ocb.cache import CachedSnapshot
from ocb.config import Settings
from ocb.index import Index
from ocb.stores.base import Head

NOW = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
BASE = "openclaw-backup-20261201-110000"
OTHER = "openclaw-backup-20261201-113000"


def settings(**values):
    return Settings(home="/h", work_dir="/h/w", cache_dir="/h/c", **values)


def cached(incrementals=0, full_created="2026-12-01T10:00:00Z", snapshot=BASE):
    state = {"store": "file:///s", "snapshot": snapshot, "incrementals": incrementals,
             "full_created_utc": full_created, "chain": [snapshot]}
    return CachedSnapshot(state, Index(snapshot=snapshot), (), {"id": snapshot})


@pytest.mark.parametrize("case, values, cache, head, forced, expected", [
    ("incremental on the cached base", {}, cached(), BASE, False, []),
    ("--full", {}, cached(), BASE, True, ["--full given"]),
    ("no cache", {}, None, BASE, False, ["no local index of a previous snapshot"]),
    ("no cache, empty store", {}, None, None, False, ["no local index of a previous snapshot"]),
    ("store emptied since", {}, cached(), None, False, ["the store holds no snapshot"]),
    ("OCB_FULL_EVERY reached", {"full_every": 3}, cached(incrementals=3), BASE, False,
     ["3 incrementals reached OCB_FULL_EVERY=3"]),
    ("OCB_FULL_EVERY not yet", {"full_every": 3}, cached(incrementals=2), BASE, False, []),
    ("OCB_FULL_EVERY=0: every backup full", {"full_every": 0}, cached(), BASE, False,
     ["0 incrementals reached OCB_FULL_EVERY=0"]),
    ("OCB_FULL_HOURS passed", {"full_hours": 2}, cached(full_created="2026-12-01T09:59:59Z"), BASE, False,
     ["the full snapshot is 2.0 h old (OCB_FULL_HOURS=2)"]),
    ("OCB_FULL_HOURS exactly", {"full_hours": 2}, cached(full_created="2026-12-01T10:00:00Z"), BASE, False,
     ["the full snapshot is 2.0 h old (OCB_FULL_HOURS=2)"]),
    ("OCB_FULL_HOURS not yet", {"full_hours": 3}, cached(), BASE, False, []),
    ("a full from the future (the clock went back)", {"full_hours": 24}, cached(full_created="2027-12-01T12:00:00Z"),
     BASE, False, ["the full snapshot's time 2027-12-01T12:00:00Z lies in the future (the clock went back): "
                   "counted as due for OCB_FULL_HOURS=24"]),
    ("OCB_FULL_HOURS=0: no age limit", {"full_hours": 0}, cached(full_created="2020-01-01T00:00:00Z"), BASE,
     False, []),
    ("diverged lineage", {}, cached(), OTHER, False,
     [f"lineage diverged: the store's latest is {OTHER}, this machine descends from {BASE}"]),
    ("OCB_INCREMENTAL=false", {"incremental": False}, cached(), BASE, False, ["incremental backups are off"]),
    ("several reasons at once", {"incremental": False, "full_every": 1}, cached(incrementals=1), BASE, True,
     ["--full given", "incremental backups are off", "1 incrementals reached OCB_FULL_EVERY=1"]),
])
def test_full_or_incremental(case, values, cache, head, forced, expected):
    assert lineage.full_reasons(settings(**values), cache, head, forced, NOW) == expected, case


@pytest.mark.parametrize("cache, head, expected", [
    (None, OTHER, None),
    (cached(), None, None),
    (cached(), BASE, None),
    (cached(), OTHER, OTHER),
])
def test_divergence_names_the_snapshot_not_built_upon(cache, head, expected):
    assert lineage.diverged_from(cache, head) == expected


class Listing:
    """A store that can only list ids, and counts how often it was asked."""

    def __init__(self, ids):
        self.ids, self.asked = ids, 0

    def list_snapshot_ids(self, prefix):
        self.asked += 1
        return self.ids


@pytest.mark.parametrize("pointer_chain, listed, expected, asked", [
    ([], [], "openclaw-backup-20261201-120000", 0),
    (["openclaw-backup-20261201-120000"], [], "openclaw-backup-20261201-120000-2", 1),
    # a snapshot of this second outside the latest chain (a full one started a new chain)
    (["openclaw-backup-20261201-120000-2"], ["openclaw-backup-20261201-120000",
                                             "openclaw-backup-20261201-120000-2"], "openclaw-backup-20261201-120000-3", 1),
    (["openclaw-backup-20261201-115959"], ["openclaw-backup-20261201-120000"], "openclaw-backup-20261201-120000", 0),
    # the clock went back behind the latest: an older snapshot of another chain holds this
    # second, and only the store's listing knows it
    (["openclaw-backup-20261201-130000"], ["openclaw-backup-20261201-120000", "openclaw-backup-20261201-130000"],
     "openclaw-backup-20261201-120000-2", 1),
])
def test_new_ids_never_collide(pointer_chain, listed, expected, asked):
    head = Head({"id": pointer_chain[-1], "chain": pointer_chain} if pointer_chain else None, None)
    store = Listing(listed)
    assert lineage.new_snapshot_id(NOW, head, None, store, "backups") == expected
    assert store.asked == asked


FULL, INC = "openclaw-backup-20261201-100000", "openclaw-backup-20261201-110000"
CHAIN = [{"id": FULL, "volumes": [{"name": f"{FULL}.tar.zst.part-0000", "size": 10},
                                  {"name": f"{FULL}.tar.zst.part-0001", "size": 3}]},
         {"id": INC, "volumes": [{"name": f"{INC}.tar.zst", "size": 5}]}]
WHOLE = {f"{FULL}.meta.json": 900, f"{FULL}.tar.zst.part-0000": 10, f"{FULL}.tar.zst.part-0001": 3,
         f"{INC}.meta.json": 950, f"{INC}.tar.zst": 5, "openclaw-backup-20261201-120000.meta.json": 1}


def without(name):
    return {k: v for k, v in WHOLE.items() if k != name}


@pytest.mark.parametrize("case, listing, expected", [
    ("whole (other files do not matter)", WHOLE, []),
    ("a middle volume missing", without(f"{FULL}.tar.zst.part-0001"), [f"volume {FULL}.tar.zst.part-0001"]),
    ("a meta missing", without(f"{INC}.meta.json"), [f"the meta of {INC}"]),
    ("a volume of another size", dict(WHOLE, **{f"{INC}.tar.zst": 4}), [f"volume {INC}.tar.zst (4 bytes, 5 recorded)"]),
    ("an empty store", {}, [f"the meta of {FULL}", f"volume {FULL}.tar.zst.part-0000",
                            f"volume {FULL}.tar.zst.part-0001", f"the meta of {INC}", f"volume {INC}.tar.zst"]),
])
def test_chain_gaps(case, listing, expected):
    assert lineage.chain_gaps(CHAIN, listing) == expected, case


def test_a_run_dir_of_the_same_second_in_the_work_dir_is_never_taken_over() -> None:
    store = Listing([])
    head = Head(None, None)
    first = lineage.new_snapshot_id(NOW, head, None, store, "backups")
    assert lineage.new_snapshot_id(NOW, head, None, store, "backups", {first, ".lock"}) == first + "-2"
