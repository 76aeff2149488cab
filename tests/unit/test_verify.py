"""verify.py: what ocb-check finds from a listing, the catalog and the chains (table-driven)."""

import random

import pytest

from ocb import catalog, verify
from ocb.errors import UsageError
from ocb.snapshot import with_digest

FULL = "openclaw-backup-20260101-000000"
INCR = "openclaw-backup-20260101-010000"
OTHER = "openclaw-backup-20260102-000000"
SUM_A, SUM_B = "a" * 64, "b" * 64


def link(snapshot_id, backup_type, size=100, sha256=SUM_A, sealed=False):
    return {"id": snapshot_id, "backup_type": backup_type, "created_at_utc": "2026-01-01T00:00:00Z",
            "compression": "zstd", "sealed": sealed,
            "volumes": [{"name": f"{snapshot_id}.tar.zst", "size": size, "sha256": sha256}]}


CHAINS = {FULL: [link(FULL, "full")], INCR: [link(FULL, "full"), link(INCR, "incremental", 50, SUM_B)]}


def listing(**changes):
    files = {f"{FULL}.meta.json": (10, None), f"{INCR}.meta.json": (10, None),
             f"{FULL}.tar.zst": (100, None), f"{INCR}.tar.zst": (50, None)}
    for name, value in changes.items():
        name = name.replace("_meta", ".meta.json").replace("_vol", ".tar.zst").replace("F", FULL).replace("I", INCR)
        if value is None:
            del files[name]
        else:
            files[name] = value
    return files


@pytest.mark.parametrize("changes, expected", [
    ({}, []),
    ({"F_vol": None}, [(FULL, "volume", f"volume {FULL}.tar.zst of {FULL} is missing (needed by {INCR})")]),
    ({"I_vol": (49, None)}, [(INCR, "volume", f"volume {INCR}.tar.zst of {INCR} is 49 bytes, its meta records 50")]),
    ({"I_vol": (50, SUM_A)}, [(INCR, "volume", f"volume {INCR}.tar.zst of {INCR}: the store records sha256")]),
    ({"I_vol": (50, SUM_B)}, []),
    ({"F_meta": None}, [(FULL, "meta", f"the meta of {FULL} is missing, which the chain of {INCR} lists")]),
])
def test_chain_findings(changes, expected):
    found, counts = verify.chain_findings({INCR: CHAINS[INCR]}, listing(**changes))
    assert [(f.snapshot, f.what) for f in found] == [(s, w) for s, w, _ in expected]
    for finding, (_, _, text) in zip(found, expected):
        assert finding.message.startswith(text) and finding.fix
    assert counts["volumes"] == 2 and counts["bytes"] == 150


def test_chain_findings_judge_each_volume_once_and_count_the_store_confirmed_sha256():
    found, counts = verify.chain_findings(CHAINS, listing(F_vol=(100, SUM_A), F_meta=None), checked=[FULL])
    assert found == []  # the missing meta of a checked snapshot is the caller's to report
    assert counts == {"volumes": 2, "bytes": 150, "sha256_confirmed": 1}


def test_restorable_are_the_snapshots_whose_chain_no_problem_touches():
    problem = verify.Finding(INCR, "volume", "x", "y")
    assert verify.restorable(CHAINS, [problem]) == [FULL]
    assert verify.restorable(CHAINS, [verify.Finding(FULL, "meta", "x", "y")]) == []


def meta(chain):
    last = chain[-1]
    return with_digest({"id": last["id"], "chain": chain, "file_count": 3, "bytes": 30})


def catalog_of(*sealed):
    known = None
    ids = [FULL, INCR, OTHER][: len(sealed)]
    for number, (snapshot_id, is_sealed) in enumerate(zip(ids, sealed)):
        chain = [link(snapshot_id, "full", sealed=is_sealed)] if number != 1 else \
            [link(FULL, "full", sealed=sealed[0]), link(INCR, "incremental", sealed=is_sealed)]
        known = catalog.append(known, meta(chain))
    return known


@pytest.mark.parametrize("sealed, problems, warnings", [
    ((False, False), [], []),
    ((True, True), [], []),
    ((False, True), [], [FULL]),
    ((True, False), [INCR], []),
    ((False, True, False), [OTHER], [FULL]),
])
def test_unsealed_snapshots_in_a_sealed_store(sealed, problems, warnings):
    known = catalog_of(*sealed)
    assert verify.sealed_store(known) == any(sealed)
    found, warned = verify.unsealed_findings(known)
    assert [f.snapshot for f in found] == problems
    assert [f.snapshot for f in warned] == warnings


def test_catalog_findings_name_the_fields_that_disagree_with_the_meta():
    known = catalog_of(False, False)
    metas = {FULL: meta([link(FULL, "full")]), INCR: meta([link(FULL, "full"), link(INCR, "incremental")])}
    assert verify.catalog_findings(known, metas) == []
    metas[FULL] = with_digest({**metas[FULL], "file_count": 4})
    (finding,) = verify.catalog_findings(known, metas)
    assert finding.snapshot == FULL and "files" in finding.message


def test_stray_files_are_warnings_for_unlisted_metas_and_volumes_of_no_snapshot():
    files = listing(**{f"{OTHER}.meta.json": (10, None), "openclaw-backup-20260103-000000.tar.zst": (5, None)})
    found = verify.stray_files(files, CHAINS, [FULL, INCR])
    assert [(f.snapshot, f.what) for f in found] == [(OTHER, "catalog"), ("openclaw-backup-20260103-000000", "volume")]


@pytest.mark.parametrize("text, value", [("10%", 10.0), ("100", 100.0), (" 2.5 % ", 2.5)])
def test_parse_percent(text, value):
    assert verify.parse_percent(text, "--read-data-subset") == value


@pytest.mark.parametrize("text", ["0", "0%", "101%", "-5%", "ten", ""])
def test_parse_percent_refuses(text):
    with pytest.raises(UsageError, match="--read-data-subset"):
        verify.parse_percent(text, "--read-data-subset")


@pytest.mark.parametrize("count, percent, picked", [(0, 50, 0), (10, 10, 1), (10, 11, 2), (3, 1, 1), (4, 100, 4)])
def test_pick_subset_rounds_up_keeps_order(count, percent, picked):
    ids = [f"openclaw-backup-2026010{n}-000000" for n in range(count)]
    chosen = verify.pick_subset(ids, percent, random.Random(7))
    assert len(chosen) == picked and chosen == [i for i in ids if i in chosen]
