"""restore and journal: the swap of several roots is all or nothing, and recovery finishes or
rolls back whatever a dead run left, read off the file system, never assumed."""

import json
import os

import pytest
from ocb import journal, restore
from ocb.config import Root
from ocb.errors import RuntimeFailure, StoreLocked, UsageError
from ocb.index import Entry, Index


def tree(path, files):
    os.makedirs(path, exist_ok=True)
    for name, data in files.items():
        full = os.path.join(path, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as handle:
            handle.write(data)


def content(path):
    found = {}
    for current, _, names in os.walk(path):
        for name in names:
            full = os.path.join(current, name)
            with open(full) as handle:
                found[os.path.relpath(full, path)] = handle.read()
    return found


@pytest.fixture
def two_roots(tmp_path):
    """Two roots, each with an old target and a staged new tree, in one transaction."""
    work = tmp_path / "work"
    swaps = []
    for name in ("a", "b"):
        target = str(tmp_path / name)
        tree(target, {"f": f"old {name}"})
        swap = restore.Placement(name, "dir", target).swap("0123456789ab")
        tree(swap.staging, {"f": f"new {name}"})
        swaps.append(swap)
    txn = journal.Transaction.begin(str(work), "0123456789ab", "snap", swaps)
    for swap in swaps:
        swap.prepare([])
    return tmp_path, txn


def states(tmp_path):
    return [content(str(tmp_path / n)).get("f") for n in ("a", "b")]


def test_swap_then_finish_leaves_only_the_new_trees(two_roots):
    tmp_path, txn = two_roots
    txn.swap()
    with open(txn.path) as handle:
        assert json.load(handle)["state"] == "committed"
    txn.finish()
    assert states(tmp_path) == ["new a", "new b"]
    assert not os.path.exists(txn.path)
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "work"]


def test_a_failing_later_swap_swaps_back_the_earlier_one(two_roots, monkeypatch):
    tmp_path, txn = two_roots
    real = journal.exchange
    calls = []

    def failing(first, second):
        calls.append(first)
        if len(calls) == 2:
            raise PermissionError(1, "Operation not permitted", first)
        return real(first, second)

    monkeypatch.setattr(journal, "exchange", failing)
    with pytest.raises(RuntimeFailure, match="put back as it was"):
        txn.swap()
    assert states(tmp_path) == ["old a", "old b"]
    assert not os.path.exists(txn.path)
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "work"]


@pytest.mark.parametrize("done", [0, 1, 2])
def test_recovery_of_a_dead_swap_rolls_back_whatever_was_done(two_roots, done):
    """A run that died after `done` exchanges, before its next journal write."""
    tmp_path, txn = two_roots
    txn.state = "swapping"
    txn.save()
    for swap in txn.roots[:done]:
        swap.swap()
    txn.pid = 0  # its process is gone
    txn.save()
    assert journal.recover(str(tmp_path / "work")) == "rolled back"
    assert states(tmp_path) == ["old a", "old b"]
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "work"]
    assert journal.recover(str(tmp_path / "work")) is None  # and only once


def test_recovery_of_a_committed_transaction_finishes_it(two_roots):
    tmp_path, txn = two_roots
    txn.swap()
    txn.pid = 0
    txn.save()
    assert journal.recover(str(tmp_path / "work")) == "completed"
    assert states(tmp_path) == ["new a", "new b"]
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "work"]


def test_recovery_refuses_while_the_owner_still_runs(two_roots, monkeypatch):
    tmp_path, _ = two_roots
    monkeypatch.setattr(journal.Transaction, "owner_alive", lambda self: True)
    with pytest.raises(StoreLocked):
        journal.recover(str(tmp_path / "work"))
    assert states(tmp_path) == ["old a", "old b"]


def test_undo_is_idempotent(two_roots):
    tmp_path, txn = two_roots
    txn.roots[0].swap()
    for _ in range(2):
        for swap in txn.roots:
            swap.undo()
    assert states(tmp_path) == ["old a", "old b"]


def test_a_mount_point_root_swaps_its_top_level_entries_and_back(tmp_path):
    target = str(tmp_path / "m")
    tree(target, {"old.txt": "old", "keep/x": "x", "logs/app.log": "log"})
    place = restore.Placement("m", "dir", target, inside=True)
    swap = place.swap("0123456789ab")
    tree(swap.staging, {"new.txt": "new", "keep/y": "y"})
    txn = journal.Transaction.begin(str(tmp_path / "work"), "0123456789ab", "snap", [swap])
    carried = swap.prepare(["logs"])
    assert carried == ["logs"]
    txn.state = "swapping"
    txn.save()
    swap.swap()
    assert content(target) == {"new.txt": "new", "keep/y": "y", "logs/app.log": "log",
                               **{f".ocb-old.0123456789ab/{k}": v for k, v in {"old.txt": "old", "keep/x": "x"}.items()}}
    txn.rollback()
    assert content(target) == {"old.txt": "old", "keep/x": "x", "logs/app.log": "log"}
    assert not os.path.exists(txn.path)


def test_excluded_paths_are_carried_as_links_and_the_old_tree_is_untouched(tmp_path):
    target = str(tmp_path / "r")
    tree(target, {"f": "old", "gone/node_modules/m.js": "m", "logs/a.log": "a"})
    before = os.stat(os.path.join(target, "gone")).st_mtime_ns
    swap = restore.Placement("r", "dir", target).swap("0123456789ab")
    tree(swap.staging, {"f": "new"})
    found = restore.carried_paths(target, ["node_modules", "logs"], [], set())
    assert found == ["gone/node_modules", "logs"]
    assert swap.prepare(found) == found
    assert content(swap.staging) == {"f": "new", "gone/node_modules/m.js": "m", "logs/a.log": "a"}
    assert content(target) == {"f": "old", "gone/node_modules/m.js": "m", "logs/a.log": "a"}
    assert os.stat(os.path.join(swap.staging, "gone")).st_mtime_ns == before
    assert os.stat(os.path.join(swap.staging, "logs", "a.log")).st_ino == os.stat(os.path.join(target, "logs", "a.log")).st_ino


def test_a_database_companion_is_never_carried(tmp_path):
    target = str(tmp_path / "r")
    tree(target, {"db": "x", "db-wal": "stale", "x-wal": "other"})
    # "db" is a database of the index: its companion goes, another name's -wal is carried
    assert restore.carried_paths(target, ["*-wal"], [], {"db"}) == ["x-wal"]


def test_placements_follow_a_root_link_and_keep_it(tmp_path):
    real = tmp_path / "data" / "state"
    real.mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(str(real), str(home / ".openclaw"))
    places = restore.placements([Root("openclaw-state", str(home / ".openclaw"), "dir")], str(home), None)
    place = places["openclaw-state"]
    assert place.target == str(real) and place.link == str(home / ".openclaw") and not place.inside


def test_open_holders_names_a_process_holding_a_file(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "held"
    path.write_text("x")
    child = subprocess.Popen([sys.executable, "-c", "import sys,time; f=open(sys.argv[1]); print(1, flush=True); time.sleep(30)",
                              str(path)], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()
        assert child.pid in restore.open_holders([str(tmp_path)])
    finally:
        child.kill()
        child.wait()


# -- restoring some paths (--include) ------------------------------------------------------------

INCLUDE_ROOTS = [Root("openclaw-state", "/home/u/.openclaw", "dir"), Root("root-ssh", "/home/u/.ssh", "dir"),
                 Root("extra-notes", "/srv/notes.txt", "file")]


@pytest.mark.parametrize("patterns, expected", [
    ([".openclaw/workspace/SOUL.md"], {"openclaw-state": ["workspace/SOUL.md"]}),
    (["/home/u/.openclaw/workspace/SOUL.md"], {"openclaw-state": ["workspace/SOUL.md"]}),
    ([".ssh"], {"root-ssh": [""]}),
    ([".ssh/*", ".openclaw/a/"], {"root-ssh": ["*"], "openclaw-state": ["a"]}),
    (["/srv/notes.txt"], {"extra-notes": [""]}),
])
def test_include_patterns_are_placed_under_their_roots(patterns, expected) -> None:
    assert restore.include_patterns(patterns, INCLUDE_ROOTS, "/home/u") == expected


@pytest.mark.parametrize("pattern", ["/etc/passwd", ".config/x", "../u/.openclawx"])
def test_include_pattern_under_no_root_is_a_usage_error(pattern) -> None:
    with pytest.raises(UsageError, match="under none of the roots"):
        restore.include_patterns([pattern], INCLUDE_ROOTS, "/home/u")


@pytest.mark.parametrize("patterns, path, included", [
    (["workspace/SOUL.md"], "workspace/SOUL.md", True),
    (["workspace/SOUL.md"], "workspace", False),           # a directory above: made, not restored
    (["workspace/SOUL.md"], "workspace/SOUL.md.bak", False),
    (["workspace"], "workspace/a/b.md", True),             # a directory brings what it holds
    (["*.md"], "notes/x.md", True),                         # fnmatch: * crosses /
    ([""], "", True),                                       # the whole root
    (["a?c"], "abc/d", True),
])
def test_included(patterns, path, included) -> None:
    assert restore._included({"openclaw-state": patterns}, "openclaw-state", path) is included
    assert restore._included({"openclaw-state": patterns}, "other-root", path) is False


def test_mark_changes_carries_which_snapshots_hold_an_entry() -> None:
    from ocb.index import mark_changes

    previous, current = Index(), Index()
    previous.add(Entry("r", "same", "file", 0o644, 3, 1, sha256="a", held=["S1"]))
    previous.add(Entry("r", "changed", "file", 0o644, 3, 1, sha256="b", held=["S1", "S2"]))
    current.add(Entry("r", "same", "file", 0o644, 3, 1))
    current.add(Entry("r", "changed", "file", 0o644, 4, 2))
    current.add(Entry("r", "new", "file", 0o644, 4, 2))
    mark_changes(current, previous)
    same, changed, new = (current.entries[("r", p)] for p in ("same", "changed", "new"))
    assert (same.pack, same.held) == (False, ["S1"])
    assert (changed.pack, changed.held, changed.base_held) == (True, None, ["S1", "S2"])
    assert (new.pack, new.base_held) == (True, None)
    # persisted: `held` in every index, `base_held` only in the plan's
    assert Entry.from_json(same.to_json()).held == ["S1"]
    assert "base_held" not in changed.to_json() and changed.to_json(with_pack=True)["base_held"] == ["S1", "S2"]
