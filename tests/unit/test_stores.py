"""The store contract: every backend behaves the same (here: the local folder store)."""

import hashlib
import json
import os

import pytest

from ocb.errors import ChainBroken, ChecksumMismatch, StoreConflict
from ocb.stores import open_store
from ocb.stores.base import Upload, parse_json, seal_record

SNAP = "openclaw-backup-20261101-120000"
NEXT = "openclaw-backup-20261101-130000"


@pytest.fixture(params=["local", "hf"])
def store(request, tmp_path):
    settings = {"work_dir": str(tmp_path / "work"), "retry_seconds": 2}
    if request.param == "hf":
        request.getfixturevalue("test_hub")
        return open_store(f"hf://datasets/contract/{tmp_path.name}", settings)
    return open_store(f"file://{tmp_path}/store", settings)


def upload(tmp_path, snapshot_id, data=b"volume bytes"):
    path = tmp_path / f"{snapshot_id}.tar.zst"
    path.write_bytes(data)
    return Upload(path.name, str(path), len(data), hashlib.sha256(data).hexdigest())


def publish(store, tmp_path, snapshot_id, expect):
    vol = upload(tmp_path, snapshot_id)
    store.publish("backups", snapshot_id, [vol], seal_record({"id": snapshot_id}),
                  seal_record({"latest": f"backups/{snapshot_id}.meta.json", "id": snapshot_id}), expect)
    return vol


def test_an_empty_store_has_no_head(store):
    head = store.head()
    assert head.pointer is None and head.token is None and store.list_snapshot_ids("backups") == []


def test_publish_makes_pointer_meta_and_volume_visible(store, tmp_path):
    vol = publish(store, tmp_path, SNAP, None)
    head = store.head()
    assert head.snapshot_id == SNAP and store.read_meta("backups", SNAP)["id"] == SNAP
    assert store.list_snapshot_ids("backups") == [SNAP]
    fetched = store.fetch_volume("backups", vol.name, vol.size, vol.sha256, str(tmp_path / "work"))
    assert open(fetched, "rb").read() == b"volume bytes"


def test_publish_against_a_moved_head_is_a_conflict_and_leaves_nothing(store, tmp_path):
    publish(store, tmp_path, SNAP, None)
    with pytest.raises(StoreConflict):
        publish(store, tmp_path, NEXT, None)
    assert store.list_snapshot_ids("backups") == [SNAP] and store.head().snapshot_id == SNAP


def test_an_existing_snapshot_is_never_overwritten(store, tmp_path):
    publish(store, tmp_path, SNAP, None)
    with pytest.raises(StoreConflict):
        publish(store, tmp_path, SNAP, store.head().token)


def test_fetch_detects_damage_and_absence(store, tmp_path):
    vol = publish(store, tmp_path, SNAP, None)
    with pytest.raises(ChecksumMismatch):
        store.fetch_volume("backups", vol.name, vol.size, "0" * 64, str(tmp_path / "work"))
    with pytest.raises(ChecksumMismatch):
        store.fetch_volume("backups", vol.name, vol.size + 1, vol.sha256, str(tmp_path / "work"))
    with pytest.raises(ChainBroken):
        store.fetch_volume("backups", f"{NEXT}.tar.zst", 1, "0" * 64, str(tmp_path / "work"))
    with pytest.raises(ChainBroken):
        store.read_meta("backups", NEXT)


def test_a_damaged_pointer_is_an_integrity_error(store, tmp_path):
    publish(store, tmp_path, SNAP, None)
    damaged = Upload("x", str(tmp_path / "bad"), 2, "")
    (tmp_path / "bad").write_bytes(b"\xff{")
    if hasattr(store, "root"):
        os.replace(damaged.path, os.path.join(store.root, "latest-backup.json"))
    else:  # write the damaged pointer as another writer would, with a plain commit
        from huggingface_hub import CommitOperationAdd

        store.api.create_commit(store.repo_id, [CommitOperationAdd("latest-backup.json", damaged.path)],
                                repo_type="dataset", commit_message="damage")
    with pytest.raises(ChecksumMismatch):
        store.head()


def test_exists_tells_a_missing_store(store, tmp_path):
    assert not store.exists()
    publish(store, tmp_path, SNAP, None)
    assert store.exists()


def test_one_flipped_byte_anywhere_in_the_pointer_is_noticed(store, tmp_path):
    """Even in a field no restore reads: the record carries the sha256 of its own content."""
    publish(store, tmp_path, SNAP, None)
    pointer = seal_record({"latest": f"backups/{SNAP}.meta.json", "id": SNAP, "dataset": "x"})
    raw = bytearray(json.dumps(pointer).encode())
    raw[raw.index(b'"x"') + 1] ^= 0x01
    with pytest.raises(ChecksumMismatch, match="damaged"):
        parse_json(bytes(raw), "latest-backup.json")
    assert parse_json(json.dumps(pointer).encode(), "latest-backup.json") == pointer
