"""Restore: fetch and verify a chain, extract it into staging, make it equal the final index,
swap it into place; or, dry, say what would change.

The target is not touched until every volume of the chain has been verified and extracted
and every root's staging tree equals the final index; then all roots are swapped together
as one transaction under a journal (journal.py): each staging tree exchanged with its target
in one renameat2(RENAME_EXCHANGE) (two renames where the file system lacks it), a mount point
by its top-level entries, the paths the snapshot's excludes left out carried over from the
old tree; a failure swaps back the roots already done. A root that is a symlink is followed:
its target receives the tree and the link stays. Decoder and tar errors of a damaged or
hostile stream are mapped to integrity errors here; a full disk while extracting is a
run-time failure.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import hashlib
import io
import itertools
import operator
import os
import queue
import shutil
import tarfile
import threading
import time
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator

import zstandard

from . import cache, fsutil, journal, seal
from .compression import decompressor
from .config import Root
from .errors import (
    DISK_FULL_ERRNOS,
    ChainBroken,
    ChecksumMismatch,
    HostileArchive,
    IntegrityError,
    NoSuchPath,
    RuntimeFailure,
    SealBroken,
    UsageError,
    WrongPassword,
    io_reason,
)
from .extract import ExtractStats, StagingWriter, WrittenHashes, make_equal, open_spooled_index, read_spooled_index
from .index import DIR, FILE, SQLITE_COMPANIONS, Entry, Index, IndexFiles, check_structure, in_order, is_excluded, scan
from .log import log
from .progress import Meter, human_bytes
from .stores.base import Store, damaged_volume, file_sha256

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Placement:
    """Where one root goes. `target` is where the tree is written: for a root that is a
    symlink (`link`), the path the link resolves to; the link itself stays. `inside`: the
    target is a mount point, which cannot be renamed: staging goes inside it."""

    root: str
    kind: str
    target: str
    link: str | None = None
    inside: bool = False

    def swap(self, tx: str) -> journal.RootSwap:
        head, tail = os.path.split(self.target)
        if self.inside:
            return journal.RootSwap(self.root, self.target, os.path.join(self.target, f"{journal.STAGING_MARK}.{tx}"),
                                    True, os.path.join(self.target, f"{journal.OLD_MARK}.{tx}"),
                                    old_mtimes={"": os.lstat(self.target).st_mtime_ns})
        return journal.RootSwap(self.root, self.target, os.path.join(head, f".{tail}{journal.STAGING_MARK}.{tx}"),
                                False, os.path.join(head, f".{tail}{journal.OLD_MARK}.{tx}"))


def mount_points() -> set[str]:
    """Every mount point of this process's namespace (bind mounts included, which st_dev misses)."""
    return {point for point, _ in fsutil.mounts()}


def placements(roots: Iterable[Root], home: str, to_dir: str | None) -> dict[str, Placement]:
    """Root name -> placement; with `to_dir`, roots under HOME keep their place relative to it."""
    result = {}
    mounts = mount_points()
    for root in roots:
        target = root.path
        if to_dir is not None:
            relative = os.path.relpath(target, home)
            if relative.startswith(".."):
                relative = root.name
            target = os.path.join(to_dir, relative)
        target = os.path.abspath(target)
        link = target if os.path.islink(target) else None
        real = os.path.realpath(target)
        inside = root.kind == "dir" and os.path.isdir(real) and (real in mounts or os.path.ismount(real))
        result[root.name] = Placement(root.name, root.kind, real if link else target, link, inside)
    return result


def open_holders(paths: Iterable[str]) -> dict[int, list[str]]:
    """pid -> the paths it holds open (or has as its cwd) under any of `paths` (Linux /proc);
    processes this user cannot see are not listed."""
    tops = [p.rstrip("/") for p in paths]
    mine = {os.getpid(), os.getppid()}
    found: dict[int, list[str]] = {}
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if pid in mine:
            continue
        names = []
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
        for name in names:
            if any(name == top or name.startswith(top + "/") for top in tops):
                found.setdefault(pid, []).append(name)
    return found


def refuse_if_open(places: Iterable[Placement]) -> None:
    held = open_holders(p.target for p in places)
    if held:
        shown = "; ".join(f"pid {pid} ({_command(pid)}): {', '.join(sorted(set(names))[:3])}"
                          for pid, names in sorted(held.items()))
        raise RuntimeFailure(f"files under the targets are open in other processes ({shown}): stop them, or "
                             "restore with --force (their writes would be lost); nothing was changed")


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def carried_paths(target: str, excludes: list[str], includes: list[str], databases: set[str]) -> list[str]:
    """The topmost paths under `target` that the snapshot's excludes left out: they are carried
    into the new tree, never deleted. A SQLite database's -wal/-shm/-journal companions (of
    `databases`, the root's databases in the index, by path) are never carried: replayed
    onto the restored copy they would corrupt it."""
    found: list[str] = []

    def walk(path: str, rel_dir: str) -> None:
        try:
            with os.scandir(path) as listing:
                children = sorted(listing, key=lambda d: d.name)
        except OSError:
            return
        for child in children:
            rel = child.name if not rel_dir else f"{rel_dir}/{child.name}"
            if not rel_dir and (journal.INSIDE_LEFTOVER.match(child.name)):
                continue
            if is_excluded(excludes, includes, rel, child.name):
                if not any(rel == db + suffix for db in databases for suffix in SQLITE_COMPANIONS):
                    found.append(rel)
            elif child.is_dir(follow_symlinks=False):
                walk(child.path, rel)

    if excludes and os.path.isdir(target) and not os.path.islink(target):
        walk(target, "")
    return found


class VolumeStream(io.RawIOBase):
    """The volumes of one snapshot read back to back as one stream, each hashed as read.

    For a folder store this is the check of its sha256 (Store.fetch_volume); for a downloaded
    volume, verified once fetched, it catches a file changed under us in between. Either way
    a difference is ChecksumMismatch naming the volume, at its end; extraction was into
    staging only, so nothing is touched (_stream_archive names the damage first whatever the
    layers above made of the bytes).
    """

    def __init__(self, volumes: list[tuple[str, str, str]], meter: Meter | None = None) -> None:  # (name, path, sha256)
        self.meter = meter  # the bytes read are the extraction's progress
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
                raise ChecksumMismatch(f"volume {self.name}: sha256 differs from the meta (damaged, or changed while it was read)")
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
                if self.meter is not None:
                    self.meter.update(len(data))
                return len(data)
            if not self._advance():
                return 0

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        super().close()


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
    work_dir: str = ""  # where the transaction's journal lives (default: the run dir's parent)
    excludes: tuple[str, ...] = ()  # what to carry over when the snapshot's index does not say
    includes: tuple[str, ...] = ()
    force: bool = False  # swap even while other processes hold files open under the targets
    # how the chain is read into staging: (job, fetched, staging paths, index spool) -> (final
    # index, extract stats, hashes taken while writing or None); None: ocb's archives
    # (_read_chain); legacy_restore.py has its own
    read_chain: Callable[["Job", dict, dict[str, str], str], tuple[Index, ExtractStats, dict | None]] | None = None
    # root name -> patterns relative to it ("" = the whole root): restore only the matching
    # paths (include_patterns); None: everything
    include: dict[str, list[str]] | None = None

    @property
    def target_id(self) -> str:
        return self.snapshots[-1]["id"]


def apply(job: Job, record: tuple[str, str, dict] | None) -> dict:
    """Restore the chain into place. `record` (cache dir, store URL, meta), for an in-place
    restore: the snapshot becomes this machine's base, so the next backup is incremental."""
    started = time.monotonic()
    try:
        spool = os.path.join(job.run_dir, "index.jsonl")
        if job.include is not None:  # some paths: only the snapshots that hold them
            fetched, chosen = _fetch_for(job, spool)
            result = _apply(job, fetched, spool, None, in_place=record is not None, chosen=chosen)
            result["stats"] = _stats(job, fetched, started)
            return result
        fetched = _fetch_all(job.store, job.prefix, job.snapshots, job.run_dir)
        blocks_dir = os.path.join(job.run_dir, cache.BLOCKS_DIR) if record is not None else None
        result = _apply(job, fetched, spool, blocks_dir, in_place=record is not None)
        if record is not None:
            cache_dir, store_url, meta = record
            cache.save(cache_dir, as_restored(spool), meta, cache.state_for(meta, store_url, "restore"), blocks_dir)
        result["stats"] = _stats(job, fetched, started)
        return result
    finally:
        shutil.rmtree(job.run_dir, ignore_errors=True)


def dry_run(job: Job) -> dict:
    """Verify the chain and say what an in-place restore would change; write nothing."""
    started = time.monotonic()
    try:
        fetched = _fetch_all(job.store, job.prefix, job.snapshots, job.run_dir)
        result = _dry_run(job, fetched, os.path.join(job.run_dir, "index.jsonl"))
        result["stats"] = _stats(job, fetched, started)
        return result
    finally:
        shutil.rmtree(job.run_dir, ignore_errors=True)


def _stats(job: Job, fetched: dict, started: float) -> dict:
    return {"seconds": round(time.monotonic() - started, 3), "volumes": sum(len(v) for v in fetched.values()),
            "bytes": sum(v["size"] for link in job.snapshots if link["id"] in fetched for v in link["volumes"])}


def include_patterns(patterns: Iterable[str], roots: Iterable[Root], home: str) -> dict[str, list[str]]:
    """Root name -> the patterns, relative to that root, of `--include PATTERN...`.

    A pattern is a path as it lies under the home (`.openclaw/workspace/SOUL.md`, `.ssh/*`)
    or an absolute path of the live system (`/root/.openclaw/workspace/SOUL.md`); globs are
    allowed below a root. "" stands for the whole root. A pattern under no root is a usage
    error, before anything is fetched."""
    result: dict[str, list[str]] = {}
    roots = list(roots)
    for raw in patterns:
        pattern = os.path.normpath(os.path.join(home, os.path.expanduser(raw))) if raw else ""
        hit = False
        for root in roots:
            top = os.path.normpath(root.path)
            if pattern == top or fnmatch.fnmatchcase(top, pattern):
                result.setdefault(root.name, []).append("")
                hit = True
            elif pattern.startswith(top + "/"):
                result.setdefault(root.name, []).append(pattern[len(top) + 1:])
                hit = True
        if not hit:
            raise UsageError(f"--include {raw}: under none of the roots restored here "
                             f"({', '.join(os.path.normpath(r.path) for r in roots)})")
    return result


def _included(include: dict[str, list[str]], root: str, path: str) -> bool:
    """Whether the entry `root`/`path` is one of the paths asked for: it, or a directory
    above it, matches one of its root's patterns."""
    patterns = include.get(root)
    if not patterns:
        return False
    if "" in patterns:
        return True
    parts = path.split("/") if path else []
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(prefix, pattern) for pattern in patterns for prefix in prefixes)


def _subset(final: Index, chosen: set[tuple[str, str]]) -> Index:
    """The final index cut down to the chosen entries and the directories above them."""
    subset = Index(roots=final.roots, snapshot=final.snapshot, excludes=final.excludes, includes=final.includes)
    for root, path in chosen:
        parts = path.split("/") if path else []
        for n in range(len(parts) + 1):
            key = (root, "/".join(parts[:n]))
            if key in final.entries:
                subset.add(final.entries[key])
    return subset


def _fetch_for(job: Job, spool: str) -> tuple[dict[str, list[tuple[str, str, str]]], set[tuple[str, str]]]:
    """For a restore of some paths: the target snapshot (it carries the index), then only the
    snapshots of the chain whose archives hold the matching entries (each entry's `held`;
    an index that does not record it: every snapshot). Returns what was fetched and the
    (root, path) of the matching entries."""
    last, target_id = job.snapshots[-1], job.target_id
    assert job.include is not None
    fetched = {last["id"]: _fetch(job.store, job.prefix, last, job.run_dir)}
    _stream_archive(last, fetched[last["id"]], StagingWriter({}, spool), job.keyring,
                    seal.link_associated_data(job.snapshots, len(job.snapshots) - 1))
    final = read_spooled_index(spool, f"snapshot {target_id}")
    _check_index(final, target_id)
    chosen = {key for key in final.entries if key[0] in job.places and _included(job.include, *key)}
    if not chosen:
        raise NoSuchPath(f"no path of snapshot {target_id} matches --include "
                         f"{' '.join(p for ps in job.include.values() for p in ps) or '(the roots)'}: nothing restored "
                         "(ocb-restore --dry-run shows what it holds)")
    needed: set[str] = set()
    for key in chosen:
        held = final.entries[key].held
        needed.update(held if held is not None else (link["id"] for link in job.snapshots))
    for link in job.snapshots:
        if link["id"] in needed and link["id"] not in fetched:
            fetched[link["id"]] = _fetch(job.store, job.prefix, link, job.run_dir)
    log.info(f"{len(chosen)} entries match --include: fetched {len(fetched)} of the {len(job.snapshots)} "
             f"snapshots of the chain ({sum(len(v) for v in fetched.values())} volumes)")
    return {i: v for i, v in fetched.items() if i in needed}, chosen


def _fetch(store, prefix: str, link: dict, run_dir: str) -> list[tuple[str, str, str]]:
    return [(v["name"], store.fetch_volume(prefix, v["name"], v["size"], v["sha256"], run_dir), v["sha256"])
            for v in link["volumes"]]


def carried_except(target: str, subset: Index, root: str) -> list[str]:
    """For a restore of some paths: the topmost live paths under `target` that the restored
    subset does not hold. They are carried into the new tree (hard links), so the swap
    replaces only the matching paths and touches nothing else; a live path the snapshot
    lacks is kept, never deleted."""
    found: list[str] = []

    def walk(path: str, rel_dir: str) -> None:
        try:
            with os.scandir(path) as listing:
                children = sorted(listing, key=lambda d: d.name)
        except OSError:
            return
        for child in children:
            rel = child.name if not rel_dir else f"{rel_dir}/{child.name}"
            if not rel_dir and journal.INSIDE_LEFTOVER.match(child.name):
                continue
            entry = subset.entries.get((root, rel))
            if entry is None:
                found.append(rel)
            elif entry.type == DIR and child.is_dir(follow_symlinks=False):
                walk(child.path, rel)

    if os.path.isdir(target) and not os.path.islink(target):
        walk(target, "")
    return found


def _fetch_all(store, prefix: str, snapshots: list[dict], restore_dir: str) -> dict[str, list[tuple[str, str, str]]]:
    """Every volume of the chain fetched (of its recorded size) before anything is extracted;
    each one's sha256 is checked by then (a download) or as it is read (VolumeStream)."""
    fetched: dict[str, list[tuple[str, str, str]]] = {}
    meter = Meter("fetch", sum(v["size"] for link in snapshots for v in link["volumes"]), bar=False)
    try:
        for link in snapshots:
            fetched[link["id"]] = _fetch(store, prefix, link, restore_dir)
    except BaseException:
        meter.abandon()
        raise
    meter.close(done=meter.total, note=f"{sum(len(v) for v in fetched.values())} volumes of {len(snapshots)} "
                                       "snapshots")
    return fetched


def _drain(stream: BinaryIO) -> None:
    """Read a layer to its end: the last volume's hash, the final seal segment and anything
    appended after the archive are only checked there."""
    while stream.read(READ_CHUNK):
        pass


class _Decoded:
    """An archive's plain tar bytes, decoded on a second thread: the volumes read and re-hashed,
    the seal opened, zstd undone, while the calling thread parses members and writes files.
    File reads, sha256, AES-GCM and zstd run outside the GIL, so on two cores the two halves
    overlap. At most QUEUED chunks of READ_CHUNK wait between them (flat memory). What the
    decoding thread raises is raised again by the read that would have returned the bytes
    after it; it reads every layer to its end (see _drain) before it says EOF."""

    QUEUED = 4

    def __init__(self, layers: Callable[[], tuple[BinaryIO, list[BinaryIO]]]) -> None:
        self._queue: queue.Queue = queue.Queue(self.QUEUED)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, args=(layers,), name="ocb-decode", daemon=True)
        self._thread.start()

    def _run(self, layers: Callable[[], tuple[BinaryIO, list[BinaryIO]]]) -> None:
        try:
            decoded, below = layers()
            while chunk := decoded.read(READ_CHUNK):
                if not self._put(chunk):
                    return
            for layer in below:  # the final seal segment, the last volume's hash, trailing bytes
                _drain(layer)
            self._put(b"")
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(self, size: int = -1) -> bytes:
        """The next chunk as decoded (`size` is a hint: ForwardReader asks for at least one)."""
        if self._ended:
            return b""
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if not item:
            self._ended = True
        return item

    def close(self) -> None:
        """Stop the decoding thread (a failure on the writing side) and wait for it."""
        self._stop.set()
        self._thread.join()


def _stream_archive(link: dict, volumes: list[tuple[str, str, str]], writer: StagingWriter,
                    keyring: seal.KeyRing | None, associated: bytes = b"", meter: Meter | None = None) -> None:
    names = ", ".join(name for name, _, _ in volumes)
    where = f"snapshot {link['id']} (volumes {names})"
    with contextlib.ExitStack() as closing:
        def layers() -> tuple[BinaryIO, list[BinaryIO]]:
            raw = closing.enter_context(VolumeStream(volumes, meter))
            opened: BinaryIO = raw  # type: ignore[assignment]
            if link.get("sealed"):
                assert keyring is not None
                opened = seal.SealedReader(raw, keyring, associated)  # type: ignore[assignment]
            return decompressor(opened), [opened, raw]  # type: ignore[list-item]

        try:
            decoded = _Decoded(layers)
            closing.callback(decoded.close)  # first out: the thread stops before the volumes close
            got_index = writer.extract(decoded)  # type: ignore[arg-type]
            _drain(decoded)  # type: ignore[arg-type]
        except (IntegrityError, *DECODE_ERRORS) as exc:
            # a volume that differs from the meta explains whatever the layers above made of
            # it (a seal that does not open, a zstd or tar error, a stream cut short): say so
            _raise_if_damaged(volumes)
            if isinstance(exc, (WrongPassword, SealBroken)):
                raise type(exc)(f"{where}: {exc}") from None
            if isinstance(exc, IntegrityError):
                raise
            if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:  # writing staging, not reading
                raise RuntimeFailure(f"{where}: {io_reason(exc)} to extract it beside the targets "
                                     f"({exc.strerror}); the targets are untouched") from None
            raise HostileArchive(f"{where} cannot be read as an archive: {exc}") from None
    if not got_index:
        raise ChainBroken(f"{where} carries no index")


def _raise_if_damaged(volumes: list[tuple[str, str, str]]) -> None:
    """ChecksumMismatch naming the first volume whose file differs from its recorded sha256."""
    for name, path, sha256 in volumes:
        try:
            if file_sha256(path) != sha256:
                raise ChecksumMismatch(damaged_volume(name)) from None
        except OSError:
            continue  # unreadable now: the error being handled says what happened


def read_archive(chain: list[dict], volumes: list[tuple[str, str, str]], keyring: seal.KeyRing | None,
                 spool: str) -> Index:
    """Read the archive of a chain's last snapshot (its fetched volumes: name, path, sha256)
    through to its index, writing no member anywhere (ocb-check --read-data): every volume
    re-hashed, the seal opened and authenticated under its place in the chain, the compression
    and tar layers decoded, the index checked. The integrity errors a restore would raise,
    naming the snapshot."""
    link = chain[-1]
    _stream_archive(link, volumes, StagingWriter({}, spool), keyring,
                    seal.link_associated_data(chain, len(chain) - 1))
    index = read_spooled_index(spool, f"snapshot {link['id']}")
    _check_index(index, link["id"])
    return index


def _check_index(index: Index, target_id: str) -> None:
    _check_snapshot(index, target_id)
    problem = check_structure(index)
    if problem:
        raise HostileArchive(problem)


def _check_snapshot(head: Index, target_id: str) -> None:
    if head.snapshot != target_id:
        raise ChainBroken(f"the last archive's index belongs to {head.snapshot!r}, not {target_id}")


def _patterns(job: Job, final: Index) -> tuple[list[str], list[str]]:
    """The excludes and includes the snapshot was taken with (its index header records them);
    an index from before that record: this restore's own settings."""
    if final.excludes is not None:
        return list(final.excludes), list(final.includes or ())
    return list(job.excludes), list(job.includes)


def _check_links(places: dict[str, Placement], names: Iterable[str]) -> None:
    """A root that is a link keeps it: the tree goes where it points. Pointing nowhere is
    refused, unless only the last step is missing (a fresh volume): that folder is created."""
    for name in names:
        place = places[name]
        if place.link and not os.path.lexists(place.target):
            if not os.path.isdir(os.path.dirname(place.target)):
                raise RuntimeFailure(f"root {name} is the link {place.link} -> {os.readlink(place.link)}, which points "
                                     f"nowhere ({os.path.dirname(place.target)} does not exist): not replaced; "
                                     "nothing was changed")
            log.info(f"root {name} is the link {place.link}: restoring into {place.target}, which it names")


def _apply(job: Job, fetched: dict, spool: str, blocks_dir: str | None, in_place: bool,
           chosen: set[tuple[str, str]] | None = None) -> dict:
    """Extract the chain into staging, make it equal the final index, swap every root in one
    transaction.

    With `blocks_dir` (an in-place restore), the block hashes of large files are written there
    and the spooled index is rewritten to describe the restored files as they now are (a
    database is its restored copy, with no -wal), so the next backup here is incremental."""
    places, target_id = job.places, job.target_id
    tx = journal.new_tx()
    _check_links(places, places)  # before anything is made on the way to a link's target
    swaps = {name: place.swap(tx) for name, place in places.items()}
    for place in places.values():
        if not place.inside:
            os.makedirs(os.path.dirname(place.target), exist_ok=True)
    txn = journal.Transaction.begin(job.work_dir or os.path.dirname(job.run_dir), tx, target_id, list(swaps.values()))
    if chosen is not None:  # a root whose own entry no fetched snapshot carries
        for name in {root for root, _ in chosen}:
            if places[name].kind == "dir":
                os.makedirs(swaps[name].staging, 0o700, exist_ok=True)
    kept: dict[str, list[str]] = {}
    meter = Meter("extract", sum(v["size"] for link in job.snapshots if link["id"] in fetched for v in link["volumes"]))
    try:
        staging = {name: swap.staging for name, swap in swaps.items()}
        if job.read_chain is not None:
            final, stats, written = job.read_chain(job, fetched, staging, spool)
            head, entries = final, in_order(final)  # read whole, and checked
        else:
            # hashes (and, for an in-place restore, block hashes) are taken while files are written
            head, entries, stats, written = _read_chain(job, fetched, staging, spool, chosen, meter,
                                                        block_min=job.delta_min if blocks_dir is not None else None)
        meter.close(note=f"{stats.members} entries from {len(fetched)} snapshots, "
                         f"{human_bytes(stats.bytes)} written")
        subset = _subset(head, chosen) if chosen is not None else None
        if subset is not None:
            entries = in_order(subset)
        restored = [name for name, info in sorted(head.roots.items()) if info.get("present") and name in places
                    and (chosen is None or any(root == name for root, _ in chosen))]
        if blocks_dir is not None:
            os.makedirs(blocks_dir, mode=0o700, exist_ok=True)
        # one pass over the index (a stream of it, for ocb's archives): each restored root's
        # staging made equal to its entries, and what the swap and the cache need noted
        seen = _IndexNotes(head, as_restored(spool) if blocks_dir is not None else None)
        try:
            for name, group in itertools.groupby(seen.noting(entries), key=operator.attrgetter("root")):
                if name in restored:
                    make_equal(swaps[name].staging, name, group, blocks_dir, job.delta_min, private_root=True,
                               written=written)
                else:
                    collections.deque(group, maxlen=0)  # read past (and checked)
            seen.close()
        except BaseException:
            seen.abandon()
            raise
        finally:
            if written is not None:
                written.close()
        for name in restored:
            if name not in seen.tops:
                raise ChainBroken(f"the index has no entry for root {name}")
        for name in sorted(stats.skipped_roots):
            log.warning(f"the snapshot holds root {name}, which is not configured here: not restored")
        for name in places:
            if name not in restored:
                journal.remove_tree(swaps[name].staging)
        txn.roots = [swaps[name] for name in restored]
        txn.save()
        if in_place and not job.force:
            refuse_if_open(places[name] for name in restored)
        excludes, includes = _patterns(job, head)
        for name in restored:
            swap = swaps[name]
            swap.new_root = _root_meta(seen.tops[name])  # the staging root stays 0700 until in place
            carried = (carried_paths(places[name].target, excludes, includes, seen.databases.get(name, set()))
                       if subset is None else carried_except(places[name].target, subset, name))
            kept[name] = swap.prepare(carried)
        txn.swap()
    except BaseException:
        meter.abandon()
        if txn.state == "swapping":
            txn.rollback()
        elif txn.state != "staging" or os.path.lexists(txn.path):
            txn.discard()
        raise
    txn.finish()
    for name in restored:
        carried_note = ("paths not asked for" if chosen is not None else "paths the snapshot left out")
        log.info(f"restored {name} into {places[name].target}"
                 + (f" (kept {len(kept[name])} {carried_note})" if kept.get(name) else ""))
    result = {"dry_run": False, "roots": {n: places[n].target for n in restored},
              "files": seen.files, "bytes_extracted": stats.bytes,
              "kept": {n: len(paths) for n, paths in kept.items() if paths}}
    if chosen is not None:
        result["included"] = {n: sorted(p for r, p in chosen if r == n)[:20] for n in restored}
        result["snapshots_fetched"] = [link["id"] for link in job.snapshots if link["id"] in fetched]
    return result


def _read_chain(job: Job, fetched: dict, staging: dict[str, str], spool: str,
                chosen: set[tuple[str, str]] | None = None, meter: Meter | None = None,
                block_min: int | None = None) -> tuple[Index, Iterable[Entry], ExtractStats, WrittenHashes]:
    """ocb's archives, full -> latest, into staging; the final index is the last one's: its
    header and its entries in order_key order, as a stream checked entry by entry when its
    header says it is in that order, else read whole and checked (an index written before;
    the header then holds the entries too). Also the hashes taken while writing
    (StagingWriter.written), which make_equal trusts.
    With `chosen` (some paths): only those members are written, from the snapshots fetched;
    the final index was read first (the target's archive may not be read again), so each
    archive's own index goes elsewhere, and it is read whole (the subset is cut from it)."""
    writer = StagingWriter(staging, spool if chosen is None else spool + ".each", block_min=block_min)
    writer.only = chosen
    for position, link in enumerate(job.snapshots):
        if link["id"] in fetched:
            _stream_archive(link, fetched[link["id"]], writer, job.keyring,
                            seal.link_associated_data(job.snapshots, position), meter)
    if writer.written.in_memory_because:
        log.debug(f"the hashes taken while writing are held in memory: an archive is out of order "
                  f"({writer.written.in_memory_because})")
    origin = f"snapshot {job.target_id}"
    stream = open_spooled_index(spool, origin) if chosen is None else None
    if stream is not None:
        head, entries = stream
        _check_snapshot(head, job.target_id)
        return head, entries, writer.stats, writer.written
    final = read_spooled_index(spool, origin)
    _check_index(final, job.target_id)
    return final, in_order(final), writer.stats, writer.written


class _IndexNotes:
    """What one pass over the final index notes for the swap and the cache: each root's own
    entry, the SQLite databases of each root, the files counted. With `rewrite` (an in-place
    restore), the index as restored is written there as it passes (JSON lines and their rows
    copy): a database is its restored copy, with no -wal, so the next backup here is
    incremental on it."""

    def __init__(self, head: Index, rewrite: str | None) -> None:
        self.tops: dict[str, Entry] = {}
        self.databases: dict[str, set[str]] = {}
        self.files = 0
        self._out = IndexFiles(rewrite, head) if rewrite is not None else None

    def noting(self, entries: Iterable[Entry]) -> Iterator[Entry]:
        out = self._out
        for entry in entries:
            if not entry.path:
                self.tops[entry.root] = entry
            if entry.type == FILE:
                self.files += 1
                if entry.db:
                    self.databases.setdefault(entry.root, set()).add(entry.path)
                    if out is not None:
                        entry.size, entry.wal = entry.content_size, None
            if out is not None:
                out.add(entry)
            yield entry

    def close(self) -> None:
        if self._out is not None:
            self._out.close()

    def abandon(self) -> None:
        if self._out is not None:
            self._out.abandon()


def as_restored(spool: str) -> str:
    """Where an in-place restore writes the index as restored, beside the spooled one: what
    the cache records."""
    return os.path.join(os.path.dirname(spool), "index-as-restored.jsonl")


def _root_meta(entry: Entry) -> list[int]:
    """A root's mode and owner once in place, from its own entry."""
    uid = entry.uid if entry.uid is not None and os.geteuid() == 0 else os.geteuid()
    gid = entry.gid if entry.gid is not None and os.geteuid() == 0 else os.getegid()
    return [entry.mode, uid, gid]


def _dry_run(job: Job, fetched: dict, spool: str) -> dict:
    """Read only the final index (the last archive's last member) and compare with the targets."""
    last, target_id, places = job.snapshots[-1], job.target_id, job.places
    writer = StagingWriter({}, spool)  # no staging roots: members are read past, not written
    _stream_archive(last, fetched[last["id"]], writer, job.keyring,
                    seal.link_associated_data(job.snapshots, len(job.snapshots) - 1))
    final = read_spooled_index(spool, f"snapshot {target_id}")
    _check_index(final, target_id)
    live_roots = [Root(name, place.target, place.kind) for name, place in places.items()
                  if final.roots.get(name, {}).get("present")]
    excludes, includes = _patterns(job, final)
    meter = Meter("scan", 0, unit="entries", bar=False)
    live, _ = scan(live_roots, excludes, includes)
    meter.close(done=len(live.entries), note="the targets, compared with the snapshot's index")
    added = sorted(k for k in final.entries if k not in live.entries)
    removed = sorted(k for k in live.entries if k not in final.entries)
    changed = sorted(k for k, e in final.entries.items() if k in live.entries and not e.same_as(live.entries[k]))
    kept = sorted((root.name, rel) for root in live_roots
                  for rel in carried_paths(root.path, excludes, includes,
                                           {e.path for e in final.entries.values() if e.root == root.name and e.db}))
    if job.include is not None:  # only the matching paths; live paths the snapshot lacks stay
        include = job.include
        added, changed = ([k for k in keys if _included(include, *k)] for keys in (added, changed))
        removed, kept = [], []
    words = (("add", added), ("change", changed), ("remove", removed), ("keep", kept))
    by_root: dict[str, dict] = {}
    for name in sorted(places):
        if name not in final.roots or not final.roots[name].get("present"):
            continue
        counts = {word: sum(1 for root, _ in keys if root == name) for word, keys in words}
        first = {word: [path or "." for root, path in keys if root == name][:DRY_RUN_SHOWN] for word, keys in words}
        by_root[name] = {**counts, "first": {w: p for w, p in first.items() if p}}
        log.info(f"{name} ({places[name].target}): would add {counts['add']}, change {counts['change']}, "
                 f"remove {counts['remove']}, keep {counts['keep']}")
    shown: dict[tuple[str, str], int] = {}
    for word, keys in words:  # the first 20 of each kind per root; every one with -v
        note = " (left out of the snapshot by its excludes)" if word == "keep" else ""
        for root, path in keys:
            shown[(root, word)] = shown.get((root, word), 0) + 1
            (log.info if shown[(root, word)] <= DRY_RUN_SHOWN else log.debug)(f"would {word} {root}/{path}{note}")
        for (root, kind), count in sorted(shown.items()):
            if kind == word and count > DRY_RUN_SHOWN:
                log.info(f"... and {count - DRY_RUN_SHOWN} more to {word} in {root} (-v lists them all)")
    return {"dry_run": True, "roots": {n: places[n].target for n in sorted(final.roots) if n in places},
            "changes": {word: len(keys) for word, keys in words}, "by_root": by_root}


DRY_RUN_SHOWN = 20  # paths of each kind per root that a dry run names


def render_dry_run(pull: dict) -> str:
    """A dry run as a person reads it: per root, the counts and the first paths of each kind."""
    lines = []
    for name, root in pull.get("by_root", {}).items():
        target = pull.get("roots", {}).get(name, "")
        lines.append(f"{name}  {target}")
        lines.append("  " + ", ".join(f"{root[w]} to {w}" for w in ("add", "change", "remove", "keep")))
        for word, mark in (("add", "+"), ("change", "~"), ("remove", "-"), ("keep", "=")):
            shown = root.get("first", {}).get(word, [])
            for path in shown:
                lines.append(f"  {mark} {path}")
            if root[word] > len(shown):
                lines.append(f"  {mark} ... and {root[word] - len(shown)} more (-v lists them all on stderr)")
    totals = pull.get("changes", {})
    lines.append("dry run, nothing written: " + ", ".join(f"{totals.get(w, 0)} to {w}" for w in ("add", "change", "remove", "keep"))
                 + "; --json for the document")
    return "\n".join(lines) + "\n"
