"""Summary: publish the volumes, the meta and the pointer so the snapshot appears atomically.

Usage: ocb-split | ocb-push > pushed.json

Reads:   a backup document with `plan`, `archive`, `seal` and `volumes`.
Writes:  `push`: {meta, pointer, stats}. The store gets `<prefix>/<volume>...`,
         `<prefix>/<id>.meta.json` and `latest-backup.json` together (one commit on the Hub;
         renames under a lock on a folder), only if the store's latest snapshot is still the
         one the plan saw. Then the new index (and the block hashes of its large files)
         becomes the local cache (this machine's lineage) and the snapshot's work dir is
         removed.
Environment: HF_TOKEN for Hub stores (never written anywhere).
Exit status: 0 ok or skip; 1 run-time failure; 3 bad input document; 5 the store moved since
             planning (re-plan); 13 credentials refused; 14 rate limited past the budget.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from .. import DOC_VERSION, __version__, cache, document
from ..errors import BadDocument
from ..log import log
from ..stores import open_store
from ..stores.base import POINTER, Upload, meta_path, seal_record

STARTS_DOCUMENT = False
KIND = "backup"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def chain_link(doc: dict) -> dict:
    """What later snapshots record about this one: enough to fetch and check it."""
    seal = doc.get("seal") or {}
    return {
        "id": doc["id"],
        "backup_type": doc["plan"]["type"],
        "created_at_utc": doc["created_at_utc"],
        "compression": doc["archive"]["compression"],
        "sealed": bool(seal.get("sealed")),
        "volumes": [{"name": v["name"], "size": v["size"], "sha256": v["sha256"]}
                    for v in doc["volumes"]["files"]],
    }


def build_meta(doc: dict, prefix: str) -> dict:
    plan, archive, seal = doc["plan"], doc["archive"], doc.get("seal") or {}
    link = chain_link(doc)
    parent = plan.get("parent")
    meta = {
        "ocb": DOC_VERSION,
        "id": doc["id"],
        "backup_type": plan["type"],
        "parent": meta_path(prefix, parent) if parent else None,
        "parent_id": parent,
        "chain": list(plan.get("parent_chain") or []) + [link],
        "volumes": [v["name"] for v in link["volumes"]],
        "volume_info": link["volumes"],
        "compression": archive["compression"],
        "sealed": link["sealed"],
        "seal": seal.get("params") if link["sealed"] else None,
        "file_count": archive["files"],
        "entry_count": archive["entries"],
        "bytes": archive["bytes"],
        "archive_size": archive["size"],
        "checksum": f"sha256:{seal.get('sha256') or archive['sha256']}",
        "created_at_utc": doc["created_at_utc"],
        "created_by": "ocb",
        "tool_version": __version__,
        "diverged_from": plan.get("diverged_from"),
        "changes": plan.get("changes"),
    }
    if doc.get("openclaw_version"):
        meta["openclaw_version"] = doc["openclaw_version"]
    return seal_record(meta)


def build_pointer(doc: dict, meta: dict, prefix: str) -> dict:
    # legacy field names first ("latest" is the meta's path), so existing tooling reads it
    return seal_record({
        "dataset": doc["store"],
        "latest": meta_path(prefix, doc["id"]),
        "created_at_utc": doc["created_at_utc"],
        "ocb": DOC_VERSION,
        "id": doc["id"],
        "backup_type": meta["backup_type"],
        "chain": [link["id"] for link in meta["chain"]],
        # the latest meta rides along, so restoring the latest snapshot reads one file
        "meta": meta,
    })


def run(doc: dict, args: argparse.Namespace) -> dict:
    document.require_kind(doc, KIND, "push")
    settings = document.settings(doc, "push")
    work_dir = settings["work_dir"]
    for name in ("plan", "archive", "volumes"):
        document.section(doc, name, "push")
    document.field(doc, "id", str, "document")
    document.field(doc, "store", str, "document")
    document.field(doc, "created_at_utc", str, "document")
    plan = doc["plan"]
    archive = doc["archive"]
    files = document.field(doc["volumes"], "files", list, "volumes")
    if not files:
        raise BadDocument("field 'volumes.files' is empty")
    uploads = []
    for number, volume in enumerate(files):
        if not isinstance(volume, dict):
            raise BadDocument(f"field 'volumes.files[{number}]' is not an object")
        path = document.work_path(volume, "path", f"volumes.files[{number}]", work_dir)
        size = document.field(volume, "size", int, f"volumes.files[{number}]")
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            raise BadDocument(f"volume {path} is gone or changed since ocb-split: run the backup pipe again")
        uploads.append(Upload(document.field(volume, "name", str, f"volumes.files[{number}]"), path, size,
                              document.field(volume, "sha256", str, f"volumes.files[{number}]")))
    index_path = document.work_path(archive, "index", "archive", work_dir)
    if not os.path.isfile(index_path):
        raise BadDocument(f"the snapshot index {index_path} is gone: run the backup pipe again")

    prefix = settings.get("path_prefix", "backups")
    meta = build_meta(doc, prefix)
    pointer = build_pointer(doc, meta, prefix)
    store = open_store(doc["store"], settings)
    started = time.monotonic()
    stats = store.publish(prefix, doc["id"], uploads, meta, pointer, plan.get("base"))
    stats["seconds"] = round(time.monotonic() - started, 3)
    log.info(f"snapshot {doc['id']} ({meta['backup_type']}) is the latest in {doc['store']}")

    snapshot_dir = plan.get("dir")
    new_blocks = os.path.join(snapshot_dir, cache.BLOCKS_DIR) if isinstance(snapshot_dir, str) else None
    try:
        cache.save(settings["cache_dir"], index_path, meta, cache.state_for(meta, doc["store"], "backup"), new_blocks)
    except OSError as exc:
        # the snapshot is published and whole; a cache that cannot record it (or records it
        # half) reads as no cache, so the next backup is a full one: warn, do not fail
        log.warning(f"snapshot {doc['id']} is published, but the cache {settings['cache_dir']} cannot record it "
                    f"({exc.strerror or exc}): the next backup will be a full one")
    if isinstance(snapshot_dir, str) and os.path.dirname(os.path.realpath(snapshot_dir)) == os.path.realpath(work_dir):
        shutil.rmtree(snapshot_dir, ignore_errors=True)
    doc["push"] = {"meta": meta_path(prefix, doc["id"]), "pointer": POINTER, "stats": stats}
    return doc
