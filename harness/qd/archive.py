"""Grid archives: one per task, quality = that task's score, behaviour = the binned scores on the others.

Modelled on pyribs' GridArchive: keyword-only constructor, ``add`` returns a per-item status, statistics
are kept up to date incrementally instead of being recomputed over the grid.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from harness.errors import ConfigError


class AddStatus(enum.IntEnum):
    """What ``GridArchive.add`` did with a candidate (pyribs convention: 0 means not added)."""

    NOT_ADDED = 0
    IMPROVE_EXISTING = 1
    NEW = 2


@dataclass
class ArchiveStats:
    """Summary of an archive, updated on every successful insert."""

    num_elites: int = 0
    coverage: float = 0.0
    qd_score: float = 0.0  # sum over elites of (quality - qd_offset)
    obj_max: float | None = None
    obj_mean: float | None = None


@dataclass
class Elite:
    """One occupied cell."""

    model_id: str
    quality: float
    scores: dict[str, float]  # the model's score on every task
    generation: int
    cell: tuple[int, ...] = field(default=())


def bounds_from_expert_scores(
    expert_scores: Sequence[Mapping[str, float]], task: str, low: float = 0.85, high: float = 1.15
) -> tuple[float, float]:
    """The paper's behaviour range for ``task``: 0.85 x worst expert to 1.15 x best expert."""
    vals = [float(s[task]) for s in expert_scores]
    lo, hi = low * min(vals), high * max(vals)
    if not hi > lo:
        raise ConfigError(
            f"archive.bounds.{task}: experts' scores on {task!r} are all {min(vals):g}, so the paper's range "
            f"[{low} x worst, {high} x best] is empty; set explicit bounds for {task!r}"
        )
    return lo, hi


class GridArchive:
    """Archive for one task.

    Args (keyword-only):
        task: the task whose score is the quality here.
        behavior_tasks: the other tasks, in axis order.
        bounds: (lo, hi) per behaviour task.
        bins: cells per behaviour axis (paper: 15).
        qd_offset: subtracted from every quality in the QD-score (0 for scores in [0, 1]).
    """

    def __init__(
        self,
        *,
        task: str,
        behavior_tasks: Sequence[str],
        bounds: Mapping[str, tuple[float, float]],
        bins: int = 15,
        qd_offset: float = 0.0,
    ):
        if bins < 1:
            raise ConfigError(f"archive.bins: must be >= 1, got {bins}")
        self.task = task
        self.behavior_tasks = list(behavior_tasks)
        self.bins = int(bins)
        self.qd_offset = float(qd_offset)
        self.bounds: dict[str, tuple[float, float]] = {}
        self._edges: list[np.ndarray] = []
        for t in self.behavior_tasks:
            if t not in bounds:
                raise ConfigError(f"archive.bounds.{t}: missing bounds for behaviour task {t!r}")
            lo, hi = (float(x) for x in bounds[t])
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
                raise ConfigError(f"archive.bounds.{t}: lo must be < hi, got [{lo}, {hi}]")
            self.bounds[t] = (lo, hi)
            self._edges.append(np.linspace(lo, hi, self.bins + 1))
        self.cells = self.bins ** len(self.behavior_tasks)
        self._elites: dict[tuple[int, ...], Elite] = {}
        self.stats = ArchiveStats()
        self._quality_sum = 0.0

    # -- geometry -------------------------------------------------------------------------------------
    def index_of(self, scores: Mapping[str, float]) -> tuple[int, ...]:
        """Cell of a score vector: ``digitize(x, edges, right=True) - 1`` clipped to each axis's own range.

        Values below ``lo`` go to the first bin, values above ``hi`` to the last (per axis: the official
        code clips every axis with the first axis's size, which we do not copy).
        """
        return tuple(self.bin_of(t, scores[t]) for t in self.behavior_tasks)

    def bin_of(self, task: str, value: float) -> int:
        """The bin of ``value`` on behaviour axis ``task`` (the rule of ``index_of``, one axis)."""
        edges = self._edges[self.behavior_tasks.index(task)]
        b = int(np.digitize(float(value), edges, right=True)) - 1
        return min(max(b, 0), self.bins - 1)

    # -- insertion ------------------------------------------------------------------------------------
    def add(self, model_id: str, scores: Mapping[str, float], generation: int) -> AddStatus:
        """Insert if the cell is empty or the candidate's quality is strictly higher than the incumbent's."""
        for t in [self.task, *self.behavior_tasks]:
            v = scores.get(t)
            if v is None or not math.isfinite(float(v)):
                raise ValueError(f"archive {self.task!r}: score for task {t!r} is missing or not finite: {v!r}")
        q = float(scores[self.task])
        cell = self.index_of(scores)
        old = self._elites.get(cell)
        if old is not None and not q > old.quality:
            return AddStatus.NOT_ADDED
        self._elites[cell] = Elite(model_id, q, {k: float(v) for k, v in scores.items()}, int(generation), cell)
        if old is None:
            self._quality_sum += q
            self.stats.num_elites += 1
            status = AddStatus.NEW
        else:
            self._quality_sum += q - old.quality
            status = AddStatus.IMPROVE_EXISTING
        n = self.stats.num_elites
        self.stats.coverage = n / self.cells
        self.stats.qd_score = self._quality_sum - n * self.qd_offset
        self.stats.obj_max = q if self.stats.obj_max is None else max(self.stats.obj_max, q)
        self.stats.obj_mean = self._quality_sum / n
        return status

    # -- queries --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._elites)

    def elites(self) -> list[Elite]:
        """Elites in a deterministic order (by cell)."""
        return [self._elites[c] for c in sorted(self._elites)]

    def best(self) -> Elite:
        """Highest quality; ties go to the most recent insert (the paper's rule)."""
        if not self._elites:
            raise ValueError(f"archive {self.task!r} is empty")
        return max(self.elites(), key=lambda e: (e.quality, e.generation))

    def grid(self) -> np.ndarray:
        """Quality per cell as a dense array (NaN where empty), for heatmaps."""
        g = np.full((self.bins,) * len(self.behavior_tasks), np.nan)
        for cell, e in self._elites.items():
            g[cell] = e.quality
        return g

    # -- persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "behavior_tasks": self.behavior_tasks,
            "bounds": {t: list(b) for t, b in self.bounds.items()},
            "bins": self.bins,
            "qd_offset": self.qd_offset,
            "stats": asdict(self.stats),
            "quality_sum": self._quality_sum,
            "elites": [
                {"cell": list(e.cell), "model_id": e.model_id, "quality": e.quality,
                 "scores": e.scores, "generation": e.generation}
                for e in self.elites()
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "GridArchive":
        a = cls(task=d["task"], behavior_tasks=d["behavior_tasks"],
                bounds={t: tuple(b) for t, b in d["bounds"].items()}, bins=d["bins"], qd_offset=d["qd_offset"])
        for e in d["elites"]:
            cell = tuple(e["cell"])
            a._elites[cell] = Elite(e["model_id"], e["quality"], dict(e["scores"]), e["generation"], cell)
        # Restored verbatim (not recomputed) so a resumed run's running sums match the bits of an
        # uninterrupted one.
        a.stats = ArchiveStats(**d["stats"])
        a._quality_sum = float(d["quality_sum"])
        return a
