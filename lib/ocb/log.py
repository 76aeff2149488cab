"""Messages for people, on stderr: `ocb-<verb>: <level>: <message>`, or JSON lines.

stdout belongs to the document; nothing here ever writes there. Progress bars (tqdm) appear
only when stderr is a terminal or OCB_PROGRESS=1.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Callable

LEVELS = ("debug", "info", "warning", "error")


class Log:
    def __init__(self, verb: str = "ocb", json_lines: bool = False, debug: bool = False,
                 progress: bool = False) -> None:
        self.verb = verb
        self.json_lines = json_lines
        self.debug_enabled = debug
        self.progress_enabled = progress

    def _emit(self, level: str, message: str) -> None:
        if level == "debug" and not self.debug_enabled:
            return
        if self.json_lines:
            line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "command": f"ocb-{self.verb}", "level": level, "message": message})
        else:
            line = f"ocb-{self.verb}: {level}: {message}"
        print(line, file=sys.stderr, flush=True)

    def debug(self, message: str) -> None:
        self._emit("debug", message)

    def info(self, message: str) -> None:
        self._emit("info", message)

    def warning(self, message: str) -> None:
        self._emit("warning", message)

    def error(self, message: str) -> None:
        self._emit("error", message)

    def progress(self, total: int, description: str) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
        """(advance(n), close()) for a byte-count bar, or (None, no-op) when not wanted."""
        if not self.progress_enabled or total <= 0:
            return None, lambda: None
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"ocb-{self.verb}: {description}", unit="B", unit_scale=True,
                   file=sys.stderr, mininterval=0.5, leave=False)
        return bar.update, bar.close


# Configured once by cli.main; stages and domain modules log through it.
log = Log()


def configure(verb: str, json_lines: bool, debug: bool, progress: bool) -> None:
    log.verb, log.json_lines, log.debug_enabled, log.progress_enabled = verb, json_lines, debug, progress
