import numpy as np
import pytest

from harness.qd.archive import GridArchive
from harness.qd.sampling import elite_weights_official, elite_weights_paper, sample_parents


def archive_with(points):
    a = GridArchive(task="a", behavior_tasks=["b"], bounds={"b": (0.0, 1.0)}, bins=10)
    for i, (qa, qb) in enumerate(points):
        a.add(f"m{i}", {"a": qa, "b": qb}, i)
    return a


def test_paper_weights_by_hand():
    a = archive_with([(0.2, 0.05), (0.6, 0.5), (1.0, 0.95)])
    el = a.elites()
    w = elite_weights_paper(a, el, ["a", "b"])
    # normalised columns: a: 0, .5, 1 ; b: 0, .5, 1 -> factors .5, .65, .8 each
    assert w == pytest.approx([0.5 * 0.5, 0.65 * 0.65, 0.8 * 0.8])


def test_constant_column_contributes_one():
    a = archive_with([(0.5, 0.05), (0.5, 0.95)])
    w = elite_weights_paper(a, a.elites(), ["a", "b"])
    assert w == pytest.approx([0.5, 0.8])


def test_official_weights_use_quality_and_bins():
    a = archive_with([(0.2, 0.05), (1.0, 0.95)])
    w = elite_weights_official(a, a.elites(), ["a", "b"])
    assert w == pytest.approx([0.5 * 0.5, 1.3 * 1.3])


def test_two_distinct_parents_and_bias_towards_good_elites():
    a = archive_with([(0.1, 0.05), (0.5, 0.45), (0.9, 0.95)])
    rng = np.random.default_rng(0)
    counts = {}
    for _ in range(3000):
        p = sample_parents(a, ["a", "b"], rng, "elite")
        assert p[0].model_id != p[1].model_id
        for e in p:
            counts[e.model_id] = counts.get(e.model_id, 0) + 1
    assert counts["m2"] > counts["m1"] > counts["m0"]
    rng = np.random.default_rng(0)
    uni = {}
    for _ in range(3000):
        for e in sample_parents(a, ["a", "b"], rng, "random"):
            uni[e.model_id] = uni.get(e.model_id, 0) + 1
    assert max(uni.values()) - min(uni.values()) < 300


def test_single_elite_is_used_twice():
    a = archive_with([(0.3, 0.3)])
    p = sample_parents(a, ["a", "b"], np.random.default_rng(0))
    assert p[0] is p[1]
