"""Run configuration: omegaconf structured configs, validated before any heavy work.

Every problem surfaces as a one-line ``ConfigError`` that names the key (``qd.bins``, ``tasks.2.domain``),
whether it is an unknown key, a wrong type or a bad value.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.domain import Domain, parse_params
from harness.errors import ConfigError
from harness.registry import (
    DOMAINS,
    ENGINES,
    MUTATIONS,
    SAMPLERS,
    WORLD_BUILDERS,
    import_plugins,
)

DEFAULT_DATA_ROOT = "../shared/data"


@dataclass
class BuilderConfig:
    """A model-world builder that writes base + experts (e.g. the vector world, the mini world)."""
    kind: str = MISSING
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    base: Optional[str] = None  # HF directory; or made by ``builder``
    experts: dict[str, str] = field(default_factory=dict)  # expert name -> HF directory
    builder: Optional[BuilderConfig] = None
    # bytes of materialised children kept on disk (run_dir/store) beyond the pinned ones (the archives'
    # elites, the jobs in flight); memory does not depend on it: models are built tensor by tensor
    cache_bytes: int = 1 << 30
    # bytes of all materialised children on disk, elites included (null: no bound); past it the oldest
    # elites' files go too and are rebuilt from their recipes when needed (at 8B an elite is a 16 GB file)
    disk_bytes: Optional[int] = None
    # where merges and mutations run: cpu | cuda | cuda:N | auto (cuda when visible); float32 either way
    device: str = "cpu"


@dataclass
class TaskConfig:
    name: str = MISSING
    domain: str = MISSING  # registered name or "module:Class"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class QDConfig:
    generations: int = 300
    bins: int = 15
    bounds: dict[str, list[float]] = field(default_factory=dict)  # task -> [lo, hi]; missing: from experts
    bounds_scale: list[float] = field(default_factory=lambda: [0.85, 1.15])
    sampler: str = "elite"  # a registered parent sampler: elite | elite_official | random
    crossover_mu: float = 1.0
    crossover_sigma: float = 0.03  # paper; official code: 0.01
    # a registered mutation (harness/merging/mutations.py): svd_official (default: the official code's
    # additive form) | svd_additive | svd (the paper's equation read literally) | gaussian | gaussian_official | none
    mutation: str = "svd_official"
    mutation_w_max: Optional[float] = None  # None: the mutation's own default (svd_official 0.1, svd / svd_additive 0.3)
    mutation_sigma: Optional[float] = None  # None: the mutation's own (gaussian 0.1 x rms, gaussian_official 3e-4)
    flip_interval: int = 1
    mode: str = "cyclic"  # cyclic | independent (the non-cyclic ablation)
    aggregation_temperature: float = 1.0


@dataclass
class RunnerConfig:
    executor: str = "inline"  # inline | process | gpu (one process per GPU group) | ray (harness/runner/executors.py)
    workers: int = 1  # jobs in flight
    torch_threads: int = 1  # fixed so SVD rounding (and so every child) is identical across workers
    snapshot_every: int = 1
    opt_split: str = "opt"
    test_split: str = "test"
    allow_test_split: bool = False  # refuse to optimise on the test split unless set
    progress: bool = True
    # every this many generations, score the current aggregated model on the test split (0 = never);
    # reporting only: nothing the search does depends on it
    progress_every: int = 0
    # the fraction of a task's samples that may end in a harness failure (env_error / harness_error) before
    # the evaluation is rejected instead of scored: a broken sandbox must not read as a model scoring 0
    max_harness_failures: float = 0.0
    # a directory of evaluations shared between runs (harness/runner/score_cache.py): the experts of an
    # ablation suite or a rerun are scored once
    score_cache: Optional[str] = None
    # final evaluation: "all" = base, experts, mean merge, each archive's best and CycleQD; "final" = CycleQD
    final_rows: str = "all"
    # score every model in chunks of this many instances per task, interleaved across tasks (None: each
    # task's split in one call). Chunking fixes the engine's batches, so verdicts do not depend on racing.
    race_chunk: Optional[int] = None
    # exact racing (harness/qd/racing.py, needs race_chunk): stop scoring a child once no archive could
    # take it whatever its remaining instances give; the archives end exactly as without it
    race: bool = True
    # the order racing scores tasks in: empty = round robin over the tasks, a chunk each; a list of every task
    # = each task to its end in that order (put the most expensive last: only its chunks can be skipped)
    race_order: list[str] = field(default_factory=list)
    # hold out this fraction of each task's optimisation split (harness/runner/validation.py): the search
    # runs on the rest ("search"), and the final merge takes, per archive, the best on the held-out slice
    # ("val") of its validation_top_k best elites. 0: the paper's rule (each archive's best as is).
    validation_fraction: float = 0.0
    validation_top_k: int = 3
    # executor gpu / ray: GPUs per worker; gpu: which GPU ids to use (empty: every visible one); ray: the
    # cluster (null: a local Ray with runner.workers CPUs)
    gpus_per_worker: int = 1
    gpus: list[str] = field(default_factory=list)
    ray_address: Optional[str] = None
    # log a line (logger ``cycleqd``) at least this often while a model is being scored (harness/heartbeat.py)
    heartbeat_s: float = 30.0


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    run_dir: Optional[str] = None  # default: runs/<name>-seed<seed>
    data_root: str = DEFAULT_DATA_ROOT  # env CYCLEQD_DATA overrides the default
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: list[TaskConfig] = field(default_factory=list)
    qd: QDConfig = field(default_factory=QDConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    # defaults for every LLM task's engine (a task's own params.engine keys win), e.g. {kind: vllm}; checked
    # at load against the registered engine's constructor (harness.registry.ENGINES)
    engine: dict[str, Any] = field(default_factory=dict)
    # modules to import before names are resolved: their @REGISTRY.register decorators add plugins
    plugins: list[str] = field(default_factory=list)


def _one_line(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{key}: {msg}" if key else msg


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> DictConfig:
    """Schema + YAML file + ``key=value`` overrides, then validation. Raises ConfigError."""
    schema = OmegaConf.structured(RunConfig)
    try:
        parts = [schema]
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file {p} does not exist")
            try:
                parts.append(OmegaConf.load(p))
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
                raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
        cfg = OmegaConf.merge(*parts)
        for o in overrides or []:
            if "=" not in o:
                raise ConfigError(f"override {o!r}: expected key=value")
            # one at a time with update(), so that list items can be addressed (tasks.0.params.limit=40)
            key, value = o.split("=", 1)
            # parsed as YAML like from_dotlist, interpolations (${name}) left for the full config to resolve
            parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]), resolve=False)["v"]
            OmegaConf.update(cfg, key, parsed, merge=True)
        if "CYCLEQD_DATA" in os.environ and cfg.data_root == DEFAULT_DATA_ROOT:
            cfg.data_root = os.environ["CYCLEQD_DATA"]
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(_one_line(exc)) from None
    except (TypeError, ValueError, IndexError) as exc:  # e.g. a list index past the end, a dict into a list
        raise ConfigError(f"config: {exc}") from None
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Semantic checks that the schema's types cannot express."""
    if not cfg.tasks or len(cfg.tasks) < 2:
        raise ConfigError("tasks: CycleQD needs at least 2 tasks")
    names = [t.name for t in cfg.tasks]
    for i, t in enumerate(cfg.tasks):
        if OmegaConf.is_missing(t, "name") or OmegaConf.is_missing(t, "domain"):
            raise ConfigError(f"tasks.{i}: needs both 'name' and 'domain'")
    if len(set(names)) != len(names):
        raise ConfigError(f"tasks: duplicate task names {names}")
    if not 0.0 <= cfg.runner.max_harness_failures <= 1.0:
        raise ConfigError(f"runner.max_harness_failures: a fraction in [0, 1], got {cfg.runner.max_harness_failures}")
    qd = cfg.qd
    if qd.generations < 0:
        raise ConfigError(f"qd.generations: must be >= 0, got {qd.generations}")
    if qd.bins < 1:
        raise ConfigError(f"qd.bins: must be >= 1, got {qd.bins}")
    for t, b in qd.bounds.items():
        if t not in names:
            raise ConfigError(f"qd.bounds.{t}: not a task name (tasks: {names})")
        if len(b) != 2 or not (math.isfinite(b[0]) and math.isfinite(b[1])) or b[0] >= b[1]:
            raise ConfigError(f"qd.bounds.{t}: need [lo, hi] with lo < hi, got {list(b)}")
    if len(qd.bounds_scale) != 2 or qd.bounds_scale[0] > qd.bounds_scale[1]:
        raise ConfigError(f"qd.bounds_scale: need [low, high] with low <= high, got {list(qd.bounds_scale)}")
    import_plugins(cfg.plugins)
    for key, reg, val in (("qd.sampler", SAMPLERS, qd.sampler), ("qd.mutation", MUTATIONS, qd.mutation)):
        if val not in reg:
            raise ConfigError(f"{key}: {val!r} is not one of {reg.names()}")
    choices = {
        "qd.mode": (qd.mode, ("cyclic", "independent")),
        "runner.executor": (cfg.runner.executor, ("inline", "process", "gpu", "ray")),
    }
    for key, (val, allowed) in choices.items():
        if val not in allowed:
            raise ConfigError(f"{key}: {val!r} is not one of {list(allowed)}")
    if qd.flip_interval < 1:
        raise ConfigError(f"qd.flip_interval: must be >= 1, got {qd.flip_interval}")
    for key in ("crossover_mu", "crossover_sigma", "mutation_w_max", "mutation_sigma", "aggregation_temperature"):
        if qd[key] is None:
            continue
        v = float(qd[key])
        if not math.isfinite(v) or (key != "crossover_mu" and v < 0):
            raise ConfigError(f"qd.{key}: must be a finite number >= 0, got {v}")
    if qd.aggregation_temperature == 0:
        raise ConfigError("qd.aggregation_temperature: must be > 0")
    if cfg.runner.workers < 1:
        raise ConfigError(f"runner.workers: must be >= 1, got {cfg.runner.workers}")
    if cfg.runner.snapshot_every < 1:
        raise ConfigError(f"runner.snapshot_every: must be >= 1, got {cfg.runner.snapshot_every}")
    if cfg.runner.progress_every < 0:
        raise ConfigError(f"runner.progress_every: must be >= 0, got {cfg.runner.progress_every}")
    if not 0.0 <= cfg.runner.validation_fraction < 1.0:
        raise ConfigError(f"runner.validation_fraction: a fraction in [0, 1), got {cfg.runner.validation_fraction}")
    if cfg.runner.validation_top_k < 1:
        raise ConfigError(f"runner.validation_top_k: must be >= 1, got {cfg.runner.validation_top_k}")
    if not cfg.runner.heartbeat_s > 0:
        raise ConfigError(f"runner.heartbeat_s: must be > 0, got {cfg.runner.heartbeat_s}")
    names = [t.name for t in cfg.tasks]
    if cfg.runner.race_order and sorted(cfg.runner.race_order) != sorted(names):
        raise ConfigError(f"runner.race_order: must list every task once ({names}), got {list(cfg.runner.race_order)}")
    if cfg.runner.race_chunk is not None and cfg.runner.race_chunk < 1:
        raise ConfigError(f"runner.race_chunk: must be >= 1 (or null), got {cfg.runner.race_chunk}")
    if cfg.runner.final_rows not in ("all", "final"):
        raise ConfigError(f"runner.final_rows: {cfg.runner.final_rows!r} is not one of ['all', 'final']")
    if cfg.runner.opt_split == cfg.runner.test_split and not cfg.runner.allow_test_split:
        raise ConfigError(
            f"runner.opt_split: {cfg.runner.opt_split!r} is the test split; optimising on it leaks the "
            "leaderboard (set runner.allow_test_split=true to do it anyway)"
        )
    m = cfg.model
    if m.builder is None:
        if not m.base:
            raise ConfigError("model.base: missing (give an HF directory or a model.builder)")
        if not m.experts:
            raise ConfigError("model.experts: missing (give expert HF directories or a model.builder)")
    if m.cache_bytes <= 0:
        raise ConfigError(f"model.cache_bytes: must be > 0, got {m.cache_bytes}")
    if m.disk_bytes is not None and m.disk_bytes < m.cache_bytes:
        raise ConfigError(f"model.disk_bytes: must be >= model.cache_bytes ({m.cache_bytes}), got {m.disk_bytes}")
    if m.builder is not None:
        WORLD_BUILDERS.get(m.builder.kind)
    validate_engine(OmegaConf.to_container(cfg.engine), "engine")
    for i, t in enumerate(cfg.tasks):
        cls = DOMAINS.get(t.domain)
        params = OmegaConf.to_container(t.params)
        parse_params(cls, params, f"tasks.{i}.params")
        for key in ("race_chunk", "validation_fraction"):
            if cfg.runner[key] and getattr(cls, "instances", None) is Domain.instances:
                raise ConfigError(f"runner.{key}: task {t.name!r} (domain {t.domain!r}) cannot be scored in chunks "
                                  f"(it has no Domain.instances); unset {key}")
        if isinstance(params.get("engine"), dict):
            validate_engine({**OmegaConf.to_container(cfg.engine), **params["engine"]}, f"tasks.{i}.params.engine")


def validate_engine(engine: dict, key: str) -> None:
    """An engine config names a registered kind and only keyword arguments its class accepts (a typo is a
    one-line error now, not a TypeError at the first evaluation)."""
    if not engine:
        return
    cls = ENGINES.get(engine.get("kind", "hf"))
    try:
        inspect.signature(cls).bind(**{"model": "m", **{k: v for k, v in engine.items() if k != "kind"}})
    except TypeError as exc:
        raise ConfigError(f"{key}: {exc} (engine {engine.get('kind', 'hf')!r})") from None


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def default_run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else Path("runs") / f"{cfg.name}-seed{cfg.seed}"
