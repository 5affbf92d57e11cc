"""CycleQD's scalar draws: crossover weights per child and the final aggregation's softmax weights.

The tensor work they drive (the weighted merge of task vectors, the mutations) is the one merge path in
``harness/merging/``; a child is then the recipe ``MergeRecipe(parents, MergeSpec(weights, normalize))``.
"""

from __future__ import annotations

from typing import Sequence

import torch


def crossover_weights(rng, mu: float = 1.0, sigma: float = 0.03, n: int = 2) -> list[float]:
    """w_i ~ N(mu, sigma) i.i.d., one scalar per parent for the whole model (numpy Generator)."""
    w = [float(x) for x in rng.normal(mu, sigma, size=n)]
    if abs(sum(w)) < 1e-8:
        raise ValueError(f"crossover weights {w} sum to ~0; use mu far from 0")
    return w


def aggregation_weights(qualities: Sequence[float], temperature: float = 1.0) -> list[float]:
    """beta = softmax(f / T) over the archives' best qualities (paper: T = 1)."""
    f = torch.tensor([float(q) for q in qualities], dtype=torch.float64) / temperature
    return [float(x) for x in torch.softmax(f, 0)]
