"""The part of huggingface_hub the Hub store uses, imported only when an hf store is opened,
and the HTTP client the library is given: timeouts, the transfer path, the retry budget.

The library takes about a second to import; URL checks (config, every stage start) must not
pay for it, so stores/hf.py imports this module from HfStore.__init__ only. No environment
reads here: the store hands in what it was given (`configure`).

Three things are set for ocb's own process, on purpose (docs/hub.md says why):
- Xet is off: volumes go over the Git LFS protocol, which the Hub still accepts for every
  repo (Xet-backed ones included) and migrates to Xet storage itself. Sealed, compressed
  volumes do not deduplicate, and hf_xet's own threads, timeouts and retries are out of
  reach of OCB_HUB_TIMEOUT and OCB_RETRY_SECONDS; LFS goes through the one client below.
- Every request has a connect/read/write timeout (the library's default client has none).
- The library's own retries (upload parts, downloads: up to 5, sleeping up to 8 s or what
  a 429 says) are held to the store's budget: past the deadline no request is sent again
  (a retry: the same method and URL as one already sent in this operation; a first request
  always goes, however long the operation has run), and a 429/5xx whose wait would end past
  the deadline ends the call at once (BudgetSpent).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2  # the HTTP stack huggingface_hub 2.x is built on
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, disable_progress_bars, get_session, hf_raise_for_status
from huggingface_hub.utils import set_client_factory
from huggingface_hub.utils._http import hf_request_event_hook

from .. import retry
from ..log import adopt_library_logger

# No telemetry: it would add a round trip (to the default endpoint, whatever HF_ENDPOINT says)
# to the first request of every command. Read by the library on each call, not only at import.
constants.HF_HUB_DISABLE_TELEMETRY = True
# LFS, not Xet, for uploads and downloads (read on each call too: utils.is_xet_available and
# file_download); the module docstring and docs/hub.md say why.
constants.HF_HUB_DISABLE_XET = True

# The library puts a handler of its own on its logger at import: its records go through
# ocb's instead (one format; JSON lines stay JSON under OCB_LOG_FORMAT=json).
adopt_library_logger("huggingface_hub")

# the statuses the library's http_backoff retries by itself
LIBRARY_RETRIED = (408, 429, 500, 502, 503, 504)


class BudgetSpent(Exception):
    """A request, or the library's wait before one, that would end past the retry budget.

    Not an httpx2 error on purpose: the library's retry loop does not catch it, so the call
    ends here and the store maps it (exit 14)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class Budget:
    """The deadline of the store operation under way (None: none), shared with the hooks."""

    def __init__(self) -> None:
        self._deadline: float | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.sent: set[tuple[str, str]] = set()  # (method, URL) of the operation's requests

    @property
    def deadline(self) -> float | None:
        return self._deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        if value is None or self._deadline is None:
            self.sent = set()  # a new operation (or none): nothing sent yet
        self._deadline = value

    def past(self, wait: float = 0.0) -> bool:
        return self.deadline is not None and self.clock() + wait > self.deadline


BUDGET = Budget()


def _error_text(response: httpx2.Response) -> str:
    text = response.headers.get("X-Error-Message")
    if text:
        return text
    try:
        response.read()
        body = response.json()
        return str(body.get("error") or body) if isinstance(body, dict) else str(body)
    except (ValueError, httpx2.HTTPError):
        return response.reason_phrase


def _on_request(request: httpx2.Request) -> None:
    key = (request.method, str(request.url))
    if key in BUDGET.sent and BUDGET.past():
        raise BudgetSpent(f"no time left to send {request.method} {request.url.path} again")
    BUDGET.sent.add(key)


def _on_response(response: httpx2.Response) -> None:
    if response.status_code not in LIBRARY_RETRIED or BUDGET.deadline is None:
        return
    hinted = retry.wait_hint(response.headers.get("Retry-After"), response.headers.get("RateLimit"), time.time())
    if BUDGET.past(retry.FIRST_WAIT_SECONDS if hinted is None else hinted):
        said = "" if hinted is None else f", asked to wait {hinted:.0f}s"
        raise BudgetSpent(f"the Hub answered {response.status_code}{said}: {_error_text(response)}",
                          response.status_code)


def configure(timeout: float) -> None:
    """Give the library a client whose every request times out after `timeout` seconds of
    silence (connect, read, write, pool) and that keeps to BUDGET."""
    constants.HF_HUB_DOWNLOAD_TIMEOUT = timeout  # the download GET passes its own timeout
    constants.HF_HUB_ETAG_TIMEOUT = timeout

    def client() -> httpx2.Client:
        return httpx2.Client(event_hooks={"request": [hf_request_event_hook, _on_request],
                                          "response": [_on_response]},
                             follow_redirects=True, timeout=httpx2.Timeout(timeout))

    set_client_factory(client)


TransportError = httpx2.TransportError
TimeoutException = httpx2.TimeoutException
# what a Hub call raises that the store maps to an ocb error
ERRORS = (HfHubHTTPError, httpx2.TransportError, LocalEntryNotFoundError, BudgetSpent)

__all__ = [
    "BUDGET", "ERRORS", "BudgetSpent", "CommitOperationAdd", "CommitOperationDelete", "EntryNotFoundError", "HfApi",
    "HfHubHTTPError", "LocalEntryNotFoundError", "RepoFile", "RepositoryNotFoundError", "RevisionNotFoundError",
    "TimeoutException", "TransportError", "build_hf_headers", "configure", "disable_progress_bars", "get_session",
    "hf_hub_download", "hf_hub_url", "hf_raise_for_status",
]
