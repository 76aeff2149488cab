"""Start and stop tests/s3/s3server.py (moto behind the fault proxy) for pytest fixtures."""

from __future__ import annotations

import selectors
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).with_name("s3server.py")


def start_s3(ready_timeout: float = 20.0) -> tuple[str, subprocess.Popen[str]]:
    """(url, process) once the server listens on 127.0.0.1."""
    proc = subprocess.Popen([sys.executable, str(SERVER)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        ready = selector.select(ready_timeout)
    line = proc.stdout.readline().strip() if ready else ""
    proc.stdout.close()
    if not line.startswith("http://127.0.0.1:"):
        stop_s3(proc)
        raise RuntimeError(f"the S3 test server did not start (exit code {proc.returncode}, first line {line!r})")
    return line, proc


def stop_s3(proc: subprocess.Popen[str], timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
