"""Summary: scan the sources and decide what the next snapshot holds: full, incremental or skip.

Usage: ocb-plan [--store URL] [--full] > plan.json

Reads:   nothing on stdin; the sources (state dir, home-dir roots, extra dirs and files), the
         local cache of the last snapshot, the store's pointer (one read) and, before an
         incremental, one listing of the snapshot prefix: a chain that lacks a meta or a
         volume (or holds one of another size) is not built upon, a full snapshot is taken.
Writes:  a new backup document with `settings`, `plan` (type, parent, chain, roots, change
         counts, the plan index in the work dir), or `skip` when nothing changed. Entries
         that cannot be read (permission denied, name too long, I/O error) are left out with
         what they hold, warned about on every run and named in `plan.skipped` [{path, reason}].
Environment:
  OCB_STORE (legacy OPENCLAW_BACKUP_DATASET_REPO)   where snapshots go
  OCB_STATE_DIR (OPENCLAW_STATE_DIR, OPENCLAW_BACKUP_SOURCE_DIR)   the state dir (required)
  OPENCLAW_BACKUP_ROOT_*_DIR, OPENCLAW_BACKUP_EXTRA_DIRS / _FILES, OPENCLAW_BACKUP_NPM_ENABLED
  OCB_EXCLUDE, OCB_INCLUDE, OCB_DEFAULT_EXCLUDES=off   what to leave out
  OCB_FULL_EVERY (OPENCLAW_MAX_INCREMENTAL_BACKUPS, default 10), OCB_FULL_HOURS
  (OPENCLAW_FULL_BACKUP_INTERVAL_HOURS, default 24), OCB_INCREMENTAL=false
  OCB_WORK_DIR, OCB_CACHE_DIR, OCB_VOLUME_SIZE, OCB_COMPRESSION, OCB_COMPRESSION_LEVEL
  OCB_DELTA_MIN (default 4M): files this big are stored as changed blocks in incrementals
  OCB_SQLITE_TIMEOUT (default 30 s): how long a locked SQLite database is waited for
  --show-config  write the resolved settings and stop (the sh porcelain reads its work dir there)
  Not sealed (no password, or OCB_SEAL=off), ocb's own env file (openclaw-backup.env, which
  holds the token) is excluded. A store whose latest snapshot is sealed refuses a backup that
  would not be, unless OCB_SEAL=off says so (exit 2, nothing written).
Example: ocb-plan > plan.json && jq .plan.changes plan.json;  ocb-plan --show-config | jq .settings
Exit status: 0 planned or skip; 1 run-time failure; 2 bad flag or env value, missing state dir,
             an unsealed backup onto a sealed store without OCB_SEAL=off.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
from typing import TYPE_CHECKING

from .. import DOC_VERSION, __version__, config
from ..errors import RuntimeFailure, UsageError
from ..log import log

if TYPE_CHECKING:
    from .. import cache
    from ..index import Changes, Index, ScanReport

# what the plan itself uses is imported by _plan: --show-config (what ocb-backup and
# ocb-restore ask before taking the lock, once per run) stops before it, at a third of the cost

STARTS_DOCUMENT = True
# the plan index, for ocb-pack alone: the entries and what each needs (pack, base_sha256,
# base_held), as rows in order (RowsWriter: a sixth of the JSON lines' time to write and
# read, and written as the scan goes, so that neither stage holds it whole)
PLAN_INDEX = "plan-index.rows"
KIND = "backup"
NEEDS: tuple[str, ...] = ()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (overrides OCB_STORE)")
    parser.add_argument("--full", action="store_true", help="take a full snapshot whatever the cache says")
    parser.add_argument("--show-config", action="store_true",
                        help="write the resolved settings (a document with skip) and stop: nothing is scanned or read")


def run(doc: dict, args: argparse.Namespace) -> dict:
    env = config.load_environment()
    settings = config.resolve_settings(env, KIND)
    if not settings.seal:
        # ocb's own env file holds the token: never in a snapshot that is not sealed
        settings = dataclasses.replace(settings, excludes=settings.excludes + (config.OWN_ENV_FILE_NAME,))
    roots = config.resolve_roots(env)
    store_url = config.resolve_store(env, args.store)
    doc.update({"store": store_url, "settings": settings.as_dict()})
    if args.show_config:
        doc["skip"] = {"stage": "plan", "reason": "show-config"}
        return doc
    return _plan(doc, args, env, settings, roots, store_url)


def _plan(doc: dict, args: argparse.Namespace, env: config.Environment, settings: config.Settings,
          roots: list[config.Root], store_url: str) -> dict:
    from .. import cache, journal, lineage
    from ..fsutil import fresh_run_dir
    from ..index import Index, ScanReport, scan_roots
    from ..progress import Meter
    from ..snapshot import store_id_of, utc_text
    from ..stores import open_store

    journal.recover(settings.work_dir, [r.path for r in roots])  # never back up a half-swapped restore
    state_root = roots[0]
    if not os.path.isdir(state_root.path):
        raise UsageError(f"the state dir {state_root.path} does not exist (set OCB_STATE_DIR or OPENCLAW_STATE_DIR)")

    now = dt.datetime.now(dt.timezone.utc)
    store = open_store(store_url, settings, config.store_secrets(env))
    head = store.head()
    latest, newest = head.snapshot_id, None
    if head.pointer is None and store.list_snapshot_ids(settings.path_prefix):
        # snapshots but no pointer: the store is not empty. The newest complete snapshot is
        # the latest (built upon as ever); this snapshot's pointer replaces the lost one
        newest = lineage.newest_complete(store, settings.path_prefix)
        latest = newest[0] if newest else None
        log.warning(f"{store_url} holds snapshots but no pointer: " + (
            f"building on its newest complete snapshot {latest}, and writing the pointer again" if latest
            else "none of them is complete, taking a full snapshot"))
    latest_sealed = (head.pointer.get("meta") or {}).get("sealed") if head.pointer else newest and newest[1][-1].get("sealed")
    if latest_sealed and not settings.seal and not config.seal_explicitly_off(env):
        # a lost password must not turn a sealed store into a plaintext one without a word
        raise UsageError(f"the latest snapshot in {store_url} ({latest}) is sealed, and this one would not be: "
                         "set OCB_PASSWORD or OCB_PASSWORD_FILE, or OCB_SEAL=off to store unsealed snapshots on purpose")
    cached = cache.load(settings.cache_dir, store_url)
    reasons = lineage.full_reasons(settings, cached, latest, args.full, now)
    if not reasons:
        # an incremental builds on the whole chain: one listing tells whether the store still
        # holds every meta and volume of it, at the recorded sizes (nothing is downloaded)
        gaps = lineage.chain_gaps(cached.meta.get("chain") or [], store.list_files(settings.path_prefix))  # type: ignore[union-attr]
        if gaps:
            reasons.append(f"the chain of {cached.meta['id']} is broken in the store: missing "  # type: ignore[union-attr]
                           + ", ".join(gaps))
            log.warning(f"{reasons[-1]}: a new full snapshot starts a whole chain")
    full = bool(reasons)

    report = ScanReport()
    states, present = scan_roots(roots, report)
    # the snapshot's id and run dir first: the scan writes the plan index into it as it goes
    # (a skip removes it again)
    in_work_dir = set(os.listdir(settings.work_dir)) if os.path.isdir(settings.work_dir) else set()
    new_id = lineage.new_snapshot_id(now, head, cached, store, settings.path_prefix, in_work_dir)
    snapshot_dir = fresh_run_dir(os.path.join(settings.work_dir, new_id), config.under_lock(env))
    plan_index = os.path.join(snapshot_dir, PLAN_INDEX)
    meter = Meter("scan", 0, unit="entries", bar=False)
    try:
        changes, entries, file_bytes = _scan_into(plan_index, Index(roots=states, snapshot=new_id), present, settings,
                                                  report, cached, full)
    except BaseException:
        meter.abandon()
        shutil.rmtree(snapshot_dir, ignore_errors=True)
        raise
    meter.close(done=entries, note=f"{file_bytes} bytes in files")
    if report.missing_roots:
        log.info(f"absent roots, noted and not backed up: {', '.join(report.missing_roots)}")
    for path in report.skipped_special:
        log.warning(f"{path} is a socket, fifo or device: not backed up")
    for skipped in report.unreadable:
        log.warning(f"cannot read {skipped['path']} ({skipped['reason']}): not backed up")
    plan = {"roots": [r.as_dict() for r in roots], "changes": changes.as_dict(),
            "excluded": report.excluded, "missing_roots": report.missing_roots,
            "skipped": report.unreadable,
            "base": head.token, "base_snapshot": latest,
            # the store's identity, bound into each sealed archive and record (docs/format.md)
            "store_id": store_id_of(head.pointer) or os.urandom(16).hex()}
    if not full and not changes.any:
        shutil.rmtree(snapshot_dir, ignore_errors=True)
        doc["plan"] = plan
        doc["skip"] = {"stage": "plan", "reason": f"nothing changed since {cached.state['snapshot']}"}  # type: ignore[union-attr]
        log.info(doc["skip"]["reason"])
        return doc

    if full:
        log.info(f"full snapshot {new_id}: " + "; ".join(reasons))
        parent, parent_chain = None, []
    else:
        parent = cached.meta  # type: ignore[union-attr]
        parent_chain = parent.get("chain", [])
        log.info(f"incremental snapshot {new_id} on {parent['id']}: {changes.new} new, "
                 f"{changes.changed} changed, {changes.deleted} deleted")
    diverged = lineage.diverged_from(cached, latest)
    if diverged:
        log.warning(f"the store's latest snapshot {diverged} is not the one this machine descends from "
                    f"({cached.state['snapshot']}): taking a full snapshot; both stay restorable by id")  # type: ignore[union-attr]

    plan.update({
        "type": "full" if full else "incremental",
        "reasons": reasons,
        "parent": None if parent is None else parent["id"],
        "chain": [link["id"] for link in parent_chain] + [new_id],
        # the parent's links (ids, volumes, hashes) travel with the document, so the new meta
        # can list its whole chain without the store being read again
        "parent_chain": parent_chain,
        "diverged_from": diverged,
        "dir": snapshot_dir,
        "index": plan_index,
        "entries": entries,
    })
    doc.update({"ocb": DOC_VERSION, "id": new_id, "created_at_utc": utc_text(now),
                "tool_version": __version__, "plan": plan})
    return doc


def _scan_into(plan_index: str, head: Index, present: list, settings: config.Settings, report: ScanReport,
               cached: cache.CachedSnapshot | None, full: bool) -> tuple[Changes, int, int]:
    """Walk the roots, merged as it goes against the cached index (a stream in the same order:
    neither index is ever in memory whole), marking what the archive must carry, and write each
    entry to the plan index. Returns the changes, the entries, the bytes in files. A full
    snapshot still takes the cache's SQLite verdicts of unchanged files.

    While every entry met is the cache's own, unchanged (walk hands those on as they are), and
    none of the cache's was passed (gone), nothing is written: they are the cache's first
    entries, which are read again from it and written when the first change is met. So a state
    that did not change (a skip) writes no plan index, which was a tenth of its plan."""
    from ..fsutil import atomic_write
    from ..index import FILE, Changes, Cursor, RowsWriter, mark_change, order_key, walk

    previous = Cursor(cached.entries if cached is not None else ())
    changes, entries, file_bytes = Changes(), 0, 0
    held_back = 0  # the entries met, each the cache's own and unchanged, not written yet
    last_key = ""

    def write_held_back(rows: RowsWriter) -> None:
        again = iter(cached.reopen())  # type: ignore[union-attr]
        key = ""
        try:
            for _ in range(held_back):
                entry = next(again)
                key = order_key(entry)
                rows.add(entry, key)
        finally:
            getattr(again, "close", lambda: None)()  # a stream read in part: its file closed now
        if key != last_key:
            raise ValueError(f"its entry {held_back} is {key!r}, not {last_key!r}")

    try:
        with atomic_write(plan_index, durable=False) as out:
            rows = RowsWriter(out, head)
            for entry, old, key in walk(present, list(settings.excludes), list(settings.includes), report, previous):
                entries += 1
                if entry.type == FILE:
                    file_bytes += entry.size
                if held_back == entries - 1 and entry is old and not full and not previous.passed \
                        and (entry.type != FILE or entry.sha256):
                    held_back, last_key = entries, key  # what mark_change says of it: unchanged
                    changes.unchanged += 1
                    continue
                if held_back > 0:
                    write_held_back(rows)
                    held_back = -1  # all written: from here on every entry is
                mark_change(entry, None if full else old, changes)
                rows.add(entry, key)
            passed = previous.finish()
            if held_back > 0 and passed:
                write_held_back(rows)  # gone at the end: not a skip after all
            rows.close()
    except (ValueError, StopIteration) as exc:
        # the cache's rows were checked whole when opened: this is a change under our feet
        raise RuntimeFailure(f"the cache's index in {settings.cache_dir} changed while it was read ({exc!r}): "
                             "run the backup again") from None
    if not full:
        changes.deleted = passed
    return changes, entries, file_bytes
