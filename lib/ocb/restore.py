"""Restore: fetch and verify a chain, extract it into staging, make it equal the final index,
swap it into place; or, dry, say what would change.

The target is not touched until every volume of the chain has been verified and extracted
and the staging tree equals the final index; then each root's staging tree is exchanged
with its target in one renameat2(RENAME_EXCHANGE) (two renames where the kernel lacks it),
and the old tree is removed. Decoder and tar errors of a damaged or hostile stream are
mapped to integrity errors here; a full disk while extracting is a run-time failure.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import os
import shutil
import tarfile
import time
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable

import zstandard

from . import cache, seal
from .compression import decompressor
from .config import Root
from .errors import (
    DISK_FULL_ERRNOS,
    ChainBroken,
    ChecksumMismatch,
    HostileArchive,
    IntegrityError,
    RuntimeFailure,
    SealBroken,
    WrongPassword,
    io_reason,
)
from .extract import StagingWriter, make_equal, read_spooled_index
from .index import Index, check_structure, scan
from .log import log
from .stores.base import Store

STAGING_SUFFIX = ".ocb-staging"
OLD_SUFFIX = ".ocb-old"
READ_CHUNK = 1024 * 1024
AT_FDCWD = -100
RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class Placement:
    """Where one root goes: its final target and the staging path beside it."""

    root: str
    kind: str
    target: str

    @property
    def staging(self) -> str:
        head, tail = os.path.split(self.target)
        return os.path.join(head, f".{tail}{STAGING_SUFFIX}")

    @property
    def old(self) -> str:
        head, tail = os.path.split(self.target)
        return os.path.join(head, f".{tail}{OLD_SUFFIX}")


def placements(roots: Iterable[Root], home: str, to_dir: str | None) -> dict[str, Placement]:
    """Root name -> placement; with `to_dir`, roots under HOME keep their place relative to it."""
    result = {}
    for root in roots:
        target = root.path
        if to_dir is not None:
            relative = os.path.relpath(target, home)
            if relative.startswith(".."):
                relative = root.name
            target = os.path.join(to_dir, relative)
        result[root.name] = Placement(root.name, root.kind, os.path.abspath(target))
    return result


def remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


class VolumeStream(io.RawIOBase):
    """The volumes of one snapshot read back to back as one stream, each re-hashed as read.

    Volumes were verified before extraction began; hashing again as they stream catches a
    file changed under us in between, and names the volume when it happens.
    """

    def __init__(self, volumes: list[tuple[str, str, str]]) -> None:  # (name, path, sha256)
        self.pending = list(volumes)
        self.current: BinaryIO | None = None
        self.name = ""
        self.expected = ""
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def _advance(self) -> bool:
        if self.current is not None:
            self.current.close()
            if self.digest.hexdigest() != self.expected:
                raise ChecksumMismatch(f"volume {self.name} changed while it was read")
            self.current = None
        if not self.pending:
            return False
        self.name, path, self.expected = self.pending.pop(0)
        self.current = open(path, "rb")
        self.digest = hashlib.sha256()
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while True:
            if self.current is None and not self._advance():
                return 0
            data = self.current.read(len(buffer))  # type: ignore[union-attr]
            if data:
                self.digest.update(data)
                buffer[: len(data)] = data
                return len(data)
            if not self._advance():
                return 0

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        super().close()


def _renameat2_exchange(first: str, second: str) -> bool:
    """Atomically swap two paths; False when the kernel or libc cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    result = libc.renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE)
    return result == 0


def swap_into_place(placement: Placement) -> None:
    """Make the staging tree the target; the old target is removed afterwards."""
    staging, target = placement.staging, placement.target
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.rename(staging, target)
            return
        if _renameat2_exchange(staging, target):
            remove_path(staging)  # now holds the old target
            return
        remove_path(placement.old)
        os.rename(target, placement.old)
        os.rename(staging, target)
        remove_path(placement.old)
    except OSError as exc:
        raise RuntimeFailure(f"cannot move the restored {placement.root} into {target}: {exc.strerror}") from None


# What a damaged or hostile byte stream raises inside the decoders and the tar reader.
DECODE_ERRORS = (zstandard.ZstdError, zlib.error, EOFError, tarfile.TarError, UnicodeDecodeError,
                 ValueError, OSError)


@dataclass
class Job:
    """One restore: the chain (full first), where each root goes, and how to open it."""

    store: Store
    prefix: str
    snapshots: list[dict]
    places: dict[str, Placement]
    keyring: seal.KeyRing | None
    run_dir: str  # a fresh folder of the work dir; removed when the job ends, however it ends
    delta_min: int

    @property
    def target_id(self) -> str:
        return self.snapshots[-1]["id"]


def apply(job: Job, record: tuple[str, str, dict] | None) -> dict:
    """Restore the chain into place. `record` (cache dir, store URL, meta), for an in-place
    restore: the snapshot becomes this machine's base, so the next backup is incremental."""
    started = time.monotonic()
    try:
        fetched = _fetch_all(job.store, job.prefix, job.snapshots, job.run_dir)
        spool = os.path.join(job.run_dir, "index.jsonl")
        blocks_dir = os.path.join(job.run_dir, cache.BLOCKS_DIR) if record is not None else None
        result = _apply(job.snapshots, fetched, spool, job.target_id, job.places, job.keyring, blocks_dir,
                        job.delta_min)
        if record is not None:
            cache_dir, store_url, meta = record
            cache.save(cache_dir, spool, meta, cache.state_for(meta, store_url, "restore"), blocks_dir)
        result["stats"] = _stats(job, fetched, started)
        return result
    finally:
        shutil.rmtree(job.run_dir, ignore_errors=True)


def dry_run(job: Job) -> dict:
    """Verify the chain and say what an in-place restore would change; write nothing."""
    started = time.monotonic()
    try:
        fetched = _fetch_all(job.store, job.prefix, job.snapshots, job.run_dir)
        result = _dry_run(job.snapshots[-1], fetched, os.path.join(job.run_dir, "index.jsonl"), job.target_id,
                          job.places, job.keyring)
        result["stats"] = _stats(job, fetched, started)
        return result
    finally:
        shutil.rmtree(job.run_dir, ignore_errors=True)


def _stats(job: Job, fetched: dict, started: float) -> dict:
    return {"seconds": round(time.monotonic() - started, 3), "volumes": sum(len(v) for v in fetched.values()),
            "bytes": sum(v["size"] for link in job.snapshots for v in link["volumes"])}


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
    while stream.read(READ_CHUNK):
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
    problem = check_structure(index)
    if problem:
        raise HostileArchive(problem)


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
