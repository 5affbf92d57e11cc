"""AgentBench DB: protocol, judge, gold replay on both backends, wrong agents, the replay command."""

import json

import pytest

from domains.db import (
    DBDomain,
    overall_cat_accuracy,
    parse_answer_list,
    question_correct,
    scripted_agent,
    truncate_observation,
)
from harness.cli import main
from harness.domain import DomainContext, SampleStatus
from harness.episodes import ScriptedAgent
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA / "agentbench_db" / "dbbench.jsonl"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} not found (set CYCLEQD_DATA)")


def domain(**params):
    d = DBDomain(task="db", ctx=DomainContext(None, 0, SHARED_DATA), **params)
    d.setup()
    return d


def test_question_judge_follows_agentbench():
    assert question_correct(' ["Women +60kg Bronze"]', ["Women +60kg Bronze"])
    assert question_correct(" [3]", ["3.0"])  # one item each: compared as floats
    assert question_correct(' ["a", "b"]', ["b", "a"])  # several: as sets
    assert not question_correct(' ["a"]', ["a", "b"])
    assert question_correct(" Women +60kg Bronze", ["Women +60kg Bronze"]) is False  # leading space kept
    assert parse_answer_list("__import__('os').system('id')") == ["__import__('os').system('id')"]  # never eval
    assert parse_answer_list('"ab"') == ["a", "b"]  # list("ab"), as AgentBench's list(eval(...))


def test_truncation_marker():
    assert truncate_observation("x" * 801) == "x" * 800 + "[TRUNCATED]"
    assert truncate_observation("x" * 800) == "x" * 800


def test_overall_cat_accuracy_is_mean_of_three():
    from harness.domain import SampleResult

    rs = [SampleResult("a", SampleStatus.SOLVED, 1.0, {"category": "SELECT", "type": "counting"}),
          SampleResult("b", SampleStatus.WRONG, 0.0, {"category": "SELECT", "type": "other"}),
          SampleResult("c", SampleStatus.SOLVED, 1.0, {"category": "INSERT", "type": "INSERT"}),
          SampleResult("d", SampleStatus.WRONG, 0.0, {"category": "UPDATE", "type": "UPDATE"})]
    overall, parts = overall_cat_accuracy(rs)
    assert overall == pytest.approx((0.5 + 1 + 0) / 3) and parts["type:counting"] == 1.0


@needs_data
def test_protocol_turns_statuses_and_observations():
    d = domain(limit=20)
    seen = []

    def policy(sample, turn, messages):
        seen.append(messages)
        if turn < 2:
            return "Action: Operation\n```sql\nSELECT\n*\nFROM `" + sample["table"]["table_name"] + "`\n```"
        return 'Action: Answer\nFinal Answer: ["x"]'

    r = d.run(ScriptedAgent(policy), [0])
    first = seen[0]
    assert [m["role"] for m in first] == ["user", "assistant", "user"] and first[1]["content"] == "Ok."
    assert first[0]["content"] == (SHARED_DATA / "prompts" / "dbbench_instruction.txt").read_text()
    obs = seen[1][-1]["content"]
    assert obs.startswith("[('") and obs.endswith("[TRUNCATED]") and len(obs) == 811
    assert r.samples[0].status == SampleStatus.WRONG and r.samples[0].detail["rounds"] == 2
    r = d.run(ScriptedAgent(lambda s, t, m: "Action: Operation\n```sql\nSELECT 1\n```"), [0])
    assert r.samples[0].status == SampleStatus.TURN_LIMIT and r.samples[0].detail["rounds"] == 5
    r = d.run(ScriptedAgent(lambda s, t, m: "Action: Operation\nSELECT 1"), [0])
    assert r.samples[0].status == SampleStatus.INVALID_ACTION


def gold_failures(d):
    r = d.run(scripted_agent("gold"))
    bad = {s.sample_id: s.status for s in r.samples if s.score < 1}
    harness = {k for k, v in bad.items() if v.is_harness_failure}
    solved = len(r.samples) - len(bad)
    return r, bad, harness, solved


# Expected failures, each explained in the issue note:
#   db/13, db/14: duplicate column names; db/17, db/77: a row shorter than the header; db/305: an empty
#   column name -> the table cannot be built (MySQL rejects it too): harness-side status.
#   db/225: executing label[0] does not reproduce answer_md5 on either backend (the reference hash is off).
#   db/278, db/295 (MariaDB only): `WHERE No = 16` on a TEXT column with non-numeric values is an error
#   in strict SQL mode ("Truncated incorrect DOUBLE value"); SQLite compares without complaint.
BUILD = {"db/13", "db/14", "db/17", "db/77", "db/305"}


@needs_data
def test_gold_replay_sqlite():
    r, bad, harness, solved = gold_failures(domain())
    assert harness == BUILD
    assert set(bad) - harness == {"db/225"}
    assert solved / (len(r.samples) - len(harness)) >= 0.99


def _global_variables(backend) -> list:
    with backend.admin().cursor() as c:
        c.execute("SHOW GLOBAL VARIABLES")
        return sorted(c.fetchall())


@needs_data
def test_gold_replay_mariadb(mariadb_backend):
    d = domain()
    d.backend = mariadb_backend
    before = _global_variables(mariadb_backend)
    r, bad, harness, solved = gold_failures(d)
    assert _global_variables(mariadb_backend) == before  # no sample changed the server
    assert harness == BUILD
    assert set(bad) - harness == {"db/225", "db/278", "db/295"}
    assert solved / (len(r.samples) - len(harness)) >= 0.99


@needs_data
def test_gold_replay_mariadb_in_docker(mariadb_docker_backend):
    d = domain()
    d.backend = mariadb_docker_backend
    r = d.run(scripted_agent("gold"), range(150, 360, 3))  # modifications and questions
    bad = {s.sample_id: (s.status.value, s.detail.get("error") or s.detail.get("md5")) for s in r.samples
           if s.score < 1}
    assert set(bad) <= BUILD | {"db/225", "db/278", "db/295"}, bad


@needs_data
@pytest.mark.parametrize("kind,status", [("zero", SampleStatus.WRONG), ("garbage", SampleStatus.INVALID_ACTION),
                                         ("never_act", SampleStatus.TURN_LIMIT)])
def test_wrong_agents_score_zero(kind, status):
    d = domain()
    r = d.run(scripted_agent(kind))
    solved = [s for s in r.samples if s.score]
    # answering "0" is right only where the label is 0
    assert all(s.detail.get("label") in (["0"], [0], ["0.0"]) for s in solved)
    assert len(solved) <= 2
    counts = r.status_counts()
    assert counts[status.value] >= len(r.samples) - 5 - len(solved)


def test_replay_command_on_a_new_file(tmp_path, capsys):
    rows = [
        {"description": "How many rows?", "add_description": "The name of this table is T.", "type": ["counting"],
         "label": ["2"], "table": {"table_name": "T", "table_info": {"columns": [{"name": "a", "type": "TEXT"}],
                                                                   "rows": [["x"], ["y"]]}}},
        {"description": "Add z.", "add_description": "", "type": ["INSERT"], "label": ["INSERT INTO T (a) VALUES ('z')"],
         "table": {"table_name": "T", "table_info": {"columns": [{"name": "a", "type": "TEXT"}], "rows": [["x"]]}},
         "answer_md5": ""},
    ]
    from envs.sql.base import mysql_table_md5

    rows[1]["answer_md5"] = f"[('{mysql_table_md5([('x',), ('z',)])}',)]"
    p = tmp_path / "mine.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["replay", "db", "--agent", "gold", "--data", str(p), "--data-root", str(SHARED_DATA)]) == 0
    out = capsys.readouterr().out
    assert "quality 1.0000 over 2 samples" in out
    assert main(["replay", "db", "--agent", "wrong", "--data", str(p), "--data-root", str(SHARED_DATA)]) == 0
    assert "quality 0.0000" in capsys.readouterr().out
    p.write_text("{not json")
    assert main(["replay", "db", "--data", str(p), "--data-root", str(SHARED_DATA)]) == 2
    assert "mine.jsonl:1: not valid JSON" in capsys.readouterr().err


def _update_sample(who: str) -> dict:
    from envs.sql.base import mysql_table_md5

    return {"description": who, "add_description": "The name of this table is T.", "type": ["UPDATE"],
            "label": [f"UPDATE T SET b = '2' WHERE a = '{who}'"],
            "answer_md5": mysql_table_md5([("Ann", "1"), ("Bob", "1"), (who, "2")]),
            "table": {"table_name": "T", "table_info": {"columns": [{"name": "a"}, {"name": "b"}],
                                                        "rows": [["Ann", "1"], ["Bob", "1"], [who, "1"]]}}}


BREAK_OUT = {"sqlite": "SELECT length(printf('%.*c', 1000000000, 'x'))",
             "mariadb": "SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(100)"}
FAKE = ["ALTER TABLE T RENAME TO orig", "CREATE VIEW T AS SELECT * FROM orig"]


@pytest.mark.parametrize("kind", ["sqlite", "mariadb", "mariadb-docker"])
def test_a_sample_that_breaks_out_or_fakes_ends_as_its_own_failure(kind, request):
    """One batch: a statement past the hard limit (TIMEOUT, not the harness's failure), a judged table
    swapped for a view (WRONG: the judge refuses it) and an honest neighbour (SOLVED, undisturbed)."""
    from domains.db import DBEpisode
    from envs.sql.sqlite import SQLiteBackend
    from harness.episodes import run_episodes

    if kind == "sqlite":
        backend = SQLiteBackend(timeout_s=0.5)
    else:
        backend = request.getfixturevalue("mariadb_backend" if kind == "mariadb" else "mariadb_docker_backend")
    plans = {"Cy": [BREAK_OUT[kind.split("-")[0]]], "Di": FAKE, "Eve": ["UPDATE T SET b = '2' WHERE a = 'Eve'"]}

    def policy(sample, turn, messages):
        plan = plans[sample["description"]]
        if turn < len(plan):
            return f"Action: Operation\n```sql\n{plan[turn]}\n```"
        return 'Action: Answer\nFinal Answer: ["done"]'

    old, backend.timeout_s = backend.timeout_s, 0.5 if kind == "sqlite" else 1.0
    try:
        eps = [DBEpisode(f"db/{i}", _update_sample(w), backend, "instr", 5) for i, w in enumerate(plans)]
        run_episodes(eps, ScriptedAgent(policy))
    finally:
        backend.timeout_s = old
    cy, di, eve = (e.result for e in eps)
    assert cy.status == SampleStatus.TIMEOUT and cy.detail["sql_status"] == "timeout" and cy.score == 0
    assert di.status == SampleStatus.WRONG and "view" in di.detail["md5"]
    assert eve.status == SampleStatus.SOLVED
