"""Streaming authenticated encryption of archives (the ocb-seal format, docs/format.md).

Owns: the sealed byte layout (header, segments), the key schedule (password -> Argon2id or
scrypt -> HKDF-SHA256 per archive), sealing and opening streams segment by segment, telling a
wrong password apart from damaged data, the associated data that binds an archive to its
store, snapshot and place in a chain, and the record MAC key and tag (the pointer, metas and
catalog of a sealed store; snapshot.py applies them to records). Segments follow the STREAM construction used by Tink and age:
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
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from . import keycache
from .errors import SealBroken, UsageError, WrongPassword
from .fsutil import write_bytes
from .log import log

MAGIC = b"OCBSEAL\0"
FORMAT_VERSION = 1
AEAD_AES_256_GCM = 1
KDF_SCRYPT = 1
KDF_ARGON2ID = 2

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
MAX_ARGON2_MEMORY_KIB = 1024 * 1024  # 1 GiB
MAX_ARGON2_ITERATIONS = 16
MAX_ARGON2_LANES = 16

HKDF_INFO = b"ocb seal v1\0"

# magic, version, aead id, kdf id, kdf parameters (5 bytes, by kdf id), segment size, kdf
# salt, archive salt, nonce prefix; the key check follows.
_HEADER_BODY = struct.Struct(">8sBBB5sI16s32s7s")
_SCRYPT_PARAMS = struct.Struct(">BHH")  # log2 N, r, p
_ARGON2_PARAMS = struct.Struct(">3sBB")  # memory in KiB (24 bits), iterations, lanes
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
    """scrypt cost parameters: N = 2**log_n, block size r, parallelism p (kdf id 1).

    Opened forever (archives sealed before Argon2id became the default use it); sealed with
    only when chosen (OCB_KDF=scrypt, or OCB_SCRYPT_LOG_N set, as the tests' cheap KDF)."""

    log_n: int = 17
    r: int = 8
    p: int = 1

    kdf_id = KDF_SCRYPT

    def as_dict(self) -> dict[str, Any]:
        return {"name": "scrypt", "log_n": self.log_n, "r": self.r, "p": self.p}

    def pack(self) -> bytes:
        return _SCRYPT_PARAMS.pack(self.log_n, self.r, self.p)

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

    def derive(self, password: bytes, salt: bytes) -> bytes:
        return Scrypt(salt=salt, length=KEY_SIZE, n=2**self.log_n, r=self.r, p=self.p).derive(password)


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost parameters (kdf id 2): memory in KiB, iterations (t), lanes (p).

    The default is RFC 9106's second recommended option (section 4: t=3, p=4, m=64 MiB), for
    machines that cannot spend gigabytes; it is above OWASP's Argon2id minimums (m=19 MiB,
    t=2) and inside ocb's 100 MB memory goal (~84 MB peak RSS for a whole ocb process,
    ~1 s here)."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4

    kdf_id = KDF_ARGON2ID

    def as_dict(self) -> dict[str, Any]:
        return {"name": "argon2id", "memory_kib": self.memory_kib, "iterations": self.iterations,
                "lanes": self.lanes}

    def pack(self) -> bytes:
        return _ARGON2_PARAMS.pack(self.memory_kib.to_bytes(3, "big"), self.iterations, self.lanes)

    def problem(self) -> str | None:
        if not 1 <= self.lanes <= MAX_ARGON2_LANES:
            return f"argon2id lanes {self.lanes} is outside 1..{MAX_ARGON2_LANES}"
        if not 1 <= self.iterations <= MAX_ARGON2_ITERATIONS:
            return f"argon2id iterations {self.iterations} is outside 1..{MAX_ARGON2_ITERATIONS}"
        if not 8 * self.lanes <= self.memory_kib <= MAX_ARGON2_MEMORY_KIB:
            return (f"argon2id memory {self.memory_kib} KiB is outside {8 * self.lanes}..{MAX_ARGON2_MEMORY_KIB} "
                    "(8 KiB per lane up to 1 GiB)")
        return None

    def derive(self, password: bytes, salt: bytes) -> bytes:
        return Argon2id(salt=salt, length=KEY_SIZE, iterations=self.iterations, lanes=self.lanes,
                        memory_cost=self.memory_kib).derive(password)


Kdf = KdfParams | Argon2Params
DEFAULT_KDF: Kdf = Argon2Params()


def kdf_from_header(kdf_id: int, packed: bytes) -> Kdf:
    """The KDF of a header's id and 5 parameter bytes; SealBroken for an unknown id."""
    if kdf_id == KDF_SCRYPT:
        return KdfParams(*_SCRYPT_PARAMS.unpack(packed))
    if kdf_id == KDF_ARGON2ID:
        memory, iterations, lanes = _ARGON2_PARAMS.unpack(packed)
        return Argon2Params(int.from_bytes(memory, "big"), iterations, lanes)
    raise SealBroken(f"unsupported parameters: kdf id {kdf_id}")


def kdf_from_dict(value: Any) -> Kdf:
    """The KDF a record names (`as_dict` form); ValueError when it is not one, or out of bounds."""
    if not isinstance(value, dict):
        raise ValueError("the KDF is not an object")
    numbers = {k: v for k, v in value.items() if k != "name"}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers.values()):
        raise ValueError("the KDF parameters are not integers")
    kdf: Kdf
    try:
        if value.get("name") == "scrypt" and set(numbers) == {"log_n", "r", "p"}:
            kdf = KdfParams(**numbers)
        elif value.get("name") == "argon2id" and set(numbers) == {"memory_kib", "iterations", "lanes"}:
            kdf = Argon2Params(**numbers)
        else:
            raise ValueError(f"unknown KDF {value.get('name')!r} or parameters {sorted(numbers)}")
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    refused = kdf.problem()
    if refused:
        raise ValueError(refused)
    return kdf


class PasswordKey:
    """The KDF output for one password, KDF parameters and KDF salt.

    Derived once per run (or taken from the key cache, keycache.py) and reused for every archive
    sealed in it; each archive then gets its own key by HKDF. The key bytes stay out of repr so
    a traceback or log never shows them.
    """

    __slots__ = ("_key", "kdf", "kdf_salt")

    def __init__(self, key: bytes, kdf: Kdf, kdf_salt: bytes) -> None:
        self._key = key
        self.kdf = kdf
        self.kdf_salt = kdf_salt

    def __repr__(self) -> str:
        return f"PasswordKey(kdf={self.kdf!r}, kdf_salt={self.kdf_salt.hex()!r})"


def derive_password_key(
    password: bytes, kdf: Kdf = DEFAULT_KDF, kdf_salt: bytes | None = None,
    key_cache: keycache.KeyCache | None = None,
) -> PasswordKey:
    """Run the KDF (the slow, memory-hard step), or take its output from `key_cache` when an
    earlier run on this machine left it there; a random KDF salt is drawn when none is given.

    `password` is the bytes as given (config.seal_password: UTF-8, no normalisation)."""
    return _password_key(password, kdf, kdf_salt, key_cache)[0]


def _password_key(password: bytes, kdf: Kdf, kdf_salt: bytes | None,
                  key_cache: keycache.KeyCache | None) -> tuple[PasswordKey, bool]:
    """(key, whether the KDF ran) for derive_password_key."""
    if not password:
        raise UsageError("the encryption password is empty")
    refused = kdf.problem()
    if refused:
        raise UsageError(f"unsupported KDF parameters: {refused}")
    if kdf_salt is None:
        kdf_salt = os.urandom(KDF_SALT_SIZE)
    if len(kdf_salt) != KDF_SALT_SIZE:
        raise ValueError(f"kdf_salt must be {KDF_SALT_SIZE} bytes")
    salt = kdf_salt
    key, derived = keycache.cached(key_cache, password, kdf.as_dict(), salt, lambda: kdf.derive(password, salt))
    return PasswordKey(key, kdf, kdf_salt), derived


class KeyRing:
    """Opens archives (and checks record MACs) with one password, deriving once per
    (parameters, salt), and not at all for a key in `key_cache` (keycache.py).

    A run seals all its archives with one PasswordKey, so a restore of a whole chain usually
    derives once per snapshot instead of once per volume. `derivations` counts KDF runs.
    """

    __slots__ = ("_password", "_keys", "_key_cache", "derivations")

    def __init__(self, password: bytes, key_cache: keycache.KeyCache | None = None) -> None:
        self._password = password
        self._keys: dict[tuple[Kdf, bytes], PasswordKey] = {}
        self._key_cache = key_cache
        self.derivations = 0

    def __repr__(self) -> str:
        return f"KeyRing(cached_keys={len(self._keys)}, derivations={self.derivations})"

    def add(self, key: PasswordKey) -> None:
        """A key already derived (from this password) is used instead of deriving it again."""
        self._keys[(key.kdf, key.kdf_salt)] = key

    def password_key(self, kdf: Kdf, kdf_salt: bytes) -> PasswordKey:
        cached = self._keys.get((kdf, kdf_salt))
        if cached is not None:
            return cached
        key, derived = _password_key(self._password, kdf, kdf_salt, self._key_cache)
        self.derivations += derived
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
    kdf: Kdf
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
            self.kdf.kdf_id,
            self.kdf.pack(),
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
    (_, version, aead_id, kdf_id, packed, segment_size, kdf_salt, archive_salt,
     nonce_prefix) = _HEADER_BODY.unpack(body)  # fmt: skip
    if version != FORMAT_VERSION:
        raise SealBroken(f"unsupported seal format version {version} (this ocb reads 1)")
    if aead_id != AEAD_AES_256_GCM or kdf_id not in (KDF_SCRYPT, KDF_ARGON2ID):
        raise SealBroken(f"unsupported parameters: aead id {aead_id}, kdf id {kdf_id}")
    kdf = kdf_from_header(kdf_id, packed)
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


def chosen_kdf(name: str, scrypt_log_n: int, argon2_memory: int) -> Kdf:
    """The KDF new archives are sealed with (settings kdf, scrypt_log_n, argon2_memory bytes)."""
    if name == "scrypt":
        return KdfParams(log_n=scrypt_log_n)
    return Argon2Params(memory_kib=argon2_memory // 1024)


def machine_password_key(cache_dir: str, password: bytes, kdf_name: str, scrypt_log_n: int, argon2_memory: int,
                         key_cache: keycache.KeyCache | None) -> PasswordKey:
    """This machine's password key under the settings' KDF (cached_password_key): the one
    key that seals a backup's archive and signs its records."""
    return cached_password_key(cache_dir, password, chosen_kdf(kdf_name, scrypt_log_n, argon2_memory), key_cache)


KDF_SALT_DIR = "seal"  # under the cache dir, mode 0700
KDF_SALT_FILE = "kdf.json"  # mode 0600


def cached_password_key(cache_dir: str, password: bytes, kdf: Kdf,
                        key_cache: keycache.KeyCache | None = None) -> PasswordKey:
    """The password key new archives and records are sealed and signed with on this machine.

    Its KDF salt (not a secret: it is in every header) is recorded in the cache, so that a
    restore of a chain sealed here derives once, not once per snapshot; the salt is kept 0600
    in a 0700 folder (it tells which machine sealed what). With no salt recorded, the salt of
    a key in `key_cache` for this password and KDF is taken (a container that has just restored
    seals under the salt it opened, with no KDF run), else a new one is drawn. A salt that
    cannot be recorded only costs a later restore some KDF runs."""
    salt_dir = os.path.join(cache_dir, KDF_SALT_DIR)
    salt_file = os.path.join(salt_dir, KDF_SALT_FILE)
    try:
        with open(salt_file, encoding="utf-8") as handle:
            recorded = json.load(handle)
        if recorded.get("kdf") == kdf.as_dict():
            return derive_password_key(password, kdf, bytes.fromhex(recorded["salt"]), key_cache)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    found = key_cache.any(password, kdf.as_dict()) if key_cache is not None else None
    key = derive_password_key(password, kdf, found[0] if found else None, key_cache)
    try:
        os.makedirs(salt_dir, mode=0o700, exist_ok=True)
        os.chmod(salt_dir, 0o700)  # makedirs leaves an existing folder's mode, umask trims a new one's
        body = json.dumps({"kdf": kdf.as_dict(), "salt": key.kdf_salt.hex()}).encode("utf-8")
        write_bytes(salt_file, body)
        os.chmod(salt_file, 0o600)
    except OSError as exc:
        log.warning(f"cannot record the KDF salt in {salt_dir}: {exc.strerror or exc}")
    return key


def snapshot_associated_data(snapshot_id: str) -> bytes:
    """The first form of associated data ("ocb archive " + id), of archives whose chain link
    records no store_id (sealed before the associated data bound the store and the chain).
    Only ever opened with, never sealed with."""
    return f"ocb archive {snapshot_id}".encode("utf-8")


AAD_V2 = b"ocb archive v2\0"


def chain_associated_data(store_id: str, chain_ids: list[str], position: int) -> bytes:
    """What binds a sealed archive to its store, its snapshot and its place in its chain:

        "ocb archive v2" 0x00 store_id 0x00 snapshot id 0x00 position (decimal) 0x00
        full snapshot id 0x00 parent id ("" for a full snapshot)

    all UTF-8; `chain_ids` is the chain full first, `position` the archive's index in it."""
    if not 0 <= position < len(chain_ids):
        raise ValueError("position outside the chain")
    parent = chain_ids[position - 1] if position else ""
    fields = [store_id, chain_ids[position], str(position), chain_ids[0], parent]
    return AAD_V2 + b"\0".join(f.encode("utf-8") for f in fields)


def link_associated_data(chain: list[dict], position: int) -> bytes:
    """The associated data of the archive of chain[position] (links as snapshot.chain_link
    writes them): the second form when the link records its store_id, else the first."""
    link = chain[position]
    store_id = link.get("store_id")
    if store_id is None:
        return snapshot_associated_data(link["id"])
    return chain_associated_data(store_id, [entry["id"] for entry in chain[: position + 1]], position)


# -- record MACs: the pointer, metas and catalog of a sealed store ---------------------------------

RECORD_MAC_INFO = b"ocb record mac v1"
RECORD_MAC_PREFIX = b"ocb record v1\0"
RECORD_KINDS = ("pointer", "meta", "catalog")


def record_mac_key(password_key: PasswordKey) -> bytes:
    """The record MAC key: HKDF-SHA256(ikm = password key, salt = none, info = "ocb record mac v1")."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=RECORD_MAC_INFO).derive(password_key._key)


def record_tag(mac_key: bytes, kind: str, canonical: bytes) -> bytes:
    """HMAC-SHA256(mac key, "ocb record v1" 0x00 kind 0x00 canonical JSON): the kind keeps a
    meta from passing as a pointer or a catalog."""
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    return hmac.digest(mac_key, RECORD_MAC_PREFIX + kind.encode("ascii") + b"\0" + canonical, hashlib.sha256)


def tags_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
