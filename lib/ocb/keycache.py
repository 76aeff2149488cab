"""The key cache: password keys (the KDF's output) kept in memory-backed storage for the life
of the machine or container, so that the KDF runs once there instead of in every stage of every
backup (ocb-pack seals with the key, ocb-push signs the records with it, a backup every ten
minutes needs it again; Argon2id costs about a second each time).

Owns: where an entry lives (one 0600 file per KDF parameters and salt, in a 0700 folder of
this user's on tmpfs or ramfs: /dev/shm/ocb-keys-<uid> unless OCB_KEY_CACHE names another or
says off), its format, and the refusals: a folder that is not memory-backed (a key must
never reach a disk, a volume or an image layer), not this user's own, or open to others.

Why it is no weaker than the password it came from: an entry is readable only by this user,
in memory, and gone at the next boot or container start; whoever can read it can read the
password from the same user's environment or password file. It is stronger than writing
the key down anywhere persistent, which ocb never does.

An entry is checked against the password it is asked for (an HMAC of the password under the
key), so a changed password never gets the old key; any unreadable, foreign or damaged entry
is passed over and the KDF runs as if there were no cache. Must not: read the environment
(the caller hands in the folder), fail a backup or a restore, or log a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from typing import Any, Callable

from . import fsutil
from .log import log

DEFAULT_PARENT = "/dev/shm"
MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")
CHECK_PREFIX = b"ocb key cache check v1\0"
ENTRY_SUFFIX = ".key"
MAX_ENTRIES = 64  # scanned when no salt is given; a machine holds one per store it restored or sealed
ENTRY_MAX_BYTES = 4096


def default_dir() -> str:
    return os.path.join(DEFAULT_PARENT, f"ocb-keys-{os.getuid()}")


class KeyCache:
    """The entries of one folder. `usable` is False (and every call a no-op) when the folder
    is refused; `refused` then says why."""

    def __init__(self, directory: str, explicit: bool = False) -> None:
        self.directory = directory
        self.refused = self._prepare()
        if self.refused:
            # a folder the user named deserves a word; /dev/shm missing or on disk is only debug
            (log.warning if explicit else log.debug)(f"not caching password keys in {directory}: {self.refused}")

    @property
    def usable(self) -> bool:
        return self.refused is None

    def _prepare(self) -> str | None:
        parent_type = fsutil.filesystem_type(os.path.dirname(os.path.abspath(self.directory)))
        if parent_type not in MEMORY_FILESYSTEMS:
            return f"it is not on a memory filesystem (tmpfs or ramfs), but on {parent_type or 'an unknown one'}"
        try:
            os.mkdir(self.directory, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            return f"cannot create it ({exc.strerror})"
        fstype = fsutil.filesystem_type(self.directory)  # a disk mounted on the folder itself
        if fstype not in MEMORY_FILESYSTEMS:
            return f"it is not on a memory filesystem (tmpfs or ramfs), but on {fstype or 'an unknown one'}"
        try:
            info = os.lstat(self.directory)
        except OSError as exc:
            return f"cannot read it ({exc.strerror})"
        if not stat.S_ISDIR(info.st_mode):
            return "it is not a folder"
        if info.st_uid != os.getuid():
            return f"it belongs to uid {info.st_uid}, not to this user ({os.getuid()})"
        if info.st_mode & 0o077:
            return f"others may use it (mode {stat.S_IMODE(info.st_mode):o}, expected 700)"
        return None

    def get(self, password: bytes, kdf: dict[str, Any], salt: bytes) -> bytes | None:
        """The key of (password, KDF, salt) when an entry holds it."""
        if not self.usable:
            return None
        return self._read(self._path(kdf, salt), password, kdf, salt)

    def any(self, password: bytes, kdf: dict[str, Any]) -> tuple[bytes, bytes] | None:
        """(salt, key) of any entry for this password and KDF, the newest first: a machine that
        restored a chain sealed elsewhere can seal its own snapshots under that salt with no
        KDF run."""
        if not self.usable:
            return None
        try:
            names = [name for name in os.listdir(self.directory) if name.endswith(ENTRY_SUFFIX)]
        except OSError:
            return None
        paths = sorted((os.path.join(self.directory, name) for name in names), key=_mtime, reverse=True)
        for path in paths[:MAX_ENTRIES]:
            entry = self._load(path)
            if entry is None or entry.get("kdf") != kdf:
                continue
            try:
                salt = bytes.fromhex(entry["salt"])
            except (KeyError, TypeError, ValueError):
                continue
            key = self._read(path, password, kdf, salt, entry)
            if key is not None:
                return salt, key
        return None

    def put(self, password: bytes, kdf: dict[str, Any], salt: bytes, key: bytes) -> None:
        if not self.usable:
            return
        body = {"v": 1, "kdf": kdf, "salt": salt.hex(), "key": key.hex(), "check": _check(key, password).hex()}
        try:
            with fsutil.atomic_write(self._path(kdf, salt), mode=0o600, durable=False) as handle:
                handle.write(json.dumps(body, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            log.debug(f"cannot cache the password key in {self.directory}: {exc.strerror or exc}")

    def _path(self, kdf: dict[str, Any], salt: bytes) -> str:
        name = hashlib.sha256(json.dumps(kdf, sort_keys=True).encode("utf-8") + b"\0" + salt).hexdigest()[:32]
        return os.path.join(self.directory, name + ENTRY_SUFFIX)

    def _load(self, path: str) -> dict | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
                return None
            raw = os.read(fd, ENTRY_MAX_BYTES)
        except OSError:
            return None
        finally:
            os.close(fd)
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        return entry if isinstance(entry, dict) and entry.get("v") == 1 else None

    def _read(self, path: str, password: bytes, kdf: dict[str, Any], salt: bytes,
              entry: dict | None = None) -> bytes | None:
        entry = entry if entry is not None else self._load(path)
        if entry is None or entry.get("kdf") != kdf or entry.get("salt") != salt.hex():
            return None
        try:
            key = bytes.fromhex(entry["key"])
            check = bytes.fromhex(entry["check"])
        except (KeyError, TypeError, ValueError):
            return None
        if not hmac.compare_digest(check, _check(key, password)):
            return None  # another password's key (the password changed): derive again
        return key


def _check(key: bytes, password: bytes) -> bytes:
    return hmac.digest(key, CHECK_PREFIX + password, hashlib.sha256)


def _mtime(path: str) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def open_cache(where: tuple[str, bool] | None) -> KeyCache | None:
    """The cache config.key_cache_dir names ((folder, named by the user), or None: off)."""
    if where is None:
        return None
    cache = KeyCache(*where)
    return cache if cache.usable else None


def cached(cache: KeyCache | None, password: bytes, kdf: dict[str, Any], salt: bytes,
           derive: Callable[[], bytes]) -> tuple[bytes, bool]:
    """(key, derived): the cached key of (password, KDF, salt), else `derive()` run and cached."""
    if cache is not None:
        key = cache.get(password, kdf, salt)
        if key is not None:
            log.debug(f"password key ({kdf['name']}, salt {salt.hex()[:8]}...): from the key cache {cache.directory}")
            return key, False
    key = derive()
    log.debug(f"password key ({kdf['name']}, salt {salt.hex()[:8]}...): derived")
    if cache is not None:
        cache.put(password, kdf, salt, key)
    return key, True
