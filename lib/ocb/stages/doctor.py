"""Summary: check that this set-up is going to work: store, token, privacy, password, sources, disk.

Usage: ocb-doctor [--store URL] > doctor.json

Reads:   nothing on stdin; the settings (as ocb-plan resolves them), the store's pointer,
         catalog and one listing of the snapshot folder; on the Hub also who the token is
         (whoami) and the repo's visibility; for a sealed latest snapshot the first bytes
         of one volume (its seal header: the password is checked without a download).
         Checks, in order, each "ok" or a problem with its fix:
           store     reachable (a store that does not exist yet: the first backup makes it)
           token     valid and able to write (Hub: the token's role or fine-grained scopes;
                     a folder: writable by this user)
           private   the repo is private (a public one is a warning, or the refusal below)
           password  set when the latest snapshot is sealed, and right for it
           sealed    no unsealed snapshot published after a sealed one (ocb-check's rule)
           sources   the state dir exists and every present source is readable
           disk      free space in the work dir for the largest volume of the store
           limits    the store's distance to the backend's limits (Hub: 10,000 entries per
                     folder, 100,000 files per repo, 100 GB of private storage on a free
                     account); a problem at the limit, a warning from 80 % of it
         Refuses (exit 2) when the next backup would put unsealed snapshots of ~/.ssh or
         ~/.env.d into a public repo.
Writes:  a `doctor` document: {store, checks: [{name, ok, message, fix, code}], problems,
         warnings, limits: {name: {used, limit}}, stats}. Each problem and warning also goes
         to stderr with its fix.
Environment: everything ocb-plan reads (OCB_STORE, OCB_STATE_DIR and the roots, OCB_WORK_DIR,
  OCB_PRIVATE, OCB_SEAL, ...), HF_TOKEN, HF_ENDPOINT, OCB_PASSWORD or OCB_PASSWORD_FILE.
Example: ocb-doctor | jq '.doctor'
Exit status: 0 nothing wrong (warnings allowed); 2 the public-repo refusal, a bad flag or env
             value, a missing state dir or password; otherwise the code of the first problem
             found: 13 token refused or unable to write, 4 wrong password or a planted
             snapshot, 14 store unreachable, 1 unreadable source, no disk space, a limit
             reached.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import time
from dataclasses import dataclass

from .. import DOC_VERSION, config, seal, verify
from ..errors import (
    CredentialsRefused,
    IntegrityError,
    OcbError,
    RuntimeFailure,
    SealBroken,
    TemporarilyUnavailable,
    UsageError,
    WrongPassword,
)
from ..log import log
from ..snapshot import META_SUFFIX, VOLUME_NAME
from ..stores import open_store
from ..stores.base import Access, Store

STARTS_DOCUMENT = True
KIND = "doctor"
NEEDS: tuple[str, ...] = ()

# what an unsealed snapshot must never carry into a public repo: the root names of ~/.ssh, ~/.env.d
SECRET_ROOTS = ("root-ssh", "root-env")
WARN_AT = 0.8  # of a backend limit
ERRORS = {1: RuntimeFailure, 2: UsageError, 4: IntegrityError, 13: CredentialsRefused, 14: TemporarilyUnavailable}
TOKENS_PAGE = "https://huggingface.co/settings/tokens"


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    fix: str | None = None
    code: int | None = None  # the exit status a problem stands for; None for ok and warnings
    warning: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "message": self.message, "fix": self.fix, "code": self.code}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (overrides OCB_STORE)")


def run(doc: dict, args: argparse.Namespace) -> dict:
    started = time.monotonic()
    env = config.load_environment()
    settings = config.resolve_settings(env, "backup")
    store_url = config.resolve_store(env, args.store)
    password = config.seal_password(env)
    store = open_store(store_url, settings, config.store_secrets(env))
    doc.update({"ocb": DOC_VERSION, "store": store_url, "settings": settings.as_dict()})
    checks: list[Check] = []
    limits: dict[str, dict] = {}

    access, known, listing, pointer = _store_checks(store, settings.path_prefix, checks)
    if access is not None:
        checks.append(_privacy(access, settings, env, store_url))
        checks.append(_password(store, settings.path_prefix, pointer, known, password))
        sealed_problems, sealed_warnings = verify.unsealed_findings(known)
        checks.extend(Check("sealed", False, f.message, f.fix, 4) for f in sealed_problems)
        checks.extend(Check("sealed", True, f.message, f.fix, warning=True) for f in sealed_warnings)
        if not sealed_problems and not sealed_warnings:
            checks.append(Check("sealed", True, "no unsealed snapshot in a sealed store"))
    checks.extend(_sources(env))
    checks.append(_disk(settings.work_dir, listing))
    if access is not None:
        checks.extend(_limits(store, listing, access, limits))

    problems = [c for c in checks if not c.ok]
    warnings = [c for c in checks if c.ok and c.warning]
    doc["doctor"] = {"store": store_url, "checks": [c.as_dict() for c in checks],
                     "problems": [c.as_dict() for c in problems], "warnings": [c.as_dict() for c in warnings],
                     "limits": limits, "stats": {"seconds": round(time.monotonic() - started, 3)}}
    for check in checks:
        if not check.ok:
            log.error(f"{check.name}: {check.message} (fix: {check.fix})")
        elif check.warning:
            log.warning(f"{check.name}: {check.message} (fix: {check.fix})")
        else:
            log.info(f"{check.name}: ok: {check.message}")
    if problems:
        refused = [p for p in problems if p.name == "private"]
        first = refused[0] if refused else problems[0]
        code = first.code or 1
        raise ERRORS.get(code, RuntimeFailure)(
            f"{len(problems)} problem(s): " + "; ".join(f"{p.name}: {p.message}" for p in problems))
    log.info(f"{store_url}: every check passed" + (f" ({len(warnings)} warnings)" if warnings else ""))
    return doc


def _store_checks(store: Store, prefix: str, checks: list[Check]
                  ) -> tuple[Access | None, dict | None, dict[str, tuple[int, str | None]], dict | None]:
    """Reachable, credentials, and what the store holds; (None, ...) when it cannot be read."""
    try:
        access = store.access()
        pointer = store.head().pointer if access.exists else None
        known = store.read_catalog() if access.exists else None
        listing = store.list_file_digests(prefix) if access.exists else {}
    except CredentialsRefused as exc:
        checks.append(Check("token", False, str(exc), f"set HF_TOKEN to a valid token with write access ({TOKENS_PAGE})", 13))
        return None, None, {}, None
    except TemporarilyUnavailable as exc:
        checks.append(Check("store", False, str(exc), "check the network and HF_ENDPOINT, then try again", 14))
        return None, None, {}, None
    except IntegrityError as exc:
        checks.append(Check("store", False, str(exc), "run ocb-check to see what is damaged", 4))
        return None, None, {}, None
    except OcbError as exc:
        checks.append(Check("store", False, str(exc), "check OCB_STORE", exc.code))
        return None, None, {}, None
    if access.exists:
        snapshots = len(known["snapshots"]) if known is not None else sum(1 for n in listing if n.endswith(META_SUFFIX))
        checks.append(Check("store", True, f"{store.url} is reachable and holds {snapshots} snapshots"))
    else:
        checks.append(Check("store", True, f"{store.url} does not exist yet: the first backup creates it"))
    who = f" (as {access.who})" if access.who else ""
    if access.can_write is False:
        hub = store.url.startswith("hf://")
        checks.append(Check("token", False, f"cannot write {store.url}{who}: {access.detail}",
                            f"set HF_TOKEN to a token with write access ({TOKENS_PAGE})" if hub
                            else "make the folder writable by this user, or set OCB_STORE to one that is", 13))
    elif access.can_write is None:
        checks.append(Check("token", True, f"{access.detail}", "a backup tells: ocb-backup", warning=True))
    else:
        checks.append(Check("token", True, f"may write {store.url}{who}: {access.detail}"))
    return access, known, listing, pointer


def _secret_roots(env: config.Environment) -> list[str]:
    """The secret roots (~/.ssh, ~/.env.d) that hold something the next backup would take."""
    found = []
    for root in config.resolve_roots(env):
        if root.name in SECRET_ROOTS and os.path.isdir(root.path):
            try:
                if any(True for _ in os.scandir(root.path)):
                    found.append(root.path)
            except OSError:
                continue
    return found


def _privacy(access: Access, settings: config.Settings, env: config.Environment, url: str) -> Check:
    if access.private is None:
        return Check("private", True, "not a notion of this store (a folder: its permissions decide)")
    if access.private:
        return Check("private", True, "the repo is private" if access.exists
                     else "the first backup creates it private")
    where = "the public repo" if access.exists else "a public repo (OCB_PRIVATE=false)"
    make_private = (f"make the repo private (its Settings page on the Hub)" if access.exists
                    else "unset OCB_PRIVATE (repos are created private)")
    secrets = _secret_roots(env) if not settings.seal else []
    if secrets:
        return Check("private", False, f"refused: the next backup would put unsealed snapshots of "
                     f"{' and '.join(secrets)} into {where} {url}",
                     f"set OCB_PASSWORD so that snapshots are sealed, or {make_private}", 2)
    sealed = "sealed" if settings.seal else "unsealed (no ~/.ssh or ~/.env.d to leak, but every other file is readable)"
    return Check("private", True, f"snapshots go {sealed} to {where} {url}: anyone can download them",
                 make_private, warning=True)


def _latest_link(pointer: dict | None, known: dict | None) -> dict | None:
    meta = (pointer or {}).get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("chain"), list) and meta["chain"]:
        return meta["chain"][-1] if isinstance(meta["chain"][-1], dict) else None
    return None


def _password(store: Store, prefix: str, pointer: dict | None, known: dict | None, password: bytes | None) -> Check:
    link = _latest_link(pointer, known)
    if link is None or not link.get("sealed"):
        if password is not None:
            return Check("password", True, "a password is set: the next snapshot is sealed")
        return Check("password", True, "no password and the latest snapshot is not sealed (none is needed)")
    snapshot_id = link["id"]
    if password is None:
        return Check("password", False, f"the latest snapshot {snapshot_id} is sealed and no password is set",
                     "set OCB_PASSWORD (or OCB_PASSWORD_FILE) to the password it was sealed with", 2)
    volumes = link.get("volumes") or []
    name = volumes[0].get("name") if volumes and isinstance(volumes[0], dict) else None
    if not isinstance(name, str) or not VOLUME_NAME.match(name):
        return Check("password", False, f"the pointer's meta of {snapshot_id} names no volume", "run ocb-check", 4)
    try:
        header = store.read_start(prefix, name, seal.HEADER_SIZE)
        if header is None:
            return Check("password", True, f"this store cannot read a seal header without downloading {name}: "
                         "the password is not checked", "ocb-check --read-data-subset 1% checks it", warning=True)
        seal.SealedReader(io.BytesIO(header), seal.KeyRing(password, config.key_cache()),
                          seal.snapshot_associated_data(snapshot_id))
    except WrongPassword:
        return Check("password", False, f"the password does not open the latest snapshot {snapshot_id}",
                     "set OCB_PASSWORD (or OCB_PASSWORD_FILE) to the password it was sealed with", 4)
    except (SealBroken, IntegrityError) as exc:
        return Check("password", False, f"the seal header of {name} cannot be read: {exc}",
                     "run ocb-check --read-data to see what is damaged", 4)
    return Check("password", True, f"the password opens the latest snapshot {snapshot_id} (its seal header)")


def _sources(env: config.Environment) -> list[Check]:
    checks = []
    present, absent = [], []
    for root in config.resolve_roots(env):
        if not os.path.lexists(root.path):
            if root.required:
                checks.append(Check("sources", False, f"the state dir {root.path} does not exist",
                                    "set OCB_STATE_DIR (or OPENCLAW_STATE_DIR) to the agent's state dir", 2))
            else:
                absent.append(root.name)
            continue
        wanted = os.R_OK | (os.X_OK if root.kind == "dir" else 0)
        if not os.access(root.path, wanted):
            checks.append(Check("sources", False, f"{root.path} ({root.name}) is not readable by this user",
                                "run ocb as the user that owns the agent's state, or fix its permissions", 1))
        else:
            present.append(root.name)
    if not checks:
        checks.append(Check("sources", True, f"{len(present)} sources present ({', '.join(present)})"
                            + (f"; absent, and not needed: {', '.join(absent)}" if absent else "")))
    return checks


def _existing(path: str) -> str:
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _disk(work_dir: str, listing: dict[str, tuple[int, str | None]]) -> Check:
    free = shutil.disk_usage(_existing(work_dir)).free
    sizes = [size for name, (size, _) in listing.items() if VOLUME_NAME.match(name)]
    if not sizes:
        return Check("disk", True, f"{free} bytes free in {work_dir}; the store holds no volume yet")
    largest = max(sizes)
    if free < largest:
        return Check("disk", False, f"{free} bytes free in {work_dir}, the largest volume is {largest} bytes",
                     "free space there, or set OCB_WORK_DIR to a bigger disk (OCB_VOLUME_SIZE makes volumes smaller)", 1)
    return Check("disk", True, f"{free} bytes free in {work_dir}, the largest volume is {largest} bytes")


def _limits(store: Store, listing: dict[str, tuple[int, str | None]], access: Access,
            limits: dict[str, dict]) -> list[Check]:
    if not store.limits:
        return [Check("limits", True, "this store has no limits ocb knows of")]
    used = {"entries_per_folder": len(listing), "files_per_repo": len(listing) + 3,  # pointer, catalog, .gitattributes
            "private_storage_bytes": sum(size for size, _ in listing.values())}
    return limit_checks(used, store.limits, access.private is not False, limits)


def limit_checks(used: dict[str, int], backend: dict[str, int], private: bool, report: dict[str, dict]) -> list[Check]:
    """The store's distance to each of the backend's limits (recorded in `report`): a problem
    at the limit, a warning from WARN_AT of it. Private storage counts for private repos only."""
    checks = []
    for name, limit in backend.items():
        if name == "private_storage_bytes" and not private:
            continue
        report[name] = {"used": used.get(name, 0), "limit": limit}
        share = report[name]["used"] / limit
        text = f"{name.replace('_', ' ')}: {report[name]['used']} of {limit} ({share:.0%})"
        fix = "prune old snapshots (ocb-prune), or use a bigger OCB_VOLUME_SIZE for fewer files"
        if share >= 1:
            checks.append(Check("limits", False, f"{text}: at the backend's limit", fix, 1))
        elif share >= WARN_AT:
            checks.append(Check("limits", True, f"{text}: near the backend's limit", fix, warning=True))
    if not checks:
        checks.append(Check("limits", True, "; ".join(
            f"{n.replace('_', ' ')}: {v['used']} of {v['limit']}" for n, v in report.items())))
    return checks
