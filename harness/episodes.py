"""Multi-turn episodes driven in batches, and the agents that answer them.

Every live episode's next turn goes to the agent in one batch (an LLM engine generates them together);
finished episodes drop out. An agent is anything with ``respond(requests) -> replies``: an engine wrapper
for models, or a scripted agent (gold replay, wrong answers) that proves the protocol, env and judge.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from harness.domain import SampleResult, SampleStatus
from harness.errors import HarnessError
from harness.seeding import derive_seed

# the reply an engine gives for a prompt longer than its context: the episode ends with CONTEXT_LIMIT (never
# a silently truncated prompt)
CONTEXT_LIMIT = "\x00cycleqd:context-limit\x00"


@dataclass
class ChatRequest:
    sample_id: str
    messages: list[dict]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]
    sample: dict  # the raw sample; only scripted agents may look at it
    turn: int  # 0-based index of the agent turn being asked for


class Agent(ABC):
    @abstractmethod
    def respond(self, requests: Sequence[ChatRequest]) -> list[str]:
        """One reply per request, in order."""

    def close(self) -> None:  # noqa: B027
        pass


class Episode(ABC):
    """One sample's conversation with its environment. ``done`` once judged, ``result`` then set."""

    sample_id: str
    sample: dict
    messages: list[dict]
    done: bool = False
    turn: int = 0
    result: SampleResult | None = None

    def request(self) -> ChatRequest:
        return ChatRequest(self.sample_id, list(self.messages), self.sample, self.turn)

    def _finish(self, status: SampleStatus, score: float, detail: dict) -> None:
        self.result = SampleResult(self.sample_id, status, score, detail)
        self.done = True

    def close_on_context_limit(self) -> None:
        """The conversation no longer fits the model's context: the episode ends as the model's failure.
        Domains whose judge must still run (e.g. an md5 of a table the model already changed) override."""
        self._finish(SampleStatus.CONTEXT_LIMIT, 0.0, {"turn": self.turn})

    @abstractmethod
    def step(self, reply: str) -> None:
        """Consume the agent's reply: act in the environment, extend the conversation or finish."""

    def close(self) -> None:  # noqa: B027
        pass


def run_episodes(episodes: Iterable[Episode], agent: Agent, *, batch_size: int = 64, progress: bool = False,
                 desc: str = "episodes") -> None:
    """Drive episodes to completion, at most ``batch_size`` live at once (each may hold an env)."""
    pending = list(episodes)
    live: list[Episode] = []
    bar = tqdm(total=len(pending), desc=desc, disable=not progress, leave=False)
    try:
        while pending or live:
            while pending and len(live) < batch_size:
                live.append(pending.pop(0))
            replies = agent.respond([e.request() for e in live])
            if len(replies) != len(live):
                raise RuntimeError(f"agent returned {len(replies)} replies for {len(live)} requests")
            for e, r in zip(live, replies):
                if r == CONTEXT_LIMIT:
                    e.close_on_context_limit()
                else:
                    e.step(r)
                e.turn += 1
            for e in [e for e in live if e.done]:
                e.close()
                bar.update(1)
            live = [e for e in live if not e.done]
    finally:
        for e in live + pending:
            e.close()
        bar.close()


class ScriptedAgent(Agent):
    """Replies computed from the sample alone: ``policy(sample, turn, messages) -> str``."""

    def __init__(self, policy):
        self.policy = policy

    def respond(self, requests):
        return [self.policy(r.sample, r.turn, r.messages) for r in requests]


def _jsonl_rows(path) -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line, with a one-line error naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise HarnessError(f"data file {p} does not exist")
    out = []
    with open(p, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append((i, json.loads(line)))
            except (json.JSONDecodeError, RecursionError) as exc:
                raise HarnessError(f"{p}:{i}: not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})") from None
    return out


def load_jsonl(path) -> list[dict[str, Any]]:
    """JSON lines with a one-line error naming the file and line."""
    return [row for _, row in _jsonl_rows(path)]


def load_samples(path, limit: int | None, required: Sequence[str] = (), check=None,
                 unique: str | None = None) -> list[dict[str, Any]]:
    """A dataset file in the shared format, validated line by line (one-line errors naming file:line and
    the field), cut to its first ``limit`` samples. ``check(row)`` returns an error text for a bad row, or
    None; ``unique``: a field no two rows may share (what the domain names its samples by)."""
    rows = _jsonl_rows(path)
    seen: dict[Any, int] = {}
    for line, r in rows:
        if not isinstance(r, dict):
            raise HarnessError(f"{path}:{line}: a sample is a JSON object, not a {type(r).__name__}")
        missing = [k for k in required if k not in r]
        why = f"sample lacks {missing[0]!r}" if missing else (check(r) if check else None)
        if why:
            raise HarnessError(f"{path}:{line}: {why}")
        if unique is not None:
            key = json.dumps(r.get(unique), sort_keys=True)
            if key in seen:
                raise HarnessError(f"{path}:{line}: {unique} {key[:60]} repeats line {seen[key]}")
            seen[key] = line
    out = [r for _, r in rows]
    return out[:limit] if limit else out


def split_of(n: int, seed: int, name: str, split: str) -> list[int]:
    """Indices of ``split`` ("opt", "test" or "all") of a dataset of n samples."""
    return list(range(n)) if split == "all" else split_indices(n, seed, name)[split]


def split_indices(n: int, seed: int, name: str) -> dict[str, list[int]]:
    """The seeded even split into an optimisation half and a test half (sorted indices)."""
    perm = np.random.default_rng(derive_seed(seed, "split", name)).permutation(n)
    half = n // 2
    return {"opt": sorted(int(i) for i in perm[:half]), "test": sorted(int(i) for i in perm[half:])}
