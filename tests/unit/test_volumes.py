"""volumes: arithmetic and cutting (table-driven)."""

import hashlib

import pytest

from ocb.errors import ChecksumMismatch
from ocb.volumes import split_file, volume_count


@pytest.mark.parametrize("size, volume, count", [(0, 10, 1), (1, 10, 1), (10, 10, 1), (11, 10, 2), (100, 10, 10), (101, 10, 11)])
def test_volume_count(size, volume, count):
    assert volume_count(size, volume) == count


@pytest.mark.parametrize("size", [0, 5000, 4096, 4097, 12288])
def test_split_file_cuts_and_hashes_each_part(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "openclaw-backup-20260101-000000.tar.zst"
    path.write_bytes(data)
    volumes = split_file(str(path), size, hashlib.sha256(data).hexdigest(), 4096)
    assert len(volumes) == volume_count(size, 4096)
    joined = b"".join(open(v["path"], "rb").read() for v in volumes)
    assert joined == data
    for volume in volumes:
        content = open(volume["path"], "rb").read()
        assert volume["size"] == len(content) and volume["sha256"] == hashlib.sha256(content).hexdigest()
    if len(volumes) > 1:
        assert volumes[0]["name"].endswith(".part-0001") and not path.exists()


def test_split_file_notices_an_archive_changed_since_it_was_hashed(tmp_path):
    path = tmp_path / "a.tar.zst"
    path.write_bytes(b"y" * 10000)
    with pytest.raises(ChecksumMismatch):
        split_file(str(path), 10000, "0" * 64, 4096)
