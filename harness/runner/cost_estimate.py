"""Before a run: how long will one child's merge and mutation take, for this model, on this device?

At 8B a child's merge reads three checkpoints and writes one, and an SVD-based mutation costs about
``m * n * min(m, n)`` multiply-adds per weight matrix: minutes on a CPU, under a second on a GPU. A user
should learn which of the two they are in before the first generation, not after an hour. The estimate
reads the model's shapes from the base checkpoint's header (no weights), times a read of up to
``READ_SAMPLE_BYTES`` of it, times the configured mutation on one ``CALIBRATION`` matrix on the store's
device, and scales each by the cost model of its kind (bytes for merging, ``m * n * min(m, n)`` for the
SVD reconstructions, ``m * n`` for element-wise noise). Small calibrations run less efficiently than big
matrices, so the estimate errs high. ``cycleqd bench scale`` measures the same quantities for real.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from harness.merging.mutations import svd_of
from harness.merging.safetensors_io import CheckpointReader
from harness.registry import MUTATIONS

READ_SAMPLE_BYTES = 256 << 20
CALIBRATION = (512, 768)  # the matrix the mutation is timed on
_CUBIC = {"svd", "svd_additive", "svd_official"}  # cost ~ m * n * min(m, n) per matrix
_SVD_PER_CHILD = {"svd", "svd_additive"}  # these take the child's own SVD every time


@dataclass(frozen=True)
class ChildCost:
    checkpoint_bytes: int
    merge_s: float
    mutation_s: float
    expert_svd_s: float  # once per expert, then cached on disk (svd_official only)
    read_bytes_per_s: float
    device: str
    mutation: str

    def line(self) -> str:
        once = f"; the experts' SVDs about {_secs(self.expert_svd_s)} each, once" if self.expert_svd_s else ""
        return (f"per child on {self.device}, estimated: merge ~{_secs(self.merge_s)} + mutation "
                f"({self.mutation}) ~{_secs(self.mutation_s)} for a {self.checkpoint_bytes / 1e6:.1f} MB model "
                f"(read {self.read_bytes_per_s / 1e9:.2f} GB/s here){once}")

    def to_dict(self) -> dict:
        return asdict(self)


def _secs(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 0.1 else f"{x:.1f} s"


def _best_of(fn, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def _unit(shape: tuple[int, ...], cubic: bool) -> float:
    m, n = shape[0], math.prod(shape[1:])
    return m * n * min(m, n) if cubic else m * n


def estimate_child_cost(base_dir: str | Path, mutation: str, device: torch.device | str = "cpu",
                        w_max: float | None = None) -> ChildCost:
    """The estimate for one child of the model at ``base_dir`` (a checkpoint directory)."""
    device = torch.device(device)
    with CheckpointReader(base_dir) as rd:
        metas = [rd.meta(k) for k in rd.keys()]
        sample, t0 = 0, time.perf_counter()
        for k in rd.keys():
            rd.read(k)
            sample += rd.meta(k).nbytes
            if sample >= READ_SAMPLE_BYTES:
                break
        read_bps = sample / max(time.perf_counter() - t0, 1e-6)
    total = sum(m.nbytes for m in metas)
    # a child reads the base and two parents and writes itself; the float32 arithmetic per element is
    # a few passes over memory, small beside the I/O on a CPU
    merge_s = 4 * total / read_bps

    cls = MUTATIONS.get(mutation)
    cubic = mutation in _CUBIC
    shapes = [tuple(m.shape) for m in metas]
    if cls.matrices_only:
        shapes = [s for s in shapes if len(s) >= 2 and s[0] > 1 and math.prod(s[1:]) > 1]  # as is_matrix
    gen = torch.Generator().manual_seed(0)
    tau = (torch.randn(CALIBRATION, generator=gen) * 1e-3).to(device)
    svd = svd_of(tau) if cls.needs_expert_svd else None
    mut = cls(seed=0, w_max=w_max)
    per_unit = _best_of(lambda: mut("calibration", tau, svd)) / _unit(CALIBRATION, cubic)
    mutation_s = 0.0 if mutation == "none" else per_unit * sum(_unit(s, cubic) for s in shapes)
    expert_svd_s = 0.0
    if cls.needs_expert_svd and mutation not in _SVD_PER_CHILD:
        svd_unit = _best_of(lambda: svd_of(tau), repeats=2) / _unit(CALIBRATION, True)
        expert_svd_s = svd_unit * sum(_unit(s, True) for s in shapes)
    return ChildCost(checkpoint_bytes=total, merge_s=merge_s, mutation_s=mutation_s, expert_svd_s=expert_svd_s,
                     read_bytes_per_s=read_bps, device=str(device), mutation=mutation)
