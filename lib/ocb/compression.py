"""Compression of archives: the one list of what ocb writes (zstd, gzip), its levels, and the
stream wrappers. Readers pick the decoder from the magic bytes, so a chain may mix both.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

READ_BUFFER = 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
# two zstd worker threads beside the one building the tar stream (and the one sealing and
# writing, archive.BackgroundWriter): with one, the tar stream's building waited in the
# compressor's write whenever zstd's few jobs in flight were all taken (0.7 s of a 2.5 s
# pack, round 9); a second worker cut the pack of the scale-1 home from 2.45 to 2.25 s for
# ~5.5 MB, a third bought nothing. 1 MiB jobs (zstd's floor is 512 KiB) cost ~15 MB less than
# 2 MiB ones for 0.03 % more bytes (docs/performance.md, rounds 4 and 9)
ZSTD_THREADS = 2
ZSTD_JOB_SIZE = 1024 * 1024
# the index, last in the archive, goes into a zstd frame of its own at level 1: its JSON lines
# (a sha256, an mtime and a path each, the rest repeated) compress better with level 1's
# short-range matching than with any level from 2 to 18 (an index of 74,000 entries: 3.06 MB
# at 1, 3.40 at 3, 3.15 at 18), and faster. Only 19 does better (2.89 MB, at 1,000 times the
# time): a user who chose it keeps it for the index too (docs/performance.md, round 10)
ZSTD_INDEX_LEVEL = 1
ZSTD_INDEX_LEVEL_KEPT = 19


@dataclass(frozen=True)
class Compression:
    extension: str      # of the archive file: <id>.<extension>
    default_level: int
    max_level: int


COMPRESSIONS = {"zstd": Compression("tar.zst", 3, 19), "gzip": Compression("tar.gz", 6, 9)}


def compressor(kind: str, level: int, sink: BinaryIO) -> BinaryIO:
    if kind == "zstd":
        # checksums per frame let a decoder notice damage even before the volume hash does.
        # threads: zstd compresses on a worker thread while Python builds the tar stream,
        # instead of the tar generation waiting on compression; the output is an ordinary
        # zstd frame (docs/performance.md)
        # job_size: the worker's input; zstd's default (4 windows) costs ~50 MB more RSS for
        # no better ratio at these levels, so memory stays flat and small
        import zstandard  # imported when used: every stage imports this module for COMPRESSIONS

        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=ZSTD_THREADS, job_size=ZSTD_JOB_SIZE, write_checksum=1)
        cctx = zstandard.ZstdCompressor(compression_params=params)
        return cctx.stream_writer(sink, closefd=False)  # type: ignore[return-value]
    import gzip  # imported when used, as zstandard

    return gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=level, mtime=0)  # type: ignore[return-value]


def index_frame_level(kind: str, level: int) -> int | None:
    """The level of the index's frame of its own, or None: the index stays in the stream of
    the members (gzip: one member, which any gunzip reads)."""
    if kind != "zstd":
        return None
    return level if level >= ZSTD_INDEX_LEVEL_KEPT else ZSTD_INDEX_LEVEL


def decompressor(source: BinaryIO) -> BinaryIO:
    """Pick the decoder from the stream's magic bytes (zstd or gzip)."""
    buffered = source if isinstance(source, io.BufferedReader) else io.BufferedReader(source, READ_BUFFER)  # type: ignore[arg-type]
    magic = buffered.peek(4)[:4]
    if magic.startswith(ZSTD_MAGIC):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[return-value]
    if magic.startswith(GZIP_MAGIC):
        import gzip

        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    raise ValueError("unknown compression (neither zstd nor gzip magic)")
