"""The local-folder store (`file:///path`): the embedded default for demos, tests and mounts.

Atomicity comes from the filesystem: every file is written through fsutil.atomic_write (a
temporary name, fsync, rename, fsync the folder), under an flock on the store; volumes and
meta land first, then the catalog, then the pointer is renamed into place, so a crash at any
moment leaves the previous snapshot as the latest. (A crash between the catalog and the
pointer leaves a whole snapshot, meta and volumes fsynced, that the catalog lists and the
pointer does not: restorable by id, like a rival's diverged snapshot; nothing is lost.)
Volumes are read in place. A volume in a work dir on the store's own filesystem is renamed
into the store rather than copied (its bytes are written once, as restic writes its packs
straight into its repository); on another filesystem it is copied. The head token is the
pointer's snapshot id.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .. import retry
from ..catalog import NAME as CATALOG
from ..catalog import encode as encode_catalog
from ..catalog import parse as parse_catalog
from ..errors import (
    ChainBroken,
    ChecksumMismatch,
    RuntimeFailure,
    StoreConflict,
    StoreLocked,
    StoreMissing,
    UsageError,
    io_reason,
)
from ..fsutil import TMP_MARK, atomic_write, fsync_dir, temp_name, write_bytes
from ..snapshot import META_SUFFIX, POINTER, encode_record, meta_path, parse_pointer, parse_record
from .base import (
    Access,
    Head,
    Store,
    Upload,
    check_new_catalog,
    check_removable,
    check_removal_catalog,
    file_sha256,
    verify_volume,
)

if TYPE_CHECKING:
    from ..config import Settings, StoreSecrets

SCHEME = "file://"
LOCK_NAME = ".ocb-store.lock"
COPY_CHUNK = 4 * 1024 * 1024
LOCK_WAIT_SECONDS = 60.0
LOCK_POLL_SECONDS = 0.1
FILE_MODE = 0o666  # as open() would: the umask decides, as for any file the user writes


def _remove_quietly(path: str) -> None:
    """Best effort, after a failure that is being reported already."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _io_failure(action: str, path: str, exc: OSError) -> RuntimeFailure:
    return RuntimeFailure(f"store: cannot {action} {path}: {io_reason(exc)}")


class LocalStore(Store):
    scheme = "file"
    forms = ("file:///path", "a path (/abs, ./rel, ~/dir)")
    bare = re.compile(r"^(/|\./|\.\./|~)|^\.\.?$")

    @classmethod
    def canonical(cls, raw: str, var: str) -> str:
        if raw.startswith(SCHEME):
            path = raw[len(SCHEME):]
            if not path.startswith("/"):
                raise UsageError(f"{var}={raw!r}: a file store URL needs an absolute path (file:///path)")
            return SCHEME + os.path.normpath(path)
        if cls.bare.search(raw):
            return SCHEME + os.path.abspath(os.path.expanduser(raw))
        raise UsageError(f"{var}={raw!r}: expected file:///path or a path (/abs, ./rel, ~/dir)")

    def __init__(self, url: str, settings: Settings | None = None, secrets: StoreSecrets | None = None) -> None:
        self.url = self.canonical(url, "store URL")
        self.root = self.url[len(SCHEME):]

    def _path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def takes_by_rename(self, path: str) -> bool:
        """Whether a volume written at `path` (a work-dir file) will land here by a rename,
        the store's folder being on its filesystem (then it is synced where it lies, and its
        writer may start writing it back early: fsutil.EarlyWriteback). A hint: _land_volume
        decides by trying. A store folder not made yet (the first push makes it) is where
        its nearest existing parent is."""
        folder = self.root
        while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        try:
            return os.stat(os.path.dirname(path) or ".").st_dev == os.stat(folder).st_dev
        except OSError:
            return False

    def _read(self, relative: str) -> bytes | None:
        """A store file's bytes, None when it is not there."""
        try:
            with open(self._path(relative), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _io_failure("read", self._path(relative), exc) from None

    def _missing(self) -> StoreMissing:
        return StoreMissing(f"store {self.url}: the folder {self.root} does not exist")

    def exists(self) -> bool:
        return os.path.isdir(self.root)

    def head(self) -> Head:
        raw = self._read(POINTER)
        if raw is None:
            return Head(None, None)
        pointer = parse_pointer(raw, f"{self.url}/{POINTER}")
        return Head(pointer, pointer.get("id"))

    def read_meta(self, prefix: str, snapshot_id: str) -> dict:
        raw = self._read(meta_path(prefix, snapshot_id))
        if raw is None:
            if not self.exists():
                raise self._missing()
            raise ChainBroken(f"snapshot {snapshot_id} has no meta in {self.url}")
        return parse_record(raw, f"{self.url}/{meta_path(prefix, snapshot_id)}")

    def read_catalog(self) -> dict | None:
        raw = self._read(CATALOG)
        return None if raw is None else parse_catalog(raw, f"{self.url}/{CATALOG}")

    def list_files(self, prefix: str) -> dict[str, int]:
        try:
            with os.scandir(self._path(prefix)) as listing:
                return {e.name: e.stat(follow_symlinks=False).st_size for e in listing if e.is_file(follow_symlinks=False)}
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise _io_failure("list", self._path(prefix), exc) from None

    def access(self) -> Access:
        folder = self.root
        while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)  # a first backup creates the store folder here
        writable = os.access(folder, os.W_OK | os.X_OK)
        where = "the store folder" if folder == self.root else f"{folder}, where the store folder is to be made,"
        return Access(self.exists(), writable, None, None,
                      f"{where} is {'' if writable else 'not '}writable by this user")

    def read_start(self, prefix: str, name: str, length: int) -> bytes | None:
        try:
            with open(self._path(f"{prefix}/{name}"), "rb") as handle:
                return handle.read(length)
        except FileNotFoundError:
            raise ChainBroken(f"volume {name} is missing from {self.url}") from None
        except OSError as exc:
            raise _io_failure("read", self._path(f"{prefix}/{name}"), exc) from None

    def read_file(self, path: str) -> bytes | None:
        return self._read(path)

    def fetch_file(self, path: str, dest_dir: str) -> str:
        if not os.path.isfile(self._path(path)):
            if not self.exists():
                raise self._missing()
            raise ChainBroken(f"{path} is missing from {self.url}")
        return self._path(path)  # read in place, as volumes are

    def fetch_volume(self, prefix: str, name: str, size: int, sha256: str, dest_dir: str) -> str:
        try:
            # read in place: its sha256 is checked as it is read (Store.fetch_volume)
            return verify_volume(self._path(f"{prefix}/{name}"), name, size, sha256, "in the store", hashed=False)
        except FileNotFoundError:
            if not self.exists():
                raise self._missing() from None
            raise ChainBroken(f"volume {name} is missing from {self.url}") from None
        except OSError as exc:
            raise _io_failure("read", self._path(f"{prefix}/{name}"), exc) from None

    # -- writing: under the store lock -------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        path = self._path(LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _io_failure("write to", self.root, exc) from None
        try:
            try:
                retry.call(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),
                           retry.Policy(LOCK_WAIT_SECONDS, first_wait=LOCK_POLL_SECONDS, max_wait=1.0),
                           transient=lambda exc: isinstance(exc, BlockingIOError), catch=(BlockingIOError,))
            except BlockingIOError:
                raise StoreLocked(f"store {self.url} is locked by another writer") from None
            yield
        finally:
            os.close(fd)

    def _check_head(self, expect_token: str | None) -> None:
        current = self.head()
        if current.token != expect_token:
            raise StoreConflict(f"the store's latest snapshot is {current.token!r}, this document was "
                                f"planned against {expect_token!r}: re-plan")

    def _write(self, path: str, data: bytes) -> None:
        try:
            write_bytes(path, data, FILE_MODE)
        except OSError as exc:
            raise _io_failure("write", path, exc) from None

    def _land_volume(self, upload: Upload, target: str) -> bool:
        """The volume in the store whole or not at all: moved there when the store's
        filesystem holds it (True; the work dir no longer does), else copied. Its sha256 is
        checked on what lands, before the final rename, so a volume that changed in the work
        dir since ocb-split hashed it never lands under a meta that would promise otherwise."""
        moving = temp_name(target)
        try:
            # only a plain file that nothing else links to is moved: never a symlink (it would
            # land as one), never an inode shared with another name
            source = os.lstat(upload.path)
            if not stat.S_ISREG(source.st_mode) or source.st_nlink != 1:
                raise OSError(errno.EPERM, "not a file of its own")
            # a rename takes it out of the work dir before it is hashed: what is checked is
            # what lands. Any failure (EXDEV: another filesystem) leaves it where it was
            os.rename(upload.path, moving)
        except OSError:
            self._copy_volume(upload, target)
            return False
        try:
            with open(moving, "rb") as landed:
                digest = hashlib.sha256()
                while chunk := landed.read(COPY_CHUNK):
                    digest.update(chunk)
                # the work dir's files are never synced (scratch): the store's copy must be
                os.fsync(landed.fileno())
            if digest.hexdigest() != upload.sha256:
                raise ChecksumMismatch(f"volume {upload.name}: {upload.path} no longer hashes to the "
                                       "sha256 recorded by ocb-split: run the backup pipe again")
            os.replace(moving, target)
        except BaseException as exc:
            self._move_back(moving, upload.path)
            if isinstance(exc, OSError):
                raise _io_failure("write", target, exc) from None
            raise
        try:
            fsync_dir(os.path.dirname(target))
        except OSError as exc:
            self._move_back(target, upload.path)
            raise _io_failure("write", target, exc) from None
        return True

    @staticmethod
    def _move_back(path: str, origin: str) -> None:
        """A moved volume back in the work dir, as ocb-split left it (so the push can be run
        again from the same document); where that fails, out of the store at least."""
        try:
            os.rename(path, origin)
        except OSError:
            _remove_quietly(path)

    def _copy_volume(self, upload: Upload, target: str) -> None:
        try:
            with atomic_write(target, FILE_MODE) as out, open(upload.path, "rb") as source:
                digest = hashlib.sha256()
                while chunk := source.read(COPY_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                if digest.hexdigest() != upload.sha256:
                    raise ChecksumMismatch(f"volume {upload.name}: {upload.path} no longer hashes to the "
                                           "sha256 recorded by ocb-split: run the backup pipe again")
        except OSError as exc:
            raise _io_failure("write", target, exc) from None

    def _sweep_leftovers(self, folder: str) -> None:
        """Temporary files of a writer that died; safe to remove while we hold the lock."""
        for name in os.listdir(folder):
            if name.startswith(TMP_MARK):
                os.unlink(os.path.join(folder, name))

    def publish(self, prefix: str, snapshot_id: str, uploads: list[Upload], meta: dict,
                pointer: dict, catalog: dict, expect_token: str | None) -> dict:
        folder = self._path(prefix)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise _io_failure("create", folder, exc) from None
        if not os.access(self.root, os.W_OK) or not os.access(folder, os.W_OK):
            raise RuntimeFailure(f"store: {self.root} is not writable")
        copied = reused = 0
        with self._locked():
            self._check_head(expect_token)
            meta_file = self._path(meta_path(prefix, snapshot_id))
            old_raw = self._read(CATALOG)
            old = None if old_raw is None else parse_catalog(old_raw, f"{self.url}/{CATALOG}")
            if os.path.exists(meta_file):
                raise StoreConflict(f"snapshot {snapshot_id} already exists in {self.url}: re-plan")
            check_new_catalog(catalog, snapshot_id, old, self.url)
            self._sweep_leftovers(self.root)
            self._sweep_leftovers(folder)
            # what this call added, taken back if the pointer never moves: each path, and the
            # work-dir path of a volume moved in (it goes back there)
            landed: list[tuple[str, str | None]] = []
            catalog_written = False
            try:
                for upload in uploads:
                    target = os.path.join(folder, upload.name)
                    # a push retried after a crash keeps what fully arrived before
                    if (os.path.exists(target) and os.path.getsize(target) == upload.size
                            and file_sha256(target) == upload.sha256):
                        reused += upload.size
                        continue
                    moved = self._land_volume(upload, target)
                    landed.append((target, upload.path if moved else None))
                    copied += upload.size
                self._write(meta_file, encode_record(meta))
                landed.append((meta_file, None))
                self._write(self._path(CATALOG), encode_catalog(catalog))
                catalog_written = True
                self._write(self._path(POINTER), encode_record(pointer))
            except (OSError, ChecksumMismatch, RuntimeFailure):
                # a failed push (a full disk, a volume changed under us) leaves the store as it
                # was: volumes no meta lists would only fill the disk further, and a meta without
                # the pointer would show up in --list as a snapshot nobody published
                if catalog_written:
                    self._put_back_catalog(old_raw)
                for path, origin in reversed(landed):
                    if origin is not None:
                        self._move_back(path, origin)
                    else:
                        _remove_quietly(path)
                raise
        return {"bytes_uploaded": copied, "bytes_reused": reused, "commits": 0}

    def _put_back_catalog(self, old_raw: bytes | None) -> None:
        """The catalog as it was before a publish that failed after writing it."""
        try:
            if old_raw is None:
                os.unlink(self._path(CATALOG))
            else:
                write_bytes(self._path(CATALOG), old_raw, FILE_MODE)
        except OSError:
            pass  # best effort: the pointer did not move, the snapshot is not the latest either way

    def remove(self, paths: list[str], expect_token: str | None, catalog: dict | None) -> dict:
        check_removable(paths)
        if not self.exists():
            raise self._missing()
        with self._locked():
            self._check_head(expect_token)
            old_raw = self._read(CATALOG)
            old = None if old_raw is None else parse_catalog(old_raw, f"{self.url}/{CATALOG}")
            check_removal_catalog(catalog, old, paths, self.url)
            present: list[tuple[str, int]] = []
            for relative in paths:
                try:
                    info = os.lstat(self._path(relative))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _io_failure("read", self._path(relative), exc) from None
                if not stat.S_ISREG(info.st_mode):
                    raise ValueError(f"{relative} in {self.url} is not a file: a removal deletes files only")
                present.append((relative, info.st_size))
            folders = sorted({os.path.dirname(self._path(p)) for p, _ in present})
            for folder in folders:
                if not os.access(folder, os.W_OK):
                    raise RuntimeFailure(f"store: {folder} is not writable")
            if catalog is not None:
                # first: a crash after this leaves files no catalog lists (space, not lies);
                # the other order would leave the catalog listing snapshots that are gone
                self._write(self._path(CATALOG), encode_catalog(catalog))
            # metas before volumes: a meta never promises volumes that are already gone
            for relative, _ in sorted(present, key=lambda item: not item[0].endswith(META_SUFFIX)):
                try:
                    os.unlink(self._path(relative))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _io_failure("remove", self._path(relative), exc) from None
            try:
                for folder in folders:
                    fsync_dir(folder)
            except OSError as exc:
                raise _io_failure("sync", self.root, exc) from None
        return {"files_removed": len(present), "bytes_removed": sum(size for _, size in present), "commits": 0}
