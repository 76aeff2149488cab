"""Summary: stream the planned entries into one compressed tar archive, the index inside.

Usage: ocb-plan | ocb-pack [--plain] > packed.json

Reads:   a backup document with `plan` (its plan index in the work dir).
Writes:  `archive`: {path, size, sha256, compression, level, index, stats} in the work dir.
         One pass over the sources: tar (PAX) -> zstd (or gzip), each file hashed as it
         streams; the final index is the archive's last member. SQLite databases go in as
         consistent copies made through SQLite's backup API. In an incremental, a file of at
         least settings.delta_min bytes goes in as its changed blocks only (a PAX member with
         OCB.delta.* headers). stats: files, bytes_in (what the changed files hold),
         bytes_stored (what their members carry), delta_files, blocks_changed, databases.
         An entry that cannot be read (permission denied, name too long, I/O error) is left
         out, warned about and named in `archive.skipped` [{path, reason}]; the rest is packed.
         With sealing on (settings.seal) the stream is sealed as it is written, as ocb-seal
         would seal it (same key, associated data and format): `archive.path` is then the
         sealed file `<archive>.ocbs`, `seal` is set, and ocb-seal passes the document on. The
         plain archive never reaches the disk, and the archive's bytes are written once
         (docs/performance.md). `archive.size` and `archive.sha256` are the plain stream's.
         --plain leaves the archive unsealed for ocb-seal to seal in a pass of its own (the
         stages one at a time, e.g. to look at the plain archive first).
Environment: OCB_PASSWORD or OCB_PASSWORD_FILE when sealing is on (see ocb-seal --help).
Example: ocb-plan | ocb-pack | jq .archive.stats;  ocb-pack < plan.json > packed.json
Exit status: 0 ok or skip; 1 run-time failure (I/O, disk full, a database locked past
             settings.sqlite_timeout); 2 sealing on but no password; 3 bad input document.
"""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Iterator

from .. import config, seal
from ..archive import HashingWriter, PackOptions, write_archive
from ..cache import BLOCKS_DIR
from ..compression import COMPRESSIONS
from ..config import Settings
from ..errors import BadDocument, RuntimeFailure, UsageError, io_reason
from ..fsutil import EarlyWriteback, discard
from ..index import Entry, OutOfOrder, RowsReader, rows_intact
from ..log import log
from ..progress import Meter, human_bytes
from ..snapshot import SEALED_SUFFIX
from ..stores import local
from .seal import archive_sealing, seal_section

STARTS_DOCUMENT = False
KIND = "backup"
NEEDS = ("plan",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # everything else comes from the document
    parser.add_argument("--plain", action="store_true",
                        help="write the archive unsealed even with sealing on: ocb-seal seals it after")


def run(doc: dict, args: argparse.Namespace) -> dict:
    settings = Settings.from_doc(doc)
    plan = doc["plan"]
    snapshot_dir = plan["dir"]
    # sealing on: the key first, so that the KDF's memory (Argon2id: 64 MiB) is given back
    # before the index and the compressor take theirs (the peak RSS is the larger of the two,
    # not their sum); without a password, the document's own faults are reported first. The
    # stream is sealed as it is written, so its bytes reach the disk once.
    seals = settings.seal and not args.plain
    sealing = archive_sealing(doc, settings) if seals and config.seal_password() is not None else None
    # the plan index is read as a stream, so it is checked whole first: a torn one is refused
    # before anything is written
    if not os.path.isfile(plan["index"]):
        raise BadDocument(f"the plan index {plan['index']} is gone: run ocb-plan again")
    try:
        if not rows_intact(plan["index"]):
            raise ValueError("not one whole index in rows")
        planned = _PlanEntries(RowsReader(plan["index"]), plan["index"])
    except (OSError, ValueError) as exc:
        raise BadDocument(f"the plan index {plan['index']} cannot be read ({io_reason(exc) if isinstance(exc, OSError) else exc}): "
                          "run ocb-plan again") from None
    head = planned.head
    # a root that is a link is archived as what it points to (the index records the link)
    root_paths = {r["name"]: os.path.realpath(r["path"]) if os.path.islink(r["path"]) else r["path"]
                  for r in plan["roots"]}
    # recorded in the archive's index: a restore in place carries what they left out over
    head.excludes, head.includes = list(settings.excludes), list(settings.includes)
    unplaced = sorted({name for name, state in head.roots.items() if state.get("present")} - set(root_paths))
    if unplaced:
        raise BadDocument(f"field 'plan.roots' lacks {', '.join(unplaced)}, which the plan index packs")
    if seals and sealing is None:
        sealing = archive_sealing(doc, settings)  # no password: says so (exit 2)
    archive_path = os.path.join(snapshot_dir, f"{doc['id']}.{COMPRESSIONS[settings.compression].extension}")
    index_path = os.path.join(snapshot_dir, "index.jsonl")
    options = PackOptions(
        compression=settings.compression, level=settings.compression_level,
        scratch_dir=_fresh_dir(os.path.join(snapshot_dir, "scratch")),
        new_blocks_dir=_fresh_dir(os.path.join(snapshot_dir, BLOCKS_DIR)),
        # deltas build on the parent's block hashes, kept in the cache beside its index
        base_blocks_dir=os.path.join(settings.cache_dir, BLOCKS_DIR) if plan["type"] == "incremental" else None,
        delta_min=settings.delta_min, sqlite_timeout=settings.sqlite_timeout)
    if sealing is not None:
        archive_path += SEALED_SUFFIX
    total = plan.get("changes", {}).get("bytes_to_pack", 0)
    meter = Meter("pack", total)
    sealed = None
    try:
        if os.path.lexists(archive_path):
            os.unlink(archive_path)  # a dead run's partial archive
        with open(archive_path, "xb") as opened:
            out = EarlyWriteback(opened) if _synced_where_it_lies(doc["store"], archive_path) else opened
            if sealing is None:
                final, stats, sha256, size = write_archive(head, planned, root_paths, out, options, index_path,
                                                           meter.update)
            else:
                sealed_hash = HashingWriter(out)
                writer = seal.SealedWriter(sealed_hash, *sealing)
                final, stats, sha256, size = write_archive(head, planned, root_paths, writer,  # type: ignore[arg-type]
                                                           options, index_path, meter.update)
                sealed = seal_section(writer.close(), archive_path, sealed_hash.digest.hexdigest())
            out.flush()  # no fsync: the work dir's files are scratch (fsutil), synced when they land
    except OSError as exc:
        meter.abandon()
        discard(archive_path)
        raise RuntimeFailure(f"cannot write the archive {archive_path}: {io_reason(exc)}") from None
    except OutOfOrder as exc:  # a plan index not of ocb-plan's making
        meter.abandon()
        discard(archive_path)
        raise BadDocument(f"the plan index {plan['index']} is not in order ({exc}): run ocb-plan again") from None
    except BaseException:
        meter.abandon()  # erase the bar; the error says the rest
        discard(archive_path)  # never a half-written archive left behind
        raise
    meter.close(note=f"{stats.files} files into an archive of {human_bytes(size)}")
    if stats.vanished:
        log.info(f"{stats.vanished} entries vanished between plan and pack: not in this snapshot")
    for skipped in stats.unreadable:
        log.warning(f"cannot read {skipped['path']} ({skipped['reason']}): not in this snapshot")
    if stats.changed_while_read:
        log.warning(f"{stats.changed_while_read} files shrank while read: archived as read, carried again next time")
    shutil.rmtree(options.scratch_dir, ignore_errors=True)
    if stats.delta_files:
        log.info(f"{stats.delta_files} large files as deltas: {stats.blocks_changed} changed blocks")
    log.info(f"packed {stats.files} files ({stats.bytes_in} bytes, {stats.bytes_stored} stored) into {size} bytes")
    doc["archive"] = {
        "path": archive_path, "size": size, "sha256": sha256, "compression": settings.compression,
        "level": settings.compression_level, "index": index_path, "entries": final.entries,
        "files": final.files, "bytes": final.bytes,
        "stats": stats.as_dict(), "skipped": stats.unreadable,
    }
    if sealed is not None:
        doc["seal"] = sealed
        log.info(f"sealed as packed: {human_bytes(sealed['size'])}")
    return doc


def _fresh_dir(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)  # a dead run's leftovers
    os.makedirs(path, mode=0o700)
    return path


class _PlanEntries:
    """The plan index's entries, read as pack goes; a change to the file since rows_intact
    checked it (ValueError) is a bad document, as a torn one is."""

    def __init__(self, reader: RowsReader, path: str) -> None:
        self.head, self._reader, self._path = reader.head, reader, path

    def __iter__(self) -> "Iterator[Entry]":
        try:
            yield from self._reader
        except ValueError as exc:
            raise BadDocument(f"the plan index {self._path} cannot be read ({exc}): run ocb-plan again") from None


def _synced_where_it_lies(store_url: str, archive_path: str) -> bool:
    """The archive is the volume a local store on the work dir's filesystem takes by a rename
    and syncs there (a single volume: ocb-split keeps an archive that fits one as it is)."""
    if not store_url.startswith(local.SCHEME):
        return False
    try:
        return local.LocalStore(store_url).takes_by_rename(archive_path)
    except UsageError:
        return False
