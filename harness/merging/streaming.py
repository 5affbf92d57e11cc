"""Merge HF checkpoints from disk, one tensor at a time.

Memory stays at a few copies of the largest tensor: each parameter is read from the base and every model,
merged, cast back to the base's dtype and appended to the output file before the next one is read. This
is what lets an 8B merge run on a machine that cannot hold two 16 GB checkpoints.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch

from harness.merging.generalized import MergeSpec, _ties_block
from harness.merging.safetensors_io import (
    CheckpointReader,
    SafetensorsWriter,
    check_compatible,
)
from harness.merging.sparsify import CHUNK, apply_trim, high_bits, trim_keep_count, trim_plan
from harness.seeding import tensor_generator

# Files an HF model directory carries besides its weights; copied from the base so the output loads.
_SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


def copy_side_files(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in _SIDE_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)


def merge_checkpoints(
    base_dir: str | Path,
    model_dirs: Sequence[str | Path],
    spec: MergeSpec,
    out_dir: str | Path,
) -> Path:
    """Write ``base + merge(task vectors)`` as an HF directory at ``out_dir``; returns its weights file."""
    out_dir = Path(out_dir)
    base = CheckpointReader(base_dir)
    models = [CheckpointReader(d) for d in model_dirs]
    try:
        for m in models:
            check_compatible(base, m)
        copy_side_files(Path(base_dir), out_dir)
        names = base.keys()
        largest = max((base.meta(k).nbytes for k in names), default=0)
        # reads (base, each model), the output, the trim's bit histogram: buffers reused for every tensor
        scratch = [torch.empty(largest, dtype=torch.uint8) for _ in range(len(models) + 3)]
        out_path = out_dir / "model.safetensors"
        with SafetensorsWriter(out_path, {k: (base.meta(k).dtype, base.meta(k).shape) for k in names},
                               metadata={"format": "pt"}) as writer, _block_workers() as pool:
            for name in names:
                b = base.read(name, scratch[0])
                if not b.is_floating_point():
                    writer.write(name, b)
                    continue
                writer.write(name, _merge_one(name, b, models, spec, scratch[1:-2], scratch[-2], scratch[-1], pool))
        return out_path
    finally:
        base.close()
        for m in models:
            m.close()


@contextmanager
def _block_workers():
    """Blocks are independent, so they go to one worker thread per core, each running torch single-threaded:
    the same parallelism as torch's own threads without a barrier after every small operation (which costs
    a scheduling delay per operation when the cores are shared: 6-10x slower here under load)."""
    workers = max(1, torch.get_num_threads())
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield pool
    finally:
        torch.set_num_threads(before)


def _merge_one(name: str, base: torch.Tensor, models: Sequence[CheckpointReader], spec: MergeSpec,
               scratch: Sequence[torch.Tensor], out_buf: torch.Tensor, hi_buf: torch.Tensor,
               pool: ThreadPoolExecutor) -> torch.Tensor:
    """One parameter of the merged model, in the base's dtype: ``base + merge_tensor(task vectors)``, the
    same operations, seeding and bits as every other entry point, computed block by block (``CHUNK``
    entries) from the raw tensors as read (each in its scratch buffer) into ``out_buf``.

    A block's task vectors, sparsified copies and consensus buffers stay in the CPU's cache; no full-size
    float32 tensor exists. A magnitude trim first takes one pass per model for its threshold (the top 16
    bits of each magnitude into ``hi_buf`` and their histogram, then ``trim_plan``). DARE's masks are drawn
    first, model after model from the one stream per (seed, tensor name), as bytes (the stream does not
    depend on the block size)."""
    raws = [m.read(name, buf).reshape(-1) for m, buf in zip(models, scratch)]
    bflat = base.reshape(-1)
    n, nm = bflat.numel(), len(raws)
    weights = spec.weights if spec.weights is not None else (1.0,) * nm
    if len(weights) != nm:
        raise ValueError(f"merge: {len(weights)} weights for {nm} task vectors")
    ws = [float(w) for w in weights]
    coefs, divisor = spec.coefficients(nm)
    starts = range(0, n, CHUNK)

    def tau(i: int, s: int, e: int, bf: torch.Tensor | None = None) -> torch.Tensor:
        return raws[i][s:e].float() - (bflat[s:e].float() if bf is None else bf)

    def sparse(t: torch.Tensor, s: int, i: int) -> torch.Tensor:  # model i's block at s, sparsified
        return t

    if spec.sparsify == "magnitude":
        if not 0.0 <= spec.density <= 1.0:
            raise ValueError(f"density must be in [0, 1], got {spec.density}")
        k = trim_keep_count(n, spec.density, spec.trim_count)
        if k == 0:
            def sparse(t, s, i):
                return torch.zeros_like(t)
        elif k < n:
            hi = hi_buf[: 2 * n].view(torch.int16)
            plans = []
            for i in range(nm):
                counts = sum(pool.map(lambda s, i=i: high_bits(tau(i, s, s + CHUNK).abs_(), out=hi[s:s + CHUNK]),
                                      starts))
                plans.append(trim_plan(hi, counts, lambda at, i=i: (raws[i][at].float() - bflat[at].float()).abs_(),
                                       k))

            def sparse(t, s, i):
                return apply_trim(t, plans[i], s)
    elif spec.sparsify == "dare":
        p = spec.drop_p
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop probability must be in [0, 1), got {p}")
        gen = tensor_generator(spec.seed, "merge", name)
        masks = []
        for _ in range(nm):
            mask = torch.empty(n, dtype=torch.bool)
            for s in starts:
                torch.ge(torch.rand(min(CHUNK, n - s), generator=gen), p, out=mask[s:s + CHUNK])
            masks.append(mask)

        def sparse(t, s, i):
            out = t * masks[i][s:s + t.numel()].to(t.dtype)
            return out / (1.0 - p) if p > 0 else out

    out = out_buf[: base.nbytes].view(base.dtype)

    def block(s: int) -> None:
        e = min(n, s + CHUNK)
        bf = bflat[s:e].float()
        ts = [sparse(tau(i, s, e, bf), s, i) for i in range(nm)]
        if spec.consensus == "ties":
            merged = torch.empty_like(bf)
            _ties_block(ts, ws, spec.ties_zero_sign == "positive", merged)
            if spec.scale != 1.0:
                merged.mul_(spec.scale)
        else:
            merged = torch.zeros_like(bf)
            for c, t in zip(coefs, ts):
                merged.add_(t, alpha=c)
            if divisor != 1.0:
                merged.div_(divisor)
        out[s:e] = merged.add_(bf)

    for _ in pool.map(block, starts):
        pass
    return out.view(base.shape)
