"""index: scanning without following links, excludes, and change detection (table-driven)."""

import fnmatch
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ocb.config import Root
from ocb.index import DIR, FILE, SYMLINK, Entry, Index, RowsReader, mark_changes, open_in_order, scan


def idx(*entries):
    index = Index(roots={"r": {"kind": "dir", "present": True}})
    for entry in entries:
        index.add(entry)
    return index


def f(path, size=1, mtime=1, mode=0o644, sha="a" * 64):
    return Entry("r", path, FILE, mode, size, mtime, sha256=sha)


def base():
    """A fresh small tree each call: entries are mutable (mark_changes sets
    pack, tests set held), so a shared list would carry one test into the next."""
    return [Entry("r", "", DIR, 0o755, 0, 1), f("a"), f("b"), Entry("r", "l", SYMLINK, 0o777, 0, 1, target="a")]


@pytest.mark.parametrize("change, expected", [
    (lambda e: e, (0, 0, 0)),
    (lambda e: e + [f("c")], (1, 0, 0)),
    (lambda e: [x for x in e if x.path != "b"], (0, 0, 1)),
    (lambda e: [x for x in e if x.path != "b"] + [f("b2")], (1, 0, 1)),  # a rename
    (lambda e: [f("a", size=2) if x.path == "a" else x for x in e], (0, 1, 0)),
    (lambda e: [f("a", mtime=2) if x.path == "a" else x for x in e], (0, 1, 0)),
    (lambda e: [f("a", mode=0o600) if x.path == "a" else x for x in e], (0, 1, 0)),
    (lambda e: [Entry("r", "a", SYMLINK, 0o777, 0, 1, target="b") if x.path == "a" else x for x in e], (0, 1, 0)),
    (lambda e: [Entry("r", "l", SYMLINK, 0o777, 0, 1, target="b") if x.path == "l" else x for x in e], (0, 1, 0)),
])
def test_mark_changes(change, expected):
    previous = idx(*base())
    current = idx(*[Entry(e.root, e.path, e.type, e.mode, e.size, e.mtime_ns, None, e.target) for e in change(base())])
    changes = mark_changes(current, previous)
    assert (changes.new, changes.changed, changes.deleted) == expected
    assert changes.any == (expected != (0, 0, 0))
    for entry in current.entries.values():
        if not entry.pack and entry.type == FILE:
            assert entry.sha256 == "a" * 64  # unchanged files keep the hash of the last snapshot


def test_without_a_previous_index_everything_is_packed():
    current = idx(*base())
    changes = mark_changes(current, None)
    assert changes.new == len(base()) and all(e.pack for e in current.entries.values())


def test_scan_never_follows_links_and_skips_fifos(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "f").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("no")
    os.symlink(outside, tmp_path / "s" / "link")
    os.mkfifo(tmp_path / "s" / "pipe")
    index, report = scan([Root("r", str(tmp_path / "s"), "dir", True)], [], [])
    assert set(p for _, p in index.entries) == {"", "f", "link"}
    assert index.entries[("r", "link")].type == SYMLINK
    assert report.skipped_special == ["r/pipe"]


def test_a_file_whose_directory_moves_during_the_scan_is_left_out_not_called_unreadable(tmp_path, monkeypatch):
    # the race a live writer makes: the scan has stat'ed churn/d/f0, then the writer renames
    # churn/d before the readability check; os.access says False for the vanished path
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f0").write_text("x")
    # without the owner's read bit: a file its owner may read is never asked about (_owner_readable)
    os.chmod(tmp_path / "d" / "f0", 0o044)
    real_access = os.access

    def access_after_rename(path, mode, **kwargs):
        if str(path).endswith("/d/f0") and (tmp_path / "d").exists():
            os.rename(tmp_path / "d", tmp_path / "moved")
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access_after_rename)
    index, report = scan([Root("r", str(tmp_path), "dir", True)], [], [])
    assert report.unreadable == []
    assert ("r", "d/f0") not in index.entries


def test_only_files_the_owner_may_not_read_are_asked_about(tmp_path, monkeypatch):
    for name, mode in (("mine", 0o600), ("no-owner-bit", 0o044)):
        (tmp_path / name).write_text("x")
        os.chmod(tmp_path / name, mode)
    asked = []
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: asked.append(os.path.basename(path)) or real_access(path, mode, **kw))
    scan([Root("r", str(tmp_path), "dir", True)], [], [])
    assert asked == ["no-owner-bit"]


@pytest.mark.parametrize("patterns, includes, kept", [
    ([], [], {"", "a.log", "logs", "logs/x", "k", "k/node_modules", "k/node_modules/m", "k/keep.txt"}),
    (["*.log"], [], {"", "logs", "logs/x", "k", "k/node_modules", "k/node_modules/m", "k/keep.txt"}),
    (["logs", "node_modules"], [], {"", "a.log", "k", "k/keep.txt"}),
    (["k/node_modules"], [], {"", "a.log", "logs", "logs/x", "k", "k/keep.txt"}),
    (["*.log", "logs"], ["a.log"], {"", "a.log", "k", "k/node_modules", "k/node_modules/m", "k/keep.txt"}),
])
def test_excludes_and_includes(tmp_path, patterns, includes, kept):
    for rel in ["a.log", "logs/x", "k/node_modules/m", "k/keep.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    index, _ = scan([Root("r", str(tmp_path), "dir", True)], patterns, includes)
    assert {p for _, p in index.entries} == kept


def test_index_round_trips_odd_names(tmp_path):
    index = idx(f("new\nline ü"), Entry("r", "bad\udcffbyte", FILE, 0o600, 3, 5, sha256="b" * 64))
    index.snapshot = "openclaw-backup-20260101-000000"
    index.save(str(tmp_path / "i.jsonl"))
    again = Index.load(str(tmp_path / "i.jsonl"))
    assert again.entries == index.entries and again.snapshot == index.snapshot


@pytest.mark.parametrize("rel", ["a/logs", "x.log", "a/b/x.log", "browser/p/user-data", "b/browser/p/user-data",
                                 "browser/user-data", "Code Cache", "a/Code Cache/x", "cachet", "n/node_modules",
                                 "[odd]", "a.b", "new\nline.log"])
def test_exclude_regexes_match_as_fnmatch_does(rel):
    from ocb.config import DEFAULT_EXCLUDES
    from ocb.index import is_excluded
    patterns = list(DEFAULT_EXCLUDES) + ["[ab].b", "a/*/x"]
    name = rel.rpartition("/")[2]

    def matched(patterns):
        return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, "*/" + p) if "/" in p
                   else fnmatch.fnmatchcase(name, p) for p in patterns)
    assert is_excluded(patterns, [], rel, name) == matched(patterns)
    for includes in (["*.log"], ["a/*"], ["cachet", "[odd]"]):  # an include takes a path back
        assert is_excluded(patterns, includes, rel, name) == (matched(patterns) and not matched(includes))


PATTERN_TEXT = st.text(alphabet="ab./*?[]!-", min_size=1, max_size=7)


@settings(max_examples=300, deadline=None)
@given(patterns=st.lists(PATTERN_TEXT, min_size=1, max_size=4), includes=st.lists(PATTERN_TEXT, max_size=2),
       rel=st.text(alphabet="ab./-", min_size=1, max_size=9).filter(lambda r: not r.startswith("/") and not r.endswith("/")))
def test_any_patterns_exclude_as_fnmatch_does(patterns, includes, rel):
    # the cheap ways (a set of names, suffixes, path patterns tried by their last component)
    # decide what fnmatch decides, for any patterns
    from ocb.index import is_excluded
    name = rel.rpartition("/")[2]

    def matched(patterns):
        return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, "*/" + p) if "/" in p
                   else fnmatch.fnmatchcase(name, p) for p in patterns)
    assert is_excluded(patterns, includes, rel, name) == (matched(patterns) and not matched(includes))


def _rich_index() -> Index:
    index = idx(*base(), f("ünï/cödé\udcff", size=7), f("db.sqlite", size=4096))
    index.entries[("r", "db.sqlite")].db, index.entries[("r", "db.sqlite")].wal = True, [32, 5]
    index.entries[("r", "db.sqlite")].stored_size = 8192
    index.entries[("r", "a")].held = index.entries[("r", "b")].held = ["s1", "s2"]
    index.entries[("r", "a")].uid, index.entries[("r", "a")].gid = 1000, 1000
    index.snapshot, index.excludes, index.includes = "s2", ["cache"], ["keep"]
    return index


def test_index_rows_give_back_the_index_the_json_lines_give(tmp_path):
    index = _rich_index()
    path = str(tmp_path / "index.jsonl")
    index.save(path)
    from_lines = Index.load(path)
    from_lines.save_rows(str(tmp_path / "index.rows"), {"a": 1})
    back = Index.load_rows(str(tmp_path / "index.rows"), {"a": 1})
    assert back == from_lines
    # what many entries share stays one object (a loaded index's memory)
    assert back.entries[("r", "a")].held is back.entries[("r", "b")].held
    with pytest.raises(ValueError):  # written for other facts (another index.jsonl)
        Index.load_rows(str(tmp_path / "index.rows"), {"a": 2})


@pytest.mark.parametrize("damage", [lambda b: b[:-7], lambda b: b[:-60] + b"x" * 60, lambda b: b + b"more",
                                    lambda b: b.replace(b"\n", b"\n" + b"\0" * 8, 1), lambda b: b"not rows\n" + b])
def test_index_rows_that_are_not_whole_are_refused(tmp_path, damage):
    path = tmp_path / "index.rows"
    _rich_index().save_rows(str(path))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError):
        Index.load_rows(str(path))


_OWNER = st.one_of(st.none(), st.integers(0, 2**32 - 1))
_HELD = st.one_of(st.none(), st.lists(st.sampled_from(["s1", "s2", "s3"]), max_size=3))
ENTRIES = st.builds(
    Entry, st.just("r"), st.text(st.characters(blacklist_characters="\0/"), min_size=1, max_size=12),
    st.sampled_from([FILE, DIR, SYMLINK]), st.integers(0, 0o7777), st.integers(0, 2**40), st.integers(0, 2**62),
    st.one_of(st.none(), st.just("c" * 64)), st.one_of(st.none(), st.text(max_size=8)), st.booleans(), st.booleans(),
    st.one_of(st.none(), st.lists(st.integers(0, 2**40), min_size=2, max_size=2)), st.one_of(st.none(), st.integers(0, 2**40)),
    st.one_of(st.none(), st.just("d" * 64)), _OWNER, _OWNER, _HELD, _HELD)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(ENTRIES, max_size=8, unique_by=lambda e: e.path))
def test_an_index_of_persisted_entries_is_the_one_its_json_lines_give_back(tmp_path, entries):
    for entry in entries:
        entry.keep_persisted()
    index = idx(*entries)
    path = str(tmp_path / "index.jsonl")
    index.save(path)
    assert Index.load(path) == index  # what ocb-pack's rows copy holds is what the file holds
    index.save_rows_beside(path)
    head, entries = open_in_order(path)
    assert isinstance(entries, RowsReader)  # the rows copy, not the JSON lines
    head.entries = {e.key: e for e in entries}
    assert head == index


# -- the index as a stream (order_key order): the plan merges its scan against the cached index
# one entry at a time, pack and push read and write theirs so, none holds one whole


def _tree(top, names):
    for rel in names:
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(rel)


def _merged(roots, previous, full=False):
    """What ocb-plan does: the walk merged against `previous` as a stream (a Cursor)."""
    from ocb.index import Changes, Cursor, ScanReport, in_order, mark_change, order_key, scan_roots, walk

    report = ScanReport()
    states, present = scan_roots(roots, report)
    cursor, changes, met = Cursor(in_order(previous)), Changes(), []
    for entry, old, key in walk(present, [], [], report, cursor):
        assert key == order_key(entry)
        mark_change(entry, None if full else old, changes)
        met.append(entry)
    changes.deleted = 0 if full else cursor.finish()
    return met, changes, states


def test_the_scan_merged_against_a_stream_decides_what_the_whole_indexes_decide(tmp_path):
    import sqlite3
    import time

    from ocb.index import order_key

    home, other = tmp_path / "home", tmp_path / "home-2"
    _tree(home, ["a/x", "a/y", "a-b", "a.c/z", "keep", "gone/one", "gone/two", "empty/", "z"])
    _tree(other, ["o/p"])
    os.symlink("a/x", home / "link")
    db = sqlite3.connect(home / "a" / "s.db")
    db.execute("pragma journal_mode=wal")
    db.execute("create table t (v)")
    db.execute("insert into t values (1)")
    db.commit()  # s.db-wal and s.db-shm stay beside it while it is open
    # config order is not name order: both are walked by name
    roots = [Root("r2", str(other), "dir", True), Root("r", str(home), "dir", True), Root("gone", str(tmp_path / "no"), "dir", True)]
    previous, _ = scan(roots, [], [])
    mark_changes(previous, None)
    for entry in previous.files():
        entry.sha256 = "e" * 64
    time.sleep(0.01)
    (home / "a" / "y").write_text("changed, longer")
    (home / "a-b").unlink()
    (home / "gone" / "one").unlink()
    (home / "gone" / "two").unlink()
    (home / "gone").rmdir()
    _tree(home, ["a/new", "n/m/k", "a.c/zz"])
    os.rename(home / "z", home / "zz")
    current, _ = scan(roots, [], [], previous)
    expected = mark_changes(current, previous)
    met, changes, states = _merged(roots, previous)
    db.close()
    assert changes == expected and changes.deleted == 5 and changes.new == 6
    assert [order_key(e) for e in met] == sorted(order_key(e) for e in met)
    assert {e.key: e for e in met} == current.entries and states == current.roots
    assert current.entries[("r", "a/s.db")].db and ("r", "a/s.db-wal") not in current.entries
    # a full snapshot: everything carried, the SQLite verdicts still the cache's
    met, changes, _ = _merged(roots, previous, full=True)
    assert changes.new == len(met) and changes.deleted == 0 and all(e.pack for e in met)


CURSOR_PATHS = st.lists(st.text(alphabet="ab/", min_size=1, max_size=4).filter(
    lambda p: "//" not in p and not p.startswith("/") and not p.endswith("/")), unique=True, max_size=10)


@settings(max_examples=300, deadline=None)
@given(stream=CURSOR_PATHS, asked=CURSOR_PATHS)
def test_a_cursor_finds_what_a_lookup_by_key_finds_and_passes_the_rest(stream, asked):
    """Cursor called as a Lookup (root, path, key): the next entry itself when it is the one
    asked for, its order_key made later; anything else by key. Either way: the same answers
    and the same entries passed as a dict of the stream and a count of what was never asked."""
    from ocb.index import Cursor, order_key

    entries = sorted((Entry("r", p, FILE, 0o644, 1, 1) for p in stream), key=order_key)
    wanted = sorted((Entry("r", p, FILE, 0o644, 1, 1) for p in asked), key=order_key)
    by_key = {order_key(e): e for e in entries}
    passed_over = []
    cursor = Cursor(entries, on_passed=passed_over.append)
    for entry in wanted:
        key = order_key(entry)
        assert cursor(entry.root, entry.path, key) is by_key.get(key)
    total = cursor.finish()
    never_asked = [e for e in entries if order_key(e) not in {order_key(w) for w in wanted}]
    assert passed_over == never_asked and total == len(never_asked)


def test_a_directory_that_cannot_be_listed_is_left_out_before_anything_below_it_is_met(tmp_path, monkeypatch):
    from ocb.index import Cursor, ScanReport, scan_roots, walk

    _tree(tmp_path, ["a/x", "b/locked/y", "c"])
    real_scandir = os.scandir

    def scandir(path):  # what a directory of mode 000 gives a user other than root
        if str(path).endswith("/locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = ScanReport()
    _, present = scan_roots([Root("r", str(tmp_path), "dir", True)], report)
    met = [e.path for e, _, _ in walk(present, [], [], report, Cursor(()))]
    assert met == ["", "a", "a/x", "b", "c"]
    assert report.unreadable == [{"path": "r/b/locked", "reason": "Permission denied"}]


def test_rows_are_written_in_order_only_and_stream_back(tmp_path):
    from ocb.index import OutOfOrder, RowsReader, RowsWriter, in_order, rows_intact

    index = _rich_index()
    for n in range(2500):  # more than one chunk
        index.add(f(f"many/{n}"))
    index.add(Entry("r", "many", DIR, 0o755, 0, 1))
    index.save_rows(str(tmp_path / "i.rows"))
    assert rows_intact(str(tmp_path / "i.rows"))
    reader = RowsReader(str(tmp_path / "i.rows"))
    assert reader.head.snapshot == "s2" and reader.head.entries == {}
    assert list(reader) == in_order(index)
    with open(tmp_path / "bad.rows", "wb") as out:
        rows = RowsWriter(out, index)
        rows.add(f("b"))
        with pytest.raises(OutOfOrder):
            rows.add(f("a"))


@pytest.mark.parametrize("damage", [lambda b: b[:-7], lambda b: b[:-60] + b"x" * 60, lambda b: b + b"more",
                                    lambda b: b"not rows\n" + b, lambda b: b[:200] + bytes([b[200] ^ 1]) + b[201:]])
def test_a_rows_file_that_is_not_whole_is_found_so_before_a_row_is_used(tmp_path, damage):
    from ocb.index import RowsReader, rows_intact

    path = tmp_path / "index.rows"
    index = _rich_index()
    for n in range(1500):
        index.add(f(f"n{n}"))
    index.save_rows(str(path))
    path.write_bytes(damage(path.read_bytes()))
    assert not rows_intact(str(path))
    with pytest.raises(ValueError):
        list(RowsReader(str(path)))


@pytest.mark.parametrize("entries, problem", [
    ([Entry("r", "", DIR, 0o755, 0, 1), f("a"), f("a/b")], "r/a/b below something"),
    ([Entry("r", "", DIR, 0o755, 0, 1), f("d/x")], "r/d/x below something"),
    ([Entry("r", "", DIR, 0o755, 0, 1), Entry("r", "d", DIR, 0o755, 0, 1), f("d/x"), f("e/y")], "r/e/y below something"),
    ([Entry("r", "", DIR, 0o755, 0, 1), Entry("r", "l", SYMLINK, 0o777, 0, 1, target="/"), f("l/x")], "r/l/x below"),
    ([Entry("r", "", DIR, 0o755, 0, 1), f("../x")], "'..'"),
    ([Entry("q", "", DIR, 0o755, 0, 1)], "outside its roots"),
    ([Entry("r", "", DIR, 0o755, 0, 1), Entry("r", "d", DIR, 0o755, 0, 1), Entry("r", "d/e", DIR, 0o755, 0, 1),
      f("d/e/x"), f("d/y"), Entry("r", "d-2", DIR, 0o755, 0, 1), f("d-2/z"), f("w")], None),
])
def test_the_structure_check_of_an_index_in_order_is_the_one_of_a_whole_index(entries, problem):
    from ocb.index import check_structure, in_order, structure_problem

    index = idx(*reversed(entries))  # a whole index in any order is checked in order
    found = check_structure(index)
    assert found == structure_problem(index.roots, in_order(index))
    assert (found is None) if problem is None else (problem in found)


def test_a_plan_holds_neither_index_whole(tmp_path):
    # tracemalloc's peak while the walk is merged against a stream of the previous index and
    # written as rows: a tenfold index must not cost tenfold (a whole index is ~500 bytes an
    # entry; the stream holds a chunk of rows and one directory's listing per level)
    import tracemalloc

    from ocb.index import Changes, Cursor, RowsReader, RowsWriter, ScanReport, mark_change, scan_roots, walk

    def peak(files: int) -> int:
        home = tmp_path / f"home{files}"
        for d in range(files // 100):
            (home / f"d{d}").mkdir(parents=True)
            for n in range(100):
                (home / f"d{d}" / f"f{n}").touch()
        roots = [Root("r", str(home), "dir", True)]
        previous, _ = scan(roots, [], [])
        mark_changes(previous, None)
        for entry in previous.files():
            entry.sha256 = "e" * 64
        previous.save_rows(str(tmp_path / f"prev{files}.rows"))
        del previous
        tracemalloc.start()
        try:
            report, changes = ScanReport(), Changes()
            states, present = scan_roots(roots, report)
            cursor = Cursor(RowsReader(str(tmp_path / f"prev{files}.rows")))
            with open(tmp_path / f"plan{files}.rows", "wb") as out:
                rows = RowsWriter(out, Index(roots=states))
                for entry, old, key in walk(present, [], [], report, cursor):
                    mark_change(entry, old, changes)
                    rows.add(entry, key)
                rows.close()
            assert cursor.finish() == 0 and changes.unchanged == files + files // 100 + 1
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(1000), peak(10000)
    assert large < small + 1_000_000, (small, large)  # a whole index of 9,090 more entries: ~4.5 MB


@settings(max_examples=100, deadline=None)
@given(entry=ENTRIES)
def test_an_entry_line_is_what_json_dumps_writes(entry):
    import json

    from ocb.index import _json_line

    for with_pack in (False, True):
        assert _json_line(entry.to_json(with_pack)) == json.dumps(entry.to_json(with_pack))


def test_index_files_written_whole_or_not_at_all(tmp_path):
    from ocb.index import IndexFiles, OutOfOrder, rows_beside

    path = str(tmp_path / "index.jsonl")
    files = IndexFiles(path, Index(roots={"r": {"kind": "dir", "present": True}}, snapshot="s1"))
    for entry in base():
        files.add(entry)
    files.close()
    head, entries = open_in_order(path)
    assert isinstance(entries, RowsReader) and [e.path for e in entries] == ["", "a", "b", "l"]
    assert Index.load(path).entries == idx(*base()).entries
    files = IndexFiles(path, Index(roots={"r": {"kind": "dir", "present": True}}, snapshot="s2"))
    files.add(f("b"))
    with pytest.raises(OutOfOrder):
        files.add(f("a"))
    files.abandon()
    assert sorted(os.listdir(tmp_path)) == [] and not os.path.exists(rows_beside(path))


@settings(max_examples=400, deadline=None)
@given(name=st.text(alphabet="ab./\0", min_size=1, max_size=10))
def test_split_member_refuses_what_could_leave_its_root_as_splitting_it_would(name):
    # the one check (split_member, checked_structure) decides what splitting the name into
    # its components and looking at each decides
    from ocb.config import ROOT_NAME
    from ocb.errors import HostileArchive
    from ocb.index import split_member
    parts = name.rstrip("/").split("/")
    leaves = "\0" in name or name.startswith("/") or "" in parts or "." in parts or ".." in parts
    try:
        root, rest = split_member(name)
    except HostileArchive:
        assert leaves or not ROOT_NAME.match(parts[0])
        return
    assert not leaves and [root, *rest] == parts
