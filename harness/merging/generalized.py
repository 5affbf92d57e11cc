"""One generalized task-vector merge: sparsify x weight x consensus x scale.

For tensors ``tau_i`` (task vectors of one parameter, one per model) and weights ``w_i``:

1. sparsify each ``tau_i`` (none, magnitude trim to ``density``, or DARE drop ``p`` with rescale);
2. consensus: ``none`` sums ``w_i tau_i`` (divided by ``sum w_i`` when ``normalize``); ``ties`` elects a
   sign per entry, ``sign(sum_i w_i tau_i)``, and takes the *disjoint mean* over the models that agree
   with it: ``sum_i w_i tau_i [agree_i] / sum_i w_i [agree_i]`` (0 where none agree);
3. the merged task vector is multiplied by ``scale`` and added to the base.

The named methods of the registry are settings of this one function:

=================  ===========  =========  =========  =====
method             sparsify     consensus  normalize  scale
=================  ===========  =========  =========  =====
mean               none         none       yes        1
task_arithmetic    none         none       no         lam
ties               magnitude    ties       (n/a)      lam
dare_linear        dare         none       no         lam
dare_ties          dare         ties       (n/a)      lam
=================  ===========  =========  =========  =====
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from harness.merging.sparsify import dare_drop, magnitude_trim


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

    def __post_init__(self):
        if self.sparsify not in ("none", "magnitude", "dare"):
            raise ValueError(f"merge: unknown sparsify {self.sparsify!r} (none | magnitude | dare)")
        if self.consensus not in ("none", "ties"):
            raise ValueError(f"merge: unknown consensus {self.consensus!r} (none | ties)")


def merge_tensor(
    taus: Sequence[torch.Tensor],
    spec: MergeSpec,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Merge one parameter's task vectors (all the same shape) into one task vector (float32)."""
    n = len(taus)
    weights = spec.weights if spec.weights is not None else (1.0,) * n
    if len(weights) != n:
        raise ValueError(f"merge: {len(weights)} weights for {n} task vectors")
    sparse = []
    for tau in taus:
        t = tau.float()
        if spec.sparsify == "magnitude":
            t = magnitude_trim(t, spec.density)
        elif spec.sparsify == "dare":
            if generator is None:
                raise ValueError("merge: DARE needs a seeded generator")
            t = dare_drop(t, spec.drop_p, generator)
        sparse.append(t)
    if spec.consensus == "ties":
        weighted = torch.stack([w * t for w, t in zip(weights, sparse)])
        elected = torch.sign(weighted.sum(0))
        agree = (torch.sign(torch.stack(sparse)) == elected) & (elected != 0)
        wcol = torch.tensor(weights, dtype=torch.float32).view(-1, *([1] * sparse[0].dim()))
        num = (weighted * agree).sum(0)
        den = (wcol * agree).sum(0)
        safe_den = torch.where(den == 0, torch.ones_like(den), den)
        merged = torch.where(den != 0, num / safe_den, torch.zeros_like(num))
    else:
        merged = torch.zeros_like(sparse[0])
        for w, t in zip(weights, sparse):
            merged.add_(t, alpha=float(w))
        if spec.normalize:
            total = float(sum(weights))
            if total == 0:
                raise ValueError("merge: normalized weights sum to zero")
            merged.div_(total)
    if spec.scale != 1.0:
        merged.mul_(spec.scale)
    return merged


@dataclass(frozen=True)
class MergeMethod:
    """A registry entry: a name, its fixed settings and the knobs a user may set."""

    name: str
    fixed: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)

    def spec(self, **params) -> MergeSpec:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"merge method {self.name!r}: unknown parameter {sorted(unknown)[0]!r} "
                f"(accepts {sorted(self.defaults)})"
            )
        return MergeSpec(**{**self.fixed, **self.defaults, **params})


MERGE_METHODS: dict[str, MergeMethod] = {
    "mean": MergeMethod("mean", {"normalize": True}, {"weights": None}),
    "task_arithmetic": MergeMethod("task_arithmetic", {}, {"scale": 1.0, "weights": None}),
    "ties": MergeMethod(
        "ties", {"sparsify": "magnitude", "consensus": "ties"}, {"density": 0.2, "scale": 1.0, "weights": None}
    ),
    "dare_linear": MergeMethod(
        "dare_linear", {"sparsify": "dare"}, {"drop_p": 0.9, "scale": 1.0, "weights": None, "seed": 0}
    ),
    "dare_ties": MergeMethod(
        "dare_ties",
        {"sparsify": "dare", "consensus": "ties"},
        {"drop_p": 0.9, "scale": 1.0, "weights": None, "seed": 0},
    ),
}


def get_merge_method(name: str) -> MergeMethod:
    try:
        return MERGE_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown merge method {name!r} (known: {sorted(MERGE_METHODS)})") from None
