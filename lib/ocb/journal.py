"""The restore transaction: every root swapped into place together under a journal, or none.

Owns the journal (WORK/restore-journal.json, written with fsutil's atomic write), the swap of
each root's staging tree with its target, the swap back, and the recovery of a transaction a
dead run left behind. It never extracts or verifies anything (restore.py and extract.py do,
before a transaction may swap) and never deletes a target's content: the old trees are
removed only once the journal says the transaction is committed.

States, each written before the step it names: `staging` (the staging paths exist; nothing of
a target has moved), `swapping` (every root's plan is recorded: the identity of its new tree,
the excluded paths carried over from the old tree, linked into the new one beforehand, for a
mount point its top-level names; renames follow), `rolling-back`, `committed` (every root swapped: only the old trees remain to
be removed). Whether a step happened is read off the file system (an inode, a name that is
there or not), never assumed from the journal, so a run killed between a rename and the next
journal write is undone or finished exactly. Recovery: `committed` is finished; any other
state is rolled back, so every root is wholly old or wholly new.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shutil
import stat
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .errors import RuntimeFailure, StoreLocked
from .fsutil import TMP_MARK, fsync_dir, write_bytes
from .log import log

if TYPE_CHECKING:
    import ctypes

JOURNAL = "restore-journal.json"
JOURNAL_VERSION = 1
STAGING_MARK = ".ocb-staging"
OLD_MARK = ".ocb-old"
# names this module gives staging and old trees: beside a target `.<name>.ocb-staging.<tx>`,
# inside a mount point `.ocb-staging.<tx>`; older versions used `.<name>.ocb-staging`
LEFTOVER = re.compile(r"^\..*\.ocb-(staging|old)(\.[0-9a-f]{8,32})?$")
INSIDE_LEFTOVER = re.compile(r"^\.ocb-(staging|old)\.[0-9a-f]{8,32}$")
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def new_tx() -> str:
    return os.urandom(6).hex()  # secrets.token_hex(6), without importing secrets in every plan


def journal_path(work_dir: str) -> str:
    return os.path.join(work_dir, JOURNAL)


@functools.cache
def _libc() -> "ctypes.CDLL | None":
    """The C library this process runs on (dlopen(NULL): glibc, musl), looked up at the first
    swap: ctypes.util.find_library ran `ldconfig -p` in a subprocess at every import of this
    module, ~7 ms of the start of every stage that imports it (and ctypes itself is imported
    here, not by every plan)."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def exchange(first: str, second: str) -> bool:
    """Atomically swap two paths; False when the kernel, libc or file system cannot (the
    caller then renames twice); any other failure is an OSError."""
    libc = _libc()
    if libc is None or not hasattr(libc, "renameat2"):
        return False
    result = libc.renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE)
    if result == 0:
        return True
    import ctypes

    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), first)


def identity(path: str) -> list[int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino]


def remove_tree(path: str) -> bool:
    """Remove a staging or old tree; False (with a warning naming what is left) when it cannot."""
    failed: list[str] = []

    def note(function, failing, info) -> None:
        del function, info
        failed.append(failing)

    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=note)
        elif os.path.lexists(path):
            os.unlink(path)
    except OSError as exc:
        failed.append(f"{path} ({exc.strerror})")
    if failed:
        log.warning(f"cannot remove {path} entirely (e.g. {failed[0]}): remove it by hand; the next run tries again")
        return False
    return True


def _lexists_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _set_mtime(path: str, ns: int) -> None:
    try:
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    except FileNotFoundError:
        pass


@dataclass
class RootSwap:
    """One root's part of the transaction."""

    name: str
    target: str             # where the tree goes (for a root that is a link: the link's target)
    staging: str            # the new tree while it is built
    inside: bool = False    # staged inside the target (a mount point): its top-level entries move
    old: str = ""           # where the old tree (beside: fallback rename) or its entries (inside) wait
    new_id: list[int] | None = None  # the staging tree's [st_dev, st_ino]: tells swapped from not
    carried: list[str] = field(default_factory=list)  # excluded paths linked into the new tree
    old_mtimes: dict[str, int] = field(default_factory=dict)  # inside: "" -> the target's mtime before
    new_mtimes: dict[str, int] = field(default_factory=dict)  # inside: "" -> the new root's mtime
    old_names: list[str] = field(default_factory=list)       # inside: the old top-level entries
    new_names: list[str] = field(default_factory=list)       # inside: the new top-level entries
    old_root: list[int] | None = None  # inside: the target dir's [mode, uid, gid] before
    new_root: list[int] | None = None  # inside: the new tree's root [mode, uid, gid]

    def prepare(self, carried: list[str]) -> list[str]:
        """Record what the swap will do, before anything of the target moves, and carry the
        excluded paths into the new tree as hard links (directories made anew, links copied):
        the old tree is never changed, so swapping a root stays one rename. Returns the paths
        carried over (those the new tree has no directory for, or holds, are not)."""
        top = self.target
        stay: set[str] = set()
        if self.inside:
            stay = {rel for rel in carried if "/" not in rel}  # top-level: they never move
            carried = [rel for rel in carried if "/" in rel]
        kept: list[str] = []
        touched: dict[str, int] = {}  # staging dirs whose mtime linking changes -> their mtime
        for rel in carried:
            parts = rel.split("/")[:-1]
            prefixes = ["/".join(parts[:n]) for n in range(len(parts) + 1)]
            blocked = os.path.lexists(os.path.join(self.staging, rel))
            for prefix in prefixes:
                here = os.path.join(self.staging, prefix) if prefix else self.staging
                if os.path.lexists(here) and not _lexists_dir(here):
                    blocked = True
            if blocked:
                log.warning(f"{self.name}/{rel} was left out of the snapshot but the restored tree has no "
                            "directory for it, or holds it: not carried over")
                continue
            for prefix in prefixes:
                here = os.path.join(self.staging, prefix) if prefix else self.staging
                if _lexists_dir(here):
                    touched.setdefault(prefix, os.lstat(here).st_mtime_ns)
                else:  # a directory the snapshot lacks: made as the old tree has it
                    old = os.lstat(os.path.join(top, prefix))
                    os.mkdir(here, 0o700)
                    _copy_meta(here, old)
                    touched[prefix] = old.st_mtime_ns
            _link_copy(os.path.join(top, rel), os.path.join(self.staging, rel))
            kept.append(rel)
        for prefix, ns in sorted(touched.items(), key=lambda item: -item[0].count("/")):
            _set_mtime(os.path.join(self.staging, prefix) if prefix else self.staging, ns)
        self.carried = kept
        self.new_id = identity(self.staging)
        if self.inside:
            self.old_names = sorted(n for n in os.listdir(top) if not INSIDE_LEFTOVER.match(n) and n not in stay)
            self.new_names = sorted(os.listdir(self.staging))
            old_st, new_st = os.lstat(top), os.lstat(self.staging)
            self.old_root = [stat.S_IMODE(old_st.st_mode), old_st.st_uid, old_st.st_gid]
            if self.new_root is None:
                self.new_root = [stat.S_IMODE(new_st.st_mode), new_st.st_uid, new_st.st_gid]
            self.old_mtimes.setdefault("", old_st.st_mtime_ns)  # recorded before staging began
            self.new_mtimes[""] = new_st.st_mtime_ns
            os.makedirs(self.old, 0o700, exist_ok=True)
            return kept + sorted(stay)
        return kept

    def swap(self) -> None:
        if self.inside:
            self._swap_inside()
        else:
            self._swap_beside()
        fsync_dir(os.path.dirname(self.target))

    def _swap_beside(self) -> None:
        if not os.path.lexists(self.target):
            os.rename(self.staging, self.target)
        elif not exchange(self.staging, self.target):
            os.rename(self.target, self.old)
            os.rename(self.staging, self.target)
        if self.new_root is not None and _lexists_dir(self.target):
            os.chmod(self.target, self.new_root[0])  # staging was kept 0700 until now

    def _swap_inside(self) -> None:
        for name in self.old_names:
            if os.path.lexists(os.path.join(self.target, name)):
                os.rename(os.path.join(self.target, name), os.path.join(self.old, name))
        for name in self.new_names:
            os.rename(os.path.join(self.staging, name), os.path.join(self.target, name))
        _set_dir_meta(self.target, self.new_root, self.new_mtimes.get(""))

    def undo(self) -> None:
        """Put the old tree back, whatever part of the swap happened; idempotent."""
        if self.new_id is None:
            return  # never got as far as swapping
        if self.inside:
            for name in self.new_names:
                here, there = os.path.join(self.target, name), os.path.join(self.staging, name)
                if os.path.lexists(here) and not os.path.lexists(there):
                    os.rename(here, there)
            for name in self.old_names:
                here, there = os.path.join(self.target, name), os.path.join(self.old, name)
                if os.path.lexists(there) and not os.path.lexists(here):
                    os.rename(there, here)
        elif identity(self.target) == self.new_id:
            if os.path.lexists(self.staging):
                if not exchange(self.target, self.staging):
                    raise RuntimeFailure(f"cannot swap {self.target} back: the file system lost RENAME_EXCHANGE")
            else:
                os.rename(self.target, self.staging)
            if _lexists_dir(self.staging):
                os.chmod(self.staging, 0o700)  # the new tree, private again until it is removed
        if not self.inside and not os.path.lexists(self.target) and self.old and os.path.lexists(self.old):
            os.rename(self.old, self.target)
        if self.inside and os.path.isdir(self.target):
            _set_dir_meta(self.target, self.old_root, self.old_mtimes.get(""))
        fsync_dir(os.path.dirname(self.target))

    def leftovers(self) -> list[str]:
        return [p for p in (self.staging, self.old) if p]

    def finish(self) -> None:
        """After the commit: remove the old tree (and, inside, the emptied staging dir)."""
        for path in self.leftovers():
            remove_tree(path)
        if self.inside and "" in self.new_mtimes:
            _set_mtime(self.target, self.new_mtimes[""])


def _copy_meta(path: str, st: os.stat_result) -> None:
    if os.geteuid() == 0:
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _link_copy(source: str, dest: str) -> None:
    """`source`'s tree at `dest` (same file system): files hard-linked, so nothing is copied
    and the old tree is untouched; a file that cannot be linked (not ours, a sub-mount) is
    copied."""
    st = os.lstat(source)
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(dest, 0o700)
        with os.scandir(source) as listing:
            for child in listing:
                _link_copy(child.path, os.path.join(dest, child.name))
        _copy_meta(dest, st)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), dest)
        _copy_meta(dest, st)
    else:
        try:
            os.link(source, dest, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.EACCES) or not stat.S_ISREG(st.st_mode):
                raise
            shutil.copy2(source, dest, follow_symlinks=False)
            _copy_meta(dest, st)


def _set_dir_meta(path: str, meta: list[int] | None, mtime_ns: int | None) -> None:
    if meta is not None:
        mode, uid, gid = meta
        if os.geteuid() == 0:
            os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)
    if mtime_ns is not None:
        _set_mtime(path, mtime_ns)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


@dataclass
class Transaction:
    path: str
    tx: str
    snapshot: str
    roots: list[RootSwap]
    state: str = "staging"
    pid: int = 0
    pid_start: str | None = None

    def save(self) -> None:
        record = {"ocb_journal": JOURNAL_VERSION, "tx": self.tx, "snapshot": self.snapshot, "state": self.state,
                  "pid": self.pid, "pid_start": self.pid_start, "roots": [asdict(r) for r in self.roots]}
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        write_bytes(self.path, json.dumps(record, indent=1).encode("utf-8"))

    @classmethod
    def begin(cls, work_dir: str, tx: str, snapshot: str, roots: list[RootSwap]) -> Transaction:
        pid = os.getpid()
        txn = cls(journal_path(work_dir), tx, snapshot, roots, "staging", pid, _start_time(pid))
        txn.save()
        return txn

    @classmethod
    def load(cls, path: str) -> Transaction | None:
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
            roots = [RootSwap(**r) for r in record["roots"]]
            return cls(path, record["tx"], record["snapshot"], roots, record["state"], int(record.get("pid") or 0),
                       record.get("pid_start"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeFailure(f"the restore journal {path} is unreadable ({exc}): look at its roots by hand, "
                                 "then remove it") from None

    def owner_alive(self) -> bool:
        return bool(self.pid) and self.pid != os.getpid() and _start_time(self.pid) == self.pid_start

    def swap(self) -> None:
        """Swap every root; on any failure swap back those done and raise: all or nothing."""
        self.state = "swapping"
        self.save()
        for root in self.roots:
            try:
                root.swap()
            except OSError as exc:
                where = exc.filename or root.target
                self.rollback()
                raise RuntimeFailure(f"cannot move the restored {root.name} into {root.target} ({where}: "
                                     f"{exc.strerror}); every root was put back as it was") from None
        self.state = "committed"
        self.save()

    def rollback(self) -> None:
        self.state = "rolling-back"
        self.save()
        for root in reversed(self.roots):
            root.undo()
        self.discard()

    def discard(self) -> None:
        """Remove the staging trees and the journal (nothing was swapped, or all swapped back)."""
        for root in self.roots:
            for path in root.leftovers():
                remove_tree(path)
            if root.inside and "" in root.old_mtimes:
                _set_mtime(root.target, root.old_mtimes[""])  # staging inside it touched it
        self.end()

    def finish(self) -> None:
        for root in self.roots:
            root.finish()
        self.end()

    def end(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        fsync_dir(os.path.dirname(self.path))


def recover(work_dir: str, targets: list[str] = ()) -> str | None:  # type: ignore[assignment]
    """Finish or roll back the transaction a dead restore left in `work_dir`, saying which on
    stderr; then remove staging leftovers beside (or inside) `targets`. Returns "completed",
    "rolled back" or None (nothing found). A transaction whose process still runs: exit 11."""
    path = journal_path(work_dir)
    txn = Transaction.load(path)
    outcome = None
    if txn is not None:
        if txn.owner_alive():
            raise StoreLocked(f"a restore (pid {txn.pid}) is swapping its roots into place ({path}): try again when it ends")
        names = ", ".join(r.name for r in txn.roots)
        if txn.state == "committed":
            txn.finish()
            outcome = "completed"
            log.warning(f"an earlier restore of {txn.snapshot} was killed after every root was swapped: completed it "
                        f"(old trees removed); {names} hold the snapshot")
        else:
            was = txn.state
            txn.rollback()
            outcome = "rolled back"
            log.warning(f"an earlier restore of {txn.snapshot} was killed while {was}: rolled back; {names} "
                        "are as they were before it")
    for name in os.listdir(work_dir) if os.path.isdir(work_dir) else []:
        if name.startswith(TMP_MARK) and name.endswith(f"-{JOURNAL}"):  # a journal write cut short
            os.unlink(os.path.join(work_dir, name))
    for target in targets:
        sweep(target)
    return outcome


def sweep(target: str) -> None:
    """Remove staging and old trees that dead runs left beside or inside `target`."""
    head, tail = os.path.split(target)
    try:
        beside = [n for n in os.listdir(head) if n.startswith(f".{tail}.ocb-") and LEFTOVER.match(n)]
    except OSError:
        beside = []
    try:
        inside = [n for n in os.listdir(target) if INSIDE_LEFTOVER.match(n)] if _lexists_dir(target) else []
    except OSError:
        inside = []
    for path in [os.path.join(head, n) for n in beside] + [os.path.join(target, n) for n in inside]:
        log.info(f"removing {path}, left by a restore that did not finish")
        remove_tree(path)
