"""The interactive-shell protocol shared by the OS sandboxes (rootfs + namespaces, Docker).

A persistent ``bash`` reads commands on stdin. Each command is sent wrapped so that its output ends with
a sentinel line carrying its exit code; output is read up to that line with a cap and a timeout. A
command that outlives its timeout has its processes killed (``_kill_foreground``) and the shell goes on.
"""

from __future__ import annotations

import os
import secrets
import select
import time
from dataclasses import dataclass

from envs.sandbox.base import ExecStatus, Limits


@dataclass
class ShellOutput:
    output: str
    exit_code: int | None
    status: ExecStatus
    truncated: bool = False


class InteractiveShell:
    """Subclasses start ``self.proc`` (stdin/stdout pipes to the shell), call ``_attach()``, and implement
    ``_kill_foreground``, ``exec`` and ``close``."""

    limits: Limits
    proc = None

    def _attach(self) -> None:
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)

    def _kill_foreground(self) -> None:
        raise NotImplementedError

    def _exec_to_file(self, cmd, timeout: float | None, **popen) -> tuple[int | None, str, ExecStatus]:
        """Run an independent process of the episode. Output goes to a file, not a pipe: a script that
        leaves background jobs behind (``sleep 60 &``) is finished when it exits, as with ``docker exec``;
        stdout and stderr are merged, as there. On timeout the episode's foreground processes die."""
        import subprocess
        import tempfile

        with tempfile.TemporaryFile() as out:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **popen)
            try:
                rc, status = p.wait(timeout=timeout or self.limits.wall_s), ExecStatus.OK
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self._kill_foreground()
                rc, status = None, ExecStatus.TIMEOUT
            out.seek(0)
            return rc, out.read(self.limits.output_bytes).decode("utf-8", "replace"), status

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- the interactive shell ----------------------------------------------------------------------
    def run(self, command: str, timeout: float | None = None, raw: bool = False) -> ShellOutput:
        """Run ``command`` in the persistent shell. ``raw`` sends it as typed (``start`` commands such as
        ``su - user`` must read the following lines from the shell's own input)."""
        if not self.alive:
            return ShellOutput("", None, ExecStatus.ENV_ERROR)
        timeout = self.limits.wall_s if timeout is None else timeout
        mark = f"__CQD_{secrets.token_hex(8)}__"
        if raw:
            payload = f"{command}\nprintf '\\n{mark} %s\\n' \"$?\"\n"
        else:
            payload = f"{{ {command}\n}} </dev/null 2>&1; printf '\\n{mark} %s\\n' \"$?\"\n"
        try:
            self.proc.stdin.write(payload.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return ShellOutput("", None, ExecStatus.ENV_ERROR)
        out, code, status, truncated = self._read_until(mark.encode(), timeout)
        if status == ExecStatus.TIMEOUT:
            self._kill_foreground()
            more, code, st2, tr2 = self._read_until(mark.encode(), 5.0)
            out += more
            truncated |= tr2
            if st2 != ExecStatus.OK:
                status = ExecStatus.ENV_ERROR if not self.alive else ExecStatus.TIMEOUT
        return ShellOutput(out.decode("utf-8", "replace"), code, status, truncated)

    def _read_until(self, mark: bytes, timeout: float):
        buf = bytearray()
        kept = bytearray()
        truncated = False
        deadline = time.monotonic() + timeout
        cap = self.limits.output_bytes
        while True:
            idx = buf.find(b"\n" + mark + b" ")
            if idx != -1:
                end = buf.find(b"\n", idx + 1 + len(mark) + 1)
                if end != -1:
                    code = int(buf[idx + len(mark) + 2 : end] or b"0")
                    body = bytes(buf[:idx])
                    return bytes(kept) + body[: max(0, cap - len(kept))], code, ExecStatus.OK, truncated or len(kept) + len(body) > cap
            if len(buf) > cap + 4096:  # keep the tail (the sentinel may be split), count the rest as dropped
                spill = len(buf) - 4096
                if len(kept) < cap:
                    kept += buf[: min(spill, cap - len(kept))]
                truncated = True
                del buf[:spill]
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(kept) + bytes(buf[: max(0, cap - len(kept))]), None, ExecStatus.TIMEOUT, truncated
            r, _, _ = select.select([self._fd], [], [], min(left, 0.5))
            if r:
                try:
                    chunk = os.read(self._fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:  # the shell exited
                    return bytes(kept) + bytes(buf[: max(0, cap - len(kept))]), None, ExecStatus.ENV_ERROR, truncated
                buf += chunk

