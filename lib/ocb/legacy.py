"""The legacy script's store layout, read back: its pointer, its metas and the chains they form.

The one owner of what ocb knows of that layout (docs/format.md, "The legacy layout as read"):

- `latest-backup.json` at the root: {dataset, latest, created_at_utc}, `latest` the store path
  of the newest meta. No `record_sha256` and no `ocb` field: that is how it is told from an
  ocb pointer (is_pointer), never as a damaged one.
- metas `<folder>/openclaw-backup-YYYYMMDD-HHMMSS[.tar.gz[.enc]].meta.json` (the script names
  a meta after its first volume; earlier versions after the bare id), metadata versions 1.0
  to 2.1: version, backup_type, chain_id, parent (a meta's store path), volumes (bare names),
  checksum ("sha256:<hex>" of the whole archive as uploaded, before splitting and after
  encryption), created_at_utc / last_backup_time, file_count, archive_size, encrypted,
  is_split. A field an older version lacks is inferred from what the store holds.
- volumes `openclaw-backup-YYYYMMDD-HHMMSS.tar.gz[.enc][.part-aa...]` beside the meta, joined in
  name order (split -b).

Chains are followed by parent pointers (full first); an incremental whose parent is lost is
placed by its chain_id, as the script did, among the metas of its folder taken at or before
the latest. Every name read here is checked so that no path can leave its folder. I/O only
through the Store handed in; no printing (notes are returned for the stage to log).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from .config import ROOT_NAME
from .errors import ChainBroken, UsageError
from .snapshot import ID_PREFIX, RECORD_SUM, SNAPSHOT_ID, id_sort_key, id_time, utc_text
from .stores.base import Head, Store

META = re.compile(r"^openclaw-backup-(\d{8}-\d{6})(\.tar\.gz(?:\.enc)?)?\.meta\.json$")
VOLUME = re.compile(r"^openclaw-backup-(\d{8}-\d{6})\.tar\.gz(\.enc)?(\.part-[a-z]{2,})?$")
ARCHIVE_NAME = re.compile(r"^openclaw-backup-\d{8}-\d{6}\.tar\.gz(\.enc)?$")
# the metas an id may have, in the order they are looked for (the newest naming first)
META_NAMES = ("{id}.tar.gz.meta.json", "{id}.tar.gz.enc.meta.json", "{id}.meta.json")
MAX_CHAIN = 100  # the script's own safety limit
MAX_MAJOR = 2  # metadata 1.0 .. 2.1; a major version above is a newer script's
BACKUP_INFO = "backup-info"  # the script's own metadata dir, an archive root of its own
FORMAT_LEGACY, FORMAT_OCB = "legacy", "ocb"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
NO_DELETIONS = ("legacy incrementals record no deletions: the chain is merged in order, as the legacy "
                "restore did, so files deleted between its backups come back")


# -- recognising the legacy records ------------------------------------------------------------

def is_pointer(value: Any) -> bool:
    """A latest-backup.json the legacy script wrote: `latest` names a meta, and nothing of an
    ocb record is there (an ocb pointer that lost its record_sha256 still says `ocb`)."""
    return (isinstance(value, dict) and RECORD_SUM not in value and "ocb" not in value
            and isinstance(value.get("latest"), str))


def is_meta(value: Any) -> bool:
    return (isinstance(value, dict) and RECORD_SUM not in value and "ocb" not in value
            and any(k in value for k in ("backup_type", "volumes", "checksum", "created_by", "version",
                                         "last_backup_time", "chain_id")))


def id_of_name(name: str) -> str | None:
    """The snapshot id a legacy meta or volume name carries."""
    match = META.match(name) or VOLUME.match(name)
    return ID_PREFIX + match.group(1) if match else None


def split_path(path: str, what: str) -> tuple[str, str]:
    """(folder, name) of a store path read from a legacy record; ChainBroken for one that could
    leave the store or is not a legacy meta name."""
    if not isinstance(path, str) or "\0" in path or path.startswith("/"):
        raise ChainBroken(f"{what} is not a store path: {path!r}")
    folder, _, name = path.rpartition("/")
    if folder and any(part in ("", ".", "..") for part in folder.split("/")):
        raise ChainBroken(f"{what} is not a store path: {path!r}")
    if not META.match(name):
        raise ChainBroken(f"{what} does not name a legacy meta: {path!r}")
    return folder, name


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def pointer_target(pointer: dict) -> tuple[str, str]:
    """(id, meta path) of the snapshot a legacy pointer names."""
    folder, name = split_path(pointer["latest"], "the legacy latest-backup.json's latest")
    return id_of_name(name), _join(folder, name)  # type: ignore[return-value]


# -- reading -----------------------------------------------------------------------------------

class Reader:
    """Legacy metas and listings of one store, each read once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._listings: dict[str, dict[str, int]] = {}
        self._metas: dict[str, dict | None] = {}

    def listing(self, folder: str) -> dict[str, int]:
        if folder not in self._listings:
            self._listings[folder] = self.store.list_files(folder)
        return self._listings[folder]

    def raw_meta(self, path: str) -> dict | None:
        """The JSON object at `path`, None when the store lacks it."""
        if path not in self._metas:
            raw = self.store.read_file(path)
            if raw is None:
                self._metas[path] = None
            else:
                try:
                    value = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise ChainBroken(f"{self.store.url}/{path} is not valid JSON (damaged?)") from None
                if not isinstance(value, dict):
                    raise ChainBroken(f"{self.store.url}/{path} is not a JSON object (damaged?)")
                self._metas[path] = value
        return self._metas[path]

    def meta(self, path: str) -> dict:
        value = self.raw_meta(path)
        if value is None:
            raise ChainBroken(f"the legacy meta {path} is missing from {self.store.url}")
        if not is_meta(value):
            raise ChainBroken(f"{self.store.url}/{path} is not a legacy meta (an ocb meta, or damaged)")
        return value

    def find(self, folder: str, snapshot_id: str) -> str | None:
        """The store path of `snapshot_id`'s legacy meta in `folder`, None when it has none (or
        only an ocb meta)."""
        names = self.listing(folder)
        for pattern in META_NAMES:
            name = pattern.format(id=snapshot_id)
            if name not in names:
                continue
            path = _join(folder, name)
            if name.endswith(f"{snapshot_id}.meta.json") and not is_meta(self.raw_meta(path)):
                continue  # the ocb meta of that id
            return path
        return None

    def link(self, path: str) -> dict:
        """The chain link of the legacy meta at `path`: what ocb-pull fetches and checks."""
        folder, name = split_path(path, "a legacy meta path")
        meta = self.meta(path)
        where = f"{self.store.url}/{path}"
        snapshot_id = id_of_name(name)
        assert snapshot_id is not None
        version = meta.get("version", "1.0")
        major = _major(version, where)
        if major > MAX_MAJOR:
            raise ChainBroken(f"{where} has metadata version {version}, written by a newer legacy script "
                              "(this ocb reads 1.0 to 2.1)")
        parent = meta.get("parent") or None
        backup_type = meta.get("backup_type") or ("incremental" if parent else "full")
        if backup_type not in ("full", "incremental"):
            raise ChainBroken(f"{where}: backup_type is {backup_type!r}")
        listing = self.listing(folder)
        volumes = _volumes(meta, snapshot_id, listing, where)
        checksum = meta.get("checksum") or None
        if checksum is not None:
            checksum = checksum[len("sha256:"):] if isinstance(checksum, str) and checksum.startswith("sha256:") else checksum
            if not isinstance(checksum, str) or not SHA256_HEX.match(checksum):
                raise ChainBroken(f"{where}: checksum is {meta.get('checksum')!r}, not a sha256")
        archive_size = meta.get("archive_size")
        if archive_size is not None and (not isinstance(archive_size, int) or isinstance(archive_size, bool)
                                         or archive_size < 0):
            raise ChainBroken(f"{where}: archive_size is {archive_size!r}")
        chain_id = meta.get("chain_id")
        return {
            "id": snapshot_id,
            "legacy": True,
            "meta": path,
            "meta_version": str(version),
            "backup_type": backup_type,
            "created_at_utc": _created(meta, snapshot_id),
            "chain_id": chain_id if isinstance(chain_id, str) else None,
            "parent": parent if isinstance(parent, str) else None,
            "encrypted": bool(meta.get("encrypted")) or any(".tar.gz.enc" in v["name"] for v in volumes),
            "split": len(volumes) > 1 or any(".part-" in v["name"] for v in volumes),
            "checksum": checksum,
            "archive_size": archive_size,
            "file_count": meta.get("file_count") if isinstance(meta.get("file_count"), int) else None,
            "folder": folder,
            "volumes": volumes,
        }


def _major(version: Any, where: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise ChainBroken(f"{where}: metadata version {version!r} is not a version") from None


def _created(meta: dict, snapshot_id: str) -> str:
    for key in ("created_at_utc", "last_backup_time"):
        text = meta.get(key)
        if isinstance(text, str):
            try:
                moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                continue
            return utc_text(moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc))
    return utc_text(id_time(snapshot_id))


def _volumes(meta: dict, snapshot_id: str, listing: dict[str, int], where: str) -> list[dict]:
    """The volumes in name order (the order `split` wrote and the script joined them), each
    with its size in the store. Names are bare (the script strips the prefix); a name must
    be one of this snapshot's volumes, so it cannot leave the folder."""
    recorded = meta.get("volumes")
    if recorded:
        if not isinstance(recorded, list) or not all(isinstance(v, str) for v in recorded):
            raise ChainBroken(f"{where}: volumes is not a list of names")
        names = [v.rpartition("/")[2] for v in recorded]
    else:
        # metadata that lists none: the snapshot's volumes as the store holds them
        names = [n for n in listing if VOLUME.match(n) and id_of_name(n) == snapshot_id]
        if not names:
            raise ChainBroken(f"{where} lists no volumes and the store holds none of {snapshot_id}")
    volumes = []
    for name in sorted(set(names)):
        if not VOLUME.match(name) or id_of_name(name) != snapshot_id:
            raise ChainBroken(f"{where}: {name!r} is not a volume of {snapshot_id}")
        if name not in listing:
            raise ChainBroken(f"volume {name} of {snapshot_id} is missing from the store")
        volumes.append({"name": name, "size": listing[name]})
    kinds = {bool(VOLUME.match(v["name"]).group(2)) for v in volumes}  # type: ignore[union-attr]
    if len(kinds) > 1:
        raise ChainBroken(f"{where} mixes encrypted and plain volumes")
    return volumes


# -- chains ------------------------------------------------------------------------------------

def resolve_chain(reader: Reader, start: str) -> tuple[list[dict], list[str]]:
    """The chain ending with the legacy meta at `start`, full first, and notes for people.

    Parent pointers are followed; when they end at an incremental (its parent lost), the
    chain is rebuilt by chain_id as the script did: the newest full of that chain_id in the
    folder, then its incrementals taken at or before this snapshot, in time order. A chain
    that cannot reach a full backup is refused: restoring part of one would lose state
    without a word."""
    links: list[dict] = []
    visited: set[str] = set()
    notes: list[str] = []
    current: str | None = start
    while current is not None:
        if current in visited:
            raise ChainBroken(f"the legacy chain of {start} refers to {current} twice (a loop)")
        if len(links) >= MAX_CHAIN:
            raise ChainBroken(f"the legacy chain of {start} is longer than {MAX_CHAIN} backups")
        visited.add(current)
        link = reader.link(current)
        links.append(link)
        if link["backup_type"] == "full":
            break
        current = _parent_path(link) if link["parent"] else None
    links.reverse()
    if links[0]["backup_type"] != "full":
        orphan = links[0]
        if not orphan["chain_id"]:
            raise ChainBroken(f"the legacy backup {orphan['id']} is an incremental whose parent is not recorded, "
                              "and it has no chain_id to find its full backup by")
        rebuilt = by_chain_id(reader, orphan["folder"], orphan["chain_id"], links[-1])
        if rebuilt is None:
            raise ChainBroken(f"the legacy backup {orphan['id']} is an incremental whose parent is not recorded, "
                              f"and no full backup of its chain_id {orphan['chain_id']} is in the store")
        notes.append(f"the parent of {orphan['id']} is not recorded: its chain was rebuilt by chain_id "
                     f"{orphan['chain_id']} ({len(rebuilt)} backups from {rebuilt[0]['id']}), as the legacy restore did")
        links = rebuilt
    return links, notes


def _parent_path(link: dict) -> str:
    parent = link["parent"]
    folder, name = split_path(parent if "/" in parent else _join(link["folder"], parent),
                              f"the parent of {link['id']}")
    return _join(folder, name)


def by_chain_id(reader: Reader, folder: str, chain_id: str, latest: dict) -> list[dict] | None:
    """Every backup of `chain_id` in `folder` taken at or before `latest`: the full first (the
    newest by name, as the script's scan ended on it), then the incrementals by time. Reads
    each legacy meta of the folder once."""
    full, incrementals = None, []
    limit = latest["created_at_utc"]
    for name in sorted(reader.listing(folder)):
        if not META.match(name):
            continue
        path = _join(folder, name)
        value = reader.raw_meta(path)
        if not is_meta(value) or value.get("chain_id") != chain_id:  # type: ignore[union-attr]
            continue
        link = reader.link(path)
        if link["created_at_utc"] > limit:
            continue
        if link["backup_type"] == "full":
            full = link
        else:
            incrementals.append(link)
    if full is None:
        return None
    incrementals.sort(key=lambda l: (l["created_at_utc"], id_sort_key(l["id"])))
    return [full] + [l for l in incrementals if l["id"] != full["id"]]


# -- what ocb-chain asks -----------------------------------------------------------------------

def meta_for(reader: Reader, prefix: str, head: Head, target: str | None, archive: str | None) -> str | None:
    """The legacy meta to restore, or None when the snapshot asked for is an ocb one.

    `archive`: OPENCLAW_RESTORE_ARCHIVE when it is a legacy archive name (the script looked
    for `<prefix>/<archive>.meta.json`). Otherwise `target` (an id from --id, --at or
    OPENCLAW_RESTORE_ARCHIVE), or with None the store's latest."""
    if archive is not None:
        path = _join(prefix, f"{archive}.meta.json")
        if path.rpartition("/")[2] not in reader.listing(prefix):
            raise ChainBroken(f"OPENCLAW_RESTORE_ARCHIVE={archive!r}: {reader.store.url} has no {path}")
        return path
    if target is None:
        return pointer_target(head.pointer)[1] if head.legacy else None  # type: ignore[arg-type]
    if head.legacy and pointer_target(head.pointer)[0] == target:  # type: ignore[arg-type]
        return pointer_target(head.pointer)[1]  # type: ignore[arg-type]
    if not head.legacy and target == head.snapshot_id:
        return None
    return reader.find(prefix, target)


def archive_request(value: str | None) -> tuple[str | None, str | None]:
    """OPENCLAW_RESTORE_ARCHIVE -> (snapshot id, legacy archive name): an id picks a snapshot
    like --id; an archive name (openclaw-backup-...tar.gz[.enc]) the legacy meta named after it."""
    if value is None:
        return None, None
    if SNAPSHOT_ID.match(value):
        return value, None
    if ARCHIVE_NAME.match(value):
        return None, value
    raise UsageError(f"OPENCLAW_RESTORE_ARCHIVE={value!r}: expected a snapshot id (openclaw-backup-YYYYMMDD-HHMMSS) "
                     "or a legacy archive name (openclaw-backup-YYYYMMDD-HHMMSS.tar.gz[.enc])")


OCB_VOLUME_HINT = re.compile(r"\.tar\.zst|\.ocbs|\.part-\d{4}$")  # names only ocb's volumes have


def snapshots_in(listing: dict[str, int], ocb_ids: set[str], reader: Reader, folder: str) -> list[str]:
    """Ids of the legacy backups of a folder listing, oldest first: every legacy meta that is
    not an ocb snapshot's. A bare `<id>.meta.json` (the script's earliest naming, which ocb
    shares) is ocb's when `ocb_ids` (the catalog's own entries) names it or an ocb volume of
    that id is there; else it is read to tell."""
    found = set()
    for name in listing:
        match = META.match(name)
        if not match:
            continue
        snapshot_id = ID_PREFIX + match.group(1)
        if match.group(2) is None:
            if snapshot_id in ocb_ids or any(n.startswith(snapshot_id + ".") and OCB_VOLUME_HINT.search(n)
                                             for n in listing):
                continue
            if not is_meta(reader.raw_meta(_join(folder, name))):
                continue
        found.add(snapshot_id)
    return sorted(found, key=id_sort_key)


def store_files(listing: dict[str, int], snapshot_ids: set[str]) -> list[str]:
    """Names of the legacy files (metas, volumes, checkpoints) of `snapshot_ids` in a listing."""
    return sorted(n for n in listing if (id_of_name(n) in snapshot_ids)
                  or (n.endswith(".checkpoint.json") and n.startswith(ID_PREFIX)
                      and n[: len(ID_PREFIX) + 15] in snapshot_ids))


# -- the document's legacy chain section ------------------------------------------------------

def check_section(chain: dict) -> None:
    """ChainBroken naming the first field of a legacy chain section (written by ocb-chain,
    read by ocb-pull) that is not what ocb-pull may act on."""
    section = chain.get("legacy")
    if not isinstance(section, dict):
        raise ChainBroken("chain.legacy is not an object")
    roots = section.get("roots", [])
    if not isinstance(roots, list):
        raise ChainBroken("chain.legacy.roots is not a list")
    for number, root in enumerate(roots):
        if (not isinstance(root, dict) or not isinstance(root.get("name"), str) or not ROOT_NAME.match(root["name"])
                or not isinstance(root.get("path"), str) or not root["path"].startswith("/")
                or root.get("kind") not in ("dir", "file")):
            raise ChainBroken(f"chain.legacy.roots[{number}] is not a root {{name, path, kind}}")
    links = chain.get("snapshots")
    if not isinstance(links, list) or not links:
        raise ChainBroken("chain.snapshots must be a non-empty list")
    for number, link in enumerate(links):
        where = f"chain.snapshots[{number}]"
        if not isinstance(link, dict) or link.get("legacy") is not True:
            raise ChainBroken(f"{where} is not a legacy link")
        if not isinstance(link.get("id"), str) or not SNAPSHOT_ID.match(link["id"]):
            raise ChainBroken(f"{where}.id is not a snapshot id")
        folder = link.get("folder")
        if not isinstance(folder, str) or folder.startswith("/") or (
                folder and any(p in ("", ".", "..") for p in folder.split("/"))):
            raise ChainBroken(f"{where}.folder is not a store folder")
        volumes = link.get("volumes")
        if not isinstance(volumes, list) or not volumes:
            raise ChainBroken(f"{where}.volumes is missing or empty")
        for v_number, volume in enumerate(volumes):
            name = volume.get("name") if isinstance(volume, dict) else None
            if not isinstance(name, str) or not VOLUME.match(name) or id_of_name(name) != link["id"]:
                raise ChainBroken(f"{where}.volumes[{v_number}] has a bad name: {name!r}")
            size = volume.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ChainBroken(f"{where}.volumes[{v_number}].size is not a size")
        checksum = link.get("checksum")
        if checksum is not None and (not isinstance(checksum, str) or not SHA256_HEX.match(checksum)):
            raise ChainBroken(f"{where}.checksum is not a sha256")
        if not isinstance(link.get("encrypted"), bool):
            raise ChainBroken(f"{where}.encrypted is not true or false")
    if links[-1]["id"] != chain.get("target"):
        raise ChainBroken(f"chain.snapshots ends with {links[-1]['id']}, not the target {chain.get('target')!r}")


def chain_section(reader: Reader, path: str, head: Head, metadata_dir: str) -> tuple[dict, dict, list[str]]:
    """(the document's `chain`, the target's meta, notes) for restoring the legacy meta at `path`."""
    links, notes = resolve_chain(reader, path)
    target = links[-1]["id"]
    latest = pointer_target(head.pointer)[0] if head.legacy else head.snapshot_id  # type: ignore[arg-type]
    if len(links) > 1:
        notes.append(NO_DELETIONS)
    section = {
        "target": target, "latest": latest, "base": head.token, "sealed": False, "seal": None,
        "legacy": {"merge": NO_DELETIONS if len(links) > 1 else None, "notes": notes,
                   "roots": [{"name": BACKUP_INFO, "path": metadata_dir, "kind": "dir", "required": False}]},
        "snapshots": links,
    }
    return section, reader.meta(links[-1]["meta"]), notes


def list_entries(reader: Reader, prefix: str, head: Head, entries: list[dict],
                 known: set[str] | None = None) -> list[dict]:
    """ocb-chain --list: the legacy backups of the snapshot folder (and of the folder the
    legacy pointer names), oldest first, then ocb's `entries`; each marked `format`.
    `known`: the ids the catalog lists from metas ocb wrote (not seeded from a listing)."""
    ocb_ids = known if known is not None else set()
    folders = [prefix]
    if head.legacy:
        folder = split_path(head.pointer["latest"], "the legacy latest-backup.json's latest")[0]  # type: ignore[index]
        if folder not in folders:
            folders.append(folder)
    latest = pointer_target(head.pointer)[0] if head.legacy else None  # type: ignore[arg-type]
    found: list[dict] = []
    for folder in folders:
        for snapshot_id in snapshots_in(reader.listing(folder), ocb_ids, reader, folder):
            found.append({"id": snapshot_id, "created_at_utc": utc_text(id_time(snapshot_id)),
                          "latest": snapshot_id == latest, "format": FORMAT_LEGACY})
    legacy_ids = {e["id"] for e in found}
    return found + [{**e, "format": FORMAT_OCB} for e in entries if e["id"] not in legacy_ids]
