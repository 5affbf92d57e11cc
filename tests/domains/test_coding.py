"""MBPP+: prompt to the letter, sanitiser, output codec, EvalPlus comparison, gold replay, hostile code."""

import json

import pytest

from domains.coding import (
    CodingDomain,
    argument_shapes,
    completion_code,
    decode_output,
    outputs_match,
    pass_at_1,
    sanitize,
    user_turn,
)
from domains.coding_runner import to_text
from harness.cli import main
from harness.domain import DomainContext, SampleStatus
from harness.episodes import ScriptedAgent
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA / "mbppplus" / "mbppplus.jsonl"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} not found (set CYCLEQD_DATA)")


def sandbox_ok():
    from envs.sandbox.local import LocalSandbox

    return LocalSandbox.available()


needs_sandbox = pytest.mark.skipif(not sandbox_ok()[0], reason=f"local sandbox: {sandbox_ok()[1]}")

SAMPLE = {"task_id": "X/1", "entry_point": "add", "canonical_solution": "def add(a, b):\n    return a + b\n",
          "prompt": '"""\nWrite a function to add two numbers\nassert add(1, (2, 3)) == 6\n"""\n',
          "base_input": [[1, 2]], "plus_input": [], "atol": 0}


def test_user_turn_to_the_letter():
    assert user_turn(SAMPLE) == ("Write a function to add two numbers. Your code should satisfy the following "
                                 "assertion:\n```python\nassert add(1, (2, 3)) == 6\n```")


def test_completion_cut_and_sanitiser():
    comp = "\nimport math\ndef add(a, b):\n    return a + b\nprint(add(1, 2))\nassert add(1, 2) == 3\n```\ntext"
    code = sanitize(completion_code(comp), "add")
    assert "import math" in code and "def add" in code and "print" not in code and "assert" not in code
    assert sanitize("def add(a, b):\n    return a +", "add") is None  # truncated, nothing left defines add
    assert sanitize("def add(a, b):\n    return a\ndef broken(:\n", "add").startswith("def add")
    assert sanitize("def other(): pass", "add") is None


@pytest.mark.parametrize("value", [None, True, 0, -12**30, 1.5, float("inf"), 2 + 3j, "a;:[]b", b"\x00\xff",
                                   [1, (2, [3])], {1, "a"}, frozenset({(1, 2)}), {"k": [1.0], 2: None}, ()])
def test_output_codec_round_trip(value):
    assert decode_output(to_text(value)) == value
    assert type(decode_output(to_text(value))) is type(value)


def test_evalplus_comparison_rules():
    assert outputs_match([1, 2], [1, 2], 0) and not outputs_match([1, 2], (1, 2), 0)
    assert outputs_match(0.1 + 0.2, 0.3, 0)  # floats: default atol 1e-6
    assert not outputs_match(1.0, 1.1, 0)
    assert outputs_match([1.0, 2.0], [1.00001, 2.0], 1e-4) and not outputs_match([1.0, 2.0], [1.001, 2.0], 1e-4)
    assert outputs_match(True, 1, 0)  # Python equality, as EvalPlus
    assert outputs_match({"sha256": "ab"}, {"sha256": "ab"}, 0) and not outputs_match({"sha256": "ab"}, [1], 0)


def test_argument_shapes_from_the_example_call():
    s = dict(SAMPLE)
    assert argument_shapes(s) == [{"t": "int"}, {"t": "tuple", "e": {"t": "int"}}]


@pytest.fixture(scope="module")
def mbpp():
    d = CodingDomain(task="coding", ctx=DomainContext(None, 0, SHARED_DATA), plus=False)
    d.setup()
    return d


@needs_data
@needs_sandbox
def test_gold_replay_passes_every_base_task(mbpp):
    r = mbpp.run(mbpp.scripted_agent("gold"))
    assert len(r.samples) == 399
    failures = {s.detail["task_id"]: s.detail for s in r.samples if s.score < 1}
    assert not failures, failures
    assert pass_at_1(r.samples)["base"] == 1.0


@needs_data
@needs_sandbox
@pytest.mark.parametrize("kind,status", [("wrong", SampleStatus.WRONG), ("garbage", SampleStatus.INVALID_ACTION),
                                         ("syntax_error", SampleStatus.INVALID_ACTION)])
def test_wrong_agents(mbpp, kind, status):
    r = mbpp.run(mbpp.scripted_agent(kind), range(0, 399, 7))
    solved = [s for s in r.samples if s.score]
    assert len(solved) <= 1  # "return 0" is right for a task whose every answer is 0
    assert r.status_counts()[status.value] >= len(r.samples) - 1


HOSTILE_SOLUTIONS = {
    "sleeps": ("import time\ndef f(*a):\n    time.sleep(100)", SampleStatus.TIMEOUT),
    "busy": ("def f(*a):\n    while True: pass", SampleStatus.TIMEOUT),
    "fork bomb": ("import os\ndef f(*a):\n    while True:\n        try: os.fork()\n        except OSError: pass", None),
    "memory bomb": ("def f(*a):\n    return bytearray(8 << 30)", None),
    "prints 100 MB": ("import sys\ndef f(*a):\n    sys.stdout.write('x' * (100 << 20))\n    return 0", SampleStatus.WRONG),
    "reads host files": ("def f(*a):\n    return open('/etc/passwd').read()", SampleStatus.WRONG),
    "exits at import": ("import sys\nsys.exit(0)\ndef f(*a):\n    return 1", SampleStatus.WRONG),
    "kills its parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef f(*a):\n    return 1", None),
    "fakes results": ("import json\nopen('results.jsonl', 'w').write(json.dumps({'i': 0, 'ok': True, 'out': 'i3;'}))\n"
                      "def f(*a):\n    raise SystemExit", SampleStatus.WRONG),
}


@needs_sandbox
@pytest.mark.parametrize("session", [True, False], ids=["one sandbox per evaluation", "one sandbox per run"])
@pytest.mark.parametrize("name", sorted(HOSTILE_SOLUTIONS))
def test_hostile_solutions_score_as_failures(tmp_path, name, session):
    code, status = HOSTILE_SOLUTIONS[name]
    sample = {"task_id": "H/1", "entry_point": "f", "canonical_solution": "def f(a, b):\n    return a + b\n",
              "prompt": '"""\nAdd.\nassert f(1, 2) == 3\n"""', "base_input": [[1, 2], [3, 4]], "plus_input": []}
    p = tmp_path / "h.jsonl"
    p.write_text(json.dumps(sample))
    d = CodingDomain(task="coding", ctx=DomainContext(None, 0, SHARED_DATA), data=str(p), per_input_s=0.5,
                     sandbox_session=session)
    d.setup()
    r = d.run(ScriptedAgent(lambda s, t, m: code + "\n```"))
    s = r.samples[0]
    assert s.score == 0 and not s.status.is_harness_failure, s
    if status is not None:
        assert s.status == status, s
    assert d.run(d.scripted_agent("gold")).quality == 1.0  # and the harness goes on


@needs_sandbox
def test_replay_command_on_a_new_file(tmp_path, capsys):
    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps(SAMPLE | {"base_input": [[1, 2], [5, -5]]}))
    assert main(["replay", "coding", "--agent", "gold", "--data", str(p), "--data-root", str(SHARED_DATA)]) == 0
    assert "quality 1.0000 over 1 samples" in capsys.readouterr().out


@needs_sandbox
def test_overlapping_evaluations_share_sessions_and_the_last_closes_them(tmp_path):
    """Two evaluations at once on one domain (threads): both judged right, and when both are done no
    session sandbox of this process is left (its cgroups are the evidence)."""
    import glob
    import os
    import threading

    rows = [SAMPLE | {"task_id": f"S/{i}", "base_input": [[i, 2], [5, -i]]} for i in range(6)]
    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    d = CodingDomain(task="coding", ctx=DomainContext(None, 0, SHARED_DATA), data=str(p))
    d.setup()
    got = []
    threads = [threading.Thread(target=lambda: got.append(d.run(d.scripted_agent("gold")).quality)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [1.0, 1.0, 1.0]
    assert d.executor._idle is None and not d.executor._open
    assert not glob.glob(f"/sys/fs/cgroup/**/cycleqd/ses-{os.getpid()}-*", recursive=True)
    d.close()
