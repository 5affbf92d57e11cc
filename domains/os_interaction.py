"""AgentBench OS interaction: the model solves tasks by running bash in its own Linux environment.

Protocol (benchmark-protocols.md): the one-shot conversation of ``oneshot.json`` (its first user turn is
the instruction plus the example's question), then "Now, I will start a new problem in a new OS. My
problem is:\\n\\n{description}". Each reply: the LAST "Act:" line decides: ``bash`` (every ```bash block,
joined by blank lines, run in the episode's persistent shell), ``finish`` or ``answer(...)`` (the text
between the first "(" and the last ")"). Observations: "The output of the OS:\\n\\n{output}", cut at 800
characters to 780 + "\\n[truncated because the output is too long]", or "The output of the OS is empty.".
Before the episode: every ``init_script`` as an independent process (failure = harness error), then
``start`` in the shell. Judge: ``match`` (strip, equality or regex) or the ``check`` pipeline.

Where the judge departs from AgentBench (which runs the check inside the container the agent has just
controlled as root, so a planted ``python3`` that exits 0 passes): the check runs after every process of
the episode is gone, with the pristine system over the agent's final files (``EpisodeShell.seal``,
``envs/sandbox/judge_root.py``); a ``null`` check step (the expected answer from ``example_script``) is
computed right after ``start``, before the agent acts, on a throw-away view of the files among the
episode's processes (``EpisodeShell.exec_isolated``), so the agent cannot rewrite the evidence and answer
accordingly. The example then gets no arguments (AgentBench passes it the agent's answer; os/140 alone
reads it, a slip that makes its expected answer depend on the answer).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from envs.rootfs import ensure_rootfs
from envs.sandbox.base import EpisodeShell, ExecStatus
from harness.agent_domain import AgentDomain, AgentParams
from harness.domain import SampleResult, SampleStatus, TaskResult, register_domain
from harness.episodes import Agent, Episode, ScriptedAgent, run_episodes
from harness.errors import HarnessError
from harness.registry import EPISODE_SHELLS

OBS_LIMIT, OBS_KEEP = 800, 780
TRUNC = "\n[truncated because the output is too long]"
_ACT = re.compile(r"Act:\s*(.+)")
_BASH = re.compile(r"```bash\n(.*?)\n```", re.DOTALL)


def parse_action(reply: str) -> tuple[str | None, str | None]:
    """("bash", command) | ("commit", answer or None) | (None, None) for no recognisable action."""
    for act in reversed(_ACT.findall(reply)):
        low = act.lower()
        if low.startswith("bash"):
            return "bash", "\n\n".join(_BASH.findall(reply))
        if low.startswith("finish"):
            return "commit", None
        if low.startswith("answer"):
            content = act[6:].strip()
            lo, hi = content.find("("), content.rfind(")")
            if lo == -1 or hi == -1:
                continue
            return "commit", content[lo + 1 : hi]
    return None, None


def observation(output: str) -> str:
    if not output:
        return "The output of the OS is empty."
    if len(output) > OBS_LIMIT:
        output = output[:OBS_KEEP] + TRUNC
    return "The output of the OS:\n\n" + output


def interpreter(language: str, code: str, params: Sequence[str] = ()) -> list[str]:
    lang = language.lower()
    if lang in ("bash", "sh"):
        return ["bash", "-c", code, "--", *params]
    if lang.startswith("python"):
        return ["python3", "-c", code, *params]
    raise HarnessError(f"os: unknown script language {language!r}")


def _script_error(x) -> str | None:
    """Why ``x`` is not a [language, code] script of a language ``interpreter`` runs, or None."""
    if not (isinstance(x, list) and len(x) == 2 and all(isinstance(v, str) for v in x)):
        return "must be [language, code] (two strings)"
    try:
        interpreter(x[0], x[1])
    except HarnessError:
        return f"has an unknown language {x[0][:40]!r} (bash | sh | python...)"
    return None


def check_os_sample(row: dict) -> str | None:
    """Why an AgentBench OS record cannot be judged (the field and what is wrong), or None: checked at load,
    so a check step that cannot run stops nothing halfway through a run."""
    if not isinstance(row["description"], str):
        return "description must be a string"
    m = row.get("match")
    if m is not None and not (isinstance(m, str) or isinstance(m, dict) and (
            isinstance(m.get("answer"), str) or isinstance(m.get("regex"), str))):
        return "match must be a string or an object with a string answer (or regex)"
    if isinstance(m, dict) and isinstance(m.get("regex"), str):
        try:
            re.compile(m["regex"])
        except re.error as exc:
            return f"match.regex does not compile ({exc})"
    check = row.get("check")
    if not m and not check:
        return "a sample needs a match or a check"
    if check is not None and not isinstance(check, list):
        return "check must be a list of steps ([language, code] or null)"
    for k in ("example_script", "start"):
        if row.get(k) is not None and (why := _script_error(row[k])):
            return f"{k} {why}"
    for j, step in enumerate(check or []):
        if step is None:
            if row.get("example_script") is None:
                return f"check[{j}] is null (run example_script) but the sample has no example_script"
        elif why := _script_error(step):
            return f"check[{j}] {why}"
    init = row.get("init_script")
    if init is not None and not isinstance(init, list):
        return "init_script must be a list of [language, code] scripts"
    for j, step in enumerate(init or []):
        if why := _script_error(step):
            return f"init_script[{j}] {why}"
    return None


class OSEpisode(Episode):
    """One OS task. Its environment (a fresh shell, the sample's init and start scripts, the expected
    answer of a null check step) depends on nothing the agent says, so with a ``pool`` it is made in a
    thread while the agent writes its first reply; the episode waits for it at its first step."""

    def __init__(self, sample_id: str, sample: dict, prefix: list[dict], make_env, round_limit: int,
                 action_timeout: float, *, pool: Executor | None = None):
        self.sample_id, self.sample = sample_id, sample
        self.round_limit, self.action_timeout = round_limit, action_timeout
        self.messages = prefix + [{"role": "user", "content": "Now, I will start a new problem in a new OS. "
                                                               f"My problem is:\n\n{sample['description']}"}]
        self.done, self.turn, self.rounds = False, 0, 0
        self.env = None
        self.expected: tuple[int | None, str, ExecStatus] | None = None  # the example's run, before the agent
        self._make_env = make_env
        self._preparing: Future | None = None
        if pool is None:
            self._prepare()
        else:
            self._preparing = pool.submit(self._prepare)

    def _prepare(self) -> None:
        sample, sample_id = self.sample, self.sample_id
        try:
            self.env = self._make_env()
            for lang, code in sample.get("init_script") or []:
                rc, out, st = self.env.exec(interpreter(lang, code), timeout=60)
                if rc != 0:
                    raise HarnessError(f"init script failed ({st.value}, rc {rc}): {out[-200:]}")
            if sample.get("start"):
                lang, code = sample["start"]
                self.env.run(code if lang.lower() in ("bash", "sh") else " ".join(interpreter(lang, code)),
                             timeout=30, raw=True)
            if any(step is None for step in sample.get("check") or []) and not sample.get("match"):
                ex = sample.get("example_script")
                if not ex:
                    raise HarnessError(f"{sample_id}: check step is null and there is no example_script")
                self.expected = self.env.exec_isolated(interpreter(ex[0], ex[1]), timeout=60)
                if self.expected[2] == ExecStatus.ENV_ERROR:
                    raise HarnessError(f"the example script did not run: {self.expected[1][-200:]}")
        except HarnessError as exc:
            self._finish(SampleStatus.ENV_ERROR, 0.0, {"error": str(exc)})

    def _ready(self) -> bool:
        """Wait for the environment; False when the episode already ended (it could not be made)."""
        if self._preparing is not None:
            fut, self._preparing = self._preparing, None
            fut.result()  # a harness bug in the setup surfaces here, as it would have in the constructor
        return not self.done

    def close_on_context_limit(self) -> None:
        if self._ready():  # an environment that could not be made stays the harness's error
            super().close_on_context_limit()

    def step(self, reply: str) -> None:
        if not self._ready():
            return
        self.messages.append({"role": "assistant", "content": reply})
        action, content = parse_action(reply)
        if action is None:
            return self._finish(SampleStatus.INVALID_ACTION, 0.0, {"reply": reply[-300:]})
        if action == "commit":
            return self._judge(content)
        res = self.env.run(content or "", timeout=self.action_timeout)
        if res.status == ExecStatus.ENV_ERROR and not self.env.alive:
            return self._judge(None, ended="shell exited")
        out = res.output + ("\n[command timed out]" if res.status == ExecStatus.TIMEOUT else "")
        self.messages.append({"role": "user", "content": observation(out)})
        self.rounds += 1
        if self.rounds >= self.round_limit:
            self._finish(SampleStatus.TURN_LIMIT, 0.0, {"rounds": self.rounds})

    def _judge(self, answer: str | None, ended: str | None = None) -> None:
        s = self.sample
        detail: dict[str, Any] = {"answer": answer, "rounds": self.rounds}
        if ended:
            detail["ended"] = ended
        if s.get("match"):
            m = s["match"]
            got = answer.strip() if (answer is not None and m.get("strip", True)) else answer
            if isinstance(m, dict) and m.get("regex"):
                ok = got is not None and re.search(m["regex"], got) is not None
            else:
                want = m["answer"] if isinstance(m, dict) else m
                ok = got == want
            detail["expected"] = m
        else:
            try:
                self.env.seal()  # no process of the agent left, the pristine system over its final files
                ok, detail["check"] = self._check(answer)
            except HarnessError as exc:
                return self._finish(SampleStatus.ENV_ERROR, 0.0, {**detail, "error": str(exc)})
        self._finish(SampleStatus.SOLVED if ok else SampleStatus.WRONG, 1.0 if ok else 0.0, detail)

    def _check(self, answer: str | None) -> tuple[bool, list]:
        params = ["" if answer is None else answer]
        log = []
        for entry in self.sample.get("check") or []:
            if entry is None:  # the expected answer, computed before the agent acted
                rc, out, st = self.expected
            else:
                rc, out, st = self.env.exec(interpreter(entry[0], entry[1], params), timeout=60)
            if st == ExecStatus.ENV_ERROR:
                raise HarnessError(f"check step {len(log)} did not run: {out[-200:]}")
            log.append({"rc": rc, "status": st.value, "out": out[-200:]})
            if rc != 0:
                return False, log
            params.append(out)
        return True, log

    def close(self) -> None:
        if self._preparing is not None:  # never leave an environment being made behind
            futures_wait([self._preparing])
            self._preparing = None
        if self.env is not None:
            self.env.close()
            self.env = None


def gold_policy(sample: dict, turn: int, messages: list[dict]) -> str:
    """Replay: run ``example_script`` and answer its output (match-only samples: answer the match)."""
    ex = sample.get("example_script")
    if turn == 0 and ex and ex[0].lower() in ("bash", "sh"):
        return f"Think: run the reference solution.\n\nAct: bash\n\n```bash\n{ex[1]}\n```"
    if turn == 0 and sample.get("match"):
        m = sample["match"]
        return f"Think: I know it.\n\nAct: answer({m['answer'] if isinstance(m, dict) else m})"
    last = messages[-1]["content"] if messages and messages[-1]["role"] == "user" else ""
    out = last.removeprefix("The output of the OS:\n\n") if last.startswith("The output of the OS:") else ""
    return f"Think: that is the answer.\n\nAct: answer({out.strip()})"


WRONG_POLICIES = {
    "wrong": lambda s, t, m: "Think: guess.\n\nAct: answer(0)",
    "garbage": lambda s, t, m: "I would rather not say.",
    "never_act": lambda s, t, m: "Think: look around.\n\nAct: bash\n\n```bash\ntrue\n```",
    "finish": lambda s, t, m: "Think: done.\n\nAct: finish",
}


@dataclass
class OSParams(AgentParams):
    data: str = "agentbench_os/os_interaction.jsonl"
    oneshot: str = "agentbench_os/oneshot.json"
    backend: str = "local"  # a registered episode shell (harness.registry.EPISODE_SHELLS): local | docker | ...
    round_limit: int = 5
    action_timeout: float = 10.0
    batch_size: int = 8  # episodes (each holding an environment) live at once
    rootfs: Optional[str] = None  # default: the cached Debian root filesystem (built on first use)
    env_workers: int = 4  # threads making and destroying environments (at least 1)


@register_domain("os", "os_interaction")
class OSDomain(AgentDomain):
    Params = OSParams
    required = ("description",)
    split_key = "os"

    def __init__(self, *, task, ctx, params: OSParams | None = None, **kwargs: Any):
        super().__init__(task=task, ctx=ctx, params=params, **kwargs)
        self.rootfs: str | None = self.params.rootfs
        self.shell_cls: type[EpisodeShell] | None = None
        self.prefix: list[dict] | None = None

    @property
    def oneshot_path(self) -> Path:
        return self.path(self.params.oneshot)

    def check_sample(self, row) -> str | None:
        return check_os_sample(row)

    def setup(self) -> None:
        super().setup()
        try:
            shot = json.loads(self.oneshot_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HarnessError(f"{self.oneshot_path}: cannot read the one-shot example ({exc})") from None
        self.shell_cls = self.backend_class(EPISODE_SHELLS, self.rootfs)  # built as cls(rootfs, **backend_params)
        self.rootfs = self.rootfs or str(ensure_rootfs())  # the Docker image is made from it too
        self.prefix = [{"role": "assistant" if m["role"] in ("agent", "assistant") else m["role"],
                        "content": m["content"]} for m in shot]

    def make_env(self) -> EpisodeShell:
        """A fresh episode environment of the configured kind."""
        if self.shell_cls is None:
            self.setup()
        return self.shell_cls(self.rootfs, **self.params.backend_params)

    def run(self, agent: Agent, indices: Sequence[int] | None = None, progress: bool = False) -> TaskResult:
        if self.prefix is None:
            self.setup()
        samples = self.samples()
        idx = self.indices(indices)
        p = self.params
        results: dict[int, SampleResult] = {}
        # environments are made lazily, batch by batch, so at most batch_size exist at once; making and
        # destroying one is mostly waiting on mount / unshare / cgroup processes, so a few threads do it,
        # while the agent writes the batch's first replies (an episode whose environment could not be
        # made ends at its first step, with the same ENV_ERROR as before)
        with ThreadPoolExecutor(max(1, p.env_workers)) as pool:
            for start in range(0, len(idx), p.batch_size):
                chunk = idx[start : start + p.batch_size]
                eps = [OSEpisode(f"os/{i}", samples[i], list(self.prefix), self.make_env, p.round_limit,
                                 p.action_timeout, pool=pool) for i in chunk]
                try:
                    run_episodes(eps, agent, batch_size=p.batch_size)
                finally:
                    list(pool.map(lambda e: e.close(), eps))
                for i, e in zip(chunk, eps):
                    results[i] = e.result
        res = [results[i] for i in idx]
        return TaskResult(sum(r.score for r in res) / max(len(res), 1), res)

    def scripted_agent(self, kind: str) -> Agent:
        if kind == "gold":
            return ScriptedAgent(gold_policy)
        if kind in WRONG_POLICIES:
            return ScriptedAgent(WRONG_POLICIES[kind])
        raise ValueError(f"os: unknown scripted agent {kind!r} (gold | {' | '.join(WRONG_POLICIES)})")
