"""Merge HF checkpoints from disk, one tensor at a time.

Memory stays at a few copies of the largest tensor: each parameter is read from the base and every model,
merged, cast back to the base's dtype and appended to the output file before the next one is read. This
is what lets an 8B merge run on a machine that cannot hold two 16 GB checkpoints.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import torch

from harness.merging.generalized import MergeSpec, merge_tensor
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
        scratch = [torch.empty(largest, dtype=torch.uint8) for _ in range(len(models) + 1)]
        out_path = out_dir / "model.safetensors"
        with SafetensorsWriter(out_path, {k: (base.meta(k).dtype, base.meta(k).shape) for k in names},
                               metadata={"format": "pt"}) as writer:
            for name in names:
                b = base.read(name, scratch[0])
                if not b.is_floating_point():
                    writer.write(name, b)
                    continue
                writer.write(name, _merge_one(name, b, models, spec, scratch[1:]).to(b.dtype))
        return out_path
    finally:
        base.close()
        for m in models:
            m.close()


def _merge_one(name: str, base: torch.Tensor, models: Sequence[CheckpointReader], spec: MergeSpec,
               scratch: Sequence[torch.Tensor]) -> torch.Tensor:
    """One parameter of the merged model (float32): ``base + merge_tensor(task vectors)``, the same
    function and seeding as every other entry point. Linear merges consume the task vectors one at a time
    (each read into its scratch buffer), so only one model's tensor is live beside the running sum."""
    bf = base.float()
    taus = (m.read(name, buf).float().sub_(bf) for m, buf in zip(models, scratch))
    return merge_tensor(taus, spec, name).add_(bf)
