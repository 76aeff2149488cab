"""pytest: put lib/ first on sys.path, and point huggingface_hub at the test Hub.

huggingface_hub reads HF_ENDPOINT when it is imported, so it is set here, before any test
imports it; the `test_hub` fixture starts the server on that port. No HF_HUB_DISABLE_XET: ocb
turns Xet off for its own process (docs/hub.md), so the tests run what users get.
"""

import os
import socket
import sys
import tempfile

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "lib"))
sys.path.insert(0, ROOT)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


HUB_PORT = _free_port()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# the key cache lives in /dev/shm, shared by every process of this user: off unless a test
# names its own (test_keycache.py)
os.environ["OCB_KEY_CACHE"] = "off"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="ocb-hf-home-")
os.environ["HF_TOKEN"] = "ocb-test-token"


@pytest.fixture(scope="session")
def test_hub(tmp_path_factory):
    """The test Hub on HF_ENDPOINT's port, for in-process clients (our HfStore)."""
    from tests.hub.fixture import start_hub, stop_hub

    url, process = start_hub(tmp_path_factory.mktemp("hub"), port=HUB_PORT, lfs_threshold=4096)
    yield url
    stop_hub(process)
