"""Mutations of a child's task vector, one parameter tensor at a time (registered in
``harness.registry.MUTATIONS``; ``qd.mutation`` names one).

Each kind is a class with declared parameters (``params``) so the config, the recipe and the docs agree on
what it reads. Randomness comes from ``tensor_generator(seed, "mutation", tensor name)``, so the order in
which tensors are visited never changes the result. 1-D tensors (norms, biases) pass through unchanged.

- ``none``: the identity.
- ``svd`` (the paper's formula as the design notes state it): ``U S V^T -> U diag(w S) V^T``,
  ``w ~ U[0, w_max]``. With ``w_max = 0.3`` it keeps at most 30% of every singular direction, so every
  child lies near the base model.
- ``svd_additive``: the child's own components added back, ``S -> S (1 + w)``.
- ``svd_official`` (the authors' code): adds ``U_e diag(w S_e) V_e^T`` from the SVD of the active task's
  expert (``needs_expert_svd``).
- ``gaussian``: adds ``sigma * rms(tau) * N(0, 1)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from harness.seeding import tensor_generator

SVD = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def is_matrix(t: torch.Tensor) -> bool:
    """SVD mutation applies to tensors of matrix rank > 1 possible: ndim >= 2 and both sides > 1."""
    return t.dim() >= 2 and t.shape[0] > 1 and math.prod(t.shape[1:]) > 1


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def svd_of(tau: torch.Tensor) -> SVD | None:
    """The thin SVD of a parameter's task vector as a matrix (None for 1-D tensors)."""
    if not is_matrix(tau):
        return None
    return tuple(torch.linalg.svd(_as_matrix(tau.float()), full_matrices=False))  # type: ignore[return-value]


class Mutation(ABC):
    """One mutation kind. ``params``: the settings it reads (of ``w_max``, ``sigma``); ``seed``: the job's."""

    params: ClassVar[tuple[str, ...]] = ()
    needs_expert_svd: ClassVar[bool] = False

    def __init__(self, *, seed: int = 0, w_max: float = 0.3, sigma: float = 0.1):
        self.seed, self.w_max, self.sigma = int(seed), float(w_max), float(sigma)

    def __call__(self, name: str, tau: torch.Tensor, expert_svd: SVD | None = None) -> torch.Tensor:
        if not is_matrix(tau):
            return tau
        if self.needs_expert_svd and expert_svd is None:
            raise ValueError(f"{type(self).__name__} of {name!r} needs the active expert's SVD")
        return self.apply(tau, tensor_generator(self.seed, "mutation", name), expert_svd)

    @abstractmethod
    def apply(self, tau: torch.Tensor, gen: torch.Generator, expert_svd: SVD | None) -> torch.Tensor:
        """The mutated task vector of one matrix-shaped parameter."""

    def _weights(self, s: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(s.shape, generator=gen, dtype=torch.float32) * self.w_max


class NoMutation(Mutation):
    def __call__(self, name, tau, expert_svd=None):
        return tau

    def apply(self, tau, gen, expert_svd):
        return tau


class SVDScaleMutation(Mutation):
    params = ("w_max",)

    def apply(self, tau, gen, expert_svd):
        u, s, vh = torch.linalg.svd(_as_matrix(tau.float()), full_matrices=False)
        return ((u * (s * self._weights(s, gen))) @ vh).reshape(tau.shape)


class SVDAdditiveMutation(Mutation):
    params = ("w_max",)

    def apply(self, tau, gen, expert_svd):
        u, s, vh = torch.linalg.svd(_as_matrix(tau.float()), full_matrices=False)
        return tau + ((u * (s * self._weights(s, gen))) @ vh).reshape(tau.shape)


class SVDOfficialMutation(Mutation):
    params = ("w_max",)
    needs_expert_svd = True

    def apply(self, tau, gen, expert_svd):
        u, s, vh = expert_svd  # type: ignore[misc]
        return tau + ((u * (s * self._weights(s, gen))) @ vh).reshape(tau.shape)


class GaussianMutation(Mutation):
    params = ("sigma",)

    def apply(self, tau, gen, expert_svd):
        rms = tau.float().pow(2).mean().sqrt()
        noise = torch.randn(tau.shape, generator=gen, dtype=torch.float32)
        return tau + self.sigma * rms * noise
