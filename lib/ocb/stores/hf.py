"""The Hugging Face dataset store (`hf://datasets/OWNER/NAME`), through huggingface_hub's HfApi.

One snapshot is ONE `create_commit` (volumes, meta and pointer together) with `parent_commit`
set to the head the plan saw, so a crash or a rival writer never leaves a half snapshot and
the Hub's 128-commits-per-hour budget is spent one per backup. Small JSON files (pointer,
meta) are read with one GET each through the library's own HTTP session, which also tells the
head commit; volumes are downloaded with hf_hub_download (streamed to the work dir, resumed by
the library) and verified against the meta's sha256 before use. The library retries its
upload requests itself but never a commit: 429 and 5xx on the commit are handled here, within
the retry budget, and a commit whose answer was lost is looked up before it is ever repeated.
"""

from __future__ import annotations

import os
import re
import time
from typing import Callable, TypeVar

# Read by huggingface_hub at import: no telemetry round trip on every command start (it would
# be one more request per stage, against a budget of a few per backup).
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import httpx2  # noqa: E402  (the HTTP stack huggingface_hub 2.x is built on)
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download, hf_hub_url  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import (  # noqa: E402
    build_hf_headers,
    disable_progress_bars,
    get_session,
    hf_raise_for_status,
    validate_repo_id,
)

from ..errors import (  # noqa: E402
    ChainBroken,
    ChecksumMismatch,
    CredentialsRefused,
    RuntimeFailure,
    StoreConflict,
    TemporarilyUnavailable,
    UsageError,
)
from .base import (  # noqa: E402
    META_SUFFIX,
    POINTER,
    SNAPSHOT_ID,
    Head,
    Store,
    Upload,
    encode_json,
    meta_path,
    parse_json,
    verify_volume,
)

REPO_TYPE = "dataset"
RETRIED_STATUSES = (408, 429, 500, 502, 503, 504)
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
T = TypeVar("T")


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _server_message(exc: BaseException) -> str:
    message = getattr(exc, "server_message", None)
    return message or str(exc).splitlines()[0]


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class HfStore(Store):
    def __init__(self, url: str, work_dir: str, token: str | None, private: bool = True,
                 retry_seconds: float = 300.0, progress: bool = False,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url
        self.repo_id = url[len("hf://datasets/"):]
        if not re.fullmatch(r"[^/]+/[^/]+", self.repo_id):
            raise UsageError(f"store {url!r}: expected hf://datasets/OWNER/NAME")
        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as exc:
            raise UsageError(f"store {url!r}: {exc}") from None
        self.work_dir = work_dir
        self.token = token
        self.private = private
        self.retry_seconds = retry_seconds
        self.sleep = sleep
        self.api = HfApi(token=token)
        if not progress:
            # the library draws its own bars on stderr; ours follow OCB_PROGRESS / a terminal
            disable_progress_bars()

    # -- error mapping and retries ---------------------------------------------------------

    def _map(self, exc: BaseException, action: str) -> Exception:
        """A library or network exception -> the ocb error with the right exit code."""
        status = _status(exc)
        cause = exc.__cause__ if isinstance(exc, LocalEntryNotFoundError) else None
        if cause is not None and _status(cause) is not None:
            exc, status = cause, _status(cause)
        where = f"{self.url}: {action}"
        if status in (401, 403):
            return CredentialsRefused(f"{where}: the Hub refused the token ({status}): {_server_message(exc)}")
        if status == 412:
            return StoreConflict(f"{where}: another writer committed since this document was planned: re-plan")
        if status in RETRIED_STATUSES:
            return TemporarilyUnavailable(f"{where}: the Hub answered {status} past the retry budget "
                                          f"of {self.retry_seconds:.0f}s: {_server_message(exc)}")
        if status == 400:
            return UsageError(f"{where}: the Hub refused the request: {_server_message(exc)}")
        if isinstance(exc, (httpx2.TransportError, LocalEntryNotFoundError)):
            return TemporarilyUnavailable(f"{where}: the Hub is unreachable: {exc}")
        if isinstance(exc, RepositoryNotFoundError):
            return ChainBroken(f"{where}: the repo does not exist or the token cannot see it")
        return RuntimeFailure(f"{where}: unexpected answer from the Hub: {_server_message(exc)}")

    def _retrying(self, action: str, call: Callable[[], T]) -> T:
        """Run `call`, waiting out 429/5xx/network failures within the retry budget."""
        deadline = time.monotonic() + self.retry_seconds
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            try:
                return call()
            except (HfHubHTTPError, httpx2.TransportError, LocalEntryNotFoundError) as exc:
                status = _status(exc.__cause__ if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ else exc)
                transient = status in RETRIED_STATUSES or (status is None and not isinstance(exc, HfHubHTTPError))
                wait = _retry_after(exc) or backoff
                if not transient or time.monotonic() + wait > deadline:
                    raise self._map(exc, action) from None
                self.sleep(wait)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    # -- small JSON files: one GET each, which also names the head commit ---------------------

    def _get_json(self, path: str, revision: str) -> tuple[dict | None, str | None]:
        """(content or None when absent, the commit it was read at)."""
        url = hf_hub_url(self.repo_id, path, repo_type=REPO_TYPE, revision=revision)

        def fetch() -> tuple[dict | None, str | None]:
            response = get_session().get(url, headers=build_hf_headers(token=self.token))
            commit = response.headers.get("X-Repo-Commit")
            try:
                hf_raise_for_status(response)
            except EntryNotFoundError:
                return None, commit
            return parse_json(response.content, f"{self.url}/{path}"), commit

        return self._retrying(f"read {path}", fetch)

    def exists(self) -> bool:
        try:
            return self._retrying("look up the repo", lambda: self.api.repo_exists(self.repo_id, repo_type=REPO_TYPE))
        except ChainBroken:
            return False

    def head(self) -> Head:
        try:
            pointer, commit = self._get_json(POINTER, "main")
        except ChainBroken:
            return Head(None, None)  # no repo yet: a first backup creates it
        except RevisionNotFoundError:
            return Head(None, None)
        if commit is None:
            info = self._retrying("read the repo head", lambda: self.api.repo_info(self.repo_id, repo_type=REPO_TYPE))
            commit = info.sha
        return Head(pointer, commit)

    def read_meta(self, prefix: str, snapshot_id: str) -> dict:
        meta, _ = self._get_json(meta_path(prefix, snapshot_id), "main")
        if meta is None:
            raise ChainBroken(f"snapshot {snapshot_id} has no meta in {self.url}")
        return meta

    def list_snapshot_ids(self, prefix: str) -> list[str]:
        def listing() -> list[str]:
            try:
                items = self.api.list_repo_tree(self.repo_id, path_in_repo=prefix, repo_type=REPO_TYPE)
                return [item.path.rsplit("/", 1)[-1] for item in items]
            except EntryNotFoundError:
                return []

        try:
            names = self._retrying("list snapshots", listing)
        except ChainBroken:
            return []
        ids = [n[: -len(META_SUFFIX)] for n in names if n.endswith(META_SUFFIX)]
        return sorted(i for i in ids if SNAPSHOT_ID.match(i))

    def fetch_volume(self, prefix: str, name: str, size: int, sha256: str, dest_dir: str) -> str:
        def download() -> str:
            try:
                return hf_hub_download(self.repo_id, f"{prefix}/{name}", repo_type=REPO_TYPE,
                                       cache_dir=os.path.join(dest_dir, "hf-cache"), token=self.token)
            except EntryNotFoundError:
                raise ChainBroken(f"volume {name} is missing from {self.url}") from None

        return verify_volume(self._retrying(f"download {name}", download), name, size, sha256, "downloaded")

    # -- publishing ----------------------------------------------------------------------------

    def _ensure_repo(self) -> None:
        def create() -> None:
            self.api.create_repo(self.repo_id, repo_type=REPO_TYPE, private=self.private, exist_ok=True)

        self._retrying("create the repo", create)

    def publish(self, prefix: str, snapshot_id: str, uploads: list[Upload], meta: dict,
                pointer: dict, expect_token: str | None) -> dict:
        if expect_token is None:
            # planned against an empty store: it must still be empty (a fresh repo's own first
            # commit is the parent then)
            self._ensure_repo()
            current = self.head()
            if current.pointer is not None:
                raise StoreConflict(f"{self.url}: another writer published {current.snapshot_id} since this "
                                    "document was planned: re-plan")
            expect_token = current.token
        meta_file = meta_path(prefix, snapshot_id)
        existing = self._retrying("look for the meta", lambda: self.api.get_paths_info(
            self.repo_id, [meta_file], repo_type=REPO_TYPE, revision=expect_token))
        if existing:
            raise StoreConflict(f"snapshot {snapshot_id} already exists in {self.url}: re-plan")
        operations = [CommitOperationAdd(f"{prefix}/{u.name}", u.path) for u in uploads]
        for upload, operation in zip(uploads, operations):
            # the library hashes each file as it prepares it: a volume that changed in the work
            # dir since ocb-split recorded it must not be committed under that record
            if operation.upload_info.sha256.hex() != upload.sha256 or operation.upload_info.size != upload.size:
                raise ChecksumMismatch(f"volume {upload.name}: {upload.path} no longer matches the size and sha256 "
                                       "recorded by ocb-split: run the backup pipe again")
        operations.append(CommitOperationAdd(meta_file, encode_json(meta)))
        operations.append(CommitOperationAdd(POINTER, encode_json(pointer)))
        deadline = time.monotonic() + self.retry_seconds
        backoff = FIRST_BACKOFF_SECONDS
        attempts = 0
        while True:
            attempts += 1
            try:
                info = self.api.create_commit(
                    self.repo_id, operations, repo_type=REPO_TYPE, parent_commit=expect_token,
                    commit_message=f"ocb: snapshot {snapshot_id} ({meta.get('backup_type')})")
                return {"commit": info.oid, "commits": 1, "attempts": attempts,
                        "bytes_uploaded": sum(u.size for u in uploads)}
            except (HfHubHTTPError, httpx2.TransportError) as exc:
                status = _status(exc)
                if status not in RETRIED_STATUSES and status is not None or isinstance(exc, RepositoryNotFoundError):
                    raise self._map(exc, f"commit snapshot {snapshot_id}") from None
                # the answer may be lost while the commit landed: look before committing again
                current = self.head()
                if current.snapshot_id == snapshot_id:
                    return {"commit": current.token, "commits": 1, "attempts": attempts,
                            "bytes_uploaded": sum(u.size for u in uploads)}
                if current.token != expect_token:
                    raise StoreConflict(f"{self.url}: another writer committed while this push was retried: re-plan") from None
                wait = _retry_after(exc) or backoff
                if time.monotonic() + wait > deadline:
                    raise self._map(exc, f"commit snapshot {snapshot_id}") from None
                self.sleep(wait)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
