"""``cycleqd replay DOMAIN --agent transcript:FILE``: recorded replies judged by the real protocol, env and
judge; ``--json``; exit 0 when every sample was judged, 3 when any ended in a harness error, 2 for bad
input (one line naming file:line or the sample)."""

import json

import pytest

from harness.cli import main
from tests.conftest import SHARED_DATA

HOST = "tests.domains.test_coding_protocol:HostRunner"  # the real runner, without isolation: runs anywhere
ADD = {"task_id": "Mbpp/1", "entry_point": "f", "canonical_solution": "def f(a, b):\n    return a + b\n",
       "prompt": '"""\nAdd.\nassert f(1, 2) == 3\n"""', "base_input": [[1, 2], [3, 4]], "plus_input": [], "atol": 0}
SUB = {**ADD, "task_id": "Mbpp/2", "canonical_solution": "def f(a, b):\n    return a - b\n",
       "prompt": '"""\nSubtract.\nassert f(3, 2) == 1\n"""'}


@pytest.fixture
def coding(tmp_path, monkeypatch):
    """A two-task MBPP file and the arguments of a coding replay through the host runner."""
    monkeypatch.setenv("CYCLEQD_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "mbpp.jsonl"
    data.write_text(json.dumps(ADD) + "\n" + json.dumps(SUB) + "\n")
    system = tmp_path / "system.txt"
    system.write_text("You write Python.")
    return ["replay", "coding", "--data", str(data), "--backend", HOST, "--param", f"system={system}",
            "--data-root", str(tmp_path)]


def transcript(tmp_path, rows, name="t.jsonl") -> str:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return f"transcript:{p}"


def test_a_coding_transcript_is_judged(tmp_path, coding, capsys):
    t = transcript(tmp_path, [{"id": "Mbpp/1", "replies": ["\ndef f(a, b):\n    return a + b\n```\nDone."]},
                              {"id": "Mbpp/2", "replies": ["\ndef f(a, b):\n    return a + b\n```"]},
                              {"id": "Mbpp/99", "replies": ["not in this dataset: ignored"]}])
    assert main(coding + ["--agent", t, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # one JSON object, nothing else on stdout
    assert out["solved"] == 1 and out["total"] == 2 and out["statuses"] == {"solved": 1, "wrong": 1}
    assert out["harness_failures"] == 0 and out["plus"] == 1
    assert main(coding + ["--agent", t]) == 0
    assert "quality 0.5000 over 2 samples" in capsys.readouterr().out


def test_turns_past_the_recorded_replies_get_the_empty_string(tmp_path, coding, capsys):
    t = transcript(tmp_path, [{"id": "Mbpp/1", "replies": []}, {"id": "Mbpp/2", "replies": [""]}])
    assert main(coding + ["--agent", t, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["statuses"] == {"invalid_action": 2}


def test_a_sample_without_a_line_is_an_error_naming_it(tmp_path, coding, capsys):
    t = transcript(tmp_path, [{"id": "Mbpp/1", "replies": ["\ndef f(a, b):\n    return a + b\n```"]}])
    assert main(coding + ["--agent", t]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no line for sample 'Mbpp/2'" in err, err


@pytest.mark.parametrize("line,why", [
    ("{not json", "not valid JSON"),
    ('["Mbpp/1", ["x"]]', "JSON object"),
    ('{"id": 1, "replies": ["x"]}', "'id' must be a string"),
    ('{"id": "Mbpp/1", "replies": "x"}', "'replies' must be a list of strings"),
    ('{"id": "Mbpp/1", "replies": [1]}', "'replies' must be a list of strings"),
    ('{"id": "Mbpp/1"}', "'replies' must be a list of strings"),
    ('{"id": "Mbpp/2", "replies": []}', "repeats line 1"),
    ("[" * 100000 + "]" * 100000, "JSON"),
])
def test_a_malformed_transcript_is_one_line_naming_file_and_line(tmp_path, coding, capsys, line, why):
    t = transcript(tmp_path, [{"id": "Mbpp/2", "replies": []}, "", line])
    assert main(coding + ["--agent", t]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "t.jsonl:3: " in err and why in err, err


def test_a_missing_transcript_file_is_bad_input(tmp_path, coding, capsys):
    assert main(coding + ["--agent", f"transcript:{tmp_path / 'nope.jsonl'}"]) == 2
    assert "nope.jsonl does not exist" in capsys.readouterr().err


def test_harness_errors_exit_3_for_gold_and_transcripts(tmp_path, coding, capsys):
    """A reference that fails in the sandbox gives no verdict: the replay must not look like a pass."""
    broken = {**SUB, "canonical_solution": "def f(a, b):\n    raise RuntimeError('reference broken')\n"}
    data = tmp_path / "mbpp.jsonl"
    data.write_text(json.dumps(ADD) + "\n" + json.dumps(broken) + "\n")
    assert main(coding + ["--agent", "gold"]) == 3
    cap = capsys.readouterr()
    assert "solved 1/2" in cap.out and "1 of 2 samples ended in a harness error" in cap.err
    t = transcript(tmp_path, [{"id": "Mbpp/1", "replies": ["\ndef f(a, b):\n    return a + b\n```"]},
                              {"id": "Mbpp/2", "replies": ["\ndef f(a, b):\n    return a - b\n```"]}])
    assert main(coding + ["--agent", t, "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["statuses"] == {"harness_error": 1, "solved": 1} and out["harness_failures"] == 1


def test_a_db_transcript_replays_every_turn(tmp_path, capsys):
    from envs.sql.base import mysql_table_md5

    table = {"table_name": "T", "table_info": {"columns": [{"name": "a", "type": "TEXT"}], "rows": [["x"]]}}
    rows = [{"description": "Add z.", "add_description": "", "type": ["INSERT"], "label": ["INSERT INTO T (a) VALUES ('z')"],
             "table": table, "answer_md5": f"[('{mysql_table_md5([('x',), ('z',)])}',)]"},
            {"description": "How many rows?", "add_description": "", "type": ["counting"], "label": ["1"], "table": table}]
    data = tmp_path / "db.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    t = transcript(tmp_path, [
        {"id": "db/0", "replies": ["Action: Operation\n```sql\nINSERT INTO T (a) VALUES ('z')\n```\n"]},  # then ""
        {"id": "db/1", "replies": ["Action: Operation\n```sql\nSELECT count(*) FROM T\n```\n",
                                   "Action: Answer\nFinal Answer: [1]"]}])
    args = ["replay", "db", "--data", str(data), "--data-root", str(SHARED_DATA), "--agent", t, "--json"]
    if not (SHARED_DATA / "prompts" / "dbbench_instruction.txt").exists():
        pytest.skip("the shared DBBench instruction is not here")
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["solved"] == 2 and out["total"] == 2, out  # the md5 judges the table even after an empty turn


def test_an_os_transcript_replays_every_turn(tmp_path, capsys):
    from envs.sandbox.rootfs_shell import RootfsShell

    ok, why = RootfsShell.available() if hasattr(RootfsShell, "available") else (True, "")
    if not ok or not (SHARED_DATA / "agentbench_os" / "oneshot.json").exists():
        pytest.skip(f"needs the rootfs shell and the shared one-shot example ({why})")
    rows = [{"description": "What is 6 times 7?", "match": {"answer": "42", "strip": True}},
            {"description": "Print the word.", "init_script": [["bash", "echo hello > /root/w"]],
             "check": [None, ["python", "import sys; sys.exit(sys.argv[1].strip() != sys.argv[2].strip())"]],
             "example_script": ["bash", "cat /root/w"]}]
    data = tmp_path / "os.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    t = transcript(tmp_path, [
        {"id": "os/0", "replies": ["Think: easy.\n\nAct: answer(42)"]},
        {"id": "os/1", "replies": ["Think: look.\n\nAct: bash\n\n```bash\ncat /root/w\n```", "Act: answer(hello)"]}])
    args = ["replay", "os", "--data", str(data), "--data-root", str(SHARED_DATA), "--agent", t, "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["solved"] == 2, out
