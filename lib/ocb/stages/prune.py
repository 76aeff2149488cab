"""Summary: remove the snapshots the retention policy does not keep, in one atomic step, and free their storage.

Usage: ocb-prune [--store URL] [--keep-last N] [--keep-hourly N] [--keep-daily N] [--keep-weekly N]
                 [--keep-monthly N] [--keep-yearly N] [--keep-within DURATION]
                 [--include-legacy] [--dry-run] > pruned.json
       ocb-push | ocb-prune --after-backup      (what ocb-backup runs: prunes when OCB_PRUNE_EVERY says so)

Reads:   nothing on stdin (with --after-backup: the backup document of ocb-push). From the
         store: the pointer (with the latest meta it carries), the catalog and ONE listing of
         the snapshot folder; never every meta (only the meta of a snapshot the catalog does not
         list, to tell a whole one from a leftover).
Writes:  a prune document (with --after-backup: the backup document) with `prune`:
         {policy, latest, dry_run, snapshots: [{id, created_at_utc, backup_type, kept, why}],
         removed: {snapshots, files, bytes}, kept, leftovers, legacy, unlisted, reclaimed:
         {objects, bytes}, commits, commits_squashed, stats}. The policy has restic's meaning
         (the newest snapshot of each hour, day, ISO week, month, year is kept; UTC); the latest
         snapshot is always kept and a kept snapshot keeps its whole chain (`why` says
         "chain of ID"). Snapshots not kept, volumes with no meta and metas whose volumes are
         missing (leftovers of interrupted pushes) go in ONE atomic, conflict-checked step
         with the new catalog (one commit on the Hub, with parent_commit). Then, on the Hub,
         the LFS objects no kept file references are deleted for good (those of the removed
         files at once, those of writers that lost a race once a day old) and the history is
         squashed past OCB_SQUASH_COMMITS commits. Files of the legacy script
         (backups/openclaw-backup-*.tar.gz*, their .meta.json and .checkpoint.json) are left
         alone unless --include-legacy. --dry-run changes nothing and shows a table on stderr.
Environment:
  OCB_STORE (legacy OPENCLAW_BACKUP_DATASET_REPO), HF_TOKEN, OCB_PATH_PREFIX
  OCB_KEEP_LAST (legacy OPENCLAW_BACKUP_KEEP_COUNT), OCB_KEEP_HOURLY, OCB_KEEP_DAILY,
  OCB_KEEP_WEEKLY, OCB_KEEP_MONTHLY, OCB_KEEP_YEARLY, OCB_KEEP_WITHIN   the policy; any of them
      (or any --keep-* flag) replaces the default (last 24, hourly 48, daily 14, weekly 8,
      monthly 12) as a whole
  OCB_PRUNE_EVERY     full (default: after each backup that starts a new chain), N (every Nth
                      backup, by publish number) or off: when ocb-backup prunes
  OCB_SQUASH_COMMITS  squash the Hub history past this many commits (default 300; 0: never)
  OCB_RECLAIM         off: no LFS deletion and no squash on the Hub (default on)
Example: ocb-prune --dry-run --keep-daily 7 --keep-weekly 4;  ocb-prune | jq .prune.removed
Exit status: 0 ok or nothing to do; 1 refused because the pointer, the catalog or the latest
             meta cannot be read (never prune on incomplete knowledge), or a run-time failure;
             2 bad flag or env value; 5 the store moved while pruning (nothing deleted: run it
             again); 11 the store is locked; 13 credentials refused; 14 store unavailable.
             With --after-backup: the backup's status (0, or 6 when entries were skipped); a
             prune that fails there is a warning and `prune.error`, never a failed backup.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time

from .. import DOC_VERSION, catalog, config, retention
from ..config import Settings
from ..errors import EXIT_PARTIAL, IntegrityError, OcbError, RuntimeFailure, UsageError
from ..fsutil import TMP_MARK
from ..log import log
from ..snapshot import META_SUFFIX, POINTER, SNAPSHOT_ID, check_meta, meta_path, pointer_meta, sign
from ..stores import open_store
from ..stores.base import Store
from .push import check_known_catalog, record_key

STARTS_DOCUMENT = True
KIND = "prune"
NEEDS: tuple[str, ...] = ()

# LFS objects no file references, stored longer ago than this, are leftovers of writers that
# lost a race or died; younger ones may belong to a push still under way
RECLAIM_GRACE = dt.timedelta(hours=24)
OCB_FILE = re.compile(r"^(openclaw-backup-\d{8}-\d{6}(?:-\d+)?)\.")
# the legacy script's names: <id>.tar.gz[.enc][.part-aa], <archive>.meta.json, <archive>.checkpoint.json
LEGACY_FILE = re.compile(r"^openclaw-backup-\d{8}-\d{6}\.tar\.gz(\.enc)?(\.part-[a-z]+|\.meta\.json|\.checkpoint\.json)?$")
KEEP_FLAGS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (overrides OCB_STORE)")
    for rule in KEEP_FLAGS:
        what = "newest snapshots" if rule == "last" else f"newest {rule} snapshots (one per {_unit(rule)})"
        parser.add_argument(f"--keep-{rule}", type=_count, metavar="N", help=f"keep the N {what}")
    parser.add_argument("--keep-within", metavar="DURATION",
                        help="keep every snapshot taken within DURATION (2d, 36h, 1y6m) of the newest one")
    parser.add_argument("--include-legacy", action="store_true",
                        help="also remove the files the legacy backup script wrote")
    parser.add_argument("--dry-run", action="store_true", help="decide and report, change nothing")
    parser.add_argument("--after-backup", action="store_true",
                        help="read ocb-push's document on stdin and prune when OCB_PRUNE_EVERY says so")


def _unit(rule: str) -> str:
    return {"hourly": "hour", "daily": "day", "weekly": "ISO week", "monthly": "month", "yearly": "year"}[rule]


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}")
    return int(text)


def reads(args: argparse.Namespace) -> tuple[str, tuple[str, ...]] | None:
    """The document read on stdin (kind, sections) with these flags; None: one is started."""
    return ("backup", ("plan", "push")) if args.after_backup else None


def _flag_policy(args: argparse.Namespace) -> retention.Policy | None:
    given = {rule: getattr(args, f"keep_{rule}") for rule in KEEP_FLAGS if getattr(args, f"keep_{rule}") is not None}
    within = None
    if args.keep_within is not None:
        within = retention.parse_duration(config.check_duration(args.keep_within, f"--keep-within {args.keep_within!r}"))
    if not given and within is None:
        return None
    policy = retention.Policy(**given, within=within or retention.Duration())
    if policy.empty:
        raise UsageError("--keep-*: a policy that keeps nothing (every rule 0) would leave only the latest snapshot")
    return policy


def run(doc: dict, args: argparse.Namespace) -> dict:
    if args.after_backup:
        return _after_backup(doc, args)
    env = config.load_environment()
    settings = config.resolve_settings(env, KIND)
    store_url = config.resolve_store(env, args.store)
    policy = _flag_policy(args) or settings.policy()
    doc.update({"ocb": DOC_VERSION, "store": store_url, "settings": settings.as_dict()})
    store = open_store(store_url, settings, config.store_secrets(env))
    section = prune(store, settings, policy, include_legacy=args.include_legacy, dry_run=args.dry_run)
    doc["prune"] = section
    if section.get("empty"):
        doc["skip"] = {"stage": "prune", "reason": f"no snapshot in {store_url} yet"}
    return doc


def _not_due(settings: Settings, doc: dict) -> str | None:
    """Why no prune is due after this published backup, told without the store; None: it
    is, or (OCB_PRUNE_EVERY=N) the store's catalog tells."""
    if settings.prune_every == "off":
        return "OCB_PRUNE_EVERY=off"
    if settings.prune_every == "full" and doc["plan"]["type"] != "full":
        return "not a backup that starts a new chain"
    return None


def due_after_backup(doc: dict) -> bool:
    """Whether ocb-backup runs the prune after this backup document (ocb-stages' last stage):
    never after a failure or a skip, and not when _not_due says so (most backups: with the
    default, those that start no chain), which then leaves the document without `prune`."""
    if doc.get("error") is not None or doc.get("skip") is not None:
        return False
    try:
        return _not_due(Settings.from_doc(doc), doc) is None
    except (KeyError, TypeError, ValueError):
        return True  # a document the prune itself must say is wrong


def _after_backup(doc: dict, args: argparse.Namespace) -> dict:
    """ocb-backup's prune: after a published backup, when OCB_PRUNE_EVERY says it is due; a
    failure is the prune's, reported, never the backup's."""
    if any(getattr(args, f"keep_{rule}") is not None for rule in KEEP_FLAGS) or args.keep_within or args.store:
        raise UsageError("--after-backup takes the policy and the store from the backup document (OCB_KEEP_*)")
    settings = Settings.from_doc(doc)
    not_due = _not_due(settings, doc)
    if not_due is not None:
        doc["prune"] = {"due": False, "reason": not_due}
        return doc
    try:
        store = open_store(doc["store"], settings, config.store_secrets())
        if settings.prune_every == "full":
            due, reason = True, "a backup that starts a new chain"
        else:
            every = int(settings.prune_every)
            known = store.read_catalog()
            seq = next((e["seq"] for e in (known or {}).get("snapshots", []) if e["id"] == doc["id"]), None)
            due = seq is not None and seq % every == 0
            reason = f"backup number {seq}, OCB_PRUNE_EVERY={every}"
        if not due:
            doc["prune"] = {"due": False, "reason": reason}
            return doc
        log.info(f"pruning after {reason} (OCB_PRUNE_EVERY={settings.prune_every})")
        section = prune(store, settings, settings.policy(), include_legacy=False, dry_run=args.dry_run)
        doc["prune"] = {"due": True, "reason": reason, **section}
    except OcbError as exc:
        log.warning(f"the backup {doc['id']} is published, but the prune after it failed ({exc}): "
                    "the next prune tries again")
        doc["prune"] = {"due": True, "error": {"stage": "prune", "code": exc.code, "message": str(exc)}}
    return doc


def exit_status(doc: dict) -> int:
    """After a backup, the backup's status: 6 when it left entries out (README)."""
    return EXIT_PARTIAL if doc.get("kind") == "backup" and (doc.get("push") or {}).get("skipped") else 0


# -- the prune ---------------------------------------------------------------------------------

def _refuse(what: str, why: object) -> RuntimeFailure:
    return RuntimeFailure(f"{what}: {why}; nothing pruned (ocb-prune never acts on incomplete knowledge)")


def prune(store: Store, settings: Settings, policy: retention.Policy, include_legacy: bool,
          dry_run: bool) -> dict:
    started = time.monotonic()
    prefix = settings.path_prefix
    try:
        head = store.head()
    except IntegrityError as exc:
        raise _refuse(f"cannot read {POINTER}", exc) from None
    try:
        known = store.read_catalog()
    except IntegrityError as exc:
        raise _refuse(f"cannot read the catalog {catalog.NAME}", exc) from None
    key = record_key(settings)
    if known is not None and key is not None:
        try:  # what is removed is decided from the catalog: it is the store's own (record MAC)
            check_known_catalog(known, key, settings.cache_dir, store.url)
        except IntegrityError as exc:
            raise _refuse(f"the catalog {catalog.NAME} is not authenticated", exc) from None
    listing = store.list_files(prefix)
    ocb_names = [n for n in listing if OCB_FILE.match(n) and not LEGACY_FILE.match(n)]
    if head.pointer is None:
        if known is None and not ocb_names:
            return {"empty": True, "policy": str(policy), "dry_run": dry_run, "removed": _counts(0, 0, 0),
                    "stats": {"seconds": round(time.monotonic() - started, 3)}}
        raise _refuse(f"{store.url} holds snapshots but no readable {POINTER}", "the next backup writes it again")
    latest = head.snapshot_id
    if latest is None:
        raise _refuse(f"{POINTER} names no snapshot", "damaged")
    try:
        if "meta" in head.pointer:
            check_meta(pointer_meta(head.pointer, latest, POINTER), latest, POINTER, head.pointer)
        else:
            check_meta(store.read_meta(prefix, latest), latest, meta_path(prefix, latest))
    except IntegrityError as exc:
        raise _refuse(f"cannot read the latest meta ({latest})", exc) from None
    if known is None:
        raise _refuse(f"{store.url} has no catalog (a store written before catalogs)",
                      "the next backup writes one from the listing")
    entries = known["snapshots"]
    if latest not in catalog.ids(known):
        raise _refuse(f"the catalog does not list the latest snapshot {latest}", "damaged or written by another tool")

    decision = retention.decide(entries, policy, latest)
    for snapshot_id in decision.broken:
        log.warning(f"snapshot {snapshot_id} is kept, but its chain lacks a snapshot the catalog does not list: "
                    "it cannot be restored (ocb-check says more)")
    owned: dict[str, str] = {}  # file name -> the catalog id it belongs to
    for entry in entries:
        names = [entry["id"] + META_SUFFIX] + list(entry.get("volumes") or [])
        if entry.get("from_listing"):
            names += [n for n in listing if n.startswith(entry["id"] + ".")]
        owned.update(dict.fromkeys(names, entry["id"]))
    removed = set(decision.remove)
    paths = [f"{prefix}/{name}" for name, owner in owned.items() if owner in removed]

    leftovers, unlisted, legacy = _strays(store, prefix, listing, owned)
    paths += [f"{prefix}/{name}" for name in leftovers]
    if include_legacy:
        paths += [f"{prefix}/{name}" for name in legacy]
    section: dict = {
        "policy": str(policy),
        "latest": latest,
        "dry_run": dry_run,
        "snapshots": [{"id": e["id"], "created_at_utc": e["created_at_utc"], "backup_type": e.get("backup_type"),
                       "kept": e["id"] in decision.keep, "why": decision.keep.get(e["id"], [])} for e in entries],
        "kept": len(decision.keep),
        "leftovers": leftovers,
        "unlisted": unlisted,
        "legacy": {"files": len(legacy), "removed": include_legacy and bool(legacy)},
    }
    if dry_run:
        _table(section, leftovers, legacy, include_legacy)
        present = [p for p in paths if p.rsplit("/", 1)[-1] in listing]
        section["removed"] = _counts(len(removed), len(present), sum(listing[p.rsplit("/", 1)[-1]] for p in present))
        section.update({"reclaimed": {"objects": 0, "bytes": 0}, "commits": 0, "commits_squashed": 0})
    else:
        section["removed"] = _counts(0, 0, 0)
        stats = {"files_removed": 0, "bytes_removed": 0, "commits": 0}
        if paths:
            new_catalog = catalog.without(known, decision.remove)
            # signed as ocb-push signs it (issue 13's record MACs), when a password is set
            if key is not None:
                new_catalog = sign(new_catalog, "catalog", key)
            stats = store.remove(paths, head.token, new_catalog)
            section["removed"] = _counts(len(removed), stats["files_removed"], stats["bytes_removed"])
        section.update({"reclaimed": {"objects": 0, "bytes": 0}, "commits": stats["commits"], "commits_squashed": 0})
        log.info(f"kept {len(decision.keep)} snapshots, removed {len(removed)} ({stats['files_removed']} files, "
                 f"{stats['bytes_removed']} bytes)" + (f" and {len(leftovers)} leftover files" if leftovers else ""))
        if settings.reclaim:
            try:
                cutoff = dt.datetime.now(dt.timezone.utc) - RECLAIM_GRACE
                freed = store.reclaim(stats.get("objects", []), cutoff)
                section["reclaimed"] = {"objects": freed["objects_reclaimed"], "bytes": freed["bytes_reclaimed"]}
                section["commits_squashed"] = store.squash(settings.squash_commits)["commits_squashed"]
            except OcbError:
                section["stats"] = {"seconds": round(time.monotonic() - started, 3)}
                raise  # the removal stands; the document says what it did
            if section["reclaimed"]["objects"]:
                log.info(f"deleted {section['reclaimed']['objects']} LFS objects for good "
                         f"({section['reclaimed']['bytes']} bytes)")
            if section["commits_squashed"]:
                log.info(f"squashed {section['commits_squashed']} commits into one (OCB_SQUASH_COMMITS="
                         f"{settings.squash_commits})")
    if legacy and not include_legacy:
        log.info(f"{len(legacy)} files of the legacy backup script are left alone (--include-legacy removes them)")
    section["stats"] = {"seconds": round(time.monotonic() - started, 3)}
    return section


def _counts(snapshots: int, files: int, size: int) -> dict:
    return {"snapshots": snapshots, "files": files, "bytes": size}


def _strays(store: Store, prefix: str, listing: dict[str, int],
            owned: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """Files of the folder that no catalog entry owns: (leftovers to remove, ids of whole
    snapshots the catalog does not list, left alone; legacy files)."""
    groups: dict[str, list[str]] = {}
    legacy = []
    for name in sorted(listing):
        if name in owned or name.startswith(TMP_MARK):
            continue  # temporary files are the store's own to sweep
        match = OCB_FILE.match(name)
        if match is None:
            continue  # not ours: left alone
        if LEGACY_FILE.match(name) and match.group(1) + META_SUFFIX not in listing:
            legacy.append(name)
            continue
        groups.setdefault(match.group(1), []).append(name)
    leftovers: list[str] = []
    unlisted: list[str] = []
    for snapshot_id, names in groups.items():
        meta_name = snapshot_id + META_SUFFIX
        if meta_name in names and SNAPSHOT_ID.match(snapshot_id):
            try:
                meta = store.read_meta(prefix, snapshot_id)
                volumes = {v["name"]: v["size"] for v in meta["volumes"]}
            except (IntegrityError, KeyError, TypeError):
                volumes = None  # a damaged meta names nothing whole
            if volumes is not None and all(listing.get(name) == size for name, size in volumes.items()):
                unlisted.append(snapshot_id)
                log.warning(f"snapshot {snapshot_id} is whole in the store but not in its catalog: left alone")
                continue
        leftovers += names
    return leftovers, unlisted, legacy


def _table(section: dict, leftovers: list[str], legacy: list[str], include_legacy: bool) -> None:
    """The dry run, readable: one line per snapshot, then the files that are not snapshots."""
    rows = [("ID", "TIME", "TYPE", "KEEP?", "WHY")]
    for item in section["snapshots"]:
        rows.append((item["id"], item["created_at_utc"], item["backup_type"] or "listed",
                     "keep" if item["kept"] else "remove", ", ".join(item["why"])))
    widths = [max(len(row[n]) for row in rows) for n in range(4)]
    for row in rows:
        log.info("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])
    for name in leftovers:
        log.info(f"remove {name} (a leftover: no meta, or its meta's volumes are missing)")
    for name in legacy:
        log.info(f"{'remove' if include_legacy else 'leave'} {name} (written by the legacy script)")
