"""Summary: fetch, verify and apply a chain into staging, then swap each target into place.

Usage: ocb-chain | ocb-pull [--to DIR] [--dry-run] [--force] [--include PATTERN...]

Reads:   a restore document with `chain` (from ocb-chain).
Writes:  `pull`: {roots, dry_run, changes, stats}. Every volume of the chain is fetched and
         checked against its sha256 first; the archives are extracted full -> latest into a
         staging path beside each target; the staging tree is made equal to the final index
         (removing what it lacks, checking every file's size and sha256, setting modes and
         mtimes); only then are all targets swapped with their staging trees, as one
         transaction under a journal (settings.work_dir/restore-journal.json): a failure swaps
         back the roots already done, so every root is wholly old or wholly new. A restore
         killed mid-swap is finished (when every root was swapped) or rolled back by the next
         ocb-pull or ocb-plan, which says which on stderr before going on. An in-place restore
         carries over from each target what the snapshot's excludes left out (`kept`), follows
         a root that is a symlink into its target (the link stays), swaps a root that is a
         mount point by its top-level entries, and records the snapshot as this machine's base
         in the local cache, so the next backup is incremental.
  --to DIR   restore under DIR instead of in place (roots under $HOME keep their path relative
             to it, others go to DIR/<root name>); the cache is not touched.
  --dry-run  verify the chain and say what would change (and what would be kept); write nothing.
             `pull.changes` counts it all, `pull.by_root` per root, with the first 20 paths of
             each kind; at a terminal it reads as a list; -v logs every path on stderr.
  --force    restore in place even while other processes hold files open under a target
             (without it: exit 1 naming their pids; their writes would be lost).
  --include PATTERN...  restore only the matching paths: a path as it lies under the home
             (.openclaw/workspace/SOUL.md, '.ssh/*', globs allowed) or an absolute path of the
             live system (/root/.openclaw/workspace/SOUL.md); a directory brings what it holds.
             Only the snapshots of the chain that hold them are fetched (each index entry
             records them: `held`). In place, only those paths are replaced, staged, verified
             and swapped like a whole restore (everything else is carried over untouched, and a
             live path the snapshot lacks is kept); the local cache is not touched. With
             --to DIR they land at the same place under DIR. `pull.included` lists them (first
             20 per root), `pull.snapshots_fetched` what was fetched. A pattern under no root,
             or none matching the snapshot: exit 2.
  A legacy chain (the legacy script's backups, from ocb-chain) is restored the same way
  (legacy_restore.py): its volumes joined in name order and checked against the recorded
  sha256, decrypted (openssl enc AES-256-CBC) and merged full -> latest; its incrementals
  record no deletions, which `pull.merge` and stderr say. The next ocb-plan then takes a full
  snapshot (the local cache is cleared), starting an ocb chain beside the legacy files.
Environment: HF_TOKEN for Hub stores; OCB_PASSWORD or OCB_PASSWORD_FILE (legacy
  OPENCLAW_BACKUP_ENCRYPTION_PASSWORD) for sealed snapshots: the meta says which are sealed
  and with what, so the password is all a restore needs. Legacy encrypted backups:
  OPENCLAW_BACKUP_ENCRYPTION_PASSWORD (or OCB_PASSWORD / OCB_PASSWORD_FILE).
Example: ocb-chain | ocb-pull --dry-run;  ocb-chain --id ID | ocb-pull --include .openclaw/workspace/SOUL.md --to /tmp/r
Exit status: 0 restored or nothing to restore; 2 --include under no root or matching nothing;
             1 run-time failure (I/O, disk full, files
             open under a target, a root link that points nowhere, a swap that failed and
             was undone); 11 another restore is swapping its roots right now;
             2 sealed snapshot but no password; 3 bad input document; 4 integrity
             (checksum, wrong password, tampered seal, broken chain, hostile archive);
             13 credentials refused; 14 store unavailable.
"""

from __future__ import annotations

import argparse
import os

from .. import config, journal, legacy_restore, restore, seal
from ..config import Settings
from ..errors import UsageError
from ..fsutil import fresh_run_dir
from ..snapshot import resolve
from ..stores import open_store

STARTS_DOCUMENT = False
KIND = "restore"
NEEDS = ("chain", "meta")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", metavar="DIR", help="restore under DIR instead of in place")
    parser.add_argument("--dry-run", action="store_true", help="verify and report what would change; write nothing")
    parser.add_argument("--force", action="store_true",
                        help="restore in place even while other processes hold files open under a target")
    parser.add_argument("--include", nargs="+", action="extend", metavar="PATTERN",
                        help="restore only these paths (under the home, or absolute; globs allowed)")


def run(doc: dict, args: argparse.Namespace) -> dict:
    if "legacy" in doc["chain"]:  # the legacy script's backups: read as it wrote them
        doc["pull"] = legacy_restore.pull(doc, args)
        return doc
    settings = Settings.from_doc(doc)
    target_id = doc["chain"]["target"]
    snapshots = resolve(doc["meta"], target_id)
    keyring = None
    env = config.load_environment()
    if any(link["sealed"] for link in snapshots):
        password = config.seal_password(env)
        if password is None:
            raise UsageError(f"snapshot {target_id} is sealed: set OCB_PASSWORD or OCB_PASSWORD_FILE to restore it")
        keyring = seal.KeyRing(password, config.key_cache(env))
    to_dir = os.path.abspath(args.to) if args.to else None
    # --include: checked against the roots before anything is fetched
    include = restore.include_patterns(args.include, settings.roots, settings.home) if args.include else None
    places = restore.placements(settings.roots, settings.home, to_dir)
    if not args.dry_run:  # a restore killed mid-swap: finished or rolled back first
        journal.recover(settings.work_dir, [p.target for p in places.values()])
    if to_dir is None and not args.dry_run and not args.force:
        restore.refuse_if_open(places.values())  # before anything is fetched; again before the swap
    store = open_store(doc["store"], settings, config.store_secrets(env))
    run_dir = fresh_run_dir(os.path.join(settings.work_dir, f"restore-{target_id}"), config.under_lock(env))
    job = restore.Job(store=store, prefix=settings.path_prefix, snapshots=snapshots, places=places,
                      keyring=keyring, run_dir=run_dir, delta_min=settings.delta_min, work_dir=settings.work_dir,
                      excludes=settings.excludes, includes=settings.includes, force=args.force, include=include)
    if args.dry_run:
        doc["pull"] = restore.dry_run(job)
    else:
        # the snapshot becomes this machine's base only when all of it was restored in place
        whole = to_dir is None and include is None
        doc["pull"] = restore.apply(job, record=(settings.cache_dir, doc["store"], doc["meta"]) if whole else None)
    return doc


def render(doc: dict) -> str | None:
    """At a terminal, a dry run reads as a list (+ add, ~ change, - remove, = keep); anything
    else is the document."""
    pull = doc.get("pull")
    if doc.get("error") is not None or not isinstance(pull, dict) or not pull.get("dry_run"):
        return None
    return restore.render_dry_run(pull)
