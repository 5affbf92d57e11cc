"""Gradient-free searchers over a small real vector (learned merge coefficients), with an ask / tell
interface like CMA-ES's: ``xs = s.ask()``, evaluate, ``s.tell(xs, values)``, until ``s.stop()``.
Values are to be *maximised* (vectors of objectives for NSGA-II, scalars for the policy gradient)."""

from harness.search.nsga2 import NSGA2, crowding_distance, non_dominated_sort
from harness.search.policy_gradient import GaussianPolicyGradient

__all__ = ["NSGA2", "GaussianPolicyGradient", "crowding_distance", "non_dominated_sort"]
