"""Mutations of a child's task vector, one parameter tensor at a time (registered in
``harness.registry.MUTATIONS``; ``qd.mutation`` names one).

Each kind is a class with declared parameters (``params``) so the config, the recipe and the docs agree on
what it reads. Randomness comes from ``tensor_generator(seed, "mutation", tensor name)``, so the order in
which tensors are visited never changes the result. 1-D tensors (norms, biases) pass through unchanged.

- ``none``: the identity.
- ``svd_official`` (the default; the authors' code, and the paper's Figure 3, which describes the mutation
  as *adding* perturbations along the singular components): adds ``U_e diag(w S_e) V_e^T`` from the SVD of
  the active task's expert, ``w ~ U[0, w_max]``, ``w_max = 0.1`` (``needs_expert_svd``).
- ``svd_additive``: the same perturbation along the child's own components, ``S -> S (1 + w)``,
  ``w_max = 0.3`` (a sensitivity row).
- ``svd`` (the paper's equation read literally, as the design notes state it): ``U S V^T -> U diag(w S)
  V^T``, ``w_max = 0.3``: it keeps at most 30% of every singular direction, so every child lies near the
  base model (a named ablation).
- ``gaussian``: adds ``sigma * rms(tau) * N(0, 1)``, ``sigma = 0.1`` (relative to the tensor's scale).
- ``gaussian_official`` (the authors' code, Table 2's Gaussian row): adds absolute ``N(0, sigma^2)``,
  ``sigma = 3e-4``, to every parameter (vectors included).

Each class declares its parameters with their defaults (``defaults``); a config that leaves
``qd.mutation_w_max`` / ``qd.mutation_sigma`` unset gets the chosen mutation's own.
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
    defaults: ClassVar[dict[str, float]] = {"w_max": 0.3, "sigma": 0.1}
    needs_expert_svd: ClassVar[bool] = False
    matrices_only: ClassVar[bool] = True

    def __init__(self, *, seed: int = 0, w_max: float | None = None, sigma: float | None = None):
        self.seed = int(seed)
        self.w_max = float(self.defaults["w_max"] if w_max is None else w_max)
        self.sigma = float(self.defaults["sigma"] if sigma is None else sigma)

    def __call__(self, name: str, tau: torch.Tensor, expert_svd: SVD | None = None) -> torch.Tensor:
        if self.matrices_only and not is_matrix(tau):
            return tau
        if self.needs_expert_svd and expert_svd is None:
            raise ValueError(f"{type(self).__name__} of {name!r} needs the active expert's SVD")
        return self.apply(tau, tensor_generator(self.seed, "mutation", name), expert_svd)

    @abstractmethod
    def apply(self, tau: torch.Tensor, gen: torch.Generator, expert_svd: SVD | None) -> torch.Tensor:
        """The mutated task vector of one matrix-shaped parameter."""

    def _weights(self, s: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # drawn on the CPU (the generator's device), so a mutation on cuda draws the same numbers
        return (torch.rand(s.shape, generator=gen, dtype=torch.float32) * self.w_max).to(s.device)


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
    defaults = {"w_max": 0.1, "sigma": 0.0}
    needs_expert_svd = True

    def apply(self, tau, gen, expert_svd):
        u, s, vh = (x.to(tau.device) for x in expert_svd)  # type: ignore[union-attr]
        return tau + ((u * (s * self._weights(s, gen))) @ vh).reshape(tau.shape)


class GaussianMutation(Mutation):
    params = ("sigma",)

    def apply(self, tau, gen, expert_svd):
        rms = tau.float().pow(2).mean().sqrt()
        noise = torch.randn(tau.shape, generator=gen, dtype=torch.float32).to(tau.device)
        return tau + self.sigma * rms * noise


class GaussianOfficialMutation(Mutation):
    params = ("sigma",)
    defaults = {"w_max": 0.0, "sigma": 3e-4}
    matrices_only = False

    def apply(self, tau, gen, expert_svd):
        return tau + self.sigma * torch.randn(tau.shape, generator=gen, dtype=torch.float32).to(tau.device)
