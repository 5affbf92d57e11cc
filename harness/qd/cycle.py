"""The CycleQD loop as ask/tell.

``ask()`` hands out a job (evaluate an expert, or a child recipe with its parents and operator seeds);
``tell()`` takes the job's scores on every task and offers the model to the archives. The loop never runs a
model itself, so an executor can evaluate jobs inline, in processes or on a cluster.

Modes: ``cyclic`` (the paper: the child is offered to every archive; the active archive, which supplies the
parents, rotates every ``flip_interval`` generations) and ``independent`` (the ablation's non-cyclic QD: K
single-quality searches sharing the budget; a child competes only in its own search's archive).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import numpy as np

from harness.errors import ConfigError
from harness.merging.generalized import MergeSpec
from harness.qd.archive import Elite, GridArchive, bounds_from_expert_scores
from harness.qd.operators import aggregation_weights, crossover_weights
from harness.qd.racing import gates_of
from harness.qd.sampling import sample_parents
from harness.registry import MUTATIONS, SAMPLERS
from harness.store.recipes import MergeRecipe, MutationRecipe, to_dict


@dataclass
class QDSettings:
    tasks: list[str]
    experts: list[str]  # expert model ids, in seeding order
    generations: int
    bins: int = 15
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)  # missing task: from experts
    bounds_scale: tuple[float, float] = (0.85, 1.15)
    sampler: str = "elite"
    crossover_mu: float = 1.0
    crossover_sigma: float = 0.03
    mutation: str = "svd_official"
    mutation_w_max: float | None = None  # None: the mutation's own default
    mutation_sigma: float | None = None
    flip_interval: int = 1
    mode: str = "cyclic"
    aggregation_temperature: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"qd.sampler: unknown {self.sampler!r} (known: {SAMPLERS.names()})")
        if self.mutation not in MUTATIONS:
            raise ConfigError(f"qd.mutation: unknown {self.mutation!r} (known: {MUTATIONS.names()})")
        if self.mode not in ("cyclic", "independent"):
            raise ConfigError(f"qd.mode: unknown {self.mode!r} (cyclic | independent)")
        if self.flip_interval < 1:
            raise ConfigError(f"qd.flip_interval: must be >= 1, got {self.flip_interval}")
        if len(self.tasks) < 2:
            raise ConfigError(f"tasks: CycleQD needs at least 2 tasks, got {len(self.tasks)}")
        for t in self.bounds:
            if t not in self.tasks:
                raise ConfigError(f"qd.bounds.{t}: not a task (tasks: {self.tasks})")


@dataclass
class Job:
    """One unit of evaluation work. ``kind`` is ``seed`` (an expert) or ``child``."""

    job_id: int
    kind: str
    generation: int
    model_id: str
    active_task: str | None = None
    parents: list[str] = field(default_factory=list)
    recipe: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Job":
        return cls(**d)


class CycleQD:
    """Owns the archives, the RNG and the generation counter; nothing else."""

    def __init__(self, settings: QDSettings, register_recipe: Callable[[MergeRecipe], str]):
        self.s = settings
        self._register = register_recipe
        self.rng = np.random.Generator(np.random.PCG64(settings.seed))
        self.archives: dict[str, GridArchive] = {}
        self.generation = 0  # last generation handed out
        self.told = 0  # child jobs told
        self.next_job_id = 0
        self.seed_scores: dict[str, dict[str, float]] = {}
        self.seeds_asked = 0
        self.history: list[dict] = []

    # -- ask ----------------------------------------------------------------------------------------
    @property
    def seeded(self) -> bool:
        return len(self.seed_scores) == len(self.s.experts) and bool(self.archives)

    @property
    def done(self) -> bool:
        return self.seeded and self.told >= self.s.generations

    def active_task(self, generation: int) -> str:
        return self.s.tasks[((generation - 1) // self.s.flip_interval) % len(self.s.tasks)]

    def ask(self) -> Job | None:
        """The next job, or None when nothing can be handed out until outstanding jobs are told."""
        if self.seeds_asked < len(self.s.experts):
            mid = self.s.experts[self.seeds_asked]
            self.seeds_asked += 1
            return self._job("seed", 0, mid)
        if not self.seeded or self.generation >= self.s.generations:
            return None
        self.generation += 1
        task = self.active_task(self.generation)
        parents = sample_parents(self.archives[task], self.s.tasks, self.rng, self.s.sampler)
        weights = crossover_weights(self.rng, self.s.crossover_mu, self.s.crossover_sigma, n=2)
        mutation_seed = int(self.rng.integers(0, 2**63 - 1))
        recipe = MergeRecipe(
            parents=tuple(p.model_id for p in parents),
            merge=MergeSpec(weights=tuple(weights), normalize=True),
            mutation=None if self.s.mutation == "none" else self._mutation_recipe(mutation_seed),
            svd_expert=self._active_expert(task) if MUTATIONS.get(self.s.mutation).needs_expert_svd else None,
        )
        mid = self._register(recipe)
        return self._job("child", self.generation, mid, task, [p.model_id for p in parents], to_dict(recipe))

    def _mutation_recipe(self, seed: int) -> MutationRecipe:
        """The configured mutation with its parameters resolved (unset ones: the mutation's own defaults), so
        a recipe records the values it was made with."""
        d = MUTATIONS.get(self.s.mutation).defaults
        w_max = d["w_max"] if self.s.mutation_w_max is None else self.s.mutation_w_max
        sigma = d["sigma"] if self.s.mutation_sigma is None else self.s.mutation_sigma
        return MutationRecipe(kind=self.s.mutation, seed=seed, w_max=float(w_max), sigma=float(sigma))

    def _active_expert(self, task: str) -> str:
        """The seed expert of the active task: the expert that scores best on it."""
        return max(self.s.experts, key=lambda e: (self.seed_scores[e][task], -self.s.experts.index(e)))

    def _job(self, kind, generation, mid, task=None, parents=None, recipe=None) -> Job:
        job = Job(self.next_job_id, kind, generation, mid, task, parents or [], recipe)
        self.next_job_id += 1
        return job

    # -- tell ---------------------------------------------------------------------------------------
    def tell(self, job: Job, scores: Mapping[str, float] | None, error: str | None = None) -> dict[str, int]:
        """Record a job's result; returns {task: AddStatus} for a child (for the last expert: {task: elites}).

        ``scores=None`` (with ``error``) rejects the job: nothing is inserted, the reason is kept in history.
        """
        if scores is not None:
            missing = [t for t in self.s.tasks if t not in scores]
            if missing:
                raise ValueError(f"job {job.job_id}: no score for task {missing[0]!r}")
            scores = {t: float(scores[t]) for t in self.s.tasks}
        if job.kind == "seed":
            if scores is None:
                raise RuntimeError(f"expert {job.model_id} could not be evaluated: {error}")
            self.seed_scores[job.model_id] = scores
            self.history.append({"job": job.job_id, "kind": "seed", "model": job.model_id, "scores": scores})
            if len(self.seed_scores) < len(self.s.experts):
                return {}
            # Bounds may depend on every expert's scores, so the archives exist only once all are in.
            self._build_archives()
            for e in self.s.experts:
                for a in self.archives.values():
                    a.add(e, self.seed_scores[e], 0)
            return {t: len(a) for t, a in self.archives.items()}
        self.told += 1
        statuses: dict[str, int] = {}
        if scores is not None:
            targets = self.archives if self.s.mode == "cyclic" else {job.active_task: self.archives[job.active_task]}
            for t, a in targets.items():
                statuses[t] = int(a.add(job.model_id, scores, job.generation))
        self.history.append({
            "job": job.job_id, "kind": "child", "generation": job.generation, "active": job.active_task,
            "model": job.model_id, "parents": job.parents, "scores": scores, "error": error,
            "added": statuses,
        })
        return statuses

    def _build_archives(self) -> None:
        expert_scores = [self.seed_scores[e] for e in self.s.experts]
        lo_f, hi_f = self.s.bounds_scale
        bounds = {
            t: tuple(self.s.bounds[t]) if t in self.s.bounds else bounds_from_expert_scores(expert_scores, t, lo_f, hi_f)
            for t in self.s.tasks
        }
        for t in self.s.tasks:
            others = [o for o in self.s.tasks if o != t]
            self.archives[t] = GridArchive(task=t, behavior_tasks=others, bounds={o: bounds[o] for o in others},
                                           bins=self.s.bins)

    def gates(self, job: Job) -> list[dict]:
        """For racing: the archives ``job``'s child will be offered to, as plain data (harness/qd/racing.py)."""
        if job.kind != "child":
            return []
        targets = self.s.tasks if self.s.mode == "cyclic" else [job.active_task]
        return gates_of([self.archives[t] for t in targets])

    # -- results ------------------------------------------------------------------------------------
    def aggregate_recipe(self, chosen: Mapping[str, Elite] | None = None) -> tuple[MergeRecipe, dict]:
        """theta_agg = base + sum_k beta_k tau_k over each archive's best elite (or the ``chosen`` one per
        task), beta = softmax(quality)."""
        bests = [(chosen or {}).get(t) or self.archives[t].best() for t in self.s.tasks]
        betas = aggregation_weights([b.quality for b in bests], self.s.aggregation_temperature)
        recipe = MergeRecipe(parents=tuple(b.model_id for b in bests), merge=MergeSpec(weights=tuple(betas)))
        info = {t: {"model": b.model_id, "quality": b.quality, "beta": beta}
                for t, b, beta in zip(self.s.tasks, bests, betas)}
        return recipe, info

    # -- persistence --------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "generation": self.generation,
            "told": self.told,
            "next_job_id": self.next_job_id,
            "seeds_asked": self.seeds_asked,
            "seed_scores": self.seed_scores,
            "archives": {t: a.to_dict() for t, a in self.archives.items()},
            "history": self.history,
        }

    def load_state(self, st: Mapping) -> None:
        self.rng.bit_generator.state = st["rng"]
        self.generation = st["generation"]
        self.told = st["told"]
        self.next_job_id = st["next_job_id"]
        self.seeds_asked = st["seeds_asked"]
        self.seed_scores = {k: dict(v) for k, v in st["seed_scores"].items()}
        self.archives = {t: GridArchive.from_dict(a) for t, a in st["archives"].items()}
        self.history = list(st["history"])
