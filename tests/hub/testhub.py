"""testhub: a local HTTP server that speaks the Hugging Face Hub protocol, for tests.

It owns the subset of the Hub API that `huggingface_hub` 2.x uses over Git LFS (Xet off, as ocb
runs it: docs/hub.md; spec: /work/shared/reference/hub-protocol.md), git-like repo state kept on
disk, fault injection and request counters. It must stay standard-library only, bind 127.0.0.1
only, and never print to stdout except the one ready line. It is a test double, not a Hub: no
Xet CAS (the token endpoints only), no pull requests, no branches other than `main`. Where ocb
could trip it is as strict as the Hub: binary files to LFS, the CDN redirect, storage quotas.

Usage:
    python tests/hub/testhub.py --port 0 --data DIR [--token T] [--read-only-token R]
                                [--lfs-threshold BYTES] [--page-size N] [--orgs A,B] [--verbose]

    --port 0 picks a free port. When ready, exactly one line goes to stdout: http://127.0.0.1:PORT.
    A second port (the CDN, below) is picked by itself.
    Request logs go to stderr with --verbose only. SIGTERM and SIGINT stop it cleanly (exit 0).

Hub behaviour worth knowing in tests:
    - A new repo gets an initial commit holding `.gitattributes`, as on the Hub.
    - Auth: without --token, any bearer token may read and write, and no token may read public
      repos only (private repos answer 404 RepoNotFound, writes 401). With --token T, every Hub
      request without `Authorization: Bearer T` (or R) gets 401 with
      `X-Error-Message: Invalid credentials in Authorization header`. The --read-only-token R may
      read but gets 403 on create, preupload, LFS batch/verify, commit, squash and LFS deletion.
    - Preupload answers "lfs" for files larger than --lfs-threshold bytes (default 10 MiB, the Hub's),
      for files the repo's .gitattributes sends to LFS (`filter=lfs`), and for binary files (a NUL
      byte or non-UTF-8 in the sample) whatever their size. A commit that carries such a file as a
      regular one gets 400 ("...contains binary files...").
    - resolve of an LFS file answers 302 to a signed URL on the CDN, a second loopback port (another
      origin: the client drops Authorization), with X-Linked-Etag, X-Linked-Size, X-Xet-Hash and a
      `Link: <.../xet-read-token/REV>; rel="xet-auth"` as for a Xet-backed file. The CDN serves
      GET/HEAD with Range, counted as cdn_get/cdn_head; a bad signature is 403.
    - Xet: GET /api/{type}s/{repo}/xet-read-token/{rev} and .../xet-write-token/{rev} answer
      {"casUrl", "accessToken", "exp"} (and the X-Xet-* headers) as the Hub; casUrl (/-/cas/...)
      answers 501: there is no CAS, a client on the Xet path fails.
    - GET /api/whoami-v2: user "user", orgs from --orgs (default: every namespace a request has
      named, i.e. a member everywhere), the token's role (write, or read for --read-only-token).
    - Storage quota per namespace (POST /__hub/quota): uploads to its private repos that would pass
      it get 403 "Private repository storage limit reached: ..." at the LFS batch and the commit.
    - A folder holds at most 10,000 entries (files and subfolders, FOLDER_LIMIT), as on the Hub:
      a commit that would leave more in any folder is refused with 400 (BadRequestError).
    - LFS objects live beside the trees and count toward storage until permanently deleted.
      `rewriteHistory: true` removes the pointers from every stored commit (commit ids are kept);
      false leaves them dangling (resolve then answers 404 EntryNotFound).
    - Listings (tree, commits, lfs-files) page at --page-size items (default 50) with an absolute
      `Link: <...>; rel="next"` URL.

Control endpoints (no auth, not counted in stats):
    GET    /__hub/stats          {"requests": N, "commits": N, "lfs_bytes": N, "downloaded_bytes": N,
                                  "faults_fired": N, "by_route": {"commit": N, ...}}
                                  requests: every request outside /__hub/; commits: commits made by
                                  POST .../commit/; lfs_bytes: request bytes received by LFS upload
                                  PUTs (dropped ones included); downloaded_bytes: file bytes sent by
                                  resolve GETs.
    POST   /__hub/stats/reset    zeroes the counters, answers the zeroed stats.
    GET    /__hub/faults         {"rules": [rule + {"seen": N, "fired": N}, ...]}
    POST   /__hub/faults         body: one rule or a list of rules, appended; answers like GET.
    DELETE /__hub/faults         removes every rule.
    POST   /__hub/quota          {"namespace": "ns", "bytes": N or null}: the private storage quota
                                  (null removes it); answers it with "used" (LFS objects and blobs
                                  of the namespace's private repos, history included).
    POST   /__hub/move-head      {"repo": "ns/name", "type": "dataset", "path"?: "other-writer.txt"}
                                  commits a small file on main as "another writer"; answers
                                  {"head": sha}.
    GET    /__hub/repo/{type}/{ns}/{name}   (type: dataset|model|space, or the plural)
                                  {"head": sha, "private": bool, "commits": N (reachable from main),
                                   "files": {path: {"size": N, "sha256": hex, "lfs": bool}},
                                   "lfs_objects": N, "lfs_size": N}

Fault rules (POST /__hub/faults):
    {"route": "commit", "nth": 2, "times": 1, "status": 429, "retry_after": 1, "ratelimit": 55,
     "message": "...", "error_code": "...", "headers": {"X-Any": "..."},
     "delay": 2.0, "answer_delay": 3.0, "drop_after_bytes": 1000}
    - route (required): one of ROUTES below, "resolve" (= resolve_head + resolve_get), "cdn"
      (= cdn_head + cdn_get) or "*".
    - nth (default 1): the rule fires from the nth matching request after it was added.
    - times (default null = forever): how many times it fires.
    - delay: sleep that many seconds, then go on (with status/drop if given, else normally); a
      delay longer than the client's timeout is a stalled connection.
    - answer_delay: do the work (a commit lands), then wait that long before answering: an answer
      that comes after the client's timeout. Excludes status.
    - ratelimit: with status (429), `RateLimit: "api";r=0;t=N` and a RateLimit-Policy, as the Hub
      sends on its API and resolvers (add retry_after only if Retry-After should come too).
    - status (400-599): answer it with {"error": message} and X-Error-Message; retry_after adds
      Retry-After; error_code adds X-Error-Code; headers adds any other header.
    - drop_after_bytes: close the connection after that many bytes: of the request body for
      lfs_upload (nothing is stored, no answer), of the response body for every other route
      (the request is fully processed first: a dropped commit still commits).
    A rule needs at least one of delay, status, drop_after_bytes; status excludes drop_after_bytes.
    Every matching rule counts the request; only the first eligible rule (in order added) fires.

Routes (names used by faults and stats.by_route):
    create, delete_repo, info, tree, paths_info, preupload, lfs_batch, lfs_upload, lfs_verify,
    commit, resolve_head, resolve_get, commits, squash, lfs_files, lfs_delete, validate_yaml,
    agent_harnesses, whoami (GET /api/whoami-v2: role write for --token or any token without
    one, read for --read-only-token), xet_token, cas, cdn_head, cdn_get, unknown. Every 404
    carries X-Error-Code (RepoNotFound, RevisionNotFound,
    EntryNotFound; RouteNotFound for a path testhub does not serve). LFS upload and verify hrefs
    are /-/lfs/{ticket}[/verify] on this server; the ticket is the upload's credential.

Storage under --data (survives restarts; faults, stats and pending upload tickets do not):
    {datasets,models,spaces}/{ns}/{name}/repo.json        {"private", "createdAt", "refs": {"main": sha}}
    .../commits/{sha}.json   {"id", "parents", "title", "message", "date", "author",
                              "tree": {path: {"oid": git blob sha1, "size", "sha256", "lfs": bool}}}
    .../blobs/{git oid}      regular file contents
    .../lfs/{sha256}         LFS objects, with {sha256}.json {"size", "pushedAt", "filename"}
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

DEFAULT_LFS_THRESHOLD = 10 * 1024 * 1024
DEFAULT_PAGE_SIZE = 50
FOLDER_LIMIT = 10_000  # entries (files and folders) directly under one folder, as on the Hub
DEFAULT_BRANCH = "main"
# Used when create_repo is given a bare name: the Hub would take the token owner's namespace.
DEFAULT_NAMESPACE = "user"
AUTHOR = "user"
CHUNK = 64 * 1024

PLURAL_TO_TYPE = {"datasets": "dataset", "models": "model", "spaces": "space"}
TYPE_TO_PLURAL = {singular: plural for plural, singular in PLURAL_TO_TYPE.items()}
# Web, resolve and LFS URLs use these prefixes; models have none (API routes always use the plural).
WEB_PREFIX = {"dataset": "datasets/", "model": "", "space": "spaces/"}

ROUTES = (
    "create", "delete_repo", "info", "tree", "paths_info", "preupload", "lfs_batch", "lfs_upload",
    "lfs_verify", "commit", "resolve_head", "resolve_get", "commits", "squash", "lfs_files",
    "lfs_delete", "validate_yaml", "agent_harnesses", "whoami", "xet_token", "cas", "cdn_head", "cdn_get",
    "unknown",
)
ROUTE_GROUPS = {"resolve": {"resolve_head", "resolve_get"}, "cdn": {"cdn_head", "cdn_get"}, "*": set(ROUTES)}

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
READ_ONLY_TOKEN = "Forbidden: this token is read-only and lacks write access"
STALE_PARENT = "A commit has happened since. Please refresh and try again."
STORAGE_LIMIT = "Private repository storage limit reached"
BINARY_REJECTED = ("Your push was rejected because it contains binary files. Please use "
                   "https://huggingface.co/docs/hub/xet to store binary files.")
# how much of a file the client's preupload sample carries, and the Hub's binary test reads
SAMPLE_BYTES = 512

# Like the Hub: letters, digits, '-', '_', '.'; no leading/trailing '-' or '.', no '--' or '..'.
NAME_RE = re.compile(r"^(?![-.])(?!.*(?:--|\.\.))[A-Za-z0-9_.-]{1,96}(?<![-.])$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
PARENT_RE = re.compile(r"^[0-9a-fA-F]{5,40}$")

GITATTRIBUTES = b"""*.7z filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
"""


class HubError(Exception):
    """An error answer: status, JSON {"error": message} body and the Hub's error headers."""

    def __init__(self, status: int, message: str, code: str | None = None, *,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        # The client maps 404s by X-Error-Code alone; a 404 without it breaks repo_exists & co.
        assert status != 404 or code, "every 404 needs an X-Error-Code"
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


def now_iso() -> str:
    # The client only parses dates ending in "Z".
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically so a killed server never leaves a half-written state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def is_binary(sample: bytes) -> bool:
    """The Hub's test on a file's first bytes: a NUL byte, or not UTF-8 text."""
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        # a sample cut inside a multi-byte character is still text
        return e.start < len(sample) - 3
    return False


def lfs_patterns(tree: dict[str, dict[str, Any]], repo: "Repo") -> list[str]:
    """The patterns the repo's .gitattributes sends to LFS (`filter=lfs`)."""
    entry = tree.get(".gitattributes")
    if entry is None or entry["lfs"]:
        return []
    text = repo.blob_path(entry["oid"]).read_text(errors="replace")
    return [line.split()[0] for line in text.splitlines()
            if line.strip() and not line.startswith("#") and "filter=lfs" in line.split()[1:]]


def matches_lfs(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in pattern else name, pattern) for pattern in patterns)


def valid_repo_id(repo_id: str) -> bool:
    parts = repo_id.split("/")
    return len(parts) == 2 and all(NAME_RE.match(part) for part in parts)


def valid_path_in_repo(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and all(part not in ("", ".", "..") for part in parts) and parts[0] != ".git"


# --------------------------------------------------------------------------------------------
# Repository state on disk


@dataclass(frozen=True)
class Repo:
    """One repo's directory: refs in repo.json, commits as JSON, blobs and LFS objects as files."""

    root: Path
    rtype: str
    repo_id: str

    @property
    def meta_path(self) -> Path:
        return self.root / "repo.json"

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def meta(self) -> dict[str, Any]:
        if not self.exists():
            raise HubError(404, f"Repository Not Found: {self.repo_id}", "RepoNotFound")
        return read_json(self.meta_path)

    def save_meta(self, meta: dict[str, Any]) -> None:
        write_json(self.meta_path, meta)

    def commit(self, sha: str) -> dict[str, Any]:
        return read_json(self.root / "commits" / f"{sha}.json")

    def commit_ids(self) -> list[str]:
        return [p.stem for p in (self.root / "commits").glob("*.json")]

    def head(self, branch: str) -> str:
        sha = self.meta()["refs"].get(branch.removeprefix("refs/heads/"))
        if sha is None:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        return sha

    def resolve(self, rev: str) -> dict[str, Any]:
        """A branch name or a full commit id → that commit."""
        if COMMIT_RE.match(rev) and (self.root / "commits" / f"{rev}.json").is_file():
            return self.commit(rev)
        return self.commit(self.head(rev))

    def history(self, sha: str) -> list[dict[str, Any]]:
        """First-parent history, newest first, like `git log --first-parent`."""
        commits = []
        next_sha: str | None = sha
        while next_sha:
            commit = self.commit(next_sha)
            commits.append(commit)
            next_sha = commit["parents"][0] if commit["parents"] else None
        return commits

    def add_commit(self, parents: list[str], tree: dict[str, dict[str, Any]], title: str,
                   message: str) -> str:
        date = now_iso()
        # Unlike git, ids need not be reproducible; the nonce keeps two identical commits made
        # in the same millisecond (same parent, same tree) from colliding.
        payload = json.dumps([parents, tree, title, message, date, secrets.token_hex(8)], sort_keys=True)
        sha = hashlib.sha1(payload.encode()).hexdigest()
        write_json(self.root / "commits" / f"{sha}.json", {
            "id": sha, "parents": parents, "title": title, "message": message, "date": date,
            "author": AUTHOR, "tree": tree,
        })
        return sha

    def move_branch(self, branch: str, sha: str) -> None:
        meta = self.meta()
        meta["refs"][branch] = sha
        self.save_meta(meta)

    def store_blob(self, data: bytes) -> dict[str, Any]:
        """Store a regular file's content; return its tree entry."""
        oid = git_blob_oid(data)
        path = self.blob_path(oid)
        if not path.exists():
            write_bytes(path, data)
        return {"oid": oid, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "lfs": False}

    def blob_path(self, oid: str) -> Path:
        return self.root / "blobs" / oid

    def lfs_path(self, sha256: str) -> Path:
        return self.root / "lfs" / sha256

    def lfs_meta_path(self, sha256: str) -> Path:
        return self.root / "lfs" / f"{sha256}.json"

    def lfs_meta(self, sha256: str) -> dict[str, Any] | None:
        path = self.lfs_meta_path(sha256)
        if not (path.is_file() and self.lfs_path(sha256).is_file()):
            return None
        return read_json(path)

    def lfs_objects(self) -> list[tuple[str, dict[str, Any]]]:
        objects = []
        for meta_path in sorted((self.root / "lfs").glob("*.json")):
            meta = self.lfs_meta(meta_path.stem)
            if meta is not None:
                objects.append((meta_path.stem, meta))
        return objects


def lfs_entry(sha256: str, size: int) -> dict[str, Any]:
    # The tree's git oid of an LFS file is the oid of its pointer file, as in git.
    return {"oid": git_blob_oid(lfs_pointer(sha256, size)), "size": size, "sha256": sha256, "lfs": True}


def tree_item(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "path": path, "size": entry["size"], "oid": entry["oid"]}
    if entry["lfs"]:
        pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
        item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
    return item


def folder_item(tree: dict[str, dict[str, Any]], folder: str) -> dict[str, Any]:
    prefix = folder + "/"
    listing = "".join(f"{p} {e['oid']}\n" for p, e in sorted(tree.items()) if p.startswith(prefix))
    return {"type": "directory", "path": folder, "oid": hashlib.sha1(listing.encode()).hexdigest()}


def list_tree(tree: dict[str, dict[str, Any]], folder: str, recursive: bool) -> list[dict[str, Any]]:
    """Items under `folder` ("" = root): files and implied folders, sorted by path."""
    prefix = folder + "/" if folder else ""
    under = [p for p in tree if p.startswith(prefix)]
    if folder and not under:
        raise HubError(404, f"Folder not found: {folder}", "EntryNotFound")
    files, folders = [], set()
    for path in under:
        parts = path[len(prefix):].split("/")
        depth = len(parts) if recursive else 1
        folders.update(prefix + "/".join(parts[:i]) for i in range(1, min(depth, len(parts) - 1) + 1))
        if recursive or len(parts) == 1:
            files.append(path)
    items = [tree_item(p, tree[p]) for p in files] + [folder_item(tree, f) for f in folders]
    return sorted(items, key=lambda item: item["path"])


def path_item(tree: dict[str, dict[str, Any]], path: str) -> dict[str, Any] | None:
    if path in tree:
        return tree_item(path, tree[path])
    if any(p.startswith(path + "/") for p in tree):
        return folder_item(tree, path)
    return None


def check_tree(tree: dict[str, dict[str, Any]]) -> None:
    """Reject a tree where a path is both a file and a folder, which git cannot hold, or where
    a folder holds more than FOLDER_LIMIT entries (files and folders), as the Hub does."""
    children: dict[str, set[str]] = {}
    for path in tree:
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in tree:
                raise HubError(400, f"'{path}' conflicts with the file '{parent}'")
        for i in range(len(parts)):
            children.setdefault("/".join(parts[:i]), set()).add(parts[i])
    for folder, names in children.items():
        if len(names) > FOLDER_LIMIT:
            raise HubError(400, f"Too many files in '{folder or '/'}': a folder can hold at most {FOLDER_LIMIT} "
                                f"entries (files and folders), this commit would leave {len(names)}")


class Store:
    """All repos under the data directory; one lock serialises every read-modify-write."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.RLock()
        self.quotas: dict[str, int] = {}  # namespace -> bytes of private storage allowed

    def private_bytes(self, namespace: str) -> int:
        """Bytes the namespace's private repos hold: LFS objects and blobs, history included."""
        total = 0
        for plural in TYPE_TO_PLURAL.values():
            for repo_dir in (self.root / plural / namespace).glob("*"):
                meta = repo_dir / "repo.json"
                if not (meta.is_file() and read_json(meta)["private"]):
                    continue
                for kind in ("lfs", "blobs"):
                    total += sum(f.stat().st_size for f in (repo_dir / kind).glob("*")
                                 if f.is_file() and not f.name.endswith(".json") and not f.name.startswith("."))
        return total

    def check_quota(self, repo: "Repo", adding: int) -> None:
        """403 with the Hub's message when `adding` bytes would take a private repo's namespace
        past its quota (POST /__hub/quota)."""
        namespace = repo.repo_id.split("/")[0]
        quota = self.quotas.get(namespace)
        if quota is None or adding <= 0 or not repo.meta()["private"]:
            return
        used = self.private_bytes(namespace)
        if used + adding > quota:
            raise HubError(403, f"{STORAGE_LIMIT}: {namespace} uses {used} of its {quota} bytes of private "
                                "storage. Upgrade your plan or free up space to upload more.")

    def repo(self, rtype: str, repo_id: str) -> Repo:
        # Validating here also keeps '..' and friends from ever reaching the filesystem.
        if rtype not in WEB_PREFIX or not valid_repo_id(repo_id):
            raise HubError(404, f"Repository Not Found: {repo_id}", "RepoNotFound")
        return Repo(self.root / TYPE_TO_PLURAL[rtype] / repo_id, rtype, repo_id)

    def create(self, rtype: str, repo_id: str, private: bool) -> tuple[Repo, bool]:
        """Create the repo with the Hub's initial commit; return (repo, created)."""
        repo = self.repo(rtype, repo_id)
        with self.lock:
            if repo.exists():
                return repo, False
            tree = {".gitattributes": repo.store_blob(GITATTRIBUTES)}
            sha = repo.add_commit([], tree, "initial commit", "")
            repo.save_meta({"private": private, "createdAt": now_iso(), "refs": {DEFAULT_BRANCH: sha}})
            return repo, True


# --------------------------------------------------------------------------------------------
# Faults and counters (in memory)


FAULT_KEYS = {"route", "nth", "times", "status", "retry_after", "ratelimit", "message", "error_code", "headers",
              "delay", "answer_delay", "drop_after_bytes"}


@dataclass
class FaultRule:
    route: str
    nth: int = 1
    times: int | None = None
    status: int | None = None
    retry_after: int | None = None
    ratelimit: int | None = None
    message: str | None = None
    error_code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    answer_delay: float = 0.0
    drop_after_bytes: int | None = None
    seen: int = 0
    fired: int = 0

    @classmethod
    def parse(cls, raw: Any) -> FaultRule:
        if not isinstance(raw, dict):
            raise HubError(400, "a fault rule must be a JSON object")
        unknown = set(raw) - FAULT_KEYS
        if unknown:
            raise HubError(400, f"unknown fault rule keys: {sorted(unknown)}")
        try:
            rule = cls(**raw)
        except TypeError as e:
            raise HubError(400, f"bad fault rule: {e}") from e
        rule.validate()
        return rule

    def validate(self) -> None:
        def is_int(value: Any, low: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        problems = []
        if self.route not in ROUTES and self.route not in ROUTE_GROUPS:
            problems.append(f"route must be one of {list(ROUTES) + list(ROUTE_GROUPS)}")
        if not is_int(self.nth, 1):
            problems.append("nth must be an integer >= 1")
        if self.times is not None and not is_int(self.times, 1):
            problems.append("times must be null or an integer >= 1")
        if self.status is not None and not (is_int(self.status, 400) and self.status <= 599):
            problems.append("status must be an integer in 400-599")
        if self.retry_after is not None and not is_int(self.retry_after, 0):
            problems.append("retry_after must be an integer >= 0")
        if self.ratelimit is not None and not is_int(self.ratelimit, 0):
            problems.append("ratelimit must be an integer >= 0")
        if not (isinstance(self.headers, dict) and all(isinstance(v, str) for v in self.headers.values())):
            problems.append("headers must map names to strings")
        for name in ("delay", "answer_delay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
                problems.append(f"{name} must be a number >= 0")
        if self.drop_after_bytes is not None and not is_int(self.drop_after_bytes, 0):
            problems.append("drop_after_bytes must be an integer >= 0")
        if self.status is None and self.drop_after_bytes is None and not self.delay and not self.answer_delay:
            problems.append("a rule needs status, delay, answer_delay or drop_after_bytes")
        if self.answer_delay and self.status is not None:
            problems.append("answer_delay and status exclude each other")
        if self.status is not None and self.drop_after_bytes is not None:
            problems.append("status and drop_after_bytes exclude each other")
        if problems:
            raise HubError(400, "bad fault rule: " + "; ".join(problems))

    def matches(self, route: str) -> bool:
        return route in ROUTE_GROUPS.get(self.route, {self.route})

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Faults:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[FaultRule] = []

    def add(self, rules: list[FaultRule]) -> None:
        with self.lock:
            self.rules.extend(rules)

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"rules": [rule.as_json() for rule in self.rules]}

    def pick(self, route: str) -> FaultRule | None:
        """Count the request against every matching rule; return the first one that fires."""
        chosen = None
        with self.lock:
            for rule in self.rules:
                if not rule.matches(route):
                    continue
                rule.seen += 1
                eligible = rule.seen >= rule.nth and (rule.times is None or rule.fired < rule.times)
                if eligible and chosen is None:
                    rule.fired += 1
                    chosen = rule
        return chosen


class Stats:
    COUNTERS = ("requests", "commits", "lfs_bytes", "downloaded_bytes", "faults_fired")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters = dict.fromkeys(self.COUNTERS, 0)
        self.by_route: dict[str, int] = {}

    def reset(self) -> None:
        with self.lock:
            self.counters = dict.fromkeys(self.COUNTERS, 0)
            self.by_route = {}

    def add(self, counter: str, amount: int = 1) -> None:
        with self.lock:
            self.counters[counter] += amount

    def count_request(self, route: str) -> None:
        with self.lock:
            self.counters["requests"] += 1
            self.by_route[route] = self.by_route.get(route, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {**self.counters, "by_route": dict(self.by_route)}


@dataclass(frozen=True)
class Options:
    token: str | None
    read_only_token: str | None
    lfs_threshold: int
    page_size: int
    verbose: bool
    orgs: tuple[str, ...] | None = None  # None: the token's user is in every namespace asked about


@dataclass(frozen=True)
class UploadTicket:
    """What an LFS upload href may write: basic-transfer PUTs carry no auth, so the URL does."""

    repo: Repo
    sha256: str
    size: int


class HubServer(ThreadingHTTPServer):
    """The server and the state its handler threads share.

    ThreadingHTTPServer's threads are daemons, so a delayed or hung request never keeps a
    SIGTERM'd server alive.
    """

    def __init__(self, address: tuple[str, int], data_dir: Path, options: Options) -> None:
        super().__init__(address, HubHandler)
        self.store = Store(data_dir)
        self.options = options
        self.faults = Faults()
        self.stats = Stats()
        self.tickets: dict[str, UploadTicket] = {}
        self.tickets_lock = threading.Lock()
        self.namespaces_asked: set[str] = set()
        # signs the CDN URLs resolve redirects to, as the Hub's CDN URLs are signed
        self.cdn_secret = secrets.token_bytes(16)
        self.cdn = CdnServer(self)

    def cdn_signature(self, path: str) -> str:
        return hmac.new(self.cdn_secret, path.encode(), hashlib.sha256).hexdigest()[:32]

    def serve_cdn(self) -> threading.Thread:
        thread = threading.Thread(target=self.cdn.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        return thread


class CdnServer(ThreadingHTTPServer):
    """The CDN LFS downloads are redirected to: a second loopback port, so the client meets a
    cross-origin redirect (and drops its Authorization header) as with the Hub's CDN. It shares
    the Hub's repos, faults and counters."""

    def __init__(self, hub: HubServer) -> None:
        super().__init__(("127.0.0.1", 0), CdnHandler)
        self.hub = hub
        self.store, self.options, self.faults, self.stats = hub.store, hub.options, hub.faults, hub.stats


# --------------------------------------------------------------------------------------------
# HTTP


class HubHandler(BaseHTTPRequestHandler):
    """One request: route, count, inject faults, authenticate, answer (always with Content-Length)."""

    protocol_version = "HTTP/1.1"
    server: HubServer

    # Per-request state, set in _dispatch.
    access: str  # "anonymous", "read" or "write"
    body: bytes
    body_read: bool
    drop_after: int | None
    answer_delay: float
    request_id: str
    query: dict[str, list[str]]

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base class signature)
        if self.server.options.verbose:
            super().log_message(format, *args)

    # ---- dispatch -------------------------------------------------------------------------

    def _dispatch(self) -> None:
        raw_path, _, raw_query = self.path.partition("?")
        self.query = parse_qs(raw_query)
        self.request_id = uuid.uuid4().hex
        self.drop_after = None
        self.answer_delay = 0.0
        self.body = b""
        self.body_read = False
        # Route on the raw path, then decode each segment: `%2F` inside a revision or a tree path
        # must not split it.
        segments = [unquote(s) for s in raw_path.strip("/").split("/")]
        try:
            if segments[0] == "__hub":
                self._read_body()
                self._control(segments[1:])
                return
            route, handler = self._route(segments)
            self.server.stats.count_request(route)
            # LFS uploads are streamed; every other body is small enough to read up front, which
            # also keeps keep-alive connections in sync when the answer is an error.
            if route != "lfs_upload":
                self._read_body()
            fault = self.server.faults.pick(route)
            if fault is not None:
                self._apply_fault(fault)
            if route != "lfs_upload":
                self._authenticate()
            handler()
        except (BrokenPipeError, ConnectionResetError):
            # the client gave up (its timeout) while we worked or waited: nobody reads the answer
            self.close_connection = True
        except HubError as e:
            self._send_error(e)
        except Exception as e:  # noqa: BLE001 - a bug here must become a 500, not a hung client
            traceback.print_exc(file=sys.stderr)
            self._send_error(HubError(500, f"testhub internal error: {e!r}"))

    def _route(self, s: list[str]) -> tuple[str, Callable[[], None]]:
        method, n = self.command, len(s)
        if s[0] == "api":
            if s[1:] == ["agent-harnesses"] and method == "GET":
                return "agent_harnesses", self._agent_harnesses
            if s[1:] == ["whoami-v2"] and method == "GET":
                return "whoami", self._whoami
            if s[1:] == ["validate-yaml"] and method == "POST":
                return "validate_yaml", self._validate_yaml
            if s[1:] == ["repos", "create"] and method == "POST":
                return "create", self._create
            if s[1:] == ["repos", "delete"] and method == "DELETE":
                return "delete_repo", self._delete_repo
            if n >= 4 and s[1] in PLURAL_TO_TYPE:
                rtype, repo_id, rest = PLURAL_TO_TYPE[s[1]], f"{s[2]}/{s[3]}", s[4:]
                action = rest[0] if rest else None
                if method == "GET" and (not rest or (action == "revision" and len(rest) == 2)):
                    return "info", lambda: self._info(rtype, repo_id, rest[1] if rest else None)
                if method == "GET" and action == "tree" and len(rest) >= 2:
                    return "tree", lambda: self._tree(rtype, repo_id, rest[1], "/".join(rest[2:]))
                if method == "GET" and action == "commits" and len(rest) == 2:
                    return "commits", lambda: self._commits(rtype, repo_id, rest[1])
                if method == "GET" and action in ("xet-read-token", "xet-write-token") and len(rest) == 2:
                    return "xet_token", lambda: self._xet_token(rtype, repo_id, action == "xet-write-token")
                if method == "GET" and rest == ["lfs-files"]:
                    return "lfs_files", lambda: self._lfs_files(rtype, repo_id)
                if method == "POST" and rest == ["lfs-files", "batch"]:
                    return "lfs_delete", lambda: self._lfs_delete(rtype, repo_id)
                posts = {"paths-info": ("paths_info", self._paths_info), "preupload": ("preupload", self._preupload),
                         "commit": ("commit", self._commit), "super-squash": ("squash", self._squash)}
                if method == "POST" and action in posts and len(rest) == 2:
                    name, func = posts[action]
                    return name, lambda: func(rtype, repo_id, rest[1])
        if s[:2] == ["-", "cas"]:
            return "cas", self._cas
        if s[:2] == ["-", "lfs"] and n == 3 and method == "PUT":
            return "lfs_upload", lambda: self._lfs_upload(s[2])
        if s[:2] == ["-", "lfs"] and n == 4 and s[3] == "verify" and method == "POST":
            return "lfs_verify", lambda: self._lfs_verify(s[2])
        # Web-style routes: datasets/ and spaces/ prefixes, none for models.
        rtype, rest = ("model", s) if s[0] not in ("datasets", "spaces") else (PLURAL_TO_TYPE[s[0]], s[1:])
        if len(rest) == 6 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"] \
                and method == "POST":
            repo_id = f"{rest[0]}/{rest[1].removesuffix('.git')}"
            return "lfs_batch", lambda: self._lfs_batch(rtype, repo_id)
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            repo_id, rev, path = f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:])
            return f"resolve_{method.lower()}", lambda: self._resolve(rtype, repo_id, rev, path)
        return "unknown", self._unknown

    def _apply_fault(self, fault: FaultRule) -> None:
        self.server.stats.add("faults_fired")
        if fault.delay:
            time.sleep(fault.delay)
        if fault.drop_after_bytes is not None:
            self.drop_after = fault.drop_after_bytes
        self.answer_delay = fault.answer_delay
        if fault.status is not None:
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            if fault.ratelimit is not None:
                # as the Hub sends on a 429 of its API and resolvers, often without Retry-After
                headers["RateLimit"] = f'"api";r=0;t={fault.ratelimit}'
                headers["RateLimit-Policy"] = '"fixed window";"api";q=500;w=300'
            code = fault.error_code or ("EntryNotFound" if fault.status == 404 else None)
            message = fault.message or f"testhub fault: status {fault.status}"
            raise HubError(fault.status, message, code, headers=headers)

    # ---- auth -----------------------------------------------------------------------------

    def _authenticate(self) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        options = self.server.options
        if token is not None and token == options.read_only_token:
            self.access = "read"
        elif options.token is None:
            self.access = "write" if token else "anonymous"
        elif token == options.token:
            self.access = "write"
        else:
            raise HubError(401, INVALID_CREDENTIALS)

    def _require_write(self) -> None:
        if self.access == "anonymous":
            raise HubError(401, "Authorization header is required to write")
        if self.access == "read":
            raise HubError(403, READ_ONLY_TOKEN)

    def _repo(self, rtype: str, repo_id: str, *, write: bool = False) -> Repo:
        self.server.namespaces_asked.add(repo_id.split("/")[0])
        repo = self.server.store.repo(rtype, repo_id)
        # A private repo is invisible, not forbidden, without credentials: same as the Hub.
        if repo.meta()["private"] and self.access == "anonymous":
            raise HubError(404, f"Repository Not Found: {repo_id}", "RepoNotFound")
        if write:
            self._require_write()
        return repo

    # ---- I/O helpers ----------------------------------------------------------------------

    def _read_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.body_read = True

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as e:
            raise HubError(400, f"invalid JSON body: {e}") from e

    def _base_url(self) -> str:
        # URLs handed back (Link, upload hrefs, repo urls) must name the host the client used.
        return f"http://{self.headers.get('Host') or '127.0.0.1:%d' % self.server.server_address[1]}"

    def _web_url(self, repo: Repo) -> str:
        return f"{self._base_url()}/{WEB_PREFIX[repo.rtype]}{repo.repo_id}"

    def _start(self, status: int, length: int, headers: dict[str, str]) -> None:
        if self.answer_delay:
            # the work is done (a commit has landed); only its answer is late
            time.sleep(self.answer_delay)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("X-Request-Id", self.request_id)
        self.send_header("Content-Length", str(length))
        if not self.body_read:
            # An unread request body would be parsed as the next request on this connection.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def _write_body(self, chunks: Iterable[bytes]) -> int:
        """Send the body, or only its first drop_after bytes and then drop the connection."""
        if self.command == "HEAD":
            return 0
        sent = 0
        for chunk in chunks:
            if self.drop_after is not None and sent + len(chunk) > self.drop_after:
                self.wfile.write(chunk[: self.drop_after - sent])
                self.wfile.flush()
                self.close_connection = True
                return self.drop_after
            self.wfile.write(chunk)
            sent += len(chunk)
        return sent

    def _send_bytes(self, status: int, body: bytes, content_type: str,
                    headers: dict[str, str] | None = None) -> None:
        self._start(status, len(body), {"Content-Type": content_type, **(headers or {})})
        self._write_body([body])

    def _send_json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None,
                   content_type: str = "application/json") -> None:
        self._send_bytes(status, json.dumps(obj).encode(), content_type, headers)

    def _send_error(self, e: HubError) -> None:
        headers = {"X-Error-Message": e.message, **e.headers}
        if e.code:
            headers["X-Error-Code"] = e.code
        self._send_json({"error": e.message, **e.extra}, e.status, headers)

    def _send_page(self, items: list[Any]) -> None:
        """One page of a listing, with an absolute Link to the next one as the client needs."""
        size = self.server.options.page_size
        cursor = self.query.get("cursor", ["0"])[0]
        if not cursor.isdigit():
            raise HubError(400, f"invalid cursor: {cursor!r}")
        start = int(cursor)
        headers = {}
        if start + size < len(items):
            query = [(k, v) for k, values in self.query.items() if k != "cursor" for v in values]
            query.append(("cursor", str(start + size)))
            next_url = f"{self._base_url()}{self.path.partition('?')[0]}?{urlencode(query)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._send_json(items[start:start + size], headers=headers)

    # ---- control endpoints ----------------------------------------------------------------

    def _control(self, s: list[str]) -> None:
        method, server = self.command, self.server
        if s == ["stats"] and method == "GET":
            return self._send_json(server.stats.snapshot())
        if s == ["stats", "reset"] and method == "POST":
            server.stats.reset()
            return self._send_json(server.stats.snapshot())
        if s == ["faults"] and method in ("GET", "POST", "DELETE"):
            if method == "POST":
                raw = self._json_body()
                server.faults.add([FaultRule.parse(r) for r in (raw if isinstance(raw, list) else [raw])])
            elif method == "DELETE":
                server.faults.clear()
            return self._send_json(server.faults.snapshot())
        if s == ["quota"] and method == "POST":
            body = self._json_body()
            if not (isinstance(body, dict) and isinstance(body.get("namespace"), str)
                    and (body.get("bytes") is None or isinstance(body.get("bytes"), int))):
                raise HubError(400, 'expected {"namespace": "ns", "bytes": N or null}')
            if body.get("bytes") is None:
                server.store.quotas.pop(body["namespace"], None)
            else:
                server.store.quotas[body["namespace"]] = body["bytes"]
            return self._send_json({"namespace": body["namespace"], "bytes": body.get("bytes"),
                                    "used": server.store.private_bytes(body["namespace"])})
        if s == ["move-head"] and method == "POST":
            return self._move_head(self._json_body())
        if len(s) == 4 and s[0] == "repo" and method == "GET":
            rtype = PLURAL_TO_TYPE.get(s[1], s[1])
            return self._send_json(self._repo_state(server.store.repo(rtype, f"{s[2]}/{s[3]}")))
        raise HubError(404, f"unknown control endpoint {method} /__hub/{'/'.join(s)}", "RouteNotFound")

    def _move_head(self, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("repo"), str):
            raise HubError(400, 'expected {"repo": "ns/name", "type": "dataset", "path"?: str}')
        path = body.get("path", "other-writer.txt")
        if not isinstance(path, str) or not valid_path_in_repo(path):
            raise HubError(400, f"invalid path: {path!r}")
        rtype = body.get("type", "dataset")
        repo = self.server.store.repo(PLURAL_TO_TYPE.get(rtype, rtype), body["repo"])
        with self.server.store.lock:
            head = repo.head(DEFAULT_BRANCH)
            tree = dict(repo.commit(head)["tree"])
            # Fresh content each time so every call really changes the tree.
            tree[path] = repo.store_blob(f"written by another writer at {now_iso()} {uuid.uuid4()}\n".encode())
            sha = repo.add_commit([head], tree, f"Update {path} (another writer)", "")
            repo.move_branch(DEFAULT_BRANCH, sha)
        self._send_json({"head": sha})

    def _repo_state(self, repo: Repo) -> dict[str, Any]:
        with self.server.store.lock:
            meta = repo.meta()
            head = meta["refs"][DEFAULT_BRANCH]
            tree = repo.commit(head)["tree"]
            lfs = repo.lfs_objects()
            return {
                "head": head,
                "private": meta["private"],
                "commits": len(repo.history(head)),
                "files": {p: {"size": e["size"], "sha256": e["sha256"], "lfs": e["lfs"]} for p, e in tree.items()},
                "lfs_objects": len(lfs),
                "lfs_size": sum(m["size"] for _, m in lfs),
            }

    # ---- Hub endpoints --------------------------------------------------------------------

    def _unknown(self) -> None:
        raise HubError(404, f"testhub has no route for {self.command} {self.path}", "RouteNotFound")

    def _whoami(self) -> None:
        # the --token is a write token, the --read-only-token a read one (role, as the Hub says)
        if self.access == "anonymous":
            raise HubError(401, INVALID_CREDENTIALS)
        orgs = self.server.options.orgs
        if orgs is None:
            orgs = tuple(sorted(self.server.namespaces_asked - {DEFAULT_NAMESPACE}))
        role = "read" if self.access == "read" else "write"
        self._send_json({"type": "user", "id": "0" * 24, "name": DEFAULT_NAMESPACE, "fullname": "Test User",
                         "orgs": [{"type": "org", "name": org} for org in orgs],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "testhub", "role": role}}})

    def _xet_token(self, rtype: str, repo_id: str, write: bool) -> None:
        """The Xet token endpoints, as the Hub answers them; their casUrl leads to no CAS (ocb
        sends volumes over LFS: docs/hub.md), so a client that takes the Xet path fails here."""
        self._repo(rtype, repo_id, write=write)
        exp = int(time.time()) + 3600
        token = secrets.token_urlsafe(16)
        cas = f"{self._base_url()}/-/cas"
        self._send_json({"casUrl": cas, "accessToken": token, "exp": exp},
                        headers={"X-Xet-Cas-Url": cas, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(exp)})

    def _cas(self) -> None:
        raise HubError(501, "testhub has no Xet CAS: upload over LFS (HF_HUB_DISABLE_XET)")

    def _agent_harnesses(self) -> None:
        raise HubError(404, "no agent harness registry here", "EntryNotFound")

    def _validate_yaml(self) -> None:
        self._send_json({"errors": [], "warnings": []})

    def _create(self) -> None:
        self._require_write()
        body = self._json_body()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise HubError(400, "Missing repo name")
        rtype = body.get("type") or "model"
        if rtype not in WEB_PREFIX:
            raise HubError(400, f"Invalid repo type: {rtype}")
        repo_id = f"{body.get('organization') or DEFAULT_NAMESPACE}/{body['name']}"
        if not valid_repo_id(repo_id):
            raise HubError(400, f"Invalid repo name '{repo_id}': use letters, digits, '-', '_' and '.', "
                                "no leading or trailing '-' or '.', no '--' or '..', at most 96 characters")
        repo, created = self.server.store.create(rtype, repo_id, body.get("visibility") == "private")
        url = self._web_url(repo)
        if not created:
            # The client reads `url` from the 409 when exist_ok=True.
            raise HubError(409, f"You already created this {rtype} repo", extra={"url": url})
        self._send_json({"url": url, "name": repo_id})

    def _delete_repo(self) -> None:
        self._require_write()
        body = self._json_body()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise HubError(400, "Missing repo name")
        repo_id = f"{body.get('organization') or DEFAULT_NAMESPACE}/{body['name']}"
        repo = self.server.store.repo(body.get("type") or "model", repo_id)
        with self.server.store.lock:
            repo.meta()
            trash = repo.root.with_name(f".{repo.root.name}.deleted-{uuid.uuid4().hex}")
            os.replace(repo.root, trash)
        # Renamed first so the repo vanishes atomically; the files go outside the lock.
        shutil.rmtree(trash)
        self._send_json({})

    def _info(self, rtype: str, repo_id: str, rev: str | None) -> None:
        repo = self._repo(rtype, repo_id)
        with self.server.store.lock:
            meta = repo.meta()
            commit = repo.resolve(rev or DEFAULT_BRANCH)
        with_blobs = self.query.get("blobs") == ["true"]
        siblings = []
        for path, entry in sorted(commit["tree"].items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sibling["lfs"] = tree_item(path, entry)["lfs"] | {"sha256": entry["sha256"]}
            siblings.append(sibling)
        namespace = repo_id.split("/")[0]
        self._send_json({
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": namespace,
            "sha": commit["id"], "private": meta["private"], "gated": False, "disabled": False,
            "createdAt": meta["createdAt"], "lastModified": commit["date"], "downloads": 0, "likes": 0,
            "tags": [], "siblings": siblings,
        })

    def _tree(self, rtype: str, repo_id: str, rev: str, folder: str) -> None:
        repo = self._repo(rtype, repo_id)
        with self.server.store.lock:
            commit = repo.resolve(rev)
        recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
        self._send_page(list_tree(commit["tree"], folder.strip("/"), recursive))

    def _paths_info(self, rtype: str, repo_id: str, rev: str) -> None:
        repo = self._repo(rtype, repo_id)
        with self.server.store.lock:
            tree = repo.resolve(rev)["tree"]
        paths = parse_qs(self.body.decode()).get("paths", [])
        items = [path_item(tree, p.strip("/")) for p in paths]
        self._send_json([item for item in items if item is not None])

    def _commits(self, rtype: str, repo_id: str, rev: str) -> None:
        repo = self._repo(rtype, repo_id)
        with self.server.store.lock:
            history = repo.history(repo.resolve(rev)["id"])
        formatted = "formatted" in self.query.get("expand[]", [])
        items = []
        for commit in history:
            item = {"id": commit["id"], "title": commit["title"], "message": commit["message"],
                    "date": commit["date"], "authors": [{"user": commit["author"]}]}
            if formatted:
                item["formatted"] = {"title": commit["title"], "message": commit["message"]}
            items.append(item)
        self._send_page(items)

    def _preupload(self, rtype: str, repo_id: str, rev: str) -> None:
        repo = self._repo(rtype, repo_id, write=True)
        body = self._json_body()
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list) or not all(
                isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int) for f in files):
            raise HubError(400, 'expected {"files": [{"path", "size", "sample"}, ...]}')
        with self.server.store.lock:
            tree = repo.resolve(rev)["tree"]
        answers = []
        patterns = lfs_patterns(tree, repo)
        for f in files:
            current = tree.get(f["path"])
            # The client compares this oid with its own: sha256 for LFS files, git oid otherwise.
            oid = None if current is None else (current["sha256"] if current["lfs"] else current["oid"])
            try:
                sample = base64.b64decode(f.get("sample") or "")
            except ValueError:
                sample = b""
            # as on the Hub: LFS for a file over the threshold, one .gitattributes sends to
            # LFS, or a binary one, whatever its size
            lfs = f["size"] > self.server.options.lfs_threshold or matches_lfs(f["path"], patterns) or is_binary(sample)
            mode = "lfs" if lfs else "regular"
            answers.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json({"files": answers})

    def _lfs_batch(self, rtype: str, repo_id: str) -> None:
        repo = self._repo(rtype, repo_id, write=True)
        body = self._json_body()
        if not isinstance(body, dict) or body.get("operation") != "upload" or not isinstance(body.get("objects"), list):
            raise HubError(400, "only the LFS 'upload' operation is supported")
        answers = []
        incoming = sum(obj["size"] for obj in body["objects"] if isinstance(obj, dict) and isinstance(obj.get("size"), int)
                       and isinstance(obj.get("oid"), str) and repo.lfs_meta(obj["oid"]) is None)
        self.server.store.check_quota(repo, incoming)
        for obj in body["objects"]:
            oid, size = obj.get("oid"), obj.get("size")
            if not (isinstance(oid, str) and SHA256_RE.match(oid) and isinstance(size, int) and size >= 0):
                answers.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "invalid oid or size"}})
                continue
            meta = repo.lfs_meta(oid)
            if meta is not None and meta["size"] == size:
                answers.append({"oid": oid, "size": size})  # already stored: no actions, no upload
                continue
            ticket = secrets.token_urlsafe(16)
            with self.server.tickets_lock:
                self.server.tickets[ticket] = UploadTicket(repo, oid, size)
            base = self._base_url()
            answers.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{base}/-/lfs/{ticket}"},
                "verify": {"href": f"{base}/-/lfs/{ticket}/verify"},
            }})
        self._send_json({"transfer": "basic", "objects": answers}, content_type="application/vnd.git-lfs+json")

    def _ticket(self, ticket: str) -> UploadTicket:
        with self.server.tickets_lock:
            found = self.server.tickets.get(ticket)
        if found is None:
            raise HubError(404, "unknown or expired LFS upload URL", "EntryNotFound")
        return found

    def _lfs_upload(self, ticket_id: str) -> None:
        ticket = self._ticket(ticket_id)
        length = int(self.headers.get("Content-Length") or -1)
        if length != ticket.size:
            raise HubError(400, f"expected {ticket.size} bytes, Content-Length says {length}")
        incoming = ticket.repo.root / "lfs" / f".incoming-{uuid.uuid4().hex}"
        incoming.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        limit = length if self.drop_after is None else min(length, self.drop_after)
        received = 0
        try:
            with open(incoming, "wb") as out:
                while received < limit:
                    chunk = self.rfile.read(min(CHUNK, limit - received))
                    if not chunk:
                        break
                    received += len(chunk)
                    self.server.stats.add("lfs_bytes", len(chunk))
                    digest.update(chunk)
                    out.write(chunk)
            if received < length:
                # Dropped by a fault (or the client went away): no answer, no object.
                self.close_connection = True
                return
            self.body_read = True
            if digest.hexdigest() != ticket.sha256:
                raise HubError(400, f"content does not match the LFS oid {ticket.sha256}")
            with self.server.store.lock:
                os.replace(incoming, ticket.repo.lfs_path(ticket.sha256))
                if not ticket.repo.lfs_meta_path(ticket.sha256).exists():
                    write_json(ticket.repo.lfs_meta_path(ticket.sha256),
                               {"size": ticket.size, "pushedAt": now_iso(), "filename": ""})
        finally:
            incoming.unlink(missing_ok=True)
        self._send_bytes(200, b"", "text/plain")

    def _lfs_verify(self, ticket_id: str) -> None:
        ticket = self._ticket(ticket_id)
        self._repo(ticket.repo.rtype, ticket.repo.repo_id, write=True)
        meta = ticket.repo.lfs_meta(ticket.sha256)
        if meta is None or meta["size"] != ticket.size:
            raise HubError(404, f"LFS object {ticket.sha256} was not uploaded", "EntryNotFound")
        self._send_json({}, content_type="application/vnd.git-lfs+json")

    def _commit(self, rtype: str, repo_id: str, rev: str) -> None:
        repo = self._repo(rtype, repo_id, write=True)
        if self.query.get("create_pr"):
            raise HubError(400, "testhub does not support pull requests")
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except ValueError as e:
            raise HubError(400, f"invalid NDJSON commit payload: {e}") from e
        if not lines or not all(isinstance(line, dict) for line in lines) or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0].get("value") or {}
        parent = header.get("parentCommit")
        if parent is not None and not (isinstance(parent, str) and PARENT_RE.match(parent)):
            raise HubError(400, f"invalid parentCommit: {parent!r}")
        branch = rev.removeprefix("refs/heads/")
        with self.server.store.lock:
            head = repo.head(branch)
            if parent is not None and not head.startswith(parent.lower()):
                raise HubError(412, STALE_PARENT)
            tree = dict(repo.commit(head)["tree"])
            patterns = lfs_patterns(tree, repo)
            new_bytes = 0
            for line in lines[1:]:
                value = line.get("value") or {}
                if line.get("key") == "file" and isinstance(value, dict):
                    data = base64.b64decode(value.get("content", ""))
                    path = value.get("path", "")
                    if is_binary(data[:SAMPLE_BYTES]) or matches_lfs(path, patterns):
                        raise HubError(400, f"{BINARY_REJECTED} ({path})")
                    if not repo.blob_path(git_blob_oid(data)).exists():
                        new_bytes += len(data)
            self.server.store.check_quota(repo, new_bytes)
            touched_lfs: dict[str, str] = {}
            for line in lines[1:]:
                self._apply_operation(repo, tree, line, touched_lfs)
            check_tree(tree)
            sha = repo.add_commit([head], tree, header.get("summary") or "", header.get("description") or "")
            repo.move_branch(branch, sha)
            # list_lfs_files reports a filename; the batch call that stored the object had none.
            for sha256, path in touched_lfs.items():
                meta = repo.lfs_meta(sha256)
                if meta is not None and not meta["filename"]:
                    write_json(repo.lfs_meta_path(sha256), meta | {"filename": path})
        self.server.stats.add("commits")
        self._send_json({"commitUrl": f"{self._web_url(repo)}/commit/{sha}", "commitOid": sha,
                         "success": True, "hookOutput": ""})

    @staticmethod
    def _apply_operation(repo: Repo, tree: dict[str, dict[str, Any]], line: Any,
                         touched_lfs: dict[str, str]) -> None:
        key, value = line.get("key"), line.get("value") or {}
        path = value.get("path", "")
        if key == "deletedFolder":
            folder = path.strip("/")
            doomed = [p for p in tree if p.startswith(folder + "/")]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {folder}", "EntryNotFound")
            for p in doomed:
                del tree[p]
            return
        if not valid_path_in_repo(path):
            raise HubError(400, f"invalid path in commit: {path!r}")
        if key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, f"unsupported encoding for {path}: {value.get('encoding')!r}")
            tree[path] = repo.store_blob(base64.b64decode(value.get("content", "")))
        elif key == "lfsFile":
            sha256 = value.get("oid", "")
            meta = repo.lfs_meta(sha256) if SHA256_RE.match(sha256) else None
            if meta is None or value.get("size", meta["size"]) != meta["size"]:
                raise HubError(400, f"LFS object {sha256} for {path} has not been uploaded")
            tree[path] = lfs_entry(sha256, meta["size"])
            touched_lfs.setdefault(sha256, path)
        elif key == "deletedFile":
            if path not in tree:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            del tree[path]
        else:
            raise HubError(400, f"unsupported commit operation: {key!r}")

    def _squash(self, rtype: str, repo_id: str, rev: str) -> None:
        repo = self._repo(rtype, repo_id, write=True)
        body = self._json_body()
        message = (body or {}).get("message") or f"Super-squash branch '{rev}'"
        branch = rev.removeprefix("refs/heads/")
        title, _, description = message.partition("\n")
        with self.server.store.lock:
            tree = repo.commit(repo.head(branch))["tree"]
            # Old commits stay on disk, unreachable, and their LFS objects keep counting (as on the Hub).
            sha = repo.add_commit([], tree, title, description.strip())
            repo.move_branch(branch, sha)
        self._send_json({"commitOid": sha})

    def _lfs_files(self, rtype: str, repo_id: str) -> None:
        repo = self._repo(rtype, repo_id)
        with self.server.store.lock:
            objects = repo.lfs_objects()
        items = [{"fileOid": sha256, "oid": lfs_entry(sha256, meta["size"])["oid"], "filename": meta["filename"],
                  "pushedAt": meta["pushedAt"], "size": meta["size"]} for sha256, meta in objects]
        self._send_page(sorted(items, key=lambda item: (item["pushedAt"], item["fileOid"])))

    def _lfs_delete(self, rtype: str, repo_id: str) -> None:
        repo = self._repo(rtype, repo_id, write=True)
        body = self._json_body()
        deletions = body.get("deletions") if isinstance(body, dict) else None
        if not isinstance(deletions, dict) or not isinstance(deletions.get("sha"), list):
            raise HubError(400, 'expected {"deletions": {"sha": [...], "rewriteHistory": bool}}')
        doomed = {oid for oid in deletions["sha"] if isinstance(oid, str) and SHA256_RE.match(oid)}
        with self.server.store.lock:
            for sha256 in doomed:
                repo.lfs_path(sha256).unlink(missing_ok=True)
                repo.lfs_meta_path(sha256).unlink(missing_ok=True)
            if deletions.get("rewriteHistory"):
                for sha in repo.commit_ids():
                    commit = repo.commit(sha)
                    kept = {p: e for p, e in commit["tree"].items() if not (e["lfs"] and e["sha256"] in doomed)}
                    if kept != commit["tree"]:
                        write_json(repo.root / "commits" / f"{sha}.json", commit | {"tree": kept})
        self._send_json({})

    def _resolve(self, rtype: str, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(rtype, repo_id)
        with self.server.store.lock:
            commit = repo.resolve(rev)
        entry = commit["tree"].get(path)
        # X-Repo-Commit on the 404 lets the client cache the non-existence.
        not_found = {"X-Repo-Commit": commit["id"]}
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers=not_found)
        headers = {"X-Repo-Commit": commit["id"], "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            if not repo.lfs_path(entry["sha256"]).is_file():
                raise HubError(404, f"The LFS object of {path} was permanently deleted", "EntryNotFound",
                               headers=not_found)
            # as the Hub: a 302 to a signed CDN URL on another origin, the file's etag and size
            # in this answer; the Xet hash and token route as for a Xet-backed file (a client
            # with Xet off ignores them and follows the redirect)
            etag = f'"{entry["sha256"]}"'
            cdn_path = f"/{TYPE_TO_PLURAL[rtype]}/{repo_id}/{entry['sha256']}"
            location = (f"http://127.0.0.1:{self.server.cdn.server_address[1]}{cdn_path}"
                        f"?sig={self.server.cdn_signature(cdn_path)}")
            token_route = f"{self._base_url()}/api/{TYPE_TO_PLURAL[rtype]}/{repo_id}/xet-read-token/{commit['id']}"
            headers.update({"ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(entry["size"]),
                            "Location": location, "X-Xet-Hash": entry["sha256"],
                            "Link": f'<{token_route}>; rel="xet-auth"'})
            body = f"Found. Redirecting to {location}".encode()
            self._start(302, len(body), {"Content-Type": "text/plain; charset=utf-8", **headers})
            self._write_body([body])
            return
        else:
            file = repo.blob_path(entry["oid"])
            headers["ETag"] = f'"{entry["oid"]}"'
        try:
            handle = open(file, "rb")
        except FileNotFoundError:
            raise HubError(404, f"The LFS object of {path} was permanently deleted", "EntryNotFound",
                           headers=not_found) from None
        with handle:
            size = entry["size"]
            start, end = 0, size - 1
            status = 200
            requested = self._parse_range(self.headers.get("Range"), size)
            if requested is not None:
                start, end = requested
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            handle.seek(start)
            self._start(status, end - start + 1, {"Content-Type": "application/octet-stream", **headers})
            sent = self._write_body(self._read_chunks(handle, end - start + 1))
        self.server.stats.add("downloaded_bytes", sent)

    @staticmethod
    def _read_chunks(handle: Any, remaining: int) -> Iterator[bytes]:
        while remaining > 0:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

    @staticmethod
    def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
        """A single `bytes=` range → (first, last); None serves the whole file; 416 if unsatisfiable."""
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
        if match is None or match.groups() == ("", ""):
            return None
        first, last = match.groups()
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start > end or start >= size:
            raise HubError(416, f"Range not satisfiable: {header}", headers={"Content-Range": f"bytes */{size}"})
        return start, end


class CdnHandler(HubHandler):
    """GET/HEAD /{datasets|models|spaces}/{ns}/{name}/{sha256}?sig=...: an LFS object, Range
    honoured, no Authorization needed (the signature is the credential), as a CDN serves it."""

    server: CdnServer  # type: ignore[assignment]

    def do_POST(self) -> None:
        self._cdn_dispatch()

    def do_PUT(self) -> None:
        self._cdn_dispatch()

    def do_DELETE(self) -> None:
        self._cdn_dispatch()

    def _dispatch(self) -> None:
        self._cdn_dispatch()

    def _cdn_dispatch(self) -> None:
        raw_path, _, raw_query = self.path.partition("?")
        self.query = parse_qs(raw_query)
        self.request_id = uuid.uuid4().hex
        self.drop_after = None
        self.answer_delay = 0.0
        self.body = b""
        self.body_read = False
        try:
            self._read_body()
            route = "cdn_head" if self.command == "HEAD" else "cdn_get"
            self.server.stats.count_request(route)
            fault = self.server.faults.pick(route)
            if fault is not None:
                self._apply_fault(fault)
            self._serve(raw_path)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except HubError as e:
            self._send_error(e)
        except Exception as e:  # noqa: BLE001 - a bug here must become a 500, not a hung client
            traceback.print_exc(file=sys.stderr)
            self._send_error(HubError(500, f"testhub CDN internal error: {e!r}"))

    def _serve(self, raw_path: str) -> None:
        segments = [unquote(part) for part in raw_path.strip("/").split("/")]
        signature = self.query.get("sig", [""])[0]
        if self.command not in ("GET", "HEAD") or len(segments) != 4 or segments[0] not in PLURAL_TO_TYPE:
            raise HubError(403, "AccessDenied: not a signed URL of this CDN")
        if not hmac.compare_digest(signature, self.server.hub.cdn_signature(raw_path)):
            raise HubError(403, "AccessDenied: the URL's signature does not match")
        repo = self.server.store.repo(PLURAL_TO_TYPE[segments[0]], f"{segments[1]}/{segments[2]}")
        sha256 = segments[3]
        meta = repo.lfs_meta(sha256) if SHA256_RE.match(sha256) else None
        if meta is None:
            raise HubError(404, "NoSuchKey: the object is gone", "EntryNotFound")
        with open(repo.lfs_path(sha256), "rb") as handle:
            size = meta["size"]
            start, end, status = 0, size - 1, 200
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", "ETag": f'"{sha256}"'}
            requested = self._parse_range(self.headers.get("Range"), size)
            if requested is not None:
                start, end = requested
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            handle.seek(start)
            self._start(status, end - start + 1, headers)
            sent = self._write_body(self._read_chunks(handle, end - start + 1))
        self.server.stats.add("downloaded_bytes", sent)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Local Hugging Face Hub emulator for tests.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--data", type=Path, required=True, help="directory holding the repos")
    parser.add_argument("--token", help="the only token accepted for writes (default: any)")
    parser.add_argument("--read-only-token", help="a token that may read but not write")
    parser.add_argument("--lfs-threshold", type=int, default=DEFAULT_LFS_THRESHOLD,
                        help="files larger than this many bytes are uploaded through LFS")
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, help="items per listing page")
    parser.add_argument("--orgs", help="comma-separated organisations whoami gives the token's user "
                                       "(default: every namespace a request names)")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    if args.page_size < 1 or args.lfs_threshold < 0:
        parser.error("--page-size must be >= 1 and --lfs-threshold >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    orgs = None if args.orgs is None else tuple(o for o in args.orgs.split(",") if o)
    options = Options(args.token, args.read_only_token, args.lfs_threshold, args.page_size, args.verbose, orgs)
    server = HubServer(("127.0.0.1", args.port), args.data, options)
    server.serve_cdn()

    def stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever() to return, so it cannot run in the signal handler,
        # which interrupts serve_forever() on this very thread.
        threading.Thread(target=server.shutdown, daemon=True).start()
        threading.Thread(target=server.cdn.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        server.cdn.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
