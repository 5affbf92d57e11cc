"""Both SQL backends: the MySQL-semantics md5, dialect handling, and hostile statements contained."""

import hashlib
import os

import pytest

from envs.sql.base import TableBuildError, TableSpec, mysql_table_md5
from envs.sql.dialect import mysql_to_sqlite
from envs.sql.sqlite import SQLiteBackend

TABLE = TableSpec("my table", ("Name", "Score"), (("Ann", "1"), ("Bob", None), ("Émile ", "3")))


def test_md5_by_hand():
    # concat_ws skips NULL: 'Ann,1', 'Bob', 'Émile ,3'
    hashes = sorted(hashlib.md5(s.encode()).hexdigest()[:5] for s in ["Ann,1", "Bob", "Émile ,3"])
    assert mysql_table_md5(TABLE.rows) == hashlib.md5(",".join(hashes).encode()).hexdigest()


def test_md5_group_concat_cut_at_1024_bytes():
    rows = [(str(i),) for i in range(400)]
    hashes = sorted(hashlib.md5(str(i).encode()).hexdigest()[:5] for i in range(400))
    assert mysql_table_md5(rows) == hashlib.md5(",".join(hashes).encode()[:1024]).hexdigest()


def test_dialect_rewrites_only_what_mysql_means_differently():
    assert mysql_to_sqlite(r"SELECT 'a\nb', 'it''s', 'x\'y', 'p\%'") == "SELECT 'a\nb', 'it''s', 'x''y', 'p\\%'"
    assert mysql_to_sqlite('SELECT * FROM t WHERE a = "q"') == "SELECT * FROM t WHERE a = 'q'"
    assert mysql_to_sqlite("INSERT INTO 1952_Grand_Prix (Pos) VALUES (22)") == "INSERT INTO `1952_Grand_Prix` (Pos) VALUES (22)"
    assert mysql_to_sqlite("SELECT `a``b` -- c\n FROM t") == "SELECT `a``b` \n FROM t"
    assert mysql_to_sqlite("SELECT 1e5, 1.5e-3, 0x1F, 12") == "SELECT 1e5, 1.5e-3, 0x1F, 12"


def test_table_validation_matches_mysql():
    with pytest.raises(TableBuildError, match="duplicate column name 'score'"):
        TableSpec("t", ("Score", "score"), ()).validate()
    with pytest.raises(TableBuildError, match="empty column name"):
        TableSpec("t", ("a", " "), ()).validate()
    with pytest.raises(TableBuildError, match="row 0 has 1 values for 2 columns"):
        TableSpec("t", ("a", "b"), (("x",),)).validate()


@pytest.fixture(params=["sqlite", "mariadb", "mariadb-docker"])
def backend(request):
    if request.param.startswith("mariadb"):
        b = request.getfixturevalue("mariadb_backend" if request.param == "mariadb" else "mariadb_docker_backend")
        old = b.timeout_s
        b.timeout_s = 1.0
        yield b
        b.timeout_s = old
    else:
        yield SQLiteBackend(timeout_s=1.0)


def test_collation_and_observation_format(backend):
    db = backend.create(TABLE, "t1")
    try:
        r = db.execute("SELECT Score FROM `my table` WHERE Name = 'emile'")
        assert r.error is None and str(r.rows) == "[('3',)]"  # case-, accent- and trailing-space-insensitive
        assert db.execute("UPDATE `my table` SET Score = 'x\\ny' WHERE Name = 'Ann'").error is None
        assert db.table_rows(TABLE)[0] == ("Ann", "x\ny")
        assert db.execute("SELEC nonsense").error
    finally:
        db.close()


HOSTILE = {
    "drop other database": "DROP DATABASE mysql",
    "shutdown": "SHUTDOWN",
    "read host file": "SELECT LOAD_FILE('/etc/passwd')",
    "write host file": "SELECT 1 INTO OUTFILE '/tmp/cycleqd_pwned.txt'",
    "attach host file": "ATTACH DATABASE '/tmp/cycleqd_pwned.db' AS x",
    "grant itself": "GRANT ALL PRIVILEGES ON *.* TO CURRENT_USER()",
    "two statements": "SELECT 1; DROP TABLE `my table`",
    "endless recursion": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "huge cross join": "SELECT count(*) FROM `my table` a, `my table` b, `my table` c, `my table` d, `my table` e, "
                       "`my table` f, `my table` g, `my table` h, `my table` i, `my table` j, `my table` k, `my table` l, "
                       "`my table` m, `my table` n, `my table` o, `my table` p, `my table` q, `my table` r, `my table` s, `my table` t",
    "sleep forever": "SELECT SLEEP(1000)",
    "load extension": "SELECT load_extension('/tmp/evil.so')",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_statement_is_contained(backend, name):
    import time

    db = backend.create(TABLE, "hostile")
    try:
        t0 = time.monotonic()
        r = db.execute(HOSTILE[name])
        elapsed = time.monotonic() - t0
        assert elapsed < 10, f"{name} ran {elapsed:.1f}s"
        if r.error is None:  # allowed to run only when harmless: no file content, no effect elsewhere
            assert "root:" not in str(r.rows)
        assert not os.path.exists("/tmp/cycleqd_pwned.txt") and not os.path.exists("/tmp/cycleqd_pwned.db")
        # the sample's own table is intact and the backend still serves fresh databases
        assert len(db.table_rows(TABLE)) == 3
    finally:
        db.close()
    other = backend.create(TABLE, "after")
    assert other.execute("SELECT count(*) FROM `my table`").rows == [(3,)]
    other.close()


def test_a_long_result_is_cut_and_the_session_goes_on(backend):
    """Rows past MAX_FETCH_ROWS are never fetched (MariaDB: the streamed query is killed), and the
    sample's session, temporary tables included, is still there for its next statement."""
    from envs.sql.base import MAX_FETCH_ROWS

    db = backend.create(TABLE, "long")
    try:
        assert db.execute("CREATE TEMPORARY TABLE tmp (x TEXT)").error is None
        r = db.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) SELECT x FROM c")
        assert r.error is None and len(r.rows) == MAX_FETCH_ROWS and r.rows[0] == (1,)
        assert db.execute("SELECT count(*) FROM tmp").rows == [(0,)]
        assert db.execute("SELECT count(*) FROM `my table`").rows == [(3,)]
    finally:
        db.close()
