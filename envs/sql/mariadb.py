"""MariaDB / MySQL backend: a private server (Debian's package here, or in a Docker container), or a URL.

Least privilege. Each sample gets its own database and its own user with SAMPLE_PRIVILEGES on that
database only: no routines, triggers or events (the only objects that run code), no LOCK TABLES, nothing
server-wide, so ``SET GLOBAL``, ``SHUTDOWN``, ``LOAD_FILE`` or another database are refused by the server
itself. ``max_statement_time`` bounds every statement, and since a session may lift it (``SET STATEMENT
max_statement_time = 0 FOR ...``) the harness also enforces it from outside: a statement that outlives it by
GRACE_S has its sessions killed and ends the sample (TIMEOUT). A session left in a transaction the harness
cannot end (``XA START``) is killed before it can leave a prepared transaction behind.

The judge reads only after the sample's sessions are gone, refuses a judged table that is no longer a
base table or a database holding any routine, trigger or event (information_schema), and reads as the
sample's own user on a fresh session (no temporary table or session setting of the model's in the way,
no rights beyond the sample's). The harness's admin connection builds and drops the database and the
user, with short lock waits so that nothing a sample leaves can hang it. Private servers start with the
flags of SERVER_FLAGS (no DATA DIRECTORY outside the datadir, session memory capped, no LOAD DATA LOCAL)
and, when the harness runs as root, as the ``mysql`` user where it exists.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse

from envs.docker_engine import client, discard, ensure_image, owner_labels, start_container
from envs.rootfs import ensure_rootfs
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
from harness.errors import HarnessError

try:
    import pymysql  # optional: the 'envs' extra (MySQL client)
    import pymysql.cursors  # optional, as above: the streamed cursor
except ImportError:  # pragma: no cover - MariaDBBackend reports it
    pymysql = None


SAMPLE_PRIVILEGES = ("SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE TEMPORARY TABLES, "
                     "CREATE VIEW, SHOW VIEW")
# every private server (local or in Docker) starts with these
SERVER_FLAGS = ("--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci", "--skip-log-bin",
                "--innodb-buffer-pool-size=64M", "--max-connections=500",
                "--skip-symbolic-links",  # CREATE TABLE ... DATA DIRECTORY='/anywhere' stays in the datadir
                "--local-infile=0",
                # a session may raise these for itself: capped, so one sample cannot take the server's memory
                "--max-session-mem-used=512M", "--maximum-max-session-mem-used=512M",
                "--maximum-max-heap-table-size=64M", "--maximum-tmp-table-size=64M",
                "--maximum-tmp-memory-table-size=64M")
MAX_RESULT_BYTES = 16 << 20  # a statement's rows (and the judged table) are never held beyond this
GRACE_S = 2.0  # past max_statement_time, how long a statement may run before its sessions are killed
ADMIN_LOCK_WAIT_S = 10  # the admin connection never waits longer than this for a lock a sample holds
_LOST = (2006, 2013, 2014, 2055)  # client errors: the connection is gone (read timeout, server gone)


def _pymysql():
    if pymysql is None:
        raise HarnessError("mariadb backend: pymysql is not installed (pip install '.[envs]')")
    return pymysql


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_account() -> str:
    """Debian's ``mysql`` account when it exists (the package creates it), else root."""
    try:
        pwd.getpwnam("mysql")
        return "mysql"
    except KeyError:
        return "root"


class MariaDBServer:
    """A throw-away mariadbd on 127.0.0.1 with its own datadir; stopped on close or at exit."""

    def __init__(self, root: str | Path | None = None, startup_timeout: float = 30.0):
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        install = shutil.which("mariadb-install-db")
        if not (Path(mariadbd).exists() and install):
            raise HarnessError("mariadb backend: mariadbd not found; install Debian's mariadb-server "
                               "(apt-get install mariadb-server) or pass backend_params.url")
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="cycleqd-mariadb-"))
        self.datadir, self.sock = self.root / "data", self.root / "mysqld.sock"
        self.port = _free_port()
        user = []
        if os.geteuid() == 0:  # never root: the server's user is what a DATA DIRECTORY or a bug could reach
            account = _server_account()
            user = [f"--user={account}"]
            if account != "root":
                shutil.chown(self.root, account, account)
        (self.root / "files").mkdir(exist_ok=True)
        if user and user[0] != "--user=root":
            shutil.chown(self.root / "files", user[0][7:], user[0][7:])
        subprocess.run([install, "--no-defaults", f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
                        "--skip-test-db", *user], check=True, capture_output=True)
        self.log = open(self.root / "server.log", "wb")
        self.proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.sock}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--pid-file={self.root / 'mysqld.pid'}", f"--secure-file-priv={self.root / 'files'}",
             *SERVER_FLAGS, *user],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + startup_timeout
        _pymysql()
        while True:
            if self.proc.poll() is not None:
                raise HarnessError(f"mariadb backend: server exited at start (see {self.root / 'server.log'})")
            try:
                pymysql.connect(unix_socket=str(self.sock), user="root", password="", ssl_disabled=True).close()
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    self.close()
                    raise HarnessError(f"mariadb backend: server not ready after {startup_timeout}s") from None
                time.sleep(0.1)
        atexit.register(self.close)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


class MariaDBDockerServer:
    """mariadbd in a container (network none); the harness reaches it through a socket in a bind mount."""

    def __init__(self, startup_timeout: float = 60.0):
        _pymysql()
        image = ensure_image(ensure_rootfs(packages=("mariadb-server",)))
        self.root = Path(tempfile.mkdtemp(prefix="cycleqd-mariadb-docker-"))
        self.root.chmod(0o777)
        self.sock = self.root / "mysqld.sock"
        script = ("mkdir -p /var/lib/cqd-files && mariadb-install-db --no-defaults --user=root --datadir=/var/lib/cqd "
                  "--auth-root-authentication-method=normal --skip-test-db >/dev/null && exec mariadbd --no-defaults "
                  "--user=root --datadir=/var/lib/cqd --socket=/run/cqd/mysqld.sock --skip-networking "
                  "--secure-file-priv=/var/lib/cqd-files " + " ".join(SERVER_FLAGS))
        self.container = start_container(
            client(), image, ["sh", "-c", script], network_mode="none", mem_limit=1 << 30, pids_limit=512,
            volumes={str(self.root): {"bind": "/run/cqd", "mode": "rw"}}, labels=owner_labels())
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                pymysql.connect(unix_socket=str(self.sock), user="root", password="", ssl_disabled=True).close()
                break
            except pymysql.err.OperationalError:
                self.container.reload()
                if self.container.status == "exited" or time.monotonic() > deadline:
                    logs = self.container.logs()[-300:]
                    self.close()
                    raise HarnessError(f"mariadb backend: the container did not start: {logs!r}") from None
                time.sleep(0.2)
        atexit.register(self.close)

    def close(self) -> None:
        discard(self.container)
        shutil.rmtree(self.root, ignore_errors=True)


class MariaDBDatabase(SQLDatabase):
    def __init__(self, backend: "MariaDBBackend", table: TableSpec, tag: str):
        self.backend = backend
        digest = hashlib.sha1(f"{tag}:{os.getpid()}:{secrets.token_hex(4)}".encode()).hexdigest()[:12]
        self.db, self.user, self.pw = f"cqd_{digest}", f"cqd_{digest}", secrets.token_hex(12)
        self.failure: SQLResult | None = None
        self.conn = None
        # socket clients are 'localhost'; a server at a URL is reached over TCP ('%')
        self.hosts = ("localhost",) if backend.socket else ("%", "localhost")
        table.validate()
        try:
            admin = backend.admin()
            with admin.cursor() as c:
                c.execute(f"CREATE DATABASE {quote_ident(self.db)} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
                for host in self.hosts:
                    c.execute(f"CREATE USER '{self.user}'@'{host}' IDENTIFIED BY '{self.pw}'")
                    c.execute(f"GRANT {SAMPLE_PRIVILEGES} ON {quote_ident(self.db)}.* TO '{self.user}'@'{host}'")
                cols = ", ".join(f"{quote_ident(col)} TEXT" for col in table.columns)
                try:
                    c.execute(f"CREATE TABLE {quote_ident(self.db)}.{quote_ident(table.name)} ({cols})")
                    if table.rows:
                        marks = ", ".join(["%s"] * len(table.columns))
                        c.executemany(f"INSERT INTO {quote_ident(self.db)}.{quote_ident(table.name)} VALUES ({marks})",
                                      [tuple(None if v is None else str(v) for v in r) for r in table.rows])
                    admin.commit()
                except pymysql.err.MySQLError as exc:
                    if isinstance(exc, pymysql.err.OperationalError) and exc.args and exc.args[0] in _LOST:
                        raise
                    self._drop()
                    raise TableBuildError(f"table {table.name!r}: {exc}") from None
            self.conn = self._connect()
        except pymysql.err.MySQLError as exc:
            raise SQLBackendError(f"mariadb backend: {exc}") from None

    def _connect(self):
        """A session of the sample's user with the statement time limit (the model may lift it; the
        harness's read timeout still holds)."""
        conn = pymysql.connect(**self.backend.address(), user=self.user, password=self.pw, database=self.db,
                               charset="utf8mb4", autocommit=False, read_timeout=self.backend.timeout_s + GRACE_S,
                               write_timeout=self.backend.timeout_s + GRACE_S)
        with conn.cursor() as c:
            c.execute(f"SET SESSION max_statement_time = {float(self.backend.timeout_s)}")
        return conn

    def _end_sessions(self, kill: bool = True) -> None:
        """The sample's session ends: closed, and killed on the server (``kill``) when it may still be
        running something or hold a transaction (its thread ids only grow, so no other session is hit)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        tid = conn.thread_id()
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - the connection may be dead already
            pass
        if kill:
            with self.backend.admin().cursor() as c:
                try:
                    c.execute(f"KILL CONNECTION {int(tid)}")
                except pymysql.err.MySQLError as exc:
                    if exc.args and exc.args[0] != 1094:  # 1094: unknown thread, it is gone already
                        raise

    def _lost(self, exc) -> SQLResult:
        """The session died under a statement: the harness's read timeout (the model lifted
        max_statement_time) or the server itself."""
        try:
            self._end_sessions()
        except pymysql.err.MySQLError as admin_exc:
            self.failure = SQLResult(error=f"mariadb backend: the server does not answer: {admin_exc}",
                                     status=SQLStatus.ENV_ERROR)
            return self.failure
        self.failure = SQLResult(error=f"statement killed: it outlived the {self.backend.timeout_s:g}s time limit",
                                 status=SQLStatus.TIMEOUT)
        return self.failure

    def execute(self, sql: str) -> SQLResult:
        if self.failure is not None:
            return self.failure
        error = None
        if self.conn is None:  # the judge or a reset ended the previous session
            try:
                self.conn = self._connect()
            except pymysql.err.MySQLError as exc:  # e.g. the model changed its own password
                return SQLResult(error=f"the session could not be reopened: {_message(exc)}")
        try:
            with self.conn.cursor(pymysql.cursors.SSCursor) as c:  # streamed: never more in memory than kept
                c.execute(sql)
                rows = self._fetch(c, MAX_FETCH_ROWS) if c.description else []
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in _LOST:
                return self._lost(exc)
            error = exc
        except pymysql.err.MySQLError as exc:
            error = exc
        try:
            self.conn.commit() if error is None else self.conn.rollback()
        except pymysql.err.MySQLError as exc:
            # a transaction the harness cannot end (XA START ...): the session goes before it can be prepared
            # and outlive it
            try:
                self._end_sessions()
            except pymysql.err.MySQLError as admin_exc:
                return self._lost(admin_exc)
            return SQLResult(error=_message(error or exc) + " (the session was reset)")
        if error is not None:
            return SQLResult(error=_message(error))
        return SQLResult(rows=[tuple(r) for r in rows])

    def _fetch(self, cursor, max_rows: int | None) -> list[tuple] | None:
        """At most ``max_rows`` rows and MAX_RESULT_BYTES of values from a streamed result; the rest of a
        longer result is cut by killing the query (a stream without end would otherwise be drained
        forever). None when the bytes ran out and ``max_rows`` is None (the judge: all or nothing)."""
        rows, size = [], 0
        while max_rows is None or len(rows) < max_rows:
            r = cursor.fetchone()
            if r is None:
                return rows
            size += sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in r)
            if size > MAX_RESULT_BYTES:
                break
            rows.append(tuple(r))
        with self.backend.admin().cursor() as c:
            c.execute(f"KILL QUERY {int(cursor.connection.thread_id())}")
        try:
            cursor.close()  # reads what was sent before the kill, then the interruption
        except pymysql.err.MySQLError:
            pass
        return rows if max_rows is not None else None

    def table_rows(self, table: TableSpec) -> list[tuple]:
        """Read after the sample's sessions are gone, as data only: the judged table must still be a base
        table and the database must hold no routine, trigger or event; then a fresh session of the sample's
        own user reads it (so nothing runs with more rights than the sample's)."""
        try:
            self._end_sessions(kill=False)  # a session between statements runs nothing: closing ends it
            with self.backend.admin().cursor() as c:
                c.execute("SELECT (SELECT GROUP_CONCAT(TABLE_TYPE) FROM information_schema.TABLES "
                          "WHERE TABLE_SCHEMA = %s AND BINARY TABLE_NAME = %s),"
                          " (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s)"
                          " + (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s)"
                          " + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s)",
                          (self.db, table.name, self.db, self.db, self.db))
                kinds_csv, code_objects = c.fetchone()
        except pymysql.err.MySQLError as exc:
            raise SQLBackendError(f"mariadb backend: {exc}") from None
        kinds = kinds_csv.split(",") if kinds_csv else []
        if kinds != ["BASE TABLE"]:
            raise TableReadError(f"the judged table {table.name!r} is " + (f"a {kinds[0].lower()}" if kinds else "gone"))
        if code_objects:
            raise TableReadError("the sample's database holds a routine, trigger or event: not judged")
        cols = ", ".join(quote_ident(c) for c in table.columns)
        try:
            conn = self._connect()
        except pymysql.err.MySQLError as exc:  # e.g. the model changed its own password
            raise TableReadError(f"cannot read the judged table as the sample's user: {exc}") from None
        try:
            with conn.cursor(pymysql.cursors.SSCursor) as c:
                c.execute(f"SELECT {cols} FROM {quote_ident(self.db)}.{quote_ident(table.name)}")
                rows = self._fetch(c, None)
        except pymysql.err.MySQLError as exc:
            raise TableReadError(_message(exc)) from None
        finally:
            conn.close()
        if rows is None:
            raise TableReadError(f"the judged table {table.name!r} holds more than {MAX_RESULT_BYTES} bytes")
        return rows

    def _drop(self) -> None:
        admin = self.backend.admin()
        with admin.cursor() as c:
            c.execute(f"DROP DATABASE IF EXISTS {quote_ident(self.db)}")
            accounts = ", ".join(f"'{self.user}'@'{h}'" for h in self.hosts)
            c.execute(f"DROP USER IF EXISTS {accounts}")
        admin.commit()

    def close(self) -> None:
        """Sessions killed, then the database and the user dropped. A lock that outlives the sessions (a
        prepared XA transaction) is rolled back on a private server; failing all that, the database is
        left behind with a warning rather than the run stopped."""
        try:
            self._end_sessions(kill=False)
            self._drop()
            return
        except pymysql.err.MySQLError as exc:
            first = exc
        try:
            if self.backend.server is not None:
                self.backend.rollback_prepared_xa()
            self._drop()
        except pymysql.err.MySQLError:
            warnings.warn(f"mariadb backend: could not drop {self.db}: {_message(first)}", stacklevel=2)


def _message(exc) -> str:
    code, msg = (exc.args + ("",))[:2] if exc.args else ("", str(exc))
    return f"{code}: {msg}" if code != "" else str(msg)


class MariaDBBackend(SQLBackend):
    """``url``: ``mysql://user:pass@host:port/`` of an admin account. Without one, a private server:
    ``server="local"`` (Debian's mariadbd on this machine) or ``server="docker"`` (in a container)."""

    name = "mariadb"

    def __init__(self, url: str | None = None, timeout_s: float = 5.0, server: str = "local"):
        _pymysql()
        if server not in ("local", "docker"):
            raise HarnessError(f"mariadb backend: server must be 'local' or 'docker', got {server!r}")
        self.server = None if url else (MariaDBServer() if server == "local" else MariaDBDockerServer())
        self.socket = str(self.server.sock) if self.server is not None else None
        u = urlparse(url or "mysql://root:@127.0.0.1:3306/")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 3306
        self.admin_user, self.admin_pw = unquote(u.username or "root"), unquote(u.password or "")
        self.timeout_s = timeout_s
        self._admin = None

    def admin(self):
        if self._admin is not None:
            try:
                self._admin.ping()
                return self._admin
            except pymysql.err.MySQLError:
                self._admin = None
        self._admin = pymysql.connect(**self.address(), user=self.admin_user,
                                      password=self.admin_pw, charset="utf8mb4", autocommit=False)
        with self._admin.cursor() as c:
            c.execute(f"SET SESSION lock_wait_timeout = {ADMIN_LOCK_WAIT_S}, "
                      f"innodb_lock_wait_timeout = {ADMIN_LOCK_WAIT_S}")
        return self._admin

    def rollback_prepared_xa(self) -> None:
        """Roll back every prepared XA transaction (they outlive their session and hold their locks); only
        on a private server, where all of them are the samples'."""
        with self.admin().cursor() as c:
            c.execute("XA RECOVER FORMAT='SQL'")
            for row in c.fetchall():
                c.execute(f"XA ROLLBACK {row[3]}")

    def address(self) -> dict:
        """Where to connect. A private server's unix socket goes without TLS: PyMySQL 2.2 would otherwise
        try it on every connection and build a TLS context each time (~50 ms: most of a sample's cost)."""
        if self.socket:
            return {"unix_socket": self.socket, "ssl_disabled": True}
        return {"host": self.host, "port": self.port}

    def create(self, table: TableSpec, tag: str) -> MariaDBDatabase:
        return MariaDBDatabase(self, table, tag)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
        if self.server is not None:
            self.server.close()
