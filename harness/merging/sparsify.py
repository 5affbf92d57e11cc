"""Sparsifiers: pure functions from one task-vector tensor to a sparser one.

They never touch global RNG state: random ones take an explicit ``torch.Generator`` so that a merge is
reproducible from its seed alone.
"""

from __future__ import annotations

import sys

import torch


def trim_keep_count(n: int, density: float, count: str = "round") -> int:
    """How many of ``n`` entries a magnitude trim keeps: ``round(density * n)`` (the exact fraction, our
    default) or ``max(1, int(density * n))`` (``floor_min1``, mergekit's rule)."""
    if count == "floor_min1":
        return min(n, max(1, int(density * n)))
    if count == "round":
        return int(round(density * n))
    raise ValueError(f"unknown trim count rule {count!r} (round | floor_min1)")


CHUNK = 1 << 16  # entries per block of the block-wise passes: a block's temporaries stay in the CPU's cache


def magnitude_trim(tau: torch.Tensor, density: float, count: str = "round") -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (TIES 'trim'); zero the rest.

    The threshold is the k-th largest magnitude, found by a radix selection (``trim_plan``: a histogram of
    the top 16 bits of the magnitudes, then a selection among the one bucket that holds it), never a sort;
    ties at the threshold are broken by position (first ones kept), so exactly k entries survive
    (``trim_keep_count``). The passes run block by block (``CHUNK`` entries).
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
    hi = torch.empty(n, dtype=torch.int16)
    counts = torch.zeros(1 << 15, dtype=torch.int64)
    for i in range(0, n, CHUNK):
        counts += high_bits(_mag(flat[i:i + CHUNK]), out=hi[i:i + CHUNK])
    plan = trim_plan(hi, counts, lambda at: _mag(flat[at]), k)
    out = torch.empty(n, dtype=tau.dtype, device=tau.device)
    for i in range(0, n, CHUNK):
        apply_trim(flat[i:i + CHUNK], plan, i, out=out[i:i + CHUNK])
    return out.view(tau.shape)


class TrimPlan:
    """What a magnitude trim keeps: entries whose magnitude exceeds ``thr``, and the entries at ``extra``
    (flat positions, ascending: the first of those equal to ``thr``, enough to keep exactly k)."""

    def __init__(self, thr: torch.Tensor, extra: torch.Tensor):
        self.thr, self.extra = thr, extra
        self._bounds: tuple[int, list[int]] | None = None

    def extra_in(self, offset: int, size: int) -> torch.Tensor:
        """The positions in ``extra`` within [offset, offset + size), relative to offset (whole ``CHUNK``
        blocks look their range up in a table built once)."""
        e = self.extra
        if not e.numel():
            return e
        if self._bounds is None or self._bounds[0] != CHUNK:
            edges = torch.arange(int(e[-1]) // CHUNK + 2, dtype=torch.int64) * CHUNK
            self._bounds = (CHUNK, torch.searchsorted(e, edges).tolist())
        j, bounds = offset // CHUNK, self._bounds[1]
        if offset % CHUNK == 0 and size == CHUNK and j + 1 < len(bounds):
            lo, hi = bounds[j], bounds[j + 1]
        elif offset > int(e[-1]):
            return e[:0]
        else:
            lo, hi = (int(v) for v in torch.searchsorted(e, torch.tensor([offset, offset + size])))
        return e[lo:hi] - offset


def high_bits(mag: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Store the top 16 bits of the non-negative float32s ``mag`` in ``out`` (int16) and return their
    histogram (2**15 bins). A non-negative float's bit pattern orders like its value, so the histogram
    brackets any rank; the top 16 bits are sign, exponent and 7 mantissa bits."""
    if sys.byteorder != "little":  # the high half of each float32 is its second int16 only on little-endian
        raise NotImplementedError("magnitude trim: the radix selection assumes a little-endian CPU")
    out.copy_(mag.view(torch.int16).view(-1, 2)[:, 1])  # the little-endian high halves
    return torch.bincount(out, minlength=1 << 15)


def trim_plan(hi: torch.Tensor, counts: torch.Tensor, value_at, k: int) -> TrimPlan:
    """The threshold and tie positions of a trim keeping ``k`` of ``n = hi.numel()`` entries (0 < k < n).

    ``hi`` and ``counts`` come from ``high_bits`` over the magnitudes; ``value_at(positions)`` gives the
    float32 magnitudes at those positions. The (n-k+1)-th smallest magnitude lies in the bucket where the
    cumulative count reaches it; its exact value is a ``kthvalue`` among that bucket's entries only, which
    also hold every entry equal to it. No sort, no full-size float copy."""
    n = hi.numel()
    r = n - k + 1
    cum = counts.cumsum(0)
    bucket = int(torch.searchsorted(cum, torch.tensor(r, dtype=torch.int64)))
    below = int(cum[bucket - 1]) if bucket else 0
    where = torch.nonzero(hi == bucket).view(-1)
    cand = value_at(where)
    thr = torch.kthvalue(cand, r - below).values
    above = (n - int(cum[bucket])) + int((cand > thr).sum())
    return TrimPlan(thr, where[cand == thr][: k - above])


def apply_trim(x: torch.Tensor, plan: TrimPlan, offset: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """One block (flat, starting at ``offset``) of a trim: ``x`` where kept, else 0."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    keep = _mag(x) > plan.thr
    out = torch.where(keep, x, zero) if out is None else torch.where(keep, x, zero, out=out)
    sel = plan.extra_in(offset, x.numel())
    if sel.numel():
        out[sel] = x[sel]
    return out


def _mag(x: torch.Tensor) -> torch.Tensor:
    """|x| in float32 (the dtype the threshold is chosen in)."""
    return x.abs() if x.dtype == torch.float32 else x.abs().float()


def dare_mask(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """DARE's keep mask for ``n`` entries (bool, on the CPU): entry j kept iff its uniform draw is >= ``p``.
    Drawn in ``CHUNK``-sized pieces from the one stream, so the mask does not depend on how a merge walks
    the tensor (the draws are the same sequence as one ``torch.rand(n)``)."""
    mask = torch.empty(n, dtype=torch.bool)
    for s in range(0, n, CHUNK):
        torch.ge(torch.rand(min(CHUNK, n - s), generator=generator), p, out=mask[s:s + CHUNK])
    return mask


def dare_drop(tau: torch.Tensor, p: float, generator: torch.Generator, rescale: bool = True) -> torch.Tensor:
    """DARE: drop each entry with probability ``p`` and rescale the survivors by 1 / (1 - p)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {p}")
    keep = dare_mask(tau.numel(), p, generator).view(tau.shape)  # drawn on the CPU: same mask on any device
    out = tau * keep.to(device=tau.device, dtype=tau.dtype)
    if rescale and p > 0:
        out = out / (1.0 - p)
    return out
