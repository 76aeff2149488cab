"""Chain resolution: which snapshots, full first, a restore must apply, from one meta.

Every meta lists its whole chain (id, type, volumes with size and sha256), so resolving the
latest snapshot costs the pointer and one meta, never a read of every meta in the store.
Validation here is what lets later stages trust a meta read from a store: volume names that
cannot leave the prefix, hashes of the right shape, a chain that starts with a full snapshot
and ends with the snapshot itself.
"""

from __future__ import annotations

import datetime as dt
import re

from .errors import ChainBroken, UsageError
from .stores.base import SNAPSHOT_ID, VOLUME_NAME

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_VOLUME_BYTES = 2**53  # JSON's exact integers; a size beyond is a damaged record


def id_time(snapshot_id: str) -> dt.datetime:
    """The UTC moment encoded in an id (openclaw-backup-YYYYMMDD-HHMMSS[-N])."""
    stamp = snapshot_id[len("openclaw-backup-"):][:15]
    return dt.datetime.strptime(stamp, "%Y%m%d-%H%M%S").replace(tzinfo=dt.timezone.utc)


def id_sort_key(snapshot_id: str) -> tuple[str, int]:
    """Order of taking: by time, then by collision suffix (no suffix is the first)."""
    stamp = snapshot_id[len("openclaw-backup-"):][:15]
    rest = snapshot_id[len("openclaw-backup-") + 15:]
    return (stamp, int(rest[1:]) if rest.startswith("-") else 1)


def parse_moment(text: str) -> dt.datetime:
    """--at values: ISO 8601 (Z or offset; naive means UTC), or YYYYMMDD-HHMMSS."""
    candidate = text.strip()
    try:
        if re.fullmatch(r"\d{8}-\d{6}", candidate):
            return dt.datetime.strptime(candidate, "%Y%m%d-%H%M%S").replace(tzinfo=dt.timezone.utc)
        moment = dt.datetime.fromisoformat(candidate.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at {text!r}: expected a time such as 2026-11-26T12:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def pick_at(ids: list[str], moment: dt.datetime) -> str | None:
    """The newest snapshot taken at or before `moment`."""
    eligible = [i for i in ids if SNAPSHOT_ID.match(i) and id_time(i) <= moment]
    return max(eligible, key=id_sort_key) if eligible else None


def validate_link(link: object, where: str) -> dict:
    if not isinstance(link, dict):
        raise ChainBroken(f"{where} is not an object")
    if not isinstance(link.get("id"), str) or not SNAPSHOT_ID.match(link["id"]):
        raise ChainBroken(f"{where}.id is not a snapshot id: {link.get('id')!r}")
    if link.get("backup_type") not in ("full", "incremental"):
        raise ChainBroken(f"{where}.backup_type is {link.get('backup_type')!r}")
    volumes = link.get("volumes")
    if not isinstance(volumes, list) or not volumes:
        raise ChainBroken(f"{where}.volumes is missing or empty")
    for number, volume in enumerate(volumes):
        name = volume.get("name") if isinstance(volume, dict) else None
        if not isinstance(name, str) or not VOLUME_NAME.match(name) or not name.startswith(link["id"] + "."):
            raise ChainBroken(f"{where}.volumes[{number}] has a bad name: {name!r}")
        if (not isinstance(volume.get("size"), int) or isinstance(volume["size"], bool)
                or not 0 <= volume["size"] <= MAX_VOLUME_BYTES):
            raise ChainBroken(f"{where}.volumes[{number}].size is not a size")
        if not isinstance(volume.get("sha256"), str) or not SHA256.match(volume["sha256"]):
            raise ChainBroken(f"{where}.volumes[{number}].sha256 is not a sha256")
    return link


def check_link_record(link: dict, where: str) -> None:
    """The rest of a link as ocb-push writes it (chain_link) and ocb-pull reads it: a link read
    from a store lacking them is damaged, and a document carrying it is not one ocb wrote."""
    if link.get("compression") not in ("zstd", "gzip"):
        raise ChainBroken(f"{where}.compression is {link.get('compression')!r}")
    if not isinstance(link.get("sealed"), bool):
        raise ChainBroken(f"{where}.sealed is {link.get('sealed')!r}, not true or false")
    if not isinstance(link.get("created_at_utc"), str):
        raise ChainBroken(f"{where}.created_at_utc is missing")


def resolve(meta: dict, expected_id: str) -> list[dict]:
    """The chain of `meta`, full first, validated; ChainBroken when it cannot be trusted."""
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
