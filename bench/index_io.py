#!/usr/bin/env python3
"""CPU seconds to read and to write one index (ocb.index.Index.load / Index.write), best of N.

Usage: .venv/bin/python bench/index_io.py INDEX.jsonl [--runs 5]
(an index: ~/.cache/ocb/index.jsonl after a backup, or the bench home's, $OCB_CACHE_DIR/index.jsonl)

A bench, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from ocb.index import Index  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    best_read = best_write = float("inf")
    for _ in range(args.runs):
        started = time.process_time()
        index = Index.load(args.index)
        best_read = min(best_read, time.process_time() - started)
        started = time.process_time()
        index.write(io.StringIO())
        best_write = min(best_write, time.process_time() - started)
    print(f"{len(index.entries)} entries: read {best_read:.3f} s CPU, write {best_write:.3f} s CPU (best of {args.runs})")


if __name__ == "__main__":
    main()
