"""Start-up for bin/ocb-*: run under the project's venv when one exists, then hand off to cli.

Lets `bin/ocb-plan` work when called by path or from PATH, from any directory, without
activating anything (what a Dockerfile or a crontab line does). Without a venv (deps
installed system-wide) it runs on the interpreter it was started with.
"""

from __future__ import annotations

import os
import sys


def main(verb: str, script: str) -> None:
    project = os.path.dirname(os.path.dirname(os.path.realpath(script)))
    venv = os.path.join(project, ".venv")
    venv_python = os.path.join(venv, "bin", "python")
    if os.path.exists(venv_python) and os.path.realpath(sys.prefix) != os.path.realpath(venv):
        os.execv(venv_python, [venv_python, script, *sys.argv[1:]])
    from ocb.cli import main as cli_main

    cli_main(verb)
