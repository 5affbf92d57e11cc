"""The model store: base, experts and children, where children are recipes first and files second.

A child is fully described by a typed recipe (``harness/store/recipes.py``: parents, one generalized-merge
spec, an optional mutation), so an archive of hundreds of elites costs hundreds of small records. A model
is *materialised* as a safetensors file of its weights, in the base's dtype (what an engine loads and
what was scored), under ``storage_dir``: tensor by tensor, through the one merge path
(``harness.merging.generalized.merge_source``, block by block) and the registered mutations, reading each parent's tensor
from its own file. So a worker's memory is a few tensors whatever the lineage depth or the archive size:
no whole-model task vector is ever held (paper scale: a Llama-3-8B child is built in the memory of its
largest tensor, not of the model).

A child's task vector is *its stored weights minus the base's*, the same whether the file was just written
or rebuilt after eviction, so a rebuilt model is bit for bit the model that was scored (all randomness is
seeded per (recipe seed, tensor name); run with the same torch thread count, since LAPACK's SVD may round
differently across thread counts). Files are written once (atomically, by whichever process gets there
first: workers share the directory) and read by name; ``evict(keep)`` bounds the directory in bytes,
keeping what the caller pins (the archives' elites, the jobs in flight). The official mutation's basis,
the SVD of an expert's task vector, is computed once per tensor and kept on disk beside the models.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Mapping

import torch

from harness.errors import CheckpointError, ConfigError, NonFiniteError
from harness.merging.generalized import DifferenceTaskVectors, merge_source
from harness.merging.mutations import svd_of
from harness.merging.safetensors_io import (
    CheckpointReader,
    SafetensorsReader,
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


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (``cuda:N``) or ``auto`` (cuda when one is visible): where merges and mutations run."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device: {device!r} but no CUDA device is visible (use cpu or auto)")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"model.device: {device!r} is not a device ({exc})") from None


SVD_CACHE_BYTES = 256 << 20  # expert SVD factors kept in memory besides the disk copy


class ModelStore:
    """Base + experts on disk, children as recipes materialised into ``storage_dir`` (module docstring).

    ``cache_bytes`` bounds the bytes of children's files that ``evict`` keeps beyond the pinned ones;
    ``disk_bytes`` (None: no bound) bounds them all, pinned ones (the archives' elites) included: at paper
    scale an elite is a 16 GB file and an archive holds hundreds, so past the budget the least recently
    written elites go too and are rebuilt from their recipes if asked for again (bit for bit, at the cost
    of rebuilding their ancestors that are gone). ``storage_dir`` defaults to a temporary directory
    removed by ``close``."""

    def __init__(self, *, base_dir: str | Path, experts: Mapping[str, str | Path], cache_bytes: int = 1 << 30,
                 storage_dir: str | Path | None = None, device: str = "cpu", disk_bytes: int | None = None):
        self.device = resolve_device(device)
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
        self.disk_bytes = None if disk_bytes is None else int(disk_bytes)
        self._owns_dir = storage_dir is None
        self.storage_dir = Path(storage_dir) if storage_dir else Path(tempfile.mkdtemp(prefix="cycleqd-store-"))
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._base_tensors: dict[str, torch.Tensor] | None = None  # only when a caller asks for all of them
        self._last_base: tuple[str | None, torch.Tensor | None] = (None, None)
        self._finite: set[tuple[str, str]] = set()
        self._svd: "OrderedDict[tuple[str, str], tuple | None]" = OrderedDict()
        self._svd_bytes = 0
        self.materialisations = 0  # how many models were written (a cost counter for tests and bench)
        # where materialising time went (bench scale); expert_svd: computing SVDs, once per expert tensor
        self.seconds = {"merge": 0.0, "mutation": 0.0, "expert_svd": 0.0}

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

    def path(self, model_id: str) -> Path:
        """Where a child's weights live once materialised."""
        return self.storage_dir / f"{model_id}.safetensors"

    def ensure(self, model_id: str) -> None:
        """Materialise ``model_id`` and whichever of its ancestors have no file, deepest first, without
        recursion (lineages can be long)."""
        order: list[str] = []
        stack: list[tuple[str, bool]] = [(model_id, False)]
        seen: set[str] = set()
        while stack:
            m, expanded = stack.pop()
            if expanded:
                order.append(m)
                continue
            if m in seen:
                continue
            seen.add(m)
            r = self.recipes.get(m)
            if r is None:
                raise KeyError(f"unknown model id {m!r}")
            if not isinstance(r, MergeRecipe) or self._readable(m):
                continue
            stack.append((m, True))
            for p in (*r.parents, *([r.svd_expert] if r.svd_expert else [])):
                stack.append((p, False))
        for m in order:
            self._materialise(m)

    def _readable(self, m: str) -> bool:
        p = self.path(m)
        if not p.exists():
            return False
        try:
            with SafetensorsReader(p) as r:
                return set(r.keys()) == set(self.base.keys())
        except CheckpointError:  # a half-written file from a crash without fsync: rebuild it
            p.unlink(missing_ok=True)
            return False

    def _base(self, k: str) -> torch.Tensor:
        """The base's tensor ``k``, read from disk (the last one kept: every parent of a tensor needs it),
        so the store never holds the whole base."""
        if self._base_tensors is not None:
            return self._base_tensors[k]
        if self._last_base[0] != k:
            self._last_base = (k, self.base.read(k))
        return self._last_base[1]

    def tensor(self, model_id: str, name: str) -> torch.Tensor:
        """One tensor of a model's weights (materialising the model if needed)."""
        self.ensure(model_id)
        files: dict[str, SafetensorsReader] = {}
        try:
            return self._tensor(model_id, name, files)
        finally:
            for f in files.values():
                f.close()

    def _tensor(self, m: str, k: str, open_files: dict) -> torch.Tensor:
        """Tensor ``k`` of model ``m``'s weights (base dtype), from its file."""
        r = self.recipes[m]
        if isinstance(r, BaseRecipe):
            return self._base(k)
        if isinstance(r, ExpertRecipe):
            t = self._experts[r.name].read(k)
            if (r.name, k) not in self._finite:  # checked once per tensor: experts do not change under a run
                if t.dtype.is_floating_point and not torch.isfinite(t).all():
                    raise NonFiniteError(f"model.experts.{r.name}: tensor {k!r} of {self.expert_dirs[r.name]} has NaN/Inf")
                self._finite.add((r.name, k))
            return t
        if m not in open_files:
            open_files[m] = SafetensorsReader(self.path(m))
        return open_files[m].read(k)

    def _tau(self, m: str, k: str, open_files: dict) -> torch.Tensor:
        """Model ``m``'s task vector for tensor ``k`` (float32): its weights minus the base's."""
        if isinstance(self.recipes[m], BaseRecipe):
            return torch.zeros(self.base.meta(k).shape)
        return self._tensor(m, k, open_files).float() - self._base(k).float()

    def _materialise(self, m: str) -> None:
        r = self.recipes[m]
        self.materialisations += 1
        mut = None
        if r.mutation is not None:
            mut = MUTATIONS.get(r.mutation.kind)(seed=r.mutation.seed, w_max=r.mutation.w_max, sigma=r.mutation.sigma)
        metas = {k: (self.base.meta(k).dtype, self.base.meta(k).shape) for k in self.base.keys()}
        open_files: dict[str, SafetensorsReader] = {}
        try:
            with SafetensorsWriter(self.path(m), metas, {"format": "pt", "cycleqd_id": m}, durable=False) as w:
                for k in metas:
                    base = self._base(k)
                    if k not in self.names:
                        w.write(k, base)
                        continue
                    t0 = time.perf_counter()
                    parents = [None if isinstance(self.recipes[p], BaseRecipe) else self._tensor(p, k, open_files)
                               for p in r.parents]
                    t = merge_source(DifferenceTaskVectors(parents, base, self.device), r.merge, k).view(base.shape)
                    t1 = time.perf_counter()
                    if mut is not None:
                        t = mut(k, t, self.expert_svd(r.svd_expert, k) if mut.needs_expert_svd else None)
                    if not torch.isfinite(t).all():
                        raise NonFiniteError(f"model {m}: tensor {k!r} has NaN/Inf after merging and mutation")
                    out = (base.to(self.device).float() + t).to(base.dtype)
                    t2 = time.perf_counter()
                    self.seconds["merge"] += t1 - t0
                    self.seconds["mutation"] += t2 - t1
                    w.write(k, out)
        finally:
            for f in open_files.values():
                f.close()

    def expert_svd(self, model_id: str, name: str):
        """SVD of an expert's task vector for one tensor (the official mutation's basis): computed once per
        tensor and kept on disk (keyed by the expert's files), with a byte-bounded copy in memory."""
        key = (model_id, name)
        if key in self._svd:
            self._svd.move_to_end(key)
            return self._svd[key]
        path = self.storage_dir / "svd" / self._expert_key(model_id) / (hashlib.sha1(name.encode()).hexdigest() + ".safetensors")
        if path.exists():
            with SafetensorsReader(path) as f:
                svd = tuple(f.read(x) for x in ("u", "s", "vh")) if "u" in f.keys() else None
        else:
            t0 = time.perf_counter()
            svd = svd_of(self._tau(model_id, name, {}).to(self.device))
            svd = None if svd is None else tuple(x.cpu() for x in svd)
            self.seconds["expert_svd"] += time.perf_counter() - t0
            path.parent.mkdir(parents=True, exist_ok=True)
            tensors = {} if svd is None else dict(zip(("u", "s", "vh"), svd))
            metas = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
            with SafetensorsWriter(path, metas, {"tensor": name}, durable=False) as w:
                for k, v in tensors.items():
                    w.write(k, v)
        size = 0 if svd is None else sum(x.numel() * x.element_size() for x in svd)
        if size <= SVD_CACHE_BYTES:
            self._svd[key] = svd
            self._svd_bytes += size
            while self._svd_bytes > SVD_CACHE_BYTES:
                _, old = self._svd.popitem(last=False)
                self._svd_bytes -= 0 if old is None else sum(x.numel() * x.element_size() for x in old)
        return svd

    def _expert_key(self, model_id: str) -> str:
        """An expert's files by path, size and mtime: a changed expert gets a new SVD directory."""
        r = self.recipes[model_id]
        d = self.expert_dirs[r.name] if isinstance(r, ExpertRecipe) else self.storage_dir
        stamp = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns)
                 for f in sorted(Path(d).glob("*.safetensors"))] if isinstance(r, ExpertRecipe) else [model_id]
        return hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:16]

    def task_vector(self, model_id: str) -> dict[str, torch.Tensor]:
        """The model's whole task vector (float32): for small models and diagnostics only (an 8B one does
        not fit in memory; the store itself never builds one)."""
        self.ensure(model_id)
        files: dict[str, SafetensorsReader] = {}
        try:
            return {k: self._tau(model_id, k, files) for k in self.names}
        finally:
            for f in files.values():
                f.close()

    def state_dict(self, model_id: str) -> dict[str, torch.Tensor]:
        """The model's weights, each tensor in the base's dtype (what an engine loads)."""
        self.ensure(model_id)
        files: dict[str, SafetensorsReader] = {}
        try:
            return {k: self._tensor(model_id, k, files) for k in self.base.keys()}
        finally:
            for f in files.values():
                f.close()

    def export(self, model_id: str, out_dir: str | Path) -> Path:
        """Write the model as an HF directory (base's config/tokenizer + its weights file)."""
        out_dir = Path(out_dir)
        copy_side_files(self.base_dir, out_dir)
        r = self.recipes[model_id]
        if isinstance(r, MergeRecipe):
            self.ensure(model_id)
            tmp = out_dir / ".model.safetensors.tmp"
            shutil.copyfile(self.path(model_id), tmp)
            tmp.replace(out_dir / "model.safetensors")
        else:
            sd = self.state_dict(model_id)
            metas = {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()}
            with SafetensorsWriter(out_dir / "model.safetensors", metas, {"format": "pt", "cycleqd_id": model_id}) as w:
                for k, v in sd.items():
                    w.write(k, v)
        (out_dir / "cycleqd_recipe.json").write_text(json.dumps(self.lineage(model_id), indent=1, sort_keys=True))
        return out_dir

    # -- bounds ---------------------------------------------------------------------------------------
    def cached_ids(self) -> list[str]:
        """Children with a file, least recently used first."""
        files = sorted(self.storage_dir.glob("*.safetensors"), key=lambda f: f.stat().st_mtime_ns)
        return [f.name[: -len(".safetensors")] for f in files]

    def stored_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.storage_dir.glob("*.safetensors"))

    def evict(self, keep: Iterable[str] = (), protect: Iterable[str] = ()) -> list[str]:
        """Delete the least recently written children's files beyond ``cache_bytes``, never those in
        ``keep``; then, beyond ``disk_bytes``, those in ``keep`` too, oldest first, but never those in
        ``protect`` (jobs in flight, whose files a worker may be opening). A deleted model is rebuilt from
        its recipe if it is asked for again. Returns the ids."""
        keep, protect = set(keep), set(protect)
        files = sorted(self.storage_dir.glob("*.safetensors"), key=lambda f: f.stat().st_mtime_ns)
        sizes = {f: f.stat().st_size for f in files}
        total = sum(sizes.values())
        gone = []

        def drop(f: Path) -> None:
            nonlocal total
            f.unlink(missing_ok=True)
            total -= sizes[f]
            gone.append(f.name[: -len(".safetensors")])

        for f in files:
            if total <= self.cache_bytes:
                break
            if f.name[: -len(".safetensors")] not in keep:
                drop(f)
        if self.disk_bytes is not None:
            for f in files:
                if total <= self.disk_bytes:
                    break
                if f.exists() and f.name[: -len(".safetensors")] not in protect:
                    drop(f)
        return gone

    def discard_files(self) -> None:
        """Remove every materialised file (a finished run keeps only its exported final model)."""
        shutil.rmtree(self.storage_dir, ignore_errors=True)

    def close(self) -> None:
        self.base.close()
        for e in self._experts.values():
            e.close()
        if self._owns_dir:
            self.discard_files()
