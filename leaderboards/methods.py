"""Methods a leaderboard compares: baselines, learned-coefficient searchers and CycleQD itself.

A method is a function ``method(ctx, **params) -> MethodResult``, registered in
``harness.registry.METHODS`` (this module's names are listed there lazily; a plugin adds its own with
``@METHODS.register("name")``, see docs/adding-a-method.md). It may spend evaluations on the opt split
(``ctx.score(model_id, "opt")``) to choose its model, and returns that model's scores on the test split.
Every model is a recipe in the evaluator's store and is scored by the same ``Evaluator`` as a CycleQD
run's children, so a model scores the same here and in a run; every evaluation is saved as it comes
(``RowBook``), so a killed leaderboard resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.errors import HarnessError
from harness.merging.safetensors_io import CheckpointReader
from harness.registry import MERGE_METHODS
from harness.runner.checkpoint import atomic_write_json, read_json
from harness.runner.runner import CHECKPOINT, RESULTS, Runner
from harness.runner.worker import Evaluator
from harness.search import NSGA2, GaussianPolicyGradient
from harness.store.recipes import MergeRecipe


class RowBook:
    """Scored rows saved as they come (a killed leaderboard keeps them)."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, Any] = read_json(path) if path.exists() else {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.rows:
            self.rows[key] = compute()
            atomic_write_json(self.path, self.rows, indent=1)
        return self.rows[key]

    def put(self, key: str, value: Any) -> None:
        self.rows[key] = value
        atomic_write_json(self.path, self.rows, indent=1)


@dataclass
class MethodContext:
    """What a method may use: the evaluator (store + domains), the experts' model ids, the tasks, the seed,
    the evaluation budget of a searcher, models of the world that are not experts (``extra_models``:
    name -> HF directory), CycleQD run settings (``run_config``: overrides -> config), a row book and a
    book of the test rows' per-instance verdicts (``verdicts``: for paired comparisons)."""

    evaluator: Evaluator
    experts: tuple[str, ...]
    tasks: list[str]
    seed: int
    budget: int
    book: RowBook
    out_dir: Path
    extra_models: Mapping[str, Path] = field(default_factory=dict)
    run_config: Callable[[list[str]], Any] | None = None
    progress: bool = False
    verdicts: RowBook | None = None

    def score(self, key: str, model_id: str, split: str) -> dict[str, float]:
        """{task: quality} of a store model on a split, saved under ``split:key``; a rejected evaluation
        (a broken sandbox, a non-finite model) is an error: a baseline row must not read it as a 0."""
        if split == "test":
            return self.tested(key, lambda: self.evaluator.evaluate(model_id, {}, split))
        return self.book.get(f"{split}:{key}", lambda: _scores(self.evaluator.evaluate(model_id, {}, split)))

    def tested(self, key: str, evaluate: Callable[[], dict], expect: Mapping[str, float] | None = None) -> dict[str, float]:
        """A row's test scores, saved under ``test:key`` in the row book, and its per-instance verdicts with
        the scores they came with under the same key in ``verdicts``. ``expect``: scores the caller already
        has (a CycleQD run's own), which the saved row must equal. The model is scored (``evaluate()``)
        when the row is new, or when its verdicts are missing or were saved with other scores (a row from
        before verdicts were kept; a run redone in place); a row scored again must give the saved scores
        exactly, or scoring is not reproducible and no number of this leaderboard can be trusted."""
        full = f"test:{key}"
        have = self.book.rows.get(full)
        if expect is not None:
            if have is not None and dict(have) != dict(expect):
                raise HarnessError(f"leaderboard row {key!r}: {self.book.path} holds {dict(have)}, the run now "
                                   f"says {dict(expect)}: give another --out, or delete {full!r} there")
            have = expect
        kept = self.verdicts.rows.get(full) if self.verdicts is not None else None
        if have is not None and (self.verdicts is None or (kept or {}).get("scores") == dict(have)):
            return self.book.get(full, lambda: dict(have))
        res = evaluate()
        scores = _scores(res)
        if have is not None and scores != dict(have):
            where = f"{self.book.path}" + (" and the run's results" if expect is not None else "")
            raise HarnessError(f"leaderboard row {key!r}: scored {scores} on test now, {dict(have)} in {where}: "
                               f"scoring is not reproducible (give another --out to start over)")
        if self.verdicts is not None:
            self.verdicts.put(full, {"scores": scores, "verdicts": res.get("verdicts")})
        return self.book.get(full, lambda: scores)

    def merge(self, spec) -> str:
        """The store id of the experts merged with a generalized-merge spec."""
        return self.evaluator.store.add(MergeRecipe(self.experts, spec))


@dataclass
class MethodResult:
    test: dict[str, float]
    detail: str | None = None  # shown after the row label, e.g. the chosen density or learned weights
    info: dict = field(default_factory=dict)
    key: str | None = None  # the row's test key in the books (``test:KEY``): its verdicts for paired tables


def _scores(res: dict) -> dict[str, float]:
    if res["scores"] is None:
        raise HarnessError(f"leaderboard scoring: {res['error']}")
    return dict(res["scores"])


def avg(scores: Mapping[str, float]) -> float:
    return sum(scores.values()) / len(scores)


# -- baselines ----------------------------------------------------------------------------------------------
def model(ctx: MethodContext, *, model_id: str, key: str) -> MethodResult:
    """A model of the store as it is (the base, an expert)."""
    return MethodResult(ctx.score(key, model_id, "test"), key=key)


def world_model(ctx: MethodContext, *, name: str) -> MethodResult:
    """A model the world built that is not a CycleQD expert (the all-data fine-tune)."""
    return MethodResult(ctx.tested(name, lambda: ctx.evaluator.score_state_dict(read_model(ctx.extra_models[name]), "test")),
                        key=name)


def read_model(path: Path) -> dict:
    """Every tensor of an HF model directory's weights."""
    with CheckpointReader(path) as r:
        return {k: r.read(k) for k in r.keys()}


def merge(ctx: MethodContext, *, method: str, grid: list[dict] | None = None) -> MethodResult:
    """A named merge of the experts; with a grid of parameter settings, the one best on opt."""
    mm = MERGE_METHODS.get(method)
    settings = [{"seed": ctx.seed} | g if "seed" in mm.defaults else dict(g) for g in (grid or [{}])]
    if len(settings) == 1:
        return MethodResult(ctx.score(method, ctx.merge(mm.spec(**settings[0])), "test"), key=method)
    picks = []
    for g, shown in zip(settings, grid or [{}]):
        label = f"{method}:{json.dumps(shown, sort_keys=True)}"
        picks.append((avg(ctx.score(label, ctx.merge(mm.spec(**g)), "opt")), label, g))
    _, label, g = max(picks, key=lambda p: p[0])
    return MethodResult(ctx.score(label, ctx.merge(mm.spec(**g)), "test"), detail=label.split(":", 1)[1], key=label)


def task_arithmetic_lambda(ctx: MethodContext, *, lo: float = 0.25, hi: float = 2.0) -> MethodResult:
    """Task arithmetic with one scale for all experts (theta = base + lambda * sum tau_k), lambda chosen on
    the opt split among ``ctx.budget`` values evenly spaced in [lo, hi] (the searchers' budget): the
    baseline that shows how much of a method's gain plain scaling already gives."""
    ta = MERGE_METHODS.get("task_arithmetic")
    n = max(1, int(ctx.budget))
    grid = [round(lo + (hi - lo) * i / max(1, n - 1), 4) for i in range(n)]
    scored = [(avg(ctx.score(f"ta_lambda:{lam}", ctx.merge(ta.spec(scale=lam)), "opt")), -i, lam)
              for i, lam in enumerate(grid)]
    _, _, lam = max(scored)  # ties: the smaller lambda
    test = ctx.score(f"ta_lambda:{lam}", ctx.merge(ta.spec(scale=lam)), "test")
    return MethodResult(test, detail=f"lambda={lam:g}", info={"lambda": lam}, key=f"ta_lambda:{lam}")


# -- learned task-arithmetic coefficients: each searcher gets ``ctx.budget`` opt-split evaluations, starts at
# the mean merge (1/K each) with step 0.3, stays within [-1, 2], and returns the weights to test -------------
STEP, BOUNDS, POP = 0.3, (-1.0, 2.0), 6


def _coefficient_search(ctx: MethodContext, tag: str, search) -> MethodResult:
    ta = MERGE_METHODS.get("task_arithmetic")

    def model_of(x) -> str:
        return ctx.merge(ta.spec(weights=tuple(float(v) for v in x)))

    def opt_scores(x) -> dict[str, float]:
        return ctx.score(f"{tag}:" + ",".join(f"{v:.6f}" for v in x), model_of(x), "opt")

    x0 = [1 / len(ctx.experts)] * len(ctx.experts)
    xbest = [float(v) for v in search(opt_scores, x0)]
    test = ctx.tested(tag, lambda: ctx.evaluator.evaluate(model_of(xbest), {}, "test"))
    return MethodResult(test, detail=f"w={[round(v, 2) for v in xbest]}", info={"weights": xbest}, key=tag)


def cmaes(ctx: MethodContext) -> MethodResult:
    """CMA-ES on the average opt score; the best evaluated vector."""
    import cma  # optional: the 'mini' extra

    def search(score, x0):
        es = cma.CMAEvolutionStrategy(x0, STEP, {"seed": ctx.seed + 1, "popsize": POP, "verbose": -9,
                                                 "maxfevals": ctx.budget, "bounds": list(BOUNDS)})
        while not es.stop():
            xs = es.ask()
            es.tell(xs, [-avg(score(x)) for x in xs])
        return es.result.xbest

    return _coefficient_search(ctx, "cmaes", search)


def nsga2(ctx: MethodContext) -> MethodResult:
    """NSGA-II with the per-task opt scores as objectives; from its first front, the best average."""
    def search(score, x0):
        s = NSGA2(x0=x0, bounds=BOUNDS, pop_size=POP, max_evals=ctx.budget, seed=ctx.seed + 1, sigma0=STEP)
        while not s.stop():
            xs = s.ask()
            s.tell(xs, [[score(x)[t] for t in ctx.tasks] for x in xs])
        return s.best()[0]

    return _coefficient_search(ctx, "nsga2", search)


def policy_gradient(ctx: MethodContext) -> MethodResult:
    """A Gaussian policy trained by the policy gradient on the average opt score; the policy's mean."""
    def search(score, x0):
        pg = GaussianPolicyGradient(x0=x0, bounds=BOUNDS, batch=POP, max_evals=ctx.budget, seed=ctx.seed + 1,
                                    sigma0=STEP)
        while not pg.stop():
            xs = pg.ask()
            pg.tell(xs, [avg(score(x)) for x in xs])
        return pg.best()

    return _coefficient_search(ctx, "pg", search)


# -- CycleQD ----------------------------------------------------------------------------------------------
def cycleqd(ctx: MethodContext, *, overrides: list[str], run: str) -> MethodResult:
    """One CycleQD run of the leaderboard's config with ``overrides``, in ``out_dir/run``: resumed where it
    stopped, reused when finished; the final (aggregated) model's test scores."""
    if ctx.run_config is None:
        raise HarnessError("cycleqd method: the leaderboard gave no run config")
    run_dir = ctx.out_dir / run
    results = run_cycleqd(run_dir, lambda: ctx.run_config(list(overrides)), ctx.progress)
    row = next(r for r in results["rows"] if r["model"] == "cycleqd")
    test = {k: v for k, v in row[results["splits"][1]].items() if k != "avg"}
    # the run's per-instance verdicts for the paired tables; a run finished before it kept them has its
    # exported final model scored here instead, which must give the run's own scores
    key, kept = f"cycleqd:{run}", (row.get("verdicts") or {}).get(results["splits"][1])
    test = ctx.tested(key, (lambda: {"scores": test, "verdicts": kept}) if kept else
                      (lambda: ctx.evaluator.score_state_dict(read_model(run_dir / "final_model"), "test")),
                      expect=test)
    return MethodResult(test, info={"run_dir": str(run_dir)}, key=key)


def run_cycleqd(run_dir: Path, make_config: Callable[[], Any], progress: bool) -> dict:
    """A CycleQD run's results: read when finished, resumed when a checkpoint exists, else started from
    ``make_config()``."""
    if (run_dir / RESULTS).exists():
        return read_json(run_dir / RESULTS)
    if (run_dir / CHECKPOINT).exists():
        return Runner.resume(run_dir).run()
    cfg = make_config()
    cfg.runner.progress = progress
    return Runner.create(cfg, run_dir, overwrite=True).run()
