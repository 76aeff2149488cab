"""The store interface every backend implements, and the layout all of them share.

Layout (DESIGN.md): `latest-backup.json` at the root (the pointer, legacy field names) with
`ocb-catalog.json` beside it (catalog.py), `<prefix>/<id>.meta.json` per snapshot,
`<prefix>/<volume>` for the volumes. A snapshot becomes visible only when its meta, the
pointer and the catalog land, together with its volumes.
"""

from __future__ import annotations

import hashlib
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
import datetime as dt
from typing import ClassVar

from .. import catalog
from ..errors import ChecksumMismatch, StoreConflict
from ..fsutil import TMP_MARK
from ..snapshot import POINTER, RECORD_SUM, ids_of_meta_names

READ_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Head:
    """What the store's latest snapshot is right now; `token` is what a push must still find."""

    pointer: dict | None
    token: str | None  # the backend's notion of "unchanged" (hf: commit id; local: snapshot id)

    @property
    def snapshot_id(self) -> str | None:
        return None if self.pointer is None else self.pointer.get("id")

    @property
    def legacy(self) -> bool:
        """The pointer is the legacy script's (snapshot.parse_pointer returns those as read;
        an ocb pointer always carries its record_sha256): no ocb snapshot is the latest."""
        return self.pointer is not None and RECORD_SUM not in self.pointer


@dataclass(frozen=True)
class Upload:
    name: str  # volume file name inside the prefix
    path: str  # local file
    size: int
    sha256: str


@dataclass(frozen=True)
class Access:
    """What the credentials may do with a store, as far as the backend tells without writing
    (ocb-doctor). None where the backend cannot tell or the notion does not apply."""

    exists: bool
    can_write: bool | None
    private: bool | None  # of a store that does not exist yet: what its first backup makes it
    who: str | None  # the account the credentials belong to
    detail: str  # what decided can_write, for people


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_volume(path: str, name: str, size: int, sha256: str, where: str, hashed: bool = True) -> str:
    """`path` if it holds exactly the recorded volume, else ChecksumMismatch naming it
    (`hashed=False`: its size only, for a reader that hashes it as it reads)."""
    actual = os.path.getsize(path)
    if actual != size:
        raise ChecksumMismatch(f"volume {name}: {actual} bytes {where}, the meta says {size}")
    if hashed and file_sha256(path) != sha256:
        raise ChecksumMismatch(damaged_volume(name))
    return path


def damaged_volume(name: str) -> str:
    return f"volume {name}: sha256 differs from the meta (damaged in the store)"


def check_removable(paths: list[str]) -> list[str]:
    """Store-relative paths of snapshot files, safe to delete: no pointer, no catalog, nothing
    outside the store, no duplicates (a caller's bug, never the store's to guess around)."""
    for path in paths:
        parts = path.split("/")
        if (not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts)
                or path in (POINTER, catalog.NAME) or parts[-1].startswith(TMP_MARK)):
            raise ValueError(f"not a snapshot file the store may remove: {path!r}")
    if len(set(paths)) != len(paths):
        raise ValueError("a path to remove is listed twice")
    return paths


def check_new_catalog(new: dict, snapshot_id: str, old: dict | None, where: str) -> dict:
    """The catalog a publish writes, against the one the store holds at the expected head.

    It must be well formed and be `old` with this snapshot appended (catalog.append). A
    snapshot `old` lists exists already: StoreConflict, nothing is overwritten. Another
    `old` than the caller appended to means the store moved: StoreConflict, re-plan.
    """
    catalog.check(new, "the catalog to publish")
    listed = catalog.ids(new)
    if not listed or listed[-1] != snapshot_id:
        raise ValueError(f"the catalog to publish does not end with {snapshot_id} (use catalog.append)")
    if snapshot_id in catalog.ids(old):
        raise StoreConflict(f"snapshot {snapshot_id} already exists in {where}: re-plan")
    if old is not None and new["snapshots"][:-1] != old["snapshots"]:
        raise StoreConflict(f"the catalog of {where} is not the one this push appended to: re-plan")
    return new


def check_removal_catalog(new: dict | None, old: dict | None, paths: list[str], where: str) -> None:
    """The catalog a removal writes: `old` less some snapshots (catalog.without), none of
    which keeps a file that `paths` deletes. A store with a catalog needs one."""
    if new is None:
        if old is not None:
            raise ValueError(f"{where} has a catalog: a removal must pass the catalog without what it removes")
        return
    catalog.check(new, "the catalog to write")
    if old is not None:
        kept = iter(old["snapshots"])
        if not all(any(entry == candidate for candidate in kept) for entry in new["snapshots"]):
            raise StoreConflict(f"the catalog of {where} is not the one this removal started from: re-plan")
    for snapshot_id in catalog.ids(new):
        for path in paths:
            if path.rsplit("/", 1)[-1].startswith(snapshot_id + "."):
                raise ValueError(f"{path} belongs to {snapshot_id}, which the new catalog keeps")


class Store(ABC):
    """A place that holds snapshots. Methods raise ocb errors, never backend exceptions.

    A backend also parses its own URLs: `scheme` and `canonical(raw, var)`; the registry in
    __init__.py looks it up by scheme. `open_store` builds it from the settings and secrets.
    """

    url: str
    scheme: ClassVar[str]
    forms: ClassVar[tuple[str, ...]]  # the URL forms `canonical` accepts, for people
    bare: ClassVar[re.Pattern[str] | None] = None  # what it claims of values without "scheme://"
    # entries (files and folders) one folder may hold, where the backend has a hard limit: a
    # push that would pass it is refused before uploading anything (the Hub: 10,000)
    folder_limit: ClassVar[int | None] = None

    @classmethod
    @abstractmethod
    def canonical(cls, raw: str, var: str) -> str:
        """`raw` (a URL or a legacy short form of this backend) in canonical form; UsageError
        naming `var` and what is wrong."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the store is there at all (a missing restore source falls back)."""

    @abstractmethod
    def head(self) -> Head:
        """The pointer (or None for an empty or missing store) and the token a push must match."""

    @abstractmethod
    def read_meta(self, prefix: str, snapshot_id: str) -> dict:
        """One snapshot's meta, its record_sha256 checked; ChainBroken when it does not exist,
        StoreMissing when the store does not."""

    @abstractmethod
    def read_catalog(self) -> dict | None:
        """The catalog (one read), checked by catalog.parse; None when the store has none
        (a store written before catalogs, an empty or a missing store)."""

    def list_snapshot_ids(self, prefix: str) -> list[str]:
        """Ids of every snapshot meta in the store, from one listing (metas are not read),
        in the order they were taken; [] for a missing store."""
        return ids_of_meta_names(list(self.list_files(prefix)))

    @abstractmethod
    def list_files(self, prefix: str) -> dict[str, int]:
        """{name: size} of every file directly under `prefix` (volumes and metas), from one
        listing, nothing downloaded; {} for a missing store or prefix."""

    def list_file_digests(self, prefix: str) -> dict[str, tuple[int, str | None]]:
        """{name: (size, sha256 or None)} of every file directly under `prefix`, from one
        listing, nothing downloaded: the sha256 where the backend records one for a file (the
        Hub, for LFS files), else None. ocb-check compares it with the meta's."""
        return {name: (size, None) for name, size in self.list_files(prefix).items()}

    def read_start(self, prefix: str, name: str, length: int) -> bytes | None:
        """The first `length` bytes of a store file (fewer when it is shorter), without
        downloading the rest; None where the backend cannot read part of a file. ocb-doctor
        opens a sealed volume's header with it to check the password."""
        return None

    def access(self) -> Access:
        """Whether the store exists, and whether these credentials may write it (ocb-doctor)."""
        return Access(self.exists(), None, None, None, "this store cannot tell what its credentials allow")

    # what the backend allows (ocb-doctor reports the store's distance to each); none known here
    limits: ClassVar[dict[str, int]] = {}

    @abstractmethod
    def read_file(self, path: str) -> bytes | None:
        """The bytes of the small store file at store-relative `path` (a legacy meta), unchecked;
        None when the store lacks it. Not for volumes: fetch_file streams those."""

    @abstractmethod
    def fetch_file(self, path: str, dest_dir: str) -> str:
        """A local path holding the store file at `path` (a legacy volume, whose meta records
        no sha256 of its own: the caller checks it), downloaded into `dest_dir` if need be;
        ChainBroken when the store lacks it."""

    @abstractmethod
    def fetch_volume(self, prefix: str, name: str, size: int, sha256: str, dest_dir: str) -> str:
        """A local path holding the volume, of the recorded size. A store that downloads it
        verifies its sha256 too (a bad download is fetched again); a folder store hands its own
        file, whose sha256 the reader checks as it reads (restore.VolumeStream): hashing it
        here first was a second pass over every byte before the restore could start."""

    @abstractmethod
    def publish(self, prefix: str, snapshot_id: str, uploads: list[Upload], meta: dict,
                pointer: dict, catalog: dict, expect_token: str | None) -> dict:
        """Make the snapshot visible atomically, if the head is still `expect_token`.

        Volumes, meta, pointer and `catalog` (the whole new catalog: catalog.append(old, meta))
        land in one atomic step. StoreConflict (exit 5) when another writer moved the head or
        the snapshot exists already; nothing of ours is left visible then. Returns stats of
        what was transferred, with `commits`: how many commits it made (0 where the backend
        has none).
        """

    @abstractmethod
    def remove(self, paths: list[str], expect_token: str | None, catalog: dict | None) -> dict:
        """Delete store-relative `paths` (and write `catalog`, the catalog without them, when
        given) as one atomic, conflict-checked step, if the head is still `expect_token`.

        StoreConflict and nothing deleted when the head moved. Paths the store does not hold
        are passed over. Returns {files_removed, bytes_removed, commits}.
        """

    def reclaim(self, candidates: list[str], older_than: dt.datetime) -> dict:
        """Free the storage that removed files still hold, where deleting a file frees nothing
        by itself (the Hub keeps LFS objects until they are deleted for good).

        Deletes for good the stored objects that no file at the head references and that
        either are among `candidates` (the objects of files a removal just deleted, as it
        reported them in `objects`) or were stored before `older_than` (left by writers that
        lost a race or died; a push still under way stored its objects later). Returns
        {objects_reclaimed, bytes_reclaimed}; a backend whose deletes free storage at once
        has nothing to do.
        """
        del candidates, older_than
        return {"objects_reclaimed": 0, "bytes_reclaimed": 0}

    def squash(self, limit: int) -> dict:
        """Bound the history of a backend that keeps one (the Hub's commits): squash it into
        one commit when it holds more than `limit` commits (0: never). The head changes, so
        a push planned before it is a conflict (exit 5, re-plan). Returns {commits_squashed}
        (0 when nothing was done, or where there is no history)."""
        del limit
        return {"commits_squashed": 0}
