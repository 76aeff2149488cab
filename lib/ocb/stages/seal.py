"""Summary: seal the archive with streaming authenticated encryption, or pass it on unsealed.

Usage: ocb-pack | ocb-seal > sealed.json

Reads:   a backup document with `archive`.
Writes:  `seal`: {sealed, path, size, sha256, params}. With sealing on, the archive is
         streamed through AES-256-GCM in fixed segments (docs/format.md) into
         `<archive>.ocbs` and the plain archive is removed; the key comes from the password by
         scrypt, once per run. Without a password the archive is passed on as it is and the
         meta will say `sealed: false`.
Environment:
  OCB_PASSWORD, or OCB_PASSWORD_FILE naming a file that holds it (legacy:
  OPENCLAW_BACKUP_ENCRYPTION_ENABLED=true with OPENCLAW_BACKUP_ENCRYPTION_PASSWORD). Sealing
  is on when a password is set; OCB_SEAL=on requires one, OCB_SEAL=off turns sealing off
  (both resolved by ocb-plan into settings.seal). OCB_SCRYPT_LOG_N: the KDF cost (default 17).
Exit status: 0 ok or skip; 1 run-time failure (disk full); 2 sealing on but no password;
             3 bad input document.
"""

from __future__ import annotations

import argparse
import json
import os

from .. import config, document, seal
from ..archive import HashingWriter
from ..errors import BadDocument, RuntimeFailure, UsageError, io_reason
from ..log import log

STARTS_DOCUMENT = False
KIND = "backup"
SEALED_SUFFIX = ".ocbs"
KDF_SALT_FILE = "seal-kdf.json"
COPY_CHUNK = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def password_key(cache_dir: str, password: bytes, kdf: seal.KdfParams) -> seal.PasswordKey:
    """Derive the password key, reusing this machine's KDF salt (not a secret) so that a
    restore of a chain sealed here derives scrypt once, not once per snapshot."""
    salt_file = os.path.join(cache_dir, KDF_SALT_FILE)
    try:
        with open(salt_file, encoding="utf-8") as handle:
            recorded = json.load(handle)
        if recorded.get("kdf") == kdf.as_dict():
            return seal.derive_password_key(password, kdf, bytes.fromhex(recorded["salt"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    key = seal.derive_password_key(password, kdf)
    tmp = f"{salt_file}.tmp-{os.getpid()}"
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"kdf": kdf.as_dict(), "salt": key.kdf_salt.hex()}, handle)
        os.replace(tmp, salt_file)
    except OSError as exc:
        # the recorded salt only spares a restore some scrypt runs: sealing goes on without it
        log.warning(f"cannot record the KDF salt in {cache_dir}: {exc.strerror or exc}")
        _remove(tmp)
    return key


def run(doc: dict, args: argparse.Namespace) -> dict:
    document.require_kind(doc, KIND, "seal")
    settings = document.settings(doc, "seal")
    snapshot_id = document.field(doc, "id", str, "document")
    archive = document.section(doc, "archive", "seal")
    path = document.work_path(archive, "path", "archive", settings["work_dir"])
    size = document.field(archive, "size", int, "archive")
    sha256 = document.field(archive, "sha256", str, "archive")
    if not settings.get("seal"):
        doc["seal"] = {"sealed": False, "path": path, "size": size, "sha256": sha256}
        return doc
    password = config.seal_password()
    if password is None:
        raise UsageError("this document asks for sealing but no password is set (OCB_PASSWORD or OCB_PASSWORD_FILE)")
    kdf = seal.KdfParams(log_n=int(settings.get("scrypt_log_n", seal.DEFAULT_KDF.log_n)))
    key = password_key(settings["cache_dir"], password, kdf)
    sealed_path = path + SEALED_SUFFIX
    try:
        with open(path, "rb") as source, open(sealed_path, "wb") as raw_out:
            hashing = HashingWriter(raw_out)
            info = seal.seal_stream(source, hashing, key, associated=seal.snapshot_associated_data(snapshot_id))
            raw_out.flush()
            os.fsync(raw_out.fileno())
    except FileNotFoundError:
        raise BadDocument(f"the archive {path} is gone: run the backup pipe again") from None
    except OSError as exc:
        _remove(sealed_path)
        raise RuntimeFailure(f"cannot write the sealed archive {sealed_path}: {io_reason(exc)}") from None
    os.unlink(path)  # only the sealed copy leaves this machine; keep one copy on disk
    log.info(f"sealed {info.plaintext_bytes} bytes into {info.sealed_bytes} ({info.segments} segments)")
    doc["seal"] = {"sealed": True, "path": sealed_path, "size": info.sealed_bytes,
                   "sha256": hashing.digest.hexdigest(), "params": info.header}
    return doc


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
