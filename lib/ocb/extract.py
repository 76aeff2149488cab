"""Safe extraction of archives into staging trees, and making a staging tree equal an index.

Safe by construction: member names are relative and stay inside their root; every directory
on the way to a member is opened with O_NOFOLLOW relative to its parent, so nothing is ever
written through a symlink, whatever an earlier member or an earlier snapshot left there;
hardlinks, devices, fifos and other member types are refused. Symlinks themselves are state
and are created exactly as recorded. This module writes only under the staging paths it is
handed; swapping staging into place is restore.py's job.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import marshal
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator

from .archive import (
    COPY_CHUNK,
    DELTA_BLOCK_SIZE,
    DELTA_BLOCKS,
    DELTA_LENGTH,
    INDEX_MEMBER,
    TAR_ENCODING,
    TAR_ERRORS,
)
from .blocks import BlockHashes, Hasher, block_count, decode_ranges, sidecar_name
from .errors import ChainBroken, ChecksumMismatch, HostileArchive
from .index import (
    DIR,
    FILE,
    NUL,
    SYMLINK,
    Cursor,
    Entry,
    Index,
    checked_structure,
    listing_by_name,
    no_gc,
    read_lines,
    split_member,
)

# Modes while building staging: a staging root is private (0700) until it is in place, so
# nothing below it can be reached by another user whatever its mode. Below it, files and
# directories are made with their member's permission bits (never set-id or sticky ones, which
# only make_equal applies, after chown), always writable and searchable by their owner (a
# later snapshot's delta or child must get in): when they match the index, make_equal need
# not chmod them again.
STAGING_DIR_MODE = 0o700
STAGING_FILE_MODE = 0o600
MAX_INDEX_BYTES = 2 * 1024**3
MAX_DELTA_BLOCK = 64 * 1024**2
MAX_DELTA_LENGTH = 1024**4
HOLE_BLOCK = 4096  # zero blocks of this size are left as holes when a file is written
ZERO_BLOCK = bytes(HOLE_BLOCK)


_USTAR_MAGIC = tarfile.POSIX_MAGIC  # "ustar\0" and version "00", at 257
_NO_OWNER_NAMES = bytes(tarfile.BLOCKSIZE - 265)  # uname to the block's end: what ustar_header leaves


_NO_OWNER = b"0000000\x000000000\x00"  # uid and gid as archive.ustar_header writes them
_FIELDS = ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 155))  # mode .. chksum


def _fast_ustar(cls: type, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo | None:
    """A header as archive.ustar_header writes them, parsed in one step; None for any other
    (tarfile parses those)."""
    if len(buf) != tarfile.BLOCKSIZE or buf[257:265] != _USTAR_MAGIC or buf[265:] != _NO_OWNER_NAMES \
            or buf[154:156] != b"\0 ":
        return None
    try:
        if buf[108:124] == _NO_OWNER and buf[107] == buf[135] == buf[147] == 0:  # ocb's: no owner
            numbers = [int(buf[100:107], 8), 0, 0, int(buf[124:135], 8), int(buf[136:147], 8), int(buf[148:154], 8)]
        else:
            numbers = [int(buf[start:end - 1], 8) if buf[end - 1] == 0 else None for start, end in _FIELDS]
    except ValueError:
        return None
    # the unsigned checksum: the block's bytes with its own field as blanks (8 × 32); what
    # follows the magic was checked to be zeros, so it adds nothing
    if None in numbers or numbers[5] != 256 + sum(buf[:148]) + sum(buf[156:265]):
        return None
    kind = buf[156:157]
    if kind == tarfile.GNUTYPE_SPARSE:
        return None
    name = buf[:100].split(b"\0", 1)[0].decode(encoding, errors)
    if kind == tarfile.AREGTYPE and name.endswith("/"):
        kind = tarfile.DIRTYPE
    info = cls(name.rstrip("/") if kind == tarfile.DIRTYPE else name)
    info.mode, info.uid, info.gid, info.size, info.mtime, info.chksum = numbers
    info.type = kind
    info.linkname = buf[157:257].split(b"\0", 1)[0].decode(encoding, errors)
    return info


class UstarInfo(tarfile.TarInfo):
    """A TarInfo whose header, when it is one the way archive.ustar_header writes them (POSIX
    magic, no owner names, device numbers or prefix, octal numbers, an unsigned checksum),
    is parsed in one step instead of by tarfile's field by field decoding and its two
    checksums (a fifth of a restore's main thread). Any other header, and any whose fields do
    not parse so, is tarfile's own: the same result or the same error
    (tests/unit/test_extract.py checks it against tarfile for any header)."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        return _fast_ustar(cls, buf, encoding, errors) or super().frombuf(buf, encoding, errors)


_PAX_NAMES = {b"path": "name", b"linkpath": "linkname"}
_PAX_MOST = 64 * 1024  # an extended header of names only is never longer (PATH_MAX is 4096)


def members(tar: tarfile.TarFile, reader: "ForwardReader") -> Iterator[tarfile.TarInfo]:
    """The members of `tar` (opened "r:" over `reader`, with UstarInfo), as tar.next() gives
    them, without tarfile's steps around each header for the ones ocb writes: a ustar header
    (_fast_ustar), and an extended header of only a path and a link path in UTF-8 followed by
    one (pax_name_header's), are parsed here, with `tar.offset` kept as tarfile keeps it.
    Anything else, from the end of the archive to a global header, is tar.next()'s, from
    where it starts: nothing of it was read. tarfile's steps were a sixth of a restore's main
    thread (docs/performance.md, round 9); tests/unit/test_extract.py checks the members and
    the errors against tarfile's for any archive. tar.members stays empty."""
    encoding, errors = tar.encoding, tar.errors
    while True:
        if tar.firstmember is not None or tar.pax_headers:  # tarfile's: the first, or global headers
            member = tar.next()
            tar.members.clear()
            if member is None:
                return
            yield member
            continue
        if tar.offset != reader.position:  # what was not read of the last member's data
            reader.seek(tar.offset - 1)
            if not reader.read(1):
                raise tarfile.ReadError("unexpected end of data")
        member = _fast_member(reader, tar.offset, encoding, errors)
        if member is None:
            member = tar.next()  # nothing read: tarfile starts where the header does
            tar.members.clear()
            if member is None:
                return
            yield member
            continue
        info, used = member
        reader.read(used)
        tar.offset = info.offset_data + (-(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                                         if info.type in _DATA_TYPES else 0)
        yield info


# the types whose data tarfile skips to find the next header (isreg(), or not a type it knows)
_DATA_TYPES = frozenset([tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE]
                        + [bytes([c]) for c in range(256) if bytes([c]) not in tarfile.SUPPORTED_TYPES])


def _fast_member(reader: "ForwardReader", offset: int, encoding: str, errors: str) -> tuple[tarfile.TarInfo, int] | None:
    """The member whose header starts at `offset` (the reader's position) and how many bytes
    its headers take, when _fast_ustar parses it (after an extended header of names only);
    None otherwise. Nothing is read: the headers are peeked at."""
    head = reader.peek(tarfile.BLOCKSIZE)
    info = _fast_ustar(UstarInfo, head, encoding, errors)
    if info is None:
        return None
    if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
        return _fast_pax_member(reader, info, offset, encoding, errors)
    if info.type not in _PLAIN_TYPES:
        return None  # GNU long names, global headers and the like: tarfile's
    info.offset, info.offset_data = offset, offset + tarfile.BLOCKSIZE
    return info, tarfile.BLOCKSIZE


_PLAIN_TYPES = frozenset([tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE])


def _fast_pax_member(reader: "ForwardReader", pax: tarfile.TarInfo, offset: int, encoding: str,
                     errors: str) -> tuple[tarfile.TarInfo, int] | None:
    if not 0 < pax.size <= _PAX_MOST:
        return None
    payload_blocks = -(-pax.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    used = tarfile.BLOCKSIZE + payload_blocks + tarfile.BLOCKSIZE
    blocks = reader.peek(used)
    if len(blocks) < used:
        return None
    payload = blocks[tarfile.BLOCKSIZE:tarfile.BLOCKSIZE + pax.size]
    if b"hdrcharset=" in payload or blocks[tarfile.BLOCKSIZE + pax.size:used - tarfile.BLOCKSIZE].strip(b"\0"):
        return None
    # records "<length> <keyword>=<value>\n", back to back, filling the payload exactly
    found: dict[str, str] = {}
    at = 0
    while at < len(payload):
        space = payload.find(b" ", at, at + 21)
        if space <= at or not payload[at:space].isdigit():
            return None
        end = at + int(payload[at:space])
        equals = payload.find(b"=", space + 1, end)
        if equals < 0 or end > len(payload) or payload[end - 1:end] != b"\n":
            return None
        field = _PAX_NAMES.get(payload[space + 1:equals])
        if field is None or field in found:
            return None
        try:
            found[field] = payload[equals + 1:end - 1].decode("utf-8")
        except UnicodeDecodeError:
            return None
        at = end
    info = _fast_ustar(UstarInfo, blocks[used - tarfile.BLOCKSIZE:], encoding, errors)
    if info is None or info.type not in _PLAIN_TYPES or not found:
        return None
    # as tarfile's _proc_pax and _apply_pax_info leave it
    pax_headers = {}
    for field, value in found.items():
        if field == "name":
            pax_headers["path"] = value
            info.name = value.rstrip("/")
        else:
            pax_headers["linkpath"] = value
            info.linkname = value
    info.pax_headers = pax_headers
    info.offset, info.offset_data = offset, offset + used
    return info, used


@dataclass
class ExtractStats:
    members: int = 0
    bytes: int = 0
    skipped_roots: set[str] = field(default_factory=set)


def _open_dir_nofollow(parent_fd: int, name: str, create: bool, replace: bool) -> int:
    """Open child directory `name` of parent_fd without following links.

    `replace`: a non-directory found there (left by an earlier snapshot of the chain) is
    removed and a directory made in its place. Without it, finding one is hostile.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        if not replace:
            raise HostileArchive(f"a member would be written through {name!r}, which is not a directory") from None
        os.unlink(name, dir_fd=parent_fd)
    os.mkdir(name, STAGING_DIR_MODE, dir_fd=parent_fd)
    return os.open(name, flags, dir_fd=parent_fd)


def _remove_at(parent_fd: int, name: str) -> None:
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent_fd)
    else:
        os.unlink(name, dir_fd=parent_fd)


class WrittenHashes:
    """The sha256 (and, for large files, block hashes) of each file StagingWriter wrote whole,
    taken as it was written, so make_equal need not read it back; keyed by order_key.

    Not held in memory: ocb's archives hold their members in order_key order and make_equal
    asks in that order, so each archive's records go to a spool file of its own as they come
    (a chunk in memory at a time), and the spools are merged as make_equal asks, the latest
    archive's record of a path winning (a member that wrote nothing hashed records that, so an
    older hash of its path is not trusted). An archive out of that order (written before the
    order was kept) turns them into a dict in memory, as before: only slower to hold, never
    wrong. It also finds two members of one name in an archive: in order, none can repeat.
    With `keep=False` nothing is recorded (every file is read back)."""

    CHUNK = 2048  # records per marshal frame

    def __init__(self, spool_base: str | None, keep: bool = True) -> None:
        self._base, self._keep = spool_base, keep
        # nothing kept: no spool (a dict that stays empty)
        self._memory: dict[str, object] | None = {} if spool_base is None or not keep else None
        # the keys applied in this archive, once it is held in memory (in order, none repeats)
        self._archive_keys: set[str] = set()
        self._spools: list[str] = []
        self._current: str | None = None  # the spool of this archive, once it has one
        self._chunk: list[tuple[str, object]] = []
        self._out: BinaryIO | None = None
        self._last: str | None = None  # order_key of the last member of this archive
        self._merged: Iterator[tuple[str, int, object]] | None = None
        self._head: tuple[str, int, object] | None = None
        self.in_memory_because: str | None = None  # why the records went to memory

    def start_archive(self) -> None:
        """The members that follow are the next archive's (its spool made at its first)."""
        self._end_archive()
        self._last = self._current = None
        self._archive_keys = set()

    def applied(self, key: str) -> bool:
        """The member of order_key `key` is applied: what was hashed at its path is forgotten.
        False when this archive applied a member of that key already (two of one name; not
        checked with keep=False, whose caller checks names itself)."""
        if not self._keep:
            return True
        if self._memory is None:
            if self._last is None or key > self._last:  # in order: no name can come twice
                self._last = key
                self._record(key)
                return True
            self._to_memory(f"{key!r} came after {self._last!r}")
        if key in self._archive_keys:
            return False
        self._archive_keys.add(key)
        self._memory.pop(key, None)  # type: ignore[union-attr]
        return True

    def _record(self, key: str) -> None:
        if self._out is None:
            self._current = f"{self._base}.written-{len(self._spools)}"
            self._spools.append(self._current)
            self._out = open(self._current, "wb")
        if len(self._chunk) >= self.CHUNK:
            self._flush()  # before this one's record: `hashed` may yet fill it in
        self._chunk.append((key, None))

    def hashed(self, key: str, sha256: bytes, blocks: BlockHashes | None = None) -> None:
        """What the member just applied at `key` wrote hashed to (after `applied`)."""
        if not self._keep:
            return
        value = sha256 if blocks is None else (sha256, blocks.sha256, blocks.size, blocks.block_size, blocks.digests)
        if self._memory is not None:
            self._memory[key] = value
        else:
            self._chunk[-1] = (key, value)

    def get(self, key: str) -> bytes | tuple[bytes, BlockHashes] | None:
        """What was hashed at `key`, asked in order_key order (a key asked out of it: None)."""
        if self._memory is not None:
            return _taken(self._memory.get(key))
        if self._merged is None:
            self._end_archive()
            # (key, -archive, value): for a key, the latest archive's record comes first
            self._merged = heapq.merge(*(_spooled(path, -number) for number, path in enumerate(self._spools)))
            self._head = next(self._merged, None)
        while self._head is not None and self._head[0] < key:
            self._head = next(self._merged, None)
        if self._head is None or self._head[0] != key:
            return None
        found = self._head[2]
        while self._head is not None and self._head[0] == key:  # older archives' records of it
            self._head = next(self._merged, None)
        return _taken(found)

    def close(self) -> None:
        """The spools removed (the records are gone)."""
        self._end_archive()
        self._merged = self._head = None
        for path in self._spools:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._spools = []

    def _flush(self) -> None:
        if self._chunk and self._out is not None:
            marshal.dump(self._chunk, self._out)
        self._chunk = []

    def _end_archive(self) -> None:
        self._flush()
        if self._out is not None:
            self._out.close()
            self._out = None

    def _to_memory(self, why: str) -> None:
        """An archive out of order: the records so far into a dict, this archive's keys into a
        set (the duplicates check from now on)."""
        self._end_archive()
        memory: dict[str, object] = {}
        current = self._current
        for path in self._spools:  # oldest first: a later record of a path replaces an earlier
            for key, _, value in _spooled(path, 0):
                if value is None:
                    memory.pop(key, None)
                else:
                    memory[key] = value
                if path == current:
                    self._archive_keys.add(key)
        self.close()
        self._memory, self.in_memory_because = memory, why


def _spooled(path: str, number: int) -> Iterator[tuple[str, int, object]]:
    with open(path, "rb") as spool:
        while True:
            try:
                chunk = marshal.load(spool)
            except EOFError:
                return
            for key, value in chunk:
                yield key, number, value


def _taken(value: object) -> bytes | tuple[bytes, BlockHashes] | None:
    if isinstance(value, tuple):
        sha256, hex_sha256, size, block_size, digests = value
        return sha256, BlockHashes(hex_sha256, size, block_size, digests)
    return value  # type: ignore[return-value]


class StagingWriter:
    """Applies the members of one archive after another onto per-root staging paths."""

    def __init__(self, staging: dict[str, str], index_spool: str, block_min: int | None = None) -> None:
        self.staging = staging  # root name -> staging path (beside its target)
        self.index_spool = index_spool
        self.stats = ExtractStats()
        # the sha256 of what a whole-file member wrote, taken while it was written, so
        # make_equal need not read every file back; a delta applied on top drops the record
        # (that file is read back). Block hashes too for files of at least `block_min` bytes
        # (None: none). Spooled beside the index (WrittenHashes), not held in memory.
        self.block_min = block_min
        self.written = WrittenHashes(index_spool + ".hashes" if index_spool else None)
        # (root, path) of the only members to write (a restore of some paths); None: all
        self.only: set[tuple[str, str]] | None = None
        self._dirs: list[tuple[str, int]] = []  # the directories open along the last member's path
        self._reader: ForwardReader | None = None  # the archive being extracted
        # directories stay open along the member path (extract(): ocb's archives, in tree
        # order); False: each member's parent is opened and closed again (_open_parent)
        self.keep_dirs = False

    def extract(self, stream: BinaryIO, progress: Callable[[int], None] | None = None) -> bool:
        """Extract one archive; True when it carried the index member (it must)."""
        got_index = False
        self._close_dirs()  # each archive starts from its roots again
        self.written.start_archive()
        self.keep_dirs = True
        try:
            # mode "r:" over a forward-only reader: the same headers parsed by the same code as
            # "r|", whose own stream buffer copies its whole buffer on every read
            reader = ForwardReader(stream)
            tar = tarfile.open(fileobj=reader, mode="r:", encoding=TAR_ENCODING, errors=TAR_ERRORS,
                               tarinfo=UstarInfo)
        except tarfile.ReadError as exc:
            raise HostileArchive(f"not a tar archive: {exc}") from None
        with tar, self._dirs_closed(), self._hashes_dropped_on_failure(), no_gc():  # TarInfos hold no cycles
            for member in members(tar, reader):  # tar.members stays empty: memory stays flat
                if member.name == INDEX_MEMBER:
                    self._save_index(tar, member)
                    got_index = True
                    continue
                root, parts = split_member(member.name)
                if root not in self.staging:
                    if self.only is None:
                        self.stats.skipped_roots.add(root)
                    continue
                if self.only is not None and (root, "/".join(parts)) not in self.only:
                    continue
                key = NUL.join([root, *parts])  # its order_key
                if not self.written.applied(key):  # only a member written can do harm twice
                    raise HostileArchive(f"two members named {'/'.join([root, *parts])!r} in one archive")
                self._reader = reader
                self._apply(tar, member, root, parts, key)
                self.stats.members += 1
                if progress and member.isfile():
                    progress(member.size)
        return got_index

    @contextlib.contextmanager
    def _hashes_dropped_on_failure(self) -> Iterator[None]:
        """A failed extract ends the restore: the spools of its hashes go with it."""
        try:
            yield
        except BaseException:
            self.written.close()
            raise

    def _save_index(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if not member.isfile() or member.size > MAX_INDEX_BYTES:
            raise HostileArchive("the index member is not a regular file of sane size")
        source = tar.extractfile(member)
        assert source is not None
        with open(self.index_spool, "wb") as out:
            shutil.copyfileobj(source, out, COPY_CHUNK)

    def _apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, parts: list[str],
               key: str | None = None) -> None:
        """`key`: the member's order_key, given once `written` was told of it (else told here)."""
        if not (member.isfile() or member.isdir() or member.issym()):
            kind = "hardlink" if member.islnk() else "device, fifo or other special file"
            raise HostileArchive(f"member {member.name!r} is a {kind}: refused")
        top = self.staging[root]
        if key is None:
            key = NUL.join([root, *parts])
            self.written.applied(key)
        if not parts:
            self._close_dirs()  # the root itself is replaced: no directory fd below it stays valid
            self._apply_root(tar, member, top, key)
            return
        if self.keep_dirs:
            self._apply_at(tar, member, self._open_along(root, top, parts), parts[-1], key)
            return
        parent_fd = self._open_parent(top, parts)
        try:
            self._apply_at(tar, member, parent_fd, parts[-1], key)
        finally:
            os.close(parent_fd)

    def _apply_at(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, name: str,
                  key: str) -> None:
        """A member that is not a root, in its parent directory (open at parent_fd)."""
        if member.isdir():
            mode = (member.mode & 0o777) | STAGING_DIR_MODE
            try:  # mkdir first: in a fresh staging tree it is not there
                os.mkdir(name, mode, dir_fd=parent_fd)
            except FileExistsError:  # kept, or made in place of what an earlier snapshot left there
                pass
            fd = _open_dir_nofollow(parent_fd, name, create=True, replace=True)
            if self.keep_dirs:
                self._dirs.append((name, fd))  # the parent of the members that follow (its children)
            else:
                os.close(fd)
            return
        if DELTA_LENGTH in member.pax_headers:
            self._apply_delta(tar, member, lambda flags: os.open(name, flags, dir_fd=parent_fd))
            return
        if member.issym():
            try:
                os.symlink(member.linkname, name, dir_fd=parent_fd)
            except FileExistsError:  # an earlier snapshot's entry of that name: replaced
                _remove_at(parent_fd, name)
                os.symlink(member.linkname, name, dir_fd=parent_fd)
            return
        # O_EXCL first: in a fresh staging tree nothing is there, so no lstat per file; an
        # earlier snapshot's entry (O_EXCL|O_NOFOLLOW fails on a symlink too) is removed first
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        mode = (member.mode & 0o777) | STAGING_FILE_MODE
        try:
            fd = os.open(name, flags, mode, dir_fd=parent_fd)
        except FileExistsError:
            _remove_at(parent_fd, name)
            fd = os.open(name, flags, mode, dir_fd=parent_fd)
        self._copy_member(tar, member, fd, key)

    def _apply_root(self, tar: tarfile.TarFile, member: tarfile.TarInfo, top: str, key: str) -> None:
        """The root entry itself: a directory root, or a single-file root."""
        if member.isdir():
            if os.path.lexists(top) and not os.path.isdir(top) or os.path.islink(top):
                os.unlink(top)
            os.makedirs(top, STAGING_DIR_MODE, exist_ok=True)
            return
        if not member.isfile():
            raise HostileArchive(f"root member {member.name!r} is neither a directory nor a file")
        if DELTA_LENGTH in member.pax_headers:
            self._apply_delta(tar, member, lambda flags: os.open(top, flags))
            return
        if os.path.isdir(top) and not os.path.islink(top):
            shutil.rmtree(top)
        elif os.path.lexists(top):
            os.unlink(top)
        fd = os.open(top, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, STAGING_FILE_MODE)
        self._copy_member(tar, member, fd, key)

    def _open_parent(self, top: str, parts: list[str]) -> int:
        """A fresh fd (the caller closes it) of the directory that holds member `parts`, each
        directory on the way opened with O_NOFOLLOW relative to the one before."""
        if not os.path.isdir(top) or os.path.islink(top):
            # children before their root's own entry: only an incremental on top of a
            # staging root that exists already may do that
            raise ChainBroken(f"member {'/'.join(parts)!r} arrived before its root directory")
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        for part in parts[:-1]:
            try:
                # an honest archive carries a directory's own member before its children,
                # so a link or file still in the way means a write through it: refuse
                child = _open_dir_nofollow(fd, part, create=True, replace=False)
            finally:
                os.close(fd)
            fd = child
        return fd

    def _open_along(self, root: str, top: str, parts: list[str]) -> int:
        """The fd of the directory that holds member `parts` of `root`, kept open for the
        members after it.

        `self._dirs` is the chain of directories opened last: [(root, top fd), (name, fd),
        ...], each opened with O_NOFOLLOW relative to the one before. Members arrive in tree
        order, so the next member's parent is nearly always in it; only the part that
        differs is closed and opened again. Every member is applied below its parent
        (never at a path the chain holds), so an fd in the chain always names the directory
        at that path: a member replacing one is at a path no longer than its parent's."""
        want = parts[:-1]
        dirs = self._dirs
        if not dirs or dirs[0][0] != root:
            self._close_dirs()
            if not os.path.isdir(top) or os.path.islink(top):
                # children before their root's own entry: only an incremental on top of a
                # staging root that exists already may do that
                raise ChainBroken(f"member {'/'.join(parts)!r} arrived before its root directory")
            dirs.append((root, os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)))
        depth = 0
        limit = min(len(want), len(dirs) - 1)
        while depth < limit and dirs[depth + 1][0] == want[depth]:
            depth += 1
        while len(dirs) > depth + 1:
            os.close(dirs.pop()[1])
        for part in want[depth:]:
            # an honest archive carries a directory's own member before its children,
            # so a link or file still in the way means a write through it: refuse
            dirs.append((part, _open_dir_nofollow(dirs[-1][1], part, create=True, replace=False)))
        return dirs[-1][1]

    def _close_dirs(self) -> None:
        while self._dirs:
            os.close(self._dirs.pop()[1])

    @contextlib.contextmanager
    def _dirs_closed(self) -> Iterator[None]:
        try:
            yield
        finally:
            self._close_dirs()

    def _apply_delta(self, tar: tarfile.TarFile, member: tarfile.TarInfo, opener: Callable[[int], int]) -> None:
        """Rebuild a file from its previous version (already in staging) and the changed blocks.

        The whole file's sha256 is checked against the index afterwards (make_equal)."""
        headers = member.pax_headers
        try:
            length = int(headers[DELTA_LENGTH])
            block_size = int(headers[DELTA_BLOCK_SIZE])
            if not 0 < block_size <= MAX_DELTA_BLOCK or not 0 <= length <= MAX_DELTA_LENGTH:
                raise ValueError("block size or length out of bounds")
            changed = decode_ranges(headers.get(DELTA_BLOCKS, ""), block_count(length, block_size))
        except (KeyError, ValueError) as exc:
            raise HostileArchive(f"delta member {member.name!r} has bad headers: {exc}") from None
        expected = sum(min(block_size, length - n * block_size) for n in changed)
        if member.size != expected:
            raise HostileArchive(f"delta member {member.name!r} carries {member.size} bytes, its blocks need {expected}")
        try:
            fd = opener(os.O_RDWR | os.O_NOFOLLOW)
        except OSError as exc:
            raise ChainBroken(f"{member.name}: a delta with no earlier version to apply it to ({exc.strerror})") from None
        with os.fdopen(fd, "r+b") as target:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ChainBroken(f"{member.name}: a delta on top of something that is not a regular file")
            source = tar.extractfile(member)
            assert source is not None
            for number in changed:
                want = min(block_size, length - number * block_size)
                block = source.read(want)
                if len(block) != want:
                    raise HostileArchive(f"delta member {member.name!r} ends early")
                os.pwrite(fd, block, number * block_size)
                self.stats.bytes += want
            target.truncate(length)

    def _copy_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, fd: int, key: str) -> None:
        """Write a member's data, hashing it on the way; runs of zero blocks become holes (a
        sparse file stays sparse). Owns `fd` (closed here)."""
        try:
            if self.block_min is not None and member.size >= self.block_min:
                hasher = Hasher(True)
                self._write_data(tar, member, fd, hasher.update)
                _, blocks = hasher.finish()
                assert blocks is not None
                self.written.hashed(key, hasher.whole.digest(), blocks)
            else:  # most files: the whole-file sha256 only, without a Hasher's buffers
                digest = hashlib.sha256()
                self._write_data(tar, member, fd, digest.update)
                self.written.hashed(key, digest.digest())
        finally:
            os.close(fd)

    def _write_data(self, tar: tarfile.TarFile, member: tarfile.TarInfo, fd: int,
                    update: Callable[[bytes], None]) -> None:
        size = member.size
        if not size:
            return
        if member.sparse is None and getattr(tar, "fileobj", None) is self._reader is not None:
            # extract()'s archive: the data lies as is at its offset, read without tarfile's layers
            self._reader.seek(member.offset_data)
            source: BinaryIO | ForwardReader = self._reader
        else:
            source = tar.extractfile(member)  # type: ignore[assignment]
            assert source is not None
        offset = 0
        end = 0  # where the last byte written ends: short of `offset`, the file ends in a hole
        while offset < size:
            # exactly what is left: no extra read to find the member's end
            chunk = source.read(min(COPY_CHUNK, size - offset))
            if not chunk:
                raise HostileArchive(f"member {member.name!r} ends early")
            update(chunk)
            view = memoryview(chunk)
            if ZERO_BLOCK not in chunk:  # no run of a zero block's length: no hole to make
                _pwrite_all(fd, view, offset)
                offset += len(chunk)
                end = offset
                self.stats.bytes += len(chunk)
                continue
            start = 0
            for at in range(0, len(chunk), HOLE_BLOCK):
                if view[at:at + HOLE_BLOCK] == ZERO_BLOCK[:len(view[at:at + HOLE_BLOCK])]:
                    if at > start:
                        _pwrite_all(fd, view[start:at], offset + start)
                        end = offset + at
                    start = at + HOLE_BLOCK
            if start < len(chunk):
                _pwrite_all(fd, view[start:], offset + start)
                end = offset + len(chunk)
            offset += len(chunk)
            self.stats.bytes += len(chunk)
        if end < offset:
            os.ftruncate(fd, offset)  # a file that ends in a hole gets its length


class ForwardReader:
    """A stream read front to back, seekable forward only (skipping reads and drops what lies
    between), as tarfile's stream mode reads it, with one buffer of READ_SIZE refilled from
    the source and sliced without copying what is left of it on every read."""

    READ_SIZE = 1024 * 1024

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.position = 0  # of the next byte read, in the stream
        self.buffer = b""
        self.at = 0  # of the next byte read, in the buffer

    def tell(self) -> int:
        return self.position

    def seekable(self) -> bool:
        return True

    def seek(self, target: int, whence: int = 0) -> int:
        if whence != 0 or target < self.position:
            raise tarfile.ReadError("the archive would be read backwards")
        while target > self.position:
            if not self.read(min(target - self.position, self.READ_SIZE)):
                break  # past the end: the next read says so
        return self.position

    def peek(self, size: int) -> bytes:
        """The next `size` bytes (fewer at the end of the stream), not read yet."""
        while len(self.buffer) - self.at < size:
            chunk = self.source.read(max(self.READ_SIZE, size))
            if not chunk:
                break
            self.buffer, self.at = self.buffer[self.at:] + chunk, 0
        return self.buffer[self.at:self.at + size]

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise ValueError("ForwardReader reads a given size")
        left = len(self.buffer) - self.at
        if size <= left:
            data = self.buffer[self.at:self.at + size]
            self.at += size
            self.position += size
            return data
        pieces = [self.buffer[self.at:]] if left else []
        got = left
        self.buffer, self.at = b"", 0
        while got < size:
            chunk = self.source.read(max(self.READ_SIZE, size - got))
            if not chunk:
                break
            need = size - got
            if len(chunk) > need:
                self.buffer, self.at = chunk, need
                chunk = chunk[:need]
            pieces.append(chunk)
            got += len(chunk)
        self.position += got
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """pwrite may write less than asked (a hash taken while writing must describe the file)."""
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def read_spooled_index(path: str, origin: str) -> Index:
    try:
        return Index.load(path)
    except FileNotFoundError:
        raise ChainBroken(f"{origin} carries no index member") from None


def open_spooled_index(path: str, origin: str) -> tuple[Index, Iterable[Entry]] | None:
    """The spooled index as a stream: its header and its entries in order_key order, each
    checked as it comes (checked_structure: a hostile index fails at the first entry that
    makes it so). None when its header does not say its entries are in that order (an index
    written before): the caller reads it whole. The file stays open until the stream ends."""
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise ChainBroken(f"{origin} carries no index member") from None
    try:
        head, entries = read_lines(handle, path)
    except BaseException:
        handle.close()
        raise
    if not head.ordered:
        handle.close()
        return None

    def stream() -> Iterator[Entry]:
        with handle:
            yield from checked_structure(head.roots, entries)

    return head, stream()


def _never_carried(root: str) -> Callable[[Entry], None]:
    """What a restore's merge does with an index entry the walk of staging went past."""
    def fail(entry: Entry) -> None:
        raise ChainBroken(f"{root}/{entry.path} is in the index but no snapshot of the chain carried it")
    return fail


def make_equal(staging: str, root: str, entries: Iterable[Entry], blocks_dir: str | None = None,
               delta_min: int | None = None, private_root: bool = False,
               written: WrittenHashes | None = None) -> None:
    """Make one root's staging tree hold exactly the index's entries, verified, with their metadata.

    `entries`: the root's entries of the index, in order_key order (a stream: the index is
    never held whole). The staging tree is walked in that order and merged against them: what
    the index lacks is removed, an entry no snapshot carried is an error, the type, size and
    sha256 of every file and the target of every link are checked, then owners, modes and
    mtimes applied (a directory's after its contents; its type checked before anything below
    it is touched). With `blocks_dir`, files of at least `delta_min` bytes get their block
    hashes written there in the same read, so the next backup on this machine can store
    deltas. With `private_root`, a directory root keeps its staging mode (0700) and gets its
    own mode once it is in place (journal.py). `written` (StagingWriter.written): the hashes
    taken while the files were written; a file found there of the recorded size is not read
    again.
    """
    cursor = Cursor(entries, on_passed=_never_carried(root))
    top = cursor.take(root)
    if top is None:
        raise ChainBroken(f"the index has no entry for root {root}")
    settle = _Settler(root, blocks_dir, delta_min, written)
    try:
        st = os.lstat(staging)
    except FileNotFoundError:
        raise ChainBroken(f"{root} is in the index but no snapshot of the chain carried it") from None
    settle.check_type(st, top, "")
    if top.type == DIR:
        _walk_staging(staging, "", root, cursor, settle)
        settle.directory(staging, top, st, STAGING_DIR_MODE if private_root else top.mode)
    else:
        settle.leaf(staging, "", root, top, st)
    cursor.finish()  # index entries past the last one the walk met


def _walk_staging(dir_path: str, rel_dir: str, dir_key: str, cursor: Cursor, settle: "_Settler") -> None:
    root = settle.root
    for child in listing_by_name(dir_path):
        key = f"{dir_key}\0{child.name}"
        rel = child.name if not rel_dir else f"{rel_dir}/{child.name}"
        entry = cursor(root, rel, key)
        if entry is None:  # not in the index: a path a later snapshot of the chain no longer holds
            if child.is_dir(follow_symlinks=False):
                shutil.rmtree(child.path)
            else:
                os.unlink(child.path)
            continue
        st = child.stat(follow_symlinks=False)
        settle.check_type(st, entry, rel)
        if entry.type == DIR:
            _walk_staging(child.path, rel, key, cursor, settle)
            settle.directory(child.path, entry, st, entry.mode)
        else:
            settle.leaf(child.path, rel, key, entry, st)


class _Settler:
    """Checks one staging path against its index entry and gives it the entry's metadata."""

    def __init__(self, root: str, blocks_dir: str | None, delta_min: int | None,
                 written: WrittenHashes | None) -> None:
        self.root, self.blocks_dir, self.delta_min, self.written = root, blocks_dir, delta_min, written
        self.as_root = os.geteuid() == 0  # only root may give files away; anyone else owns what it writes

    def check_type(self, st: os.stat_result, entry: Entry, rel: str) -> None:
        actual = (FILE if stat.S_ISREG(st.st_mode) else DIR if stat.S_ISDIR(st.st_mode)
                  else SYMLINK if stat.S_ISLNK(st.st_mode) else "other")
        if actual != entry.type:
            raise ChainBroken(f"{self.root}/{rel} is a {actual} after extraction, the index says {entry.type}")

    def leaf(self, path: str, rel: str, key: str, entry: Entry, st: os.stat_result) -> None:
        """`key`: the entry's order_key (how `written` is asked)."""
        root = self.root
        if entry.type == SYMLINK:
            if os.readlink(path) != entry.target:
                raise ChecksumMismatch(f"{root}/{rel}: symlink target differs from the index")
            _chown(path, (st.st_uid, st.st_gid), entry, self.as_root)
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
            return
        if st.st_size != entry.content_size:
            raise ChecksumMismatch(f"{root}/{rel}: size {st.st_size} after extraction, the index says {entry.content_size}")
        with_blocks = self.blocks_dir is not None and self.delta_min is not None and st.st_size >= self.delta_min
        known = self.written.get(key) if self.written is not None else None
        if isinstance(known, tuple):  # hashed with its block hashes
            sha256, blocks = known[0].hex(), known[1] if with_blocks else None
        elif known is not None and not with_blocks:
            sha256, blocks = known.hex(), None
        else:
            sha256, blocks = _hash_file(path, with_blocks)
        if sha256 != entry.sha256:
            raise ChecksumMismatch(f"{root}/{rel}: sha256 differs from the index")
        if blocks is not None:
            blocks.save(os.path.join(self.blocks_dir, sidecar_name(root, rel)))  # type: ignore[arg-type]
        # what the file already has (its owner, the mode it was made with) is not set again
        chowned = _chown(path, (st.st_uid, st.st_gid), entry, self.as_root)  # before chmod: chown clears set-id bits
        if chowned or stat.S_IMODE(st.st_mode) != entry.mode:
            os.chmod(path, entry.mode, follow_symlinks=False)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)

    def directory(self, path: str, entry: Entry, st: os.stat_result, mode: int) -> None:
        """After what it holds (`st`: its lstat from before)."""
        chowned = _chown(path, (st.st_uid, st.st_gid), entry, self.as_root)
        if chowned or stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode, follow_symlinks=False)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)


def _chown(path: str, owner: tuple[int, int], entry: Entry, as_root: bool) -> bool:
    """Give the entry its recorded owner (as root only; `owner`: the uid and gid it has now);
    True when that changed anything."""
    if as_root and entry.uid is not None and entry.gid is not None and owner != (entry.uid, entry.gid):
        os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
        return True
    return False


def _hash_file(path: str, with_blocks: bool) -> tuple[str, BlockHashes | None]:
    hasher = Hasher(with_blocks)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            hasher.update(chunk)
    return hasher.finish()
