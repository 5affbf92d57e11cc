"""Atomic files and the run directory's lock.

Atomic writes go to a temporary name in the same folder, fsync, rename, fsync the folder: a reader (or a
resumed run) sees either the old file or the new one, never a torn write, whatever moment the process is
killed at. A write that fails (disk full) removes its temporary file and raises a one-line error naming
the file; ``remove_stale_temporaries`` clears what a killed writer left. ``RunLock`` keeps two runners
(two ``cycleqd resume``) out of one run directory.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

TMP_MARK = ".tmp"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HarnessError(f"{path}: cannot write ({len(data)} bytes): no space left on the device; "
                               "the previous version of the file is intact") from None
        raise HarnessError(f"{path}: cannot write ({exc.strerror or exc})") from None
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False).encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, "rb") as fh:
        return json.loads(fh.read())


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process left (``.NAME.tmpPID``) whose
    writer is gone; returns them."""
    removed = []
    for p in Path(directory).rglob(f".*{TMP_MARK}*"):
        pid = p.name.rsplit(TMP_MARK, 1)[-1]
        if p.is_file() and pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory for as long as a runner works in it (flock: released by the
    kernel when the process dies, so a killed run never leaves a stale lock)."""

    NAME = ".lock"

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HarnessError(f"run_dir: {self.path.parent} is in use by another cycleqd process "
                               "(wait for it or stop it first)") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
