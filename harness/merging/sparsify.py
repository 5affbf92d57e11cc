"""Sparsifiers: pure functions from one task-vector tensor to a sparser one.

They never touch global RNG state: random ones take an explicit ``torch.Generator`` so that a merge is
reproducible from its seed alone.
"""

from __future__ import annotations

import torch


def trim_keep_count(n: int, density: float, count: str = "round") -> int:
    """How many of ``n`` entries a magnitude trim keeps: ``round(density * n)`` (the exact fraction, our
    default) or ``max(1, int(density * n))`` (``floor_min1``, mergekit's rule)."""
    if count == "floor_min1":
        return min(n, max(1, int(density * n)))
    if count == "round":
        return int(round(density * n))
    raise ValueError(f"unknown trim count rule {count!r} (round | floor_min1)")


def magnitude_trim(tau: torch.Tensor, density: float, count: str = "round") -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (TIES 'trim'); zero the rest.

    The threshold is the k-th largest magnitude (``kthvalue``, a selection, not a sort of the tensor); ties
    at the threshold are broken by position (first ones kept), so exactly k entries survive
    (``trim_keep_count``).
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    n = tau.numel()
    k = trim_keep_count(n, density, count)
    if k >= n:
        return tau.clone()
    if k == 0:
        return torch.zeros_like(tau)
    mag = tau.reshape(-1).abs().float()
    thr = torch.kthvalue(mag, n - k + 1).values
    keep = mag > thr
    short = k - int(keep.sum())
    if short > 0:  # entries equal to the threshold, first ones first
        at = torch.nonzero(mag == thr).view(-1)[:short]
        keep[at] = True
    del mag
    return torch.where(keep.view(tau.shape), tau, torch.zeros((), dtype=tau.dtype))


def dare_drop(tau: torch.Tensor, p: float, generator: torch.Generator, rescale: bool = True) -> torch.Tensor:
    """DARE: drop each entry with probability ``p`` and rescale the survivors by 1 / (1 - p)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {p}")
    keep = (torch.rand(tau.shape, generator=generator) >= p).to(tau.device)  # drawn on the CPU: same mask on any device
    out = tau * keep.to(tau.dtype)
    if rescale and p > 0:
        out = out / (1.0 - p)
    return out
