"""Exact racing: stop scoring a child as soon as no archive could take it, whatever the rest would give.

Why: most children of a CycleQD run land in cells whose incumbent is better (in the mini world about three
in four after the first generations); scoring them to the last instance buys nothing. Racing scores a
child in chunks of instances, interleaved across tasks, and after each chunk asks the archives, from
*bounds* on each task's final score, whether any cell could still take the child. No statistics: the
bounds are what the remaining instances could give at worst and at best, so a stopped child is exactly a
child the full evaluation would have rejected, and a run with racing ends with the same archives as the
same run without it (tests/harness/qd/test_racing.py).

Two facts make it exact:
- A domain's quality is non-decreasing in every sample's score (``Domain.aggregate``), and IEEE rounding
  is monotone, so scoring the pending samples 0 (1), in their place, gives a lower (upper) bound that the
  computed score cannot cross, bit for bit.
- Archives only improve (a cell, once filled, keeps an incumbent whose quality never falls), so a gate taken
  from the archives any time between asking for a child and telling its result is safe to prune against.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping, Sequence

from harness.qd.archive import GridArchive


@dataclass(frozen=True)
class Reach:
    """Where a task's final score can still land: within [lo, hi], and, when known, only on ``values`` (a
    score that is a mean of 0/1 verdicts over n instances takes at most pending + 1 values, so bins between
    them are out of reach)."""

    lo: float
    hi: float
    values: tuple[float, ...] | None = None

    def to_list(self) -> list:
        return [self.lo, self.hi] if self.values is None else [self.lo, self.hi, list(self.values)]


Bounds = Mapping[str, Reach]


@dataclass(frozen=True)
class ArchiveGate:
    """What racing needs of one archive: its geometry and the incumbents' qualities, as plain data (it
    travels with the job to the worker and sits in the checkpoint for jobs in flight)."""

    task: str
    behavior_tasks: tuple[str, ...]
    bounds: dict[str, tuple[float, float]]
    bins: int
    incumbents: dict[tuple[int, ...], float]

    @classmethod
    def of(cls, archive: GridArchive) -> "ArchiveGate":
        return cls(archive.task, tuple(archive.behavior_tasks), dict(archive.bounds), archive.bins,
                   {e.cell: e.quality for e in archive.elites()})

    def to_dict(self) -> dict:
        return {"task": self.task, "behavior_tasks": list(self.behavior_tasks),
                "bounds": {t: list(b) for t, b in self.bounds.items()}, "bins": self.bins,
                "incumbents": [[list(c), q] for c, q in sorted(self.incumbents.items())]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ArchiveGate":
        return cls(d["task"], tuple(d["behavior_tasks"]), {t: tuple(b) for t, b in d["bounds"].items()},
                   int(d["bins"]), {tuple(c): float(q) for c, q in d["incumbents"]})

    @cached_property
    def _geometry(self) -> GridArchive:
        """An empty archive of the same shape: its ``index_of`` is the cell rule, bit for bit."""
        return GridArchive(task=self.task, behavior_tasks=self.behavior_tasks, bounds=self.bounds, bins=self.bins)

    def could_enter(self, bounds: Bounds) -> bool:
        """True unless every cell the behaviour scores can still reach holds an incumbent at least as good
        as the best quality the child could still reach (insertion needs strictly better)."""
        top = float(bounds[self.task].hi)
        axes = []
        for t in self.behavior_tasks:
            r = bounds[t]
            if r.values is not None:
                axes.append(sorted({self._geometry.bin_of(t, v) for v in r.values}))
            else:
                axes.append(range(self._geometry.bin_of(t, r.lo), self._geometry.bin_of(t, r.hi) + 1))
        for cell in itertools.product(*axes):
            q = self.incumbents.get(cell)
            if q is None or top > q:
                return True
        return False


def gates_of(archives: Sequence[GridArchive]) -> list[dict]:
    """The gate of each archive a child will be offered to, serialised."""
    return [ArchiveGate.of(a).to_dict() for a in archives]


def any_could_enter(gates: Sequence[ArchiveGate], bounds: Bounds) -> bool:
    """Whether any of ``gates`` could take a child whose final scores lie in ``bounds``."""
    return any(g.could_enter(bounds) for g in gates)


MAX_COMBINATIONS = 4096  # beyond this many ways to complete a task, racing uses its interval only


def reach(domain, done: Sequence, planned: Sequence[int], values: bool = True) -> Reach:
    """Where ``domain``'s quality can land once the instances ``planned[len(done):]`` are scored.

    The interval scores the pending instances 0 and 1 in their places. When every verdict so far is 0 or 1
    (the agent domains' and the vector world's), the reachable values are enumerated too: the pending
    instances are grouped by what ``Domain.pending_result`` puts in ``detail`` (DB: the category), and each
    count of solved instances per group gives one value, computed on a list in the final order (placeholders
    in their places), so it equals the final score bit for bit when the counts match. ``values=False``
    skips the enumeration (the interval is cheap; the values cost one aggregate per way to complete)."""
    pending = list(planned[len(done):])
    agg = domain.aggregate
    if not pending:
        q = agg(list(done))
        return Reach(q, q, (q,))
    zeros = [domain.pending_result(i, 0.0) for i in pending]
    ones = [domain.pending_result(i, 1.0) for i in pending]
    lo, hi = agg([*done, *zeros]), agg([*done, *ones])
    if not values or any(s.score not in (0.0, 1.0) for s in done):
        return Reach(lo, hi)
    groups: dict[str, list[int]] = {}
    for pos, r in enumerate(ones):
        groups.setdefault(repr(sorted(r.detail.items())), []).append(pos)
    members = list(groups.values())
    if math.prod(len(g) + 1 for g in members) > MAX_COMBINATIONS:
        return Reach(lo, hi)
    values = set()
    for counts in itertools.product(*(range(len(g) + 1) for g in members)):
        solved = {pos for g, j in zip(members, counts) for pos in g[:j]}
        values.add(agg([*done, *(ones[p] if p in solved else zeros[p] for p in range(len(pending)))]))
    return Reach(lo, hi, tuple(sorted(values)))
