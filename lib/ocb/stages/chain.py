"""Summary: find the snapshot to restore and the chain (full first) that rebuilds it.

Usage: ocb-chain [--store URL] [--id ID | --at TIME | --list] > chain.json

Reads:   nothing on stdin; the store's pointer and ONE meta (each meta lists its whole chain);
         --at and --list read one listing of the snapshot folder, never every meta.
Writes:  a new restore document with `settings` (roots to restore, work and cache dirs) and
         `chain`: {target, snapshots: [{id, backup_type, volumes, ...}, ...]}.
         An empty store gives `skip` with `no_snapshot: true` (a normal first start).
         --list writes `list`: {snapshots: [{id, created_at_utc, latest}]} and `skip`.
Environment:
  OCB_STORE (legacy OPENCLAW_BACKUP_DATASET_REPO); OCB_RESTORE_STORE (legacy
  OPENCLAW_RESTORE_DATASET_REPO) restores from another store
  OCB_STATE_DIR, OPENCLAW_BACKUP_ROOT_*_DIR, OPENCLAW_BACKUP_EXTRA_DIRS / _FILES,
  OPENCLAW_RESTORE_NPM_ENABLED   where each root is restored
  OCB_WORK_DIR, OCB_CACHE_DIR
Exit status: 0 ok or nothing to restore; 1 run-time failure; 2 bad flag or env value;
             4 broken chain or damaged meta; 13 credentials refused; 14 store unavailable.
"""

from __future__ import annotations

import argparse

from .. import DOC_VERSION, config
from ..chain import check_link_record, id_sort_key, id_time, parse_moment, pick_at, resolve
from ..errors import ChainBroken, UsageError
from ..log import log
from ..stores import open_store
from ..stores.base import META_SUFFIX, POINTER, SNAPSHOT_ID, meta_path

STARTS_DOCUMENT = True
KIND = "restore"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (overrides OCB_RESTORE_STORE / OCB_STORE)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--id", help="restore this snapshot id instead of the latest")
    which.add_argument("--at", help="restore the newest snapshot taken at or before TIME (UTC)")
    which.add_argument("--list", action="store_true", help="list the snapshots in the store")


def run(doc: dict, args: argparse.Namespace) -> dict:
    env = config.load_environment()
    settings = config.resolve_restore_settings(env)
    settings["roots"] = [r.as_dict() for r in config.resolve_roots(env, for_restore=True)]
    store_url, fallback_url = config.resolve_restore_stores(env, args.store)
    if args.id is not None and not SNAPSHOT_ID.match(args.id):
        raise UsageError(f"--id {args.id!r} is not a snapshot id (openclaw-backup-YYYYMMDD-HHMMSS)")
    moment = parse_moment(args.at) if args.at is not None else None
    store = open_store(store_url, settings)
    if fallback_url is not None and not store.exists():
        log.warning(f"the restore source {store_url} does not exist: restoring from the backup store {fallback_url}")
        store_url, store = fallback_url, open_store(fallback_url, settings)
    doc.update({"ocb": DOC_VERSION, "store": store_url, "settings": settings})
    prefix = settings["path_prefix"]
    head = store.head()

    if args.list:
        ids = sorted(store.list_snapshot_ids(prefix), key=id_sort_key)
        doc["list"] = {"snapshots": [
            {"id": i, "created_at_utc": id_time(i).strftime("%Y-%m-%dT%H:%M:%SZ"), "latest": i == head.snapshot_id}
            for i in ids]}
        doc["skip"] = {"stage": "chain", "reason": f"listed {len(ids)} snapshots"}
        return doc

    if args.id is not None:
        target = args.id
    elif moment is not None:
        found = pick_at(store.list_snapshot_ids(prefix), moment)
        if found is None:
            raise ChainBroken(f"no snapshot in {store_url} was taken at or before {args.at}")
        target = found
    else:
        target = head.snapshot_id
        if target is None and head.pointer is not None:
            raise ChainBroken("the store's latest-backup.json names no snapshot id (damaged?)")
    if target is None:
        doc["skip"] = {"stage": "chain", "reason": f"no snapshot in {store_url} yet", "no_snapshot": True}
        log.info(doc["skip"]["reason"])
        return doc
    pointer = head.pointer or {}
    latest_meta = pointer.get("meta")
    if target == head.snapshot_id and "meta" in pointer:
        # the pointer carries the latest meta (no second read); one that does not match the id
        # beside it is a damaged pointer, not a reason to go and read another file
        if not isinstance(latest_meta, dict) or latest_meta.get("id") != target:
            raise ChainBroken(f"{store_url}/{POINTER} is damaged: it names {target} but carries "
                              f"the meta of {latest_meta.get('id') if isinstance(latest_meta, dict) else latest_meta!r}")
        meta, source, carrier = latest_meta, f"{store_url}/{POINTER}", pointer
    else:
        meta, source, carrier = store.read_meta(prefix, target), f"{store_url}/{meta_path(prefix, target)}", None
    try:
        snapshots = resolve(meta, target)
        for number, link in enumerate(snapshots):
            check_link_record(link, f"meta of {target}: chain[{number}]")
        _check_redundant(meta, snapshots, carrier)
    except ChainBroken as exc:
        raise ChainBroken(f"{source}: {exc}") from None  # name the file that is damaged
    log.info(f"snapshot {target}: a chain of {len(snapshots)} ({snapshots[0]['id']} full)")
    doc["id"] = target
    doc["chain"] = {"target": target, "latest": head.snapshot_id, "base": head.token,
                    "sealed": bool(meta.get("sealed")), "seal": meta.get("seal"), "snapshots": snapshots}
    doc["meta"] = meta
    return doc


def _check_redundant(meta: dict, snapshots: list[dict], pointer: dict | None) -> None:
    """Fields the meta (and the pointer carrying it) repeat from its chain must agree with it.

    Nothing else checks them, and legacy tooling reads some of them (the pointer's `latest`),
    so a damaged byte there is refused here rather than passed over. Fields absent are not
    checked: older records may lack them.
    """
    last = snapshots[-1]
    expected = {
        "backup_type": last["backup_type"], "sealed": last["sealed"], "compression": last["compression"],
        "created_at_utc": last["created_at_utc"], "volumes": [v["name"] for v in last["volumes"]],
        "parent_id": snapshots[-2]["id"] if len(snapshots) > 1 else None,
    }
    for name, value in expected.items():
        if name in meta and meta[name] != value:
            raise ChainBroken(f"the meta's {name} is {meta[name]!r}, its chain says {value!r}")
    parent = meta.get("parent")
    if parent is not None and (expected["parent_id"] is None or not isinstance(parent, str)
                               or not parent.endswith(f"/{expected['parent_id']}{META_SUFFIX}")):
        raise ChainBroken(f"the meta's parent is {parent!r}, its chain says {expected['parent_id']!r}")
    if pointer is None:
        return
    expected = {"backup_type": last["backup_type"], "created_at_utc": last["created_at_utc"],
                "chain": [link["id"] for link in snapshots]}
    for name, value in expected.items():
        if name in pointer and pointer[name] != value:
            raise ChainBroken(f"its {name} is {pointer[name]!r}, the meta it carries says {value!r}")
    latest = pointer.get("latest")
    if latest is not None and (not isinstance(latest, str) or not latest.endswith(f"/{last['id']}{META_SUFFIX}")):
        raise ChainBroken(f"its latest is {latest!r}, not the meta of {last['id']}")
