"""The catalog: what every snapshot in a store is, in one file read with one request.

The one owner of its format (docs/format.md describes it for people). `ocb-catalog.json` sits
at the store root next to latest-backup.json and is written in the same atomic step as each
snapshot (and each removal), so listing, checking and retention read it instead of every
meta. Content:

    {"ocb": 1, "kind": "catalog", "snapshots": [entry, ...], "record_sha256": ...}

in publish order, each entry made from the snapshot's meta by `entry`; `seq` numbers the
publishes 1, 2, 3... (gaps where snapshots were removed). A store written before catalogs
existed gets one from its listing (`seed`): id and time only, marked `from_listing`.

Pure: dicts and bytes in and out, no I/O. A catalog read from a store is checked by `parse`
(its record_sha256, then its shape): ChecksumMismatch for damage, ChainBroken for a record
that is whole but does not hold together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ChainBroken, StoreConflict
from .snapshot import (
    BACKUP_TYPES,
    MAX_BYTES,
    RECORD_MAC,
    RECORD_SUM,
    STORE_ID,
    SNAPSHOT_ID,
    VOLUME_NAME,
    id_sort_key,
    id_time,
    parse_record,
    resolve,
    utc_text,
    with_digest,
)

NAME = "ocb-catalog.json"
VERSION = 1
KIND = "catalog"
FROM_LISTING = "from_listing"
ENTRY_FIELDS = ("id", "created_at_utc", "backup_type", "parent_id", "chain_id", "chain_length", "sealed",
                "files", "bytes", "stored_bytes", "volumes", "seq")
LISTED_FIELDS = ("id", "created_at_utc", "seq", FROM_LISTING)


def entry(meta: dict, seq: int) -> dict:
    """What the catalog says of the snapshot `meta` describes; its chain must resolve."""
    snapshot_id = meta.get("id") if isinstance(meta, dict) else None
    chain = resolve(meta, snapshot_id if isinstance(snapshot_id, str) else "?")
    last = chain[-1]
    return {
        "id": snapshot_id,
        "created_at_utc": last["created_at_utc"],
        "backup_type": last["backup_type"],
        "parent_id": chain[-2]["id"] if len(chain) > 1 else None,
        "chain_id": chain[0]["id"],
        "chain_length": len(chain),
        "sealed": last["sealed"],
        "files": meta.get("file_count"),
        "bytes": meta.get("bytes"),
        "stored_bytes": sum(volume["size"] for volume in last["volumes"]),
        "volumes": [volume["name"] for volume in last["volumes"]],
        "seq": seq,
    }


def _build(entries: list[dict], store_id: str | None = None) -> dict:
    """A new catalog; unsigned: a sealed store's publisher signs it (snapshot.sign, "catalog")."""
    body: dict[str, Any] = {"ocb": VERSION, "kind": KIND, "snapshots": entries}
    if store_id is not None:
        body["store_id"] = store_id
    catalog = with_digest(body)
    check(catalog, "the new catalog")
    return catalog


def append(catalog: dict | None, meta: dict) -> dict:
    """The catalog with the snapshot of `meta` added last (what a publish writes).

    StoreConflict when that id is in it already: the snapshot exists, the backup must re-plan.
    """
    entries = list(catalog["snapshots"]) if catalog is not None else []
    new = entry(meta, entries[-1]["seq"] + 1 if entries else 1)
    if any(e["id"] == new["id"] for e in entries):
        raise StoreConflict(f"snapshot {new['id']} is already in the store's catalog: re-plan")
    store_id = meta.get("store_id") or (catalog or {}).get("store_id")
    return _build(entries + [new], store_id)


def seed(ids: Iterable[str]) -> dict:
    """A catalog for a store written before catalogs existed, from its listing: every
    snapshot's id and time (from the id), in the order they were taken."""
    ordered = sorted(set(ids), key=id_sort_key)
    return _build([{"id": i, "created_at_utc": utc_text(id_time(i)), "seq": n, FROM_LISTING: True}
                   for n, i in enumerate(ordered, start=1)])


def without(catalog: dict, ids: Iterable[str]) -> dict:
    """The catalog less the snapshots `ids` (what a prune writes); every id must be in it."""
    gone = set(ids)
    missing = gone - {e["id"] for e in catalog["snapshots"]}
    if missing:
        raise ValueError(f"not in the catalog: {', '.join(sorted(missing))}")
    return _build([e for e in catalog["snapshots"] if e["id"] not in gone], catalog.get("store_id"))


def ids(catalog: dict | None) -> list[str]:
    """The snapshot ids the catalog lists, in publish order."""
    return [] if catalog is None else [e["id"] for e in catalog["snapshots"]]


def encode(value: dict) -> bytes:
    """The catalog file's bytes: compact (it is read on every push), one line."""
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def parse(raw: bytes, what: str) -> dict:
    """A catalog read from a store (`what` names the file): its digest, then its shape."""
    return check(parse_record(raw, what), what)


# -- shape -------------------------------------------------------------------------------------

def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_BYTES


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(SNAPSHOT_ID.match(value))


def _check_entry(item: Any, where: str) -> dict:
    if not isinstance(item, dict):
        raise ChainBroken(f"{where} is not an object")
    if not _is_id(item.get("id")):
        raise ChainBroken(f"{where}.id is not a snapshot id: {item.get('id')!r}")
    if not isinstance(item.get("seq"), int) or isinstance(item["seq"], bool) or item["seq"] < 1:
        raise ChainBroken(f"{where}.seq is not a publish number: {item.get('seq')!r}")
    if not isinstance(item.get("created_at_utc"), str):
        raise ChainBroken(f"{where}.created_at_utc is missing")
    listed = item.get(FROM_LISTING, False)
    fields = LISTED_FIELDS if listed is True else ENTRY_FIELDS
    if listed not in (True, False) or set(item) != set(fields):
        raise ChainBroken(f"{where} has the fields {sorted(item)}, expected {sorted(fields)}")
    if listed:
        return item
    if item["backup_type"] not in BACKUP_TYPES:
        raise ChainBroken(f"{where}.backup_type is {item['backup_type']!r}")
    if not isinstance(item["sealed"], bool):
        raise ChainBroken(f"{where}.sealed is {item['sealed']!r}, not true or false")
    for name in ("files", "bytes", "stored_bytes"):
        if not _is_count(item[name]):
            raise ChainBroken(f"{where}.{name} is not a count: {item[name]!r}")
    if not _is_count(item["chain_length"]) or item["chain_length"] < 1:
        raise ChainBroken(f"{where}.chain_length is {item['chain_length']!r}")
    volumes = item["volumes"]
    if (not isinstance(volumes, list) or not volumes
            or not all(isinstance(v, str) and VOLUME_NAME.match(v) and v.startswith(item["id"] + ".") for v in volumes)):
        raise ChainBroken(f"{where}.volumes is not a list of this snapshot's volume names")
    full = item["backup_type"] == "full"
    if full and (item["parent_id"] is not None or item["chain_id"] != item["id"] or item["chain_length"] != 1):
        raise ChainBroken(f"{where} is a full snapshot with a parent or a chain of its own")
    if not full and (not _is_id(item["parent_id"]) or not _is_id(item["chain_id"]) or item["chain_length"] < 2
                     or item["parent_id"] == item["id"] or item["chain_id"] == item["id"]):
        raise ChainBroken(f"{where} is an incremental snapshot without a parent and a chain")
    return item


def check(value: Any, what: str) -> dict:
    """`value` if it is a well-formed catalog, else ChainBroken naming `what` and the entry."""
    if not isinstance(value, dict):
        raise ChainBroken(f"{what} is not an object")
    if value.get("ocb") != VERSION or value.get("kind") != KIND:
        raise ChainBroken(f"{what} is not an ocb catalog of version {VERSION} "
                          f"(ocb {value.get('ocb')!r}, kind {value.get('kind')!r})")
    extra = set(value) - {"ocb", "kind", "snapshots", RECORD_SUM, RECORD_MAC, "store_id"}
    if extra:
        raise ChainBroken(f"{what} has unknown fields: {', '.join(sorted(extra))}")
    if "store_id" in value and not (isinstance(value["store_id"], str) and STORE_ID.match(value["store_id"])):
        raise ChainBroken(f"{what}.store_id is not a store id: {value['store_id']!r}")
    snapshots = value.get("snapshots")
    if not isinstance(snapshots, list):
        raise ChainBroken(f"{what}.snapshots is not a list")
    position = {item.get("id"): n for n, item in enumerate(snapshots) if isinstance(item, dict)}
    seen: dict[str, dict] = {}
    previous_seq = 0
    for number, item in enumerate(snapshots):
        where = f"{what}: snapshots[{number}]"
        _check_entry(item, where)
        if item["id"] in seen:
            raise ChainBroken(f"{where} lists {item['id']} a second time")
        if item["seq"] <= previous_seq:
            raise ChainBroken(f"{where}.seq is {item['seq']}, not after {previous_seq}: not in publish order")
        parent = seen.get(item.get("parent_id") or "")
        # a parent that is listed (prune keeps whole chains; an older store may not list it)
        # must agree with its child on the chain they are part of
        if (parent is not None and not parent.get(FROM_LISTING)
                and (parent["chain_id"] != item["chain_id"] or parent["chain_length"] + 1 != item["chain_length"])):
            raise ChainBroken(f"{where} does not continue the chain of its parent {parent['id']}")
        if parent is None and position.get(item.get("parent_id") or "", -1) > number:
            raise ChainBroken(f"{where} is listed before its parent {item['parent_id']}")
        seen[item["id"]] = item
        previous_seq = item["seq"]
    return value


# -- seal status: for ocb-check and ocb-doctor ---------------------------------------------------

@dataclass(frozen=True)
class SealStatus:
    """Whether a store is sealed, and what in it is not.

    `sealed`: some snapshot in it is sealed, or its catalog or pointer carries a record MAC.
    `unsealed`: the ids of the catalog entries that are not sealed, in publish order (a
    planted or deliberate OCB_SEAL=off snapshot in a sealed store). `unknown`: entries seeded
    from a listing, which do not say. `authenticated`: the catalog carries a record MAC (it
    is not verified here: that needs the password, snapshot.check_mac)."""

    sealed: bool
    unsealed: tuple[str, ...]
    unknown: tuple[str, ...]
    authenticated: bool


def seal_status(catalog: dict | None, pointer: dict | None = None) -> SealStatus:
    """Pure: what a store's catalog (catalog.parse'd) and pointer say about its seal."""
    entries = (catalog or {}).get("snapshots") or []
    authenticated = RECORD_MAC in (catalog or {})
    sealed = (authenticated or RECORD_MAC in (pointer or {})
              or bool(((pointer or {}).get("meta") or {}).get("sealed"))
              or any(e.get("sealed") is True for e in entries))
    return SealStatus(
        sealed=sealed,
        unsealed=tuple(e["id"] for e in entries if e.get("sealed") is False),
        unknown=tuple(e["id"] for e in entries if e.get(FROM_LISTING)),
        authenticated=authenticated,
    )
