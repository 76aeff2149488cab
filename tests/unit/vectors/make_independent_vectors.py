#!/usr/bin/env python3
"""Write seal-v1-independent.json: vectors made by tests/independent_seal.py (written from
docs/format.md, not ocb's sealer): several headers (scrypt and Argon2id parameters, segment
sizes), both forms of associated data, volumes split at arbitrary bytes (joined by plain
concatenation in order), and negative cases every opener must reject.

Usage: make_independent_vectors.py [OUTPUT]. Checked in; tests/unit/test_seal.py opens every
vector with both decoders and re-encodes the positive ones byte for byte.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import independent_seal as ind  # noqa: E402

STORE = "0123456789abcdef0123456789abcdef"
CHAIN = ["openclaw-backup-20260101-000000", "openclaw-backup-20260101-010000"]


def sealed_case(name, password, kdf, segment_size, aad, plaintext, cuts=(), salt_byte=0):
    sealed = ind.encode(password, kdf, bytes(range(salt_byte, salt_byte + 16)), bytes(range(100, 132)),
                        bytes.fromhex("b0b1b2b3b4b5b6"), segment_size, aad, plaintext)
    edges = [0, *cuts, len(sealed)]
    volumes = [sealed[a:b] for a, b in zip(edges, edges[1:])]
    return {"name": name, "password": password.hex(), "kdf": list(kdf), "kdf_salt": bytes(range(salt_byte, salt_byte + 16)).hex(),
            "archive_salt": bytes(range(100, 132)).hex(), "nonce_prefix": "b0b1b2b3b4b5b6", "segment_size": segment_size,
            "aad": aad.hex(), "plaintext": plaintext.hex(), "volumes": [v.hex() for v in volumes]}


def negative(name, base, sealed, password=None, aad=None):
    return {"name": name, "password": password.hex() if password else base["password"],
            "aad": aad.hex() if aad is not None else base["aad"], "volumes": [sealed.hex()], "reject": True}


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("seal-v1-independent.json")
    pw = "pässword\n".rstrip("\n").encode("utf-8")  # UTF-8, not normalised
    positives = [
        sealed_case("scrypt, empty plaintext, first-form aad", pw, ("scrypt", 10, 8, 1), 32,
                    ind.first_form_aad(CHAIN[0]), b""),
        sealed_case("scrypt r=4 p=2, 16-byte segments, incremental's aad", pw, ("scrypt", 10, 4, 2), 16,
                    ind.archive_aad(STORE, CHAIN, 1), bytes(range(50)), salt_byte=7),
        sealed_case("argon2id 256 KiB t=1 p=2, three volumes", pw, ("argon2id", 256, 1, 2), 64,
                    ind.archive_aad(STORE, CHAIN, 0), bytes(range(200)), cuts=(100, 180)),
        sealed_case("argon2id 1 MiB t=3 p=4, final segment full", b"correct horse", ("argon2id", 1024, 3, 4), 100,
                    ind.archive_aad(STORE, CHAIN[:1], 0), bytes(300), cuts=(107,)),
    ]
    base = positives[1]
    whole = bytes.fromhex("".join(base["volumes"]))
    seg = base["segment_size"] + 16
    first, second = ind.HEADER, ind.HEADER + seg
    negatives = [
        negative("wrong aad: another snapshot's place in the chain", base, whole, aad=ind.archive_aad(STORE, CHAIN, 0)),
        negative("wrong aad: another store", base, whole, aad=ind.archive_aad("f" * 32, CHAIN, 1)),
        negative("wrong password", base, whole, password=b"pa\xcc\x88ssword"),  # NFD of the same text
        negative("truncated at a segment boundary", base, whole[:second]),
        negative("truncated mid-segment", base, whole[:-5]),
        negative("truncated in the header", base, whole[:100]),
        negative("segments 0 and 1 swapped", base, whole[:first] + whole[second:second + seg] + whole[first:second]
                 + whole[second + seg:]),
        negative("a byte appended", base, whole + b"\x00"),
        negative("a segment dropped", base, whole[:first] + whole[second:]),
        negative("volumes joined out of order", positives[2], bytes.fromhex(
            positives[2]["volumes"][1] + positives[2]["volumes"][0] + positives[2]["volumes"][2])),
        negative("one header bit flipped (kdf salt)", base, whole[:25] + bytes([whole[25] ^ 1]) + whole[26:]),
        negative("version 2", base, whole[:8] + b"\x02" + whole[9:]),
    ]
    document = {"format": "ocb-seal", "version": 1, "made_by": "tests/independent_seal.py",
                "vectors": positives + negatives}
    out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
