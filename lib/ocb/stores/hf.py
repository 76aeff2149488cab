"""The Hugging Face dataset store (`hf://datasets/OWNER/NAME`), through huggingface_hub's HfApi.

One snapshot is ONE `create_commit` (volumes, meta, catalog and pointer together) with
`parent_commit` set to the head the plan saw, so a crash or a rival writer never leaves a
half snapshot and the Hub's 128-commits-per-hour budget is spent one per backup; a removal is
ONE commit of deletions and the new catalog, conflict-checked the same way. Small JSON files
(pointer, meta, catalog) are read with one GET each through the library's own HTTP session,
which also tells the commit they were read at; volumes are downloaded with hf_hub_download
(streamed to the work dir, resumed by the library) and verified against the meta's sha256.

The library retries its upload requests itself but never a commit: 429, 5xx, timeouts and
network errors are waited out here (ocb.retry, within the retry budget, `Retry-After` or the
Hub's `RateLimit` honoured), and a commit whose answer was lost or timed out is looked up
before it is ever repeated; a 412 on the repeat is looked up too (the first one may have
landed meanwhile). Every request times out (settings.hub_timeout) and the library's own
retries keep to the same budget (hf_library). Volumes go over LFS, never Xet (docs/hub.md).
The Hub's limits keep their own reasons: a storage quota or the entries-per-folder limit is
exit 1 saying what to do, never "usage" or "token refused"; a repo that answers 404 is told
apart, where whoami allows it, as missing (a first backup creates it) or unseen (exit 13).
Everything the store needs comes from the settings and secrets handed in: the endpoint (settings.hub_endpoint, which config also reads
from the env file) is passed to every library call, the token likewise; the library's own
environment is never consulted for them.

This module imports huggingface_hub lazily (hf_library, from __init__): checking a URL costs
no library import.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from .. import retry
from ..catalog import NAME as CATALOG
from ..catalog import encode as encode_catalog
from ..catalog import parse as parse_catalog
from ..errors import (
    ChainBroken,
    ChecksumMismatch,
    CredentialsRefused,
    RuntimeFailure,
    StoreConflict,
    StoreMissing,
    TemporarilyUnavailable,
    UsageError,
)
from ..snapshot import POINTER, encode_record, meta_path, parse_pointer, parse_record
from .base import Access, Head, Store, Upload, check_new_catalog, check_removable, check_removal_catalog, verify_volume

if TYPE_CHECKING:
    from ..config import Settings, StoreSecrets

PREFIX = "hf://datasets/"
REPO_TYPE = "dataset"
MAX_REPO_ID = 96
PART = re.compile(r"^[A-Za-z0-9_.-]+$")
RETRIED_STATUSES = (408, 429, 500, 502, 503, 504)
# the Hub's words for its storage quota (403) and its entries-per-folder limit (400)
QUOTA = re.compile(r"storage (limit|quota)|quota (reached|exceeded)", re.I)
FOLDER_LIMIT = re.compile(r"too many (files|entries)|(files|entries) per (directory|folder)", re.I)
FOLDER_MAX = 10_000  # the Hub's hard limit of entries per folder (its 400 past it): the one copy
T = TypeVar("T")


def _library() -> ModuleType:
    from . import hf_library  # a second to import: only when a store is opened

    return hf_library


def _part_problem(part: str, final: bool) -> str | None:
    """What is wrong with one half of a repo id (the Hub's rules), in words; None if nothing."""
    if not part:
        return "is empty"
    if any(c.isspace() for c in part):
        return "contains a space, which a repo id cannot hold"
    bad = sorted({c for c in part if not PART.match(c)})
    if bad:
        return f"contains {', '.join(repr(c) for c in bad)}: only letters, digits, '-', '_' and '.' are allowed"
    if part[0] in "-." or part[-1] in "-.":
        return "starts or ends with '-' or '.'"
    for twice in ("--", ".."):
        if twice in part:
            return f"contains {twice!r}"
    if final and part.endswith(".git"):
        return "ends with '.git'"
    return None


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def token_can_write(whoami: dict, repo_id: str) -> tuple[bool | None, str]:
    """Whether the token whoami-v2 describes may write the dataset repo `repo_id` (or create
    it in its namespace), and why, from the token's role: write, read, or fineGrained with
    scoped permissions ("repo.write" on the repo, or on the user or org that owns it)."""
    token = ((whoami.get("auth") or {}).get("accessToken") or {})
    role = token.get("role")
    if role == "write":
        return True, "the token's role is write"
    if role == "read":
        return False, "the token's role is read"
    if role == "fineGrained":
        owner = repo_id.split("/", 1)[0]
        for scope in (token.get("fineGrained") or {}).get("scoped") or []:
            entity = scope.get("entity") or {}
            if "repo.write" not in (scope.get("permissions") or []):
                continue
            if (entity.get("type") == "dataset" and entity.get("name") == repo_id) or \
                    (entity.get("type") in ("user", "org") and entity.get("name") == owner):
                return True, f"the fine-grained token may write repos of {entity.get('name')}"
        return False, f"the fine-grained token has no repo.write permission on {repo_id} or on {owner}"
    return None, f"the Hub names no role for the token ({role!r})"


def _http_cause(exc: BaseException) -> BaseException:
    """hf_hub_download hides the HTTP error under LocalEntryNotFoundError: the cause counts."""
    cause = exc.__cause__
    return cause if cause is not None and _status(cause) is not None else exc


def _server_message(exc: BaseException) -> str:
    message = getattr(exc, "server_message", None)
    return message or str(exc).splitlines()[0]


def _wait_hint(exc: BaseException, now: float) -> float | None:
    """`Retry-After`, else the Hub's `RateLimit` (it sends either on a 429), as seconds."""
    response = getattr(_http_cause(exc), "response", None)
    if response is None:
        return None
    return retry.wait_hint(response.headers.get("Retry-After"), response.headers.get("RateLimit"), now)


class HfStore(Store):
    scheme = "hf"
    forms = ("hf://datasets/OWNER/NAME", "hf://OWNER/NAME", "OWNER/NAME")
    bare = re.compile(r"^[^/]+/[^/]+$")  # the legacy OPENCLAW_BACKUP_DATASET_REPO form
    folder_limit = FOLDER_MAX

    @classmethod
    def canonical(cls, raw: str, var: str) -> str:
        rest = raw[len("hf://"):].rstrip("/") if raw.startswith("hf://") else raw
        parts = rest.split("/")
        if raw.startswith("hf://") and parts[0] in ("models", "spaces") and len(parts) == 3:
            raise UsageError(f"{var}={raw!r}: backups go to a dataset repo (hf://datasets/OWNER/NAME), "
                             f"not to {parts[0]}")
        if raw.startswith("hf://") and parts[0] == "datasets":
            parts = parts[1:]
        if len(parts) != 2:
            raise UsageError(f"{var}={raw!r}: expected hf://datasets/OWNER/NAME (or OWNER/NAME)")
        for label, part, final in (("owner", parts[0], False), ("repo name", parts[1], True)):
            problem = _part_problem(part, final)
            if problem:
                raise UsageError(f"{var}={raw!r}: the {label} {part!r} {problem}")
        repo_id = "/".join(parts)
        if len(repo_id) > MAX_REPO_ID:
            raise UsageError(f"{var}={raw!r}: the repo id {repo_id!r} is longer than {MAX_REPO_ID} characters")
        return PREFIX + repo_id

    def __init__(self, url: str, settings: Settings, secrets: StoreSecrets) -> None:
        from ..log import log

        self.url = self.canonical(url, "store URL")
        self.repo_id = self.url[len(PREFIX):]
        self.work_dir = settings.work_dir
        self.private = settings.private
        # None: the library's default (huggingface.co)
        self.endpoint = settings.hub_endpoint.rstrip("/") if settings.hub_endpoint else None
        # False, not None, when there is none: the library would look for one itself
        self.token: str | bool = secrets.hf_token or False
        self.policy = retry.Policy(settings.retry_seconds)  # tests replace its sleep and clock
        self.hub = _library()
        self.timeout = settings.hub_timeout
        self.hub.configure(self.timeout)
        self.budget = self.hub.BUDGET
        self.api = self.hub.HfApi(endpoint=self.endpoint, token=self.token)
        # the catalog as last read or written, with the commit it belongs to: a publish or a
        # removal at that commit needs no second read
        self._catalog_seen: tuple[str, dict | None] | None = None
        if not log.progress_enabled:
            # the library draws its own bars on stderr; ours follow OCB_PROGRESS / a terminal
            self.hub.disable_progress_bars()

    # -- error mapping and retries ---------------------------------------------------------

    def _map(self, exc: BaseException, action: str) -> Exception:
        """A library or network exception -> the ocb error with the right exit code."""
        hub = self.hub
        if isinstance(exc, hub.LocalEntryNotFoundError):
            exc = _http_cause(exc)
        status = _status(exc)
        where = f"{self.url}: {action}"
        budget = f"{self.policy.budget:.0f}s (OCB_RETRY_SECONDS)"
        if isinstance(exc, hub.BudgetSpent):
            return TemporarilyUnavailable(f"{where}: gave up at the end of the retry budget of {budget}: {exc}")
        text = _server_message(exc) if status is not None else ""
        if status == 403 and QUOTA.search(text):
            return RuntimeFailure(f"{where}: the Hub's storage quota for this namespace is reached ({text}): "
                                  "free storage with ocb-prune (it deletes pruned volumes for good), delete "
                                  "other private repos, or raise the quota (a paid plan); then back up again")
        if status == 400 and FOLDER_LIMIT.search(text):
            return RuntimeFailure(f"{where}: the Hub refuses more than {FOLDER_MAX:,} entries in one folder "
                                  f"({text}): run ocb-prune to keep fewer snapshots, then back up again")
        if status in (401, 403):
            return CredentialsRefused(f"{where}: the Hub refused the token ({status}): {_server_message(exc)}")
        if isinstance(exc, hub.RepositoryNotFoundError):
            return StoreMissing(f"{where}: the repo {self.repo_id} does not exist or the token cannot see it")
        if status == 412:
            return StoreConflict(f"{where}: another writer committed since this document was planned: re-plan")
        if status in RETRIED_STATUSES:
            return TemporarilyUnavailable(f"{where}: the Hub answered {status} past the retry budget "
                                          f"of {budget}: {_server_message(exc)}")
        if status == 400:
            return UsageError(f"{where}: the Hub refused the request: {_server_message(exc)}")
        if isinstance(exc, hub.TimeoutException):
            return TemporarilyUnavailable(f"{where}: the Hub did not answer within {self.timeout:g}s "
                                          f"(OCB_HUB_TIMEOUT) until the end of the retry budget of {budget}")
        if isinstance(exc, (hub.TransportError, hub.LocalEntryNotFoundError)):
            return TemporarilyUnavailable(f"{where}: the Hub is unreachable past the retry budget of {budget}: {exc}")
        return RuntimeFailure(f"{where}: unexpected answer from the Hub: {_server_message(exc)}")

    def _transient(self, exc: BaseException) -> bool:
        if isinstance(exc, self.hub.BudgetSpent):
            return False
        status = _status(_http_cause(exc))
        return status in RETRIED_STATUSES or (status is None and not isinstance(exc, self.hub.HfHubHTTPError))

    def _retrying(self, action: str, call: Callable[[], T],
                  before_retry: Callable[[BaseException], T | None] | None = None) -> T:
        """`call`, with 429/5xx/network failures waited out within the retry budget, and what
        the library raises mapped to ocb errors."""
        budget = self.budget
        outermost = budget.deadline is None
        if outermost:
            # one deadline for the operation, the library's own retries included (hf_library)
            budget.clock = self.policy.clock
            budget.deadline = self.policy.clock() + self.policy.budget
        try:
            return retry.call(call, self.policy, transient=self._transient, hint=_wait_hint,
                              before_retry=before_retry, catch=self.hub.ERRORS)
        except self.hub.ERRORS as exc:
            raise self._map(exc, action) from None
        finally:
            if outermost:
                budget.deadline = None

    def _looking(self, look: Callable[[], T]) -> T:
        """`look()` (did our commit land?) with time for one request past the deadline: the
        answer decides between success and a needless retry, so it is asked even then."""
        budget = self.budget
        saved = budget.deadline
        if saved is not None:
            budget.deadline = max(saved, budget.clock() + self.timeout + 1)
        try:
            return look()
        finally:
            budget.deadline = saved

    # -- small JSON files: one GET each, which also names the commit ---------------------------

    def _get(self, path: str, revision: str, parse: Callable[[bytes, str], dict]) -> tuple[dict | None, str | None]:
        """(content or None when absent, the commit it was read at, when the Hub says)."""
        hub = self.hub
        url = hub.hf_hub_url(self.repo_id, path, repo_type=REPO_TYPE, revision=revision, endpoint=self.endpoint)

        def fetch() -> tuple[dict | None, str | None]:
            response = hub.get_session().get(url, headers=hub.build_hf_headers(token=self.token))
            commit = response.headers.get("X-Repo-Commit")
            try:
                hub.hf_raise_for_status(response)
            except hub.EntryNotFoundError:
                return None, commit
            except hub.RevisionNotFoundError:
                return None, None  # a repo without its main branch yet: empty
            return parse(response.content, f"{self.url}/{path}"), commit

        return self._retrying(f"read {path}", fetch)

    def exists(self) -> bool:
        return self._retrying("look up the repo", lambda: self.api.repo_exists(self.repo_id, repo_type=REPO_TYPE))

    def _unseen(self) -> str | None:
        """Why a repo that answers 404 may be one the token cannot see (None: it does not
        exist). The Hub answers 404 for both; whoami tells them apart where it can: a token
        of the repo's namespace (the user's own, or an org of theirs) that is not limited to
        some repos sees every repo there, so its 404 means "does not exist"."""
        namespace = self.repo_id.split("/")[0]
        if not self.token:
            return ("no HF_TOKEN is set, and a private repo answers 404 without one: "
                    "whether it exists cannot be told")
        me = self._retrying("ask the Hub whose token this is (whoami)", lambda: self.api.whoami())
        names = {me.get("name")} | {org.get("name") for org in me.get("orgs") or []}
        token = (me.get("auth") or {}).get("accessToken") or {}
        if namespace not in names:
            return (f"the token belongs to {me.get('name')!r}, who is not {namespace!r} nor one of its "
                    "organisations: the repo may exist and be private to them")
        if token.get("role") == "fineGrained" and not any(
                (scope.get("entity") or {}).get("type") in ("user", "org")
                and (scope.get("entity") or {}).get("name") == namespace
                and {"repo.content.read", "repo.write"} & set(scope.get("permissions") or [])
                for scope in (token.get("fineGrained") or {}).get("scoped") or []):
            # granted only some repos, not the whole namespace: a 404 may be one it lacks
            return (f"the token is fine-grained ({token.get('displayName') or 'unnamed'}): it may not be "
                    f"granted this repo; give it read and write access to {self.repo_id}")
        return None

    def head(self) -> Head:
        try:
            pointer, commit = self._get(POINTER, "main", parse_pointer)
        except StoreMissing:
            why = self._unseen()
            if why is not None:
                raise CredentialsRefused(f"{self.url}: the Hub answers that {self.repo_id} does not exist, "
                                         f"but {why}; nothing is read as an empty store") from None
            return Head(None, None)  # no repo yet: a first backup creates it
        if commit is None:
            info = self._retrying("read the repo head", lambda: self.api.repo_info(self.repo_id, repo_type=REPO_TYPE))
            commit = info.sha
        return Head(pointer, commit)

    def read_meta(self, prefix: str, snapshot_id: str) -> dict:
        meta, _ = self._get(meta_path(prefix, snapshot_id), "main", parse_record)
        if meta is None:
            raise ChainBroken(f"snapshot {snapshot_id} has no meta in {self.url}")
        return meta

    def read_catalog(self) -> dict | None:
        try:
            value, commit = self._get(CATALOG, "main", parse_catalog)
        except StoreMissing:
            return None
        if commit is not None:
            self._catalog_seen = (commit, value)
        return value

    def _catalog_at(self, token: str) -> dict | None:
        """The catalog at commit `token`: the one read last if it was read there (a push reads
        it to append to it), else one read at `token`."""
        if self._catalog_seen is not None and self._catalog_seen[0] == token:
            return self._catalog_seen[1]
        value, _ = self._get(CATALOG, token, parse_catalog)
        self._catalog_seen = (token, value)
        return value

    def _paths_at(self, paths: list[str], revision: str) -> dict[str, int]:
        """{path: size} of the files among `paths` that the repo holds at `revision`."""
        return {path: size for path, (size, _) in self._files_at(paths, revision).items()}

    def _files_at(self, paths: list[str], revision: str) -> dict[str, tuple[int, str | None]]:
        """{path: (size, sha256 of its LFS object or None)} of the files among `paths` that
        the repo holds at `revision`."""
        if not paths:
            return {}
        infos = self._retrying("look up files", lambda: self.api.get_paths_info(
            self.repo_id, paths, repo_type=REPO_TYPE, revision=revision))
        found = {}
        for info in infos:
            if info.path not in paths:
                continue
            if not isinstance(info, self.hub.RepoFile):
                raise ValueError(f"{info.path} in {self.url} is not a file: a removal deletes files only")
            found[info.path] = (info.size, info.lfs.sha256 if info.lfs else None)
        return found

    def list_files(self, prefix: str) -> dict[str, int]:
        hub = self.hub

        def listing() -> dict[str, int]:
            try:
                items = self.api.list_repo_tree(self.repo_id, path_in_repo=prefix, repo_type=REPO_TYPE)
                return {item.path.rsplit("/", 1)[-1]: item.size for item in items if isinstance(item, hub.RepoFile)}
            except hub.EntryNotFoundError:
                return {}

        try:
            return self._retrying("list files", listing)
        except StoreMissing:
            return {}

    # the Hub's recommendations (huggingface.co/docs/hub/repositories-recommendations) and
    # a free account's private storage (huggingface.co/docs/hub/storage-limits)
    limits = {"entries_per_folder": FOLDER_MAX, "files_per_repo": 100_000, "private_storage_bytes": 100 * 10**9}

    def list_file_digests(self, prefix: str) -> dict[str, tuple[int, str | None]]:
        hub = self.hub

        def listing() -> dict[str, tuple[int, str | None]]:
            try:
                items = self.api.list_repo_tree(self.repo_id, path_in_repo=prefix, repo_type=REPO_TYPE)
                # an LFS file's sha256 is the Hub's own record of its bytes; a regular file has a
                # git oid only, which the meta's sha256 cannot be compared with
                return {item.path.rsplit("/", 1)[-1]: (item.size, item.lfs.sha256 if item.lfs else None)
                        for item in items if isinstance(item, hub.RepoFile)}
            except hub.EntryNotFoundError:
                return {}

        try:
            return self._retrying("list files", listing)
        except StoreMissing:
            return {}

    def read_start(self, prefix: str, name: str, length: int) -> bytes | None:
        hub = self.hub
        path = f"{prefix}/{name}"
        url = hub.hf_hub_url(self.repo_id, path, repo_type=REPO_TYPE, revision="main", endpoint=self.endpoint)

        def fetch() -> bytes:
            headers = {**hub.build_hf_headers(token=self.token), "Range": f"bytes=0-{max(length, 1) - 1}"}
            response = hub.get_session().get(url, headers=headers)
            try:
                hub.hf_raise_for_status(response)
            except hub.EntryNotFoundError:
                raise ChainBroken(f"volume {name} is missing from {self.url}") from None
            return response.content[:length]  # a server that ignores Range sends it all

        return self._retrying(f"read the start of {name}", fetch)

    def access(self) -> Access:
        hub = self.hub
        if not self.token:
            who, can_write, why = None, False, "no token is set (HF_TOKEN)"
        else:
            whoami = self._retrying("ask who the token belongs to", lambda: self.api.whoami(token=self.token))
            who = whoami.get("name")
            can_write, why = token_can_write(whoami, self.repo_id)

        def info() -> tuple[bool, bool | None]:
            try:
                return True, bool(self.api.repo_info(self.repo_id, repo_type=REPO_TYPE).private)
            except hub.RepositoryNotFoundError:
                return False, self.private  # what the first backup creates it as

        exists, private = self._retrying("look up the repo", info)
        return Access(exists, can_write, private, who, why)

    def read_file(self, path: str) -> bytes | None:
        raw, _ = self._get(path, "main", lambda content, _what: content)  # type: ignore[arg-type, return-value]
        return raw  # type: ignore[return-value]

    def fetch_file(self, path: str, dest_dir: str) -> str:
        hub = self.hub

        def download() -> str:
            try:
                return hub.hf_hub_download(self.repo_id, path, repo_type=REPO_TYPE,
                                           cache_dir=os.path.join(dest_dir, "hf-cache"), token=self.token,
                                           endpoint=self.endpoint)
            except hub.EntryNotFoundError:
                raise ChainBroken(f"{path} is missing from {self.url}") from None

        return self._retrying(f"download {path}", download)

    def fetch_volume(self, prefix: str, name: str, size: int, sha256: str, dest_dir: str) -> str:
        hub = self.hub

        def download() -> str:
            try:
                return hub.hf_hub_download(self.repo_id, f"{prefix}/{name}", repo_type=REPO_TYPE,
                                           cache_dir=os.path.join(dest_dir, "hf-cache"), token=self.token,
                                           endpoint=self.endpoint, etag_timeout=self.timeout)
            except hub.EntryNotFoundError:
                raise ChainBroken(f"volume {name} is missing from {self.url}") from None

        return verify_volume(self._retrying(f"download {name}", download), name, size, sha256, "downloaded")

    # -- writing: one commit each ----------------------------------------------------------------

    def _ensure_repo(self) -> None:
        def create() -> None:
            self.api.create_repo(self.repo_id, repo_type=REPO_TYPE, private=self.private, exist_ok=True)

        self._retrying("create the repo", create)

    def _commit(self, action: str, operations: list[Any], parent: str, message: str,
                landed: Callable[[], dict | None]) -> tuple[dict, int]:
        """ONE create_commit on `parent`, retried within the budget; (commit info, attempts).

        `landed()` is asked after each transient failure before trying again: the answer may
        have been lost while the commit went through (a dict then), or another writer moved
        the head (it raises StoreConflict); a commit is never made twice.
        """
        attempts = 0

        def attempt() -> dict:
            nonlocal attempts
            attempts += 1
            try:
                try:
                    info = self.api.create_commit(self.repo_id, operations, repo_type=REPO_TYPE,
                                                  parent_commit=parent, commit_message=message)
                except RuntimeError as exc:
                    # the library wraps what failed an LFS upload (_commit_api._wrapped_lfs_upload):
                    # the Hub's answer or the network error underneath is what counts
                    cause = exc.__cause__
                    if str(exc).startswith("Error while uploading") and isinstance(cause, self.hub.ERRORS):
                        raise cause from None
                    raise
            except self.hub.HfHubHTTPError as exc:
                if _status(exc) != 412 or attempts == 1:
                    raise
                # the head moved between our tries: by the try whose answer was lost (it
                # landed after the look-up) or by another writer; the head says which
                found = self._looking(landed)
                if found is None:
                    raise
                return found
            except self.hub.BudgetSpent:
                # a 5xx at the end of the budget may still have committed (a gateway timeout)
                found = self._looking(landed)
                if found is None:
                    raise
                return found
            except ValueError as exc:
                # the library's words for per-object errors of the LFS batch call; any other
                # ValueError is a bug of ours and stays one
                reason = str(exc)
                if not reason.startswith("LFS batch API returned errors"):
                    raise
                if QUOTA.search(reason):
                    raise RuntimeFailure(f"{self.url}: {action}: the Hub's storage quota for this namespace is "
                                         f"reached ({reason.splitlines()[-1]}): free storage with ocb-prune, "
                                         "delete other private repos, or raise the quota") from None
                raise RuntimeFailure(f"{self.url}: {action}: the Hub refused an upload: {reason}") from None
            return {"commit": info.oid}

        result = self._retrying(action, attempt, before_retry=lambda exc: self._looking(landed))
        return result, attempts

    def publish(self, prefix: str, snapshot_id: str, uploads: list[Upload], meta: dict,
                pointer: dict, catalog: dict, expect_token: str | None) -> dict:
        hub = self.hub
        meta_file = meta_path(prefix, snapshot_id)
        if expect_token is None:
            # planned against an empty store: it must still be empty (a fresh repo's own first
            # commit is the parent then); one look says whether the meta or a catalog is there
            self._ensure_repo()
            current = self.head()
            if current.pointer is not None:
                raise StoreConflict(f"{self.url}: another writer published {current.snapshot_id} since this "
                                    "document was planned: re-plan")
            if current.token is None:
                raise RuntimeFailure(f"{self.url}: the Hub names no head commit for the repo it created")
            expect_token = current.token
            found = self._paths_at([meta_file, CATALOG], expect_token)
            self._catalog_seen = None
            old = self._catalog_at(expect_token) if CATALOG in found else None
        else:
            old = self._catalog_at(expect_token)
            # a store written before catalogs: nothing lists its snapshots, so look for the meta
            found = self._paths_at([meta_file], expect_token) if old is None else {}
        if meta_file in found:
            raise StoreConflict(f"snapshot {snapshot_id} already exists in {self.url}: re-plan")
        check_new_catalog(catalog, snapshot_id, old, self.url)
        operations = [hub.CommitOperationAdd(f"{prefix}/{u.name}", u.path) for u in uploads]
        for upload, operation in zip(uploads, operations):
            # the library hashes each file as it prepares it: a volume that changed in the work
            # dir since ocb-split recorded it must not be committed under that record
            if operation.upload_info.sha256.hex() != upload.sha256 or operation.upload_info.size != upload.size:
                raise ChecksumMismatch(f"volume {upload.name}: {upload.path} no longer matches the size and sha256 "
                                       "recorded by ocb-split: run the backup pipe again")
        operations.append(hub.CommitOperationAdd(meta_file, encode_record(meta)))
        operations.append(hub.CommitOperationAdd(CATALOG, encode_catalog(catalog)))
        operations.append(hub.CommitOperationAdd(POINTER, encode_record(pointer)))

        def landed() -> dict | None:
            current = self.head()
            if current.snapshot_id == snapshot_id:
                return {"commit": current.token}
            if current.token != expect_token:
                raise StoreConflict(f"{self.url}: another writer committed while this push was retried: re-plan")
            return None

        result, attempts = self._commit(f"commit snapshot {snapshot_id}", operations, expect_token,
                                        f"ocb: snapshot {snapshot_id} ({meta.get('backup_type')})", landed)
        self._catalog_seen = (result["commit"], catalog)
        return {"commit": result["commit"], "commits": 1, "attempts": attempts,
                "bytes_uploaded": sum(u.size for u in uploads)}

    def remove(self, paths: list[str], expect_token: str | None, catalog: dict | None) -> dict:
        hub = self.hub
        check_removable(paths)
        if expect_token is None:
            # planned against a repo that did not exist: nothing to remove, unless it appeared
            if self.head().token is None:
                raise StoreMissing(f"{self.url}: the repo {self.repo_id} does not exist or the token cannot see it")
            raise StoreConflict(f"{self.url}: the repo was created since this removal was planned: re-plan")
        old = self._catalog_at(expect_token)
        check_removal_catalog(catalog, old, paths, self.url)
        files = self._files_at(paths, expect_token)
        present = {path: size for path, (size, _) in files.items()}
        operations: list[Any] = [hub.CommitOperationDelete(path) for path in paths if path in present]
        if catalog is not None:
            operations.append(hub.CommitOperationAdd(CATALOG, encode_catalog(catalog)))
        # the LFS objects the deleted files point to: what reclaim may delete for good
        stats = {"files_removed": len(present), "bytes_removed": sum(present.values()),
                 "objects": sorted({sha for _, sha in files.values() if sha})}
        if not operations:
            return {**stats, "commits": 0}

        def landed() -> dict | None:
            current = self.head()
            if current.token == expect_token:
                return None
            # the head moved: by our commit (its answer lost) or by another writer's; ours
            # landed if the files are gone and the catalog is ours
            assert current.token is not None
            left = self._paths_at(list(present), current.token)
            now = self._catalog_at(current.token) if catalog is not None else None
            if not left and now == catalog:
                return {"commit": current.token}
            raise StoreConflict(f"{self.url}: another writer committed while this removal was retried: re-plan")

        result, _ = self._commit(f"remove {len(present)} files", operations, expect_token,
                                 f"ocb: remove {len(present)} files", landed)
        if catalog is not None:
            self._catalog_seen = (result["commit"], catalog)
        return {**stats, "commits": 1}

    # -- storage: deleting a file frees nothing on the Hub ------------------------------------

    def _referenced_objects(self) -> set[str]:
        """The sha256 of every LFS object a file at the head points to (one recursive listing)."""
        hub = self.hub

        def listing() -> set[str]:
            items = self.api.list_repo_tree(self.repo_id, recursive=True, repo_type=REPO_TYPE)
            return {item.lfs.sha256 for item in items if isinstance(item, hub.RepoFile) and item.lfs}

        return self._retrying("list the repo's files", listing)

    def reclaim(self, candidates: list[str], older_than: dt.datetime) -> dict:
        stored = self._retrying("list the repo's LFS objects",
                                lambda: list(self.api.list_lfs_files(self.repo_id, repo_type=REPO_TYPE)))
        if not stored:
            return {"objects_reclaimed": 0, "bytes_reclaimed": 0}
        referenced = self._referenced_objects()
        wanted = set(candidates)
        doomed = [item for item in stored if item.file_oid not in referenced
                  and (item.file_oid in wanted or item.pushed_at < older_than)]
        if doomed:
            self._retrying(f"delete {len(doomed)} LFS objects for good", lambda: self.api.permanently_delete_lfs_files(
                self.repo_id, doomed, rewrite_history=True, repo_type=REPO_TYPE))
        return {"objects_reclaimed": len(doomed), "bytes_reclaimed": sum(item.size for item in doomed)}

    def squash(self, limit: int) -> dict:
        if limit <= 0:
            return {"commits_squashed": 0}
        commits = self._retrying("list the repo's commits",
                                 lambda: len(self.api.list_repo_commits(self.repo_id, repo_type=REPO_TYPE)))
        if commits <= limit:
            return {"commits_squashed": 0}
        self._retrying("squash the history", lambda: self.api.super_squash_history(
            self.repo_id, branch="main", repo_type=REPO_TYPE,
            commit_message=f"ocb: squash {commits} commits (past OCB_SQUASH_COMMITS={limit})"))
        self._catalog_seen = None  # the head moved
        return {"commits_squashed": commits}
