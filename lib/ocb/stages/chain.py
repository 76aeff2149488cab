"""Summary: find the snapshot to restore and the chain (full first) that rebuilds it.

Usage: ocb-chain [--store URL] [--id ID | --at TIME | --list] > chain.json

Reads:   nothing on stdin; the store's pointer and ONE meta (each meta lists its whole chain);
         --at and --list read the catalog (publish order: seq), or for a store without
         one a listing of the snapshot folder (id order), never every meta.
Writes:  a new restore document with `settings` (roots to restore, work and cache dirs) and
         `chain`: {target, snapshots: [{id, backup_type, volumes, ...}, ...]}.
         An empty store gives `skip` with `no_snapshot: true` (a normal first start); a
         store with snapshots but no readable pointer is exit 4 naming its newest complete
         snapshot (--id and --at still work).
         --list writes `list`: {snapshots: [{id, created_at_utc, latest, this_machine,
         backup_type, files, bytes, stored_bytes, sealed, chain_length, chain_id, parent_id,
         format}]} and `skip`; on a terminal it is a table (--json: the document). `format`
         is "legacy" for the legacy script's backups (listed first), "ocb" for ocb's.
         In a sealed store (a password set, or this machine has seen the store authenticated)
         the pointer, the meta and the catalog read must carry a record MAC that verifies,
         every snapshot of the chain must be sealed, and the latest must not be older than
         the highest publish this machine has seen there (docs/format.md, README "Against
         someone who can write the store"); the publish seen is recorded in the cache.
         A store the legacy script wrote (its latest-backup.json has no record_sha256) is read
         as that script laid it out (legacy.py): `chain` then says `legacy` and lists the
         legacy backups full first, their volumes, checksums and encryption.
Environment:
  OCB_STORE (legacy OPENCLAW_BACKUP_DATASET_REPO); OCB_RESTORE_STORE (legacy
  OPENCLAW_RESTORE_DATASET_REPO) restores from another store
  OCB_STATE_DIR, OPENCLAW_BACKUP_ROOT_*_DIR, OPENCLAW_BACKUP_EXTRA_DIRS / _FILES,
  OPENCLAW_RESTORE_NPM_ENABLED   where each root is restored; OPENCLAW_BACKUP_METADATA_DIR
  (default ~/.backup-info) where a legacy archive's backup-info root goes
  OPENCLAW_RESTORE_ARCHIVE   restore this backup instead of the latest: a snapshot id (as
  --id) or a legacy archive name (openclaw-backup-YYYYMMDD-HHMMSS.tar.gz[.enc])
  OCB_WORK_DIR, OCB_CACHE_DIR
  OCB_PASSWORD or OCB_PASSWORD_FILE: checks the record MACs; OCB_SEAL=off: unsealed snapshots
  and records without a MAC are restored on purpose
  HF_TOKEN, HF_ENDPOINT for Hub stores; OCB_LOG_FORMAT=json, OCB_DEBUG=1, OCB_PROGRESS=1
  --show-config  write the resolved settings and stop (the sh porcelain reads its work dir there)
Example: ocb-chain --list;  ocb-chain | jq .chain.snapshots[].id;  ocb-chain --at 2026-12-01T09:00:00Z > c.json
Exit status: 0 ok or nothing to restore; 1 run-time failure; 2 bad flag or env value, or no
             such snapshot (an --id the store does not hold, an --at before its first
             snapshot: see ocb-chain --list);
             4 broken chain, damaged meta, a record failing or lacking its MAC, an unsealed
             snapshot in a sealed restore (named), a rollback; 13 credentials refused; 14 store unavailable.
"""

from __future__ import annotations

import argparse

from .. import DOC_VERSION, cache, catalog, config, legacy, lineage, seal
from ..errors import ChainBroken, IntegrityError, NoSuchSnapshot, NotAuthenticated, RollbackDetected
from ..log import log
from ..snapshot import (
    POINTER,
    RECORD_MAC,
    check_mac,
    store_id_of,
    check_id,
    check_meta,
    id_sort_key,
    id_time,
    meta_path,
    parse_moment,
    pick_at,
    pointer_meta,
    utc_text,
)
from ..stores import open_store
from ..stores.base import Head

STARTS_DOCUMENT = True
KIND = "restore"
NEEDS: tuple[str, ...] = ()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (overrides OCB_RESTORE_STORE / OCB_STORE)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--id", help="restore this snapshot id instead of the latest")
    which.add_argument("--at", help="restore the newest snapshot taken at or before TIME (UTC)")
    which.add_argument("--list", action="store_true", help="list the snapshots in the store")
    which.add_argument("--show-config", action="store_true",
                       help="write the resolved settings (a document with skip) and stop: the store is not read")


def run(doc: dict, args: argparse.Namespace) -> dict:
    env = config.load_environment()
    settings = config.resolve_settings(env, KIND)
    store_url, fallback_url = config.resolve_restore_stores(env, args.store)
    if args.show_config:
        doc.update({"store": store_url, "settings": settings.as_dict()})
        doc["skip"] = {"stage": "chain", "reason": "show-config"}
        return doc
    if args.id is not None:
        check_id(args.id, "--id")
    picking = args.id is None and args.at is None and not args.list
    archive_id, archive_name = legacy.archive_request(config.restore_archive(env) if picking else None)
    wanted = args.id if args.id is not None else archive_id
    moment = parse_moment(args.at) if args.at is not None else None
    secrets = config.store_secrets(env)
    store = open_store(store_url, settings, secrets)
    if fallback_url is not None and not store.exists():
        log.warning(f"the restore source {store_url} does not exist: restoring from the backup store {fallback_url}")
        store_url, store = fallback_url, open_store(fallback_url, settings, secrets)
    doc.update({"ocb": DOC_VERSION, "store": store_url, "settings": settings.as_dict()})
    prefix = settings.path_prefix
    guard = Guard(settings.cache_dir, store_url, env)
    try:
        head = store.head()
        pointer_problem = None
        if head.pointer is not None:
            guard.pointer(head.pointer, f"{store_url}/{POINTER}")
    except IntegrityError as exc:
        # a damaged or forged pointer: --id and --at do not need it, the latest is named below
        if args.id is None and moment is None and not args.list and isinstance(exc, NotAuthenticated):
            raise
        head, pointer_problem = Head(None, None), str(exc)

    if args.list:
        known = guard.catalog(store.read_catalog(), f"{store_url}/{catalog.NAME}")
        entries = (known["snapshots"] if known is not None
                   else [{"id": i} for i in sorted(store.list_snapshot_ids(prefix), key=id_sort_key)])
        confirmed = {e["id"] for e in known["snapshots"] if not e.get("from_listing")} if known is not None else None
        cached = cache.load(settings.cache_dir, store_url)
        base = cached.state.get("snapshot") if cached is not None else None
        doc["list"] = {"snapshots": legacy.list_entries(legacy.Reader(store), prefix, head, [
            _listed(e, head.snapshot_id, base) for e in entries], confirmed)}
        doc["skip"] = {"stage": "chain", "reason": f"listed {len(doc['list']['snapshots'])} snapshots"}
        return doc

    if wanted is not None:
        target = wanted
    elif moment is not None:
        known = guard.catalog(store.read_catalog(), f"{store_url}/{catalog.NAME}")
        if known is not None:
            # publish order, not the clock's: the last published of those stamped at or before
            # the moment (a snapshot taken after the clock went back is still the later one)
            stamped = [e["id"] for e in known["snapshots"] if id_time(e["id"]) <= moment]
            found = stamped[-1] if stamped else None
        else:
            found = pick_at(store.list_snapshot_ids(prefix), moment)
        if found is None:
            raise NoSuchSnapshot(f"no such snapshot: none in {store_url} was taken at or before {args.at} "
                                 f"(see ocb-chain --list)")
        target = found
    elif archive_name is not None or head.legacy:
        target = None  # the legacy pointer or archive name: legacy.meta_for below
    else:
        target = head.snapshot_id
        guard.not_rolled_back(head.pointer)
        if target is None and head.pointer is not None:
            raise ChainBroken("the store's latest-backup.json names no snapshot id (damaged?)")
        if target is None and (pointer_problem or store.list_snapshot_ids(prefix)):
            # snapshots but no readable pointer: not an empty store, never "no snapshot yet"
            newest = lineage.newest_complete(store, prefix)
            problem = pointer_problem or f"{store_url} holds snapshots but no {POINTER}"
            raise ChainBroken(f"{problem}: " + (
                f"the newest complete snapshot is {newest[0]} (ocb-restore --id {newest[0]}; "
                "the next backup builds on it and writes the pointer again)" if newest
                else "no snapshot in it is complete"))
    reader = legacy.Reader(store)
    legacy_meta = legacy.meta_for(reader, prefix, head, target, archive_name)
    if legacy_meta is not None:
        if target is None and archive_name is None:  # the pointer's pick, not the user's
            guard.legacy(store.read_catalog(), legacy_meta)
        section, meta, notes = legacy.chain_section(reader, legacy_meta, head, config.legacy_metadata_dir(env))
        for note in notes:
            log.warning(note)
        log.info(f"legacy backup {section['target']}: a chain of {len(section['snapshots'])} "
                 f"({section['snapshots'][0]['id']} full)")
        doc.update({"id": section["target"], "chain": section, "meta": meta})
        return doc
    if target is None:
        doc["skip"] = {"stage": "chain", "reason": f"no snapshot in {store_url} yet", "no_snapshot": True}
        log.info(doc["skip"]["reason"])
        return doc
    pointer = head.pointer or {}
    if target == head.snapshot_id and "meta" in pointer:
        source = f"{store_url}/{POINTER}"
        meta = pointer_meta(pointer, target, source)
        guard.meta(meta, source)
        snapshots = check_meta(meta, target, source, pointer)
    else:
        try:
            meta = store.read_meta(prefix, target)
        except ChainBroken:
            if args.id is not None and not _known(store, prefix, target):
                raise NoSuchSnapshot(f"no such snapshot: {store_url} holds no snapshot {target} "
                                     "(see ocb-chain --list)") from None
            raise
        source = f"{store_url}/{meta_path(prefix, target)}"
        guard.meta(meta, source)
        snapshots = check_meta(meta, target, source)
    guard.sealed_links(snapshots, source)
    log.info(f"snapshot {target}: a chain of {len(snapshots)} ({snapshots[0]['id']} full)")
    doc["id"] = target
    doc["chain"] = {"target": target, "latest": head.snapshot_id, "base": head.token,
                    "sealed": bool(meta.get("sealed")), "seal": meta.get("seal"), "snapshots": snapshots}
    doc["meta"] = meta
    return doc


def _known(store, prefix: str, snapshot_id: str) -> bool:
    """Whether the store has any trace of the snapshot (in its catalog, or a file of it):
    a meta missing for a snapshot the store knows is a broken chain, not a wrong --id."""
    known = store.read_catalog()
    if known is not None and any(e["id"] == snapshot_id for e in known["snapshots"]):
        return True
    return any(name.startswith(snapshot_id + ".") for name in store.list_files(prefix))


def _listed(entry: dict, latest: str | None, base: str | None) -> dict:
    """One line of --list: what the catalog says of a snapshot (id and time only for a store
    from before catalogs), whether it is the latest, whether this machine descends from it."""
    i = entry["id"]
    row = {"id": i, "created_at_utc": entry.get("created_at_utc") or utc_text(id_time(i)), "latest": i == latest,
           "this_machine": i == base}
    for key in ("backup_type", "files", "bytes", "stored_bytes", "sealed", "chain_length", "chain_id", "parent_id"):
        if key in entry:
            row[key] = entry[key]
    return row


def _size(value: object) -> str:
    if not isinstance(value, int):
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "?"


def _short(snapshot_id: object) -> str:
    return snapshot_id.removeprefix("openclaw-backup-") if isinstance(snapshot_id, str) else "?"


def render(doc: dict) -> str | None:
    """What a person reads on a terminal: --list as a table; None for the JSON document."""
    listed = doc.get("list")
    if not isinstance(listed, dict) or doc.get("error") is not None:
        return None
    rows = [("ID", "TIME (UTC)", "TYPE", "FILES", "SIZE", "SEALED", "CHAIN", "LINEAGE")]
    for s in listed["snapshots"]:
        marks = [m for m, on in (("latest", s.get("latest")), ("this machine", s.get("this_machine"))) if on]
        lineage_text = f"full {_short(s['chain_id'])}" if "chain_id" in s else "?"
        rows.append((s["id"], s["created_at_utc"].replace("T", " ").rstrip("Z"), s.get("backup_type", "legacy" if s.get("format") == "legacy" else "?"),
                     str(s["files"]) if isinstance(s.get("files"), int) else "?", _size(s.get("bytes")),
                     {True: "yes", False: "no"}.get(s.get("sealed"), "?"),  # type: ignore[arg-type]
                     str(s.get("chain_length", "?")),
                     lineage_text + (f" ({', '.join(marks)})" if marks else "")))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    count = len(listed["snapshots"])
    lines.append(f"{count} snapshot{'s' if count != 1 else ''} in {doc.get('store')}"
                 + ("" if count else " (none yet)") + "; --json for the document")
    return "\n".join(lines) + "\n"
class Guard:
    """What a restore trusts in a sealed store (docs/format.md, "Records of a sealed store").

    With a password (and OCB_SEAL not off), or on a machine that has seen this store's
    authenticated pointer: the pointer, metas and catalog must carry a record MAC that
    verifies before anything in them is used, except records written before MACs existed,
    whose whole chain is sealed in the first form (no store_id: their archives open only
    under the first associated data); every link of the chain must be sealed (exit 4 naming
    the unsealed ones); and the latest must not be older than the highest publish number this
    machine has seen there (exit 4; --id and --at pick an older snapshot on purpose).
    A MAC present is verified whenever a password is set, OCB_SEAL=off or not.
    """

    def __init__(self, cache_dir: str, store_url: str, env: config.Environment) -> None:
        self.cache_dir, self.store_url = cache_dir, store_url
        password = config.seal_password(env)
        self.keyring = seal.KeyRing(password, config.key_cache(env)) if password is not None else None
        self.seen = cache.seen(cache_dir, store_url)
        self.required = not config.seal_explicitly_off(env) and (password is not None or self.seen is not None)
        self.verified_pointer: dict | None = None
        self.meta_verified = False
        self.meta_without_mac = True

    def _check(self, record: dict, kind: str, what: str) -> bool:
        """True when the record's MAC verified; NotAuthenticated when it fails, or is missing
        where one is required: a record naming a store_id (written since MACs), or a pointer
        or catalog of a store this machine has seen authenticated. A meta of the first form
        stays readable (by --id): its chain is checked in sealed_links."""
        if RECORD_MAC in record and self.keyring is not None:
            check_mac(record, kind, self.keyring, what)
            return True
        if not self.required:
            return False
        if RECORD_MAC in record:
            # no password here to check it with: a sealed chain then stops in ocb-pull
            # (exit 2), an unsealed one below (exit 4); a MAC cannot be forged either way
            return False
        if self.seen is not None and kind != "meta":
            raise NotAuthenticated(f"{what} carries no MAC, but this machine has seen {self.store_url} authenticated "
                                   f"(publish {self.seen['seq']}, {self.seen.get('snapshot')}): refused")
        if store_id_of(record) is not None or "store_id" in record:
            raise NotAuthenticated(f"{what} carries no MAC: refused in a restore with a password "
                                   "(OCB_SEAL=off reads it anyway)")
        return False

    def pointer(self, pointer: dict, what: str) -> None:
        if self._check(pointer, "pointer", what) and store_id_of(pointer) and isinstance(pointer.get("seq"), int):
            self.verified_pointer = pointer  # what rollback detection and the store id compare with

    def not_rolled_back(self, pointer: dict | None) -> None:
        """The latest pointer is not older than the newest this machine has seen; then it is
        recorded as seen."""
        if self.verified_pointer is None or self.verified_pointer is not pointer:
            return
        store_id, seq = store_id_of(pointer), pointer["seq"]
        if self.seen is not None:
            if self.seen["store_id"] != store_id:
                raise RollbackDetected(
                    f"{self.store_url} is not the store this machine has seen there: its store id is {store_id}, "
                    f"this machine recorded {self.seen['store_id']} (publish {self.seen['seq']}). If the store was "
                    f"made again on purpose, remove {self.store_url!r} from {self.cache_dir}/{cache.SEEN}")
            if seq < self.seen["seq"]:
                raise RollbackDetected(
                    f"{self.store_url} was rolled back: its latest is {pointer.get('id')} (publish {seq}), but this "
                    f"machine has seen publish {self.seen['seq']} ({self.seen.get('snapshot')}) there. "
                    "ocb-restore --id ID restores an older snapshot on purpose")
        try:
            cache.record_seen(self.cache_dir, self.store_url, store_id, seq, str(pointer.get("id")))  # type: ignore[arg-type]
        except OSError as exc:
            log.warning(f"cannot record publish {seq} of {self.store_url} in {self.cache_dir}: {exc.strerror or exc}")

    def catalog(self, known: dict | None, what: str) -> dict | None:
        if known is None:
            return None
        if self._check(known, "catalog", what) and self.seen is not None and store_id_of(known) == self.seen["store_id"]:
            newest = max((e["seq"] for e in known["snapshots"]), default=0)
            if newest < self.seen["seq"]:
                raise RollbackDetected(f"{what} was rolled back: its newest publish is {newest}, but this machine has "
                                       f"seen publish {self.seen['seq']} ({self.seen.get('snapshot')}) there")
        return known

    def legacy(self, known: dict | None, what: str) -> None:
        """A legacy backup carries no MAC (the legacy script had none): in a sealed restore it
        is read only from a store that holds no sealed ocb snapshot, or a planted legacy
        pointer would be a downgrade that a fresh machine cannot see. Asked for by name (--id,
        OPENCLAW_RESTORE_ARCHIVE), it is the user's choice and restores."""
        if not self.required:
            return
        if self.seen is not None or catalog.seal_status(known).sealed:
            raise NotAuthenticated(
                f"{what} is a legacy backup (no MAC), but {self.store_url} holds sealed ocb snapshots: refused in a "
                "sealed restore (ocb-restore --id ID restores a snapshot by name; OCB_SEAL=off reads the legacy one anyway)")
        log.warning(f"{what} is a legacy backup: the legacy script authenticated nothing, so its content is "
                    "trusted as the store gives it")

    def meta(self, meta: object, what: str) -> None:
        self.meta_verified = isinstance(meta, dict) and self._check(meta, "meta", what)
        # without a password a MAC cannot be checked, but its absence still tells the form
        self.meta_without_mac = not (isinstance(meta, dict) and RECORD_MAC in meta)

    def sealed_links(self, snapshots: list[dict], what: str) -> None:
        """Every link sealed (where required), a meta without MAC of the first form only, no
        link of another store than the verified pointer's."""
        if not self.required:
            return
        if not self.meta_verified and self.meta_without_mac:
            second = [link["id"] for link in snapshots if "store_id" in link]
            if second:  # links of the second form are only ever written with a MAC'd meta
                raise NotAuthenticated(f"{what} carries no MAC, yet its chain names a store ({', '.join(second)}): refused")
        unsealed = [link["id"] for link in snapshots if not link["sealed"]]
        if unsealed:
            raise NotAuthenticated(
                f"{what}: the chain holds unsealed snapshots ({', '.join(unsealed)}), in a sealed restore: refused "
                "(a sealed store's snapshots are all sealed; OCB_SEAL=off restores them anyway)")
        store_id = store_id_of(self.verified_pointer)
        foreign = [link["id"] for link in snapshots if store_id and link.get("store_id") not in (None, store_id)]
        if foreign:
            raise NotAuthenticated(f"{what}: snapshots {', '.join(foreign)} belong to another store (store id)")
