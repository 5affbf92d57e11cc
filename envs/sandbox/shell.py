"""The interactive-shell protocol shared by the OS episode shells (rootfs + namespaces, Docker).

A persistent ``bash`` reads commands on its input. Each command is sent wrapped so that its output ends
with a sentinel line carrying its exit code; output is read up to that line with a cap and a timeout. A
command that outlives its timeout has its processes killed (``_kill_foreground``) and the shell goes on.
Subclasses provide the transport to the shell (``_send``, ``_recv``: a pipe to a local process, a socket
to a container's exec) and ``_kill_foreground``.
"""

from __future__ import annotations

import secrets
import time
from abc import abstractmethod

from envs.sandbox.base import EpisodeShell, ExecStatus, ShellOutput

__all__ = ["InteractiveShell", "ShellOutput"]


class InteractiveShell(EpisodeShell):
    """``run`` over a transport; subclasses implement ``_send``, ``_recv``, ``_kill_foreground``, ``exec``,
    ``alive`` and ``close``."""

    @abstractmethod
    def _send(self, data: bytes) -> None:
        """Write to the shell's input (OSError when it is gone)."""

    @abstractmethod
    def _recv(self, timeout: float) -> bytes | None:
        """The shell's next output (stdout and stderr merged): None when nothing came within ``timeout``
        seconds, b"" when the shell's output ended."""

    @abstractmethod
    def _kill_foreground(self) -> None:
        """Kill every process of the episode but the shell itself (and the episode's init)."""

    # -- the interactive shell ----------------------------------------------------------------------
    def run(self, command: str, timeout: float | None = None, raw: bool = False) -> ShellOutput:
        if not self.alive:
            return ShellOutput("", None, ExecStatus.ENV_ERROR)
        timeout = self.limits.wall_s if timeout is None else timeout
        mark = f"__CQD_{secrets.token_hex(8)}__"
        if raw:
            payload = f"{command}\nprintf '\\n{mark} %s\\n' \"$?\"\n"
        else:
            payload = f"{{ {command}\n}} </dev/null 2>&1; printf '\\n{mark} %s\\n' \"$?\"\n"
        try:
            self._send(payload.encode())
        except OSError:
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
            chunk = self._recv(min(left, 0.5))
            if chunk is None:
                continue
            if not chunk:  # the shell exited
                return bytes(kept) + bytes(buf[: max(0, cap - len(kept))]), None, ExecStatus.ENV_ERROR, truncated
            buf += chunk
