"""Summary: cut the (sealed) archive into volumes of OCB_VOLUME_SIZE, each with its sha256.

Usage: ocb-seal | ocb-split > volumes.json

Reads:   a backup document with `seal` (or `archive` when no seal section exists).
Writes:  `volumes`: {files: [{name, path, size, sha256}], volume_size}. An archive that fits
         in one volume becomes that volume without a copy; a larger one is cut into
         `<name>.part-0001`, `.part-0002`, ... in the work dir.
Environment: none (OCB_VOLUME_SIZE is resolved by ocb-plan into settings.volume_size).
Example: ocb-seal < packed.json | ocb-split | jq '.volumes.files[] | {name, size}'
Exit status: 0 ok or skip; 1 run-time failure (disk full); 3 bad input document.
"""

from __future__ import annotations

import argparse
import os

from ..config import Settings
from ..errors import BadDocument, ChecksumMismatch, RuntimeFailure, io_reason
from ..progress import Meter, human_bytes
from ..snapshot import sealed_as_packed
from ..volumes import split_file

STARTS_DOCUMENT = False
KIND = "backup"
NEEDS = ("archive",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(doc: dict, args: argparse.Namespace) -> dict:
    edited = sealed_as_packed(doc)
    if edited:
        raise BadDocument(edited)
    settings = Settings.from_doc(doc)
    where = "seal" if isinstance(doc.get("seal"), dict) else "archive"
    source = doc[where]
    path, size = source["path"], source["size"]
    if not os.path.isfile(path):
        raise BadDocument(f"the {where} file {path} is gone: run the backup pipe again")
    if os.path.getsize(path) != size:
        raise ChecksumMismatch(f"the {where} file {path} is {os.path.getsize(path)} bytes, the document says {size}")
    # one volume is the archive itself (no copy, no bar); more are cut with a bar
    meter = Meter("split", size, bar=size > settings.volume_size)
    try:
        volumes = split_file(path, size, source["sha256"], settings.volume_size, meter.update)
    except OSError as exc:
        meter.abandon()
        raise RuntimeFailure(f"cannot write volumes of {path}: {io_reason(exc)}") from None
    meter.close(done=size, note=f"{len(volumes)} volume{'s' if len(volumes) != 1 else ''} of at most "
                f"{human_bytes(settings.volume_size)}")
    doc["volumes"] = {"volume_size": settings.volume_size, "files": volumes}
    return doc
