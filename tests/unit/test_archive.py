"""archive.TarStream, ustar_header and pax_name_header write exactly the bytes tarfile's PAX
format writes; block hashes do not depend on the chunking, and a delta records what hashing
the new content records; the background sink hands its failure back."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
from hypothesis import given, settings, strategies as st

from ocb.archive import TAR_ENCODING, TAR_ERRORS, BackgroundWriter, TarStream, member_header, pax_name_header, ustar_header
from ocb.blocks import DIGEST_SIZE, Hasher, block_digest, build_delta

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


LONG_NAMES = st.one_of(
    NAMES,
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=90, max_size=400),  # ASCII past 100
    st.text(min_size=40, max_size=200).filter(lambda s: "\0" not in s),  # UTF-8 past 100 bytes
    st.text(st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF), min_size=1, max_size=5),  # surrogates
)


@settings(max_examples=400, deadline=None)
@given(name=LONG_NAMES, kind=st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE]),
       mode=st.integers(0, 0o7777), size=st.one_of(st.integers(0, 10**6), st.just(8**11 + 5)),
       mtime=st.one_of(st.integers(0, 2**33), st.just(-1), st.just(8**11)), link=LONG_NAMES)
def test_the_pax_name_header_is_tarfiles_header_or_declines(name, kind, mode, size, mtime, link) -> None:
    info = _info(name, kind, mode, size, mtime, link)
    fast = pax_name_header(info)
    expected = info.tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, TAR_ERRORS)
    assert member_header(info) == expected
    if fast is not None:
        assert fast == expected
        assert ustar_header(info) is None  # only where the plain header declines
    elif size < 8**11 and 0 <= mtime < 8**11 and ustar_header(info) is None:
        # declined with plain numbers: only for names that are not UTF-8 (tarfile's BINARY)
        with pytest.raises(UnicodeEncodeError):
            (name + link).encode("utf-8")


def test_an_npm_cache_path_takes_the_pax_fast_path() -> None:
    name = "root-npm/_cacache/content-v2/sha512/ab/cd/" + "0123456789abcdef" * 8
    info = _info(name, tarfile.REGTYPE, 0o644, 4000, 1_780_000_000, "")
    assert pax_name_header(info) == info.tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, TAR_ERRORS)
    assert len(pax_name_header(info)) == 3 * tarfile.BLOCKSIZE


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


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=0, max_size=5 * 1024), cuts=st.lists(st.integers(0, 5 * 1024), max_size=8),
       block_size=st.sampled_from([1, 7, 512, 1024]))
def test_block_hashes_do_not_depend_on_how_the_bytes_are_fed(data, cuts, block_size) -> None:
    hasher = Hasher(True, block_size)
    start = 0
    for cut in sorted(c for c in cuts if c <= len(data)) + [len(data)]:
        hasher.update(memoryview(data)[start:cut])  # memoryviews, as the tar stream hands them
        start = cut
    sha256, blocks = hasher.finish()
    assert sha256 == hashlib.sha256(data).hexdigest() and blocks is not None
    expected = b"".join(block_digest(data[i:i + block_size]) for i in range(0, len(data), block_size))
    assert blocks.digests == expected and blocks.size == len(data)


@settings(max_examples=100, deadline=None)
@given(old=st.binary(max_size=5000), new=st.binary(max_size=5000), block_size=st.sampled_from([1, 7, 512]))
def test_a_delta_records_what_hashing_the_new_content_records(tmp_path_factory, old, new, block_size) -> None:
    # the whole sha256, the block hashes and the changed blocks of a delta are those of the
    # new content, as a Hasher fed it whole gives them
    previous = Hasher(True, block_size)
    previous.update(old)
    _, old_blocks = previous.finish()
    assert old_blocks is not None
    spool = str(tmp_path_factory.mktemp("delta") / "spool")
    delta, short = build_delta(io.BytesIO(new), len(new), old_blocks, spool)
    whole = Hasher(True, block_size)
    whole.update(new)
    sha256, blocks = whole.finish()
    assert blocks is not None and not short
    assert (delta.sha256, delta.blocks.digests, delta.blocks.size) == (sha256, blocks.digests, len(new))
    changed = [n for n in range(len(blocks.digests) // DIGEST_SIZE) if blocks.digest(n) != old_blocks.digest(n)]
    assert delta.changed == changed
    with open(spool, "rb") as spooled:
        assert spooled.read() == b"".join(new[n * block_size:(n + 1) * block_size] for n in changed)


class _FullDisk(io.RawIOBase):
    def __init__(self, room: int) -> None:
        self.room = room

    def write(self, data) -> int:  # type: ignore[override]
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return len(data)


def test_the_sinks_failure_reaches_the_writer_and_nothing_after_it_is_written() -> None:
    sink = _FullDisk(300_000)
    background = BackgroundWriter(sink)  # type: ignore[arg-type]
    try:
        with pytest.raises(OSError, match="No space left"):
            for _ in range(100):
                background.write(b"x" * 100_000)
            background.finish()
    finally:
        background.stop()
    assert sink.room == 0 and not background._thread.is_alive()


@settings(max_examples=200, deadline=None)
@given(paths=st.lists(st.lists(st.text(st.characters(blacklist_characters="\0/"), min_size=1, max_size=4),
                               min_size=1, max_size=4).map("/".join), max_size=30))
def test_the_pack_order_key_orders_paths_as_their_components_do(paths) -> None:
    # the one order of an index (index.order_key): the path with NUL for "/", one string per
    # entry, orders as its list of components does, the root first
    from ocb.index import FILE, Entry, order_key

    entries = [Entry(root, p, FILE, 0o644, 0, 0) for root in ("r", "r-2", "r2") for p in ["", *paths]]
    assert sorted(entries, key=order_key) == sorted(entries, key=lambda e: (e.root, e.path.split("/") if e.path else []))


# -- a small file read whole (archive._ArchiveWriter._add_small_file): what it records when the
# file shrinks while read, or its read fails, is what the general path records


def _pack_one(tmp_path, content: bytes, monkeypatch, readv):
    import os

    from ocb import archive
    from ocb.config import Root
    from ocb.index import mark_changes, scan

    home = tmp_path / "home"
    home.mkdir()
    (home / "small").write_bytes(content)
    plan_index, _ = scan([Root("state", str(home), "dir")], [], [])
    mark_changes(plan_index, None)
    (tmp_path / "scratch").mkdir()
    (tmp_path / "blocks").mkdir()
    options = archive.PackOptions("zstd", 3, str(tmp_path / "scratch"), str(tmp_path / "blocks"), None,
                                  delta_min=4 * 1024 * 1024, sqlite_timeout=1.0)
    real_readv = os.readv
    monkeypatch.setattr(archive.os, "readv", lambda fd, buffers: readv(real_readv, fd, buffers, home / "small"))
    out = io.BytesIO()
    from ocb.index import Index, in_order

    _, stats, _, _ = archive.write_archive(plan_index, in_order(plan_index), {"state": str(home)}, out, options,
                                           str(tmp_path / "index.jsonl"))
    final = Index.load(str(tmp_path / "index.jsonl"))
    monkeypatch.undo()
    import zstandard

    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.getvalue()), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        members = {m.name: tar.extractfile(m).read() if m.isfile() else None for m in tar.getmembers()}
    return final, stats, members, out.getvalue()


def test_a_small_file_that_shrinks_while_read_is_archived_as_read_padded_and_counted(tmp_path, monkeypatch):
    content = b"x" * 5000

    def truncating(real, fd, buffers, path):
        path.write_bytes(content[:1000])  # the writer cuts it between the fstat and the read
        return real(fd, buffers)

    final, stats, members, _ = _pack_one(tmp_path, content, monkeypatch, truncating)
    archived = content[:1000] + bytes(4000)
    entry = final.entries[("state", "small")]
    assert stats.changed_while_read == 1
    assert (entry.size, entry.sha256) == (5000, hashlib.sha256(archived).hexdigest())
    assert members["state/small"] == archived


def test_a_small_file_whose_read_fails_is_named_unreadable_and_left_out(tmp_path, monkeypatch):
    import errno

    def failing(real, fd, buffers, path):
        raise OSError(errno.EIO, "Input/output error")

    final, stats, members, _ = _pack_one(tmp_path, b"y" * 3000, monkeypatch, failing)
    assert ("state", "small") not in final.entries
    assert stats.unreadable == [{"path": "state/small", "reason": "Input/output error"}]
    assert "state/small" not in members and "state" in members


def test_a_small_file_is_archived_with_its_hash(tmp_path, monkeypatch):
    content = bytes(range(256)) * 7
    final, stats, members, _ = _pack_one(tmp_path, content, monkeypatch, lambda real, fd, b, p: real(fd, b))
    entry = final.entries[("state", "small")]
    assert (stats.files, stats.changed_while_read, entry.sha256) == (1, 0, hashlib.sha256(content).hexdigest())
    assert members["state/small"] == content


def test_the_index_is_a_zstd_frame_of_its_own_at_the_index_level(tmp_path, monkeypatch):
    import zstandard

    from ocb.archive import INDEX_MEMBER
    from ocb.compression import ZSTD_INDEX_LEVEL, index_frame_level

    final, _, members, compressed = _pack_one(tmp_path, b"z" * 900, monkeypatch, lambda real, fd, b, p: real(fd, b))
    frame = zstandard.ZstdDecompressor().decompressobj()  # one frame: the rest is left unused
    members_frame = frame.decompress(compressed)
    index_frame = zstandard.ZstdDecompressor().decompressobj()
    index_and_end = index_frame.decompress(frame.unused_data)
    assert len(members_frame) % tarfile.BLOCKSIZE == 0 and index_frame.eof
    assert not index_frame.unused_data
    with tarfile.open(fileobj=io.BytesIO(members_frame)) as tar:
        assert tar.getnames() == ["state", "state/small"]
    with tarfile.open(fileobj=io.BytesIO(index_and_end)) as tar:
        assert tar.getnames() == [INDEX_MEMBER]
    assert members[INDEX_MEMBER] == open(tmp_path / "index.jsonl", "rb").read()
    assert [index_frame_level("zstd", level) for level in (3, 18, 19)] == [ZSTD_INDEX_LEVEL, ZSTD_INDEX_LEVEL, 19]
    assert index_frame_level("gzip", 6) is None
