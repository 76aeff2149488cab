"""Block hashes of large files, kept beside the local index, and the deltas built from them.

A file of at least `delta_min` bytes is seen as fixed blocks of BLOCK_SIZE; each block's hash
(sha256 truncated to 16 bytes: hashlib's sha256 is the fastest hash here, ~1.9 GB/s with the
CPU's SHA extensions, and 128 bits is plenty to notice a changed block, the whole file's full
sha256 being checked on restore anyway) is kept in a binary sidecar file in the cache, 1 MiB
per GiB of file. An incremental stores, for such a file, only the blocks whose hash changed
plus the new length. Block size: 16 KiB, measured by bench/delta_bytes.py: 100 rows updated
at random places in a 256 MB SQLite database (4 KiB pages) cost ~0.6% of it, where 64 KiB
blocks cost ~2.5% and 4 KiB blocks would need 4 MiB of hashes per GiB.

This module reads files and writes sidecars and spool files it is given; it never decides
what to back up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import BinaryIO

from .fsutil import write_bytes

BLOCK_SIZE = 16 * 1024
DIGEST_SIZE = 16
SIDECAR_MAGIC = b"OCBBLK1\n"
READ_CHUNK = 64 * BLOCK_SIZE


def block_digest(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()[:DIGEST_SIZE]


def block_count(size: int, block_size: int = BLOCK_SIZE) -> int:
    return -(-size // block_size)


def sidecar_name(root: str, path: str) -> str:
    return hashlib.sha256(f"{root}\0{path}".encode("utf-8", "surrogateescape")).hexdigest() + ".blk"


@dataclass
class BlockHashes:
    """The block hashes of one version of one file (identified by its whole-file sha256)."""

    sha256: str
    size: int
    block_size: int
    digests: bytes  # DIGEST_SIZE bytes per block, in order

    def digest(self, number: int) -> bytes | None:
        start = number * DIGEST_SIZE
        chunk = self.digests[start:start + DIGEST_SIZE]
        return chunk if len(chunk) == DIGEST_SIZE else None

    def save(self, path: str) -> None:
        """Renamed into place whole, but not synced: a sidecar only decides which blocks a delta
        stores, and one a crash left torn reads as absent (load checks its magic and length) or
        names blocks changed that are not (zeros): a delta a bit larger, never a block wrongly
        left out. Its fsync was most of what a database's delta added to an incremental."""
        header = json.dumps({"sha256": self.sha256, "size": self.size, "block_size": self.block_size})
        write_bytes(path, SIDECAR_MAGIC + header.encode() + b"\n" + self.digests, durable=False)

    @classmethod
    def load(cls, path: str) -> "BlockHashes | None":
        """The sidecar at `path`, or None when absent or not one of ours."""
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except OSError:
            return None
        if not raw.startswith(SIDECAR_MAGIC):
            return None
        header_line, _, digests = raw[len(SIDECAR_MAGIC):].partition(b"\n")
        try:
            header = json.loads(header_line)
            hashes = cls(header["sha256"], int(header["size"]), int(header["block_size"]), digests)
        except (ValueError, KeyError, TypeError):
            return None
        if len(digests) != block_count(hashes.size, hashes.block_size) * DIGEST_SIZE:
            return None
        return hashes


class Hasher:
    """Whole-file sha256 and (optionally) block hashes, fed in any chunking."""

    def __init__(self, with_blocks: bool, block_size: int = BLOCK_SIZE) -> None:
        self.whole = hashlib.sha256()
        self.with_blocks = with_blocks
        self.block_size = block_size
        self.pending = bytearray()
        self.digests = bytearray()
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self.whole.update(data)
        self.size += len(data)
        if not self.with_blocks:
            return
        # whole blocks are hashed where they lie; only a block cut by the chunking is copied
        # (into `pending`), so a large file's bytes are not copied once more to be hashed
        view = memoryview(data).cast("B")
        size = self.block_size
        if self.pending:
            taken = size - len(self.pending)
            self.pending += view[:taken]
            view = view[taken:]
            if len(self.pending) < size:
                return
            self.digests += block_digest(self.pending)
            self.pending.clear()
        full = len(view) - len(view) % size
        for start in range(0, full, size):
            self.digests += block_digest(view[start:start + size])
        self.pending += view[full:]

    def add_block(self, block: bytes) -> bytes:
        """update() with one whole block (or the last, shorter one) at a block boundary; its
        digest, for a caller that compares it (build_delta): hashed once, not twice."""
        assert self.with_blocks and not self.pending and len(block) <= self.block_size
        self.whole.update(block)
        self.size += len(block)
        digest = block_digest(block)
        self.digests += digest
        return digest

    def finish(self) -> tuple[str, BlockHashes | None]:
        if self.with_blocks and self.pending:
            self.digests += block_digest(self.pending)
            self.pending.clear()
        sha = self.whole.hexdigest()
        blocks = BlockHashes(sha, self.size, self.block_size, bytes(self.digests)) if self.with_blocks else None
        return sha, blocks


@dataclass
class Delta:
    """What an incremental stores for a large file: its changed blocks, spooled to a file."""

    length: int           # the file's new length
    block_size: int
    changed: list[int]    # block numbers, ascending
    spool: str            # the changed blocks' bytes, back to back
    spool_size: int
    sha256: str           # of the whole new content
    blocks: BlockHashes   # of the whole new content


def build_delta(source: BinaryIO, size: int, previous: BlockHashes, spool_path: str) -> tuple[Delta, bool]:
    """Read `size` bytes of `source` once: hash every block, spool the ones that differ from
    `previous`. Returns the delta and whether the file was shorter than `size` (it shrank
    while read: the missing tail is read as zeros, and the caller records that)."""
    hasher = Hasher(with_blocks=True, block_size=previous.block_size)
    changed: list[int] = []
    short = False
    with open(spool_path, "wb") as spool:
        number = 0
        remaining = size
        while remaining > 0:
            want = min(previous.block_size, remaining)
            block = source.read(want)
            if len(block) < want:
                short = True
                block += b"\0" * (want - len(block))
            digest = hasher.add_block(block)
            if digest != previous.digest(number):
                changed.append(number)
                spool.write(block)
            remaining -= want
            number += 1
        spool_size = spool.tell()
    sha, blocks = hasher.finish()
    assert blocks is not None
    return Delta(size, previous.block_size, changed, spool_path, spool_size, sha, blocks), short


def encode_ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 7, 9, 10] -> '0-2,7,9-10' (compact for a PAX header)."""
    parts = []
    start = prev = None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == prev + 1:  # type: ignore[operator]
            prev = n
        else:
            parts.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = n
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ",".join(parts)


def decode_ranges(text: str, limit: int) -> list[int]:
    """The inverse of encode_ranges; ValueError unless strictly ascending and below `limit`."""
    numbers: list[int] = []
    if not text:
        return numbers
    for part in text.split(","):
        first, sep, last = part.partition("-")
        low, high = int(first), int(last) if sep else int(first)
        if low > high or (numbers and low <= numbers[-1]) or high >= limit or low < 0:
            raise ValueError(f"block ranges out of order or out of bounds: {part!r}")
        numbers.extend(range(low, high + 1))
    return numbers
