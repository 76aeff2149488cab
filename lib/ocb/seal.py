"""Streaming authenticated encryption of archives (the ocb-seal format, docs/format.md).

Owns: the sealed byte layout (header, segments), the key schedule (password -> scrypt ->
HKDF-SHA256 per archive), sealing and opening streams segment by segment, and telling a wrong
password apart from damaged data. Segments follow the STREAM construction used by Tink and age:
AES-256-GCM under a nonce made of a random prefix, the segment counter and a last-segment flag,
so altered, truncated, reordered or extended data fails authentication.

Must not: read the environment or a password file, print, parse flags, or buffer more than a
few segments of a stream. Callers hand in the password bytes and the archive identity
(`associated`), and add the volume name to the messages of the errors raised here.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import struct
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import SealBroken, UsageError, WrongPassword
from .fsutil import write_bytes
from .log import log

MAGIC = b"OCBSEAL\0"
FORMAT_VERSION = 1
AEAD_AES_256_GCM = 1
KDF_SCRYPT = 1

KEY_SIZE = 32
TAG_SIZE = 16
KDF_SALT_SIZE = 16
# 256 random bits make every archive key distinct even for millions of archives under one
# password key, which is what keeps (key, nonce) pairs from ever repeating.
ARCHIVE_SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
KEY_CHECK_SIZE = 32

# Chosen with bench/seal_throughput.py: opening reads the sealed file one segment per read(),
# and at 64 KiB that call plus per-segment Python work hold opening to ~0.36 of raw AES-GCM
# speed (256 KiB: ~0.49, on the edge); 1 MiB (Tink's largest template) reaches ~0.57 for
# opening and ~0.77 for sealing. Memory cost: a reader or writer buffers about two segments.
DEFAULT_SEGMENT_SIZE = 1024 * 1024
MAX_SEGMENT_SIZE = 16 * 1024 * 1024
# The counter field is 32 bits; one more segment would repeat a nonce.
MAX_SEGMENTS = 2**32

# Bounds checked before any derivation, so a hostile header cannot make us allocate or spin.
MAX_LOG_N = 22
MAX_R = 32
MAX_P = 16
MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024

HKDF_INFO = b"ocb seal v1\0"

# magic, version, aead id, kdf id, log2 N, r, p, segment size, kdf salt, archive salt,
# nonce prefix; the key check follows.
_HEADER_BODY = struct.Struct(">8sBBBBHHI16s32s7s")
HEADER_SIZE = _HEADER_BODY.size + KEY_CHECK_SIZE
# nonce prefix, segment counter, last-segment flag (a bool packs as 0 or 1)
_NONCE = struct.Struct(">7sI?")


class ByteSource(Protocol):
    """What is read from: any binary file object (open file, pipe, BytesIO) qualifies."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class ByteSink(Protocol):
    """What is written to: any binary file object qualifies."""

    def write(self, data: memoryview, /) -> int | None: ...


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost parameters: N = 2**log_n, block size r, parallelism p."""

    log_n: int = 17
    r: int = 8
    p: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"name": "scrypt", "log_n": self.log_n, "r": self.r, "p": self.p}

    def problem(self) -> str | None:
        """Why these parameters are refused, or None when they are within bounds."""
        if not 1 <= self.log_n <= MAX_LOG_N:
            return f"scrypt log_n {self.log_n} is outside 1..{MAX_LOG_N}"
        if not 1 <= self.r <= MAX_R:
            return f"scrypt r {self.r} is outside 1..{MAX_R}"
        if not 1 <= self.p <= MAX_P:
            return f"scrypt p {self.p} is outside 1..{MAX_P}"
        if 128 * self.r * 2**self.log_n > MAX_SCRYPT_MEMORY:
            return f"scrypt log_n {self.log_n} with r {self.r} needs more than 1 GiB"
        return None


DEFAULT_KDF = KdfParams()


class PasswordKey:
    """The scrypt output for one password, KDF parameters and KDF salt.

    Derived once per run and reused for every archive sealed in it; each archive then gets its
    own key by HKDF. The key bytes stay out of repr so a traceback or log never shows them.
    """

    __slots__ = ("_key", "kdf", "kdf_salt")

    def __init__(self, key: bytes, kdf: KdfParams, kdf_salt: bytes) -> None:
        self._key = key
        self.kdf = kdf
        self.kdf_salt = kdf_salt

    def __repr__(self) -> str:
        return f"PasswordKey(kdf={self.kdf!r}, kdf_salt={self.kdf_salt.hex()!r})"


def derive_password_key(
    password: bytes, kdf: KdfParams = DEFAULT_KDF, kdf_salt: bytes | None = None
) -> PasswordKey:
    """Run scrypt (the slow, memory-hard step); a random KDF salt is drawn when none is given."""
    if not password:
        raise UsageError("the encryption password is empty")
    refused = kdf.problem()
    if refused:
        raise UsageError(f"unsupported KDF parameters: {refused}")
    if kdf_salt is None:
        kdf_salt = os.urandom(KDF_SALT_SIZE)
    if len(kdf_salt) != KDF_SALT_SIZE:
        raise ValueError(f"kdf_salt must be {KDF_SALT_SIZE} bytes")
    scrypt = Scrypt(salt=kdf_salt, length=KEY_SIZE, n=2**kdf.log_n, r=kdf.r, p=kdf.p)
    return PasswordKey(scrypt.derive(password), kdf, kdf_salt)


class KeyRing:
    """Opens archives with one password, deriving scrypt once per (parameters, salt).

    A run seals all its archives with one PasswordKey, so a restore of a whole chain usually
    derives once per snapshot instead of once per volume. `derivations` counts scrypt runs.
    """

    __slots__ = ("_password", "_keys", "derivations")

    def __init__(self, password: bytes) -> None:
        self._password = password
        self._keys: dict[tuple[KdfParams, bytes], PasswordKey] = {}
        self.derivations = 0

    def __repr__(self) -> str:
        return f"KeyRing(cached_keys={len(self._keys)}, derivations={self.derivations})"

    def password_key(self, kdf: KdfParams, kdf_salt: bytes) -> PasswordKey:
        cached = self._keys.get((kdf, kdf_salt))
        if cached is not None:
            return cached
        key = derive_password_key(self._password, kdf, kdf_salt)
        self.derivations += 1
        self._keys[(kdf, kdf_salt)] = key
        return key


@dataclass(frozen=True)
class SealInfo:
    """What a sealing pass did; `header` is JSON-able and holds no secret."""

    plaintext_bytes: int
    sealed_bytes: int
    segments: int
    header: dict[str, Any]


@dataclass(frozen=True)
class _Header:
    kdf: KdfParams
    kdf_salt: bytes
    archive_salt: bytes
    nonce_prefix: bytes
    segment_size: int

    def body(self) -> bytes:
        """The header without its key check: the bytes the key check and HKDF info cover."""
        return _HEADER_BODY.pack(
            MAGIC,
            FORMAT_VERSION,
            AEAD_AES_256_GCM,
            KDF_SCRYPT,
            self.kdf.log_n,
            self.kdf.r,
            self.kdf.p,
            self.segment_size,
            self.kdf_salt,
            self.archive_salt,
            self.nonce_prefix,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "format": "ocb-seal",
            "version": FORMAT_VERSION,
            "aead": "AES-256-GCM",
            "kdf": self.kdf.as_dict(),
            "segment_size": self.segment_size,
        }


def _parse_header(raw: bytes) -> tuple[_Header, bytes, bytes]:
    """Split raw header bytes into fields, body and key check; refuse what we cannot open."""
    if not raw:
        raise SealBroken("sealed data is empty")
    if not raw.startswith(MAGIC[: len(raw)]):
        raise SealBroken("not an ocb sealed stream (no OCBSEAL header)")
    if len(raw) < HEADER_SIZE:
        raise SealBroken("sealed data is truncated inside its header")
    body, key_check = raw[: _HEADER_BODY.size], raw[_HEADER_BODY.size :]
    (_, version, aead_id, kdf_id, log_n, r, p, segment_size, kdf_salt, archive_salt,
     nonce_prefix) = _HEADER_BODY.unpack(body)  # fmt: skip
    if version != FORMAT_VERSION:
        raise SealBroken(f"unsupported seal format version {version} (this ocb reads 1)")
    if aead_id != AEAD_AES_256_GCM or kdf_id != KDF_SCRYPT:
        raise SealBroken(f"unsupported parameters: aead id {aead_id}, kdf id {kdf_id}")
    kdf = KdfParams(log_n, r, p)
    refused = kdf.problem() or _segment_size_problem(segment_size)
    if refused:
        raise SealBroken(f"unsupported parameters: {refused}")
    return _Header(kdf, kdf_salt, archive_salt, nonce_prefix, segment_size), body, key_check


def _segment_size_problem(segment_size: int) -> str | None:
    if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
        return f"segment size {segment_size} is outside 1..{MAX_SEGMENT_SIZE}"
    return None


def _archive_keys(password_key: PasswordKey, header: _Header, body: bytes) -> tuple[AESGCM, bytes]:
    """Per-archive AEAD and key-check keys: HKDF over the password key, bound to the header.

    The header body is part of the HKDF info, so any change to it yields unrelated keys.
    """
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=2 * KEY_SIZE,
        salt=header.archive_salt,
        info=HKDF_INFO + body,
    ).derive(password_key._key)
    return AESGCM(okm[:KEY_SIZE]), okm[KEY_SIZE:]


def _key_check(check_key: bytes, body: bytes) -> bytes:
    return hmac.digest(check_key, body, hashlib.sha256)


def _fill(src: ByteSource, view: memoryview) -> int:
    """Read into `view` until it is full or src ends (pipes return short reads)."""
    filled = 0
    while filled < len(view):
        got = src.readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled


def _write_all(dst: ByteSink, data: memoryview) -> None:
    # Raw streams may write less than asked. Buffered ones write all; a sink that returns None
    # (as many hand-written ones do) is taken to have written all too.
    while data:
        written = dst.write(data)
        if written is None or written >= len(data):
            return
        data = data[written:]


class SealedWriter:
    """Seals what is written to it into `dst`, one segment at a time.

    Writes the header at once. `close()` writes the final segment and returns SealInfo; it does
    not close `dst`. Leaving a `with` block by an exception abandons the stream without a final
    segment, so the partial output can never pass for a complete one (and this class has no
    finalizer, for the same reason).
    """

    def __init__(
        self,
        dst: ByteSink,
        key: PasswordKey,
        associated: bytes,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        archive_salt: bytes | None = None,
        nonce_prefix: bytes | None = None,
    ) -> None:
        refused = _segment_size_problem(segment_size)
        if refused:
            raise UsageError(f"unsupported segment size: {refused}")
        if archive_salt is None:
            archive_salt = os.urandom(ARCHIVE_SALT_SIZE)
        if nonce_prefix is None:
            nonce_prefix = os.urandom(NONCE_PREFIX_SIZE)
        if len(archive_salt) != ARCHIVE_SALT_SIZE or len(nonce_prefix) != NONCE_PREFIX_SIZE:
            raise ValueError(
                f"archive_salt must be {ARCHIVE_SALT_SIZE} bytes, "
                f"nonce_prefix {NONCE_PREFIX_SIZE} bytes"
            )
        self._header = _Header(key.kdf, key.kdf_salt, archive_salt, nonce_prefix, segment_size)
        body = self._header.body()
        self._aead, check_key = _archive_keys(key, self._header, body)
        self._dst = dst
        self._associated = associated
        self._segment_size = segment_size
        # Holds up to one segment of plaintext until we know whether more follows: only then
        # can it be sealed as a middle segment rather than the final one.
        self._pending = bytearray()
        self._sealed = bytearray(segment_size + TAG_SIZE)
        self._sealed_view = memoryview(self._sealed)
        self._segments = 0
        self._plaintext_bytes = 0
        self._info: SealInfo | None = None
        _write_all(dst, memoryview(body + _key_check(check_key, body)))
        self._sealed_bytes = HEADER_SIZE

    @property
    def closed(self) -> bool:
        return self._info is not None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._info is not None:
            raise ValueError("write to a closed SealedWriter")
        view = memoryview(data).cast("B")
        size = len(view)
        if self._pending:
            room = self._segment_size - len(self._pending)
            self._pending += view[:room]
            view = view[room:]
            if not view:
                return size
            with memoryview(self._pending) as pending:
                self._seal_segment(pending, final=False)
            self._pending.clear()
        # Strictly greater: a segment that ends exactly at the end of `data` may be the last.
        while len(view) > self._segment_size:
            self._seal_segment(view[: self._segment_size], final=False)
            view = view[self._segment_size :]
        self._pending += view
        return size

    def close(self) -> SealInfo:
        """Seal the final segment (empty only when nothing was written); idempotent."""
        if self._info is None:
            with memoryview(self._pending) as pending:
                self._seal_segment(pending, final=True)
            self._pending.clear()
            self._info = SealInfo(
                self._plaintext_bytes, self._sealed_bytes, self._segments, self._header.describe()
            )
        return self._info

    def __enter__(self) -> SealedWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()

    def _seal_segment(self, plaintext: memoryview, final: bool) -> None:
        if self._segments >= MAX_SEGMENTS:
            raise ValueError("a sealed stream holds at most 2**32 segments")
        sealed = self._sealed_view[: len(plaintext) + TAG_SIZE]
        nonce = _NONCE.pack(self._header.nonce_prefix, self._segments, final)
        self._aead.encrypt_into(nonce, plaintext, self._associated, sealed)
        _write_all(self._dst, sealed)
        self._segments += 1
        self._plaintext_bytes += len(plaintext)
        self._sealed_bytes += len(sealed)


class SealedReader(io.BufferedIOBase):
    """A read-only binary stream of the plaintext inside a sealed stream.

    Reads and checks the header on construction (WrongPassword, SealBroken). Each segment is
    verified before any of its bytes are returned; one sealed and one plain segment are
    buffered. Once an error is raised, every later read raises it again. EOF is reported only
    after the final segment verified and nothing followed it. Does not close `src`.
    """

    def __init__(self, src: ByteSource, keyring: KeyRing, associated: bytes) -> None:
        super().__init__()
        self._src = src
        self._associated = associated
        raw_header = bytearray(HEADER_SIZE)
        got = _fill(src, memoryview(raw_header))
        header, body, key_check = _parse_header(bytes(raw_header[:got]))
        password_key = keyring.password_key(header.kdf, header.kdf_salt)
        self._aead, check_key = _archive_keys(password_key, header, body)
        if not hmac.compare_digest(_key_check(check_key, body), key_check):
            raise WrongPassword("wrong password (or the sealed header is damaged)")
        self._header = header
        sealed_size = header.segment_size + TAG_SIZE
        # One byte beyond a full segment tells whether another segment follows it.
        self._sealed = bytearray(sealed_size + 1)
        self._sealed_view = memoryview(self._sealed)
        self._plain = bytearray(header.segment_size)
        self._plain_view = memoryview(self._plain)
        self._lookahead = 0
        self._available = self._plain_view[:0]
        self._segments = 0
        self._plaintext_bytes = 0
        self._sealed_bytes = HEADER_SIZE
        self._finished = False
        self._failure: SealBroken | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Return `size` bytes, fewer only at the end; all the rest when size is None or < 0."""
        parts = []
        if size is None or size < 0:
            while view := self._take(self._header.segment_size):
                parts.append(bytes(view))
        else:
            while size > 0 and (view := self._take(size)):
                parts.append(bytes(view))
                size -= len(view)
        return b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        return bytes(self._take(size if size >= 0 else self._header.segment_size))

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(target):
            view = self._take(len(target) - filled)
            if not view:
                break
            target[filled : filled + len(view)] = view
            filled += len(view)
        return filled

    def info(self) -> SealInfo:
        """Counters so far; complete once a read has returned the end of the stream."""
        return SealInfo(
            self._plaintext_bytes, self._sealed_bytes, self._segments, self._header.describe()
        )

    def _take(self, limit: int) -> memoryview:
        """Up to `limit` verified plaintext bytes, opening the next segment when needed."""
        if self.closed:
            raise ValueError("read from a closed SealedReader")
        if not self._available:
            self._available = self._next_segment()
        view = self._available[:limit]
        self._available = self._available[len(view) :]
        return view

    def _next_segment(self) -> memoryview:
        """The next verified plaintext segment (in a reused buffer); empty at the end."""
        if self._failure is not None:
            raise self._failure
        if self._finished:
            return self._plain_view[:0]
        try:
            return self._open_segment()
        except SealBroken as failure:
            self._failure = failure
            raise

    def _open_segment(self) -> memoryview:
        sealed_size = self._header.segment_size + TAG_SIZE
        have = self._lookahead + _fill(self._src, self._sealed_view[self._lookahead :])
        index = self._segments
        if have == 0:
            raise SealBroken("sealed data is truncated: nothing follows the header")
        if have < TAG_SIZE:
            raise SealBroken(f"sealed data is truncated inside segment {index}")
        if index >= MAX_SEGMENTS:
            raise SealBroken("sealed data has more segments than the format allows")
        # A full segment with more bytes behind it is a middle segment; anything else is
        # read as the final one, so a cut at a segment boundary fails the final-flag check.
        final = have <= sealed_size
        sealed = self._sealed_view[: min(have, sealed_size)]
        plain = self._plain_view[: len(sealed) - TAG_SIZE]
        nonce = _NONCE.pack(self._header.nonce_prefix, index, final)
        try:
            self._aead.decrypt_into(nonce, sealed, self._associated, plain)
        except InvalidTag:
            raise SealBroken(self._diagnose(index, sealed, final)) from None
        if final:
            self._finished = True
        else:
            self._sealed[0] = self._sealed[sealed_size]
            self._lookahead = 1
        self._segments = index + 1
        self._plaintext_bytes += len(plain)
        self._sealed_bytes += len(sealed)
        return plain

    def _diagnose(self, index: int, sealed: memoryview, final: bool) -> str:
        """Name the likely cause: a full segment that verifies under the other flag shows
        the stream was cut after it, or extended past its final segment."""
        if len(sealed) == self._header.segment_size + TAG_SIZE:
            scratch = bytearray(len(sealed) - TAG_SIZE)
            nonce = _NONCE.pack(self._header.nonce_prefix, index, not final)
            try:
                self._aead.decrypt_into(nonce, sealed, self._associated, scratch)
            except InvalidTag:
                pass
            else:
                if final:
                    return f"sealed data is truncated: it ends after segment {index}"
                return f"sealed data has bytes after its final segment {index}"
        return (
            f"segment {index} of the sealed data failed authentication: it was altered, "
            "truncated or reordered, or belongs to another archive"
        )


def seal_stream(
    src: ByteSource,
    dst: ByteSink,
    key: PasswordKey,
    *,
    associated: bytes,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    archive_salt: bytes | None = None,
    nonce_prefix: bytes | None = None,
) -> SealInfo:
    """Seal all of `src` into `dst`; `associated` names the archive (e.g. snapshot id + role).

    `archive_salt` and `nonce_prefix` are random unless given (only known-answer tests should).
    """
    writer = SealedWriter(
        dst,
        key,
        associated,
        segment_size=segment_size,
        archive_salt=archive_salt,
        nonce_prefix=nonce_prefix,
    )
    # Read one segment plus one byte: the extra byte shows that the segment is not the last,
    # and the segment is sealed straight from this buffer, with no copy through the writer.
    buffer = memoryview(bytearray(segment_size + 1))
    have = _fill(src, buffer)
    while have > segment_size:
        writer._seal_segment(buffer[:segment_size], final=False)
        buffer[0] = buffer[segment_size]
        have = 1 + _fill(src, buffer[1:])
    writer.write(buffer[:have])
    return writer.close()


KDF_SALT_FILE = "seal-kdf.json"


def cached_password_key(cache_dir: str, password: bytes, kdf: KdfParams) -> PasswordKey:
    """Derive the password key, reusing this machine's KDF salt (not a secret) recorded in
    the cache, so that a restore of a chain sealed here derives scrypt once, not once per
    snapshot. A salt that cannot be recorded only costs a later restore some scrypt runs."""
    salt_file = os.path.join(cache_dir, KDF_SALT_FILE)
    try:
        with open(salt_file, encoding="utf-8") as handle:
            recorded = json.load(handle)
        if recorded.get("kdf") == kdf.as_dict():
            return derive_password_key(password, kdf, bytes.fromhex(recorded["salt"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    key = derive_password_key(password, kdf)
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        write_bytes(salt_file, json.dumps({"kdf": kdf.as_dict(), "salt": key.kdf_salt.hex()}).encode("utf-8"))
    except OSError as exc:
        log.warning(f"cannot record the KDF salt in {cache_dir}: {exc.strerror or exc}")
    return key


def snapshot_associated_data(snapshot_id: str) -> bytes:
    """What binds a sealed archive to its snapshot: another snapshot's archive (or a volume of
    it) put in its place fails authentication. Sealing and opening must build the same bytes."""
    return f"ocb archive {snapshot_id}".encode("utf-8")
