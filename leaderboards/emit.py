"""Leaderboards from a run directory: Markdown, CSV and JSON tables, elite-map heatmaps, a progress plot.

Scores are fractions in [0, 1] in every file a program reads (JSON, CSV); the Markdown table, which a
person reads, prints percentages.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from harness.runner.checkpoint import atomic_write_bytes, atomic_write_json, read_json


def _rows(results: dict) -> list[dict]:
    """Flat rows: model, then <split>/<task> and <split>/avg columns."""
    out = []
    for r in results["rows"]:
        row = {"model": r["model"], "model_id": r["model_id"]}
        for sp in results["splits"]:
            scores = r.get(sp)
            for t in results["tasks"] + ["avg"]:
                row[f"{sp}/{t}"] = None if scores is None else scores[t]
        out.append(row)
    return out


def markdown_table(results: dict) -> str:
    rows = _rows(results)
    cols = [c for c in rows[0] if c not in ("model", "model_id")]
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        cells = ["n/a" if r[c] is None else f"{100 * r[c]:.1f}" for c in cols]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(results: dict) -> str:
    rows = _rows(results)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def snapshot_paths(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / "snapshots").glob("gen_*.json"))


def heatmap(archive: dict, out_path: Path, title: str) -> None:
    """Elite map of one archive: quality per cell over its (first two) behaviour axes."""

    axes = archive["behavior_tasks"]
    bins = archive["bins"]
    dims = max(1, min(2, len(axes)))
    grid = np.full((bins,) * dims, np.nan)
    for e in archive["elites"]:
        cell = tuple(e["cell"][:dims])
        if np.isnan(grid[cell]) or e["quality"] > grid[cell]:
            grid[cell] = e["quality"]  # with > 2 axes: the best over the hidden ones
    if dims == 1:
        grid = grid[None, :]
    fig, ax = plt.subplots(figsize=(4.6, 4.0) if dims == 2 else (5, 1.6))
    im = ax.imshow(grid.T if dims == 2 else grid, origin="lower", cmap="viridis", vmin=0.0,
                   vmax=max(1e-9, np.nanmax(grid)) if np.isfinite(grid).any() else 1.0, aspect="auto")
    # ticks at bin edges, labelled with the behaviour score there (cells span [edge_i, edge_i+1])
    ticks = np.linspace(-0.5, bins - 0.5, 6)

    def label_axis(set_ticks, set_labels, set_label, task):
        lo, hi = archive["bounds"][task]
        set_ticks(ticks)
        set_labels([f"{lo + (t + 0.5) / bins * (hi - lo):.2f}" for t in ticks])
        set_label(f"score on {task}")

    label_axis(ax.set_xticks, ax.set_xticklabels, ax.set_xlabel, axes[0])
    if dims == 2:
        label_axis(ax.set_yticks, ax.set_yticklabels, ax.set_ylabel, axes[1])
    else:
        ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=f"quality: {archive['task']}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out_path, buf.getvalue())


def progress_plot(run_dir: Path, out_path: Path) -> bool:
    """Best quality and coverage per archive against generation, from the snapshots."""
    snaps = snapshot_paths(run_dir)
    if not snaps:
        return False

    gens, best, cov = [], {}, {}
    for p in snaps:
        s = read_json(p)
        gens.append(s["generation"])
        for t, a in s["archives"].items():
            best.setdefault(t, []).append(a["stats"]["obj_max"])
            cov.setdefault(t, []).append(a["stats"]["coverage"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for t in best:
        a1.plot(gens, best[t], label=t)
        a2.plot(gens, cov[t], label=t)
    a1.set(xlabel="generation", ylabel="best quality (opt split)", title="archive max")
    a2.set(xlabel="generation", ylabel="coverage", title="archive coverage")
    a1.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out_path, buf.getvalue())
    return True


def emit_run(run_dir: str | Path, generation: int | None = None) -> dict[str, Path]:
    """Write the leaderboard files and plots into ``run_dir/leaderboard``; returns what was written.

    ``generation`` picks the archive snapshot for the heatmaps (default: the last one).
    """
    run_dir = Path(run_dir)
    out = run_dir / "leaderboard"
    written: dict[str, Path] = {}
    results_path = run_dir / "results.json"
    if results_path.exists():
        results = read_json(results_path)
        atomic_write_bytes(out / "leaderboard.md", markdown_table(results).encode())
        atomic_write_bytes(out / "leaderboard.csv", csv_table(results).encode())
        atomic_write_json(out / "leaderboard.json", {"tasks": results["tasks"], "splits": results["splits"],
                                                     "rows": _rows(results)}, indent=1)
        written.update(md=out / "leaderboard.md", csv=out / "leaderboard.csv", json=out / "leaderboard.json")
    snaps = snapshot_paths(run_dir)
    if snaps:
        if generation is None:
            snap_path = snaps[-1]
        else:
            snap_path = run_dir / "snapshots" / f"gen_{generation:06d}.json"
            if not snap_path.exists():
                raise FileNotFoundError(f"{snap_path}: no archive snapshot for generation {generation}")
        snap = read_json(snap_path)
        for t, a in snap["archives"].items():
            p = out / f"elite_map_{t}_gen{snap['generation']:06d}.png"
            heatmap(a, p, f"archive {t}, generation {snap['generation']} "
                          f"({a['stats']['num_elites']} elites, {a['stats']['coverage']:.0%})")
            written[f"heatmap:{t}"] = p
        if progress_plot(run_dir, out / "progress.png"):
            written["progress"] = out / "progress.png"
    if not written:
        raise FileNotFoundError(f"{run_dir}: no results.json and no snapshots: is this a run directory?")
    return written


def main_table(run_dir: str | Path) -> str:
    return markdown_table(read_json(Path(run_dir) / "results.json"))


__all__ = ["emit_run", "markdown_table", "csv_table", "heatmap", "main_table"]


# -- method x task tables (leaderboards of methods: mini Table 1 / 2, declarative tables) ----------------------
def fmt_percent(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def method_rows(table: dict, tasks: list[str]) -> list[dict]:
    """{label: {task: score}} -> rows with the label as ``method`` and the average over ``tasks``."""
    return [{"method": name, **{t: s.get(t) for t in tasks}, "avg": sum(s[t] for t in tasks) / len(tasks)}
            for name, s in table.items()]


def percent_table(rows: list[dict] | dict, tasks: list[str], title: str, columns: dict | None = None) -> str:
    """A Markdown table in percent, one row per method, one column per task and the average."""
    rows = method_rows(rows, tasks) if isinstance(rows, dict) else rows
    head = ["Method"] + [(columns or {}).get(t, t) for t in tasks] + ["Avg"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["method"]] + [fmt_percent(r[t]) for t in tasks] + [fmt_percent(r["avg"])]) + " |")
    return "\n".join(lines) + "\n"
