"""A deterministic synthetic OpenClaw home, and a deterministic "ten minutes of agent activity".

generate(home, scale, files, seed) writes, under `home`, what an OpenClaw container's $HOME holds
(the current layout): ~/.openclaw with session JSONL transcripts, WAL-mode SQLite memory
databases, workspace markdown, a config and one 50 MB binary (scaled); ~/.npm/_cacache with
incompressible content blobs and their index entries; ~/.ssh with keys 0600; ~/.config,
~/.codex, ~/.claude; symlinks (one dangling) and empty dirs. `scale` 1 is about 400 MB and
20,000 files; `files` overrides the number of files (the extra ones small). The same arguments
always give the same bytes, names, modes and mtimes.

mutate(home, round, seed) is what an agent does in ten minutes: appends to ~1% of the
transcripts, updates rows in the databases (through SQLite, in WAL mode, checkpointed as the
agent's process would on close), adds, deletes and renames a few files. The same tree, round
and seed always give the same result.

A bench tool (bench/run.py drives it), not part of ocb.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3

MB = 1024 * 1024
# the share of the bytes of scale 1 (400 MB) by kind
BASE_BYTES = 400 * MB
BASE_FILES = 20_000
BINARY_BYTES = 50 * MB
WORDS = ("the agent tool call result file read write search memory session user assistant "
         "context token model error retry plan step code test build commit branch merge diff "
         "patch function class module import return value list dict string number true false "
         "null json yaml config path home npm node python shell command output status done").split()
MTIME_BASE = 1_780_000_000  # 2026-05-28: every generated file gets a fixed mtime from here


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words))


class _Lines:
    """A pool of transcript lines (JSON objects): varied enough to compress like real ones."""

    def __init__(self, rng: random.Random) -> None:
        self.pool = [_text(rng, rng.randint(8, 120)) for _ in range(4000)]
        self.rng = rng
        self.n = 0

    def line(self) -> bytes:
        self.n += 1
        rng = self.rng
        record = {"type": rng.choice(("message", "tool_use", "tool_result")), "id": f"msg_{self.n:09d}",
                  "ts": MTIME_BASE + self.n, "role": rng.choice(("user", "assistant")),
                  "content": self.pool[rng.randrange(len(self.pool))]}
        return (json.dumps(record) + "\n").encode()


def _write(path: str, data: bytes, mode: int = 0o644, mtime: int = MTIME_BASE) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))


def _blob(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def _database(path: str, rows: int, rng: random.Random) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, path TEXT, text TEXT, embedding BLOB, updated_at INTEGER)")
    db.execute("CREATE TABLE files (path TEXT PRIMARY KEY, hash TEXT, mtime INTEGER)")
    db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)",
                   ((i, f"memory/{i % 500}.md", _text(rng, 60), rng.randbytes(384), MTIME_BASE + i)
                    for i in range(rows)))
    db.executemany("INSERT INTO files VALUES (?, ?, ?)",
                   ((f"memory/{i}.md", hashlib.sha256(str(i).encode()).hexdigest(), MTIME_BASE) for i in range(500)))
    db.commit()
    db.close()  # the last connection checkpoints the WAL: the -wal file is gone, as after a clean stop


def generate(home: str, scale: float = 1.0, files: int | None = None, seed: int = 1) -> dict:
    """Write the synthetic home under `home` (which must not exist or be empty)."""
    rng = random.Random(seed)
    total_bytes = int(BASE_BYTES * scale)
    total_files = files if files is not None else max(40, int(BASE_FILES * scale))
    state = os.path.join(home, ".openclaw")
    lines = _Lines(rng)
    made = 0
    # fixed bits: config, ssh keys, symlinks, empty dirs
    _write(os.path.join(state, "openclaw.json"), json.dumps({"agents": {"main": {"model": "x"}}}, indent=2).encode(), 0o600)
    _write(os.path.join(home, ".ssh", "id_ed25519"), b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + rng.randbytes(300).hex().encode() + b"\n-----END OPENSSH PRIVATE KEY-----\n", 0o600)
    _write(os.path.join(home, ".ssh", "id_ed25519.pub"), b"ssh-ed25519 " + rng.randbytes(32).hex().encode() + b" agent\n")
    _write(os.path.join(home, ".ssh", "config"), b"Host *\n  StrictHostKeyChecking accept-new\n", 0o600)
    os.chmod(os.path.join(home, ".ssh"), 0o700)
    _write(os.path.join(home, ".config", "gh", "hosts.yml"), b"github.com:\n  user: agent\n", 0o600)
    _write(os.path.join(home, ".codex", "config.toml"), b'model = "gpt"\n')
    _write(os.path.join(home, ".claude", "settings.json"), b'{"theme": "dark"}\n')
    made += 7
    for empty in ("agents/main/agent/empty", "workspace/.trash", "canvas"):
        os.makedirs(os.path.join(state, empty), exist_ok=True)
    os.makedirs(os.path.join(state, "workspace"), exist_ok=True)
    os.symlink("openclaw.json", os.path.join(state, "config-link.json"))
    os.symlink("../nowhere/at/all", os.path.join(state, "workspace", "dangling"))
    os.makedirs(os.path.join(home, ".config"), exist_ok=True)
    os.symlink("../.openclaw/workspace", os.path.join(home, ".config", "workspace-link"))
    # the byte budget: 50 MB binary (scaled below scale 1), databases 10%, transcripts 35%,
    # npm blobs the rest; markdown and npm index entries are small and carry the file count
    binary = min(BINARY_BYTES, max(64 * 1024, int(BINARY_BYTES * scale)))
    binary_data = bytearray(_blob(rng, binary))
    binary_data[: binary // 4] = bytes(binary // 4)  # a quarter of zeros: partly compressible
    _write(os.path.join(state, "media", "inbound", "recording.bin"), bytes(binary_data))
    made += 1
    rest = max(0, total_bytes - binary)
    db_bytes, jsonl_bytes = rest // 10, rest * 35 // 100
    npm_bytes = rest - db_bytes - jsonl_bytes
    # databases: about 1 KB a row
    n_dbs = 3
    for d in range(n_dbs):
        _database(os.path.join(state, "memory", f"agent-{d}.sqlite"), max(50, db_bytes // n_dbs // 1100), rng)
        made += 1
    # transcripts: 2% of the files, ~35% of the bytes
    n_jsonl = max(4, total_files // 50)
    per_jsonl = max(2000, jsonl_bytes // n_jsonl)
    for i in range(n_jsonl):
        chunks, size = [], 0
        target = int(per_jsonl * rng.uniform(0.3, 1.7))
        while size < target:
            chunks.append(lines.line())
            size += len(chunks[-1])
        agent = "main" if i % 4 else f"helper-{i % 7}"
        _write(os.path.join(state, "agents", agent, "sessions", f"s-{i:06d}.jsonl"), b"".join(chunks), 0o600,
               MTIME_BASE + i)
        made += 1
    _write(os.path.join(state, "agents", "main", "sessions", "sessions.json"),
           json.dumps({f"s-{i:06d}": {"updatedAt": MTIME_BASE + i} for i in range(0, n_jsonl, 3)}).encode())
    made += 1
    # npm: blobs (incompressible, 10% of the files) and index entries (small)
    remaining = max(0, total_files - made)
    n_blobs = max(4, remaining // 10)
    per_blob = max(1024, npm_bytes // n_blobs)
    cache = os.path.join(home, ".npm", "_cacache")
    for i in range(n_blobs):
        data = _blob(rng, int(per_blob * rng.uniform(0.2, 1.8)))
        digest = hashlib.sha256(data).hexdigest()
        _write(os.path.join(cache, "content-v2", "sha512", digest[:2], digest[2:4], digest[4:]), data, 0o444)
        made += 1
    # the rest: small files, workspace markdown and npm index entries, half and half
    small = max(0, total_files - made)
    for i in range(small):
        if i % 2:
            body = f"# note {i}\n\n{_text(rng, rng.randint(20, 200))}\n".encode()
            _write(os.path.join(state, "workspace", f"topic-{i % 97:02d}", f"note-{i:07d}.md"), body,
                   mtime=MTIME_BASE + i)
        else:
            key = hashlib.sha256(f"key{i}".encode()).hexdigest()
            body = json.dumps({"key": f"make-fetch-happen:request-cache:https://registry.npmjs.org/pkg-{i}",
                               "integrity": f"sha512-{key}", "time": MTIME_BASE + i, "size": rng.randint(100, 99999)})
            _write(os.path.join(cache, "index-v5", key[:2], key[2:4], key[4:]), body.encode())
        made += 1
    return {"files": made, "bytes": tree_bytes(home)}


def tree_bytes(home: str) -> int:
    total = 0
    for folder, _, names in os.walk(home):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            total += st.st_size
    return total


def _listing(root: str, suffix: str) -> list[str]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        found.extend(os.path.join(folder, n) for n in sorted(names) if n.endswith(suffix))
    return found


def mutate(home: str, round_no: int, seed: int = 1) -> dict:
    """Ten minutes of agent activity; returns what it did (counts)."""
    rng = random.Random(seed * 1_000_003 + round_no)
    state = os.path.join(home, ".openclaw")
    now = MTIME_BASE + 10_000_000 + round_no * 600
    lines = _Lines(rng)
    lines.n = 10_000_000 * (round_no + 1)
    transcripts = _listing(os.path.join(state, "agents"), ".jsonl")
    appended = max(1, len(transcripts) // 100)
    for path in rng.sample(transcripts, appended):
        with open(path, "ab") as handle:
            handle.write(b"".join(lines.line() for _ in range(rng.randint(3, 30))))
        os.utime(path, (now, now))
    updated = 0
    for path in _listing(os.path.join(state, "memory"), ".sqlite"):
        db = sqlite3.connect(path)
        count = db.execute("SELECT max(id) FROM chunks").fetchone()[0] or 0
        for _ in range(20):
            db.execute("UPDATE chunks SET text = ?, updated_at = ? WHERE id = ?",
                       (_text(rng, 60), now, rng.randint(0, count)))
            updated += 1
        db.commit()
        db.close()
        os.utime(path, (now, now))
    notes = _listing(os.path.join(state, "workspace"), ".md")
    added = 5
    for i in range(added):
        _write(os.path.join(state, "workspace", "new", f"r{round_no:04d}-{i}.md"),
               f"# new {round_no} {i}\n{_text(rng, 100)}\n".encode(), mtime=now)
    deleted = renamed = 0
    if len(notes) > 10:
        picks = rng.sample(notes, 6)
        for path in picks[:3]:
            os.unlink(path)
            deleted += 1
        for path in picks[3:]:
            os.rename(path, path[:-3] + f".r{round_no}.md")
            renamed += 1
    return {"appended": appended, "rows_updated": updated, "added": added, "deleted": deleted, "renamed": renamed}
