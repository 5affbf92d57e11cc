"""One base for the domains an agent plays through a protocol (coding, os, db): what they share.

An ``AgentDomain`` reads a dataset file in the shared formats (paths relative to ``ctx.data_root``), keeps
its samples, splits them with the seeded even split, and scores a model by wrapping its weights in an
engine agent and running that agent through the domain's own protocol:
``evaluate(state_dict, split)`` -> ``harness.engines.engine_agent(...)`` -> ``self.run(agent, self.split(split))``.
A subclass stays an adapter: the protocol (``run``, episodes), the environment it asks for by registered
name (``harness.registry``: ``CODE_SANDBOXES``, ``EPISODE_SHELLS``, ``SQL_BACKENDS``) and the judge.

Its ``Params`` dataclass (checked by ``harness.domain.parse_params``) subclasses ``AgentParams`` (``data``,
``limit``, ``engine``, ``max_new_tokens``, ``backend``, ``backend_params``); a domain with an environment
builds it with ``make_backend(REGISTRY, *args)``. The domain may also be
built with keyword arguments (``CodingDomain(task=..., ctx=..., limit=5)``): they are checked the same way.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

from harness.domain import Domain, DomainContext, TaskResult, parse_params
from harness.engines import engine_agent
from harness.episodes import Agent, load_samples, split_of
from harness.errors import ConfigError
from harness.registry import Registry


@dataclass
class AgentParams:
    """What every agent domain reads (a domain's ``Params`` subclasses it, overriding defaults and adding
    its own): the dataset file, how many of its samples, the engine (a free-form dict over the run's engine
    defaults), the reply length, and where actions run (a registered kind and its constructor's keyword
    arguments; domains without an environment ignore them)."""

    data: str = ""
    limit: Optional[int] = None  # the first ``limit`` samples only
    engine: Optional[dict[str, Any]] = None
    max_new_tokens: int = 512
    backend: str = "local"
    backend_params: dict[str, Any] = field(default_factory=dict)


class AgentDomain(Domain):
    """Subclasses set ``Params`` (a dataclass subclassing ``AgentParams``), ``required`` (the keys every
    sample must have) and ``split_key`` (what seeds the split, with the data file's name), and implement
    ``run``; optionally ``check_sample`` (every field's type, checked at load), ``unique``, ``sample_id``,
    ``prefill`` and ``stop``."""

    required: ClassVar[tuple[str, ...]] = ()
    unique: ClassVar[str | None] = None  # a field no two samples may share
    split_key: ClassVar[str | None] = None  # default: the registered name
    prefill: ClassVar[str] = ""  # the engine agent's assistant-turn prefill
    stop: ClassVar[Sequence[str] | None] = None  # the engine agent's stop strings

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.Params is not None and not (isinstance(cls.Params, type) and issubclass(cls.Params, AgentParams)):
            raise TypeError(f"{cls.__name__}.Params must subclass harness.agent_domain.AgentParams")

    def __init__(self, *, task: str, ctx: DomainContext, params: Any = None, **kwargs: Any):
        if params is None and self.Params is not None:
            params = parse_params(type(self), kwargs, f"tasks.{task}.params")
        elif kwargs:
            raise TypeError(f"{type(self).__name__}: pass params=... or keyword arguments, not both")
        super().__init__(task=task, ctx=ctx, params=params)
        self._samples: list[dict] | None = None

    # -- data -------------------------------------------------------------------------------------------
    def path(self, p: str | Path) -> Path:
        """A data or prompt path: absolute as given, else relative to the run's data root."""
        p = Path(p)
        if p.is_absolute():
            return p
        return (Path(self.ctx.data_root) if self.ctx.data_root else Path(".")) / p

    @property
    def data_path(self) -> Path:
        return self.path(self.params.data)

    def check_sample(self, row: Mapping[str, Any]) -> str | None:
        """Why a sample is unusable (a one-line error naming file:line follows), or None."""
        return None

    def samples(self) -> list[dict]:
        """The dataset's samples (validated, cut to ``limit``), loaded once."""
        if self._samples is None:
            self._samples = load_samples(self.data_path, self.params.limit, self.required, self.check_sample,
                                         self.unique)
        return self._samples

    def sample_id(self, index: int) -> str:
        """How results (and transcripts: ``cycleqd replay --agent transcript:FILE``) name sample ``index``."""
        return f"{self.split_key or self.name}/{index}"

    def split(self, name: str) -> list[int]:
        """Indices of ``name`` ("opt", "test" or "all"): the seeded even split every domain uses."""
        return split_of(len(self.samples()), self.ctx.seed, f"{self.split_key or self.name}:{self.data_path.name}", name)

    def setup(self) -> None:
        self.samples()

    # -- the environment ----------------------------------------------------------------------------------
    def backend_class(self, registry: Registry, *args: Any, **kw: Any) -> type:
        """The kind ``params.backend`` of ``registry`` (a registered name, an alias or ``module:Class``),
        checked against the arguments it will be built with: ``*args``, ``**kw`` and
        ``params.backend_params``. An unknown kind or parameter is a one-line ConfigError."""
        cls = registry.get(self.params.backend)
        try:
            inspect.signature(cls).bind(*args, **kw, **self.params.backend_params)
        except TypeError as exc:
            raise ConfigError(f"tasks.{self.task}.params.backend_params: {exc}") from None
        return cls

    def make_backend(self, registry: Registry, *args: Any, **kw: Any) -> Any:
        """An instance of the kind ``params.backend``: ``cls(*args, **kw, **params.backend_params)``."""
        return self.backend_class(registry, *args, **kw)(*args, **kw, **self.params.backend_params)

    # -- scoring a model --------------------------------------------------------------------------------
    def agent(self, state_dict: Mapping) -> Agent:
        """The model as an agent: an engine (built once per process) holding ``state_dict``."""
        return engine_agent(self.params.engine, state_dict, prefill=self.prefill,
                            stop=list(self.stop) if self.stop is not None else None,
                            max_new_tokens=self.params.max_new_tokens, base_dir=self.ctx.base_dir,
                            defaults=self.ctx.engine)

    def evaluate(self, state_dict, *, split: str) -> TaskResult:
        return self.run(self.agent(state_dict), self.split(split))

    def instances(self, split: str) -> list[int]:
        return self.split(split)

    def evaluate_instances(self, state_dict, *, split: str, indices: Sequence[int]) -> list:
        return self.run(self.agent(state_dict), list(indices)).samples

    def run(self, agent: Agent, indices: Sequence[int] | None = None, progress: bool = False) -> TaskResult:
        raise NotImplementedError(f"domain {self.name!r} cannot run an agent")

    def indices(self, indices: Sequence[int] | None) -> list[int]:
        """``indices`` as a list (None: every sample)."""
        return list(range(len(self.samples()))) if indices is None else list(indices)
