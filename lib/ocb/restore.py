"""Restore mechanics: staging paths beside each target, the chain's byte stream, the swap.

The target is not touched until every volume of the chain has been verified and extracted
and the staging tree equals the final index; then each root's staging tree is exchanged
with its target in one renameat2(RENAME_EXCHANGE) (two renames where the kernel lacks it),
and the old tree is removed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from typing import BinaryIO

from .errors import ChecksumMismatch, RuntimeFailure

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


def placements(roots: list[dict], home: str, to_dir: str | None) -> dict[str, Placement]:
    """Root name -> placement; with `to_dir`, roots under HOME keep their place relative to it."""
    result = {}
    for root in roots:
        target = root["path"]
        if to_dir is not None:
            relative = os.path.relpath(target, home)
            if relative.startswith(".."):
                relative = root["name"]
            target = os.path.join(to_dir, relative)
        result[root["name"]] = Placement(root["name"], root["kind"], os.path.abspath(target))
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
