"""MariaDB / MySQL backend: a private server (Debian's package here, or in a Docker container), or a URL.

Each sample gets its own database and its own user, granted privileges on that database only, so a
model's ``DROP DATABASE`` of anything else, ``SHUTDOWN``, ``LOAD_FILE`` or ``INTO OUTFILE`` is refused by
the server itself; ``max_statement_time`` bounds every statement. The harness's admin connection builds
and drops the database and the user.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from envs.docker_engine import client, ensure_image, owner_labels
from envs.rootfs import ensure_rootfs
from envs.sql.base import MAX_FETCH_ROWS, SQLBackend, SQLDatabase, SQLResult, TableBuildError, TableSpec, quote_ident
from harness.errors import HarnessError

try:
    import pymysql  # optional: the 'envs' extra (MySQL client)
except ImportError:  # pragma: no cover - MariaDBBackend reports it
    pymysql = None


def _pymysql():
    if pymysql is None:
        raise HarnessError("mariadb backend: pymysql is not installed (pip install '.[envs]')")
    return pymysql


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run([install, "--no-defaults", f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
                        "--skip-test-db", *user], check=True, capture_output=True)
        self.log = open(self.root / "server.log", "wb")
        self.proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.sock}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--pid-file={self.root / 'mysqld.pid'}", f"--secure-file-priv={self.root / 'files'}",
             "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci", "--skip-log-bin",
             "--innodb-buffer-pool-size=64M", "--max-connections=500", *user],
            stdout=self.log, stderr=subprocess.STDOUT)
        (self.root / "files").mkdir(exist_ok=True)
        deadline = time.monotonic() + startup_timeout
        _pymysql()
        while True:
            if self.proc.poll() is not None:
                raise HarnessError(f"mariadb backend: server exited at start (see {self.root / 'server.log'})")
            try:
                pymysql.connect(unix_socket=str(self.sock), user="root", password="").close()
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
        script = ("mariadb-install-db --no-defaults --user=root --datadir=/var/lib/cqd "
                  "--auth-root-authentication-method=normal --skip-test-db >/dev/null && exec mariadbd --no-defaults "
                  "--user=root --datadir=/var/lib/cqd --socket=/run/cqd/mysqld.sock --skip-networking "
                  "--character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci --skip-log-bin "
                  "--innodb-buffer-pool-size=64M --max-connections=500")
        self.container = client().containers.run(
            image, ["sh", "-c", script], detach=True, network_mode="none", mem_limit=1 << 30, pids_limit=512,
            volumes={str(self.root): {"bind": "/run/cqd", "mode": "rw"}}, labels=owner_labels())
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                pymysql.connect(unix_socket=str(self.sock), user="root", password="").close()
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
        try:
            self.container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class MariaDBDatabase(SQLDatabase):
    def __init__(self, backend: "MariaDBBackend", table: TableSpec, tag: str):
        self.backend = backend
        digest = hashlib.sha1(f"{tag}:{os.getpid()}:{secrets.token_hex(4)}".encode()).hexdigest()[:12]
        self.db, self.user, pw = f"cqd_{digest}", f"cqd_{digest}", secrets.token_hex(12)
        table.validate()
        admin = backend.admin()
        with admin.cursor() as c:
            c.execute(f"CREATE DATABASE {quote_ident(self.db)} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
            for host in ("%", "localhost"):  # TCP clients and socket clients
                c.execute(f"CREATE USER '{self.user}'@'{host}' IDENTIFIED BY '{pw}'")
                c.execute(f"GRANT ALL PRIVILEGES ON {quote_ident(self.db)}.* TO '{self.user}'@'{host}'")
            cols = ", ".join(f"{quote_ident(col)} TEXT" for col in table.columns)
            try:
                c.execute(f"CREATE TABLE {quote_ident(self.db)}.{quote_ident(table.name)} ({cols})")
                if table.rows:
                    marks = ", ".join(["%s"] * len(table.columns))
                    c.executemany(f"INSERT INTO {quote_ident(self.db)}.{quote_ident(table.name)} VALUES ({marks})",
                                  [tuple(None if v is None else str(v) for v in r) for r in table.rows])
                admin.commit()
            except pymysql.err.MySQLError as exc:
                self._drop()
                raise TableBuildError(f"table {table.name!r}: {exc}") from None
        self.conn = pymysql.connect(**backend.address(), user=self.user, password=pw,
                                    database=self.db, charset="utf8mb4", autocommit=False,
                                    read_timeout=backend.timeout_s + 5, write_timeout=backend.timeout_s + 5)
        with self.conn.cursor() as c:
            c.execute(f"SET SESSION max_statement_time = {float(backend.timeout_s)}")

    def execute(self, sql: str) -> SQLResult:
        try:
            with self.conn.cursor() as c:
                c.execute(sql)
                rows = c.fetchmany(MAX_FETCH_ROWS) if c.description else []
            self.conn.commit()
            return SQLResult(rows=[tuple(r) for r in rows])
        except pymysql.err.MySQLError as exc:
            try:
                self.conn.rollback()
            except pymysql.err.MySQLError:
                pass
            code, msg = (exc.args + ("",))[:2] if exc.args else ("", str(exc))
            return SQLResult(error=f"{code}: {msg}" if code != "" else str(msg))

    def table_rows(self, table: TableSpec) -> list[tuple]:
        cols = ", ".join(quote_ident(c) for c in table.columns)
        with self.backend.admin().cursor() as c:
            c.execute(f"SELECT {cols} FROM {quote_ident(self.db)}.{quote_ident(table.name)}")
            return [tuple(r) for r in c.fetchall()]

    def _drop(self) -> None:
        with self.backend.admin().cursor() as c:
            c.execute(f"DROP DATABASE IF EXISTS {quote_ident(self.db)}")
            c.execute(f"DROP USER IF EXISTS '{self.user}'@'%'")
            c.execute(f"DROP USER IF EXISTS '{self.user}'@'localhost'")
        self.backend.admin().commit()

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - the connection may be dead already
            pass
        self._drop()


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
        return self._admin

    def address(self) -> dict:
        return {"unix_socket": self.socket} if self.socket else {"host": self.host, "port": self.port}

    def create(self, table: TableSpec, tag: str) -> MariaDBDatabase:
        return MariaDBDatabase(self, table, tag)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
        if self.server is not None:
            self.server.close()
