"""A validation slice of the optimisation split, and the final merge's elites re-ranked on it.

Why: with tens of instances per task, an archive's best elite is often the luckiest one: in the mini world a
child beat the code expert by one opt instance, became that archive's best and took the final model's code
score from 20% to 5% on test. With ``runner.validation_fraction`` > 0 the search runs on the split
``search`` (the optimisation split minus a seeded slice per task) and never sees ``val`` (that slice); at the
end each archive's ``validation_top_k`` best elites are scored on ``val`` and the one that scores best on the
archive's task there enters the final merge (ties: search quality, then the most recent). The softmax
weights of the merge still come from the search qualities, as in the paper. This departs from the paper
(which merges each archive's best as is) and is reported as such.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from harness.qd.archive import Elite, GridArchive
from harness.seeding import derive_seed

SEARCH, VALIDATION = "search", "val"


def is_slice(split: str) -> bool:
    return split in (SEARCH, VALIDATION)


def slice_of(indices: Sequence[int], split: str, *, fraction: float, seed: int, task: str) -> list[int]:
    """``search`` or ``val`` of a task's optimisation ``indices``: ``val`` is a seeded ``fraction`` of them
    (at least one, never all), ``search`` the rest, both in the original order."""
    n = len(indices)
    if n < 2:
        raise ValueError(f"task {task!r}: {n} optimisation instance(s) cannot be split into search and val")
    k = min(n - 1, max(1, round(fraction * n)))
    held = set(np.random.default_rng(derive_seed(seed, "validation", task)).permutation(n)[:k].tolist())
    keep = (lambda j: j in held) if split == VALIDATION else (lambda j: j not in held)
    return [i for j, i in enumerate(indices) if keep(j)]


def finalists(archives: Mapping[str, GridArchive], top_k: int,
              val_scores: Callable[[str], Mapping[str, float] | None]) -> tuple[dict[str, Elite], dict]:
    """Each archive's elite for the final merge: of its ``top_k`` best by search quality, the best on ``val``
    on the archive's own task. ``val_scores(model_id)`` is None for a model that could not be scored (it
    ranks last). Returns the chosen elites and a record of every candidate's numbers."""
    chosen, record = {}, {}
    for task, archive in archives.items():
        ranked = sorted(archive.elites(), key=lambda e: (e.quality, e.generation), reverse=True)[:top_k]
        rows = []
        for e in ranked:
            v = val_scores(e.model_id)
            rows.append((e, None if v is None else float(v[task])))
        best = max(rows, key=lambda r: (-1.0 if r[1] is None else r[1], r[0].quality, r[0].generation))[0]
        chosen[task] = best
        record[task] = {"chosen": best.model_id,
                        "candidates": [{"model": e.model_id, "search": e.quality, "val": v} for e, v in rows]}
    return chosen, record
