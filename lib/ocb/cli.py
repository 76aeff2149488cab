"""The one place that parses flags, reads stdin, writes stdout, maps errors to exit codes, exits.

Every bin/ocb-<verb> calls main("<verb>"). A stage module (ocb.stages.<verb>) provides its
docstring (the help), `STARTS_DOCUMENT`, `KIND`, `add_arguments(parser)` and `run(doc, args)`.
Document flow (DESIGN.md): a document carrying `error` is passed on untouched with the same
exit code; one carrying `skip` is passed on with exit 0; a failing stage adds `error`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from types import FrameType, ModuleType

from . import DOC_VERSION, document
from .errors import EXIT_INTERNAL, EXIT_RUNTIME, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, OcbError, io_reason
from .log import configure, log

VERBS = ("plan", "pack", "seal", "split", "push", "chain", "pull")


class Interrupted(OcbError):
    """SIGINT or SIGTERM arrived; the stage stops and reports it."""

    def __init__(self, code: int) -> None:
        super().__init__("interrupted by " + ("SIGINT" if code == EXIT_SIGINT else "SIGTERM"))
        self.code = code


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 too; this keeps the message in our log format
        self.print_usage(sys.stderr)
        log.error(message)
        sys.exit(EXIT_USAGE)


def build_parser(verb: str, stage: ModuleType) -> argparse.ArgumentParser:
    # the stage's docstring is the help; argparse adds only the flag list after it
    parser = _Parser(prog=f"ocb-{verb}", formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    stage.add_arguments(parser)
    return parser


def _write(doc: dict) -> None:
    sys.stdout.write(document.dump(doc))
    sys.stdout.flush()


def main(verb: str, argv: list[str] | None = None) -> None:
    configure(verb, json_lines=os.environ.get("OCB_LOG_FORMAT") == "json",
              debug=os.environ.get("OCB_DEBUG") == "1",
              progress=os.environ.get("OCB_PROGRESS") == "1" or sys.stderr.isatty())
    stage = importlib.import_module(f"ocb.stages.{verb}")
    parser = build_parser(verb, stage)
    args = parser.parse_args(argv)
    if args.help:
        sys.stdout.write(stage.__doc__.strip() + "\n\n" + parser.format_help())
        sys.exit(0)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    doc: dict = {"ocb": DOC_VERSION, "kind": stage.KIND}
    try:
        if not stage.STARTS_DOCUMENT:
            doc = document.parse(sys.stdin.buffer.read())
            if doc.get("error") is not None:
                _write(doc)
                log.debug(f"passing on the error of ocb-{doc['error'].get('stage')}")
                sys.exit(doc["error"]["code"])
            if doc.get("skip") is not None:
                _write(doc)
                sys.exit(0)
        doc = stage.run(doc, args)
    except OcbError as exc:
        doc["error"] = {"stage": verb, "code": exc.code, "message": str(exc)}
        log.error(str(exc))
        _write(doc)
        sys.exit(exc.code)
    except OSError as exc:  # I/O that no module turned into an ocb error: a run-time failure
        message = io_reason(exc) + (f": {exc.filename}" if exc.filename else "")
        doc["error"] = {"stage": verb, "code": EXIT_RUNTIME, "message": message}
        log.error(message)
        if os.environ.get("OCB_DEBUG") == "1":
            traceback.print_exc(file=sys.stderr)
        _write(doc)
        sys.exit(EXIT_RUNTIME)
    except Exception as exc:  # a bug: say so with a traceback, and still hand on a document
        traceback.print_exc(file=sys.stderr)
        doc["error"] = {"stage": verb, "code": EXIT_INTERNAL, "message": f"internal error: {exc!r}"}
        _write(doc)
        sys.exit(EXIT_INTERNAL)
    _write(doc)
    sys.exit(0)
