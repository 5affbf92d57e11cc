"""Variation operators on task vectors: crossover, mutation, final aggregation.

All operate on one parameter tensor at a time so that the model store can stream them; randomness comes
from generators seeded by (job seed, tensor name), so the order of tensors never changes the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from harness.seeding import tensor_generator


def crossover_weights(rng, mu: float = 1.0, sigma: float = 0.03, n: int = 2) -> list[float]:
    """w_i ~ N(mu, sigma) i.i.d., one scalar per parent for the whole model (numpy Generator)."""
    w = [float(x) for x in rng.normal(mu, sigma, size=n)]
    if abs(sum(w)) < 1e-8:
        raise ValueError(f"crossover weights {w} sum to ~0; use mu far from 0")
    return w


def crossover_tensor(taus: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """(w1 tau1 + w2 tau2) / (w1 + w2), in float32."""
    total = float(sum(weights))
    out = torch.zeros_like(taus[0], dtype=torch.float32)
    for w, t in zip(weights, taus):
        out.add_(t.float(), alpha=float(w) / total)
    return out


def is_matrix(t: torch.Tensor) -> bool:
    """SVD mutation applies to tensors of matrix rank > 1 possible: ndim >= 2 and both sides > 1."""
    return t.dim() >= 2 and t.shape[0] > 1 and math.prod(t.shape[1:]) > 1


@dataclass(frozen=True)
class MutationSpec:
    """kind: none | svd (paper, as the design notes state it: replace S by S*w) | svd_additive (the child's
    own components added back, S -> S*(1+w)) | svd_official (add U diag(w*S_e) V^T of the active task's
    expert) | gaussian (add sigma * rms(tau) * N(0, 1)). ``w_max`` for the SVD kinds, ``sigma`` for
    gaussian. ``seed`` is the job's mutation seed.

    Note: with w ~ U[0, w_max] and w_max = 0.3, ``svd`` keeps at most 30% of every singular direction of
    the crossover's task vector, so every child lies near the base model; ``svd_additive`` is the reading
    under which a child keeps its parents' skills (see README, "SVD mutation")."""

    kind: str = "svd"
    w_max: float = 0.3
    sigma: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.kind not in MUTATIONS:
            raise ValueError(f"mutation: unknown kind {self.kind!r} (known: {sorted(MUTATIONS)})")


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def mutate_tensor(name: str, tau: torch.Tensor, spec: MutationSpec,
                  expert_svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Mutate one parameter's task vector. 1-D tensors (norms, biases) pass through unchanged."""
    if spec.kind == "none" or not is_matrix(tau):
        return tau
    gen = tensor_generator(spec.seed, "mutation", name)
    if spec.kind == "gaussian":
        rms = tau.float().pow(2).mean().sqrt()
        noise = torch.randn(tau.shape, generator=gen, dtype=torch.float32)
        return tau + spec.sigma * rms * noise
    if spec.kind == "svd":
        u, s, vh = torch.linalg.svd(_as_matrix(tau.float()), full_matrices=False)
        w = torch.rand(s.shape, generator=gen, dtype=torch.float32) * spec.w_max
        return ((u * (s * w)) @ vh).reshape(tau.shape)
    if spec.kind == "svd_additive":
        u, s, vh = torch.linalg.svd(_as_matrix(tau.float()), full_matrices=False)
        w = torch.rand(s.shape, generator=gen, dtype=torch.float32) * spec.w_max
        return tau + ((u * (s * w)) @ vh).reshape(tau.shape)
    if spec.kind == "svd_official":
        if expert_svd is None:
            raise ValueError(f"svd_official mutation of {name!r} needs the active expert's SVD")
        u, s, vh = expert_svd
        w = torch.rand(s.shape, generator=gen, dtype=torch.float32) * spec.w_max
        return tau + ((u * (s * w)) @ vh).reshape(tau.shape)
    raise AssertionError(spec.kind)


MUTATIONS = ("none", "svd", "svd_additive", "svd_official", "gaussian")


def expert_svd_tensor(tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    if not is_matrix(tau):
        return None
    return tuple(torch.linalg.svd(_as_matrix(tau.float()), full_matrices=False))  # type: ignore[return-value]


def aggregation_weights(qualities: Sequence[float], temperature: float = 1.0) -> list[float]:
    """beta = softmax(f / T) over the archives' best qualities (paper: T = 1)."""
    f = torch.tensor([float(q) for q in qualities], dtype=torch.float64) / temperature
    return [float(x) for x in torch.softmax(f, 0)]


def aggregate_tensor(taus: Sequence[torch.Tensor], betas: Sequence[float]) -> torch.Tensor:
    out = torch.zeros_like(taus[0], dtype=torch.float32)
    for b, t in zip(betas, taus):
        out.add_(t.float(), alpha=float(b))
    return out
