"""The mini-world experiment: mini Table 1 and Table 2 from one call (``cycleqd mini``).

Table 1 (test split, per family and average): the base, the three experts, the all-data fine-tune, the
mean of task vectors, TIES and DARE (their density / drop rate picked on the opt split), task-arithmetic
coefficients learned by CMA-ES on the opt split, and CycleQD. Table 2: the paper's five ablation rows,
each a full CycleQD run of ``configs/mini.yaml`` with the same budget; its last row *is* Table 1's CycleQD.

Everything is resumable: each CycleQD run is a run directory (resumed if a checkpoint exists), each
baseline row and each CMA-ES evaluation is saved as soon as it is scored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness.runner.checkpoint import atomic_write_json, read_json

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "mini.yaml"
FAMILIES = ("code", "os", "db")

VARIANTS: dict[str, dict[str, Any]] = {
    # ``limit``: eval instances per family (split evenly into opt / test); ``generations`` per CycleQD run;
    # ``cmaes_evals``: opt-split evaluations for each learned-coefficient searcher (CMA-ES, NSGA-II, PG).
    # full: what fits 45 minutes here after the world (a child costs ~10-13 s on 60 opt instances per family)
    "quick": {"limit": 40, "generations": 12, "progress_every": 4, "cmaes_evals": 12},
    "full": {"limit": None, "generations": 20, "progress_every": 10, "cmaes_evals": 18},
}
# `cycleqd mini --engine NAME`: config overrides that put every LLM task on that engine (vLLM: float32 as the
# HF engine, a KV cache sized for tiny models instead of most of the machine's memory)
ENGINES: dict[str, list[str]] = {
    "hf": [],
    "vllm": ["engine.kind=vllm", "engine.dtype=float32", "engine.vllm_args.kv_cache_memory_bytes=268435456"],
}
# Table 2 (paper: QD w/o cycle, + cycle, + Gaussian mutation, SVD mutation instead, + elite sampling)
ABLATIONS = [
    ("QD (no cycle, no mutation, random sampling)", ["qd.mode=independent", "qd.mutation=none", "qd.sampler=random"]),
    ("+ cycle", ["qd.mode=cyclic", "qd.mutation=none", "qd.sampler=random"]),
    ("+ Gaussian mutation", ["qd.mode=cyclic", "qd.mutation=gaussian", "qd.sampler=random"]),
    ("SVD mutation instead", ["qd.mode=cyclic", "qd.sampler=random"]),
    ("+ elite sampling (CycleQD)", ["qd.mode=cyclic", "qd.sampler=elite"]),
]


def _avg(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores)


class RowBook:
    """Scored rows saved as they come (a killed experiment keeps them)."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, Any] = read_json(path) if path.exists() else {}

    def get(self, key: str, compute):
        if key not in self.rows:
            self.rows[key] = compute()
            atomic_write_json(self.path, self.rows, indent=1)
        return self.rows[key]


def run_config(variant: dict, seed: int, overrides: list[str], world_params: dict | None = None):
    from harness.config import load_config

    cfg = load_config(CONFIG, [f"seed={seed}", f"qd.generations={variant['generations']}",
                               f"runner.progress_every={variant['progress_every']}", "runner.final_rows=final",
                               *overrides])
    if variant["limit"]:
        for t in cfg.tasks:
            t.params.limit = int(variant["limit"])
    if world_params:
        cfg.model.builder.params = {**cfg.model.builder.params, **world_params}
    if variant.get("bounds"):  # explicit behaviour ranges instead of the paper's from expert scores
        cfg.qd.bounds = {t.name: list(variant["bounds"]) for t in cfg.tasks}
    return cfg


def cycleqd_run(variant: dict, seed: int, overrides: list[str], run_dir: Path, progress: bool,
                world_params: dict | None = None) -> dict:
    """One CycleQD run of the mini config: resumed where it stopped, reused when finished."""
    from harness.runner.runner import CHECKPOINT, RESULTS, Runner

    if (run_dir / RESULTS).exists():
        return read_json(run_dir / RESULTS)
    if (run_dir / CHECKPOINT).exists():
        runner = Runner.resume(run_dir)
    else:
        cfg = run_config(variant, seed, overrides, world_params)
        cfg.runner.progress = progress
        runner = Runner.create(cfg, run_dir, overwrite=True)
    return runner.run()


def test_scores(results: dict, label: str = "cycleqd") -> dict[str, float]:
    row = next(r for r in results["rows"] if r["model"] == label)
    return {k: v for k, v in row[results["splits"][1]].items() if k != "avg"}


def run_experiment(variant_name: str = "quick", seed: int = 0, out_dir: Path | None = None,
                   progress: bool = True, world_params: dict | None = None, variant: dict | None = None,
                   engine: str = "hf") -> dict:
    """Build the world if missing, score every Table 1 row and run the Table 2 CycleQD runs; write the
    report into ``out_dir``. ``variant`` (a dict like VARIANTS') overrides the named one (tests)."""
    import torch

    from domains.mini.scoring import Scorer, load_state_dict, merge_models
    from domains.mini.world import ensure_world
    from harness.engines import engine_seconds
    from harness.merging.generalized import get_merge_method

    if variant is None and variant_name not in VARIANTS:
        raise ValueError(f"mini: unknown variant {variant_name!r} (known: {sorted(VARIANTS)})")
    if engine not in ENGINES:
        raise ValueError(f"mini: unknown engine {engine!r} (known: {sorted(ENGINES)})")
    variant = dict(variant or VARIANTS[variant_name])
    suffix = "" if engine == "hf" else f"-{engine}"
    out = Path(out_dir or REPO / "runs" / f"mini-{variant_name}-seed{seed}{suffix}")
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    from domains.mini.regression import reference_operation_seconds

    ref_op = reference_operation_seconds()
    t0 = time.perf_counter()
    world = ensure_world(progress=progress, **(world_params or {}))
    t_build = time.perf_counter() - t0
    torch.set_num_threads(2)

    from omegaconf import OmegaConf

    cfg = run_config(variant, seed, ENGINES[engine])
    tasks = [{"name": t.name, "domain": t.domain, "params": dict(t.params)} for t in cfg.tasks]
    names = [t["name"] for t in tasks]
    scorer = Scorer(tasks, data_root=world["data_root"], base_dir=world["base"], seed=seed, run_dir=out / "scoring",
                    engine=OmegaConf.to_container(cfg.engine))
    book = RowBook(out / "rows.json")
    sds = {k: load_state_dict(world[k]) for k in ("base", *FAMILIES, "all_data")}
    experts = [sds[f] for f in FAMILIES]
    timings: dict[str, float] = {"build_world": t_build}

    # -- Table 1 baselines ---------------------------------------------------------------------------
    t1 = time.perf_counter()
    say("mini: scoring the base, experts and merges ...", flush=True)
    table1: dict[str, dict[str, float]] = {}
    for label, key in [("Base model", "base"), ("Expert: code", "code"), ("Expert: OS", "os"),
                       ("Expert: DB", "db"), ("Fine-tuning on all data", "all_data")]:
        table1[label] = book.get(f"test:{key}", lambda k=key: scorer.score(sds[k], "test"))
    table1["Merge: mean of task vectors"] = book.get("test:mean", lambda: scorer.score(
        merge_models(sds["base"], experts, get_merge_method("mean").spec()), "test"))
    for method, grid in (("ties", [{"density": 0.2}, {"density": 0.5}]),
                         ("dare_linear", [{"drop_p": 0.5}, {"drop_p": 0.9}])):
        picks = []
        for g in grid:
            label = f"{method}:{json.dumps(g, sort_keys=True)}"
            sd_of = lambda g=g: merge_models(sds["base"], experts, get_merge_method(method).spec(**g), seed=seed)
            picks.append((_avg(book.get(f"opt:{label}", lambda: scorer.score(sd_of(), "opt"))), label, sd_of))
        best_opt, label, sd_of = max(picks, key=lambda p: p[0])
        name = {"ties": "TIES", "dare_linear": "DARE"}[method]
        table1[f"Merge: {name} ({label.split(':', 1)[1]})"] = book.get(f"test:{label}", lambda: scorer.score(sd_of(), "test"))
    timings["baselines"] = time.perf_counter() - t1

    # -- learned merge coefficients on the opt split: CMA-ES, NSGA-II, policy gradient ------------------
    def coef_model(x):
        return merge_models(sds["base"], experts, get_merge_method("task_arithmetic").spec(weights=tuple(float(v) for v in x)))

    def opt_scores(tag: str, x) -> dict[str, float]:
        return book.get(f"{tag}:" + ",".join(f"{v:.6f}" for v in x), lambda: scorer.score(coef_model(x), "opt"))

    for tag, label, search in (("cmaes", "CMA-ES", _cmaes), ("nsga2", "NSGA-II", _nsga2),
                               ("pg", "policy gradient", _policy_gradient)):
        t1 = time.perf_counter()
        say(f"mini: {label} over task-arithmetic coefficients ...", flush=True)
        xbest = search(lambda x, tag=tag: opt_scores(tag, x), names, variant["cmaes_evals"], seed)
        table1[f"Learned coefficients: {label} (w={[round(v, 2) for v in xbest]})"] = book.get(
            f"test:{tag}", lambda xbest=xbest: scorer.score(coef_model(xbest), "test"))
        timings[tag] = time.perf_counter() - t1
    scorer.close()

    # -- CycleQD and Table 2 ----------------------------------------------------------------------------
    table2, runs = {}, {}
    t_evolve = 0.0
    for i, (label, overrides) in enumerate(ABLATIONS):
        say(f"mini: CycleQD run {i + 1}/{len(ABLATIONS)}: {label} ...", flush=True)
        t1 = time.perf_counter()
        # one score cache for the five runs: the experts (and any repeated model) are scored once
        res = cycleqd_run(variant, seed, [*ENGINES[engine], f"runner.score_cache={out / 'score_cache'}", *overrides],
                          out / f"qd_{i}", progress, world_params)
        t_evolve += time.perf_counter() - t1
        runs[label] = out / f"qd_{i}"
        table2[label] = test_scores(res)
    table1["CycleQD"] = table2[ABLATIONS[-1][0]]
    timings["cycleqd_runs"] = t_evolve
    timings["total"] = time.perf_counter() - t0

    report = {"honesty": honesty(table1, names), "variant": variant_name, "seed": seed, "engine": engine, "out_dir": str(out), "variant_params": variant, "tasks": names,
              "world": {"dir": str(world["dir"]), "recipe": read_json(world["dir"] / "recipe.json")},
              "table1": table1, "table2": table2, "timings": timings,
              "speed": speed_report(list(runs.values()), engine_seconds(), ref_op),
              "environment": read_json(runs[ABLATIONS[-1][0]] / "environment.json")}
    from domains.mini.report import write_report

    write_report(out, report, runs)
    return report


# -- learned-coefficient searchers: each gets ``evals`` opt-split evaluations of 3 task-arithmetic weights,
# starts at the mean merge (1/3 each) with step 0.3, stays within [-1, 2], and returns the weights to test
X0, STEP, BOUNDS, POP = [1 / 3] * 3, 0.3, (-1.0, 2.0), 6


def _cmaes(score, tasks, evals: int, seed: int) -> list[float]:
    """CMA-ES on the average opt score; the best evaluated vector."""
    import cma

    es = cma.CMAEvolutionStrategy(X0, STEP, {"seed": seed + 1, "popsize": POP, "verbose": -9, "maxfevals": evals,
                                             "bounds": list(BOUNDS)})
    while not es.stop():
        xs = es.ask()
        es.tell(xs, [-_avg(score(x)) for x in xs])
    return [float(v) for v in es.result.xbest]


def _nsga2(score, tasks, evals: int, seed: int) -> list[float]:
    """NSGA-II with the per-task opt scores as objectives; from its first front, the best average."""
    from harness.search import NSGA2

    s = NSGA2(x0=X0, bounds=BOUNDS, pop_size=POP, max_evals=evals, seed=seed + 1, sigma0=STEP)
    while not s.stop():
        xs = s.ask()
        s.tell(xs, [[score(x)[t] for t in tasks] for x in xs])
    return [float(v) for v in s.best()[0]]


def _policy_gradient(score, tasks, evals: int, seed: int) -> list[float]:
    """A Gaussian policy trained by the policy gradient on the average opt score; the policy's mean."""
    from harness.search import GaussianPolicyGradient

    pg = GaussianPolicyGradient(x0=X0, bounds=BOUNDS, batch=POP, max_evals=evals, seed=seed + 1, sigma0=STEP)
    while not pg.stop():
        xs = pg.ask()
        pg.tell(xs, [_avg(score(x)) for x in xs])
    return [float(v) for v in pg.best()]


def honesty(table1: dict, tasks: list[str]) -> dict:
    """The world's preconditions, measured: each expert best on its own family and weak elsewhere, the
    base low everywhere, the mean merge keeping some of every skill but below each expert on its own."""
    own = {t: table1[f"Expert: {lab}"][t] for t, lab in zip(tasks, ("code", "OS", "DB"))}
    other = {t: max(table1[f"Expert: {lab}"][u] for u in tasks if u != t) for t, lab in zip(tasks, ("code", "OS", "DB"))}
    mean = table1["Merge: mean of task vectors"]
    return {"expert_own": own, "expert_max_on_other_families": other,
            "base_max": max(table1["Base model"].values()),
            "mean_merge": mean, "mean_merge_below_each_expert": all(mean[t] < own[t] for t in tasks),
            "holds": all(own[t] >= 0.6 for t in tasks) and all(v <= 0.3 for v in other.values())
            and max(table1["Base model"].values()) <= 0.3 and all(mean[t] < own[t] for t in tasks)}


def speed_report(run_dirs: list[Path], engine_s: dict[str, float], reference_op_s: float) -> dict:
    """Generations per hour of CycleQD and where a child's time goes, over every child the runs evaluated
    (children served by the score cache are left out); the cost of a child in units of a fixed reference
    operation timed in this process (for regression)."""
    hist = [h for d in run_dirs for h in read_json(d / "checkpoint.json")["qd"]["history"]
            if h.get("kind") == "child" and h.get("timings")]
    if not hist:
        return {}
    per: dict[str, float] = {}
    for h in hist:
        for k, v in h["timings"].items():
            per[k] = per.get(k, 0.0) + v
    n = len(hist)
    mean = {k: v / n for k, v in per.items()}
    total = sum(mean.values())
    return {"children": n, "seconds_per_child": total, "generations_per_hour": 3600 / total if total else None,
            "mean_seconds": mean, "reference_op_s": reference_op_s,
            "child_to_reference_op": total / reference_op_s if reference_op_s else None,
            "engine_seconds_whole_experiment": engine_s}
