"""The local sandbox: bubblewrap namespaces + cgroup limits + rlimits, one throw-away workdir per run.

What a run gets: its own user (uid 65534, no capabilities), PID, network (no interface but a down
loopback), IPC, UTS and mount namespaces; a read-only root holding only /usr and the Python installation
(no /etc, /root, /home or /work of the host); a size-limited tmpfs as its writable workdir (mounted at
/work) and another at /tmp. Limits: a pids cgroup (fork bombs), a memory cgroup plus RLIMIT_AS,
RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE, an output cap and a wall-clock timeout that kills every process
of the run (the cgroup is the list of them). Needs root (to create cgroups and mount the workdir tmpfs)
and bubblewrap; where either is missing ``available()`` says why and runs refuse to start.

The limits are applied from outside and cannot be lifted from inside: the harness joins the run to its
cgroup and sets the rlimits as root, then drops to uid 65534 *before* starting bubblewrap, so the
sandboxed uid is the host's 65534 too (bubblewrap started as root maps it to the host's root, whose uid
owns every cgroup and /proc/sys file: a completion could then write ``max`` to its own ``pids.max`` or
change host sysctls). ``--disable-userns`` forbids new user namespaces inside (in one, a process gets
every capability back over new mount and cgroup namespaces and can mount the cgroup hierarchies); there
is no /sys (no cgroupfs) and /proc is read-only (/proc/sys included). Where unprivileged user namespaces
are off, bubblewrap starts as root, as it used to, and these last three keep the limits.
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

from envs.sandbox.base import CodeSandbox, ExecResult, ExecStatus, Limits, wait_capped
from envs.sandbox.host import (
    CGROUP_ROOT,
    LIBC,
    MNT_DETACH,
    SANDBOX_UID,
    Cgroup,
    bind_privately,
    drop_to_sandbox_uid,
    mount_tmpfs,
    python_prefixes,
    read_collected,
)
from envs.sandbox.local_session import LocalSession
from harness.errors import HarnessError


class LocalSandbox(CodeSandbox):
    """Run commands in fresh bubblewrap sandboxes. One instance can serve many runs, serially or not."""

    def __init__(self, limits: Limits | None = None):
        ok, why = self.available()
        if not ok:
            raise HarnessError(f"local sandbox unavailable: {why}")
        super().__init__(limits)
        self.bwrap = shutil.which("bwrap")
        self.no_userns = _supports(self.bwrap, "--disable-userns")
        self.as_nobody = bool(_bwrap_mode()[0])
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
        as_nobody, err = _bwrap_mode()
        if as_nobody is None:
            return False, f"bubblewrap cannot create namespaces here: {err}"
        who = f"as uid {SANDBOX_UID}" if as_nobody else f"as root (uid {SANDBOX_UID} cannot: {err})"
        how = ("new user namespaces disabled" if _supports(shutil.which("bwrap"), "--disable-userns")
               else "bubblewrap < 0.8: new user namespaces allowed")
        return True, f"bubblewrap {who}, {how} + cgroup {'v2' if v2 else 'v1'} (pids, memory)"

    # -- one run --------------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, files: Mapping[str, bytes | str] | None = None,
            stdin: bytes | None = None, limits: Limits | None = None, env: Mapping[str, str] | None = None,
            collect: Sequence[str] = ()) -> ExecResult:
        """Run ``argv`` inside a fresh sandbox whose /work holds ``files``; ``collect`` names files of
        /work to return in ``detail["files"]`` (read before the workdir is destroyed)."""
        lim = limits or self.limits
        name = f"run-{os.getpid()}-{secrets.token_hex(6)}"
        base = Path(tempfile.mkdtemp(prefix="cycleqd-sbx-"))
        work = base / "work"
        mounted = False
        cg = None
        t0 = time.monotonic()
        try:
            mount_tmpfs(base, lim.workdir_bytes)
            mounted = True
            work.mkdir()
            work.chmod(0o777)
            for rel, data in (files or {}).items():
                p = work / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data.encode() if isinstance(data, str) else data)
                for q in (Path(rel), *Path(rel).parents[:-1]):  # the file and the directories made for it
                    os.chown(work / q, SANDBOX_UID, SANDBOX_UID)
            prefixes = python_prefixes()
            for i in range(len(prefixes)):
                (base / f"py{i}").mkdir()
            cg = Cgroup(name, lim)
            proc = subprocess.Popen(
                self._bwrap_args(base, prefixes) + list(argv),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                preexec_fn=self._preexec(cg, lim, base, prefixes, self.as_nobody),
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8",
                     "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", **(env or {})},
                start_new_session=True)
            result = wait_capped(proc, cg.kill_all, lim, stdin, t0, oom=cg.oom_killed)
            if collect:
                result.detail["files"] = {c: read_collected(work, c, lim.file_bytes) for c in collect}
            return result
        except (OSError, subprocess.CalledProcessError) as exc:
            return ExecResult(None, b"", str(exc).encode(), ExecStatus.ENV_ERROR, time.monotonic() - t0,
                              {"error": f"sandbox setup failed: {exc}"})
        finally:
            if cg is not None:
                cg.remove()
            if mounted:
                LIBC.umount2(str(base).encode(), MNT_DETACH)
            shutil.rmtree(base, ignore_errors=True)

    def session(self, limits: Limits | None = None):
        """One sandbox for many runs, each a fresh process (``envs.sandbox.local_session``)."""
        return LocalSession(self, limits or self.limits)

    def _bwrap_args(self, base: Path, prefixes: Sequence[str] = (), shared: bool = False) -> list[str]:
        """``shared``: for a session's sandbox, where runs follow each other: /tmp and /dev/shm are
        directories of ``base`` (the harness wipes them from outside between runs), /dev/mqueue is
        mounted (the server empties it) and /dev itself is read-only (a run could replace /dev/null)."""
        userns = ["--disable-userns"] if self.no_userns else []
        tmp = (["--bind", str(base / "tmp"), "/tmp"] if shared
               else ["--size", str(self.limits.workdir_bytes), "--tmpfs", "/tmp"])
        args = [self.bwrap, "--unshare-all", "--unshare-user", *userns, "--uid", "65534", "--gid", "65534",
                "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
                "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                "--proc", "/proc", "--dev", "/dev", *tmp,
                "--dir", "/etc", "--bind", str(base / "work"), "/work", "--chdir", "/work", "--hostname", "sandbox"]
        if shared:
            args += ["--bind", str(base / "shm"), "/dev/shm", "--mqueue", "/dev/mqueue", "--remount-ro", "/dev"]
        for i, p in enumerate(prefixes):
            args += ["--ro-bind", str(base / f"py{i}"), p]
        # the sandbox's own root: nothing writable but /work and /tmp; /proc read-only (/proc/sys with it)
        return args + ["--remount-ro", "/proc", "--remount-ro", "/"]

    @staticmethod
    def _preexec(cg: Cgroup, lim: Limits, base: Path, prefixes: Sequence[str], as_nobody: bool = True):
        binds = [(p.encode(), str(base / f"py{i}").encode()) for i, p in enumerate(prefixes)]  # made here, not in the child

        def fn():
            cg.join_self()
            bind_privately(binds)
            resource.setrlimit(resource.RLIMIT_AS, (lim.memory_bytes + (256 << 20),) * 2)
            resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_s, lim.cpu_s + 1))
            resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_bytes,) * 2)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim.nofile,) * 2)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if as_nobody:
                drop_to_sandbox_uid()

        return fn


_MODE: list[tuple[bool | None, str]] = []


def _bwrap_mode() -> tuple[bool | None, str]:
    """(True, ""): bubblewrap works started as uid 65534 (unprivileged user namespaces allowed); (False,
    why): only as root (its sandbox uid is then the host's root, without capabilities, user namespaces,
    /sys or a writable /proc); (None, why): not at all. Probed once per process."""
    if not _MODE:
        bwrap = shutil.which("bwrap")
        argv = [bwrap, "--unshare-all", "--unshare-user", *(["--disable-userns"] if _supports(bwrap, "--disable-userns")
                                                              else []),
                "--uid", "65534", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib",
                "/lib", "--symlink", "usr/lib64", "/lib64", "/bin/true"]
        nobody = subprocess.run(argv, capture_output=True, text=True, preexec_fn=drop_to_sandbox_uid)
        if nobody.returncode == 0:
            _MODE.append((True, ""))
        else:
            why = nobody.stderr.strip()[:200]
            root = subprocess.run(argv, capture_output=True, text=True)
            _MODE.append((False, why) if root.returncode == 0 else (None, root.stderr.strip()[:200]))
    return _MODE[0]


_SUPPORTS: dict[tuple[str, str], bool] = {}


def _supports(bwrap: str | None, option: str) -> bool:
    """Whether this bubblewrap knows ``option`` (``--disable-userns`` came with 0.8)."""
    if not bwrap:
        return False
    key = (bwrap, option)
    if key not in _SUPPORTS:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True)
        _SUPPORTS[key] = option in out.stdout + out.stderr
    return _SUPPORTS[key]
