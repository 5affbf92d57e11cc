"""What leaves the coding sandbox is parsed as hostile: malformed records, encodings and completions are the
program's failure with a clear status, never an exception in the harness (issue 13, item 3).

Most tests run the real runner on the host (``HostRunner``: no isolation, the code run is these tests'
own): they test what the parent does with what comes back, so they run wherever Python does.
"""

import ast
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from domains.coding import CodingDomain, _parse_prefix, sanitize
from domains.coding_protocol import MAX_DEPTH, MAX_LINE, ProtocolViolation, decode_output, parse_records
from domains.coding_runner import to_text
from envs.sandbox.base import CodeSandbox, ExecResult, ExecStatus
from harness.domain import DomainContext, SampleStatus
from harness.episodes import ScriptedAgent
from tests.conftest import SHARED_DATA


class HostRunner(CodeSandbox):
    """A code sandbox without isolation: the command runs with the host's interpreter in a fresh
    directory. Counts its runs per class (the expected-output cache tests)."""

    runs = 0

    def __init__(self, limits=None):
        super().__init__(limits)
        self.python = sys.executable

    def run(self, argv, *, files=None, stdin=None, limits=None, env=None, collect=()):
        type(self).runs += 1
        lim = limits or self.limits
        with tempfile.TemporaryDirectory() as d:
            for name, data in (files or {}).items():
                (Path(d) / name).write_bytes(data.encode() if isinstance(data, str) else data)
            t0 = time.monotonic()
            try:
                p = subprocess.run(argv, cwd=d, capture_output=True, timeout=lim.wall_s,
                                   env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"})
                rc, out, err, st = p.returncode, p.stdout, p.stderr, ExecStatus.OK
            except subprocess.TimeoutExpired:
                rc, out, err, st = None, b"", b"", ExecStatus.TIMEOUT
            got = {c: (Path(d) / c).read_bytes() if (Path(d) / c).is_file() else None for c in collect}
            return ExecResult(rc, out, err, st, time.monotonic() - t0, {"files": got})


class OtherHostRunner(HostRunner):
    runs = 0


HOST = "tests.domains.test_coding_protocol:HostRunner"
ADD = {"task_id": "T/1", "entry_point": "f", "canonical_solution": "def f(a, b):\n    return a + b\n",
       "prompt": '"""\nAdd.\nassert f(1, 2) == 3\n"""', "base_input": [[1, 2], [3, 4]], "plus_input": [], "atol": 0}


def domain(tmp_path, rows, backend=HOST, **params):
    p = tmp_path / "data.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    d = CodingDomain(task="coding", ctx=DomainContext(None, 0, SHARED_DATA), data=str(p), backend=backend,
                     per_input_s=2.0, **params)
    d.setup()
    return d


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEQD_CACHE", str(tmp_path / "cache"))


# -- records and encodings, parsed directly ---------------------------------------------------------------
GOOD = b'{"i": 0, "ok": true, "out": "i3;", "s": 0.1}\n'
BAD_LINES = {
    "unknown tag": b'{"i": 0, "ok": true, "out": "q3;", "s": 0.1}\n',
    "missing i": b'{"ok": true, "out": "i3;", "s": 0.1}\n',
    "missing ok": b'{"i": 0, "out": "i3;", "s": 0.1}\n',
    "unhashable i": b'{"i": [0], "ok": true, "out": "i3;", "s": 0.1}\n',
    "bool i": b'{"i": true, "ok": true, "out": "i3;", "s": 0.1}\n',
    "i out of range": b'{"i": 7, "ok": true, "out": "i3;", "s": 0.1}\n',
    "a list": b'[0, true, "i3;"]\n',
    "a truncated line": b'{"i": 0, "ok": true, "out": "l[i3;\n',
    "3000-deep nesting": b"[" * 3000 + b"]" * 3000 + b"\n",
    "3000-deep object": b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"\n",
    "3000-deep encoding": b'{"i": 0, "ok": true, "out": "' + b"l[" * 3000 + b"]" * 3000 + b'", "s": 0.1}\n',
    "unhashable set member": b'{"i": 0, "ok": true, "out": "S[l[]]", "s": 0.1}\n',
    "dict without a value": b'{"i": 0, "ok": true, "out": "d[i1;]", "s": 0.1}\n',
    "string past the end": b'{"i": 0, "ok": true, "out": "s99:ab", "s": 0.1}\n',
    "trailing text": b'{"i": 0, "ok": true, "out": "i3;i4;", "s": 0.1}\n',
    "int over 4300 digits": b'{"i": 0, "ok": true, "out": "i' + b"9" * 5000 + b';", "s": 0.1}\n',
    "NaN seconds": b'{"i": 0, "ok": true, "out": "i3;", "s": NaN}\n',
    "negative seconds": b'{"i": 0, "ok": true, "out": "i3;", "s": -1}\n',
    "extra key": b'{"i": 0, "ok": true, "out": "i3;", "s": 0.1, "x": 1}\n',
    "ok is a string": b'{"i": 0, "ok": "yes", "out": "i3;", "s": 0.1}\n',
    "error not a string": b'{"i": 0, "ok": false, "error": ["x"]}\n',
    "out a number": b'{"i": 0, "ok": true, "out": 3, "s": 0.1}\n',
    "bad digest": b'{"i": 0, "ok": true, "out": {"sha256": "zz"}, "s": 0.1}\n',
    "load failure as success": b'{"i": -1, "ok": true, "out": "i3;", "s": 0.1}\n',
    "not UTF-8": b'{"i": 0, "ok": true, "out": "s1:\xff", "s": 0.1}\n',
    "a repeated index": GOOD + GOOD,
    "a line over the cap": b'{"i": 0, "ok": false, "error": "' + b"x" * MAX_LINE + b'"}\n',
}


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_a_malformed_record_is_a_protocol_violation(name):
    with pytest.raises(ProtocolViolation) as exc:
        parse_records(BAD_LINES[name], 2)
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 300


def test_records_that_keep_the_protocol():
    recs = parse_records(GOOD + b'{"i": 1, "ok": false, "error": "timeout"}\n', 2)
    assert [r["i"] for r in recs] == [0, 1] and recs[0]["value"] == 3 and recs[1]["error"] == "timeout"
    assert parse_records(GOOD + b'{"i": 1, "ok": true, "out": "l[i1', 2) == parse_records(GOOD, 2)  # cut by a kill
    assert parse_records(None, 2) == [] and parse_records(b"", 2) == []
    with pytest.raises(ProtocolViolation, match="longer than"):
        parse_records(GOOD + b"x" * (MAX_LINE + 2), 2)  # an unterminated line is capped too


@pytest.mark.parametrize("text", ["l[" * 5000, "l[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "", "]", "l", "i12",
                                  "c1.0;", "b2:zz", "s-1:", "S[l[]]", "d[i1;]", "x", "f1.2.3;"])
def test_a_malformed_encoding_is_a_protocol_violation(text):
    with pytest.raises(ProtocolViolation):
        decode_output(text)


def test_encodings_up_to_the_depth_bound_decode():
    deep = [[]]
    for _ in range(MAX_DEPTH - 2):
        deep = [deep]
    assert decode_output(to_text(deep)) == deep
    with pytest.raises(ValueError, match="nested deeper"):  # the runner refuses what the parent would
        to_text([deep])


# -- the sanitiser on model text ----------------------------------------------------------------------
@pytest.mark.parametrize("expr", ["-" * 330 + "1", "-" * 5000 + "1", "+".join(["1"] * 3000), "not " * 1000 + "x",
                                  "a." * 3000 + "b", "(" * 500 + "1" + ")" * 500, "[" * 300 + "]" * 300,
                                  "lambda: " * 400 + "1", "f(" * 300 + ")" * 300])
def test_the_sanitiser_never_recurses_on_model_text(expr):
    code = sanitize(f"def f(a, b):\n    return {expr}\n", "f")
    assert code is None or code.startswith("def f(a, b):")


def test_the_sanitiser_keeps_source_text():
    code = sanitize("import math  # why\n@staticmethod\ndef f(a, b):\n    '''doc'''\n    return a + b  # sum\n"
                    "x = f(1, 2); print(x)\ny: int = 3\nprint(f(1, 2))\nassert f(1, 2) == 3\n", "f")
    assert code == ("import math\n@staticmethod\ndef f(a, b):\n    '''doc'''\n    return a + b  # sum\n"
                    "x = f(1, 2)\ny: int = 3\n")
    assert sanitize("s = 'é€😀'; print(s)\ndef f(): return s\n", "f") == "s = 'é€😀'\ndef f(): return s\n"
    assert sanitize("x" * (2 << 20), "f") is None


def test_the_prefix_search_finds_what_trying_every_prefix_finds():
    """The search jumps to a syntax error's line; on broken completions it finds the same prefix as
    dropping one line at a time (the old rule)."""
    def naive(lines):
        for end in range(len(lines), 0, -1):
            try:
                ast.parse("\n".join(lines[:end]))
                return end
            except (SyntaxError, ValueError, RecursionError):
                continue
        return 0

    rows = [json.loads(x) for x in (SHARED_DATA / "mbppplus" / "mbppplus.jsonl").read_text().splitlines()[:120]] \
        if (SHARED_DATA / "mbppplus" / "mbppplus.jsonl").exists() else [ADD] * 40
    noise = ["def g(:", "    return (1,", "x = ]", "'''open", "  bad indent", "if x", "print('hi')", ")", "else:"]
    rng = random.Random(0)
    for r in rows:
        lines = r["canonical_solution"].splitlines() + ["def extra(a):", "    return a"]
        for _ in range(3):
            cut = list(lines)
            for _ in range(rng.randint(1, 3)):
                cut.insert(rng.randint(0, len(cut)), rng.choice(noise))
            got = _parse_prefix(cut)
            assert (len(got[1]) if got else 0) == naive(cut), cut


# -- end to end: a program that forges its results ---------------------------------------------------------
def forging(line: bytes) -> str:
    """A completion whose code makes the runner write ``line`` (raw bytes) instead of each record."""
    return (f"\nimport __main__\ndef _forge(i, v, s):\n    with open('results.jsonl', 'ab') as fh:\n"
            f"        fh.write({line!r})\n    return ''\n__main__.record = _forge\ndef f(a, b):\n    return a + b\n```")


@pytest.mark.parametrize("name", sorted(set(BAD_LINES) - {"a repeated index", "a line over the cap"}))
def test_forged_records_fail_the_sample_not_the_harness(tmp_path, name):
    d = domain(tmp_path, [ADD])
    r = d.run(ScriptedAgent(lambda s, t, m: forging(BAD_LINES[name]))).samples[0]
    assert r.status == SampleStatus.INVALID_ACTION and r.score == 0, r
    assert r.detail["base_failure"]["error"].startswith("result protocol: results line ")
    assert d.run(d.scripted_agent("gold")).quality == 1.0  # and the judge goes on


def test_the_runner_kept_its_protocol_for_an_honest_program(tmp_path):
    d = domain(tmp_path, [ADD])
    assert d.run(d.scripted_agent("gold")).quality == 1.0
    assert d.run(ScriptedAgent(lambda s, t, m: "\ndef f(a, b):\n    return [[a]] * b\n```")).samples[0].status == \
        SampleStatus.WRONG


def test_a_deep_return_value_is_the_programs_failure(tmp_path):
    d = domain(tmp_path, [ADD])
    code = "\ndef f(a, b):\n    x = []\n    for _ in range(5000):\n        x = [x]\n    return x\n```"
    r = d.run(ScriptedAgent(lambda s, t, m: code)).samples[0]
    assert r.status == SampleStatus.WRONG and "nested deeper" in r.detail["base_failure"]["error"], r


def test_330_minus_signs_are_judged(tmp_path):
    d = domain(tmp_path, [ADD])
    r = d.run(ScriptedAgent(lambda s, t, m: "\ndef f(a, b):\n    return " + "-" * 330 + "1\n```")).samples[0]
    assert r.status in (SampleStatus.WRONG, SampleStatus.INVALID_ACTION) and not r.status.is_harness_failure, r


def test_a_reference_that_breaks_the_protocol_is_a_harness_error(tmp_path):
    bad = dict(ADD, canonical_solution="import __main__\n__main__.record = lambda i, v, s: '[1]\\n'\n"
                                        "def f(a, b):\n    return a + b\n")
    r = domain(tmp_path, [bad]).run(ScriptedAgent(lambda s, t, m: "\ndef f(a, b):\n    return a + b\n```")).samples[0]
    assert r.status == SampleStatus.HARNESS_ERROR and "break the protocol" in r.detail["error"], r


# -- the expected-output cache knows the backend ----------------------------------------------------------
def test_the_expected_cache_is_keyed_by_backend(tmp_path):
    HostRunner.runs = OtherHostRunner.runs = 0
    for backend in (HOST, HOST, "tests.domains.test_coding_protocol:OtherHostRunner"):
        d = domain(tmp_path, [ADD], backend=backend)
        assert d.run(d.scripted_agent("gold")).quality == 1.0
    assert HostRunner.runs == 3  # the reference once, then the gold completion twice (the second domain hit the cache)
    assert OtherHostRunner.runs == 2  # another backend: its own reference run
    assert len(list((tmp_path / "cache" / "mbpp_expected").glob("*.json"))) == 2


def test_a_judge_bug_is_that_samples_harness_error_not_the_end_of_the_evaluation(tmp_path, monkeypatch):
    d = domain(tmp_path, [ADD, {**ADD, "task_id": "T/2"}])
    real = d.executor.run
    calls = []

    def flaky(code, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # the first sample's judged run (the first call computes the reference)
            raise RecursionError("maximum recursion depth exceeded")
        return real(code, *a, **k)

    monkeypatch.setattr(d.executor, "run", flaky)
    res = d.run(d.scripted_agent("gold"), [0])
    assert res.samples[0].status == SampleStatus.HARNESS_ERROR and "RecursionError" in res.samples[0].detail["error"]
    assert d.run(d.scripted_agent("gold")).quality == 1.0


def _backend_or_skip(kind: str) -> str:
    from harness.registry import CODE_SANDBOXES

    ok, why = CODE_SANDBOXES.get(kind).available()
    if not ok:
        pytest.skip(f"{kind} sandbox: {why}")
    return kind


@pytest.mark.parametrize("kind", ["local", "docker"])
def test_forged_records_and_deep_code_in_the_real_sandboxes(tmp_path, kind):
    """The same attacks through each code sandbox: what comes back is parsed the same hostile way."""
    d = domain(tmp_path, [ADD], backend=_backend_or_skip(kind))
    try:
        names = ["3000-deep nesting", "3000-deep encoding", "unhashable i", "unknown tag", "not UTF-8", "a list"]
        for name in names if kind == "local" else names[:3]:  # a Docker run takes seconds
            r = d.run(ScriptedAgent(lambda s, t, m, name=name: forging(BAD_LINES[name]))).samples[0]
            assert r.status == SampleStatus.INVALID_ACTION, (name, r)
        r = d.run(ScriptedAgent(lambda s, t, m: "\ndef f(a, b):\n    return " + "-" * 330 + "1\n```")).samples[0]
        assert not r.status.is_harness_failure and r.score == 0, r
        assert d.run(d.scripted_agent("gold")).quality == 1.0
    finally:
        d.close()


def test_the_runners_fast_paths_write_the_same_text():
    import enum

    class Colour(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    assert to_text([True, False, 1, -2, "a;b", 1.5, None, (Colour.RED, Name("xy"))]) == \
        "l[TFi1;i-2;s3:a;bf1.5;Nt[i1;s2:xy]]"
    assert to_text(Colour.RED) == "i1;" and to_text(Name("xy")) == "s2:xy"


def test_string_set_order_is_the_same_in_the_references_run_and_the_models(tmp_path):
    """The sandboxed interpreter keeps PYTHONHASHSEED=0 (why not ``-I``, which implies -E): a function that
    returns ``list(set_of_strings)`` is judged against its own reference, run by run."""
    words = ", ".join(repr(w) for w in ("apple", "banana", "cherry", "date", "elder", "fig", "grape", "kiwi"))
    row = {**ADD, "canonical_solution": f"def f(a, b):\n    return list({{{words}}})\n"}
    d = domain(tmp_path, [row], backend=_backend_or_skip("local"))
    try:
        assert [d.run(d.scripted_agent("gold")).quality for _ in range(3)] == [1.0] * 3
    finally:
        d.close()
