"""What every sandbox promises: run a command under limits, say how it ended, never trust it."""

from __future__ import annotations

import enum
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

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


def wait_capped(proc: subprocess.Popen, kill_tree: Callable[[], None], lim: Limits, stdin: bytes | None, t0: float,
                oom: Callable[[], bool] = lambda: False) -> ExecResult:
    """Feed stdin, keep at most ``lim.output_bytes`` of output (more kills the run), enforce the wall clock,
    and classify the ending. ``kill_tree`` kills every process of the run."""
    bufs = {"out": bytearray(), "err": bytearray()}
    over = threading.Event()

    def pump(stream, key):
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                return
            room = lim.output_bytes - len(bufs["out"]) - len(bufs["err"])
            if room > 0:
                bufs[key] += chunk[:room]
            if len(chunk) > room and not over.is_set():
                over.set()
                # kill from another thread and keep draining: a writer blocked on a full pipe may stall
                # the very kill (a docker exec behind a stuck stream)
                threading.Thread(target=kill_tree, daemon=True).start()

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
    timed_out = False
    try:
        proc.wait(timeout=lim.wall_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_tree()
        proc.kill()
        proc.wait()
    kill_tree()  # background children of a finished command die with it
    for t in threads:
        t.join(timeout=5)
    rc = proc.returncode
    if over.is_set():
        status = ExecStatus.OUTPUT_LIMIT
    elif oom():
        status = ExecStatus.MEMORY
    elif timed_out or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        status = ExecStatus.TIMEOUT
    else:
        status = ExecStatus.OK
    out, err = bytes(bufs["out"]), bytes(bufs["err"])
    if over.is_set():
        if err:
            err += TRUNCATION_MARKER
        else:
            out += TRUNCATION_MARKER
    return ExecResult(rc, out, err, status, time.monotonic() - t0)
