"""The SQL attack corpus: what a model could send to its database, against every backend it applies to.

Each attack is a few statements of one sample, in a class of issue 13 (crash the judge, lift limits, fake
success, rewrite the evidence, poison the next sample, change server-wide state, escape). Whatever the
attack, ``run_attack`` checks what must hold on every backend: each statement answers within its hard limit
with a status (never an exception), the harness process does not grow, no file appears on the host, the
judge reads the sample's table as data or refuses it, closing is quick, the next sample's database behaves
like a fresh one (same md5, a statement needing memory still runs), and on MariaDB the server is as it was:
``SHOW GLOBAL VARIABLES``, users, databases, routines, events and prepared XA transactions. The README's
security section counts the attacks by class and backend (``test_readme_counts_the_corpus``).
"""

from __future__ import annotations

import glob
import os
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import pytest

from envs.sql.base import SQLResult, SQLStatus, TableReadError, TableSpec, mysql_table_md5
from envs.sql.sqlite import GRACE_S as SQLITE_GRACE_S
from envs.sql.sqlite import SQLiteBackend
from tests.conftest import REPO

TABLE = TableSpec("my table", ("Name", "Score"), (("Ann", "1"), ("Bob", None), ("Émile ", "3")))
TIMEOUT_S = 1.0
HOST_FILES = "/tmp/cycleqd_pwned*"
BACKENDS = ("sqlite", "mariadb", "mariadb-docker")
ALL = ("sqlite", "mariadb")  # "mariadb" runs on the local server and in Docker


@dataclass
class Attack:
    name: str
    cls: str  # crash | limits | fake | evidence | poison | server | escape
    statements: list | dict  # one list for every backend, or {"sqlite": [...], "mariadb": [...]}
    applies: tuple = ALL
    check: Callable | None = None  # check(ctx): what this attack must not achieve
    origin: str = "new"  # "issue 13" for the reproductions of the issue
    plant: Callable | None = None  # plant(backend, db): set-up as the admin (what a lax server would allow)
    results: list = field(default_factory=list)


def _errors(*names):
    def check(ctx):
        for i in names:
            assert ctx.results[i].error is not None, f"statement {i} ran: {ctx.results[i]}"
    return check


def _judge_refuses(ctx):
    with pytest.raises(TableReadError):
        ctx.db.table_rows(TABLE)


def _judge_reads_the_original(ctx):
    assert ctx.db.table_rows(TABLE) == list(TABLE.rows)


def _no_pointer(ctx):
    for r in ctx.results:
        assert r.error is not None or all(not isinstance(v, bytes) for row in r.rows for v in row)


def _timeout_or_error(ctx):
    r = ctx.results[0]
    assert r.error is not None and r.status in (SQLStatus.OK, SQLStatus.TIMEOUT), r


def _capped_session_memory(ctx):
    if ctx.kind == "mariadb":
        assert ctx.results[1].rows[0][0] <= 64 << 20


def _rows_cut(ctx):
    r = ctx.results[0]
    assert r.error is not None or sum(len(v or b"") for row in r.rows for v in row) <= 32 << 20


def _denied(*idx):
    def check(ctx):
        for i in idx:
            r = ctx.results[i]
            assert r.error is not None, f"statement {i} ran: {r}"
            if ctx.kind == "mariadb":
                assert re.search(r"denied|1044|1142|1227|1370|1064", r.error), r.error
    return check


def _plant_routine(backend, db):
    """As if the sample's user could create routines: the judge must still refuse the table."""
    with backend.admin().cursor() as c:
        c.execute(f"CREATE FUNCTION `{db.db}`.pwn() RETURNS INT SQL SECURITY INVOKER "
                  "BEGIN SET GLOBAL max_connections = 7; RETURN 1; END")
    backend.admin().commit()


def _admin_thread(ctx_backend):
    return ctx_backend.admin().thread_id()


ISSUE_VIEW = ["CREATE FUNCTION pwn() RETURNS INT SQL SECURITY INVOKER BEGIN SET GLOBAL max_connections = 7; "
              "RETURN 1; END",
              "RENAME TABLE `my table` TO `orig`",
              "CREATE SQL SECURITY INVOKER VIEW `my table` AS SELECT * FROM `orig` WHERE pwn() = 1"]

ATTACKS = [
    # -- issue 13, item 5 (SQLite in the harness process) and item 6 (MariaDB as root)
    Attack("fts3_tokenizer_segfault", "crash", ["SELECT fts3_tokenizer('evil', X'4141414141414141')",
                                                "CREATE VIRTUAL TABLE v USING fts3(x, tokenize=evil)",
                                                "INSERT INTO v VALUES ('boom')"],
           check=_errors(0, 1, 2), origin="issue 13"),
    Attack("fts3_tokenizer_pointer_leak", "escape", ["SELECT fts3_tokenizer('simple')",
                                                     "SELECT hex(fts3_tokenizer('porter'))"],
           check=_no_pointer, origin="issue 13"),
    Attack("hard_heap_limit_poisons_next", "poison", ["PRAGMA hard_heap_limit=1500000", "PRAGMA soft_heap_limit=1000"],
           check=_errors(0, 1), origin="issue 13"),
    Attack("one_statement_past_the_limit", "limits",
           {"sqlite": ["SELECT length(printf('%.*c', 1000000000, 'x'))"],
            "mariadb": ["SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(100)"]},
           check=_timeout_or_error, origin="issue 13"),
    Attack("invoker_view_calls_set_global", "server", ISSUE_VIEW, applies=("mariadb",),
           check=lambda ctx: (_denied(0)(ctx), _judge_refuses(ctx)), origin="issue 13"),
    # -- new: crash the judge
    Attack("result_bomb", "crash",
           {"sqlite": ["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000) "
                       "SELECT zeroblob(10000000) FROM c"],
            "mariadb": ["SELECT REPEAT('x', 10000000) FROM `my table` a, `my table` b, `my table` c"]},
           check=_rows_cut),
    Attack("nul_in_statement", "crash", ["SELECT 'a\x00b'", "SELECT 1 \x00; DROP TABLE `my table`"],
           check=lambda ctx: ctx.kind != "sqlite" or _errors(0, 1)(ctx)),
    Attack("parser_nesting", "crash", ["SELECT " + "(" * 20000 + "1" + ")" * 20000],
           check=lambda ctx: ctx.kind != "sqlite" or _errors(0)(ctx)),  # MariaDB parses it: harmless
    Attack("change_own_password", "crash", ["SET PASSWORD = PASSWORD('other')",
                                            "ALTER USER CURRENT_USER() IDENTIFIED BY 'other'",
                                            "XA START 'reset'", "SELECT 1"],  # the harness reconnects
           applies=("mariadb",)),
    Attack("kill_the_admin_session", "crash", [lambda b: f"KILL CONNECTION {_admin_thread(b)}",
                                               lambda b: f"KILL QUERY {_admin_thread(b)}"],
           applies=("mariadb",), check=_errors(0, 1)),
    # -- new: lift limits
    Attack("memory_bomb", "limits",
           {"sqlite": ["CREATE TABLE big AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                       "LIMIT 3000000) SELECT randomblob(1000) AS b FROM c"],
            "mariadb": ["CREATE TABLE big ENGINE=MEMORY AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                        "SELECT x + 1 FROM c WHERE x < 3000000) SELECT RANDOM_BYTES(1000) AS b FROM c"]},
           ),
    Attack("session_limits_lifted", "limits", ["SET SESSION max_heap_table_size = 1000000000000",
                                               "SELECT @@max_heap_table_size",
                                               "SET SESSION max_session_mem_used = 1000000000000"],
           check=_capped_session_memory),
    Attack("process_pragmas", "limits", ["PRAGMA threads = 8", "PRAGMA mmap_size = 1000000000",
                                         "PRAGMA temp_store_directory = '/tmp'", "PRAGMA cache_size = -2000000"],
           check=_errors(0, 1, 2, 3)),
    # -- new: fake success
    Attack("view_over_renamed_table", "fake", ["ALTER TABLE `my table` RENAME TO `orig`",
                                               "CREATE VIEW `my table` AS SELECT * FROM `orig` "
                                               "UNION ALL SELECT 'Zed', '9'"],
           check=_judge_refuses),
    Attack("temporary_table_shadows", "fake", ["CREATE TEMPORARY TABLE `my table` AS SELECT 'Zed' AS Name, "
                                               "'9' AS Score"],
           check=_judge_reads_the_original),
    # -- new: rewrite the evidence
    Attack("writable_schema", "evidence", ["PRAGMA writable_schema = ON",
                                           "UPDATE sqlite_master SET sql = 'CREATE TABLE x(y)' "
                                           "WHERE name = 'my table'"],
           check=lambda ctx: (_errors(0, 1)(ctx), _judge_reads_the_original(ctx))),
    Attack("routines_triggers_events", "evidence",
           ["CREATE PROCEDURE p() SET @x = 1",
            "CREATE TRIGGER tr BEFORE INSERT ON `my table` FOR EACH ROW SET NEW.Score = '9'",
            "CREATE EVENT e ON SCHEDULE EVERY 1 SECOND DO DELETE FROM `my table`"],
           check=_denied(0, 1, 2)),
    Attack("planted_routine_refused", "evidence", ["SELECT 1"], applies=("mariadb",), plant=_plant_routine,
           check=_judge_refuses),
    # -- new: poison the next sample
    Attack("prepared_xa_holds_locks", "poison", ["XA START 'cqd'", "INSERT INTO `my table` VALUES ('x', 'y')",
                                                 "XA END 'cqd'", "XA PREPARE 'cqd'"],
           check=_errors(0, 2, 3)),
    Attack("lock_tables", "poison", ["LOCK TABLES `my table` WRITE"], check=_denied(0)),
    Attack("named_lock_held", "poison", ["SELECT GET_LOCK('cqd', 0)"], applies=("mariadb",)),
    # -- new: change server-wide state
    Attack("set_global", "server", ["SET GLOBAL max_connections = 7", "SET @@global.max_statement_time = 1000",
                                    "SET GLOBAL event_scheduler = ON"], check=_errors(0, 1, 2)),
    Attack("accounts_and_grants", "server", ["CREATE USER 'evil'@'%' IDENTIFIED BY 'x'",
                                             "GRANT ALL PRIVILEGES ON *.* TO CURRENT_USER()",
                                             "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('x')"],
           check=_errors(0, 1, 2)),
    Attack("plugins", "server", ["INSTALL SONAME 'ha_connect'", "UNINSTALL SONAME 'auth_ed25519'"],
           check=_errors(0, 1)),
    # -- new: escape (files on the host)
    Attack("vacuum_into_host_file", "escape", ["VACUUM INTO '/tmp/cycleqd_pwned.db'"], check=_errors(0)),
    Attack("data_directory_outside", "escape", ["CREATE TABLE x (a INT) DATA DIRECTORY='/tmp/cycleqd_pwned_dir'",
                                                "INSERT INTO x VALUES (1)"]),
]
BY_NAME = {a.name: a for a in ATTACKS}


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param.startswith("mariadb"):
        b = request.getfixturevalue("mariadb_backend" if request.param == "mariadb" else "mariadb_docker_backend")
        old = b.timeout_s
        b.timeout_s = TIMEOUT_S
        yield b
        b.timeout_s = old
    else:
        yield SQLiteBackend(timeout_s=TIMEOUT_S)


def _rss() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    return 0


def server_state(backend) -> dict:
    """What no sample may change on a MariaDB server (nothing to compare for SQLite)."""
    if isinstance(backend, SQLiteBackend):
        return {}
    admin = backend.admin()
    out = {}
    with admin.cursor() as c:
        for key, sql in (("variables", "SHOW GLOBAL VARIABLES"), ("users", "SELECT User, Host FROM mysql.user"),
                         ("databases", "SHOW DATABASES"), ("xa", "XA RECOVER"),
                         ("routines", "SELECT ROUTINE_SCHEMA, ROUTINE_NAME FROM information_schema.ROUTINES"),
                         ("events", "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS"),
                         ("plugins", "SELECT PLUGIN_NAME, PLUGIN_STATUS FROM information_schema.PLUGINS")):
            c.execute(sql)
            out[key] = sorted(c.fetchall())
    admin.commit()
    return out


@dataclass
class Ctx:
    db: object
    results: list[SQLResult]
    kind: str
    backend: object


def run_attack(backend, attack: Attack) -> None:
    kind = "sqlite" if isinstance(backend, SQLiteBackend) else "mariadb"
    if kind not in attack.applies:
        pytest.skip(f"{attack.name} does not apply to {kind}")
    statements = attack.statements if isinstance(attack.statements, list) else attack.statements[kind]
    hard = TIMEOUT_S + max(SQLITE_GRACE_S, 2.0) + 3.0  # the hard limit plus a busy machine's slack
    before, rss0 = server_state(backend), _rss()
    db = backend.create(TABLE, f"attack-{attack.name}")
    try:
        if attack.plant:
            attack.plant(backend, db)
        results = []
        for sql in statements:
            sql = sql(backend) if callable(sql) else sql
            t0 = time.monotonic()
            r = db.execute(sql)
            assert time.monotonic() - t0 < hard, f"{sql[:60]!r} ran {time.monotonic() - t0:.1f}s"
            assert isinstance(r, SQLResult) and isinstance(r.status, SQLStatus)
            assert r.status != SQLStatus.ENV_ERROR, r  # a model's statement is never the harness's failure
            results.append(r)
            if r.status != SQLStatus.OK:  # the sample is over
                break
        ctx = Ctx(db, results, kind, backend)
        if attack.check:
            attack.check(ctx)
        t0 = time.monotonic()
        try:
            db.table_rows(TABLE)  # the judge: data or a refusal, within the limit
        except TableReadError:
            pass
        assert time.monotonic() - t0 < hard
    finally:
        t0 = time.monotonic()
        db.close()
        assert time.monotonic() - t0 < 15, "closing the sample's database hung"
    assert _rss() - rss0 < 64 << 20, f"the harness grew by {(_rss() - rss0) >> 20} MB"
    assert not glob.glob(HOST_FILES), glob.glob(HOST_FILES)
    assert server_state(backend) == before
    nxt = backend.create(TABLE, "next")
    try:
        assert nxt.table_md5(TABLE) == mysql_table_md5(TABLE.rows)
        big = "SELECT length(hex(zeroblob(4000000)))" if kind == "sqlite" else \
            "SELECT LENGTH(CONCAT(REPEAT('x', 4000000), REPEAT('y', 4000000)))"
        assert nxt.execute(big).rows == [(8000000,)]
        assert nxt.execute("SELECT count(*) FROM `my table` WHERE Name = 'emile'").rows == [(1,)]
    finally:
        nxt.close()


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_attack_is_contained(backend, name):
    run_attack(backend, BY_NAME[name])


def test_a_crashed_worker_ends_only_its_sample():
    """A worker that dies under a statement (here: SIGSEGV from outside, as the fts3_tokenizer exploit did
    inside) is the sample's CRASHED, named, and the next sample is served by a fresh one."""
    backend = SQLiteBackend(timeout_s=TIMEOUT_S)
    db, other = backend.create(TABLE, "crash"), backend.create(TABLE, "bystander")
    assert db.execute("SELECT 1").rows == [(1,)]  # built and serving
    os.kill(db.pid, signal.SIGSEGV)
    r = db.execute("SELECT 1")
    assert r.status == SQLStatus.CRASHED and "SIGSEGV" in r.error
    assert db.execute("SELECT 1").status == SQLStatus.CRASHED  # the sample stays over
    with pytest.raises(TableReadError):
        db.table_rows(TABLE)
    db.close()
    assert other.execute("SELECT count(*) FROM `my table`").rows == [(3,)]  # a live neighbour is untouched
    other.close()
    nxt = backend.create(TABLE, "next")
    assert nxt.execute("SELECT 1").rows == [(1,)]
    nxt.close()


def test_memory_exhaustion_is_the_samples_memory_status():
    backend = SQLiteBackend(timeout_s=10.0, memory_bytes=128 << 20)
    db = backend.create(TABLE, "oom")
    r = db.execute("CREATE TABLE big AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                   "LIMIT 3000000) SELECT randomblob(1000) AS b FROM c")
    assert r.status == SQLStatus.MEMORY or "memory" in (r.error or ""), r
    db.close()


def test_the_worker_never_runs_as_root_and_is_limited():
    db = SQLiteBackend().create(TABLE, "limits")
    try:
        status = open(f"/proc/{db.pid}/status").read()
        limits = open(f"/proc/{db.pid}/limits").read()
        if os.geteuid() == 0:
            assert re.search(r"^Uid:\s+65534\s", status, re.M), status
        assert re.search(r"Max file size\s+0\s+0", limits) and re.search(r"Max core file size\s+0\s+0", limits)
        assert re.search(r"Max address space\s+536870912\s+536870912", limits), limits
    finally:
        db.close()


def corpus_counts() -> tuple[Counter, Counter]:
    """(attacks by class, runs by backend): the numbers the README states."""
    by_class = Counter(a.cls for a in ATTACKS)
    by_backend = Counter()
    for a in ATTACKS:
        for kind in a.applies:
            for b in (("sqlite",) if kind == "sqlite" else ("mariadb", "mariadb-docker")):
                by_backend[b] += 1
    return by_class, by_backend


def test_readme_counts_the_corpus():
    text = (REPO / "README.md").read_text()
    by_class, by_backend = corpus_counts()
    m = re.search(r"SQL attack corpus(.*?)\n\n", text, re.S)
    assert m, "README: no 'SQL attack corpus' paragraph"
    para = " ".join(m.group(1).split())
    assert f"{len(ATTACKS)} attacks" in para, para
    for cls, n in by_class.items():
        assert f"{cls} {n}" in para, (cls, n, para)
    for b, n in by_backend.items():
        assert f"{b} {n}" in para, (b, n, para)
    assert f"{sum(a.origin == 'new' for a in ATTACKS)} new" in para, para


def test_a_reused_worker_starts_clean_and_a_failed_one_is_never_reused():
    """A child that served a sample cleanly serves the next one (that is what keeps SQLite judging fast),
    with nothing of the previous sample left; one that timed out is gone for good."""
    backend = SQLiteBackend(timeout_s=TIMEOUT_S)
    a = backend.create(TABLE, "a")
    for sql in ("CREATE TABLE leftover (x)", "UPDATE `my table` SET Score = '9'", "CREATE TEMP TABLE t2 (y)",
                "CREATE VIEW v AS SELECT 1"):
        assert a.execute(sql).error is None
    pid = a.pid
    a.close()
    b = backend.create(TABLE, "b")
    assert b.pid == pid  # the same process...
    assert b.execute("SELECT name FROM sqlite_master UNION ALL SELECT name FROM sqlite_temp_master").rows == \
        [("my table",)]  # ...with a fresh database
    assert b.table_rows(TABLE) == list(TABLE.rows)
    assert b.execute("SELECT length(printf('%.*c', 1000000000, 'x'))").status == SQLStatus.TIMEOUT
    b.close()
    c = backend.create(TABLE, "c")
    assert c.pid != pid and c.execute("SELECT count(*) FROM `my table`").rows == [(3,)]
    c.close()


def test_idle_workers_that_died_are_dropped_not_handed_out():
    """Idle children can leave between samples (one whose address space grew exits after its reset; one
    can be killed): the next sample gets a live child, every dead one is dropped on the way, and the live
    child that served last is the one reused after it."""
    backend = SQLiteBackend(timeout_s=TIMEOUT_S)
    first = [backend.create(TABLE, t) for t in ("a1", "a2")]
    for db in first:
        assert db.execute("SELECT 1").rows == [(1,)]
    dead = [db.pid for db in first]
    for db in first:
        db.close()
    for pid in dead:
        os.kill(pid, signal.SIGKILL)
    for pid in dead:  # until the worker has reaped them
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
    b = backend.create(TABLE, "b")
    assert b.pid not in dead  # a live child (fresh, or an earlier test's idle one)
    assert not [pid for _, pid, _, _ in b.zygote.idle if pid in dead]  # the dead ones were dropped
    assert b.execute("SELECT count(*) FROM `my table`").rows == [(3,)]
    b.close()
    c = backend.create(TABLE, "c")
    assert c.pid == b.pid and c.uses == b.uses + 1
    c.close()
