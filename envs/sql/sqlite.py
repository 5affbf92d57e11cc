"""SQLite backend (the embedded default): an in-memory database per sample.

Containment: an authorizer denies ATTACH / DETACH (the only way SQLite statements reach files) and
extension loading stays disabled; a progress handler aborts any statement after ``timeout_s``; results
are fetched up to MAX_FETCH_ROWS. MySQL-only functions the reference statements use are registered as
user functions with MySQL's semantics.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
import time
import unicodedata

from envs.sql.base import MAX_FETCH_ROWS, SQLBackend, SQLDatabase, SQLResult, TableBuildError, TableSpec, quote_ident
from envs.sql.dialect import mysql_to_sqlite

_DENY = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}


def _authorizer(action, arg1, arg2, dbname, source):
    if action in _DENY:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and arg2 and arg2.lower() == "load_extension":
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _concat_ws(sep, *args):
    if sep is None:
        return None
    return str(sep).join(str(a) for a in args if a is not None)


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


def _concat(*args):
    return None if any(a is None for a in args) else "".join(str(a) for a in args)


class SQLiteDatabase(SQLDatabase):
    def __init__(self, table: TableSpec, timeout_s: float, dialect: str = "mysql"):
        self.dialect = dialect
        self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.timeout_s = timeout_s
        self._deadline = float("inf")
        self.conn.create_function("md5", 1, _md5, deterministic=True)
        self.conn.create_function("concat_ws", -1, _concat_ws, deterministic=True)
        self.conn.create_function("concat", -1, _concat, deterministic=True)
        self.conn.create_collation("mysql_ci", mysql_collation)
        cols = ", ".join(f"{quote_ident(c)} TEXT COLLATE mysql_ci" for c in table.columns)
        try:
            table.validate()
            self.conn.execute(f"CREATE TABLE {quote_ident(table.name)} ({cols})")
            marks = ", ".join("?" * len(table.columns))
            self.conn.executemany(f"INSERT INTO {quote_ident(table.name)} VALUES ({marks})",
                                  [tuple(None if v is None else str(v) for v in r) for r in table.rows])
        except TableBuildError:
            self.conn.close()
            raise
        except sqlite3.Error as exc:
            self.conn.close()
            raise TableBuildError(f"table {table.name!r}: {exc}") from None
        self.conn.set_authorizer(_authorizer)
        self.conn.set_progress_handler(self._progress, 10_000)

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def execute(self, sql: str) -> SQLResult:
        self._deadline = time.monotonic() + self.timeout_s
        try:
            cur = self.conn.execute(mysql_to_sqlite(sql) if self.dialect == "mysql" else sql)
            rows = cur.fetchmany(MAX_FETCH_ROWS) if cur.description else []
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")
            return SQLResult(rows=[tuple(r) for r in rows])
        except sqlite3.Warning as exc:  # e.g. "You can only execute one statement at a time."
            return SQLResult(error=str(exc))
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            msg = "statement interrupted: time limit exceeded" if "interrupted" in str(exc) else str(exc)
            return SQLResult(error=msg)
        finally:
            self._deadline = float("inf")

    def table_rows(self, table: TableSpec) -> list[tuple]:
        cols = ", ".join(quote_ident(c) for c in table.columns)
        return [tuple(r) for r in self.conn.execute(f"SELECT {cols} FROM {quote_ident(table.name)}")]

    def close(self) -> None:
        self.conn.close()


class SQLiteBackend(SQLBackend):
    name = "sqlite"

    def __init__(self, timeout_s: float = 5.0, dialect: str = "mysql"):
        if dialect not in ("mysql", "sqlite"):
            raise ValueError(f"sqlite backend: dialect must be 'mysql' or 'sqlite', got {dialect!r}")
        self.timeout_s, self.dialect = timeout_s, dialect

    def create(self, table: TableSpec, tag: str) -> SQLiteDatabase:
        return SQLiteDatabase(table, self.timeout_s, self.dialect)
