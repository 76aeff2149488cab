"""Stores: where snapshots live. `open_store(url)` picks the backend from the URL.

Every backend implements the small interface in base.py and passes the same contract tests
(tests/unit/test_stores.py).
"""

from __future__ import annotations

from ..errors import BadDocument
from .base import Store


def open_store(url: str, settings: dict) -> Store:
    """The backend for `url`, configured from a document's settings (and the secret token)."""
    if url.startswith("file://"):
        from .local import LocalStore

        return LocalStore(url)
    if url.startswith("hf://"):
        from .. import config
        from ..log import log
        from .hf import HfStore  # imported lazily: huggingface_hub is slow to import

        return HfStore(url, work_dir=settings["work_dir"], token=config.hf_token(),
                       private=settings.get("private", True), retry_seconds=settings.get("retry_seconds", 300),
                       progress=log.progress_enabled)
    raise BadDocument(f"unknown store URL {url!r}: expected file:///path or hf://datasets/OWNER/NAME")
