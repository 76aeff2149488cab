"""Messages for people, on stderr, through the standard `logging` module.

One handler on the root logger, with one formatter for text (`ocb-<verb>: <level>: <message>`)
and one for JSON lines (OCB_LOG_FORMAT=json), so that huggingface_hub's own records come out
in the same form as ours. Progress: a tqdm bar when stderr is a terminal (or OCB_PROGRESS=1)
and the format is text; as JSON lines, rate-limited `progress` records instead, so nothing
but JSON ever lands in a JSON log. stdout belongs to the document; nothing here writes there.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from typing import Callable

PROGRESS_EVERY_SECONDS = 2.0
LIBRARY_LOGGERS = ("huggingface_hub", "httpx", "httpx2", "urllib3", "filelock")


class TextFormatter(logging.Formatter):
    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        command = self.command if record.name.startswith("ocb") else f"{self.command} ({record.name})"
        return f"{command}: {record.levelname.lower()}: {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                "command": self.command, "level": record.levelname.lower(), "message": record.getMessage()}
        if not record.name.startswith("ocb"):
            line["logger"] = record.name
        progress = getattr(record, "progress", None)
        if progress is not None:
            line["progress"] = progress
        return json.dumps(line, ensure_ascii=False)


class Log:
    """The facade stages and domain modules log through (configured once by cli.main)."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("ocb")
        self.verb = "ocb"
        self.json_lines = False
        self.progress_enabled = False
        self.quiet = False

    def debug(self, message: str) -> None:
        self.logger.debug(message)

    def info(self, message: str) -> None:
        self.logger.info(message)

    def warning(self, message: str) -> None:
        self.logger.warning(message)

    def error(self, message: str) -> None:
        self.logger.error(message)

    def progress(self, total: int, description: str) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
        """(advance(n), close()) for a byte count, or (None, no-op) when not wanted."""
        if total <= 0:
            return None, lambda: None
        if self.json_lines:
            return self._json_progress(total, description)
        if not self.progress_enabled:
            return None, lambda: None
        from tqdm import tqdm

        # a terminal that reports no size (a pty with no window size, `script -c`, a container's
        # log console) would get no bar at all from tqdm: shutil's fallback, 80x24, instead
        size = shutil.get_terminal_size()
        bar = tqdm(total=total, desc=f"ocb-{self.verb}: {description}", unit="B", unit_scale=True,
                   unit_divisor=1024, file=sys.stderr, mininterval=0.5, leave=False,
                   ncols=size.columns, nrows=size.lines)
        return bar.update, bar.close

    def _json_progress(self, total: int, description: str) -> tuple[Callable[[int], None], Callable[[], None]]:
        done = 0
        last = time.monotonic()

        def emit() -> None:
            self.logger.info(f"{description}: {done} of {total} bytes",
                             extra={"progress": {"what": description, "done": done, "total": total}})

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            if time.monotonic() - last >= PROGRESS_EVERY_SECONDS:
                last = time.monotonic()
                emit()

        return advance, emit


log = Log()


def configure(verb: str, json_lines: bool, debug: bool, progress: bool) -> None:
    """Route every record (ours and the libraries') to stderr in one format."""
    log.verb, log.json_lines, log.progress_enabled = verb, json_lines, progress and not json_lines
    command = f"ocb-{verb}"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(command) if json_lines else TextFormatter(command))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    log.logger.setLevel(logging.DEBUG if debug else logging.INFO)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def set_loudness(quiet: bool, verbose: bool) -> None:
    """-q: warnings and errors only, no progress; -v: debug lines too."""
    if quiet:
        log.logger.setLevel(logging.WARNING)
        log.progress_enabled = False
        log.quiet = True
    elif verbose:
        log.logger.setLevel(logging.DEBUG)


def adopt_library_logger(name: str) -> None:
    """A library that put its own handler on its logger at import (huggingface_hub does)
    logs through ours instead: one format, and JSON lines stay JSON."""
    library = logging.getLogger(name)
    for old in list(library.handlers):
        library.removeHandler(old)
    library.propagate = True
