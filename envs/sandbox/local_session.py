"""One bubblewrap sandbox for many runs: the coding judge's runs of one evaluation, one at a time.

Why: a one-shot local run (``LocalSandbox.run``) mounts a tmpfs, makes two cgroups and starts bubblewrap,
about 30 ms, twice the judged program's own interpreter start; the coding judge paid it for each part
(base, plus) of every completion. A session pays it once; each run is still a fresh process (fork +
exec of the same command line) under its own rlimits, started by ``envs/sandbox/job_server.py`` inside.

What the runs of a session share, and how nothing crosses from one to the next:
- processes: after each run the server kills every process but itself and init (``kill(-1)``), waits
  until /proc lists none, and the harness checks the session's cgroup holds no more than at the start;
- files: each run gets its own ``/work/<random name>`` (``/work`` itself is root's and read-only to the
  runs); /tmp and /dev/shm are directories of the session's tmpfs that the harness empties from outside,
  as root, after each run; /dev is read-only (a run could otherwise replace /dev/null);
- IPC: the sandbox has its own IPC namespace; the server removes System V objects and POSIX queues;
- limits: the pids and memory cgroup and the workdir tmpfs are the session's, which holds one run at a
  time; CPU, address space, file size, descriptors and the wall clock are set per run, as before.

Anything unexpected (the server dies, for instance killed by the run it serves, stops answering, writes a
malformed reply, or cannot clean up) ends the session; that run is made again in a one-shot sandbox,
whose verdict stands, and the next run starts a new session. Runs whose memory, pids or workdir exceed
the session's go to a one-shot sandbox too.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import secrets
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

from envs.sandbox.base import ExecResult, Limits, SandboxSession, classify
from envs.sandbox.host import (
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

SERVER = Path(__file__).with_name("job_server.py")
SERVER_MEMORY = 64 << 20  # the server's share of the session's memory cgroup, above a run's own limit
REPLY_BYTES = 8 << 20  # the largest reply line read (two 1 MiB outputs in base64 fit many times over)
START_S = 10.0  # the server must say it is ready within this
SLACK_S = 5.0  # a reply may come this long after the run's own wall clock before the session is given up


class SessionBroken(Exception):
    """The session cannot serve this run; the caller makes it in a one-shot sandbox."""


class LocalSession(SandboxSession):
    """``run`` as ``LocalSandbox.run``, sharing one sandbox between runs (not between threads)."""

    def __init__(self, sandbox, limits: Limits):
        super().__init__(sandbox)
        self.limits = limits
        self.proc: subprocess.Popen | None = None
        self.base: Path | None = None
        self.cg: Cgroup | None = None
        self.started = 0  # sandboxes this session started (1 unless one broke)
        self.fallbacks = 0  # runs made again in a one-shot sandbox

    # -- the shared sandbox ------------------------------------------------------------------------------
    def _start(self) -> None:
        lim = self.limits
        base = Path(tempfile.mkdtemp(prefix="cycleqd-ses-"))
        self.base = base
        mount_tmpfs(base, lim.workdir_bytes)
        self._mounted = True
        (base / "work").mkdir(mode=0o755)  # root's: a run writes only in its own directory below
        for d in ("tmp", "shm"):
            (base / d).mkdir()
            os.chown(base / d, SANDBOX_UID, SANDBOX_UID)
            (base / d).chmod(0o1777)
        shutil.copyfile(SERVER, base / "work" / "job_server.py")
        prefixes = python_prefixes()
        for i in range(len(prefixes)):
            (base / f"py{i}").mkdir()
        self.cg = Cgroup(f"ses-{os.getpid()}-{secrets.token_hex(6)}",
                         Limits(**{**lim.__dict__, "memory_bytes": lim.memory_bytes + SERVER_MEMORY,
                                   "pids": lim.pids + 1}))  # + the server: a run gets what a one-shot run gets
        binds = [(p.encode(), str(base / f"py{i}").encode()) for i, p in enumerate(prefixes)]
        cg, as_nobody = self.cg, self.sandbox.as_nobody

        def preexec():
            cg.join_self()
            bind_privately(binds)
            # the hard limits a run's own may not exceed; the server's CPU time is not limited
            resource.setrlimit(resource.RLIMIT_AS, (lim.memory_bytes + (256 << 20),) * 2)
            resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_bytes,) * 2)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim.nofile,) * 2)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if as_nobody:
                drop_to_sandbox_uid()

        self.proc = subprocess.Popen(
            self.sandbox._bwrap_args(base, prefixes, shared=True)
            + [self.sandbox.python, "-s", "-S", "/work/job_server.py"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=preexec,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
            start_new_session=True)
        self.started += 1
        hello = self._reply(START_S)
        if not isinstance(hello.get("ready"), int):
            raise SessionBroken("the job server did not start")
        self.idle_pids = len(self.cg.pids())  # bubblewrap, its init and the server
        self.oom_seen = self._oom_kills()

    def _oom_kills(self) -> int:
        """The session cgroup's OOM kills so far (a run that raised it was killed by the memory limit)."""
        try:
            if self.cg.v2:
                text = (self.cg.dirs[0] / "memory.events").read_text()
            else:
                text = (self.cg.dirs[1] / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "oom_kill":
                return int(parts[1])
        return 0

    def _reply(self, timeout: float) -> dict:
        """One reply line of the server, read as hostile: bounded in time and size, a JSON object."""
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise SessionBroken("the job server did not answer in time")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise SessionBroken("the job server ended")
            buf += chunk
            if len(buf) > REPLY_BYTES:
                raise SessionBroken("the job server's reply is too long")
        try:
            reply = json.loads(bytes(buf))
        except ValueError:
            raise SessionBroken("the job server's reply is not JSON") from None
        if not isinstance(reply, dict):
            raise SessionBroken("the job server's reply is not an object")
        return reply

    def _wipe(self, job: Path) -> None:
        """Empty what runs can write, from outside and as root (links are removed, never followed)."""
        shutil.rmtree(job, ignore_errors=True)
        for d in (self.base / "tmp", self.base / "shm"):
            for entry in os.scandir(d):
                p = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
            if any(os.scandir(d)):
                raise SessionBroken(f"could not empty {d.name}")

    # -- one run -------------------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, files: Mapping[str, bytes | str] | None = None,
            stdin: bytes | None = None, limits: Limits | None = None, env: Mapping[str, str] | None = None,
            collect: Sequence[str] = ()) -> ExecResult:
        lim = limits or self.limits
        fits = (stdin is None and lim.memory_bytes <= self.limits.memory_bytes and lim.pids <= self.limits.pids
                and lim.workdir_bytes <= self.limits.workdir_bytes and lim.file_bytes <= self.limits.file_bytes
                and lim.nofile <= self.limits.nofile)
        if fits:
            try:
                if self.proc is None:
                    self._start()
                return self._run(argv, files or {}, lim, env or {}, collect)
            except (SessionBroken, OSError, subprocess.SubprocessError):
                self.close()
                self.fallbacks += 1
        return self.sandbox.run(argv, files=files, stdin=stdin, limits=lim, env=env, collect=collect)

    def _run(self, argv, files, lim: Limits, env, collect) -> ExecResult:
        name = secrets.token_hex(8)
        job = self.base / "work" / name
        job.mkdir(mode=0o700)
        os.chown(job, SANDBOX_UID, SANDBOX_UID)
        for rel, data in files.items():
            p = job / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data.encode() if isinstance(data, str) else data)
            for q in (Path(rel), *Path(rel).parents[:-1]):
                os.chown(job / q, SANDBOX_UID, SANDBOX_UID)
        home = f"/work/{name}"
        req = {"dir": name, "argv": list(argv), "wall": lim.wall_s, "cpu": lim.cpu_s, "fsize": lim.file_bytes,
               "nofile": lim.nofile, "as": lim.memory_bytes + (256 << 20), "out": lim.output_bytes,
               "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
                       "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", **env}}
        t0 = time.monotonic()
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
            reply = self._reply(lim.wall_s + SLACK_S)
            try:
                rc, out, err = reply["rc"], base64.b64decode(reply["out"]), base64.b64decode(reply["err"])
                flags = [reply[k] for k in ("timed_out", "over", "clean")]
            except (KeyError, TypeError, ValueError):
                raise SessionBroken("the job server's reply breaks the protocol") from None
            if not (rc is None or type(rc) is int) or not all(type(f) is bool for f in flags) \
                    or len(out) + len(err) > lim.output_bytes:
                raise SessionBroken("the job server's reply breaks the protocol")
            kills = self._oom_kills()
            oom, self.oom_seen = kills > self.oom_seen, kills
            result = classify(rc, out, err, over=flags[1], timed_out=flags[0], oom=oom, t0=t0)
            if collect:
                result.detail["files"] = {c: read_collected(job, c, lim.file_bytes) for c in collect}
            if not flags[2] or len(self.cg.pids()) > self.idle_pids:
                self.close()  # the run is judged; the next one gets a new sandbox
            return result
        finally:
            if self.base is not None:
                self._wipe(job)

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.cg.kill_all()
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
        if self.cg is not None:
            self.cg.remove()
            self.cg = None
        if self.base is not None:
            if getattr(self, "_mounted", False):
                LIBC.umount2(str(self.base).encode(), MNT_DETACH)
                self._mounted = False
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
