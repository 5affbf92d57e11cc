"""Evaluation of one job: materialise the model from its recipe, score it on every task.

``Evaluator`` is built once per worker process from the resolved config (a plain dict, so it pickles)
and reused for every job that worker runs. A job whose model cannot be built (NaN/Inf weights) or scored
(a domain returned a non-finite quality) comes back *rejected* with the reason, never as a crash.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch
from omegaconf import OmegaConf

from harness.domain import DomainContext, TaskResult, build_domain
from harness.errors import NonFiniteError
from harness.heartbeat import Heartbeat
from harness.qd.racing import ArchiveGate, any_could_enter, reach
from harness.runner.score_cache import ScoreCache
from harness.runner.validation import is_slice, slice_of
from harness.store.model_store import ModelStore
from harness.worlds import build_world

STORE_DIR = "store"  # a run's materialised models (harness/store/model_store.py), shared by its workers


def resolve_world(cfg, run_dir: Path) -> tuple[Path, dict[str, Path], Path]:
    """Base and expert directories and the tasks' data root: from the config, or from the world builder
    (which may ship its own datasets by returning a ``data_root``)."""
    m = cfg.model
    data_root = Path(cfg.data_root)
    if m.builder is not None:
        paths = build_world(m.builder.kind, run_dir / "world", OmegaConf.to_container(m.builder.params))
        base = paths.pop("base")
        data_root = paths.pop("data_root", data_root)
        return base, paths, data_root
    return Path(m.base), {k: Path(v) for k, v in m.experts.items()}, data_root


def make_store(cfg, run_dir: Path) -> ModelStore:
    base, experts, _ = resolve_world(cfg, run_dir)
    return ModelStore(base_dir=base, experts=experts, cache_bytes=int(cfg.model.cache_bytes),
                      disk_bytes=cfg.model.get("disk_bytes"),
                      storage_dir=run_dir / STORE_DIR, device=cfg.model.get("device", "cpu"))


class Evaluator:
    def __init__(self, cfg_dict: Mapping, run_dir: str | Path):
        self.cfg = OmegaConf.create(dict(cfg_dict))
        torch.set_num_threads(int(self.cfg.runner.torch_threads))
        self.run_dir = Path(run_dir)
        base, experts, data_root = resolve_world(self.cfg, self.run_dir)
        self.store = ModelStore(base_dir=base, experts=experts, cache_bytes=int(self.cfg.model.cache_bytes),
                                disk_bytes=self.cfg.model.get("disk_bytes"),
                                storage_dir=self.run_dir / STORE_DIR, device=self.cfg.model.get("device", "cpu"))
        ctx = DomainContext(run_dir=self.run_dir, seed=int(self.cfg.seed), data_root=data_root,
                            base_dir=self.store.base_dir, engine=OmegaConf.to_container(self.cfg.engine))
        self.domains = {
            t.name: build_domain(t.domain, task=t.name, ctx=ctx, params=OmegaConf.to_container(t.params))
            for t in self.cfg.tasks
        }
        self.heartbeat = Heartbeat(float(self.cfg.runner.get("heartbeat_s", 30.0)))
        for d in self.domains.values():
            d.setup()
        self.cache = None
        if self.cfg.runner.get("score_cache"):
            self.cache = ScoreCache(self.cfg.runner.score_cache, tasks=OmegaConf.to_container(self.cfg.tasks),
                                    seed=int(self.cfg.seed), data_root=data_root, engine=ctx.engine,
                                    base_dir=base, experts=experts,
                                    settings={"torch_threads": int(self.cfg.runner.torch_threads),
                                              "race_chunk": self.cfg.runner.get("race_chunk"),
                                              "validation_fraction": self.cfg.runner.get("validation_fraction"),
                                              "max_harness_failures": float(self.cfg.runner.max_harness_failures)})

    def evaluate(self, model_id: str, lineage: Mapping[str, Mapping], split: str,
                 gates: Sequence[Mapping] | None = None) -> dict:
        """{"scores": {task: q} | None, "error": str | None, "timings": {...}, "status_counts": {...},
        "samples": {"evaluated", "total"}, "verdicts": {task: [[instance, score], ...] | None}} (from
        ``runner.score_cache`` when this model was scored on this split before, with "cached": true). With
        ``gates`` (racing) a child no archive could take comes back early with "scores": None, "error": None
        and "raced": the bounds on its scores when it stopped. "verdicts" is absent from rejected and raced
        results and from score-cache entries written before it existed."""
        if self.cache is not None:
            key = self.cache.key(model_id, split)
            hit = self.cache.get(key)
            if hit is not None:
                return {**hit, "timings": {}, "cached": True}  # no time spent: kept out of speed reports
            res = self._evaluate(model_id, lineage, split, gates)
            # rejections are not cached (a harness failure may be transient), nor races (they depend on the gate)
            if res["error"] is None and res["scores"] is not None:
                self.cache.put(key, res)
            return res
        return self._evaluate(model_id, lineage, split, gates)

    def _evaluate(self, model_id: str, lineage: Mapping[str, Mapping], split: str,
                  gates: Sequence[Mapping] | None = None) -> dict:
        self.heartbeat.begin(f"{model_id} on {split}")
        try:
            return self._evaluate_model(model_id, lineage, split, gates)
        finally:
            self.heartbeat.end()

    def _evaluate_model(self, model_id, lineage, split, gates) -> dict:
        self.store.register(lineage)
        t0 = time.perf_counter()
        try:
            sd = self.store.state_dict(model_id)
        except NonFiniteError as exc:
            return {"scores": None, "error": f"rejected: {exc}", "timings": {}, "status_counts": {}}
        return self.score_state_dict(sd, split, {"materialise": time.perf_counter() - t0}, gates)

    def score_state_dict(self, sd: Mapping[str, torch.Tensor], split: str, timings: dict | None = None,
                         gates: Sequence[Mapping] | None = None) -> dict:
        """Every task's verdict on one set of weights: the same result dict as ``evaluate`` (uncached).
        A non-finite quality or more harness failures than ``runner.max_harness_failures`` reject it."""
        timings = dict(timings or {})
        chunk = self.cfg.runner.get("race_chunk")
        if chunk or is_slice(split):
            samples, raced = self._score_in_chunks(sd, split, int(chunk or 0), timings, gates)
        else:
            samples, raced = {}, None
            for name, dom in self.domains.items():
                t1 = time.perf_counter()
                planned = dom.instances(split)
                self.heartbeat.at(name, 0, len(planned) if planned is not None else 0)
                res = dom.evaluate(sd, split=split)
                timings[f"eval:{name}"] = time.perf_counter() - t1
                self.heartbeat.at(name, len(res.samples), len(res.samples))
                samples[name] = (res.quality, res)
        evaluated = sum(len(r.samples) for _, r in samples.values())
        total = evaluated if raced is None else raced.pop("_total")
        out = {"timings": timings, "samples": {"evaluated": evaluated, "total": total}}
        if raced is not None:
            counts = {name: r.status_counts() for name, (_, r) in samples.items()}
            return {"scores": None, "error": None, "raced": raced, "status_counts": counts, **out}
        scores, counts = {}, {}
        verdicts = {name: self._verdicts(name, split, res.samples) for name, (_, res) in samples.items()}
        for name, (q, res) in samples.items():
            q = float(q)
            if not (math.isfinite(q) and 0.0 <= q <= 1.0):
                return {"scores": None, "error": f"rejected: domain {name!r} returned quality {q!r}",
                        "status_counts": counts, **out}
            counts[name] = res.status_counts()
            verdict = res.harness_verdict(name, float(self.cfg.runner.max_harness_failures))
            if verdict:
                return {"scores": None, "status_counts": counts, **out,
                        "error": f"rejected (runner.max_harness_failures): {verdict}"}
            scores[name] = q
        return {"scores": scores, "error": None, "status_counts": counts, "verdicts": verdicts, **out}

    def _verdicts(self, name: str, split: str, samples) -> list[list] | None:
        """[[instance, score], ...] in evaluation order: what a paired comparison of two models on the same
        instances needs (leaderboards/paired.py). None where samples and instances do not line up (a domain
        that scores a split only whole): a paired table then lists the row as not comparable, by task."""
        plan = self.instances(name, split)
        if plan is None or len(plan) != len(samples):
            return None
        return [[int(i), float(s.score)] for i, s in zip(plan, samples)]

    def instances(self, name: str, split: str) -> list[int]:
        """Task ``name``'s instances of ``split``, the validation slices (harness/runner/validation.py)
        included."""
        dom = self.domains[name]
        if not is_slice(split):
            return dom.instances(split)
        return slice_of(dom.instances(self.cfg.runner.opt_split), split, task=name, seed=int(self.cfg.seed),
                        fraction=float(self.cfg.runner.validation_fraction))

    def _score_in_chunks(self, sd, split: str, chunk: int, timings: dict, gates) -> tuple[dict, dict | None]:
        """Score ``chunk`` instances at a time (0: a task's whole plan in one call), round robin over the
        tasks or in ``runner.race_order``; after each chunk, with ``gates``, stop when no archive could take
        the model (harness/qd/racing.py). Returns {task: (quality, TaskResult)} and None, or the partial
        results and the reach of each task's score when it stopped."""
        plan = {name: self.instances(name, split) for name in self.domains}
        chunk = chunk or max(len(idx) for idx in plan.values())
        gates = [ArchiveGate.from_dict(g) for g in gates or ()]
        done: dict[str, list] = {name: [] for name in self.domains}
        coarse: dict = {}  # per task: its latest Reach without / with values (recomputed when it moves)
        fine: dict = {}
        for name, r in self._steps(plan, chunk):
            dom = self.domains[name]
            part = plan[name][r * chunk:(r + 1) * chunk]
            t1 = time.perf_counter()
            self.heartbeat.at(name, len(done[name]), len(plan[name]))
            done[name] += dom.evaluate_instances(sd, split=split, indices=part)
            self.heartbeat.at(name, len(done[name]), len(plan[name]))
            timings[f"eval:{name}"] = timings.get(f"eval:{name}", 0.0) + time.perf_counter() - t1
            if not gates or all(len(done[n]) == len(plan[n]) for n in plan):
                continue
            # intervals first (cheap); the reachable values only when the intervals cannot decide
            coarse[name] = reach(dom, done[name], plan[name], values=False)
            fine.pop(name, None)
            for n, d in self.domains.items():
                if n not in coarse:
                    coarse[n] = reach(d, done[n], plan[n], values=False)
            bounds = coarse
            if any_could_enter(gates, bounds):
                for n, d in self.domains.items():
                    if n not in fine:
                        fine[n] = reach(d, done[n], plan[n])
                bounds = fine
            if not any_could_enter(gates, bounds):
                partial = {n: (None, TaskResult(0.0, done[n])) for n in self.domains}
                return partial, {**{n: b.to_list() for n, b in bounds.items()},
                                 "_total": sum(len(p) for p in plan.values())}
        return {name: (dom.aggregate(done[name]), TaskResult(dom.aggregate(done[name]), done[name]))
                for name, dom in self.domains.items()}, None

    def _steps(self, plan: Mapping[str, list], chunk: int) -> list[tuple[str, int]]:
        """(task, chunk number) in scoring order: each task to its end in ``runner.race_order`` if set, else
        round robin over the tasks."""
        n = {name: (len(idx) + chunk - 1) // chunk for name, idx in plan.items()}
        order = list(self.cfg.runner.get("race_order") or [])
        if order:
            return [(name, r) for name in order for r in range(n[name])]
        return [(name, r) for r in range(max(n.values())) for name in self.domains if r < n[name]]

    def close(self, discard_models: bool = False) -> None:
        """Stop; ``discard_models``: also remove the models materialised under the run dir (a leaderboard's
        scoring directory, whose models are recipes in its rows)."""
        if discard_models:
            self.store.discard_files()
        self.heartbeat.close()
        for d in self.domains.values():
            d.close()
        self.store.close()

