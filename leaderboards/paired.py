"""Paired comparisons of leaderboard rows on the same test instances, with bootstrap intervals.

Why: every Table 1 row is scored on the same test instances, so two rows can be compared instance by
instance. The spread over seeds (``seed_spread.py``) describes three numbers and tests nothing; a
difference of a few points on 60 instances per family may be one or two instances. The paired
bootstrap resamples the instances of each family (the same draw for both rows; within each group a
domain's quality averages over, e.g. DBBench's categories, so every draw keeps the groups' sizes),
recomputes each family's quality with its domain's own ``aggregate`` (DBBench: the mean of per-category
means) and the average over families, and reads a percentile interval of the difference from the draws.

What it covers: the finite test set only. The search's own randomness (its seed) is not in it: a CycleQD
run is one draw of that, which is what the seeds' spread is for. The subject is *above* (*below*) a row
when the whole interval of (subject - row) lies above (below) zero; otherwise *within*. Each comparison
is at its own 95%: with ten rows, one "above" or "below" in ten can be chance (no multiple-comparison
correction is applied; the table says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np

Verdicts = Mapping[str, Sequence[Sequence[float]]]  # {task: [[instance, score], ...]}


def _mean(items: Sequence[float]) -> float:
    return sum(items) / max(len(items), 1)


@dataclass(frozen=True)
class TaskStat:
    """How one task's quality comes from its per-instance verdicts: each (instance, score) is made an item
    once (``prepare``), a draw's items are aggregated (``aggregate``), and instances are resampled within
    their ``stratum``. The default is a plain mean with no strata."""

    prepare: Callable[[int, float], Any] = lambda i, s: float(s)
    aggregate: Callable[[Sequence[Any]], float] = _mean
    stratum: Callable[[int], Hashable] = lambda i: None


MEAN = TaskStat()


def domain_stat(domain) -> TaskStat:
    """A domain's own quality: ``pending_result`` rebuilds each sample with the group its ``aggregate``
    needs (the contract racing relies on), and that group is the stratum."""
    return TaskStat(prepare=lambda i, s: domain.pending_result(int(i), float(s)),
                    aggregate=lambda items: float(domain.aggregate(items)),
                    stratum=lambda i: repr(sorted(domain.pending_result(int(i), 0.0).detail.items())))


def _checked(a: Verdicts, b: Verdicts, tasks: Sequence[str]) -> None:
    for t in tasks:
        if a.get(t) is None or b.get(t) is None:
            raise ValueError(f"paired: no per-instance verdicts for task {t!r}")
        ia, ib = [int(i) for i, _ in a[t]], [int(i) for i, _ in b[t]]
        if ia != ib:
            raise ValueError(f"paired: the two rows were scored on different instances of task {t!r}")
        if not ia:
            raise ValueError(f"paired: task {t!r} has no instances")


def paired_difference(a: Verdicts, b: Verdicts, stats: Mapping[str, TaskStat], *, draws: int = 2000,
                      seed: int = 0, level: float = 0.95) -> dict:
    """(a - b) on the average over ``stats``' tasks: the observed difference, a percentile interval at
    ``level`` from ``draws`` paired resamples of each task's instances (within strata), the shares of
    draws above and at zero, and the verdict for ``a`` (above / within / below ``b``). Same inputs and
    seed, same numbers."""
    tasks = list(stats)
    _checked(a, b, tasks)
    rng = np.random.default_rng(seed)
    items = {t: ([stats[t].prepare(i, s) for i, s in a[t]], [stats[t].prepare(i, s) for i, s in b[t]]) for t in tasks}
    strata: dict[str, list[np.ndarray]] = {}
    for t in tasks:
        groups: dict[Hashable, list[int]] = {}
        for pos, (i, _) in enumerate(a[t]):
            groups.setdefault(stats[t].stratum(int(i)), []).append(pos)
        strata[t] = [np.asarray(g) for g in groups.values()]

    def diff(pick: Mapping[str, Sequence[int]] | None) -> float:
        total = 0.0
        for t in tasks:
            xa, xb = items[t]
            if pick is not None:
                xa, xb = [xa[j] for j in pick[t]], [xb[j] for j in pick[t]]
            total += stats[t].aggregate(xa) - stats[t].aggregate(xb)
        return total / len(tasks)

    observed = diff(None)
    diffs = np.empty(draws)
    for k in range(draws):
        diffs[k] = diff({t: np.concatenate([rng.choice(g, size=len(g)) for g in strata[t]]) for t in tasks})
    lo, hi = (float(q) for q in np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2]))
    verdict = "above" if lo > 0 else "below" if hi < 0 else "within"
    return {"diff": observed, "ci": [lo, hi], "level": level, "draws": draws,
            "share_above_zero": float(np.mean(diffs > 0)), "share_at_zero": float(np.mean(diffs == 0)),
            "verdict": verdict, "instances": {t: len(a[t]) for t in tasks}}


def paired_table(subject: str, rows: Mapping[str, Verdicts | None], stats: Mapping[str, TaskStat], *,
                 draws: int = 2000, seed: int = 0) -> dict:
    """``subject`` against every other row of ``rows`` ({label: verdicts, or None when the row has none});
    rows that cannot be compared are listed under "skipped" with the reason."""
    out: dict = {"subject": subject, "draws": draws, "seed": seed, "rows": {}, "skipped": {}}
    for label, verdicts in rows.items():
        if label == subject:
            continue
        if rows.get(subject) is None or verdicts is None:
            who = "the row" if rows.get(subject) is not None else f"the subject ({subject})"
            out["skipped"][label] = f"{who} kept no per-instance verdicts"
            continue
        try:
            out["rows"][label] = paired_difference(rows[subject], verdicts, stats, draws=draws, seed=seed)
        except ValueError as exc:
            out["skipped"][label] = str(exc)
    return out


def paired_markdown(table: dict, title: str) -> str:
    """The comparison as a Markdown table, percentage points."""
    level = next((r["level"] for r in table["rows"].values()), 0.95)
    lines = [f"### {title}", "",
             f"{table['subject']} minus each row, average over the families, test split; "
             f"{100 * level:.0f}% paired bootstrap interval over the test instances ({table['draws']} draws). "
             "It covers the test set's sampling, not the search's seed; each row is compared at its own level, "
             "with no multiple-comparison correction.", "",
             f"| Row | difference | interval | {table['subject']} is |", "|---|---:|---:|---|"]
    for label, r in table["rows"].items():
        lo, hi = r["ci"]
        lines.append(f"| {label} | {100 * r['diff']:+.1f} | [{100 * lo:+.1f}, {100 * hi:+.1f}] | {r['verdict']} |")
    for label, why in table["skipped"].items():
        lines.append(f"| {label} | n/a | n/a | ({why}) |")
    return "\n".join(lines) + "\n"
