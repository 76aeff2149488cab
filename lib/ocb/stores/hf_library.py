"""The part of huggingface_hub the Hub store uses, imported only when an hf store is opened.

The library takes about a second to import; URL checks (config, every stage start) must not
pay for it, so stores/hf.py imports this module from HfStore.__init__ only. Nothing else
lives here: no logic, no environment reads.
"""

from __future__ import annotations

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

from ..log import adopt_library_logger

# No telemetry: it would add a round trip (to the default endpoint, whatever HF_ENDPOINT says)
# to the first request of every command. Read by the library on each call, not only at import.
constants.HF_HUB_DISABLE_TELEMETRY = True

# The library puts a handler of its own on its logger at import: its records go through
# ocb's instead (one format; JSON lines stay JSON under OCB_LOG_FORMAT=json).
adopt_library_logger("huggingface_hub")

TransportError = httpx2.TransportError
# what a Hub call raises that the store maps to an ocb error
ERRORS = (HfHubHTTPError, httpx2.TransportError, LocalEntryNotFoundError)

__all__ = [
    "ERRORS", "CommitOperationAdd", "CommitOperationDelete", "EntryNotFoundError", "HfApi", "HfHubHTTPError",
    "LocalEntryNotFoundError", "RepoFile", "RepositoryNotFoundError", "RevisionNotFoundError", "TransportError",
    "build_hf_headers", "disable_progress_bars", "get_session", "hf_hub_download", "hf_hub_url", "hf_raise_for_status",
]
