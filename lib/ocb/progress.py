"""Progress while a stage works, and the one summary line it leaves behind, on stderr.

A `Meter` is opened around each long step (pack, seal, split, push, fetch, extract, scan):
while it runs, a tqdm bar (bytes, rate, ETA) when stderr is a terminal or OCB_PROGRESS=1, or
rate-limited `progress` records in JSON-lines logs (log.progress decides which); when it
closes, the bar is erased and one line stays: `ocb-<verb>: info: <step>: <bytes> in <s>
(<rate>)`. Without a terminal that line is all there is: one line per step with its totals
and throughput. -q hides both. Nothing here writes to stdout or reads the environment.
"""

from __future__ import annotations

import io
import time
from typing import BinaryIO

from .log import log


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class Meter:
    """One step's progress (a byte count, or entries with unit="entries") and its summary."""

    def __init__(self, what: str, total: int, unit: str = "B", bar: bool = True) -> None:
        """`bar=False`: a summary only (a step whose bytes this process does not see move,
        or whose library draws its own bars: huggingface_hub's uploads and downloads)."""
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self.started = time.monotonic()
        self._advance, self._close = log.progress(total, what) if unit == "B" and bar else (None, lambda: None)
        self.closed = False

    def update(self, count: int) -> None:
        self.done += count
        if self._advance is not None:
            self._advance(count)

    def close(self, done: int | None = None, note: str = "") -> None:
        """Erase the bar, then say what the step did (`done` overrides the counted total)."""
        if self.closed:
            return
        self.closed = True
        self._close()
        count = self.done if done is None else done
        seconds = time.monotonic() - self.started
        if self.unit == "B":
            amount = human_bytes(count)
            rate = f"{human_bytes(count / seconds)}/s" if seconds > 0 else "-"
        else:
            amount = f"{count} {self.unit}"
            rate = f"{count / seconds:.0f} {self.unit}/s" if seconds > 0 else "-"
        log.info(f"{self.what}: {amount} in {seconds:.1f}s ({rate})" + (f", {note}" if note else ""))

    def abandon(self) -> None:
        """The step failed: erase the bar, no summary (the error says what happened)."""
        if not self.closed:
            self.closed = True
            self._close()

    def __enter__(self) -> "Meter":
        return self

    def __exit__(self, kind: object, value: object, trace: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()


class MeteredReader(io.RawIOBase):
    """A binary file read through a Meter: progress for steps that stream a file themselves."""

    def __init__(self, source: BinaryIO, meter: Meter) -> None:
        self.source, self.meter = source, meter

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.source.read(len(buffer))
        buffer[: len(data)] = data
        self.meter.update(len(data))
        return len(data)

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.meter.update(len(data))
        return data
