"""cache: index.rows, the copy of the cached index that loads fast, is only ever used when it is
a whole copy of the index.jsonl beside it."""

from __future__ import annotations

import os
import shutil

from ocb import cache
from ocb.index import DIR, FILE, Entry, Index, order_key

STORE = "file:///srv/store"


def snapshot_index(tmp_path, snapshot: str, files: int) -> str:
    index = Index(roots={"r": {"kind": "dir", "present": True}}, snapshot=snapshot)
    index.add(Entry("r", "", DIR, 0o755, 0, 1))
    for n in range(files):
        index.add(Entry("r", f"f{n}", FILE, 0o644, n, 10 + n, sha256=f"{n:064x}"))
    path = str(tmp_path / f"{snapshot}.jsonl")
    index.save(path)
    return path


def whole(loaded: cache.CachedSnapshot) -> Index:
    """The cached index, its stream of entries gathered (each in order_key order)."""
    index = Index(roots=loaded.head.roots, snapshot=loaded.head.snapshot, excludes=loaded.head.excludes,
                  includes=loaded.head.includes)
    entries = list(loaded.entries)
    assert entries == sorted(entries, key=order_key)
    for entry in entries:
        index.add(entry)
    return index


def save(tmp_path, snapshot: str, files: int) -> str:
    cache_dir = str(tmp_path / "cache")
    meta = {"id": snapshot, "chain": [{"id": snapshot}]}
    cache.save(cache_dir, snapshot_index(tmp_path, snapshot, files), meta, cache.state_for(meta, STORE, "backup"))
    return cache_dir


def test_the_rows_are_written_with_the_index_and_give_the_same_index(tmp_path):
    cache_dir = save(tmp_path, "s1", 5)
    assert os.path.isfile(os.path.join(cache_dir, cache.INDEX_ROWS))
    loaded = cache.load(cache_dir, STORE)
    assert loaded is not None and whole(loaded) == Index.load(os.path.join(cache_dir, cache.INDEX))


def test_rows_of_an_earlier_index_or_torn_ones_are_passed_over_for_the_json_lines(tmp_path):
    cache_dir = save(tmp_path, "s1", 5)
    rows = os.path.join(cache_dir, cache.INDEX_ROWS)
    shutil.copy(rows, tmp_path / "rows-of-s1")
    save(tmp_path, "s2", 7)
    shutil.copy(tmp_path / "rows-of-s1", rows)  # a copy of the index before: never read
    loaded = cache.load(cache_dir, STORE)
    assert loaded is not None and loaded.head.snapshot == "s2" and len(whole(loaded).entries) == 8
    with open(rows, "r+b") as handle:
        handle.truncate(os.path.getsize(rows) - 3)  # torn
    loaded = cache.load(cache_dir, STORE)
    assert loaded is not None and whole(loaded) == Index.load(os.path.join(cache_dir, cache.INDEX))
    os.unlink(rows)  # a cache from before rows existed
    assert whole(cache.load(cache_dir, STORE)) == Index.load(os.path.join(cache_dir, cache.INDEX))


def test_forget_removes_the_rows_too(tmp_path):
    cache_dir = save(tmp_path, "s1", 3)
    cache.forget(cache_dir)
    assert cache.load(cache_dir, STORE) is None
    assert not os.path.exists(os.path.join(cache_dir, cache.INDEX_ROWS))


def test_the_rows_of_the_snapshots_index_are_carried_over_only_when_they_copy_it_as_it_is(tmp_path):
    cache_dir = str(tmp_path / "cache")
    source = snapshot_index(tmp_path, "s1", 6)
    Index.load(source).save_rows_beside(source)  # as pack leaves it beside its index.jsonl
    meta = {"id": "s1", "chain": [{"id": "s1"}]}
    cache.save(cache_dir, source, meta, cache.state_for(meta, STORE, "backup"), index=Index())
    # carried over: a rows copy built from the (empty) `index` handed in would not load as it
    cached_jsonl = os.path.join(cache_dir, cache.INDEX)
    assert Index.load_rows(os.path.join(cache_dir, cache.INDEX_ROWS), {
        "copy_of": cache.INDEX, "size": os.path.getsize(cached_jsonl),
        "mtime_ns": os.stat(cached_jsonl).st_mtime_ns}) == Index.load(source)
    # a source whose rows no longer copy it (rewritten since): the rows are made afresh
    other = snapshot_index(tmp_path, "s1", 9)
    assert other == source and not Index.copy_rows_beside(source, str(tmp_path / "elsewhere.jsonl"))
    cache.save(cache_dir, source, meta, cache.state_for(meta, STORE, "backup"))
    loaded = cache.load(cache_dir, STORE)
    assert loaded is not None and len(whole(loaded).entries) == 10
