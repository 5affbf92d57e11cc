"""Several seeds of a leaderboard as one table: mean +- std per row, and CycleQD against each baseline.

Why: with tens of instances per family one seed moves a row by several points, so a single-seed table
cannot say whether CycleQD beats a baseline. ``cycleqd spread OUT REPORT_DIR ...`` reads the seeds'
``report.json`` files (any leaderboard whose report has ``table1`` / ``table2`` / ``tasks``) and writes
``OUT/spread.md``, ``OUT/spread.json`` and ``OUT/index.html``.

Verdicts compare the seeds' averages: CycleQD is *above* a baseline when its mean minus its std exceeds the
baseline's mean plus its std, *below* in the mirror case, else *within* the spread (with 3 seeds this is a
description of the spread, not a significance test, and it says so on the page).
"""

from __future__ import annotations

import html
import re
import statistics
from pathlib import Path
from typing import Sequence

from harness.runner.checkpoint import atomic_write_bytes, atomic_write_json, read_json

_DETAIL = re.compile(r" \([^()]*[=:][^()]*\)$")  # a per-seed detail: " (lambda=1.2)", " (w=[...])", " ({\"density\": 0.5})"


def row_key(label: str) -> str:
    """A row's label without its per-seed detail, so the same method lines up across seeds."""
    return _DETAIL.sub("", label)


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def spread(reports: Sequence[dict], table: str) -> dict[str, dict]:
    """{row: {task | "avg": {mean, std, n, values}}} over the reports that have the row."""
    tasks = reports[0]["tasks"]
    rows: dict[str, dict[str, list[float]]] = {}
    for rep in reports:
        if rep["tasks"] != tasks:
            raise ValueError(f"spread: reports disagree on tasks ({rep['tasks']} vs {tasks})")
        for label, scores in rep[table].items():
            cols = rows.setdefault(row_key(label), {t: [] for t in [*tasks, "avg"]})
            for t in tasks:
                cols[t].append(float(scores[t]))
            cols["avg"].append(sum(float(scores[t]) for t in tasks) / len(tasks))
    return {label: {c: _stats(v) for c, v in cols.items()} for label, cols in rows.items()}


def verdicts(rows: dict[str, dict], subject: str) -> dict[str, str]:
    """``subject`` (CycleQD's row) against every other row, on the average: above / within / below."""
    s = rows[subject]["avg"]
    out = {}
    for label, cols in rows.items():
        if label == subject:
            continue
        b = cols["avg"]
        if s["mean"] - s["std"] > b["mean"] + b["std"]:
            out[label] = "above"
        elif s["mean"] + s["std"] < b["mean"] - b["std"]:
            out[label] = "below"
        else:
            out[label] = "within"
    return out


def cycleqd_row(rows: dict[str, dict]) -> str:
    """Table 1's CycleQD row (``CycleQD`` or ``CycleQD (N generations)``)."""
    found = [k for k in rows if k == "CycleQD" or k.startswith("CycleQD (")]
    if len(found) != 1:
        raise ValueError(f"spread: expected one CycleQD row in Table 1, found {found}")
    return found[0]


def _pm(c: dict) -> str:
    return f"{100 * c['mean']:.1f} ± {100 * c['std']:.1f}"


def markdown(rows: dict[str, dict], tasks: list[str], title: str, verdict: dict[str, str] | None = None,
             columns: dict | None = None) -> str:
    head = ["Method", *[(columns or {}).get(t, t) for t in tasks], "Avg"] + (["CycleQD vs row"] if verdict else [])
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, cols in rows.items():
        cells = [label, *[_pm(cols[t]) for t in tasks], _pm(cols["avg"])]
        if verdict is not None:
            cells.append(verdict.get(label, "—"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summarize(report_dirs: Sequence[Path], out: Path, columns: dict | None = None) -> dict:
    """Read each directory's report.json; write the spread tables; return the summary."""
    reports = [read_json(Path(d) / "report.json" if Path(d).is_dir() else Path(d)) for d in report_dirs]
    if len(reports) < 2:
        raise ValueError("spread: give at least two reports (seeds)")
    tasks = reports[0]["tasks"]
    t1, t2 = spread(reports, "table1"), spread(reports, "table2")
    subject = cycleqd_row(t1)
    verdict = verdicts(t1, subject)
    seeds = [r.get("seed") for r in reports]
    variant = reports[0].get("variant")
    title = f"{variant} variant, seeds {', '.join(map(str, seeds))}: test %, mean ± std over seeds"
    md = (markdown(t1, tasks, f"Table 1 ({title})", verdict, columns) + "\n"
          + markdown(t2, tasks, f"Table 2: ablations ({title})", None, columns) + "\n"
          + f"CycleQD row: {subject}. 'above' / 'below': CycleQD's mean ± std and the row's do not overlap; "
            "'within': they do (with this few seeds, a description of the spread, not a test).\n")
    summary = {"seeds": seeds, "variant": variant, "tasks": tasks, "cycleqd_row": subject,
               "table1": t1, "table2": t2, "cycleqd_vs": verdict,
               "counts": {v: sum(1 for x in verdict.values() if x == v) for v in ("above", "within", "below")}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "spread.md", md.encode())
    atomic_write_json(out / "spread.json", summary, indent=1)
    atomic_write_bytes(out / "index.html", _page(summary, columns).encode())
    return summary


def _page(summary: dict, columns: dict | None) -> str:
    tasks = summary["tasks"]

    def table(rows: dict, verdict: dict | None) -> str:
        head = ["Method", *[(columns or {}).get(t, t) for t in tasks], "Avg"] + (["CycleQD vs row"] if verdict else [])
        body = ""
        for label, cols in rows.items():
            tds = [html.escape(label), *[_pm(cols[t]) for t in tasks], _pm(cols["avg"])]
            tds += [html.escape(verdict.get(label, "—"))] if verdict is not None else []
            vals = " / ".join(f"{100 * v:.1f}" for v in cols["avg"]["values"])
            body += f'<tr title="per seed: {vals}">' + "".join(f"<td>{c}</td>" for c in tds) + "</tr>"
        return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr>{body}</table>"

    c = summary["counts"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>CycleQD, seeds {summary['seeds']}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>CycleQD over seeds {html.escape(', '.join(map(str, summary['seeds'])))} ({html.escape(str(summary['variant']))})</h1>
<p>Test split, %, mean ± std over seeds (hover a row for the per-seed averages). CycleQD's row is
<b>{html.escape(summary['cycleqd_row'])}</b>: above {c['above']}, within the spread of {c['within']}, below
{c['below']} of the other Table 1 rows ('above' / 'below': the mean ± std intervals do not overlap; with
this few seeds a description of the spread, not a significance test).</p>
<h2>Table 1</h2>{table(summary['table1'], summary['cycleqd_vs'])}
<h2>Table 2: ablations</h2>{table(summary['table2'], None)}
</body></html>"""
