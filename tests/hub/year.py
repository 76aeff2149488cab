"""A year of 10-minute backups against the test Hub, in compressed time; its figures as JSON.

Usage:
    python tests/hub/year.py --dir DIR [--days 365] [--every 1] [--window 144] [--final-window N]
                             [--cadence 10] [--start 2027-01-15T23:50:00Z] [--files 20]
                             [--restore all|none] [--restore-sample N] [--restore-jobs 1] [--quota BYTES]
                             [--env NAME=VALUE ...] > figures.json

It runs the real `bin/ocb-backup` (the whole pipe and its own auto-prune, with every default:
retention.DEFAULT_POLICY, OCB_PRUNE_EVERY, OCB_FULL_EVERY, OCB_SQUASH_COMMITS) once per
scheduled moment, as a subprocess whose clock libfaketime moves to that moment (Debian's
`faketime`; FAKETIME="@..." with the monotonic clock left alone, as tests/e2e/plan.bats does).
Nothing in lib/ knows it is being driven: the schedule lives here.

The schedule: every `--every` days of `--days`, one window of `--window` consecutive backups
`--cadence` minutes apart (the last window has `--final-window` backups). `--every 1 --window
144` is the whole year at 10 minutes (52,560 backups: ~29 h at ~2 s a backup, which is why the
suite runs a thinned year: docs/hub.md). The state is small (tests/tree.py generate, `--files`
files), and before each backup it changes a little (a line appended; now and then a file
added, another deleted), so every backup makes a snapshot.

It starts its own test Hub (tests/hub/fixture.py) under DIR/hub, counts the Hub requests of
each backup (POST /__hub/stats/reset before, GET /__hub/stats after) and reads the repo after
each one (GET /__hub/repo/...): snapshots in the store, entries in the snapshot folder and at
the root, commits reachable from main, LFS objects and bytes, and the namespace's private
storage as the test Hub counts it (POST /__hub/quota; `--quota` sets a quota there first, so
that crossing it would fail the backup with the Hub's 403). The manifest of the state
(tests/tree.py manifest) is saved as each snapshot is made; at the end every snapshot the store
still holds is restored (`ocb-restore --id ID --to DIR`, clock not faked) and its manifest
compared with the saved one, entry by entry (`--restore-sample N`: only N of them, spread evenly
from the oldest to the newest, both included).

stdout: one JSON document, the figures (schedule, policy, totals, `final` and `max` of each
repo figure, requests per backup, the restores, and `rows`: one per backup). stderr: progress.
Exit status: 0 the run ended (its figures say whether every backup and restore succeeded:
`failed` is null and `restore.mismatched` empty); 1 libfaketime or the test Hub is missing;
2 bad arguments.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "lib"))

from ocb import retention  # noqa: E402  (the policy's own text, for the figures)
from tests import tree  # noqa: E402
from tests.hub.fixture import start_hub, stop_hub  # noqa: E402

NAMESPACE = "ocb-year"
REPO = f"{NAMESPACE}/state"
PREFIX = "backups/"
FOLDER_LIMIT = 10_000  # the Hub's entries per folder (hub-docs storage-limits.md; testhub.FOLDER_LIMIT)
STATE = ".openclaw"


def log(message: str) -> None:
    print(f"year: {message}", file=sys.stderr, flush=True)


def libfaketime() -> str:
    """Where Debian's faketime put the library (found as tests/e2e/plan.bats finds it)."""
    found = subprocess.run(["find", "/usr/lib", "/usr/lib64", "-name", "libfaketime.so.1"],
                           capture_output=True, text=True).stdout.split()
    if not found:
        raise SystemExit("year: libfaketime.so.1 is missing: make test installs Debian's faketime")
    return found[0]


def schedule(args: argparse.Namespace) -> list[dt.datetime]:
    start = dt.datetime.strptime(args.start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    days = list(range(0, args.days, args.every))
    moments = []
    for n, day in enumerate(days):
        count = args.final_window if n == len(days) - 1 and args.final_window else args.window
        moments += [start + dt.timedelta(days=day, minutes=args.cadence * k) for k in range(count)]
    return moments


class Hub:
    """The test Hub's control endpoints (not counted in its stats)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, path: str, body: object = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def reset(self) -> None:
        self._call("/__hub/stats/reset", {})

    def stats(self) -> dict:
        return self._call("/__hub/stats")

    def quota(self, limit: int | None) -> dict:
        return self._call("/__hub/quota", {"namespace": NAMESPACE, "bytes": limit})

    def repo(self) -> dict | None:
        try:
            return self._call(f"/__hub/repo/dataset/{REPO}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


class State:
    """The small state and its change before each backup: a line appended to a note; every 5th
    backup a new file, every 7th the oldest added file deleted (a deletion for the index)."""

    def __init__(self, top: Path, files: int) -> None:
        self.top = top
        tree.generate(str(top), files, 7)
        (top / "memory").mkdir(exist_ok=True)
        self.added: list[Path] = []
        self.rng = random.Random(7)

    def change(self, n: int, when: dt.datetime) -> None:
        with open(self.top / "memory" / "notes.md", "a") as handle:
            handle.write(f"{when:%Y-%m-%d %H:%M} note {n}\n")
        if n % 5 == 0:
            path = self.top / "memory" / f"day-{n:06d}.json"
            path.write_bytes(self.rng.randbytes(200))
            self.added.append(path)
        if n % 7 == 0 and self.added:
            self.added.pop(0).unlink()


def base_env(dirs: dict[str, Path], hub_url: str, extra: list[str]) -> dict[str, str]:
    """The environment of every ocb run: what the caller had, minus every ocb, legacy and Hub
    setting (a bats test's OCB_STORE must not leak in), plus this run's own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OCB_", "OPENCLAW_", "HF_", "HUGGINGFACE_", "FAKETIME", "LD_PRELOAD"))}
    env.update({"PATH": f"{ROOT / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}", "HOME": str(dirs["home"]),
                "OCB_STORE": f"hf://datasets/{REPO}", "HF_ENDPOINT": hub_url, "HF_TOKEN": "ocb-year-token",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(dirs["root"] / "hf-home"),
                "OCB_WORK_DIR": str(dirs["work"]), "OCB_CACHE_DIR": str(dirs["cache"]), "OCB_LOG_FORMAT": "text"})
    for item in extra:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"year: --env {item!r}: expected NAME=VALUE")
        env[name] = value
    return env


def repo_figures(hub: Hub, quota: int | None) -> dict:
    state = hub.repo() or {"files": {}, "commits": 0, "lfs_objects": 0, "lfs_size": 0}
    files = state["files"]
    folder = [p for p in files if p.startswith(PREFIX) and "/" not in p[len(PREFIX):]]
    return {"snapshots": sum(p.endswith(".meta.json") for p in folder), "folder_entries": len(folder),
            "root_entries": len({p.split("/", 1)[0] for p in files}), "commits": state["commits"],
            "lfs_objects": state["lfs_objects"], "lfs_bytes": state["lfs_size"],
            "lfs_bytes_at_head": sum(f["size"] for f in files.values() if f["lfs"]),
            "private_bytes": hub.quota(quota)["used"]}


def backup(env: dict[str, str], lib: str, when: dt.datetime) -> tuple[int, dict | None, str]:
    faked = {**env, "FAKETIME": f"@{when:%Y-%m-%d %H:%M:%S}", "LD_PRELOAD": lib, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    done = subprocess.run([str(ROOT / "bin" / "ocb-backup"), "-q"], env=faked, capture_output=True, text=True)
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        doc = None
    return done.returncode, doc, done.stderr


def restore(env: dict[str, str], dirs: dict[str, Path], snapshot_id: str) -> dict:
    """ocb-restore --id ID --to a fresh dir (its own work dir and cache, so the backups' lineage
    is left alone), then the manifest against the one saved when the snapshot was made."""
    target = dirs["restores"] / snapshot_id
    own = {**env, "OCB_WORK_DIR": str(dirs["restores"] / f"{snapshot_id}.work"),
           "OCB_CACHE_DIR": str(dirs["restores"] / f"{snapshot_id}.cache")}
    done = subprocess.run([str(ROOT / "bin" / "ocb-restore"), "-q", "--id", snapshot_id, "--to", str(target)],
                          env=own, capture_output=True, text=True)
    result: dict = {"id": snapshot_id, "exit": done.returncode}
    saved = dirs["manifests"] / f"{snapshot_id}.json"
    if done.returncode != 0:
        result["stderr"] = done.stderr[-2000:]
    elif not saved.is_file():
        result["problem"] = "no manifest was saved for it (not made by this run)"
    else:
        want = json.loads(saved.read_text())
        got = tree.manifest(str(target / STATE))
        result["entries"] = len(want)
        if got != want:
            wanted = {json.dumps(e, sort_keys=True) for e in want}
            have = {json.dumps(e, sort_keys=True) for e in got}
            result["problem"] = {"missing": sorted(wanted - have)[:5], "extra": sorted(have - wanted)[:5]}
    for path in (target, dirs["restores"] / f"{snapshot_id}.work", dirs["restores"] / f"{snapshot_id}.cache"):
        shutil.rmtree(path, ignore_errors=True)
    return result


def sample(ids: list[str], count: int) -> list[str]:
    """`count` of `ids` spread evenly, the first and last included; all of them for 0."""
    if count <= 0 or count >= len(ids):
        return ids
    if count == 1:
        return ids[-1:]
    return [ids[round(i * (len(ids) - 1) / (count - 1))] for i in range(count)]


def summary(values: list[int]) -> dict:
    if not values:
        return {"count": 0}
    return {"count": len(values), "mean": round(statistics.fmean(values), 1), "median": statistics.median(values),
            "max": max(values), "min": min(values)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="where the Hub's data, the state and the work go (made afresh)")
    parser.add_argument("--days", type=int, default=365, help="days the schedule spans (default 365)")
    parser.add_argument("--every", type=int, default=1, help="days from one window to the next (default 1)")
    parser.add_argument("--window", type=int, default=144, help="consecutive backups per window (default 144: all day)")
    parser.add_argument("--final-window", type=int, default=0, help="backups in the last window (default --window)")
    parser.add_argument("--cadence", type=int, default=10, help="minutes between backups in a window (default 10)")
    parser.add_argument("--start", default="2027-01-15T23:50:00Z", help="the first backup's time (UTC)")
    parser.add_argument("--files", type=int, default=20, help="files in the generated state (default 20)")
    parser.add_argument("--restore", choices=("all", "none"), default="all",
                        help="restore every snapshot left at the end and check it (default all)")
    parser.add_argument("--restore-sample", type=int, default=0, metavar="N",
                        help="restore only N of the snapshots left, spread evenly, the oldest and newest "
                             "included (default 0: every one)")
    parser.add_argument("--restore-jobs", type=int, default=1, help="restores run at once (default 1)")
    parser.add_argument("--quota", type=int, help="a private storage quota for the namespace on the test Hub, bytes")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra setting for every ocb run (default: none, ocb's own defaults)")
    args = parser.parse_args(argv)
    if min(args.days, args.every, args.window, args.cadence) < 1 or min(args.final_window, args.restore_sample) < 0:
        parser.error("--days, --every, --window and --cadence must be at least 1")

    lib = libfaketime()
    root = Path(args.dir).resolve()
    marker = root / ".ocb-year"
    if root.exists() and any(root.iterdir()) and not marker.is_file():
        parser.error(f"--dir {root} holds files of something else: give a new or empty dir (it is emptied first)")
    shutil.rmtree(root, ignore_errors=True)
    dirs = {name: root / name for name in ("home", "work", "cache", "manifests", "restores")}
    dirs["root"] = root
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    marker.touch()  # a later run may empty this dir again
    moments = schedule(args)
    state = State(dirs["home"] / STATE, args.files)
    # listings page at 1,000 items, as on the Hub (testhub defaults to 50 to exercise paging)
    url, proc = start_hub(root / "hub", page_size=1000)
    hub = Hub(url)
    env = base_env(dirs, url, args.env)
    if args.quota is not None:
        hub.quota(args.quota)
    log(f"{len(moments)} backups from {moments[0]:%Y-%m-%d %H:%M} to {moments[-1]:%Y-%m-%d %H:%M} against {url}")
    started = time.monotonic()
    rows: list[dict] = []
    chosen: list[str] = []  # the snapshots restored at the end
    failed = None
    settings: dict = {}
    try:
        for n, when in enumerate(moments, 1):
            state.change(n, when)
            hub.reset()
            began = time.monotonic()
            code, doc, stderr = backup(env, lib, when)
            seconds = time.monotonic() - began
            stats = hub.stats()
            if code != 0 or doc is None or doc.get("skip"):
                failed = {"backup": n, "at": f"{when:%Y-%m-%dT%H:%M:%SZ}", "exit": code,
                          "skip": (doc or {}).get("skip"), "stderr": stderr[-3000:]}
                log(f"backup {n} at {when} failed with exit {code}: {stderr[-500:]}")
                break
            snapshot_id = doc["id"]
            # the settings the stages used (the document's own record): the bounds derive from them
            settings = settings or {k: v for k, v in doc["settings"].items()
                                    if k.startswith(("keep_", "full_", "prune_", "squash_", "reclaim"))}
            (dirs["manifests"] / f"{snapshot_id}.json").write_text(json.dumps(tree.manifest(str(state.top))))
            prune = doc.get("prune") or {}
            row = {"n": n, "id": snapshot_id, "type": doc["plan"]["type"], "seconds": round(seconds, 2),
                   "requests": stats["requests"], "by_route": stats["by_route"],
                   "uploaded_bytes": stats["lfs_bytes"],
                   "pruned": bool(prune.get("due")), "prune_error": prune.get("error"),
                   "removed": (prune.get("removed") or {}).get("snapshots", 0),
                   "reclaimed_bytes": (prune.get("reclaimed") or {}).get("bytes", 0),
                   "squashed": prune.get("commits_squashed", 0), **repo_figures(hub, args.quota)}
            rows.append(row)
            with open(root / "rows.jsonl", "a") as handle:  # a run cut short still leaves its rows
                handle.write(json.dumps(row) + "\n")
            if row["prune_error"]:
                failed = {"backup": n, "at": f"{when:%Y-%m-%dT%H:%M:%SZ}", "prune_error": row["prune_error"]}
                log(f"the prune after backup {n} failed: {row['prune_error']}")
                break
            if n % 25 == 0 or n == len(moments):
                log(f"{n}/{len(moments)} {snapshot_id} {row['type']}: {row['snapshots']} snapshots, "
                    f"{row['folder_entries']} entries, {row['commits']} commits, {row['lfs_bytes']} LFS bytes, "
                    f"{row['requests']} requests, {time.monotonic() - started:.0f} s")
        backup_seconds = time.monotonic() - started
        kept = sorted(p[len(PREFIX):-len(".meta.json")] for p in (hub.repo() or {"files": {}})["files"]
                      if p.startswith(PREFIX) and p.endswith(".meta.json"))
        restores: list[dict] = []
        chosen[:] = sample(kept, args.restore_sample)
        if args.restore == "all" and failed is None:
            log(f"restoring {len(chosen)} of the {len(kept)} snapshots the store holds, each checked against its manifest")
            with concurrent.futures.ThreadPoolExecutor(max(1, args.restore_jobs)) as pool:
                restores = list(pool.map(lambda i: restore(env, dirs, i), chosen))
        restore_seconds = time.monotonic() - started - backup_seconds
    finally:
        stop_hub(proc)

    figures = {
        "schedule": {"days": args.days, "every": args.every, "window": args.window,
                     "final_window": args.final_window or args.window, "cadence_minutes": args.cadence,
                     "first": f"{moments[0]:%Y-%m-%dT%H:%M:%SZ}", "last": f"{moments[-1]:%Y-%m-%dT%H:%M:%SZ}",
                     "planned": len(moments), "files": args.files, "env": args.env, "quota": args.quota},
        "policy": str(retention.DEFAULT_POLICY) if not any(e.startswith("OCB_KEEP_") for e in args.env) else "OCB_KEEP_* given",
        "settings": settings,
        "folder_limit": FOLDER_LIMIT,
        "failed": failed,
        "backups": len(rows),
        "full": sum(r["type"] == "full" for r in rows),
        "prunes": sum(r["pruned"] for r in rows),
        "removed_snapshots": sum(r["removed"] for r in rows),
        "uploaded_bytes": sum(r["uploaded_bytes"] for r in rows),
        "reclaimed_bytes": sum(r["reclaimed_bytes"] for r in rows),
        "squashes": sum(1 for r in rows if r["squashed"]),
        "final": {k: rows[-1][k] for k in ("snapshots", "folder_entries", "root_entries", "commits", "lfs_objects",
                                           "lfs_bytes", "lfs_bytes_at_head", "private_bytes")} if rows else {},
        "max": {k: max(r[k] for r in rows) for k in ("snapshots", "folder_entries", "root_entries", "commits",
                                                     "lfs_objects", "lfs_bytes", "private_bytes")} if rows else {},
        "requests_per_backup": {
            "all": summary([r["requests"] for r in rows]),
            "incremental": summary([r["requests"] for r in rows if r["type"] != "full"]),
            "full_and_prune": summary([r["requests"] for r in rows if r["pruned"]]),
            "by_route_mean": {route: round(sum(r["by_route"].get(route, 0) for r in rows) / len(rows), 2)
                              for route in sorted({k for r in rows for k in r["by_route"]})} if rows else {},
        },
        "restore": {"snapshots": len(kept) if rows else 0, "sampled": len(chosen), "checked": len(restores),
                    "equal": sum(1 for r in restores if r["exit"] == 0 and "problem" not in r),
                    "mismatched": [r for r in restores if r["exit"] != 0 or "problem" in r]},
        "seconds": {"backups": round(backup_seconds, 1), "per_backup": round(backup_seconds / max(1, len(rows)), 2),
                    "restores": round(restore_seconds, 1)},
        "rows": rows,
    }
    json.dump(figures, sys.stdout, indent=1)
    sys.stdout.write("\n")
    f = figures
    log(f"done: {f['backups']} backups ({f['full']} full, {f['prunes']} prunes, {f['squashes']} squashes); "
        f"at the end {f['final'].get('snapshots')} snapshots, {f['final'].get('folder_entries')} entries, "
        f"{f['final'].get('commits')} commits, {f['final'].get('lfs_bytes')} LFS bytes; restored "
        f"{f['restore']['equal']}/{f['restore']['snapshots']} exactly")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
