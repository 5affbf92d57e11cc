"""Host-side primitives of the local sandboxes, run as root: per-run cgroups, size-limited tmpfs mounts,
private binds, dropping to the sandbox uid, and reading back what a run left (as hostile input).

Shared by the one-shot bubblewrap sandbox (``envs.sandbox.local``), its sessions
(``envs.sandbox.local_session``) and the OS episode shell (``envs.sandbox.rootfs_shell``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Sequence

from envs.sandbox.base import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")
SANDBOX_UID = 65534


class Cgroup:
    """A per-run cgroup (v1: pids + memory hierarchies; v2: one directory) that lists and kills the run."""

    def __init__(self, name: str, limits: Limits):
        self.v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
        if self.v2:
            self.dirs = [CGROUP_ROOT / "cycleqd" / name]
            parent = CGROUP_ROOT / "cycleqd"
            parent.mkdir(exist_ok=True)
            try:
                (parent / "cgroup.subtree_control").write_text("+pids +memory")
            except OSError:
                pass
            self.dirs[0].mkdir()
            (self.dirs[0] / "pids.max").write_text(str(limits.pids))
            (self.dirs[0] / "memory.max").write_text(str(limits.memory_bytes))
            (self.dirs[0] / "memory.swap.max").write_text("0") if (self.dirs[0] / "memory.swap.max").exists() else None
        else:
            pids = CGROUP_ROOT / "pids" / "cycleqd" / name
            mem = CGROUP_ROOT / "memory" / "cycleqd" / name
            pids.mkdir(parents=True)
            mem.mkdir(parents=True)
            self.dirs = [pids, mem]
            (pids / "pids.max").write_text(str(limits.pids))
            (mem / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            try:
                (mem / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
            except OSError:
                pass

    def join_self(self) -> None:
        """Called in the child between fork and exec: everything it starts is in the cgroup."""
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as fh:
                fh.write("0")

    def _tree(self) -> list[Path]:
        """The run's cgroups and any it made below them (deepest first: the order ``rmdir`` needs)."""
        out: list[Path] = []
        for d in self.dirs:
            for root, subdirs, _ in os.walk(d, topdown=False, followlinks=False):
                out += [Path(root) / s for s in subdirs]
            out.append(d)
        return out

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self._tree():
            try:
                out |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return out

    def oom_killed(self) -> bool:
        if self.v2:
            try:
                ev = (self.dirs[0] / "memory.events").read_text()
                return any(line.split()[0] == "oom_kill" and int(line.split()[1]) > 0 for line in ev.splitlines())
            except OSError:
                return False
        try:
            ctl = (self.dirs[1] / "memory.oom_control").read_text()
            if any(line.startswith("oom_kill ") and int(line.split()[1]) > 0 for line in ctl.splitlines()):
                return True
            return int((self.dirs[1] / "memory.failcnt").read_text()) > 0 and "under_oom 1" in ctl
        except OSError:
            return False

    def kill_all(self) -> None:
        for _ in range(50):
            live = self.pids()
            if not live:
                return
            for pid in live:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill the run and remove its cgroups, child cgroups included (none must outlive the run)."""
        self.kill_all()
        for d in self._tree():
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def read_collected(work: Path, name: str, max_bytes: int) -> bytes | None:
    """A regular file the run left in its workdir, or None: missing, a link (a hostile run may point
    ``results.jsonl`` at a host file; the harness reads as root), not a regular file, or too big."""
    path = work / name
    root, parent = os.path.realpath(work), os.path.realpath(path.parent)
    if parent != root and not parent.startswith(root + os.sep):  # a linked directory on the way
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(max_bytes + 1)
    finally:
        os.close(fd)


def python_prefixes() -> list[str]:
    """The base interpreter's installation (not the virtualenv: sandboxed code gets the standard library
    only), bound read-only so sandboxed code can run Python."""
    p = os.path.realpath(sys.base_prefix)
    return [] if p.startswith("/usr") else [p]


LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 0x20000, 0x1000, 0x4000, 0x40000, 2


def mount_tmpfs(path: Path, size_bytes: int) -> None:
    """The run's size-limited tmpfs, by the mount syscall (the ``mount`` binary cost a process start per
    judgement); unmounted lazily (``umount2(MNT_DETACH)``, as ``umount -l``) when the run ends."""
    opts = f"size={int(size_bytes)},mode=0755".encode()
    if LIBC.mount(b"tmpfs", str(path).encode(), b"tmpfs", 0, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"sandbox: mounting the workdir tmpfs on {path}: {os.strerror(err)}")


def bind_privately(binds: Sequence[tuple[bytes, bytes]]) -> None:
    """Between fork and exec, as root: in a mount namespace of this process alone (no mount is ever
    seen on, or left behind on, the host), bind each Python installation (source) to ``base/py<i>``
    (target), a path uid 65534 can walk (the installation may sit under /root, mode 0700); bubblewrap
    binds it back where it was."""
    if not binds:
        return
    if LIBC.unshare(CLONE_NEWNS) != 0 or LIBC.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "sandbox: private mount namespace")
    for src, dst in binds:
        if LIBC.mount(src, dst, None, MS_BIND | MS_REC, None) != 0:
            raise OSError(ctypes.get_errno(), f"sandbox: binding {src!r}")


def drop_to_sandbox_uid() -> None:
    """Between fork and exec, after joining the cgroup and setting the rlimits (as root): become uid
    65534 for good, so bubblewrap and everything it starts run as the host's nobody."""
    os.setgroups([])
    os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
