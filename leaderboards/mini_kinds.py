"""Test scores by question kind: how each row does on the kinds its family's expert trained on and on the rest.

Why: with the world's ``expert_kinds`` below 1 (``domains/mini/kinds.py``) an expert is scored on question
kinds it never trained on, and whether a merge beats it on its own family is decided there. This splits
each row's test verdicts (``MethodContext.tested`` keeps them) by the kind of each instance's question, so
a report shows where a merge gains or loses: on the expert's trained kinds, or on the others. The numbers
are plain means of the per-instance verdicts (DBBench's quality weights its categories; these do not).
"""

from __future__ import annotations

from domains.mini.kinds import chosen_kinds, kinds_of
from domains.mini.world import per_family


def trained_kinds(recipe: dict, family: str) -> list[str]:
    frac = float(per_family(recipe, "expert_kinds", family))
    return kinds_of(family) if frac >= 1.0 else chosen_kinds(family, frac, int(recipe["seed"]))


def kind_scores(ctx, families: tuple[str, ...], rows: dict[str, str | None], recipe: dict) -> dict:
    """{task: {"trained_kinds", "n": {"trained", "untrained"}, "rows": {label: {"trained", "untrained",
    "by_kind"}}}} for the rows (label -> key in ``ctx.verdicts``) whose test verdicts were kept."""
    out: dict[str, dict] = {}
    for fam, task in zip(families, ctx.tasks):
        samples = ctx.evaluator.domains[task].samples()
        kind = {i: s.get("mini", {}).get("kind") for i, s in enumerate(samples)}
        trained = set(trained_kinds(recipe, fam))
        per_row: dict[str, dict] = {}
        n = {"trained": 0, "untrained": 0}
        for label, key in rows.items():
            kept = (ctx.verdicts.rows.get(f"test:{key}") or {}).get("verdicts") if key and ctx.verdicts else None
            pairs = (kept or {}).get(task)
            if not pairs:
                continue
            groups: dict[str, list[float]] = {}
            for inst, score in pairs:
                groups.setdefault(kind[int(inst)], []).append(float(score))
            side = {"trained": [s for k, v in groups.items() if k in trained for s in v],
                    "untrained": [s for k, v in groups.items() if k not in trained for s in v]}
            n = {k: len(v) for k, v in side.items()}
            per_row[label] = {**{k: (sum(v) / len(v) if v else None) for k, v in side.items()},
                              "by_kind": {k: sum(v) / len(v) for k, v in sorted(groups.items())}}
        out[task] = {"trained_kinds": sorted(trained), "n": n, "rows": per_row}
    return out


def kinds_markdown(kinds: dict, columns: dict[str, str]) -> str:
    """One table per family whose expert trained on part of its kinds: each row on trained / other kinds."""
    parts = []
    for task, k in kinds.items():
        if not k["n"]["untrained"] or not k["rows"]:
            continue
        lines = [f"#### {columns.get(task, task)}: the expert trained on {', '.join(k['trained_kinds'])} "
                 f"({k['n']['trained']} test instances; other kinds: {k['n']['untrained']})", "",
                 "| Row | trained kinds | other kinds |", "|---|---:|---:|"]
        for label, r in k["rows"].items():
            cells = ["n/a" if r[s] is None else f"{100 * r[s]:.1f}" for s in ("trained", "untrained")]
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
        parts.append("\n".join(lines))
    if not parts:
        return ""
    return ("### Test scores by question kind (mean of verdicts)\n\n" + "\n\n".join(parts) + "\n")
