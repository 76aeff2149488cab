"""Summary: publish the volumes, the meta and the pointer so the snapshot appears atomically.

Usage: ocb-split | ocb-push > pushed.json

Reads:   a backup document with `plan`, `archive`, `seal` and `volumes`.
Writes:  `push`: {meta, pointer, stats, skipped (a count, when some were)}. The store gets `<prefix>/<volume>...`,
         `<prefix>/<id>.meta.json`, the catalog `ocb-catalog.json` and `latest-backup.json` together (one commit on the Hub;
         renames under a lock on a folder), only if the store's latest snapshot is still the
         one the plan saw. Then the new index (and the block hashes of its large files)
         becomes the local cache (this machine's lineage) and the snapshot's work dir is
         removed.
Environment: HF_TOKEN for Hub stores (never written anywhere).
Exit status: 0 ok or skip; 6 published, but some entries could not be read (named in
             `plan.skipped`, `archive.skipped` and the meta); 1 run-time failure, a snapshot
             that would take the folder past the store's limit of entries (the Hub: 10,000;
             nothing uploaded: run ocb-prune), or an
             index that a restore would refuse (ocb.index.check_structure: nothing is
             published); 3 bad input document;
             5 the store moved since planning (re-plan); 13 credentials refused; 14 rate
             limited past the budget.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from .. import cache, catalog, config
from ..config import Settings
from ..errors import EXIT_PARTIAL, BadDocument, RuntimeFailure
from ..index import Index, check_structure
from ..log import log
from ..snapshot import META_SUFFIX, POINTER, build_meta, build_pointer, meta_path, skipped_entries
from ..stores import open_store
from ..stores.base import Store, Upload

STARTS_DOCUMENT = False
KIND = "backup"
NEEDS = ("plan", "archive", "volumes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(doc: dict, args: argparse.Namespace) -> dict:
    settings = Settings.from_doc(doc)
    uploads = []
    for volume in doc["volumes"]["files"]:
        path = volume["path"]
        if not os.path.isfile(path) or os.path.getsize(path) != volume["size"]:
            raise BadDocument(f"volume {path} is gone or changed since ocb-split: run the backup pipe again")
        uploads.append(Upload(volume["name"], path, volume["size"], volume["sha256"]))
    index_path = doc["archive"]["index"]
    if not os.path.isfile(index_path):
        raise BadDocument(f"the snapshot index {index_path} is gone: run the backup pipe again")
    # the check a restore applies, before anything is published: a snapshot that restore
    # would refuse never becomes the latest
    unrestorable = check_structure(Index.load(index_path))
    if unrestorable:
        raise RuntimeFailure(f"snapshot {doc['id']} is not published: {unrestorable}")

    prefix = settings.path_prefix
    meta = build_meta(doc, prefix)
    pointer = build_pointer(doc["store"], meta, prefix)
    store = open_store(doc["store"], settings, config.store_secrets())
    started = time.monotonic()
    _check_folder_limit(store, prefix, doc["id"], [u.name for u in uploads])
    known = store.read_catalog()
    if known is None and doc["plan"]["base"] is not None:
        # a store written before catalogs existed: its snapshots, as its listing names them
        known = catalog.seed(store.list_snapshot_ids(prefix))
    new_catalog = catalog.append(known, meta)
    stats = store.publish(prefix, doc["id"], uploads, meta, pointer, new_catalog, doc["plan"]["base"])
    stats["seconds"] = round(time.monotonic() - started, 3)
    log.info(f"snapshot {doc['id']} ({meta['backup_type']}) is the latest in {doc['store']}")

    snapshot_dir = doc["plan"]["dir"]
    try:
        cache.save(settings.cache_dir, index_path, meta, cache.state_for(meta, doc["store"], "backup"),
                   os.path.join(snapshot_dir, cache.BLOCKS_DIR))
    except OSError as exc:
        # the snapshot is published and whole; a cache that cannot record it (or records it
        # half) reads as no cache, so the next backup is a full one: warn, do not fail
        log.warning(f"snapshot {doc['id']} is published, but the cache {settings.cache_dir} cannot record it "
                    f"({exc.strerror or exc}): the next backup will be a full one")
    if os.path.dirname(os.path.realpath(snapshot_dir)) == os.path.realpath(settings.work_dir):
        shutil.rmtree(snapshot_dir, ignore_errors=True)
    doc["push"] = {"meta": meta_path(prefix, doc["id"]), "pointer": POINTER, "stats": stats}
    skipped = skipped_entries(doc)
    if skipped:
        doc["push"]["skipped"] = len(skipped)
        log.warning(f"snapshot {doc['id']} leaves out {len(skipped)} unreadable entries: "
                    + ", ".join(s["path"] for s in skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
    return doc


def _check_folder_limit(store: Store, prefix: str, snapshot_id: str, names: list[str]) -> None:
    """Refuse, before uploading anything, a snapshot that would take the folder past the
    backend's limit of entries (the Hub: 10,000 per folder; one listing)."""
    limit = store.folder_limit
    if limit is None:
        return
    entries = len(set(store.list_files(prefix)) | set(names) | {snapshot_id + META_SUFFIX})
    if entries > limit:
        raise RuntimeFailure(f"snapshot {snapshot_id} is not pushed: {prefix}/ in {store.url} would hold {entries} "
                             f"entries, past the {limit} a folder may hold there; run ocb-prune to remove the "
                             "snapshots the retention policy does not keep (README: Retention), then back up again")


def exit_status(doc: dict) -> int:
    """6 when the snapshot is published but some entries could not be read (README)."""
    return EXIT_PARTIAL if (doc.get("push") or {}).get("skipped") else 0
