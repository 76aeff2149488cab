"""chain: resolution and validation of a meta's chain, and --at selection (table-driven)."""

import copy

import pytest

from ocb.chain import id_sort_key, parse_moment, pick_at, resolve
from ocb.errors import ChainBroken, UsageError

FULL = "openclaw-backup-20261101-120000"
INC = "openclaw-backup-20261101-121000"


def link(snapshot_id, kind):
    return {"id": snapshot_id, "backup_type": kind,
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
