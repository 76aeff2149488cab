"""Stores: where snapshots live. A scheme registry: each backend parses its own URLs.

`canonical_url(raw, var)` turns what a user wrote (a URL, a path, a legacy OWNER/NAME) into
the canonical URL documents carry; `open_store(url, settings, secrets)` builds the backend
for it. Adding a backend is one module implementing base.Store (with `scheme`, `forms` and
`canonical`) and one line in BACKENDS. No URL is parsed anywhere else.

Backends are imported when first needed, and keep their heavy libraries (huggingface_hub
takes a second to import) out of URL checks. Every backend passes the same contract tests
(tests/unit/test_stores.py).
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING

from ..errors import BadDocument, UsageError
from .base import Store

if TYPE_CHECKING:
    from ..config import Settings, StoreSecrets

# scheme -> "module:Class"; the order is the order forms are listed in messages
BACKENDS = {
    "file": "ocb.stores.local:LocalStore",
    "hf": "ocb.stores.hf:HfStore",
    "s3": "ocb.stores.s3:S3Store",
}
SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://")


def backend(scheme: str) -> type[Store]:
    module, _, name = BACKENDS[scheme].partition(":")
    return getattr(importlib.import_module(module), name)


def _known_forms() -> str:
    forms = [form for scheme in BACKENDS for form in backend(scheme).forms]
    return ", ".join(forms[:-1]) + " or " + forms[-1]


def canonical_url(raw: str, var: str) -> str:
    """The canonical URL of the store `raw` names; UsageError naming `var` and what is wrong."""
    value = raw.strip()
    match = SCHEME.match(value)
    if match:
        scheme = match.group(1)
        if scheme not in BACKENDS:
            raise UsageError(f"{var}={raw!r}: unknown store scheme {scheme}://; expected {_known_forms()}")
        return backend(scheme).canonical(value, var)
    for scheme in BACKENDS:  # a value without "scheme://": the first backend that claims it
        cls = backend(scheme)
        if cls.bare is not None and cls.bare.search(value):
            return cls.canonical(value, var)
    raise UsageError(f"{var}={raw!r}: not a store; expected {_known_forms()}")


def open_store(url: str, settings: Settings, secrets: StoreSecrets) -> Store:
    """The backend for the canonical `url` (a document's `store`), built from the resolved
    settings and the secrets config handed over; a store never reads the environment."""
    match = SCHEME.match(url)
    if not match or match.group(1) not in BACKENDS:
        raise BadDocument(f"store {url!r}: not a store URL (expected {', '.join(s + '://' for s in BACKENDS)}...)")
    cls = backend(match.group(1))
    try:
        canonical = cls.canonical(url, "store")
    except UsageError as exc:
        raise BadDocument(str(exc)) from None
    if canonical != url:
        raise BadDocument(f"store {url!r} is not in canonical form ({canonical!r})")
    return cls(url, settings, secrets)
