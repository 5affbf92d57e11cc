"""Parent selection from an archive.

``elite`` (the paper): P_j proportional to prod_i [a_lo + norm_i(f_ji) (a_hi - a_lo)], f = the elites' raw
scores on every task, norm_i = min-max over the archive's elites (a constant column contributes 1).
``elite_official`` (the authors' code): the same product over the active archive's quality and the elites'
*bin indices*, mapped to [0.5, 1.3]. ``random``: uniform (the ablation baseline).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.qd.archive import Elite, GridArchive
from harness.registry import SAMPLERS


def _product_weights(columns: np.ndarray, a_lo: float, a_hi: float) -> np.ndarray:
    """columns: (n_elites, n_features). Returns unnormalised gamma_j."""
    lo, hi = columns.min(0), columns.max(0)
    span = hi - lo
    factors = np.ones_like(columns, dtype=np.float64)
    varying = span > 0
    factors[:, varying] = a_lo + (columns[:, varying] - lo[varying]) / span[varying] * (a_hi - a_lo)
    return factors.prod(1)


def elite_weights_paper(archive: GridArchive, elites: Sequence[Elite], tasks: Sequence[str],
                        a_lo: float = 0.5, a_hi: float = 0.8) -> np.ndarray:
    cols = np.array([[e.scores[t] for t in tasks] for e in elites], dtype=np.float64)
    return _product_weights(cols, a_lo, a_hi)


def elite_weights_official(archive: GridArchive, elites: Sequence[Elite], tasks: Sequence[str],
                           a_lo: float = 0.5, a_hi: float = 1.3) -> np.ndarray:
    cols = np.array([[e.quality, *e.cell] for e in elites], dtype=np.float64)
    return _product_weights(cols, a_lo, a_hi)


def uniform_weights(archive: GridArchive, elites: Sequence[Elite], tasks: Sequence[str]) -> np.ndarray:
    return np.ones(len(elites))


def sample_parents(archive: GridArchive, tasks: Sequence[str], rng: np.random.Generator,
                   method: str = "elite", **kw) -> list[Elite]:
    """Two distinct elites (or the only elite twice when the archive holds one)."""
    elites = archive.elites()
    if not elites:
        raise ValueError(f"archive {archive.task!r} is empty: nothing to sample")
    if len(elites) == 1:
        return [elites[0], elites[0]]
    w = SAMPLERS.get(method)(archive, elites, tasks, **kw)
    p = w / w.sum()
    i, j = rng.choice(len(elites), size=2, replace=False, p=p)
    return [elites[int(i)], elites[int(j)]]
