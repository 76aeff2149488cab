"""The S3 store (`s3://BUCKET/PREFIX`): AWS S3, MinIO, R2, Hugging Face Storage Buckets.

Through boto3 (botocore): the AWS SDK is the one client every S3-compatible service tests
against, it carries the standard credential chain (keys, session tokens, profiles, SSO,
container and instance roles) and SigV4, and it sends conditional PutObject (`If-Match`,
`If-None-Match`), which atomic visibility rests on here. The layout is the other stores'
under PREFIX: `latest-backup.json` and `ocb-catalog.json`, `<prefix>/<id>.meta.json` and the
volumes.

A snapshot becomes visible without commits: its volumes and meta land first (each
`If-None-Match: *`, so nothing is ever overwritten), then the catalog (`If-Match` on the ETag
it was read at, `If-None-Match: *` when there was none), then the pointer (`If-Match` on the
ETag the plan saw, the head token). The catalog's conditional write is the point where two
writers are ordered: the one that loses gets 412, puts nothing more, takes back what it
uploaded and raises StoreConflict (exit 5). A crash before the pointer lands leaves the
previous snapshot the latest (a crash between catalog and pointer leaves a whole snapshot
the catalog lists and the pointer does not, restorable by id, as on a folder).

Endpoints that do not honour conditional writes are found by a probe, once per store and
cache dir (the answer is recorded in OCB_CACHE_DIR): a probe object written twice with
`If-None-Match: *` and once with a wrong `If-Match`, then deleted. Where they are ignored, a
warning says so and each record is written after reading its ETag and read back after
writing (the read-after-write check, README): a rival that lands between the two is caught
as a conflict, one that lands within the same moment is not.

Volumes above the part size go up as multipart uploads, each part retried on its own (a
failed part does not restart the volume) and read from the file in place (memory stays
bounded by botocore's own buffers); an upload that fails or is interrupted is aborted, and one
left by a killed run is listed and aborted by `abort_stale_uploads` (ocb-prune). Removal is
DeleteObjects in batches of 1,000, after the new catalog, so storage is freed at once.

botocore's own retries are off: 429, 5xx, SlowDown and network failures are waited out by
ocb.retry within OCB_RETRY_SECONDS (Retry-After honoured), then exit 14; refused
credentials are 13, a failed precondition 5, a missing bucket its own StoreMissing. Nothing
here reads the environment: endpoint, region and addressing come from the settings, keys
from the secrets (none given: the SDK's own chain), and no secret reaches a message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import __version__, retry
from ..catalog import NAME as CATALOG
from ..catalog import encode as encode_catalog
from ..catalog import parse as parse_catalog
from ..errors import (
    ChainBroken,
    ChecksumMismatch,
    CredentialsRefused,
    OcbError,
    RuntimeFailure,
    StoreConflict,
    StoreMissing,
    TemporarilyUnavailable,
    UsageError,
    io_reason,
)
from ..fsutil import write_bytes
from ..snapshot import META_SUFFIX, POINTER, encode_record, meta_path, parse_pointer, parse_record
from .base import (
    Access,
    Head,
    Store,
    Upload,
    check_new_catalog,
    check_removable,
    check_removal_catalog,
    verify_volume,
)

if TYPE_CHECKING:
    from ..config import Settings, StoreSecrets

SCHEME = "s3://"
# S3's bucket rules, loosened to what S3-compatible services also allow (upper case and '_'
# on Hugging Face Storage Buckets); the service refuses what it does not take
BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
READ_CHUNK = 1024 * 1024
DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
STALE_UPLOAD_SECONDS = 24 * 3600.0
PROBE_RECORD = "s3-conditional-writes.json"  # in the cache dir: what each store's probe found
PROBE_PREFIX = ".ocb-probe-"
NO_SUCH_ETAG = '"00000000000000000000000000000000"'
RETRIED_STATUSES = (408, 429, 500, 502, 503, 504)
RETRIED_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestTimeout",
                           "RequestLimitExceeded", "InternalError", "ServiceUnavailable", "OperationAborted"})
CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
                              "InvalidToken", "TokenRefreshRequired", "InvalidClientTokenId", "AllAccessDisabled",
                              "AccountProblem", "InvalidSecurity", "AuthorizationHeaderMalformed"})
PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
UNSUPPORTED_CODES = frozenset({"NotImplemented", "InvalidArgument", "InvalidRequest"})
T = TypeVar("T")


def _bucket_problem(bucket: str) -> str | None:
    if not BUCKET.match(bucket):
        return "must be 3 to 63 letters, digits, '.', '-' or '_', starting and ending with a letter or digit"
    if ".." in bucket:
        return "contains '..'"
    return None


class _Slice:
    """A read-only window [offset, offset + length) of a file, for one multipart part: botocore
    reads, rewinds and re-reads it as it needs, and never holds more than its own buffers."""

    def __init__(self, path: str, offset: int, length: int) -> None:
        self._handle = open(path, "rb")
        self._offset, self._length, self._position = offset, length, 0
        self._handle.seek(offset)

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._position
        if size is None or size < 0 or size > left:
            size = left
        data = self._handle.read(size)
        self._position += len(data)
        return data

    def seek(self, position: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: self._length}[whence]
        self._position = max(0, min(self._length, base + position))
        self._handle.seek(self._offset + self._position)
        return self._position

    def tell(self) -> int:
        return self._position

    def __len__(self) -> int:
        return self._length

    def close(self) -> None:
        self._handle.close()


def _hashes(path: str) -> tuple[str, str]:
    """(sha256, md5) of a file, read once in bounded chunks: sha256 checks the volume against
    ocb-split's record, md5 is what S3 names a single-part object's ETag."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _multipart_etag(part_etags: list[str]) -> str:
    """The ETag S3 gives a completed multipart object: md5 of the parts' binary md5s, -N."""
    joined = b"".join(bytes.fromhex(etag.strip('"')) for etag in part_etags)
    return f'"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(part_etags)}"'


class S3Store(Store):
    scheme = "s3"
    forms = ("s3://BUCKET/PREFIX",)

    @classmethod
    def canonical(cls, raw: str, var: str) -> str:
        if not raw.startswith(SCHEME):
            raise UsageError(f"{var}={raw!r}: expected s3://BUCKET/PREFIX")
        bucket, _, prefix = raw[len(SCHEME):].partition("/")
        prefix = prefix.rstrip("/")
        problem = _bucket_problem(bucket) if bucket else "is empty"
        if problem:
            raise UsageError(f"{var}={raw!r}: the bucket name {bucket!r} {problem} (expected s3://BUCKET/PREFIX)")
        parts = prefix.split("/") if prefix else []
        if any(part in ("", ".", "..") for part in parts) or any(c in prefix for c in "\\\0"):
            raise UsageError(f"{var}={raw!r}: the prefix {prefix!r} must be folder names joined by single '/' "
                             "(no '.', '..', '//' or backslash)")
        return SCHEME + bucket + (f"/{prefix}" if prefix else "")

    def __init__(self, url: str, settings: Settings, secrets: StoreSecrets) -> None:
        self.url = self.canonical(url, "store URL")
        self.bucket, _, self.root = self.url[len(SCHEME):].partition("/")
        self.endpoint = settings.s3_endpoint
        self.part_size = settings.s3_part_size
        self.cache_dir = settings.cache_dir
        self.policy = retry.Policy(settings.retry_seconds)  # tests replace its sleep and clock
        import botocore.config  # boto3 takes a third of a second to import: only when a store is opened
        import botocore.exceptions

        self.errors = botocore.exceptions
        self.caught: tuple[type[BaseException], ...] = (botocore.exceptions.ClientError,
                                                         botocore.exceptions.BotoCoreError)
        keys = secrets.aws_access_key_id is not None or secrets.aws_secret_access_key is not None
        try:
            session = _session(None if keys else secrets.aws_profile)
        except botocore.exceptions.ProfileNotFound:
            raise UsageError(f"AWS_PROFILE={secrets.aws_profile!r}: no such profile in the AWS config files") from None
        config = botocore.config.Config(
            s3={"addressing_style": "path" if settings.s3_path_style else "auto"},
            # ocb.retry waits out what is transient, within OCB_RETRY_SECONDS: one attempt each here
            retries={"total_max_attempts": 1, "mode": "standard"},
            request_checksum_calculation=settings.s3_checksums,
            response_checksum_validation=settings.s3_checksums,
            connect_timeout=20, read_timeout=120,
            # botocore's own user agent stays first: the Hugging Face gateway serves downloads
            # itself to botocore and redirects every other client to its CDN
            user_agent_extra=f"ocb/{__version__}")
        self.client = session.client("s3", endpoint_url=self.endpoint, config=config, region_name=settings.s3_region,
                                     aws_access_key_id=secrets.aws_access_key_id,
                                     aws_secret_access_key=secrets.aws_secret_access_key,
                                     aws_session_token=secrets.aws_session_token)
        # the catalog as last read or written, with its ETag: a publish or a removal right
        # after needs no second read (the If-Match on that ETag says whether it still holds)
        self._catalog_seen: tuple[str | None, bytes | None] | None = None
        self._conditional: bool | None = None
        self.where = f"{self.url}" + (f" at {self.endpoint}" if self.endpoint else "")

    def _key(self, relative: str) -> str:
        return f"{self.root}/{relative}" if self.root else relative

    # -- error mapping and retries ---------------------------------------------------------

    @staticmethod
    def _answer(exc: BaseException) -> tuple[str | None, int | None]:
        response = getattr(exc, "response", None)
        if not isinstance(response, dict):
            return None, None
        code = response.get("Error", {}).get("Code")
        return code, response.get("ResponseMetadata", {}).get("HTTPStatusCode")

    def _is_precondition(self, exc: BaseException) -> bool:
        code, status = self._answer(exc)
        return status == 412 or code in PRECONDITION_CODES

    def _missing_bucket(self) -> StoreMissing:
        return StoreMissing(f"{self.where}: the bucket {self.bucket} does not exist (or these credentials cannot "
                            "see it); ocb does not create buckets: create it first")

    def _map(self, exc: BaseException, action: str) -> Exception:
        """A botocore exception -> the ocb error with the right exit code (no secret in it)."""
        where = f"{self.where}: {action}"
        errors = self.errors
        if isinstance(exc, (errors.NoCredentialsError, errors.PartialCredentialsError)):
            return CredentialsRefused(f"{where}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                      "or AWS_PROFILE)")
        if isinstance(exc, errors.CredentialRetrievalError):
            return CredentialsRefused(f"{where}: the S3 credentials could not be obtained: {exc}")
        code, status = self._answer(exc)
        message = (getattr(exc, "response", None) or {}).get("Error", {}).get("Message") or code or str(exc)
        if code == "NoSuchBucket":
            return self._missing_bucket()
        if code in CREDENTIAL_CODES or status in (401, 403):
            return CredentialsRefused(f"{where}: the endpoint refused the credentials ({status} {code}): {message}")
        if self._is_precondition(exc):
            return StoreConflict(f"{where}: another writer changed the store since this document was planned: re-plan")
        if status in RETRIED_STATUSES or code in RETRIED_CODES:
            return TemporarilyUnavailable(f"{where}: the endpoint answered {status} {code} past the retry budget "
                                          f"of {self.policy.budget:.0f}s: {message}")
        if code == "InvalidBucketName":
            return UsageError(f"{where}: the endpoint refuses the bucket name {self.bucket!r}: {message}")
        if status is None and self._transient(exc):
            return TemporarilyUnavailable(f"{where}: the endpoint is unreachable past the retry budget "
                                          f"of {self.policy.budget:.0f}s: {exc}")
        return RuntimeFailure(f"{where}: unexpected answer from the endpoint ({status} {code}): {message}")

    def _transient(self, exc: BaseException) -> bool:
        code, status = self._answer(exc)
        if status is not None or code is not None:
            return status in RETRIED_STATUSES or code in RETRIED_CODES
        errors = self.errors
        streaming = getattr(errors, "ResponseStreamingError", errors.HTTPClientError)
        return isinstance(exc, (errors.ConnectionError, errors.HTTPClientError, streaming))

    @staticmethod
    def _retry_after(exc: BaseException) -> str | None:
        response = getattr(exc, "response", None)
        if not isinstance(response, dict):
            return None
        return response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("retry-after")

    def _retrying(self, action: str, call: Callable[[], T]) -> T:
        """`call`, with throttling, 5xx and network failures waited out within the budget, and
        what botocore raises mapped to ocb errors."""
        try:
            return retry.call(call, self.policy, transient=self._transient, retry_after=self._retry_after,
                              catch=self.caught)
        except self.caught as exc:
            raise self._map(exc, action) from None

    # -- reading ---------------------------------------------------------------------------

    def _get(self, relative: str) -> tuple[bytes | None, str | None]:
        """(a small object's bytes, its ETag), (None, None) when absent; StoreMissing when the
        bucket is."""

        def fetch() -> tuple[bytes | None, str | None]:
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self._key(relative))
            except self.errors.ClientError as exc:
                if self._answer(exc)[0] in ("NoSuchKey", "404"):
                    return None, None
                raise
            return answer["Body"].read(), answer["ETag"]

        return self._retrying(f"read {relative}", fetch)

    def _etag(self, relative: str) -> str | None:
        def look() -> str | None:
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self._key(relative))["ETag"]
            except self.errors.ClientError as exc:
                if self._answer(exc)[1] == 404:
                    return None
                raise

        return self._retrying(f"look up {relative}", look)

    def exists(self) -> bool:
        def look() -> bool:
            try:
                answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1)
            except self.errors.ClientError as exc:
                if self._answer(exc)[0] == "NoSuchBucket":
                    return False
                raise
            return answer.get("KeyCount", 0) > 0

        return self._retrying("look up the store", look)

    def _missing_store(self) -> StoreMissing:
        return StoreMissing(f"store {self.url} does not exist (nothing under s3://{self.bucket}/{self.root})")

    def head(self) -> Head:
        try:
            raw, etag = self._get(POINTER)
        except StoreMissing:
            return Head(None, None)  # no bucket: nothing to restore, and a push says why
        if raw is None:
            return Head(None, None)
        pointer = parse_pointer(raw, f"{self.url}/{POINTER}")
        return Head(pointer, etag)

    def read_meta(self, prefix: str, snapshot_id: str) -> dict:
        path = meta_path(prefix, snapshot_id)
        raw, _ = self._get(path)
        if raw is None:
            if not self.exists():
                raise self._missing_store()
            raise ChainBroken(f"snapshot {snapshot_id} has no meta in {self.url}")
        return parse_record(raw, f"{self.url}/{path}")

    def read_catalog(self) -> dict | None:
        try:
            raw, etag = self._get(CATALOG)
        except StoreMissing:
            return None
        self._catalog_seen = (etag, raw)
        return None if raw is None else parse_catalog(raw, f"{self.url}/{CATALOG}")

    def _listing(self, prefix: str) -> tuple[dict[str, int], set[str]]:
        """({name: size} of the objects directly under `prefix`, names of the folders there)."""
        start = self._key(prefix) + "/" if prefix else self._key("")

        def listing() -> tuple[dict[str, int], set[str]]:
            files: dict[str, int] = {}
            folders: set[str] = set()
            try:
                for page in self.client.get_paginator("list_objects_v2").paginate(
                        Bucket=self.bucket, Prefix=start, Delimiter="/"):
                    for item in page.get("Contents", ()):
                        files[item["Key"][len(start):]] = item["Size"]
                    for common in page.get("CommonPrefixes", ()):
                        folders.add(common["Prefix"][len(start):].rstrip("/"))
            except self.errors.ClientError as exc:
                if self._answer(exc)[0] == "NoSuchBucket":
                    return {}, set()
                raise
            return files, folders

        return self._retrying(f"list {prefix or 'the store'}", listing)

    def list_files(self, prefix: str) -> dict[str, int]:
        return self._listing(prefix)[0]

    def read_start(self, prefix: str, name: str, length: int) -> bytes | None:
        """The first `length` bytes of a store file, by one Range request."""
        key = self._key(f"{prefix}/{name}")

        def fetch() -> bytes:
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{max(0, length - 1)}")
            except self.errors.ClientError as exc:
                code = self._answer(exc)[0]
                if code in ("NoSuchKey", "404"):
                    raise ChainBroken(f"volume {name} is missing from {self.url}") from None
                if code == "InvalidRange":  # an empty object
                    return b""
                raise
            return answer["Body"].read()[:length]

        return self._retrying(f"read the start of {name}", fetch)

    def access(self) -> Access:
        """Whether the store exists, and whether these credentials may write it: S3 says so
        only to a write, so a probe object is put and deleted (the conditional-write probe)."""
        exists = self.exists()
        try:
            honoured = self._probe()
        except StoreMissing:
            return Access(False, None, None, None, f"the bucket {self.bucket} does not exist")
        except CredentialsRefused as exc:
            return Access(exists, False, None, None, f"a probe write was refused: {exc}")
        return Access(exists, True, None, None,
                      f"a probe object was written and deleted under s3://{self.bucket}/{self.root} "
                      f"(conditional writes {'honoured' if honoured else 'ignored'})")

    def read_file(self, path: str) -> bytes | None:
        raw, _ = self._get(path)
        return raw

    def fetch_file(self, path: str, dest_dir: str) -> str:
        """A whole file by its store path (the legacy reader's volumes, whose sizes and digests
        no ocb meta records: legacy_restore checks them), streamed to dest_dir."""
        key = self._key(path)
        os.makedirs(dest_dir, exist_ok=True)
        target = os.path.join(dest_dir, path.rsplit("/", 1)[-1])

        def download() -> None:
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
            except self.errors.ClientError as exc:
                if self._answer(exc)[0] in ("NoSuchKey", "404"):
                    if not self.exists():
                        raise self._missing_store() from None
                    raise ChainBroken(f"{path} is missing from {self.url}") from None
                raise
            with open(target, "wb") as out:
                for chunk in answer["Body"].iter_chunks(READ_CHUNK):
                    out.write(chunk)

        try:
            self._retrying(f"download {path}", download)
        except OSError as exc:
            raise RuntimeFailure(f"cannot write {target}: {io_reason(exc)}") from None
        return target

    def fetch_volume(self, prefix: str, name: str, size: int, sha256: str, dest_dir: str) -> str:
        """The volume streamed to dest_dir in bounded chunks; a transfer cut short resumes
        from the bytes it has (a Range request on the same ETag), within the retry budget."""
        key = self._key(f"{prefix}/{name}")
        os.makedirs(dest_dir, exist_ok=True)
        target = os.path.join(dest_dir, name)
        partial = target + ".part"
        state: dict[str, Any] = {"etag": None, "done": 0}
        advance, close = _progress(size, f"download {name}")

        def download() -> None:
            extra = {"Range": f"bytes={state['done']}-"} if state["done"] else {}
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
            except self.errors.ClientError as exc:
                if self._answer(exc)[0] in ("NoSuchKey", "404"):
                    if not self.exists():
                        raise self._missing_store() from None
                    raise ChainBroken(f"volume {name} is missing from {self.url}") from None
                raise
            if state["etag"] is None:
                state["etag"] = answer["ETag"]
                if answer["ContentLength"] != size:
                    raise ChecksumMismatch(f"volume {name}: {answer['ContentLength']} bytes in the store, "
                                           f"the meta says {size}")
            elif answer["ETag"] != state["etag"]:
                raise ChainBroken(f"volume {name} changed in {self.url} while it was downloaded")
            with open(partial, "ab" if state["done"] else "wb") as out:
                for chunk in answer["Body"].iter_chunks(READ_CHUNK):
                    out.write(chunk)
                    state["done"] += len(chunk)
                    if advance:
                        advance(len(chunk))

        try:
            self._retrying(f"download {name}", download)
            os.replace(partial, target)
        except OSError as exc:
            raise RuntimeFailure(f"cannot write {target}: {io_reason(exc)}") from None
        finally:
            close()
            if os.path.exists(partial):
                os.unlink(partial)
        return verify_volume(target, name, size, sha256, "downloaded")

    # -- conditional writes: the probe ----------------------------------------------------

    def _probe_record_path(self) -> str:
        return os.path.join(self.cache_dir, PROBE_RECORD)

    def _probe_key(self) -> str:
        return f"{self.endpoint or 'aws'} {self.bucket}"

    def conditional_writes(self) -> bool:
        """Whether the endpoint honours If-Match / If-None-Match on PutObject: probed once per
        store and recorded in the cache dir; a warning when it does not."""
        if self._conditional is not None:
            return self._conditional
        record: dict = {}
        try:
            with open(self._probe_record_path(), encoding="utf-8") as handle:
                record = json.load(handle)
            if not isinstance(record, dict):
                record = {}
        except (OSError, ValueError):
            record = {}
        known = record.get(self._probe_key())
        if isinstance(known, dict) and isinstance(known.get("honoured"), bool):
            self._conditional = known["honoured"]
        else:
            self._conditional = self._probe()
            record[self._probe_key()] = {"honoured": self._conditional,
                                         "probed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            try:
                os.makedirs(self.cache_dir, exist_ok=True)
                write_bytes(self._probe_record_path(), json.dumps(record, indent=1).encode() + b"\n")
            except OSError:
                pass  # not recorded: the next run probes again, nothing else depends on it
        if not self._conditional:
            from ..log import log

            log.warning(f"{self.where} does not honour conditional writes (If-Match / If-None-Match): each record "
                        "is checked by reading it back instead, which misses a rival writing within the same "
                        "moment (README: S3-compatible stores)")
        return self._conditional

    def _probe(self) -> bool:
        key = self._key(f"{PROBE_PREFIX}{uuid.uuid4().hex}")

        def put(**condition: str) -> bool:
            """True when the write went through, False when its precondition failed."""
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"ocb probe\n", **condition)
                return True
            except self.errors.ClientError as exc:
                if self._is_precondition(exc):
                    return False
                if self._answer(exc)[0] in UNSUPPORTED_CODES or self._answer(exc)[1] == 501:
                    return True  # the header is refused, not honoured: as good as ignored
                raise

        def probe() -> bool:
            try:
                put(IfNoneMatch="*")
                return not put(IfNoneMatch="*") and not put(IfMatch=NO_SUCH_ETAG)
            finally:
                self.client.delete_object(Bucket=self.bucket, Key=key)

        return self._retrying("probe conditional writes", probe)

    # -- writing ---------------------------------------------------------------------------

    def _put(self, relative: str, body: Callable[[], Any], action: str, *, if_match: str | None = None,
             if_absent: bool = False, ours: Callable[[], bool] | None = None, **extra: Any) -> str:
        """One PutObject under a precondition (the ETag `if_match`, or no object when
        `if_absent`), retried within the budget; its new ETag. A precondition that fails is
        StoreConflict, unless an earlier attempt whose answer was lost had landed (`ours()`
        says). Without conditional writes: the ETag is checked before the write instead."""
        key = self._key(relative)
        condition: dict[str, str] = {}
        conditional = self.conditional_writes() if (if_match or if_absent) else True
        if if_match or if_absent:
            if conditional:
                condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
            else:
                current = self._etag(relative)
                if (if_match and current != if_match) or (if_absent and current is not None):
                    raise StoreConflict(f"{self.where}: {relative} changed since this document was planned: re-plan")
        attempts = 0

        def attempt() -> str:
            nonlocal attempts
            attempts += 1
            source = body()
            try:
                return self.client.put_object(Bucket=self.bucket, Key=key, Body=source, **condition, **extra)["ETag"]
            finally:
                if hasattr(source, "close"):
                    source.close()

        try:
            return retry.call(attempt, self.policy, transient=self._transient, retry_after=self._retry_after,
                              catch=self.caught)
        except self.caught as exc:
            if self._is_precondition(exc) and attempts > 1 and ours is not None and ours():
                return self._etag(relative) or ""
            if self._is_precondition(exc):
                raise StoreConflict(f"{self.where}: {action}: another writer changed the store since this document "
                                    "was planned: re-plan") from None
            raise self._map(exc, action) from None

    def _put_record(self, relative: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """A small JSON record under a precondition; read back after writing when the endpoint
        does not honour conditions (the read-after-write check)."""
        etag = self._put(relative, lambda: data, f"write {relative}", if_match=if_match, if_absent=if_absent,
                         ours=lambda: self._get(relative)[0] == data, ContentType="application/json")
        if (if_match or if_absent) and not self.conditional_writes():
            got, got_etag = self._get(relative)
            if got != data:
                raise StoreConflict(f"{self.where}: another writer wrote {relative} at the same moment: re-plan")
            etag = got_etag or etag
        return etag

    def _upload_volume(self, prefix: str, upload: Upload, md5: str, advance: Callable[[int], None] | None) -> None:
        relative = f"{prefix}/{upload.name}"
        if upload.size <= self.part_size:
            self._put(relative, lambda: open(upload.path, "rb"), f"upload {upload.name}", if_absent=True,
                      ours=lambda: self._etag(relative) == f'"{md5}"', ContentLength=upload.size)
        else:
            self._multipart(relative, upload)
        if advance:
            advance(upload.size)

    def _multipart(self, relative: str, upload: Upload) -> None:
        """A volume in parts of part_size, each retried on its own; aborted on any failure."""
        key = self._key(relative)
        upload_id = self._retrying(f"start uploading {upload.name}", lambda: self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key)["UploadId"])
        try:
            parts = []
            for number, offset in enumerate(range(0, upload.size, self.part_size), start=1):
                length = min(self.part_size, upload.size - offset)

                def send(number: int = number, offset: int = offset, length: int = length) -> str:
                    body = _Slice(upload.path, offset, length)
                    try:
                        return self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                       PartNumber=number, Body=body, ContentLength=length)["ETag"]
                    finally:
                        body.close()

                parts.append({"PartNumber": number,
                              "ETag": self._retrying(f"upload part {number} of {upload.name}", send)})
            condition = {"IfNoneMatch": "*"} if self.conditional_writes() else {}
            if not condition and self._etag(relative) is not None:
                raise StoreConflict(f"{self.where}: {relative} exists already: re-plan")
            expected = _multipart_etag([part["ETag"] for part in parts])
            attempts = 0

            def complete() -> None:
                nonlocal attempts
                attempts += 1
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts}, **condition)

            try:
                retry.call(complete, self.policy, transient=self._transient, retry_after=self._retry_after,
                           catch=self.caught)
            except self.caught as exc:
                lost_answer = attempts > 1 and self._etag(relative) == expected
                if not lost_answer:
                    if self._is_precondition(exc):
                        raise StoreConflict(f"{self.where}: {relative} exists already: re-plan") from None
                    raise self._map(exc, f"complete {upload.name}") from None
        except BaseException:
            self._abort(key, upload_id)
            raise

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except self.caught:
            pass  # left for abort_stale_uploads (ocb-prune); the snapshot was never visible

    def _delete(self, relatives: list[str]) -> None:
        """DeleteObjects in batches; a key it could not delete is a RuntimeFailure naming it."""
        for start in range(0, len(relatives), DELETE_BATCH):
            batch = [{"Key": self._key(path)} for path in relatives[start:start + DELETE_BATCH]]

            def delete(batch: list[dict] = batch) -> list[dict]:
                return self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                                                  ).get("Errors", [])

            failed = self._retrying(f"delete {len(batch)} objects", delete)
            if failed:
                names = ", ".join(f"{e.get('Key')} ({e.get('Code')})" for e in failed[:5])
                raise RuntimeFailure(f"{self.where}: could not delete {len(failed)} objects: {names}")

    def _catalog_for(self, token: str | None) -> tuple[bytes | None, str | None]:
        """The catalog's bytes and ETag: the ones read last (a push reads it just before: the
        If-Match on that ETag still catches any change), else read now."""
        if self._catalog_seen is not None and self.conditional_writes():
            etag, raw = self._catalog_seen
            return raw, etag
        raw, etag = self._get(CATALOG)
        return raw, etag

    def _check_head(self, expect_token: str | None) -> None:
        _, etag = self._get(POINTER)  # StoreMissing when there is no bucket
        if etag != expect_token:
            raise StoreConflict(f"{self.where}: the store's latest snapshot moved since this document was planned: "
                                "re-plan")

    def publish(self, prefix: str, snapshot_id: str, uploads: list[Upload], meta: dict,
                pointer: dict, catalog: dict, expect_token: str | None) -> dict:
        self._check_head(expect_token)
        meta_file = meta_path(prefix, snapshot_id)
        if self._etag(meta_file) is not None:
            raise StoreConflict(f"snapshot {snapshot_id} already exists in {self.url}: re-plan")
        old_raw, old_etag = self._catalog_for(expect_token)
        old = None if old_raw is None else parse_catalog(old_raw, f"{self.url}/{CATALOG}")
        check_new_catalog(catalog, snapshot_id, old, self.url)
        md5s = {}
        for upload in uploads:
            # a volume that changed in the work dir since ocb-split recorded it never lands
            sha, md5 = _hashes(upload.path)
            if sha != upload.sha256 or os.path.getsize(upload.path) != upload.size:
                raise ChecksumMismatch(f"volume {upload.name}: {upload.path} no longer matches the size and sha256 "
                                       "recorded by ocb-split: run the backup pipe again")
            md5s[upload.name] = md5
        conditional = self.conditional_writes()
        landed: list[str] = []  # what this call put, taken back if the pointer never moves
        new_catalog = encode_catalog(catalog)
        catalog_etag: str | None = None
        advance, close = _progress(sum(u.size for u in uploads), "upload")
        try:
            for upload in uploads:
                self._upload_volume(prefix, upload, md5s[upload.name], advance)
                landed.append(f"{prefix}/{upload.name}")
            self._put_record(meta_file, encode_record(meta), if_absent=True)
            landed.append(meta_file)
            catalog_etag = self._put_record(CATALOG, new_catalog, if_match=old_etag, if_absent=old_etag is None)
            self._put_record(POINTER, encode_record(pointer), if_match=expect_token, if_absent=expect_token is None)
        except BaseException:
            # a losing writer (or one that failed or was stopped) leaves the store as it was
            if catalog_etag is not None:
                self._put_back_catalog(old_raw, catalog_etag)
            self._take_back(landed)
            raise
        finally:
            close()
        self._catalog_seen = (catalog_etag, new_catalog)
        return {"bytes_uploaded": sum(u.size for u in uploads), "commits": 0, "conditional_writes": conditional,
                "multipart_volumes": sum(1 for u in uploads if u.size > self.part_size)}

    def _put_back_catalog(self, old_raw: bytes | None, ours: str) -> None:
        """The catalog as it was, after a publish that wrote its own and then lost the pointer
        (only if it is still ours: a rival's later catalog stays)."""
        try:
            if old_raw is None:
                if self._etag(CATALOG) == ours:
                    self._delete([CATALOG])
            else:
                self._put(CATALOG, lambda: old_raw, f"put back {CATALOG}", if_match=ours)
        except OcbError as exc:  # best effort: the pointer did not move; the snapshot is not the latest
            from ..log import log

            log.warning(f"could not put {CATALOG} back as it was after losing the race: {exc}")

    def _take_back(self, relatives: list[str]) -> None:
        try:
            if relatives:
                self._delete(relatives)
        except OcbError as exc:  # best effort: objects no catalog lists cost space, never correctness
            from ..log import log

            log.warning(f"could not remove what this push uploaded ({exc}): ocb-prune removes it as leftovers")

    def remove(self, paths: list[str], expect_token: str | None, catalog: dict | None) -> dict:
        check_removable(paths)
        self._check_head(expect_token)
        if expect_token is None and not self.exists():
            raise self._missing_store()
        old_raw, old_etag = self._catalog_for(expect_token)
        old = None if old_raw is None else parse_catalog(old_raw, f"{self.url}/{CATALOG}")
        check_removal_catalog(catalog, old, paths, self.url)
        present: list[tuple[str, int]] = []
        listings: dict[str, tuple[dict[str, int], set[str]]] = {}
        for path in paths:
            folder, _, name = path.rpartition("/")
            if folder not in listings:
                listings[folder] = self._listing(folder)
            files, folders = listings[folder]
            if name in folders:
                raise ValueError(f"{path} in {self.url} is not a file: a removal deletes files only")
            if name in files:
                present.append((path, files[name]))
        if catalog is not None:
            # first: a crash after this leaves objects no catalog lists (space, not lies)
            encoded = encode_catalog(catalog)
            etag = self._put_record(CATALOG, encoded, if_match=old_etag, if_absent=old_etag is None)
            self._catalog_seen = (etag, encoded)
        # metas before volumes: a meta never promises volumes that are already gone
        ordered = sorted(present, key=lambda item: not item[0].endswith(META_SUFFIX))
        self._delete([path for path, _ in ordered])
        return {"files_removed": len(present), "bytes_removed": sum(size for _, size in present), "commits": 0}

    # -- multipart uploads left by killed runs (ocb-prune) ------------------------------------

    def stale_uploads(self, older_than: float = STALE_UPLOAD_SECONDS) -> list[dict]:
        """The multipart uploads under the store started more than `older_than` seconds ago
        and never completed or aborted (a push killed mid-volume): [{key, upload_id, initiated}],
        keys relative to the store. Younger ones may belong to a push still running."""
        cutoff = time.time() - older_than

        def listing() -> list[dict]:
            found = []
            for page in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=self._key("")):
                for item in page.get("Uploads", ()):
                    if item["Initiated"].timestamp() <= cutoff:
                        relative = item["Key"][len(self._key("")):]
                        found.append({"key": relative, "upload_id": item["UploadId"],
                                      "initiated": item["Initiated"].strftime("%Y-%m-%dT%H:%M:%SZ")})
            return found

        return self._retrying("list unfinished uploads", listing)

    def reclaim(self, candidates: list[str], older_than: dt.datetime) -> dict:
        """S3 frees a deleted object's storage at once; what still holds storage is the parts
        of multipart uploads that never completed (pushes killed mid-volume): those started
        before `older_than` are aborted (a younger one may be a push still running)."""
        del candidates
        seconds = max(0.0, time.time() - older_than.timestamp())
        stale = self.stale_uploads(seconds)
        held = 0
        for item in stale:
            def parts(item: dict = item) -> int:
                total = 0
                try:
                    for page in self.client.get_paginator("list_parts").paginate(
                            Bucket=self.bucket, Key=self._key(item["key"]), UploadId=item["upload_id"]):
                        total += sum(part.get("Size", 0) for part in page.get("Parts", ()))
                except self.errors.ClientError as exc:
                    if self._answer(exc)[0] != "NoSuchUpload":
                        raise
                return total

            held += self._retrying(f"list the parts of {item['key']}", parts)
        aborted = self.abort_stale_uploads(seconds)
        return {"objects_reclaimed": aborted["uploads_aborted"], "bytes_reclaimed": held}

    def abort_stale_uploads(self, older_than: float = STALE_UPLOAD_SECONDS) -> dict:
        """Abort what `stale_uploads` lists, freeing the parts' storage: {uploads_aborted, keys}."""
        stale = self.stale_uploads(older_than)
        for item in stale:
            def abort(item: dict = item) -> None:
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(item["key"]),
                                                       UploadId=item["upload_id"])
                except self.errors.ClientError as exc:
                    if self._answer(exc)[0] != "NoSuchUpload":  # gone already
                        raise

            self._retrying(f"abort the upload of {item['key']}", abort)
        return {"uploads_aborted": len(stale), "keys": sorted({item["key"] for item in stale})}


_SESSIONS: dict[str | None, Any] = {}


def _session(profile: str | None) -> Any:
    """One boto3 session per profile for the process: it loads the service model once, so
    opening a store again (the next command in-process, a test) costs no second load. The
    keys go to each client, never into the shared session."""
    if profile not in _SESSIONS:
        import boto3

        _SESSIONS[profile] = boto3.session.Session(profile_name=profile)
    return _SESSIONS[profile]


def _progress(total: int, what: str) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    from ..log import log

    return log.progress(total, what)

