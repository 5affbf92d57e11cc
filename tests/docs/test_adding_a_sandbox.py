"""docs/adding-a-sandbox.md, executed: a code sandbox written outside this repository (one module, one
config line) is found through the registry and the coding domain's gold replay runs through it."""

import importlib
import json
import sys
import textwrap

import pytest

from envs.sandbox.local import LocalSandbox
from harness.cli import main
from harness.domain import DomainContext, build_domain
from harness.registry import CODE_SANDBOXES

MODULE = '''
"""An out-of-tree code sandbox: the bubblewrap one, counting its runs."""
from envs.sandbox.base import CodeSandbox
from envs.sandbox.local import LocalSandbox
from harness.registry import CODE_SANDBOXES

RUNS = []


@CODE_SANDBOXES.register("counting")
class CountingSandbox(CodeSandbox):
    def __init__(self, limits=None, *, tag="default"):
        super().__init__(limits)
        self.inner = LocalSandbox(self.limits)
        self.python = self.inner.python
        self.tag = tag

    def run(self, argv, **kw):
        RUNS.append(self.tag)
        return self.inner.run(argv, **kw)
'''

SAMPLES = [
    {"task_id": "X/1", "entry_point": "add", "canonical_solution": "def add(a, b):\n    return a + b\n",
     "prompt": '"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\n"""\n',
     "base_input": [[1, 2], [5, -5]], "plus_input": [], "atol": 0},
    {"task_id": "X/2", "entry_point": "rev", "canonical_solution": "def rev(s):\n    return s[::-1]\n",
     "prompt": '"""\nWrite a function to reverse a string.\nassert rev("ab") == "ba"\n"""\n',
     "base_input": [["abc"], [""]], "plus_input": [], "atol": 0},
]


@pytest.fixture
def ext(tmp_path, monkeypatch):
    ok, why = LocalSandbox.available()
    if not ok:
        pytest.skip(f"bubblewrap sandbox unavailable: {why}")
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "counting_sandbox.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tiny.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    (tmp_path / "data" / "system.txt").write_text("You are an expert Python programmer.")
    monkeypatch.syspath_prepend(str(tmp_path / "ext"))
    yield tmp_path
    CODE_SANDBOXES.unregister("counting")
    sys.modules.pop("counting_sandbox", None)


def test_a_registered_sandbox_runs_the_gold_replay(ext):
    mod = importlib.import_module("counting_sandbox")
    params = {"data": "tiny.jsonl", "system": "system.txt", "backend": "counting", "backend_params": {"tag": "mine"}}
    dom = build_domain("coding", task="coding", ctx=DomainContext(None, 0, ext / "data"), params=params)
    try:
        dom.setup()
        assert isinstance(dom.executor.sandbox, mod.CountingSandbox)
        res = dom.run(dom.scripted_agent("gold"))
    finally:
        dom.close()
    assert res.quality == 1.0 and len(res.samples) == 2
    assert mod.RUNS.count("mine") >= 2 and set(mod.RUNS) == {"mine"}  # every judgement ran in it


def test_a_sandbox_named_by_reference_needs_no_import(ext, capsys):
    args = ["replay", "coding", "--agent", "gold", "--data", str(ext / "data" / "tiny.jsonl"), "--data-root",
            str(ext / "data"), "--backend", "counting_sandbox:CountingSandbox", "--param", "system=system.txt"]
    assert main(args) == 0
    assert "quality 1.0000 over 2 samples" in capsys.readouterr().out
    assert sys.modules["counting_sandbox"].RUNS  # imported by the registry, and used


def test_an_unknown_sandbox_is_a_one_line_config_error(ext, capsys):
    args = ["replay", "coding", "--data", str(ext / "data" / "tiny.jsonl"), "--data-root", str(ext / "data"),
            "--backend", "nonesuch", "--param", "system=system.txt"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tasks.*.params.backend" in err and "'nonesuch'" in err


def test_unknown_sandbox_parameters_are_a_one_line_config_error(ext, capsys):
    args = ["replay", "coding", "--data", str(ext / "data" / "tiny.jsonl"), "--data-root", str(ext / "data"),
            "--backend", "counting_sandbox:CountingSandbox", "--param", "system=system.txt",
            "--param", 'backend_params={"colour": "red"}']
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tasks.coding.params.backend_params" in err and "colour" in err
