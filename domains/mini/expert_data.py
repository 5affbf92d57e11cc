"""Experts fine-tuned on a small share of their family's gold trajectories: the ``expert_data`` knob.

Why: in the paper the mean merge beats two experts on their own benchmarks (MBPP 72.9 vs 70.4, OS 42.6
vs 30.4) by more than the other experts add there (their OS changes sum to +4.0 points, the merge gains
+17.4 over the base). One way for that to happen is overshoot: an expert fine-tuned for many epochs on a
small set learns its protocol and also memorises its few trajectories, so that a fraction of its task
vector (what a merge gives it) generalises better than the whole. The paper's experts were tuned for
several epochs on sets of a few hundred to a few thousand agent trajectories; world Q's experts see 1000
per family for at most 7 epochs, and no expert at 1/3 or 1/2 of its task vector beats the whole one in
any world tried (``leaderboards/mini/regime-trials/``). With ``expert_data`` f (a fraction, or one per
family), an expert trains on a seeded ``round(f * n)`` of its family's ``n`` gold trajectories (at least
one), for the same steps: more epochs over fewer examples. The all-data fine-tune trains on the union of
the experts' subsets (the same examples per family). Whether an overshoot appears, and whether a merge
then beats an expert, is measured by the regime trial, not assumed.
"""

from __future__ import annotations

import random


def subset(family: str, convs: list[list[dict]], fraction: float, seed: int) -> list[list[dict]]:
    """A seeded ``round(fraction * len(convs))`` of ``convs`` (at least one), in their recorded order."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"expert_data for {family} must be in (0, 1], got {fraction}")
    if fraction >= 1.0 or not convs:
        return list(convs)
    n = max(1, int(round(fraction * len(convs))))
    keep = set(random.Random(f"expert_data:{family}:{seed}").sample(range(len(convs)), n))
    return [c for i, c in enumerate(convs) if i in keep]
