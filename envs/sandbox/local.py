"""The local sandbox: bubblewrap namespaces + cgroup limits + rlimits, one throw-away workdir per run.

What a run gets: its own user (uid 65534, no capabilities), PID, network (no interface but a down
loopback), IPC, UTS and mount namespaces; a read-only root holding only /usr and the Python installation
(no /etc, /root, /home or /work of the host); a size-limited tmpfs as its writable workdir (mounted at
/work) and another at /tmp. Limits: a pids cgroup (fork bombs), a memory cgroup plus RLIMIT_AS,
RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE, an output cap and a wall-clock timeout that kills every process
of the run (the cgroup is the list of them). Needs root (to create cgroups and mount the workdir tmpfs)
and bubblewrap; where either is missing ``available()`` says why and runs refuse to start.
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

from envs.sandbox.base import CodeSandbox, ExecResult, ExecStatus, Limits, wait_capped
from harness.errors import HarnessError

CGROUP_ROOT = Path("/sys/fs/cgroup")


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

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
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
        self.kill_all()
        for d in self.dirs:
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.01)


def _read_collected(work: Path, name: str, max_bytes: int) -> bytes | None:
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


def _python_prefixes() -> list[str]:
    """The base interpreter's installation (not the virtualenv: sandboxed code gets the standard library
    only), bound read-only so sandboxed code can run Python."""
    p = os.path.realpath(sys.base_prefix)
    return [] if p.startswith("/usr") else [p]


class LocalSandbox(CodeSandbox):
    """Run commands in fresh bubblewrap sandboxes. One instance can serve many runs, serially or not."""

    def __init__(self, limits: Limits | None = None):
        ok, why = self.available()
        if not ok:
            raise HarnessError(f"local sandbox unavailable: {why}")
        super().__init__(limits)
        self.bwrap = shutil.which("bwrap")
        # the same interpreter version as the harness, standard library only
        self.python = os.path.join(os.path.realpath(sys.base_prefix), "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}")

    @staticmethod
    def available() -> tuple[bool, str]:
        if not sys.platform.startswith("linux"):
            return False, "needs Linux namespaces"
        if not shutil.which("bwrap"):
            return False, "bubblewrap not installed (apt-get install bubblewrap; envs/install-system-deps.sh)"
        if os.geteuid() != 0:
            return False, "needs root to create cgroups (pids, memory) and the size-limited workdir"
        v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
        need = [CGROUP_ROOT] if v2 else [CGROUP_ROOT / "pids", CGROUP_ROOT / "memory"]
        missing = [str(p) for p in need if not p.is_dir()]
        if missing:
            return False, f"cgroup controllers missing: {missing}"
        out = subprocess.run([shutil.which("bwrap"), "--unshare-all", "--unshare-user", "--uid", "65534",
                              "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib",
                              "/lib", "--symlink", "usr/lib64", "/lib64", "/bin/true"], capture_output=True, text=True)
        if out.returncode != 0:
            return False, f"bubblewrap cannot create namespaces here: {out.stderr.strip()[:200]}"
        return True, f"bubblewrap + cgroup {'v2' if v2 else 'v1'} (pids, memory)"

    # -- one run --------------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, files: Mapping[str, bytes | str] | None = None,
            stdin: bytes | None = None, limits: Limits | None = None, env: Mapping[str, str] | None = None,
            collect: Sequence[str] = ()) -> ExecResult:
        """Run ``argv`` inside a fresh sandbox whose /work holds ``files``; ``collect`` names files of
        /work to return in ``detail["files"]`` (read before the workdir is destroyed)."""
        lim = limits or self.limits
        name = f"run-{os.getpid()}-{secrets.token_hex(6)}"
        work = Path(tempfile.mkdtemp(prefix="cycleqd-sbx-"))
        mounted = False
        cg = None
        t0 = time.monotonic()
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={lim.workdir_bytes},mode=0777", "tmpfs", str(work)],
                           check=True, capture_output=True)
            mounted = True
            for rel, data in (files or {}).items():
                p = work / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data.encode() if isinstance(data, str) else data)
                os.chown(p, 65534, 65534)
            cg = Cgroup(name, lim)
            cmd = self._bwrap_args(work) + list(argv)
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=self._preexec(cg, lim),
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8",
                     "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", **(env or {})},
                start_new_session=True)
            result = wait_capped(proc, cg.kill_all, lim, stdin, t0, oom=cg.oom_killed)
            if collect:
                result.detail["files"] = {c: _read_collected(work, c, lim.file_bytes) for c in collect}
            return result
        except (OSError, subprocess.CalledProcessError) as exc:
            return ExecResult(None, b"", str(exc).encode(), ExecStatus.ENV_ERROR, time.monotonic() - t0,
                              {"error": f"sandbox setup failed: {exc}"})
        finally:
            if cg is not None:
                cg.remove()
            if mounted:
                subprocess.run(["umount", "-l", str(work)], capture_output=True)
            shutil.rmtree(work, ignore_errors=True)

    def _bwrap_args(self, work: Path) -> list[str]:
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
                "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
                "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                "--proc", "/proc", "--dev", "/dev", "--size", str(self.limits.workdir_bytes), "--tmpfs", "/tmp",
                "--dir", "/etc", "--bind", str(work), "/work", "--chdir", "/work", "--hostname", "sandbox"]
        for p in _python_prefixes():
            args += ["--ro-bind", p, p]
        return args + ["--remount-ro", "/"]  # the sandbox's own root: nothing writable but /work and /tmp

    @staticmethod
    def _preexec(cg: Cgroup, lim: Limits):
        def fn():
            cg.join_self()
            resource.setrlimit(resource.RLIMIT_AS, (lim.memory_bytes + (256 << 20),) * 2)
            resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_s, lim.cpu_s + 1))
            resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_bytes,) * 2)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim.nofile,) * 2)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        return fn
