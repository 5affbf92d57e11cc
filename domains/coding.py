"""MBPP+ (EvalPlus): the model writes a Python function; pass@1 on the base inputs (and the plus ones).

Prompt (benchmark-protocols.md): system = prompts/mbpp_system.txt; user = the docstring's instruction
(text before the first ``assert``, with a final "."), then "Your code should satisfy the following
assertion:" and the assertion in a python block; the assistant turn is prefilled with "```python" and the
completion is cut at its first "```". Judge: the code is sanitised (imports, functions, classes and
top-level assignments kept; prints, asserts and calls dropped), run in the sandbox on every input, and each
output compared with the canonical solution's (computed once in the sandbox and cached) by EvalPlus's
rule: equal, or for floats / sequences of floats ``np.allclose(rtol=1e-7, atol=atol or 1e-6)``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from envs.sandbox.base import CodeSandbox, ExecStatus, Limits
from harness.agent_domain import AgentDomain, AgentParams
from harness.domain import SampleResult, SampleStatus, TaskResult, register_domain
from harness.episodes import CONTEXT_LIMIT, Agent, ChatRequest, ScriptedAgent
from harness.errors import HarnessError
from harness.registry import CODE_SANDBOXES

RUNNER = Path(__file__).with_name("coding_runner.py")
PREFILL = "```python"


# -- prompt ---------------------------------------------------------------------------------------------
def instruction_of(prompt: str, assertion_fallback: str = "") -> tuple[str, str]:
    first, last = prompt.find('"""'), prompt.rfind('"""')
    body = prompt[first + 3 : last] if first != -1 and last > first else prompt
    cut = body.find("assert")
    instr, assertion = (body[:cut], body[cut:]) if cut != -1 else (body, assertion_fallback)
    instr = instr.strip()
    if not instr.endswith("."):
        instr += "."
    return instr, assertion.strip()


def user_turn(sample: dict) -> str:
    instr, assertion = instruction_of(sample["prompt"], sample.get("assertion", ""))
    return f"{instr} Your code should satisfy the following assertion:\n```python\n{assertion}\n```"


def completion_code(completion: str) -> str:
    """The model continues "```python": its code is everything up to the first closing fence."""
    cut = completion.find("```")
    return completion if cut == -1 else completion[:cut]


def sanitize(code: str, entry_point: str) -> str | None:
    """Keep imports, function and class definitions and top-level assignments; None if unparseable or
    the entry point is not defined. Trailing lines are dropped until the code parses (truncated output)."""
    lines = code.splitlines()
    tree = None
    for end in range(len(lines), 0, -1):
        try:
            tree = ast.parse("\n".join(lines[:end]))
            break
        except (SyntaxError, ValueError):
            continue
    if tree is None:
        return None
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    body = [n for n in tree.body if isinstance(n, keep)]
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry_point for n in body):
        return None
    return ast.unparse(ast.Module(body=body, type_ignores=[]))


# -- inputs: JSON lost the tuples ---------------------------------------------------------------------
def _first_shape(nodes) -> dict | None:
    """Element shape of a container: the first element that has one (mixed tuples like (4, (7, 6)))."""
    shapes = [sh for sh in (_shape(n) for n in nodes) if sh is not None]
    containers = [sh for sh in shapes if sh["t"] in ("tuple", "list", "set", "dict")]
    return (containers or shapes or [None])[0]


def _shape(node: ast.AST) -> dict | None:
    kinds = {ast.Tuple: "tuple", ast.List: "list", ast.Set: "set"}
    for cls, name in kinds.items():
        if isinstance(node, cls):
            return {"t": name, "e": _first_shape(node.elts)}
    if isinstance(node, ast.Dict):
        return {"t": "dict", "e": _first_shape(node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _shape(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        return _shape(node.right) or _shape(node.left)  # 1+2j
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, complex)) and not isinstance(node.value, bool):
        # JSON carries complex numbers as strings ("1j", "(-0-1j)"): turn those strings back into numbers
        return {"t": type(node.value).__name__}
    return None


def argument_shapes(sample: dict) -> list | None:
    """Container types of the entry point's arguments, read off the task's example assertion.

    The shared data stores inputs as JSON, where tuples became lists; the canonical solutions of some
    tasks need tuples back (``test_tup + tuple(test_list)``). The example call in the prompt's assertion
    is a Python literal and says which argument is a tuple, a list of tuples, a set...
    """
    _, assertion = instruction_of(sample["prompt"], sample.get("assertion", ""))
    for text in (assertion, sample.get("assertion", "")):
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == sample["entry_point"]:
                return [_shape(a) for a in node.args]
    return None


# -- outputs --------------------------------------------------------------------------------------------
class _Decoder:
    def __init__(self, text: str):
        self.t, self.i = text, 0

    def _until(self, ch: str) -> str:
        j = self.t.index(ch, self.i)
        s, self.i = self.t[self.i : j], j + 1
        return s

    def value(self) -> Any:
        tag = self.t[self.i]
        self.i += 1
        if tag == "N":
            return None
        if tag in "TF":
            return tag == "T"
        if tag == "i":
            return int(self._until(";"))
        if tag == "f":
            return float(self._until(";"))
        if tag == "c":
            return complex(float(self._until(";")), float(self._until(";")))
        if tag in "sbr":
            n = int(self._until(":"))
            if tag == "b":
                s, self.i = bytes.fromhex(self.t[self.i : self.i + 2 * n]), self.i + 2 * n
                return s
            s, self.i = self.t[self.i : self.i + n], self.i + n
            return s if tag == "s" else _Opaque(s)
        if tag in "ltSZd":
            assert self.t[self.i] == "["
            self.i += 1
            items = []
            while self.t[self.i] != "]":
                items.append(self.value())
            self.i += 1
            if tag == "l":
                return items
            if tag == "t":
                return tuple(items)
            if tag == "d":
                return {items[k]: items[k + 1] for k in range(0, len(items), 2)}
            return set(items) if tag == "S" else frozenset(items)
        raise ValueError(f"bad output encoding tag {tag!r}")


class _Opaque(str):
    """A value only known by its repr (an object of another type): compared by that text."""


def decode_output(enc: Any) -> Any:
    if isinstance(enc, dict):
        return enc  # {"sha256": ...}: compared as is
    return _Decoder(enc).value()


# EvalPlus's special cases for MBPP+: order-free outputs compared as sets, and regex tasks whose output
# only matters as "a match or None".
SET_EQ_TASKS = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
                "intersection_array", "find_dissimilar", "Diff"}
NOT_NONE_TASKS = {"check_str", "text_match_three", "text_starta_endb"}


def normalise_for_task(entry_point: str, value: Any) -> Any:
    if isinstance(value, dict) and "sha256" in value:
        return value
    if entry_point in SET_EQ_TASKS and isinstance(value, (list, tuple, set, frozenset)):
        try:
            return set(value)
        except TypeError:
            return value
    if entry_point in NOT_NONE_TASKS:
        return value is not None
    return value


def _is_floats(x: Any) -> bool:
    return isinstance(x, float) or (isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x))


def outputs_match(expected: Any, got: Any, atol: float) -> bool:
    """EvalPlus: exact equality, else (for floats or sequences of floats) np.allclose."""
    if isinstance(expected, dict) and "sha256" in expected or isinstance(got, dict) and "sha256" in got:
        return expected == got
    try:
        if expected == got:
            return True
    except Exception:  # noqa: BLE001 - exotic values
        return False
    if atol == 0 and _is_floats(expected):
        atol = 1e-6
    if atol == 0 or type(expected) is not type(got):
        return False
    exp = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    out = list(got) if isinstance(got, (list, tuple)) else [got]
    if len(exp) != len(out):
        return False
    try:
        return all(math.isclose(o, e, rel_tol=0, abs_tol=0) or abs(o - e) <= atol + 1e-7 * abs(e) for o, e in zip(out, exp))
    except TypeError:
        return False


# -- execution ------------------------------------------------------------------------------------------
# what a program gets by default: MBPP+'s slowest canonical solutions need minutes and gigabytes
DEFAULT_LIMITS = Limits(wall_s=120, cpu_s=120, memory_bytes=4 << 30, pids=32, output_bytes=1 << 20,
                        workdir_bytes=1536 << 20, file_bytes=1 << 30)


class CodeExecutor:
    """Runs a program on a task's inputs in a code sandbox; returns per-input results (or a failure).
    ``sandbox``: a ``CodeSandbox`` built with ``limits``, or the registered kind to build (with
    ``backend_params``: its keyword arguments)."""

    def __init__(self, sandbox: CodeSandbox | str = "local", limits: Limits | None = None,
                 backend_params: dict[str, Any] | None = None):
        self.limits = limits or DEFAULT_LIMITS
        if isinstance(sandbox, str):
            sandbox = CODE_SANDBOXES.get(sandbox)(limits=self.limits, **dict(backend_params or {}))
        self.sandbox = sandbox
        self.python = sandbox.python

    def run(self, code: str, entry: str, inputs: Sequence, limits_s: Sequence[float], shapes: list | None = None,
            wall_cap_s: float | None = None):
        """``limits_s``: the time limit of each input. The whole run gets their sum plus slack (capped)."""
        files = {"solution.py": code, "runner.py": RUNNER.read_text(),
                 "inputs.json": json.dumps({"inputs": list(inputs), "shapes": shapes, "limits": list(limits_s)})}
        wall = min(wall_cap_s or self.limits.wall_s, 5 + 1.5 * sum(limits_s))
        lim = Limits(**{**self.limits.__dict__, "wall_s": wall, "cpu_s": int(wall) + 1})
        res = self.sandbox.run([self.python, "runner.py", "solution.py", entry, "inputs.json", "results.jsonl"],
                               files=files, limits=lim, collect=["results.jsonl"])
        raw = (res.detail.get("files") or {}).get("results.jsonl")
        records = []
        if raw:
            for line in raw.decode("utf-8", "replace").splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: the rest never ran
        return res, records

    def close(self) -> None:
        self.sandbox.close()


def _cache_dir() -> Path:
    return Path(os.environ.get("CYCLEQD_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cycleqd"))


@dataclass
class CodingParams(AgentParams):
    data: str = "mbppplus/mbppplus.jsonl"
    system: str = "prompts/mbpp_system.txt"
    backend: str = "local"  # a registered code sandbox (harness.registry.CODE_SANDBOXES): local | docker | ...
    per_input_s: float = 1.0  # an input's time limit: max(per_input_s, time_factor * the canonical seconds)
    time_factor: float = 4.0
    workers: int = 2  # completions judged at once
    plus: bool = True  # judge the plus inputs too (reported beside the base pass@1)
    canonical_limit_s: float = 120.0
    canonical_wall_s: float = 600.0


@register_domain("coding")
class CodingDomain(AgentDomain):
    """MBPP+ through the sandbox. Quality = base pass@1; ``detail`` carries the plus verdict too."""

    Params = CodingParams
    required = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input")
    split_key = "coding"
    prefill = PREFILL
    stop = ("Instruction:", "Instruction", "Response:", "Response")

    def __init__(self, *, task, ctx, params: CodingParams | None = None, **kwargs: Any):
        super().__init__(task=task, ctx=ctx, params=params, **kwargs)
        self.system: str | None = None
        self.executor: CodeExecutor | None = None

    @property
    def system_path(self) -> Path:
        return self.path(self.params.system)

    def setup(self) -> None:
        super().setup()
        self.system = self.system_path.read_text()
        self.executor = CodeExecutor(self.make_backend(CODE_SANDBOXES, limits=DEFAULT_LIMITS), DEFAULT_LIMITS)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
            self.executor = None

    def messages(self, sample: dict) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user_turn(sample)}]

    # -- expected outputs (canonical solution, run once in the sandbox, cached by content) --------------
    def expected(self, sample: dict, part: str) -> dict:
        """The canonical solution's outputs and per-input seconds on ``part`` ("base" | "plus")."""
        inputs = sample["base_input"] if part == "base" else sample.get("plus_input", [])
        shapes = argument_shapes(sample)
        key = hashlib.sha256(json.dumps([sample["canonical_solution"], sample["entry_point"], inputs, shapes,
                                         RUNNER.read_text()], sort_keys=True).encode()).hexdigest()[:24]
        path = _cache_dir() / "mbpp_expected" / f"{key}.json"
        if path.exists():
            return json.loads(path.read_text())
        res, recs = self.executor.run(sample["canonical_solution"], sample["entry_point"], inputs,
                                      [self.params.canonical_limit_s] * len(inputs), shapes,
                                      wall_cap_s=self.params.canonical_wall_s)
        if len(recs) != len(inputs) or not all(r["ok"] for r in recs):
            bad = next((r for r in recs if not r["ok"]), None)
            raise HarnessError(f"{sample['task_id']}: the canonical solution fails on the {part} inputs in the "
                               f"sandbox ({res.status.value}, {bad['error'] if bad else 'no results'})")
        out = {"out": [r["out"] for r in recs], "seconds": [r["s"] for r in recs]}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(out))
        os.replace(tmp, path)
        return out

    # -- judging one completion ---------------------------------------------------------------------------
    def judge(self, sample_id: str, sample: dict, completion: str) -> SampleResult:
        detail: dict[str, Any] = {"task_id": sample["task_id"]}
        if completion == CONTEXT_LIMIT:
            return SampleResult(sample_id, SampleStatus.CONTEXT_LIMIT, 0.0, detail)
        code = sanitize(completion_code(completion), sample["entry_point"])
        if code is None:
            return SampleResult(sample_id, SampleStatus.INVALID_ACTION, 0.0, {**detail, "error": "no parseable "
                                f"definition of {sample['entry_point']!r}"})
        detail["base"] = detail["plus"] = None
        status = SampleStatus.SOLVED
        for part in ("base", "plus") if self.params.plus and sample.get("plus_input") else ("base",):
            try:
                exp = self.expected(sample, part)
            except HarnessError as exc:
                if part == "base":
                    return SampleResult(sample_id, SampleStatus.HARNESS_ERROR, 0.0, {**detail, "error": str(exc)})
                detail["plus_error"] = str(exc)  # the plus column is unknown; the base verdict stands
                break
            inputs = sample["base_input"] if part == "base" else sample["plus_input"]
            limits = [max(self.params.per_input_s, self.params.time_factor * t) for t in exp["seconds"]]
            ok, why = self._check(code, sample, inputs, exp["out"], limits)
            detail[part] = ok
            if not ok:
                detail[f"{part}_failure"] = why
                if part == "base":
                    status = why["status"]
                break
        if detail["base"] and not sample.get("plus_input") and "plus_error" not in detail:
            detail["plus"] = True  # no plus inputs: the plus verdict is the base one
        if status == SampleStatus.SOLVED:
            return SampleResult(sample_id, status, 1.0, detail)
        return SampleResult(sample_id, status, 0.0, detail)

    def _check(self, code, sample, inputs, expected, limits) -> tuple[bool, dict]:
        res, recs = self.executor.run(code, sample["entry_point"], inputs, limits, argument_shapes(sample))
        if res.status == ExecStatus.ENV_ERROR:
            return False, {"status": SampleStatus.ENV_ERROR, "error": res.detail.get("error")}
        by_i = {r["i"]: r for r in recs}
        if -1 in by_i:
            return False, {"status": SampleStatus.WRONG, "error": by_i[-1]["error"]}
        atol = float(sample.get("atol") or 0)
        ep = sample["entry_point"]
        for i, want in enumerate(expected):
            r = by_i.get(i)
            if r is None:  # killed before reaching this input
                st = {ExecStatus.TIMEOUT: SampleStatus.TIMEOUT, ExecStatus.MEMORY: SampleStatus.RESOURCE_LIMIT,
                      ExecStatus.OUTPUT_LIMIT: SampleStatus.RESOURCE_LIMIT}.get(res.status, SampleStatus.WRONG)
                return False, {"status": st, "input": i, "error": f"sandbox {res.status.value}, rc {res.returncode}"}
            if not r["ok"]:
                st = SampleStatus.TIMEOUT if r["error"] == "timeout" else SampleStatus.WRONG
                return False, {"status": st, "input": i, "error": r["error"]}
            if not outputs_match(normalise_for_task(ep, decode_output(want)),
                                 normalise_for_task(ep, decode_output(r["out"])), atol):
                return False, {"status": SampleStatus.WRONG, "input": i, "error": "wrong output"}
        return True, {}

    def run(self, agent: Agent, indices: Sequence[int] | None = None, progress: bool = False) -> TaskResult:
        if self.executor is None:
            self.setup()
        samples = self.samples()
        idx = self.indices(indices)
        reqs = [ChatRequest(f"coding/{i}", self.messages(samples[i]), samples[i], 0) for i in idx]
        completions = agent.respond(reqs)
        with ThreadPoolExecutor(self.params.workers) as pool:
            futs = [pool.submit(self.judge, r.sample_id, samples[i], c) for r, i, c in zip(reqs, idx, completions)]
            results = [f.result() for f in tqdm(futs, desc=self.task, disable=not progress, leave=False)]
        quality = sum(r.score for r in results) / max(len(results), 1)
        return TaskResult(quality, results)

    def scripted_agent(self, kind: str) -> Agent:
        policies = {
            "gold": lambda s, t, m: s["canonical_solution"] + "\n```\nThat is the solution.",
            "wrong": lambda s, t, m: f"\ndef {s['entry_point']}(*args, **kwargs):\n    return 0\n```",
            "garbage": lambda s, t, m: "I am not sure how to do that.",
            "syntax_error": lambda s, t, m: f"\ndef {s['entry_point']}(:\n```",
        }
        if kind not in policies:
            raise ValueError(f"coding: unknown scripted agent {kind!r} ({' | '.join(policies)})")
        return ScriptedAgent(policies[kind])


def pass_at_1(results: Sequence[SampleResult]) -> dict[str, float]:
    n = max(len(results), 1)
    return {"base": sum(bool(r.detail.get("base")) for r in results) / n,
            "plus": sum(bool(r.detail.get("plus")) for r in results) / n}
