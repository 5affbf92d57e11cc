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


CHUNK = 1 << 18  # entries per block of the block-wise passes: a block's temporaries stay in the CPU's cache


def magnitude_trim(tau: torch.Tensor, density: float, count: str = "round") -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (TIES 'trim'); zero the rest.

    The threshold is the k-th largest magnitude, found by a radix selection (``kth_magnitude``: a histogram
    of the top 16 bits of the magnitudes, then a selection among the one bucket that holds it), never a sort;
    ties at the threshold are broken by position (first ones kept), so exactly k entries survive
    (``trim_keep_count``). The passes run block by block, so no full-size temporary beyond the result.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    n = tau.numel()
    k = trim_keep_count(n, density, count)
    if k >= n:
        return tau.clone()
    if k == 0:
        return torch.zeros_like(tau)
    flat = tau.reshape(-1)
    thr = kth_magnitude(flat, n - k + 1)
    out = torch.empty(n, dtype=tau.dtype, device=tau.device)
    zero = torch.zeros((), dtype=tau.dtype, device=tau.device)
    kept = 0
    for i in range(0, n, CHUNK):
        x = flat[i:i + CHUNK]
        keep = _mag(x) > thr
        kept += int(keep.sum())
        torch.where(keep, x, zero, out=out[i:i + CHUNK])
    short = k - kept
    i = 0
    while short > 0:  # entries equal to the threshold, first ones first
        x = flat[i:i + CHUNK]
        at = torch.nonzero(_mag(x) == thr).view(-1)[:short] + i
        out[at] = flat[at]
        short -= at.numel()
        i += CHUNK
    return out.view(tau.shape)


def _mag(x: torch.Tensor) -> torch.Tensor:
    """|x| in float32 (the dtype the threshold is chosen in)."""
    return x.abs() if x.dtype == torch.float32 else x.abs().float()


def kth_magnitude(flat: torch.Tensor, r: int) -> torch.Tensor:
    """The ``r``-th smallest of ``|flat|`` (1-based; float32 result), as ``torch.kthvalue`` would give it.

    A non-negative float's bit pattern orders like its value, so a histogram of the top 16 bits (sign,
    exponent, 7 mantissa bits) of every magnitude names the bucket holding the r-th one; the exact value is
    a ``kthvalue`` among that bucket's entries only. Two block-wise passes, no sort, no full-size copy."""
    n = flat.numel()
    counts = torch.zeros(1 << 15, dtype=torch.int64)
    for i in range(0, n, 4 * CHUNK):
        hi = flat[i:i + 4 * CHUNK].float().abs().view(torch.int16).view(-1, 2)[:, 1]  # little-endian high half
        counts += torch.bincount(hi, minlength=1 << 15)
    cum = counts.cumsum(0)
    bucket = int(torch.searchsorted(cum, torch.tensor(r, dtype=torch.int64)))
    below = int(cum[bucket - 1]) if bucket else 0
    parts = []
    for i in range(0, n, 4 * CHUNK):
        mag = flat[i:i + 4 * CHUNK].float().abs()
        parts.append(mag[mag.view(torch.int16).view(-1, 2)[:, 1] == bucket])
    return torch.kthvalue(torch.cat(parts), r - below).values


def dare_drop(tau: torch.Tensor, p: float, generator: torch.Generator, rescale: bool = True) -> torch.Tensor:
    """DARE: drop each entry with probability ``p`` and rescale the survivors by 1 / (1 - p)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {p}")
    keep = (torch.rand(tau.shape, generator=generator) >= p).to(tau.device)  # drawn on the CPU: same mask on any device
    out = tau * keep.to(tau.dtype)
    if rescale and p > 0:
        out = out / (1.0 - p)
    return out
