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

from harness.merging.generalized import DifferenceTaskVectors, MergeSpec, merge_source
from harness.merging.safetensors_io import (
    CheckpointReader,
    SafetensorsWriter,
    check_compatible,
)

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
        entries = max((base.meta(k).numel for k in names), default=0)
        # reads (base, each model), the output: buffers reused for every tensor; the trim's 16 bits per entry
        scratch = [torch.empty(largest, dtype=torch.uint8) for _ in range(len(models) + 2)]
        scratch.append(torch.empty(2 * entries, dtype=torch.uint8))
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
    """One parameter of the merged model, in the base's dtype: ``base + merge(task vectors)`` by the one
    block-wise merge (``merge_source``), from the raw tensors as read (each in its scratch buffer) into
    ``out_buf``, the blocks on the pool's threads. No full-size float32 tensor exists."""
    raws = [m.read(name, buf) for m, buf in zip(models, scratch)]
    out = out_buf[: base.nbytes].view(base.dtype)
    hi = hi_buf[: 2 * base.numel()].view(torch.int16)
    merge_source(DifferenceTaskVectors(raws, base), spec, name, add_base=True, out=out, block_map=pool.map, hi=hi)
    return out.view(base.shape)
