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
         --list writes `list`: {snapshots: [{id, created_at_utc, latest, format}]} and `skip`,
         `format` "legacy" for the legacy script's backups (listed first), "ocb" for ocb's.
         A store the legacy script wrote (its latest-backup.json has no record_sha256) is read
         as that script laid it out (legacy.py): `chain` then says `legacy` and lists the
         legacy backups full first, their volumes, checksums and encryption.
Environment:
  OCB_STORE (legacy OPENCLAW_BACKUP_DATASET_REPO); OCB_RESTORE_STORE (legacy
  OPENCLAW_RESTORE_DATASET_REPO) restores from another store
  OCB_STATE_DIR, OPENCLAW_BACKUP_ROOT_*_DIR, OPENCLAW_BACKUP_EXTRA_DIRS / _FILES,
  OPENCLAW_RESTORE_NPM_ENABLED   where each root is restored; OPENCLAW_BACKUP_METADATA_DIR
  (default ~/.backup-info) where a legacy archive's backup-info root goes
  OPENCLAW_RESTORE_ARCHIVE   restore this backup instead of the latest: a snapshot id (as
  --id) or a legacy archive name (openclaw-backup-YYYYMMDD-HHMMSS.tar.gz[.enc])
  OCB_WORK_DIR, OCB_CACHE_DIR
  --show-config  write the resolved settings and stop (the sh porcelain reads its work dir there)
Exit status: 0 ok or nothing to restore; 1 run-time failure; 2 bad flag or env value;
             4 broken chain or damaged meta; 13 credentials refused; 14 store unavailable.
"""

from __future__ import annotations

import argparse

from .. import DOC_VERSION, config, legacy, lineage
from ..errors import ChainBroken, IntegrityError
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
    picking = args.id is None and args.at is None and not args.list
    archive_id, archive_name = legacy.archive_request(config.restore_archive(env) if picking else None)
    wanted = args.id if args.id is not None else archive_id
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
        ids = ([entry["id"] for entry in known["snapshots"]] if known is not None
               else sorted(store.list_snapshot_ids(prefix), key=id_sort_key))
        confirmed = {e["id"] for e in known["snapshots"] if not e.get("from_listing")} if known is not None else None
        doc["list"] = {"snapshots": legacy.list_entries(legacy.Reader(store), prefix, head, [
            {"id": i, "created_at_utc": utc_text(id_time(i)), "latest": i == head.snapshot_id} for i in ids], confirmed)}
        doc["skip"] = {"stage": "chain", "reason": f"listed {len(doc['list']['snapshots'])} snapshots"}
        return doc

    if wanted is not None:
        target = wanted
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
            raise ChainBroken(f"no snapshot in {store_url} was taken at or before {args.at}")
        target = found
    elif archive_name is not None or head.legacy:
        target = None  # the legacy pointer or archive name: legacy.meta_for below
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
    reader = legacy.Reader(store)
    legacy_meta = legacy.meta_for(reader, prefix, head, target, archive_name)
    if legacy_meta is not None:
        section, meta, notes = legacy.chain_section(reader, legacy_meta, head, config.legacy_metadata_dir(env))
        for note in notes:
            log.warning(note)
        log.info(f"legacy backup {section['target']}: a chain of {len(section['snapshots'])} "
                 f"({section['snapshots'][0]['id']} full)")
        doc.update({"id": section["target"], "chain": section, "meta": meta})
        return doc
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
        meta = store.read_meta(prefix, target)
        snapshots = check_meta(meta, target, f"{store_url}/{meta_path(prefix, target)}")
    log.info(f"snapshot {target}: a chain of {len(snapshots)} ({snapshots[0]['id']} full)")
    doc["id"] = target
    doc["chain"] = {"target": target, "latest": head.snapshot_id, "base": head.token,
                    "sealed": bool(meta.get("sealed")), "seal": meta.get("seal"), "snapshots": snapshots}
    doc["meta"] = meta
    return doc
