"""Engines: one interface for chat generation with weights loaded in place.

``ChatEngine.load_state_dict(sd)`` swaps a child's weights into the already-built model (no rebuild per
child); ``generate(conversations, prefill=..., stop=..., max_new_tokens=...)`` runs one batched greedy
generation. ``engine_agent`` wraps an engine as an episode ``Agent``; engines are built once per worker
process and reused.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

from harness.engines.base import ChatEngine
from harness.errors import ConfigError
from harness.episodes import CONTEXT_LIMIT, Agent, ChatRequest  # CONTEXT_LIMIT: engines answer it
from harness.registry import ENGINES

_ENGINES: dict[str, ChatEngine] = {}


def build_engine(cfg: Mapping) -> ChatEngine:
    """The registered engine ``cfg["kind"]`` (default hf) built with the other keys."""
    return ENGINES.get(cfg.get("kind", "hf"))(**{k: v for k, v in cfg.items() if k != "kind"})


def engine_seconds() -> dict[str, float]:
    """Seconds spent per phase by every engine built in this process (load, generate)."""
    out: dict[str, float] = {}
    for e in _ENGINES.values():
        for k, v in getattr(e, "seconds", {}).items():
            out[k] = out.get(k, 0.0) + v
    return out


def get_engine(cfg: Mapping) -> ChatEngine:
    """One engine per distinct config per process (building one loads a model)."""
    key = json.dumps(dict(cfg), sort_keys=True, default=str)
    if key not in _ENGINES:
        _ENGINES[key] = build_engine(cfg)
    return _ENGINES[key]  # type: ignore[return-value]


class EngineAgent(Agent):
    def __init__(self, engine: ChatEngine, *, prefill: str = "", stop: Sequence[str] | None = None,
                 max_new_tokens: int = 512):
        self.engine, self.prefill, self.stop, self.max_new_tokens = engine, prefill, stop, max_new_tokens

    def respond(self, requests: Sequence[ChatRequest]) -> list[str]:
        return self.engine.generate([r.messages for r in requests], prefill=self.prefill, stop=self.stop,
                                    max_new_tokens=self.max_new_tokens)


def engine_agent(cfg: Mapping | None, state_dict: Mapping, *, prefill: str = "", stop: Sequence[str] | None = None,
                 max_new_tokens: int = 512, base_dir=None, defaults: Mapping | None = None) -> EngineAgent:
    """An agent whose engine holds ``state_dict``. Its config: the task's ``engine`` params over the run's
    ``defaults`` (config key ``engine``) over {kind: hf, model: the run's base model}."""
    cfg = {"kind": "hf", **({"model": str(base_dir)} if base_dir else {}), **dict(defaults or {}), **dict(cfg or {})}
    if not cfg.get("model"):
        raise ConfigError("tasks.*.params.engine: an LLM domain needs an engine config with a 'model' directory")
    engine = get_engine(cfg)
    engine.load_state_dict(state_dict)
    return EngineAgent(engine, prefill=prefill, stop=stop, max_new_tokens=max_new_tokens)
