"""The JSON document that flows between stages: parsing, validation, field access.

Owns the rules every stage shares: one object, a known `ocb` major version and `kind`,
sections that hold the fields the next stage needs, and work-dir paths that stay inside the
work dir. It never reads stdin or writes stdout itself (cli.py does) and never touches data.
"""

from __future__ import annotations

import json
import os
from typing import Any

from . import DOC_VERSION
from .errors import BadDocument

KINDS = ("backup", "restore", "prune")

# Documents are small (bulk data travels as work-dir files); a huge stdin is not one of ours.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


def parse(text: bytes) -> dict:
    """Bytes from stdin -> a document dict, or BadDocument naming what is wrong."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise BadDocument(f"input is {len(text)} bytes: too large to be an ocb document")
    if not text.strip():
        raise BadDocument("empty input: expected an ocb JSON document on stdin (pipe the previous stage in)")
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadDocument(f"input is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadDocument(f"input is a JSON {type(doc).__name__}, expected an object")
    version = doc.get("ocb")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadDocument("field 'ocb' (contract version) is missing or not an integer: not an ocb document")
    if version > DOC_VERSION or version < 1:
        raise BadDocument(f"field 'ocb' is {version}: this ocb reads document version {DOC_VERSION}")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise BadDocument(f"field 'kind' is {kind!r}: expected one of {', '.join(KINDS)}")
    error = doc.get("error")
    if error is not None:
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            raise BadDocument("field 'error' must be an object with an integer 'code'")
    return doc


def dump(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def require_kind(doc: dict, kind: str, stage: str) -> None:
    if doc.get("kind") != kind:
        raise BadDocument(f"ocb-{stage} reads a {kind} document, got kind {doc.get('kind')!r}")


def section(doc: dict, name: str, stage: str) -> dict:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise BadDocument(f"field '{name}' is missing or not an object: run the stage that writes it before ocb-{stage}")
    return value


def field(container: dict, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = container.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int,))):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadDocument(f"field '{where}.{name}' is missing or not a {expected}")
    return value


def work_path(container: dict, name: str, where: str, work_dir: str) -> str:
    """A path field that must name something inside the work dir (never elsewhere)."""
    path = field(container, name, str, where)
    real_work = os.path.realpath(work_dir)
    real = os.path.realpath(path)
    if os.path.commonpath([real_work, real]) != real_work:
        raise BadDocument(f"field '{where}.{name}' = {path!r} is outside the work dir {work_dir}")
    return path


def settings(doc: dict, stage: str) -> dict:
    value = section(doc, "settings", stage)
    for key in ("work_dir", "cache_dir"):
        field(value, key, str, "settings")
        if not os.path.isabs(value[key]):
            raise BadDocument(f"field 'settings.{key}' must be an absolute path")
    return value
