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
import contextlib
import functools
import hashlib
import json
import marshal
import math
import os
import queue
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from domains.coding_protocol import ProtocolViolation, decode_output, parse_records
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


MAX_CODE = 1 << 20  # characters of a completion's code: more is not parsed (invalid_action)
_KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
_BLOCKS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _parse_prefix(lines: list[str]) -> tuple[ast.Module, list[str]] | None:
    """The longest prefix of ``lines`` that parses. After a syntax error at line L no prefix running past
    line L parses, so the search goes on from there (a long reply costs a few parses, not one per line).
    Nesting beyond the parser's bounds (``return ------...1``: RecursionError, MemoryError) is a prefix
    that does not parse, never an exception."""
    end = len(lines)
    while end > 0:
        try:
            return ast.parse("\n".join(lines[:end])), lines[:end]
        except SyntaxError as exc:
            end = min(end - 1, exc.lineno) if isinstance(exc.lineno, int) and exc.lineno > 0 else end - 1
        except (ValueError, RecursionError, MemoryError):  # null bytes; too deeply nested
            end -= 1
    return None


def _segment(lines: list[str], node: ast.stmt) -> str:
    """A top-level statement's own source text. A definition owns its lines (decorators included); a simple
    statement may share its line with a dropped one (``x = f(1); print(x)``), so it is cut by column
    (the parser's columns count UTF-8 bytes)."""
    if isinstance(node, _BLOCKS):
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        return "\n".join(lines[first - 1 : node.end_lineno])
    a, b = node.lineno - 1, node.end_lineno - 1
    if a == b:
        return lines[a].encode()[node.col_offset : node.end_col_offset].decode()
    head = lines[a].encode()[node.col_offset :].decode()
    return "\n".join([head, *lines[a + 1 : b], lines[b].encode()[: node.end_col_offset].decode()])


def sanitize(code: str, entry_point: str) -> str | None:
    """Keep imports, function and class definitions and top-level assignments (their source text, so
    nothing recurses over the model's tree); None if unparseable, too long, or the entry point is not
    defined. Trailing lines are dropped until the code parses (truncated output)."""
    if len(code) > MAX_CODE:
        return None
    parsed = _parse_prefix(code.splitlines())
    if parsed is None:
        return None
    tree, lines = parsed
    body = [n for n in tree.body if isinstance(n, _KEEP)]
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry_point for n in body):
        return None
    return "\n".join(_segment(lines, n) for n in body) + "\n"


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


# -- data, checked at load ------------------------------------------------------------------------------
def _argument_lists(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(a, list) for a in x)


def check_mbpp_sample(row: dict) -> str | None:
    """Why an MBPP+ record cannot be judged (the field and what is wrong), or None. Inputs stored as JSON
    text would be judged character by character, and a reference that does not parse would score every
    model's answer as the model's invalid_action: both are refused here."""
    for k in ("task_id", "prompt", "entry_point", "canonical_solution"):
        if not isinstance(row[k], str):
            return f"{k} must be a string, not {type(row[k]).__name__}"
    if not row["entry_point"].isidentifier():
        return f"entry_point {row['entry_point'][:60]!r} is not a Python name"
    if not _argument_lists(row["base_input"]):
        return f"base_input must be a list of argument lists, not {_kind(row['base_input'])}"
    plus = row.get("plus_input", [])
    if plus != {} and not _argument_lists(plus):  # {}: no plus inputs (Mbpp/793 in the EvalPlus v0.1.0 release)
        return f"plus_input must be a list of argument lists, not {_kind(plus)}"
    atol = row.get("atol", 0)
    if type(atol) not in (int, float) or not math.isfinite(atol) or atol < 0:
        return f"atol must be a finite number >= 0, not {str(atol)[:40]!r}"
    if not isinstance(row.get("assertion", ""), str):
        return "assertion must be a string"
    try:
        with warnings.catch_warnings():  # "invalid escape sequence '\w'" in a reference's regex: still valid
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
            tree = ast.parse(row["canonical_solution"])
    except SyntaxError as exc:
        return f"canonical_solution does not parse (line {exc.lineno}: {exc.msg})"
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"canonical_solution does not parse ({type(exc).__name__})"
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == row["entry_point"] for n in tree.body):
        return f"canonical_solution does not define entry_point {row['entry_point']!r}"
    try:
        argument_shapes(row)
    except (RecursionError, MemoryError):
        return "prompt: the example call is nested too deeply"
    return None


def _kind(x: Any) -> str:
    """What a value is, for an error: a list whose items are not lists says so."""
    if isinstance(x, list):
        bad = next(a for a in x if not isinstance(a, list))
        return f"a list holding a {type(bad).__name__}"
    return f"a {type(x).__name__}"


# -- outputs (decoded by domains.coding_protocol: they come from the sandbox) ---------------------------
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


# -s -S: no site (28 ms of every run, and the interpreter's site-packages would be importable: a sandboxed
# program gets the standard library only). Not -I: it implies -E, which drops PYTHONHASHSEED=0, and the
# order of a set of strings must be the same in the reference's run and the model's.
PYTHON_FLAGS = ("-s", "-S")
# the largest results file (and any file) a judged run may write: read back whole by the harness
RESULTS_BYTES = 256 << 20


@functools.lru_cache(maxsize=1)
def runner_source() -> str:
    return RUNNER.read_text()


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
        self._idle: queue.SimpleQueue | None = None  # sessions not in use, while ``sessions()`` is open
        self._open: list = []
        self._users = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def sessions(self):
        """Within: runs share sandboxes started once (``CodeSandbox.session``), one per judging thread at a
        time, each run still a fresh, limited process; closed on the way out. Why: the start of a one-shot
        local sandbox cost twice the judged program's own start, for each part of every completion."""
        with self._lock:  # evaluations may overlap (threads): the last one out closes the sessions
            if self._users == 0:
                self._idle, self._open = queue.SimpleQueue(), []
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for s in self._open:
                        s.close()
                    self._idle, self._open = None, []

    def _run_sandboxed(self, argv, **kw):
        idle = self._idle
        if idle is None:
            return self.sandbox.run(argv, **kw)
        try:
            s = idle.get_nowait()
        except queue.Empty:
            s = self.sandbox.session(self.limits)
            with self._lock:
                self._open.append(s)
        try:
            return s.run(argv, **kw)
        finally:
            idle.put(s)

    def run(self, code: str, entry: str, inputs: Sequence, limits_s: Sequence[float], shapes: list | None = None,
            wall_cap_s: float | None = None):
        """``limits_s``: the time limit of each input. The whole run gets their sum plus slack (capped).
        Returns the sandbox's result and the validated records (``coding_protocol.parse_records``); raises
        ``ProtocolViolation`` when what came back breaks the protocol."""
        files = {"solution.py": code, "runner.py": runner_source(),
                 "inputs.marshal": marshal.dumps({"inputs": list(inputs), "shapes": shapes, "limits": list(limits_s)})}
        wall = min(wall_cap_s or self.limits.wall_s, 5 + 1.5 * sum(limits_s))
        lim = Limits(**{**self.limits.__dict__, "wall_s": wall, "cpu_s": int(wall) + 1,
                        "file_bytes": min(self.limits.file_bytes, RESULTS_BYTES)})
        res = self._run_sandboxed([self.python, *PYTHON_FLAGS, "runner.py", "solution.py", entry, "inputs.marshal",
                                   "results.jsonl"], files=files, limits=lim, collect=["results.jsonl"])
        if res.status == ExecStatus.ENV_ERROR:
            return res, []
        return res, parse_records((res.detail.get("files") or {}).get("results.jsonl"), len(inputs))

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
    # one sandbox per judging thread for a whole evaluation, each run still a fresh, limited process
    # (envs/sandbox/local_session.py); false: a one-shot sandbox per run, as before
    sandbox_session: bool = True
    plus: bool = True  # judge the plus inputs too (reported beside the base pass@1)
    canonical_limit_s: float = 120.0
    canonical_wall_s: float = 600.0


@register_domain("coding")
class CodingDomain(AgentDomain):
    """MBPP+ through the sandbox. Quality = base pass@1; ``detail`` carries the plus verdict too."""

    Params = CodingParams
    required = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input")
    unique = "task_id"
    split_key = "coding"
    prefill = PREFILL
    stop = ("Instruction:", "Instruction", "Response:", "Response")

    def __init__(self, *, task, ctx, params: CodingParams | None = None, **kwargs: Any):
        super().__init__(task=task, ctx=ctx, params=params, **kwargs)
        self.system: str | None = None
        self.executor: CodeExecutor | None = None
        self.backend_key = ""  # what the expected-output cache knows the sandbox by
        self._expected: dict[tuple[int, str], tuple[dict, dict]] = {}
        self._shapes: dict[int, tuple[dict, list | None]] = {}

    @property
    def system_path(self) -> Path:
        return self.path(self.params.system)

    def setup(self) -> None:
        super().setup()
        self.system = self.system_path.read_text()
        sandbox = self.make_backend(CODE_SANDBOXES, limits=DEFAULT_LIMITS)
        self.executor = CodeExecutor(sandbox, DEFAULT_LIMITS)
        self.backend_key = json.dumps([f"{type(sandbox).__module__}:{type(sandbox).__qualname__}", sandbox.python,
                                       self.params.backend_params], sort_keys=True, default=str)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
            self.executor = None

    def check_sample(self, row) -> str | None:
        return check_mbpp_sample(row)

    def sample_id(self, index: int) -> str:
        """An MBPP sample is named by its task_id (``Mbpp/2``), as EvalPlus's samples files name it."""
        return self.samples()[index]["task_id"]

    def messages(self, sample: dict) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user_turn(sample)}]

    # -- expected outputs (canonical solution, run once in the sandbox, cached by content) --------------
    def expected(self, sample: dict, part: str) -> dict:
        """The canonical solution's outputs ("out": encodings, "values": decoded) and per-input seconds on
        ``part`` ("base" | "plus"). Cached on disk by content and backend (a reference run in Docker is
        not one run locally), and in memory per sample."""
        memo = self._expected.get((id(sample), part))
        if memo is not None and memo[0] is sample:  # the memo holds the sample: its id is not reused
            return memo[1]
        inputs = sample["base_input"] if part == "base" else sample.get("plus_input", [])
        shapes = self.shapes(sample)
        key = hashlib.sha256(json.dumps([sample["canonical_solution"], sample["entry_point"], inputs, shapes,
                                         runner_source(), self.backend_key], sort_keys=True).encode()).hexdigest()[:24]
        path = _cache_dir() / "mbpp_expected" / f"{key}.json"
        out = None
        if path.exists():
            try:
                out = json.loads(path.read_text())
            except (OSError, ValueError):
                out = None  # a damaged cache entry: computed again
        if out is None:
            out = self._run_reference(sample, part, inputs, shapes)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
            tmp.write_text(json.dumps(out))
            os.replace(tmp, path)
        try:
            out["values"] = [decode_output(o) for o in out["out"]]
        except (ProtocolViolation, KeyError, TypeError) as exc:
            raise HarnessError(f"{sample['task_id']}: cached expected outputs at {path} are damaged ({exc})") from None
        self._expected[(id(sample), part)] = (sample, out)
        return out

    def _run_reference(self, sample: dict, part: str, inputs: list, shapes: list | None) -> dict:
        try:
            res, recs = self.executor.run(sample["canonical_solution"], sample["entry_point"], inputs,
                                          [self.params.canonical_limit_s] * len(inputs), shapes,
                                          wall_cap_s=self.params.canonical_wall_s)
        except ProtocolViolation as exc:
            raise HarnessError(f"{sample['task_id']}: the canonical solution's results on the {part} inputs break "
                               f"the protocol ({exc})") from None
        if len(recs) != len(inputs) or not all(r["ok"] for r in recs):
            bad = next((r for r in recs if not r["ok"]), None)
            why = bad["error"] if bad else res.detail.get("error", "no results")
            raise HarnessError(f"{sample['task_id']}: the canonical solution fails on the {part} inputs in the "
                               f"sandbox ({res.status.value}, {why})")
        return {"out": [r["out"] for r in recs], "seconds": [r["s"] for r in recs]}

    def shapes(self, sample: dict) -> list | None:
        """``argument_shapes`` of a sample, computed once."""
        memo = self._shapes.get(id(sample))
        if memo is None or memo[0] is not sample:
            memo = self._shapes[id(sample)] = (sample, argument_shapes(sample))
        return memo[1]

    # -- judging one completion ---------------------------------------------------------------------------
    def judge(self, sample_id: str, sample: dict, completion: str) -> SampleResult:
        """The verdict on one completion. Whatever the model wrote is its own failure at worst; an exception
        left over is the judge's bug, reported as this sample's harness error instead of ending the run."""
        try:
            return self._judge(sample_id, sample, completion)
        except Exception as exc:  # noqa: BLE001 - one sample's verdict, never the whole evaluation
            return SampleResult(sample_id, SampleStatus.HARNESS_ERROR, 0.0,
                                {"task_id": sample.get("task_id"), "error": f"judge failed: {type(exc).__name__}: "
                                                                            f"{str(exc)[:200]}"})

    def _judge(self, sample_id: str, sample: dict, completion: str) -> SampleResult:
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
            ok, why = self._check(code, sample, inputs, exp["values"], limits)
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
        """Run the sanitised code on ``inputs``; ``expected``: the reference's decoded outputs."""
        try:
            res, recs = self.executor.run(code, sample["entry_point"], inputs, limits, self.shapes(sample))
        except ProtocolViolation as exc:  # the program wrote what the runner never writes
            return False, {"status": SampleStatus.INVALID_ACTION, "error": f"result protocol: {exc}"}
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
            if not outputs_match(normalise_for_task(ep, want), normalise_for_task(ep, r["value"]), atol):
                return False, {"status": SampleStatus.WRONG, "input": i, "error": "wrong output"}
        return True, {}

    def run(self, agent: Agent, indices: Sequence[int] | None = None, progress: bool = False) -> TaskResult:
        if self.executor is None:
            self.setup()
        samples = self.samples()
        idx = self.indices(indices)
        reqs = [ChatRequest(self.sample_id(i), self.messages(samples[i]), samples[i], 0) for i in idx]
        completions = agent.respond(reqs)
        shared = self.executor.sessions() if self.params.sandbox_session else contextlib.nullcontext()
        with shared, ThreadPoolExecutor(self.params.workers) as pool:
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
