"""The per-child cost estimate printed before a run: its cost model, and that a run writes it."""

from __future__ import annotations

import json
import logging

import pytest

from harness.runner import cost_estimate
from harness.runner.cost_estimate import CALIBRATION, estimate_child_cost
from harness.runner.runner import run_from_config
from tests.conftest import VECTOR_WORLD, toy_state_dict, write_model

SHAPES = {"big.weight": (1024, 1536), "small.weight": (512, 768), "norm.weight": (512,)}


@pytest.fixture
def model(tmp_path):
    return write_model(tmp_path / "base", toy_state_dict(0, SHAPES))


def _unit_timings(monkeypatch):
    """Every calibration takes exactly one second, so the estimate is the cost model alone."""
    monkeypatch.setattr(cost_estimate, "_best_of", lambda fn, repeats=3: 1.0)


def test_svd_mutations_scale_with_m_n_min_and_official_adds_the_experts_svd_once(model, monkeypatch):
    _unit_timings(monkeypatch)
    est = estimate_child_cost(model, "svd_official")
    # the big matrix is twice the calibration in each dimension: 8x its m * n * min(m, n); plus the calibration
    assert est.mutation_s == pytest.approx(8 + 1)
    assert est.expert_svd_s == pytest.approx(9)
    own = estimate_child_cost(model, "svd_additive")
    assert own.mutation_s == pytest.approx(9) and own.expert_svd_s == 0  # its SVD is part of every child
    assert est.checkpoint_bytes == sum(4 * (m * n) for m, n in [(1024, 1536), (512, 768)]) + 4 * 512
    assert est.merge_s > 0 and "svd_official" in est.line() and "cpu" in est.line()


def test_elementwise_and_no_mutation(model, monkeypatch):
    _unit_timings(monkeypatch)
    unit = CALIBRATION[0] * CALIBRATION[1]
    assert estimate_child_cost(model, "gaussian").mutation_s == pytest.approx((1024 * 1536 + 512 * 768) / unit)
    # the official Gaussian perturbs every parameter, vectors included
    assert estimate_child_cost(model, "gaussian_official").mutation_s == \
        pytest.approx((1024 * 1536 + 512 * 768 + 512) / unit)
    assert estimate_child_cost(model, "none").mutation_s == 0


def test_a_run_announces_and_keeps_its_estimate(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="cycleqd"):
        run_dir, _ = run_from_config(VECTOR_WORLD, ["qd.generations=2", "runner.progress=false"],
                                     run_dir=tmp_path / "r")
    est = json.loads((run_dir / "cost_estimate.json").read_text())
    assert est["mutation"] == "svd_additive"  # the vector world's
    assert est["checkpoint_bytes"] > 0 and est["mutation_s"] > 0 and est["expert_svd_s"] == 0
    assert any("per child on cpu, estimated" in r.getMessage() for r in caplog.records)
