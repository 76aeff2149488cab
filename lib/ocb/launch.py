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


STAGES_HELP = """ocb-stages: stages one after the other in one interpreter, as their pipe would run them

Usage: ocb-stages STAGE... [-- FLAG...]
       ocb-stages --help | --version

STAGE: plan (first only: it starts the document, stdin is not read), pack, seal, split, push,
pull, and prune (last only, after push: the prune ocb-backup runs after a backup, when it is
due). FLAGs after `--` go to the first STAGE, as its own command line.

`ocb-plan | ocb-stages pack seal split push` does what `ocb-plan | ocb-pack | ocb-seal |
ocb-split | ocb-push` does: each stage reads the document the one before wrote (the first,
stdin), passes on an error or a skip with its code, and logs as itself (`ocb-pack: info:
...`); the last one's document goes to stdout. One interpreter starts instead of one per
stage (~0.15-0.2 s each, most of it imports): ocb-backup runs `ocb-stages plan pack seal
split push prune -- FLAG...`. The stages after the first take no flags of their own (run
one alone for those); -q / -v reach every stage as OCB_VERBOSITY=quiet|verbose, and each
reads the environment it reads alone (`ocb-pack --help`, ...).

prune there is `ocb-prune --after-backup` when OCB_PRUNE_EVERY says a prune is due and the
backup was published: never after a failure or a skip, nor with OCB_PRUNE_EVERY=off; with
the default (full) only after a backup that started a new chain; with N, after every Nth
backup (the store's catalog counts them). When none is due the document is push's, with no
`prune`.

Example:
  ocb-plan | ocb-stages pack seal split push | jq -r .push.meta
  ocb-stages plan pack seal split push -- --full | jq .plan.type

Exit status: the last stage's, which is the first failing stage's code (a failing stage's
error document is passed on by the ones after it); 2: no STAGE, or one out of its place (the
usage line on stderr, an error document on stdout, nothing run).
"""

# the stages ocb-stages runs: plan may only come first, prune only last, after push
STAGES = ("plan", *READS_DOCUMENT, "prune")


def _stages(argv: list[str]) -> tuple[list[str], list[str]]:
    """ocb-stages' command line: the stages to run and the first one's flags, or exit (help,
    version, a usage error)."""
    import sys

    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(STAGES_HELP)
        raise SystemExit(0)
    if argv[:1] == ["--version"]:
        from ocb import __version__

        sys.stdout.write(f"ocb-stages {__version__}\n")
        raise SystemExit(0)
    flags: list[str] = []
    if "--" in argv:
        argv, flags = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    loudness = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}
    stages = [arg for arg in argv if arg not in loudness]
    for arg in argv:
        if arg in loudness:
            os.environ["OCB_VERBOSITY"] = loudness[arg]
    wrong = [stage for stage in stages if stage not in STAGES] or ([] if stages else ["(none)"])
    message = None
    if wrong:
        message = (f"not a stage: {' '.join(wrong)} (one or more of {' '.join(STAGES)}; "
                   "see ocb-stages --help)")
    elif "plan" in stages[1:]:
        message = "plan starts the document: it can only be the first stage"
    elif "prune" in stages and (stages[-1] != "prune" or stages[-2:-1] != ["push"] or stages.count("prune") > 1):
        message = "prune is the prune after a backup: it can only be the last stage, after push"
    if message is not None:
        import json

        sys.stderr.write(f"usage: ocb-stages STAGE... [-- FLAG...]\nocb-stages: error: {message}\n")
        sys.stdout.write(json.dumps({"ocb": 1, "kind": "backup",
                                     "error": {"stage": "stages", "code": 2, "message": message}}, indent=2) + "\n")
        raise SystemExit(2)
    return stages, flags


def main(verb: str) -> None:
    """`verb`: a stage, or "stages" (ocb-stages: the stages named on the command line, in one
    interpreter, cli.run_stages)."""
    if verb == "stages":
        import sys

        stages, flags = _stages(sys.argv[1:])
        if stages[0] != "plan":
            _await_document()
        from ocb.cli import run_stages

        run_stages(stages, flags)
    if verb in READS_DOCUMENT:
        _await_document()
    from ocb.cli import main as cli_main

    cli_main(verb)
