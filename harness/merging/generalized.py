"""The one tensor-level merge: sparsify x weight x consensus x scale, for every entry point.

Everything that combines task vectors goes through ``merge_tensor``: CycleQD's crossover (weights
normalised to 1) and final aggregation (softmax weights), the store's rebuilds, ``cycleqd merge`` (streamed
from disk), the leaderboards' baselines and the learned-coefficient searchers. One function and one
seeding rule (a DARE mask for tensor ``name`` comes from ``tensor_generator(spec.seed, "merge", name)``)
mean the same named merge gives the same bits whichever way it is reached (tests/harness/merging/
test_one_merge_path.py checks it).

For tensors ``tau_i`` (task vectors of one parameter, one per model) and weights ``w_i``:

1. sparsify each ``tau_i`` (none, magnitude trim to ``density``, or DARE drop ``p`` with rescale);
2. consensus: ``none`` sums ``scale * w_i * tau_i`` in model order and, if ``normalize``, divides the sum
   by ``sum_j w_j`` once at the end (a mean is the sum over n, one rounding, not a sum of tau_i / n);
   ``ties`` elects a sign per entry, ``sign(sum_i w_i tau_i)`` (products rounded, then summed in model
   order, as mergekit does) (where that sum is exactly 0: no sign, so
   the entry merges to 0, or ``ties_zero_sign="positive"``, +, as mergekit does), takes the *disjoint mean*
   over the models that agree with it, ``sum_i w_i tau_i [agree_i] / sum_i w_i [agree_i]`` (0 where none
   agree), and multiplies by ``scale``. It keeps one float32 buffer per model, never a stack of them;
3. the merged task vector is added to the base by the caller (``base.float() + merged``).

The named methods (``harness/merging/methods.py``) are settings of this one function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from harness.merging.sparsify import CHUNK, dare_drop, magnitude_trim
from harness.seeding import tensor_generator

SPARSIFY = ("none", "magnitude", "dare")
CONSENSUS = ("none", "ties")


@dataclass(frozen=True)
class MergeSpec:
    """Settings of the generalized merge (see module docstring)."""

    sparsify: str = "none"  # none | magnitude | dare
    density: float = 1.0  # magnitude: fraction kept
    drop_p: float = 0.0  # dare: drop probability
    consensus: str = "none"  # none | ties
    normalize: bool = False
    scale: float = 1.0
    weights: tuple[float, ...] | None = None  # None: all ones
    seed: int = 0
    trim_count: str = "round"  # magnitude: keep round(d*n) entries | "floor_min1": max(1, int(d*n)) (mergekit)
    ties_zero_sign: str = "none"  # ties, where sum_i w_i tau_i == 0: "none" (entry 0) | "positive" (mergekit)

    def __post_init__(self):
        if self.sparsify not in SPARSIFY:
            raise ValueError(f"merge: unknown sparsify {self.sparsify!r} ({' | '.join(SPARSIFY)})")
        if self.consensus not in CONSENSUS:
            raise ValueError(f"merge: unknown consensus {self.consensus!r} ({' | '.join(CONSENSUS)})")
        if self.trim_count not in ("round", "floor_min1"):
            raise ValueError(f"merge: unknown trim_count {self.trim_count!r} (round | floor_min1)")
        if self.ties_zero_sign not in ("none", "positive"):
            raise ValueError(f"merge: unknown ties_zero_sign {self.ties_zero_sign!r} (none | positive)")
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    def coefficients(self, n: int) -> tuple[list[float], float]:
        """The linear path's ``scale * w_i`` and the divisor applied once to their sum (1 unless normalize)."""
        weights = self.weights if self.weights is not None else (1.0,) * n
        if len(weights) != n:
            raise ValueError(f"merge: {len(weights)} weights for {n} task vectors")
        total = float(sum(weights)) if self.normalize else 1.0
        if total == 0:
            raise ValueError("merge: normalized weights sum to zero")
        return [self.scale * float(w) for w in weights], total


def merge_tensor(taus: Iterable[torch.Tensor], spec: MergeSpec, name: str) -> torch.Tensor:
    """Merge one parameter's task vectors (all the same shape) into one task vector (float32).

    ``taus`` may be a generator: without consensus the task vectors are sparsified and summed one at a
    time (a streaming merge then holds one model's tensor beside the running sum); TIES needs them all."""
    if spec.weights is None:
        taus = list(taus)  # their count fixes the weights
    weights = spec.weights if spec.weights is not None else (1.0,) * len(taus)  # type: ignore[arg-type]
    sparse = _sparsified(taus, spec, name)
    if spec.consensus == "ties":
        dense = list(sparse)
        if len(dense) != len(weights):
            raise ValueError(f"merge: {len(weights)} weights for {len(dense)} task vectors")
        merged = _ties(dense, weights, spec.ties_zero_sign == "positive")
        if spec.scale != 1.0:
            merged.mul_(spec.scale)
        return merged
    merged: torch.Tensor | None = None
    count = 0
    coefs, divisor = spec.coefficients(len(weights))
    for c, t in zip(coefs, sparse):
        if merged is None:
            merged = torch.zeros_like(t)
        merged.add_(t, alpha=c)
        count += 1
    if count != len(weights) or next(sparse, None) is not None or merged is None:
        raise ValueError(f"merge: {len(weights)} weights for a different number of task vectors")
    if divisor != 1.0:
        merged.div_(divisor)
    return merged


def _sparsified(taus: Iterable[torch.Tensor], spec: MergeSpec, name: str) -> Iterator[torch.Tensor]:
    """Each task vector in float32, sparsified, lazily; DARE draws its masks from one stream per
    (seed, tensor name), model after model."""
    gen = tensor_generator(spec.seed, "merge", name) if spec.sparsify == "dare" else None
    for tau in taus:
        t = tau.float()
        if spec.sparsify == "dare":
            yield dare_drop(t, spec.drop_p, gen)
        elif spec.sparsify == "magnitude":
            yield magnitude_trim(t, spec.density, count=spec.trim_count)
        else:
            yield t


def _ties(sparse: list[torch.Tensor], weights, zero_is_positive: bool = False) -> torch.Tensor:
    """Sign election and disjoint mean, block by block (``CHUNK`` entries): a block's running sum,
    numerator and divisor stay in the CPU's cache, and no full-size buffer exists beside the inputs but the
    result. Per entry the operations and their order are those of the whole-tensor form."""
    shape = sparse[0].shape
    flats = [t.reshape(-1) for t in sparse]
    n = flats[0].numel()
    out = torch.empty(n, dtype=flats[0].dtype, device=flats[0].device)
    ws = [float(w) for w in weights]
    for i in range(0, n, CHUNK):
        _ties_block([f[i:i + CHUNK] for f in flats], ws, zero_is_positive, out[i:i + CHUNK])
    return out.view(shape)


def _ties_block(ts: list[torch.Tensor], ws: list[float], zero_is_positive: bool, out: torch.Tensor) -> None:
    """One block of TIES. The weighted task vectors are rounded products ``w_i * tau_i`` (w_i in the tensor's
    dtype), summed in model order; the numerator sums the agreeing products, the divisor the agreeing
    weights: the operations mergekit performs, so with its rules the two agree to the bit in float32.
    (Where no model agrees the numerator is +0 and the divisor is taken as 1: the entry is 0.)"""
    ps = [t * w for w, t in zip(ws, ts)]
    total = ps[0] + ps[1] if len(ps) > 1 else ps[0].clone()
    for p in ps[2:]:
        total.add_(p)
    if zero_is_positive:
        elected = torch.where(total >= 0, 1.0, -1.0).to(total.dtype)
    else:
        elected = torch.sign(total)
    num = total.zero_()
    den = torch.zeros_like(num)
    for w, p in zip(ws, ps):
        agree = torch.sign(p) == elected
        num.add_(p * agree)
        den.add_(agree, alpha=w)
    torch.div(num, den.masked_fill_(den == 0, 1.0), out=out)


def merged_weights(base: torch.Tensor, taus: Iterable[torch.Tensor], spec: MergeSpec, name: str) -> torch.Tensor:
    """``base + merge(taus)`` in the base's dtype: what every entry point writes or loads."""
    return (base.float() + merge_tensor(taus, spec, name)).to(base.dtype)
