"""Summary: seal the archive with streaming authenticated encryption, or pass it on unsealed.

Usage: ocb-pack | ocb-seal > sealed.json

Reads:   a backup document with `archive`.
Writes:  `seal`: {sealed, path, size, sha256}. Without a password the archive is passed on
         as it is and the meta will say `sealed: false`.
Environment: none yet (encryption is issue 4's work).
Exit status: 0 ok or skip; 1 run-time failure; 3 bad input document.
"""

from __future__ import annotations

import argparse

from .. import document

STARTS_DOCUMENT = False
KIND = "backup"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(doc: dict, args: argparse.Namespace) -> dict:
    document.require_kind(doc, KIND, "seal")
    settings = document.settings(doc, "seal")
    archive = document.section(doc, "archive", "seal")
    path = document.work_path(archive, "path", "archive", settings["work_dir"])
    doc["seal"] = {"sealed": False, "path": path, "size": document.field(archive, "size", int, "archive"),
                   "sha256": document.field(archive, "sha256", str, "archive")}
    return doc
