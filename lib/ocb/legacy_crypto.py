"""Reading what the legacy script encrypted: the file format of `openssl enc -aes-256-cbc`.

The legacy script ran `openssl enc -aes-256-cbc -salt -pbkdf2 -pass file:PW`: the file is
"Salted__", an 8-byte salt, then AES-256-CBC with PKCS#7 padding, key and IV both drawn from
PBKDF2-HMAC-SHA256 (openssl's defaults for -pbkdf2: 10,000 iterations, -md sha256) over the
password's first line. The same command line on another openssl, or an older script without
-pbkdf2, gives other derivations: EVP_BytesToKey (one round of -md md5, openssl before 1.1.0,
or sha256 after), or PBKDF2 with another -md. Every one of them is in KDF_CANDIDATES; which one
opens an archive is read off its first block, which must decrypt to gzip's magic (the
plaintext is always a .tar.gz), so a wrong password is told from the others before a byte is
written, at the price of one derivation per candidate.

CBC carries no authentication: the recorded sha256 (legacy.py checks it first) and the
padding are the checks it offers, and gzip's CRC after them; nothing here can tell a flipped
byte from a wrong password when the meta recorded no checksum. Decryption is done with the
`cryptography` package, streaming in bounded chunks; no openssl process is started. No I/O
but the streams handed in, no printing.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from .errors import IntegrityError, WrongPassword

MAGIC = b"Salted__"
SALT_SIZE = 8
HEADER_SIZE = len(MAGIC) + SALT_SIZE
BLOCK = 16
KEY_SIZE, IV_SIZE = 32, 16
GZIP_START = b"\x1f\x8b\x08"  # gzip magic and deflate, what every legacy archive begins with
PBKDF2_ITERATIONS = 10_000  # openssl enc -pbkdf2 without -iter
PASSWORD_LIMIT = 1023  # openssl reads -pass file: with one BIO_gets of 1024 bytes
READ_CHUNK = 1024 * 1024

# (kdf, -md, iterations), most likely first: the script's own flags on openssl >= 1.1.1 first
KDF_CANDIDATES: tuple[tuple[str, str, int], ...] = (
    ("pbkdf2", "sha256", PBKDF2_ITERATIONS),
    ("evp_bytestokey", "sha256", 1),
    ("evp_bytestokey", "md5", 1),
    ("pbkdf2", "sha512", PBKDF2_ITERATIONS),
    ("pbkdf2", "sha1", PBKDF2_ITERATIONS),
    ("evp_bytestokey", "sha1", 1),
)
_HASHES = {"sha256": hashes.SHA256, "sha512": hashes.SHA512, "sha1": hashes.SHA1, "md5": hashes.MD5}


class PaddingBroken(IntegrityError):
    """The last CBC block does not end in valid PKCS#7 padding: damaged, cut short, or the
    wrong key (the only check CBC itself offers)."""


@dataclass(frozen=True)
class Derivation:
    kdf: str
    md: str
    iterations: int
    key: bytes
    iv: bytes

    def describe(self) -> str:
        if self.kdf == "pbkdf2":
            return f"-pbkdf2 -md {self.md} -iter {self.iterations}"
        return f"EVP_BytesToKey -md {self.md} (no -pbkdf2)"


def openssl_password(password: bytes) -> bytes:
    """What `openssl enc -pass file:F` uses of a file holding `password`: its first line, at
    most 1023 bytes (the legacy script wrote the password into such a file)."""
    return password.split(b"\n", 1)[0][:PASSWORD_LIMIT]


def derive(password: bytes, salt: bytes, kdf: str, md: str, iterations: int) -> tuple[bytes, bytes]:
    """Key and IV as openssl enc derives them."""
    if kdf == "pbkdf2":
        material = PBKDF2HMAC(algorithm=_HASHES[md](), length=KEY_SIZE + IV_SIZE, salt=salt,
                              iterations=iterations).derive(password)
    else:
        material, block = b"", b""
        while len(material) < KEY_SIZE + IV_SIZE:  # EVP_BytesToKey with count 1
            block = hashlib.new(md, block + password + salt).digest()
            material += block
    return material[:KEY_SIZE], material[KEY_SIZE:KEY_SIZE + IV_SIZE]


def read_header(head: bytes, where: str) -> bytes:
    """The salt of an openssl enc file whose first bytes are `head`."""
    if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
        raise IntegrityError(f"{where} is not an `openssl enc -salt` file (no Salted__ header): "
                             "damaged, or not encrypted after all")
    return head[len(MAGIC):HEADER_SIZE]


def find_derivation(password: bytes, salt: bytes, first_block: bytes, where: str,
                    checksum_verified: bool) -> Derivation:
    """The derivation whose key turns the first ciphertext block into the start of a gzip
    stream; WrongPassword when none does."""
    secret = openssl_password(password)
    for kdf, md, iterations in KDF_CANDIDATES:
        key, iv = derive(secret, salt, kdf, md, iterations)
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        if decryptor.update(first_block).startswith(GZIP_START):
            return Derivation(kdf, md, iterations, key, iv)
    cause = ("the archive matched its recorded sha256, so the password is wrong" if checksum_verified
             else "the meta records no checksum, so this is a wrong password or a damaged archive")
    raise WrongPassword(f"{where}: the password does not decrypt it (no openssl enc key derivation "
                        f"turns its first block into gzip data; {cause})")


class DecryptingReader(io.RawIOBase):
    """The plaintext of an openssl enc stream, read in bounded chunks; the padding is checked
    when the end is reached (PaddingBroken), a length that is not whole blocks likewise."""

    def __init__(self, source: BinaryIO, password: bytes, where: str, checksum_verified: bool) -> None:
        self.source = source
        self.where = where
        head = _read_exactly(source, HEADER_SIZE + BLOCK)
        salt = read_header(head, where)
        first = head[HEADER_SIZE:]
        if len(first) < BLOCK:
            raise IntegrityError(f"{where}: cut short (less than one AES block after the header)")
        self.derivation = find_derivation(password, salt, first, where, checksum_verified)
        self._decryptor = Cipher(algorithms.AES(self.derivation.key), modes.CBC(self.derivation.iv)).decryptor()
        self._unpadder = padding.PKCS7(BLOCK * 8).unpadder()
        self._pending = memoryview(self._unpadder.update(self._decryptor.update(first)))
        self._cipher_bytes = BLOCK
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            chunk = self.source.read(READ_CHUNK)
            if chunk:
                self._cipher_bytes += len(chunk)
                self._pending = memoryview(self._unpadder.update(self._decryptor.update(chunk)))
                continue
            self._done = True
            if self._cipher_bytes % BLOCK:
                raise IntegrityError(f"{self.where}: {self._cipher_bytes} bytes after the header, not whole "
                                     "AES blocks (cut short or damaged)")
            try:
                self._pending = memoryview(self._unpadder.update(self._decryptor.finalize())
                                           + self._unpadder.finalize())
            except ValueError:
                raise PaddingBroken(f"{self.where}: the padding check failed (the last block does not "
                                    "decrypt to PKCS#7 padding): the archive is damaged or cut short") from None
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = source.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data
