"""``cycleqd bench scale``: the paper-scale code path on a Llama-shaped model of N random parameters.

Why: an 8B run needs GPUs this project's CI does not have, but everything between the checkpoints and the
engine is the same code at any size: the store (tensor-by-tensor materialisation, elites on disk, the
byte-bounded cache), the merges, the mutations and the archives. This builds (and caches) a base and three
experts in bf16 with the shapes of a Llama of ~N parameters, runs G generations of CycleQD with a cache of
two task vectors, scores each child with a cheap deterministic probe instead of an LLM evaluation, and
measures what the scale argument needs: peak memory against one checkpoint, a child's merge / mutation /
export seconds against a plain read + write of one checkpoint, and the deepest lineage it handled.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.merging.safetensors_io import CheckpointReader, SafetensorsReader, SafetensorsWriter
from harness.qd.cycle import CycleQD, QDSettings
from harness.runner.checkpoint import atomic_write_json
from harness.seeding import tensor_generator
from harness.store.model_store import ModelStore
from harness.store.recipes import BASE_ID, MergeRecipe, expert_id

TASKS = ("code", "os", "db")
DISK_CHECKPOINTS = 8  # the store's disk budget, in checkpoints


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    kv_heads: int
    heads: int

    def tensors(self) -> dict[str, tuple[int, ...]]:
        h, i, kv = self.hidden, self.intermediate, self.hidden * self.kv_heads // self.heads
        out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, h)}
        for n in range(self.layers):
            p = f"model.layers.{n}."
            out.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                        p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                        p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                        p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
                        p + "post_attention_layernorm.weight": (h,)})
        out.update({"model.norm.weight": (h,), "lm_head.weight": (self.vocab, h)})
        return out

    def params(self) -> int:
        return sum(math.prod(s) for s in self.tensors().values())


def llama_shape(n_params: int) -> Shape:
    """A Llama-like shape of about ``n_params`` parameters: width from the size (1B -> 2048, as
    TinyLlama), MLP 2.75x, grouped KV (4 of 32 heads), vocab 32000, layers to fill the rest."""
    if n_params < 1e5:
        raise ValueError(f"bench scale: --params {n_params} is too small (>= 1e5)")
    hidden = max(64, int(2048 * (n_params / 1.1e9) ** (1 / 3)) // 64 * 64)
    heads = max(1, hidden // 64)
    kv = max(1, heads // 8)
    vocab = 32000 if n_params >= 5e7 else 1024
    inter = int(2.75 * hidden) // 64 * 64 or 64
    per_layer = 2 * hidden * hidden + 2 * hidden * (hidden * kv // heads) + 3 * hidden * inter + 2 * hidden
    layers = max(1, round((n_params - 2 * vocab * hidden - hidden) / per_layer))
    return Shape(hidden, inter, layers, vocab, kv, heads)


def _write_model(path: Path, shape: Shape, seed: int, base: Path | None, delta: float) -> None:
    """A bf16 checkpoint written tensor by tensor (never whole in memory): N(0, 0.02) weights, norms 1; an
    expert is the base plus N(0, delta) on every matrix."""
    metas = {k: (torch.bfloat16, s) for k, s in shape.tensors().items()}
    path.mkdir(parents=True, exist_ok=True)
    src = SafetensorsReader(base / "model.safetensors") if base else None
    try:
        with SafetensorsWriter(path / "model.safetensors", metas, {"format": "pt"}) as w:
            for k, s in metas.items():
                g = tensor_generator(seed, "bench", k)
                if src is not None:
                    t = src.read(k).float()
                    if len(s[1]) > 1:
                        t += delta * torch.randn(s[1], generator=g)
                else:
                    t = torch.ones(s[1]) if len(s[1]) == 1 else 0.02 * torch.randn(s[1], generator=g)
                w.write(k, t.to(torch.bfloat16))
    finally:
        if src is not None:
            src.close()
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": shape.hidden,
                                                  "num_hidden_layers": shape.layers, "vocab_size": shape.vocab}))


def build_models(root: Path, n_params: int) -> tuple[Path, dict[str, Path], Shape]:
    """Base and three experts under ``root/<shape>``, built once (a marker file says complete)."""
    shape = llama_shape(n_params)
    d = root / f"llama-{shape.hidden}x{shape.layers}-v{shape.vocab}"
    experts = {t: d / "experts" / t for t in TASKS}
    if not (d / "complete").exists():
        _write_model(d / "base", shape, 0, None, 0.0)
        for i, t in enumerate(TASKS):
            _write_model(experts[t], shape, 1 + i, d / "base", 0.002)
        (d / "complete").write_text("ok")
    return d / "base", experts, shape


class Probe:
    """A cheap deterministic score per task: how far a model moved toward that task's expert along a fixed
    sample of one matrix, squashed to [0, 1] (a stand-in for an LLM evaluation, so the bench times the
    store and the operators, not generation)."""

    def __init__(self, store: ModelStore, tensor: str, n: int = 4096):
        self.store, self.tensor = store, tensor
        base = store.tensor(BASE_ID, tensor).float().view(-1)
        g = tensor_generator(0, "probe")
        self.idx = torch.randint(0, base.numel(), (n,), generator=g)
        self.base = base[self.idx]
        self.dirs = {t: self._weights(expert_id(t)) - self.base for t in TASKS}

    def __call__(self, model_id: str) -> dict[str, float]:
        w = self._weights(model_id)
        out = {}
        for t, d in self.dirs.items():
            x = float(((w - self.base) * d).sum() / (d * d).sum())
            out[t] = 1 / (1 + math.exp(-4 * (x - 0.5)))
        return out

    def _weights(self, model_id: str) -> torch.Tensor:
        return self.store.tensor(model_id, self.tensor).float().view(-1)[self.idx]


def copy_seconds(model_dir: Path, out: Path) -> float:
    """A plain read of one checkpoint and an fsynced write of it: the floor a child cannot beat."""
    t0 = time.perf_counter()
    with CheckpointReader(model_dir) as r:
        metas = {k: (r.meta(k).dtype, r.meta(k).shape) for k in r.keys()}
        with SafetensorsWriter(out, metas) as w:
            for k in metas:
                w.write(k, r.read(k))
    dt = time.perf_counter() - t0
    out.unlink(missing_ok=True)
    return dt


def _peak_rss() -> int:
    """This process's peak resident set so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def depth(store: ModelStore, model_id: str, memo: dict) -> int:
    if model_id in memo:
        return memo[model_id]
    r = store.recipes[model_id]
    d = 1 + max(depth(store, p, memo) for p in r.parents) if isinstance(r, MergeRecipe) else 0
    memo[model_id] = d
    return d


def run(n_params: int, generations: int, mutation: str = "svd_official", root: Path | None = None,
        device: str = "cpu", progress: bool = True) -> dict:
    root = Path(root or Path.home() / ".cache" / "cycleqd" / "bench-scale")
    base, experts, shape = build_models(root, n_params)
    ckpt = (base / "model.safetensors").stat().st_size
    work = root / "work"
    # disk: two task vectors of cache, eight checkpoints in all (elites beyond that are rebuilt from recipes):
    # an unbounded elite store filled this machine's 37 GB free at 1e9 after 13 generations
    store = ModelStore(base_dir=base, experts=experts, cache_bytes=2 * ckpt, storage_dir=work / "store", device=device,
                       disk_bytes=DISK_CHECKPOINTS * ckpt)
    store.discard_files()  # a fresh run: nothing materialised from a previous one
    store.storage_dir.mkdir(parents=True, exist_ok=True)
    copy_s = copy_seconds(base, work / "copy.safetensors")
    probe = Probe(store, "model.layers.0.mlp.up_proj.weight")
    qd = CycleQD(QDSettings(tasks=list(TASKS), experts=[expert_id(t) for t in TASKS], generations=generations,
                            bins=5, mutation=mutation), store.add)
    memo: dict = {}
    children = []
    stored_max = 0
    while not qd.done:
        job = qd.ask()
        if job.kind == "seed":
            qd.tell(job, probe(job.model_id))
            continue
        s0, n0 = dict(store.seconds), store.materialisations
        t0 = time.perf_counter()
        scores = probe(job.model_id)
        wall = time.perf_counter() - t0
        qd.tell(job, scores)
        stored_max = max(stored_max, store.stored_bytes())  # before eviction: the disk's peak
        store.evict({e.model_id for a in qd.archives.values() for e in a.elites()})
        children.append({"merge": store.seconds["merge"] - s0["merge"],
                         # SVDs of the experts are computed once (reported apart), not per child
                         "mutation": store.seconds["mutation"] - s0["mutation"]
                         - (store.seconds["expert_svd"] - s0["expert_svd"]),
                         "wall": wall, "built": store.materialisations - n0})
        # what an hours-long run has measured so far survives it being stopped
        atomic_write_json(work / "progress.json", {
            "generation": job.generation, "generations": generations, "checkpoint_bytes": ckpt,
            "peak_rss_bytes": _peak_rss(), "copy_seconds": copy_s,
            "expert_svd_seconds": store.seconds["expert_svd"], "children": children}, indent=1)
        if progress:  # stderr: stdout is the one JSON line with --json
            print(f"bench scale: generation {job.generation}/{generations}: {wall:.1f} s "
                  f"(merge {children[-1]['merge']:.1f} s, mutation {children[-1]['mutation']:.1f} s, "
                  f"peak RSS {_peak_rss() / ckpt:.2f}x the checkpoint)", file=sys.stderr, flush=True)
    recipe, _ = qd.aggregate_recipe()
    final = store.add(recipe)
    t0 = time.perf_counter()
    store.export(final, work / "final")
    export_s = time.perf_counter() - t0
    # the final export in a fresh store (a new process would do this): its rebuilt ancestors
    fresh = ModelStore(base_dir=base, experts=experts, cache_bytes=2 * ckpt, storage_dir=work / "fresh")
    fresh.register(store.lineage(final))
    fresh.export(final, work / "final2")
    rebuilt = fresh.materialisations
    fresh.discard_files()
    store.discard_files()
    n = max(1, len(children))
    peak = _peak_rss()
    return {"params": shape.params(), "shape": shape.__dict__, "checkpoint_bytes": ckpt, "peak_rss_bytes": peak,
            "peak_rss_over_checkpoint": peak / ckpt,
            "child_seconds": {"merge": sum(c["merge"] for c in children) / n,
                              "mutation": sum(c["mutation"] for c in children) / n,
                              "export": export_s},
            "copy_seconds": copy_s, "expert_svd_seconds_once": store.seconds["expert_svd"],
            "merge_mutation_over_copy": (sum(c["merge"] + c["mutation"] for c in children) / n) / copy_s,
            "max_lineage_depth": max((depth(store, c, memo) for c in store.recipes), default=0),
            "fresh_export_rebuilt": rebuilt, "stored_bytes_max": stored_max,
            "disk_budget_bytes": store.disk_bytes, "generations": generations, "mutation": mutation,
            "device": str(store.device), "threads": torch.get_num_threads()}
