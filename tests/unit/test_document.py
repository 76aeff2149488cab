"""document: every way stdin can be wrong gives BadDocument naming the problem."""

import pytest
from hypothesis import given, strategies as st

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


def test_work_paths_must_stay_in_the_work_dir(tmp_path):
    work = tmp_path / "work"
    (work / "x").mkdir(parents=True)
    assert document.work_path({"p": str(work / "x" / "f")}, "p", "plan", str(work))
    for outside in ["/etc/passwd", str(work / ".." / "elsewhere"), str(tmp_path)]:
        with pytest.raises(BadDocument, match="outside the work dir"):
            document.work_path({"p": outside}, "p", "plan", str(work))


def test_fields_of_the_wrong_type_are_named():
    with pytest.raises(BadDocument, match="'archive.size'"):
        document.field({"size": "12"}, "size", int, "archive")
    with pytest.raises(BadDocument, match="'archive.size'"):
        document.field({"size": True}, "size", int, "archive")


@given(st.binary(max_size=300))
def test_parse_never_fails_with_anything_but_bad_document(raw):
    try:
        doc = document.parse(raw)
    except BadDocument:
        return
    assert isinstance(doc, dict) and doc["ocb"] == 1
