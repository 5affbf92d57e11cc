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

    The threshold is the k-th largest magnitude, found by a radix selection (``trim_plan``: a histogram of
    the top 16 bits of the magnitudes, then a selection among the one bucket that holds it), never a sort;
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
    plan = trim_plan(lambda: ((i, _mag(flat[i:i + CHUNK])) for i in range(0, n, CHUNK)), n, k)
    out = torch.empty(n, dtype=tau.dtype, device=tau.device)
    for i in range(0, n, CHUNK):
        apply_trim(flat[i:i + CHUNK], plan, i, out=out[i:i + CHUNK])
    return out.view(tau.shape)


class TrimPlan:
    """What a magnitude trim keeps: entries whose magnitude exceeds ``thr``, and the entries at ``extra``
    (flat positions, ascending: the first of those equal to ``thr``, enough to keep exactly k)."""

    def __init__(self, thr: torch.Tensor, extra: torch.Tensor):
        self.thr, self.extra = thr, extra


def trim_plan(mag_blocks, n: int, k: int) -> TrimPlan:
    """The threshold and tie positions of a trim keeping ``k`` of ``n`` entries (0 < k < n).

    ``mag_blocks()`` yields ``(offset, float32 magnitudes)`` blocks covering the tensor in order; it is
    called twice. A non-negative float's bit pattern orders like its value, so a histogram of the top 16 bits
    (sign, exponent, 7 mantissa bits) names the bucket holding the (n-k+1)-th smallest magnitude; the exact
    value is a ``kthvalue`` among that bucket's entries only, which also hold every entry equal to it. No
    sort, no full-size copy."""
    r = n - k + 1
    counts = torch.zeros(1 << 15, dtype=torch.int64)
    for _, mag in mag_blocks():
        counts += torch.bincount(_high_half(mag), minlength=1 << 15)
    cum = counts.cumsum(0)
    bucket = int(torch.searchsorted(cum, torch.tensor(r, dtype=torch.int64)))
    below = int(cum[bucket - 1]) if bucket else 0
    vals, idxs = [], []
    for off, mag in mag_blocks():
        at = torch.nonzero(_high_half(mag) == bucket).view(-1)
        vals.append(mag[at])
        idxs.append(at + off)
    cand, where = torch.cat(vals), torch.cat(idxs)
    thr = torch.kthvalue(cand, r - below).values
    above = (n - int(cum[bucket])) + int((cand > thr).sum())
    return TrimPlan(thr, where[cand == thr][: k - above])


def apply_trim(x: torch.Tensor, plan: TrimPlan, offset: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """One block (flat, starting at ``offset``) of a trim: ``x`` where kept, else 0."""
    out = torch.where(_mag(x) > plan.thr, x, torch.zeros((), dtype=x.dtype, device=x.device), out=out) \
        if out is not None else torch.where(_mag(x) > plan.thr, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if plan.extra.numel():
        e = plan.extra
        sel = e[(e >= offset) & (e < offset + x.numel())] - offset
        if sel.numel():
            out[sel] = x[sel]
    return out


def _high_half(mag: torch.Tensor) -> torch.Tensor:
    """The top 16 bits of non-negative float32s (a strided view of their little-endian high halves)."""
    return mag.view(torch.int16).view(-1, 2)[:, 1]


def _mag(x: torch.Tensor) -> torch.Tensor:
    """|x| in float32 (the dtype the threshold is chosen in)."""
    return x.abs() if x.dtype == torch.float32 else x.abs().float()


def dare_drop(tau: torch.Tensor, p: float, generator: torch.Generator, rescale: bool = True) -> torch.Tensor:
    """DARE: drop each entry with probability ``p`` and rescale the survivors by 1 / (1 - p)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {p}")
    keep = (torch.rand(tau.shape, generator=generator) >= p).to(tau.device)  # drawn on the CPU: same mask on any device
    out = tau * keep.to(tau.dtype)
    if rescale and p > 0:
        out = out / (1.0 - p)
    return out
