"""The seam between the core and the tasks: a Domain scores a model on one task.

A domain module registers its class with ``@register_domain("name")``. Configs name a domain either by a
registered name (modules under ``domains/`` are imported on first use) or by ``package.module:Class`` for
an out-of-tree domain, so a new domain is one module plus one config, with no edit to the core.
"""

from __future__ import annotations

import enum
import importlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from harness.errors import ConfigError


class SampleStatus(str, enum.Enum):
    """Outcome of one sample. Harness-side failures are kept apart from the model's own failures."""

    SOLVED = "solved"
    WRONG = "wrong"  # the model answered, incorrectly
    INVALID_ACTION = "invalid_action"  # unparseable output / protocol violation
    TURN_LIMIT = "turn_limit"
    CONTEXT_LIMIT = "context_limit"  # the conversation outgrew the model's context (AgentBench's AGENT_CONTEXT_LIMIT)
    TIMEOUT = "timeout"  # the model's program ran out of time
    RESOURCE_LIMIT = "resource_limit"  # memory / processes / output limits hit by the model's program
    ENV_ERROR = "env_error"  # the sandbox / server failed: a harness problem, not the model's
    HARNESS_ERROR = "harness_error"

    @property
    def is_harness_failure(self) -> bool:
        return self in (SampleStatus.ENV_ERROR, SampleStatus.HARNESS_ERROR)


@dataclass
class SampleResult:
    sample_id: str
    status: SampleStatus
    score: float  # in [0, 1]
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        return d


@dataclass
class TaskResult:
    """A domain's verdict on one model: quality in [0, 1] plus the per-sample evidence."""

    quality: float
    samples: list[SampleResult] = field(default_factory=list)

    def status_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.samples:
            out[s.status.value] = out.get(s.status.value, 0) + 1
        return out

    @property
    def harness_failures(self) -> int:
        return sum(s.status.is_harness_failure for s in self.samples)

    def harness_verdict(self, task: str, max_fraction: float = 0.0) -> str | None:
        """Why this result must not be used as a score (more harness failures than ``max_fraction`` of the
        samples: a broken sandbox is not a model scoring 0), or None when it may."""
        bad = [s for s in self.samples if s.status.is_harness_failure]
        if not bad or len(bad) <= max_fraction * len(self.samples):
            return None
        why = str(bad[0].detail.get("error", bad[0].detail))[:200]
        return (f"{task!r}: {len(bad)} of {len(self.samples)} samples failed in the harness (allowed: "
                f"{max_fraction:g}); first, {bad[0].sample_id} [{bad[0].status.value}]: {why}")


@dataclass
class DomainContext:
    """What the harness tells a domain about the run it is part of."""

    run_dir: Path | None
    seed: int
    data_root: Path
    base_dir: Path | None = None  # the run's base model (HF directory): engines are built from it
    engine: dict = field(default_factory=dict)  # the run's engine defaults (config key ``engine``)


class Domain(ABC):
    """Scores models on one task.

    Subclasses take their settings as keyword arguments (the ``params`` of the task's config; unknown keys
    are a config error) and implement ``evaluate``. ``setup`` runs once per worker before the first
    evaluation (start servers, build sandboxes, load data), ``close`` when the worker stops.
    """

    name: str = "domain"

    def __init__(self, *, task: str, ctx: DomainContext, **params: Any):
        self.task = task
        self.ctx = ctx

    def setup(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def evaluate(self, state_dict: Mapping[str, torch.Tensor], *, split: str) -> TaskResult:
        """Score the model whose weights are ``state_dict`` on this task's ``split`` ("opt" or "test")."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    # -- optional: scripted replay (``cycleqd replay``) for domains driven by an agent protocol ----------
    def scripted_agent(self, kind: str):
        """An agent that needs no model (``gold`` replays references, others are wrong on purpose)."""
        raise NotImplementedError(f"domain {self.name!r} has no scripted agents")

    def run(self, agent, indices=None, progress: bool = False) -> TaskResult:
        """Run ``agent`` through this domain's protocol on the samples ``indices`` (None: all)."""
        raise NotImplementedError(f"domain {self.name!r} cannot run an agent")


_REGISTRY: dict[str, type[Domain]] = {}
_MODULES = {"os": "os_interaction"}  # registered names whose module is named otherwise


def register_domain(name: str, *aliases: str) -> Callable[[type[Domain]], type[Domain]]:
    def deco(cls: type[Domain]) -> type[Domain]:
        for n in (name, *aliases):
            if n in _REGISTRY and _REGISTRY[n] is not cls:
                raise ValueError(f"domain {n!r} is registered twice")
            _REGISTRY[n] = cls
        cls.name = name
        return cls

    return deco


def get_domain(ref: str) -> type[Domain]:
    """``name`` (registered, or a module ``domains.<name>``) or ``module.path:ClassName``."""
    if ":" in ref:
        from harness.refs import load_ref

        cls = load_ref(ref, "tasks.*.domain")
        if not (isinstance(cls, type) and issubclass(cls, Domain)):
            raise ConfigError(f"tasks.*.domain: {ref!r} is not a Domain subclass")
        return cls
    if ref not in _REGISTRY:
        try:
            importlib.import_module(f"domains.{_MODULES.get(ref, ref)}")
        except ModuleNotFoundError:
            pass
    if ref not in _REGISTRY:
        raise ConfigError(f"tasks.*.domain: unknown domain {ref!r} (registered: {sorted(_REGISTRY)})")
    return _REGISTRY[ref]


def build_domain(ref: str, *, task: str, ctx: DomainContext, params: Mapping[str, Any]) -> Domain:
    cls = get_domain(ref)
    try:
        return cls(task=task, ctx=ctx, **dict(params))
    except TypeError as exc:
        raise ConfigError(f"tasks.{task}.params: {exc}") from None
