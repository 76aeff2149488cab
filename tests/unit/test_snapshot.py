"""snapshot: ids, records, resolution and validation of a meta's chain, and --at selection (table-driven)."""

import copy

import pytest
from ocb.errors import ChainBroken, UsageError
from ocb.snapshot import id_sort_key, parse_moment, pick_at, resolve

FULL = "openclaw-backup-20261101-120000"
INC = "openclaw-backup-20261101-121000"


def link(snapshot_id, kind):
    return {"id": snapshot_id, "backup_type": kind, "compression": "zstd", "sealed": False,
            "created_at_utc": "2026-11-01T12:00:00Z",
            "volumes": [{"name": f"{snapshot_id}.tar.zst", "size": 10, "sha256": "0" * 64}]}


META = {"id": INC, "chain": [link(FULL, "full"), link(INC, "incremental")]}


def test_a_good_chain_resolves_full_first():
    assert [l["id"] for l in resolve(copy.deepcopy(META), INC)] == [FULL, INC]


@pytest.mark.parametrize("damage, message", [
    (lambda m: m.update(id=FULL), "names itself"),
    (lambda m: m.update(chain=[]), "no chain"),
    (lambda m: m["chain"].reverse(), "full snapshot"),
    (lambda m: m["chain"][0].update(backup_type="weird"), "backup_type"),
    (lambda m: m["chain"][1]["volumes"][0].update(name="../../etc/passwd"), "bad name"),
    (lambda m: m["chain"][1]["volumes"][0].update(name=f"{FULL}.tar.zst"), "bad name"),
    (lambda m: m["chain"][1]["volumes"][0].update(sha256="xyz"), "sha256"),
    (lambda m: m["chain"][1]["volumes"][0].update(size=-1), "size"),
    (lambda m: m["chain"][1].update(volumes=[]), "volumes"),
    (lambda m: m["chain"].insert(1, link(FULL, "incremental")), "twice"),
])
def test_a_damaged_chain_is_refused(damage, message):
    meta = copy.deepcopy(META)
    damage(meta)
    with pytest.raises(ChainBroken, match=message):
        resolve(meta, INC)


IDS = ["openclaw-backup-20261101-120000", "openclaw-backup-20261101-120000-2",
       "openclaw-backup-20261102-080000", "not-a-snapshot"]


@pytest.mark.parametrize("moment, expected", [
    ("2026-11-01T11:59:59Z", None),
    ("2026-11-01T12:00:00Z", "openclaw-backup-20261101-120000-2"),
    ("2026-11-02 07:00", "openclaw-backup-20261101-120000-2"),
    ("20261102-080000", "openclaw-backup-20261102-080000"),
    ("2026-11-02T10:00:00+02:00", "openclaw-backup-20261102-080000"),
])
def test_pick_at_takes_the_newest_at_or_before(moment, expected):
    assert pick_at(IDS, parse_moment(moment)) == expected


def test_collision_suffixes_sort_after_the_plain_id():
    assert sorted(IDS[:2][::-1], key=id_sort_key) == IDS[:2]


def test_parse_moment_refuses_words():
    with pytest.raises(UsageError, match="--at"):
        parse_moment("yesterday")


# -- ids ---------------------------------------------------------------------------------------

import datetime as dt  # noqa: E402

from ocb import snapshot  # noqa: E402
from ocb.errors import ChecksumMismatch  # noqa: E402

MOMENT = dt.datetime(2026, 12, 1, 12, 0, 5, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("taken, expected", [
    (set(), "openclaw-backup-20261201-120005"),
    ({"openclaw-backup-20261201-120005"}, "openclaw-backup-20261201-120005-2"),
    ({"openclaw-backup-20261201-120005", "openclaw-backup-20261201-120005-2"}, "openclaw-backup-20261201-120005-3"),
    ({"openclaw-backup-20261201-120004"}, "openclaw-backup-20261201-120005"),
])
def test_ids_are_unique_within_a_second(taken, expected):
    made = snapshot.make_id(MOMENT, taken)
    assert made == expected and snapshot.SNAPSHOT_ID.match(made) and snapshot.id_time(made) == MOMENT


def test_ids_of_a_listing_are_metas_only_in_taking_order():
    names = ["openclaw-backup-20261201-120005-10.meta.json", "openclaw-backup-20261201-120005.meta.json",
             "openclaw-backup-20261201-120005-2.meta.json", "openclaw-backup-20261201-120005.tar.zst",
             "notes.meta.json", "latest-backup.json"]
    assert snapshot.ids_of_meta_names(names) == ["openclaw-backup-20261201-120005",
                                                 "openclaw-backup-20261201-120005-2",
                                                 "openclaw-backup-20261201-120005-10"]


# -- records -----------------------------------------------------------------------------------

def test_a_record_reads_back_and_any_changed_byte_is_caught():
    record = snapshot.with_digest({"id": INC, "n": 1, "text": "é"})
    raw = snapshot.encode_record(record)
    assert snapshot.parse_record(raw, "x") == record
    for offset in range(len(raw)):
        damaged = bytearray(raw)
        damaged[offset] ^= 0x01
        try:
            parsed = snapshot.parse_record(bytes(damaged), "x")
        except ChecksumMismatch:
            continue
        assert parsed == record  # only whitespace changed: the same record


# -- building and checking what push publishes ---------------------------------------------------

def backup_doc(snapshot_id, kind, parent_chain):
    return {"id": snapshot_id, "store": "file:///s", "created_at_utc": "2026-11-01T12:10:00Z",
            "plan": {"type": kind, "parent": parent_chain[-1]["id"] if parent_chain else None,
                     "parent_chain": parent_chain, "diverged_from": None, "changes": {"new": 1}},
            "archive": {"compression": "zstd", "files": 1, "entries": 2, "bytes": 5, "size": 10, "sha256": "1" * 64},
            "volumes": {"files": [{"name": f"{snapshot_id}.tar.zst", "size": 10, "sha256": "1" * 64}]}}


def test_what_push_builds_is_what_chain_accepts():
    full = snapshot.build_meta(backup_doc(FULL, "full", []), "backups")
    inc = snapshot.build_meta(backup_doc(INC, "incremental", full["chain"]), "backups")
    pointer = snapshot.build_pointer("file:///s", inc, "backups")
    meta = snapshot.pointer_meta(pointer, INC, "latest-backup.json")
    assert [l["id"] for l in snapshot.check_meta(meta, INC, "latest-backup.json", pointer)] == [FULL, INC]
    assert pointer["latest"] == snapshot.meta_path("backups", INC) and inc["parent"] == f"backups/{FULL}.meta.json"


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.update(chain=[INC]), "its chain"),
    (lambda p: p.update(latest="backups/other.meta.json"), "its latest"),
    (lambda p: p["meta"].update(backup_type="full"), "backup_type"),
    (lambda p: p["meta"].update(parent="backups/x.meta.json"), "parent"),
])
def test_redundant_fields_must_agree(damage, message):
    full = snapshot.build_meta(backup_doc(FULL, "full", []), "backups")
    pointer = snapshot.build_pointer("file:///s", snapshot.build_meta(backup_doc(INC, "incremental", full["chain"]),
                                                                      "backups"), "backups")
    damage(pointer)
    with pytest.raises(ChainBroken, match=message):
        snapshot.check_meta(pointer["meta"], INC, "latest-backup.json", pointer)


def test_a_pointer_carrying_another_meta_is_damaged():
    full = snapshot.build_meta(backup_doc(FULL, "full", []), "backups")
    pointer = snapshot.build_pointer("file:///s", full, "backups")
    with pytest.raises(ChainBroken, match="carries the meta of"):
        snapshot.pointer_meta(pointer, INC, "latest-backup.json")


@pytest.mark.parametrize("compression", [[], {}, None, 3, "lz4"])
def test_a_link_of_an_unknown_compression_is_broken_whatever_its_type(compression):
    bad = dict(link(FULL, "full"), compression=compression)
    with pytest.raises(ChainBroken, match="compression"):
        snapshot.validate_link(bad, "chain[0]")
