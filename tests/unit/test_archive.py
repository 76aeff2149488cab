"""archive.TarStream and ustar_header write exactly the bytes tarfile's PAX format writes."""

from __future__ import annotations

import io
import tarfile

from hypothesis import given, settings, strategies as st

from ocb.archive import TAR_ENCODING, TAR_ERRORS, TarStream, ustar_header

NAMES = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=120),
    st.text(min_size=1, max_size=60).filter(lambda s: "\0" not in s),  # non-ASCII: PAX
)


def _info(name: str, kind: bytes, mode: int, size: int, mtime: int, link: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, mtime
    info.uname = info.gname = ""
    if kind == tarfile.REGTYPE:
        info.size = size
    if kind == tarfile.SYMTYPE:
        info.linkname = link
    return info


@settings(max_examples=300, deadline=None)
@given(name=NAMES, kind=st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE]),
       mode=st.integers(0, 0o7777), size=st.one_of(st.integers(0, 10**6), st.just(8**11 + 5)),
       mtime=st.one_of(st.integers(0, 2**33), st.integers(-(2**31), -1), st.just(8**11)),
       link=NAMES)
def test_the_fast_header_is_tarfiles_header_or_declines(name, kind, mode, size, mtime, link) -> None:
    info = _info(name, kind, mode, size, mtime, link)
    fast = ustar_header(info)
    expected = info.tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, TAR_ERRORS)
    if fast is not None:
        assert fast == expected
    else:  # declined: only where tarfile needs an extended header
        assert len(expected) > tarfile.BLOCKSIZE or not name.isascii() or size >= 8**11 or not 0 <= mtime < 8**11


def test_a_simple_member_takes_the_fast_path() -> None:
    info = _info("root-openclaw/a/b.txt", tarfile.REGTYPE, 0o644, 12, 1_780_000_000, "")
    assert ustar_header(info) == info.tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, TAR_ERRORS)


def test_the_stream_is_byte_for_byte_what_tarfile_writes() -> None:
    members = [
        (_info("root-openclaw", tarfile.DIRTYPE, 0o755, 0, 1_780_000_000, ""), None),
        (_info("root-openclaw/x", tarfile.REGTYPE, 0o600, 1000, 1_780_000_001, ""), b"x" * 1000),
        (_info("root-openclaw/" + "long" * 40, tarfile.REGTYPE, 0o644, 513, 5, ""), b"y" * 513),
        (_info("root-openclaw/ünï", tarfile.SYMTYPE, 0o777, 0, 7, "../ø" * 30), None),
        (_info("root-openclaw/empty", tarfile.REGTYPE, 0o644, 0, 7, ""), b""),
        (_info("root-openclaw/big", tarfile.REGTYPE, 0o644, 2 * 1024 * 1024 + 3, 9, ""), b"z" * (2 * 1024 * 1024 + 3)),
    ]
    ours, theirs = io.BytesIO(), io.BytesIO()
    stream = TarStream(ours)
    with tarfile.open(fileobj=theirs, mode="w", format=tarfile.PAX_FORMAT, encoding=TAR_ENCODING,
                      errors=TAR_ERRORS) as tar:
        for info, data in members:
            stream.add(info, None if data is None else io.BytesIO(data))
            tar.addfile(info, None if data is None else io.BytesIO(data))
    stream.close()
    assert ours.getvalue() == theirs.getvalue()
    with tarfile.open(fileobj=io.BytesIO(ours.getvalue())) as back:
        assert [m.name for m in back.getmembers()] == [i.name for i, _ in members]
