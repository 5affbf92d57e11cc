"""A declarative leaderboard: any run config, any registered methods, one table (``cycleqd leaderboard
table --config FILE``).

The file names a run config (its world, tasks and engine), the modules to import for plugin methods, and
the rows::

    run_config: configs/vector_world.yaml      # relative to this file, or absolute
    overrides: [qd.generations=30]             # applied to the run config
    plugins: [my_methods]                      # modules whose @METHODS.register add methods
    budget: 12                                 # opt-split evaluations a searcher may spend
    rows:
      - {label: Mean merge, method: merge, params: {method: mean}}
      - {label: "Task arithmetic, tuned lambda", method: ta_lambda, params: {grid: [0.5, 1.0, 1.5]}}
      - {label: CycleQD, method: cycleqd, params: {overrides: [], run: qd}}

Every row is a registered method (``harness.registry.METHODS``) run on the same evaluator, so the rows are
comparable; the table is written as ``table.md`` and ``report.json`` in the output directory.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.config import load_config
from harness.errors import ConfigError
from harness.leaderboard import Leaderboard
from harness.registry import METHODS, import_plugins
from harness.runner.checkpoint import atomic_write_bytes, atomic_write_json
from harness.runner.worker import Evaluator
from harness.store.recipes import expert_id
from leaderboards.emit import percent_table
from leaderboards.methods import MethodContext, RowBook
from leaderboards.regression import row_differences

KEYS = {"run_config", "overrides", "plugins", "budget", "rows"}


def load_table_spec(path: Path) -> dict:
    try:
        spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, OmegaConfBaseException) as exc:
        raise ConfigError(f"{path}: cannot read the leaderboard file ({str(exc).splitlines()[0]})") from None
    if not isinstance(spec, dict) or set(spec) - KEYS or "run_config" not in spec or not spec.get("rows"):
        raise ConfigError(f"{path}: a leaderboard file has run_config and rows (and optionally {sorted(KEYS)})")
    import_plugins(spec.get("plugins", []), f"{path}: plugins")
    for i, row in enumerate(spec["rows"]):
        if not isinstance(row, dict) or set(row) - {"label", "method", "params"} or "method" not in row:
            raise ConfigError(f"{path}: rows.{i}: needs {{label, method, params}}")
        METHODS.get(row["method"])  # an unknown method is an error before anything runs
    return spec


def run_table(spec_path: Path, seed: int, out_dir: Path | None, progress: bool) -> dict:
    spec_path = Path(spec_path)
    spec = load_table_spec(spec_path)
    run_cfg = Path(spec["run_config"])
    run_cfg = run_cfg if run_cfg.is_absolute() else (spec_path.parent / run_cfg)
    overrides = [f"seed={seed}", *spec.get("overrides", [])]
    cfg = load_config(run_cfg, overrides)
    out = Path(out_dir or Path("runs") / f"table-{spec_path.stem}-seed{seed}")
    out.mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator(OmegaConf.to_container(cfg, resolve=True), out / "scoring")
    tasks = [t.name for t in cfg.tasks]
    ctx = MethodContext(evaluator=evaluator, experts=tuple(expert_id(e) for e in sorted(evaluator.store.expert_dirs)),
                        tasks=tasks, seed=seed, budget=int(spec.get("budget", 12)), book=RowBook(out / "rows.json"),
                        out_dir=out, progress=progress, run_config=lambda o: load_config(run_cfg, [*overrides, *o]))
    table, seconds = {}, {}
    try:
        for row in spec["rows"]:
            t0 = time.perf_counter()
            res = METHODS.get(row["method"])(ctx, **dict(row.get("params") or {}))
            label = row.get("label") or row["method"]
            table[f"{label} ({res.detail})" if res.detail else label] = res.test
            seconds[label] = time.perf_counter() - t0
    finally:
        evaluator.close(discard_models=True)
    report = {"variant": spec_path.stem, "seed": seed, "out_dir": str(out), "tasks": tasks, "table": table,
              "seconds": seconds}
    atomic_write_bytes(out / "table.md", percent_table(table, tasks, f"{spec_path.stem} (test split, seed {seed})").encode())
    atomic_write_json(out / "report.json", report, indent=1)
    return report


def compare_tables(report: dict, reference: dict, tol: float = 0.10) -> list[str]:
    return row_differences(report["table"], reference["table"], tol, show=lambda v: f"{v:.3f}")


def _run(variant: str, seed: int, out_dir: Path | None, progress: bool, config: str = "") -> dict:
    if not config:
        raise ConfigError("leaderboard table: give the leaderboard file with --config FILE")
    return run_table(Path(config), seed, out_dir, progress)


LEADERBOARD = Leaderboard(
    name="table", description="a declarative leaderboard: rows of registered methods on any run config",
    run=_run, compare=compare_tables, summary_file="table.md",
    options={"config": ((), "", "the leaderboard file (run_config, rows, plugins)")})
