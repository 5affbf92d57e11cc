"""NSGA-II (Deb et al., 2002) for maximisation, written for tiny budgets (tens of evaluations).

The learned-coefficients baseline of CycleQD's Table 1 treats the per-task scores as separate objectives:
NSGA-II keeps a Pareto front of coefficient vectors instead of collapsing the tasks into one number.
Pure functions for the two rankings (fronts, crowding) so they can be tested on hand-made sets; the
search itself draws everything from one seeded numpy Generator, so a seed fixes the run.
"""

from __future__ import annotations

import numpy as np


def non_dominated_sort(values: np.ndarray) -> list[list[int]]:
    """Fronts of row indices, best first; row a dominates b if a >= b everywhere and > somewhere."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    ge = (v[:, None, :] >= v[None, :, :]).all(-1)
    gt = (v[:, None, :] > v[None, :, :]).any(-1)
    dom = ge & gt  # dom[a, b]: a dominates b
    count = dom.sum(0)  # how many dominate each row
    fronts, current = [], [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for a in current:
            for b in np.flatnonzero(dom[a]):
                count[b] -= 1
                if count[b] == 0:
                    nxt.append(int(b))
        current = sorted(nxt)
    return fronts


def crowding_distance(values: np.ndarray) -> np.ndarray:
    """Per row of one front: the side lengths of the cuboid its neighbours span (boundary rows: inf)."""
    v = np.asarray(values, dtype=float)
    n, m = v.shape
    d = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(v[:, j], kind="stable")
        span = v[order[-1], j] - v[order[0], j]
        d[order[0]] = d[order[-1]] = np.inf
        if span > 0:
            d[order[1:-1]] += (v[order[2:], j] - v[order[:-2], j]) / span
    return d


class NSGA2:
    """``ask()`` returns a population of vectors within ``bounds``; ``tell(xs, values)`` takes one row of
    objectives (to maximise) per vector. ``best(weights)`` is the evaluated vector of the first front with
    the highest weighted sum (default: the mean over objectives)."""

    def __init__(self, *, x0, bounds: tuple[float, float], pop_size: int = 6, max_evals: int = 24, seed: int = 0,
                 sigma0: float = 0.3, eta_c: float = 15.0, eta_m: float = 20.0):
        if pop_size < 2 or pop_size % 2:
            raise ValueError(f"nsga2: pop_size must be an even number >= 2, got {pop_size}")
        self.rng = np.random.default_rng(seed)
        self.lo, self.hi = float(bounds[0]), float(bounds[1])
        self.x0 = np.asarray(x0, dtype=float)
        self.pop_size, self.max_evals, self.sigma0 = pop_size, max_evals, sigma0
        self.eta_c, self.eta_m = eta_c, eta_m
        self.evals = 0
        self.pop_x: np.ndarray | None = None  # the surviving parents and their objectives
        self.pop_f: np.ndarray | None = None
        self.all_x: list[np.ndarray] = []
        self.all_f: list[np.ndarray] = []

    def stop(self) -> bool:
        return self.evals >= self.max_evals

    def ask(self) -> list[np.ndarray]:
        n = min(self.pop_size, self.max_evals - self.evals)
        if self.pop_x is None:  # the start point and Gaussian perturbations of it
            xs = [self.x0] + [self.x0 + self.sigma0 * self.rng.standard_normal(self.x0.shape) for _ in range(n - 1)]
        else:
            xs = self._offspring(n)
        return [np.clip(x, self.lo, self.hi) for x in xs]

    def tell(self, xs, values) -> None:
        x = np.asarray(xs, dtype=float)
        f = np.asarray(values, dtype=float)
        if f.ndim != 2 or len(f) != len(x):
            raise ValueError("nsga2: tell() needs one row of objectives per vector")
        self.evals += len(x)
        self.all_x += list(x)
        self.all_f += list(f)
        if self.pop_x is not None:
            x, f = np.vstack([self.pop_x, x]), np.vstack([self.pop_f, f])
        keep = self._survivors(f, self.pop_size)
        self.pop_x, self.pop_f = x[keep], f[keep]

    def best(self, weights=None) -> tuple[np.ndarray, np.ndarray]:
        f = np.asarray(self.all_f)
        w = np.full(f.shape[1], 1.0 / f.shape[1]) if weights is None else np.asarray(weights, dtype=float)
        front = non_dominated_sort(f)[0]
        i = max(front, key=lambda k: (float(f[k] @ w), -k))  # ties: the earliest evaluated
        return np.asarray(self.all_x[i]), f[i]

    # -- internals --------------------------------------------------------------------------------------
    def _survivors(self, f: np.ndarray, k: int) -> list[int]:
        keep: list[int] = []
        for front in non_dominated_sort(f):
            if len(keep) + len(front) <= k:
                keep += front
            else:
                d = crowding_distance(f[front])
                order = np.argsort(-d, kind="stable")
                keep += [front[i] for i in order[: k - len(keep)]]
                break
        return keep

    def _rank_and_crowding(self) -> tuple[np.ndarray, np.ndarray]:
        rank = np.zeros(len(self.pop_f), dtype=int)
        crowd = np.zeros(len(self.pop_f))
        for r, front in enumerate(non_dominated_sort(self.pop_f)):
            rank[front] = r
            crowd[front] = crowding_distance(self.pop_f[front])
        return rank, crowd

    def _tournament(self, rank, crowd) -> int:
        a, b = self.rng.integers(len(rank), size=2)
        if rank[a] != rank[b]:
            return int(a if rank[a] < rank[b] else b)
        return int(a if crowd[a] >= crowd[b] else b)

    def _offspring(self, n: int) -> list[np.ndarray]:
        rank, crowd = self._rank_and_crowding()
        out: list[np.ndarray] = []
        while len(out) < n:
            p1 = self.pop_x[self._tournament(rank, crowd)]
            p2 = self.pop_x[self._tournament(rank, crowd)]
            for c in self._sbx(p1, p2):
                out.append(self._mutate(c))
        return out[:n]

    def _sbx(self, p1: np.ndarray, p2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Simulated binary crossover: children spread around the parents like a one-point binary crossover."""
        u = self.rng.random(p1.shape)
        beta = np.where(u <= 0.5, (2 * u) ** (1 / (self.eta_c + 1)), (1 / (2 * (1 - u))) ** (1 / (self.eta_c + 1)))
        return 0.5 * ((1 + beta) * p1 + (1 - beta) * p2), 0.5 * ((1 - beta) * p1 + (1 + beta) * p2)

    def _mutate(self, x: np.ndarray) -> np.ndarray:
        """Polynomial mutation, each coordinate with probability 1 / dim."""
        span = self.hi - self.lo
        u = self.rng.random(x.shape)
        delta = np.where(u < 0.5, (2 * u) ** (1 / (self.eta_m + 1)) - 1, 1 - (2 * (1 - u)) ** (1 / (self.eta_m + 1)))
        hit = self.rng.random(x.shape) < 1.0 / x.size
        return np.clip(x + hit * delta * span, self.lo, self.hi)
