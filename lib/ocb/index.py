"""The snapshot index: what exists in the state at one moment, and how two moments differ.

Owns scanning the roots (lstat only, never following a symlink), the exclude rules, the
on-disk form of an index (JSON lines in the work dir and the cache), and change detection
against the previous index. It never reads file contents except to hash them on request, and
never writes outside the path it is given.
"""

from __future__ import annotations

import fnmatch
import functools
import gc
import hashlib
import io
import re
import json
import marshal
import operator
import os
import shutil
import stat
import sys
from dataclasses import dataclass, field, fields
from contextlib import contextmanager
from typing import IO, Callable, Iterable, Iterator

from .config import ROOT_NAME, Root
from .errors import BadDocument, HostileArchive, RuntimeFailure
from .fsutil import atomic_write

INDEX_VERSION = 1

FILE, DIR, SYMLINK = "file", "dir", "symlink"

# What decides "changed" (DESIGN.md): not inode or ctime, which every restore changes. For a
# SQLite database, its -wal companion's size and mtime too: committed rows may sit there only.
COMPARED_FIELDS = ("type", "size", "mtime_ns", "mode", "target", "wal")

SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


@dataclass(slots=True)
class Entry:
    """One path of one root. `path` is relative to the root; "" is the root itself."""

    root: str
    path: str
    type: str
    mode: int
    size: int
    mtime_ns: int
    sha256: str | None = None
    target: str | None = None
    # set by ocb-plan on entries the next archive must carry (new or changed); not persisted
    # in the final index
    pack: bool = False
    # SQLite databases: archived as a consistent copy taken through the backup API, whose
    # size is `stored_size`; `size`/`mtime_ns`/`wal` describe the live file for change detection
    db: bool = False
    wal: list[int] | None = None
    stored_size: int | None = None
    # set by ocb-plan on changed files: the parent's hash of this path, so ocb-pack can tell
    # whether the cached block hashes describe the version a restore will build upon
    base_sha256: str | None = None
    # numeric owner (None in indexes written before owners were recorded); a restore run as
    # root sets it, one run as another user leaves its own
    uid: int | None = None
    gid: int | None = None
    # the snapshots of the chain whose archives carry this entry's content, oldest first (a
    # whole copy, then the block deltas on top of it), so that restoring some paths fetches
    # only those snapshots; None: not recorded (an index from before, or a delta on such a base)
    held: list[str] | None = None
    # set by ocb-plan on changed files: the parent's `held` of this path (not persisted in the
    # final index), for ocb-pack to extend when it stores the file as a delta
    base_held: list[str] | None = None

    @property
    def content_size(self) -> int:
        """The size of what the archive holds (and a restore writes) for this entry."""
        return self.stored_size if self.db and self.stored_size is not None else self.size

    @property
    def key(self) -> tuple[str, str]:
        return (self.root, self.path)

    @property
    def member_name(self) -> str:
        return self.root if self.path == "" else f"{self.root}/{self.path}"

    def same_as(self, other: "Entry") -> bool:
        return _compared(self) == _compared(other)

    def keep_persisted(self) -> None:
        """Reduce this entry, in place, to what a snapshot index keeps: what to_json writes
        and from_json reads back, nothing else (not what ocb-plan notes for ocb-pack, no field
        of another type's). An index of such entries and the same index loaded from its JSON
        lines are equal (tests/unit/test_index.py), so its rows copy can stand for the JSON
        lines. In place: a copy of every entry was a second index in memory."""
        if self.type != FILE:
            self.sha256 = None
        if self.type != SYMLINK:
            self.target = None
        if not self.db:
            self.wal = self.stored_size = None
        if self.uid is None:
            self.gid = None
        self.pack, self.base_sha256, self.base_held = False, None, None

    def to_json(self, with_pack: bool = False) -> dict:
        record = {"root": self.root, "path": self.path, "type": self.type, "mode": self.mode,
                  "size": self.size, "mtime_ns": self.mtime_ns}
        if self.type == FILE:
            record["sha256"] = self.sha256
        if self.type == SYMLINK:
            record["target"] = self.target
        if self.db:
            record.update(db=True, wal=self.wal, stored_size=self.stored_size)
        if self.uid is not None:
            record.update(uid=self.uid, gid=self.gid)
        if self.held is not None:
            record["held"] = self.held
        if with_pack and self.pack:
            record["pack"] = True
            if self.base_sha256:
                record["base_sha256"] = self.base_sha256
            if self.base_held is not None:
                record["base_held"] = self.base_held
        return record

    @classmethod
    def from_json(cls, record: dict, shared: dict | None = None) -> "Entry":
        """`shared`: one dict for all the entries of an index, through which the values that
        repeat across them (root names, types, `held` lists) are one object each instead of
        one per entry: a third of a loaded index's memory (DESIGN: memory must not grow with
        the files more than it must). It also remembers the `held` lists already checked.
        (Positional arguments, in field order: this runs once per entry of every index read,
        tens of thousands of times per stage.)"""
        get = record.get
        try:
            root, kind, held = record["root"], record["type"], get("held")
            if shared is not None:
                if isinstance(root, str):
                    root = shared.setdefault(root, root)
                if isinstance(kind, str):
                    kind = shared.setdefault(kind, kind)
                if isinstance(held, list):
                    known = shared.get(("held", *held)) if all(isinstance(i, str) for i in held) else None
                    if known is None:
                        known = shared[("held", *_held(held))] = held  # type: ignore[misc]
                    held = known
                else:
                    held = _held(held)
            else:
                held = _held(held)
            entry = cls(root, record["path"], kind, int(record["mode"]), int(record["size"]),
                        int(record["mtime_ns"]), get("sha256"), get("target"), bool(get("pack", False)),
                        bool(get("db", False)), get("wal"), get("stored_size"), get("base_sha256"),
                        _owner(get("uid")), _owner(get("gid")), held, _held(get("base_held")))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadDocument(f"index entry is malformed ({exc!r}): {str(record)[:200]}") from None
        if entry.type not in (FILE, DIR, SYMLINK) or not isinstance(entry.root, str) or not isinstance(entry.path, str):
            raise BadDocument(f"index entry has an unknown type or bad path: {str(record)[:200]}")
        return entry


ENTRY_FIELDS = tuple(f.name for f in fields(Entry))
# an entry's fields as one tuple, taken in C: a generator of getattr per field was most of
# the time a rows file and a plan's comparison took per entry
_row_of = operator.attrgetter(*ENTRY_FIELDS)
_compared = operator.attrgetter(*COMPARED_FIELDS)
ROWS_CHUNK = 1000  # entries per marshal object of a rows file


@dataclass
class Index:
    """All entries of a snapshot plus which roots existed when it was taken."""

    roots: dict[str, dict] = field(default_factory=dict)  # name -> {"kind", "present"}
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    snapshot: str | None = None
    # the patterns the snapshot was taken with: a restore in place carries what they left out
    # over from the target (None: an index from before they were recorded)
    excludes: list[str] | None = None
    includes: list[str] | None = None

    def add(self, entry: Entry) -> None:
        self.entries[entry.key] = entry

    def files(self) -> Iterator[Entry]:
        return (e for e in self.entries.values() if e.type == FILE)

    def write(self, handle: IO[str], with_pack: bool = False) -> None:
        header = {"ocb_index": INDEX_VERSION, "snapshot": self.snapshot, "roots": self.roots}
        if self.excludes is not None:
            header.update(excludes=list(self.excludes), includes=list(self.includes or ()))
        handle.write(json.dumps(header) + "\n")
        for entry in sorted(self.entries.values(), key=lambda e: (e.root, e.path)):
            handle.write(json.dumps(entry.to_json(with_pack)) + "\n")

    def save(self, path: str, with_pack: bool = False, durable: bool = True) -> None:
        """Write atomically: a crash leaves the old file or the new one, never half of one
        (`durable=False`: a work-dir scratch file, not synced; fsutil)."""
        with atomic_write(path, durable=durable) as raw:
            handle = io.TextIOWrapper(raw, encoding="utf-8")
            self.write(handle, with_pack)
            handle.flush()
            handle.detach()  # atomic_write closes the file

    @classmethod
    def read(cls, lines: Iterable[str], origin: str) -> "Index":
        iterator = iter(lines)
        try:
            header = json.loads(next(iterator))
        except (StopIteration, json.JSONDecodeError):
            raise BadDocument(f"index {origin} is empty or not JSON lines") from None
        if not isinstance(header, dict) or header.get("ocb_index") != INDEX_VERSION:
            raise BadDocument(f"index {origin} has an unknown header: {str(header)[:200]}")
        index = cls(roots=dict(header.get("roots") or {}), snapshot=header.get("snapshot"),
                    excludes=_patterns(header.get("excludes"), origin), includes=_patterns(header.get("includes"), origin))
        shared: dict = {}
        entries, from_json, decode = index.entries, Entry.from_json, json.JSONDecoder().decode
        for number, line in enumerate(iterator, start=2):
            try:
                record = decode(line)
            except json.JSONDecodeError:
                raise BadDocument(f"index {origin} line {number} is not JSON") from None
            if not isinstance(record, dict):
                raise BadDocument(f"index entry is malformed (not an object): {str(record)[:200]}")
            entry = from_json(record, shared)
            entries[(entry.root, entry.path)] = entry
        return index

    @classmethod
    def load(cls, path: str) -> "Index":
        with open(path, encoding="utf-8") as handle, no_gc():
            return cls.read(handle, path)

    # -- the same index as marshal's rows: the plan index, and the cache's copy of its index --
    # Never a snapshot's format (that is JSON lines): rows are Entry's fields in order, which
    # any version may change, and marshal's form is the interpreter's. Loading 30,000 entries
    # takes a fifth of the JSON lines' time (docs/performance.md, round 4).

    def save_rows(self, path: str, facts: dict | None = None) -> None:
        """Write the rows file: a header line (the interpreter's marshal and the caller's
        `facts`), then the body (_row_pieces), written as it is made: one chunk of rows in memory at
        a time. Not synced (scratch, or a copy the cache can do without): a torn file fails
        load_rows' checks."""
        with atomic_write(path, durable=False) as out:
            out.write(_rows_header(facts))
            for piece in self._row_pieces():
                out.write(piece)

    @classmethod
    def load_rows(cls, path: str, facts: dict | None = None) -> "Index":
        """The index save_rows wrote with the same `facts`, read a piece at a time (never the
        whole file in memory beside the entries). OSError when unreadable; ValueError when it
        is not one whole (torn, of another interpreter or Entry layout, of other facts)."""
        with open(path, "rb") as handle:
            if handle.readline() != _rows_header(facts):
                raise ValueError(f"{path} is not an index in rows of this interpreter")
            return cls._read_rows(handle.read)

    def save_rows_beside(self, path: str) -> None:
        """The rows copy of the index.jsonl just written at `path` from this index (whose
        entries were reduced by keep_persisted, or which was loaded from that file): load_beside then
        reads the copy instead, as long as the file is as it is now."""
        self.save_rows(rows_beside(path), _copy_facts(path))

    @staticmethod
    def copy_rows_beside(source: str, copy: str) -> bool:
        """Give `copy` (an index.jsonl just copied byte for byte from `source`) the rows copy
        `source` has, without building the rows again: the same body under a header naming
        `copy`. False, and nothing written, when `source` has no whole-looking rows copy of
        itself as it is now (its body's own sha256 is checked at load, as for any rows)."""
        try:
            with open(rows_beside(source), "rb") as rows:
                if rows.readline() != _rows_header(_copy_facts(source)):
                    return False
                with atomic_write(rows_beside(copy), durable=False) as out:
                    out.write(_rows_header(_copy_facts(copy)))
                    shutil.copyfileobj(rows, out)
        except OSError:
            return False
        return True

    @classmethod
    def load_beside(cls, path: str) -> "Index":
        """The index.jsonl at `path`, read from its rows copy when there is a whole one of the
        file as it is now (size, mtime), else from the file itself."""
        try:
            return cls.load_rows(rows_beside(path), _copy_facts(path))
        except (OSError, ValueError):
            return cls.load(path)

    def _row_pieces(self) -> Iterator[bytes]:
        """The body of a rows file: marshal objects one after the other, each after its length
        (8 bytes, little-endian): the header (Entry's field names, roots, snapshot, patterns),
        chunks of ROWS_CHUNK tuples of Entry's fields, and last ("end", the sha256 of all before
        it). Within a chunk the values many entries share (roots, types, `held` lists) are
        written once and read back as one object."""
        digest = hashlib.sha256()

        def framed(value: object) -> bytes:
            piece = marshal.dumps(value)
            return len(piece).to_bytes(8, "little") + piece

        head = framed((ENTRY_FIELDS, self.roots, self.snapshot, self.excludes, self.includes))
        digest.update(head)
        yield head
        entries = list(self.entries.values())
        for at in range(0, len(entries), ROWS_CHUNK):
            chunk = framed(list(map(_row_of, entries[at:at + ROWS_CHUNK])))
            digest.update(chunk)
            yield chunk
        yield framed(("end", digest.hexdigest()))

    @classmethod
    def _read_rows(cls, read: "Callable[[int], bytes]") -> "Index":
        digest = hashlib.sha256()  # of every piece before the last

        def piece() -> object:
            frame = read(8)
            size = int.from_bytes(frame, "little")
            data = read(size) if len(frame) == 8 and size else b""
            if not data or len(data) != size:
                raise EOFError("the body ends inside a piece")
            value = marshal.loads(data)
            if not (isinstance(value, tuple) and value[:1] == ("end",)):
                digest.update(frame)
                digest.update(data)
            return value

        with no_gc():
            try:
                names, roots, snapshot, excludes, includes = piece()  # type: ignore[misc]
                if names != ENTRY_FIELDS:
                    raise ValueError("index rows of another Entry layout")
                index = cls(roots=roots, snapshot=snapshot, excludes=excludes, includes=includes)
                entries = index.entries
                while not isinstance(rows := piece(), tuple):
                    for row in rows:  # type: ignore[attr-defined]
                        entry = Entry(*row)
                        entries[(entry.root, entry.path)] = entry
            except (EOFError, TypeError, ValueError) as exc:
                raise ValueError(f"not an index in rows: {exc}") from None
        if rows != ("end", digest.hexdigest()) or read(1):
            raise ValueError("not an index in rows: its sha256 differs (torn or damaged)")
        return index


def rows_beside(path: str) -> str:
    """Where the rows copy of the index.jsonl at `path` lies: index.rows beside index.jsonl."""
    return (path[:-len(".jsonl")] if path.endswith(".jsonl") else path) + ".rows"


def _copy_facts(path: str) -> dict:
    """What names the index.jsonl a rows copy copies: its name, size and mtime as they are now."""
    st = os.stat(path)
    return {"copy_of": os.path.basename(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _rows_header(facts: dict | None) -> bytes:
    return json.dumps({"ocb_index_rows": 1, "python": list(sys.version_info[:2]), "marshal": marshal.version,
                       **(facts or {})}).encode() + b"\n"


@contextmanager
def no_gc() -> Iterator[None]:
    """Entries hold no reference cycles, so while thousands are made at once the cyclic
    collector has nothing to find; running it as the heap grows was a tenth of a plan's time.
    What was made is then frozen (gc.freeze: left out of every later collection, still freed
    by reference counting when dropped): otherwise the first collection after this block, with
    its allocation count far past the threshold, walked every entry again (7 % of a skip)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was:
            gc.enable()


def _owner(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise BadDocument(f"index entry has a bad uid or gid: {value!r}")
    return value


def _patterns(value: object, origin: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise BadDocument(f"index {origin} has bad exclude or include patterns")
    return value


def is_excluded(excludes: list[str], includes: list[str], rel: str, name: str) -> bool:
    """Whether the scan leaves `rel` (its last component `name`) out."""
    return bool(excludes) and _matches(excludes, rel, name) and not _matches(includes, rel, name)


def _matches(patterns: list[str], rel: str, name: str) -> bool:
    by_name, by_path = _compiled(tuple(patterns))
    return bool(by_name and by_name.match(name) or by_path and by_path.match(rel))


@functools.lru_cache(maxsize=16)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern | None, re.Pattern | None]:
    """The patterns as two regexes, one call per entry instead of one per pattern: those
    without "/" match the last component, those with "/" the path (or any tail of it after a
    "/"), each as fnmatch.fnmatchcase would."""
    names = [fnmatch.translate(p) for p in patterns if "/" not in p]
    paths = [fnmatch.translate(t) for p in patterns if "/" in p for t in (p, "*/" + p)]
    return (re.compile("|".join(names)) if names else None, re.compile("|".join(paths)) if paths else None)


@dataclass
class ScanReport:
    missing_roots: list[str] = field(default_factory=list)
    skipped_special: list[str] = field(default_factory=list)
    excluded: int = 0
    # entries that cannot be read (permission denied, name too long, I/O error): left out of
    # the snapshot with what they hold, each {"path": "<root>/<rel>", "reason": ...}
    unreadable: list[dict] = field(default_factory=list)

    def skip(self, root: str, rel: str, exc: OSError) -> None:
        self.unreadable.append({"path": f"{root}/{rel}", "reason": exc.strerror or str(exc)})


def _entry_from_stat(root: str, rel: str, st: os.stat_result, full_path: str) -> Entry | None:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        return Entry(root, rel, FILE, mode, st.st_size, st.st_mtime_ns, uid=st.st_uid, gid=st.st_gid)
    if stat.S_ISDIR(st.st_mode):
        return Entry(root, rel, DIR, mode, 0, st.st_mtime_ns, uid=st.st_uid, gid=st.st_gid)
    if stat.S_ISLNK(st.st_mode):
        return Entry(root, rel, SYMLINK, mode, 0, st.st_mtime_ns, target=os.readlink(full_path),
                     uid=st.st_uid, gid=st.st_gid)
    return None


def _is_sqlite(path: str, entry: Entry, previous: Index | None) -> bool:
    """SQLite is recognised by its header, not its name; an unchanged file keeps its verdict."""
    if entry.size < 512:
        return False
    old = previous.entries.get(entry.key) if previous else None
    if old is not None and old.type == FILE and (old.size, old.mtime_ns) == (entry.size, entry.mtime_ns):
        return old.db
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.read(fd, len(SQLITE_MAGIC)) == SQLITE_MAGIC
    finally:
        os.close(fd)


def scan(roots: list[Root], excludes: list[str], includes: list[str],
         previous: Index | None = None) -> tuple[Index, ScanReport]:
    """lstat every entry under every root; sockets, fifos and devices are reported, not kept.

    SQLite databases are flagged (`db`) and their -wal/-shm/-journal companions left out: the
    database's copy through SQLite's backup API holds what they hold. `previous` spares
    re-reading the header of files unchanged since it.
    """
    index = Index()
    report = ScanReport()
    with no_gc():
        for root in roots:
            _scan_root(root, index, report, excludes, includes, previous)
    return index, report


def _scan_root(root: Root, index: Index, report: ScanReport, excludes: list[str], includes: list[str],
               previous: Index | None) -> None:
    path, link = root.path, None
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            # a root that is a link (state on a volume): what it points to is the root
            link, path = os.readlink(path), os.path.realpath(path)
            st = os.lstat(path)
    except FileNotFoundError:
        index.roots[root.name] = {"kind": root.kind, "present": False, **({"link": link} if link else {})}
        report.missing_roots.append(root.name if not link else f"{root.name} (the link {root.path} points nowhere)")
        return
    expected_dir = root.kind == "dir"
    if expected_dir and not stat.S_ISDIR(st.st_mode) or not expected_dir and not stat.S_ISREG(st.st_mode):
        raise RuntimeFailure(f"root {root.name} ({root.path}) is not a {'directory' if expected_dir else 'regular file'}")
    index.roots[root.name] = {"kind": root.kind, "present": True, **({"link": link} if link else {})}
    top = _entry_from_stat(root.name, "", st, path)
    if top is not None and top.type == FILE and _is_sqlite(path, top, previous):
        top.db = True
        top.wal = wal_signature(path)
    index.add(top)
    if expected_dir:
        _walk(root, path, "", index, report, excludes, includes, previous)


def wal_signature(db_path: str) -> list[int] | None:
    try:
        st = os.lstat(db_path + "-wal")
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


EUID = os.geteuid()


def _owner_readable(st: os.stat_result) -> bool:
    """A file this user owns with its owner-read bit set is readable, with no access(2) call per
    file (most of a home): the owner's ACL entry is the owner bits, so no ACL can take that
    away. Any other file is asked (a group or other bit can be overridden by a named ACL entry)."""
    return st.st_uid == EUID and bool(st.st_mode & stat.S_IRUSR)


def _check_readable(path: str) -> None:
    """Raise the real error for a file os.access called unreadable.

    os.access says False for a file that vanished too (a writer renamed its directory between
    the scan's stat and the check); opening it tells FileNotFoundError, a vanished entry left
    out silently, from PermissionError, an unreadable one named and skipped.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    os.close(fd)  # readable after all (its mode changed since): it is backed up


def _walk(root: Root, dir_path: str, rel_dir: str, index: Index, report: ScanReport,
          excludes: list[str], includes: list[str], previous: Index | None) -> None:
    try:
        with os.scandir(dir_path) as listing:
            children = sorted(listing, key=lambda d: d.name)
    except FileNotFoundError:
        return  # removed while we scanned: it is simply not in this snapshot
    except OSError as exc:
        if not rel_dir:
            raise RuntimeFailure(f"cannot read directory {dir_path}: {exc.strerror}") from None
        # one unreadable directory (mode 000, another owner's, a name too long, an I/O error)
        # does not stop the backup: it and what it holds are left out, and named
        index.entries.pop((root.name, rel_dir), None)
        report.skip(root.name, rel_dir, exc)
        return
    kept: list[tuple[os.DirEntry, Entry]] = []
    for child in children:
        rel = child.name if not rel_dir else f"{rel_dir}/{child.name}"
        if excludes and _matches(excludes, rel, child.name) and not _matches(includes, rel, child.name):
            report.excluded += 1
            continue
        try:
            st = child.stat(follow_symlinks=False)
            entry = _entry_from_stat(root.name, rel, st, child.path)
            if (entry is not None and entry.type == FILE and not _owner_readable(st)
                    and not os.access(child.path, os.R_OK)):
                _check_readable(child.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            report.skip(root.name, rel, exc)
            continue
        if entry is None:
            report.skipped_special.append(f"{root.name}/{rel}")
            continue
        kept.append((child, entry))
    companions: set[str] = set()
    for child, entry in kept:
        if entry.type == FILE and _is_sqlite(child.path, entry, previous):
            entry.db = True
            entry.wal = wal_signature(child.path)
            companions.update(child.name + suffix for suffix in SQLITE_COMPANIONS)
    for child, entry in kept:
        if child.name in companions and entry.type == FILE:
            continue
        index.add(entry)
        if entry.type == DIR:
            _walk(root, child.path, entry.path, index, report, excludes, includes, previous)


@dataclass
class Changes:
    new: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    bytes_to_pack: int = 0

    @property
    def any(self) -> bool:
        return bool(self.new or self.changed or self.deleted)

    def as_dict(self) -> dict:
        return {"new": self.new, "changed": self.changed, "deleted": self.deleted,
                "unchanged": self.unchanged, "bytes_to_pack": self.bytes_to_pack}


def mark_changes(current: Index, previous: Index | None) -> Changes:
    """Flag what the next archive must carry; copy hashes of unchanged files from `previous`.

    With no previous index (a full snapshot) every entry is carried.
    """
    changes = Changes()
    for key, entry in current.entries.items():
        old = previous.entries.get(key) if previous else None
        if old is not None and entry.same_as(old) and entry.db == old.db and (entry.type != FILE or old.sha256):
            entry.sha256 = old.sha256
            entry.stored_size = old.stored_size
            entry.held = old.held
            entry.pack = False
            changes.unchanged += 1
            continue
        entry.pack = True
        if old is not None and old.type == FILE and entry.type == FILE:
            entry.base_sha256 = old.sha256
            entry.base_held = old.held
        if old is None:
            changes.new += 1
        else:
            changes.changed += 1
        if entry.type == FILE:
            changes.bytes_to_pack += entry.size
    if previous is not None:
        changes.deleted = sum(1 for key in previous.entries if key not in current.entries)
    return changes


def _held(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise ValueError(f"held is not a list of snapshot ids: {value!r}")
    return value  # never changed in place: entries may share one list (Entry.from_json)


def split_member(name: str) -> tuple[str, list[str]]:
    """'root/a/b' -> ('root', ['a', 'b']); refuses anything that could leave the root."""
    if "\0" in name:
        raise HostileArchive(f"member name contains NUL: {name!r}")
    if name.startswith("/"):
        raise HostileArchive(f"member has an absolute path: {name!r}")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise HostileArchive(f"member path has an empty, '.' or '..' component: {name!r}")
    if not ROOT_NAME.match(parts[0]):
        raise HostileArchive(f"member is outside every root: {name!r}")
    return parts[0], parts[1:]


def check_structure(index: Index) -> str | None:
    """What makes an index unrestorable, or None: an entry outside its roots, a path that could
    leave its root, or an entry that does not hang from a directory of the same index (an
    entry below a link, or a file, would be checked and chmod'ed through it, outside the
    target). The one check, for whoever must trust an index."""
    for entry in index.entries.values():
        if entry.root not in index.roots or not ROOT_NAME.match(entry.root):
            return f"the index lists an entry outside its roots: {entry.root!r}"
        if entry.path:
            try:
                split_member(f"{entry.root}/{entry.path}")
            except HostileArchive as exc:
                return str(exc)
            parent = entry.path.rpartition("/")[0]
            holder = index.entries.get((entry.root, parent))
            if holder is None or holder.type != DIR:
                return (f"the index lists {entry.root}/{entry.path} below something that is not "
                        "one of its directories")
    return None
