"""index: scanning without following links, excludes, and change detection (table-driven)."""

import fnmatch
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ocb.config import Root
from ocb.index import DIR, FILE, SYMLINK, Entry, Index, mark_changes, scan


def idx(*entries):
    index = Index(roots={"r": {"kind": "dir", "present": True}})
    for entry in entries:
        index.add(entry)
    return index


def f(path, size=1, mtime=1, mode=0o644, sha="a" * 64):
    return Entry("r", path, FILE, mode, size, mtime, sha256=sha)


BASE = [Entry("r", "", DIR, 0o755, 0, 1), f("a"), f("b"), Entry("r", "l", SYMLINK, 0o777, 0, 1, target="a")]


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
    previous = idx(*BASE)
    current = idx(*[Entry(e.root, e.path, e.type, e.mode, e.size, e.mtime_ns, None, e.target) for e in change(list(BASE))])
    changes = mark_changes(current, previous)
    assert (changes.new, changes.changed, changes.deleted) == expected
    assert changes.any == (expected != (0, 0, 0))
    for entry in current.entries.values():
        if not entry.pack and entry.type == FILE:
            assert entry.sha256 == "a" * 64  # unchanged files keep the hash of the last snapshot


def test_without_a_previous_index_everything_is_packed():
    current = idx(*BASE)
    changes = mark_changes(current, None)
    assert changes.new == len(BASE) and all(e.pack for e in current.entries.values())


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
    from ocb.index import _matches
    patterns = list(DEFAULT_EXCLUDES) + ["[ab].b", "a/*/x"]
    name = rel.rpartition("/")[2]
    expected = any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, "*/" + p) if "/" in p
                   else fnmatch.fnmatchcase(name, p) for p in patterns)
    assert _matches(patterns, rel, name) == expected


def _rich_index() -> Index:
    index = idx(*BASE, f("ünï/cödé\udcff", size=7), f("db.sqlite", size=4096))
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
    assert Index.load_beside(path) == index
