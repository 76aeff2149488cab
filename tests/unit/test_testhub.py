"""Tests for tests/hub/testhub.py, driven by the real, unmodified huggingface_hub client.

huggingface_hub reads HF_ENDPOINT, HF_HUB_DISABLE_XET and HF_HOME when it is imported, and other
test modules may import it first with other values. So every client scenario runs in its own
`python -c` subprocess with a clean environment, exactly as ocb runs against the Hub. Raw HTTP
(control endpoints, Range, error headers) goes through urllib in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.hub.fixture import start_hub, stop_hub  # noqa: E402

TOKEN = "write-token"
READ_TOKEN = "read-token"
LFS_THRESHOLD = 100  # bytes: small files take the LFS path without megabytes of test data
PAGE_SIZE = 2

CLIENT_PRELUDE = """
import hashlib, json, os
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError
args = json.loads(os.environ["TEST_ARGS"])
api = HfApi()
def emit(**result):
    print(json.dumps(result))
def status_of(call):
    try:
        call()
    except HfHubHTTPError as e:
        return {"status": e.response.status_code, "message": e.server_message,
                "retry_after": e.response.headers.get("Retry-After"), "type": type(e).__name__}
    return None
"""


@dataclass
class Hub:
    """A running testhub: raw HTTP, control endpoints and client scenarios against it."""

    url: str
    home: Path  # HF_HOME of the client subprocesses (download cache)

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def control(self, method: str, path: str, body: Any = None) -> Any:
        status, _, payload = self.call(method, "/__hub/" + path, body)
        assert status == 200, payload
        return json.loads(payload)

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "stats")

    def state(self, repo: str) -> dict[str, Any]:
        return self.control("GET", f"repo/dataset/{repo}")

    def client(self, script: str, token: str | None = TOKEN, **args: Any) -> dict[str, Any]:
        """Run a client scenario in a fresh interpreter; return what it emit()s."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(HF_ENDPOINT=self.url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HOME=str(self.home), TEST_ARGS=json.dumps(args))
        if token is not None:
            env["HF_TOKEN"] = token
        done = subprocess.run([sys.executable, "-c", CLIENT_PRELUDE + textwrap.dedent(script)],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])


def launch(tmp: Path, **options: Any) -> Iterator[Hub]:
    url, proc = start_hub(tmp / "data", **options)
    try:
        yield Hub(url, tmp / "hf-home")
    finally:
        assert stop_hub(proc) == 0


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from launch(tmp_path_factory.mktemp("hub"), lfs_threshold=LFS_THRESHOLD, page_size=PAGE_SIZE)


@pytest.fixture(scope="module")
def auth_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from launch(tmp_path_factory.mktemp("auth-hub"), token=TOKEN, read_only_token=READ_TOKEN)


@pytest.fixture(autouse=True)
def no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub").control("DELETE", "faults")


def create_dataset(hub: Hub, repo: str, files: dict[str, str] | None = None) -> str:
    """Create a dataset and commit text files to it; return the head commit."""
    result = hub.client("""
        api.create_repo(args["repo"], repo_type="dataset", private=True)
        ops = [CommitOperationAdd(path, content.encode()) for path, content in args["files"].items()]
        if ops:
            api.create_commit(args["repo"], ops, commit_message="seed", repo_type="dataset")
        emit(head=api.dataset_info(args["repo"]).sha)
    """, repo=repo, files=files or {})
    return result["head"]


def by_route_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    routes = set(before["by_route"]) | set(after["by_route"])
    delta = {r: after["by_route"].get(r, 0) - before["by_route"].get(r, 0) for r in routes}
    return {r: n for r, n in delta.items() if n}


# ---- repos --------------------------------------------------------------------------------


def test_create_repo_private_exist_ok_and_existence(hub: Hub) -> None:
    result = hub.client("""
        first = api.create_repo("team/private-ds", repo_type="dataset", private=True)
        again = api.create_repo("team/private-ds", repo_type="dataset", private=True, exist_ok=True)
        conflict = status_of(lambda: api.create_repo("team/private-ds", repo_type="dataset"))
        emit(first=str(first), again=str(again), conflict=conflict["status"],
             private=api.dataset_info("team/private-ds").private,
             exists=api.repo_exists("team/private-ds", repo_type="dataset"),
             missing=api.repo_exists("team/absent", repo_type="dataset"),
             anonymous=HfApi(token=False).repo_exists("team/private-ds", repo_type="dataset"))
    """)
    assert result == {"first": f"{hub.url}/datasets/team/private-ds", "again": f"{hub.url}/datasets/team/private-ds",
                      "conflict": 409, "private": True, "exists": True, "missing": False, "anonymous": False}
    state = hub.state("team/private-ds")
    assert (state["private"], state["commits"], list(state["files"])) == (True, 1, [".gitattributes"])


@pytest.mark.parametrize("name", ["bad..name", "-leading", "trailing.", "sp ace", "x" * 97])
def test_create_repo_rejects_bad_names(hub: Hub, name: str) -> None:
    status, headers, body = hub.call("POST", "/api/repos/create",
                                     {"name": name, "organization": "team", "type": "dataset"},
                                     {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert status == 400
    assert "Invalid repo name" in headers["X-Error-Message"]
    assert "Invalid repo name" in json.loads(body)["error"]


# ---- commits and downloads ----------------------------------------------------------------


def test_commit_regular_and_lfs_files_then_stale_parent_is_refused(hub: Hub, tmp_path: Path) -> None:
    big = os.urandom(5000)
    (tmp_path / "big.bin").write_bytes(big)
    head = create_dataset(hub, "team/commits")
    result = hub.client("""
        repo = args["repo"]
        info = api.create_commit(repo, [CommitOperationAdd("docs/small.txt", b"small"),
                                        CommitOperationAdd("big.bin", args["big"])],
                                 commit_message="add files", parent_commit=args["head"], repo_type="dataset")
        stale = status_of(lambda: api.create_commit(repo, [CommitOperationAdd("late.txt", b"late")],
                                                    commit_message="late", parent_commit=args["head"],
                                                    repo_type="dataset"))
        small = hf_hub_download(repo, "docs/small.txt", repo_type="dataset")
        big = hf_hub_download(repo, "big.bin", repo_type="dataset")
        meta = api.get_hf_file_metadata(url=hf_hub_url(repo, "big.bin", repo_type="dataset"))
        emit(oid=info.oid, stale=stale, small=open(small, "rb").read().decode(),
             big_sha256=hashlib.sha256(open(big, "rb").read()).hexdigest(),
             etag=meta.etag, size=meta.size, commit=meta.commit_hash,
             exists=api.file_exists(repo, "big.bin", repo_type="dataset"),
             absent=api.file_exists(repo, "late.txt", repo_type="dataset"))
    """, repo="team/commits", head=head, big=str(tmp_path / "big.bin"))
    sha256 = hashlib.sha256(big).hexdigest()
    assert len(result["oid"]) == 40
    assert result["stale"]["status"] == 412
    assert "A commit has happened since" in result["stale"]["message"]
    assert (result["small"], result["big_sha256"]) == ("small", sha256)
    assert (result["etag"], result["size"], result["commit"]) == (sha256, 5000, result["oid"])
    assert (result["exists"], result["absent"]) == (True, False)
    state = hub.state("team/commits")
    assert state["head"] == result["oid"] and state["commits"] == 2
    assert state["files"]["big.bin"] == {"size": 5000, "sha256": sha256, "lfs": True}
    assert state["files"]["docs/small.txt"]["lfs"] is False
    assert "late.txt" not in state["files"]


@pytest.mark.parametrize("repo_type", ["model", "space"])
def test_models_and_spaces_use_their_own_url_prefixes(hub: Hub, repo_type: str) -> None:
    result = hub.client("""
        kind = args["type"]
        url = api.create_repo("team/other-kinds", repo_type=kind, space_sdk="static" if kind == "space" else None)
        api.create_commit("team/other-kinds", [CommitOperationAdd("w.bin", b"w" * 200)], commit_message="w",
                          repo_type=kind)
        path = hf_hub_download("team/other-kinds", "w.bin", repo_type=kind)
        emit(url=str(url), ok=open(path, "rb").read() == b"w" * 200,
             files=api.list_repo_files("team/other-kinds", repo_type=kind))
    """, type=repo_type)
    prefix = {"model": "", "space": "spaces/"}[repo_type]
    assert result == {"url": f"{hub.url}/{prefix}team/other-kinds", "ok": True, "files": [".gitattributes", "w.bin"]}
    assert hub.control("GET", f"repo/{repo_type}/team/other-kinds")["files"]["w.bin"]["lfs"] is True


def test_list_repo_files_follows_pagination(hub: Hub) -> None:
    files = {"a.txt": "a", "b.txt": "b", "dir/c.txt": "c", "dir/sub/d.txt": "d", "e.txt": "e"}
    create_dataset(hub, "team/listing", files)
    before = hub.stats()
    result = hub.client("""
        repo = args["repo"]
        emit(files=api.list_repo_files(repo, repo_type="dataset"),
             top=[item.path for item in api.list_repo_tree(repo, repo_type="dataset")],
             sub=[item.path for item in api.list_repo_tree(repo, "dir", repo_type="dataset")],
             info=[type(i).__name__ for i in api.get_paths_info(repo, ["dir", "a.txt", "nope"], repo_type="dataset")])
    """, repo="team/listing")
    assert result["files"] == sorted([".gitattributes", *files])
    assert result["top"] == [".gitattributes", "a.txt", "b.txt", "dir", "e.txt"]
    assert result["sub"] == ["dir/c.txt", "dir/sub"]
    assert result["info"] == ["RepoFolder", "RepoFile"]
    # Recursive: 6 files + 2 folders = 4 pages; top level: 5 items = 3 pages; dir: 1 page.
    assert by_route_delta(before, hub.stats())["tree"] == 4 + 3 + 1


def test_list_repo_commits_then_super_squash(hub: Hub) -> None:
    create_dataset(hub, "team/history")
    result = hub.client("""
        repo = args["repo"]
        for n in (1, 2, 3):
            api.create_commit(repo, [CommitOperationAdd(f"f{n}.txt", b"x" * n)], commit_message=f"c{n}",
                              repo_type="dataset")
        before = [c.title for c in api.list_repo_commits(repo, repo_type="dataset")]
        api.super_squash_history(repo, repo_type="dataset")
        after = [c.title for c in api.list_repo_commits(repo, repo_type="dataset")]
        path = hf_hub_download(repo, "f3.txt", repo_type="dataset")
        emit(before=before, after=after, content=open(path).read())
    """, repo="team/history")
    assert result["before"] == ["c3", "c2", "c1", "initial commit"]
    assert result["after"] == ["Super-squash branch 'main' using huggingface_hub"]
    assert result["content"] == "xxx"
    state = hub.state("team/history")
    assert state["commits"] == 1
    assert sorted(state["files"]) == [".gitattributes", "f1.txt", "f2.txt", "f3.txt"]


def test_delete_file_and_folder_in_one_commit(hub: Hub) -> None:
    create_dataset(hub, "team/deletes", {"keep.txt": "k", "old.txt": "o", "logs/1.txt": "1", "logs/2.txt": "2"})
    result = hub.client("""
        repo = args["repo"]
        api.create_commit(repo, [CommitOperationDelete("old.txt"), CommitOperationDelete("logs/")],
                          commit_message="prune", repo_type="dataset")
        missing = status_of(lambda: api.delete_file("old.txt", repo, repo_type="dataset"))
        emit(files=api.list_repo_files(repo, repo_type="dataset"), missing=missing)
    """, repo="team/deletes")
    assert result["files"] == [".gitattributes", "keep.txt"]
    assert (result["missing"]["status"], result["missing"]["type"]) == (404, "RemoteEntryNotFoundError")


def test_lfs_objects_count_until_permanently_deleted(hub: Hub) -> None:
    create_dataset(hub, "team/lfs")
    result = hub.client("""
        repo = args["repo"]
        api.create_commit(repo, [CommitOperationAdd("vol.bin", b"v" * 500)], commit_message="add", repo_type="dataset")
        api.delete_file("vol.bin", repo, repo_type="dataset")
        listed = list(api.list_lfs_files(repo, repo_type="dataset"))
        emit(listed=[(f.filename, f.size, f.file_oid) for f in listed])
    """, repo="team/lfs")
    sha256 = hashlib.sha256(b"v" * 500).hexdigest()
    assert result["listed"] == [["vol.bin", 500, sha256]]
    state = hub.state("team/lfs")
    assert "vol.bin" not in state["files"]
    assert (state["lfs_objects"], state["lfs_size"]) == (1, 500)

    result = hub.client("""
        repo = args["repo"]
        api.permanently_delete_lfs_files(repo, list(api.list_lfs_files(repo, repo_type="dataset")), repo_type="dataset")
        emit(listed=len(list(api.list_lfs_files(repo, repo_type="dataset"))))
    """, repo="team/lfs")
    assert result["listed"] == 0
    assert (hub.state("team/lfs")["lfs_objects"], hub.state("team/lfs")["lfs_size"]) == (0, 0)


def test_stats_count_requests_commits_and_bytes(hub: Hub) -> None:
    hub.control("POST", "stats/reset")
    hub.client("""
        repo = args["repo"]
        api.create_repo(repo, repo_type="dataset")
        api.create_commit(repo, [CommitOperationAdd("a.bin", b"a" * 300), CommitOperationAdd("n.txt", b"n")],
                          commit_message="one", repo_type="dataset")
        hf_hub_download(repo, "a.bin", repo_type="dataset")
        # Same content under another name: the LFS batch says it is stored, nothing is uploaded.
        api.create_commit(repo, [CommitOperationAdd("copy.bin", b"a" * 300)], commit_message="two",
                          repo_type="dataset")
        emit()
    """, repo="team/stats")
    stats = hub.stats()
    assert stats["by_route"] == {"create": 1, "preupload": 2, "lfs_batch": 2, "lfs_upload": 1, "lfs_verify": 1,
                                 "commit": 2, "resolve_head": 1, "resolve_get": 1, "cdn_get": 1}
    assert stats["requests"] == sum(stats["by_route"].values())
    assert (stats["commits"], stats["lfs_bytes"], stats["downloaded_bytes"], stats["faults_fired"]) == (2, 300, 300, 0)
    assert hub.stats()["requests"] == stats["requests"], "control requests must not be counted"
    assert hub.control("POST", "stats/reset")["requests"] == 0


def test_data_survives_a_restart(tmp_path: Path) -> None:
    for run in ("write", "read"):
        for served in launch(tmp_path, lfs_threshold=LFS_THRESHOLD):
            result = served.client("""
                repo = args["repo"]
                if args["run"] == "write":
                    api.create_repo(repo, repo_type="dataset")
                    api.create_commit(repo, [CommitOperationAdd("big.bin", b"b" * 200)], commit_message="c",
                                      repo_type="dataset")
                path = hf_hub_download(repo, "big.bin", repo_type="dataset", force_download=True)
                emit(content=open(path).read(), head=api.dataset_info(repo).sha)
            """, repo="team/durable", run=run)
            assert result["content"] == "b" * 200
            assert served.state("team/durable")["head"] == result["head"]


# ---- auth ---------------------------------------------------------------------------------


def test_token_is_required_when_configured(auth_hub: Hub) -> None:
    script = """
        emit(error=status_of(lambda: api.create_repo("team/locked", repo_type="dataset", exist_ok=True)))
    """
    for token in (None, "wrong-token"):
        error = auth_hub.client(script, token=token)["error"]
        assert (error["status"], error["type"]) == (401, "HfHubHTTPError")
        assert "Invalid credentials in Authorization header" in error["message"]
    assert auth_hub.client(script, token=TOKEN)["error"] is None


def test_read_only_token_reads_but_cannot_commit(auth_hub: Hub) -> None:
    auth_hub.client('api.create_repo("team/ro", repo_type="dataset", private=True); emit()', token=TOKEN)
    head = auth_hub.state("team/ro")["head"]
    result = auth_hub.client("""
        emit(sha=api.dataset_info("team/ro").sha,
             commit=status_of(lambda: api.create_commit("team/ro", [CommitOperationAdd("x.txt", b"x")],
                                                        commit_message="x", repo_type="dataset")))
    """, token=READ_TOKEN)
    assert result["sha"] == head
    assert result["commit"]["status"] == 403
    assert "lacks write access" in result["commit"]["message"]
    assert auth_hub.state("team/ro")["head"] == head


# ---- faults -------------------------------------------------------------------------------


def test_rate_limit_fault_on_the_nth_commit(hub: Hub) -> None:
    create_dataset(hub, "team/ratelimit")
    hub.control("POST", "faults", {"route": "commit", "nth": 2, "status": 429, "retry_after": 1, "times": 1})
    result = hub.client("""
        outcomes = []
        for n in (1, 2, 3):
            outcomes.append(status_of(lambda: api.create_commit(
                args["repo"], [CommitOperationAdd(f"{n}.txt", b"n")], commit_message=str(n), repo_type="dataset")))
        emit(outcomes=outcomes)
    """, repo="team/ratelimit")
    first, second, third = result["outcomes"]
    assert first is None and third is None
    assert (second["status"], second["retry_after"]) == (429, "1")
    assert [(r["seen"], r["fired"]) for r in hub.control("GET", "faults")["rules"]] == [(3, 1)]
    assert sorted(hub.state("team/ratelimit")["files"]) == [".gitattributes", "1.txt", "3.txt"]


def test_server_error_faults_surface_or_are_retried(hub: Hub) -> None:
    create_dataset(hub, "team/errors")
    hub.control("POST", "faults", [{"route": "info", "status": 500},
                                   {"route": "tree", "status": 503, "times": 1}])
    before = hub.stats()
    result = hub.client("""
        emit(info=status_of(lambda: api.dataset_info(args["repo"])),
             files=api.list_repo_files(args["repo"], repo_type="dataset"))
    """, repo="team/errors")
    assert result["info"]["status"] == 500
    assert result["files"] == [".gitattributes"]  # the client retried the 503 by itself
    assert by_route_delta(before, hub.stats()) == {"info": 1, "tree": 2}
    hub.control("DELETE", "faults")
    assert hub.client('emit(sha=api.dataset_info(args["repo"]).sha)', repo="team/errors")["sha"]


def test_dropped_download_is_resumed(hub: Hub) -> None:
    create_dataset(hub, "team/dropdl")
    hub.client("""
        api.create_commit(args["repo"], [CommitOperationAdd("big.bin", bytes(range(250)) * 20)],
                          commit_message="big", repo_type="dataset")
        emit()
    """, repo="team/dropdl")
    hub.control("POST", "faults", {"route": "cdn_get", "drop_after_bytes": 1000, "times": 1})
    before = hub.stats()
    result = hub.client("""
        path = hf_hub_download(args["repo"], "big.bin", repo_type="dataset")
        emit(ok=open(path, "rb").read() == bytes(range(250)) * 20)
    """, repo="team/dropdl")
    assert result["ok"]
    after = hub.stats()
    # the resolve answers 302 to the CDN each time; the CDN's second answer resumes
    assert by_route_delta(before, after) == {"resolve_head": 1, "resolve_get": 2, "cdn_get": 2}
    assert after["downloaded_bytes"] - before["downloaded_bytes"] == 1000 + 5000


def test_dropped_lfs_upload_is_retried(hub: Hub) -> None:
    create_dataset(hub, "team/dropup")
    hub.control("POST", "faults", {"route": "lfs_upload", "drop_after_bytes": 1000, "times": 1})
    before = hub.stats()
    hub.client("""
        api.create_commit(args["repo"], [CommitOperationAdd("big.bin", b"u" * 5000)], commit_message="big",
                          repo_type="dataset")
        emit()
    """, repo="team/dropup")
    after = hub.stats()
    assert by_route_delta(before, after)["lfs_upload"] == 2
    assert after["lfs_bytes"] - before["lfs_bytes"] == 1000 + 5000
    assert hub.state("team/dropup")["files"]["big.bin"]["sha256"] == hashlib.sha256(b"u" * 5000).hexdigest()


def test_move_head_makes_the_parent_stale(hub: Hub) -> None:
    head = create_dataset(hub, "team/race")
    moved = hub.control("POST", "move-head", {"repo": "team/race", "type": "dataset"})["head"]
    result = hub.client("""
        emit(error=status_of(lambda: api.create_commit(args["repo"], [CommitOperationAdd("mine.txt", b"m")],
                                                       commit_message="mine", parent_commit=args["head"],
                                                       repo_type="dataset")))
    """, repo="team/race", head=head)
    assert result["error"]["status"] == 412
    state = hub.state("team/race")
    assert state["head"] == moved != head
    assert sorted(state["files"]) == [".gitattributes", "other-writer.txt"]


def test_delay_fault_slows_the_reply(hub: Hub) -> None:
    create_dataset(hub, "team/slow")
    hub.control("POST", "faults", {"route": "info", "delay": 0.5, "times": 1})
    started = time.monotonic()
    status, _, _ = hub.call("GET", "/api/datasets/team/slow", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and time.monotonic() - started >= 0.5


@pytest.mark.parametrize("rule", [{"route": "nope", "status": 500}, {"route": "commit"},
                                  {"route": "commit", "status": 200}, {"route": "commit", "status": 500, "x": 1},
                                  {"route": "resolve", "status": 500, "drop_after_bytes": 3}])
def test_bad_fault_rules_are_rejected(hub: Hub, rule: dict[str, Any]) -> None:
    status, _, body = hub.call("POST", "/__hub/faults", rule)
    assert status == 400, body
    assert hub.control("GET", "faults") == {"rules": []}


# ---- raw protocol details -----------------------------------------------------------------


def test_range_requests_get_206_or_416(hub: Hub) -> None:
    create_dataset(hub, "team/range", {"r.txt": "0123456789"})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = "/datasets/team/range/resolve/main/r.txt"
    status, headers, body = hub.call("GET", url, headers={**auth, "Range": "bytes=2-5"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 2-5/10", b"2345")
    status, headers, body = hub.call("GET", url, headers={**auth, "Range": "bytes=-3"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 7-9/10", b"789")
    status, headers, _ = hub.call("GET", url, headers={**auth, "Range": "bytes=20-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */10")


def test_every_404_carries_an_error_code(hub: Hub) -> None:
    head = create_dataset(hub, "team/codes")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = {
        "/api/datasets/team/nothing": "RepoNotFound",
        "/api/datasets/team/codes/revision/nobranch": "RevisionNotFound",
        "/datasets/team/codes/resolve/main/missing.txt": "EntryNotFound",
        "/api/datasets/team/codes/tree/main/nofolder": "EntryNotFound",
        "/api/agent-harnesses": "EntryNotFound",
        "/no/such/route": "RouteNotFound",
    }
    for path, code in cases.items():
        status, headers, body = hub.call("GET", path, headers=auth)
        assert (status, headers["X-Error-Code"]) == (404, code), path
        assert headers["X-Request-Id"] and json.loads(body)["error"] == headers["X-Error-Message"]
    _, headers, _ = hub.call("GET", "/datasets/team/codes/resolve/main/missing.txt", headers=auth)
    assert headers["X-Repo-Commit"] == head
    status, _, body = hub.call("POST", "/api/validate-yaml", {"content": "---\n", "repoType": "dataset"}, auth)
    assert (status, json.loads(body)) == (200, {"errors": [], "warnings": []})


def test_start_hub_sh_prints_url_and_pid(tmp_path: Path) -> None:
    done = subprocess.run(["sh", str(ROOT / "tests/hub/start-hub.sh"), str(tmp_path / "data"), "--page-size", "3"],
                          capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    url, pid = done.stdout.split()
    hub = Hub(url, tmp_path)
    assert hub.stats()["requests"] == 0
    os.kill(int(pid), 15)
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)
    pytest.fail("testhub kept listening after SIGTERM")


# ---- strict like the Hub: LFS for binaries, the CDN, quotas, Xet endpoints, whoami, faults ------


def raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects NOT followed (urllib follows them)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def raw_commit(hub: Hub, repo: str, lines: list[dict[str, Any]], timeout: float = 10) -> tuple[int, dict, bytes]:
    payload = "\n".join(json.dumps(line) for line in [{"key": "header", "value": {"summary": "raw"}}, *lines])
    return raw(hub.url, "POST", f"/api/datasets/{repo}/commit/main", payload.encode(),
               {**AUTH, "Content-Type": "application/x-ndjson"}, timeout)


def raw_lfs_put(hub: Hub, repo: str, data: bytes) -> tuple[int, dict[str, Any]]:
    """Upload `data` through the LFS batch API; (status of the batch, its answer)."""
    oid = hashlib.sha256(data).hexdigest()
    status, _, body = raw(hub.url, "POST", f"/datasets/{repo}.git/info/lfs/objects/batch",
                          json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}).encode(),
                          {**AUTH, "Content-Type": "application/json"})
    answer = json.loads(body)
    if status == 200:
        actions = answer["objects"][0].get("actions")
        if actions:
            href = actions["upload"]["href"]
            assert raw(hub.url, "PUT", href[len(hub.url):], data)[0] == 200
    return status, answer


def test_binary_and_gitattributes_files_go_to_lfs_whatever_their_size(hub: Hub) -> None:
    create_dataset(hub, "team/binary")
    files = [{"path": "tiny.dat", "size": 3, "sample": b64(b"\x00\x01\x02")},
             {"path": "latin.dat", "size": 4, "sample": b64(b"\xff\xfe\xfd\xfc")},
             {"path": "notes.txt", "size": 5, "sample": b64(b"hello")},
             {"path": "cut.txt", "size": 3, "sample": b64("é".encode()[:1])},  # a sample cut mid-character
             {"path": "small.zst", "size": 3, "sample": b64(b"abc")}]  # the default .gitattributes
    status, _, body = raw(hub.url, "POST", "/api/datasets/team/binary/preupload/main",
                          json.dumps({"files": files}).encode(), {**AUTH, "Content-Type": "application/json"})
    assert status == 200, body
    modes = {f["path"]: f["uploadMode"] for f in json.loads(body)["files"]}
    assert modes == {"tiny.dat": "lfs", "latin.dat": "lfs", "notes.txt": "regular", "cut.txt": "regular",
                     "small.zst": "lfs"}
    # sent as a regular file anyway: refused, as the Hub refuses binary files outside LFS
    status, _, body = raw_commit(hub, "team/binary", [
        {"key": "file", "value": {"path": "tiny.dat", "content": b64(b"\x00\x01\x02"), "encoding": "base64"}}])
    assert status == 400 and b"binary files" in body
    assert "tiny.dat" not in hub.state("team/binary")["files"]


def test_lfs_downloads_redirect_to_a_signed_cdn_url_on_another_port(hub: Hub) -> None:
    create_dataset(hub, "team/cdn")
    data = bytes(range(256)) * 4
    assert raw_lfs_put(hub, "team/cdn", data)[0] == 200
    oid = hashlib.sha256(data).hexdigest()
    status, _, body = raw_commit(hub, "team/cdn", [
        {"key": "lfsFile", "value": {"path": "v.bin", "algo": "sha256", "oid": oid, "size": len(data)}}])
    assert status == 200, body
    for method in ("HEAD", "GET"):
        status, headers, _ = raw(hub.url, method, "/datasets/team/cdn/resolve/main/v.bin", headers=AUTH)
        assert status == 302
        assert headers["X-Linked-Size"] == str(len(data)) and headers["X-Linked-Etag"] == f'"{oid}"'
        assert headers["X-Xet-Hash"] and 'rel="xet-auth"' in headers["Link"]
    location = headers["Location"]
    assert location.startswith("http://127.0.0.1:") and not location.startswith(hub.url + "/")
    cdn = location.split("/", 3)
    cdn_url, cdn_path = "/".join(cdn[:3]), "/" + cdn[3]
    before = hub.stats()
    status, headers, body = raw(cdn_url, "GET", cdn_path, headers={"Range": "bytes=0-9"})  # no token needed
    assert (status, body, headers["Content-Range"]) == (206, data[:10], f"bytes 0-9/{len(data)}")
    assert by_route_delta(before, hub.stats()) == {"cdn_get": 1}
    status, _, _ = raw(cdn_url, "GET", cdn_path.replace("sig=", "sig=0"))
    assert status == 403


def test_a_namespace_quota_refuses_private_uploads_with_the_hubs_message(hub: Hub) -> None:
    create_dataset(hub, "quota/private")
    used = hub.control("POST", "quota", {"namespace": "quota", "bytes": 0})["used"]
    assert used > 0  # the initial commit's .gitattributes counts
    hub.control("POST", "quota", {"namespace": "quota", "bytes": used + 100})
    status, answer = raw_lfs_put(hub, "quota/private", b"q" * 200)
    assert status == 403 and answer["error"].startswith("Private repository storage limit reached")
    status, _, body = raw_commit(hub, "quota/private", [
        {"key": "file", "value": {"path": "big.txt", "content": b64(b"t" * 200), "encoding": "base64"}}])
    assert status == 403 and b"storage limit" in body
    hub.client('api.create_repo(args["repo"], repo_type="dataset", private=False); emit()', repo="quota/public")
    assert raw_lfs_put(hub, "quota/public", b"p" * 200)[0] == 200  # public storage is not counted
    hub.control("POST", "quota", {"namespace": "quota", "bytes": None})
    assert raw_lfs_put(hub, "quota/private", b"q" * 200)[0] == 200


def test_a_ratelimit_fault_sends_ratelimit_and_no_retry_after(hub: Hub) -> None:
    create_dataset(hub, "team/ratelimit-header")
    hub.control("POST", "faults", {"route": "info", "status": 429, "ratelimit": 7, "times": 1})
    status, headers, _ = raw(hub.url, "GET", "/api/datasets/team/ratelimit-header", headers=AUTH)
    assert status == 429 and headers["RateLimit"] == '"api";r=0;t=7' and "Retry-After" not in headers
    assert raw(hub.url, "GET", "/api/datasets/team/ratelimit-header", headers=AUTH)[0] == 200


def test_a_late_answer_comes_after_the_commit_landed(hub: Hub) -> None:
    create_dataset(hub, "team/late")
    hub.control("POST", "faults", {"route": "commit", "answer_delay": 3, "times": 1})
    with pytest.raises(TimeoutError):
        raw_commit(hub, "team/late", [
            {"key": "file", "value": {"path": "l.txt", "content": b64(b"late"), "encoding": "base64"}}], timeout=0.5)
    # the client gave up; the Hub had committed before it answered
    assert "l.txt" in hub.state("team/late")["files"]


def test_xet_token_endpoints_answer_and_lead_to_no_cas(hub: Hub) -> None:
    create_dataset(hub, "team/xet")
    for kind in ("read", "write"):
        status, headers, body = raw(hub.url, "GET", f"/api/datasets/team/xet/xet-{kind}-token/main", headers=AUTH)
        answer = json.loads(body)
        assert status == 200 and answer["accessToken"] and answer["exp"] > time.time()
        assert headers["X-Xet-Cas-Url"] == answer["casUrl"]
    cas = answer["casUrl"][len(hub.url):]
    assert raw(hub.url, "POST", cas + "/v1/xorbs/default/0", b"x", AUTH)[0] == 501


def test_whoami_names_the_token_users_organisations(tmp_path: Path) -> None:
    for served in launch(tmp_path, token=TOKEN, read_only_token=READ_TOKEN, orgs="team,ocb"):
        status, _, body = raw(served.url, "GET", "/api/whoami-v2", headers=AUTH)
        me = json.loads(body)
        assert status == 200 and [org["name"] for org in me["orgs"]] == ["team", "ocb"]
        assert me["auth"]["accessToken"]["role"] == "write"
        _, _, body = raw(served.url, "GET", "/api/whoami-v2", headers={"Authorization": f"Bearer {READ_TOKEN}"})
        assert json.loads(body)["auth"]["accessToken"]["role"] == "read"
        assert raw(served.url, "GET", "/api/whoami-v2", headers={"Authorization": "Bearer wrong"})[0] == 401
