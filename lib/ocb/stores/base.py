"""The store interface every backend implements, and the layout all of them share.

Layout (DESIGN.md): `latest-backup.json` at the root (the pointer, legacy field names),
`<prefix>/<id>.meta.json` per snapshot, `<prefix>/<volume>` for the volumes. A snapshot
becomes visible only when its meta and the pointer land, together with its volumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import ChecksumMismatch

POINTER = "latest-backup.json"
META_SUFFIX = ".meta.json"
SNAPSHOT_ID = re.compile(r"^openclaw-backup-\d{8}-\d{6}(-\d+)?$")
READ_CHUNK = 4 * 1024 * 1024
VOLUME_NAME = re.compile(r"^openclaw-backup-\d{8}-\d{6}(-\d+)?\.[a-z0-9.]+(\.part-\d{4})?$")


@dataclass(frozen=True)
class Head:
    """What the store's latest snapshot is right now; `token` is what a push must still find."""

    pointer: dict | None
    token: str | None  # the backend's notion of "unchanged" (hf: commit id; local: snapshot id)

    @property
    def snapshot_id(self) -> str | None:
        return None if self.pointer is None else self.pointer.get("id")


@dataclass(frozen=True)
class Upload:
    name: str  # volume file name inside the prefix
    path: str  # local file
    size: int
    sha256: str


def meta_path(prefix: str, snapshot_id: str) -> str:
    return f"{prefix}/{snapshot_id}{META_SUFFIX}"


RECORD_SUM = "record_sha256"


def _record_digest(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != RECORD_SUM}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def seal_record(record: dict) -> dict:
    """The pointer or a meta with the sha256 of its own canonical JSON, so that one flipped
    byte anywhere in it (not only in the fields a restore reads) is noticed."""
    return {**record, RECORD_SUM: _record_digest(record)}


def parse_json(raw: bytes, what: str) -> dict:
    """A pointer or meta read from a store, checked against its record_sha256."""
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ChecksumMismatch(f"{what} is not valid JSON (damaged?)") from None
    if not isinstance(value, dict):
        raise ChecksumMismatch(f"{what} is not a JSON object (damaged?)")
    if value.get(RECORD_SUM) != _record_digest(value):
        raise ChecksumMismatch(f"{what} is damaged: its content does not match its {RECORD_SUM}")
    return value


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_volume(path: str, name: str, size: int, sha256: str, where: str) -> str:
    """`path` if it holds exactly the recorded volume, else ChecksumMismatch naming it."""
    actual = os.path.getsize(path)
    if actual != size:
        raise ChecksumMismatch(f"volume {name}: {actual} bytes {where}, the meta says {size}")
    if file_sha256(path) != sha256:
        raise ChecksumMismatch(f"volume {name}: sha256 differs from the meta (damaged in the store)")
    return path


def encode_json(value: dict) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


class Store(ABC):
    """A place that holds snapshots. Methods raise ocb errors, never backend exceptions."""

    url: str

    @abstractmethod
    def exists(self) -> bool:
        """Whether the store is there at all (a missing restore source falls back)."""

    @abstractmethod
    def head(self) -> Head:
        """The pointer (or None for an empty store) and the token a push must match."""

    @abstractmethod
    def read_meta(self, prefix: str, snapshot_id: str) -> dict:
        """One snapshot's meta; ChainBroken when it does not exist."""

    @abstractmethod
    def list_snapshot_ids(self, prefix: str) -> list[str]:
        """Ids of every snapshot meta in the store, from one listing (metas are not read)."""

    @abstractmethod
    def fetch_volume(self, prefix: str, name: str, size: int, sha256: str, dest_dir: str) -> str:
        """A local path holding the volume, verified against size and sha256."""

    @abstractmethod
    def publish(self, prefix: str, snapshot_id: str, uploads: list[Upload], meta: dict,
                pointer: dict, expect_token: str | None) -> dict:
        """Make the snapshot visible atomically, if the head is still `expect_token`.

        StoreConflict (exit 5) when another writer moved the head; nothing of ours is left
        visible then. Returns stats of what was transferred.
        """
