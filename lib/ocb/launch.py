"""Start-up for bin/ocb-*: run under the project's venv when one exists, then hand off to cli.

Lets `bin/ocb-plan` work when called by path or from PATH, from any directory, without
activating anything (what a Dockerfile or a crontab line does). Without a venv (deps
installed system-wide) it runs on the interpreter it was started with.
"""

from __future__ import annotations

import os
import select
import sys

# the stages that read the document the one before them writes at its end (cli.py uses it too)
READS_DOCUMENT = ("pack", "seal", "split", "push", "pull")


def _await_document() -> None:
    """In a pipe, a stage waits for its document before importing anything: the five processes
    of a backup pipe start together, and those waiting then hold a bare interpreter (~10 MB)
    instead of ocb and its libraries, and do not compete for the CPU with the stage at work."""
    try:
        if not os.isatty(0):
            select.select([0], [], [])
    except (OSError, ValueError):
        pass  # no usable stdin: the stage itself says what is wrong with it


def main(verb: str, script: str) -> None:
    project = os.path.dirname(os.path.dirname(os.path.realpath(script)))
    venv = os.path.join(project, ".venv")
    venv_python = os.path.join(venv, "bin", "python")
    if os.path.exists(venv_python) and os.path.realpath(sys.prefix) != os.path.realpath(venv):
        os.execv(venv_python, [venv_python, script, *sys.argv[1:]])
    if verb in READS_DOCUMENT:
        _await_document()
    from ocb.cli import main as cli_main

    cli_main(verb)
