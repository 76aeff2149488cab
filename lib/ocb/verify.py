"""What ocb-check and ocb-doctor find wrong with a store, from what it lists and records.

Pure: the catalog, the chains of the metas that were read and one listing of the snapshot
folder ({name: (size, sha256 or None)}) in, findings out; no I/O, no printing. A finding
names the snapshot, what is wrong and how to fix it. Which store is "sealed" is decided by
catalog.seal_status alone; `sealed_store` only asks it.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import catalog as catalog_format
from .errors import UsageError
from .snapshot import META_SUFFIX, SNAPSHOT_ID, VOLUME_NAME

Listing = Mapping[str, tuple[int, "str | None"]]


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or worth knowing) about the store."""

    snapshot: str | None
    what: str  # meta | volume | catalog | pointer | archive | seal
    message: str
    fix: str

    def as_dict(self) -> dict:
        return {"snapshot": self.snapshot, "what": self.what, "message": self.message, "fix": self.fix}


RESTORE_OTHER = "ocb-chain --list shows what is left; restore an intact snapshot by id (ocb-restore --id ID)"
NEW_FULL = "the next backup starts a new chain (ocb-backup --full to take it now)"


def chain_findings(chains: Mapping[str, list[dict]], listing: Listing,
                   checked: Iterable[str] = ()) -> tuple[list[Finding], dict]:
    """What the chains of the snapshots read (`chains`: id -> links, full first) lack in the
    listing: a link's meta, a volume, a volume of another size, or of another sha256 where
    the store records one. Each volume is judged once, naming the snapshots that need it.
    A missing meta of a snapshot in `checked` (whose meta the caller looked for itself) is
    not reported again. Also returns counts: volumes, bytes, and volumes whose sha256 the
    store confirmed."""
    already = set(checked)
    needers: dict[tuple[str, int, str], list[str]] = {}
    owners: dict[tuple[str, int, str], str] = {}
    missing_metas: dict[str, list[str]] = {}
    for snapshot_id, chain in chains.items():
        for link in chain:
            if link["id"] != snapshot_id and f"{link['id']}{META_SUFFIX}" not in listing:
                missing_metas.setdefault(link["id"], []).append(snapshot_id)
            for volume in link["volumes"]:
                key = (volume["name"], volume["size"], volume["sha256"])
                needers.setdefault(key, []).append(snapshot_id)
                owners[key] = link["id"]
    findings = [Finding(link_id, "meta", f"the meta of {link_id} is missing, which the chain of "
                        f"{_names(needed_by)} lists", f"{NEW_FULL}; {RESTORE_OTHER}")
                for link_id, needed_by in sorted(missing_metas.items()) if link_id not in already]
    confirmed = 0
    for (name, size, sha256), needed_by in sorted(needers.items()):
        owner, found = owners[(name, size, sha256)], listing.get(name)
        users = f"needed by {_names(needed_by)}"
        if found is None:
            findings.append(Finding(owner, "volume", f"volume {name} of {owner} is missing ({users})",
                                    f"{NEW_FULL}; {RESTORE_OTHER}"))
        elif found[0] != size:
            findings.append(Finding(owner, "volume", f"volume {name} of {owner} is {found[0]} bytes, "
                                    f"its meta records {size} ({users})", f"{NEW_FULL}; {RESTORE_OTHER}"))
        elif found[1] is not None and found[1] != sha256:
            findings.append(Finding(owner, "volume", f"volume {name} of {owner}: the store records sha256 "
                                    f"{found[1][:12]}..., its meta {sha256[:12]}... ({users})",
                                    f"{NEW_FULL}; {RESTORE_OTHER}"))
        elif found[1] is not None:
            confirmed += 1
    counts = {"volumes": len(needers), "bytes": sum(size for _, size, _ in needers),
              "sha256_confirmed": confirmed}
    return findings, counts


def restorable(chains: Mapping[str, list[dict]], problems: Iterable[Finding]) -> list[str]:
    """The snapshots read whose chain no problem touches: what a restore can still take."""
    broken = {f.snapshot for f in problems}
    return [i for i, chain in chains.items() if not any(link["id"] in broken for link in chain)]


def _names(ids: Iterable[str]) -> str:
    unique = sorted(set(ids))
    return ", ".join(unique[:3]) + (f" and {len(unique) - 3} more" if len(unique) > 3 else "")


def catalog_findings(known: dict, metas: Mapping[str, dict]) -> list[Finding]:
    """Catalog entries that do not say what their snapshot's meta says (a listing-made entry
    records id and time only, and is passed over)."""
    findings = []
    for item in known["snapshots"]:
        meta = metas.get(item["id"])
        if meta is None or item.get(catalog_format.FROM_LISTING):
            continue
        expected = catalog_format.entry(meta, item["seq"])
        differing = sorted(k for k in expected if expected[k] != item.get(k))
        if differing:
            findings.append(Finding(item["id"], "catalog", f"the catalog's entry for {item['id']} disagrees "
                                    f"with its meta on {', '.join(differing)}",
                                    "the catalog is rewritten whole by the next backup only if it is "
                                    "not damaged: compare with the meta (ocb-chain --id ID) before trusting it"))
    return findings


def sealed_store(known: dict | None) -> bool:
    """Whether the store is sealed, as catalog.seal_status decides it from the catalog."""
    return catalog_format.seal_status(known).sealed


def unsealed_findings(known: dict | None) -> tuple[list[Finding], list[Finding]]:
    """Unsealed snapshots in a sealed store: (problems, warnings). One published after the
    first sealed one is a problem (a backup there refuses to go unsealed unless OCB_SEAL=off;
    otherwise it was planted); one from before sealing began is older history, a warning."""
    problems: list[Finding] = []
    warnings: list[Finding] = []
    if not sealed_store(known):
        return problems, warnings
    assert known is not None
    seen_sealed = False
    for item in known["snapshots"]:
        if item.get("sealed") is True:
            seen_sealed = True
        elif item.get("sealed") is False:
            if seen_sealed:
                problems.append(Finding(item["id"], "seal", f"snapshot {item['id']} is not sealed, in a store "
                                        "whose earlier snapshots are: taken with OCB_SEAL=off, or planted",
                                        "if it was not taken on purpose, do not restore it: restore a sealed "
                                        "snapshot by id (ocb-restore --id ID) and prune this one"))
            else:
                warnings.append(Finding(item["id"], "seal", f"snapshot {item['id']} was taken before sealing "
                                        "began and is not sealed: its files lie readable in the store",
                                        "prune it once sealed snapshots cover it (ocb-prune)"))
    return problems, warnings


def stray_files(listing: Listing, chains: Mapping[str, list[dict]], ids: Iterable[str]) -> list[Finding]:
    """Files of the snapshot folder that no snapshot read lists (left by a failed push or a
    removal cut short), and metas the catalog does not know: warnings, never problems."""
    referenced = {v["name"] for chain in chains.values() for link in chain for v in link["volumes"]}
    known = set(ids)
    findings = []
    for name in sorted(listing):
        if name.endswith(META_SUFFIX):
            snapshot_id = name[: -len(META_SUFFIX)]
            if SNAPSHOT_ID.match(snapshot_id) and snapshot_id not in known:
                findings.append(Finding(snapshot_id, "catalog", f"{name} is in the store but not in its catalog",
                                        f"restorable by id (ocb-restore --id {snapshot_id}); "
                                        "ocb-prune removes it when no longer wanted"))
        elif VOLUME_NAME.match(name) and name not in referenced:
            owner = name.split(".", 1)[0]
            if owner not in known:
                findings.append(Finding(owner, "volume", f"{name} belongs to no snapshot of the catalog",
                                        "left by a backup that did not finish: ocb-prune removes it"))
    return findings


PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%?\s*$")


def parse_percent(text: str, flag: str) -> float:
    """'10%' or '10' -> 10.0, within (0, 100]; UsageError naming `flag` otherwise."""
    match = PERCENT.match(text)
    value = float(match.group(1)) if match else -1.0
    if not 0 < value <= 100:
        raise UsageError(f"{flag} {text!r}: expected a percentage above 0 and at most 100, such as 10%")
    return value


def pick_subset(ids: list[str], percent: float, rng: random.Random) -> list[str]:
    """`percent` of the snapshots (rounded up, at least one), at random, in their order:
    repeated runs read every snapshot in time, as restic's --read-data-subset does."""
    if not ids:
        return []
    count = min(len(ids), max(1, math.ceil(len(ids) * percent / 100)))
    chosen = set(rng.sample(ids, count))
    return [i for i in ids if i in chosen]
