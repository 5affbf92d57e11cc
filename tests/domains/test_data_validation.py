"""Data checked at the door (issue 13, item 8): a record a domain could not judge right is refused when the
file loads, with one line naming file:line and the field, instead of a false PASS, a model scored for
the data's fault, or a run that aborts halfway."""

import json

import pytest

from domains.coding import CodingDomain
from domains.db import DBDomain
from domains.os_interaction import OSDomain
from harness.domain import DomainContext
from harness.errors import HarnessError
from tests.conftest import SHARED_DATA

MBPP = {"task_id": "T/1", "entry_point": "f", "canonical_solution": "def f(a, b):\n    return a + b\n",
        "prompt": '"""\nAdd.\nassert f(1, 2) == 3\n"""', "base_input": [[1, 2]], "plus_input": [[3, 4]], "atol": 0}
OS = {"description": "Count.", "init_script": [["bash", "true"]], "check": [None, ["python", "import sys"]],
      "example_script": ["bash", "echo 1"]}
DB = {"description": "Add z.", "add_description": "", "type": ["INSERT"], "label": ["INSERT INTO T (a) VALUES ('z')"],
      "table": {"table_name": "T", "table_info": {"columns": [{"name": "a", "type": "TEXT"}], "rows": [["x"]]}},
      "answer_md5": "[('0123456789abcdef0123456789abcdef',)]"}
DOMAINS = {"coding": (CodingDomain, MBPP), "os": (OSDomain, OS), "db": (DBDomain, DB)}


def load(tmp_path, name, bad, blank_lines=0):
    """Load a file of a good record, ``blank_lines`` blank lines, then ``bad``: the error, or None."""
    cls, good = DOMAINS[name]
    p = tmp_path / f"{name}.jsonl"
    p.write_text(json.dumps(good) + "\n" + "\n" * blank_lines + json.dumps(bad) + "\n")
    try:
        cls(task=name, ctx=DomainContext(None, 0, SHARED_DATA), data=str(p)).samples()
    except HarnessError as exc:
        return str(exc)
    return None


BAD = {
    # MBPP+: inputs stored as JSON text would be judged one character at a time
    "coding base_input as JSON text": ("coding", {**MBPP, "base_input": "[[1, 2]]"}, "base_input"),
    "coding plus_input as JSON text": ("coding", {**MBPP, "plus_input": "[[3, 4]]"}, "plus_input"),
    "coding an input that is not an argument list": ("coding", {**MBPP, "base_input": [1, 2]}, "base_input"),
    "coding atol as text": ("coding", {**MBPP, "atol": "1e-6"}, "atol"),
    "coding atol NaN": ("coding", {**MBPP, "atol": float("nan")}, "atol"),
    "coding atol null": ("coding", {**MBPP, "atol": None}, "atol"),
    "coding a reference that does not parse": ("coding", {**MBPP, "canonical_solution": "def f(a, b):\n    return a +"},
                                               "canonical_solution"),
    "coding a reference without the entry point": ("coding", {**MBPP, "canonical_solution": "def g(): pass"},
                                                   "canonical_solution"),
    "coding entry_point not a name": ("coding", {**MBPP, "entry_point": "f()"}, "entry_point"),
    "coding task_id repeated": ("coding", MBPP, "task_id"),
    "coding a JSON list": ("coding", [MBPP], "JSON object"),
    "coding a JSON string holding the keys": ("coding", "task_id prompt entry_point canonical_solution base_input",
                                             "JSON object"),
    # OS: a check that cannot run must not wait for the judge
    "os a null check without example_script": ("os", {k: v for k, v in OS.items() if k != "example_script"},
                                               "check[0]"),
    "os a check step that is not a script": ("os", {**OS, "check": [["bash"]]}, "check[0]"),
    "os an unknown language": ("os", {**OS, "check": [["ruby", "puts 1"]]}, "check[0]"),
    "os check not a list": ("os", {**OS, "check": "bash -c true"}, "check"),
    "os an init script not a script": ("os", {**OS, "init_script": ["echo hi"]}, "init_script[0]"),
    "os start not a script": ("os", {**OS, "start": "su - user"}, "start"),
    "os match without an answer": ("os", {"description": "x", "match": {"strip": True}}, "match"),
    "os a regex that does not compile": ("os", {"description": "x", "match": {"regex": "("}}, "match.regex"),
    "os neither match nor check": ("os", {"description": "x"}, "a match or a check"),
    # DB: the md5 judge needs its md5
    "db a modification without answer_md5": ("db", {k: v for k, v in DB.items() if k != "answer_md5"}, "answer_md5"),
    "db answer_md5 without an md5": ("db", {**DB, "answer_md5": "[]"}, "answer_md5"),
    "db a modification without its statement": ("db", {**DB, "label": []}, "label"),
    "db type not a list": ("db", {**DB, "type": "INSERT"}, "type"),
    "db columns without names": ("db", {**DB, "table": {"table_name": "T", "table_info": {"columns": [{}], "rows": []}}},
                                 "columns"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_record_is_refused_at_load_naming_file_line_and_field(tmp_path, case):
    name, bad, field = BAD[case]
    err = load(tmp_path, name, bad, blank_lines=1)
    assert err is not None, f"{case}: accepted"
    assert "\n" not in err and f"{name}.jsonl:3: " in err and field in err, err  # line 3: a blank line on the way


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_good_records_load(tmp_path, name):
    cls, good = DOMAINS[name]
    second = {**good, "task_id": "T/2"} if name == "coding" else good
    assert load(tmp_path, name, second) is None


def test_an_empty_plus_object_means_no_plus_inputs(tmp_path):
    """The EvalPlus v0.1.0 release stores Mbpp/793's plus inputs as {}: accepted as none."""
    assert load(tmp_path, "coding", {**MBPP, "task_id": "T/2", "plus_input": {}}) is None
    assert load(tmp_path, "coding", {**MBPP, "task_id": "T/2", "plus_input": {"a": 1}}) is not None


@pytest.mark.parametrize("name,path", [("coding", "mbppplus/mbppplus.jsonl"), ("os", "agentbench_os/os_interaction.jsonl"),
                                       ("db", "agentbench_db/dbbench.jsonl")])
def test_the_shared_datasets_pass_the_checks(name, path):
    if not (SHARED_DATA / path).exists():
        pytest.skip(f"{SHARED_DATA / path} not found")
    cls, _ = DOMAINS[name]
    assert len(cls(task=name, ctx=DomainContext(None, 0, SHARED_DATA)).samples()) in (399, 170, 360)
