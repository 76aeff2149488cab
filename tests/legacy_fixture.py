"""Test tool: make backups as the legacy script (reference/legacy-backup.py.txt) makes them.

  python tests/legacy_fixture.py backup STORE STAMP [--full] [--split BYTES] [--meta-version V]
      one legacy backup of the sources into the local folder STORE, taken "at" STAMP
      (YYYYMMDD-HHMMSS, UTC), with the tools the script used: tarfile w:gz, `openssl enc
      -aes-256-cbc -salt -pbkdf2 -pass file:F` when OPENCLAW_BACKUP_ENCRYPTION_ENABLED and
      _PASSWORD are set, `split -b BYTES` (the script splits only past 500 MB; --split forces
      it with a small size), its meta fields, file names and latest-backup.json. Full when
      --full or when the metadata dir holds no last-backup-metadata.json; else incremental:
      the files whose mtime is after the last backup's time, as the script chose them.
      --meta-version 1.0 writes a meta as an early script might have: version, type, parent,
      volumes, time, file count, named <id>.meta.json (a reconstruction: the script shows
      only 2.1).
  python tests/legacy_fixture.py settle EPOCH PATH...
      give every entry under PATHs (links too, dirs last) the mtime EPOCH, a whole second: the
      script's archives hold times as the float os.stat gave, exact only to about a microsecond
  python tests/legacy_fixture.py upload STORE REPO
      put the folder STORE into the test Hub's dataset REPO (HF_ENDPOINT, HF_TOKEN), as the
      script's uploads left it

The sources are read from the script's variables (OPENCLAW_STATE_DIR, OPENCLAW_BACKUP_ROOT_*_DIR,
OPENCLAW_BACKUP_EXTRA_DIRS / _FILES, OPENCLAW_BACKUP_NPM_ENABLED, OPENCLAW_BACKUP_METADATA_DIR,
OPENCLAW_BACKUP_PATH_PREFIX, OPENCLAW_BACKUP_COMPRESSION_LEVEL), their defaults under $HOME
instead of /root.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path

ROOTS = (("root-config", "OPENCLAW_BACKUP_ROOT_CONFIG_DIR", ".config"),
         ("root-codex", "OPENCLAW_BACKUP_ROOT_CODEX_DIR", ".codex"),
         ("root-claude", "OPENCLAW_BACKUP_ROOT_CLAUDE_DIR", ".claude"),
         ("root-agents", "OPENCLAW_BACKUP_ROOT_AGENTS_DIR", ".agents"),
         ("root-ssh", "OPENCLAW_BACKUP_ROOT_SSH_DIR", ".ssh"),
         ("root-env", "OPENCLAW_BACKUP_ROOT_ENV_DIR", ".env.d"),
         ("root-lark-cli", "OPENCLAW_BACKUP_ROOT_LARK_CLI_DIR", ".lark-cli"))


def _env(name: str, default: str = "") -> str:
    return (os.environ.get(name) or default).strip() or default


def _pairs(name: str) -> dict[str, Path]:
    found = {}
    for item in _env(name).split(","):
        if ":" in item:
            key, path = item.split(":", 1)
            found[key.strip()] = Path(path.strip()).resolve()
    return found


def extra_root_dirs(home: Path, metadata_dir: Path) -> dict[str, Path]:
    """_extra_root_dirs of the script, in its order."""
    dirs = {name: Path(_env(var, str(home / default))).resolve() for name, var, default in ROOTS}
    dirs["backup-info"] = metadata_dir
    if _env("OPENCLAW_BACKUP_NPM_ENABLED", "true").lower() in ("true", "1", "yes"):
        dirs["root-npm"] = Path(_env("OPENCLAW_BACKUP_ROOT_NPM_DIR", str(home / ".npm"))).resolve()
    dirs.update(_pairs("OPENCLAW_BACKUP_EXTRA_DIRS"))
    return dirs


def changed_files(directory: Path, since: dt.datetime) -> list[Path]:
    """_get_changed_files of the script."""
    found = []
    if not directory.exists():
        return found
    for item in directory.rglob("*"):
        if item.is_file():
            try:
                if dt.datetime.fromtimestamp(item.stat().st_mtime, tz=dt.timezone.utc) > since:
                    found.append(item)
            except (OSError, ValueError):
                continue
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(8192), b""):
            digest.update(chunk)
    return digest.hexdigest()


def backup(store: Path, stamp: str, full: bool, split_bytes: int | None, meta_version: str) -> None:
    home = Path(os.environ["HOME"])
    now = dt.datetime.strptime(stamp, "%Y%m%d-%H%M%S").replace(tzinfo=dt.timezone.utc)
    state_dir = Path(_env("OPENCLAW_STATE_DIR", str(home / ".openclaw"))).resolve()
    source_dir = Path(_env("OPENCLAW_BACKUP_SOURCE_DIR", str(state_dir))).resolve()
    metadata_dir = Path(_env("OPENCLAW_BACKUP_METADATA_DIR", str(home / ".backup-info"))).resolve()
    metadata_dir.mkdir(parents=True, exist_ok=True)
    prefix = _env("OPENCLAW_BACKUP_PATH_PREFIX", "backups").strip("/")
    level = max(1, min(9, int(_env("OPENCLAW_BACKUP_COMPRESSION_LEVEL", "6"))))
    password = os.environ.get("OPENCLAW_BACKUP_ENCRYPTION_PASSWORD") or None
    encrypt = _env("OPENCLAW_BACKUP_ENCRYPTION_ENABLED", "false").lower() in ("1", "true", "yes", "on") and password
    metadata_path = metadata_dir / "last-backup-metadata.json"
    previous = json.loads(metadata_path.read_text()) if metadata_path.exists() else None
    last_time = dt.datetime.fromisoformat(previous["last_backup_time"]) if previous else None
    is_full = full or last_time is None
    pointer_path = store / "latest-backup.json"
    remote_latest = json.loads(pointer_path.read_text())["latest"] if pointer_path.exists() else None

    work = Path(tempfile.mkdtemp(prefix="legacy-fixture-"))
    archive = work / f"openclaw-backup-{stamp}.tar.gz"
    file_count = 0
    with tarfile.open(archive, "w:gz", compresslevel=level) as tar:
        if is_full:
            tar.add(str(source_dir), arcname="openclaw-state")
            file_count += sum(1 for f in source_dir.rglob("*") if f.is_file())
            for root, local in extra_root_dirs(home, metadata_dir).items():
                if local.exists():
                    tar.add(str(local), arcname=root)
                    file_count += sum(1 for f in local.rglob("*") if f.is_file())
        else:
            assert last_time is not None
            for path in changed_files(source_dir, last_time):
                tar.add(str(path), arcname=f"openclaw-state/{path.relative_to(source_dir)}")
                file_count += 1
            for root, local in extra_root_dirs(home, metadata_dir).items():
                for path in changed_files(local, last_time):
                    tar.add(str(path), arcname=f"{root}/{path.relative_to(local)}")
                    file_count += 1
        for name, local in _pairs("OPENCLAW_BACKUP_EXTRA_FILES").items():
            if local.exists() and local.is_file():
                tar.add(str(local), arcname=name)
                file_count += 1

    # _save_backup_metadata: before encryption and splitting
    when = now.isoformat(timespec="seconds")
    if is_full:
        chain_id, parent, incremental_count, last_full = str(uuid.uuid4())[:8], None, 0, when
    else:
        chain_id = previous.get("chain_id") or str(uuid.uuid4())[:8]
        parent, incremental_count = remote_latest, previous.get("incremental_count", 0) + 1
        last_full = previous.get("last_full_backup_time")
    metadata = {"version": "2.1", "backup_type": "full" if is_full else "incremental", "chain_id": chain_id,
                "parent": parent, "volumes": [archive.name], "checksum": f"sha256:{sha256(archive)}",
                "created_at_utc": when, "last_backup_time": when, "file_count": file_count,
                "archive_size": archive.stat().st_size, "is_latest": True, "created_by": "openclaw-backup",
                "incremental_count": incremental_count, "last_full_backup_time": last_full}
    volumes = [archive]
    if encrypt:
        encrypted = archive.with_suffix(archive.suffix + ".enc")
        pw_file = work / "pw"
        pw_file.write_text(password)
        subprocess.run(["openssl", "enc", "-aes-256-cbc", "-salt", "-pbkdf2", "-in", str(archive), "-out",
                        str(encrypted), "-pass", f"file:{pw_file}"], check=True, capture_output=True)
        pw_file.unlink()
        archive.unlink()
        volumes = [encrypted]
        metadata.update(volumes=[encrypted.name], checksum=f"sha256:{sha256(encrypted)}",
                        archive_size=encrypted.stat().st_size, encrypted=True, encryption_algorithm="AES-256-CBC")
    if split_bytes:
        whole = volumes[0]
        pre_split = sha256(whole)
        subprocess.run(["split", "-b", str(split_bytes), str(whole), f"{whole}.part-"], check=True)
        whole.unlink()
        volumes = sorted(work.glob(f"{whole.name}.part-*"))
        metadata.update(volumes=[v.name for v in volumes], is_split=True)
        if not encrypt:
            metadata.update(checksum=f"sha256:{pre_split}", archive_size=sum(v.stat().st_size for v in volumes))
    metadata_path.write_text(json.dumps(metadata, indent=2))

    # upload_backup: volumes, the meta (named after the first volume), the pointer
    folder = store / prefix if prefix else store
    folder.mkdir(parents=True, exist_ok=True)
    for volume in volumes:
        shutil.copyfile(volume, folder / volume.name)
    base = volumes[0].name.rsplit(".part-", 1)[0] if ".part-" in volumes[0].name else volumes[0].name
    meta = dict(metadata, volumes=[v.name for v in volumes], is_split=bool(split_bytes))
    meta_name = f"{base}.meta.json"
    if meta_version != "2.1":
        meta = {"version": meta_version, "backup_type": meta["backup_type"], "parent": meta["parent"],
                "volumes": meta["volumes"], "created_at_utc": when, "last_backup_time": when,
                "file_count": file_count, **({"encrypted": True} if encrypt else {})}
        meta_name = f"openclaw-backup-{stamp}.meta.json"
    remote_meta = f"{prefix}/{meta_name}" if prefix else meta_name
    (store / remote_meta).write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n")
    pointer = {"dataset": "owner/legacy", "latest": remote_meta, "created_at_utc": when}
    pointer_path.write_text(json.dumps(pointer, ensure_ascii=False, indent=2) + "\n")
    shutil.rmtree(work)
    print(remote_meta)


def settle(epoch: int, paths: list[str]) -> None:
    ns = epoch * 10**9
    for top in paths:
        if not os.path.isdir(top) or os.path.islink(top):
            os.utime(top, ns=(ns, ns), follow_symlinks=False)
            continue
        for current, dirnames, filenames in os.walk(top, topdown=False):
            for name in filenames + dirnames:
                os.utime(os.path.join(current, name), ns=(ns, ns), follow_symlinks=False)
            os.utime(current, ns=(ns, ns), follow_symlinks=False)


def upload(store: str, repo: str) -> None:
    # the legacy script's client, with Xet off: the test Hub has no Xet CAS (docs/hub.md)
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ["HF_ENDPOINT"], token=os.environ.get("HF_TOKEN"))
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=store, repo_id=repo, repo_type="dataset", commit_message="legacy backups")


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[1] == "backup":
        rest = argv[4:]
        split_bytes = int(rest[rest.index("--split") + 1]) if "--split" in rest else None
        version = rest[rest.index("--meta-version") + 1] if "--meta-version" in rest else "2.1"
        backup(Path(argv[2]), argv[3], "--full" in rest, split_bytes, version)
        return 0
    if len(argv) >= 3 and argv[1] == "settle":
        settle(int(argv[2]), argv[3:])
        return 0
    if len(argv) == 4 and argv[1] == "upload":
        upload(argv[2], argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
