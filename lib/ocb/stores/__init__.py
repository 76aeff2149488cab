"""Stores: where snapshots live. `open_store(url)` picks the backend from the URL.

Every backend implements the small interface in base.py and passes the same contract tests
(tests/unit/test_stores.py).
"""

from __future__ import annotations

from .base import Store


def open_store(url: str, work_dir: str, for_restore: bool = False) -> Store:
    if url.startswith("file://"):
        from .local import LocalStore

        return LocalStore(url)
    if url.startswith("hf://"):
        from .hf import HfStore  # imported lazily: huggingface_hub is slow to import

        return HfStore(url, work_dir=work_dir, for_restore=for_restore)
    raise ValueError(f"unknown store URL {url!r}")
