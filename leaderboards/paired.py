"""Paired comparisons of leaderboard rows on the same test instances, with bootstrap intervals.

Why: every Table 1 row is scored on the same test instances, so two rows can be compared instance by
instance. The spread over seeds (``seed_spread.py``) describes three numbers and tests nothing; a
difference of a few points on 60 instances per family may be one or two instances. The paired
bootstrap resamples the instances of each family (the same draw for both rows), recomputes each
family's quality with its domain's own ``aggregate`` (DBBench: the mean of per-category means) and the
average over families, and reads an interval of the difference from the draws.

What it covers: the finite test set only. The search's own randomness (its seed) is not in it: a CycleQD
run is one draw of that, which is what the seeds' spread is for. A row is *above* (*below*) the subject
when the whole interval of (subject - row) is below (above) zero; otherwise *within*.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

Verdicts = Mapping[str, Sequence[Sequence[float]]]  # {task: [[instance, score], ...]}
Aggregate = Callable[[Sequence[Sequence[float]]], float]  # [[instance, score], ...] -> the task's quality


def mean_aggregate(pairs: Sequence[Sequence[float]]) -> float:
    """The quality of a task whose score is the mean of its samples' scores."""
    return sum(float(s) for _, s in pairs) / max(len(pairs), 1)


def domain_aggregate(domain) -> Aggregate:
    """A domain's own quality over [[instance, score], ...]: its ``pending_result`` rebuilds each sample
    with the group its ``aggregate`` needs (the contract racing already relies on)."""
    return lambda pairs: float(domain.aggregate([domain.pending_result(int(i), float(s)) for i, s in pairs]))


def _checked(a: Verdicts, b: Verdicts, tasks: Sequence[str]) -> None:
    for t in tasks:
        if a.get(t) is None or b.get(t) is None:
            raise ValueError(f"paired: no per-instance verdicts for task {t!r}")
        ia, ib = [int(i) for i, _ in a[t]], [int(i) for i, _ in b[t]]
        if ia != ib:
            raise ValueError(f"paired: the two rows were scored on different instances of task {t!r}")
        if not ia:
            raise ValueError(f"paired: task {t!r} has no instances")


def paired_difference(a: Verdicts, b: Verdicts, aggregates: Mapping[str, Aggregate], *, draws: int = 2000,
                      seed: int = 0, level: float = 0.95) -> dict:
    """(a - b) on the average over ``aggregates``' tasks: the observed difference, a percentile interval at
    ``level`` from ``draws`` paired resamples of each task's instances, the share of draws above zero, and
    the verdict for ``a`` (above / within / below ``b``). Same inputs and seed, same numbers."""
    tasks = list(aggregates)
    _checked(a, b, tasks)
    rng = np.random.default_rng(seed)

    def avg(pick: Mapping[str, np.ndarray] | None, rows: Verdicts) -> float:
        total = 0.0
        for t in tasks:
            pairs = rows[t] if pick is None else [rows[t][j] for j in pick[t]]
            total += aggregates[t](pairs)
        return total / len(tasks)

    observed = avg(None, a) - avg(None, b)
    diffs = np.empty(draws)
    for k in range(draws):
        pick = {t: rng.integers(0, len(a[t]), len(a[t])) for t in tasks}
        diffs[k] = avg(pick, a) - avg(pick, b)
    lo, hi = (float(q) for q in np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2]))
    verdict = "above" if lo > 0 else "below" if hi < 0 else "within"
    return {"diff": observed, "ci": [lo, hi], "level": level, "draws": draws,
            "share_above_zero": float(np.mean(diffs > 0)), "verdict": verdict,
            "instances": {t: len(a[t]) for t in tasks}}


def paired_table(subject: str, rows: Mapping[str, Verdicts], aggregates: Mapping[str, Aggregate], *,
                 draws: int = 2000, seed: int = 0) -> dict:
    """``subject`` against every other row of ``rows`` ({label: verdicts}); rows without verdicts for every
    task are listed under "skipped" with the reason."""
    out: dict = {"subject": subject, "draws": draws, "seed": seed, "rows": {}, "skipped": {}}
    for label, verdicts in rows.items():
        if label == subject:
            continue
        try:
            out["rows"][label] = paired_difference(rows[subject], verdicts, aggregates, draws=draws, seed=seed)
        except ValueError as exc:
            out["skipped"][label] = str(exc)
    return out


def paired_markdown(table: dict, title: str) -> str:
    """The comparison as a Markdown table, percentage points."""
    level = next((r["level"] for r in table["rows"].values()), 0.95)
    lines = [f"### {title}", "",
             f"{table['subject']} minus each row, average over the families, test split; "
             f"{100 * level:.0f}% paired bootstrap interval over the test instances ({table['draws']} draws). "
             "It covers the test set's sampling, not the search's seed.", "",
             f"| Row | difference | interval | {table['subject']} is |", "|---|---:|---:|---|"]
    for label, r in table["rows"].items():
        lo, hi = r["ci"]
        lines.append(f"| {label} | {100 * r['diff']:+.1f} | [{100 * lo:+.1f}, {100 * hi:+.1f}] | {r['verdict']} |")
    for label, why in table["skipped"].items():
        lines.append(f"| {label} | n/a | n/a | ({why}) |")
    return "\n".join(lines) + "\n"
