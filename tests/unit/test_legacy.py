"""legacy.py, legacy_crypto.py, legacy_restore.py: the legacy layout read back.

Encrypted files are made by the openssl CLI itself, with each variant of flags the legacy
script's command line gives on one openssl or another; archives with tarfile, as the script
made them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from ocb import legacy, legacy_crypto, legacy_restore
from ocb.errors import ChainBroken, ChecksumMismatch, HostileArchive, IntegrityError, UsageError, WrongPassword
from ocb.index import DIR, FILE, SYMLINK
from ocb.snapshot import parse_pointer, with_digest
from ocb.stores.base import Head
from ocb.stores.local import LocalStore

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI makes the test files")


def openssl_encrypt(tmp_path, data: bytes, password: str, *flags: str) -> bytes:
    plain, out, pw = tmp_path / "plain", tmp_path / "out", tmp_path / "pw"
    plain.write_bytes(data)
    pw.write_text(password)
    subprocess.run(["openssl", "enc", "-aes-256-cbc", "-salt", *flags, "-in", str(plain), "-out", str(out),
                    "-pass", f"file:{pw}"], check=True, capture_output=True)
    return out.read_bytes()


def gz_bytes(size: int = 50_000) -> bytes:
    return gzip.compress(os.urandom(size // 2) + b"a" * (size - size // 2))


def decrypt(cipher: bytes, password: bytes) -> bytes:
    reader = legacy_crypto.DecryptingReader(io.BytesIO(cipher), password, "test archive", True)
    return io.BufferedReader(reader).read()


# -- decryption: every variant the script's command line can give ------------------------------

@needs_openssl
@pytest.mark.parametrize("flags", [
    ("-pbkdf2",),                   # the script's own flags (openssl >= 1.1.1: sha256, 10000 iterations)
    ("-pbkdf2", "-md", "sha256", "-iter", "10000"),
    ("-pbkdf2", "-md", "sha512"),
    ("-pbkdf2", "-md", "sha1"),
    ("-md", "sha256"),              # no -pbkdf2: EVP_BytesToKey, openssl >= 1.1.0's default digest
    ("-md", "md5"),                 # no -pbkdf2 on openssl < 1.1.0
    ("-md", "sha1"),
])
def test_decrypts_what_openssl_enc_wrote(tmp_path, flags):
    data = gz_bytes()
    cipher = openssl_encrypt(tmp_path, data, "pass word", *flags)
    assert cipher.startswith(b"Salted__")
    assert decrypt(cipher, b"pass word") == data


@needs_openssl
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4095, 1024 * 1024 + 3])
def test_every_length_of_plaintext(tmp_path, size):
    data = gzip.compress(b"x" * size)
    assert decrypt(openssl_encrypt(tmp_path, data, "p", "-pbkdf2"), b"p") == data


@needs_openssl
def test_the_password_is_the_first_line_of_the_file_openssl_read(tmp_path):
    data = gz_bytes(1000)
    cipher = openssl_encrypt(tmp_path, data, "first line\nsecond", "-pbkdf2")
    assert decrypt(cipher, b"first line\nsecond") == data
    assert decrypt(cipher, b"first line") == data


@needs_openssl
def test_a_wrong_password_is_told_from_the_first_block(tmp_path):
    cipher = openssl_encrypt(tmp_path, gz_bytes(1000), "right", "-pbkdf2")
    with pytest.raises(WrongPassword, match="password is wrong"):
        decrypt(cipher, b"wrong")


@needs_openssl
def test_a_damaged_last_block_fails_the_padding_check(tmp_path):
    cipher = bytearray(openssl_encrypt(tmp_path, gz_bytes(1000), "p", "-pbkdf2"))
    cipher[-1] ^= 0x55  # the last block decrypts to garbage: its padding is wrong
    with pytest.raises(legacy_crypto.PaddingBroken, match="padding check failed"):
        decrypt(bytes(cipher), b"p")


@needs_openssl
def test_a_cut_archive_is_not_whole_blocks(tmp_path):
    cipher = openssl_encrypt(tmp_path, gz_bytes(1000), "p", "-pbkdf2")
    with pytest.raises(IntegrityError, match="not whole AES blocks"):
        decrypt(cipher[:-5], b"p")


def test_no_salted_header_is_named():
    with pytest.raises(IntegrityError, match="Salted__"):
        decrypt(b"\x1f\x8b" + b"\0" * 60, b"p")


def test_evp_bytestokey_matches_its_definition():
    key, iv = legacy_crypto.derive(b"pw", b"saltsalt", "evp_bytestokey", "md5", 1)
    d1 = hashlib.md5(b"pwsaltsalt").digest()
    d2 = hashlib.md5(d1 + b"pwsaltsalt").digest()
    d3 = hashlib.md5(d2 + b"pwsaltsalt").digest()
    assert key + iv == (d1 + d2 + d3)[:48]


# -- the pointer ------------------------------------------------------------------------------

LEGACY_POINTER = {"dataset": "me/repo", "latest": "backups/openclaw-backup-20251125-000000.tar.gz.meta.json",
                  "created_at_utc": "2025-11-25T00:00:00+00:00"}


def test_a_legacy_pointer_is_read_as_legacy_never_as_damaged():
    pointer = parse_pointer(json.dumps(LEGACY_POINTER).encode(), "latest-backup.json")
    assert pointer == LEGACY_POINTER
    head = Head(pointer, None)
    assert head.legacy and head.snapshot_id is None
    assert legacy.pointer_target(pointer) == ("openclaw-backup-20251125-000000", LEGACY_POINTER["latest"])


@pytest.mark.parametrize("pointer", [
    {**LEGACY_POINTER, "ocb": 1},                         # an ocb pointer that lost its digest
    {**LEGACY_POINTER, "record_sha256": "0" * 64},         # an ocb pointer whose digest is wrong
    {"dataset": "me/repo"},                                # no latest
])
def test_a_damaged_ocb_pointer_is_still_damaged(pointer):
    with pytest.raises(ChecksumMismatch):
        parse_pointer(json.dumps(pointer).encode(), "latest-backup.json")


def test_an_ocb_pointer_is_not_legacy():
    pointer = parse_pointer(json.dumps(with_digest({"ocb": 1, "id": "openclaw-backup-20260101-000000",
                                                    "latest": "backups/x.meta.json"})).encode(), "p")
    assert not Head(pointer, "t").legacy


@pytest.mark.parametrize("latest", ["/etc/passwd.meta.json", "../x/openclaw-backup-20251125-000000.meta.json",
                                    "backups/evil.json", "a//openclaw-backup-20251125-000000.meta.json"])
def test_a_pointer_naming_no_legacy_meta_is_refused(latest):
    with pytest.raises(ChainBroken):
        legacy.pointer_target({"latest": latest})


@pytest.mark.parametrize("value, expected", [
    (None, (None, None)),
    ("openclaw-backup-20251125-000000", ("openclaw-backup-20251125-000000", None)),
    ("openclaw-backup-20251125-000000.tar.gz", (None, "openclaw-backup-20251125-000000.tar.gz")),
    ("openclaw-backup-20251125-000000.tar.gz.enc", (None, "openclaw-backup-20251125-000000.tar.gz.enc")),
])
def test_restore_archive_names_an_id_or_an_archive(value, expected):
    assert legacy.archive_request(value) == expected


def test_a_bad_restore_archive_names_the_variable():
    with pytest.raises(UsageError, match="OPENCLAW_RESTORE_ARCHIVE"):
        legacy.archive_request("../etc")


# -- metas and chains -------------------------------------------------------------------------

def write_backup(root, stamp: str, meta: dict | None, volumes: dict[str, bytes], meta_name: str | None = None,
                 folder: str = "backups") -> str:
    base = root / folder
    base.mkdir(parents=True, exist_ok=True)
    for name, data in volumes.items():
        (base / name).write_bytes(data)
    name = meta_name or f"openclaw-backup-{stamp}.tar.gz.meta.json"
    if meta is not None:
        (base / name).write_text(json.dumps(meta))
    return f"{folder}/{name}"


def meta_of(stamp: str, kind: str, parent: str | None, chain_id: str | None, data: bytes, **extra) -> dict:
    return {"version": "2.1", "backup_type": kind, "chain_id": chain_id, "parent": parent,
            "volumes": [f"openclaw-backup-{stamp}.tar.gz"], "checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
            "created_at_utc": f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:]}+00:00",
            "archive_size": len(data), "created_by": "openclaw-backup", **extra}


def chain_store(tmp_path, broken_parent: bool = False):
    data = {s: gz_bytes(100) for s in ("20251125-000000", "20251126-000000", "20251127-000000")}
    p1 = write_backup(tmp_path, "20251125-000000", meta_of("20251125-000000", "full", None, "c1", data["20251125-000000"]),
                      {"openclaw-backup-20251125-000000.tar.gz": data["20251125-000000"]})
    p2 = write_backup(tmp_path, "20251126-000000", meta_of("20251126-000000", "incremental", p1, "c1",
                                                           data["20251126-000000"]),
                      {"openclaw-backup-20251126-000000.tar.gz": data["20251126-000000"]})
    p3 = write_backup(tmp_path, "20251127-000000", meta_of("20251127-000000", "incremental",
                                                           None if broken_parent else p2, "c1", data["20251127-000000"]),
                      {"openclaw-backup-20251127-000000.tar.gz": data["20251127-000000"]})
    return LocalStore(str(tmp_path)), p3


def test_parents_are_followed_full_first(tmp_path):
    store, latest = chain_store(tmp_path)
    links, notes = legacy.resolve_chain(legacy.Reader(store), latest)
    assert [l["id"] for l in links] == ["openclaw-backup-20251125-000000", "openclaw-backup-20251126-000000",
                                        "openclaw-backup-20251127-000000"]
    assert [l["backup_type"] for l in links] == ["full", "incremental", "incremental"]
    assert notes == []
    assert links[0]["volumes"] == [{"name": "openclaw-backup-20251125-000000.tar.gz",
                                    "size": (tmp_path / "backups/openclaw-backup-20251125-000000.tar.gz").stat().st_size}]


def test_a_lost_parent_is_found_again_by_chain_id(tmp_path):
    store, latest = chain_store(tmp_path, broken_parent=True)
    links, notes = legacy.resolve_chain(legacy.Reader(store), latest)
    assert [l["id"][-15:] for l in links] == ["20251125-000000", "20251126-000000", "20251127-000000"]
    assert "chain_id c1" in notes[0]


def test_a_lost_parent_without_chain_id_is_refused(tmp_path):
    data = gz_bytes(100)
    path = write_backup(tmp_path, "20251127-000000", meta_of("20251127-000000", "incremental", None, None, data),
                        {"openclaw-backup-20251127-000000.tar.gz": data})
    with pytest.raises(ChainBroken, match="no chain_id"):
        legacy.resolve_chain(legacy.Reader(LocalStore(str(tmp_path))), path)


def test_a_parent_loop_is_refused(tmp_path):
    data = gz_bytes(100)
    path = "backups/openclaw-backup-20251127-000000.tar.gz.meta.json"
    write_backup(tmp_path, "20251127-000000", meta_of("20251127-000000", "incremental", path, "c", data),
                 {"openclaw-backup-20251127-000000.tar.gz": data})
    with pytest.raises(ChainBroken, match="loop"):
        legacy.resolve_chain(legacy.Reader(LocalStore(str(tmp_path))), path)


def test_a_version_1_meta_infers_what_it_lacks(tmp_path):
    data = b"Salted__" + os.urandom(40)
    names = {"openclaw-backup-20251125-000000.tar.gz.enc.part-ab": data[20:],
             "openclaw-backup-20251125-000000.tar.gz.enc.part-aa": data[:20]}
    path = write_backup(tmp_path, "20251125-000000", {"version": "1.0", "last_backup_time": "2025-11-25T00:00:00"},
                        names, meta_name="openclaw-backup-20251125-000000.meta.json")
    link = legacy.Reader(LocalStore(str(tmp_path))).link(path)
    assert link["backup_type"] == "full" and link["encrypted"] and link["split"] and link["checksum"] is None
    assert [v["name"][-2:] for v in link["volumes"]] == ["aa", "ab"]  # name order, as split wrote them
    assert link["created_at_utc"] == "2025-11-25T00:00:00Z"


@pytest.mark.parametrize("meta, problem", [
    ({"version": "3.0", "backup_type": "full", "volumes": ["openclaw-backup-20251125-000000.tar.gz"]}, "newer legacy"),
    ({"backup_type": "full", "volumes": ["../../etc/passwd"]}, "not a volume"),
    ({"backup_type": "full", "volumes": ["openclaw-backup-20990101-000000.tar.gz"]}, "not a volume"),
    ({"backup_type": "full", "volumes": ["openclaw-backup-20251125-000000.tar.gz"], "checksum": "md5:x"}, "checksum"),
    ({"backup_type": "weekly", "volumes": ["openclaw-backup-20251125-000000.tar.gz"]}, "backup_type"),
    ({"backup_type": "full", "volumes": ["openclaw-backup-20251125-000000.tar.gz.part-aa"]}, "missing"),
])
def test_a_meta_that_cannot_be_trusted_is_refused(tmp_path, meta, problem):
    path = write_backup(tmp_path, "20251125-000000", meta, {"openclaw-backup-20251125-000000.tar.gz": b"x"})
    with pytest.raises(ChainBroken, match=problem):
        legacy.Reader(LocalStore(str(tmp_path))).link(path)


def test_an_ocb_meta_is_not_taken_for_a_legacy_one(tmp_path):
    path = write_backup(tmp_path, "20251125-000000", with_digest({"ocb": 1, "id": "openclaw-backup-20251125-000000"}),
                        {}, meta_name="openclaw-backup-20251125-000000.meta.json")
    reader = legacy.Reader(LocalStore(str(tmp_path)))
    assert reader.find("backups", "openclaw-backup-20251125-000000") is None
    with pytest.raises(ChainBroken, match="not a legacy meta"):
        reader.link(path)


def test_the_listing_tells_legacy_backups_from_ocb_snapshots(tmp_path):
    store, _ = chain_store(tmp_path)
    write_backup(tmp_path, "20260101-000000", with_digest({"ocb": 1}), {"openclaw-backup-20260101-000000.tar.zst": b"z"},
                 meta_name="openclaw-backup-20260101-000000.meta.json")
    entries = legacy.list_entries(legacy.Reader(store), "backups", Head(None, None),
                                  [{"id": "openclaw-backup-20260101-000000", "latest": True}])
    assert [(e["id"][-15:], e["format"]) for e in entries] == [
        ("20251125-000000", "legacy"), ("20251126-000000", "legacy"), ("20251127-000000", "legacy"),
        ("20260101-000000", "ocb")]


# -- extraction and merging -------------------------------------------------------------------

def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, mtime: float = 1764000000,
           linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, mtime, linkname
    return info


def merge(tmp_path, archives: list[bytes], kinds: dict[str, str] | None = None):
    kinds = kinds or {"openclaw-state": "dir"}
    staging = {name: str(tmp_path / f"staging-{name}") for name in kinds}
    writer = legacy_restore.LegacyWriter(staging, kinds)
    for number, data in enumerate(archives):
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            writer.extract_archive(stream, f"archive {number}")
    return writer, staging


def test_incrementals_merge_in_order_and_imply_their_directories(tmp_path):
    full = tar_gz([(member("openclaw-state", tarfile.DIRTYPE, 0o700), None),
                   (member("openclaw-state/a.txt"), b"one"),
                   (member("openclaw-state/gone.txt"), b"kept"),
                   (member("openclaw-state/link", tarfile.SYMTYPE, linkname="a.txt"), None)])
    inc = tar_gz([(member("openclaw-state/a.txt", mtime=1764100000.25), b"two"),
                  (member("openclaw-state/new/dir/b.txt", mode=0o600), b"b")])
    writer, staging = merge(tmp_path, [full, inc])
    entries = writer.index.entries
    assert open(os.path.join(staging["openclaw-state"], "a.txt"), "rb").read() == b"two"
    assert entries[("openclaw-state", "a.txt")].mtime_ns == 1764100000250000000
    assert entries[("openclaw-state", "a.txt")].sha256 == hashlib.sha256(b"two").hexdigest()
    assert entries[("openclaw-state", "gone.txt")].type == FILE  # no deletions recorded: it stays
    assert entries[("openclaw-state", "link")].type == SYMLINK and entries[("openclaw-state", "link")].target == "a.txt"
    assert entries[("openclaw-state", "")].mode == 0o700
    implied = entries[("openclaw-state", "new/dir")]
    assert implied.type == DIR and implied.mode == 0o755 and implied.mtime_ns == 1764000000 * 10**9


def test_a_file_replacing_a_directory_drops_what_it_held(tmp_path):
    full = tar_gz([(member("openclaw-state", tarfile.DIRTYPE), None), (member("openclaw-state/x", tarfile.DIRTYPE), None),
                   (member("openclaw-state/x/inner"), b"i")])
    inc = tar_gz([(member("openclaw-state/x"), b"now a file")])
    writer, staging = merge(tmp_path, [full, inc])
    assert ("openclaw-state", "x/inner") not in writer.index.entries
    assert writer.index.entries[("openclaw-state", "x")].type == FILE
    assert os.path.isfile(os.path.join(staging["openclaw-state"], "x"))


def test_a_hardlink_becomes_a_copy_of_its_file(tmp_path):
    full = tar_gz([(member("openclaw-state", tarfile.DIRTYPE), None), (member("openclaw-state/a"), b"same"),
                   (member("openclaw-state/b", tarfile.LNKTYPE, linkname="openclaw-state/a"), None)])
    writer, staging = merge(tmp_path, [full])
    assert open(os.path.join(staging["openclaw-state"], "b"), "rb").read() == b"same"
    assert writer.index.entries[("openclaw-state", "b")].size == 4
    assert os.stat(os.path.join(staging["openclaw-state"], "b")).st_nlink == 1


@pytest.mark.parametrize("members, problem", [
    ([(member("openclaw-state/../../etc/passwd"), b"x")], "'..'"),
    ([(member("/etc/passwd"), b"x")], "absolute"),
    ([(member("openclaw-state/b", tarfile.LNKTYPE, linkname="/etc/passwd"), None)], "absolute"),
    ([(member("openclaw-state/dev", tarfile.CHRTYPE), None)], "device"),
    ([(member("openclaw-state/a"), b"1"), (member("openclaw-state/a"), b"2")], "two members"),
])
def test_hostile_members_are_refused(tmp_path, members, problem):
    archive = tar_gz([(member("openclaw-state", tarfile.DIRTYPE), None)] + members)
    with pytest.raises(HostileArchive, match=problem):
        merge(tmp_path, [archive])


def test_nothing_is_written_through_a_link_an_earlier_archive_left(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    full = tar_gz([(member("openclaw-state", tarfile.DIRTYPE), None),
                   (member("openclaw-state/sub", tarfile.SYMTYPE, linkname=str(outside)), None)])
    inc = tar_gz([(member("openclaw-state/sub/planted"), b"x")])
    writer, staging = merge(tmp_path, [full, inc])
    assert list(outside.iterdir()) == []  # the link was replaced by a directory inside staging
    assert writer.index.entries[("openclaw-state", "sub")].type == DIR


def test_roots_of_another_kind_and_unknown_roots_are_not_restored(tmp_path):
    archive = tar_gz([(member("openclaw-state", tarfile.DIRTYPE), None), (member("agent.env", tarfile.DIRTYPE), None),
                      (member("agent.env/x"), b"x"), (member("not-configured/y"), b"y")])
    writer, _ = merge(tmp_path, [archive], {"openclaw-state": "dir", "agent.env": "file"})
    assert "agent.env" not in writer.index.roots
    assert writer.stats.skipped_roots == {"not-configured"}


def test_the_document_section_is_checked():
    link = {"id": "openclaw-backup-20251125-000000", "legacy": True, "folder": "backups", "encrypted": False,
            "checksum": None, "volumes": [{"name": "openclaw-backup-20251125-000000.tar.gz", "size": 3}]}
    legacy.check_section({"target": link["id"], "legacy": {"roots": []}, "snapshots": [link]})
    for bad in ({**link, "folder": "../x"}, {**link, "volumes": [{"name": "../../x", "size": 1}]},
                {**link, "checksum": "nope"}):
        with pytest.raises(ChainBroken):
            legacy.check_section({"target": link["id"], "legacy": {"roots": []}, "snapshots": [bad]})
