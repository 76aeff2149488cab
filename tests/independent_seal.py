"""An ocb-seal encoder and decoder written from docs/format.md alone (it imports nothing of
ocb), so that the spec, not ocb's sealer, is what the vectors and a real volume are held to.

  encode(password, kdf, kdf_salt, archive_salt, nonce_prefix, segment_size, aad, plaintext)
  decode(password, aad, sealed) -> plaintext, or raises Refused
  archive_aad(store_id, chain_ids, position) / first_form_aad(snapshot_id)

kdf is ("scrypt", log_n, r, p) or ("argon2id", memory_kib, iterations, lanes).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

BODY = 75  # header bytes 0..74: everything before the key check
HEADER = 107


class Refused(Exception):
    """The opener must reject the input (any reason)."""


def _kdf_fields(kdf: tuple) -> tuple[int, bytes]:
    if kdf[0] == "scrypt":
        return 1, struct.pack(">BHH", kdf[1], kdf[2], kdf[3])
    return 2, kdf[1].to_bytes(3, "big") + bytes([kdf[2], kdf[3]])


def _password_key(password: bytes, kdf_id: int, params: bytes, salt: bytes) -> bytes:
    if kdf_id == 1:
        log_n, r, p = struct.unpack(">BHH", params)
        if not (1 <= log_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16 and 128 * r * 2**log_n <= 2**30):
            raise Refused("scrypt parameters out of bounds")
        return Scrypt(salt=salt, length=32, n=2**log_n, r=r, p=p).derive(password)
    if kdf_id == 2:
        memory, t, p = int.from_bytes(params[:3], "big"), params[3], params[4]
        if not (1 <= p <= 16 and 1 <= t <= 16 and 8 * p <= memory <= 2**20):
            raise Refused("argon2id parameters out of bounds")
        return Argon2id(salt=salt, length=32, iterations=t, lanes=p, memory_cost=memory).derive(password)
    raise Refused("unknown kdf id")


def _keys(password_key: bytes, body: bytes) -> tuple[AESGCM, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=body[36:68], info=b"ocb seal v1\0" + body).derive(password_key)
    return AESGCM(okm[:32]), okm[32:]


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def encode(password: bytes, kdf: tuple, kdf_salt: bytes, archive_salt: bytes, nonce_prefix: bytes,
           segment_size: int, aad: bytes, plaintext: bytes) -> bytes:
    kdf_id, params = _kdf_fields(kdf)
    body = (b"OCBSEAL\0" + bytes([1, 1, kdf_id]) + params + segment_size.to_bytes(4, "big")
            + kdf_salt + archive_salt + nonce_prefix)
    assert len(body) == BODY
    aead, check_key = _keys(_password_key(password, kdf_id, params, kdf_salt), body)
    out = [body, hmac.digest(check_key, body, hashlib.sha256)]
    pieces = [plaintext[i:i + segment_size] for i in range(0, len(plaintext), segment_size)] or [b""]
    for index, piece in enumerate(pieces):
        out.append(aead.encrypt(_nonce(nonce_prefix, index, index == len(pieces) - 1), piece, aad))
    return b"".join(out)


def decode(password: bytes, aad: bytes, sealed: bytes) -> bytes:
    if len(sealed) < HEADER or sealed[:8] != b"OCBSEAL\0":
        raise Refused("not an ocb sealed stream, or truncated in its header")
    body, check = sealed[:BODY], sealed[BODY:HEADER]
    if body[8] != 1 or body[9] != 1:
        raise Refused("unknown version or aead")
    segment_size = int.from_bytes(body[16:20], "big")
    if not 1 <= segment_size <= 16 * 2**20:
        raise Refused("segment size out of bounds")
    aead, check_key = _keys(_password_key(password, body[10], body[11:16], body[20:36]), body)
    if not hmac.compare_digest(hmac.digest(check_key, body, hashlib.sha256), check):
        raise Refused("wrong password (key check)")
    rest, nonce_prefix, plain, index = sealed[HEADER:], body[68:75], [], 0
    if not rest:
        raise Refused("nothing after the header")
    full = segment_size + 16
    while True:
        last = len(rest) <= full  # a full segment with more behind it is a middle one
        segment, rest = rest[:full], rest[full:]
        if len(segment) < 16:
            raise Refused("truncated inside a segment")
        try:
            plain.append(aead.decrypt(_nonce(nonce_prefix, index, last), segment, aad))
        except InvalidTag:
            raise Refused(f"segment {index} fails authentication") from None
        if last:
            return b"".join(plain)
        index += 1


def first_form_aad(snapshot_id: str) -> bytes:
    return b"ocb archive " + snapshot_id.encode("utf-8")


def archive_aad(store_id: str, chain_ids: list[str], position: int) -> bytes:
    parent = chain_ids[position - 1] if position else ""
    fields = [store_id, chain_ids[position], str(position), chain_ids[0], parent]
    return b"ocb archive v2\0" + b"\0".join(f.encode("utf-8") for f in fields)
