"""ocb-doctor's pure parts: the token's write access from whoami-v2, and the backend limits."""

import pytest

from ocb.stages.doctor import limit_checks
from ocb.stores.hf import token_can_write

REPO = "alice/state"


def whoami(role, scoped=None):
    token = {"role": role}
    if scoped is not None:
        token["fineGrained"] = {"scoped": scoped}
    return {"name": "alice", "auth": {"type": "access_token", "accessToken": token}}


@pytest.mark.parametrize("answer, expected", [
    (whoami("write"), True),
    (whoami("read"), False),
    (whoami("fineGrained", [{"entity": {"type": "user", "name": "alice"}, "permissions": ["repo.write"]}]), True),
    (whoami("fineGrained", [{"entity": {"type": "dataset", "name": REPO}, "permissions": ["repo.write"]}]), True),
    (whoami("fineGrained", [{"entity": {"type": "dataset", "name": REPO}, "permissions": ["repo.content.read"]}]), False),
    (whoami("fineGrained", [{"entity": {"type": "org", "name": "other"}, "permissions": ["repo.write"]}]), False),
    (whoami("fineGrained", []), False),
    ({"name": "alice"}, None),
])
def test_token_can_write(answer, expected):
    can, why = token_can_write(answer, REPO)
    assert can is expected and why


LIMITS = {"entries_per_folder": 10_000, "private_storage_bytes": 100}


@pytest.mark.parametrize("used, private, oks, warnings", [
    ({"entries_per_folder": 10, "private_storage_bytes": 10}, True, [True], [False]),
    ({"entries_per_folder": 8_000, "private_storage_bytes": 10}, True, [True], [True]),
    ({"entries_per_folder": 10_000, "private_storage_bytes": 10}, True, [False], [False]),
    ({"entries_per_folder": 10, "private_storage_bytes": 100}, True, [False], [False]),
    ({"entries_per_folder": 10, "private_storage_bytes": 100}, False, [True], [False]),
    ({"entries_per_folder": 9_999, "private_storage_bytes": 99}, True, [True, True], [True, True]),
])
def test_limit_checks(used, private, oks, warnings):
    report: dict = {}
    checks = limit_checks(used, LIMITS, private, report)
    assert [c.ok for c in checks] == oks and [c.warning for c in checks] == warnings
    assert all(c.fix for c in checks if not c.ok or c.warning)
    assert ("private_storage_bytes" in report) is private
    assert report["entries_per_folder"] == {"used": used["entries_per_folder"], "limit": 10_000}
