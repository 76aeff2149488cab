"""Volume arithmetic and cutting: an archive becomes volumes of at most `volume_size` bytes.

Owns volume naming (`<archive>` alone, or `<archive>.part-NNNN`) and per-volume sha256.
Streams in bounded chunks; never holds a volume in memory.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

from .errors import ChecksumMismatch

CHUNK = 4 * 1024 * 1024


def volume_count(size: int, volume_size: int) -> int:
    """How many volumes an archive of `size` bytes needs (an empty archive still needs one)."""
    return max(1, -(-size // volume_size))


def part_name(archive_name: str, number: int) -> str:
    return f"{archive_name}.part-{number:04d}"


def split_file(path: str, size: int, sha256: str, volume_size: int,
               progress: Callable[[int], None] | None = None) -> list[dict]:
    """Cut `path` into volumes beside it; verifies the whole-archive sha256 on the way."""
    name = os.path.basename(path)
    count = volume_count(size, volume_size)
    if count == 1:
        # one volume: the archive itself, no copy; its hash is the recorded one
        return [{"name": name, "path": path, "size": size, "sha256": sha256}]
    whole = hashlib.sha256()
    volumes = []
    with open(path, "rb") as source:
        for number in range(1, count + 1):
            part_path = os.path.join(os.path.dirname(path), part_name(name, number))
            digest = hashlib.sha256()
            written = 0
            with open(part_path, "wb") as out:
                while written < volume_size:
                    chunk = source.read(min(CHUNK, volume_size - written))
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    whole.update(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                # no fsync: the work dir's files are scratch (fsutil)
            volumes.append({"name": part_name(name, number), "path": part_path, "size": written,
                            "sha256": digest.hexdigest()})
    if whole.hexdigest() != sha256:
        raise ChecksumMismatch(f"{path} changed since it was written (sha256 differs from the document)")
    os.unlink(path)  # the parts hold it all now; keep the work dir at one copy
    return volumes
