"""SQL backends for the DB domain: one fresh database per sample, hostile statements contained.

Backends are found by name through ``harness.registry.SQL_BACKENDS`` (``SQL_BACKENDS.get(kind)(**params)``).
"""

from envs.sql.base import SQLBackend, SQLDatabase, SQLResult, TableSpec

__all__ = ["SQLBackend", "SQLDatabase", "SQLResult", "TableSpec"]
