"""Shared fixtures: tiny random HF-style checkpoints built on the fly (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.merging.safetensors_io import save_state_dict


def write_model(d: Path, sd: dict[str, torch.Tensor]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "toy"}))
    save_state_dict(d / "model.safetensors", sd)
    return d


def toy_state_dict(seed: int, shapes=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {"a.weight": (6, 5), "b.weight": (4, 4), "norm.weight": (5,)}
    return {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}


@pytest.fixture
def toy_models(tmp_path):
    """base + two experts (float32) as HF directories."""
    base = toy_state_dict(0)
    e1 = {k: v + 0.1 * torch.randn_like(v) for k, v in base.items()}
    e2 = {k: v + 0.1 * torch.randn_like(v) for k, v in base.items()}
    return {
        "base": write_model(tmp_path / "base", base),
        "e1": write_model(tmp_path / "e1", e1),
        "e2": write_model(tmp_path / "e2", e2),
        "sd": {"base": base, "e1": e1, "e2": e2},
    }


REPO = Path(__file__).resolve().parents[1]
VECTOR_WORLD = REPO / "configs" / "vector_world.yaml"

import os as _os
import shutil as _shutil

SHARED_DATA = Path(_os.environ.get("CYCLEQD_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def mariadb_backend():
    """A private MariaDB server for the session; skipped with the reason where it cannot start."""
    if not _shutil.which("mariadbd"):
        pytest.skip("mariadbd not installed (envs/install-system-deps.sh installs it)")
    from envs.sql.mariadb import MariaDBBackend

    backend = MariaDBBackend()
    yield backend
    backend.close()
