"""SQL backends for the DB domain: one fresh database per sample, hostile statements contained."""

from envs.sql.base import SQLBackend, SQLDatabase, SQLResult, TableSpec, get_backend

__all__ = ["SQLBackend", "SQLDatabase", "SQLResult", "TableSpec", "get_backend"]
