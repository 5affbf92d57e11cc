"""SQLite backend (the embedded default): an in-memory database per sample, in a process of its own.

Statements never run in the harness's process: ``envs.sql.sqlite_worker`` forks the children that hold the
samples' databases from a small worker started once per harness process; a child has rlimits on address
space, CPU, file size and core dumps, no root, and an authorizer that denies ATTACH, virtual tables,
``load_extension``, ``fts3_tokenizer`` and every pragma but the read-only schema ones (see that module).
Each statement has a soft deadline (SQLite's progress handler: an error the model reads, as before) and a
hard one, ``timeout_s`` + GRACE_S, after which the child is killed and the statement's result says TIMEOUT.
A child that crashes or runs out of memory ends its own sample (CRASHED / MEMORY) and nothing else: the next
sample gets a fresh child, and a dead worker is restarted. A child whose sample ended cleanly serves the next
one with a new database (a fork per sample cost ~5 ms, several times the judging itself). MySQL statements
are rewritten for SQLite here (``dialect``).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from envs.sql import sqlite_worker
from envs.sql.base import (
    MAX_FETCH_ROWS,
    SQLBackend,
    SQLBackendError,
    SQLDatabase,
    SQLResult,
    SQLStatus,
    TableBuildError,
    TableReadError,
    TableSpec,
    quote_ident,
)
from envs.sql.dialect import mysql_to_sqlite

WORKER = Path(sqlite_worker.__file__)
GRACE_S = 1.0  # past the soft deadline, how long a statement may run before its worker is killed
BUILD_S = 60.0  # building the sample's table (harness data) in the worker
MEMORY_BYTES = 512 << 20  # a worker's address space
MAX_USES = 100  # samples a child serves (one after the other, each after a clean end) before it exits
MAX_IDLE = 128  # children kept between samples


class _Zygote:
    """The client of one ``sqlite_worker`` parent process: asks it for a child per database, and for a
    child's end (kill or reap), since only the parent may signal its children safely."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", str(WORKER), str(theirs.fileno())],
                                         pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                                         start_new_session=True)
        finally:
            theirs.close()
        self.sock, self.lock = ours, threading.Lock()
        self.asked: int | None = None  # the memory size of a child asked for and not yet received
        self.ready: tuple[int, int, socket.socket] | None = None  # (memory size, pid, socket) received
        self.idle: list[tuple[int, int, socket.socket, int]] = []  # children between samples, reusable
        ours.settimeout(30)
        try:
            ready = ours.recv(64)
        except OSError:
            ready = b""
        if ready != b'{"ready": true}':
            self.close()
            raise SQLBackendError(f"sqlite backend: the worker did not start ({sys.executable} -I -S {WORKER})")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, memory_bytes: int) -> tuple[int, socket.socket]:
        """A fresh child. The next one is asked for at once, so that it is forked while this one is used
        and the next call finds it ready."""
        with self.lock:
            self._drain()
            ready, self.ready = self.ready, None
            if ready is not None and ready[0] != memory_bytes:
                ready[2].close()
                ready = None
            if ready is None:
                self._ask(memory_bytes)
                self._drain()
                ready, self.ready = self.ready, None
            self._ask(memory_bytes)
        return ready[1], ready[2]

    def _ask(self, memory_bytes: int) -> None:
        self.sock.send(json.dumps({"op": "fork", "memory": int(memory_bytes)}).encode())
        self.asked = memory_bytes

    def _drain(self) -> None:
        """Receive the child asked for, if any (the worker answers in order)."""
        if self.asked is None:
            return
        memory_bytes, self.asked = self.asked, None
        msg, fds, _, _ = socket.recv_fds(self.sock, 256, 1, socket.MSG_CMSG_CLOEXEC)
        if len(fds) != 1:
            raise OSError("the sqlite worker answered a fork without a socket")
        self.ready = (memory_bytes, int(json.loads(msg)["pid"]), socket.socket(fileno=fds[0]))

    def end(self, pid: int, kill: bool) -> dict:
        """The child's exit ({"exit": n} or {"signal": name}, "killed" when we did it)."""
        try:
            with self.lock:
                self._drain()
                self.sock.send(json.dumps({"op": "kill" if kill else "reap", "pid": pid}).encode())
                return json.loads(self.sock.recv(4096))
        except (OSError, ValueError):
            return {"unknown": True}

    def close(self) -> None:
        for _, _, sock, _ in self.idle:
            sock.close()
        self.sock.close()  # the worker kills its children and exits on EOF
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_ZYGOTES: dict[int, _Zygote] = {}
_ZYGOTE_LOCK = threading.Lock()


def _zygote(fresh: bool = False) -> _Zygote:
    """This process's worker (one per pid: a forked harness starts its own), restarted when it died."""
    with _ZYGOTE_LOCK:
        z = _ZYGOTES.get(os.getpid())
        if z is not None and (fresh or not z.alive()):
            z.close()
            z = None
        if z is None:
            z = _ZYGOTES[os.getpid()] = _Zygote()
        return z


def _forget_parent_zygote() -> None:
    """In a forked harness process: the parent's worker is the parent's (this copy of its socket is
    closed, so the worker still sees the parent go); this process starts its own when it needs one."""
    for pid in [p for p in _ZYGOTES if p != os.getpid()]:
        z = _ZYGOTES.pop(pid)
        for sock in [z.sock, *(s for _, _, s, _ in z.idle)]:
            sock.close()


os.register_at_fork(after_in_child=_forget_parent_zygote)


@atexit.register
def _close_zygote() -> None:
    z = _ZYGOTES.pop(os.getpid(), None)
    if z is not None:
        z.close()


def _has_left(sock: socket.socket) -> bool:
    """Whether an idle child closed its end (it exits after a sample that grew its address space, or
    died): its socket is readable at once and reads as the end. (A plain non-blocking peek would wait
    for the socket's own timeout.)"""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _fork(memory_bytes: int, reuse: bool = True) -> tuple[_Zygote, int, socket.socket, int]:
    """A child for one sample: an idle one that served earlier samples cleanly (``reuse``), else a fresh
    one; with the number of samples it served before."""
    for fresh in (False, True):  # a worker that died since its last use is replaced once
        z = _zygote(fresh)
        if reuse:
            with z.lock:
                # the most recently returned first (the warmest); one that left since is dropped here
                for i in reversed(range(len(z.idle))):
                    mem, pid, sock, uses = z.idle[i]
                    if mem != memory_bytes:
                        continue
                    del z.idle[i]
                    if _has_left(sock):
                        sock.close()
                        continue
                    return z, pid, sock, uses
        try:
            return (z, *z.fork(memory_bytes), 0)
        except (OSError, ValueError, KeyError):
            continue
    raise SQLBackendError("sqlite backend: the worker does not answer")


def _decode_rows(rows) -> list[tuple]:
    """The worker's rows, checked against the protocol (a child that breaks it is treated as crashed)."""
    if not isinstance(rows, list):
        raise ValueError("rows are not a list")
    out = []
    for r in rows:
        if not isinstance(r, list):
            raise ValueError("a row is not a list")
        row = []
        for v in r:
            if v is None or type(v) in (str, int, float):
                row.append(v)
            elif isinstance(v, list) and len(v) == 1 and isinstance(v[0], str):
                row.append(bytes.fromhex(v[0]))
            else:
                raise ValueError("a value of an unknown type")
        out.append(tuple(row))
    return out


def _ended(info: dict) -> tuple[SQLStatus, str]:
    """A child's exit, told as the sample's failure."""
    sig = info.get("signal")
    if info.get("exit") == sqlite_worker.MEMORY_EXIT:
        return SQLStatus.MEMORY, "the SQLite worker ran out of memory"
    if sig == "SIGXCPU":
        return SQLStatus.TIMEOUT, "the SQLite worker ran out of CPU time"
    if sig:
        return SQLStatus.CRASHED, f"the SQLite worker crashed ({sig})"
    return SQLStatus.CRASHED, f"the SQLite worker exited ({json.dumps(info)})"


class SQLiteDatabase(SQLDatabase):
    def __init__(self, table: TableSpec, timeout_s: float, dialect: str = "mysql", memory_bytes: int = MEMORY_BYTES):
        table.validate()
        self.dialect, self.timeout_s = dialect, timeout_s
        self.failure: SQLResult | None = None
        self.memory_bytes, self.closed = memory_bytes, False
        self.zygote, self.pid, self.sock, self.uses = _fork(memory_bytes)
        rows = [[None if v is None else str(v) for v in r] for r in table.rows]
        # sent now, answered with the first request: the child builds while the harness goes on
        self.building: str | None = table.name
        self.init = {"table": table.name, "columns": list(table.columns), "rows": rows}
        self._send_init()

    def _send_init(self) -> None:
        try:
            sqlite_worker.send_frame(self.sock, self.init)
        except OSError as exc:
            if not self.uses:
                self.close()
                raise SQLBackendError(f"sqlite backend: the worker does not answer: {exc}") from None
            # a reused child that left after its last sample: _built starts a fresh one

    def _built(self) -> None:
        """The answer to the table's build (the first thing the child says); raises as ``create`` would."""
        name = self.building
        self.building = None  # so that _call below reads the answer instead of asking again
        reply = self._call(None, BUILD_S)
        if reply.status != SQLStatus.OK and self.uses:
            # a reused child that left (its address space grew) or died between samples: a fresh one
            self.failure = None
            self.zygote, self.pid, self.sock, self.uses = _fork(self.memory_bytes, reuse=False)
            self._send_init()
            reply = self._call(None, BUILD_S)
        self.init = None
        if reply.status != SQLStatus.OK:
            raise SQLBackendError(f"sqlite backend: building table {name!r}: {reply.error}")
        if reply.error is not None:
            self.close()
            raise TableBuildError(f"table {name!r}: {reply.error}")

    def _fail(self, status: SQLStatus, error: str) -> SQLResult:
        self.failure = SQLResult(error=error, status=status)
        try:
            self.sock.close()
        except OSError:
            pass
        return self.failure

    def _call(self, request: dict | None, hard_s: float) -> SQLResult:
        """One request to the child (None: only its next answer), bounded by ``hard_s`` of wall time (then
        the child is killed)."""
        if self.failure is not None:
            return self.failure
        if self.building is not None and request is not None:
            self._built()
            if self.failure is not None:
                return self.failure
        deadline = time.monotonic() + hard_s
        try:
            if request is not None:
                sqlite_worker.send_frame(self.sock, request)
            reply = self._recv(deadline)
        except TimeoutError:
            self.zygote.end(self.pid, kill=True)
            return self._fail(SQLStatus.TIMEOUT, f"statement killed: it outlived the {self.timeout_s:g}s time limit")
        except OSError:  # the connection broke: the child is gone or going
            return self._fail(*_ended(self.zygote.end(self.pid, kill=False)))
        except (ValueError, RecursionError) as exc:  # a bad frame or bad JSON
            info = self.zygote.end(self.pid, kill=True)
            return self._fail(*_ended(info)) if not info.get("killed") else \
                self._fail(SQLStatus.CRASHED, f"the SQLite worker broke the protocol: {exc}")
        if reply is None or reply.get("fatal"):  # the child is gone
            status, error = _ended(self.zygote.end(self.pid, kill=False))
            return self._fail(SQLStatus.MEMORY if reply else status, "the SQLite worker ran out of memory" if reply else error)
        if "error" in reply and isinstance(reply["error"], str):
            return SQLResult(error=reply["error"])
        if "ok" in reply:
            return SQLResult(rows=[])
        try:
            return SQLResult(rows=_decode_rows(reply.get("rows")))
        except ValueError as exc:
            self.zygote.end(self.pid, kill=True)
            return self._fail(SQLStatus.CRASHED, f"the SQLite worker broke the protocol: {exc}")

    def _recv(self, deadline: float):
        head = self._recv_exact(4, deadline)
        if head is None:
            return None
        (n,) = struct.unpack(">I", head)
        if n > sqlite_worker.MAX_REPLY_BYTES + (1 << 20):
            raise ValueError(f"a reply of {n} bytes")
        body = self._recv_exact(n, deadline)
        if body is None:
            return None
        reply = json.loads(body)
        if not isinstance(reply, dict):
            raise ValueError("a reply that is not an object")
        return reply

    def _recv_exact(self, n: int, deadline: float) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                raise TimeoutError from None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def execute(self, sql: str) -> SQLResult:
        if self.dialect == "mysql":
            sql = mysql_to_sqlite(sql)
        return self._call({"op": "exec", "sql": sql, "max_rows": MAX_FETCH_ROWS, "timeout": self.timeout_s},
                          self.timeout_s + GRACE_S)

    def table_rows(self, table: TableSpec) -> list[tuple]:
        select = f"SELECT {', '.join(quote_ident(c) for c in table.columns)} FROM main.{quote_ident(table.name)}"
        res = self._call({"op": "rows", "table": table.name, "select": select, "timeout": self.timeout_s},
                         self.timeout_s + GRACE_S)
        if res.status == SQLStatus.ENV_ERROR:
            raise SQLBackendError(res.error)
        if res.error is not None:
            raise TableReadError(res.error)
        return res.rows

    def close(self) -> None:
        """A child whose sample ended cleanly waits for the next sample (it drops this database first);
        any other is closed (it exits on EOF; the worker reaps it)."""
        if self.closed:
            return
        self.closed = True
        if self.failure is None and self.building is None and self.uses + 1 < MAX_USES:
            with self.zygote.lock:
                if len(self.zygote.idle) < MAX_IDLE:
                    try:
                        sqlite_worker.send_frame(self.sock, {"op": "reset"})
                        self.zygote.idle.append((self.memory_bytes, self.pid, self.sock, self.uses + 1))
                        self.failure = SQLResult(error="the database is closed", status=SQLStatus.ENV_ERROR)
                        return
                    except OSError:
                        pass
        try:
            self.sock.close()
        except OSError:
            pass


class SQLiteBackend(SQLBackend):
    name = "sqlite"

    def __init__(self, timeout_s: float = 5.0, dialect: str = "mysql", memory_bytes: int = MEMORY_BYTES):
        if dialect not in ("mysql", "sqlite"):
            raise ValueError(f"sqlite backend: dialect must be 'mysql' or 'sqlite', got {dialect!r}")
        self.timeout_s, self.dialect, self.memory_bytes = timeout_s, dialect, int(memory_bytes)

    def create(self, table: TableSpec, tag: str) -> SQLiteDatabase:
        return SQLiteDatabase(table, self.timeout_s, self.dialect, self.memory_bytes)
