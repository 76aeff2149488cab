"""document: every way stdin can be wrong gives BadDocument naming the problem."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ocb import document
from ocb.errors import BadDocument


@pytest.mark.parametrize("raw, message", [
    (b"", "empty input"),
    (b"   \n", "empty input"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", "JSON list"),
    (b'"text"', "JSON str"),
    (b"{}", "'ocb'"),
    (b'{"ocb": "1", "kind": "backup"}', "'ocb'"),
    (b'{"ocb": true, "kind": "backup"}', "'ocb'"),
    (b'{"ocb": 2, "kind": "backup"}', "'ocb' is 2"),
    (b'{"ocb": 1, "kind": "other"}', "'kind'"),
    (b'{"ocb": 1, "kind": "backup", "error": "boom"}', "'error'"),
])
def test_parse_names_what_is_wrong(raw, message):
    with pytest.raises(BadDocument, match=message):
        document.parse(raw)


def backup_doc(work, **sections):
    snapshot_id = "openclaw-backup-20261201-120000"
    return {"ocb": 1, "kind": "backup", "id": snapshot_id, "store": "file:///s",
            "settings": {"work_dir": str(work), "cache_dir": str(work.parent / "cache"), "home": str(work.parent)},
            **sections}


def archive_at(path, size=12):
    return {"path": str(path), "size": size, "sha256": "0" * 64, "compression": "zstd", "index": str(path) + ".i",
            "entries": 1, "files": 1, "bytes": 1}


def test_work_paths_must_stay_in_the_snapshot_work_dir(tmp_path):
    work = tmp_path / "work"
    inside = work / "openclaw-backup-20261201-120000" / "a.tar.zst"
    inside.parent.mkdir(parents=True)
    assert document.parse(json.dumps(backup_doc(work, archive=archive_at(inside))).encode())
    for outside in ["/etc/passwd", str(work / ".." / "elsewhere"), str(tmp_path), str(work / "other" / "f")]:
        with pytest.raises(BadDocument, match="outside the work dir"):
            document.parse(json.dumps(backup_doc(work, archive=archive_at(outside))).encode())


@pytest.mark.parametrize("size", ["12", True, -1, 2**60, 1.5])
def test_fields_of_the_wrong_type_are_named(tmp_path, size):
    work = tmp_path / "work"
    doc = backup_doc(work, archive=archive_at(work / "openclaw-backup-20261201-120000" / "a", size))
    with pytest.raises(BadDocument, match="'archive.size'"):
        document.parse(json.dumps(doc).encode())


def test_a_stage_names_the_section_it_lacks():
    with pytest.raises(BadDocument, match="field 'volumes' is missing.*before ocb-push"):
        document.require({"kind": "backup", "settings": {}, "plan": {}, "archive": {}}, "backup",
                         ("plan", "archive", "volumes"), "push")
    with pytest.raises(BadDocument, match="reads a restore document"):
        document.require({"kind": "backup"}, "restore", (), "pull")


@given(st.binary(max_size=300))
def test_parse_never_fails_with_anything_but_bad_document(raw):
    try:
        doc = document.parse(raw)
    except BadDocument:
        return
    assert isinstance(doc, dict) and doc["ocb"] == 1


def test_every_setting_has_one_check_and_every_check_a_setting():
    from dataclasses import fields

    from ocb.config import Settings

    assert set(document.SETTINGS) == {f.name for f in fields(Settings)}
