"""Named merge methods: fixed settings of the generalized merge plus the knobs a user may set
(registered in ``harness.registry.MERGE_METHODS``; ``cycleqd merge NAME`` and the leaderboards use them).

=================  ===========  =========  =========  =====
method             sparsify     consensus  normalize  scale
=================  ===========  =========  =========  =====
mean               none         none       yes        1
linear             none         none       yes        1      (= mean; mergekit's name for it)
task_arithmetic    none         none       no         lam
ties               magnitude    ties       (n/a)      lam
dare_linear        dare         none       no         lam
dare_ties          dare         ties       (n/a)      lam
=================  ===========  =========  =========  =====
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.merging.generalized import MergeSpec


@dataclass(frozen=True)
class MergeMethod:
    """A registry entry: a name, its fixed settings and the parameters a user may set (with defaults)."""

    name: str
    fixed: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)

    def spec(self, **params) -> MergeSpec:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"merge method {self.name!r}: unknown parameter {sorted(unknown)[0]!r} "
                             f"(accepts {sorted(self.defaults)})")
        return MergeSpec(**{**self.fixed, **self.defaults, **params})


MEAN = MergeMethod("mean", {"normalize": True}, {"weights": None})
LINEAR = MergeMethod("linear", {"normalize": True}, {"weights": None})  # mergekit's name for the weighted mean
TASK_ARITHMETIC = MergeMethod("task_arithmetic", {}, {"scale": 1.0, "weights": None})
TIES = MergeMethod("ties", {"sparsify": "magnitude", "consensus": "ties"},
                   {"density": 0.2, "scale": 1.0, "weights": None, "trim_count": "round", "ties_zero_sign": "none"})
DARE_LINEAR = MergeMethod("dare_linear", {"sparsify": "dare"},
                          {"drop_p": 0.9, "scale": 1.0, "weights": None, "seed": 0})
DARE_TIES = MergeMethod("dare_ties", {"sparsify": "dare", "consensus": "ties"},
                        {"drop_p": 0.9, "scale": 1.0, "weights": None, "seed": 0, "ties_zero_sign": "none"})
