"""The local cache: the index and meta of the snapshot this machine's state descends from.

Written after each push and each in-place restore; read by ocb-plan to decide full vs
incremental and to detect a diverged lineage. The index is written before the state record
that names it, so a crash between the two leaves a state that does not match its index,
which reads as "no cache" (a full backup), never as a wrong incremental base.

Beside index.jsonl, `index.rows` holds the same index as marshal's rows (Index.save_rows_beside),
in order, read about five times faster (30,000 entries: 0.15 -> 0.03 s; every plan reads the
cache, a skip does little else) and a chunk at a time: ocb-plan merges it against its scan
without holding it whole. It is only ever a copy: trusted when its header names this
interpreter's marshal and the size and mtime of the index.jsonl beside it, and its body its
sha256, else index.jsonl is read whole (and a rows file is never needed: an older cache has none).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Iterable

from .blocks import sidecar_name
from .errors import BadDocument
from .fsutil import atomic_write, discard, write_bytes
from .index import FILE, Entry, Index, open_in_order, rows_beside

STATE = "state.json"
INDEX = "index.jsonl"
INDEX_ROWS = rows_beside(INDEX)  # Index.save_rows_beside's copy of index.jsonl
META = "meta.json"
BLOCKS_DIR = "blocks"  # block-hash sidecars of the large files (blocks.py), by path


@dataclass
class CachedSnapshot:
    state: dict  # store, snapshot, backup_type, chain, full_created_utc, incrementals
    head: Index  # the index's header: roots, snapshot, patterns (no entries)
    entries: Iterable[Entry]  # the index's entries in order_key order, to be read once
    meta: dict
    index_path: str = ""  # the index.jsonl they come from (reopen)

    def reopen(self) -> Iterable[Entry]:
        """The same entries from the start again, from the cache as it is now: ValueError
        when that is no longer this snapshot's index (the cache was written since)."""
        head, entries = open_in_order(self.index_path)
        if head.snapshot != self.head.snapshot or head.roots != self.head.roots:
            raise ValueError(f"the cache now holds the index of {head.snapshot}, not of {self.head.snapshot}")
        return entries


def load(cache_dir: str, store: str) -> CachedSnapshot | None:
    """The cached snapshot for `store`, or None when absent, for another store, or torn."""
    try:
        with open(os.path.join(cache_dir, STATE), encoding="utf-8") as handle:
            state = json.load(handle)
        with open(os.path.join(cache_dir, META), encoding="utf-8") as handle:
            meta = json.load(handle)
        index_path = os.path.join(cache_dir, INDEX)
        head, entries = open_in_order(index_path)
    except (OSError, ValueError, BadDocument):
        # unreadable or malformed reads as "no cache": the next backup is a full one
        return None
    if not isinstance(state, dict) or state.get("store") != store:
        return None
    if head.snapshot != state.get("snapshot") or meta.get("id") != state.get("snapshot"):
        return None
    return CachedSnapshot(state, head, entries, meta, index_path)


def _write_json(path: str, value: dict) -> None:
    write_bytes(path, json.dumps(value, indent=2).encode("utf-8"))


def sidecars_present(cache_dir: str, new_blocks_dir: str | None) -> set[str]:
    """The block-hash sidecars save would find: the cache's and a new snapshot's."""
    names: set[str] = set()
    for folder in (os.path.join(cache_dir, BLOCKS_DIR), new_blocks_dir):
        if folder and os.path.isdir(folder):
            names.update(os.listdir(folder))
    return names


def save(cache_dir: str, index_file: str, meta: dict, state: dict, new_blocks_dir: str | None = None,
         index: Index | None = None, kept_sidecars: set[str] | None = None) -> None:
    """Record a snapshot as this machine's base: block hashes, index, meta, then the state.

    Sidecars name the file version they describe (its sha256), so a sidecar left by a crash
    between these steps is simply not used; sidecars of paths the index no longer holds as
    files are removed. `index`: the file's content, when the caller has it loaded already;
    `kept_sidecars`: those of sidecars_present that name a file of the index, when the caller
    found them on its own pass over it; else the file is read again, as a stream.
    """
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    blocks_dir = os.path.join(cache_dir, BLOCKS_DIR)
    os.makedirs(blocks_dir, mode=0o700, exist_ok=True)
    if new_blocks_dir and os.path.isdir(new_blocks_dir):
        for name in os.listdir(new_blocks_dir):
            os.replace(os.path.join(new_blocks_dir, name), os.path.join(blocks_dir, name))
    sidecars = set(os.listdir(blocks_dir))
    if sidecars:
        if kept_sidecars is None:
            files = index.files() if index is not None else (e for e in open_in_order(index_file)[1] if e.type == FILE)
            kept_sidecars = sidecars_of(files, sidecars)
        for name in sidecars - kept_sidecars:
            os.unlink(os.path.join(blocks_dir, name))
    discard(os.path.join(cache_dir, INDEX_ROWS))  # never a copy of the index before this one
    with atomic_write(os.path.join(cache_dir, INDEX)) as out, open(index_file, "rb") as source:
        shutil.copyfileobj(source, out)
    # pack's rows copy carried over (the same index, a new header), else made from the index
    if not Index.copy_rows_beside(index_file, os.path.join(cache_dir, INDEX)):
        (index if index is not None else Index.load(index_file)).save_rows_beside(os.path.join(cache_dir, INDEX))
    _write_json(os.path.join(cache_dir, META), meta)
    _write_json(os.path.join(cache_dir, STATE), state)


def sidecars_of(files: Iterable[Entry], present: set[str]) -> set[str]:
    """Which of the `present` sidecars name one of `files`."""
    return {name for e in files if (name := sidecar_name(e.root, e.path)) in present}


def state_for(meta: dict, store: str, origin: str) -> dict:
    """The lineage record of `meta`'s snapshot (origin: "backup" or "restore")."""
    chain = meta.get("chain") or []
    full = chain[0] if chain else {}
    return {
        "store": store,
        "snapshot": meta["id"],
        "backup_type": meta.get("backup_type"),
        "chain": [link.get("id") for link in chain],
        "full_created_utc": full.get("created_at_utc", meta.get("created_at_utc")),
        "incrementals": max(len(chain) - 1, 0),
        "origin": origin,
    }


# -- the rollback record: the highest publish number this machine has seen in each store ---------

SEEN = "seen-stores.json"  # {store URL: {"store_id", "seq", "snapshot"}}, mode 0600


def seen(cache_dir: str, store: str) -> dict | None:
    """What this machine recorded of `store`'s latest authenticated pointer, or None."""
    try:
        with open(os.path.join(cache_dir, SEEN), encoding="utf-8") as handle:
            value = json.load(handle).get(store)
    except (OSError, ValueError, AttributeError):
        return None
    if (not isinstance(value, dict) or not isinstance(value.get("seq"), int)
            or not isinstance(value.get("store_id"), str)):
        return None
    return value


def record_seen(cache_dir: str, store: str, store_id: str, seq: int, snapshot: str) -> None:
    """Remember an authenticated pointer of `store` (its publish number `seq`); a lower
    number than the one recorded for the same store id never replaces it. OSError when the
    cache cannot be written."""
    path = os.path.join(cache_dir, SEEN)
    try:
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)
        if not isinstance(records, dict):
            records = {}
    except (OSError, ValueError):
        records = {}
    old = records.get(store)
    if isinstance(old, dict) and old.get("store_id") == store_id and isinstance(old.get("seq"), int) and old["seq"] >= seq:
        return
    records[store] = {"store_id": store_id, "seq": seq, "snapshot": snapshot}
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    _write_json(path, records)
    os.chmod(path, 0o600)


def forget(cache_dir: str) -> None:
    """No snapshot is this machine's base any more (after restoring a legacy backup, which no
    ocb incremental can build on): the next backup is a full one. The state record goes
    first, so a crash in between still reads as "no cache"."""
    for name in (STATE, META, INDEX, INDEX_ROWS):
        try:
            os.unlink(os.path.join(cache_dir, name))
        except FileNotFoundError:
            continue
