"""Summary: fetch, verify and apply a chain into staging, then swap each target into place.

Usage: ocb-chain | ocb-pull [--to DIR] [--dry-run]

Reads:   a restore document with `chain` (from ocb-chain).
Writes:  `pull`: {roots, dry_run, changes, stats}. Every volume of the chain is fetched and
         checked against its sha256 first; the archives are extracted full -> latest into a
         staging path beside each target; the staging tree is made equal to the final index
         (removing what it lacks, checking every file's size and sha256, setting modes and
         mtimes); only then is each target swapped with its staging tree. On any failure the
         targets are untouched. An in-place restore records the snapshot as this machine's
         base in the local cache, so the next backup is incremental.
  --to DIR   restore under DIR instead of in place (roots under $HOME keep their path relative
             to it, others go to DIR/<root name>); the cache is not touched.
  --dry-run  verify the chain and say what would change; write nothing.
Environment: HF_TOKEN for Hub stores; OCB_PASSWORD or OCB_PASSWORD_FILE (legacy
  OPENCLAW_BACKUP_ENCRYPTION_PASSWORD) for sealed snapshots: the meta says which are sealed
  and with what, so the password is all a restore needs.
Exit status: 0 restored or nothing to restore; 1 run-time failure (I/O, disk full);
             2 sealed snapshot but no password; 3 bad input document; 4 integrity
             (checksum, wrong password, tampered seal, broken chain, hostile archive);
             13 credentials refused; 14 store unavailable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tarfile
import time
import zlib
from typing import BinaryIO

import zstandard

from .. import cache, config, document, seal
from ..archive import COPY_CHUNK, decompressor
from ..chain import resolve
from ..config import ROOT_NAME, Root
from ..errors import (DISK_FULL_ERRNOS, ChainBroken, HostileArchive, IntegrityError, RuntimeFailure, SealBroken,
                      UsageError, WrongPassword, io_reason)
from ..extract import StagingWriter, make_equal, read_spooled_index, split_member
from ..index import DIR, Index, scan
from ..log import log
from ..restore import Placement, VolumeStream, placements, remove_path, swap_into_place
from ..stores import open_store

STARTS_DOCUMENT = False
KIND = "restore"
DEFAULT_DELTA_MIN = 4 * 1024 * 1024

# What a damaged or hostile byte stream raises inside the decoders and the tar reader.
DECODE_ERRORS = (zstandard.ZstdError, zlib.error, EOFError, tarfile.TarError, UnicodeDecodeError,
                 ValueError, OSError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", metavar="DIR", help="restore under DIR instead of in place")
    parser.add_argument("--dry-run", action="store_true", help="verify and report what would change; write nothing")


def run(doc: dict, args: argparse.Namespace) -> dict:
    document.require_kind(doc, KIND, "pull")
    settings = document.settings(doc, "pull")
    chain_section = document.section(doc, "chain", "pull")
    target_id = document.field(chain_section, "target", str, "chain")
    meta = document.section(doc, "meta", "pull")
    roots = document.field(settings, "roots", list, "settings")
    snapshots = resolve(meta, target_id)
    keyring = None
    if any(link.get("sealed") for link in snapshots):
        password = config.seal_password()
        if password is None:
            raise UsageError(f"snapshot {target_id} is sealed: set OCB_PASSWORD or OCB_PASSWORD_FILE to restore it")
        keyring = seal.KeyRing(password)
    to_dir = os.path.abspath(args.to) if args.to else None
    places = placements(roots, settings.get("home") or os.path.expanduser("~"), to_dir)
    work_dir = settings["work_dir"]
    restore_dir = os.path.join(work_dir, f"restore-{target_id}")
    remove_path(restore_dir)
    os.makedirs(restore_dir, mode=0o700)
    store = open_store(doc["store"], settings)
    prefix = settings.get("path_prefix", "backups")
    started = time.monotonic()
    try:
        fetched = _fetch_all(store, prefix, snapshots, restore_dir)
        spool = os.path.join(restore_dir, "index.jsonl")
        if args.dry_run:
            doc["pull"] = _dry_run(snapshots[-1], fetched, spool, target_id, places, keyring)
        else:
            blocks_dir = os.path.join(restore_dir, cache.BLOCKS_DIR) if to_dir is None else None
            doc["pull"] = _apply(snapshots, fetched, spool, target_id, places, keyring, blocks_dir,
                                 int(settings.get("delta_min", DEFAULT_DELTA_MIN)))
            if to_dir is None:
                cache.save(settings["cache_dir"], spool, meta, cache.state_for(meta, doc["store"], "restore"), blocks_dir)
        doc["pull"]["stats"] = {"seconds": round(time.monotonic() - started, 3),
                                "volumes": sum(len(v) for v in fetched.values()),
                                "bytes": sum(v["size"] for link in snapshots for v in link["volumes"])}
    finally:
        shutil.rmtree(restore_dir, ignore_errors=True)
    return doc


def _fetch_all(store, prefix: str, snapshots: list[dict], restore_dir: str) -> dict[str, list[tuple[str, str, str]]]:
    """Every volume of the chain, fetched and verified before anything is extracted."""
    fetched: dict[str, list[tuple[str, str, str]]] = {}
    for link in snapshots:
        fetched[link["id"]] = [
            (v["name"], store.fetch_volume(prefix, v["name"], v["size"], v["sha256"], restore_dir), v["sha256"])
            for v in link["volumes"]]
    log.info(f"verified {sum(len(v) for v in fetched.values())} volumes of {len(snapshots)} snapshots")
    return fetched


def _drain(stream: BinaryIO) -> None:
    """Read a layer to its end: the last volume's hash, the final seal segment and anything
    appended after the archive are only checked there."""
    while stream.read(COPY_CHUNK):
        pass


def _stream_archive(link: dict, volumes: list[tuple[str, str, str]], writer: StagingWriter,
                    keyring: seal.KeyRing | None) -> None:
    names = ", ".join(name for name, _, _ in volumes)
    where = f"snapshot {link['id']} (volumes {names})"
    try:
        with VolumeStream(volumes) as raw:
            opened: BinaryIO = raw  # type: ignore[assignment]
            if link.get("sealed"):
                assert keyring is not None
                opened = seal.SealedReader(raw, keyring, seal.snapshot_associated_data(link["id"]))  # type: ignore[assignment]
            decoded = decompressor(opened)
            got_index = writer.extract(decoded)
            _drain(decoded)
            _drain(opened)
            _drain(raw)  # type: ignore[arg-type]
    except (WrongPassword, SealBroken) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except IntegrityError:
        raise
    except DECODE_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:  # writing staging, not reading
            raise RuntimeFailure(f"{where}: {io_reason(exc)} to extract it beside the targets "
                                 f"({exc.strerror}); the targets are untouched") from None
        raise HostileArchive(f"{where} cannot be read as an archive: {exc}") from None
    if not got_index:
        raise ChainBroken(f"{where} carries no index")


def _check_index(index: Index, target_id: str) -> None:
    if index.snapshot != target_id:
        raise ChainBroken(f"the last archive's index belongs to {index.snapshot!r}, not {target_id}")
    for entry in index.entries.values():
        if entry.root not in index.roots or not ROOT_NAME.match(entry.root):
            raise HostileArchive(f"the index lists an entry outside its roots: {entry.root!r}")
        if entry.path:
            split_member(f"{entry.root}/{entry.path}")
            # every entry hangs from a directory of the same index: an entry below a link (or
            # a file) would be checked and chmod'ed through it, outside the target
            parent = entry.path.rpartition("/")[0]
            holder = index.entries.get((entry.root, parent))
            if holder is None or holder.type != DIR:
                raise HostileArchive(f"the index lists {entry.root}/{entry.path} below something that is not "
                                     "one of its directories")


def _apply(snapshots: list[dict], fetched: dict, spool: str, target_id: str, places: dict[str, Placement],
           keyring: seal.KeyRing | None, blocks_dir: str | None, delta_min: int) -> dict:
    """Extract the chain into staging, make it equal the final index, swap it into place.

    With `blocks_dir` (an in-place restore), the block hashes of large files are written there
    and the spooled index is rewritten to describe the restored files as they now are (a
    database is its restored copy, with no -wal), so the next backup here is incremental."""
    for place in places.values():
        remove_path(place.staging)  # a dead restore's leftover
    writer = StagingWriter({name: place.staging for name, place in places.items()}, spool)
    try:
        for link in snapshots:
            _stream_archive(link, fetched[link["id"]], writer, keyring)
        final = read_spooled_index(spool, f"snapshot {target_id}")
        _check_index(final, target_id)
        restored = []
        for name, info in sorted(final.roots.items()):
            if not info.get("present") or name not in places:
                continue
            if blocks_dir is not None:
                os.makedirs(blocks_dir, mode=0o700, exist_ok=True)
            make_equal(places[name].staging, name, final, blocks_dir, delta_min)
            restored.append(name)
    except BaseException:
        for place in places.values():
            remove_path(place.staging)
        raise
    for name in sorted(writer.stats.skipped_roots):
        log.warning(f"the snapshot holds root {name}, which is not configured here: not restored")
    for name, place in places.items():
        if name not in restored:
            remove_path(place.staging)
    for name in restored:
        swap_into_place(places[name])
        log.info(f"restored {name} into {places[name].target}")
    if blocks_dir is not None:
        for entry in final.files():
            if entry.db:
                entry.size, entry.wal = entry.content_size, None
        final.save(spool)
    return {"dry_run": False, "roots": {n: places[n].target for n in restored},
            "files": sum(1 for _ in final.files()), "bytes_extracted": writer.stats.bytes}


def _dry_run(last: dict, fetched: dict, spool: str, target_id: str, places: dict[str, Placement],
             keyring: seal.KeyRing | None) -> dict:
    """Read only the final index (the last archive's last member) and compare with the targets."""
    writer = StagingWriter({}, spool)  # no staging roots: members are read past, not written
    _stream_archive(last, fetched[last["id"]], writer, keyring)
    final = read_spooled_index(spool, f"snapshot {target_id}")
    _check_index(final, target_id)
    live_roots = [Root(name, place.target, place.kind) for name, place in places.items()
                  if final.roots.get(name, {}).get("present")]
    live, _ = scan(live_roots, [], [])
    added = sorted(k for k in final.entries if k not in live.entries)
    removed = sorted(k for k in live.entries if k not in final.entries)
    changed = sorted(k for k, e in final.entries.items() if k in live.entries and not e.same_as(live.entries[k]))
    for mark, keys in (("+", added), ("~", changed), ("-", removed)):
        for root, path in keys:
            log.info(f"would {'add' if mark == '+' else 'change' if mark == '~' else 'remove'} {root}/{path}")
    return {"dry_run": True, "roots": {n: places[n].target for n in sorted(final.roots) if n in places},
            "changes": {"add": len(added), "change": len(changed), "remove": len(removed)}}
