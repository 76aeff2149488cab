"""Test tool: generate a state tree, and print a manifest of a tree for exact comparison.

  python tests/tree.py generate DIR COUNT [SEED]   COUNT files in nested dirs, plus symlinks
                                                   (relative, absolute, dangling), empty dirs
                                                   and files, names with spaces, unicode and
                                                   newlines
  python tests/tree.py manifest DIR                one JSON line per entry, sorted: path, type,
                                                   mode, mtime_ns, sha256 or link target

Two trees are equal for a restore (content, mode, mtime, symlinks, nothing extra) exactly
when their manifests are equal, so tests compare manifests with diff.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import sys


def generate(top: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    os.makedirs(top, exist_ok=True)
    dirs = [top]
    for n in range(40):
        # dir00..dir09 sit at the top, so tests can name them; the rest nest at random
        parent = top if n < 10 else rng.choice(dirs)
        path = os.path.join(parent, f"dir{n:02d}")
        os.makedirs(path, exist_ok=True)
        dirs.append(path)
    specials = ["with space.txt", "ünïcødé-名前.md", "new\nline.txt", "tab\tname", "quote'\"name"]
    for n in range(count):
        parent = dirs[n % len(dirs)]
        name = specials[n] if n < len(specials) else f"file{n:05d}.{rng.choice(['json', 'md', 'txt', 'bin'])}"
        size = 0 if n % 97 == 0 else rng.choice([rng.randint(1, 300), rng.randint(300, 3000), rng.randint(3000, 20000)])
        with open(os.path.join(parent, name), "wb") as handle:
            handle.write(rng.randbytes(size // 2) + b"a" * (size - size // 2))
        if n % 13 == 0:
            os.chmod(os.path.join(parent, name), 0o600)
        if n % 29 == 0:
            os.chmod(os.path.join(parent, name), 0o755)
    os.makedirs(os.path.join(top, "empty-dir", "nested-empty"), exist_ok=True)
    os.chmod(os.path.join(top, "empty-dir"), 0o700)
    os.symlink("with space.txt", os.path.join(top, "rel-link"))
    os.symlink("/etc/hostname", os.path.join(top, "abs-link"))
    os.symlink("../does/not/exist", os.path.join(top, "dangling-link"))
    os.symlink("dir01", os.path.join(top, "dir-link"))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(top: str) -> list[dict]:
    entries = []
    for current, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(current, top)
        st = os.lstat(current)
        entries.append({"path": "" if rel_dir == "." else rel_dir, "type": "dir",
                        "mode": oct(stat.S_IMODE(st.st_mode)), "mtime_ns": st.st_mtime_ns})
        for name in dirnames + filenames:
            path = os.path.join(current, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            if stat.S_ISDIR(st.st_mode):
                continue  # walked into, recorded there
            record = {"path": rel, "mode": oct(stat.S_IMODE(st.st_mode)), "mtime_ns": st.st_mtime_ns}
            if stat.S_ISLNK(st.st_mode):
                record.update(type="symlink", target=os.readlink(path))
                if name in dirnames:
                    dirnames.remove(name)
            else:
                record.update(type="file", size=st.st_size, sha256=_sha256(path))
            entries.append(record)
    return sorted(entries, key=lambda e: e["path"])


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "generate":
        generate(argv[2], int(argv[3]) if len(argv) > 3 else 100, int(argv[4]) if len(argv) > 4 else 1)
        return 0
    if len(argv) == 3 and argv[1] == "manifest":
        for entry in manifest(argv[2]):
            print(json.dumps(entry, ensure_ascii=True))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
