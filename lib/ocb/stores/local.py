"""The local-folder store (`file:///path`): the embedded default for demos, tests and mounts.

Atomicity comes from the filesystem: volumes and meta are written under temporary names,
fsynced and renamed; the pointer is renamed into place last, under an flock on the store, so
a crash at any moment leaves the previous snapshot as the latest. Volumes are read in place.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from contextlib import contextmanager
from typing import Iterator

from ..errors import ChainBroken, ChecksumMismatch, RuntimeFailure, StoreConflict, StoreLocked, io_reason
from .base import (META_SUFFIX, POINTER, SNAPSHOT_ID, Head, Store, Upload, encode_json, file_sha256,
                   meta_path, parse_json, verify_volume)

LOCK_NAME = ".ocb-store.lock"
TMP_MARK = ".ocb-tmp-"
COPY_CHUNK = 4 * 1024 * 1024
LOCK_WAIT_SECONDS = 60


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _io_failure(action: str, path: str, exc: OSError) -> RuntimeFailure:
    return RuntimeFailure(f"store: cannot {action} {path}: {io_reason(exc)}")


class LocalStore(Store):
    def __init__(self, url: str) -> None:
        self.url = url
        self.root = url[len("file://"):]

    def _path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def exists(self) -> bool:
        return os.path.isdir(self.root)

    def head(self) -> Head:
        try:
            with open(self._path(POINTER), "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return Head(None, None)
        except OSError as exc:
            raise _io_failure("read", self._path(POINTER), exc) from None
        pointer = parse_json(raw, f"{self.url}/{POINTER}")
        return Head(pointer, pointer.get("id"))

    def read_meta(self, prefix: str, snapshot_id: str) -> dict:
        path = self._path(meta_path(prefix, snapshot_id))
        try:
            with open(path, "rb") as handle:
                return parse_json(handle.read(), f"{self.url}/{meta_path(prefix, snapshot_id)}")
        except FileNotFoundError:
            raise ChainBroken(f"snapshot {snapshot_id} has no meta in {self.url}") from None
        except OSError as exc:
            raise _io_failure("read", path, exc) from None

    def list_snapshot_ids(self, prefix: str) -> list[str]:
        try:
            names = os.listdir(self._path(prefix))
        except FileNotFoundError:
            return []
        ids = [n[: -len(META_SUFFIX)] for n in names if n.endswith(META_SUFFIX)]
        return sorted(i for i in ids if SNAPSHOT_ID.match(i))

    def fetch_volume(self, prefix: str, name: str, size: int, sha256: str, dest_dir: str) -> str:
        try:
            return verify_volume(self._path(f"{prefix}/{name}"), name, size, sha256, "in the store")
        except FileNotFoundError:
            raise ChainBroken(f"volume {name} is missing from {self.url}") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        path = self._path(LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _io_failure("write to", self.root, exc) from None
        try:
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreLocked(f"store {self.url} is locked by another writer") from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    def _write_new(self, path: str, data: bytes | None = None, source: str | None = None,
                   sha256: str | None = None) -> None:
        """Write to a temporary name, fsync, rename: readers see all of it or none.

        `sha256`: what `source` must hash to. It is checked on the copy, before the rename, so
        a volume that changed in the work dir since its hash was recorded never lands under a
        meta that would promise otherwise.
        """
        tmp = f"{os.path.dirname(path)}/{TMP_MARK}{os.getpid()}-{os.path.basename(path)}"
        try:
            with open(tmp, "wb") as out:
                if source is not None:
                    digest = hashlib.sha256()
                    with open(source, "rb") as handle:
                        while chunk := handle.read(COPY_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                    if sha256 is not None and digest.hexdigest() != sha256:
                        raise ChecksumMismatch(f"volume {os.path.basename(path)}: {source} no longer hashes to the "
                                               "sha256 recorded by ocb-split: run the backup pipe again")
                else:
                    out.write(data or b"")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except (OSError, ChecksumMismatch) as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, ChecksumMismatch):
                raise
            raise _io_failure("write", path, exc) from None

    def _sweep_leftovers(self, folder: str) -> None:
        """Temporary files of a writer that died; safe to remove while we hold the lock."""
        for name in os.listdir(folder):
            if name.startswith(TMP_MARK):
                os.unlink(os.path.join(folder, name))

    def publish(self, prefix: str, snapshot_id: str, uploads: list[Upload], meta: dict,
                pointer: dict, expect_token: str | None) -> dict:
        folder = self._path(prefix)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise _io_failure("create", folder, exc) from None
        if not os.access(self.root, os.W_OK) or not os.access(folder, os.W_OK):
            raise RuntimeFailure(f"store: {self.root} is not writable")
        copied = reused = 0
        with self._locked():
            current = self.head()
            if current.token != expect_token:
                raise StoreConflict(f"the store's latest snapshot is {current.token!r}, this document was "
                                    f"planned against {expect_token!r}: re-plan")
            meta_file = self._path(meta_path(prefix, snapshot_id))
            if os.path.exists(meta_file):
                raise StoreConflict(f"snapshot {snapshot_id} already exists in {self.url}: re-plan")
            self._sweep_leftovers(self.root)
            self._sweep_leftovers(folder)
            landed: list[str] = []  # what this call added, taken back if the pointer never moves
            try:
                for upload in uploads:
                    target = os.path.join(folder, upload.name)
                    # a push retried after a crash keeps what fully arrived before
                    if os.path.exists(target) and os.path.getsize(target) == upload.size and file_sha256(target) == upload.sha256:
                        reused += upload.size
                        continue
                    self._write_new(target, source=upload.path, sha256=upload.sha256)
                    landed.append(target)
                    copied += upload.size
                _fsync_dir(folder)
                self._write_new(meta_file, encode_json(meta))
                landed.append(meta_file)
                _fsync_dir(folder)
                self._write_new(self._path(POINTER), encode_json(pointer))
                landed = []  # the pointer moved: the snapshot is published, nothing to take back
                _fsync_dir(self.root)
            except (OSError, ChecksumMismatch, RuntimeFailure):
                # a failed push (a full disk, a volume changed under us) leaves the store as it
                # was: volumes no meta lists would only fill the disk further, and a meta without
                # the pointer would show up in --list as a snapshot nobody published
                for path in reversed(landed):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                raise
        return {"bytes_uploaded": copied, "bytes_reused": reused, "commits": 1}
