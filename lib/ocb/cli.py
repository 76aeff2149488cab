"""The one place that parses flags, reads stdin, writes stdout, maps errors to exit codes, exits.

Every bin/ocb-<verb> calls main("<verb>"). A stage module (ocb.stages.<verb>) provides its
docstring (the help), `STARTS_DOCUMENT`, `KIND`, `NEEDS` (the sections it reads),
`add_arguments(parser)` and `run(doc, args)`. Document flow (DESIGN.md): a document carrying
`error` is passed on untouched with the same exit code; one carrying `skip` is passed on with
exit 0; a failing stage adds `error` — a usage error (unknown flag, bad value) too, so a pipe
whose first stage got a bad flag ends with exit 2 naming that stage.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import os
import signal
import sys
from types import FrameType, ModuleType
from typing import Callable

from . import DOC_VERSION, __version__, config, document
from .errors import (
    EXIT_INTERNAL,
    EXIT_PARTIAL,
    EXIT_RUNTIME,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    OcbError,
    UsageError,
    io_reason,
)
from .launch import READS_DOCUMENT
from .log import configure, log, set_loudness

VERBS = ("plan", "pack", "seal", "split", "push", "chain", "pull", "check", "doctor", "prune")
# READS_DOCUMENT (launch.py, which must stay light): the stages that read a document. Given one
# that carries `error` or `skip` (and no flags), they pass it on before importing their own
# module (an unchanged-state backup is five process starts, and importing the seal, store and
# restore code was most of each)

# what every stage's --help says after its own docstring: what cli.py itself reads
COMMON_HELP = """Every stage: stdout is exactly the JSON document when piped (at a terminal the same,
  indented, or a table where the stage has one; --json forces the document); messages go to
  stderr as `ocb-<verb>: <level>: <message>`, progress bars only when stderr is a terminal.
  -q quiets (warnings and errors only), -v adds debug lines. An unknown flag: the usage line
  on stderr, exit 2.
  OCB_LOG_FORMAT=text|json (default text)   OCB_PROGRESS=1 (default: bars when stderr is a
  terminal)   OCB_VERBOSITY=quiet|verbose (default: neither; what -q / -v set)
  OCB_DEBUG=1 (default off: tracebacks)
"""


class Interrupted(OcbError):
    """SIGINT or SIGTERM arrived; the stage stops and reports it."""

    def __init__(self, code: int) -> None:
        super().__init__("interrupted by " + ("SIGINT" if code == EXIT_SIGINT else "SIGTERM"))
        self.code = code


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # a usage error is reported like any other failure: in the document, exit 2
        self.print_usage(sys.stderr)
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser(verb: str, stage: ModuleType) -> argparse.ArgumentParser:
    # the stage's docstring is the help; argparse adds only the flag list after it
    parser = _Parser(prog=f"ocb-{verb}", formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--json", action="store_true",
                        help="write the JSON document on stdout even to a terminal (piped, it always is)")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr, no progress")
    loudness.add_argument("-v", "--verbose", action="store_true", help="more detail on stderr (debug lines)")
    stage.add_arguments(parser)
    return parser


# set once the flags are parsed: how the document is shown to a person at a terminal
_render: Callable[[dict], str | None] | None = None


def _write(doc: dict) -> None:
    # piped (or --json), stdout is exactly the document; at a terminal the stage may show it
    # as a person reads it (ocb-chain --list: a table), else the same indented JSON
    text = _render(doc) if _render is not None and sys.stdout.isatty() else None
    sys.stdout.write(text if text is not None else document.dump(doc))
    sys.stdout.flush()


def _upstream(stage: ModuleType) -> dict | None:
    """The document handed in, when a stage that does not start one fails before reading it:
    an upstream failure is the one the pipe reports (the first failure's code)."""
    if stage.STARTS_DOCUMENT or sys.stdin.isatty():
        return None
    try:
        handed = document.parse(sys.stdin.buffer.read())
    except OcbError:
        return None
    return handed if handed.get("error") is not None else None


def _pass_on(handed: bytes) -> None:
    """A document carrying `error` or `skip` goes on as it is (exit: its code, or 0); any
    other (or a bad one, which the stage reports) is left to the stage."""
    try:
        doc = document.parse(handed)
    except OcbError:
        return
    if doc.get("error") is not None and isinstance(doc["error"], dict) and isinstance(doc["error"].get("code"), int):
        _write(doc)
        sys.exit(doc["error"]["code"])
    if doc.get("skip") is not None and doc.get("error") is None:
        _write(doc)
        sys.exit(0)


def _configure_logging(verb: str) -> None:
    """Messages as `ocb-<verb>: <level>: ...` on stderr, in the format and with the bars the
    environment asks for."""
    configure(verb, json_lines=os.environ.get("OCB_LOG_FORMAT") == "json",
              debug=os.environ.get("OCB_DEBUG") == "1",
              progress=os.environ.get("OCB_PROGRESS") == "1" or sys.stderr.isatty())


def _set_loudness(quiet_flag: bool, verbose_flag: bool) -> None:
    """-q / -v, or OCB_VERBOSITY=quiet|verbose (how ocb-backup and ocb-restore hand theirs on)."""
    loudness = os.environ.get("OCB_VERBOSITY", "")
    quiet = quiet_flag or (loudness == "quiet" and not verbose_flag)
    verbose = verbose_flag or (loudness == "verbose" and not quiet_flag)
    if quiet or verbose:
        set_loudness(quiet=quiet, verbose=verbose)


def main(verb: str, argv: list[str] | None = None) -> None:
    # a stage makes tens of thousands of long-lived objects (index entries, tar headers) and
    # hardly any cycle: at the default threshold the cyclic collector ran again and again over
    # all of them as the heap grew (~10 % of a plan or a push); rarer runs still free cycles
    gc.set_threshold(50_000, 20, 100)
    _configure_logging(verb)
    handed: bytes | None = None
    if verb in READS_DOCUMENT and not (sys.argv[1:] if argv is None else argv):
        handed = sys.stdin.buffer.read()
        _pass_on(handed)
    stage = importlib.import_module(f"ocb.stages.{verb}")
    parser = build_parser(verb, stage)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    doc: dict = {"ocb": DOC_VERSION, "kind": stage.KIND}
    try:
        try:
            args = parser.parse_args(argv)
        except UsageError:
            upstream = _upstream(stage)
            if upstream is not None:
                _write(upstream)
                sys.exit(upstream["error"]["code"])
            raise
        if args.help:
            sys.stdout.write(stage.__doc__.strip() + "\n\n" + COMMON_HELP + "\n" + parser.format_help())
            sys.exit(0)
        if args.version:
            sys.stdout.write(f"ocb-{verb} {__version__}\n")
            sys.exit(0)
        global _render
        _render = None if args.json else getattr(stage, "render", None)
        _set_loudness(args.quiet, args.verbose)
        # what the stage reads on stdin with these flags (ocb-prune --after-backup reads a
        # backup document; without it, it starts one): (kind, sections), or None
        reads = getattr(stage, "reads", lambda _args: None if stage.STARTS_DOCUMENT else (stage.KIND, stage.NEEDS))(args)
        if reads is not None:
            doc = document.parse(sys.stdin.buffer.read() if handed is None else handed)
            if doc.get("error") is not None:
                _write(doc)
                log.debug(f"passing on the error of ocb-{doc['error'].get('stage')}")
                sys.exit(doc["error"]["code"])
            if doc.get("skip") is not None:
                _write(doc)
                sys.exit(0)
            document.require(doc, reads[0], reads[1], verb)
        doc = stage.run(doc, args)
        # a stage may report a success with a reservation (ocb-push: 6, entries skipped)
        status = getattr(stage, "exit_status", lambda _doc: 0)(doc)
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
            import traceback

            traceback.print_exc(file=sys.stderr)
        _write(doc)
        sys.exit(EXIT_RUNTIME)
    except Exception as exc:  # a bug: say so with a traceback, and still hand on a document
        import traceback

        traceback.print_exc(file=sys.stderr)
        doc["error"] = {"stage": verb, "code": EXIT_INTERNAL, "message": f"internal error: {exc!r}"}
        _write(doc)
        sys.exit(EXIT_INTERNAL)
    _write(doc)
    sys.exit(status)


def run_stages(verbs: list[str], flags: list[str] | None = None) -> None:
    """Stages one after the other in this one interpreter, each handed the document the one
    before wrote, as a pipe of them hands it on: each reads its document from stdin and writes
    one to stdout (here buffers of a few KB), passes on an error or a skip, and logs as itself.
    What ocb-backup runs (plan pack seal split push prune): the stages of a backup wait for the
    one before anyway, so one interpreter for all of them saves the start-up of each (~0.15-0.2
    s: the imports) and changes nothing of what each does. `flags` are the first stage's; a
    first stage `plan` starts the document (stdin is not read); a last stage `prune` is the
    prune after a backup, run only when it is due (prune.due_after_backup). The exit status is
    the last stage's, which is the first failure's code (a failing stage's error document is
    passed on with it)."""
    handed = b"" if verbs[0] == "plan" else sys.stdin.buffer.read()
    key_first = False
    if verbs[0] == "plan" and "pack" in verbs:
        _configure_logging("plan")  # what it says is the plan's
        _set_loudness(False, False)
        key_first = _password_key_first()
    status = 0
    for number, verb in enumerate(verbs):
        try:
            if verb == "prune":
                pushed = document.parse(handed)
                if status not in (0, EXIT_PARTIAL) or _ends_here(pushed):
                    break  # a failure or a skip is the document: no prune after it
                from .stages.prune import due_after_backup

                if not due_after_backup(pushed):
                    break  # what push wrote is the document: no prune is due
                handed, status = _one_stage(verb, handed, ["--after-backup"])
            else:
                handed, status = _one_stage(verb, handed, list(flags or ()) if number == 0 else [])
                if verb == "plan" and "pack" in verbs and status == 0 and not key_first:
                    _password_key_ahead(handed)
        except OcbError as exc:  # a signal outside the stage's own handling of it (between two)
            try:
                doc = document.parse(handed)
            except OcbError:
                doc = {"ocb": DOC_VERSION, "kind": "backup"}
            doc["error"] = {"stage": verb, "code": exc.code, "message": str(exc)}
            handed, status = document.dump(doc).encode(), exc.code
            break
    sys.stdout.buffer.write(handed)
    sys.stdout.flush()
    sys.exit(status)


def _password_key_first() -> bool:
    """Before the plan, in one interpreter with the stages after it (ocb-backup): when a
    password is set and the key cache holds no key at all (a machine's first backup, or the
    first since its memory was emptied), the key is derived now, while the interpreter holds
    nothing but itself, so that the KDF's 64 MiB peak beside ~20 MB rather than beside what
    the plan leaves (the interpreter's peak in a sealed incremental at SCALE=5: 98.5-99.2 ->
    94.6 MB). A state found unchanged after all has cost one KDF run, once, and the key is
    cached for the next backup. When the cache holds some key, it may be this one:
    _password_key_ahead, after the plan, tells. Asks no more than the environment and one
    listing: most backups stop here. True when the key was derived here."""
    try:
        env = config.load_environment()
        password = config.seal_password(env)
        where = config.key_cache_dir(env)
        if password is None or where is None:
            return False
        from .keycache import ENTRY_SUFFIX

        try:
            if any(name.endswith(ENTRY_SUFFIX) for name in os.listdir(where[0])):
                return False
        except FileNotFoundError:
            pass
        key_cache = config.key_cache(env)
        if key_cache is None or not key_cache.usable:
            return False
        settings = config.resolve_settings(env, "backup")
        from . import seal

        seal.machine_password_key(settings.cache_dir, password, settings.kdf, settings.scrypt_log_n,
                                  settings.argon2_memory, key_cache)
        return True
    except Exception as exc:  # noqa: BLE001 - the stage that needs the key meets it again and says so
        log.debug(f"the password key was not derived before the plan: {exc}")
        return False


def _password_key_ahead(handed: bytes) -> None:
    """Between the plan and pack in one interpreter (ocb-backup), when _password_key_first
    did not derive the key: a backup that pack will seal or push will sign derives this
    machine's password key now, into the key cache, before pack's libraries are imported, so
    that the KDF's memory (Argon2id: 64 MiB) peaks beside what the plan left only (scale 1:
    96.6 -> 94.6 MB for the interpreter); pack and push then find it there. Not when the key
    cache is off (they would derive it again) nor after a skip; a failure is left to the
    stage, which reports it."""
    try:
        doc = document.parse(handed)
        if _ends_here(doc):
            return  # after a skip or a failure nothing more is asked
        env = config.load_environment()
        password = config.seal_password(env)
        key_cache = config.key_cache(env)
        if password is None or key_cache is None or not key_cache.usable:
            return
        from . import seal

        settings = config.Settings.from_doc(doc)
        seal.machine_password_key(settings.cache_dir, password, settings.kdf, settings.scrypt_log_n,
                                  settings.argon2_memory, key_cache)
    except Exception as exc:  # noqa: BLE001 - the stage that needs the key meets it again and says so
        log.debug(f"the password key was not derived before pack: {exc}")


def _ends_here(doc: dict) -> bool:
    """A document carrying an error or a skip: what the stages after it only pass on."""
    return doc.get("error") is not None or doc.get("skip") is not None


def _one_stage(verb: str, handed: bytes, argv: list[str]) -> tuple[bytes, int]:
    """One stage of run_stages: `handed` on its stdin; what it wrote on stdout, and its status."""
    written = io.BytesIO()
    own_stdin, own_stdout = sys.stdin, sys.stdout
    stdin = sys.stdin = io.TextIOWrapper(io.BytesIO(handed), encoding="utf-8")
    stdout = sys.stdout = io.TextIOWrapper(written, encoding="utf-8", write_through=True)
    status = EXIT_INTERNAL  # main always exits; anything else is a bug
    try:
        main(verb, argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else EXIT_INTERNAL
    finally:
        sys.stdin, sys.stdout = own_stdin, own_stdout
        stdout.flush()
        stdin.detach(), stdout.detach()  # the buffers stay open
    return written.getvalue(), status
