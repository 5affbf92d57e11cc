"""The one tensor-level merge: sparsify x weight x consensus x scale, for every entry point.

Everything that combines task vectors goes through ``merge_source``: CycleQD's crossover (weights
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
3. the merged task vector is added to the base (``base.float() + merged``, cast to the base's dtype).

``merge_source`` does it block by block from a ``TaskVectorSource``; ``merge_tensor`` (task vectors in
memory), the store (parents' tensors read from disk, on its device) and the streamed ``cycleqd merge``
(checkpoints read tensor by tensor, blocks on worker threads) are its callers, so there is one
implementation of every step.

The named methods (``harness/merging/methods.py``) are settings of this one function.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from harness.merging.sparsify import CHUNK, apply_trim, dare_mask, high_bits, trim_keep_count, trim_plan
from harness.seeding import tensor_generator

SPARSIFY = ("none", "magnitude", "dare")
# entries per block on an accelerator: large enough that kernel launches do not dominate, small enough that a
# block's float32 temporaries (a few per model) stay far below one 8B embedding matrix (525M entries)
ACCELERATOR_BLOCK = 1 << 24
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


class TaskVectorSource(ABC):
    """The ``count`` task vectors of one parameter (``numel`` entries each, flat), handed out block by block
    in float32, so a merge never needs them whole: from tensors already in memory (``StackedTaskVectors``)
    or as differences of model tensors and the base (``DifferenceTaskVectors``: the store's rebuilds and
    ``cycleqd merge`` read checkpoints in their own dtype and form each block's task vector on the fly)."""

    count: int
    numel: int
    device: torch.device

    def prepare(self, start: int, stop: int) -> Any:  # noqa: B027 - optional hook
        """State shared by every model's block on [start, stop) (the difference source: the base block)."""

    @abstractmethod
    def block(self, i: int, start: int, stop: int, state: Any) -> torch.Tensor:
        """Task vector ``i`` on [start, stop), float32; may be a view of the caller's tensor, so the merge
        never writes to it."""

    @abstractmethod
    def at(self, i: int, positions: torch.Tensor) -> torch.Tensor:
        """Task vector ``i`` at flat ``positions`` (a CPU index tensor), float32 on the CPU: the trim's
        threshold search gathers one histogram bucket, wherever the blocks are computed."""


class StackedTaskVectors(TaskVectorSource):
    def __init__(self, taus: Sequence[torch.Tensor]):
        if not taus:
            raise ValueError("merge: no task vectors")
        shape = taus[0].shape
        for t in taus[1:]:
            if t.shape != shape:
                raise ValueError(f"merge: task vectors of shapes {list(shape)} and {list(t.shape)}")
        self.shape = shape
        self.flats = [t.reshape(-1) for t in taus]
        self.count, self.numel, self.device = len(taus), self.flats[0].numel(), self.flats[0].device

    def block(self, i, start, stop, state):
        return self.flats[i][start:stop].float()  # a view when already float32: nothing writes to blocks

    def at(self, i, positions):
        return self.flats[i][positions].float().cpu()


class DifferenceTaskVectors(TaskVectorSource):
    """Task vector i = ``models[i] - base`` in float32 (``None``: the base itself, a zero task vector),
    formed per block on ``device`` from tensors in their own dtype."""

    def __init__(self, models: Sequence[torch.Tensor | None], base: torch.Tensor, device: torch.device | str = "cpu"):
        for m in models:
            if m is not None and m.shape != base.shape:
                raise ValueError(f"merge: a model tensor of shape {list(m.shape)}, the base has {list(base.shape)}")
        if not models:
            raise ValueError("merge: no task vectors")
        self.models = [None if m is None else m.reshape(-1) for m in models]
        self.base = base.reshape(-1)
        self.count, self.numel, self.device = len(models), self.base.numel(), torch.device(device)

    def prepare(self, start, stop):
        return self.base[start:stop].to(self.device).float()

    def block(self, i, start, stop, state):
        m = self.models[i]
        return torch.zeros_like(state) if m is None else m[start:stop].to(self.device).float() - state

    def at(self, i, positions):
        m = self.models[i]
        if m is None:
            return torch.zeros(positions.numel())
        return (m[positions].float() - self.base[positions].float()).cpu()


def merge_tensor(taus: Iterable[torch.Tensor], spec: MergeSpec, name: str) -> torch.Tensor:
    """Merge one parameter's task vectors (all the same shape) into one task vector (float32)."""
    src = StackedTaskVectors(list(taus))
    return merge_source(src, spec, name).view(src.shape)


def merge_source(src: TaskVectorSource, spec: MergeSpec, name: str, *, add_base: bool = False,
                 out: torch.Tensor | None = None, block_map: Callable = map, hi: torch.Tensor | None = None) -> torch.Tensor:
    """The merged task vector of ``src`` (flat, float32), or with ``add_base`` the merged weights ``base +
    merged`` (a ``DifferenceTaskVectors``' base, written in ``out``'s dtype: the streamed merge's output).

    Block by block (``CHUNK`` entries on the CPU, where a block's temporaries stay in cache;
    ``ACCELERATOR_BLOCK`` on an accelerator, where small kernels cost more than memory): the per-entry operations and their order do
    not depend on the block size, and a trim's threshold and DARE's masks are fixed for the whole tensor
    first, so every block size gives the same bits. ``block_map`` runs the blocks (``map``, or a thread
    pool's). ``hi``: an int16 buffer of >= ``numel`` entries for the trim's bit pass (else allocated)."""
    n, nm = src.numel, src.count
    if add_base and not isinstance(src, DifferenceTaskVectors):
        raise TypeError("merge: add_base needs a DifferenceTaskVectors source (it adds that source's base)")
    weights = spec.weights if spec.weights is not None else (1.0,) * nm
    if len(weights) != nm:
        raise ValueError(f"merge: {len(weights)} weights for {nm} task vectors")
    ws = [float(w) for w in weights]
    coefs, divisor = spec.coefficients(nm)
    size = CHUNK if src.device.type == "cpu" else ACCELERATOR_BLOCK
    starts = range(0, n, size)
    sparse = _block_sparsifier(src, spec, name, starts, size, block_map, hi)
    if out is None:
        out = torch.empty(n, dtype=torch.float32, device=src.device)

    def one(s: int) -> None:
        e = min(n, s + size)
        state = src.prepare(s, e)
        ts = [sparse(src.block(i, s, e, state), s, i) for i in range(nm)]
        if spec.consensus == "ties":
            merged = torch.empty_like(ts[0])
            _ties_block(ts, ws, spec.ties_zero_sign == "positive", merged)
            if spec.scale != 1.0:
                merged.mul_(spec.scale)
        else:
            merged = torch.zeros_like(ts[0])
            for c, t in zip(coefs, ts):
                merged.add_(t, alpha=c)
            if divisor != 1.0:
                merged.div_(divisor)
        out[s:e] = merged.add_(state) if add_base else merged

    for _ in block_map(one, starts):
        pass
    return out


def _block_sparsifier(src: TaskVectorSource, spec: MergeSpec, name: str, starts: range, size: int,
                      block_map: Callable, hi: torch.Tensor | None) -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    """``sparse(block, start, i)``: model i's block sparsified. A magnitude trim first takes one pass per
    model for its threshold (the top 16 bits of each magnitude and their histogram, then ``trim_plan``; the
    one bucket it gathers is on the CPU); DARE's masks (``dare_mask``) are drawn first, model after model,
    from the one stream per (seed, tensor name), kept as bytes on the CPU."""
    n, nm = src.numel, src.count
    if spec.sparsify == "magnitude":
        if not 0.0 <= spec.density <= 1.0:
            raise ValueError(f"density must be in [0, 1], got {spec.density}")
        k = trim_keep_count(n, spec.density, spec.trim_count)
        if k == 0:
            return lambda t, s, i: torch.zeros_like(t)
        if k >= n:
            return lambda t, s, i: t
        bits = hi[:n] if hi is not None else torch.empty(n, dtype=torch.int16)

        def count_block(s: int, i: int) -> torch.Tensor:
            e = min(n, s + size)
            return high_bits(src.block(i, s, e, src.prepare(s, e)).abs(), out=bits[s:e])

        plans = []
        for i in range(nm):
            counts = sum(block_map(lambda s, i=i: count_block(s, i), starts))
            plans.append(trim_plan(bits, counts, lambda at, i=i: src.at(i, at).abs_(), k))
        return lambda t, s, i: apply_trim(t, plans[i], s)
    if spec.sparsify == "dare":
        p = spec.drop_p
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop probability must be in [0, 1), got {p}")
        gen = tensor_generator(spec.seed, "merge", name)
        masks = [dare_mask(n, p, gen) for _ in range(nm)]

        def drop(t: torch.Tensor, s: int, i: int) -> torch.Tensor:
            kept = t * masks[i][s:s + t.numel()].to(device=t.device, dtype=t.dtype)
            return kept / (1.0 - p) if p > 0 else kept
        return drop
    return lambda t, s, i: t


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
