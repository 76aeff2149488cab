"""Compare restored trees with the index of the snapshot they came from, entry by entry.

Usage: against_index.py INDEX ROOT=DIR [ROOT=DIR ...]

Every entry of each named root must be in DIR with its type, mode, size, sha256 (files),
mtime_ns (files and symlinks) and link target; DIR must hold nothing the index lacks.
Prints each difference and exits 1 when there is one.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree(top: str) -> dict[str, os.stat_result]:
    found = {"": os.lstat(top)}
    for current, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(current, name)
            found[os.path.relpath(path, top)] = os.lstat(path)
    return found


def compare(entries: list[dict], top: str) -> list[str]:
    problems = []
    found = tree(top)
    for entry in entries:
        rel, path = entry["path"], os.path.join(top, entry["path"]) if entry["path"] else top
        st = found.pop(rel, None)
        if st is None:
            problems.append(f"missing: {rel!r}")
            continue
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "file"
        if kind != entry["type"]:
            problems.append(f"{rel!r}: a {kind}, the index says {entry['type']}")
            continue
        if kind != "symlink" and stat.S_IMODE(st.st_mode) != entry["mode"]:
            problems.append(f"{rel!r}: mode {oct(stat.S_IMODE(st.st_mode))}, the index says {oct(entry['mode'])}")
        if kind == "file":
            size = entry.get("stored_size") if entry.get("db") else entry["size"]
            if st.st_size != size or sha256(path) != entry["sha256"]:
                problems.append(f"{rel!r}: content differs from the index")
            if st.st_mtime_ns != entry["mtime_ns"]:
                problems.append(f"{rel!r}: mtime {st.st_mtime_ns}, the index says {entry['mtime_ns']}")
        if kind == "symlink" and os.readlink(path) != entry["target"]:
            problems.append(f"{rel!r}: link target differs from the index")
    problems.extend(f"not in the index: {rel!r}" for rel in sorted(found))
    return problems


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    records = lines[1:]
    problems = []
    for pair in argv[2:]:
        root, _, top = pair.partition("=")
        entries = [r for r in records if r["root"] == root]
        problems.extend(f"{root}: {p}" for p in compare(entries, top))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
