"""Start-up of a stage, before anything else is imported: wait for the document, then cli.

bin/ocb-<verb> (lib/sh/stage.sh) picks the interpreter (the project's venv when one exists) and
runs lib/ocb_stage.py, which calls main(verb). Works called by path or from PATH, from any
directory, without activating anything (what a Dockerfile or a crontab line does).
"""

from __future__ import annotations

import os
import select

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


def main(verb: str) -> None:
    if verb in READS_DOCUMENT:
        _await_document()
    from ocb.cli import main as cli_main

    cli_main(verb)
