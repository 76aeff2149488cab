#!/usr/bin/env python3
"""`make bench`: ocb against tar --zstd -T0, tar -czf and restic, on one synthetic OpenClaw home.

Usage: bench/run.py [--scale 1] [--files N] [--runs 3] [--dir DIR] [--restore-dir DIR]
                    [--out bench/results.json] [--seed 1] [--no-restic]

Generates the home (bench/synth.py: deterministic, about 400 MB / 20,000 files at scale 1),
then runs each case --runs times, the tools alternating (A B C, C B A, A B C, ...), on the same
tree:
  full-sealed     a full backup into an empty store, sealed (OCB_PASSWORD; restic's repo has a
                  password too), ocb-backup against restic backup, tar --zstd -T0, tar -czf
  full-unsealed   the same, OCB_SEAL=off
  incremental     after one round of bench/synth.py's "ten minutes of agent activity", on top
                  of the sealed chain (ocb) and the repo (restic) of the last full-sealed run
  skip            ocb-backup of the unchanged state (it must say skip) against restic backup of
                  the unchanged state
  restore         the latest chain into an empty dir on tmpfs (--restore-dir, default
                  /dev/shm): ocb-restore --to against restic restore latest and tar -xf of an
                  archive of the same state (zstd and gzip)
  list            ocb-chain --list against restic snapshots
ocb's key cache (lib/ocb/keycache.py, on /dev/shm) is emptied before every full backup and every
restore, as in a container's first backup or its restore on start, so those derive the key
once; the incremental, skip and list cases find it warm, as a backup every ten minutes does.
For each run: wall seconds, CPU seconds (user+sys of the whole process tree), peak RSS of the
whole process tree (the sum of the RSS of its live processes, sampled every 10 ms; a process
living less than that may be missed), and bytes stored (what the store or the archive gained).
Prints a table of medians and the ratio of each ocb figure to each anchor, and writes it all
to --out as JSON, with the targets of issue 16 and whether each is met.
A bench, not a test: tests/e2e/bench.bats runs it at a tiny scale and checks the document's
shape only, never a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "bin")
sys.path.insert(0, HERE)
import synth  # noqa: E402

PASSWORD = "bench-password-not-a-secret"
PAGE = os.sysconf("SC_PAGE_SIZE")
OCB = "ocb"


class Measure:
    """One command's wall, CPU and peak RSS of its whole process tree."""

    def __init__(self, argv: list[str], env: dict, cwd: str | None = None, stdout=None) -> None:
        self.argv, self.env, self.cwd, self.stdout = argv, env, cwd, stdout

    def run(self) -> dict:
        started = time.monotonic()
        proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=self.stdout or subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        peak = [0]
        done = threading.Event()
        sampler = threading.Thread(target=self._sample, args=(proc.pid, peak, done), daemon=True)
        sampler.start()
        err = proc.stderr.read() if proc.stderr else b""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0,):
            raise SystemExit(f"bench: {' '.join(self.argv)} exited {proc.returncode}:\n{err.decode(errors='replace')[-3000:]}")
        # not usage.ru_maxrss: on Linux a child's maxrss starts from the RSS of the forked copy
        # of this process (its results and all), whatever the command then execs
        return {"wall": round(wall, 3), "cpu": round(usage.ru_utime + usage.ru_stime, 3), "rss": peak[0]}

    @staticmethod
    def _sample(pgid: int, peak: list[int], done: threading.Event) -> None:
        while not done.is_set():
            total = 0
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                try:
                    with open(f"/proc/{name}/stat", "rb") as handle:
                        fields = handle.read().rsplit(b")", 1)[1].split()
                except OSError:
                    continue
                # after the name: state ppid pgrp ... rss is field 24 of the whole line
                if int(fields[2]) == pgid:
                    total += int(fields[21]) * PAGE
            peak[0] = max(peak[0], total)
            done.wait(0.01)


def dir_bytes(path: str) -> int:
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


def fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = os.path.abspath(args.dir)
        self.home = os.path.join(self.dir, "home")
        self.restore_base = os.path.join(os.path.abspath(args.restore_dir), f"ocb-bench-{os.getpid()}")
        self.restic = None if args.no_restic else shutil.which("restic")
        self.tools = [OCB, "tar-zstd", "tar-gzip"] + (["restic"] if self.restic else [])
        self.cases: dict[str, dict[str, list[dict]]] = {}
        # nothing of the caller's ocb, restic or Hub set-up leaks in, but OCB_SCRYPT_LOG_N (the
        # smoke test's cheap KDF; the bench proper runs ocb's default)
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("OCB_", "OPENCLAW_", "RESTIC_", "HF_")) or k == "OCB_SCRYPT_LOG_N"}
        self.env = dict(base, HOME=self.home, OCB_LOG_FORMAT="text", OCB_LOCK_WAIT="0",
                        RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=os.path.join(self.dir, "restic-cache"))
        self.key_cache = f"/dev/shm/ocb-bench-keys-{os.getpid()}"

    def cold_key_cache(self) -> None:
        """A container's first backup, or its restore on start: no key cached yet."""
        shutil.rmtree(self.key_cache, ignore_errors=True)

    # --- environments -----------------------------------------------------------------------
    def ocb_env(self, name: str, sealed: bool) -> dict:
        env = dict(self.env, OCB_STORE="file://" + os.path.join(self.dir, name, "store"),
                   OCB_WORK_DIR=os.path.join(self.dir, name, "work"),
                   OCB_CACHE_DIR=os.path.join(self.dir, name, "cache"), OCB_KEY_CACHE=self.key_cache)
        if sealed:
            env["OCB_PASSWORD"] = PASSWORD
        else:
            env["OCB_SEAL"] = "off"
        return env

    def record(self, case: str, tool: str, result: dict) -> None:
        self.cases.setdefault(case, {}).setdefault(tool, []).append(result)
        print(f"  {case:14} {tool:9} wall {result['wall']:7.2f}s cpu {result['cpu']:7.2f}s "
              f"rss {result['rss'] / 1e6:7.1f}MB" + (f" stored {result['bytes'] / 1e6:9.2f}MB" if 'bytes' in result else ""),
              file=sys.stderr, flush=True)

    def order(self, run: int, tools: list[str]) -> list[str]:
        return tools if run % 2 == 0 else list(reversed(tools))

    # --- one tool, one case -----------------------------------------------------------------
    def ocb_backup(self, env: dict, expect_skip: bool = False) -> dict:
        out = os.path.join(self.dir, "last-doc.json")
        with open(out, "wb") as handle:
            result = Measure([os.path.join(BIN, "ocb-backup")], env, stdout=handle).run()
        with open(out, encoding="utf-8") as handle:
            doc = json.load(handle)
        if doc.get("error") or bool(doc.get("skip")) != expect_skip:
            raise SystemExit(f"bench: ocb-backup gave an unexpected document: {json.dumps(doc)[:2000]}")
        return result

    def full(self, case: str, sealed: bool) -> None:
        tools = self.tools
        for run in range(self.args.runs):
            for tool in self.order(run, tools):
                if tool == OCB:
                    name = "ocb-sealed" if sealed else "ocb-plain"
                    for sub in ("store", "work", "cache"):
                        fresh(os.path.join(self.dir, name, sub))
                    env = self.ocb_env(name, sealed)
                    self.cold_key_cache()
                    result = self.ocb_backup(env)
                    result["bytes"] = dir_bytes(os.path.join(self.dir, name, "store"))
                elif tool == "restic":
                    repo = self.restic_repo(fresh_repo=True)
                    before = dir_bytes(repo)
                    result = Measure([self.restic, "-r", repo, "-q", "backup", "."], self.env, cwd=self.home).run()
                    result["bytes"] = dir_bytes(repo) - before
                else:
                    path = self.tar_path(tool)
                    result = Measure(self.tar_create(tool, path), self.env).run()
                    result["bytes"] = os.path.getsize(path)
                self.record(case, tool, result)

    def restic_repo(self, fresh_repo: bool = False) -> str:
        repo = os.path.join(self.dir, "restic-repo")
        if fresh_repo:
            shutil.rmtree(repo, ignore_errors=True)
            shutil.rmtree(self.env["RESTIC_CACHE_DIR"], ignore_errors=True)
            subprocess.run([self.restic, "-r", repo, "-q", "init"], env=self.env, check=True,
                           stdout=subprocess.DEVNULL)
        return repo

    def tar_path(self, tool: str) -> str:
        return os.path.join(self.dir, "archive.tar.zst" if tool == "tar-zstd" else "archive.tar.gz")

    def tar_create(self, tool: str, path: str) -> list[str]:
        if tool == "tar-zstd":
            return ["tar", "-I", "zstd -T0 -3", "-cf", path, "-C", self.home, "."]
        return ["tar", "-czf", path, "-C", self.home, "."]

    def incremental(self) -> None:
        tools = [OCB] + (["restic"] if self.restic else [])
        env = self.ocb_env("ocb-sealed", True)
        repo = self.restic_repo() if self.restic else ""
        for run in range(self.args.runs):
            mutation = synth.mutate(self.home, run + 1, self.args.seed)
            if run == 0:
                print(f"  mutation: {mutation}", file=sys.stderr)
            for tool in self.order(run, tools):
                if tool == OCB:
                    store = os.path.join(self.dir, "ocb-sealed", "store")
                    before = dir_bytes(store)
                    result = self.ocb_backup(env)
                    result["bytes"] = dir_bytes(store) - before
                else:
                    before = dir_bytes(repo)
                    result = Measure([self.restic, "-r", repo, "-q", "backup", "."], self.env, cwd=self.home).run()
                    result["bytes"] = dir_bytes(repo) - before
                self.record("incremental", tool, result)

    def skip(self) -> None:
        tools = [OCB] + (["restic"] if self.restic else [])
        env = self.ocb_env("ocb-sealed", True)
        # untimed: the first backup after the incremental may still see the -wal/-shm companions
        # that pack's read-only database copy leaves beside a cleanly closed database (the
        # directory's mtime moved); from the next one on, the state is unchanged for ocb
        out = os.path.join(self.dir, "warm-doc.json")
        with open(out, "wb") as handle:
            Measure([os.path.join(BIN, "ocb-backup")], env, stdout=handle).run()
        for run in range(self.args.runs):
            for tool in self.order(run, tools):
                if tool == OCB:
                    result = self.ocb_backup(env, expect_skip=True)
                else:
                    result = Measure([self.restic, "-r", self.restic_repo(), "-q", "backup", "."], self.env,
                                     cwd=self.home).run()
                self.record("skip", tool, result)

    def restore(self) -> None:
        # the tar anchors restore an archive of the same (latest) state
        for tool in ("tar-zstd", "tar-gzip"):
            subprocess.run(self.tar_create(tool, self.tar_path(tool)), env=self.env, check=True)
        env = self.ocb_env("ocb-sealed", True)
        for run in range(self.args.runs):
            for tool in self.order(run, self.tools):
                target = fresh(os.path.join(self.restore_base, tool))
                if tool == OCB:
                    argv = [os.path.join(BIN, "ocb-restore"), "--to", target]
                    self.cold_key_cache()
                    result = Measure(argv, env).run()
                elif tool == "restic":
                    result = Measure([self.restic, "-r", self.restic_repo(), "-q", "restore", "latest",
                                      "--target", target], self.env).run()
                elif tool == "tar-zstd":
                    result = Measure(["tar", "-I", "zstd -d -T0", "-xf", self.tar_path(tool), "-C", target], self.env).run()
                else:
                    result = Measure(["tar", "-xzf", self.tar_path(tool), "-C", target], self.env).run()
                if run == 0 and tool == OCB:
                    self.check_restored(target)
                shutil.rmtree(target, ignore_errors=True)
                self.record("restore", tool, result)

    def check_restored(self, target: str) -> None:
        """The restore is only a figure if it brought the state back: same files, same sizes."""
        # a database's -wal/-shm companions are left out by design (its copy holds them)
        want = {os.path.relpath(os.path.join(f, n), self.home): os.lstat(os.path.join(f, n)).st_size
                for f, _, names in os.walk(self.home) for n in names if not n.endswith(("-wal", "-shm"))}
        got = {os.path.relpath(os.path.join(f, n), target): os.lstat(os.path.join(f, n)).st_size
               for f, _, names in os.walk(target) for n in names}
        if want != got:
            missing = sorted(set(want) - set(got))[:5]
            extra = sorted(set(got) - set(want))[:5]
            raise SystemExit(f"bench: ocb-restore did not bring the state back (missing {missing}, extra {extra})")

    def listing(self) -> None:
        tools = [OCB] + (["restic"] if self.restic else [])
        env = self.ocb_env("ocb-sealed", True)
        for run in range(self.args.runs):
            for tool in self.order(run, tools):
                if tool == OCB:
                    result = Measure([os.path.join(BIN, "ocb-chain"), "--list"], env).run()
                else:
                    result = Measure([self.restic, "-r", self.restic_repo(), "-q", "snapshots"], self.env).run()
                self.record("list", tool, result)

    # --- the whole bench ----------------------------------------------------------------------
    def run(self) -> dict:
        fresh(self.dir)
        started = time.monotonic()
        made = synth.generate(self.home, self.args.scale, self.args.files, self.args.seed)
        print(f"bench: home of {made['files']} files, {made['bytes'] / 1e6:.1f} MB "
              f"generated in {time.monotonic() - started:.1f}s; tools: {', '.join(self.tools)}", file=sys.stderr)
        try:
            self.full("full-sealed", True)
            self.full("full-unsealed", False)
            self.incremental()
            self.skip()
            self.restore()
            self.listing()
        finally:
            shutil.rmtree(self.restore_base, ignore_errors=True)
            self.cold_key_cache()
        return self.report(made)

    def report(self, made: dict) -> dict:
        cases = {}
        for case, tools in self.cases.items():
            cases[case] = {}
            for tool, runs in tools.items():
                median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                cases[case][tool] = {"runs": runs, "median": median}
            ocb = cases[case].get(OCB)
            if ocb:
                ocb["ratios"] = {tool: {key: (round(ocb["median"][key] / value["median"][key], 3)
                                              if value["median"].get(key) else None)
                                        for key in ocb["median"] if key in value["median"]}
                                 for tool, value in cases[case].items() if tool != OCB}
        results = {
            "bench": 1,
            "scale": self.args.scale, "files_requested": self.args.files, "seed": self.args.seed,
            "runs": self.args.runs, "scrypt_log_n": os.environ.get("OCB_SCRYPT_LOG_N", "default"),
            "home": made,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                        "restic": self.tool_version([self.restic, "version"]) if self.restic else None,
                        "tar": self.tool_version(["tar", "--version"])},
            "units": {"wall": "s", "cpu": "s", "rss": "bytes", "bytes": "bytes"},
            "cases": cases,
            "targets": self.targets(cases),
        }
        return results

    @staticmethod
    def tool_version(argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0]

    def targets(self, cases: dict) -> list[dict]:
        def ratio(case: str, anchor: str, key: str = "wall") -> float | None:
            return cases.get(case, {}).get(OCB, {}).get("ratios", {}).get(anchor, {}).get(key)

        def median(case: str, key: str) -> float | None:
            return cases.get(case, {}).get(OCB, {}).get("median", {}).get(key)

        peak = max((r["rss"] for c in cases.values() for r in c.get(OCB, {}).get("runs", [])), default=None)
        rows = [
            ("sealed full backup wall / restic", ratio("full-sealed", "restic"), 0.6),
            ("sealed full backup wall / tar --zstd -T0", ratio("full-sealed", "tar-zstd"), 1.6),
            ("incremental wall / restic", ratio("incremental", "restic"), 0.3),
            ("restore wall / restic", ratio("restore", "restic"), 0.8),
            ("unchanged state -> skip, seconds", median("skip", "wall"), 0.5),
            ("peak RSS of any ocb run, MB", peak / 1e6 if peak is not None else None, 100),
            ("incremental bytes stored / restic's", ratio("incremental", "restic", "bytes"), 1.0),
        ]
        return [{"target": name, "value": None if value is None else round(value, 3), "goal": goal,
                 "met": None if value is None else value <= goal} for name, value, goal in rows]


def table(results: dict) -> str:
    lines = [f"ocb bench: scale {results['scale']}, {results['home']['files']} files, "
             f"{results['home']['bytes'] / 1e6:.1f} MB, medians of {results['runs']} runs",
             f"{'case':14} {'tool':9} {'wall s':>8} {'cpu s':>8} {'rss MB':>8} {'stored MB':>10}   ocb/tool (wall cpu rss bytes)"]
    for case, tools in results["cases"].items():
        ratios = tools.get(OCB, {}).get("ratios", {})
        for tool, value in tools.items():
            m = value["median"]
            stored = f"{m['bytes'] / 1e6:10.2f}" if "bytes" in m else " " * 10
            r = ratios.get(tool)
            shown = "  ".join("-" if r.get(k) is None else f"{r[k]:.2f}" for k in ("wall", "cpu", "rss", "bytes") if k in r) if r else ""
            lines.append(f"{case:14} {tool:9} {m['wall']:8.2f} {m['cpu']:8.2f} {m['rss'] / 1e6:8.1f} {stored}   {shown}")
    lines.append("targets:")
    for t in results["targets"]:
        state = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        lines.append(f"  {t['target']:42} {'-' if t['value'] is None else t['value']:>8} (goal <= {t['goal']}) {state}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--files", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=os.path.join(ROOT, ".bench"))
    parser.add_argument("--restore-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--no-restic", action="store_true", help="leave restic out even when installed")
    parser.add_argument("--keep", action="store_true", help="keep the bench dir (home, stores) afterwards")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        if not args.keep:
            shutil.rmtree(bench.dir, ignore_errors=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
        handle.write("\n")
    os.replace(args.out + ".tmp", args.out)
    print(table(results))
    print(f"bench: results in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
