"""Snapshot formats: the id, the meta, the pointer, and the chain a meta lists.

The one owner of these formats (docs/format.md describes them for people): ids are made,
parsed and ordered here; metas and pointers are built here (by ocb-push) and checked here
(by ocb-chain, the document parser and the stores, which read them back); records carry the
sha256 of their own canonical JSON (`record_sha256`). No I/O: callers hand bytes and dicts in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from . import DOC_VERSION, __version__
from .compression import COMPRESSIONS
from .errors import ChainBroken, ChecksumMismatch, NotAuthenticated, UsageError

if TYPE_CHECKING:
    from . import seal as sealing

POINTER = "latest-backup.json"
META_SUFFIX = ".meta.json"
ID_PREFIX = "openclaw-backup-"
ID_TIME_FORMAT = "%Y%m%d-%H%M%S"
SNAPSHOT_ID = re.compile(r"^openclaw-backup-\d{8}-\d{6}(-\d+)?$")
VOLUME_NAME = re.compile(r"^openclaw-backup-\d{8}-\d{6}(-\d+)?\.[a-z0-9.]+(\.part-\d{4})?$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
BACKUP_TYPES = ("full", "incremental")
MAX_BYTES = 2**53  # JSON's exact integers; a size beyond is a damaged record
RECORD_SUM = "record_sha256"
SEALED_SUFFIX = ".ocbs"  # a sealed archive: <id>.tar.zst.ocbs (its volumes: .ocbs.part-0001, ...)
RECORD_MAC = "record_mac"
STORE_ID = re.compile(r"^[0-9a-f]{32}$")  # 128 random bits, drawn by the first ocb-plan of a store


# -- ids ---------------------------------------------------------------------------------------

def make_id(now: dt.datetime, taken: set[str]) -> str:
    """openclaw-backup-YYYYMMDD-HHMMSS (UTC), with -2, -3... when that second is already used."""
    base = id_second(now)
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def id_second(now: dt.datetime) -> str:
    """The id a snapshot taken at `now` gets when its second is free."""
    return ID_PREFIX + now.astimezone(dt.timezone.utc).strftime(ID_TIME_FORMAT)


def id_time(snapshot_id: str) -> dt.datetime:
    """The UTC moment encoded in an id (openclaw-backup-YYYYMMDD-HHMMSS[-N])."""
    stamp = snapshot_id[len(ID_PREFIX):][:15]
    return dt.datetime.strptime(stamp, ID_TIME_FORMAT).replace(tzinfo=dt.timezone.utc)


def id_sort_key(snapshot_id: str) -> tuple[str, int]:
    """Order of taking: by time, then by collision suffix (no suffix is the first)."""
    stamp = snapshot_id[len(ID_PREFIX):][:15]
    rest = snapshot_id[len(ID_PREFIX) + 15:]
    return (stamp, int(rest[1:]) if rest.startswith("-") else 1)


def check_id(value: str, where: str) -> str:
    if not SNAPSHOT_ID.match(value):
        raise UsageError(f"{where} {value!r} is not a snapshot id ({ID_PREFIX}YYYYMMDD-HHMMSS)")
    return value


def parse_moment(text: str) -> dt.datetime:
    """--at values: ISO 8601 (Z or offset; naive means UTC), or YYYYMMDD-HHMMSS."""
    candidate = text.strip()
    try:
        if re.fullmatch(r"\d{8}-\d{6}", candidate):
            return dt.datetime.strptime(candidate, ID_TIME_FORMAT).replace(tzinfo=dt.timezone.utc)
        moment = dt.datetime.fromisoformat(candidate.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at {text!r}: expected a time such as 2026-11-26T12:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def pick_at(ids: list[str], moment: dt.datetime) -> str | None:
    """The newest snapshot taken at or before `moment`."""
    eligible = [i for i in ids if SNAPSHOT_ID.match(i) and id_time(i) <= moment]
    return max(eligible, key=id_sort_key) if eligible else None


def utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime(UTC_FORMAT)


def parse_utc(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, UTC_FORMAT).replace(tzinfo=dt.timezone.utc)


def sealed_as_packed(doc: dict) -> str | None:
    """Why the document cannot go on, when its `archive` names a sealed file (ocb-pack sealed it
    as it wrote) but it has no `seal` section: it was edited, and a stage that took `archive` as
    the plain archive would seal it twice or cut it against the plain size. None otherwise."""
    archive = doc.get("archive")
    if doc.get("seal") is None and isinstance(archive, dict) and str(archive.get("path", "")).endswith(SEALED_SUFFIX):
        return (f"field 'seal' is missing, but archive.path {archive['path']} is an archive ocb-pack sealed "
                "as it wrote it (the document was edited): run the backup pipe again")
    return None


def meta_path(prefix: str, snapshot_id: str) -> str:
    return f"{prefix}/{snapshot_id}{META_SUFFIX}"


def ids_of_meta_names(names: list[str]) -> list[str]:
    """Snapshot ids from the file names of a store folder's listing (metas are not read)."""
    ids = [n[: -len(META_SUFFIX)] for n in names if n.endswith(META_SUFFIX)]
    return sorted((i for i in ids if SNAPSHOT_ID.match(i)), key=id_sort_key)


# -- records: the pointer and metas carry the sha256 of their own canonical JSON ----------------

def canonical_json(value: Any) -> bytes:
    """Keys sorted, `,` and `:` separators, non-ASCII as UTF-8 (docs/format.md)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _record_digest(record: dict) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != RECORD_SUM})).hexdigest()


# -- record MACs: what someone who can write the store cannot forge without the password ---------

def _mac_message(record: dict, mac: dict) -> bytes:
    body = {k: v for k, v in record.items() if k not in (RECORD_SUM, RECORD_MAC)}
    body[RECORD_MAC] = {k: v for k, v in mac.items() if k != "tag"}
    return canonical_json(body)


def sign(record: dict, kind: str, key: "sealing.PasswordKey") -> dict:
    """`record` (a pointer, meta or catalog) with its record_mac under the password key, then
    its record_sha256. The MAC names the KDF and salt in clear, so a reader that has only the
    password can derive the key."""
    from . import seal as sealing  # imported when used: most stages read records without keys

    mac = {"alg": "HMAC-SHA256", "kdf": key.kdf.as_dict(), "kdf_salt": key.kdf_salt.hex()}
    body = {k: v for k, v in record.items() if k not in (RECORD_SUM, RECORD_MAC)}
    mac["tag"] = sealing.record_tag(sealing.record_mac_key(key), kind, _mac_message(body, mac)).hex()
    return with_digest({**body, RECORD_MAC: mac})


def check_mac(record: dict, kind: str, keyring: "sealing.KeyRing", what: str) -> None:
    """The record's MAC verifies under the password: NotAuthenticated naming `what` if it is
    missing, malformed or does not verify (altered, or another password)."""
    from . import seal as sealing  # imported when used: most stages read records without keys

    mac = record.get(RECORD_MAC)
    if not isinstance(mac, dict):
        raise NotAuthenticated(f"{what} carries no MAC ({RECORD_MAC})")
    try:
        if mac.get("alg") != "HMAC-SHA256" or set(mac) != {"alg", "kdf", "kdf_salt", "tag"}:
            raise ValueError("not an HMAC-SHA256 record MAC")
        kdf = sealing.kdf_from_dict(mac["kdf"])
        salt, tag = bytes.fromhex(mac["kdf_salt"]), bytes.fromhex(mac["tag"])
        if len(salt) != sealing.KDF_SALT_SIZE or len(tag) != 32:
            raise ValueError("a salt or tag of the wrong length")
    except (ValueError, TypeError) as exc:
        raise NotAuthenticated(f"{what}: its {RECORD_MAC} is malformed ({exc})") from None
    key = keyring.password_key(kdf, salt)
    expected = sealing.record_tag(sealing.record_mac_key(key), kind, _mac_message(record, mac))
    if not sealing.tags_equal(expected, tag):
        raise NotAuthenticated(f"{what} fails its MAC: a wrong password, or the record was altered by "
                               "someone without the password")


def store_id_of(record: dict | None) -> str | None:
    """The store id a pointer, meta or catalog records (None for one written before them)."""
    value = (record or {}).get("store_id")
    return value if isinstance(value, str) and STORE_ID.match(value) else None


def with_digest(record: dict) -> dict:
    """The pointer or a meta with the sha256 of its own canonical JSON, so that one flipped
    byte anywhere in it (not only in the fields a restore reads) is noticed."""
    return {**record, RECORD_SUM: _record_digest(record)}


def parse_record(raw: bytes, what: str) -> dict:
    """A pointer or meta read from a store, checked against its record_sha256."""
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ChecksumMismatch(f"{what} is not valid JSON (damaged?)") from None
    if not isinstance(value, dict):
        raise ChecksumMismatch(f"{what} is not a JSON object (damaged?)")
    if value.get(RECORD_SUM) != _record_digest(value):
        raise ChecksumMismatch(f"{what} is damaged: its content does not match its {RECORD_SUM}")
    return value


def parse_pointer(raw: bytes, what: str) -> dict:
    """latest-backup.json read from a store: an ocb pointer, checked as parse_record checks
    it, or the legacy script's, recognised as such (legacy.is_pointer: no record_sha256, no
    `ocb`, a `latest`) and returned as read, never reported as damaged (Head.legacy)."""
    from . import legacy  # legacy.py builds on this module

    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        value = None
    if legacy.is_pointer(value):
        return value
    return parse_record(raw, what)


def encode_record(value: dict) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# -- building: what ocb-push publishes ----------------------------------------------------------

def chain_link(doc: dict) -> dict:
    """What later snapshots record about this one: enough to fetch and check it."""
    seal = doc.get("seal") or {}
    link = {
        "id": doc["id"],
        "backup_type": doc["plan"]["type"],
        "created_at_utc": doc["created_at_utc"],
        "compression": doc["archive"]["compression"],
        "sealed": bool(seal.get("sealed")),
        "volumes": [{"name": v["name"], "size": v["size"], "sha256": v["sha256"]}
                    for v in doc["volumes"]["files"]],
    }
    if doc["plan"].get("store_id"):
        # the archive's associated data names the store (seal.link_associated_data)
        link["store_id"] = doc["plan"]["store_id"]
    return link


def build_meta(doc: dict, prefix: str) -> dict:
    """The meta of the snapshot a backup document describes (after ocb-split)."""
    plan, archive, seal = doc["plan"], doc["archive"], doc.get("seal") or {}
    link = chain_link(doc)
    parent = plan.get("parent")
    meta = {
        "ocb": DOC_VERSION,
        "id": doc["id"],
        "backup_type": plan["type"],
        "parent": meta_path(prefix, parent) if parent else None,
        "parent_id": parent,
        "chain": list(plan.get("parent_chain") or []) + [link],
        "volumes": [v["name"] for v in link["volumes"]],
        "volume_info": link["volumes"],
        "compression": archive["compression"],
        "sealed": link["sealed"],
        "seal": seal.get("params") if link["sealed"] else None,
        "file_count": archive["files"],
        "entry_count": archive["entries"],
        "bytes": archive["bytes"],
        "archive_size": archive["size"],
        "checksum": f"sha256:{seal.get('sha256') or archive['sha256']}",
        "created_at_utc": doc["created_at_utc"],
        "created_by": "ocb",
        "tool_version": __version__,
        "diverged_from": plan.get("diverged_from"),
        "changes": plan.get("changes"),
    }
    if plan.get("store_id"):
        meta["store_id"] = plan["store_id"]
    if doc.get("openclaw_version"):
        meta["openclaw_version"] = doc["openclaw_version"]
    skipped = skipped_entries(doc)
    if skipped:
        # what could not be read and is not in the snapshot; paths only when unsealed (a
        # sealed meta names no file)
        meta["skipped_count"] = len(skipped)
        if not link["sealed"]:
            meta["skipped"] = skipped
    return with_digest(meta)


def skipped_entries(doc: dict) -> list[dict]:
    """The entries a backup left out because they could not be read, at plan or pack time."""
    return list((doc.get("plan") or {}).get("skipped") or []) + list((doc.get("archive") or {}).get("skipped") or [])


def build_pointer(store_url: str, meta: dict, prefix: str, seq: int | None = None) -> dict:
    """latest-backup.json: legacy field names first ("latest" is the meta's path), so existing
    tooling reads it; the latest meta rides along, so restoring the latest reads one file.
    `seq`: the snapshot's publish number in the catalog (what rollback detection compares)."""
    extra = {"store_id": meta["store_id"]} if meta.get("store_id") else {}
    if seq is not None:
        extra["seq"] = seq
    return with_digest({
        "dataset": store_url,
        "latest": meta_path(prefix, meta["id"]),
        "created_at_utc": meta["created_at_utc"],
        "ocb": DOC_VERSION,
        "id": meta["id"],
        "backup_type": meta["backup_type"],
        "chain": [link["id"] for link in meta["chain"]],
        "meta": meta,
        **extra,
    })


# -- checking: what a reader may trust -----------------------------------------------------------

def validate_link(link: object, where: str) -> dict:
    """A chain link's id, type and volumes: names that cannot leave the prefix, real hashes."""
    if not isinstance(link, dict):
        raise ChainBroken(f"{where} is not an object")
    if not isinstance(link.get("id"), str) or not SNAPSHOT_ID.match(link["id"]):
        raise ChainBroken(f"{where}.id is not a snapshot id: {link.get('id')!r}")
    if link.get("backup_type") not in BACKUP_TYPES:
        raise ChainBroken(f"{where}.backup_type is {link.get('backup_type')!r}")
    volumes = link.get("volumes")
    if not isinstance(volumes, list) or not volumes:
        raise ChainBroken(f"{where}.volumes is missing or empty")
    for number, volume in enumerate(volumes):
        name = volume.get("name") if isinstance(volume, dict) else None
        if not isinstance(name, str) or not VOLUME_NAME.match(name) or not name.startswith(link["id"] + "."):
            raise ChainBroken(f"{where}.volumes[{number}] has a bad name: {name!r}")
        if (not isinstance(volume.get("size"), int) or isinstance(volume["size"], bool)
                or not 0 <= volume["size"] <= MAX_BYTES):
            raise ChainBroken(f"{where}.volumes[{number}].size is not a size")
        if not isinstance(volume.get("sha256"), str) or not SHA256.match(volume["sha256"]):
            raise ChainBroken(f"{where}.volumes[{number}].sha256 is not a sha256")
    check_link_record(link, where)
    if "store_id" in link and not (isinstance(link["store_id"], str) and STORE_ID.match(link["store_id"])):
        raise ChainBroken(f"{where}.store_id is not a store id: {link['store_id']!r}")
    return link


def check_link_record(link: dict, where: str) -> None:
    """The rest of a link as chain_link writes it and ocb-pull reads it."""
    if not isinstance(link.get("compression"), str) or link["compression"] not in COMPRESSIONS:
        raise ChainBroken(f"{where}.compression is {link.get('compression')!r}")
    if not isinstance(link.get("sealed"), bool):
        raise ChainBroken(f"{where}.sealed is {link.get('sealed')!r}, not true or false")
    if not isinstance(link.get("created_at_utc"), str):
        raise ChainBroken(f"{where}.created_at_utc is missing")


def resolve(meta: Any, expected_id: str) -> list[dict]:
    """The chain of `meta`, full first, validated; ChainBroken when it cannot be trusted."""
    if not isinstance(meta, dict):
        raise ChainBroken(f"the meta of {expected_id} is not an object")
    if meta.get("id") != expected_id:
        raise ChainBroken(f"the meta of {expected_id} names itself {meta.get('id')!r}")
    links = meta.get("chain")
    if not isinstance(links, list) or not links:
        raise ChainBroken(f"the meta of {expected_id} lists no chain")
    chain = [validate_link(link, f"meta of {expected_id}: chain[{n}]") for n, link in enumerate(links)]
    if chain[0]["backup_type"] != "full":
        raise ChainBroken(f"the chain of {expected_id} does not start with a full snapshot")
    if any(link["backup_type"] != "incremental" for link in chain[1:]):
        raise ChainBroken(f"the chain of {expected_id} has a full snapshot after its start")
    if chain[-1]["id"] != expected_id:
        raise ChainBroken(f"the chain of {expected_id} ends with {chain[-1]['id']}")
    if len({link["id"] for link in chain}) != len(chain):
        raise ChainBroken(f"the chain of {expected_id} lists a snapshot twice")
    return chain


def check_meta(meta: Any, expected_id: str, source: str, pointer: dict | None = None) -> list[dict]:
    """The chain of a meta read from `source` (a store file), with every field it repeats from
    that chain (and the pointer carrying it, if any) checked; ChainBroken naming `source`."""
    try:
        snapshots = resolve(meta, expected_id)
        _check_redundant(meta, snapshots, pointer)
    except ChainBroken as exc:
        raise ChainBroken(f"{source}: {exc}") from None
    return snapshots


def _check_redundant(meta: dict, snapshots: list[dict], pointer: dict | None) -> None:
    """Fields the meta (and the pointer carrying it) repeat from its chain must agree with it.

    Nothing else checks them, and legacy tooling reads some of them (the pointer's `latest`),
    so a damaged byte there is refused here rather than passed over. Fields absent are not
    checked: older records may lack them.
    """
    last = snapshots[-1]
    expected = {
        "backup_type": last["backup_type"], "sealed": last["sealed"], "compression": last["compression"],
        "created_at_utc": last["created_at_utc"], "volumes": [v["name"] for v in last["volumes"]],
        "parent_id": snapshots[-2]["id"] if len(snapshots) > 1 else None,
    }
    for name, value in expected.items():
        if name in meta and meta[name] != value:
            raise ChainBroken(f"the meta's {name} is {meta[name]!r}, its chain says {value!r}")
    parent = meta.get("parent")
    if parent is not None and (expected["parent_id"] is None or not isinstance(parent, str)
                               or not parent.endswith(f"/{expected['parent_id']}{META_SUFFIX}")):
        raise ChainBroken(f"the meta's parent is {parent!r}, its chain says {expected['parent_id']!r}")
    if pointer is None:
        return
    expected = {"backup_type": last["backup_type"], "created_at_utc": last["created_at_utc"],
                "chain": [link["id"] for link in snapshots]}
    for name, value in expected.items():
        if name in pointer and pointer[name] != value:
            raise ChainBroken(f"its {name} is {pointer[name]!r}, the meta it carries says {value!r}")
    latest = pointer.get("latest")
    if latest is not None and (not isinstance(latest, str) or not latest.endswith(f"/{last['id']}{META_SUFFIX}")):
        raise ChainBroken(f"its latest is {latest!r}, not the meta of {last['id']}")


def pointer_meta(pointer: dict, target: str, source: str) -> dict:
    """The latest meta the pointer carries; one that does not match the id beside it is a
    damaged pointer, not a reason to go and read another file."""
    meta = pointer.get("meta")
    if not isinstance(meta, dict) or meta.get("id") != target:
        shown = meta.get("id") if isinstance(meta, dict) else meta
        raise ChainBroken(f"{source} is damaged: it names {target} but carries the meta of {shown!r}")
    return meta
