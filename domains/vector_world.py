"""Vector world: a synthetic domain where a model is a handful of tensors and CycleQD runs in seconds.

A model has two d x d matrices and one norm vector. Task k owns a rank-2 direction T_k in the matrices
(directions of different tasks are orthogonal). The model's *progress* on task k is the projection
coefficient p_k = <tau, T_k> / <T_k, T_k> of its task vector tau. Each of the task's samples has a
difficulty theta_s = 1.2 u^2 (u ~ U[0, 1], so most samples are easy) and is solved when p_k >= theta_s;
quality = fraction solved. Expert k is base + T_k + noise: p_k ~ 1 on its own task, ~ 0 on the others.
Because the score is concave in progress, a model that makes partial progress on every task beats every
expert on average: the regime CycleQD is built for. The samples are split into opt / test halves.

Scaling alone must not win (with pure progress, task arithmetic with lambda = 1.2 beat every search), so a
sample is judged on the *effective* progress
    e_k = p_k - overshoot * max(0, p_k - 1) - sum_{j != k} A[k, j] * max(0, p_j),
an overshoot term (pushing a skill past its expert's strength breaks it: with the default 2, each unit past
1 costs two) and an interference term (progress on task j costs task k; ``A`` is asymmetric, drawn from
U[0, interference] per world seed), so the best model needs different coefficients per task, which one
lambda cannot give. ``overshoot = interference = 0`` is the old, monotone world.

Everything (base, experts, directions, difficulties) is a deterministic function of ``world_seed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from harness.domain import (
    Domain,
    SampleResult,
    SampleStatus,
    TaskResult,
    register_domain,
)
from harness.merging.safetensors_io import save_state_dict
from harness.seeding import derive_seed
from harness.worlds import register_builder

MATRICES = ("layers.0.weight", "layers.1.weight")
NORM = "norm.weight"


def _gen(seed: int, *label: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, "vector_world", *label))
    return g


def base_weights(world_seed: int, dim: int) -> dict[str, torch.Tensor]:
    g = _gen(world_seed, 0)
    sd = {m: 0.1 * torch.randn(dim, dim, generator=g) for m in MATRICES}
    sd[NORM] = torch.ones(dim)
    return sd


def task_directions(world_seed: int, dim: int, n_tasks: int, rank: int = 2) -> list[dict[str, torch.Tensor]]:
    """Mutually orthogonal rank-``rank`` directions, one per task (disjoint column blocks of one basis)."""
    if n_tasks * rank > dim:
        raise ValueError(f"vector_world: dim {dim} too small for {n_tasks} tasks of rank {rank}")
    g = _gen(world_seed, 1)
    dirs: list[dict[str, torch.Tensor]] = [{} for _ in range(n_tasks)]
    for m in MATRICES:
        q_left, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
        q_right, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
        for k in range(n_tasks):
            cols = slice(k * rank, (k + 1) * rank)
            dirs[k][m] = 0.5 * q_left[:, cols] @ q_right[:, cols].T
    return dirs


def difficulties(world_seed: int, task_index: int, n_samples: int) -> torch.Tensor:
    g = _gen(world_seed, 2, task_index)
    return 1.2 * torch.rand(n_samples, generator=g, dtype=torch.float64) ** 2


def interference_matrix(world_seed: int, n_tasks: int, scale: float) -> torch.Tensor:
    """A[k, j]: how much progress on task j costs task k (zero diagonal, asymmetric, U[0, scale])."""
    a = scale * torch.rand(n_tasks, n_tasks, generator=_gen(world_seed, 5), dtype=torch.float64)
    return a.fill_diagonal_(0.0)


def build_vector_world(out_dir: str | Path, *, world_seed: int = 0, n_tasks: int = 3, dim: int = 32,
                       noise: float = 0.02) -> dict[str, Path]:
    """Write base/ and experts/task{k}/ as HF-style directories; returns {name: path}. Idempotent."""
    out_dir = Path(out_dir)
    base = base_weights(world_seed, dim)
    dirs = task_directions(world_seed, dim, n_tasks)
    paths = {"base": out_dir / "base"}
    models = {"base": base}
    for k in range(n_tasks):
        g = _gen(world_seed, 3, k)
        sd = {m: base[m] + dirs[k][m] + noise * torch.randn(dim, dim, generator=g) for m in MATRICES}
        sd[NORM] = base[NORM] + noise * torch.randn(dim, generator=g)
        models[f"task{k}"] = sd
        paths[f"task{k}"] = out_dir / "experts" / f"task{k}"
    for name, sd in models.items():
        p = paths[name]
        p.mkdir(parents=True, exist_ok=True)
        (p / "config.json").write_text(json.dumps({"model_type": "vector_world", "dim": dim,
                                                   "world_seed": world_seed, "n_tasks": n_tasks}))
        save_state_dict(p / "model.safetensors", sd)
    return paths


@register_domain("vector_world")
class VectorWorldDomain(Domain):
    """Task ``task_index`` of the vector world generated from ``world_seed``."""

    @dataclass
    class Params:
        world_seed: int = 0
        task_index: int = 0
        n_tasks: int = 3
        dim: int = 32
        n_samples: int = 200
        overshoot: float = 2.0  # cost per unit of progress past the expert's (1)
        interference: float = 0.5  # A[k, j] ~ U[0, interference]

        def validate(self) -> None:
            if self.overshoot < 0 or self.interference < 0:
                raise ValueError(f"overshoot and interference must be >= 0, got {self.overshoot}, {self.interference}")
            if not 0 <= self.task_index < self.n_tasks:
                raise ValueError(f"task_index {self.task_index} not in [0, {self.n_tasks})")
            if self.dim < 1 or self.n_samples < 2:
                raise ValueError(f"dim >= 1 and n_samples >= 2 needed, got {self.dim}, {self.n_samples}")

    def __init__(self, *, task, ctx, params: Params):
        super().__init__(task=task, ctx=ctx, params=params)
        world_seed, task_index, n_tasks = params.world_seed, params.task_index, params.n_tasks
        dim, n_samples = params.dim, params.n_samples
        self.base = base_weights(world_seed, dim)
        self.directions = task_directions(world_seed, dim, n_tasks)
        self.direction = self.directions[task_index]
        self.norm2 = sum(float((d * d).sum()) for d in self.direction.values())
        self.task_index = task_index
        self.interference = interference_matrix(world_seed, n_tasks, params.interference)[task_index].tolist()
        theta = difficulties(world_seed, task_index, n_samples)
        perm = torch.randperm(n_samples, generator=_gen(world_seed, 4, task_index))
        half = n_samples // 2
        self.splits = {"opt": perm[:half], "test": perm[half:]}
        self.theta = theta

    def progress(self, state_dict: Mapping[str, torch.Tensor], direction: Mapping[str, torch.Tensor] | None = None) -> float:
        """p = <tau, T> / <T, T> along this task's direction (or ``direction``, of the same norm)."""
        dot = 0.0
        for m, d in (direction or self.direction).items():
            dot += float(((state_dict[m].double() - self.base[m].double()) * d.double()).sum())
        return dot / self.norm2

    def effective_progress(self, state_dict: Mapping[str, torch.Tensor]) -> float:
        """Progress less the overshoot and interference terms (module docstring)."""
        p = self.progress(state_dict)
        e = p - self.params.overshoot * max(0.0, p - 1.0)
        for j, a in enumerate(self.interference):
            if j != self.task_index and a:
                e -= a * max(0.0, self.progress(state_dict, self.directions[j]))
        return e

    def evaluate(self, state_dict, *, split: str) -> TaskResult:
        samples = self.evaluate_instances(state_dict, split=split, indices=self.instances(split))
        return TaskResult(self.aggregate(samples), samples)

    def instances(self, split: str) -> list[int]:
        return self.splits[split].tolist()

    def evaluate_instances(self, state_dict, *, split: str, indices) -> list[SampleResult]:
        p = self.effective_progress(state_dict)
        samples = []
        for i in indices:
            ok = p >= float(self.theta[i])
            samples.append(SampleResult(f"{self.task}/{i}", SampleStatus.SOLVED if ok else SampleStatus.WRONG,
                                        1.0 if ok else 0.0))
        return samples


register_builder("vector_world")(build_vector_world)
