"""Summary: check that the store is whole: every snapshot's meta and chain, every volume.

Usage: ocb-check [--store URL] [--read-data | --read-data-subset N%] > check.json

Reads:   nothing on stdin; the store's pointer, its catalog, ONE listing of the snapshot folder
         and every snapshot's meta (one read each). Each snapshot of the catalog (of the
         listing, for a store without one) must have its meta, intact, and its whole chain:
         every link's meta and every volume at its recorded size, and with its recorded
         sha256 where the store keeps one (the Hub does for LFS files), nothing downloaded.
         The catalog must agree with the metas and the pointer must name a snapshot of it.
         An unsealed snapshot published after a sealed one in the same store is a problem.
  --read-data             also download every snapshot's volumes, verify them, open the
                          seal with the password and read the archive through to its index
  --read-data-subset N%   the same for N% of the snapshots, picked at random (at least one)
Writes:  a `check` document: {store, snapshots, volumes, bytes, sha256_confirmed, read_data,
         restorable (the snapshots whose chain no problem touches), problems: [{snapshot,
         what, message, fix}], warnings: [...], stats}. Warnings
         (files no snapshot lists, metas the catalog lacks, unsealed snapshots from before
         sealing began) do not change the exit status. Downloads go to a run dir of the work
         dir, removed after each snapshot.
Environment: OCB_STORE (legacy OPENCLAW_BACKUP_DATASET_REPO), OCB_PATH_PREFIX, HF_TOKEN,
  HF_ENDPOINT; OCB_PASSWORD or OCB_PASSWORD_FILE to read sealed snapshots with --read-data;
  OCB_WORK_DIR for the downloads.
Example: ocb-check | jq '.check.problems';  ocb-check --read-data-subset 10%
Exit status: 0 the store is whole; 4 a problem was found (each one named on stderr and in
             the document); 1 run-time failure or no such store; 2 bad flag or env value,
             or --read-data of sealed snapshots without a password; 13 credentials refused;
             14 store unavailable.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import time

from .. import DOC_VERSION, config, restore, seal, verify
from ..errors import IntegrityError, StoreMissing, UsageError
from ..fsutil import fresh_run_dir
from ..log import log
from ..snapshot import META_SUFFIX, POINTER, check_meta, ids_of_meta_names, meta_path, pointer_meta
from ..stores import open_store
from ..stores.base import Store
from ..verify import Finding

STARTS_DOCUMENT = True
KIND = "check"
NEEDS: tuple[str, ...] = ()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (overrides OCB_STORE)")
    reading = parser.add_mutually_exclusive_group()
    reading.add_argument("--read-data", action="store_true",
                         help="download, verify, unseal and read every snapshot's archive")
    reading.add_argument("--read-data-subset", metavar="N%",
                         help="the same for N%% of the snapshots, picked at random")


def run(doc: dict, args: argparse.Namespace) -> dict:
    started = time.monotonic()
    env = config.load_environment()
    settings = config.resolve_settings(env, "backup")
    store_url = config.resolve_store(env, args.store)
    percent = 100.0 if args.read_data else (
        verify.parse_percent(args.read_data_subset, "--read-data-subset") if args.read_data_subset else None)
    password = config.seal_password(env) if percent is not None else None
    store = open_store(store_url, settings, config.store_secrets(env))
    doc.update({"ocb": DOC_VERSION, "store": store_url, "settings": settings.as_dict()})
    if not store.exists():
        raise StoreMissing(f"{store_url} does not exist: there is nothing to check")
    prefix = settings.path_prefix
    problems: list[Finding] = []
    warnings: list[Finding] = []

    try:
        head_pointer = store.head().pointer
    except IntegrityError as exc:
        head_pointer = None
        problems.append(Finding(None, "pointer", str(exc), "the next backup writes the pointer again"))
    try:
        known = store.read_catalog()
    except IntegrityError as exc:
        known = None
        problems.append(Finding(None, "catalog", str(exc), "the metas are checked from the listing instead; "
                                "restore by id (ocb-restore --id ID) until the catalog is written again"))
    listing = store.list_file_digests(prefix)
    ids = [e["id"] for e in known["snapshots"]] if known is not None else ids_of_meta_names(list(listing))

    metas: dict[str, dict] = {}
    chains: dict[str, list[dict]] = {}
    for snapshot_id in ids:
        if f"{snapshot_id}{META_SUFFIX}" not in listing:
            problems.append(Finding(snapshot_id, "meta", f"the meta of {snapshot_id} is missing from the store "
                                    "(the catalog lists the snapshot)", f"{verify.NEW_FULL}; {verify.RESTORE_OTHER}"))
            continue
        try:
            meta = store.read_meta(prefix, snapshot_id)
            chains[snapshot_id] = check_meta(meta, snapshot_id, f"{store_url}/{meta_path(prefix, snapshot_id)}")
            metas[snapshot_id] = meta
        except IntegrityError as exc:
            problems.append(Finding(snapshot_id, "meta", str(exc), f"{verify.NEW_FULL}; {verify.RESTORE_OTHER}"))
    found, counts = verify.chain_findings(chains, listing, ids)
    problems.extend(found)
    if known is not None:
        problems.extend(verify.catalog_findings(known, metas))
        sealed_problems, sealed_warnings = verify.unsealed_findings(known)
        problems.extend(sealed_problems)
        warnings.extend(sealed_warnings)
    problems.extend(_pointer_findings(head_pointer, ids, store_url))
    warnings.extend(verify.stray_files(listing, chains, ids))

    read_data = None
    if percent is not None:
        # a snapshot whose own volumes the listing already faults is not downloaded again
        faulted = {f.snapshot for f in problems}
        chosen = verify.pick_subset([i for i in ids if i in chains and i not in faulted], percent, random.Random())
        read_data = _read_data(store, prefix, chosen, chains, password, settings.work_dir, problems)
    whole = verify.restorable(chains, problems)

    doc["check"] = {
        "store": store_url, "snapshots": len(ids), **counts, "read_data": read_data, "restorable": whole,
        "problems": [f.as_dict() for f in problems], "warnings": [f.as_dict() for f in warnings],
        "stats": {"seconds": round(time.monotonic() - started, 3)},
    }
    for finding in warnings:
        log.warning(f"{finding.message} (fix: {finding.fix})")
    for finding in problems:
        log.error(f"{finding.message} (fix: {finding.fix})")
    if problems:
        raise IntegrityError(f"{store_url} is not whole: {len(problems)} problem(s): "
                             + "; ".join(f.message for f in problems)
                             + f" ({len(whole)} of {len(ids)} snapshots restorable"
                             + (f", the newest {whole[-1]})" if whole else ")"))
    log.info(f"{store_url} is whole: {len(ids)} snapshots, {counts['volumes']} volumes, {counts['bytes']} bytes"
             + (f", {len(read_data['snapshots'])} snapshots read through" if read_data else ""))
    return doc


def _pointer_findings(pointer: dict | None, ids: list[str], store_url: str) -> list[Finding]:
    if pointer is None:
        return []
    target = pointer.get("id")
    source = f"{store_url}/{POINTER}"
    if target not in ids:
        return [Finding(target, "pointer", f"{source} names {target!r}, which the store does not list",
                        "the next backup writes the pointer again; until then ocb-restore --id ID")]
    if "meta" in pointer:
        try:
            check_meta(pointer_meta(pointer, target, source), target, source, pointer)
        except IntegrityError as exc:
            return [Finding(target, "pointer", str(exc), "the next backup writes the pointer again")]
    return []


def _read_data(store: Store, prefix: str, chosen: list[str], chains: dict[str, list[dict]],
               password: bytes | None, work_dir: str, problems: list[Finding]) -> dict:
    """Download, verify, open and read each chosen snapshot's own archive to its index."""
    sealed = [i for i in chosen if chains[i][-1]["sealed"]]
    if sealed and password is None:
        raise UsageError(f"{len(sealed)} of the snapshots to read are sealed ({sealed[0]}...): "
                         "set OCB_PASSWORD or OCB_PASSWORD_FILE")
    keyring = seal.KeyRing(password, config.key_cache()) if password is not None else None
    read, volumes, size = [], 0, 0
    for snapshot_id in chosen:
        link = chains[snapshot_id][-1]
        run_dir = fresh_run_dir(os.path.join(work_dir, f"check-{snapshot_id}"), False)
        try:
            fetched = [(v["name"], store.fetch_volume(prefix, v["name"], v["size"], v["sha256"], run_dir), v["sha256"])
                       for v in link["volumes"]]
            index = restore.read_archive(chains[snapshot_id], fetched, keyring, os.path.join(run_dir, "index.jsonl"))
        except IntegrityError as exc:
            problems.append(Finding(snapshot_id, "archive", f"snapshot {snapshot_id}: {exc}",
                                    f"{verify.NEW_FULL}; {verify.RESTORE_OTHER}"))
            continue
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        read.append(snapshot_id)
        volumes += len(fetched)
        size += sum(v["size"] for v in link["volumes"])
        log.info(f"read {snapshot_id} through: {len(fetched)} volumes, {sum(1 for _ in index.files())} files in its index")
    return {"snapshots": read, "volumes": volumes, "bytes": size}
