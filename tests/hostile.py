"""Test tool: craft hostile snapshots and publish them as a store's latest, and kill a process
when a file grows to a given size (the crash tests).

  python tests/hostile.py cases
        one line per case: NAME, the exit a restore must give, what it tries
  python tests/hostile.py publish CASE OUTSIDE_DIR STORE_URL...
        builds the snapshot (or the chain: full, then incremental) of CASE and publishes it as
        the latest of each store: a local folder (file:///path) or a test Hub repo
        (hf://datasets/OWNER/NAME, through huggingface_hub: HF_ENDPOINT, HF_TOKEN). A store URL
        followed by `+sealed` gets the snapshot sealed with OCB_PASSWORD (read from the
        environment, never from argv) at scrypt cost 2**10. OUTSIDE_DIR is what escaping
        members aim at: the test checks it is left as it was.
  python tests/hostile.py kill-at PID BYTES PATH_GLOB...
        SIGKILL PID as soon as the files matching the globs (directories: everything under
        them) hold BYTES bytes together; prints how many they held. Exit 1 when PID ended first.

Every snapshot is published the way ocb-push publishes (the meta and pointer of
ocb.snapshot.build_meta / build_pointer, through the store's own publish), so the only thing
wrong with a case is what it is named after. `benign` is the control: a restore takes it.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import signal
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

import zstandard  # noqa: E402

from ocb import seal  # noqa: E402
from ocb.archive import INDEX_MEMBER  # noqa: E402
from ocb.snapshot import build_meta, build_pointer  # noqa: E402
from ocb import catalog, config  # noqa: E402
from ocb.config import Settings  # noqa: E402
from ocb.stores import open_store  # noqa: E402
from ocb.stores.base import Upload  # noqa: E402

STATE = "openclaw-state"
MTIME = 1_700_000_000
PREFIX = "backups"
IDS = ("openclaw-backup-20250101-000001", "openclaw-backup-20250101-000002")
# enough '..' to climb from any staging dir to /, then down to OUTSIDE_DIR
CLIMB = "../" * 40
OK_TEXT = b"a file that belongs here\n"


@dataclass
class Snapshot:
    """One crafted archive: tar members (written in order) and the index it carries."""

    members: list[tuple[tarfile.TarInfo, bytes | None]] = field(default_factory=list)
    entries: list[dict] = field(default_factory=list)
    roots: dict = field(default_factory=lambda: {STATE: {"kind": "dir", "present": True}})

    def add(self, name: str, kind: bytes, data: bytes | None = None, mode: int = 0o644,
            linkname: str = "", pax: dict | None = None) -> "Snapshot":
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = MTIME
        info.linkname = linkname
        info.size = len(data) if data is not None else 0
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 3
        if pax:
            info.pax_headers = dict(pax)
        self.members.append((info, data))
        return self

    def index(self, path: str, kind: str, mode: int = 0o644, data: bytes = b"", target: str | None = None,
              root: str = STATE) -> "Snapshot":
        entry = {"root": root, "path": path, "type": kind, "mode": mode,
                 "size": len(data) if kind == "file" else 0, "mtime_ns": MTIME * 10**9}
        if kind == "file":
            entry["sha256"] = hashlib.sha256(data).hexdigest()
        if kind == "symlink":
            entry["target"] = target
        self.entries.append(entry)
        return self

    def archive(self, snapshot_id: str) -> bytes:
        """tar (PAX) through zstd, the index as the last member, as ocb-pack writes it."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                          errors="surrogateescape") as tar:
            for info, data in self.members:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
            header = {"ocb_index": 1, "snapshot": snapshot_id, "roots": self.roots}
            lines = [json.dumps(header)] + [json.dumps(e) for e in sorted(self.entries, key=lambda e: (e["root"], e["path"]))]
            body = ("\n".join(lines) + "\n").encode("utf-8")
            info = tarfile.TarInfo(INDEX_MEMBER)
            info.size, info.mode, info.mtime = len(body), 0o600, MTIME
            tar.addfile(info, io.BytesIO(body))
        return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw.getvalue())


def benign() -> Snapshot:
    """A root dir holding one file: what every case builds on, so only its hostility differs."""
    snap = Snapshot()
    snap.add(STATE, tarfile.DIRTYPE, mode=0o700).index("", "dir", 0o700)
    snap.add(f"{STATE}/ok.txt", tarfile.REGTYPE, OK_TEXT).index("ok.txt", "file", data=OK_TEXT)
    return snap


def _victim(outside: str) -> tuple[str, bytes]:
    path = os.path.join(outside, "victim.txt")
    with open(path, "rb") as handle:
        return path, handle.read()


# -- the cases: each returns the chain (full first) of snapshots to publish ---------------------

def case_benign(outside: str) -> list[Snapshot]:
    return [benign()]


def case_absolute_path(outside: str) -> list[Snapshot]:
    return [benign().add(os.path.join(outside, "pwned"), tarfile.REGTYPE, b"escaped\n")]


def case_dotdot_path(outside: str) -> list[Snapshot]:
    return [benign().add(f"{STATE}/{CLIMB}{outside.lstrip('/')}/pwned", tarfile.REGTYPE, b"escaped\n")]


def case_write_through_member_symlink(outside: str) -> list[Snapshot]:
    snap = benign().add(f"{STATE}/link", tarfile.SYMTYPE, linkname=outside)
    snap.add(f"{STATE}/link/pwned", tarfile.REGTYPE, b"escaped\n")
    return [snap.index("link", "symlink", 0o777, target=outside)]


def case_write_through_earlier_snapshot_symlink(outside: str) -> list[Snapshot]:
    full = benign().add(f"{STATE}/link", tarfile.SYMTYPE, linkname=outside)
    full.index("link", "symlink", 0o777, target=outside)
    incremental = Snapshot().add(f"{STATE}/link/pwned", tarfile.REGTYPE, b"escaped\n")
    incremental.index("", "dir", 0o700).index("ok.txt", "file", data=OK_TEXT)
    incremental.index("link", "symlink", 0o777, target=outside)
    return [full, incremental]


def case_overwrite_file_behind_earlier_symlink(outside: str) -> list[Snapshot]:
    """The earlier snapshot links to a file outside; the next one writes a file of that name."""
    victim, _ = _victim(outside)
    full = benign().add(f"{STATE}/note", tarfile.SYMTYPE, linkname=victim)
    full.index("note", "symlink", 0o777, target=victim)
    incremental = Snapshot().add(f"{STATE}/note", tarfile.REGTYPE, b"overwritten\n")
    incremental.index("", "dir", 0o700).index("ok.txt", "file", data=OK_TEXT)
    incremental.index("note", "file", data=b"overwritten\n")
    return [full, incremental]


def case_root_member_is_a_symlink(outside: str) -> list[Snapshot]:
    snap = Snapshot().add(STATE, tarfile.SYMTYPE, linkname=outside)
    snap.add(f"{STATE}/pwned", tarfile.REGTYPE, b"escaped\n")
    return [snap.index("", "dir", 0o700).index("pwned", "file", data=b"escaped\n")]


def case_hardlink_absolute(outside: str) -> list[Snapshot]:
    victim, _ = _victim(outside)
    return [benign().add(f"{STATE}/hl", tarfile.LNKTYPE, linkname=victim)]


def case_hardlink_dotdot(outside: str) -> list[Snapshot]:
    victim, _ = _victim(outside)
    return [benign().add(f"{STATE}/hl", tarfile.LNKTYPE, linkname=f"{STATE}/{CLIMB}{victim.lstrip('/')}")]


def case_hardlink_inside(outside: str) -> list[Snapshot]:
    return [benign().add(f"{STATE}/hl", tarfile.LNKTYPE, linkname=f"{STATE}/ok.txt")]


def case_character_device(outside: str) -> list[Snapshot]:
    return [benign().add(f"{STATE}/null", tarfile.CHRTYPE)]


def case_block_device(outside: str) -> list[Snapshot]:
    return [benign().add(f"{STATE}/disk", tarfile.BLKTYPE)]


def case_fifo(outside: str) -> list[Snapshot]:
    return [benign().add(f"{STATE}/fifo", tarfile.FIFOTYPE)]


def case_socket_like_unknown_type(outside: str) -> list[Snapshot]:
    # tar has no socket type: an archive can only carry one as a type flag readers do not know
    return [benign().add(f"{STATE}/socket", b"Z", b"")]


def case_one_name_two_types(outside: str) -> list[Snapshot]:
    snap = benign().add(f"{STATE}/dup", tarfile.REGTYPE, b"first\n")
    return [snap.add(f"{STATE}/dup", tarfile.SYMTYPE, linkname=outside).index("dup", "symlink", 0o777, target=outside)]


def case_nul_in_name(outside: str) -> list[Snapshot]:
    # ustar name fields end at NUL: only a PAX path record can carry one
    return [benign().add(f"{STATE}/x", tarfile.REGTYPE, b"escaped\n",
                         pax={"path": f"{STATE}/a\0/{CLIMB}{outside.lstrip('/')}/pwned"})]


def case_invalid_utf8_name(outside: str) -> list[Snapshot]:
    """An overlong '..' (C0 AE C0 AE) is not '..': a name like any other, kept inside its root."""
    name = b"\xc0\xae\xc0\xae".decode("utf-8", "surrogateescape")
    snap = benign().add(f"{STATE}/{name}", tarfile.DIRTYPE, mode=0o755).index(name, "dir", 0o755)
    snap.add(f"{STATE}/{name}/pwned-\udcff", tarfile.REGTYPE, b"inside\n")
    return [snap.index(f"{name}/pwned-\udcff", "file", data=b"inside\n")]


def case_member_larger_than_index(outside: str) -> list[Snapshot]:
    snap = Snapshot().add(STATE, tarfile.DIRTYPE, mode=0o700).index("", "dir", 0o700)
    snap.add(f"{STATE}/ok.txt", tarfile.REGTYPE, b"\0" * (32 * 1024 * 1024))
    return [snap.index("ok.txt", "file", data=OK_TEXT)]


def case_index_path_outside_root(outside: str) -> list[Snapshot]:
    """The index lists the victim by a climbing path, with another mode and mtime."""
    victim, content = _victim(outside)
    return [benign().index(f"{CLIMB}{victim.lstrip('/')}", "file", 0o777, data=content)]


def case_index_root_outside(outside: str) -> list[Snapshot]:
    snap = benign()
    snap.roots["../escape"] = {"kind": "dir", "present": True}
    return [snap.index("", "dir", 0o777, root="../escape")]


def case_index_path_under_a_symlink(outside: str) -> list[Snapshot]:
    """A link to OUTSIDE, and the index lists the victim under it, with another mode and mtime:
    checking and fixing up that entry would follow the link."""
    victim, content = _victim(outside)
    snap = benign().add(f"{STATE}/link", tarfile.SYMTYPE, linkname=outside)
    snap.index("link", "symlink", 0o777, target=outside)
    return [snap.index("link/victim.txt", "file", 0o777, data=content)]


def case_delta_through_earlier_symlink(outside: str) -> list[Snapshot]:
    """A block delta applied at a path an earlier snapshot made a link to a file outside."""
    from ocb.archive import DELTA_BLOCK_SIZE, DELTA_BLOCKS, DELTA_LENGTH

    victim, _ = _victim(outside)
    full = benign().add(f"{STATE}/db", tarfile.SYMTYPE, linkname=victim)
    full.index("db", "symlink", 0o777, target=victim)
    block = b"X" * 16
    incremental = Snapshot().add(f"{STATE}/db", tarfile.REGTYPE, block,
                                 pax={DELTA_LENGTH: "16", DELTA_BLOCK_SIZE: "16", DELTA_BLOCKS: "0"})
    incremental.index("", "dir", 0o700).index("ok.txt", "file", data=OK_TEXT).index("db", "file", data=block)
    return [full, incremental]


CASES: dict[str, tuple[int, Callable[[str], list[Snapshot]]]] = {
    name[len("case_"):].replace("_", "-"): (code, func) for name, code, func in [
        ("case_benign", 0, case_benign),
        ("case_absolute_path", 4, case_absolute_path),
        ("case_dotdot_path", 4, case_dotdot_path),
        ("case_write_through_member_symlink", 4, case_write_through_member_symlink),
        ("case_write_through_earlier_snapshot_symlink", 4, case_write_through_earlier_snapshot_symlink),
        ("case_overwrite_file_behind_earlier_symlink", 0, case_overwrite_file_behind_earlier_symlink),
        ("case_root_member_is_a_symlink", 4, case_root_member_is_a_symlink),
        ("case_hardlink_absolute", 4, case_hardlink_absolute),
        ("case_hardlink_dotdot", 4, case_hardlink_dotdot),
        ("case_hardlink_inside", 4, case_hardlink_inside),
        ("case_character_device", 4, case_character_device),
        ("case_block_device", 4, case_block_device),
        ("case_fifo", 4, case_fifo),
        ("case_socket_like_unknown_type", 4, case_socket_like_unknown_type),
        ("case_one_name_two_types", 4, case_one_name_two_types),
        ("case_nul_in_name", 4, case_nul_in_name),
        ("case_invalid_utf8_name", 0, case_invalid_utf8_name),
        ("case_member_larger_than_index", 4, case_member_larger_than_index),
        ("case_index_path_outside_root", 4, case_index_path_outside_root),
        ("case_index_root_outside", 4, case_index_root_outside),
        ("case_index_path_under_a_symlink", 4, case_index_path_under_a_symlink),
        ("case_delta_through_earlier_symlink", 4, case_delta_through_earlier_symlink),
    ]
}


# -- publishing ----------------------------------------------------------------------------------

def _document(snapshot_id: str, parent_meta: dict | None, store: str, volume: dict, archive: bytes,
              sealed: dict | None, snap: Snapshot) -> dict:
    """The parts of a backup document build_meta and build_pointer read."""
    files = [e for e in snap.entries if e["type"] == "file"]
    return {
        "id": snapshot_id, "store": store,
        "created_at_utc": f"{snapshot_id[16:20]}-{snapshot_id[20:22]}-{snapshot_id[22:24]}T00:00:00Z",
        "plan": {"type": "incremental" if parent_meta else "full",
                 "parent": parent_meta["id"] if parent_meta else None,
                 "parent_chain": parent_meta["chain"] if parent_meta else [],
                 "diverged_from": None, "changes": None},
        "archive": {"compression": "zstd", "files": len(files), "entries": len(snap.entries),
                    "bytes": sum(e["size"] for e in files), "size": len(archive),
                    "sha256": hashlib.sha256(archive).hexdigest()},
        "seal": sealed or {"sealed": False},
        "volumes": {"files": [volume]},
    }


def publish(case: str, outside: str, target: str, scratch: str) -> None:
    url, _, flag = target.partition("+")
    password = os.environ.get("OCB_PASSWORD", "").encode("utf-8") if flag == "sealed" else b""
    if flag == "sealed" and not password:
        raise SystemExit("hostile.py: +sealed needs OCB_PASSWORD in the environment")
    key = seal.derive_password_key(password, seal.KdfParams(log_n=10)) if password else None
    # as a stage opens it: settings in, secrets (HF_TOKEN for the test Hub) from the environment
    store = open_store(url, Settings(home=scratch, work_dir=scratch, cache_dir=scratch, retry_seconds=5),
                       config.store_secrets())
    parent_meta = None
    for snapshot_id, snap in zip(IDS, CASES[case][1](outside)):
        archive = snap.archive(snapshot_id)
        name, payload, sealed = f"{snapshot_id}.tar.zst", archive, None
        if key is not None:
            out = io.BytesIO()
            info = seal.seal_stream(io.BytesIO(archive), out, key,
                                    associated=seal.snapshot_associated_data(snapshot_id))
            name, payload = name + ".ocbs", out.getvalue()
            sealed = {"sealed": True, "params": info.header, "sha256": hashlib.sha256(payload).hexdigest()}
        path = os.path.join(scratch, name)
        with open(path, "wb") as handle:
            handle.write(payload)
        volume = {"name": name, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
        doc = _document(snapshot_id, parent_meta, url, volume, archive, sealed, snap)
        meta = build_meta(doc, PREFIX)
        pointer = build_pointer(doc["store"], meta, PREFIX)
        store.publish(PREFIX, snapshot_id, [Upload(name, path, volume["size"], volume["sha256"])], meta,
                      pointer, catalog.append(store.read_catalog(), meta), store.head().token)
        parent_meta = meta


# -- killing at a size -----------------------------------------------------------------------------

def _size(patterns: list[str]) -> int:
    total = 0
    for pattern in patterns:
        for path in glob.glob(pattern):
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    for top, _, names in os.walk(path):
                        for name in names:
                            try:
                                total += os.lstat(os.path.join(top, name)).st_size
                            except FileNotFoundError:
                                pass
                else:
                    total += os.lstat(path).st_size
            except FileNotFoundError:
                pass
    return total


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def kill_at(pid: int, limit: int, patterns: list[str]) -> int:
    """The process is paced: stopped (SIGSTOP) for each look at the sizes and let go on
    (SIGCONT) between looks, so that a writer fast enough to write its whole file between two
    looks (unsynced scratch files are) is still killed within one write past `limit`, never
    after it finished."""
    try:
        while _alive(pid):
            os.kill(pid, signal.SIGSTOP)
            size = _size(patterns)
            if size >= limit:
                os.kill(pid, signal.SIGKILL)
                print(size)
                return 0
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.0001)
    except ProcessLookupError:
        pass
    print(f"hostile.py: pid {pid} ended before {limit} bytes ({_size(patterns)} written)", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] == "cases":
        for name, (code, func) in CASES.items():
            print(f"{name} {code} {(func.__doc__ or '').strip().splitlines()[0] if func.__doc__ else ''}".rstrip())
        return 0
    if len(argv) >= 5 and argv[1] == "publish":
        case, outside = argv[2], os.path.abspath(argv[3])
        if case not in CASES:
            raise SystemExit(f"hostile.py: unknown case {case!r} (see: hostile.py cases)")
        with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
            for target in argv[4:]:
                publish(case, outside, target, scratch)
        return 0
    if len(argv) >= 5 and argv[1] == "kill-at":
        return kill_at(int(argv[2]), int(argv[3]), argv[4:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
