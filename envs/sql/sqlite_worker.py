"""Where a sample's SQLite statements run: a process of their own, forked from a small parent.

The harness starts this file once per process as ``python -I -S sqlite_worker.py FD`` (standard library
only: it runs as a script, without the project on its path). The parent (the *zygote*) never opens a
database: on each request on FD (a unix SEQPACKET socket) it forks a child with a fresh socket pair, hands
one end to the harness and goes back to waiting. The child lowers its limits (address space, CPU, file
size, core dumps, open files), drops root, then serves one sample's in-memory database at a time until the
harness closes the socket; after a sample that ended cleanly the harness may hand it the next one (a new
database; see ``serve``). Whatever a statement does to its process (a crash through ``fts3_tokenizer``, a
pragma that changes the whole library such as ``hard_heap_limit``, an allocation that never ends) ends with
that child: a child that timed out, crashed or ran out of memory is never reused, and a fresh one is forked
from the untouched zygote.

Inside the child an authorizer denies what reaches beyond the one database or the process: ATTACH /
DETACH (and so ``VACUUM INTO``), virtual tables, every pragma but the read-only schema ones,
``load_extension`` and ``fts3_tokenizer``. A progress handler ends a statement at its deadline; the harness
kills the child when a statement outlives it anyway.

Frames on a child's socket: 4-byte big-endian length, then JSON. Rows travel as JSON lists; a BLOB value
as a one-item list holding its hex.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import resource
import signal
import socket
import sqlite3
import struct
import sys
import time
import unicodedata

MAX_REPLY_BYTES = 16 << 20  # values beyond this are cut (a statement's rows) or refused (the judged table)
MAX_REQUEST_BYTES = 256 << 20  # the sample's table travels in one request
REUSE_GROWTH = 32 << 20  # a child that grew more than this while serving is not reused
MEMORY_EXIT = 3  # the child's exit status when Python ran out of memory
NOBODY = 65534
READ_PRAGMAS = frozenset({"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
                          "foreign_key_list", "collation_list"})
DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})
DENIED_ACTIONS = frozenset({sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_CREATE_VTABLE,
                            sqlite3.SQLITE_DROP_VTABLE})
SQL_LIMITS = {sqlite3.SQLITE_LIMIT_LENGTH: 16 << 20, sqlite3.SQLITE_LIMIT_SQL_LENGTH: 1 << 20,
              sqlite3.SQLITE_LIMIT_ATTACHED: 0, sqlite3.SQLITE_LIMIT_WORKER_THREADS: 0}


# -- the statements' environment (MySQL functions and collation, as the reference statements expect) ----

def authorizer(action, arg1, arg2, dbname, source):
    if action in DENIED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() not in READ_PRAGMAS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _concat_ws(sep, *args):
    if sep is None:
        return None
    return str(sep).join(str(a) for a in args if a is not None)


def _concat(*args):
    return None if any(a is None for a in args) else "".join(str(a) for a in args)


def _md5(x):
    return None if x is None else hashlib.md5(str(x).encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=65536)
def _collation_key(s: str) -> str:
    decomposed = unicodedata.normalize("NFKD", s.rstrip(" "))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def mysql_collation(a: str, b: str) -> int:
    """Close to MySQL's utf8mb4_general_ci (PAD SPACE): case- and accent-insensitive, trailing spaces
    ignored ('Montreal' = 'Montréal ')."""
    x, y = _collation_key(a), _collation_key(b)
    return (x > y) - (x < y)


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class Database:
    """One sample's in-memory database, confined as the module docstring says."""

    def __init__(self, memory_bytes: int):
        """The connection, ready before the sample is known (a spare child does this in advance)."""
        self.deadline = float("inf")
        self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        for limit, value in SQL_LIMITS.items():
            self.conn.setlimit(limit, value)
        # process-wide settings, ours to choose before the model's statements run (denied to them)
        self.conn.execute(f"PRAGMA hard_heap_limit = {int(memory_bytes) // 2}")
        self.conn.execute("PRAGMA temp_store = MEMORY")
        self.conn.create_function("md5", 1, _md5, deterministic=True)
        self.conn.create_function("concat_ws", -1, _concat_ws, deterministic=True)
        self.conn.create_function("concat", -1, _concat, deterministic=True)
        self.conn.create_collation("mysql_ci", mysql_collation)

    def build(self, table: str, columns: list, rows: list) -> None:
        """The sample's table, then the confinement for the model's statements."""
        cols = ", ".join(f"{quote_ident(c)} TEXT COLLATE mysql_ci" for c in columns)
        self.conn.execute(f"CREATE TABLE {quote_ident(table)} ({cols})")
        marks = ", ".join("?" * len(columns))
        self.conn.executemany(f"INSERT INTO {quote_ident(table)} VALUES ({marks})", rows)
        self.conn.set_authorizer(authorizer)
        self.conn.set_progress_handler(lambda: 1 if time.monotonic() > self.deadline else 0, 10_000)

    def execute(self, sql: str, max_rows: int, timeout_s: float) -> dict:
        self.deadline = time.monotonic() + timeout_s
        try:
            cur = self.conn.execute(sql)
            rows = encode_rows(cur, max_rows)[0] if cur.description else []
            cur.close()
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")
            return {"rows": rows}
        except sqlite3.Warning as exc:  # e.g. "You can only execute one statement at a time."
            return {"error": str(exc)}
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            return {"error": "statement interrupted: time limit exceeded" if "interrupted" in str(exc) else str(exc)}
        except (ValueError, OverflowError) as exc:  # Python's own refusals, e.g. a NUL in the statement
            return {"error": str(exc)}
        finally:
            self.deadline = float("inf")

    def table_rows(self, table: str, select: str, timeout_s: float) -> dict:
        """The judged table's rows, refused when the name now holds a view (the judge reads data, never
        a query the model wrote). ``select`` (the harness's) reads ``main.`` so a TEMP table cannot shadow it."""
        self.deadline = time.monotonic() + timeout_s
        try:
            kinds = [k for (k,) in self.conn.execute(
                "SELECT type FROM main.sqlite_master WHERE type IN ('table', 'view') AND name = ? COLLATE NOCASE",
                (table,))]
            if kinds != ["table"]:
                what = "a view" if kinds else "gone"
                return {"error": f"the judged table {table!r} is {what}"}
            rows, cut = encode_rows(self.conn.execute(select), None)
            return {"error": f"the judged table holds more than {MAX_REPLY_BYTES} bytes"} if cut else {"rows": rows}
        except sqlite3.Error as exc:
            return {"error": "statement interrupted: time limit exceeded" if "interrupted" in str(exc) else str(exc)}
        finally:
            self.deadline = float("inf")


def encode_rows(cursor, max_rows: int | None) -> tuple[list, bool]:
    """At most ``max_rows`` rows and MAX_REPLY_BYTES of values, read one by one (a result never sits whole
    in memory), as JSON-ready lists (BLOBs as [hex]); and whether more was left."""
    out, size = [], 0
    for r in cursor:
        if max_rows is not None and len(out) >= max_rows:
            return out, True
        row = [[v.hex()] if isinstance(v, bytes) else v for v in r]
        size += sum(len(v) if isinstance(v, str) else 2 * len(v[0]) if isinstance(v, list) else 24 for v in row)
        if size > MAX_REPLY_BYTES:
            return out, True
        out.append(row)
    return out, False


# -- framing ----------------------------------------------------------------------------------------

def send_frame(sock: socket.socket, obj) -> None:
    data = json.dumps(obj).encode("utf-8")
    sock.sendall(struct.pack(">I", len(data)) + data)


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, limit: int):
    head = recv_exact(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n > limit:
        raise ValueError(f"frame of {n} bytes")
    body = recv_exact(sock, n)
    return None if body is None else json.loads(body)


# -- the child ----------------------------------------------------------------------------------------

def confine(memory_bytes: int) -> None:
    """Limits the child cannot raise, set before any of the sample's data is read."""
    for limit, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_NOFILE, 32)):
        resource.setrlimit(limit, (value, value))
    if os.geteuid() == 0:  # the statements need no rights at all: run them as nobody
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def set_cpu_limit(seconds: float) -> None:
    """The CPU backstop for one request: what is used so far plus this request's allowance."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(used.ru_utime + used.ru_stime + seconds) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))


def address_space() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def serve(sock: socket.socket, memory_bytes: int) -> None:
    """Samples one after the other: a "reset" from the harness (sent only after a sample that ended
    cleanly) closes the database and readies a new one. A child whose address space grew past REUSE_GROWTH
    while serving exits instead, so no sample inherits a fuller process than a fresh one."""
    baseline = address_space()
    while True:
        db = Database(memory_bytes)
        init = recv_frame(sock, MAX_REQUEST_BYTES)
        if init is None:
            return
        set_cpu_limit(60)  # the build has its own allowance, whatever the previous sample used
        try:
            db.build(init["table"], init["columns"], init["rows"])
        except sqlite3.Error as exc:
            send_frame(sock, {"error": str(exc)})
            return
        send_frame(sock, {"ok": True})
        while True:
            req = recv_frame(sock, MAX_REQUEST_BYTES)
            if req is None:
                return
            if req["op"] == "reset":
                break
            set_cpu_limit(req["timeout"])
            if req["op"] == "exec":
                reply = db.execute(req["sql"], req["max_rows"], req["timeout"])
            else:
                reply = db.table_rows(req["table"], req["select"], req["timeout"])
            send_frame(sock, reply)
        db.conn.close()
        del db
        gc.collect()
        if address_space() > baseline + REUSE_GROWTH:
            return


def child_main(sock: socket.socket, memory_bytes: int) -> None:
    code = 0
    try:
        confine(memory_bytes)
        serve(sock, memory_bytes)
    except MemoryError:
        code = MEMORY_EXIT
        try:
            send_frame(sock, {"fatal": "memory"})
        except (OSError, MemoryError):
            pass
    except BaseException:  # noqa: BLE001 - a child never returns into the zygote's loop
        code = 1
    os._exit(code)


# -- the zygote ---------------------------------------------------------------------------------------

def describe(status: int) -> dict:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return {"signal": name}
    return {"exit": os.WEXITSTATUS(status)}


class Zygote:
    """Forks the children. One spare child per memory size waits ready (confined, connection open) so
    that a request is answered without a fork on its path; the replacement is forked after answering."""

    def __init__(self, ctrl: socket.socket):
        self.ctrl = ctrl
        self.live: set[int] = set()
        self.ended: dict[int, dict] = {}  # reaped children's statuses, the oldest dropped past 4096
        self.spares: dict[int, tuple[int, socket.socket]] = {}  # memory size -> (pid, the harness's end)

    def reap_finished(self) -> None:
        for pid in list(self.live):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self._ended(pid, status)

    def _ended(self, pid: int, status: int) -> None:
        self.live.discard(pid)
        self.ended[pid] = describe(status)
        while len(self.ended) > 4096:
            self.ended.pop(next(iter(self.ended)))

    def spawn(self, memory_bytes: int) -> tuple[int, socket.socket]:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            for s in (self.ctrl, theirs, *(sock for _, sock in self.spares.values())):
                s.close()
            child_main(mine, memory_bytes)
        mine.close()
        self.live.add(pid)
        return pid, theirs

    def fork(self, memory_bytes: int) -> None:
        spare = self.spares.pop(memory_bytes, None)
        if spare is not None and spare[0] not in self.live:  # a spare that died waiting is not handed out
            spare[1].close()
            spare = None
        pid, theirs = spare or self.spawn(memory_bytes)
        try:
            socket.send_fds(self.ctrl, [json.dumps({"pid": pid}).encode()], [theirs.fileno()])
        finally:
            theirs.close()
        self.spares[memory_bytes] = self.spawn(memory_bytes)

    def end(self, pid: int, kill: bool, wait_s: float = 1.0) -> dict:
        """A child's exit status, killing it first (``kill``) or when it outlives ``wait_s``; only a
        child not yet reaped is ever signalled, so a recycled pid is never hit."""
        if pid in self.live:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:  # it ended on its own: its own status, even when asked to kill
                self._ended(pid, status)
                return self.ended[pid]
            if not kill:
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        self._ended(pid, status)
                        return self.ended[pid]
                    time.sleep(0.005)
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            self._ended(pid, status)
            return {**self.ended[pid], "killed": True}
        return self.ended.get(pid, {"unknown": True})

    def loop(self) -> None:
        gc.freeze()  # what exists now is shared with every child: the collector need not touch (copy) it
        self.ctrl.send(b'{"ready": true}')
        while True:
            msg = self.ctrl.recv(4096)
            if not msg:
                break
            req = json.loads(msg)
            self.reap_finished()
            if req["op"] == "fork":
                self.fork(int(req["memory"]))
            else:
                self.ctrl.send(json.dumps(self.end(int(req["pid"]), kill=req["op"] == "kill")).encode())
        for pid in list(self.live):  # the harness is gone: so are its databases
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness's Ctrl-C is the harness's to handle
    Zygote(socket.socket(fileno=int(sys.argv[1]))).loop()
