"""Evaluation of one job: materialise the model from its recipe, score it on every task.

``Evaluator`` is built once per worker process from the resolved config (a plain dict, so it pickles)
and reused for every job that worker runs. A job whose model cannot be built (NaN/Inf weights) or scored
(a domain returned a non-finite quality) comes back *rejected* with the reason, never as a crash.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping

import torch
from omegaconf import OmegaConf

from harness.domain import DomainContext, build_domain
from harness.errors import NonFiniteError
from harness.runner.score_cache import ScoreCache
from harness.store.model_store import ModelStore
from harness.worlds import build_world


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
    return ModelStore(base_dir=base, experts=experts, cache_bytes=int(cfg.model.cache_bytes))


class Evaluator:
    def __init__(self, cfg_dict: Mapping, run_dir: str | Path):
        self.cfg = OmegaConf.create(dict(cfg_dict))
        torch.set_num_threads(int(self.cfg.runner.torch_threads))
        self.run_dir = Path(run_dir)
        base, experts, data_root = resolve_world(self.cfg, self.run_dir)
        self.store = ModelStore(base_dir=base, experts=experts, cache_bytes=int(self.cfg.model.cache_bytes))
        ctx = DomainContext(run_dir=self.run_dir, seed=int(self.cfg.seed), data_root=data_root,
                            base_dir=self.store.base_dir, engine=OmegaConf.to_container(self.cfg.engine))
        self.domains = {
            t.name: build_domain(t.domain, task=t.name, ctx=ctx, params=OmegaConf.to_container(t.params))
            for t in self.cfg.tasks
        }
        for d in self.domains.values():
            d.setup()
        self.cache = None
        if self.cfg.runner.get("score_cache"):
            self.cache = ScoreCache(self.cfg.runner.score_cache, tasks=OmegaConf.to_container(self.cfg.tasks),
                                    seed=int(self.cfg.seed), data_root=data_root, engine=ctx.engine,
                                    base_dir=base, experts=experts,
                                    settings={"torch_threads": int(self.cfg.runner.torch_threads),
                                              "max_harness_failures": float(self.cfg.runner.max_harness_failures)})

    def evaluate(self, model_id: str, lineage: Mapping[str, Mapping], split: str) -> dict:
        """{"scores": {task: q} | None, "error": str | None, "timings": {...}, "status_counts": {...}}
        (from ``runner.score_cache`` when this model was scored on this split before, with "cached": true)"""
        if self.cache is not None:
            key = self.cache.key(model_id, split)
            hit = self.cache.get(key)
            if hit is not None:
                return {**hit, "timings": {}, "cached": True}  # no time spent: kept out of speed reports
            res = self._evaluate(model_id, lineage, split)
            if res["error"] is None:  # rejections are not cached: a harness failure may be transient
                self.cache.put(key, res)
            return res
        return self._evaluate(model_id, lineage, split)

    def _evaluate(self, model_id: str, lineage: Mapping[str, Mapping], split: str) -> dict:
        self.store.register(lineage)
        t0 = time.perf_counter()
        try:
            sd = self.store.state_dict(model_id)
        except NonFiniteError as exc:
            return {"scores": None, "error": f"rejected: {exc}", "timings": {}, "status_counts": {}}
        return self.score_state_dict(sd, split, {"materialise": time.perf_counter() - t0})

    def score_state_dict(self, sd: Mapping[str, torch.Tensor], split: str, timings: dict | None = None) -> dict:
        """Every task's verdict on one set of weights: the same result dict as ``evaluate`` (uncached).
        A non-finite quality or more harness failures than ``runner.max_harness_failures`` reject it."""
        timings = dict(timings or {})
        scores, counts = {}, {}
        for name, dom in self.domains.items():
            t1 = time.perf_counter()
            res = dom.evaluate(sd, split=split)
            timings[f"eval:{name}"] = time.perf_counter() - t1
            q = float(res.quality)
            if not (math.isfinite(q) and 0.0 <= q <= 1.0):
                return {"scores": None, "error": f"rejected: domain {name!r} returned quality {q!r}",
                        "timings": timings, "status_counts": counts}
            counts[name] = res.status_counts()
            verdict = res.harness_verdict(name, float(self.cfg.runner.max_harness_failures))
            if verdict:
                return {"scores": None, "timings": timings, "status_counts": counts,
                        "error": f"rejected (runner.max_harness_failures): {verdict}"}
            scores[name] = q
        return {"scores": scores, "error": None, "timings": timings, "status_counts": counts}

    def close(self) -> None:
        for d in self.domains.values():
            d.close()
        self.store.close()

