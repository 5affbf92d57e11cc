"""What every sandbox promises: run a command under limits, say how it ended, never trust it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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
