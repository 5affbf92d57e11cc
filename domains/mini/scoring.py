"""Scoring whole models of the mini world outside a CycleQD run: baselines, merges, CMA-ES candidates.

The same domains, engine and splits as the run's evaluator (the tasks of ``configs/mini.yaml``), so a
model scores the same here and in a run. Models are plain state dicts (the models have a few million
parameters); merges use the harness's generalized task-vector merge.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import torch

from harness.domain import DomainContext, build_domain
from harness.errors import HarnessError
from harness.merging.generalized import MergeSpec, merge_tensor
from harness.merging.safetensors_io import CheckpointReader
from harness.seeding import tensor_generator


def load_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    with CheckpointReader(model_dir) as r:
        return {k: r.read(k).float().clone() for k in r.keys()}


def merge_models(base: Mapping[str, torch.Tensor], experts: Sequence[Mapping[str, torch.Tensor]], spec: MergeSpec,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """base + merge(expert - base) for every tensor, with a generator seeded per tensor (DARE)."""
    out = {}
    for k, b in base.items():
        gen = tensor_generator(seed, k) if spec.sparsify == "dare" else None
        out[k] = b + merge_tensor([e[k] - b for e in experts], spec, gen)
    return out


class Scorer:
    """{task: quality} of a state dict on a split, with the per-task seconds of the last call."""

    def __init__(self, tasks: Sequence[Mapping], *, data_root: Path, base_dir: Path, seed: int, run_dir: Path,
                 engine: Mapping | None = None):
        ctx = DomainContext(run_dir=run_dir, seed=seed, data_root=data_root, base_dir=base_dir, engine=dict(engine or {}))
        self.domains = {t["name"]: build_domain(t["domain"], task=t["name"], ctx=ctx, params=dict(t.get("params", {})))
                        for t in tasks}
        for d in self.domains.values():
            d.setup()
        self.calls = 0
        self.seconds: dict[str, float] = {}

    def score(self, state_dict: Mapping[str, torch.Tensor], split: str) -> dict[str, float]:
        self.calls += 1
        out = {}
        for name, dom in self.domains.items():
            t0 = time.perf_counter()
            res = dom.evaluate(state_dict, split=split)
            verdict = res.harness_verdict(name)
            if verdict:  # a baseline row must not read a broken sandbox as the model scoring 0
                raise HarnessError(f"mini scoring: {verdict}")
            out[name] = float(res.quality)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return out

    def close(self) -> None:
        for d in self.domains.values():
            d.close()
