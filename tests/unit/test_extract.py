"""extract: hostile archives write nothing outside staging; honest chains apply exactly."""

import hashlib
import io
import os
import tarfile

import pytest
from ocb.errors import ChainBroken, ChecksumMismatch, HostileArchive
from ocb.extract import StagingWriter, make_equal
from ocb.index import DIR, FILE, Entry, Index, in_order, split_member


def tar_of(*members):
    """members: (name, type, data_or_linkname)"""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                    info.linkname = payload
                tar.addfile(info)
    buffer.seek(0)
    return buffer


@pytest.fixture
def staging(tmp_path):
    return {"r": str(tmp_path / "stage" / "r")}, tmp_path


@pytest.mark.parametrize("name", ["/etc/passwd", "r/../../x", "r/./x", "r//x", "../r/x", "bad root/x", "r/a\0b", ""])
def test_split_member_refuses_escaping_names(name):
    with pytest.raises(HostileArchive):
        split_member(name)


@pytest.mark.parametrize("members, message", [
    ([("r", tarfile.DIRTYPE, None), ("r/h", tarfile.LNKTYPE, "/etc/passwd")], "hardlink"),
    ([("r", tarfile.DIRTYPE, None), ("r/dev", tarfile.CHRTYPE, None)], "device"),
    ([("r", tarfile.DIRTYPE, None), ("r/fifo", tarfile.FIFOTYPE, None)], "fifo"),
    ([("r", tarfile.DIRTYPE, None), ("r/../../escape", tarfile.REGTYPE, b"x")], "'..'"),
    ([("r", tarfile.DIRTYPE, None), ("/abs", tarfile.REGTYPE, b"x")], "absolute"),
    ([("r", tarfile.DIRTYPE, None), ("r/l", tarfile.SYMTYPE, "/tmp"), ("r/l/evil", tarfile.REGTYPE, b"x")], "not a directory"),
    ([("r", tarfile.DIRTYPE, None), ("r/a", tarfile.REGTYPE, b"1"), ("r/a", tarfile.DIRTYPE, None)], "two members"),
    # out of order first (an archive of before the order was kept), then a name again
    ([("r", tarfile.DIRTYPE, None), ("r/b", tarfile.REGTYPE, b"1"), ("r/c", tarfile.REGTYPE, b"1"),
      ("r/a", tarfile.REGTYPE, b"1"), ("r/b", tarfile.REGTYPE, b"2")], "two members named 'r/b'"),
])
def test_hostile_members_are_refused_and_nothing_escapes(staging, members, message):
    roots, tmp_path = staging
    writer = StagingWriter(roots, str(tmp_path / "index.jsonl"))
    with pytest.raises(HostileArchive, match=message):
        writer.extract(tar_of(*members))
    escaped = [p for p in tmp_path.rglob("*") if "stage" not in p.parts and p.name != "index.jsonl"]
    assert escaped == []
    assert not os.path.exists("/tmp/evil") and not os.path.exists("/escape")


def test_a_link_left_by_an_earlier_snapshot_is_never_written_through(staging):
    roots, tmp_path = staging
    outside = tmp_path / "outside"
    outside.mkdir()
    writer = StagingWriter(roots, str(tmp_path / "index.jsonl"))
    writer.extract(tar_of(("r", tarfile.DIRTYPE, None), ("r/l", tarfile.SYMTYPE, str(outside))))
    with pytest.raises(HostileArchive):
        writer.extract(tar_of(("r/l/evil", tarfile.REGTYPE, b"x")))
    assert list(outside.iterdir()) == []


def test_later_snapshots_replace_types(staging):
    roots, tmp_path = staging
    writer = StagingWriter(roots, str(tmp_path / "index.jsonl"))
    writer.extract(tar_of(("r", tarfile.DIRTYPE, None), ("r/d", tarfile.DIRTYPE, None),
                          ("r/d/x", tarfile.REGTYPE, b"x"), ("r/f", tarfile.REGTYPE, b"f")))
    writer.extract(tar_of(("r/d", tarfile.REGTYPE, b"now a file"), ("r/f", tarfile.SYMTYPE, "d")))
    top = roots["r"]
    assert open(os.path.join(top, "d"), "rb").read() == b"now a file"
    assert os.readlink(os.path.join(top, "f")) == "d"


def test_make_equal_removes_extras_and_checks_hashes(staging):
    roots, tmp_path = staging
    writer = StagingWriter(roots, str(tmp_path / "index.jsonl"))
    writer.extract(tar_of(("r", tarfile.DIRTYPE, None), ("r/keep", tarfile.REGTYPE, b"k"),
                          ("r/gone", tarfile.REGTYPE, b"g")))
    index = Index(roots={"r": {"kind": "dir", "present": True}})
    index.add(Entry("r", "", DIR, 0o700, 0, 10**18))
    good = Entry("r", "keep", FILE, 0o640, 1, 2 * 10**18, sha256=hashlib.sha256(b"k").hexdigest())
    index.add(good)
    make_equal(roots["r"], "r", in_order(index))
    assert os.listdir(roots["r"]) == ["keep"]
    st = os.stat(os.path.join(roots["r"], "keep"))
    assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o640, 2 * 10**18)
    index.add(Entry("r", "keep", FILE, 0o640, 1, 1, sha256="0" * 64))
    with pytest.raises(ChecksumMismatch):
        make_equal(roots["r"], "r", in_order(index))
    index.add(good)
    index.add(Entry("r", "missing", FILE, 0o640, 1, 1, sha256="0" * 64))
    with pytest.raises(ChainBroken):
        make_equal(roots["r"], "r", in_order(index))


def test_make_equal_takes_the_hashes_taken_while_writing(staging):
    roots, tmp_path = staging
    def archive():
        return tar_of(("r", tarfile.DIRTYPE, None), ("r/keep", tarfile.REGTYPE, b"k" + bytes(9000)))

    writer = StagingWriter(roots, str(tmp_path / "index.jsonl"), block_min=1)
    writer.extract(archive())
    digest, blocks = writer.written.get("r\0keep")  # keyed by order_key, the raw digest
    sha = digest.hex()
    assert sha == hashlib.sha256(b"k" + bytes(9000)).hexdigest() and blocks is not None
    assert os.path.getsize(os.path.join(roots["r"], "keep")) == 9001  # a trailing hole keeps the length
    index = Index(roots={"r": {"kind": "dir", "present": True}})
    index.add(Entry("r", "", DIR, 0o700, 0, 10**18))
    index.add(Entry("r", "keep", FILE, 0o640, 9001, 10**18, sha256=sha))
    for trusted in (True, False):
        writer = StagingWriter(roots, str(tmp_path / "index.jsonl"), block_min=1)
        writer.extract(archive())
        with open(os.path.join(roots["r"], "keep"), "r+b") as changed:  # the same size, other bytes
            changed.write(b"K")
        if trusted:  # the hash taken while writing is what is checked: the file is not read back
            make_equal(roots["r"], "r", in_order(index), written=writer.written)
        else:
            with pytest.raises(ChecksumMismatch):
                make_equal(roots["r"], "r", in_order(index))
    index.add(Entry("r", "keep", FILE, 0o640, 9001, 10**18, sha256="0" * 64))
    writer = StagingWriter(roots, str(tmp_path / "index.jsonl"), block_min=1)
    writer.extract(archive())
    with pytest.raises(ChecksumMismatch):  # the recorded hash is still checked against the index
        make_equal(roots["r"], "r", in_order(index), written=writer.written)


def test_written_hashes_spooled_per_archive_the_latest_wins(tmp_path):
    from ocb.blocks import BlockHashes
    from ocb.extract import WrittenHashes

    blocks = BlockHashes("ab" * 32, 8192, 4096, b"\1" * 64)
    for out_of_order in (False, True):
        written = WrittenHashes(str(tmp_path / "spool"))
        written.start_archive()  # a full
        for key, sha in (("r", None), ("r\0a", b"1" * 32), ("r\0b", b"2" * 32), ("r\0c", b"3" * 32),
                         ("r\0d", b"4" * 32)):
            written.applied(key)
            if sha:
                written.hashed(key, sha, blocks if key == "r\0d" else None)
        written.start_archive()  # an incremental: b written again, c now a directory (nothing hashed)
        later = [("r\0b", b"5" * 32), ("r\0c", None), ("r\0e", b"6" * 32)]
        for key, sha in (later[::-1] if out_of_order else later):
            written.applied(key)
            if sha:
                written.hashed(key, sha)
        assert (written.in_memory_because is not None) == out_of_order
        assert sorted(os.listdir(tmp_path)) == ([] if out_of_order else ["spool.written-0", "spool.written-1"])
        assert written.get("r") is None and written.get("r\0a") == b"1" * 32
        assert written.get("r\0b") == b"5" * 32 and written.get("r\0c") is None
        assert written.get("r\0d") == (b"4" * 32, blocks) and written.get("r\0e") == b"6" * 32
        assert written.get("r\0a") is None or out_of_order  # asked again, behind the merge: not known
        written.close()
        assert os.listdir(tmp_path) == []


def test_written_hashes_of_many_files_span_chunks(tmp_path):
    from ocb.extract import WrittenHashes

    written = WrittenHashes(str(tmp_path / "spool"))
    written.start_archive()
    keys = [f"r\0{number:06}" for number in range(3 * WrittenHashes.CHUNK + 5)]
    for key in keys:
        written.applied(key)
        written.hashed(key, hashlib.sha256(key.encode()).digest())
    assert written.in_memory_because is None
    assert all(written.get(key) == hashlib.sha256(key.encode()).digest() for key in keys)
    written.close()


def _spooled(tmp_path, lines):
    import json

    path = tmp_path / "index.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


HEAD = {"ocb_index": 1, "snapshot": "s1", "roots": {"r": {"kind": "dir", "present": True}}}


def _line(path, kind=FILE):
    return {"root": "r", "path": path, "type": kind, "mode": 0o644, "size": 0, "mtime_ns": 1, "sha256": "0" * 64}


def test_an_index_that_says_it_is_in_order_is_read_as_a_stream_checked_entry_by_entry(tmp_path):
    from ocb.extract import open_spooled_index

    good = [dict(HEAD, order="components"), _line("", DIR), _line("a", DIR), _line("a/x"), _line("a-b"), _line("b")]
    head, entries = open_spooled_index(_spooled(tmp_path, good), "snapshot s1")
    assert head.snapshot == "s1" and [e.path for e in entries] == ["", "a", "a/x", "a-b", "b"]
    for lines, problem in (([_line("b"), _line("a")], "out of order"), ([_line("a"), _line("a")], "out of order"),
                           ([_line("a"), _line("a/x")], "below something"), ([_line("../x")], "'..'")):
        _, entries = open_spooled_index(_spooled(tmp_path, [dict(HEAD, order="components"), _line("", DIR), *lines]),
                                        "snapshot s1")
        with pytest.raises(HostileArchive, match=problem):
            list(entries)


def test_an_index_written_before_the_order_was_said_is_left_to_be_read_whole(tmp_path):
    from ocb.extract import open_spooled_index, read_spooled_index

    # sorted by root and path as strings, as indexes were: "a-b" before "a/x"
    old = [HEAD, _line("", DIR), _line("a", DIR), _line("a-b"), _line("a/x")]
    assert open_spooled_index(_spooled(tmp_path, old), "snapshot s1") is None
    index = read_spooled_index(str(tmp_path / "index.jsonl"), "snapshot s1")
    assert [e.path for e in in_order(index)] == ["", "a", "a/x", "a-b"]


def test_make_equal_over_a_stream_removes_what_the_index_lacks_and_names_what_no_snapshot_carried(staging):
    roots, tmp_path = staging
    writer = StagingWriter(roots, str(tmp_path / "index.jsonl"))
    writer.extract(tar_of(("r", tarfile.DIRTYPE, None), ("r/a", tarfile.DIRTYPE, None), ("r/a/x", tarfile.REGTYPE, b"x"),
                          ("r/a-b", tarfile.REGTYPE, b"ab"), ("r/gone", tarfile.DIRTYPE, None),
                          ("r/gone/deep", tarfile.REGTYPE, b"d"), ("r/z", tarfile.REGTYPE, b"z")))
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in (("x", b"x"), ("ab", b"ab"), ("z", b"z"))}
    entries = [Entry("r", "", DIR, 0o755, 0, 10**18), Entry("r", "a", DIR, 0o750, 0, 3 * 10**18),
               Entry("r", "a/x", FILE, 0o600, 1, 10**18, sha256=sha["x"]),
               Entry("r", "a-b", FILE, 0o644, 2, 10**18, sha256=sha["ab"]), Entry("r", "z", FILE, 0o644, 1, 10**18, sha256=sha["z"])]
    make_equal(roots["r"], "r", iter(entries), written=writer.written)
    assert sorted(os.listdir(roots["r"])) == ["a", "a-b", "z"]
    st = os.stat(os.path.join(roots["r"], "a"))  # a directory's mode and mtime after what it holds
    assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o750, 3 * 10**18)
    with pytest.raises(ChainBroken, match="r/a/y is in the index but no snapshot"):
        make_equal(roots["r"], "r", iter(entries[:3] + [Entry("r", "a/y", FILE, 0o644, 1, 1, sha256="0" * 64)] + entries[3:]))
    with pytest.raises(ChainBroken, match="r/zz is in the index but no snapshot"):
        make_equal(roots["r"], "r", iter(entries + [Entry("r", "zz", FILE, 0o644, 1, 1, sha256="0" * 64)]))
    with pytest.raises(ChainBroken, match="no entry for root r"):
        make_equal(roots["r"], "r", iter(entries[1:]))


def test_an_archive_out_of_order_is_restored_with_its_hashes_held_in_memory(staging):
    roots, tmp_path = staging
    writer = StagingWriter(roots, str(tmp_path / "index.jsonl"))
    writer.extract(tar_of(("r", tarfile.DIRTYPE, None), ("r/b", tarfile.REGTYPE, b"b"), ("r/a", tarfile.REGTYPE, b"a")))
    assert writer.written.in_memory_because is not None and os.listdir(tmp_path) == ["stage"]
    entries = [Entry("r", "", DIR, 0o755, 0, 10**18)] + [
        Entry("r", name, FILE, 0o644, 1, 10**18, sha256=hashlib.sha256(name.encode()).hexdigest()) for name in "ab"]
    with open(os.path.join(roots["r"], "a"), "wb") as changed:  # trusted: what was hashed while written
        changed.write(b"A")
    make_equal(roots["r"], "r", iter(entries), written=writer.written)
    assert sorted(os.listdir(roots["r"])) == ["a", "b"]


# -- UstarInfo: the headers ustar_header writes parsed in one step, any other by tarfile -------

from hypothesis import given, settings, strategies as st  # noqa: E402


def _header_parsed(cls, buf):
    try:
        info = cls.frombuf(buf, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        return type(exc).__name__, None
    return info.get_info(), info.chksum


HEADER_INFOS = st.builds(
    lambda name, kind, mode, size, mtime, link, uid: _tarinfo(name, kind, mode, size, mtime, link, uid),
    st.text(alphabet="ab/é.", min_size=1, max_size=120), st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.AREGTYPE, tarfile.LNKTYPE]),
    st.integers(0, 0o7777), st.integers(0, 8 ** 11 + 5), st.integers(-2, 8 ** 11 + 5), st.text(alphabet="ab/", max_size=3),
    st.sampled_from([0, 0, 1000]))


def _tarinfo(name, kind, mode, size, mtime, link, uid):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime, info.linkname, info.uid = kind, mode, size, mtime, link, uid
    return info


@settings(max_examples=400, deadline=None)
@given(info=HEADER_INFOS, flips=st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), max_size=3))
def test_ustar_info_parses_any_header_as_tarfile_does(info, flips):
    # the header ocb's writer makes (ustar_header) or tarfile's own (PAX, long names, numbers
    # that do not fit), each as written and with bytes changed anywhere (a damaged or hostile
    # archive): UstarInfo gives what tarfile.TarInfo gives, or the same error
    from ocb.archive import ustar_header
    from ocb.extract import UstarInfo
    try:
        written = ustar_header(info) or info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    except ValueError:
        return  # tarfile cannot write it either
    for start in range(0, len(written), tarfile.BLOCKSIZE):
        buf = bytearray(written[start:start + tarfile.BLOCKSIZE])
        for at, value in flips:
            buf[at] = value
        for block in (bytes(written[start:start + tarfile.BLOCKSIZE]), bytes(buf)):
            ours, theirs = _header_parsed(UstarInfo, block), _header_parsed(tarfile.TarInfo, block)
            assert ours == theirs


def test_ustar_info_parses_ustar_headers_itself(monkeypatch):
    # the headers ocb writes never reach tarfile's own parsing
    from ocb.archive import ustar_header
    from ocb.extract import UstarInfo
    info = _tarinfo("state/a/b.txt", tarfile.REGTYPE, 0o640, 12345, 1_700_000_000, "", 0)
    expected = _header_parsed(tarfile.TarInfo, ustar_header(info))

    def refused(*args):
        raise AssertionError("tarfile's parser was asked")
    monkeypatch.setattr(tarfile.TarInfo, "frombuf", classmethod(refused))
    assert _header_parsed(UstarInfo, ustar_header(info)) == expected


# -- members(): the headers ocb writes parsed without tarfile's steps, the rest by tarfile -----

def _archive_of(specs) -> bytes:
    """A tar stream of members as ocb writes them (TarStream: ustar, or PAX for long or
    non-ASCII names), with tarfile's own GNU and global PAX headers mixed in."""
    from ocb.archive import TarStream
    out = io.BytesIO()
    stream = TarStream(out)
    for name, kind, size, link, style in specs:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.uname, info.gname = kind, 0o640, 1_700_000_000, "", ""
        if kind == tarfile.SYMTYPE:
            info.linkname = link
        if kind == tarfile.REGTYPE:
            info.size = size
        if style == "ocb":
            stream.add(info, io.BytesIO(b"d" * info.size))
            continue
        if style == "global":
            out.write(tarfile.TarInfo.create_pax_global_header({"comment": "x"}))
        fmt = tarfile.GNU_FORMAT if style == "gnu" else tarfile.PAX_FORMAT
        header = info.tobuf(fmt, "utf-8", "surrogateescape")
        out.write(header + b"d" * info.size + tarfile.NUL * (-info.size % tarfile.BLOCKSIZE))
    stream.close()
    return out.getvalue()


def _listed(iterate):
    got = []
    try:
        for member in iterate():
            got.append((member.name, member.type, member.size, member.mode, member.mtime, member.linkname,
                        member.uid, member.gid, member.offset, member.offset_data, dict(member.pax_headers)))
    except (tarfile.TarError, UnicodeError, ValueError) as exc:
        got.append(type(exc).__name__)
    return got


MEMBER_NAMES = st.one_of(
    st.text(alphabet="ab/", min_size=1, max_size=12).map(lambda s: "r/" + s),
    st.text(alphabet="abc/", min_size=100, max_size=240).map(lambda s: "r/" + s),  # past 100: PAX
    st.text(alphabet="aé/ø", min_size=1, max_size=30).map(lambda s: "r/" + s),  # not ASCII: PAX
    st.just("r/\udcff\udcfe"),  # surrogates: tarfile's hdrcharset=BINARY
    st.just("r/é\n21 hdrcharset=BINARY\n"),  # a name that reads as a record to tarfile's search
)
MEMBER_SPECS = st.lists(st.tuples(
    MEMBER_NAMES, st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE]), st.integers(0, 1500),
    st.one_of(st.just(""), st.text(alphabet="xy", min_size=90, max_size=130)),
    st.sampled_from(["ocb", "ocb", "ocb", "pax", "gnu", "global"])), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(specs=MEMBER_SPECS, flips=st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=3),
       cut=st.one_of(st.none(), st.integers(0, 2**16)))
def test_members_are_tarfiles_members_for_any_archive(specs, flips, cut):
    # ocb's archives, tarfile's other headers among them, damaged anywhere or cut short: the
    # same members (names, types, sizes, offsets, PAX records) or the same error as tarfile
    from ocb.extract import ForwardReader, UstarInfo, members
    try:
        data = bytearray(_archive_of(specs))
    except ValueError:
        return  # tarfile cannot write it either
    for at, value in flips:
        if at < len(data):
            data[at] = value
    data = bytes(data[:cut] if cut is not None else data)

    def theirs():
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
            while (member := tar.next()) is not None:
                yield member

    def ours():
        reader = ForwardReader(io.BytesIO(data))
        with tarfile.open(fileobj=reader, mode="r:", encoding="utf-8", errors="surrogateescape",
                          tarinfo=UstarInfo) as tar:
            yield from members(tar, reader)
    assert _listed(ours) == _listed(theirs)


def test_members_parse_ocbs_headers_themselves(monkeypatch):
    # ustar headers and PAX ones of long names never reach tarfile's next() after the first
    from ocb.extract import ForwardReader, UstarInfo, members
    specs = [("r", tarfile.DIRTYPE, 0, "", "ocb"), ("r/" + "n" * 150, tarfile.REGTYPE, 700, "", "ocb"),
             ("r/é", tarfile.SYMTYPE, 0, "t" * 120, "ocb"), ("r/z", tarfile.REGTYPE, 3, "", "ocb")]
    data = _archive_of(specs)
    reader = ForwardReader(io.BytesIO(data))
    tar = tarfile.open(fileobj=reader, mode="r:", encoding="utf-8", errors="surrogateescape", tarinfo=UstarInfo)
    first = tar.next()  # parsed when the archive was opened
    tar.firstmember = first
    calls = []
    real_next = tarfile.TarFile.next
    monkeypatch.setattr(tarfile.TarFile, "next", lambda self: calls.append(1) or real_next(self))
    names = [m.name for m in members(tar, reader)]
    assert names == ["r", "r/" + "n" * 150, "r/é", "r/z"]
    assert len(calls) == 2  # the first member, and the end of the archive
