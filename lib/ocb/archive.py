"""Archives: tar (PAX) streamed through zstd or gzip, written in one pass over the sources.

Owns the archive byte format: member names `<root>/<path>`, the snapshot index as the last
member (`.ocb/index.jsonl`), and the hashing of file contents while they stream in. Reading
archives back safely is extract.py's job. Nothing here knows about stores or documents.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import queue
import sqlite3
import stat
import tarfile
import threading
import time
import urllib.parse
from contextlib import closing
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable

from .blocks import (
    BLOCK_SIZE,
    BlockHashes,
    Hasher,
    build_delta,
    encode_ranges,
    sidecar_name,
)
from .compression import compressor, index_frame_level
from .errors import BadDocument, RuntimeFailure
from .index import DIR, FILE, SYMLINK, Ancestry, Entry, Index, IndexFiles, order_key, wal_signature

INDEX_MEMBER = ".ocb/index.jsonl"
# PAX keys of a block-delta member: its data is the changed blocks back to back
DELTA_LENGTH = "OCB.delta.length"
DELTA_BLOCK_SIZE = "OCB.delta.block_size"
DELTA_BLOCKS = "OCB.delta.blocks"
COPY_CHUNK = 1024 * 1024
TAR_ENCODING, TAR_ERRORS = "utf-8", "surrogateescape"
# a ustar header's fixed tail for what ocb writes: the POSIX magic, no owner names, no device
# numbers, no prefix (PAX puts long names in an extended header instead), the block's padding
_USTAR_TAIL = tarfile.POSIX_MAGIC + b"\0" * (32 + 32 + 8 + 8 + 155 + 12)
_USTAR_LIMIT = 8 ** 11  # size and mtime fit 11 octal digits
_USTAR_TAIL_SUM = sum(_USTAR_TAIL) + 8 * ord(" ")  # with the checksum field as it is summed: blank


def _ustar_block(name: bytes, mode: int, size: int, mtime: int, kind: bytes, link: bytes) -> bytes:
    """One ustar header block as tarfile's _create_header writes it for ocb's members (no
    owner, no device numbers, no prefix): names cut to their field, the checksum filled in
    (summed over the parts that vary: the whole block's sum was half of a header's cost)."""
    name, link = name[:100], link[:100]
    numbers = b"%07o\x000000000\x000000000\x00%011o\x00%011o\x00" % (mode & 0o7777, size, mtime)
    checksum = sum(name) + sum(numbers) + kind[0] + sum(link) + _USTAR_TAIL_SUM
    return b"".join((name.ljust(100, b"\0"), numbers, b"%06o\x00 " % checksum, kind, link.ljust(100, b"\0"),
                     _USTAR_TAIL))


def _plain_numbers(info: tarfile.TarInfo) -> bool:
    """No owner (names or numbers), no extended header asked for, a size and mtime that fit
    the ustar fields as integers: the member's header needs no PAX record but for its names."""
    return not (info.uname or info.gname or info.uid or info.gid or info.pax_headers
                or not 0 <= info.size < _USTAR_LIMIT or not isinstance(info.mtime, int)
                or not 0 <= info.mtime < _USTAR_LIMIT)


def ustar_header(info: tarfile.TarInfo) -> bytes | None:
    """The header tarfile's PAX format writes for `info` when it needs no extended header
    (an ASCII name and link of at most 100 bytes, no owner names, numbers that fit), built in
    one step; None otherwise. tarfile's own header building (a dict, per-field checks and
    encodings) was a fifth of a pack of many small files; tests/unit/test_archive.py checks
    the bytes against TarInfo.tobuf."""
    name = info.name + "/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") else info.name
    if (len(name) > 100 or len(info.linkname) > 100 or not name.isascii() or not info.linkname.isascii()
            or not _plain_numbers(info)):
        return None
    return _ustar_block(name.encode("ascii"), info.mode, info.size, info.mtime, info.type,
                        info.linkname.encode("ascii"))


def pax_name_header(info: tarfile.TarInfo) -> bytes | None:
    """The headers tarfile's PAX format writes for `info` when only its name or link needs an
    extended header (longer than 100 bytes, or not ASCII, but valid UTF-8): the extended
    header with its `path` and `linkpath` records, then the ustar header with the names cut
    as tarfile cuts them. None for anything else (tarfile writes it). An npm cache's paths
    are longer than 100 bytes: tarfile's way to these headers cost ~90 µs each, a twentieth
    of a full backup (docs/performance.md, round 9); tests/unit/test_archive.py checks the
    bytes against TarInfo.tobuf."""
    name = info.name + "/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") else info.name
    link = info.linkname
    if not _plain_numbers(info):
        return None
    records = b""
    for keyword, value in ((b"path", name), (b"linkpath", link)):
        if value.isascii() and len(value) <= 100:
            continue
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            return None  # surrogates: tarfile's hdrcharset=BINARY
        # a record's length counts its own digits: found as tarfile finds it
        length = len(keyword) + len(raw) + 3
        total = 0
        while (grown := length + len(str(total))) != total:
            total = grown
        records += b"%d %s=%s\n" % (total, keyword, raw)
    if not records:
        return None
    return (_ustar_block(b"././@PaxHeader", 0, len(records), 0, tarfile.XHDTYPE, b"")
            + records + tarfile.NUL * (-len(records) % tarfile.BLOCKSIZE)
            + _ustar_block(name.encode("ascii", "replace"), info.mode, info.size, info.mtime, info.type,
                           link.encode("ascii", "replace")))


def member_header(info: tarfile.TarInfo) -> bytes:
    """The header blocks of a member, exactly as tarfile's PAX format writes them."""
    return (ustar_header(info) or pax_name_header(info)
            or info.tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, TAR_ERRORS))


class TarStream:
    """A PAX tar stream written member by member into `out`: headers (member_header), data
    in COPY_CHUNK pieces, padding, and the end-of-archive blocks, as tarfile writes them (the
    same bytes), without tarfile's per-member copies of each TarInfo and its list of every
    member written. File data is read into one buffer, used again for every piece
    (`out.write` must take a copy of what it keeps, as zstd, gzip and files do): a fresh
    1 MiB object per read was a fresh mapping and its page faults, per piece."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.offset = 0
        self._buffer = memoryview(bytearray(COPY_CHUNK))

    @property
    def buffer(self) -> memoryview:
        """COPY_CHUNK bytes the caller may read a small file into, for add_file_data."""
        return self._buffer

    def add_file_data(self, name: str, mode: int, mtime: int, data: memoryview) -> None:
        """A regular file's member whose data is all in `data` (at most COPY_CHUNK bytes: what
        a small file's one read put in `buffer`), its header built without a TarInfo when it
        is a plain ustar one (most of a home's files)."""
        size = len(data)
        if len(name) <= 100 and name.isascii() and 0 <= mtime < _USTAR_LIMIT:
            header = _ustar_block(name.encode("ascii"), mode, size, mtime, tarfile.REGTYPE, b"")
        else:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.size, info.type = mode, mtime, size, tarfile.REGTYPE
            info.uname = info.gname = ""
            header = member_header(info)
        padding = -size % tarfile.BLOCKSIZE
        # one write for a member that fits a tar block or two: a compressor call each was
        # most of what a small file cost here
        if size <= 2 * tarfile.BLOCKSIZE:
            self.out.write(header + data + tarfile.NUL * padding)
        else:
            self.out.write(header)
            self.out.write(data)
            if padding:
                self.out.write(tarfile.NUL * padding)
        self.offset += len(header) + size + padding

    def add(self, info: tarfile.TarInfo, data: BinaryIO | None = None) -> None:
        header = member_header(info)
        self.out.write(header)
        self.offset += len(header)
        if data is None or info.size == 0:
            return
        left = info.size
        while left:
            got = data.readinto(self._buffer[:min(left, COPY_CHUNK)])
            if not got:
                raise OSError(errno.EIO, f"{info.name}: ended {left} bytes early")
            self.out.write(self._buffer[:got])
            left -= got
        padding = -info.size % tarfile.BLOCKSIZE
        if padding:
            self.out.write(tarfile.NUL * padding)
        self.offset += info.size + padding

    def close(self) -> None:
        """Two zero blocks, then zeros up to a whole record (tarfile's default blocking)."""
        end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)
        self.offset += len(end)
        end += tarfile.NUL * (-self.offset % tarfile.RECORDSIZE)
        self.out.write(end)


class HashingWriter(io.RawIOBase):
    """Counts and sha256-hashes what passes through to `sink`."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data)
        self.sink.write(view)
        self.digest.update(view)
        self.size += len(view)
        return len(view)


class BackgroundWriter(io.RawIOBase):
    """Hands what is written to it to a thread that writes it on to `sink`, so that what the
    sink does with the compressed stream (its sha256, the seal's AES-GCM, the sealed stream's
    sha256, the file's writes: all of them outside the GIL) runs beside the tar stream's
    building instead of after each piece of it. At most QUEUE_DEPTH pieces wait (zstd hands
    ~128 KiB at a time): memory stays flat. The first failure of the sink is raised again in
    the thread that writes here, at its next write or at finish(); later pieces are dropped."""

    QUEUE_DEPTH = 32

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self._pieces: queue.Queue[bytes | None] = queue.Queue(self.QUEUE_DEPTH)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="ocb-archive-sink", daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if self._failure is not None:
            raise self._failure
        piece = bytes(data)  # the same object for bytes (what zstd and gzip hand out): no copy
        self._pieces.put(piece)
        return len(piece)

    def _drain(self) -> None:
        while (piece := self._pieces.get()) is not None:
            if self._failure is None:
                try:
                    self.sink.write(piece)
                except BaseException as exc:  # noqa: BLE001 - raised again in the writer's thread
                    self._failure = exc

    def finish(self) -> None:
        """Wait until everything written reached the sink; its failure, if any, is raised."""
        self.stop()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        """End the thread once the pieces queued are written (or dropped after a failure)."""
        if self._thread.is_alive():
            self._pieces.put(None)
            self._thread.join()


class FileContent(io.RawIOBase):
    """Reads exactly `size` bytes of an open file, feeding them to a Hasher.

    A file that shrinks while it is read is padded with zeros, so the tar stream stays
    well-formed; `short` tells the caller, who records the hash of what was really archived
    (the index must describe the archive, and the next run sees the file as changed).
    """

    def __init__(self, handle: BinaryIO, size: int, hasher: Hasher) -> None:
        self.handle = handle
        self.remaining = size
        self.hasher = hasher
        self.short = False
        self.failed: OSError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(self.remaining, 0))
        got = 0
        try:
            while got < wanted and not self.failed:
                read = self.handle.readinto(view[got:wanted])
                if not read:
                    break
                got += read
        except OSError as exc:
            # an I/O error part way: the member is completed with zeros so the stream stays
            # well-formed, and the caller leaves the entry out of the index
            self.failed = exc
        if got < wanted:
            self.short = True
            view[got:wanted] = bytes(wanted - got)
        self.remaining -= wanted
        self.hasher.update(view[:wanted])
        return wanted


@dataclass
class PackStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_in: int = 0            # what the changed files hold
    bytes_stored: int = 0        # what their members carry (less, for deltas)
    databases: int = 0
    delta_files: int = 0
    blocks_changed: int = 0
    vanished: int = 0
    changed_while_read: int = 0
    seconds: float = 0.0
    # entries that could not be read at pack time: {"path": "<root>/<rel>", "reason": ...}
    unreadable: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__, seconds=round(self.seconds, 3))


class EntryUnreadable(Exception):
    """One source entry cannot be read (permission denied, name too long, I/O error): it is
    left out of the snapshot and named, and the pack goes on."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(exc.strerror or str(exc))
        self.reason = exc.strerror or str(exc)


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.member_name)
    info.mode = entry.mode
    info.mtime = entry.mtime_ns // 1_000_000_000
    info.uname = info.gname = ""
    return info


def _root_paths(roots: dict[str, str], entry: Entry) -> str:
    base = roots.get(entry.root)
    if base is None:
        raise BadDocument(f"field 'plan.roots' lacks {entry.root}, which the plan index packs")
    return base if entry.path == "" else os.path.join(base, entry.path)


@dataclass
class PackOptions:
    compression: str
    level: int
    scratch_dir: str              # work-dir folder for database copies and delta spools
    new_blocks_dir: str           # this snapshot's block-hash sidecars go here
    base_blocks_dir: str | None   # the parent snapshot's sidecars (the cache); None: no deltas
    delta_min: int
    sqlite_timeout: float


@dataclass
class IndexSummary:
    """What the final index holds, counted as it was written."""

    entries: int = 0
    files: int = 0
    bytes: int = 0


def write_archive(head: Index, planned: Iterable[Entry], root_paths: dict[str, str], out: BinaryIO,
                  options: PackOptions, index_spool: str,
                  progress: Callable[[int], None] | None = None) -> tuple[IndexSummary, PackStats, str, int]:
    """Stream the entries flagged `pack` into `out`; return the final index's summary and the
    archive's hash and size.

    `planned`: the plan index's entries in order_key order (a stream: neither index is held
    whole), `head` its header. Entries are re-read at pack time (lstat/fstat), so what the
    index records is exactly what the archive holds even when the state moved since planning.
    The final index is spooled to `index_spool` (a work-dir file) as it is made, its rows copy
    beside it, and appended as the last member.
    """
    started = time.monotonic()
    stats = PackStats()
    hashed = HashingWriter(out)
    # the compressed stream's hashing, sealing and writing on a thread of their own
    background = BackgroundWriter(hashed)  # type: ignore[arg-type]
    try:
        summary = _write_members(head, planned, root_paths, background, options, index_spool, progress, stats)
        background.finish()
    finally:
        background.stop()
    stats.seconds = time.monotonic() - started
    return summary, stats, hashed.digest.hexdigest(), hashed.size


def _write_members(head: Index, planned: Iterable[Entry], root_paths: dict[str, str], out: BinaryIO,
                   options: PackOptions, index_spool: str, progress: Callable[[int], None] | None,
                   stats: PackStats) -> IndexSummary:
    packed = compressor(options.compression, options.level, out)
    # straight into the compressor, file data in COPY_CHUNK pieces (tarfile's stream mode "w|"
    # re-buffered every write in 10 KiB bytes slices, and copied file data 16 KiB at a time)
    tar = TarStream(packed)  # type: ignore[arg-type]
    writer = _ArchiveWriter(tar, options, stats)
    final = Index(roots=head.roots, snapshot=head.snapshot, excludes=head.excludes, includes=head.includes)
    summary = IndexSummary()
    # in order_key order a directory comes right before what it holds: an entry whose
    # directory did not make it into the final index is met right after it was left out
    ancestry = Ancestry()
    # the index as the archive keeps it (each entry reduced to what the JSON lines keep,
    # Entry.keep_persisted, so its rows copy is the file), and that rows copy beside it for
    # ocb-push to read, both written entry by entry
    index = IndexFiles(index_spool, final)
    holds, enter, add = ancestry.holds, ancestry.enter, index.add  # once per entry of the state
    try:
        for entry in planned:
            key = order_key(entry)
            if not holds(entry, key):
                # its directory vanished (or is no longer one) since planning: the entry
                # goes with it, so the index stays one a restore accepts
                stats.vanished += 1
                continue
            if entry.pack:
                archived = _archive_entry(writer, entry, root_paths, head.snapshot, stats)
                if archived is None:
                    continue
                if progress and archived.type == FILE:
                    progress(archived.size)
            else:
                archived = entry
            enter(archived, key)
            archived.keep_persisted()
            add(archived, key)
            summary.entries += 1
            if archived.type == FILE:
                summary.files += 1
                summary.bytes += archived.size
        index.close()
    except BaseException:
        index.abandon()
        raise
    level = index_frame_level(options.compression, options.level)
    if level is not None:
        # the index and the archive's end in a frame of their own, at the level that suits
        # the index (compression.py); a zstd decoder reads the frames on as one stream
        packed.close()  # ends the members' frame; `out` stays open
        packed = tar.out = compressor(options.compression, level, out)
    info = tarfile.TarInfo(INDEX_MEMBER)
    info.size = os.path.getsize(index_spool)
    info.mtime = int(time.time())
    info.mode = 0o600
    with open(index_spool, "rb") as handle:
        tar.add(info, handle)
    tar.close()
    packed.close()
    return summary


def _archive_entry(writer: "_ArchiveWriter", entry: Entry, root_paths: dict[str, str], snapshot: str | None,
                   stats: PackStats) -> Entry | None:
    """The entry as archived now, or None when it is not part of this snapshot after all."""
    path = _root_paths(root_paths, entry)
    deltas_before = stats.delta_files
    try:
        archived = writer.add(entry, path)
    except FileNotFoundError:
        stats.vanished += 1  # deleted since planning: it is not part of this snapshot
        return None
    except EntryUnreadable as exc:
        stats.unreadable.append({"path": entry.member_name, "reason": exc.reason})
        return None
    if archived.uid is None:  # re-read at pack time: the owner is the plan's
        archived.uid, archived.gid = entry.uid, entry.gid
    # which snapshots a restore of this path needs: this one, plus the base of a delta
    stored_as_delta = stats.delta_files > deltas_before
    base = entry.base_held if stored_as_delta else []
    archived.held = None if base is None or snapshot is None else [*base, snapshot]
    return archived


class _ArchiveWriter:
    """Adds one entry at a time: files whole or as block deltas, databases as consistent copies."""

    def __init__(self, tar: TarStream, options: PackOptions, stats: PackStats) -> None:
        self.tar = tar
        self.options = options
        self.stats = stats
        self.scratch_count = 0

    def _scratch(self, suffix: str) -> str:
        self.scratch_count += 1
        return os.path.join(self.options.scratch_dir, f"{self.scratch_count}{suffix}")

    def add(self, entry: Entry, path: str) -> Entry:
        if entry.type == FILE:
            return self._add_file(entry, path)
        current = _relstat(entry, path)
        if current.type == FILE:
            return self._add_file(current, path)
        info = _tarinfo(current)
        if current.type == DIR:
            info.type = tarfile.DIRTYPE
            self.stats.dirs += 1
        else:
            info.type = tarfile.SYMTYPE
            info.linkname = current.target or ""
            self.stats.symlinks += 1
        self.tar.add(info)
        return current

    def _add_file(self, entry: Entry, path: str) -> Entry:
        if entry.db:
            return self._add_database(entry, path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            if exc.errno == errno.ELOOP:  # it became a symlink since planning
                return self.add(_relstat(entry, path), path)
            raise EntryUnreadable(exc) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return self.add(_relstat(entry, path), path)
            current = Entry(entry.root, entry.path, FILE, stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns)
            if current.size <= COPY_CHUNK and current.size < self.options.delta_min:
                self._add_small_file(current, fd)  # on the fd itself: no file object per file
            else:  # read in COPY_CHUNK pieces: no buffer between
                with os.fdopen(fd, "rb", buffering=0, closefd=False) as handle:
                    self._add_content(current, handle, current.size, entry.base_sha256)
        finally:
            os.close(fd)
        return current

    def _add_small_file(self, current: Entry, fd: int) -> None:
        """A file of at most COPY_CHUNK bytes and below delta_min (never a delta, no block
        hashes): read whole into the tar stream's buffer, hashed there and written from it.
        Most of a home's files are a few KB, and for them the general path's objects per file
        (a Hasher, a FileContent, a read loop, a compressor call per header, data and padding)
        cost more than the read itself (docs/performance.md, round 5). What it records is what
        _add_content would: a file that shrank is padded with zeros (changed_while_read); one
        whose read fails is named unreadable, here before any of it reaches the archive."""
        size = current.size
        view = self.tar.buffer[:size]
        got = 0
        try:
            while got < size and (read := os.readv(fd, [view[got:]])):
                got += read
        except OSError as exc:
            raise EntryUnreadable(exc) from None
        if got < size:
            view[got:] = bytes(size - got)
            self.stats.changed_while_read += 1
        self.tar.add_file_data(current.member_name, current.mode, current.mtime_ns // 1_000_000_000, view)
        current.sha256 = hashlib.sha256(view).hexdigest()
        self.stats.files += 1
        self.stats.bytes_in += size
        self.stats.bytes_stored += size

    def _add_database(self, entry: Entry, path: str) -> Entry:
        """Archive a consistent copy taken through SQLite's online backup API."""
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return self.add(_relstat(entry, path), path)
        # the live file's signature is taken before the copy: a write after it shows next time
        current = Entry(entry.root, entry.path, FILE, stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns,
                        db=True, wal=wal_signature(path))
        copy_path = self._scratch(".sqlite")
        try:
            copy_database(path, copy_path, self.options.sqlite_timeout)
            if current.wal is None:
                # a read-only connection to a database in WAL mode makes its -wal when there is
                # none, and cannot remove it: an empty one our copy made holds no commit, so it
                # is recorded (else the next plan takes it for a change, and copies it again)
                after = wal_signature(path)
                if after is not None and after[0] == 0:
                    current.wal = after
            with open(copy_path, "rb") as handle:
                current.stored_size = os.fstat(handle.fileno()).st_size
                self._add_content(current, handle, current.stored_size, entry.base_sha256)
        finally:
            if os.path.exists(copy_path):
                os.unlink(copy_path)
        self.stats.databases += 1
        return current

    def _add_content(self, current: Entry, handle: BinaryIO, size: int, base_sha256: str | None) -> None:
        """The member for a regular file's content: whole, or only its changed blocks."""
        options = self.options
        info = _tarinfo(current)
        info.type = tarfile.REGTYPE
        with_blocks = size >= options.delta_min
        base = None
        if with_blocks and base_sha256 and options.base_blocks_dir:
            base = BlockHashes.load(os.path.join(options.base_blocks_dir, sidecar_name(current.root, current.path)))
            if base is not None and (base.sha256 != base_sha256 or base.block_size != BLOCK_SIZE):
                base = None  # the sidecar describes another version than the parent's: no delta
        if base is not None:
            spool = self._scratch(".delta")
            try:
                delta, short = build_delta(handle, size, base, spool)
                info.size = delta.spool_size
                info.pax_headers = {DELTA_LENGTH: str(delta.length), DELTA_BLOCK_SIZE: str(delta.block_size),
                                    DELTA_BLOCKS: encode_ranges(delta.changed)}
                with open(spool, "rb") as spooled:
                    self.tar.add(info, spooled)
            finally:
                os.unlink(spool)
            sha256, blocks = delta.sha256, delta.blocks
            self.stats.delta_files += 1
            self.stats.blocks_changed += len(delta.changed)
        else:
            hasher = Hasher(with_blocks)
            info.size = size
            content = FileContent(handle, size, hasher)
            self.tar.add(info, content)
            if content.failed is not None:
                raise EntryUnreadable(content.failed)
            short = content.short
            sha256, blocks = hasher.finish()
        if short:
            # it shrank while read: the recorded size differs from the file's, so the next
            # plan carries it again
            self.stats.changed_while_read += 1
        if blocks is not None:
            blocks.save(os.path.join(options.new_blocks_dir, sidecar_name(current.root, current.path)))
        current.sha256 = sha256
        self.stats.files += 1
        self.stats.bytes_in += size
        self.stats.bytes_stored += info.size


def copy_database(source: str, destination: str, timeout: float) -> None:
    """A consistent copy of a live SQLite database, page for page (so a few changed rows touch
    a few blocks), through the online backup API. A database locked past `timeout` is an
    error naming it, never a torn copy."""
    deadline = time.monotonic() + timeout

    def give_up_when_late(status: int, remaining: int, total: int) -> None:
        del status, remaining, total
        if time.monotonic() > deadline:
            raise DatabaseLocked(source)

    uri = "file:" + urllib.parse.quote(source) + "?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=timeout)) as live, \
                closing(sqlite3.connect(destination)) as copy:
            live.backup(copy, pages=-1, progress=give_up_when_late, sleep=0.05)
    except DatabaseLocked:
        raise RuntimeFailure(f"database {source} stayed locked past OCB_SQLITE_TIMEOUT={timeout:g}s: "
                             "not archived (a copy now would be torn)") from None
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise RuntimeFailure(f"database {source} stayed locked past OCB_SQLITE_TIMEOUT={timeout:g}s: "
                                 "not archived (a copy now would be torn)") from None
        raise RuntimeFailure(f"cannot copy database {source}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise RuntimeFailure(f"cannot copy database {source}: {exc}") from None


class DatabaseLocked(Exception):
    """Raised from the backup progress callback to stop waiting on a locked database."""


def _relstat(entry: Entry, path: str) -> Entry:
    try:
        st = os.lstat(path)
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise EntryUnreadable(exc) from None
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return Entry(entry.root, entry.path, DIR, mode, 0, st.st_mtime_ns)
    if stat.S_ISLNK(st.st_mode):
        return Entry(entry.root, entry.path, SYMLINK, mode, 0, st.st_mtime_ns, target=target)
    if stat.S_ISREG(st.st_mode):
        return Entry(entry.root, entry.path, FILE, mode, st.st_size, st.st_mtime_ns)
    raise FileNotFoundError(path)  # became a socket/fifo/device: not state we keep
