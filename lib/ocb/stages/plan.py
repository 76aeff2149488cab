"""Summary: scan the sources and decide what the next snapshot holds: full, incremental or skip.

Usage: ocb-plan [--store URL] [--full] > plan.json

Reads:   nothing on stdin; the sources (state dir, home-dir roots, extra dirs and files), the
         local cache of the last snapshot, and the store's pointer (one read).
Writes:  a new backup document with `settings`, `plan` (type, parent, chain, roots, change
         counts, the plan index in the work dir), or `skip` when nothing changed.
Environment:
  OCB_STORE (legacy OPENCLAW_BACKUP_DATASET_REPO)   where snapshots go
  OCB_STATE_DIR (OPENCLAW_STATE_DIR, OPENCLAW_BACKUP_SOURCE_DIR)   the state dir (required)
  OPENCLAW_BACKUP_ROOT_*_DIR, OPENCLAW_BACKUP_EXTRA_DIRS / _FILES, OPENCLAW_BACKUP_NPM_ENABLED
  OCB_EXCLUDE, OCB_INCLUDE, OCB_DEFAULT_EXCLUDES=off   what to leave out
  OCB_FULL_EVERY (OPENCLAW_MAX_INCREMENTAL_BACKUPS, default 10), OCB_FULL_HOURS
  (OPENCLAW_FULL_BACKUP_INTERVAL_HOURS, default 24), OCB_INCREMENTAL=false
  OCB_WORK_DIR, OCB_CACHE_DIR, OCB_VOLUME_SIZE, OCB_COMPRESSION, OCB_COMPRESSION_LEVEL
  OCB_DELTA_MIN (default 4M): files this big are stored as changed blocks in incrementals
  OCB_SQLITE_TIMEOUT (default 30 s): how long a locked SQLite database is waited for
Exit status: 0 planned or skip; 1 run-time failure; 2 bad flag or env value, missing state dir.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil

from .. import DOC_VERSION, __version__, cache, config
from ..errors import UsageError
from ..index import mark_changes, scan
from ..log import log
from ..stores import open_store

STARTS_DOCUMENT = True
KIND = "backup"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (overrides OCB_STORE)")
    parser.add_argument("--full", action="store_true", help="take a full snapshot whatever the cache says")


def snapshot_id(now: dt.datetime, taken: set[str]) -> str:
    """openclaw-backup-YYYYMMDD-HHMMSS, with -2, -3... when that second is already used."""
    base = "openclaw-backup-" + now.strftime("%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def utc_iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def full_reasons(settings: dict, cached: cache.CachedSnapshot | None, head_id: str | None,
                 forced: bool, now: dt.datetime) -> list[str]:
    """Why this snapshot must be full; empty means an incremental is allowed."""
    reasons = []
    if forced:
        reasons.append("--full given")
    if not settings["incremental"]:
        reasons.append("incremental backups are off")
    if cached is None:
        reasons.append("no local index of a previous snapshot")
        return reasons
    if head_id is None:
        reasons.append("the store holds no snapshot")
    elif head_id != cached.state["snapshot"]:
        reasons.append(f"lineage diverged: the store's latest is {head_id}, this machine descends from {cached.state['snapshot']}")
    if cached.state.get("incrementals", 0) >= settings["full_every"]:
        reasons.append(f"{cached.state.get('incrementals')} incrementals reached OCB_FULL_EVERY={settings['full_every']}")
    full_time = cached.state.get("full_created_utc")
    if settings["full_hours"] and full_time:
        age = now - dt.datetime.strptime(full_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        if age >= dt.timedelta(hours=settings["full_hours"]):
            reasons.append(f"the full snapshot is {age.total_seconds() / 3600:.1f} h old (OCB_FULL_HOURS={settings['full_hours']})")
    return reasons


def run(doc: dict, args: argparse.Namespace) -> dict:
    env = config.load_environment()
    settings = config.resolve_backup_settings(env)
    roots = config.resolve_roots(env)
    store_url = config.resolve_store(env, args.store)
    state_root = roots[0]
    if not os.path.isdir(state_root.path):
        raise UsageError(f"the state dir {state_root.path} does not exist (set OCB_STATE_DIR or OPENCLAW_STATE_DIR)")
    doc.update({"store": store_url, "settings": settings})

    now = dt.datetime.now(dt.timezone.utc)
    store = open_store(store_url, settings)
    head = store.head()
    cached = cache.load(settings["cache_dir"], store_url)
    reasons = full_reasons(settings, cached, head.snapshot_id, args.full, now)
    full = bool(reasons)

    current, report = scan(roots, settings["excludes"], settings["includes"], cached.index if cached else None)
    if report.missing_roots:
        log.info(f"absent roots, noted and not backed up: {', '.join(report.missing_roots)}")
    for path in report.skipped_special:
        log.warning(f"{path} is a socket, fifo or device: not backed up")
    changes = mark_changes(current, None if full else cached.index)  # type: ignore[union-attr]
    plan = {"roots": [r.as_dict() for r in roots], "changes": changes.as_dict(),
            "excluded": report.excluded, "missing_roots": report.missing_roots,
            "base": head.token, "base_snapshot": head.snapshot_id}
    if not full and not changes.any:
        doc["plan"] = plan
        doc["skip"] = {"stage": "plan", "reason": f"nothing changed since {cached.state['snapshot']}"}  # type: ignore[union-attr]
        log.info(doc["skip"]["reason"])
        return doc

    # ids of this second already used: the store's latest chain and ours (a snapshot outside
    # both is caught by push, which never overwrites a meta)
    taken = {head.snapshot_id, *((head.pointer or {}).get("chain") or []),
             *(cached.state.get("chain", []) if cached else [])}
    second = snapshot_id(now, set())
    if any(i and i.startswith(second) for i in taken):
        # this second is in use: a snapshot of it may sit outside both chains (a full one
        # started a new chain), so ask the store once for every id
        taken.update(store.list_snapshot_ids(settings["path_prefix"]))
    new_id = snapshot_id(now, taken)
    current.snapshot = new_id
    if full:
        log.info(f"full snapshot {new_id}: " + "; ".join(reasons))
        parent, chain = None, []
    else:
        parent = cached.meta  # type: ignore[union-attr]
        chain = [link["id"] for link in parent.get("chain", [])]
        log.info(f"incremental snapshot {new_id} on {parent['id']}: {changes.new} new, "
                 f"{changes.changed} changed, {changes.deleted} deleted")
    diverged = head.snapshot_id if cached and head.snapshot_id and head.snapshot_id != cached.state["snapshot"] else None
    if diverged:
        log.warning(f"the store's latest snapshot {diverged} is not the one this machine descends from "
                    f"({cached.state['snapshot']}): taking a full snapshot; both stay restorable by id")  # type: ignore[union-attr]

    snapshot_dir = os.path.join(settings["work_dir"], new_id)
    if os.path.lexists(snapshot_dir):
        shutil.rmtree(snapshot_dir)  # a leftover of a dead run with the same id
    os.makedirs(snapshot_dir, mode=0o700)
    plan_index = os.path.join(snapshot_dir, "plan-index.jsonl")
    current.save(plan_index, with_pack=True)
    plan.update({
        "type": "full" if full else "incremental",
        "reasons": reasons,
        "parent": None if full else parent["id"],  # type: ignore[index]
        "chain": chain + [new_id],
        # the parent's links (ids, volumes, hashes) travel with the document, so the new meta
        # can list its whole chain without the store being read again
        "parent_chain": [] if full else parent.get("chain", []),  # type: ignore[union-attr]
        "diverged_from": diverged,
        "dir": snapshot_dir,
        "index": plan_index,
        "entries": len(current.entries),
    })
    doc.update({"ocb": DOC_VERSION, "id": new_id, "created_at_utc": utc_iso(now),
                "tool_version": __version__, "plan": plan})
    return doc
