"""A Gaussian policy over coefficient vectors trained by the policy gradient (REINFORCE with a mean
baseline, normalised advantages; Williams 1992, in the PGPE form of Sehnke et al. 2010).

The "policy-gradient" learned-merge baseline: the policy's mean is the proposed coefficient vector; each
iteration samples a batch, scores it, and moves the mean and the per-coordinate log-std along the
estimated gradient of the expected score. Seeded numpy Generator: a seed fixes the run.
"""

from __future__ import annotations

import numpy as np


class GaussianPolicyGradient:
    def __init__(self, *, x0, bounds: tuple[float, float], batch: int = 6, max_evals: int = 24, seed: int = 0,
                 sigma0: float = 0.3, lr_mean: float = 0.2, lr_sigma: float = 0.1, min_sigma: float = 0.02):
        if batch < 2:
            raise ValueError(f"policy gradient: batch must be >= 2, got {batch}")
        self.rng = np.random.default_rng(seed)
        self.lo, self.hi = float(bounds[0]), float(bounds[1])
        self.mean = np.asarray(x0, dtype=float).copy()
        self.log_sigma = np.full(self.mean.shape, np.log(sigma0))
        self.batch, self.max_evals = batch, max_evals
        self.lr_mean, self.lr_sigma, self.min_sigma = lr_mean, lr_sigma, min_sigma
        self.evals = 0
        self._eps: np.ndarray | None = None
        self.history: list[tuple[np.ndarray, float]] = []

    def stop(self) -> bool:
        return self.evals >= self.max_evals

    def ask(self) -> list[np.ndarray]:
        n = min(self.batch, self.max_evals - self.evals)
        self._eps = self.rng.standard_normal((n, self.mean.size))
        return [np.clip(self.mean + np.exp(self.log_sigma) * e, self.lo, self.hi) for e in self._eps]

    def tell(self, xs, values) -> None:
        r = np.asarray(values, dtype=float).reshape(-1)
        if self._eps is None or len(r) != len(self._eps):
            raise ValueError("policy gradient: tell() needs one value per vector of the last ask()")
        self.evals += len(r)
        self.history += [(np.asarray(x), float(v)) for x, v in zip(xs, r)]
        # the noise that produced what was scored: clipping at the bounds moves x, so eps follows it
        eps = (np.asarray(xs, dtype=float) - self.mean) / np.exp(self.log_sigma)
        adv = r - r.mean()
        if adv.std() > 0:
            adv = adv / adv.std()
        sigma = np.exp(self.log_sigma)
        # d log N(x; mu, sigma) / d mu = eps / sigma ; / d log sigma = eps^2 - 1   (x = mu + sigma * eps)
        g_mean = (adv[:, None] * eps).mean(0) * sigma  # natural-gradient scaling: a step in units of sigma
        g_logs = (adv[:, None] * (eps ** 2 - 1)).mean(0)
        self.mean = np.clip(self.mean + self.lr_mean * g_mean, self.lo, self.hi)
        self.log_sigma = np.maximum(self.log_sigma + self.lr_sigma * g_logs, np.log(self.min_sigma))
        self._eps = None

    def best(self) -> np.ndarray:
        """The policy's mean: what the policy proposes (not the luckiest sample)."""
        return self.mean.copy()
