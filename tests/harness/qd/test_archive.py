import math

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.qd.archive import AddStatus, GridArchive, bounds_from_expert_scores


def make(bins=4, bounds=None):
    return GridArchive(task="a", behavior_tasks=["b", "c"], bounds=bounds or {"b": (0.0, 1.0), "c": (0.0, 1.0)},
                       bins=bins)


def test_index_uses_right_closed_bins_and_clips_per_axis():
    a = GridArchive(task="a", behavior_tasks=["b", "c"], bounds={"b": (0.0, 1.0), "c": (0.0, 10.0)}, bins=4)
    # edges b: 0, .25, .5, .75, 1 ; right=True: x == .25 falls in bin 0
    assert a.index_of({"b": 0.25, "c": 0.0}) == (0, 0)
    assert a.index_of({"b": 0.26, "c": 2.6}) == (1, 1)
    assert a.index_of({"b": -5.0, "c": 99.0}) == (0, 3)  # clipped on each axis with its own size
    assert a.index_of({"b": 1.0, "c": 10.0}) == (3, 3)


def test_add_statuses_strict_improvement():
    a = make()
    s = {"a": 0.5, "b": 0.1, "c": 0.1}
    assert a.add("m1", s, 1) == AddStatus.NEW
    assert a.add("m2", dict(s, a=0.5), 2) == AddStatus.NOT_ADDED  # equal is not an improvement
    assert a.add("m3", dict(s, a=0.4), 3) == AddStatus.NOT_ADDED
    assert a.add("m4", dict(s, a=0.6), 4) == AddStatus.IMPROVE_EXISTING
    assert [e.model_id for e in a.elites()] == ["m4"]


def test_stats_incremental_match_recomputation():
    rng = np.random.default_rng(0)
    a = make(bins=3)
    for i in range(200):
        a.add(f"m{i}", {"a": float(rng.random()), "b": float(rng.random()), "c": float(rng.random())}, i)
    qs = [e.quality for e in a.elites()]
    assert a.stats.num_elites == len(qs) == len(a)
    assert a.stats.coverage == pytest.approx(len(qs) / 9)
    assert a.stats.qd_score == pytest.approx(sum(qs))
    assert a.stats.obj_max == pytest.approx(max(qs))
    assert a.stats.obj_mean == pytest.approx(sum(qs) / len(qs))


def test_best_tie_goes_to_most_recent():
    a = make()
    a.add("old", {"a": 0.9, "b": 0.1, "c": 0.1}, 1)
    a.add("new", {"a": 0.9, "b": 0.9, "c": 0.9}, 5)
    assert a.best().model_id == "new"


def test_round_trip_dict_is_exact():
    a = make()
    for i, q in enumerate([0.1, 0.7, 0.3]):
        a.add(f"m{i}", {"a": q, "b": q, "c": 1 - q}, i)
    b = GridArchive.from_dict(a.to_dict())
    assert b.to_dict() == a.to_dict()
    assert np.array_equal(np.nan_to_num(b.grid(), nan=-1), np.nan_to_num(a.grid(), nan=-1))


@pytest.mark.parametrize("bounds", [(0.5, 0.5), (0.7, 0.2), (0.0, math.inf)])
def test_bad_bounds_name_the_axis(bounds):
    with pytest.raises(ConfigError, match=r"archive\.bounds\.b: lo must be < hi"):
        make(bounds={"b": bounds, "c": (0, 1)})


def test_non_finite_score_rejected():
    with pytest.raises(ValueError, match="not finite"):
        make().add("x", {"a": float("nan"), "b": 0.1, "c": 0.1}, 1)


def test_bounds_from_experts_paper_rule():
    scores = [{"b": 0.2}, {"b": 0.6}, {"b": 0.4}]
    assert bounds_from_expert_scores(scores, "b") == pytest.approx((0.85 * 0.2, 1.15 * 0.6))
    with pytest.raises(ConfigError, match="archive.bounds.b"):
        bounds_from_expert_scores([{"b": 0.0}, {"b": 0.0}], "b")
