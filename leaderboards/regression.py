"""Regression check of a mini-world report against a committed reference.

Scores: every cell of Table 1 and Table 2 within ``cell_tol`` of the reference and every average within
``avg_tol`` (the experiment is seeded and deterministic on one machine; another CPU may round a
matmul differently and flip a greedy token, so the tolerances allow a couple of samples per cell).
Speed (only with ``speed_factor``): seconds per CycleQD child divided by a fixed reference operation timed
in the same run may not exceed ``speed_factor`` times the reference ratio. It is off by default, so
``--check`` (and CI) compares scores only: the ratio sets a two-thread model's generation, which spins
against other jobs, over a one-thread yardstick, across two runs made at different times, so a busy
machine can fail it by chance. Speed is held by the in-process pytest-benchmark ratios in
``tests/benchmarks`` instead.
"""

from __future__ import annotations

import time

import torch

DEFAULT_TOLERANCES = {"cell_tol": 0.10, "avg_tol": 0.05, "speed_factor": 2.0}


def reference_operation_seconds(repeats: int = 5) -> float:
    """A fixed CPU workload (matrix products and interpreter work): the yardstick for speed ratios.

    Single-threaded, best of ``repeats``: with torch's default threads the products spin against any
    other job on a small machine, and one reference measured beside other jobs came out 14x slower than
    the same machine quiet (0.56 vs 0.04 s), which made the speed check meaningless."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(384, 384, generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best = float("inf")
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            x = a
            for _ in range(40):
                x = torch.tanh(x @ a)
            sum(i * i for i in range(200_000))
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return best


def compare(report: dict, reference: dict, *, cell_tol: float = DEFAULT_TOLERANCES["cell_tol"],
            avg_tol: float = DEFAULT_TOLERANCES["avg_tol"],
            speed_factor: float | None = None) -> list[str]:
    """Readable differences (empty list = within tolerance)."""
    problems: list[str] = []
    for key in ("variant", "seed"):
        if report.get(key) != reference.get(key):
            problems.append(f"{key}: run has {report.get(key)!r}, reference has {reference.get(key)!r}")
    kinds = [r.get("tables") == "regime" for r in (report, reference)]  # references before `tables`: "1+2"
    if any(kinds):
        if not all(kinds):
            return [*problems, "tables: a regime report (--tables regime) compares only with another regime report"]
        # two ``--tables regime`` reports: every pooled score within the cell tolerance
        return [*problems, *row_differences(report["scores"], reference["scores"], cell_tol + 1e-9,
                                            tasks=reference["tasks"], prefix="regime: ")]
    tasks = reference["tasks"]
    for table in ("table1", "table2"):
        ref_rows, got_rows = reference[table], report.get(table, {})

        def canon(name: str) -> str:  # learned hyper-parameters / weights are part of some labels
            return name.split(" (")[0] if name.startswith(("Merge: TIES", "Merge: DARE", "Merge: task arithmetic", "Learned")) else name

        got_by = {canon(k): v for k, v in got_rows.items()}
        for name, ref in ref_rows.items():
            got = got_by.get(canon(name))
            if got is None:
                problems.append(f"{table}: row {name!r} is missing")
                continue
            for t in tasks:
                d = got[t] - ref[t]
                if abs(d) > cell_tol + 1e-9:
                    problems.append(f"{table}: {name} / {t}: {100 * got[t]:.1f} vs reference {100 * ref[t]:.1f} "
                                    f"({100 * d:+.1f} points, tolerance {100 * cell_tol:.0f})")
            ga, ra = sum(got[t] for t in tasks) / len(tasks), sum(ref[t] for t in tasks) / len(tasks)
            if abs(ga - ra) > avg_tol + 1e-9:
                problems.append(f"{table}: {name} / avg: {100 * ga:.1f} vs reference {100 * ra:.1f} "
                                f"({100 * (ga - ra):+.1f} points, tolerance {100 * avg_tol:.0f})")
    rs, gs = reference.get("speed", {}), report.get("speed", {})
    if speed_factor is not None and rs.get("child_to_reference_op") and gs.get("child_to_reference_op"):
        ratio = gs["child_to_reference_op"] / rs["child_to_reference_op"]
        if ratio > speed_factor:
            problems.append(f"speed: a CycleQD child costs {gs['child_to_reference_op']:.1f} reference operations, "
                            f"the reference {rs['child_to_reference_op']:.1f} ({ratio:.2f}x slower, limit {speed_factor}x)")
    return problems


def row_differences(got_rows: dict, ref_rows: dict, tol: float, *, tasks=None, prefix: str = "",
                    show=lambda v: f"{100 * v:.1f}") -> list[str]:
    """Readable differences between two {row: {task: score}} tables: a reference row the run lacks, and
    every cell (of ``tasks``, default: the reference row's) further than ``tol`` from the reference."""
    out = []
    for name, ref in ref_rows.items():
        got = got_rows.get(name)
        if got is None:
            out.append(f"{prefix}row {name!r} is missing")
            continue
        out += [f"{prefix}{name} / {t}: {show(got[t])} vs reference {show(ref[t])}"
                for t in (tasks or ref) if abs(got[t] - ref[t]) > tol]
    return out


def compare_table4(report: dict, reference: dict, *, score_tol: float = 0.10, sim_tol: float = 0.02) -> list[str]:
    """The SAM Table 4 rows: normalised scores within ``score_tol``, similarities within ``sim_tol``."""
    problems: list[str] = []
    for key in ("variant", "seed"):
        if report.get(key) != reference.get(key):
            problems.append(f"{key}: run has {report.get(key)!r}, reference has {reference.get(key)!r}")
    got = {r["pair"]: r for r in report.get("table4", [])}
    for ref in reference["table4"]:
        r = got.get(ref["pair"])
        if r is None:
            problems.append(f"table4: pair {ref['pair']} is missing")
            continue
        for col, tol in (("score_a", score_tol), ("score_b", score_tol), ("avg", score_tol),
                         ("mean_merge_avg", score_tol), ("similarity", sim_tol)):
            a, b = r.get(col), ref.get(col)
            if (a is None) != (b is None) or (a is not None and abs(a - b) > tol + 1e-9):
                problems.append(f"table4: {ref['pair']} / {col}: {a} vs reference {b} (tolerance {tol})")
    return problems
