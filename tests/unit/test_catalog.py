"""ocb.catalog: entries from metas, append / seed / without, and parse refusing what does not hold."""

import copy
import hashlib
import json

import pytest

from ocb import catalog
from ocb.errors import ChainBroken, ChecksumMismatch, StoreConflict
from ocb.snapshot import build_meta, id_time, utc_text, with_digest

FULL = "openclaw-backup-20261101-120000"
INCR = "openclaw-backup-20261101-130000"
INCR2 = "openclaw-backup-20261101-140000"
OTHER = "openclaw-backup-20261102-120000"


def make_meta(snapshot_id, parent=None, sealed=False, parts=1, files=3, size=100):
    """A meta as ocb-push builds it (snapshot.build_meta), for a full or incremental snapshot."""
    names = [f"{snapshot_id}.tar.zst"] if parts == 1 else [f"{snapshot_id}.tar.zst.part-{n:04d}" for n in range(1, parts + 1)]
    volumes = [{"name": name, "size": size + n, "sha256": hashlib.sha256(name.encode()).hexdigest()}
               for n, name in enumerate(names)]
    doc = {
        "id": snapshot_id,
        "created_at_utc": utc_text(id_time(snapshot_id)),
        "plan": {"type": "incremental" if parent else "full", "parent": parent["id"] if parent else None,
                 "parent_chain": parent["chain"] if parent else [], "diverged_from": None, "changes": None},
        "archive": {"compression": "zstd", "files": files, "entries": files + 2, "bytes": 10 * files,
                    "size": sum(v["size"] for v in volumes), "sha256": "a" * 64},
        "seal": {"sealed": sealed, "params": {"kdf": "scrypt"} if sealed else None, "sha256": "b" * 64},
        "volumes": {"files": volumes},
    }
    return build_meta(doc, "backups")


M_FULL = make_meta(FULL, files=7, parts=2)
M_INCR = make_meta(INCR, parent=M_FULL, sealed=True, files=2)
M_INCR2 = make_meta(INCR2, parent=M_INCR)
M_OTHER = make_meta(OTHER)


@pytest.mark.parametrize("meta, seq, expected", [
    (M_FULL, 1, {"id": FULL, "created_at_utc": "2026-11-01T12:00:00Z", "backup_type": "full", "parent_id": None,
                 "chain_id": FULL, "chain_length": 1, "sealed": False, "files": 7, "bytes": 70,
                 "stored_bytes": 100 + 101, "volumes": [f"{FULL}.tar.zst.part-0001", f"{FULL}.tar.zst.part-0002"],
                 "seq": 1}),
    (M_INCR, 2, {"id": INCR, "created_at_utc": "2026-11-01T13:00:00Z", "backup_type": "incremental",
                 "parent_id": FULL, "chain_id": FULL, "chain_length": 2, "sealed": True, "files": 2, "bytes": 20,
                 "stored_bytes": 100, "volumes": [f"{INCR}.tar.zst"], "seq": 2}),
    (M_INCR2, 9, {"id": INCR2, "created_at_utc": "2026-11-01T14:00:00Z", "backup_type": "incremental",
                  "parent_id": INCR, "chain_id": FULL, "chain_length": 3, "sealed": False, "files": 3, "bytes": 30,
                  "stored_bytes": 100, "volumes": [f"{INCR2}.tar.zst"], "seq": 9}),
], ids=["full", "incremental", "second-incremental"])
def test_an_entry_is_what_the_meta_says(meta, seq, expected):
    assert catalog.entry(meta, seq) == expected


def test_an_entry_needs_a_meta_whose_chain_resolves():
    broken = copy.deepcopy(M_INCR)
    broken["chain"] = broken["chain"][1:]  # no full snapshot at its start
    with pytest.raises(ChainBroken):
        catalog.entry(broken, 1)


def test_append_numbers_publishes_and_carries_its_digest():
    one = catalog.append(None, M_FULL)
    two = catalog.append(one, M_INCR)
    three = catalog.append(two, M_OTHER)
    assert catalog.ids(three) == [FULL, INCR, OTHER]
    assert [e["seq"] for e in three["snapshots"]] == [1, 2, 3]
    assert three["ocb"] == 1 and three["kind"] == "catalog"
    assert catalog.parse(catalog.encode(three), "x") == three
    assert one["snapshots"] == [catalog.entry(M_FULL, 1)]  # the old catalog is not changed


def test_append_refuses_a_snapshot_already_listed():
    one = catalog.append(None, M_FULL)
    with pytest.raises(StoreConflict, match=FULL):
        catalog.append(one, M_FULL)


def test_append_refuses_a_meta_that_does_not_continue_its_parents_chain():
    """The parent the meta names is in the catalog, but as the start of another chain."""
    earlier = make_meta("openclaw-backup-20261031-120000")
    impostor = make_meta(INCR, parent=make_meta(FULL, parent=earlier))  # FULL as an incremental of `earlier`
    with pytest.raises(ChainBroken, match="does not continue the chain of its parent"):
        catalog.append(catalog.append(None, M_FULL), impostor)


def test_seed_lists_ids_in_the_order_they_were_taken():
    ids = [f"{FULL}-2", INCR, FULL, INCR]  # a collision suffix, a duplicate, out of order
    seeded = catalog.seed(ids)
    assert seeded["snapshots"] == [
        {"id": FULL, "created_at_utc": "2026-11-01T12:00:00Z", "seq": 1, "from_listing": True},
        {"id": f"{FULL}-2", "created_at_utc": "2026-11-01T12:00:00Z", "seq": 2, "from_listing": True},
        {"id": INCR, "created_at_utc": "2026-11-01T13:00:00Z", "seq": 3, "from_listing": True},
    ]
    grown = catalog.append(seeded, make_meta(INCR2, parent=M_INCR))  # its parent is known from the listing only
    assert catalog.ids(grown)[-1] == INCR2 and grown["snapshots"][-1]["seq"] == 4
    assert catalog.parse(catalog.encode(grown), "x") == grown
    assert catalog.seed([])["snapshots"] == []


def test_without_drops_snapshots_and_keeps_the_publish_numbers():
    full = catalog.append(catalog.append(catalog.append(None, M_FULL), M_INCR), M_OTHER)
    pruned = catalog.without(full, [FULL, INCR])
    assert pruned["snapshots"] == [catalog.entry(M_OTHER, 3)]
    assert catalog.append(pruned, make_meta("openclaw-backup-20261103-120000"))["snapshots"][-1]["seq"] == 4
    with pytest.raises(ValueError, match=INCR2):
        catalog.without(full, [INCR2])


def test_a_flipped_byte_anywhere_is_a_checksum_mismatch_naming_the_file():
    raw = bytearray(catalog.encode(catalog.append(catalog.append(None, M_FULL), M_INCR)))
    for offset in (raw.index(b'"files"') + 8, raw.index(b"chain_length") + 1, len(raw) // 2):
        damaged = bytearray(raw)
        damaged[offset] ^= 0x01
        with pytest.raises(ChecksumMismatch, match="store/ocb-catalog.json"):
            catalog.parse(bytes(damaged), "store/ocb-catalog.json")
    with pytest.raises(ChecksumMismatch, match="not valid JSON"):
        catalog.parse(b"\xff{", "store/ocb-catalog.json")


GOOD = catalog.append(catalog.append(None, M_FULL), M_INCR)


def edited(change):
    """GOOD, changed by `change(value)`, with a fresh digest: whole, but wrong in shape."""
    value = {k: v for k, v in copy.deepcopy(GOOD).items() if k != "record_sha256"}
    change(value)
    return json.dumps(with_digest(value)).encode()


def entry_edit(index, **fields):
    def change(value):
        for name, new in fields.items():
            if new is KeyError:
                del value["snapshots"][index][name]
            else:
                value["snapshots"][index][name] = new
    return change


@pytest.mark.parametrize("change, message", [
    (lambda v: v.update(ocb=2), "version 1"),
    (lambda v: v.update(kind="backup"), "not an ocb catalog"),
    (lambda v: v.update(snapshots={}), "snapshots is not a list"),
    (lambda v: v.update(extra=1), "unknown fields: extra"),
    (lambda v: v["snapshots"].append("x"), r"snapshots\[2\] is not an object"),
    (entry_edit(0, id="../../etc"), "not a snapshot id"),
    (entry_edit(0, seq=0), "seq is not a publish number"),
    (entry_edit(0, seq=True), "seq is not a publish number"),
    (entry_edit(1, seq=1), "not in publish order"),
    (lambda v: v["snapshots"].append(dict(v["snapshots"][0], seq=3)), "a second time"),
    (entry_edit(0, backup_type="differential"), "backup_type"),
    (entry_edit(0, sealed="yes"), "sealed"),
    (entry_edit(0, files=-1), "files is not a count"),
    (entry_edit(0, bytes=True), "bytes is not a count"),
    (entry_edit(0, stored_bytes=2**60), "stored_bytes is not a count"),
    (entry_edit(0, volumes=[]), "volumes"),
    (entry_edit(0, volumes=[f"{INCR}.tar.zst"]), "volumes"),  # another snapshot's volume
    (entry_edit(0, volumes=["../x"]), "volumes"),
    (entry_edit(0, parent_id=INCR), "full snapshot with a parent"),
    (entry_edit(0, chain_length=2), "full snapshot with a parent"),
    (entry_edit(1, parent_id=None), "without a parent"),
    (entry_edit(1, chain_id=INCR), "without a parent"),
    (entry_edit(1, chain_length=3), "does not continue the chain"),
    (entry_edit(0, created_at_utc=KeyError), "created_at_utc is missing"),
    (entry_edit(0, volumes=KeyError), "has the fields"),
    (entry_edit(0, note="x"), "has the fields"),
    (entry_edit(0, from_listing=True), "has the fields"),
    (entry_edit(0, from_listing="yes"), "has the fields"),
    (lambda v: v["snapshots"].reverse() or [e.update(seq=n + 1) for n, e in enumerate(v["snapshots"])],
     "listed before its parent"),
], ids=lambda p: p if isinstance(p, str) else "")
def test_parse_refuses_a_whole_record_that_does_not_hold_together(change, message):
    with pytest.raises(ChainBroken, match=message):
        catalog.parse(edited(change), "store/ocb-catalog.json")


def test_parse_accepts_what_append_seed_and_without_write():
    assert catalog.parse(edited(lambda v: None), "c") == GOOD
    assert catalog.parse(catalog.encode(catalog.seed([FULL, OTHER])), "c")["snapshots"][1]["id"] == OTHER
    assert catalog.parse(catalog.encode(catalog.without(GOOD, [INCR])), "c") == catalog.without(GOOD, [INCR])
    # an incremental whose parent was pruned away (prune keeps whole chains, an older store may not)
    assert catalog.ids(catalog.parse(catalog.encode(catalog.without(GOOD, [FULL])), "c")) == [INCR]
