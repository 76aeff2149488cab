#!/usr/bin/env python3
"""Write seal-v1.json: known-answer vectors for the ocb-seal format, version 1.

Usage: make_seal_vectors.py [OUTPUT]   (default: seal-v1.json next to this script)

Run once when the format is defined and check the output in; tests/unit/test_seal.py recomputes
every vector and fails if a byte differs, so regenerating is only right for a new format
version (and then as a new file). Fixed password, salts and nonce prefix with a cheap KDF and a
tiny segment size, so one vector covers several segments.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "lib"))

from ocb import seal  # noqa: E402

PASSWORD = b"correct horse battery staple"
KDF = seal.KdfParams(log_n=10, r=8, p=1)
KDF_SALT = bytes(range(16))
ARCHIVE_SALT = bytes(range(32, 64))
NONCE_PREFIX = bytes.fromhex("a0a1a2a3a4a5a6")
ASSOCIATED = b"openclaw-backup-20260101-000000/archive"
SEGMENT_SIZE = 32
PLAINTEXTS = {
    "empty": b"",
    "one segment, short": b"hello, sealed world",
    "two full segments": bytes(range(64)),
    "three segments, short final": bytes(range(80)),
}


def vector(name: str, plaintext: bytes, password_key: seal.PasswordKey) -> dict[str, object]:
    sealed = io.BytesIO()
    info = seal.seal_stream(
        io.BytesIO(plaintext),
        sealed,
        password_key,
        associated=ASSOCIATED,
        segment_size=SEGMENT_SIZE,
        archive_salt=ARCHIVE_SALT,
        nonce_prefix=NONCE_PREFIX,
    )
    return {
        "name": name,
        "plaintext": plaintext.hex(),
        "segments": info.segments,
        "sealed": sealed.getvalue().hex(),
    }


def main() -> int:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("seal-v1.json")
    password_key = seal.derive_password_key(PASSWORD, KDF, KDF_SALT)
    document = {
        "format": "ocb-seal",
        "version": 1,
        "password": PASSWORD.hex(),
        "kdf": KDF.as_dict(),
        "kdf_salt": KDF_SALT.hex(),
        "password_key": password_key._key.hex(),
        "archive_salt": ARCHIVE_SALT.hex(),
        "nonce_prefix": NONCE_PREFIX.hex(),
        "associated": ASSOCIATED.hex(),
        "segment_size": SEGMENT_SIZE,
        "vectors": [vector(name, data, password_key) for name, data in PLAINTEXTS.items()],
    }
    output.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
