"""Sparsifiers: pure functions from one task-vector tensor to a sparser one.

They never touch global RNG state: random ones take an explicit ``torch.Generator`` so that a merge is
reproducible from its seed alone.
"""

from __future__ import annotations

import torch


def magnitude_trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (TIES 'trim'); zero the rest.

    Ties at the threshold are broken by position (``topk`` order), so exactly ``round(density * n)``
    entries survive.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    n = tau.numel()
    k = int(round(density * n))
    if k >= n:
        return tau.clone()
    out = torch.zeros_like(tau)
    if k == 0:
        return out
    flat = tau.reshape(-1)
    idx = torch.topk(flat.abs().float(), k, sorted=False).indices
    out.view(-1)[idx] = flat[idx]
    return out


def dare_drop(tau: torch.Tensor, p: float, generator: torch.Generator, rescale: bool = True) -> torch.Tensor:
    """DARE: drop each entry with probability ``p`` and rescale the survivors by 1 / (1 - p)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {p}")
    keep = torch.rand(tau.shape, generator=generator) >= p
    out = tau * keep.to(tau.dtype)
    if rescale and p > 0:
        out = out / (1.0 - p)
    return out
