"""Archives: tar (PAX) streamed through zstd or gzip, written in one pass over the sources.

Owns the archive byte format: member names `<root>/<path>`, the snapshot index as the last
member (`.ocb/index.jsonl`), and the hashing of file contents while they stream in. Reading
archives back safely is extract.py's job. Nothing here knows about stores or documents.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import time
from dataclasses import dataclass
from typing import IO, BinaryIO, Callable

import zstandard

from .errors import RuntimeFailure
from .index import DIR, FILE, SYMLINK, Entry, Index

INDEX_MEMBER = ".ocb/index.jsonl"
COPY_CHUNK = 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
EXTENSIONS = {"zstd": "tar.zst", "gzip": "tar.gz"}


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


class FileContent(io.RawIOBase):
    """Reads exactly `size` bytes of an open file, hashing them.

    A file that shrinks while it is read is padded with zeros, so the tar stream stays
    well-formed; `short` tells the caller, who records the hash of what was really archived
    (the index must describe the archive, and the next run sees the file as changed).
    """

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle = handle
        self.remaining = size
        self.digest = hashlib.sha256()
        self.short = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self.remaining <= 0:
            return b""
        if n < 0 or n > self.remaining:
            n = self.remaining
        data = self.handle.read(n)
        if len(data) < n:
            self.short = True
            data += b"\0" * (n - len(data))
        self.remaining -= len(data)
        self.digest.update(data)
        return data


@dataclass
class PackStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_in: int = 0
    vanished: int = 0
    changed_while_read: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__, seconds=round(self.seconds, 3))


def compressor(kind: str, level: int, sink: BinaryIO) -> BinaryIO:
    if kind == "zstd":
        # checksums per frame let a decoder notice damage even before the volume hash does
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
        return cctx.stream_writer(sink, closefd=False)  # type: ignore[return-value]
    return gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=level, mtime=0)  # type: ignore[return-value]


def decompressor(source: BinaryIO) -> BinaryIO:
    """Pick the decoder from the stream's magic bytes (zstd or gzip)."""
    buffered = source if isinstance(source, io.BufferedReader) else io.BufferedReader(source, COPY_CHUNK)  # type: ignore[arg-type]
    magic = buffered.peek(4)[:4]
    if magic.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[return-value]
    if magic.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    raise ValueError("unknown compression (neither zstd nor gzip magic)")


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.member_name)
    info.mode = entry.mode
    info.mtime = entry.mtime_ns // 1_000_000_000
    info.uname = info.gname = ""
    return info


def _root_paths(roots: dict[str, str], entry: Entry) -> str:
    base = roots[entry.root]
    return base if entry.path == "" else os.path.join(base, entry.path)


def write_archive(plan_index: Index, root_paths: dict[str, str], out: BinaryIO, compression: str,
                  level: int, index_spool: str, progress: Callable[[int], None] | None = None) -> tuple[Index, PackStats, str, int]:
    """Stream the entries flagged `pack` into `out`; return the final index and archive hash.

    Entries are re-read at pack time (lstat/fstat), so what the index records is exactly what
    the archive holds even when the state moved since planning. The final index is spooled to
    `index_spool` (a work-dir file) and appended as the last member.
    """
    started = time.monotonic()
    stats = PackStats()
    final = Index(roots=plan_index.roots, snapshot=plan_index.snapshot)
    hashed = HashingWriter(out)
    packed = compressor(compression, level, hashed)  # type: ignore[arg-type]
    with tarfile.open(fileobj=packed, mode="w|", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        for entry in sorted(plan_index.entries.values(), key=lambda e: (e.root, e.path)):
            if not entry.pack:
                final.add(entry)
                continue
            path = _root_paths(root_paths, entry)
            try:
                archived = _add_entry(tar, entry, path, stats)
            except FileNotFoundError:
                stats.vanished += 1  # deleted since planning: it is not part of this snapshot
                continue
            final.add(archived)
            if progress and archived.type == FILE:
                progress(archived.size)
        with open(index_spool, "w", encoding="utf-8") as handle:
            final.write(handle)
        info = tarfile.TarInfo(INDEX_MEMBER)
        info.size = os.path.getsize(index_spool)
        info.mtime = int(time.time())
        info.mode = 0o600
        with open(index_spool, "rb") as handle:
            tar.addfile(info, handle)
    packed.close()
    stats.seconds = time.monotonic() - started
    return final, stats, hashed.digest.hexdigest(), hashed.size


def _add_entry(tar: tarfile.TarFile, entry: Entry, path: str, stats: PackStats) -> Entry:
    if entry.type == FILE:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            if exc.errno == 40:  # ELOOP: it became a symlink since planning
                return _add_entry(tar, _relstat(entry, path), path, stats)
            raise RuntimeFailure(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return _add_entry(tar, _relstat(entry, path), path, stats)
            current = Entry(entry.root, entry.path, FILE, stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns)
            info = _tarinfo(current)
            info.type = tarfile.REGTYPE
            info.size = current.size
            content = FileContent(handle, current.size)
            tar.addfile(info, content)
            current.sha256 = content.digest.hexdigest()
            if content.short:
                # it shrank while read: the recorded size differs from the file's, so the
                # next plan carries it again
                stats.changed_while_read += 1
        stats.files += 1
        stats.bytes_in += current.size
        return current
    current = _relstat(entry, path)
    if current.type == FILE:
        return _add_entry(tar, current, path, stats)
    info = _tarinfo(current)
    if current.type == DIR:
        info.type = tarfile.DIRTYPE
        stats.dirs += 1
    else:
        info.type = tarfile.SYMTYPE
        info.linkname = current.target or ""
        stats.symlinks += 1
    tar.addfile(info)
    return current


def _relstat(entry: Entry, path: str) -> Entry:
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return Entry(entry.root, entry.path, DIR, mode, 0, st.st_mtime_ns)
    if stat.S_ISLNK(st.st_mode):
        return Entry(entry.root, entry.path, SYMLINK, mode, 0, st.st_mtime_ns, target=os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        return Entry(entry.root, entry.path, FILE, mode, st.st_size, st.st_mtime_ns)
    raise FileNotFoundError(path)  # became a socket/fifo/device: not state we keep


def open_output(path: str) -> IO[bytes]:
    """A new file in the work dir; refuses to reuse a name (a leftover is removed first by the caller)."""
    return open(path, "xb")
