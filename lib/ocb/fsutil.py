"""Durable file writes: the one atomic write (temp file, fsync, rename, fsync the dir); and
the one reader of this process's mount table (/proc/self/mountinfo).

Used by every writer whose file must be whole or absent after a crash: the index, the cache,
block-hash sidecars, the KDF salt file and the local store. Knows nothing of their formats.

What is not synced: the work dir's scratch files (the archive, its volumes, the plan index).
A crash loses the run that wrote them, never a snapshot: the store's own copy is made durable
before the pointer names it, and a replay after a crash re-plans. On this kind of disk an
fsync of a 300 MB archive took 2.8 s, as long as the rest of a backup (docs/performance.md).
"""

from __future__ import annotations

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


def write_bytes(path: str, data: bytes, mode: int = 0o600) -> None:
    with atomic_write(path, mode) as handle:
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
