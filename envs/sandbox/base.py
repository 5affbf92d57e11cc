"""What every sandbox promises: run a command under limits, say how it ended, never trust it.

Two kinds of sandbox, each an abstract base that the registries of ``harness.registry`` check:

- ``CodeSandbox``: one-shot runs of a program (``run(argv, files=..., stdin=..., limits=..., env=...,
  collect=...) -> ExecResult``), each in a fresh, throw-away environment; ``python`` names the interpreter
  inside. Built as ``cls(limits=..., **backend_params)``. Registered in ``CODE_SANDBOXES``
  (``bubblewrap``/``local``: ``envs.sandbox.local.LocalSandbox``; ``docker``:
  ``envs.sandbox.docker.DockerSandbox``).
- ``EpisodeShell``: the persistent interactive root shell of one multi-turn OS episode (``run`` a command
  in it, ``exec`` an independent process in the same system, ``close`` destroys everything). Built as
  ``cls(rootfs, limits=..., **backend_params)``; ``exec_isolated`` and ``seal`` keep the judge out of the
  agent's reach. Registered in ``EPISODE_SHELLS`` (``rootfs``/``local``:
  ``envs.sandbox.rootfs_shell.RootfsShell``; ``docker``: ``envs.sandbox.docker.DockerShell``); the
  sentinel protocol they share is ``envs.sandbox.shell.InteractiveShell``.
"""

from __future__ import annotations

import enum
import os
import select
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

TRUNCATION_MARKER = b"\n[output truncated by the sandbox]"


class ExecStatus(str, enum.Enum):
    OK = "ok"  # exited on its own (any exit code)
    TIMEOUT = "timeout"  # wall clock or CPU time ran out
    MEMORY = "memory"  # killed by the memory limit
    OUTPUT_LIMIT = "output_limit"  # wrote more than the output cap
    ENV_ERROR = "env_error"  # the sandbox itself failed: a harness problem


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30
    pids: int = 64
    file_bytes: int = 64 << 20  # largest file a process may write
    workdir_bytes: int = 128 << 20  # total size of the writable workdir (tmpfs)
    nofile: int = 256
    output_bytes: int = 1 << 20  # stdout + stderr kept; more kills the run


# what an OS episode gets unless told otherwise (nofile as Docker's default, 1048576: AgentBench scripts
# such as ``echo 123321>/var/x`` open high-numbered descriptors)
EPISODE_LIMITS = Limits(wall_s=10, cpu_s=60, memory_bytes=1 << 30, pids=512, output_bytes=1 << 20,
                        workdir_bytes=512 << 20, file_bytes=256 << 20, nofile=1 << 20)


@dataclass
class ExecResult:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    status: ExecStatus
    wall_s: float
    detail: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == ExecStatus.OK and self.returncode == 0


@dataclass
class ShellOutput:
    output: str
    exit_code: int | None
    status: ExecStatus
    truncated: bool = False


# -- the interfaces -----------------------------------------------------------------------------------
class CodeSandbox(ABC):
    """Runs programs in fresh sandboxes; one instance serves many runs, serially or from several threads.

    Subclasses take ``limits`` (the default limits of a run) and their own keyword parameters (a task's
    ``backend_params``), and set ``python``: the interpreter inside (the standard library only)."""

    python: str = "python3"
    limits: Limits

    def __init__(self, limits: Limits | None = None, **backend_params: Any):
        if backend_params:
            raise TypeError(f"{type(self).__name__}: unknown parameters {sorted(backend_params)}")
        self.limits = limits or Limits()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether this kind can run here, and why not (``cycleqd doctor``)."""
        return True, ""

    @abstractmethod
    def run(self, argv: Sequence[str], *, files: Mapping[str, bytes | str] | None = None,
            stdin: bytes | None = None, limits: Limits | None = None, env: Mapping[str, str] | None = None,
            collect: Sequence[str] = ()) -> ExecResult:
        """Run ``argv`` in a fresh sandbox whose working directory holds ``files``; ``collect`` names files
        of the working directory to return in ``detail["files"]`` (bytes, or None when absent)."""

    def session(self, limits: Limits | None = None) -> "SandboxSession":
        """Something with this sandbox's ``run`` that many runs, one at a time, may share (a backend whose
        start is costly starts once per session); each run is still a fresh process under its own limits
        and sees nothing an earlier run left. Here: every run is its own sandbox."""
        return SandboxSession(self)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SandboxSession:
    """Runs of one ``CodeSandbox`` made one at a time (one thread); ``close`` ends what the session
    started. This base shares nothing: each run is a one-shot sandbox."""

    def __init__(self, sandbox: CodeSandbox):
        self.sandbox = sandbox

    def run(self, argv: Sequence[str], *, files: Mapping[str, bytes | str] | None = None,
            stdin: bytes | None = None, limits: Limits | None = None, env: Mapping[str, str] | None = None,
            collect: Sequence[str] = ()) -> ExecResult:
        return self.sandbox.run(argv, files=files, stdin=stdin, limits=limits, env=env, collect=collect)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EpisodeShell(ABC):
    """One OS episode's environment: a persistent root shell in a throw-away copy of a root filesystem.

    ``rootfs`` is the root filesystem the episode starts from (``envs.rootfs.ensure_rootfs()``); subclasses
    take ``limits`` and their own keyword parameters (a task's ``backend_params``). Use as a context
    manager; ``close()`` destroys everything the episode did."""

    limits: Limits

    def __init__(self, rootfs: str | Path | None = None, limits: Limits | None = None, **backend_params: Any):
        if backend_params:
            raise TypeError(f"{type(self).__name__}: unknown parameters {sorted(backend_params)}")
        self.limits = limits or EPISODE_LIMITS

    @abstractmethod
    def run(self, command: str, timeout: float | None = None, raw: bool = False) -> ShellOutput:
        """Run ``command`` in the persistent shell (cwd, variables, ``su`` persist). ``raw`` sends it as
        typed (``start`` commands such as ``su - user`` read the following lines from the shell's input)."""

    @abstractmethod
    def exec(self, argv: Sequence[str], timeout: float | None = None) -> tuple[int | None, str, ExecStatus]:
        """Run ``argv`` as an independent process in the episode's system (init and check scripts):
        exit code, stdout and stderr merged (capped), status."""

    @abstractmethod
    def exec_isolated(self, argv: Sequence[str], timeout: float | None = None) -> tuple[int | None, str, ExecStatus]:
        """Like ``exec``, among the episode's processes but on a throw-away copy of its files (nothing it
        writes stays): the example script that computes the expected answer before the agent acts."""

    @abstractmethod
    def seal(self) -> None:
        """End the agent's part: kill every process of the episode, then make later ``exec`` calls run in
        the judge: the agent's final files as data, interpreters, shells, libraries and their
        configuration from the pristine rootfs (``envs.sandbox.judge_root``). ``run`` ends."""

    @property
    @abstractmethod
    def alive(self) -> bool:
        """Whether the shell still runs (not after ``seal``)."""

    @abstractmethod
    def close(self) -> None:
        """Destroy the episode."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- shared machinery ---------------------------------------------------------------------------------
class CappedOutput:
    """stdout and stderr of one run, kept up to ``limit`` bytes together; more calls ``kill`` once (from
    another thread: a writer blocked on a full pipe may stall the very kill) while the caller keeps
    draining."""

    def __init__(self, limit: int, kill: Callable[[], None]):
        self.limit, self.kill = limit, kill
        self.bufs = {"out": bytearray(), "err": bytearray()}
        self.over = threading.Event()
        self._lock = threading.Lock()

    def add(self, key: str, chunk: bytes) -> None:
        with self._lock:
            room = self.limit - len(self.bufs["out"]) - len(self.bufs["err"])
            if room > 0:
                self.bufs[key] += chunk[:room]
            if len(chunk) > room and not self.over.is_set():
                self.over.set()
                threading.Thread(target=self.kill, daemon=True).start()

    def result(self, rc: int | None, *, timed_out: bool, oom: bool, t0: float) -> ExecResult:
        """Classify the ending; a cut output ends with the visible truncation marker."""
        return classify(rc, bytes(self.bufs["out"]), bytes(self.bufs["err"]), over=self.over.is_set(),
                        timed_out=timed_out, oom=oom, t0=t0)


def classify(rc: int | None, out: bytes, err: bytes, *, over: bool, timed_out: bool, oom: bool,
             t0: float) -> ExecResult:
    """How a run ended, from what every backend observes: output over the cap, the memory limit, the wall
    clock or CPU time (SIGXCPU, or bubblewrap's 128 + SIGXCPU), else on its own. A cut output ends with
    the visible truncation marker."""
    if over:
        status = ExecStatus.OUTPUT_LIMIT
    elif oom:
        status = ExecStatus.MEMORY
    elif timed_out or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        status = ExecStatus.TIMEOUT
    else:
        status = ExecStatus.OK
    if over:
        if err:
            err += TRUNCATION_MARKER
        else:
            out += TRUNCATION_MARKER
    return ExecResult(rc, out, err, status, time.monotonic() - t0)


def wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc`` to exit (True) or not (False), woken by the exit itself.

    Why not ``proc.wait(timeout)``: on POSIX it polls with sleeps that grow to 50 ms, so a judgement that
    ends after 30 ms is noticed up to 50 ms later; a profile of the coding judge spent more time in those
    sleeps than in the sandboxed program. A pidfd (Linux >= 5.3) becomes readable when the process exits;
    without one, the polling wait is the fallback."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, an old kernel, or the process is gone (reaped)
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        proc.wait()
        return True
    finally:
        os.close(fd)


def wait_capped(proc: subprocess.Popen, kill_tree: Callable[[], None], lim: Limits, stdin: bytes | None, t0: float,
                oom: Callable[[], bool] = lambda: False) -> ExecResult:
    """Feed stdin, keep at most ``lim.output_bytes`` of output (more kills the run), enforce the wall clock,
    and classify the ending. ``kill_tree`` kills every process of the run."""
    cap = CappedOutput(lim.output_bytes, kill_tree)

    def pump(stream, key):
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                return
            cap.add(key, chunk)

    threads = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    for t in threads:
        t.start()
    if stdin is not None:
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
    timed_out = not wait_exit(proc, lim.wall_s)
    if timed_out:
        kill_tree()
        proc.kill()
        proc.wait()
    kill_tree()  # background children of a finished command die with it
    for t in threads:
        t.join(timeout=5)
    return cap.result(proc.returncode, timed_out=timed_out, oom=oom(), t0=t0)
