"""The store contract: every backend behaves the same (the local folder, the test Hub, and S3
through moto's server behind the fault proxy of tests/s3/s3server.py).

Each backend's fixture gives the store plus inspection hooks (`Raw`): the files the store
really holds, a raw file's bytes, a write as another writer would make it, and the number of
commits made. The contract tests use only those, never a backend's attributes, so what they
check is what the backend WROTE. Backend-specific behaviour (the Hub's retries, its endpoint
and token coming from settings and secrets) is tested below the contract, by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from ocb import catalog
from ocb.config import Settings, StoreSecrets
from ocb.errors import (
    BadDocument,
    ChainBroken,
    ChecksumMismatch,
    CredentialsRefused,
    RuntimeFailure,
    StoreConflict,
    StoreMissing,
    TemporarilyUnavailable,
    UsageError,
)
from ocb.snapshot import POINTER, build_pointer, meta_path, parse_record, with_digest
from ocb.stores import canonical_url, open_store
from ocb.stores.base import Upload
from ocb.stores.local import LocalStore
from tests.unit.test_catalog import make_meta

ROOT = Path(__file__).resolve().parents[2]
SNAP = "openclaw-backup-20261101-120000"
NEXT = "openclaw-backup-20261101-130000"
RIVAL = "openclaw-backup-20261101-133000"
THIRD = "openclaw-backup-20261101-140000"
TOKEN = "ocb-test-token"


def settings_for(tmp_path: Path, **overrides) -> Settings:
    return Settings(home=str(tmp_path / "home"), work_dir=str(tmp_path / "work"), cache_dir=str(tmp_path / "cache"),
                    **{"retry_seconds": 2.0, **overrides})


# -- inspection hooks, one per backend ------------------------------------------------------------


class LocalRaw:
    """The folder as it is on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self) -> dict[str, int]:
        found = {}
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = Path(folder, name)
                found[str(path.relative_to(self.root))] = path.stat().st_size
        found.pop(".ocb-store.lock", None)
        return found

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def write(self, path: str, data: bytes) -> None:
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        (self.root / path).write_bytes(data)

    def delete(self, path: str) -> None:
        (self.root / path).unlink()

    def commits(self) -> int:
        return 0  # a folder has no commits


class HubRaw:
    """The repo as the test Hub holds it: its control endpoints, resolve, and plain commits."""

    def __init__(self, hub_url: str, repo_id: str) -> None:
        self.hub_url, self.repo_id = hub_url, repo_id

    def _state(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.hub_url}/__hub/repo/dataset/{self.repo_id}") as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def files(self) -> dict[str, int]:
        state = self._state()
        files = {} if state is None else {p: f["size"] for p, f in state["files"].items()}
        files.pop(".gitattributes", None)  # the Hub's own, in every new repo
        return files

    def read(self, path: str) -> bytes:
        url = f"{self.hub_url}/datasets/{self.repo_id}/resolve/main/{urllib.parse.quote(path)}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request) as answer:
            return answer.read()

    def write(self, path: str, data: bytes) -> None:
        from huggingface_hub import CommitOperationAdd

        self._commit([CommitOperationAdd(path, data)])

    def delete(self, path: str) -> None:
        from huggingface_hub import CommitOperationDelete

        self._commit([CommitOperationDelete(path)])

    def _commit(self, operations: list) -> None:
        """A plain commit, as another writer (or another tool) would make it."""
        from huggingface_hub import HfApi

        HfApi(endpoint=self.hub_url, token=TOKEN).create_commit(self.repo_id, operations, repo_type="dataset",
                                                                commit_message="another writer")

    def commits(self) -> int:
        """Commits made through the commit API (the Hub's own first commit of a new repo is
        not one); counted over the whole test Hub, which one test at a time uses."""
        with urllib.request.urlopen(f"{self.hub_url}/__hub/stats") as answer:
            return json.loads(answer.read())["commits"]


class S3Raw:
    """The bucket as the S3 test server holds it, read and written by a plain boto3 client."""

    def __init__(self, url: str, bucket: str, root: str) -> None:
        self.client, self.bucket, self.root = s3_client(url), bucket, root

    def _key(self, path: str) -> str:
        return f"{self.root}/{path}"

    def files(self) -> dict[str, int]:
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.root + "/"):
            found.update({item["Key"][len(self.root) + 1:]: item["Size"] for item in page.get("Contents", ())})
        return found

    def read(self, path: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(path))["Body"].read()

    def write(self, path: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data)

    def delete(self, path: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(path))

    def commits(self) -> int:
        return 0  # a bucket has no commits


_S3_CLIENTS: dict = {}


def s3_client(url: str):
    if url in _S3_CLIENTS:
        return _S3_CLIENTS[url]
    import boto3
    from botocore.config import Config

    _S3_CLIENTS[url] = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=S3_KEY,
                        aws_secret_access_key=S3_SECRET,
                        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))
    return _S3_CLIENTS[url]


S3_KEY, S3_SECRET = "ocb-test-key", "ocb-test-secret-do-not-log"


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server behind the fault proxy, on loopback, for the whole session."""
    from tests.s3.fixture import start_s3, stop_s3

    url, process = start_s3()
    yield url
    stop_s3(process)


def s3_settings(tmp_path: Path, url: str, **overrides) -> Settings:
    return settings_for(tmp_path, **{"s3_endpoint": url, "s3_region": "us-east-1", "s3_path_style": True,
                                     **overrides})


def new_bucket(url: str) -> str:
    import uuid

    name = f"ocb-{uuid.uuid4().hex[:16]}"
    s3_client(url).create_bucket(Bucket=name)
    return name


@dataclasses.dataclass
class Backend:
    url: str
    raw: LocalRaw | HubRaw | S3Raw
    settings: Settings
    secrets: StoreSecrets

    def open(self):
        """Another store object on the same URL: another writer, or the next command."""
        return open_store(self.url, self.settings, self.secrets)

    def damage(self, path: str) -> None:
        data = bytearray(self.raw.read(path))
        data[len(data) // 2] ^= 0x01  # always a different byte
        self.raw.write(path, bytes(data))


@pytest.fixture(params=["local", "hf", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = new_bucket(server)
        return Backend(f"s3://{bucket}/state", S3Raw(server, bucket, "state"), s3_settings(tmp_path, server),
                       StoreSecrets(aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET))
    if request.param == "hf":
        hub_url = request.getfixturevalue("test_hub")
        repo_id = f"contract/{tmp_path.name}"
        settings = settings_for(tmp_path, hub_endpoint=hub_url)
        return Backend(f"hf://datasets/{repo_id}", HubRaw(hub_url, repo_id), settings, StoreSecrets(hf_token=TOKEN))
    root = tmp_path / "store"
    return Backend(f"file://{root}", LocalRaw(root), settings_for(tmp_path), StoreSecrets())


@pytest.fixture
def store(backend):
    return backend.open()


# -- publishing as ocb-push does ------------------------------------------------------------------


def volume(tmp_path: Path, snapshot_id: str, data: bytes) -> Upload:
    path = tmp_path / f"{snapshot_id}.tar.zst"
    path.write_bytes(data)
    return Upload(path.name, str(path), len(data), hashlib.sha256(data).hexdigest())


def snapshot(tmp_path: Path, snapshot_id: str, parent: dict | None = None, data: bytes | None = None):
    """(upload, meta) of a one-volume snapshot, the meta built as ocb-push builds it, naming
    the volume's real size and sha256."""
    upload = volume(tmp_path, snapshot_id, data if data is not None else f"volume of {snapshot_id}".encode())
    meta = {k: v for k, v in make_meta(snapshot_id, parent=parent).items() if k != "record_sha256"}
    meta["chain"][-1]["volumes"] = [{"name": upload.name, "size": upload.size, "sha256": upload.sha256}]
    meta["volume_info"] = meta["chain"][-1]["volumes"]
    meta["volumes"] = [upload.name]
    return upload, with_digest(meta)


def publish(store, url: str, tmp_path: Path, snapshot_id: str, parent: dict | None = None,
            data: bytes | None = None, token: str | None = "head", old_catalog: dict | None | str = "store"):
    """Publish a snapshot on the store's head, with the catalog ocb-push would pass."""
    upload, meta = snapshot(tmp_path, snapshot_id, parent, data)
    if token == "head":
        token = store.head().token
    old = store.read_catalog() if old_catalog == "store" else old_catalog
    new = catalog.append(old, meta)
    stats = store.publish("backups", snapshot_id, [upload], meta, build_pointer(url, meta, "backups"), new, token)
    return upload, meta, new, stats


def snapshot_files(snapshot_id: str) -> set[str]:
    return {meta_path("backups", snapshot_id), f"backups/{snapshot_id}.tar.zst"}


# -- the contract ---------------------------------------------------------------------------------


def test_a_missing_store_is_not_there_and_empty(backend, store, tmp_path):
    assert store.exists() is False
    head = store.head()
    assert head.pointer is None and head.token is None
    assert store.read_catalog() is None and store.list_snapshot_ids("backups") == []
    assert store.list_files("backups") == {}
    with pytest.raises(StoreMissing, match="does not exist"):
        store.read_meta("backups", SNAP)
    with pytest.raises(StoreMissing, match="does not exist"):
        store.fetch_volume("backups", f"{SNAP}.tar.zst", 1, "0" * 64, str(tmp_path / "work"))
    assert backend.raw.files() == {}


def test_publish_writes_pointer_meta_catalog_and_volume_and_reads_them_back(backend, store, tmp_path):
    before = backend.raw.commits()
    upload, meta, written, stats = publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    assert stats["commits"] == backend.raw.commits() - before <= 1
    assert store.exists()
    raw = backend.raw
    assert set(raw.files()) == {POINTER, catalog.NAME} | snapshot_files(SNAP)
    # what the backend wrote, read back raw and parsed by the format owners
    pointer = parse_record(raw.read(POINTER), POINTER)
    assert pointer == build_pointer(backend.url, meta, "backups") and pointer["latest"] == meta_path("backups", SNAP)
    assert parse_record(raw.read(meta_path("backups", SNAP)), "meta") == meta
    on_disk = catalog.parse(raw.read(catalog.NAME), catalog.NAME)
    assert on_disk == written and catalog.ids(on_disk) == [SNAP]
    assert on_disk["snapshots"][0] == catalog.entry(meta, 1)
    assert raw.read(f"backups/{upload.name}") == b"volume of " + SNAP.encode()
    # and the same through the interface, from another store object (the next command)
    again = backend.open()
    head = again.head()
    assert head.snapshot_id == SNAP and head.pointer == pointer and head.token is not None
    assert again.read_meta("backups", SNAP) == meta
    assert again.read_catalog() == on_disk
    assert again.list_snapshot_ids("backups") == [SNAP]
    # the files under the prefix with their sizes, from one listing
    assert again.list_files("backups") == {upload.name: upload.size,
                                           f"{SNAP}.meta.json": len(raw.read(meta_path("backups", SNAP)))}
    assert again.list_files("elsewhere") == {}
    fetched = again.fetch_volume("backups", upload.name, upload.size, upload.sha256, str(tmp_path / "work"))
    assert Path(fetched).read_bytes() == b"volume of " + SNAP.encode()


def test_the_next_snapshot_appends_to_the_catalog_the_store_holds(backend, store, tmp_path):
    _, first, _, _ = publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    later = backend.open()
    before = backend.raw.commits()
    _, second, _, stats = publish(later, backend.url, tmp_path, NEXT, parent=first)
    assert stats["commits"] == backend.raw.commits() - before <= 1
    on_disk = catalog.parse(backend.raw.read(catalog.NAME), catalog.NAME)
    assert on_disk["snapshots"] == [catalog.entry(first, 1), catalog.entry(second, 2)]
    assert on_disk["snapshots"][1]["parent_id"] == SNAP and on_disk["snapshots"][1]["chain_id"] == SNAP
    assert parse_record(backend.raw.read(POINTER), POINTER)["chain"] == [SNAP, NEXT]
    assert store.list_snapshot_ids("backups") == [SNAP, NEXT]


def test_a_rival_writer_makes_publish_a_conflict_and_leaves_nothing_of_ours(backend, store, tmp_path):
    _, first, _, _ = publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    planned = store.head().token
    ours_old = store.read_catalog()
    rival = backend.open()
    _, _, rival_catalog, _ = publish(rival, backend.url, tmp_path, RIVAL)
    files = backend.raw.files()
    with pytest.raises(StoreConflict, match="re-plan"):
        publish(store, backend.url, tmp_path, NEXT, parent=first, token=planned, old_catalog=ours_old)
    assert backend.raw.files() == files
    assert not any(NEXT in path for path in backend.raw.files())
    assert catalog.parse(backend.raw.read(catalog.NAME), "c") == rival_catalog
    assert backend.open().head().snapshot_id == RIVAL


def test_a_store_planned_empty_that_a_rival_filled_is_a_conflict(backend, store, tmp_path):
    publish(backend.open(), backend.url, tmp_path, RIVAL, token=None, old_catalog=None)
    files = backend.raw.files()
    with pytest.raises(StoreConflict):
        publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    assert backend.raw.files() == files


def test_an_existing_snapshot_is_never_overwritten(backend, store, tmp_path):
    publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    meta_before = backend.raw.read(meta_path("backups", SNAP))
    files = backend.raw.files()
    upload, meta = snapshot(tmp_path, SNAP, data=b"other bytes")
    current = store.read_catalog()  # it lists SNAP already: a catalog that ends with it
    with pytest.raises(StoreConflict, match="already exists"):
        store.publish("backups", SNAP, [upload], meta, build_pointer(backend.url, meta, "backups"), current,
                      store.head().token)
    assert backend.raw.read(meta_path("backups", SNAP)) == meta_before and backend.raw.files() == files


def test_a_catalog_not_appended_to_the_stores_own_is_a_conflict(backend, store, tmp_path):
    publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    files = backend.raw.files()
    with pytest.raises(StoreConflict, match="catalog"):
        publish(store, backend.url, tmp_path, NEXT, old_catalog=None)  # as if the store had none
    assert backend.raw.files() == files


def test_a_volume_changed_since_split_never_lands(backend, store, tmp_path):
    publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    files, catalog_before = backend.raw.files(), backend.raw.read(catalog.NAME)
    upload, meta = snapshot(tmp_path, NEXT)
    changed = bytearray(Path(upload.path).read_bytes())
    changed[0] ^= 0x01  # the same size, other bytes: only the hash can tell
    Path(upload.path).write_bytes(bytes(changed))
    with pytest.raises(ChecksumMismatch, match=upload.name):
        store.publish("backups", NEXT, [upload], meta, build_pointer(backend.url, meta, "backups"),
                      catalog.append(store.read_catalog(), meta), store.head().token)
    assert backend.raw.files() == files and backend.raw.read(catalog.NAME) == catalog_before


def test_remove_deletes_in_one_step_with_the_new_catalog(backend, store, tmp_path):
    _, first, _, _ = publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    _, second, _, _ = publish(store, backend.url, tmp_path, NEXT)  # a second full: its own chain
    sizes = backend.raw.files()
    head = store.head()
    new = catalog.without(store.read_catalog(), [SNAP])
    paths = sorted(snapshot_files(SNAP))
    before = backend.raw.commits()
    stats = store.remove(paths, head.token, new)
    assert stats["commits"] == backend.raw.commits() - before <= 1
    assert stats["files_removed"] == 2 and stats["bytes_removed"] == sum(sizes[p] for p in paths)
    assert set(backend.raw.files()) == {POINTER, catalog.NAME} | snapshot_files(NEXT)
    assert catalog.parse(backend.raw.read(catalog.NAME), "c")["snapshots"] == [catalog.entry(second, 2)]
    again = backend.open()
    assert again.head().snapshot_id == NEXT and again.list_snapshot_ids("backups") == [NEXT]
    with pytest.raises(ChainBroken):
        again.read_meta("backups", SNAP)
    assert first["id"] == SNAP


def test_remove_passes_over_paths_the_store_does_not_hold(backend, store, tmp_path):
    publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    publish(store, backend.url, tmp_path, NEXT)
    stats = store.remove(sorted(snapshot_files(SNAP)) + [f"backups/{SNAP}.tar.zst.part-0009"], store.head().token,
                         catalog.without(store.read_catalog(), [SNAP]))
    assert stats["files_removed"] == 2


def test_remove_on_a_stale_head_is_a_conflict_and_deletes_nothing(backend, store, tmp_path):
    publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    publish(store, backend.url, tmp_path, NEXT)
    planned, planned_catalog = store.head().token, store.read_catalog()
    publish(backend.open(), backend.url, tmp_path, RIVAL)
    files, catalog_before = backend.raw.files(), backend.raw.read(catalog.NAME)
    before = backend.raw.commits()
    with pytest.raises(StoreConflict, match="re-plan"):
        store.remove(sorted(snapshot_files(SNAP)), planned, catalog.without(planned_catalog, [SNAP]))
    assert backend.raw.files() == files and backend.raw.read(catalog.NAME) == catalog_before
    assert backend.raw.commits() == before


@pytest.mark.parametrize("paths", [[POINTER], [catalog.NAME], ["../outside"], ["/abs"], ["backups/../x"],
                                   ["backups/a", "backups/a"], ["backups"], [f"backups/.ocb-tmp-1-{SNAP}.tar.zst"]])
def test_remove_refuses_what_is_not_a_snapshot_file(backend, store, tmp_path, paths):
    publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    files = backend.raw.files()
    with pytest.raises(ValueError):
        store.remove(paths, store.head().token, store.read_catalog())
    assert backend.raw.files() == files


def test_remove_refuses_files_of_a_snapshot_the_catalog_keeps(backend, store, tmp_path):
    publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    publish(store, backend.url, tmp_path, NEXT)
    files = backend.raw.files()
    with pytest.raises(ValueError, match="keeps"):
        store.remove(sorted(snapshot_files(SNAP)), store.head().token, store.read_catalog())
    with pytest.raises(ValueError, match="has a catalog"):
        store.remove(sorted(snapshot_files(SNAP)), store.head().token, None)
    assert backend.raw.files() == files


@pytest.mark.parametrize("path, read", [
    (catalog.NAME, lambda s: s.read_catalog()),
    (POINTER, lambda s: s.head()),
    (meta_path("backups", SNAP), lambda s: s.read_meta("backups", SNAP)),
], ids=["catalog", "pointer", "meta"])
def test_a_damaged_record_is_a_checksum_mismatch_naming_it(backend, store, tmp_path, path, read):
    publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    backend.damage(path)
    with pytest.raises(ChecksumMismatch, match=path.replace(".", r"\.")):
        read(backend.open())


def _fetched_and_read(store, name: str, size: int, sha256: str, work: str) -> None:
    """Fetch a volume and read it as a restore does: a folder store hands its own file, whose
    sha256 the reader checks (Store.fetch_volume); the others verify it once downloaded."""
    from ocb.restore import VolumeStream

    path = store.fetch_volume("backups", name, size, sha256, work)
    with VolumeStream([(name, path, sha256)]) as stream:
        while stream.read(1 << 16):
            pass


def test_fetch_detects_damage_and_absence(backend, store, tmp_path):
    upload, _, _, _ = publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    work = str(tmp_path / "work")
    with pytest.raises(ChecksumMismatch):
        _fetched_and_read(store, upload.name, upload.size, "0" * 64, work)
    with pytest.raises(ChecksumMismatch):
        store.fetch_volume("backups", upload.name, upload.size + 1, upload.sha256, work)
    with pytest.raises(ChainBroken):
        store.fetch_volume("backups", f"{NEXT}.tar.zst", 1, "0" * 64, work)
    with pytest.raises(ChainBroken):
        store.read_meta("backups", NEXT)
    _fetched_and_read(store, upload.name, upload.size, upload.sha256, work)
    backend.damage(f"backups/{upload.name}")
    with pytest.raises(ChecksumMismatch, match="sha256 differs from the meta"):
        _fetched_and_read(backend.open(), upload.name, upload.size, upload.sha256, str(tmp_path / "work2"))


def test_digests_the_start_of_a_volume_and_access_need_no_download(backend, store, tmp_path):
    """What ocb-check and ocb-doctor ask of every store (issue 18)."""
    before = store.access()
    assert before.exists is False and before.can_write is True and before.detail
    data = os.urandom(5000)  # above the test Hub's LFS threshold: the Hub records its sha256
    upload, _, _, _ = publish(store, backend.url, tmp_path, SNAP, data=data)
    digests = store.list_file_digests("backups")
    assert {name: size for name, (size, _) in digests.items()} == store.list_files("backups")
    hub = backend.url.startswith("hf://")
    assert digests[upload.name] == (len(data), upload.sha256 if hub else None)
    assert store.read_start("backups", upload.name, 107) == data[:107]
    assert store.read_start("backups", upload.name, 10**6) == data
    with pytest.raises(ChainBroken, match="missing"):
        store.read_start("backups", "openclaw-backup-20261101-130000.tar.zst", 10)
    after = store.access()
    assert after.exists is True and after.can_write is True
    assert (after.private, bool(after.who)) == ((True, True) if hub else (None, False))


def test_small_files_and_whole_files_are_read_by_path_for_the_legacy_reader(backend, store, tmp_path):
    upload, meta, _, _ = publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    assert store.read_file(meta_path("backups", SNAP)) == backend.raw.read(meta_path("backups", SNAP))
    assert store.read_file("backups/nothing.meta.json") is None
    fetched = store.fetch_file(f"backups/{upload.name}", str(tmp_path / "work"))
    assert Path(fetched).read_bytes() == b"volume of " + SNAP.encode()
    with pytest.raises(ChainBroken):
        store.fetch_file("backups/openclaw-backup-20200101-000000.tar.gz", str(tmp_path / "work"))


def test_a_legacy_pointer_is_a_legacy_head_never_a_damaged_one(backend, store, tmp_path):
    publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    legacy_pointer = {"dataset": "me/repo", "latest": "backups/openclaw-backup-20251125-000000.tar.gz.meta.json",
                      "created_at_utc": "2025-11-25T00:00:00+00:00"}
    backend.raw.write(POINTER, json.dumps(legacy_pointer).encode())
    head = backend.open().head()
    assert head.legacy and head.pointer == legacy_pointer and head.snapshot_id is None


def test_a_store_written_before_catalogs_has_none_and_its_snapshots_stay_safe(backend, store, tmp_path):
    _, first, _, _ = publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    backend.raw.delete(catalog.NAME)  # now as an older ocb or the legacy script left it
    old = backend.open()
    assert old.read_catalog() is None and old.head().snapshot_id == SNAP
    files = backend.raw.files()
    upload, meta = snapshot(tmp_path, SNAP, data=b"other bytes")
    with pytest.raises(StoreConflict, match="already exists"):  # nothing lists SNAP: the store looks
        old.publish("backups", SNAP, [upload], meta, build_pointer(backend.url, meta, "backups"),
                    catalog.append(None, meta), old.head().token)
    assert backend.raw.files() == files
    # what push does then: a catalog seeded from the listing, the new snapshot appended
    seeded = catalog.seed(old.list_snapshot_ids("backups"))
    _, second, written, _ = publish(old, backend.url, tmp_path, NEXT, parent=first, old_catalog=seeded)
    on_disk = catalog.parse(backend.raw.read(catalog.NAME), "c")
    assert on_disk == written and catalog.ids(on_disk) == [SNAP, NEXT]
    assert on_disk["snapshots"][0]["from_listing"] is True and on_disk["snapshots"][1] == catalog.entry(second, 2)


# -- the local folder: a volume moved in or copied ----------------------------------------------


def local_store(tmp_path: Path):
    root = tmp_path / "store"
    return Backend(f"file://{root}", LocalRaw(root), settings_for(tmp_path), StoreSecrets())


def other_filesystem(tmp_path: Path) -> Path:
    """A folder on another filesystem than tmp_path's (tmpfs), where a rename is EXDEV."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem here")
    folder = Path(os.path.join(shm, f"ocb-test-{os.getpid()}-{tmp_path.name}"))
    folder.mkdir()
    return folder


def test_a_volume_on_the_stores_filesystem_is_moved_in_one_elsewhere_copied(tmp_path):
    backend = local_store(tmp_path)
    store = backend.open()
    upload, _, _, stats = publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None,
                                  data=b"moved " * 1000)
    assert not os.path.exists(upload.path)  # renamed: its bytes were not written again
    assert backend.raw.read(f"backups/{SNAP}.tar.zst") == b"moved " * 1000 and stats["bytes_uploaded"] == 6000
    elsewhere = other_filesystem(tmp_path)
    try:
        upload, meta = snapshot(elsewhere, NEXT, parent=None, data=b"copied " * 1000)
        store.publish("backups", NEXT, [upload], meta, build_pointer(backend.url, meta, "backups"),
                      catalog.append(store.read_catalog(), meta), store.head().token)
        assert Path(upload.path).read_bytes() == b"copied " * 1000  # copied: the work dir's copy stays
        assert backend.raw.read(f"backups/{NEXT}.tar.zst") == b"copied " * 1000
    finally:
        subprocess.run(["rm", "-rf", str(elsewhere)], check=True)
    assert not [name for name in os.listdir(tmp_path / "store" / "backups") if name.startswith(".ocb-tmp-")]


def test_a_volume_that_is_a_link_or_shares_its_inode_is_copied_never_moved(tmp_path):
    backend = local_store(tmp_path)
    store = backend.open()
    upload, meta = snapshot(tmp_path, SNAP, data=b"linked " * 100)
    real = tmp_path / "elsewhere.bin"
    os.replace(upload.path, real)
    os.symlink(real, upload.path)
    store.publish("backups", SNAP, [upload], meta, build_pointer(backend.url, meta, "backups"),
                  catalog.append(None, meta), None)
    landed = tmp_path / "store" / "backups" / upload.name
    assert not landed.is_symlink() and landed.read_bytes() == b"linked " * 100
    assert os.path.islink(upload.path) and real.read_bytes() == b"linked " * 100
    upload, meta = snapshot(tmp_path, NEXT, data=b"shared " * 100)
    os.link(upload.path, tmp_path / "second-name.bin")
    store.publish("backups", NEXT, [upload], meta, build_pointer(backend.url, meta, "backups"),
                  catalog.append(store.read_catalog(), meta), store.head().token)
    assert os.stat(tmp_path / "store" / "backups" / upload.name).st_nlink == 1
    assert Path(upload.path).read_bytes() == b"shared " * 100


def test_a_publish_that_fails_puts_the_volumes_it_moved_back_in_the_work_dir(tmp_path):
    backend = local_store(tmp_path)
    store = backend.open()
    publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    files = backend.raw.files()
    first, meta = snapshot(tmp_path, NEXT, data=b"first volume")
    gone = Upload(f"{NEXT}.tar.zst.part-0002", str(tmp_path / "no-such-volume"), 5, "0" * 64)
    meta["volumes"].append(gone.name)  # two volumes: the first lands, the second cannot be read
    with pytest.raises(RuntimeFailure, match="cannot write"):
        store.publish("backups", NEXT, [first, gone], meta, build_pointer(backend.url, meta, "backups"),
                      catalog.append(store.read_catalog(), meta), store.head().token)
    assert backend.raw.files() == files  # the store as it was
    assert Path(first.path).read_bytes() == b"first volume"  # and the work dir, for another try
    # a volume changed since ocb-split: refused, and back where it was, changed as it was
    changed = Path(first.path)
    changed.write_bytes(b"first volumE")
    with pytest.raises(ChecksumMismatch, match=first.name):
        store.publish("backups", NEXT, [first], meta, build_pointer(backend.url, meta, "backups"),
                      catalog.append(store.read_catalog(), meta), store.head().token)
    assert backend.raw.files() == files and changed.read_bytes() == b"first volumE"


# -- the registry: URLs --------------------------------------------------------------------------

HOME = os.path.expanduser("~")


@pytest.mark.parametrize("raw, url", [
    ("file:///srv/backups", "file:///srv/backups"),
    ("file:///srv//backups/./x/../", "file:///srv/backups"),
    ("/srv/backups/", "file:///srv/backups"),
    ("~/backups", f"file://{HOME}/backups"),
    ("./store", f"file://{os.path.abspath('store')}"),
    ("../store", f"file://{os.path.abspath('../store')}"),
    (".", f"file://{os.path.abspath('.')}"),
    ("hf://datasets/owner/name", "hf://datasets/owner/name"),
    ("hf://datasets/owner/name/", "hf://datasets/owner/name"),
    ("hf://owner/name", "hf://datasets/owner/name"),
    ("owner/name", "hf://datasets/owner/name"),  # the legacy OPENCLAW_BACKUP_DATASET_REPO
    ("Org-1/my_state.v2", "hf://datasets/Org-1/my_state.v2"),
    ("s3://bucket", "s3://bucket"),
    ("s3://bucket/", "s3://bucket"),
    ("s3://my.bucket-1/agents/one/", "s3://my.bucket-1/agents/one"),
    ("s3://My_Bucket/state", "s3://My_Bucket/state"),  # Hugging Face Storage Buckets allow these
])
def test_canonical_url_of_every_form(raw, url):
    assert canonical_url(raw, "OCB_STORE") == url


@pytest.mark.parametrize("raw, words", [
    ("hf://datasets/bad name", ["hf://datasets/OWNER/NAME"]),
    ("hf://datasets/owner/bad name", ["repo name 'bad name'", "space"]),
    ("owner/bad name", ["repo name 'bad name'", "space"]),
    ("bad owner/name", ["owner 'bad owner'", "space"]),
    ("hf://datasets/bad..name/--x", ["owner 'bad..name'", "'..'"]),
    ("hf://datasets/owner/--x", ["repo name '--x'"]),
    ("hf://datasets/owner/x.git", ["'.git'"]),
    ("hf://datasets/owner/na%me", ["'%'", "letters, digits"]),
    ("hf://datasets/owner/" + "x" * 95, ["longer than 96"]),
    ("hf://datasets/a/b/c", ["hf://datasets/OWNER/NAME"]),
    ("hf://datasets/", ["hf://datasets/OWNER/NAME"]),
    ("hf://models/owner/name", ["dataset repo", "models"]),
    ("hf://spaces/owner/name", ["dataset repo", "spaces"]),
    ("file://relative/path", ["absolute path"]),
    ("gs://bucket/prefix", ["unknown store scheme gs://", "file:///path", "hf://datasets/OWNER/NAME", "s3://BUCKET"]),
    ("s3://", ["bucket name ''", "s3://BUCKET/PREFIX"]),
    ("s3://ab/x", ["bucket name 'ab'", "3 to 63"]),
    ("s3://bad bucket/x", ["bucket name 'bad bucket'"]),
    ("s3://bucket//x", ["prefix", "'//'"]),
    ("s3://bucket/a/../b", ["prefix", "'..'"]),
    ("backups", ["not a store", "file:///path", "OWNER/NAME"]),
    ("a/b/c", ["not a store"]),
    ("", ["not a store"]),
])
def test_canonical_url_refuses_bad_forms_naming_the_variable_and_the_problem(raw, words):
    with pytest.raises(UsageError) as caught:
        canonical_url(raw, "OCB_STORE")
    message = str(caught.value)
    assert message.startswith(f"OCB_STORE={raw!r}: ")
    for word in words:
        assert word in message


def test_a_url_check_does_not_import_huggingface_hub():
    script = ("import sys; sys.path.insert(0, 'lib'); from ocb.stores import canonical_url; "
              "canonical_url('hf://datasets/a/b', 'X'); canonical_url('/tmp', 'X'); canonical_url('s3://b-1/p', 'X'); "
              "print('huggingface_hub' in sys.modules, 'boto3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


@pytest.mark.parametrize("url", ["s3://bucket/x/", "file://relative", "hf://owner/name", "file:///a/../b", "/plain"])
def test_open_store_takes_only_canonical_urls(tmp_path, url):
    with pytest.raises(BadDocument):
        open_store(url, settings_for(tmp_path), StoreSecrets())


# -- the Hub backend beyond the contract: settings, secrets, retries ------------------------------


@pytest.fixture
def hub_store(test_hub, tmp_path):
    settings = settings_for(tmp_path, hub_endpoint=test_hub, retry_seconds=30.0)
    store = open_store(f"hf://datasets/retries/{tmp_path.name}", settings, StoreSecrets(hf_token=TOKEN))
    waits: list[float] = []
    store.policy = dataclasses.replace(store.policy, sleep=waits.append)
    yield store, test_hub, waits
    urllib.request.urlopen(urllib.request.Request(f"{test_hub}/__hub/faults", method="DELETE"))


def hub_control(hub_url: str, path: str, body=None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{hub_url}/__hub/{path}", data=data,
                                                       method="GET" if body is None else "POST")) as answer:
        return json.loads(answer.read())


def test_a_429_on_the_commit_waits_its_retry_after_and_commits_once(hub_store, tmp_path):
    store, hub_url, waits = hub_store
    hub_control(hub_url, "faults", {"route": "commit", "status": 429, "retry_after": 7, "times": 2,
                                    "message": "You have exceeded the rate limit for repository commits"})
    hub_control(hub_url, "stats/reset", {})
    _, _, _, stats = publish(store, store.url, tmp_path, SNAP, token=None, old_catalog=None)
    assert waits == [7.0, 7.0] and stats["attempts"] == 3
    assert hub_control(hub_url, "stats")["commits"] == 1


def test_a_commit_whose_answer_is_lost_is_looked_up_not_made_twice(hub_store, tmp_path):
    store, hub_url, waits = hub_store
    publish(store, store.url, tmp_path, SNAP, token=None, old_catalog=None)
    hub_control(hub_url, "faults", {"route": "commit", "drop_after_bytes": 0, "times": 1})
    hub_control(hub_url, "stats/reset", {})
    _, _, _, stats = publish(store, store.url, tmp_path, NEXT)
    assert hub_control(hub_url, "stats")["commits"] == 1 and stats["attempts"] == 1 and waits == []
    assert store.head().snapshot_id == NEXT


def test_a_removal_whose_answer_is_lost_is_looked_up_not_made_twice(hub_store, tmp_path):
    store, hub_url, _ = hub_store
    publish(store, store.url, tmp_path, SNAP, token=None, old_catalog=None)
    publish(store, store.url, tmp_path, NEXT)
    hub_control(hub_url, "faults", {"route": "commit", "drop_after_bytes": 0, "times": 1})
    hub_control(hub_url, "stats/reset", {})
    new = catalog.without(store.read_catalog(), [SNAP])
    stats = store.remove(sorted(snapshot_files(SNAP)), store.head().token, new)
    assert stats["commits"] == 1 and hub_control(hub_url, "stats")["commits"] == 1
    assert store.read_catalog() == new


def test_an_incremental_publish_costs_no_request_beyond_the_upload_and_the_commit(hub_store, tmp_path):
    """The catalog read by push is the one publish checks against: no second read, no lookup."""
    store, hub_url, _ = hub_store
    _, first, _, _ = publish(store, store.url, tmp_path, SNAP, token=None, old_catalog=None)
    token = store.head().token
    hub_control(hub_url, "stats/reset", {})
    publish(store, store.url, tmp_path, NEXT, parent=first, token=token)
    routes = hub_control(hub_url, "stats")["by_route"]
    # a binary volume goes to LFS whatever its size, as on the Hub: those are the upload
    transfers = {route: routes.pop(route, 0) for route in ("lfs_batch", "lfs_upload", "lfs_verify")}
    assert routes == {"resolve_get": 1, "preupload": 1, "commit": 1}, routes  # the catalog, then the commit
    assert transfers["lfs_batch"] <= 1, transfers


@pytest.fixture
def locked_hub(tmp_path):
    """A test Hub of its own that wants its token, on a port HF_ENDPOINT does not name."""
    from tests.hub.fixture import start_hub, stop_hub

    url, process = start_hub(tmp_path / "locked-hub", token=TOKEN, lfs_threshold=4096)
    yield url
    stop_hub(process)


def test_the_token_comes_from_the_secrets_never_from_the_environment(locked_hub, tmp_path):
    assert os.environ.get("HF_TOKEN") == TOKEN  # what the library would find by itself
    settings = settings_for(tmp_path, hub_endpoint=locked_hub)
    for token in (None, "wrong-token"):
        store = open_store("hf://datasets/owner/locked", settings, StoreSecrets(hf_token=token))
        with pytest.raises(CredentialsRefused, match="refused the token"):
            store.head()
    assert open_store("hf://datasets/owner/locked", settings, StoreSecrets(hf_token=TOKEN)).head().token is None


def test_the_endpoint_comes_from_the_settings_with_hf_endpoint_unset(locked_hub, tmp_path):
    """The whole cycle in a process whose environment names no endpoint (as a cron run whose
    HF_ENDPOINT is in the env file only): every library call must be given the endpoint."""
    script = textwrap.dedent(f"""
        import hashlib, json, os, sys
        sys.path[:0] = [{str(ROOT / 'lib')!r}, {str(ROOT)!r}]
        assert "HF_ENDPOINT" not in os.environ
        from ocb import catalog
        from ocb.config import Settings, StoreSecrets
        from ocb.snapshot import build_pointer
        from ocb.stores import open_store
        from tests.unit.test_stores import snapshot, snapshot_files
        from pathlib import Path
        tmp = Path({str(tmp_path)!r})
        settings = Settings(home=str(tmp / "home"), work_dir=str(tmp / "work"), cache_dir=str(tmp / "cache"),
                            retry_seconds=1.0, hub_endpoint={locked_hub!r})
        store = open_store("hf://datasets/owner/endpoint", settings, StoreSecrets(hf_token={TOKEN!r}))
        assert not store.exists()
        upload, meta = snapshot(tmp, {SNAP!r}, data=os.urandom(5000))  # over the LFS threshold
        store.publish("backups", {SNAP!r}, [upload], meta, build_pointer(store.url, meta, "backups"),
                      catalog.append(store.read_catalog(), meta), store.head().token)
        upload2, meta2 = snapshot(tmp, {NEXT!r})
        store.publish("backups", {NEXT!r}, [upload2], meta2, build_pointer(store.url, meta2, "backups"),
                      catalog.append(store.read_catalog(), meta2), store.head().token)
        path = store.fetch_volume("backups", upload.name, upload.size, upload.sha256, str(tmp / "work"))
        assert open(path, "rb").read() == open(upload.path, "rb").read()
        assert store.read_meta("backups", {SNAP!r}) == meta
        assert store.list_snapshot_ids("backups") == [{SNAP!r}, {NEXT!r}]
        stats = store.remove(sorted(snapshot_files({SNAP!r})), store.head().token,
                             catalog.without(store.read_catalog(), [{SNAP!r}]))
        assert stats["files_removed"] == 2, stats
        print(json.dumps(catalog.ids(store.read_catalog())))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "HF_TOKEN", "HUGGINGFACE_HUB_TOKEN")}
    env.update({"HF_HOME": str(tmp_path / "hf-home")})
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [NEXT]


def test_reclaim_deletes_the_removed_files_objects_at_once_and_a_losers_once_old(hub_store, tmp_path):
    """Deleting a file frees nothing on the Hub: reclaim deletes for good the LFS objects no
    file at the head references, those of removed files at once, a losing writer's once old."""
    import datetime as dt

    store, hub_url, _ = hub_store
    big = {i: os.urandom(5000) for i in (SNAP, NEXT, RIVAL)}  # past the test Hub's LFS threshold
    publish(store, store.url, tmp_path, SNAP, data=big[SNAP], token=None, old_catalog=None)
    stale, stale_catalog = store.head().token, store.read_catalog()
    publish(store, store.url, tmp_path, NEXT, data=big[NEXT])
    with pytest.raises(StoreConflict):  # a writer that lost the race: its volume was uploaded
        publish(store, store.url, tmp_path, RIVAL, data=big[RIVAL], token=stale, old_catalog=stale_catalog)
    repo = f"repo/dataset/{store.url[len('hf://datasets/'):]}"
    assert hub_control(hub_url, repo)["lfs_objects"] == 3
    stats = store.remove(sorted(snapshot_files(SNAP)), store.head().token, catalog.without(store.read_catalog(), [SNAP]))
    assert stats["objects"] == [hashlib.sha256(big[SNAP]).hexdigest()]
    now = dt.datetime.now(dt.timezone.utc)
    assert store.reclaim(stats["objects"], now - dt.timedelta(days=1)) == {"objects_reclaimed": 1, "bytes_reclaimed": 5000}
    assert hub_control(hub_url, repo)["lfs_objects"] == 2  # the loser's is young: a push may still be under way
    assert store.reclaim([], now + dt.timedelta(minutes=1)) == {"objects_reclaimed": 1, "bytes_reclaimed": 5000}
    state = hub_control(hub_url, repo)
    assert state["lfs_objects"] == 1 and state["lfs_size"] == 5000  # NEXT's, which the head references
    assert store.squash(0) == {"commits_squashed": 0} and store.squash(100) == {"commits_squashed": 0}
    commits = store.squash(2)["commits_squashed"]
    assert commits >= 3 and hub_control(hub_url, repo)["commits"] == 1
    assert store.head().snapshot_id == NEXT and catalog.ids(store.read_catalog()) == [NEXT]
# -- the S3 backend beyond the contract: conditions, parts, faults, credentials ------------------


@pytest.fixture
def s3(s3_server, tmp_path):
    """(store, its server URL, its bucket, the waits its retries slept): a fresh bucket, the
    retry clock faked so that budgets pass in no time; the proxy's faults cleared after."""
    bucket = new_bucket(s3_server)
    clock = {"now": 0.0}
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock["now"] += seconds

    def open_one(**overrides):
        store = open_store(f"s3://{bucket}/state", s3_settings(tmp_path, s3_server, **overrides),
                           StoreSecrets(aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET))
        store.policy = dataclasses.replace(store.policy, sleep=sleep, clock=lambda: clock["now"])
        return store

    yield open_one, s3_server, bucket, waits
    proxy(s3_server, "/__faults", "DELETE")


def proxy(url: str, path: str, method: str = "GET", body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url + path, data=data, method=method)) as answer:
        return json.loads(answer.read())


def test_the_s3_test_server_enforces_the_conditional_writes_ocb_relies_on(s3_server):
    import botocore.exceptions

    client, bucket = s3_client(s3_server), new_bucket(s3_server)
    first = client.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")["ETag"]
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"0123456789abcdef0123456789abcdef"'}):
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            client.put_object(Bucket=bucket, Key="k", Body=b"2", **condition)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    client.put_object(Bucket=bucket, Key="k", Body=b"3", IfMatch=first)
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    part = client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"4")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, IfNoneMatch="*",
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]})
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"3"


def test_two_writers_past_the_head_check_one_wins_at_the_catalog_the_other_leaves_nothing(s3, tmp_path):
    import threading

    open_one, url, bucket, _ = s3
    raw = S3Raw(url, bucket, "state")
    publish(open_one(), f"s3://{bucket}/state", tmp_path, SNAP, token=None, old_catalog=None)
    loser, winner = open_one(), open_one()
    planned, planned_catalog = loser.head().token, loser.read_catalog()
    # the loser's volume upload is held by the proxy after its head check passed
    proxy(url, "/__faults", "POST", {"hold": True, "method": "PUT", "match": f"{NEXT}.tar.zst", "times": 1})
    outcome: list[BaseException | None] = []

    def push() -> None:
        try:
            publish(loser, f"s3://{bucket}/state", tmp_path / "loser", NEXT, token=planned,
                    old_catalog=planned_catalog)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome.append(exc)

    (tmp_path / "loser").mkdir()
    thread = threading.Thread(target=push)
    thread.start()
    for _ in range(300):
        if proxy(url, "/__stats")["held"] >= 1:
            break
        threading.Event().wait(0.05)
    _, _, won, _ = publish(winner, f"s3://{bucket}/state", tmp_path, RIVAL)
    files = raw.files()
    proxy(url, "/__release", "POST", {})
    thread.join(60)
    assert isinstance(outcome[0], StoreConflict), outcome
    assert raw.files() == files and not any(NEXT in path for path in files)
    assert catalog.parse(raw.read(catalog.NAME), "c") == won and open_one().head().snapshot_id == RIVAL


def test_a_large_volume_goes_up_in_parts_and_a_throttled_part_is_retried_alone(s3, tmp_path):
    open_one, url, bucket, waits = s3
    store = open_one(s3_part_size=5 * 1024**2, retry_seconds=10.0)
    data = os.urandom(11 * 1024**2)  # three parts: 5, 5 and 1 MiB
    proxy(url, "/__faults", "POST", {"status": 503, "code": "SlowDown", "method": "PUT", "match": "partNumber=2",
                                     "times": 2})
    before = proxy(url, "/__stats")["by_method"].get("PUT", 0)
    upload, _, _, stats = publish(store, store.url, tmp_path, SNAP, data=data, token=None, old_catalog=None)
    puts = proxy(url, "/__stats")["by_method"]["PUT"] - before
    assert stats["multipart_volumes"] == 1 and waits == [1.0, 2.0]
    # 3 parts + 2 retries of part 2, the probe's 3 puts, meta, catalog, pointer: no part sent twice but 2
    assert puts == 3 + 2 + 3 + 3
    fetched = open_one().fetch_volume("backups", upload.name, upload.size, upload.sha256, str(tmp_path / "dl"))
    assert Path(fetched).read_bytes() == data
    assert s3_client(url).list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_volume_whose_upload_fails_is_aborted_and_leaves_nothing(s3, tmp_path):
    open_one, url, bucket, _ = s3
    store = open_one(s3_part_size=5 * 1024**2)
    publish(store, store.url, tmp_path, SNAP, token=None, old_catalog=None)
    files = S3Raw(url, bucket, "state").files()
    proxy(url, "/__faults", "POST", {"status": 400, "code": "InvalidPart", "method": "POST", "match": "uploadId=",
                                     "times": 1})
    with pytest.raises(RuntimeFailure, match="InvalidPart"):
        publish(store, store.url, tmp_path, NEXT, data=os.urandom(6 * 1024**2))
    assert S3Raw(url, bucket, "state").files() == files
    assert s3_client(url).list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_uploads_a_killed_push_left_are_listed_and_aborted_under_the_store_only(s3, tmp_path):
    open_one, url, bucket, _ = s3
    client = s3_client(url)
    client.create_multipart_upload(Bucket=bucket, Key=f"state/backups/{SNAP}.tar.zst")
    client.create_multipart_upload(Bucket=bucket, Key="elsewhere/x")
    store = open_one()
    stale = store.stale_uploads(older_than=0)
    assert [item["key"] for item in stale] == [f"backups/{SNAP}.tar.zst"]
    assert store.abort_stale_uploads(older_than=0) == {"uploads_aborted": 1, "keys": [f"backups/{SNAP}.tar.zst"]}
    assert [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]] == ["elsewhere/x"]
    assert store.abort_stale_uploads(older_than=0)["uploads_aborted"] == 0


def test_a_slowdown_storm_is_waited_out_within_the_budget_then_is_temporary(s3, tmp_path):
    open_one, url, _, waits = s3
    store = open_one(retry_seconds=10.0)
    proxy(url, "/__faults", "POST", {"status": 503, "code": "SlowDown", "times": -1})
    with pytest.raises(TemporarilyUnavailable, match="503 SlowDown past the retry budget of 10s"):
        store.head()
    assert waits == [1.0, 2.0, 4.0] and sum(waits) <= 10
    proxy(url, "/__faults", "DELETE")
    waits.clear()
    proxy(url, "/__faults", "POST", {"status": 503, "code": "SlowDown", "retry_after": 3, "times": 2})
    assert store.head().token is None and waits == [3.0, 3.0]


def test_refused_credentials_are_13_and_no_message_shows_a_secret(s3, tmp_path):
    open_one, url, _, waits = s3
    proxy(url, "/__faults", "POST", {"status": 403, "code": "InvalidAccessKeyId", "times": -1,
                                     "message": "The AWS Access Key Id you provided does not exist"})
    with pytest.raises(CredentialsRefused, match="refused the credentials") as caught:
        open_one().head()
    assert S3_SECRET not in str(caught.value) and waits == []


def test_no_credentials_anywhere_is_13_naming_what_to_set(s3_server, tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # the SDK's chain finds nothing: no files, and no instance metadata asked for off loopback
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store("s3://ocb-no-credentials/state", s3_settings(tmp_path, s3_server), StoreSecrets())
    with pytest.raises(CredentialsRefused, match="AWS_ACCESS_KEY_ID"):
        store.head()


def test_a_missing_bucket_reads_as_empty_and_a_push_names_it(s3_server, tmp_path):
    store = open_store("s3://ocb-no-such-bucket/state", s3_settings(tmp_path, s3_server),
                       StoreSecrets(aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET))
    assert store.exists() is False and store.head().token is None and store.read_catalog() is None
    with pytest.raises(StoreMissing, match="the bucket ocb-no-such-bucket does not exist .*create it first"):
        publish(store, store.url, tmp_path, SNAP, token=None, old_catalog=None)


def test_an_endpoint_ignoring_conditional_writes_is_found_recorded_said_and_checked(s3, tmp_path, caplog):
    open_one, url, bucket, _ = s3
    proxy(url, "/__faults", "POST", {"strip_conditional": True})
    store = open_one()
    with caplog.at_level("WARNING", logger="ocb"):
        _, first, _, stats = publish(store, store.url, tmp_path, SNAP, token=None, old_catalog=None)
    assert stats["conditional_writes"] is False
    assert "does not honour conditional writes" in caplog.text
    record = json.loads((tmp_path / "cache" / "s3-conditional-writes.json").read_text())
    assert record[f"{url} {bucket}"]["honoured"] is False
    # the read-before-write check still refuses a writer whose head moved
    planned, planned_catalog = store.head().token, store.read_catalog()
    publish(open_one(), store.url, tmp_path, RIVAL)
    files = S3Raw(url, bucket, "state").files()
    with pytest.raises(StoreConflict):
        publish(open_one(), store.url, tmp_path, NEXT, parent=first, token=planned, old_catalog=planned_catalog)
    assert S3Raw(url, bucket, "state").files() == files
    assert not any(key.startswith(".ocb-probe-") for key in S3Raw(url, bucket, "state").files())


def test_a_pointer_write_whose_answer_is_lost_is_recognised_as_ours(s3, tmp_path):
    open_one, url, _, waits = s3
    store = open_one(retry_seconds=10.0)
    proxy(url, "/__faults", "POST", {"status": 503, "code": "SlowDown", "after": True, "method": "PUT",
                                     "match": POINTER, "times": 1})
    publish(store, store.url, tmp_path, SNAP, token=None, old_catalog=None)
    assert waits == [1.0] and open_one().head().snapshot_id == SNAP


def test_removal_deletes_in_batches_of_delete_objects(s3, tmp_path, monkeypatch):
    from ocb.stores import s3 as s3_module

    open_one, url, bucket, _ = s3
    store = open_one()
    publish(store, store.url, tmp_path, SNAP, token=None, old_catalog=None)
    publish(store, store.url, tmp_path, NEXT)
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 1)
    before = proxy(url, "/__stats")["by_method"].get("POST", 0)
    stats = store.remove(sorted(snapshot_files(SNAP)), store.head().token, catalog.without(store.read_catalog(), [SNAP]))
    assert stats["files_removed"] == 2 and proxy(url, "/__stats")["by_method"]["POST"] - before == 2
    assert set(S3Raw(url, bucket, "state").files()) == {POINTER, catalog.NAME} | snapshot_files(NEXT)


def test_the_hugging_face_gateway_settings_work_end_to_end(s3, tmp_path):
    """What the hf preset sets (path-style, no trailing checksums) against a real S3 server."""
    open_one, url, bucket, _ = s3
    store = open_one(s3_checksums="when_required")
    upload, meta, _, _ = publish(store, store.url, tmp_path, SNAP, token=None, old_catalog=None)
    again = open_one(s3_checksums="when_required")
    assert again.read_meta("backups", SNAP) == meta
    fetched = again.fetch_volume("backups", upload.name, upload.size, upload.sha256, str(tmp_path / "dl"))
    assert Path(fetched).read_bytes() == Path(upload.path).read_bytes()


# -- a volume the local store takes by a rename is written back early -------------------------

def test_early_writeback_writes_what_it_is_given_and_starts_the_disk_on_it(tmp_path, monkeypatch):
    from ocb import fsutil
    started = []
    real = fsutil.start_writeback

    def noted(fd, offset, length):
        started.append((offset, length))
        return real(fd, offset, length)
    monkeypatch.setattr(fsutil, "start_writeback", noted)
    monkeypatch.setattr(fsutil.EarlyWriteback, "STEP", 4096)
    path = tmp_path / "volume"
    pieces = [os.urandom(n) for n in (1000, 5000, 3000, 70, 9000)]
    with open(path, "xb") as opened:
        out = fsutil.EarlyWriteback(opened)
        for piece in pieces:
            assert out.write(piece) == len(piece)
        out.flush()
    assert path.read_bytes() == b"".join(pieces)
    # each range starts where the last one ended, once a step's worth was written
    assert started == [(0, 6000), (6000, 12070)]
    if sys.platform.startswith("linux"):
        with open(path, "rb") as handle:
            assert real(handle.fileno(), 0, 10)  # the kernel takes the hint


def test_the_local_store_takes_by_rename_only_what_is_on_its_filesystem(tmp_path):
    store = LocalStore(f"file://{tmp_path / 'store'}")
    os.makedirs(store.root)
    (tmp_path / "work").mkdir()
    assert store.takes_by_rename(str(tmp_path / "work" / "a.tar.zst"))
    assert not store.takes_by_rename("/proc/self/a.tar.zst")  # another filesystem
    # a store the first push will make: where its parent is
    assert LocalStore(f"file://{tmp_path / 'new' / 'store'}").takes_by_rename(str(tmp_path / "work" / "a"))
    assert not LocalStore(f"file://{tmp_path / 'new' / 'store'}").takes_by_rename("/proc/self/a")
