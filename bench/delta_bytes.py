"""Bench (not a test): bytes stored per incremental for a live SQLite database.

A WAL-mode database of --mb megabytes gets --rows rows updated at random places between two
backups, --rounds times. For each incremental it reports, side by side in the same run:
  - ocb:    the incremental archive ocb-backup published (compressed, what goes to the store)
  - legacy: the legacy script's approach, which re-uploads every changed file whole (the
            database file, gzip'd at its level 6 as it does)
  - restic: what `restic backup` added to its repository (Debian's restic, when installed)
and, for the block-size choice, the raw bytes of changed blocks at 4, 16 and 64 KiB with the
size of their hashes per GiB.

Usage: .venv/bin/python bench/delta_bytes.py [--mb 256] [--rows 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the same database and updates as tests/e2e/sqlite.bats
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e", "fixtures", "sqlite"))
from sqlite_tool import create, update  # noqa: E402
GZIP_CHUNK = 4 * 1024 * 1024


def gzip_size(path: str) -> int:
    """What the legacy script uploads for one changed file: the file, gzip level 6."""
    out = tempfile.TemporaryFile()
    with open(path, "rb") as source, gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6) as packed:
        shutil.copyfileobj(source, packed, GZIP_CHUNK)
    size = out.tell()
    out.close()
    return size


def block_hashes(path: str, block_size: int) -> list[bytes]:
    hashes = []
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            hashes.append(hashlib.sha256(block).digest()[:16])
    return hashes


def consistent_copy(path: str, copy: str) -> None:
    source, target = sqlite3.connect(path), sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="ocb-bench-delta-")
    home = os.path.join(work, "home")
    db_path = os.path.join(home, ".openclaw", "memory", "main.sqlite")
    os.makedirs(os.path.dirname(db_path))
    env = dict(os.environ, HOME=home, OCB_STORE=f"file://{work}/store", OCB_WORK_DIR=f"{work}/ocb-work",
               OCB_CACHE_DIR=f"{work}/ocb-cache")
    env.pop("OCB_PASSWORD", None)
    restic = shutil.which("restic")
    restic_env = dict(env, RESTIC_REPOSITORY=f"{work}/restic", RESTIC_PASSWORD="bench")
    create(db_path, args.mb)
    db_size = os.path.getsize(db_path)

    def ocb_backup() -> dict:
        result = subprocess.run([os.path.join(ROOT, "bin", "ocb-backup")], env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"ocb-backup failed: {result.stderr}")
        return json.loads(result.stdout)

    def restic_backup() -> int | None:
        if not restic:
            return None
        before = dir_size(restic_env["RESTIC_REPOSITORY"])
        subprocess.run([restic, "backup", "--quiet", os.path.dirname(db_path)], env=restic_env, check=True,
                       capture_output=True)
        return dir_size(restic_env["RESTIC_REPOSITORY"]) - before

    if restic:
        subprocess.run([restic, "init", "--quiet"], env=restic_env, check=True, capture_output=True)
    full = ocb_backup()
    restic_full = restic_backup()
    copy = os.path.join(work, "copy.sqlite")
    consistent_copy(db_path, copy)
    previous = {size: block_hashes(copy, size) for size in (4096, 16384, 65536)}
    print(f"database: {db_size / 1e6:.1f} MB; full snapshot: ocb {full['archive']['size'] / 1e6:.1f} MB"
          + (f", restic {restic_full / 1e6:.1f} MB" if restic_full is not None else ", restic not installed"))
    print(f"\n{args.rows} rows updated at random places, per incremental (bytes stored):")
    print(f"{'round':>5} {'ocb':>12} {'legacy':>12} {'restic':>12} {'ocb % of db':>12}")
    for round_number in range(1, args.rounds + 1):
        update(db_path, args.rows, round_number)
        doc = ocb_backup()
        assert doc["plan"]["type"] == "incremental", doc["plan"]
        legacy = gzip_size(db_path)
        restic_bytes = restic_backup()
        print(f"{round_number:>5} {doc['archive']['size']:>12,} {legacy:>12,} "
              f"{restic_bytes if restic_bytes is not None else '-':>12} {100 * doc['archive']['size'] / db_size:>11.2f}%")
        consistent_copy(db_path, copy)
        current = {size: block_hashes(copy, size) for size in previous}
        if round_number == 1:
            print("\nblock size choice (round 1): raw changed-block bytes and hash storage")
            print(f"{'block':>7} {'changed':>8} {'raw bytes':>12} {'% of db':>8} {'hashes per GiB':>15}")
            for size, hashes in current.items():
                changed = sum(1 for n, h in enumerate(hashes) if n >= len(previous[size]) or previous[size][n] != h)
                print(f"{size // 1024:>5} K {changed:>8} {changed * size:>12,} {100 * changed * size / db_size:>7.2f}% "
                      f"{(1024**3 // size) * 16 / 2**20:>12.1f} MiB")
            print()
        previous = current
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
