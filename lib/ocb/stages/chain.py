"""Summary: find the snapshot to restore and the chain (full first) that rebuilds it.

Usage: ocb-chain [--store URL] [--id ID | --at TIME | --list] > chain.json

Reads:   nothing on stdin; the store's pointer and ONE meta (each meta lists its whole chain);
         --at and --list read the catalog (publish order: seq), or for a store without
         one a listing of the snapshot folder (id order), never every meta.
Writes:  a new restore document with `settings` (roots to restore, work and cache dirs) and
         `chain`: {target, snapshots: [{id, backup_type, volumes, ...}, ...]}.
         An empty store gives `skip` with `no_snapshot: true` (a normal first start); a
         store with snapshots but no readable pointer is exit 4 naming its newest complete
         snapshot (--id and --at still work).
         --list writes `list`: {snapshots: [{id, created_at_utc, latest, this_machine,
         backup_type, files, bytes, stored_bytes, sealed, chain_length, chain_id, parent_id}]}
         and `skip`; on a terminal it is a table (--json: the document).
Environment:
  OCB_STORE (legacy OPENCLAW_BACKUP_DATASET_REPO; no default); OCB_RESTORE_STORE (legacy
  OPENCLAW_RESTORE_DATASET_REPO; default: the backup store) restores from another store
  OCB_STATE_DIR (default ~/.openclaw), OPENCLAW_BACKUP_ROOT_*_DIR (default ~/.config ...),
  OPENCLAW_BACKUP_EXTRA_DIRS / _FILES, OPENCLAW_RESTORE_NPM_ENABLED (default true)
                 where each root is restored
  OCB_WORK_DIR (default ~/.cache/ocb/work), OCB_CACHE_DIR (default ~/.cache/ocb)
  HF_TOKEN, HF_ENDPOINT for Hub stores; OCB_LOG_FORMAT=json, OCB_DEBUG=1, OCB_PROGRESS=1
  --show-config  write the resolved settings and stop (the sh porcelain reads its work dir there)
Example: ocb-chain --list;  ocb-chain | jq .chain.snapshots[].id;  ocb-chain --at 2026-12-01T09:00:00Z > c.json
Exit status: 0 ok or nothing to restore; 1 run-time failure; 2 bad flag or env value, or no
             such snapshot (an --id the store does not hold, an --at before its first
             snapshot: see ocb-chain --list); 4 broken chain or damaged meta;
             13 credentials refused; 14 store unavailable.
"""

from __future__ import annotations

import argparse

from .. import DOC_VERSION, cache, config, lineage
from ..errors import ChainBroken, IntegrityError, NoSuchSnapshot
from ..log import log
from ..snapshot import (
    POINTER,
    check_id,
    check_meta,
    id_sort_key,
    id_time,
    meta_path,
    parse_moment,
    pick_at,
    pointer_meta,
    utc_text,
)
from ..stores import open_store
from ..stores.base import Head

STARTS_DOCUMENT = True
KIND = "restore"
NEEDS: tuple[str, ...] = ()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (overrides OCB_RESTORE_STORE / OCB_STORE)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--id", help="restore this snapshot id instead of the latest")
    which.add_argument("--at", help="restore the newest snapshot taken at or before TIME (UTC)")
    which.add_argument("--list", action="store_true", help="list the snapshots in the store")
    which.add_argument("--show-config", action="store_true",
                       help="write the resolved settings (a document with skip) and stop: the store is not read")


def run(doc: dict, args: argparse.Namespace) -> dict:
    env = config.load_environment()
    settings = config.resolve_settings(env, KIND)
    store_url, fallback_url = config.resolve_restore_stores(env, args.store)
    if args.show_config:
        doc.update({"store": store_url, "settings": settings.as_dict()})
        doc["skip"] = {"stage": "chain", "reason": "show-config"}
        return doc
    if args.id is not None:
        check_id(args.id, "--id")
    moment = parse_moment(args.at) if args.at is not None else None
    secrets = config.store_secrets(env)
    store = open_store(store_url, settings, secrets)
    if fallback_url is not None and not store.exists():
        log.warning(f"the restore source {store_url} does not exist: restoring from the backup store {fallback_url}")
        store_url, store = fallback_url, open_store(fallback_url, settings, secrets)
    doc.update({"ocb": DOC_VERSION, "store": store_url, "settings": settings.as_dict()})
    prefix = settings.path_prefix
    try:
        head = store.head()
        pointer_problem = None
    except IntegrityError as exc:
        # a damaged pointer: --id and --at do not need it, the latest is named below
        head, pointer_problem = Head(None, None), str(exc)

    if args.list:
        known = store.read_catalog()
        entries = (known["snapshots"] if known is not None
                   else [{"id": i} for i in sorted(store.list_snapshot_ids(prefix), key=id_sort_key)])
        cached = cache.load(settings.cache_dir, store_url)
        base = cached.state.get("snapshot") if cached is not None else None
        doc["list"] = {"snapshots": [_listed(e, head.snapshot_id, base) for e in entries]}
        doc["skip"] = {"stage": "chain", "reason": f"listed {len(entries)} snapshots"}
        return doc

    if args.id is not None:
        target = args.id
    elif moment is not None:
        known = store.read_catalog()
        if known is not None:
            # publish order, not the clock's: the last published of those stamped at or before
            # the moment (a snapshot taken after the clock went back is still the later one)
            stamped = [e["id"] for e in known["snapshots"] if id_time(e["id"]) <= moment]
            found = stamped[-1] if stamped else None
        else:
            found = pick_at(store.list_snapshot_ids(prefix), moment)
        if found is None:
            raise NoSuchSnapshot(f"no such snapshot: none in {store_url} was taken at or before {args.at} "
                                 f"(see ocb-chain --list)")
        target = found
    else:
        target = head.snapshot_id
        if target is None and head.pointer is not None:
            raise ChainBroken("the store's latest-backup.json names no snapshot id (damaged?)")
        if target is None and (pointer_problem or store.list_snapshot_ids(prefix)):
            # snapshots but no readable pointer: not an empty store, never "no snapshot yet"
            newest = lineage.newest_complete(store, prefix)
            problem = pointer_problem or f"{store_url} holds snapshots but no {POINTER}"
            raise ChainBroken(f"{problem}: " + (
                f"the newest complete snapshot is {newest[0]} (ocb-restore --id {newest[0]}; "
                "the next backup builds on it and writes the pointer again)" if newest
                else "no snapshot in it is complete"))
    if target is None:
        doc["skip"] = {"stage": "chain", "reason": f"no snapshot in {store_url} yet", "no_snapshot": True}
        log.info(doc["skip"]["reason"])
        return doc
    pointer = head.pointer or {}
    if target == head.snapshot_id and "meta" in pointer:
        source = f"{store_url}/{POINTER}"
        meta = pointer_meta(pointer, target, source)
        snapshots = check_meta(meta, target, source, pointer)
    else:
        try:
            meta = store.read_meta(prefix, target)
        except ChainBroken:
            if args.id is not None and not _known(store, prefix, target):
                raise NoSuchSnapshot(f"no such snapshot: {store_url} holds no snapshot {target} "
                                     "(see ocb-chain --list)") from None
            raise
        snapshots = check_meta(meta, target, f"{store_url}/{meta_path(prefix, target)}")
    log.info(f"snapshot {target}: a chain of {len(snapshots)} ({snapshots[0]['id']} full)")
    doc["id"] = target
    doc["chain"] = {"target": target, "latest": head.snapshot_id, "base": head.token,
                    "sealed": bool(meta.get("sealed")), "seal": meta.get("seal"), "snapshots": snapshots}
    doc["meta"] = meta
    return doc


def _known(store, prefix: str, snapshot_id: str) -> bool:
    """Whether the store has any trace of the snapshot (in its catalog, or a file of it):
    a meta missing for a snapshot the store knows is a broken chain, not a wrong --id."""
    known = store.read_catalog()
    if known is not None and any(e["id"] == snapshot_id for e in known["snapshots"]):
        return True
    return any(name.startswith(snapshot_id + ".") for name in store.list_files(prefix))


def _listed(entry: dict, latest: str | None, base: str | None) -> dict:
    """One line of --list: what the catalog says of a snapshot (id and time only for a store
    from before catalogs), whether it is the latest, whether this machine descends from it."""
    i = entry["id"]
    row = {"id": i, "created_at_utc": entry.get("created_at_utc") or utc_text(id_time(i)), "latest": i == latest,
           "this_machine": i == base}
    for key in ("backup_type", "files", "bytes", "stored_bytes", "sealed", "chain_length", "chain_id", "parent_id"):
        if key in entry:
            row[key] = entry[key]
    return row


def _size(value: object) -> str:
    if not isinstance(value, int):
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "?"


def _short(snapshot_id: object) -> str:
    return snapshot_id.removeprefix("openclaw-backup-") if isinstance(snapshot_id, str) else "?"


def render(doc: dict) -> str | None:
    """What a person reads on a terminal: --list as a table; None for the JSON document."""
    listed = doc.get("list")
    if not isinstance(listed, dict) or doc.get("error") is not None:
        return None
    rows = [("ID", "TIME (UTC)", "TYPE", "FILES", "SIZE", "SEALED", "CHAIN", "LINEAGE")]
    for s in listed["snapshots"]:
        marks = [m for m, on in (("latest", s.get("latest")), ("this machine", s.get("this_machine"))) if on]
        lineage_text = f"full {_short(s['chain_id'])}" if "chain_id" in s else "?"
        rows.append((s["id"], s["created_at_utc"].replace("T", " ").rstrip("Z"), s.get("backup_type", "?"),
                     str(s["files"]) if isinstance(s.get("files"), int) else "?", _size(s.get("bytes")),
                     {True: "yes", False: "no"}.get(s.get("sealed"), "?"),  # type: ignore[arg-type]
                     str(s.get("chain_length", "?")),
                     lineage_text + (f" ({', '.join(marks)})" if marks else "")))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    count = len(listed["snapshots"])
    lines.append(f"{count} snapshot{'s' if count != 1 else ''} in {doc.get('store')}"
                 + ("" if count else " (none yet)") + "; --json for the document")
    return "\n".join(lines) + "\n"
