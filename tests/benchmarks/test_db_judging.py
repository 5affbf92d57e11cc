"""Cost of judging the DB family on SQLite out of the harness's process, as a ratio to the same work done
in-process in the same run.

The gold replay of DBBench (360 samples: 240 with a statement and an md5 judgement) through the real domain,
and the same statements and table reads on in-process ``sqlite3`` connections (the pre-issue-13 design,
without its isolation). Every statement is now a round trip to a worker process: ~0.1 ms on a quiet pair of
cores, up to ~1 ms when they are shared with other jobs, so the bound is loose; the absolute bound is what
matters next to a model's turn.
"""

import sqlite3
import time

import pytest

from domains.db import MODIFY, DBDomain, DBParams, scripted_agent
from envs.sql.base import TableSpec, quote_ident
from envs.sql.dialect import mysql_to_sqlite
from harness.domain import DomainContext
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA / "agentbench_db" / "dbbench.jsonl"


def _in_process(samples) -> float:
    t0 = time.perf_counter()
    for s in samples:
        if s["type"][0] not in MODIFY:
            continue
        t = TableSpec.from_sample(s["table"])
        try:
            t.validate()
        except Exception:  # noqa: BLE001 - the unbuildable tables, skipped by the domain too
            continue
        c = sqlite3.connect(":memory:", isolation_level=None)
        c.execute(f"CREATE TABLE {quote_ident(t.name)} ({', '.join(quote_ident(x) + ' TEXT' for x in t.columns)})")
        c.executemany(f"INSERT INTO {quote_ident(t.name)} VALUES ({', '.join('?' * len(t.columns))})",
                      [tuple(None if v is None else str(v) for v in r) for r in t.rows])
        try:
            c.execute(mysql_to_sqlite(s["label"][0])).fetchmany(1000)
        except sqlite3.Error:
            pass
        c.execute(f"SELECT * FROM {quote_ident(t.name)}").fetchall()
        c.close()
    return time.perf_counter() - t0


def test_sqlite_judging_cost():
    if not DATA.exists():
        pytest.skip(f"{DATA} not found")
    d = DBDomain(task="db", ctx=DomainContext(None, 0, SHARED_DATA), params=DBParams())
    d.setup()
    d.run(scripted_agent("gold"))  # warm-up: the worker and its first children
    ours = min(_timed(d) for _ in range(3))
    ref = min(_in_process(d.samples()) for _ in range(3))
    n = sum(s["type"][0] in MODIFY for s in d.samples())
    print(f"\nDB gold replay: {ours * 1000:.0f} ms out of process vs {ref * 1000:.0f} ms in-process "
          f"({ours / ref:.1f}x; {ours / n * 1000:.2f} ms per judged sample)")
    assert ours / ref < 40


def _timed(d) -> float:
    t0 = time.perf_counter()
    r = d.run(scripted_agent("gold"))
    assert r.status_counts().get("solved", 0) >= 350
    return time.perf_counter() - t0
