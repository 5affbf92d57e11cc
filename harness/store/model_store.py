"""The model store: base, experts and children, where children are recipes, not files.

A child is fully described by a recipe (parents, merge weights, mutation spec), so an archive of hundreds
of elites costs hundreds of small JSON objects. Task vectors are materialised on demand, tensor by tensor,
into an in-memory LRU cache bounded in bytes; a model evicted from the cache is rebuilt from its recipe,
bit for bit (all randomness is seeded per (recipe seed, tensor name); run with the same torch thread
count, since LAPACK's SVD may round differently across thread counts).

Recipe kinds (plain JSON dicts):
- ``{"kind": "base"}``: the zero task vector.
- ``{"kind": "expert", "name": NAME}``: expert checkpoint minus base, read lazily from disk.
- ``{"kind": "merge", "parents": [ids], "weights": [w], "normalize": bool,
  "mutation": {kind, w_max, sigma, seed} | None, "svd_expert": id | None}``: crossover (normalize=True),
  aggregation (normalize=False, weights = softmax betas), each optionally followed by a mutation.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Mapping

import torch

from harness.errors import CheckpointError, NonFiniteError
from harness.merging.safetensors_io import CheckpointReader, SafetensorsWriter, check_compatible
from harness.merging.streaming import copy_side_files
from harness.qd.operators import (
    MutationSpec,
    aggregate_tensor,
    crossover_tensor,
    expert_svd_tensor,
    mutate_tensor,
)

BASE_ID = "base"


def expert_id(name: str) -> str:
    return f"expert:{name}"


def recipe_id(recipe: Mapping) -> str:
    """Content address: identical recipes are the same model."""
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()
    return "m-" + hashlib.sha1(blob).hexdigest()[:16]


def _nbytes(tv: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tv.values())


class ModelStore:
    """Base + experts on disk, children as recipes, a byte-bounded cache of materialised task vectors."""

    def __init__(self, *, base_dir: str | Path, experts: Mapping[str, str | Path], cache_bytes: int = 1 << 30):
        self.base_dir = Path(base_dir)
        if not self.base_dir.is_dir():
            raise CheckpointError(f"model.base: directory {self.base_dir} does not exist")
        self.base = CheckpointReader(self.base_dir)
        self.expert_dirs = {n: Path(p) for n, p in experts.items()}
        self._experts: dict[str, CheckpointReader] = {}
        for name, d in self.expert_dirs.items():
            if not d.is_dir():
                raise CheckpointError(f"model.experts.{name}: directory {d} does not exist")
            reader = CheckpointReader(d)
            check_compatible(self.base, reader)
            self._experts[name] = reader
        self.names = [k for k in self.base.keys() if self.base.meta(k).dtype.is_floating_point]
        self.recipes: dict[str, dict] = {BASE_ID: {"kind": "base"}}
        for name in self._experts:
            self.recipes[expert_id(name)] = {"kind": "expert", "name": name}
        self.cache_bytes = int(cache_bytes)
        self._cache: "OrderedDict[str, dict[str, torch.Tensor]]" = OrderedDict()
        self._cached_bytes = 0
        self._base_tensors: dict[str, torch.Tensor] | None = None
        self._svd: dict[str, dict[str, tuple | None]] = {}
        self.materialisations = 0  # how many task vectors were computed (a cost counter for tests/bench)

    # -- recipes ------------------------------------------------------------------------------------
    def add(self, recipe: Mapping) -> str:
        rid = recipe_id(recipe)
        for p in recipe.get("parents", []):
            if p not in self.recipes:
                raise KeyError(f"recipe refers to unknown parent {p!r}")
        self.recipes.setdefault(rid, json.loads(json.dumps(recipe)))
        return rid

    def register(self, recipes: Mapping[str, Mapping]) -> None:
        """Adopt recipes made elsewhere (a worker receiving a job's lineage)."""
        for rid, r in recipes.items():
            if rid not in self.recipes:
                self.recipes[rid] = dict(r)

    def lineage(self, model_id: str) -> dict[str, dict]:
        """Every merge recipe ``model_id`` depends on (what a worker needs to rebuild it)."""
        out: dict[str, dict] = {}
        stack = [model_id]
        while stack:
            m = stack.pop()
            if m in out:
                continue
            r = self.recipes[m]
            if r["kind"] != "merge":
                continue
            out[m] = r
            stack.extend(r["parents"])
            if r.get("svd_expert"):
                stack.append(r["svd_expert"])
        return out

    # -- materialisation -----------------------------------------------------------------------------
    def base_tensors(self) -> dict[str, torch.Tensor]:
        if self._base_tensors is None:
            self._base_tensors = {k: self.base.read(k) for k in self.base.keys()}
        return self._base_tensors

    def task_vector(self, model_id: str) -> dict[str, torch.Tensor]:
        """The model's task vector (float32, per floating-point tensor), from cache or rebuilt."""
        hit = self._cache.get(model_id)
        if hit is not None:
            self._cache.move_to_end(model_id)
            return hit
        # Build uncached ancestors first, deepest first, without recursion (lineages can be long).
        order: list[str] = []
        stack: list[tuple[str, bool]] = [(model_id, False)]
        seen: set[str] = set()
        while stack:
            m, expanded = stack.pop()
            if expanded:
                order.append(m)
                continue
            if m in seen or m in self._cache:
                continue
            seen.add(m)
            stack.append((m, True))
            r = self.recipes.get(m)
            if r is None:
                raise KeyError(f"unknown model id {m!r}")
            if r["kind"] == "merge":
                for p in r["parents"]:
                    stack.append((p, False))
        held: dict[str, dict[str, torch.Tensor]] = {}
        for m in order:
            held[m] = self._build(m, held)
            self._put(m, held[m])
        return held[model_id]

    def _get(self, m: str, held: Mapping[str, dict]) -> dict[str, torch.Tensor]:
        if m in held:
            return held[m]
        return self.task_vector(m)

    def _build(self, m: str, held: Mapping[str, dict]) -> dict[str, torch.Tensor]:
        r = self.recipes[m]
        self.materialisations += 1
        if r["kind"] == "base":
            return {k: torch.zeros(self.base.meta(k).shape) for k in self.names}
        if r["kind"] == "expert":
            e = self._experts[r["name"]]
            base = self.base_tensors()
            return {k: e.read(k).float() - base[k].float() for k in self.names}
        parents = [self._get(p, held) for p in r["parents"]]
        weights = [float(w) for w in r["weights"]]
        combine = crossover_tensor if r.get("normalize", True) else aggregate_tensor
        mut = MutationSpec(**r["mutation"]) if r.get("mutation") else None
        out: dict[str, torch.Tensor] = {}
        for k in self.names:
            t = combine([p[k] for p in parents], weights)
            if mut is not None:
                svd = self.expert_svd(r["svd_expert"], k) if mut.kind == "svd_official" else None
                t = mutate_tensor(k, t, mut, svd)
            if not torch.isfinite(t).all():
                raise NonFiniteError(f"model {m}: tensor {k!r} has NaN/Inf after merging and mutation")
            out[k] = t
        return out

    def expert_svd(self, model_id: str, name: str):
        """SVD of an expert's task vector for one tensor (the official mutation's basis), cached."""
        per = self._svd.setdefault(model_id, {})
        if name not in per:
            per[name] = expert_svd_tensor(self.task_vector(model_id)[name])
        return per[name]

    def _put(self, m: str, tv: dict[str, torch.Tensor]) -> None:
        size = _nbytes(tv)
        if size > self.cache_bytes:
            return
        self._cache[m] = tv
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= _nbytes(old)

    def state_dict(self, model_id: str) -> dict[str, torch.Tensor]:
        """base + task vector, each tensor in the base's dtype (what an engine loads)."""
        tv = self.task_vector(model_id)
        base = self.base_tensors()
        return {k: (base[k].float() + tv[k]).to(base[k].dtype) if k in tv else base[k] for k in base}

    def export(self, model_id: str, out_dir: str | Path) -> Path:
        """Write the model as an HF directory (base's config/tokenizer + merged weights)."""
        out_dir = Path(out_dir)
        copy_side_files(self.base_dir, out_dir)
        tv = self.task_vector(model_id)
        metas = {k: (self.base.meta(k).dtype, self.base.meta(k).shape) for k in self.base.keys()}
        with SafetensorsWriter(out_dir / "model.safetensors", metas, {"format": "pt", "cycleqd_id": model_id}) as w:
            for k in metas:
                b = self.base.read(k)
                w.write(k, (b.float() + tv[k]).to(b.dtype) if k in tv else b)
        (out_dir / "cycleqd_recipe.json").write_text(json.dumps(self.lineage(model_id), indent=1, sort_keys=True))
        return out_dir

    def cached_ids(self) -> Iterable[str]:
        return list(self._cache)

    def close(self) -> None:
        self.base.close()
        for e in self._experts.values():
            e.close()
