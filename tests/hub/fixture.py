"""Start and stop tests/hub/testhub.py as a subprocess, for pytest fixtures.

It owns only the server process's lifecycle: launch, wait for the ready line, terminate. It does
not touch the client side (HF_ENDPOINT and friends are the caller's to set).

    url, proc = start_hub(tmp_path / "hub", lfs_threshold=100, page_size=2)
    try:
        ...  # HF_ENDPOINT=url
    finally:
        stop_hub(proc)
"""

from __future__ import annotations

import selectors
import subprocess
import sys
from pathlib import Path

TESTHUB = Path(__file__).with_name("testhub.py")


def start_hub(data_dir: str | Path, *, token: str | None = None, read_only_token: str | None = None,
              lfs_threshold: int | None = None, page_size: int | None = None, orgs: str | None = None,
              verbose: bool = False,
              python: str = sys.executable, ready_timeout: float = 15.0,
              port: int = 0) -> tuple[str, subprocess.Popen[str]]:
    """Launch testhub (on a free port unless `port` is given) with its repos in data_dir; return
    (url, process) once it listens."""
    cmd = [python, str(TESTHUB), "--port", str(port), "--data", str(data_dir)]
    for flag, value in (("--token", token), ("--read-only-token", read_only_token),
                        ("--lfs-threshold", lfs_threshold), ("--page-size", page_size), ("--orgs", orgs)):
        if value is not None:
            cmd += [flag, str(value)]
    if verbose:
        cmd.append("--verbose")
    # stderr is inherited, so a server traceback lands in the test's captured output.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        ready = selector.select(ready_timeout)
    line = proc.stdout.readline().strip() if ready else ""
    # The server prints nothing after the ready line, so the pipe is no longer needed.
    proc.stdout.close()
    if not line.startswith("http://127.0.0.1:"):
        stop_hub(proc)
        raise RuntimeError(f"testhub did not start (exit code {proc.returncode}, first line {line!r})")
    return line, proc


def stop_hub(proc: subprocess.Popen[str], timeout: float = 10.0) -> int:
    """SIGTERM the server, SIGKILL it if it does not exit in time; return its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
