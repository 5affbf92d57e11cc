"""The seam between the core and the tasks: a Domain scores a model on one task.

A domain module registers its class with ``@register_domain("name")`` (``harness.registry.DOMAINS``; the
project's own domains are listed there lazily). Configs name a domain by a registered name or by
``package.module:Class`` for an out-of-tree domain, so a new domain is one module plus one config, with no
edit to the core.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.errors import ConfigError
from harness.registry import DOMAINS


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

    A subclass declares its settings as a ``Params`` dataclass (the ``params`` of the task's config, typed
    and checked when the config loads, before anything is written) and receives ``params=Params(...)``;
    a subclass without ``Params`` receives them as keyword arguments. It implements ``evaluate``.
    ``setup`` runs once per worker before the first evaluation (start servers, build sandboxes, load data), ``close`` when the worker stops.
    """

    name: str = "domain"
    Params: ClassVar[type | None] = None

    def __init__(self, *, task: str, ctx: DomainContext, params: Any = None, **_legacy: Any):
        self.task = task
        self.ctx = ctx
        self.params = params

    def setup(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def evaluate(self, state_dict: Mapping[str, torch.Tensor], *, split: str) -> TaskResult:
        """Score the model whose weights are ``state_dict`` on this task's ``split`` ("opt" or "test")."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    # -- optional: evaluation in chunks (``runner.race_chunk``; exact racing, harness/qd/racing.py) --------
    def instances(self, split: str) -> list[int] | None:
        """The split's instances in evaluation order, or None when this domain can only score a split whole
        (racing and chunked evaluation then refuse to start)."""
        return None

    def evaluate_instances(self, state_dict: Mapping[str, torch.Tensor], *, split: str,
                           indices: Sequence[int]) -> list[SampleResult]:
        """Per-sample results of the model on ``indices`` (a chunk of ``instances(split)``), in that order."""
        raise NotImplementedError(f"domain {self.name!r} cannot score a chunk of instances")

    def aggregate(self, samples: Sequence[SampleResult]) -> float:
        """The quality of a list of per-sample results (default: the mean score). It must be non-decreasing
        in every sample's score: racing bounds a child's score by scoring pending samples 0 and 1."""
        return sum(s.score for s in samples) / max(len(samples), 1)

    def pending_result(self, index: int, score: float) -> SampleResult:
        """A stand-in for the not-yet-scored instance ``index`` with ``score``, for racing's bounds (a domain
        whose ``aggregate`` groups samples puts the group in ``detail``)."""
        return SampleResult(f"{self.task}/{index}", SampleStatus.SOLVED if score else SampleStatus.WRONG, float(score))

    # -- optional: scripted replay (``cycleqd replay``) for domains driven by an agent protocol ----------
    def scripted_agent(self, kind: str):
        """An agent that needs no model (``gold`` replays references, others are wrong on purpose)."""
        raise NotImplementedError(f"domain {self.name!r} has no scripted agents")

    def run(self, agent, indices=None, progress: bool = False) -> TaskResult:
        """Run ``agent`` through this domain's protocol on the samples ``indices`` (None: all)."""
        raise NotImplementedError(f"domain {self.name!r} cannot run an agent")


def register_domain(name: str, *aliases: str) -> Callable[[type[Domain]], type[Domain]]:
    """Decorator: make a Domain subclass available under ``name`` (``harness.registry.DOMAINS``)."""

    def deco(cls: type[Domain]) -> type[Domain]:
        DOMAINS.register(name, *aliases)(cls)
        cls.name = name
        return cls

    return deco


def get_domain(ref: str) -> type[Domain]:
    """A registered name (or alias) or ``package.module:Class`` for an out-of-tree domain."""
    cls = DOMAINS.get(ref)
    if getattr(cls, "name", "domain") == "domain":
        cls.name = DOMAINS.canonical(ref) if ":" not in ref else ref.rsplit(":", 1)[1]
    return cls


def parse_params(cls: type[Domain], params: Mapping[str, Any] | None, key: str) -> Any:
    """A domain's task params, checked before any run directory is written.

    A domain with a ``Params`` dataclass gets an instance of it (types checked by omegaconf: a wrong type or
    an unknown key is a one-line ConfigError naming ``key``); a domain without one gets the dict, checked
    against its constructor's keyword arguments."""
    raw = dict(params or {})
    if cls.Params is not None:
        if not dataclasses.is_dataclass(cls.Params):
            raise TypeError(f"{cls.__name__}.Params must be a dataclass")
        try:
            merged = OmegaConf.merge(OmegaConf.structured(cls.Params), raw)
            obj = OmegaConf.to_object(merged)
        except OmegaConfBaseException as exc:
            sub = getattr(exc, "full_key", None)
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"{key}{'.' + sub if sub else ''}: {msg}") from None
        check = getattr(obj, "validate", None)
        if check is not None:
            try:
                check()
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{key}: {exc}") from None
        return obj
    try:
        inspect.signature(cls).bind(task="t", ctx=None, **raw)
    except TypeError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return raw


def build_domain(ref: str, *, task: str, ctx: DomainContext, params: Mapping[str, Any] | Any) -> Domain:
    """Instantiate a task's domain; ``params`` may be raw (a dict) or already parsed."""
    cls = get_domain(ref)
    parsed = params if cls.Params is not None and isinstance(params, cls.Params) else \
        parse_params(cls, params, f"tasks.{task}.params")
    if cls.Params is not None:
        return cls(task=task, ctx=ctx, params=parsed)
    return cls(task=task, ctx=ctx, **parsed)
