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
NUL = "\0"
ORDER = "components"  # the index header's word for order_key's order


def order_key(entry: Entry) -> str:
    """The one order of an index's entries: by root name, then by path components, in one
    string (NUL, below any character of a name, for "/" and between the root and the path).
    A directory comes right before what it holds, and a scan that walks the roots by name and
    each directory's names sorted meets its entries in this order. So a stream of one index
    can be merged against a scan, or against another in this order, one entry at a time."""
    return entry.root if not entry.path else f"{entry.root}{NUL}{entry.path.replace('/', NUL)}"


def in_order(index: "Index") -> list[Entry]:
    return sorted(index.entries.values(), key=order_key)


class OutOfOrder(ValueError):
    """Entries given to a RowsWriter out of order_key order."""


def _framed(value: object) -> bytes:
    piece = marshal.dumps(value)
    return len(piece).to_bytes(8, "little") + piece


class RowsWriter:
    """An index written as rows one entry at a time, in order_key order (refused otherwise:
    readers merge it as a stream), one chunk of rows in memory at a time. A rows file is a
    header line (the interpreter's marshal and the caller's `facts`), then the body: marshal objects one after the other, each after its length (8 bytes,
    little-endian): the header (Entry's field names, roots, snapshot, patterns), chunks of
    ROWS_CHUNK tuples of Entry's fields, and last ("end", the sha256 of all before it).
    Within a chunk the values many entries share (roots, types, `held` lists) are written
    once and read back as one object."""

    def __init__(self, out: IO[bytes], head: "Index", facts: dict | None = None) -> None:
        out.write(_rows_header(facts))
        self._out, self._digest = out, hashlib.sha256()
        self._rows: list[tuple] = []
        self._last: str | None = None
        self._put((ENTRY_FIELDS, head.roots, head.snapshot, head.excludes, head.includes))

    def _put(self, value: object) -> None:
        frame = _framed(value)
        self._digest.update(frame)
        self._out.write(frame)

    def add(self, entry: Entry, key: str | None = None) -> None:
        """`key`: the entry's order_key, when the caller has it."""
        if key is None:
            key = order_key(entry)
        if self._last is not None and key <= self._last:
            raise OutOfOrder(f"index entries out of order: {entry.member_name} after {self._last.replace(NUL, '/')}")
        self._last = key
        self._rows.append(_row_of(entry))
        if len(self._rows) == ROWS_CHUNK:
            self._put(self._rows)
            self._rows = []

    def close(self) -> None:
        if self._rows:
            self._put(self._rows)
            self._rows = []
        self._out.write(_framed(("end", self._digest.hexdigest())))


class RowsReader:
    """An index in rows (RowsWriter's), read a chunk at a time: `head` (an Index with no
    entries) at once, the entries, in order, by iterating. OSError when unreadable; ValueError
    when it is not one whole (torn, of another interpreter or Entry layout, of other facts),
    raised at the latest when the iteration reaches its end. rows_intact checks a file whole
    beforehand, for callers that must not act on half of one."""

    def __init__(self, path: str, facts: dict | None = None) -> None:
        self._handle = open(path, "rb")
        self._digest = hashlib.sha256()  # of every piece before the last
        try:
            if self._handle.readline() != _rows_header(facts):
                raise ValueError(f"{path} is not an index in rows of this interpreter")
            try:
                names, roots, snapshot, excludes, includes = self._piece()  # type: ignore[misc]
            except (EOFError, TypeError, ValueError) as exc:
                raise ValueError(f"not an index in rows: {exc}") from None
            if names != ENTRY_FIELDS:
                raise ValueError("index rows of another Entry layout")
            self.head = Index(roots=roots, snapshot=snapshot, excludes=excludes, includes=includes)
        except BaseException:
            self._handle.close()
            raise

    def _piece(self) -> object:
        frame = self._handle.read(8)
        size = int.from_bytes(frame, "little")
        data = self._handle.read(size) if len(frame) == 8 and size else b""
        if not data or len(data) != size:
            raise EOFError("the body ends inside a piece")
        value = marshal.loads(data)
        if not (isinstance(value, tuple) and value[:1] == ("end",)):
            self._digest.update(frame)
            self._digest.update(data)
        return value

    def __iter__(self) -> Iterator[Entry]:
        with self._handle:
            try:
                while not isinstance(rows := self._piece(), tuple):
                    for row in rows:  # type: ignore[attr-defined]
                        yield Entry(*row)
            except (EOFError, TypeError, ValueError) as exc:
                raise ValueError(f"not an index in rows: {exc}") from None
            if rows != ("end", self._digest.hexdigest()) or self._handle.read(1):
                raise ValueError("not an index in rows: its sha256 differs (torn or damaged)")


def rows_intact(path: str, facts: dict | None = None) -> bool:
    """Whether the rows file at `path` is one whole, written with `facts`: its frames and
    their sha256 checked without reading a row (a few ms for 30,000 entries)."""
    try:
        with open(path, "rb") as handle:
            if handle.readline() != _rows_header(facts):
                return False
            digest, last = hashlib.sha256(), b""
            while frame := handle.read(8):
                size = int.from_bytes(frame, "little")
                data = handle.read(size) if len(frame) == 8 and size else b""
                if not data or len(data) != size:
                    return False
                digest.update(last)
                last = frame + data
            return bool(last) and marshal.loads(last[8:]) == ("end", digest.hexdigest())
    except (OSError, EOFError, TypeError, ValueError):
        return False


def _line_encoder() -> Callable[[dict], str]:
    """json.dumps of one entry's record, with one C encoder made once instead of one per call
    (what json.dumps does: a third of its time per entry, and an index is written line by
    line in every pack); the same text. json.dumps itself where the C encoder is missing."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.dumps
    encoder = make(None, None, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return lambda record: "".join(encoder(record, 0))


_json_line = _line_encoder()


class LinesWriter:
    """An index written as JSON lines one entry at a time (the snapshot's format): the header
    line, then one line per entry in the order given."""

    def __init__(self, handle: IO[str], head: "Index", with_pack: bool = False) -> None:
        self._handle, self._with_pack = handle, with_pack
        # "order": what a reader may take the index as a stream for (read_lines); an index
        # written before it says nothing, and is read whole
        header = {"ocb_index": INDEX_VERSION, "snapshot": head.snapshot, "roots": head.roots, "order": ORDER}
        if head.excludes is not None:
            header.update(excludes=list(head.excludes), includes=list(head.includes or ()))
        handle.write(json.dumps(header) + "\n")

    def add(self, entry: Entry) -> None:
        self._handle.write(_json_line(entry.to_json(self._with_pack)) + "\n")


def read_lines(lines: Iterable[str], origin: str) -> tuple["Index", Iterator[Entry]]:
    """An index in JSON lines (LinesWriter's): its header at once (an Index without entries;
    `ordered`: whether the header says its entries follow in order_key order) and its entries,
    one at a time, by iterating (BadDocument on a malformed line, when it is reached)."""
    iterator = iter(lines)
    try:
        header = json.loads(next(iterator))
    except (StopIteration, json.JSONDecodeError):
        raise BadDocument(f"index {origin} is empty or not JSON lines") from None
    if not isinstance(header, dict) or header.get("ocb_index") != INDEX_VERSION:
        raise BadDocument(f"index {origin} has an unknown header: {str(header)[:200]}")
    head = Index(roots=dict(header.get("roots") or {}), snapshot=header.get("snapshot"),
                 excludes=_patterns(header.get("excludes"), origin), includes=_patterns(header.get("includes"), origin))
    head.ordered = header.get("order") == ORDER

    def entries() -> Iterator[Entry]:
        shared: dict = {}
        from_json, decode = Entry.from_json, json.JSONDecoder().decode
        for number, line in enumerate(iterator, start=2):
            try:
                record = decode(line)
            except json.JSONDecodeError:
                raise BadDocument(f"index {origin} line {number} is not JSON") from None
            if not isinstance(record, dict):
                raise BadDocument(f"index entry is malformed (not an object): {str(record)[:200]}")
            yield from_json(record, shared)

    return head, entries()


class IndexFiles:
    """An index.jsonl and its rows copy beside it (what open_in_order reads),
    written as a stream of entries in order: the JSON lines as they come, the rows into a
    spool, given their header (the size and mtime of the finished index.jsonl) at close."""

    def __init__(self, path: str, head: "Index") -> None:
        self.path = path
        self._lines = open(path, "w", encoding="utf-8")
        self._spool_path = rows_beside(path) + ".spool"
        self._spool = open(self._spool_path, "w+b")
        LinesWriter(self._lines, head)  # the header line
        self._write_line, self._as_rows = self._lines.write, RowsWriter(self._spool, head)

    def add(self, entry: Entry, key: str | None = None) -> None:
        """`key`: the entry's order_key, when the caller has it."""
        self._write_line(_json_line(entry.to_json()) + "\n")  # as LinesWriter.add: once per entry
        self._as_rows.add(entry, key)

    def close(self) -> None:
        self._lines.close()
        self._as_rows.close()
        self._spool.seek(0)
        self._spool.readline()  # a header of no facts, for the one naming the index.jsonl
        with atomic_write(rows_beside(self.path), durable=False) as out:
            out.write(_rows_header(_copy_facts(self.path)))
            shutil.copyfileobj(self._spool, out)
        self._release()

    def abandon(self) -> None:
        """After a failure: nothing of a half-written index left behind."""
        self._release()
        for path in (self.path, rows_beside(self.path)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _release(self) -> None:
        self._lines.close()
        self._spool.close()
        try:
            os.unlink(self._spool_path)
        except FileNotFoundError:
            pass


def open_in_order(path: str) -> tuple["Index", Iterable[Entry]]:
    """The index.jsonl at `path`: its header (an Index without entries) and its entries in
    order_key order. Streamed from its rows copy when there is a whole one of the file as it is
    now; else the JSON lines are loaded whole and sorted (an index whose rows copy is missing,
    or was written before rows were ordered). OSError, BadDocument as Index.load."""
    rows, facts = rows_beside(path), _copy_facts(path)
    if rows_intact(rows, facts):
        reader = RowsReader(rows, facts)
        return reader.head, reader
    index = Index.load(path)
    entries = in_order(index)
    index.entries = {}
    return index, entries


class Ancestry:
    """Whether each entry of an index met in order hangs from a directory met before it: the
    directories on the way down to the last entry, as a stack of their order keys."""

    def __init__(self) -> None:
        self._dirs: list[str] = []

    def holds(self, entry: Entry, key: str | None = None) -> bool:
        """An entry of a root's top (path "") always; any other when its parent is a directory
        entered (enter) before it. `key`: the entry's order_key, when the caller has it."""
        if not entry.path:
            self._dirs.clear()
            return True
        if key is None:
            key = order_key(entry)
        parent = key[:key.rindex(NUL)]
        dirs = self._dirs
        if dirs and dirs[-1] == parent:  # a sibling of the last entry, or its first child
            return True
        while dirs and dirs[-1] != parent and not parent.startswith(dirs[-1] + NUL):
            dirs.pop()
        return bool(dirs) and dirs[-1] == parent

    def enter(self, entry: Entry, key: str | None = None) -> None:
        """`entry` is in the index (after holds said so): a directory may hold what follows."""
        if entry.type == DIR:
            self._dirs.append(key if key is not None else order_key(entry))


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
    # read from JSON lines whose header says the entries follow in order_key order (read_lines)
    ordered: bool = field(default=False, compare=False)

    def add(self, entry: Entry) -> None:
        self.entries[entry.key] = entry

    def files(self) -> Iterator[Entry]:
        return (e for e in self.entries.values() if e.type == FILE)

    def write(self, handle: IO[str], with_pack: bool = False) -> None:
        lines = LinesWriter(handle, self, with_pack)
        for entry in in_order(self):
            lines.add(entry)

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
        index, entries = read_lines(lines, origin)
        into = index.entries
        for entry in entries:
            into[(entry.root, entry.path)] = entry
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
        """Write the rows file (RowsWriter), in order. Not synced (scratch, or a copy the cache
        can do without): a torn file fails load_rows' checks."""
        with atomic_write(path, durable=False) as out:
            rows = RowsWriter(out, self, facts)
            for entry in in_order(self):
                rows.add(entry)
            rows.close()

    @classmethod
    def load_rows(cls, path: str, facts: dict | None = None) -> "Index":
        """The index save_rows wrote with the same `facts`, whole (RowsReader's errors)."""
        reader = RowsReader(path, facts)
        index, entries = reader.head, reader.head.entries
        with no_gc():
            for entry in reader:
                entries[(entry.root, entry.path)] = entry
        return index

    def save_rows_beside(self, path: str) -> None:
        """The rows copy of the index.jsonl just written at `path` from this index (whose
        entries were reduced by keep_persisted, or which was loaded from that file): open_in_order then
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


def rows_beside(path: str) -> str:
    """Where the rows copy of the index.jsonl at `path` lies: index.rows beside index.jsonl."""
    return (path[:-len(".jsonl")] if path.endswith(".jsonl") else path) + ".rows"


def _copy_facts(path: str) -> dict:
    """What names the index.jsonl a rows copy copies: its name, size and mtime as they are now."""
    st = os.stat(path)
    return {"copy_of": os.path.basename(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _rows_header(facts: dict | None) -> bytes:
    # 2: the entries in order_key order (a rows file of 1, in another order, is not trusted)
    return json.dumps({"ocb_index_rows": 2, "python": list(sys.version_info[:2]), "marshal": marshal.version,
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
    excluded = exclusion(excludes, includes)
    return excluded is not None and excluded(rel, name)


def exclusion(excludes: list[str], includes: list[str]) -> Callable[[str, str], bool] | None:
    """What the scan leaves out, as one function of (rel, name), found once per walk rather
    than once per entry; None when nothing is excluded."""
    return _exclusion(tuple(excludes), tuple(includes)) if excludes else None


@functools.lru_cache(maxsize=16)
def _exclusion(excludes: tuple[str, ...], includes: tuple[str, ...]) -> Callable[[str, str], bool]:
    out = _matcher(excludes)
    back = _matcher(includes) if includes else None
    if back is None:
        return out
    return lambda rel, name: out(rel, name) and not back(rel, name)


_WILDCARDS = frozenset("*?[")


def _matcher(patterns: tuple[str, ...]) -> Callable[[str, str], bool]:
    """Whether (rel, name) matches one of `patterns` as fnmatch.fnmatchcase would (those
    without "/" the last component, those with "/" the path or any tail of it after a "/"),
    asked once per entry of the scan, so the common patterns are asked the cheap way: a name
    pattern without wildcards is a set lookup, "*" and a literal a suffix test, and a path
    pattern whose last component is literal is only tried on an entry of that name (its
    match ends "/<that name>"). The rest: one regex for the names, one for the paths."""
    literal, suffixes, wild_names, by_tail, wild_paths = set(), [], [], {}, []
    for pattern in patterns:
        if "/" in pattern:
            tail = pattern.rpartition("/")[2]
            (wild_paths if _WILDCARDS & set(tail) else by_tail.setdefault(tail, [])).append(pattern)
        elif not _WILDCARDS & set(pattern):
            literal.add(pattern)
        elif pattern[:1] == "*" and not _WILDCARDS & set(pattern[1:]):
            suffixes.append(pattern[1:])
        else:
            wild_names.append(pattern)
    names = frozenset(literal)
    ends = tuple(suffixes)
    name_match = _one_regex(wild_names)
    tails = frozenset(by_tail)
    tail_match = _one_regex([t for p in sum(by_tail.values(), []) for t in (p, "*/" + p)])
    path_match = _one_regex([t for p in wild_paths for t in (p, "*/" + p)])

    def matched(rel: str, name: str) -> bool:
        return (name in names or bool(ends) and name.endswith(ends)
                or name_match is not None and name_match(name) is not None
                or name in tails and tail_match(rel) is not None  # type: ignore[misc]
                or path_match is not None and path_match(rel) is not None)
    return matched


def _one_regex(patterns: list[str]) -> Callable[[str], re.Match | None] | None:
    """fnmatch's patterns as one regex (one call, not one per pattern), or None for none."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match if patterns else None


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


def _is_sqlite(path: str, entry: Entry, old: Entry | None) -> bool:
    """SQLite is recognised by its header, not its name; an unchanged file keeps its verdict."""
    if entry.size < 512:
        return False
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


# what a scan asks of the previous index, once per entry (its root, path and order_key) and
# in that order: its entry of the same path, or None (a dict's lookup, or a Cursor over a stream)
Lookup = Callable[[str, str, str], "Entry | None"]


def scan(roots: list[Root], excludes: list[str], includes: list[str],
         previous: Index | None = None) -> tuple[Index, ScanReport]:
    """The whole index of what walk meets (a restore's view of its targets, or a test's). An
    entry unchanged since `previous` is previous's own object (walk's)."""
    report = ScanReport()
    states, present = scan_roots(roots, report)
    index = Index(roots=states)
    lookup: Lookup = ((lambda root, path, _: previous.entries.get((root, path))) if previous
                      else (lambda root, path, _: None))
    with no_gc():
        for entry, _, _ in walk(present, excludes, includes, report, lookup):
            index.add(entry)
    return index, report


def scan_roots(roots: list[Root], report: ScanReport) -> tuple[dict[str, dict], list[tuple[Root, str, os.stat_result]]]:
    """Each root's record for an index ({"kind", "present", "link"?}), and the present ones
    to walk: (root, the path it stands for, its lstat), by name (walk's order)."""
    states: dict[str, dict] = {}
    present = []
    for root in roots:
        path, link = root.path, None
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                # a root that is a link (state on a volume): what it points to is the root
                link, path = os.readlink(path), os.path.realpath(path)
                st = os.lstat(path)
        except FileNotFoundError:
            states[root.name] = {"kind": root.kind, "present": False, **({"link": link} if link else {})}
            report.missing_roots.append(root.name if not link else f"{root.name} (the link {root.path} points nowhere)")
            continue
        expected_dir = root.kind == "dir"
        if expected_dir and not stat.S_ISDIR(st.st_mode) or not expected_dir and not stat.S_ISREG(st.st_mode):
            raise RuntimeFailure(f"root {root.name} ({root.path}) is not a {'directory' if expected_dir else 'regular file'}")
        states[root.name] = {"kind": root.kind, "present": True, **({"link": link} if link else {})}
        present.append((root, path, st))
    present.sort(key=lambda p: p[0].name)
    return states, present


def walk(present: list[tuple[Root, str, os.stat_result]], excludes: list[str], includes: list[str],
         report: ScanReport, previous: Lookup) -> Iterator[tuple[Entry, Entry | None, str]]:
    """lstat every entry under the roots scan_roots found, in order_key order: each with what
    `previous` holds of its path (asked once per entry, in that order) and its order_key.
    Sockets, fifos and devices are reported, not met. One directory's listing in memory per
    level, never the index.

    SQLite databases are flagged (`db`) and their -wal/-shm/-journal companions left out: the
    database's copy through SQLite's backup API holds what they hold. The previous entry
    spares re-reading the header of a file unchanged since.

    An entry unchanged since the previous one (what change detection compares, and its owner)
    is met as that previous entry itself, not a new one made from its lstat: in a backup of a
    state that barely moved, that is nearly every entry, and making each again was ~15 % of
    the walk (a caller that changes one changes it in the stream it came from).
    """
    for root, path, st in present:
        kind = FILE if stat.S_ISREG(st.st_mode) else DIR  # scan_roots let through no other
        children = _listing(path, "") if kind is DIR else None
        old = previous(root.name, "", root.name)
        yield _met(root.name, "", st, kind, None, old, path), old, root.name
        if children:
            yield from _walk(root, children, report, exclusion(excludes, includes), previous)


BY_NAME = operator.attrgetter("name")  # how a listing is sorted: its names in order_key order


def listing_by_name(dir_path: str) -> list[os.DirEntry]:
    """A directory's entries by name (the order a walk meets them in: order_key's)."""
    with os.scandir(dir_path) as listing:
        children = list(listing)
    if len(children) > 1:  # most directories of an npm cache hold one entry: no sort call
        children.sort(key=BY_NAME)
    return children


def _listing(dir_path: str, rel_dir: str) -> list[os.DirEntry]:
    """A directory's entries by name; FileNotFoundError when it is gone, other OSErrors as
    raised (RuntimeFailure for a root's own: the backup cannot go on without it)."""
    try:
        return listing_by_name(dir_path)
    except FileNotFoundError:
        if not rel_dir:
            return []  # the root went while we scanned: an empty root
        raise
    except OSError as exc:
        if not rel_dir:
            raise RuntimeFailure(f"cannot read directory {dir_path}: {exc.strerror}") from None
        raise


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


_KINDS = {stat.S_IFREG: FILE, stat.S_IFDIR: DIR, stat.S_IFLNK: SYMLINK}


def _kept(root: Root, rel_dir: str, children: list[os.DirEntry], report: ScanReport,
          excluded: Callable[[str, str], bool] | None) -> list[tuple[os.DirEntry, str, os.stat_result, str]]:
    """One directory's children by name, each with its path, lstat and type: the excluded,
    vanished, unreadable and special ones left out (and counted or named in `report`)."""
    kept: list[tuple[os.DirEntry, str, os.stat_result, str]] = []
    kinds = _KINDS
    for child in children:
        name = child.name
        rel = f"{rel_dir}/{name}" if rel_dir else name
        if excluded is not None and excluded(rel, name):
            report.excluded += 1
            continue
        try:
            st = child.stat(follow_symlinks=False)
            kind = kinds.get(stat.S_IFMT(st.st_mode))
            if kind is FILE and not _owner_readable(st) and not os.access(child.path, os.R_OK):
                _check_readable(child.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            report.skip(root.name, rel, exc)
            continue
        if kind is None:
            report.skipped_special.append(f"{root.name}/{rel}")
            continue
        kept.append((child, rel, st, kind))
    return kept


def _met(root: str, rel: str, st: os.stat_result, kind: str, target: str | None, old: Entry | None,
         path: str) -> Entry:
    """The entry of this lstat (and symlink target): `old` itself when it describes it as a new
    entry would (what change detection compares, and the owner), else a new one."""
    if (old is not None and old.mtime_ns == st.st_mtime_ns and old.type == kind
            and old.mode == stat.S_IMODE(st.st_mode) and old.uid == st.st_uid and old.gid == st.st_gid
            and old.size == (st.st_size if kind is FILE else 0) and old.target == target):
        if not old.db:
            return old
        wal = wal_signature(path)
        if wal == old.wal:
            return old
        return Entry(root, rel, FILE, old.mode, old.size, old.mtime_ns, db=True, wal=wal, uid=old.uid, gid=old.gid)
    entry = Entry(root, rel, kind, stat.S_IMODE(st.st_mode), st.st_size if kind is FILE else 0, st.st_mtime_ns,
                  target=target, uid=st.st_uid, gid=st.st_gid)
    if kind is FILE and _is_sqlite(path, entry, old):
        entry.db = True
        entry.wal = wal_signature(path)
    return entry


def _walk(root: Root, children: list[os.DirEntry], report: ScanReport, excluded: Callable[[str, str], bool] | None,
          previous: Lookup) -> Iterator[tuple[Entry, Entry | None, str]]:
    """Below a root, depth first: one generator with a stack of the directories on the way
    down (each: its order_key, what is left of its children, its databases' companions), not a
    generator per level, through which every entry would pass once per level."""
    name_of_root = root.name
    stack = [(name_of_root, iter(_kept(root, "", children, report, excluded)), set())]
    while stack:
        dir_key, pending, companions = stack[-1]
        for child, rel, st, kind in pending:
            # a database's name sorts before its companions' ("x.db" < "x.db-wal"): its verdict
            # is in before they are met
            if kind is FILE and child.name in companions:
                continue
            below = None
            try:
                if kind is DIR:
                    below = _listing(child.path, rel)
                target = os.readlink(child.path) if kind is SYMLINK else None
            except FileNotFoundError:
                continue  # removed while we scanned: it is simply not in this snapshot
            except OSError as exc:
                # one unreadable directory (mode 000, another owner's, a name too long, an
                # I/O error) does not stop the backup: it and what it holds are left out,
                # and named
                report.skip(name_of_root, rel, exc)
                continue
            key = f"{dir_key}{NUL}{child.name}"
            old = previous(name_of_root, rel, key)
            entry = _met(name_of_root, rel, st, kind, target, old, child.path)
            if entry.db:
                companions.update(child.name + suffix for suffix in SQLITE_COMPANIONS)
            yield entry, old, key
            if below:
                stack.append((key, iter(_kept(root, rel, below, report, excluded)), set()))
                break  # down into it; this level's loop goes on where it stopped once it is done
        else:
            stack.pop()


_KEY_PENDING = object()  # Cursor: the next entry's order_key, not made yet


class Cursor:
    """An index's entries in order_key order (a stream), looked up in that order: what a merge
    of a walk against an index needs, one entry of it in memory at a time. `passed` counts the
    entries gone by without being asked for (gone since, for a plan); `on_passed`, when given,
    is told of each first (a restore raises: an entry no snapshot carried)."""

    def __init__(self, entries: Iterable[Entry], on_passed: Callable[[Entry], None] | None = None) -> None:
        self._entries = iter(entries)
        self._on_passed = on_passed
        self.passed = 0
        self._advance()

    def _advance(self) -> None:
        self._next = next(self._entries, None)
        self._key = None if self._next is None else order_key(self._next)

    def _pass(self) -> None:
        if self._on_passed is not None:
            self._on_passed(self._next)  # type: ignore[arg-type]
        self.passed += 1
        self._advance()

    def take(self, key: str) -> Entry | None:
        """The entry whose order_key is `key`, or None; those before it are passed."""
        if self._key is _KEY_PENDING:
            self._key = order_key(self._next)  # type: ignore[arg-type]
        while self._key is not None and self._key < key:
            self._pass()
        if self._key != key:
            return None
        found = self._next
        # _advance, inline: this runs once per entry of a plan
        self._next = following = next(self._entries, None)
        self._key = None if following is None else _KEY_PENDING
        return found

    def __call__(self, root: str, path: str, key: str) -> Entry | None:
        """A Lookup: the entry of `key` (the order_key of root and path), or None. The next
        entry of the stream when it is that one (a plan of a state that barely moved: nearly
        every call), its own order_key made only when a later call needs it."""
        found = self._next
        if found is not None and found.path == path and found.root == root:
            self._next = following = next(self._entries, None)
            self._key = None if following is None else _KEY_PENDING
            return found
        return self.take(key)

    def finish(self) -> int:
        """The entries passed over in all, the rest of the stream passed (and its end checked)."""
        while self._next is not None:
            self._pass()
        return self.passed


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


def mark_change(entry: Entry, old: Entry | None, changes: Changes) -> None:
    """Flag `entry` when the next archive must carry it (new or changed since `old`, its
    path's entry in the previous index); copy the hash of an unchanged file from `old`."""
    if old is not None and entry.same_as(old) and entry.db == old.db and (entry.type != FILE or old.sha256):
        entry.sha256 = old.sha256
        entry.stored_size = old.stored_size
        entry.held = old.held
        entry.pack = False
        changes.unchanged += 1
        return
    entry.pack = True
    if old is not None and old.type == FILE and entry.type == FILE:
        entry.base_sha256 = old.sha256
        entry.base_held = old.held
    # what pack reads again is described by what it reads: an entry walk handed on as the
    # previous index's own (unchanged, in a full snapshot) keeps no hash of that one
    entry.sha256 = entry.stored_size = entry.held = None
    if old is None:
        changes.new += 1
    else:
        changes.changed += 1
    if entry.type == FILE:
        changes.bytes_to_pack += entry.size


def mark_changes(current: Index, previous: Index | None) -> Changes:
    """mark_change over a whole index. With no previous index (a full snapshot) every entry is
    carried."""
    changes = Changes()
    for key, entry in current.entries.items():
        mark_change(entry, previous.entries.get(key) if previous else None, changes)
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
    _check_path(name, "member")
    parts = name.rstrip("/").split("/")
    if not ROOT_NAME.match(parts[0]):
        raise HostileArchive(f"member is outside every root: {name!r}")
    return parts[0], parts[1:]


def _check_path(name: str, what: str) -> None:
    """HostileArchive for a name that could leave where it is put: a NUL, an absolute path, an
    empty, "." or ".." component (a trailing "/" aside). Without splitting it: once per entry
    of every index a push checks."""
    if "\0" in name:
        raise HostileArchive(f"{what} name contains NUL: {name!r}")
    if name.startswith("/"):
        raise HostileArchive(f"{what} has an absolute path: {name!r}")
    framed = f"/{name.rstrip('/')}/"
    if "//" in framed or "/./" in framed or "/../" in framed:
        raise HostileArchive(f"{what} path has an empty, '.' or '..' component: {name!r}")


def check_structure(index: Index) -> str | None:
    """structure_problem of a whole index."""
    return structure_problem(index.roots, in_order(index))


def structure_problem(roots: dict, entries: Iterable[Entry]) -> str | None:
    """What makes an index unrestorable (checked_structure), or None."""
    try:
        for _ in checked_structure(roots, entries):
            pass
    except HostileArchive as exc:
        return str(exc)
    return None


def checked_structure(roots: dict, entries: Iterable[Entry]) -> Iterator[Entry]:
    """`entries` (in order_key order) passed on, each checked first: HostileArchive at the first
    that makes the index unrestorable: one outside its roots, a path that could leave its root,
    one that does not hang from a directory of the same index (an entry below a link, or a
    file, would be checked and chmod'ed through it, outside the target), or one out of order
    (twice, or after one it sorts before). The one check, for whoever must trust an index,
    met one entry at a time."""
    ancestry, last = Ancestry(), None
    named = {root for root in roots if isinstance(root, str) and ROOT_NAME.match(root)}
    for entry in entries:
        if entry.root not in named:
            raise HostileArchive(f"the index lists an entry outside its roots: {entry.root!r}")
        if entry.path:
            _check_path(f"{entry.root}/{entry.path}", "member")
        key = order_key(entry)
        if last is not None and key <= last:
            raise HostileArchive(f"the index lists {entry.root}/{entry.path} out of order (twice, or after what it sorts before)")
        last = key
        if not ancestry.holds(entry, key):
            raise HostileArchive(f"the index lists {entry.root}/{entry.path} below something that is not "
                                 "one of its directories")
        ancestry.enter(entry, key)
        yield entry
