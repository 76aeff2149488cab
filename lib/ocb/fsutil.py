"""Durable file writes: the one atomic write (temp file, fsync, rename, fsync the dir); and
the one reader of this process's mount table (/proc/self/mountinfo).

Used by every writer whose file must be whole or absent after a crash: the index, the cache,
the KDF salt file and the local store (block-hash sidecars are renamed whole but not synced:
blocks.BlockHashes.save). Knows nothing of their formats.

What is not synced: the work dir's scratch files (the archive, its volumes, the plan index);
an archive the local store will take by a rename is written back early (EarlyWriteback).
A crash loses the run that wrote them, never a snapshot: the store's own copy is made durable
before the pointer names it, and a replay after a crash re-plans. On this kind of disk an
fsync of a 300 MB archive took 2.8 s, as long as the rest of a backup (docs/performance.md).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from contextlib import contextmanager
from typing import BinaryIO, Iterator

TMP_MARK = ".ocb-tmp-"


def temp_name(path: str) -> str:
    """The temporary name beside `path` that atomic_write uses (a dead writer's leftovers
    start with TMP_MARK, so a sweep can find them)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f"{TMP_MARK}{os.getpid()}-{tail}")


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str, mode: int = 0o600, durable: bool = True) -> Iterator[BinaryIO]:
    """Write `path` so that readers (and a crash) see the old file or the whole new one.

    Yields a binary file open on a temporary name beside `path`; on a clean exit it is
    fsynced, renamed over `path` and the folder fsynced; on an exception it is removed.
    `durable=False` (a scratch file): renamed whole, not synced.
    """
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(os.path.dirname(path) or ".")


class EarlyWriteback(io.RawIOBase):
    """Writes to `out` (a file opened for writing) and asks the kernel to start writing each
    STEP bytes of it to disk as soon as they are written (sync_file_range's WRITE, which does
    not wait), so that the fsync that makes the file durable later finds little left to
    write: the disk's work overlaps with what comes before the fsync instead of following it.
    For a file that will be synced where it is (a volume the local store takes by a rename:
    its fsync of a 300 MB volume was 0.3 s of a backup's push, docs/performance.md, round 9).
    Where the call is missing (not Linux), it only writes."""

    STEP = 8 * 1024 * 1024

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._fd = out.fileno()
        self._written = self._started = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        done = self.out.write(data)
        self._written += done
        if self._written - self._started >= self.STEP:
            self.out.flush()  # what the kernel is asked to write must have reached it
            start_writeback(self._fd, self._started, self._written - self._started)
            self._started = self._written
        return done

    def flush(self) -> None:
        self.out.flush()


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: object = None  # looked up at the first call; False: not there


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Start writing `length` bytes of the file at `offset` to disk, without waiting for it
    (Linux sync_file_range with SYNC_FILE_RANGE_WRITE: a hint, never needed for
    correctness); False where the call is missing or refused."""
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes  # imported when used: most runs never start a writeback

            call = ctypes.CDLL(None, use_errno=True).sync_file_range
            call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            call.restype = ctypes.c_int
            _sync_file_range = call
        except (OSError, AttributeError):
            _sync_file_range = False
    if not _sync_file_range:
        return False
    return _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0  # type: ignore[operator]


def write_bytes(path: str, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    with atomic_write(path, mode, durable) as handle:
        handle.write(data)


UNDER_LOCK_MARK = ".ocb-under-lock"


def fresh_run_dir(path: str, under_lock: bool) -> str:
    """An empty 0700 run dir in the work dir (a dead run's leftover of the same name is
    removed first). Under ocb-backup's or ocb-restore's lock it holds UNDER_LOCK_MARK: the
    next locked run may sweep it if this one dies; a pipe run by hand is never swept."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    os.makedirs(path, mode=0o700)
    if under_lock:
        open(os.path.join(path, UNDER_LOCK_MARK), "wb").close()
    return path


def discard(path: str) -> None:
    """Remove a file of ours that may not be there (a partial output after a failure)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount of this process's namespace, bind mounts
    included (which st_dev misses), in mount order; empty when /proc is not there."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        # ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER-OPTIONS
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        after = fields.index("-", 5) + 1 if "-" in fields[5:] else len(fields)
        found.append((_unescape(fields[4]), fields[after] if after < len(fields) else ""))
    return found


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline or backslash in a path as an octal escape."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem `path` (resolved) lives on, from the mount table; None when
    the table cannot be read."""
    real = os.path.realpath(path)
    best, best_type = "", None
    for point, fstype in mounts():
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the last of equal points is the one on top
            best, best_type = point, fstype
    return best_type
