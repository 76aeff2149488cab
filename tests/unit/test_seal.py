"""Tests for ocb.seal: round trips, known answers, and detection of every kind of damage.

A cheap KDF (scrypt log_n=10) and tiny segments keep the suite fast while still covering
streams of many segments.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocb import seal
from ocb.errors import IntegrityError, SealBroken, UsageError, WrongPassword

PASSWORD = b"test password \xe2\x9c\x93"
CHEAP_KDF = seal.KdfParams(log_n=10, r=8, p=1)
ASSOCIATED = b"openclaw-backup-20260101-000000/archive"
SEGMENT = 64
KEY = seal.derive_password_key(PASSWORD, CHEAP_KDF)
VECTORS = json.loads((Path(__file__).parent / "vectors" / "seal-v1.json").read_text())

# Header offsets, as documented in docs/format.md.
OFFSET_LOG_N = 11
OFFSET_SEGMENT_SIZE = 16
OFFSET_KDF_SALT = 20
OFFSET_ARCHIVE_SALT = 36
OFFSET_NONCE_PREFIX = 68
OFFSET_KEY_CHECK = 75


def open_stream(src, dst, keyring: seal.KeyRing, *, associated: bytes) -> seal.SealInfo:
    """Write the plaintext of `src` to `dst` through the streaming reader (short writes too)."""
    reader = seal.SealedReader(src, keyring, associated)
    buffer = memoryview(bytearray(65536))
    while filled := reader.readinto(buffer):
        view = buffer[:filled]
        while view:
            written = dst.write(view)
            view = view[written if written is not None else len(view):]
    return reader.info()


def sealed(
    plaintext: bytes,
    *,
    associated: bytes = ASSOCIATED,
    segment_size: int = SEGMENT,
    key: seal.PasswordKey = KEY,
) -> bytes:
    sink = io.BytesIO()
    seal.seal_stream(
        io.BytesIO(plaintext), sink, key, associated=associated, segment_size=segment_size
    )
    return sink.getvalue()


def opened(data: bytes, *, password: bytes = PASSWORD, associated: bytes = ASSOCIATED) -> bytes:
    sink = io.BytesIO()
    open_stream(io.BytesIO(data), sink, seal.KeyRing(password), associated=associated)
    return sink.getvalue()


def flip_bit(data: bytes, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def segment_start(index: int, segment_size: int = SEGMENT) -> int:
    return seal.HEADER_SIZE + index * (segment_size + seal.TAG_SIZE)


class Trickle:
    """A source that returns at most `step` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = io.BytesIO(data)
        self._step = step

    def readinto(self, buffer: memoryview) -> int:
        return self._data.readinto(memoryview(buffer)[: self._step])


class ShortWriter:
    """A sink that takes at most `step` bytes per write, like a raw non-blocking stream."""

    def __init__(self, step: int) -> None:
        self.data = bytearray()
        self._step = step

    def write(self, data: memoryview) -> int:
        taken = bytes(data[: self._step])
        self.data += taken
        return len(taken)


# Round trips


@pytest.mark.parametrize(
    "size",
    [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT, 5 * SEGMENT + 7, 1000, 4099],
)
def test_round_trip_sizes(size: int) -> None:
    plaintext = bytes(i * 7 % 251 for i in range(size))
    sink = io.BytesIO()
    info = seal.seal_stream(
        io.BytesIO(plaintext), sink, KEY, associated=ASSOCIATED, segment_size=SEGMENT
    )
    segments = max(1, -(-size // SEGMENT))
    assert info.segments == segments
    assert info.plaintext_bytes == size
    assert info.sealed_bytes == len(sink.getvalue())
    assert info.sealed_bytes == seal.HEADER_SIZE + size + segments * seal.TAG_SIZE
    back = io.BytesIO()
    opened_info = open_stream(
        io.BytesIO(sink.getvalue()), back, seal.KeyRing(PASSWORD), associated=ASSOCIATED
    )
    assert back.getvalue() == plaintext
    assert (opened_info.plaintext_bytes, opened_info.sealed_bytes, opened_info.segments) == (
        size,
        info.sealed_bytes,
        segments,
    )


def test_round_trip_default_segment_size() -> None:
    plaintext = bytes(range(256)) * (seal.DEFAULT_SEGMENT_SIZE // 256) + b"tail"
    sink = io.BytesIO()
    info = seal.seal_stream(io.BytesIO(plaintext), sink, KEY, associated=ASSOCIATED)
    assert info.segments == 2
    assert info.header["segment_size"] == seal.DEFAULT_SEGMENT_SIZE
    assert opened(sink.getvalue()) == plaintext


def test_round_trip_through_short_reads_and_short_writes() -> None:
    plaintext = bytes(range(256)) * 3
    sink = ShortWriter(step=5)
    seal.seal_stream(
        Trickle(plaintext, step=3), sink, KEY, associated=ASSOCIATED, segment_size=SEGMENT
    )
    back = ShortWriter(step=7)
    open_stream(
        Trickle(bytes(sink.data), step=11), back, seal.KeyRing(PASSWORD), associated=ASSOCIATED
    )
    assert bytes(back.data) == plaintext


@settings(max_examples=150, deadline=None)
@given(
    plaintext=st.binary(max_size=1500),
    segment_size=st.integers(min_value=1, max_value=200),
    write_sizes=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=8),
    read_size=st.integers(min_value=1, max_value=300),
)
def test_writer_and_reader_match_streams_for_any_chunking(
    plaintext: bytes, segment_size: int, write_sizes: list[int], read_size: int
) -> None:
    salt, prefix = b"s" * seal.ARCHIVE_SALT_SIZE, b"p" * seal.NONCE_PREFIX_SIZE
    expected = io.BytesIO()
    seal.seal_stream(
        io.BytesIO(plaintext),
        expected,
        KEY,
        associated=ASSOCIATED,
        segment_size=segment_size,
        archive_salt=salt,
        nonce_prefix=prefix,
    )
    sink = io.BytesIO()
    writer = seal.SealedWriter(
        sink, KEY, ASSOCIATED, segment_size=segment_size, archive_salt=salt, nonce_prefix=prefix
    )
    position, turn = 0, 0
    while position < len(plaintext):
        step = write_sizes[turn % len(write_sizes)] or 1
        writer.write(plaintext[position : position + step])
        position, turn = position + step, turn + 1
    info = writer.close()
    assert sink.getvalue() == expected.getvalue()
    assert info.sealed_bytes == len(expected.getvalue())

    reader = seal.SealedReader(io.BytesIO(sink.getvalue()), seal.KeyRing(PASSWORD), ASSOCIATED)
    parts = []
    while chunk := reader.read(read_size):
        assert len(chunk) == read_size or not reader.read(1)
        parts.append(chunk)
    assert b"".join(parts) == plaintext


def test_reader_small_reads_readinto_read1_and_read_all() -> None:
    plaintext = bytes(range(200))
    data = sealed(plaintext, segment_size=16)
    keyring = seal.KeyRing(PASSWORD)

    reader = seal.SealedReader(io.BytesIO(data), keyring, ASSOCIATED)
    assert b"".join(iter(lambda: reader.read(1), b"")) == plaintext
    assert reader.read(1) == b""
    assert reader.info().plaintext_bytes == len(plaintext)

    reader = seal.SealedReader(io.BytesIO(data), keyring, ASSOCIATED)
    buffer = bytearray(7)
    collected = bytearray()
    while count := reader.readinto(buffer):
        collected += buffer[:count]
    assert bytes(collected) == plaintext

    reader = seal.SealedReader(io.BytesIO(data), keyring, ASSOCIATED)
    first = reader.read1(100)
    assert 0 < len(first) <= 16
    assert first + reader.read() == plaintext


def test_writer_abandoned_by_an_exception_leaves_a_stream_that_does_not_open() -> None:
    sink = io.BytesIO()
    with pytest.raises(RuntimeError):
        with seal.SealedWriter(sink, KEY, ASSOCIATED, segment_size=SEGMENT) as writer:
            writer.write(b"x" * (3 * SEGMENT))
            raise RuntimeError("source failed")
    assert not writer.closed
    with pytest.raises(SealBroken, match="truncated"):
        opened(sink.getvalue())


def test_seal_info_header_is_json_and_holds_no_secret() -> None:
    sink = io.BytesIO()
    info = seal.seal_stream(io.BytesIO(b"data"), sink, KEY, associated=ASSOCIATED)
    assert info.header == {
        "format": "ocb-seal",
        "version": 1,
        "aead": "AES-256-GCM",
        "kdf": {"name": "scrypt", "log_n": 10, "r": 8, "p": 1},
        "segment_size": seal.DEFAULT_SEGMENT_SIZE,
    }
    assert json.loads(json.dumps(info.header)) == info.header


# Known answers


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
def test_known_answer_sealing_is_byte_exact(vector: dict) -> None:
    kdf = seal.KdfParams(VECTORS["kdf"]["log_n"], VECTORS["kdf"]["r"], VECTORS["kdf"]["p"])
    key = seal.derive_password_key(
        bytes.fromhex(VECTORS["password"]), kdf, bytes.fromhex(VECTORS["kdf_salt"])
    )
    assert key._key.hex() == VECTORS["password_key"]
    sink = io.BytesIO()
    info = seal.seal_stream(
        io.BytesIO(bytes.fromhex(vector["plaintext"])),
        sink,
        key,
        associated=bytes.fromhex(VECTORS["associated"]),
        segment_size=VECTORS["segment_size"],
        archive_salt=bytes.fromhex(VECTORS["archive_salt"]),
        nonce_prefix=bytes.fromhex(VECTORS["nonce_prefix"]),
    )
    assert sink.getvalue().hex() == vector["sealed"]
    assert info.segments == vector["segments"]


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
def test_known_answer_opens_with_the_module_and_an_independent_reading_of_the_spec(
    vector: dict,
) -> None:
    password = bytes.fromhex(VECTORS["password"])
    associated = bytes.fromhex(VECTORS["associated"])
    data = bytes.fromhex(vector["sealed"])
    plaintext = bytes.fromhex(vector["plaintext"])
    assert opened(data, password=password, associated=associated) == plaintext
    assert reference_open(data, password, associated) == plaintext


def reference_open(data: bytes, password: bytes, associated: bytes) -> bytes:
    """docs/format.md implemented from scratch: stdlib scrypt and HKDF, AES-GCM per segment."""
    header, body = data[:107], data[107:]
    assert header[:11] == b"OCBSEAL\x00\x01\x01\x01"
    log_n, r, p = header[11], int.from_bytes(header[12:14]), int.from_bytes(header[14:16])
    segment_size = int.from_bytes(header[16:20])
    kdf_salt, archive_salt = header[20:36], header[36:68]
    nonce_prefix, key_check = header[68:75], header[75:107]
    password_key = hashlib.scrypt(password, salt=kdf_salt, n=2**log_n, r=r, p=p, dklen=32)
    prk = hmac.digest(archive_salt, password_key, "sha256")
    info = b"ocb seal v1\x00" + header[:75]
    first = hmac.digest(prk, info + b"\x01", "sha256")
    second = hmac.digest(prk, first + info + b"\x02", "sha256")
    assert hmac.digest(second, header[:75], "sha256") == key_check
    aead = AESGCM(first)
    stride = segment_size + 16
    plaintext = b""
    for counter, start in enumerate(range(0, max(len(body), 1), stride)):
        final = start + stride >= len(body)
        nonce = nonce_prefix + counter.to_bytes(4, "big") + bytes([final])
        plaintext += aead.decrypt(nonce, body[start : start + stride], associated)
    return plaintext


# Detection


def test_wrong_password() -> None:
    with pytest.raises(WrongPassword) as raised:
        opened(sealed(b"secret"), password=b"not the password")
    message = str(raised.value)
    assert "wrong password" in message
    assert "not the password" not in message and PASSWORD.decode() not in message


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0, SealBroken),  # magic
        (8, SealBroken),  # version
        (9, SealBroken),  # aead id
        (OFFSET_LOG_N, WrongPassword),  # log_n 10 -> 11: valid, so a different key
        (OFFSET_SEGMENT_SIZE + 3, WrongPassword),  # segment size 64 -> 65
        (OFFSET_KDF_SALT, WrongPassword),
        (OFFSET_ARCHIVE_SALT + 5, WrongPassword),
        (OFFSET_NONCE_PREFIX, WrongPassword),
        (OFFSET_KEY_CHECK, WrongPassword),
        (seal.HEADER_SIZE - 1, WrongPassword),
    ],
)
def test_one_flipped_header_bit(offset: int, expected: type[IntegrityError]) -> None:
    with pytest.raises(expected):
        opened(flip_bit(sealed(b"x" * 200), offset * 8))


def test_one_flipped_bit_in_a_segment_body() -> None:
    data = sealed(b"x" * 200)
    with pytest.raises(SealBroken, match="segment 1 .*failed authentication"):
        opened(flip_bit(data, (segment_start(1) + 3) * 8))


def test_one_flipped_bit_in_a_tag() -> None:
    data = sealed(b"x" * 200)
    tag_of_segment_0 = segment_start(1) - 1
    with pytest.raises(SealBroken, match="segment 0"):
        opened(flip_bit(data, tag_of_segment_0 * 8 + 7))


def test_flipped_bit_in_the_final_tag() -> None:
    data = sealed(b"x" * 200)
    with pytest.raises(SealBroken):
        opened(flip_bit(data, len(data) * 8 - 1))


def test_truncation_at_a_segment_boundary() -> None:
    data = sealed(b"x" * 200)
    with pytest.raises(SealBroken, match="truncated: it ends after segment 1"):
        opened(data[: segment_start(2)])


def test_truncation_mid_segment() -> None:
    data = sealed(b"x" * 200)
    with pytest.raises(SealBroken):
        opened(data[: segment_start(2) + 20])


@pytest.mark.parametrize(
    ("length", "message"),
    [
        (0, "empty"),
        (5, "truncated inside its header"),
        (seal.HEADER_SIZE, "nothing follows the header"),
        (seal.HEADER_SIZE + 10, "truncated inside segment 0"),
    ],
)
def test_truncation_in_or_right_after_the_header(length: int, message: str) -> None:
    with pytest.raises(SealBroken, match=message):
        opened(sealed(b"x" * 200)[:length])


@pytest.mark.parametrize("size", [0, 100, 2 * SEGMENT])
def test_appended_bytes(size: int) -> None:
    data = sealed(b"y" * size)
    for extra in (b"\x00", b"more data" * 20):
        with pytest.raises(SealBroken):
            opened(data + extra)


def test_appended_bytes_after_a_full_final_segment_are_named() -> None:
    with pytest.raises(SealBroken, match="bytes after its final segment"):
        opened(sealed(b"y" * (2 * SEGMENT)) + b"!")


def test_two_segments_swapped() -> None:
    data = sealed(b"a" * SEGMENT + b"b" * SEGMENT + b"c" * 10)
    first = data[segment_start(0) : segment_start(1)]
    second = data[segment_start(1) : segment_start(2)]
    swapped = data[: segment_start(0)] + second + first + data[segment_start(2) :]
    with pytest.raises(SealBroken, match="segment 0"):
        opened(swapped)


def test_a_segment_dropped_from_the_middle() -> None:
    data = sealed(b"z" * (3 * SEGMENT + 1))
    with pytest.raises(SealBroken, match="segment 1"):
        opened(data[: segment_start(1)] + data[segment_start(2) :])


def test_another_archives_sealed_bytes_substituted() -> None:
    other = sealed(b"other archive", associated=b"openclaw-backup-20260102-000000/archive")
    with pytest.raises(SealBroken, match="another archive"):
        opened(other)


def test_a_segment_spliced_in_from_another_archive_with_the_same_key() -> None:
    mine = sealed(b"m" * (2 * SEGMENT + 5))
    theirs = sealed(b"t" * (2 * SEGMENT + 5))
    spliced = mine[: segment_start(1)] + theirs[segment_start(1) : segment_start(2)]
    with pytest.raises(SealBroken, match="segment 1"):
        opened(spliced + mine[segment_start(2) :])


def test_errors_are_sticky_and_only_verified_plaintext_is_returned() -> None:
    plaintext = bytes(range(3 * SEGMENT))
    damaged = flip_bit(sealed(plaintext), (segment_start(1) + 1) * 8)
    reader = seal.SealedReader(io.BytesIO(damaged), seal.KeyRing(PASSWORD), ASSOCIATED)
    assert reader.read(SEGMENT) == plaintext[:SEGMENT]
    for _ in range(2):
        with pytest.raises(SealBroken, match="segment 1"):
            reader.read(1)


def header_with(**fields: int) -> bytes:
    """A sealed stream whose header carries other field values (for bound checks)."""
    data = bytearray(sealed(b"x"))
    layout = {"log_n": (11, 1), "r": (12, 2), "p": (14, 2), "segment_size": (16, 4)}
    for name, value in fields.items():
        offset, size = layout[name]
        data[offset : offset + size] = value.to_bytes(size, "big")
    return bytes(data)


@pytest.mark.parametrize(
    "fields",
    [
        {"log_n": 23},
        {"log_n": 0},
        {"log_n": 21},  # 2 GiB with r=8
        {"r": 0},
        {"r": 1000},
        {"p": 0},
        {"p": 1000},
        {"segment_size": 0},
        {"segment_size": seal.MAX_SEGMENT_SIZE + 1},
    ],
)
def test_hostile_parameters_are_refused_before_any_derivation(fields: dict[str, int]) -> None:
    keyring = seal.KeyRing(PASSWORD)
    with pytest.raises(SealBroken, match="unsupported parameters"):
        open_stream(io.BytesIO(header_with(**fields)), io.BytesIO(), keyring, associated=b"")
    assert keyring.derivations == 0


def test_not_sealed_data() -> None:
    with pytest.raises(SealBroken, match="not an ocb sealed stream"):
        opened(b"\x28\xb5\x2f\xfd" + bytes(300))


SAMPLE_PLAINTEXT = bytes(range(256)) * 2
SAMPLE = sealed(SAMPLE_PLAINTEXT, segment_size=100)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bit=st.integers(min_value=0, max_value=len(SAMPLE) * 8 - 1))
def test_any_flipped_bit_raises_and_never_yields_wrong_plaintext(bit: int) -> None:
    returned = b""
    with pytest.raises(IntegrityError):
        damaged = io.BytesIO(flip_bit(SAMPLE, bit))
        reader = seal.SealedReader(damaged, seal.KeyRing(PASSWORD), ASSOCIATED)
        while chunk := reader.read(37):
            returned += chunk
    assert SAMPLE_PLAINTEXT.startswith(returned)


@settings(max_examples=300, deadline=None)
@given(length=st.integers(min_value=0, max_value=len(SAMPLE) - 1))
def test_any_truncation_raises_and_never_yields_wrong_plaintext(length: int) -> None:
    returned = b""
    with pytest.raises(SealBroken):
        truncated = io.BytesIO(SAMPLE[:length])
        reader = seal.SealedReader(truncated, seal.KeyRing(PASSWORD), ASSOCIATED)
        while chunk := reader.read(37):
            returned += chunk
    assert SAMPLE_PLAINTEXT.startswith(returned)


# Keys


def test_keyring_derives_scrypt_once_for_many_archives(monkeypatch: pytest.MonkeyPatch) -> None:
    scrypt_runs = []
    real_derive = seal.KdfParams.derive

    def counting_derive(self: seal.KdfParams, password: bytes, salt: bytes) -> bytes:
        scrypt_runs.append((self, salt))
        return real_derive(self, password, salt)

    key = seal.derive_password_key(PASSWORD, CHEAP_KDF)
    archives = {f"snapshot-{n}/volume-{n}".encode(): bytes([n]) * (n * 37) for n in range(12)}
    sealed_archives = {
        associated: sealed(plaintext, associated=associated, key=key)
        for associated, plaintext in archives.items()
    }
    monkeypatch.setattr(seal.KdfParams, "derive", counting_derive)
    keyring = seal.KeyRing(PASSWORD)
    for associated, data in sealed_archives.items():
        assert opened_with(keyring, data, associated) == archives[associated]
    assert len(scrypt_runs) == 1
    assert keyring.derivations == 1


def opened_with(keyring: seal.KeyRing, data: bytes, associated: bytes) -> bytes:
    sink = io.BytesIO()
    open_stream(io.BytesIO(data), sink, keyring, associated=associated)
    return sink.getvalue()


def test_keyring_derives_again_for_another_salt() -> None:
    other_key = seal.derive_password_key(PASSWORD, CHEAP_KDF)
    keyring = seal.KeyRing(PASSWORD)
    opened_with(keyring, sealed(b"1"), ASSOCIATED)
    opened_with(keyring, sealed(b"2", key=other_key), ASSOCIATED)
    assert keyring.derivations == 2


def test_reprs_show_no_key_or_password() -> None:
    key = seal.derive_password_key(PASSWORD, CHEAP_KDF)
    text = repr(key)
    assert key._key.hex() not in text and repr(key._key) not in text
    assert "log_n=10" in text
    keyring = seal.KeyRing(PASSWORD)
    assert repr(PASSWORD) not in repr(keyring) and key._key.hex() not in repr(keyring)


def test_random_kdf_salt_gives_different_keys() -> None:
    first = seal.derive_password_key(PASSWORD, CHEAP_KDF)
    second = seal.derive_password_key(PASSWORD, CHEAP_KDF)
    assert first.kdf_salt != second.kdf_salt and first._key != second._key


def test_fixed_kdf_salt_gives_the_same_key() -> None:
    salt = bytes(16)
    first = seal.derive_password_key(PASSWORD, CHEAP_KDF, salt)
    assert first._key == seal.derive_password_key(PASSWORD, CHEAP_KDF, salt)._key


@pytest.mark.parametrize(
    ("password", "kdf"),
    [
        (b"", CHEAP_KDF),
        (PASSWORD, seal.KdfParams(log_n=23)),
        (PASSWORD, seal.KdfParams(log_n=20, r=16)),
        (PASSWORD, seal.KdfParams(p=0)),
    ],
)
def test_derive_refuses_an_empty_password_or_absurd_parameters(
    password: bytes, kdf: seal.KdfParams
) -> None:
    with pytest.raises(UsageError):
        seal.derive_password_key(password, kdf)


@pytest.mark.parametrize("segment_size", [0, seal.MAX_SEGMENT_SIZE + 1])
def test_sealing_refuses_unsupported_segment_sizes(segment_size: int) -> None:
    with pytest.raises(UsageError):
        seal.seal_stream(
            io.BytesIO(b""), io.BytesIO(), KEY, associated=b"", segment_size=segment_size
        )


# Memory


class Generated:
    """`total` bytes of whatever the reader's buffer already holds: content does not matter
    here, and generating none keeps the test's own allocations out of the measurement."""

    def __init__(self, total: int) -> None:
        self._left = total

    def readinto(self, buffer: memoryview) -> int:
        size = min(len(buffer), self._left)
        self._left -= size
        return size


class Discard:
    def write(self, data: memoryview) -> int:
        return len(data)


def test_sealing_and_opening_keep_memory_flat() -> None:
    total = 32 * 1024 * 1024
    segment_size = 64 * 1024
    sink = io.BytesIO()
    seal.seal_stream(Generated(total), sink, KEY, associated=b"m", segment_size=segment_size)
    sealed_stream = io.BytesIO(sink.getvalue())
    keyring = seal.KeyRing(PASSWORD)
    tracemalloc.start()
    try:
        sealing = seal.seal_stream(
            Generated(total), Discard(), KEY, associated=b"m", segment_size=segment_size
        )
        opening = open_stream(sealed_stream, Discard(), keyring, associated=b"m")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sealing.plaintext_bytes == opening.plaintext_bytes == total
    assert peak < 4 * segment_size


def test_reader_feeds_a_streaming_tar_reader() -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w|") as tar:
        for name, content in [("a.txt", b"alpha" * 100), ("b/c.bin", bytes(range(256)) * 9)]:
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    data = sealed(archive.getvalue(), segment_size=100)
    reader = seal.SealedReader(io.BytesIO(data), seal.KeyRing(PASSWORD), ASSOCIATED)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        contents = {member.name: tar.extractfile(member).read() for member in tar}  # type: ignore[union-attr]
    assert contents == {"a.txt": b"alpha" * 100, "b/c.bin": bytes(range(256)) * 9}


# Independent vectors (tests/independent_seal.py, written from docs/format.md)

import sys  # noqa: E402
import tarfile as _tarfile  # noqa: E402

import zstandard  # noqa: E402
from ocb import cache, catalog, snapshot  # noqa: E402
from ocb.errors import NotAuthenticated  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import independent_seal as ind  # noqa: E402

INDEPENDENT = json.loads((Path(__file__).parent / "vectors" / "seal-v1-independent.json").read_text())
POSITIVE = [v for v in INDEPENDENT["vectors"] if not v.get("reject")]
NEGATIVE = [v for v in INDEPENDENT["vectors"] if v.get("reject")]


def joined(vector: dict) -> bytes:
    """Volumes join by plain concatenation, in order (docs/format.md, Volumes)."""
    return b"".join(bytes.fromhex(v) for v in vector["volumes"])


def kdf_tuple_to_params(kdf: list) -> seal.Kdf:
    if kdf[0] == "scrypt":
        return seal.KdfParams(kdf[1], kdf[2], kdf[3])
    return seal.Argon2Params(kdf[1], kdf[2], kdf[3])


def test_the_independent_vectors_cover_what_the_spec_asks() -> None:
    assert {tuple(v["kdf"])[0] for v in POSITIVE} == {"scrypt", "argon2id"}
    assert len({v["segment_size"] for v in POSITIVE}) == len(POSITIVE)
    assert any(len(v["volumes"]) > 1 for v in POSITIVE) and len(NEGATIVE) >= 10


@pytest.mark.parametrize("vector", POSITIVE, ids=lambda v: v["name"])
def test_independent_vectors_open_in_both_decoders_and_ocb_seals_them_byte_for_byte(vector: dict) -> None:
    password, aad = bytes.fromhex(vector["password"]), bytes.fromhex(vector["aad"])
    plaintext = bytes.fromhex(vector["plaintext"])
    assert ind.decode(password, aad, joined(vector)) == plaintext
    assert opened(joined(vector), password=password, associated=aad) == plaintext
    key = seal.derive_password_key(password, kdf_tuple_to_params(vector["kdf"]), bytes.fromhex(vector["kdf_salt"]))
    sink = io.BytesIO()
    seal.seal_stream(io.BytesIO(plaintext), sink, key, associated=aad, segment_size=vector["segment_size"],
                     archive_salt=bytes.fromhex(vector["archive_salt"]),
                     nonce_prefix=bytes.fromhex(vector["nonce_prefix"]))
    assert sink.getvalue() == joined(vector)


@pytest.mark.parametrize("vector", NEGATIVE, ids=lambda v: v["name"])
def test_every_negative_vector_fails_in_both_decoders(vector: dict) -> None:
    password, aad = bytes.fromhex(vector["password"]), bytes.fromhex(vector["aad"])
    with pytest.raises(ind.Refused):
        ind.decode(password, aad, joined(vector))
    with pytest.raises(IntegrityError):
        opened(joined(vector), password=password, associated=aad)


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
def test_the_first_vectors_open_in_the_independent_decoder(vector: dict) -> None:
    assert ind.decode(bytes.fromhex(VECTORS["password"]), bytes.fromhex(VECTORS["associated"]),
                      bytes.fromhex(vector["sealed"])) == bytes.fromhex(vector["plaintext"])


def test_the_independent_decoder_opens_a_real_multi_volume_snapshot(tmp_path: Path) -> None:
    """The fixture store sealed by the first ocb: its incremental is three volumes."""
    fixture = Path(__file__).resolve().parents[1] / "e2e" / "fixtures" / "sealed-v1" / "store.tar.gz"
    with _tarfile.open(fixture) as tar:
        tar.extractall(tmp_path, filter="data")
    pointer = json.loads((tmp_path / "store" / "latest-backup.json").read_text())
    link = pointer["meta"]["chain"][-1]
    assert len(link["volumes"]) == 3 and "store_id" not in link
    data = b"".join((tmp_path / "store" / "backups" / v["name"]).read_bytes() for v in link["volumes"])
    plain = ind.decode(b"fixture password", ind.first_form_aad(link["id"]), data)
    members = _tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(io.BytesIO(plain)), mode="r|")
    assert [m.name for m in members][-1] == ".ocb/index.jsonl"
    with pytest.raises(ind.Refused):
        ind.decode(b"fixture password", ind.first_form_aad(pointer["meta"]["chain"][0]["id"]), data)


def test_ocb_seals_the_second_form_the_independent_decoder_opens() -> None:
    chain = ["openclaw-backup-20260101-000000", "openclaw-backup-20260102-000000", "openclaw-backup-20260103-000000"]
    store_id = "ab" * 16
    for position in range(3):
        assert seal.chain_associated_data(store_id, chain, position) == ind.archive_aad(store_id, chain, position)
    links = [{"id": i, "store_id": store_id} for i in chain]
    assert seal.link_associated_data(links, 2) == ind.archive_aad(store_id, chain, 2)
    assert seal.link_associated_data([{"id": chain[0]}], 0) == ind.first_form_aad(chain[0])
    key = seal.derive_password_key(PASSWORD, seal.Argon2Params(memory_kib=1024))
    plaintext = bytes(range(256)) * 20
    data = sealed(plaintext, associated=seal.chain_associated_data(store_id, chain, 2), key=key, segment_size=1000)
    assert data[10] == seal.KDF_ARGON2ID
    assert ind.decode(PASSWORD, ind.archive_aad(store_id, chain, 2), data) == plaintext
    for wrong in (ind.archive_aad(store_id, chain, 1), ind.archive_aad("cd" * 16, chain, 2),
                  ind.archive_aad(store_id, [chain[0], chain[0] + "-2", chain[2]], 2)):
        with pytest.raises(ind.Refused):
            ind.decode(PASSWORD, wrong, data)


# Argon2id parameters

@pytest.mark.parametrize(("memory", "iterations", "lanes"),
                         [(31, 1, 4), (seal.MAX_ARGON2_MEMORY_KIB + 1, 1, 1), (1024, 0, 1), (1024, 17, 1),
                          (1024, 1, 0), (1024, 1, 17)])
def test_hostile_argon2_parameters_are_refused_before_any_derivation(memory: int, iterations: int, lanes: int) -> None:
    data = bytearray(sealed(b"x"))
    data[10] = seal.KDF_ARGON2ID
    data[11:16] = memory.to_bytes(3, "big") + bytes([iterations, lanes])
    keyring = seal.KeyRing(PASSWORD)
    with pytest.raises(SealBroken, match="unsupported parameters"):
        open_stream(io.BytesIO(bytes(data)), io.BytesIO(), keyring, associated=ASSOCIATED)
    assert keyring.derivations == 0


def test_an_unknown_kdf_id_is_refused() -> None:
    data = bytearray(sealed(b"x"))
    data[10] = 3
    with pytest.raises(SealBroken, match="kdf id 3"):
        opened(bytes(data))


def test_the_default_kdf_is_argon2id_within_the_memory_goal() -> None:
    assert seal.DEFAULT_KDF == seal.Argon2Params(64 * 1024, 3, 4)
    assert seal.DEFAULT_KDF.memory_kib * 1024 < 100 * 10**6
    assert seal.chosen_kdf("scrypt", 10, 0) == seal.KdfParams(log_n=10)
    assert seal.chosen_kdf("argon2id", 17, 2 * 1024**2) == seal.Argon2Params(memory_kib=2048)


@pytest.mark.parametrize("value", [None, [], {"name": "argon2id"}, {"name": "bcrypt", "cost": 1},
                                   {"name": "scrypt", "log_n": 30, "r": 8, "p": 1},
                                   {"name": "scrypt", "log_n": True, "r": 8, "p": 1},
                                   {"name": "argon2id", "memory_kib": 2**30, "iterations": 1, "lanes": 1}])
def test_kdf_from_dict_refuses_what_it_cannot_bound(value: object) -> None:
    with pytest.raises(ValueError):
        seal.kdf_from_dict(value)


def test_kdf_round_trips_through_its_dict() -> None:
    for kdf in (seal.KdfParams(10, 8, 1), seal.Argon2Params(2048, 2, 1)):
        assert seal.kdf_from_dict(kdf.as_dict()) == kdf


def test_the_salt_file_is_0600_in_a_0700_folder(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o755)
    (cache_dir / "seal").mkdir(mode=0o755)
    first = seal.cached_password_key(str(cache_dir), PASSWORD, CHEAP_KDF)
    assert (cache_dir / "seal").stat().st_mode & 0o777 == 0o700
    assert (cache_dir / "seal" / "kdf.json").stat().st_mode & 0o777 == 0o600
    again = seal.cached_password_key(str(cache_dir), PASSWORD, CHEAP_KDF)
    assert again.kdf_salt == first.kdf_salt and again._key == first._key


# Record MACs

def signed_meta(key: seal.PasswordKey = KEY) -> dict:
    return snapshot.sign(snapshot.with_digest({"ocb": 1, "id": "openclaw-backup-20260101-000000", "file_count": 3,
                                               "store_id": "ab" * 16}), "meta", key)


def test_a_signed_record_verifies_with_only_the_password() -> None:
    meta = signed_meta()
    assert meta["record_mac"]["kdf"] == CHEAP_KDF.as_dict()
    snapshot.parse_record(snapshot.encode_record(meta), "meta")  # its digest covers the MAC
    keyring = seal.KeyRing(PASSWORD)
    snapshot.check_mac(meta, "meta", keyring, "the meta")
    assert keyring.derivations == 1


@pytest.mark.parametrize("change", [
    lambda r: r.update(file_count=4),
    lambda r: r["record_mac"].update(kdf_salt="00" * 16),
    lambda r: r["record_mac"].update(tag="00" * 32),
    lambda r: r.update(extra=True),
    lambda r: r.pop("store_id"),
])
def test_any_change_to_a_signed_record_fails_its_mac(change) -> None:
    meta = json.loads(json.dumps(signed_meta()))
    change(meta)
    with pytest.raises(NotAuthenticated, match="the meta"):
        snapshot.check_mac(snapshot.with_digest(meta), "meta", seal.KeyRing(PASSWORD), "the meta")


def test_a_record_mac_is_bound_to_its_kind_and_password() -> None:
    meta = signed_meta()
    with pytest.raises(NotAuthenticated, match="fails its MAC"):
        snapshot.check_mac(meta, "pointer", seal.KeyRing(PASSWORD), "the pointer")
    with pytest.raises(NotAuthenticated, match="wrong password"):
        snapshot.check_mac(meta, "meta", seal.KeyRing(b"other"), "the meta")
    del meta["record_mac"]
    with pytest.raises(NotAuthenticated, match="carries no MAC"):
        snapshot.check_mac(meta, "meta", seal.KeyRing(PASSWORD), "the meta")


def test_the_record_mac_is_the_documented_hmac() -> None:
    """docs/format.md, Records of a sealed store: computed here from the text."""
    meta = signed_meta()
    mac_key = seal.HKDF(algorithm=seal.hashes.SHA256(), length=32, salt=None,
                        info=b"ocb record mac v1").derive(KEY._key)
    body = {k: v for k, v in meta.items() if k not in ("record_sha256", "record_mac")}
    body["record_mac"] = {k: v for k, v in meta["record_mac"].items() if k != "tag"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    tag = hmac.digest(mac_key, b"ocb record v1\x00meta\x00" + canonical, hashlib.sha256)
    assert meta["record_mac"]["tag"] == tag.hex()


# For ocb-check and ocb-doctor

def test_seal_status_names_the_unsealed_snapshots_of_a_sealed_store() -> None:
    entries = [{"id": "openclaw-backup-20260101-000000", "sealed": True},
               {"id": "openclaw-backup-20260102-000000", "sealed": False},
               {"id": "openclaw-backup-20260103-000000", "from_listing": True}]
    status = catalog.seal_status({"snapshots": entries, "record_mac": {}})
    assert status == catalog.SealStatus(True, ("openclaw-backup-20260102-000000",),
                                         ("openclaw-backup-20260103-000000",), True)
    assert not catalog.seal_status({"snapshots": entries[1:2]}).sealed
    assert catalog.seal_status(None, {"meta": {"sealed": True}}).sealed


def test_the_rollback_record_keeps_the_highest_publish(tmp_path: Path) -> None:
    where = str(tmp_path / "cache")
    cache.record_seen(where, "file:///s", "ab" * 16, 5, "b")
    cache.record_seen(where, "file:///s", "ab" * 16, 3, "a")
    assert cache.seen(where, "file:///s") == {"store_id": "ab" * 16, "seq": 5, "snapshot": "b"}
    assert (tmp_path / "cache" / cache.SEEN).stat().st_mode & 0o777 == 0o600
    cache.record_seen(where, "file:///s", "cd" * 16, 1, "c")  # the store made again: what is seen now
    assert cache.seen(where, "file:///s")["seq"] == 1
    assert cache.seen(where, "file:///other") is None
