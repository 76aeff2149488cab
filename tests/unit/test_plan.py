"""ocb-plan's scan merged against the cache: the entries it writes to the plan index."""

from __future__ import annotations

import os
import time

from ocb import cache
from ocb.config import Root, Settings
from ocb.index import FILE, Changes, Cursor, Index, RowsReader, ScanReport, mark_change, scan, scan_roots, walk
from ocb.stages.plan import _scan_into

STORE = "file:///srv/store"


def _tree(top, names):
    for rel in names:
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def _cached(tmp_path, roots):
    """A cache holding the index of the tree as it is now (snapshot s1)."""
    previous, _ = scan(roots, [], [])
    previous.snapshot = "s1"
    for entry in previous.entries.values():
        if entry.type == FILE:
            entry.sha256, entry.held = "e" * 64, ["s1"]
    source = str(tmp_path / "s1.jsonl")
    previous.save(source)
    meta = {"id": "s1", "chain": [{"id": "s1"}]}
    cache.save(str(tmp_path / "cache"), source, meta, cache.state_for(meta, STORE, "backup"))


def _planned(tmp_path, roots, name):
    """What the plan writes (its rows, read back) and its changes."""
    settings = Settings(home=str(tmp_path), work_dir=str(tmp_path / "work"), cache_dir=str(tmp_path / "cache"),
                        excludes=(), includes=())
    cached = cache.load(settings.cache_dir, STORE)
    assert cached is not None
    report = ScanReport()
    states, present = scan_roots(roots, report)
    out = str(tmp_path / f"{name}.rows")
    changes, entries, _ = _scan_into(out, Index(roots=states, snapshot="s2"), present, settings, report, cached, False)
    return changes, entries, list(RowsReader(out))


def _expected(tmp_path, roots):
    """Every entry the walk meets, marked against the cache: what a plan that held nothing
    back would write."""
    cached = cache.load(str(tmp_path / "cache"), STORE)
    report = ScanReport()
    _, present = scan_roots(roots, report)
    met = []
    changes = Changes()
    for entry, old, _ in walk(present, [], [], report, Cursor(cached.entries)):
        mark_change(entry, old, changes)
        met.append(entry)
    return met


def test_the_plan_writes_no_entry_of_an_unchanged_state_and_every_entry_of_a_changed_one(tmp_path):
    a, z = tmp_path / "a", tmp_path / "z"
    _tree(a, [f"d{n}/f{m}" for n in range(3) for m in range(4)] + ["top"])
    _tree(z, ["one", "two", "sub/three"])
    roots = [Root("a", str(a), "dir", True), Root("z", str(z), "dir", True)]
    _cached(tmp_path, roots)

    changes, entries, written = _planned(tmp_path, roots, "same")
    assert not changes.any and changes.unchanged == entries == 22 and written == []

    # a change after many unchanged entries: those held back are written, then the rest
    time.sleep(0.01)
    (a / "d2" / "f1").write_text("changed, longer")
    changes, entries, written = _planned(tmp_path, roots, "middle")
    assert changes.changed == 1 and written == _expected(tmp_path, roots) and len(written) == entries

    # a new entry first in order, and one gone last
    (a / "d2" / "f1").write_text("d2/f1")
    os.utime(a / "d2" / "f1", ns=(os.stat(a / "d2" / "f0").st_mtime_ns,) * 2)
    _cached(tmp_path, roots)
    (a / "0-new").write_text("new")
    changes, entries, written = _planned(tmp_path, roots, "first")
    assert changes.new == 1 and written == _expected(tmp_path, roots) and len(written) == entries

    # only entries gone, at the end of the order (a root gone whole): every entry written
    os.unlink(a / "0-new")
    os.utime(a, ns=(os.stat(a / "top").st_mtime_ns,) * 2)
    _cached(tmp_path, roots)
    for name in ("one", "two", "sub/three"):
        os.unlink(z / name)
    os.rmdir(z / "sub")
    os.rmdir(z)
    roots_now = [roots[0], Root("z", str(z), "dir", False)]
    changes, entries, written = _planned(tmp_path, roots_now, "gone")  # written at the end
    assert changes.deleted == 5 and changes.unchanged == entries and len(written) == entries
    assert [e.path for e in written] == [e.path for e in _expected(tmp_path, roots_now)]
