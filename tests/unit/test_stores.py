"""The store contract: every backend behaves the same (the local folder and the test Hub).

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
    StoreConflict,
    StoreMissing,
    UsageError,
)
from ocb.snapshot import POINTER, build_pointer, meta_path, parse_record, with_digest
from ocb.stores import canonical_url, open_store
from ocb.stores.base import Upload
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


@dataclasses.dataclass
class Backend:
    url: str
    raw: LocalRaw | HubRaw
    settings: Settings
    secrets: StoreSecrets

    def open(self):
        """Another store object on the same URL: another writer, or the next command."""
        return open_store(self.url, self.settings, self.secrets)

    def damage(self, path: str) -> None:
        data = bytearray(self.raw.read(path))
        data[len(data) // 2] ^= 0x01  # always a different byte
        self.raw.write(path, bytes(data))


@pytest.fixture(params=["local", "hf"])
def backend(request, tmp_path) -> Backend:
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


def test_fetch_detects_damage_and_absence(backend, store, tmp_path):
    upload, _, _, _ = publish(store, backend.url, tmp_path, SNAP, token=None, old_catalog=None)
    work = str(tmp_path / "work")
    with pytest.raises(ChecksumMismatch):
        store.fetch_volume("backups", upload.name, upload.size, "0" * 64, work)
    with pytest.raises(ChecksumMismatch):
        store.fetch_volume("backups", upload.name, upload.size + 1, upload.sha256, work)
    with pytest.raises(ChainBroken):
        store.fetch_volume("backups", f"{NEXT}.tar.zst", 1, "0" * 64, work)
    with pytest.raises(ChainBroken):
        store.read_meta("backups", NEXT)
    backend.damage(f"backups/{upload.name}")
    with pytest.raises(ChecksumMismatch):
        backend.open().fetch_volume("backups", upload.name, upload.size, upload.sha256, str(tmp_path / "work2"))


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
    ("s3://bucket/prefix", ["unknown store scheme s3://", "file:///path", "hf://datasets/OWNER/NAME"]),
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
              "canonical_url('hf://datasets/a/b', 'X'); canonical_url('/tmp', 'X'); "
              "print('huggingface_hub' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("url", ["s3://bucket/x", "file://relative", "hf://owner/name", "file:///a/../b", "/plain"])
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
    assert routes == {"resolve_get": 1, "preupload": 1, "commit": 1}, routes  # the catalog, then the commit


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
    env.update({"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1"})
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
