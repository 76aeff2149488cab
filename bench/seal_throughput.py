#!/usr/bin/env python3
"""Throughput of ocb.seal against raw AES-256-GCM from the same library, and its peak memory.

Usage: seal_throughput.py [--mib N] [--segment-sizes 16,64,256,1024] [--repeat 3] [--dir DIR]

For each segment size (KiB) it measures, in one process:
  raw-enc   AESGCM.encrypt on segment-size buffers (the anchor; allocates per call, as the
            plain API does)
  raw-into  AESGCM.encrypt_into a reused buffer (the fastest the library goes)
  seal      seal_stream from a generated source (a copy of a random block per read, like a
            read from page cache) to a discarding sink
  open      open_stream from a file sealed beforehand (read through the page cache) to a
            discarding sink
  read      reading that sealed file alone, one segment per read (the I/O share of 'open')
and prints MB/s (best of --repeat runs) and the ratios to raw-enc (target: >= 0.5). Nothing
holds the whole stream: sources are generated chunk by chunk, and the process's peak RSS
(getrusage) is printed to show memory stays flat.
The KDF is the cheap test setting: key derivation is not what is measured here.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from ocb import seal  # noqa: E402

PATTERN_SIZE = 1024 * 1024


class GeneratedSource:
    """`total` bytes made of a repeated random block, served through readinto."""

    def __init__(self, total: int) -> None:
        self._pattern = memoryview(os.urandom(PATTERN_SIZE))
        self._left = total

    def readinto(self, buffer: memoryview) -> int:
        size = min(len(buffer), self._left, PATTERN_SIZE)
        buffer[:size] = self._pattern[:size]
        self._left -= size
        return size


class DiscardingSink:
    def write(self, data: memoryview) -> int:
        return len(data)


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def raw_encrypt(total: int, segment_size: int) -> float:
    aead = AESGCM(os.urandom(32))
    segment = os.urandom(segment_size)
    nonce = os.urandom(12)
    start = time.perf_counter()
    for _ in range(total // segment_size):
        aead.encrypt(nonce, segment, b"archive")
    return time.perf_counter() - start


def raw_encrypt_into(total: int, segment_size: int) -> float:
    aead = AESGCM(os.urandom(32))
    segment = os.urandom(segment_size)
    sealed = bytearray(segment_size + 16)
    nonce = os.urandom(12)
    start = time.perf_counter()
    for _ in range(total // segment_size):
        aead.encrypt_into(nonce, segment, b"archive", sealed)
    return time.perf_counter() - start


def sealing(total: int, segment_size: int, key: seal.PasswordKey) -> float:
    start = time.perf_counter()
    seal.seal_stream(
        GeneratedSource(total), DiscardingSink(), key,
        associated=b"bench", segment_size=segment_size,
    )  # fmt: skip
    return time.perf_counter() - start


def reading(sealed_file: io.BufferedRandom, read_size: int) -> float:
    sealed_file.seek(0)
    buffer = memoryview(bytearray(read_size))
    start = time.perf_counter()
    while sealed_file.readinto(buffer):
        pass
    return time.perf_counter() - start


def opening(sealed_file: io.BufferedRandom, keyring: seal.KeyRing, total: int) -> float:
    sealed_file.seek(0)
    start = time.perf_counter()
    opened = seal.open_stream(sealed_file, DiscardingSink(), keyring, associated=b"bench")
    elapsed = time.perf_counter() - start
    if opened.plaintext_bytes != total:
        raise SystemExit(f"open returned {opened.plaintext_bytes} bytes, expected {total}")
    return elapsed


def speeds(
    total: int,
    segment_size: int,
    key: seal.PasswordKey,
    keyring: seal.KeyRing,
    repeat: int,
    sealed_file: io.BufferedRandom,
) -> list[float]:
    """MB/s of raw-enc, raw-into, seal, open and read: the shortest of `repeat` runs each,
    since other processes on the machine only ever add time."""
    measures: tuple[Callable[[], float], ...] = (
        lambda: raw_encrypt(total, segment_size),
        lambda: raw_encrypt_into(total, segment_size),
        lambda: sealing(total, segment_size, key),
        lambda: opening(sealed_file, keyring, total),
        lambda: reading(sealed_file, segment_size + 16),
    )
    return [total / 1e6 / min(measure() for _ in range(repeat)) for measure in measures]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="stream size per run (MiB)")
    parser.add_argument("--segment-sizes", default="16,64,256,1024", help="KiB, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best counts")
    parser.add_argument("--dir", default=None, help="where the sealed file for 'open' goes")
    args = parser.parse_args()
    total = args.mib * 1024 * 1024
    key = seal.derive_password_key(b"bench password", seal.KdfParams(log_n=10, r=8, p=1))
    keyring = seal.KeyRing(b"bench password")
    keyring.add(key)
    rss_before = peak_rss_mib()

    print(f"{args.mib} MiB per run, best of {args.repeat}; MB/s = 10^6 bytes/s; ratios to raw-enc")
    columns = ("segment", "raw-enc", "raw-into", "seal", "open", "read", "seal/raw", "open/raw")
    print(" ".join(f"{column:>9}" for column in columns))
    for segment_kib in (int(size) for size in args.segment_sizes.split(",")):
        segment_size = segment_kib * 1024
        with tempfile.TemporaryFile(dir=args.dir) as sealed_file:
            seal.seal_stream(
                GeneratedSource(total), sealed_file, key,
                associated=b"bench", segment_size=segment_size,
            )  # fmt: skip
            figures = speeds(total, segment_size, key, keyring, args.repeat, sealed_file)
        anchor, _, seal_speed, open_speed, _ = figures
        ratios = f"{seal_speed / anchor:>9.2f} {open_speed / anchor:>9.2f}"
        print(f"{segment_kib:>7}Ki " + " ".join(f"{speed:>9.0f}" for speed in figures), ratios)
    print(f"peak RSS: {peak_rss_mib():.1f} MiB (before streaming: {rss_before:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
