"""Summary: publish the volumes, the meta and the pointer so the snapshot appears atomically.

Usage: ocb-split | ocb-push > pushed.json

Reads:   a backup document with `plan`, `archive`, `seal` and `volumes`.
Writes:  `push`: {meta, pointer, stats, skipped (a count, when some were)}. The store gets `<prefix>/<volume>...`,
         `<prefix>/<id>.meta.json`, the catalog `ocb-catalog.json` and `latest-backup.json` together (one commit on the Hub;
         renames under a lock on a folder; a volume in a work dir on the folder's filesystem
         is renamed in, not copied, and put back if the push fails), only if the store's latest snapshot is still the
         one the plan saw. Then the new index (and the block hashes of its large files)
         becomes the local cache (this machine's lineage) and the snapshot's work dir is
         removed. A sealed snapshot's meta, pointer and catalog carry a record MAC
         (docs/format.md); the catalog appended to must verify first when it has one, and
         the publish number is remembered in the cache (rollback detection).
Environment: HF_TOKEN for Hub stores (never written anywhere); OCB_PASSWORD or
  OCB_PASSWORD_FILE for a sealed snapshot (the record MACs).
Example: ocb-plan | ocb-pack | ocb-seal | ocb-split | ocb-push | jq .push
Exit status: 0 ok or skip; 6 published, but some entries could not be read (named in
             `plan.skipped`, `archive.skipped` and the meta); 1 run-time failure, a snapshot
             that would take the folder past the store's limit of entries (the Hub: 10,000;
             nothing uploaded: run ocb-prune), or an
             index that a restore would refuse (ocb.index.check_structure: nothing is
             published); 2 sealed but no password; 3 bad input document; 4 the store's
             catalog fails its MAC;
             5 the store moved since planning (re-plan); 13 credentials refused; 14 rate
             limited past the budget.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from typing import Iterable, Iterator

from .. import cache, catalog, config, seal
from ..blocks import sidecar_name
from ..config import Settings
from ..errors import EXIT_PARTIAL, BadDocument, RuntimeFailure, UsageError
from ..index import FILE, Entry, open_in_order, structure_problem
from ..log import log
from ..progress import Meter
from ..snapshot import (
    META_SUFFIX,
    POINTER,
    RECORD_MAC,
    build_meta,
    build_pointer,
    check_mac,
    meta_path,
    sign,
    skipped_entries,
)
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
    # read once, as a stream (its rows copy, when ocb-pack left a whole one): checked, and the
    # block-hash sidecars the cache keeps found on the way
    snapshot_dir = doc["plan"]["dir"]
    new_blocks_dir = os.path.join(snapshot_dir, cache.BLOCKS_DIR)
    sidecars = cache.sidecars_present(settings.cache_dir, new_blocks_dir)
    kept_sidecars: set[str] = set()
    try:
        final_head, final_entries = open_in_order(index_path)
        unrestorable = structure_problem(final_head.roots, _noting_sidecars(final_entries, sidecars, kept_sidecars,
                                                                            settings.delta_min))
    except ValueError as exc:  # its rows copy was checked whole when opened: changed under our feet
        raise RuntimeFailure(f"the snapshot index {index_path} changed while it was read ({exc}): "
                             "run the backup pipe again") from None
    if unrestorable:
        raise RuntimeFailure(f"snapshot {doc['id']} is not published: {unrestorable}")

    prefix = settings.path_prefix
    key = record_key(settings)
    meta = build_meta(doc, prefix)
    if key is not None:
        meta = sign(meta, "meta", key)
    store = open_store(doc["store"], settings, config.store_secrets())
    started = time.monotonic()
    _check_folder_limit(store, prefix, doc["id"], [u.name for u in uploads])
    known = store.read_catalog()
    if known is None and doc["plan"]["base"] is not None:
        # a store written before catalogs existed: its snapshots, as its listing names them
        known = catalog.seed(store.list_snapshot_ids(prefix))
    elif known is not None and key is not None:
        check_known_catalog(known, key, settings.cache_dir, doc["store"])
    new_catalog = catalog.append(known, meta)
    seq = new_catalog["snapshots"][-1]["seq"]
    pointer = build_pointer(doc["store"], meta, prefix, seq)
    if key is not None:
        new_catalog, pointer = sign(new_catalog, "catalog", key), sign(pointer, "pointer", key)
    meter = Meter("push", sum(u.size for u in uploads), bar=False)
    try:
        stats = store.publish(prefix, doc["id"], uploads, meta, pointer, new_catalog, doc["plan"]["base"])
    except BaseException:
        meter.abandon()
        raise
    if key is not None and meta.get("store_id"):
        try:
            cache.record_seen(settings.cache_dir, doc["store"], meta["store_id"], seq, doc["id"])
        except OSError as exc:
            log.warning(f"cannot record publish {seq} of {doc['store']} in {settings.cache_dir}: "
                        f"{exc.strerror or exc}")
    stats["seconds"] = round(time.monotonic() - started, 3)
    meter.close(done=meter.total, note=f"{len(uploads)} volumes and the meta published to {doc['store']}")
    log.info(f"snapshot {doc['id']} ({meta['backup_type']}) is the latest in {doc['store']}")

    try:
        cache.save(settings.cache_dir, index_path, meta, cache.state_for(meta, doc["store"], "backup"),
                   new_blocks_dir, kept_sidecars=kept_sidecars)
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


def record_key(settings: Settings) -> seal.PasswordKey | None:
    """The password key that signs the meta, pointer and catalog: this machine's, as ocb-seal
    derived it (same KDF, same cached salt). An unsealed snapshot (OCB_SEAL=off) is signed
    too when a password is set, so that the store's catalog stays authenticated."""
    password = config.seal_password()
    if password is None:
        if settings.seal:
            raise UsageError("this document asks for sealing but no password is set (OCB_PASSWORD or OCB_PASSWORD_FILE)")
        return None
    return seal.machine_password_key(settings.cache_dir, password, settings.kdf, settings.scrypt_log_n,
                                     settings.argon2_memory, config.key_cache())


def check_known_catalog(known: dict, key: seal.PasswordKey, cache_dir: str, store_url: str) -> None:
    """The catalog this push appends to is the store's own: its MAC verifies when it has one
    (or when this machine has seen the store authenticated), before its entries are re-signed."""
    where = f"{store_url}/{catalog.NAME}"
    if RECORD_MAC not in known and cache.seen(cache_dir, store_url) is None:
        return  # a store written before record MACs: signed from this push on
    keyring = seal.KeyRing(config.seal_password() or b"")
    keyring.add(key)
    check_mac(known, "catalog", keyring, where)


def exit_status(doc: dict) -> int:
    """6 when the snapshot is published but some entries could not be read (README)."""
    return EXIT_PARTIAL if (doc.get("push") or {}).get("skipped") else 0


def _noting_sidecars(entries: Iterable[Entry], present: set[str], kept: set[str], delta_min: int) -> Iterator[Entry]:
    """`entries`, passed on; into `kept`, the `present` sidecars that name one of its files of
    at least `delta_min` bytes. Only those have block hashes (ocb-pack makes them for no
    other): a smaller file's old sidecar describes a version a delta will never build on, so
    it goes, and the name of most files (a sha256 each) is never computed."""
    if not present:
        yield from entries
        return
    for entry in entries:
        if (entry.type == FILE and entry.content_size >= delta_min
                and (name := sidecar_name(entry.root, entry.path)) in present):
            kept.add(name)
        yield entry
