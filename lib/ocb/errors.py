"""Error classes named after the condition, each carrying its exit code.

The exit-code table lives here and nowhere else (README repeats it for people). Modules raise
these; only cli.py turns them into an exit status. Codes are never renumbered.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_BAD_DOCUMENT = 3
EXIT_INTEGRITY = 4
EXIT_CONFLICT = 5
EXIT_PARTIAL = 6
EXIT_LOCKED = 11
EXIT_CREDENTIALS = 13
EXIT_TEMPORARY = 14
EXIT_INTERNAL = 70
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok, or nothing to do (skip)",
    EXIT_RUNTIME: "failed at run time (I/O, disk full, unexpected remote answer)",
    EXIT_USAGE: "usage (unknown flag, bad flag or env value)",
    EXIT_BAD_DOCUMENT: "bad input document (empty, not JSON, unknown version or kind, missing or mistyped field)",
    EXIT_INTEGRITY: "integrity (checksum, authentication tag, wrong password, broken chain, hostile archive)",
    EXIT_CONFLICT: "conflict (the store moved since planning: re-plan)",
    EXIT_PARTIAL: "snapshot taken, some entries skipped (unreadable: named in the document and the meta)",
    EXIT_LOCKED: "locked by another run",
    EXIT_CREDENTIALS: "credentials refused",
    EXIT_TEMPORARY: "temporary (rate limited or unavailable past the retry budget)",
    EXIT_INTERNAL: "internal bug",
    EXIT_SIGINT: "interrupted (SIGINT)",
    EXIT_SIGTERM: "interrupted (SIGTERM)",
}


# What a full disk (or a file-size limit, ulimit -f) looks like to a writer.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def io_reason(exc: OSError) -> str:
    """What people should read for an I/O error: disk full said plainly, else the system's word."""
    if exc.errno in DISK_FULL_ERRNOS:
        return "no space left on device"
    return exc.strerror or str(exc)


class OcbError(Exception):
    """Base of every expected failure; `code` is the process exit status it maps to."""

    code = EXIT_RUNTIME


class RuntimeFailure(OcbError):
    """I/O failed, the disk is full, or a remote answered something unexpected."""

    code = EXIT_RUNTIME


class UsageError(OcbError):
    """A flag or environment value is unknown or malformed."""

    code = EXIT_USAGE


class BadDocument(OcbError):
    """The document on stdin is empty, not JSON, of another kind or version, or lacks a field."""

    code = EXIT_BAD_DOCUMENT


class IntegrityError(OcbError):
    """Data does not match what was recorded: checksum, tag, password, chain or archive."""

    code = EXIT_INTEGRITY


class ChecksumMismatch(IntegrityError):
    """A volume, meta or restored file does not hash to the recorded sha256."""


class ChainBroken(IntegrityError):
    """A snapshot of the chain is missing or does not belong where it is recorded."""


class HostileArchive(IntegrityError):
    """An archive member would escape its root, write through a link, or is of a refused type."""


class WrongPassword(IntegrityError):
    """The password does not open the sealed data."""


class SealBroken(IntegrityError):
    """Sealed data fails authentication: tampered, truncated, reordered or extended."""


class NotAuthenticated(IntegrityError):
    """A record or snapshot of a sealed store lacks its MAC or its seal, or its MAC fails."""


class RollbackDetected(IntegrityError):
    """The store's latest is older than what this machine has already seen there."""


class StoreConflict(OcbError):
    """The store's latest snapshot moved since the document was planned."""

    code = EXIT_CONFLICT


class StoreMissing(OcbError):
    """The store (repo, folder, bucket) does not exist, or the credentials cannot see it.

    Its own condition, never an integrity error: a first backup creates the store, a restore
    source that is missing falls back, and nothing reads "missing" into ChainBroken.
    """

    code = EXIT_RUNTIME


class StoreLocked(OcbError):
    """Another run holds the lock."""

    code = EXIT_LOCKED


class CredentialsRefused(OcbError):
    """The store refused the credentials (missing, invalid or without write access)."""

    code = EXIT_CREDENTIALS


class TemporarilyUnavailable(OcbError):
    """Rate limited or unavailable past the retry budget; a later run may succeed."""

    code = EXIT_TEMPORARY

