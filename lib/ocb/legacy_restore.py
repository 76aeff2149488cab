"""Restoring the legacy script's backups with ocb's staging, verification and transaction.

Every volume of the legacy chain is fetched and checked first (its size in the store, the
sha256 the meta records of the whole archive as joined in name order, and for an encrypted
one that the password opens it); then the archives are decrypted (legacy_crypto.py),
decompressed and extracted full -> latest into a staging tree beside each target, merged in
order as the legacy restore merged them (its incrementals hold changed files only and record
no deletions); the index of what was extracted (each path as the last archive that carried it
left it, with the sha256 of what was written) is the final index, which restore.py checks the
staging trees against and swaps in as one transaction, exactly as for an ocb snapshot.

Archive roots map as the legacy restore maps them (`openclaw-state` to the state dir, the
`root-*` dirs, `root-npm` when npm restore is on, `backup-info`, extra dirs and files by their
archive names; every legacy per-dir variable overriding its dir); a root the settings do not
name is not restored, a root of the other kind (a file where a dir is configured) neither,
each said on stderr. What the legacy restore got wrong is right here: symlinks stay symlinks,
directories get their recorded modes and times, nothing escapes a root, the targets are
untouched until everything is verified and extracted, extra files are restored. A directory
that only an incremental's files imply is made 0755 with its first file's time.

Reads the settings from the document; writes only under the work dir and the staging paths.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import time
from decimal import Decimal, InvalidOperation
from typing import BinaryIO

from . import cache, config, journal, legacy_crypto, restore
from .archive import COPY_CHUNK, DELTA_LENGTH
from .config import Root, Settings
from .errors import (
    DISK_FULL_ERRNOS,
    ChecksumMismatch,
    HostileArchive,
    IntegrityError,
    RuntimeFailure,
    UsageError,
    io_reason,
)
from .extract import STAGING_DIR_MODE, StagingWriter, WrittenHashes, _open_dir_nofollow, _remove_at
from .fsutil import fresh_run_dir
from .index import DIR, FILE, SYMLINK, Entry, Index, check_structure, scan, split_member
from .log import log
from .stores import open_store

IMPLIED_DIR_MODE = 0o755
READ_CHUNK = 1024 * 1024


def pull(doc: dict, args: argparse.Namespace) -> dict:
    """ocb-pull for a document whose chain is legacy (legacy.chain_section)."""
    if getattr(args, "include", None):
        # a legacy index records no `held`, and restoring only some paths is not built for
        # legacy chains: refused before anything is touched, never a whole restore instead
        raise UsageError("--include is not supported for a legacy backup: restore it whole with --to DIR "
                         "and copy what you need")
    settings = Settings.from_doc(doc)
    chain = doc["chain"]
    links: list[dict] = chain["snapshots"]
    target_id = chain["target"]
    env = config.load_environment()
    password = None
    if any(link["encrypted"] for link in links):
        password = config.legacy_password(env)
        if password is None:
            raise UsageError(f"the legacy backup {target_id} is encrypted: set OPENCLAW_BACKUP_ENCRYPTION_PASSWORD "
                             "(or OCB_PASSWORD / OCB_PASSWORD_FILE) to restore it")
    named = {r.name for r in settings.roots}
    roots = list(settings.roots) + [Root(r["name"], r["path"], r["kind"]) for r in chain["legacy"].get("roots", [])
                                    if r["name"] not in named]
    to_dir = os.path.abspath(args.to) if args.to else None
    places = restore.placements(roots, settings.home, to_dir)
    if not args.dry_run:
        journal.recover(settings.work_dir, [p.target for p in places.values()])
    if to_dir is None and not args.dry_run and not args.force:
        restore.refuse_if_open(places.values())
    if chain["legacy"].get("merge"):
        log.warning(chain["legacy"]["merge"])
    store = open_store(doc["store"], settings, config.store_secrets(env))
    run_dir = fresh_run_dir(os.path.join(settings.work_dir, f"restore-{target_id}"), config.under_lock(env))
    started = time.monotonic()
    try:
        fetched = fetch_all(store, links, run_dir, password)
        reader = functools.partial(read_chain, password=password)
        job = restore.Job(store=store, prefix=settings.path_prefix, snapshots=links, places=places, keyring=None,
                          run_dir=run_dir, delta_min=settings.delta_min, work_dir=settings.work_dir,
                          force=args.force, read_chain=reader)
        spool = os.path.join(run_dir, "index.jsonl")
        if args.dry_run:
            result = dry_run(job, fetched, password)
        else:
            result = restore._apply(job, fetched, spool, None, in_place=to_dir is None)
            if to_dir is None:
                # not an ocb snapshot, nothing an incremental could build on: the next
                # ocb-plan takes a full snapshot and starts a new ocb chain in this store
                cache.forget(settings.cache_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    result.update({"legacy": True, "merge": chain["legacy"].get("merge"),
                   "stats": {"seconds": round(time.monotonic() - started, 3),
                             "volumes": sum(len(v) for v in fetched.values()),
                             "bytes": sum(v["size"] for link in links for v in link["volumes"])}})
    return result


# -- fetching and checking, before anything is extracted --------------------------------------

def fetch_all(store, links: list[dict], run_dir: str, password: bytes | None) -> dict[str, list[tuple[str, str]]]:
    """{id: [(volume name, local path)]} of every volume of the chain, each at its size, each
    archive at its recorded sha256, each encrypted one opened by the password."""
    fetched: dict[str, list[tuple[str, str]]] = {}
    for link in links:
        paths = []
        for volume in link["volumes"]:
            name = volume["name"]
            path = store.fetch_file(f"{link['folder']}/{name}" if link["folder"] else name, run_dir)
            actual = os.path.getsize(path)
            if actual != volume["size"]:
                raise ChecksumMismatch(f"legacy volume {name}: {actual} bytes, the store listed {volume['size']}")
            paths.append((name, path))
        where = _where(link)
        total = sum(v["size"] for v in link["volumes"])
        if link.get("archive_size") is not None and total != link["archive_size"]:
            raise ChecksumMismatch(f"{where}: its volumes hold {total} bytes, its meta records archive_size "
                                   f"{link['archive_size']}: damaged or incomplete in the store")
        if link.get("checksum"):
            digest = hashlib.sha256()
            for _, path in paths:
                with open(path, "rb") as handle:
                    while chunk := handle.read(READ_CHUNK):
                        digest.update(chunk)
            if digest.hexdigest() != link["checksum"]:
                raise ChecksumMismatch(f"{where}: the recorded checksum check failed (the sha256 of the archive, its "
                                       "volumes joined in name order, differs from the meta's checksum): damaged in the store")
        else:
            log.warning(f"{where}: its meta records no checksum (an older legacy script): only the "
                        + ("padding and " if link["encrypted"] else "") + "gzip checks guard it")
        if link["encrypted"]:
            assert password is not None
            with open(paths[0][1], "rb") as handle:
                head = handle.read(legacy_crypto.HEADER_SIZE + legacy_crypto.BLOCK)
            salt = legacy_crypto.read_header(head, where)
            found = legacy_crypto.find_derivation(password, salt, head[legacy_crypto.HEADER_SIZE:], where,
                                                  bool(link.get("checksum")))
            log.debug(f"{where}: encrypted with openssl enc {found.describe()}")
        fetched[link["id"]] = paths
    log.info(f"verified {sum(len(v) for v in fetched.values())} legacy volumes of {len(links)} backups")
    return fetched


def _where(link: dict) -> str:
    names = ", ".join(v["name"] for v in link["volumes"])
    return f"legacy backup {link['id']} (volumes {names})"


class JoinedStream(io.RawIOBase):
    """The volumes of one legacy archive read back to back (name order), hashed again as read:
    a volume changed since it was checked is caught at the end."""

    def __init__(self, paths: list[str], checksum: str | None, where: str) -> None:
        self.pending = list(paths)
        self.current: BinaryIO | None = None
        self.checksum, self.where = checksum, where
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while True:
            if self.current is None:
                if not self.pending:
                    if self.checksum and self.digest.hexdigest() != self.checksum:
                        raise ChecksumMismatch(f"{self.where} changed while it was read")
                    self.checksum = None  # checked once
                    return 0
                self.current = open(self.pending.pop(0), "rb")
            data = self.current.read(len(buffer))
            if data:
                self.digest.update(data)
                buffer[: len(data)] = data
                return len(data)
            self.current.close()
            self.current = None

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        super().close()


def _drain(stream: BinaryIO) -> None:
    while stream.read(READ_CHUNK):
        pass


# -- extraction --------------------------------------------------------------------------------

def read_chain(job: restore.Job, fetched: dict, staging: dict[str, str], spool: str,
               password: bytes | None) -> tuple[Index, object, None]:
    """restore.Job.read_chain for a legacy chain: every archive merged into staging in order;
    the index of the result is the final index. No hashes taken while writing (None): make_equal
    reads every file back."""
    writer = LegacyWriter(staging, {name: place.kind for name, place in job.places.items()})
    for link in job.snapshots:
        where = _where(link)
        paths = [path for _, path in fetched[link["id"]]]
        try:
            with JoinedStream(paths, link.get("checksum"), where) as raw:
                opened: BinaryIO = io.BufferedReader(raw, READ_CHUNK)  # type: ignore[arg-type]
                if link["encrypted"]:
                    assert password is not None
                    plain = legacy_crypto.DecryptingReader(opened, password, where, bool(link.get("checksum")))
                    opened = io.BufferedReader(plain, READ_CHUNK)  # type: ignore[arg-type]
                with gzip.GzipFile(fileobj=opened, mode="rb") as decoded:
                    writer.extract_archive(decoded, link["id"])  # type: ignore[arg-type]
                    _drain(decoded)  # gzip's CRC and length, the padding, the hash: at the end
                _drain(opened)
        except IntegrityError as exc:
            raise type(exc)(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
        except restore.DECODE_ERRORS as exc:
            if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
                raise RuntimeFailure(f"{where}: {io_reason(exc)} to extract it beside the targets "
                                     f"({exc.strerror}); the targets are untouched") from None
            raise HostileArchive(f"{where} cannot be read as a gzip tar archive: {exc}") from None
    final = writer.index
    final.snapshot = job.target_id
    problem = check_structure(final)
    if problem:
        raise HostileArchive(problem)
    if spool:
        final.save(spool)
    return final, writer.stats, None


class _Hashing:
    """A member's data as read, hashed on the way."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        return data


class _OneMember:
    """Hands StagingWriter._copy_member the hashing reader instead of the tar's own."""

    def __init__(self, reader: _Hashing) -> None:
        self.reader = reader

    def extractfile(self, _member: tarfile.TarInfo) -> _Hashing:
        return self.reader


def _mtime_ns(member: tarfile.TarInfo) -> int:
    """The member's time in ns, exact to what the archive holds (PAX keeps the float the
    script read as text)."""
    for text in (member.pax_headers.get("mtime"), repr(member.mtime)):
        if text:
            try:
                return int(Decimal(text) * 10**9)
            except InvalidOperation:
                continue
    return int(member.mtime) * 10**9


def _describe(member: tarfile.TarInfo) -> str:
    return ("directory" if member.isdir() else "file" if member.isfile() else "symlink" if member.issym()
            else "hardlink" if member.islnk() else "special file")


class LegacyWriter(StagingWriter):
    """Merges legacy archives onto staging paths in order and indexes the result.

    The legacy incrementals carry files without their directories, so a missing directory on
    a member's way is made (and a file or link found there replaced: staging is ours, nothing
    is written through it); member names, types and links are checked as for ocb archives."""

    def __init__(self, staging: dict[str, str], kinds: dict[str, str]) -> None:
        super().__init__(staging, "")
        self.written = WrittenHashes(None, keep=False)  # nothing trusts them: make_equal reads each file
        self.kinds = kinds
        self.index = Index(excludes=[], includes=[])
        self._sha256: str | None = None
        self._member: tarfile.TarInfo | None = None
        self._root = ""
        self.warned: set[tuple[str, str]] = set()

    def extract_archive(self, stream: BinaryIO, snapshot_id: str) -> None:
        seen: set[str] = set()
        passed: set[str] = set()
        try:
            tar = tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape")
        except tarfile.ReadError as exc:
            raise HostileArchive(f"not a tar archive: {exc}") from None
        with tar:
            for member in tar:
                root, parts = split_member(member.name)
                clean = "/".join([root, *parts])
                if clean in seen:
                    raise HostileArchive(f"two members named {clean!r} in one archive")
                seen.add(clean)
                if root not in self.staging:
                    self.stats.skipped_roots.add(root)
                    continue
                if root in passed:
                    continue
                if DELTA_LENGTH in member.pax_headers:
                    raise HostileArchive(f"member {member.name!r} is an ocb delta, which no legacy archive holds")
                kind = self.kinds[root]
                if not parts and not (member.isdir() if kind == "dir" else member.isfile()) or parts and kind == "file":
                    shown = _describe(member) if not parts else "directory"
                    log.warning(f"legacy backup {snapshot_id}: root {root} is a {shown} in the archive, configured "
                                f"here as a {'directory' if kind == 'dir' else 'file'}: not restored from it")
                    passed.add(root)
                    continue
                self._member, self._root = member, root
                if member.islnk():
                    self._hardlink(member, root, parts, seen)
                elif not parts:
                    self._apply_root(tar, member, self.staging[root], (root, ""))
                else:
                    self._apply(tar, member, root, parts)
                self._record(member, root, "/".join(parts))
                self.stats.members += 1

    # StagingWriter hooks: hashing what is written, making what incrementals imply

    def _copy_member(self, tar, member: tarfile.TarInfo, fd: int, key: tuple[str, str]) -> None:  # type: ignore[override]
        source = tar.extractfile(member)
        assert source is not None
        hashing = _Hashing(source)
        super()._copy_member(_OneMember(hashing), member, fd, key)  # type: ignore[arg-type]
        self._sha256 = hashing.digest.hexdigest()

    def _open_parent(self, top: str, parts: list[str]) -> int:
        root = self._root
        if not os.path.isdir(top) or os.path.islink(top):
            if os.path.lexists(top):
                os.unlink(top)
            os.mkdir(top, STAGING_DIR_MODE)
            self._imply(root, "")
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        for number, part in enumerate(parts[:-1]):
            rel = "/".join(parts[: number + 1])
            try:
                child = _open_dir_nofollow(fd, part, create=True, replace=True)
            finally:
                os.close(fd)
            fd = child
            self._imply(root, rel)
        return fd

    def _imply(self, root: str, rel: str) -> None:
        entry = self.index.entries.get((root, rel))
        if entry is None or entry.type != DIR:
            member = self._member
            mtime = _mtime_ns(member) if member is not None else time.time_ns()
            self.index.add(Entry(root, rel, DIR, IMPLIED_DIR_MODE, 0, mtime))
            self.index.roots[root] = {"kind": self.kinds[root], "present": True}

    def _hardlink(self, member: tarfile.TarInfo, root: str, parts: list[str], seen: set[str]) -> None:
        """A hardlink to a file earlier in the same archive, under the same root: written as a
        copy of it (the legacy restore's copies are separate files too)."""
        link_root, link_parts = split_member(member.linkname)
        source = self.index.entries.get((link_root, "/".join(link_parts)))
        if (link_root != root or not parts or not link_parts or "/".join([link_root, *link_parts]) not in seen
                or source is None or source.type != FILE):
            raise HostileArchive(f"hardlink member {member.name!r} points at {member.linkname!r}, which is not a "
                                 "file earlier in this archive under the same root")
        top = self.staging[root]
        source_parent = self._walk_existing(top, link_parts)
        try:
            source_fd = os.open(link_parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=source_parent)
        finally:
            os.close(source_parent)
        parent_fd = self._open_parent(top, parts)
        try:
            _remove_at(parent_fd, parts[-1])
            out_fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        with os.fdopen(source_fd, "rb") as source_file, os.fdopen(out_fd, "wb") as out:
            shutil.copyfileobj(source_file, out, COPY_CHUNK)
        self._sha256 = source.sha256
        self._link_size = source.size

    def _walk_existing(self, top: str, parts: list[str]) -> int:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        for part in parts[:-1]:
            try:
                child = _open_dir_nofollow(fd, part, create=False, replace=False)
            finally:
                os.close(fd)
            fd = child
        return fd

    def _record(self, member: tarfile.TarInfo, root: str, rel: str) -> None:
        key = (root, rel)
        old = self.index.entries.get(key)
        mode, mtime = stat.S_IMODE(member.mode), _mtime_ns(member)
        if member.isdir():
            entry = Entry(root, rel, DIR, mode, 0, mtime, uid=member.uid, gid=member.gid)
        else:
            if old is not None and old.type == DIR:  # a directory replaced: what it held is gone
                below = rel + "/" if rel else ""
                for other in [k for k in self.index.entries if k[0] == root and k[1].startswith(below) and k[1] != rel]:
                    del self.index.entries[other]
            if member.issym():
                entry = Entry(root, rel, SYMLINK, 0o777, 0, mtime, target=member.linkname, uid=member.uid, gid=member.gid)
            else:
                size = self._link_size if member.islnk() else member.size
                entry = Entry(root, rel, FILE, mode, size, mtime, sha256=self._sha256, uid=member.uid, gid=member.gid)
        self.index.add(entry)
        self.index.roots[root] = {"kind": self.kinds[root], "present": True}
        self._sha256 = None

    _link_size = 0


# -- --dry-run ---------------------------------------------------------------------------------

def dry_run(job: restore.Job, fetched: dict, password: bytes | None) -> dict:
    """Extract the chain into the run dir (never beside the targets) and say what an in-place
    restore would change."""
    scratch = os.path.join(job.run_dir, "dry")
    os.makedirs(scratch, mode=0o700)
    final, _, _ = read_chain(job, fetched, {name: os.path.join(scratch, name) for name in job.places}, "", password)
    live_roots = [Root(name, place.target, place.kind) for name, place in job.places.items()
                  if final.roots.get(name, {}).get("present")]
    live, _ = scan(live_roots, [], [])
    added = sorted(k for k in final.entries if k not in live.entries)
    removed = sorted(k for k in live.entries if k not in final.entries and k[0] in final.roots)
    changed = sorted(k for k, e in final.entries.items() if k in live.entries and not e.same_as(live.entries[k]))
    for word, keys in (("add", added), ("change", changed), ("remove", removed)):
        for root, path in keys:
            log.info(f"would {word} {root}/{path}")
    return {"dry_run": True, "roots": {n: job.places[n].target for n in sorted(final.roots) if n in job.places},
            "changes": {"add": len(added), "change": len(changed), "remove": len(removed), "keep": 0}}
