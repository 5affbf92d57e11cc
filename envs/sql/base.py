"""The SQL backend interface and the MySQL-semantics table hash shared by every backend.

A backend hands out one fresh database per sample, built from the sample's table (every column TEXT, the
values inserted as ``str(value)``, as AgentBench's builder does). Statements come from the model and are
hostile: each backend bounds their time and the rows fetched, and confines them to that one database.
"""

from __future__ import annotations

import enum
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

MAX_FETCH_ROWS = 1000  # observations are cut at 800 characters; 1000 rows always exceed that
GROUP_CONCAT_MAX_LEN = 1024  # MySQL's default group_concat_max_len (bytes)


class TableBuildError(Exception):
    """The sample's table cannot be created (e.g. duplicate column names): a harness-side failure."""


class SQLBackendError(Exception):
    """The backend itself failed (a worker that cannot start, a server that does not answer): a
    harness-side failure, never the model's."""


class TableReadError(Exception):
    """The judge cannot read the sample's table as a plain table (dropped, turned into a view, too large,
    too slow): the model's doing, judged as a wrong answer."""


class SQLStatus(str, enum.Enum):
    """How a statement ended. Only OK lets the episode go on: the others mean the sample's statement broke
    out of its soft limits and its database is gone or untrusted, which is the model's failure (ENV_ERROR
    apart)."""

    OK = "ok"  # rows, or an SQL error the model reads and may recover from
    TIMEOUT = "timeout"  # outlived the hard time limit: the worker / connection was killed
    MEMORY = "memory"  # the worker ran out of memory
    CRASHED = "crashed"  # the worker died (a signal) or answered outside the protocol
    ENV_ERROR = "env_error"  # the backend failed for reasons of its own: a harness problem


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def validate(self) -> None:
        """What MySQL (and so AgentBench's builder) rejects: empty or duplicate column names (MySQL
        compares names case-insensitively) and rows whose length differs from the columns'."""
        seen: set[str] = set()
        for c in self.columns:
            if not c.strip():
                raise TableBuildError(f"table {self.name!r}: empty column name")
            if c.lower() in seen:
                raise TableBuildError(f"table {self.name!r}: duplicate column name {c!r}")
            seen.add(c.lower())
        for i, r in enumerate(self.rows):
            if len(r) != len(self.columns):
                raise TableBuildError(f"table {self.name!r}: row {i} has {len(r)} values for {len(self.columns)} columns")

    @classmethod
    def from_sample(cls, table: dict) -> "TableSpec":
        info = table["table_info"]
        return cls(table["table_name"], tuple(c["name"] for c in info["columns"]),
                   tuple(tuple(r) for r in info.get("rows", [])))


@dataclass
class SQLResult:
    """Rows (a list of tuples) or an error message, never both; ``status`` says whether the database is
    still usable (OK) or the statement ended the sample."""

    rows: list[tuple] | None = None
    error: str | None = None
    status: SQLStatus = SQLStatus.OK

    def observation(self) -> str:
        """What the agent sees: ``str()`` of the rows, or the error text."""
        return self.error if self.error is not None else str(self.rows)


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def mysql_table_md5(rows: Sequence[Sequence[Any]]) -> str:
    """``md5(group_concat(rowhash ORDER BY rowhash))``, rowhash = ``substring(md5(concat_ws(',', cols)), 1, 5)``.

    MySQL semantics: concat_ws skips NULLs; group_concat joins with "," and is cut at
    group_concat_max_len (1024) bytes; md5 returns lowercase hex. Computed in Python from the table's rows
    so that SQLite and MariaDB are judged by the very same code.
    """
    hashes = []
    for row in rows:
        joined = ",".join(_text(v) for v in row if v is not None)
        hashes.append(hashlib.md5(joined.encode("utf-8")).hexdigest()[:5])
    if not hashes:
        return "NULL"  # md5(NULL) on an empty table
    blob = ",".join(sorted(hashes)).encode("utf-8")[:GROUP_CONCAT_MAX_LEN]
    return hashlib.md5(blob).hexdigest()


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return str(v)


class SQLDatabase(ABC):
    """One sample's database."""

    @abstractmethod
    def execute(self, sql: str) -> SQLResult:
        """Run one statement, commit, fetch at most MAX_FETCH_ROWS rows."""

    @abstractmethod
    def table_rows(self, table: TableSpec) -> list[tuple]:
        """Every row of the sample's table, in table column order (for the md5 judge), read as data only:
        raises TableReadError when the name no longer holds a plain table (a view, a routine in the way)
        and SQLBackendError when the backend fails."""

    def table_md5(self, table: TableSpec) -> str:
        return mysql_table_md5(self.table_rows(table))

    @abstractmethod
    def close(self) -> None:
        """Drop the database and release its connection."""


class SQLBackend(ABC):
    """Hands out one fresh database per sample. Registered in ``harness.registry.SQL_BACKENDS`` and built
    as ``cls(**backend_params)`` (a task's ``backend_params``): ``sqlite`` (``envs.sql.sqlite``) and
    ``mariadb`` / ``mysql`` (``envs.sql.mariadb``)."""

    name = "sql"

    @abstractmethod
    def create(self, table: TableSpec, tag: str) -> SQLDatabase:
        """A fresh database holding ``table``; raises TableBuildError when the table cannot be built."""

    def close(self) -> None:  # noqa: B027
        pass

