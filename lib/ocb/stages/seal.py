"""Summary: seal the archive with streaming authenticated encryption, or pass it on unsealed.

Usage: ocb-pack | ocb-seal > sealed.json

Reads:   a backup document with `archive`.
Writes:  `seal`: {sealed, path, size, sha256, params}. A document that carries `seal` already
         (with sealing on, ocb-pack seals as it writes) is passed on as it is. Otherwise,
         with sealing on, the archive is streamed through AES-256-GCM in fixed segments
         (docs/format.md) into `<archive>.ocbs` and the plain archive is removed; the key
         comes from the password by Argon2id (or scrypt, when chosen), once per machine life
         (the key cache); the associated data binds the archive to the store (plan.store_id),
         its snapshot and its place in the chain. Without a password the archive is passed on as it is and the
         meta will say `sealed: false`.
Environment:
  OCB_PASSWORD, or OCB_PASSWORD_FILE naming a file that holds it (legacy:
  OPENCLAW_BACKUP_ENCRYPTION_ENABLED=true with OPENCLAW_BACKUP_ENCRYPTION_PASSWORD). Sealing
  is on when a password is set; OCB_SEAL=on requires one, OCB_SEAL=off turns sealing off
  (both resolved by ocb-plan into settings.seal). OCB_KDF: argon2id (default; memory
  OCB_ARGON2_MEMORY, default 64M, t=3, p=4) or scrypt (cost OCB_SCRYPT_LOG_N, default 17;
  setting OCB_SCRYPT_LOG_N alone picks scrypt). OCB_KEY_CACHE: where the password key is
  kept in memory between runs (default /dev/shm/ocb-keys-<uid>, a folder on tmpfs), or off.
Example: OCB_PASSWORD_FILE=~/.ocb-pass ocb-pack < plan.json | ocb-seal | jq .seal
Exit status: 0 ok or skip; 1 run-time failure (disk full); 2 sealing on but no password;
             3 bad input document.
"""

from __future__ import annotations

import argparse
import os

from .. import config, seal
from ..archive import HashingWriter
from ..config import Settings
from ..errors import BadDocument, RuntimeFailure, UsageError, io_reason
from ..fsutil import discard
from ..log import log
from ..progress import Meter, MeteredReader, human_bytes
from ..snapshot import SEALED_SUFFIX, sealed_as_packed

STARTS_DOCUMENT = False
KIND = "backup"
NEEDS = ("plan", "archive")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def archive_sealing(doc: dict, settings: Settings) -> tuple[seal.PasswordKey, bytes]:
    """The key and associated data that seal this document's archive (ocb-pack seals with them
    as it writes, when sealing is on; this stage, for an archive handed in unsealed)."""
    password = config.seal_password()
    if password is None:
        raise UsageError("this document asks for sealing but no password is set (OCB_PASSWORD or OCB_PASSWORD_FILE)")
    plan = doc["plan"]
    if not plan.get("store_id"):
        raise BadDocument("plan.store_id is missing: this document was planned by an older ocb-plan, plan again")
    key = seal.machine_password_key(settings.cache_dir, password, settings.kdf, settings.scrypt_log_n,
                                    settings.argon2_memory, config.key_cache())
    chain_ids = [link["id"] for link in plan.get("parent_chain") or []] + [doc["id"]]
    return key, seal.chain_associated_data(plan["store_id"], chain_ids, len(chain_ids) - 1)


def seal_section(info: seal.SealInfo, path: str, sha256: str) -> dict:
    """The `seal` section of a sealed archive (one shape, whoever sealed it)."""
    return {"sealed": True, "path": path, "size": info.sealed_bytes, "sha256": sha256, "params": info.header}


def run(doc: dict, args: argparse.Namespace) -> dict:
    if doc.get("seal") is not None:
        # ocb-pack sealed the archive as it wrote it (sealing on): nothing left to do here
        log.debug("the archive was sealed as it was packed: passing it on")
        return doc
    edited = sealed_as_packed(doc)
    if edited:
        raise BadDocument(edited)
    settings = Settings.from_doc(doc)
    archive = doc["archive"]
    path = archive["path"]
    if not settings.seal:
        doc["seal"] = {"sealed": False, "path": path, "size": archive["size"], "sha256": archive["sha256"]}
        return doc
    key, associated = archive_sealing(doc, settings)
    sealed_path = path + SEALED_SUFFIX
    meter = Meter("seal", archive["size"])
    try:
        with open(path, "rb") as plain, open(sealed_path, "wb") as raw_out:
            hashing = HashingWriter(raw_out)
            source = MeteredReader(plain, meter)  # type: ignore[arg-type]  # bytes read: the progress
            info = seal.seal_stream(source,  # type: ignore[arg-type]
                                     hashing, key, associated=associated)
            raw_out.flush()  # no fsync: the work dir's files are scratch (fsutil)
    except FileNotFoundError:
        meter.abandon()
        discard(sealed_path)
        raise BadDocument(f"the archive {path} is gone: run the backup pipe again") from None
    except OSError as exc:
        meter.abandon()
        discard(sealed_path)
        raise RuntimeFailure(f"cannot write the sealed archive {sealed_path}: {io_reason(exc)}") from None
    os.unlink(path)  # only the sealed copy leaves this machine; keep one copy on disk
    meter.close(note=f"sealed into {human_bytes(info.sealed_bytes)} ({info.segments} segments)")
    doc["seal"] = seal_section(info, sealed_path, hashing.digest.hexdigest())
    return doc
