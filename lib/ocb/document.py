"""The JSON document that flows between stages: parsing, validation, field access.

Owns the rules every stage shares: one object, a known `ocb` major version and `kind`,
sections that hold the fields the next stage needs, and work-dir paths that stay inside the
work dir. It never reads stdin or writes stdout itself (cli.py does) and never touches data.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

from . import DOC_VERSION
from .compression import COMPRESSIONS
from .config import PRUNE_EVERY, ROOT_NAME
from .errors import BadDocument, ChainBroken
from .snapshot import (
    BACKUP_TYPES,
    MAX_BYTES,
    SHA256,
    SNAPSHOT_ID,
    STORE_ID,
    VOLUME_NAME,
    resolve,
    validate_link,
)

KINDS = ("backup", "restore", "prune", "check", "doctor")  # check, doctor: what ocb-check and ocb-doctor write

# Documents are small (bulk data travels as work-dir files); a huge stdin is not one of ours.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


def parse(text: bytes) -> dict:
    """Bytes from stdin -> a document dict, or BadDocument naming what is wrong."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise BadDocument(f"input is {len(text)} bytes: too large to be an ocb document")
    if not text.strip():
        raise BadDocument("empty input: expected an ocb JSON document on stdin (pipe the previous stage in)")
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadDocument(f"input is not JSON: {exc}") from None
    except RecursionError:
        # json recurses per nesting level: thousands of '[' are not a document of ours
        raise BadDocument("input is not an ocb document: JSON nested too deeply") from None
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
        return doc  # passed on untouched: its sections are not ours to judge
    if doc.get("skip") is None:
        check_shape(doc)
    return doc


def _refuse_constant(name: str) -> Any:
    # json.loads takes NaN and Infinity, which JSON has not: a size or a delay of Infinity is
    # not a value any stage wrote
    raise BadDocument(f"input is not JSON: {name} is not a JSON value")


def dump(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def require(doc: dict, kind: str, sections: tuple[str, ...], stage: str) -> None:
    """The document is of `kind` and holds the sections `stage` reads (the parser has checked
    their fields): the message says which stage to run first."""
    if doc.get("kind") != kind:
        raise BadDocument(f"ocb-{stage} reads a {kind} document, got kind {doc.get('kind')!r}")
    for name in ("settings", *sections):
        if not isinstance(doc.get(name), dict):
            raise BadDocument(f"field '{name}' is missing or not an object: run the stage that writes it before ocb-{stage}")
    for name in ("id", "store", "created_at_utc") if kind == "backup" else ("store",):
        if name not in doc:
            raise BadDocument(f"field 'document.{name}' is missing: ocb-{stage} reads a document from the stage before it")


# -- the shape of what stages hand on ---------------------------------------------------------
# Types and ranges of every field a later stage reads, checked once at parse time so that no
# stage acts on a field of the wrong type, an absurd size or a name that could leave its folder
# (exit 3, naming the field). Which sections and fields a stage needs, it checks itself
# (section, field), so that its message says what to run first; here a section is checked
# only when present, and within it the fields its readers rely on must be there.

MAX_COUNT = 10**12
UTC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
Check = Callable[[Any], "str | None"]  # None when the value is fine, else what it should be


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        return None if _is_int(value) and low <= value <= high else f"an integer from {low} to {high}"
    return check


def _number(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        ok = (_is_int(value) or isinstance(value, float)) and low <= value <= high
        return None if ok else f"a number from {low} to {high}"
    return check


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return "a string"
    try:
        value.encode("utf-8")  # a lone surrogate cannot be written into a meta or a log
    except UnicodeEncodeError:
        return "valid Unicode text"
    return None


def _path(value: Any) -> str | None:
    # file names may be any bytes: surrogate escapes are allowed here, NUL and relative are not
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        return "an absolute path"
    return None


def _prefix(value: Any) -> str | None:
    parts = value.split("/") if isinstance(value, str) else []
    if not parts or len(value) > 255 or _text(value) or any(p in ("", ".", "..") or "\0" in p for p in parts):
        return "a relative folder such as backups"
    return None


def _match(pattern: re.Pattern, what: str) -> Check:
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and pattern.match(value) else what
    return check


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else "one of " + ", ".join(choices)
    return check


def _nullable(inner: Check) -> Check:
    def check(value: Any) -> str | None:
        return None if value is None else inner(value)
    return check


def _dict(value: Any) -> str | None:
    return None if isinstance(value, dict) else "an object"


KEEP_WITHIN = re.compile(r"^((\d+y)?(\d+m)?(\d+d)?(\d+h)?)$")
_ID = _match(SNAPSHOT_ID, "a snapshot id (openclaw-backup-YYYYMMDD-HHMMSS)")
_SHA256 = _match(SHA256, "a sha256 (64 hex digits)")
_SIZE = _int(0, MAX_BYTES)
_COUNT = _int(0, MAX_COUNT)
_COMPRESSION = _one_of(*COMPRESSIONS)
_LEVEL = _int(1, 22)

ROOT = {"name": _match(ROOT_NAME, "a root name"), "path": _path, "kind": _one_of("dir", "file"),
        "required": _bool}
VOLUME = {"name": _match(VOLUME_NAME, "a volume name"), "path": _path, "size": _SIZE, "sha256": _SHA256}

SETTINGS = {
    "work_dir": _path, "cache_dir": _path, "home": _path, "path_prefix": _prefix,
    "retry_seconds": _number(0, 10**9), "hub_timeout": _number(0, 10**6), "private": _bool, "hub_endpoint": _nullable(_text), "compression": _COMPRESSION,
    "compression_level": _LEVEL, "volume_size": _int(1024, MAX_BYTES), "full_every": _COUNT,
    "full_hours": _COUNT, "incremental": _bool, "seal": _bool, "scrypt_log_n": _int(10, 22),
    "kdf": _one_of("argon2id", "scrypt"), "argon2_memory": _int(1024**2, 1024**3),
    "delta_min": _SIZE, "sqlite_timeout": _number(0, 10**6), "lock_wait": _number(0, 10**6),
    "keep_last": _COUNT, "keep_hourly": _COUNT, "keep_daily": _COUNT, "keep_weekly": _COUNT,
    "keep_monthly": _COUNT, "keep_yearly": _COUNT, "keep_within": _match(KEEP_WITHIN, "a duration such as 2d or 1y6m, or empty"),
    "prune_every": _match(PRUNE_EVERY, "full, off or a number"), "squash_commits": _COUNT, "reclaim": _bool,
    "s3_endpoint": _nullable(_text), "s3_region": _nullable(_text), "s3_path_style": _bool,
    "s3_checksums": _one_of("when_supported", "when_required"), "s3_part_size": _int(5 * 1024**2, 5 * 1024**3),
    # lists checked item by item below
    "excludes": None, "includes": None, "roots": None,
}
SECTIONS: dict[str, tuple[dict[str, Check | None], tuple[str, ...]]] = {
    # section: (field checks, fields that must be there when the section is)
    "settings": (SETTINGS, ("work_dir", "cache_dir")),
    "plan": ({
        "roots": None, "changes": None, "excluded": _COUNT, "missing_roots": None,
        "base": _nullable(_text), "base_snapshot": _nullable(_ID), "type": _one_of(*BACKUP_TYPES),
        "reasons": None, "parent": _nullable(_ID), "chain": None, "parent_chain": None,
        "diverged_from": _nullable(_ID), "dir": _path, "index": _path, "entries": _COUNT,
        "store_id": _match(STORE_ID, "a store id (32 hex digits)"),
    }, ("roots", "base", "type", "parent", "parent_chain", "dir", "index")),
    "archive": ({
        "path": _path, "size": _SIZE, "sha256": _SHA256, "compression": _COMPRESSION, "level": _LEVEL,
        "index": _path, "entries": _COUNT, "files": _COUNT, "bytes": _SIZE, "stats": _dict,
    }, ("path", "size", "sha256", "compression", "index", "entries", "files", "bytes")),
    "seal": ({"sealed": _bool, "path": _path, "size": _SIZE, "sha256": _SHA256, "params": _nullable(_dict)},
             ("sealed", "path", "size", "sha256")),
    "volumes": ({"volume_size": _int(1024, MAX_BYTES), "files": None}, ("files",)),
    "chain": ({"target": _ID, "latest": _nullable(_ID), "base": _nullable(_text), "sealed": _bool,
               "seal": _nullable(_dict), "snapshots": None}, ("target", "snapshots")),
}
TOP = {"id": _ID, "store": _text, "created_at_utc": _match(UTC_TIME, "a UTC time (YYYY-MM-DDTHH:MM:SSZ)"),
       "tool_version": _text, "openclaw_version": _text}


def _refuse(where: str, value: Any, expected: str) -> BadDocument:
    shown = repr(value)
    return BadDocument(f"field '{where}' must be {expected}, not {shown[:60] + '...' if len(shown) > 60 else shown}")


def _check_fields(record: Any, checks: dict[str, Check | None], where: str,
                  required: tuple[str, ...] = ()) -> None:
    if not isinstance(record, dict):
        raise BadDocument(f"field '{where}' is missing or not an object")
    for name in required:
        if name not in record:
            raise BadDocument(f"field '{where}.{name}' is missing")
    for name, check in checks.items():
        if name in record and check is not None:
            problem = check(record[name])
            if problem:
                raise _refuse(f"{where}.{name}", record[name], problem)


def _check_list(value: Any, where: str, item: Callable[[Any, str], None], non_empty: bool = False) -> None:
    if not isinstance(value, list) or (non_empty and not value):
        raise BadDocument(f"field '{where}' must be a {'non-empty ' if non_empty else ''}list")
    for number, element in enumerate(value):
        item(element, f"{where}[{number}]")


def _text_item(value: Any, where: str) -> None:
    if _text(value):
        raise _refuse(where, value, "a string")


def _root_item(value: Any, where: str) -> None:
    _check_fields(value, ROOT, where, ("name", "path", "kind"))


def _volume_item(value: Any, where: str) -> None:
    _check_fields(value, VOLUME, where, ("name", "path", "size", "sha256"))


def _link_item(value: Any, where: str) -> None:
    """A chain link a meta will list (plan.parent_chain, chain.snapshots): as chain.py trusts them."""
    try:
        validate_link(value, where)
    except ChainBroken as exc:
        raise BadDocument(f"field {exc}") from None


def _skipped_item(value: Any, where: str) -> None:
    # an entry a backup could not read: named in a warning and (unsealed) in the meta
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        raise _refuse(where, value, "an object with a path")


def _id_item(value: Any, where: str) -> None:
    if _ID(value):
        raise _refuse(where, value, "a snapshot id")


# Keys whose values are file paths: a name that is not valid UTF-8 rides in them as surrogate
# escapes. Anywhere else a lone surrogate is a damaged document (and could not be written into
# a meta or a log line).
PATH_KEYS = ("path", "dir", "index", "work_dir", "cache_dir", "home")


def _check_text(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            if _text(key):
                raise BadDocument(f"field '{where}' holds a key that is not valid Unicode text")
            if not (key in PATH_KEYS and isinstance(child, str)):
                _check_text(child, f"{where}.{key}")
    elif isinstance(value, list):
        for number, child in enumerate(value):
            _check_text(child, f"{where}[{number}]")
    elif isinstance(value, str) and _text(value):
        raise BadDocument(f"field '{where}' is not valid Unicode text")


def check_shape(doc: dict) -> None:
    """BadDocument naming the first field of a wrong type, out of range, or missing from its section."""
    for key, value in doc.items():
        _check_text(value, key)
    _check_fields(doc, TOP, "document")
    if "chain" in doc:
        # what ocb-pull reads besides the sections it asks for itself
        for name in ("store", "settings"):
            if name not in doc:
                raise BadDocument(f"field '{name}' is missing: a restore document from ocb-chain has it")
    for name, (checks, required) in SECTIONS.items():
        if name in doc:
            _check_fields(doc[name], checks, name, required)
    settings_ = doc.get("settings")
    if isinstance(settings_, dict):
        _check_dirs(settings_)
        for key in ("excludes", "includes"):
            if key in settings_:
                _check_list(settings_[key], f"settings.{key}", _text_item)
        if "roots" in settings_:
            _check_list(settings_["roots"], "settings.roots", _root_item)
    plan = doc.get("plan")
    if isinstance(plan, dict):
        _check_list(plan.get("roots"), "plan.roots", _root_item, non_empty=True)
        _check_list(plan.get("parent_chain"), "plan.parent_chain", _link_item)
        links = plan["parent_chain"]
        if links and (links[0]["backup_type"] != "full" or any(l["backup_type"] != "incremental" for l in links[1:])):
            raise BadDocument("field 'plan.parent_chain' must be a full snapshot followed by incrementals")
        if (plan["type"] == "incremental") != bool(links) or (links and links[-1]["id"] != plan["parent"]):
            raise BadDocument("field 'plan.parent_chain' must be the chain of plan.parent (empty for a full snapshot)")
        for key, item in (("missing_roots", _text_item), ("reasons", _text_item), ("chain", _id_item)):
            if key in plan:
                _check_list(plan[key], f"plan.{key}", item)
        changes = plan.get("changes")
        if "changes" in plan:  # counts of entries and bytes, copied into the meta
            _check_fields(changes, dict.fromkeys(changes, _SIZE) if isinstance(changes, dict) else {}, "plan.changes")
    for name in ("plan", "archive"):
        if isinstance(doc.get(name), dict) and "skipped" in doc[name]:
            _check_list(doc[name]["skipped"], f"{name}.skipped", _skipped_item)
    if isinstance(doc.get("volumes"), dict):
        _check_list(doc["volumes"]["files"], "volumes.files", _volume_item, non_empty=True)
    if doc.get("kind") == "backup" and isinstance(settings_, dict) and isinstance(doc.get("id"), str):
        _check_work_paths(doc, os.path.join(settings_["work_dir"], doc["id"]))
    chain_ = doc.get("chain")
    if isinstance(chain_, dict) and "legacy" in chain_:
        from . import legacy  # imported when needed: it pulls in the seal and the stores

        try:  # the legacy script's backups: their own links (legacy.py), their meta as read
            legacy.check_section(chain_)
        except ChainBroken as exc:
            raise BadDocument(f"field {exc}") from None
        if "meta" in doc and not isinstance(doc["meta"], dict):
            raise BadDocument("field 'meta' is missing or not an object")
    elif isinstance(chain_, dict):
        _check_list(chain_["snapshots"], "chain.snapshots", _link_item, non_empty=True)
        if "meta" in doc:
            _check_meta(doc["meta"], chain_["target"])


def _check_work_paths(doc: dict, snapshot_dir: str) -> None:
    """Every work file of a backup lives in its snapshot's own work dir, which stages fill,
    consume and remove: a path elsewhere would have them write or delete outside it."""
    found = [(f"{name}.{key}", doc[name].get(key)) for name, key in
             (("plan", "dir"), ("plan", "index"), ("archive", "path"), ("archive", "index"), ("seal", "path"))
             if isinstance(doc.get(name), dict) and key in doc[name]]
    volumes = doc.get("volumes")
    if isinstance(volumes, dict):
        found += [(f"volumes.files[{n}].path", v.get("path")) for n, v in enumerate(volumes.get("files") or [])]
    real_dir = os.path.realpath(snapshot_dir)
    for where, path in found:
        if os.path.commonpath([real_dir, os.path.realpath(path)]) != real_dir:
            raise BadDocument(f"field '{where}' = {path!r} is outside the work dir {snapshot_dir}")


def _check_meta(meta: Any, target: str) -> None:
    """The meta ocb-chain read and checked: a document's copy must still resolve the same way."""
    if not isinstance(meta, dict):
        raise BadDocument("field 'meta' is missing or not an object")
    try:
        resolve(meta, target)
    except ChainBroken as exc:
        raise BadDocument(f"field 'meta': {exc}") from None


def _check_dirs(settings_: dict) -> None:
    for key in ("work_dir", "cache_dir"):
        if os.path.lexists(settings_[key]) and not os.path.isdir(settings_[key]):
            # stages make folders under it: a file there is a document that lost its world
            raise BadDocument(f"field 'settings.{key}' = {settings_[key]!r} is not a directory")
