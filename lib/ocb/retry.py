"""The one retry loop: a deadline from a budget in seconds, exponential backoff with a cap,
and the server's wait hint honoured: `Retry-After`, or the IETF `RateLimit` header the Hub
sends on 429 without one (`"api";r=0;t=55`: nothing left, reset in 55 s).

Every store backend waits out its transient failures through `call` (the Hub store's reads
and commits, the local store's lock). What counts as transient, and what the wait hint is,
the backend says through two callbacks; this module knows no backend's exceptions, maps no
error and logs nothing. The sleep and the clock are injectable, so tests run in no time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

FIRST_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Policy:
    """How long to keep trying (`budget` seconds from the first attempt) and how to wait."""

    budget: float
    first_wait: float = FIRST_WAIT_SECONDS
    max_wait: float = MAX_WAIT_SECONDS
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time  # only to read an HTTP-date Retry-After


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A `Retry-After` header as seconds to wait: delta-seconds or an HTTP-date (RFC 9110);
    None when absent or unreadable (the backoff applies then). `now`: wall-clock seconds."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        import email.utils  # only for a Retry-After given as a date (rare)

        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


# one item of a RateLimit field: "name";r=REMAINING;t=SECONDS (draft-ietf-httpapi-ratelimit-headers)
RATELIMIT_ITEM = re.compile(r'"?[\w-]*"?\s*;\s*r\s*=\s*(\d+)\s*;\s*t\s*=\s*(\d+)')


def ratelimit_seconds(value: str | None) -> float | None:
    """A `RateLimit` header as seconds to wait: the longest reset among its exhausted items
    (r=0); None when absent, unreadable, or when requests remain (the backoff applies then)."""
    if not value:
        return None
    waits = [float(t) for r, t in RATELIMIT_ITEM.findall(value) if int(r) == 0]
    return max(waits) if waits else None


def wait_hint(retry_after: str | None, ratelimit: str | None, now: float) -> float | None:
    """What the server asks to wait: `Retry-After` when it says, else `RateLimit`; None: neither."""
    hinted = retry_after_seconds(retry_after, now)
    return hinted if hinted is not None else ratelimit_seconds(ratelimit)


def call(attempt: Callable[[], T], policy: Policy, *,
         transient: Callable[[BaseException], bool],
         retry_after: Callable[[BaseException], str | None] = lambda exc: None,
         hint: Callable[[BaseException, float], float | None] | None = None,
         before_retry: Callable[[BaseException], T | None] | None = None,
         catch: tuple[type[BaseException], ...] = (Exception,)) -> T:
    """`attempt()`, tried again after each failure `transient` accepts, until the budget ends.

    A failure that is not transient, or one whose wait would end past the deadline, is raised
    as it came (the caller maps it; it knows which statuses mean "past the retry budget").
    The wait is the failure's `Retry-After` when it has one (it may exceed `max_wait`: the
    server said so; the deadline still holds), else the backoff: first_wait, doubling, capped.
    `hint(exc, now)`, when given, says the wait in seconds instead of `retry_after` (a backend
    whose server sends `RateLimit` as well: wait_hint).

    `before_retry(exc)`: called after a transient failure, before waiting, for operations
    whose answer may be lost while they took effect (a commit): it looks, and returns the
    result when the operation did land (no second attempt then), None to go on, or raises.
    """
    deadline = policy.clock() + policy.budget
    backoff = policy.first_wait
    while True:
        try:
            return attempt()
        except catch as exc:
            if not transient(exc):
                raise
            if before_retry is not None:
                landed = before_retry(exc)
                if landed is not None:
                    return landed
            now = policy.wall_clock()
            hinted = hint(exc, now) if hint is not None else retry_after_seconds(retry_after(exc), now)
            wait = backoff if hinted is None else hinted
            if policy.clock() + wait > deadline:
                raise
            policy.sleep(wait)
            backoff = min(backoff * 2, policy.max_wait)
