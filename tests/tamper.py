"""Test tool: tamper with a sealed volume in a local store the way an attacker who can write
the store would, fixing the recorded size and sha256 so that only the seal can notice.

  python tests/tamper.py STORE_DIR VOLUME_NAME MODE [OTHER_VOLUME_NAME]

MODE: header-bit | segment-bit | tag-bit | truncate-boundary | truncate-mid | append |
      swap-segments | substitute (puts OTHER_VOLUME_NAME's bytes in its place)
      (sealed volumes), or delta-block-bit (an unsealed .tar.zst volume: one byte of the first
      block-delta member's data is flipped and the archive recompressed, so the tar and zstd
      layers stay valid and only the rebuilt file's sha256 can tell)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile

import zstandard

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from ocb.snapshot import with_digest  # noqa: E402

HEADER = 107
TAG = 16


def segment_size(data: bytes) -> int:
    return int.from_bytes(data[16:20], "big")


def flip_delta_block(data: bytes) -> bytes:
    plain = bytearray(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read())
    with tarfile.open(fileobj=io.BytesIO(bytes(plain)), mode="r:") as tar:
        offset = next(m.offset_data for m in tar if "OCB.delta.length" in m.pax_headers and m.size)
    plain[offset] ^= 0x01
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(bytes(plain))


def tamper(data: bytes, mode: str, other: bytes | None) -> bytes:
    if mode == "delta-block-bit":
        return flip_delta_block(data)
    size = segment_size(data)
    sealed_segment = size + TAG
    if mode == "header-bit":
        return data[:40] + bytes([data[40] ^ 0x01]) + data[41:]
    if mode == "segment-bit":
        return data[:HEADER + 10] + bytes([data[HEADER + 10] ^ 0x80]) + data[HEADER + 11:]
    if mode == "tag-bit":
        at = HEADER + sealed_segment - 1  # the first segment's last tag byte
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]
    if mode == "truncate-boundary":
        return data[:HEADER + sealed_segment]
    if mode == "truncate-mid":
        return data[:HEADER + sealed_segment + size // 2]
    if mode == "append":
        return data + b"appended"
    if mode == "swap-segments":
        first = data[HEADER:HEADER + sealed_segment]
        second = data[HEADER + sealed_segment:HEADER + 2 * sealed_segment]
        assert len(second) == sealed_segment, "needs two full segments"
        return data[:HEADER] + second + first + data[HEADER + 2 * sealed_segment:]
    if mode == "substitute":
        assert other is not None
        return other
    raise SystemExit(f"unknown mode {mode}")


def fix_records(store: str, name: str, data: bytes) -> None:
    """Rewrite every meta (and the pointer's copy) that records `name` to the new size and hash,
    and their record_sha256, as an attacker who can write the store would."""
    new = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    rewrite_records(store, lambda meta: [volume.update(new) for link in meta.get("chain", [])
                                         for volume in link.get("volumes", []) if volume["name"] == name])


def rewrite_records(store: str, change) -> None:
    """Apply `change(meta)` to every meta and the pointer's copy, then refresh their checksums."""
    paths = [os.path.join(store, "backups", n) for n in os.listdir(os.path.join(store, "backups")) if n.endswith(".meta.json")]
    paths.append(os.path.join(store, "latest-backup.json"))
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        if "meta" in record:
            change(record["meta"])
            record["meta"] = with_digest(record["meta"])
        else:
            change(record)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(with_digest(record), handle)


def main(argv: list[str]) -> int:
    store, name, mode = argv[1], argv[2], argv[3]
    path = os.path.join(store, "backups", name)
    with open(path, "rb") as handle:
        data = handle.read()
    other = None
    if len(argv) > 4:
        with open(os.path.join(store, "backups", argv[4]), "rb") as handle:
            other = handle.read()
    changed = tamper(data, mode, other)
    if changed == data:  # a tamper that changes nothing would let a test pass that cannot fail
        raise SystemExit(f"tamper.py: {mode} left {name} as it was")
    with open(path, "wb") as handle:
        handle.write(changed)
    fix_records(store, name, changed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
