"""The model store: base, experts and children, where children are recipes, not files.

A child is fully described by a typed recipe (``harness/store/recipes.py``: parents, one generalized-merge
spec, an optional mutation), so an archive of hundreds of elites costs hundreds of small records. Task
vectors are materialised on demand, tensor by tensor, through the one merge path
(``harness.merging.generalized.merge_tensor``) and the registered mutations, into an in-memory LRU cache
bounded in bytes; a model evicted from the cache is rebuilt from its recipe, bit for bit (all randomness is
seeded per (recipe seed, tensor name); run with the same torch thread count, since LAPACK's SVD may round
differently across thread counts).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Mapping

import torch

from harness.errors import CheckpointError, NonFiniteError
from harness.merging.generalized import merge_tensor
from harness.merging.mutations import svd_of
from harness.merging.safetensors_io import (
    CheckpointReader,
    SafetensorsWriter,
    check_compatible,
)
from harness.merging.streaming import copy_side_files
from harness.registry import MUTATIONS
from harness.store.recipes import (
    BASE_ID,
    BaseRecipe,
    ExpertRecipe,
    MergeRecipe,
    Recipe,
    expert_id,
    from_dict,
    recipe_id,
    to_dict,
)


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
        self.recipes: dict[str, Recipe] = {BASE_ID: BaseRecipe()}
        for name in self._experts:
            self.recipes[expert_id(name)] = ExpertRecipe(name)
        self._serial: dict[str, dict] = {}  # merge recipes' serialised form, by id
        self.cache_bytes = int(cache_bytes)
        self._cache: "OrderedDict[str, dict[str, torch.Tensor]]" = OrderedDict()
        self._cached_bytes = 0
        self._base_tensors: dict[str, torch.Tensor] | None = None
        self._svd: dict[str, dict[str, tuple | None]] = {}
        self.materialisations = 0  # how many task vectors were computed (a cost counter for tests/bench)

    # -- recipes ------------------------------------------------------------------------------------
    def add(self, recipe: Recipe) -> str:
        rid = recipe_id(recipe)
        if isinstance(recipe, MergeRecipe):
            for p in (*recipe.parents, *([recipe.svd_expert] if recipe.svd_expert else [])):
                if p not in self.recipes:
                    raise KeyError(f"recipe refers to unknown parent {p!r}")
            if recipe.mutation is not None:
                mut = MUTATIONS.get(recipe.mutation.kind)
                if mut.needs_expert_svd and not recipe.svd_expert:
                    raise ValueError(f"mutation {recipe.mutation.kind!r} needs the recipe's svd_expert")
        if rid not in self.recipes:
            self.recipes[rid] = recipe
            if isinstance(recipe, MergeRecipe):
                self._serial[rid] = to_dict(recipe)  # serialised once: lineages and checkpoints reuse it
        return rid

    def register(self, recipes: Mapping[str, Mapping]) -> None:
        """Adopt serialised recipes made elsewhere (a worker receiving a job's lineage, a checkpoint)."""
        for rid, d in recipes.items():
            if rid not in self.recipes:
                r = from_dict(d, f"recipe {rid}")
                if recipe_id(r) != rid:
                    raise CheckpointError(f"recipe {rid}: its content hashes to {recipe_id(r)}")
                self.recipes[rid] = r
                if isinstance(r, MergeRecipe):
                    self._serial[rid] = to_dict(r)

    def lineage(self, model_id: str) -> dict[str, dict]:
        """Every merge recipe ``model_id`` depends on, serialised (what a worker needs to rebuild it)."""
        out: dict[str, dict] = {}
        stack = [model_id]
        while stack:
            m = stack.pop()
            if m in out:
                continue
            r = self.recipes[m]
            if not isinstance(r, MergeRecipe):
                continue
            out[m] = self._serial[m]
            stack.extend(r.parents)
            if r.svd_expert:
                stack.append(r.svd_expert)
        return out

    def merge_recipes(self) -> dict[str, dict]:
        """Every merge recipe the store knows, serialised (what a checkpoint keeps)."""
        return dict(self._serial)

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
            if isinstance(r, MergeRecipe):
                for p in r.parents:
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
        if isinstance(r, BaseRecipe):
            return {k: torch.zeros(self.base.meta(k).shape) for k in self.names}
        if isinstance(r, ExpertRecipe):
            e = self._experts[r.name]
            base = self.base_tensors()
            out = {}
            for k in self.names:
                t = e.read(k).float()
                if not torch.isfinite(t).all():
                    raise NonFiniteError(f"model.experts.{r.name}: tensor {k!r} of {self.expert_dirs[r.name]} has NaN/Inf")
                out[k] = t - base[k].float()
            return out
        parents = [self._get(p, held) for p in r.parents]
        mut = None
        if r.mutation is not None:
            mut = MUTATIONS.get(r.mutation.kind)(seed=r.mutation.seed, w_max=r.mutation.w_max, sigma=r.mutation.sigma)
        out: dict[str, torch.Tensor] = {}
        for k in self.names:
            t = merge_tensor((p[k] for p in parents), r.merge, k)
            if mut is not None:
                t = mut(k, t, self.expert_svd(r.svd_expert, k) if mut.needs_expert_svd else None)
            if not torch.isfinite(t).all():
                raise NonFiniteError(f"model {m}: tensor {k!r} has NaN/Inf after merging and mutation")
            out[k] = t
        return out

    def expert_svd(self, model_id: str, name: str):
        """SVD of an expert's task vector for one tensor (the official mutation's basis), cached."""
        per = self._svd.setdefault(model_id, {})
        if name not in per:
            per[name] = svd_of(self.task_vector(model_id)[name])
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
