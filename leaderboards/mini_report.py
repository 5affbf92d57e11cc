"""Mini Table 1 / Table 2 as Markdown, CSV, JSON and one HTML page with the plots.

Fractions in [0, 1] in the machine-read files (JSON, CSV), percentages in the files people read.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from harness.runner.checkpoint import atomic_write_bytes, atomic_write_json, read_json
from leaderboards.emit import emit_run, fmt_percent, method_rows, percent_table
from leaderboards.mini_kinds import kinds_markdown
from leaderboards.paired import paired_markdown

COLUMNS = {"mini-code": "Code", "mini-os": "OS", "mini-db": "DB"}


def markdown(rows: list[dict], tasks: list[str], title: str) -> str:
    return percent_table(rows, tasks, title, COLUMNS)


def csv_text(rows: list[dict], tasks: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["method", *tasks, "avg"])
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def progress_figure(runs: dict[str, Path]) -> bytes | None:
    """Average test score of the aggregated model against generation, one line per Table 2 run."""

    fig, ax = plt.subplots(figsize=(7, 3.6))
    drawn = False
    for label, d in runs.items():
        p = Path(d) / "progress.json"
        if not p.exists():
            continue
        pts = [x for x in read_json(p) if x["avg"] is not None]
        if pts:
            ax.plot([x["generation"] for x in pts], [100 * x["avg"] for x in pts], marker="o", label=label)
            drawn = True
    ax.set(xlabel="generation", ylabel="avg test score (%)", title="progress (aggregated model, test split)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    data = _png(fig) if drawn else None
    plt.close(fig)
    return data


def bars_figure(rows: list[dict], tasks: list[str]) -> bytes:

    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(rows))
    w = 0.8 / (len(tasks) + 1)
    for j, t in enumerate([*tasks, "avg"]):
        ax.bar(x + j * w, [100 * (r[t] or 0) for r in rows], w, label=COLUMNS.get(t, t))
    ax.set_xticks(x + w * len(tasks) / 2, [r["method"][:22] for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="test score (%)", title="mini Table 1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def scaling_figure(regime: dict, tasks: list[str]) -> bytes:
    """Fraction of each expert's gain kept against the scale of its task vector (0: the base, 1: the
    expert), the expert alone; the mean merge (each task vector at 1/3, the others added) as a cross.
    On the diagonal a skill is linear in its task vector; the paper's regime sits above it."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot([0, 1], [0, 1], color="#bbb", lw=1, ls="--", label="linear")
    for j, t in enumerate(tasks):
        if regime["retention"][t] is None:  # the expert gained nothing: no fraction to draw
            continue
        pts = sorted((float(a), r) for a, r in regime["scaled_alone"][t].items() if r is not None)
        c = f"C{j}"
        ax.plot([0, *[a for a, _ in pts], 1], [0, *[r for _, r in pts], 1], marker="o", color=c,
                label=f"{COLUMNS.get(t, t)} expert alone")
        ax.plot([1 / 3], [regime["retention"][t]], marker="x", ms=10, mew=2, ls="", color=c)
    ax.axhline(0.5, color="#888", lw=0.8)
    ax.set(xlabel="task-vector scale", ylabel="fraction of the expert's gain kept",
           title="skills against task-vector scale (x: mean merge)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def write_regime_report(out: Path, report: dict) -> dict[str, Path]:
    """``--tables regime``: the scores (opt and test pooled), the regime's verdict, how much of each skill
    survives scaling alone, and the scaling figure."""
    tasks, reg = report["tasks"], report["regime"]
    n = ", ".join(f"{COLUMNS.get(t, t)} {reg['instances'][t]}" for t in tasks)
    scales = sorted({a for t in tasks for a in reg["scaled_alone"][t]}, key=float)
    lines = [f"| Family | {' | '.join(f'alone x {float(a):.2f}' for a in scales)} | mean merge |", "|---" * (len(scales) + 2) + "|"]
    for t in tasks:
        cells = [reg["scaled_alone"][t][a] for a in scales] + [reg["retention"][t]]
        lines.append(f"| {COLUMNS.get(t, t)} | " + " | ".join("n/a" if c is None else f"{100 * c:.0f}%" for c in cells) + " |")
    md = (percent_table(report["scores"], tasks, f"World regime: scores on opt and test pooled ({n} instances)", COLUMNS)
          + "\n" + regime_text(reg, tasks) + "\n\n### Fraction of each expert's gain kept\n\n" + "\n".join(lines) + "\n"
          + "\n||tau|| / ||theta||: " + ", ".join(f"{k} {v:.3f}" for k, v in reg["tau_over_theta"].items())
          + "; cosines: " + ", ".join(f"{k} {v:.3f}" for k, v in reg["cosine"].items() if v is not None) + "\n")
    kinds_md = kinds_markdown(report.get("kinds") or {}, COLUMNS)
    md += ("\n" + kinds_md) if kinds_md else ""
    written = {"md": out / "tables.md", "json": out / "report.json", "html": out / "index.html"}
    atomic_write_bytes(written["md"], md.encode())
    atomic_write_json(written["json"], report, indent=1)
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>mini world regime</title></head>"
            f"<body style=\"font-family:sans-serif;max-width:900px;margin:2em auto\"><h1>The mini world's regime</h1>"
            f"<pre>{html.escape(md)}</pre>{_img(scaling_figure(reg, tasks))}</body></html>")
    atomic_write_bytes(written["html"], page.encode())
    return written


def _img(data: bytes | None) -> str:
    return "" if data is None else f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}">'


# the paper's Table 1: each expert's score on the two other benchmarks minus the base's, averaged over the six
# (coding expert: DB +15.9, OS -4.5; DB expert: MBPP -1.5, OS +3.3; OS expert: MBPP -1.0, DB -5.3): +1.15
PAPER_CROSS_FAMILY_CHANGE = (15.9 - 4.5 - 1.5 + 3.3 - 1.0 - 5.3) / 6


def regime_text(regime: dict | None, tasks: list[str]) -> str:
    """One paragraph: is the world in the paper's regime (leaderboards.mini_tables.regime), and why not."""
    if not regime:
        return ""
    rets = regime["retention"]
    ret = ", ".join(f"{COLUMNS.get(t, t)} " + ("n/a" if rets[t] is None else f"{100 * rets[t]:.0f}%") for t in tasks)
    verdict = "holds" if regime["holds"] else "does NOT hold (" + ", ".join(f.replace("_", " ") for f in regime["failed"]) + ")"
    beats = regime.get("mean_merge_beats_an_expert")  # any gap > 0 (mini_tables.regime)
    gaps = regime.get("mean_merge_minus_expert") or {}
    won = ", ".join(f"{COLUMNS.get(t, t)} by {100 * gaps[t]:.1f} points" for t in tasks if (gaps.get(t) or 0) > 0)
    above = ("" if beats is None else
             " The mean merge beats " + (f"the expert on its own family ({won}); the paper's beats the MBPP "
                                         "and OS experts." if beats else
                                         "no expert on its own family (in the paper it beats the MBPP and OS experts)."))
    cross = regime.get("mean_cross_family_change")
    other = ("" if cross is None else
             f" An expert changes the other families' scores by {100 * cross:+.1f} points on average over the base "
             f"(paper: {PAPER_CROSS_FAMILY_CHANGE:+.2f}, from -5.3 to +15.9).")
    return (f"World regime (the paper's: base partly solves each family, experts best on their own, the mean merge "
            f"keeping >= 50% of the experts' gain): {verdict}. Mean-merge retention of each expert's gain: {ret}.{above}"
            f"{other}")


def write_report(out: Path, report: dict, runs: dict[str, Path]) -> dict[str, Path]:
    tasks = report["tasks"]
    t1, t2 = method_rows(report["table1"], tasks), method_rows(report["table2"], tasks)
    v = f"{report['variant']} variant, seed {report['seed']}"
    t2_md = (markdown(t2, tasks, f"Mini Table 2: ablations ({v})") if t2 else
             f"### Mini Table 2: ablations ({v})\n\nNot run (`--tables 1`: Table 1 only).\n")
    t1_title = (f"Mini Table 1, only the rows the regime needs (`--tables 2`; test split; {v})"
                if report.get("tables") == "2" else f"Mini Table 1 (test split; {v})")
    md = markdown(t1, tasks, t1_title) + "\n" + t2_md
    paired = {name: paired_markdown(tab, f"Mini {name.replace('table', 'Table ')}: CycleQD against each row, "
                                         "paired on the test instances")
              for name, tab in (report.get("paired") or {}).items()}
    md += "".join("\n" + p for p in paired.values())
    md += "\n" + regime_text(report.get("regime"), tasks) + "\n"
    kinds_md = kinds_markdown(report.get("kinds") or {}, COLUMNS)
    md += ("\n" + kinds_md) if kinds_md else ""
    written = {"md": out / "tables.md", "t1csv": out / "table1.csv", "t2csv": out / "table2.csv",
               "json": out / "report.json", "html": out / "index.html"}
    atomic_write_bytes(written["md"], md.encode())
    atomic_write_bytes(written["t1csv"], csv_text(t1, tasks).encode())
    atomic_write_bytes(written["t2csv"], csv_text(t2, tasks).encode())
    atomic_write_json(written["json"], {**report, "table1_rows": t1, "table2_rows": t2}, indent=1)

    main_run = runs[report.get("cycleqd_row") or list(runs)[-1]]
    # a joined report (leaderboards/mini_sittings.py) may point at a committed copy that kept no snapshots
    maps = emit_run(main_run) if (main_run / "snapshots").is_dir() else {}
    imgs = "".join(_img(p.read_bytes()) for k, p in sorted(maps.items()) if k.startswith("heatmap:"))
    if not imgs and report.get("sittings"):
        imgs = "<p>In each sitting's page: " + ", ".join(
            f"{html.escape(k)}: <code>{html.escape(v)}</code>" for k, v in report["sittings"].items()) + ".</p>"

    def html_table(rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["Method", *[COLUMNS.get(t, t) for t in tasks], "Avg"])
        body = "".join("<tr>" + f"<td>{html.escape(r['method'])}</td>" +
                       "".join(f"<td>{fmt_percent(r[t])}</td>" for t in [*tasks, "avg"]) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    sp = report.get("speed", {})
    tm = report["timings"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>CycleQD mini world</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}img{{max-width:100%}}</style>
</head><body><h1>CycleQD on the mini world</h1>
<p>{html.escape(v)}. Scores in % on the test split. Building the world took {tm.get('build_world', 0):.0f} s,
baselines {tm.get('baselines', 0):.0f} s, learned coefficients (CMA-ES / NSGA-II / policy gradient)
{tm.get('cmaes', 0):.0f} / {tm.get('nsga2', 0):.0f} / {tm.get('pg', 0):.0f} s, the CycleQD runs
{tm.get('cycleqd_runs', 0):.0f} s (total {tm.get('total', 0):.0f} s); CycleQD speed:
{sp.get('generations_per_hour') or 0:.0f} generations per hour.</p>
<p>{html.escape(regime_text(report.get("regime"), tasks))}</p>
<h2>Table 1</h2>{html_table(t1)}{_img(bars_figure(t1, tasks))}
<h2>Table 2: ablations</h2>{html_table(t2) if t2 else "<p>Not run (<code>--tables 1</code>: Table 1 only).</p>"}
<h2>Paired comparisons</h2>{"".join(f"<pre>{html.escape(p)}</pre>" for p in paired.values()) or "<p>None.</p>"}
{f"<h2>By question kind</h2><pre>{html.escape(kinds_md)}</pre>" if kinds_md else ""}
<h2>Progress</h2>{_img(progress_figure(runs))}
<h2>Elite maps (CycleQD run, last generation)</h2>{imgs}
</body></html>"""
    atomic_write_bytes(written["html"], page.encode())
    return written
