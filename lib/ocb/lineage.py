"""What the next snapshot builds on: full or incremental, diverged or not, and its new id.

A pure decision over the settings, this machine's cache (the snapshot its state descends
from), the store's head and (chain_gaps) one listing of the store's prefix; the only I/O is
the store listing asked for when the id's second is already taken, and, for a store that
lost its pointer, newest_complete's listing and meta reads. ocb-plan calls it; the table tests in tests/unit/test_lineage.py pin it.
"""

from __future__ import annotations

import datetime as dt

from .cache import CachedSnapshot
from .config import Settings
from . import catalog
from .errors import IntegrityError
from .snapshot import META_SUFFIX, check_meta, id_second, id_time, make_id, meta_path, parse_utc
from .stores.base import Head, Store


def full_reasons(settings: Settings, cached: CachedSnapshot | None, head_id: str | None,
                 forced: bool, now: dt.datetime) -> list[str]:
    """Why this snapshot must be full; empty means an incremental is allowed."""
    reasons = []
    if forced:
        reasons.append("--full given")
    if not settings.incremental:
        reasons.append("incremental backups are off")
    if cached is None:
        reasons.append("no local index of a previous snapshot")
        return reasons
    if head_id is None:
        reasons.append("the store holds no snapshot")
    elif head_id != cached.state["snapshot"]:
        reasons.append(f"lineage diverged: the store's latest is {head_id}, this machine descends from {cached.state['snapshot']}")
    if cached.state.get("incrementals", 0) >= settings.full_every:
        reasons.append(f"{cached.state.get('incrementals')} incrementals reached OCB_FULL_EVERY={settings.full_every}")
    full_time = cached.state.get("full_created_utc")
    if settings.full_hours and full_time:
        age = now - parse_utc(full_time)
        if age >= dt.timedelta(hours=settings.full_hours):
            reasons.append(f"the full snapshot is {age.total_seconds() / 3600:.1f} h old (OCB_FULL_HOURS={settings.full_hours})")
        elif age < dt.timedelta(0):
            # taken while the clock was ahead: its age cannot be told, so it counts as due
            # (else OCB_FULL_HOURS would never fire again)
            reasons.append(f"the full snapshot's time {full_time} lies in the future (the clock went back): "
                           f"counted as due for OCB_FULL_HOURS={settings.full_hours}")
    return reasons


def chain_gaps(chain: list[dict], listing: dict[str, int]) -> list[str]:
    """What of `chain` (the links of a meta) the store's listing of its prefix lacks: each
    snapshot's meta, and each volume with its recorded size. Empty: the chain is whole."""
    gaps = []
    for link in chain:
        if f"{link['id']}{META_SUFFIX}" not in listing:
            gaps.append(f"the meta of {link['id']}")
        for volume in link.get("volumes") or []:
            size = listing.get(volume["name"])
            if size is None:
                gaps.append(f"volume {volume['name']}")
            elif size != volume["size"]:
                gaps.append(f"volume {volume['name']} ({size} bytes, {volume['size']} recorded)")
    return gaps


def publish_order(store: Store, prefix: str) -> list[str]:
    """Every snapshot id of the store, oldest first, in the order they were published: the
    catalog's (seq), whatever the clock said when each was taken; from the listing, by id,
    for a store without a catalog. Ids the listing holds and the catalog lacks go first."""
    listed = store.list_snapshot_ids(prefix)
    ordered = catalog.ids(store.read_catalog())
    known = set(ordered)
    return [i for i in listed if i not in known] + [i for i in ordered if i in set(listed)]


def newest_complete(store: Store, prefix: str) -> tuple[str, list[dict]] | None:
    """The newest snapshot (publish order) whose whole chain the store holds, and that chain:
    for a store that lost its pointer. One listing; metas are read newest first until one
    is whole. None when no snapshot is."""
    listing = store.list_files(prefix)
    for snapshot_id in reversed(publish_order(store, prefix)):
        if f"{snapshot_id}{META_SUFFIX}" not in listing:
            continue
        try:
            snapshots = check_meta(store.read_meta(prefix, snapshot_id), snapshot_id,
                                   f"{store.url}/{meta_path(prefix, snapshot_id)}")
        except IntegrityError:
            continue
        if not chain_gaps(snapshots, listing):
            return snapshot_id, snapshots
    return None


def diverged_from(cached: CachedSnapshot | None, head_id: str | None) -> str | None:
    """The store's latest snapshot when it is not the one this machine descends from."""
    if cached is None or head_id is None or head_id == cached.state["snapshot"]:
        return None
    return head_id


def new_snapshot_id(now: dt.datetime, head: Head, cached: CachedSnapshot | None, store: Store, prefix: str,
                    busy: set[str] | frozenset[str] = frozenset()) -> str:
    """An id for a snapshot taken `now` that no snapshot in the store has, nor `busy` (the
    names already in the work dir: the run dir of another pipe planned in the same second,
    one run by hand say, is never taken over).

    The ids of this second already used are known from the store's latest chain and ours; a
    snapshot outside both (a full one started a new chain) is found by asking the store once
    for every id, only when this second is in use. Push never overwrites a meta either way.
    """
    taken = {head.snapshot_id, *((head.pointer or {}).get("chain") or []),
             *(cached.state.get("chain", []) if cached else [])}
    second = id_second(now)
    known = [i for i in taken if i]
    clock_back = any(id_time(i) >= now.replace(microsecond=0) for i in known)
    if clock_back or any(i.startswith(second) for i in known):
        # this second is in use, or the clock went back (an older snapshot outside these
        # chains may hold it): every id in the store counts
        taken.update(store.list_snapshot_ids(prefix))
    return make_id(now, {i for i in taken if i} | set(busy))
