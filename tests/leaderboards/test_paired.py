"""Paired bootstrap comparisons of two rows on the same instances."""

import pytest

from leaderboards.paired import MEAN, TaskStat, paired_difference, paired_markdown, paired_table


def rows(scores_by_task):
    return {t: [[i, s] for i, s in enumerate(scores)] for t, scores in scores_by_task.items()}


AGG = {"a": MEAN, "b": MEAN}


def test_identical_rows_differ_by_nothing_and_are_within():
    r = rows({"a": [1, 0, 1, 1, 0] * 4, "b": [0, 1] * 10})
    out = paired_difference(r, r, AGG, draws=200)
    assert out["diff"] == 0 and out["ci"] == [0.0, 0.0] and out["verdict"] == "within"
    assert out["instances"] == {"a": 20, "b": 20}


def test_a_row_better_on_many_instances_is_above_and_the_mirror_below():
    good = rows({"a": [1] * 30, "b": [1] * 30})
    bad = rows({"a": [1] * 10 + [0] * 20, "b": [1] * 15 + [0] * 15})
    up = paired_difference(good, bad, AGG, draws=500)
    assert up["verdict"] == "above" and up["ci"][0] > 0 and up["diff"] == pytest.approx((20 / 30 + 15 / 30) / 2)
    assert up["share_above_zero"] == 1.0
    down = paired_difference(bad, good, AGG, draws=500)
    assert down["verdict"] == "below" and down["ci"][1] < 0


def test_one_instance_apart_is_within():
    a = rows({"a": [1] + [0] * 59, "b": [0] * 60})
    b = rows({"a": [0] * 60, "b": [0] * 60})
    out = paired_difference(a, b, AGG, draws=500)
    assert out["diff"] > 0 and out["verdict"] == "within" and out["ci"][0] == 0.0


def test_the_same_seed_gives_the_same_interval_and_another_seed_may_not():
    a = rows({"a": [1, 0, 1, 0, 1, 1, 0, 1] * 3, "b": [0, 1, 1] * 8})
    b = rows({"a": [0, 0, 1, 1, 1, 0, 0, 1] * 3, "b": [1, 1, 0] * 8})
    one = paired_difference(a, b, AGG, draws=300, seed=3)
    assert paired_difference(a, b, AGG, draws=300, seed=3) == one
    assert paired_difference(a, b, AGG, draws=300, seed=4)["ci"] != one["ci"]


def test_the_domain_aggregate_is_used_on_each_draw():
    """A grouped quality (here the max, standing for DBBench's mean of category means) is what is resampled."""
    a, b = rows({"a": [0, 0, 0, 1]}), rows({"a": [0, 0, 0, 0]})
    out = paired_difference(a, b, {"a": TaskStat(aggregate=max)}, draws=400)
    assert out["diff"] == 1.0
    # the draws that miss the one solved instance give 0: about (3/4)^4 of them
    assert 0.55 < out["share_above_zero"] < 0.8


def test_rows_on_different_instances_or_without_verdicts_are_refused_with_the_task_named():
    a = rows({"a": [1, 0], "b": [1, 1]})
    shifted = {"a": [[1, 1], [2, 0]], "b": [[0, 1], [1, 1]]}
    with pytest.raises(ValueError, match="different instances of task 'a'"):
        paired_difference(a, shifted, AGG)
    with pytest.raises(ValueError, match="no per-instance verdicts for task 'b'"):
        paired_difference(a, {"a": a["a"], "b": None}, AGG)


def test_the_table_compares_the_subject_with_every_row_and_lists_the_ones_it_cannot():
    sub = rows({"a": [1] * 20, "b": [1] * 20})
    table = paired_table("CycleQD", {"CycleQD": sub, "Base": rows({"a": [0] * 20, "b": [0] * 20}), "Old": {},
                                     "Plugin": None}, AGG, draws=100)
    assert table["skipped"]["Plugin"] == "the row kept no per-instance verdicts"
    assert set(table["rows"]) == {"Base"} and table["rows"]["Base"]["verdict"] == "above"
    assert "no per-instance verdicts" in table["skipped"]["Old"]
    none = paired_table("CycleQD", {"CycleQD": None, "Base": sub}, AGG, draws=10)
    assert not none["rows"] and "the subject (CycleQD) kept no" in none["skipped"]["Base"]
    md = paired_markdown(table, "t")
    assert "| Base | +100.0 | [+100.0, +100.0] | above |" in md and "| Old | n/a |" in md


def test_instances_are_resampled_within_their_strata():
    """A quality that averages groups (DBBench's categories) keeps every group in every draw: with one
    instance per group and a grouped mean, every draw is the sample itself."""
    groups = TaskStat(prepare=lambda i, s: (i % 2, s), stratum=lambda i: i % 2,
                      aggregate=lambda items: sum(sum(s for g, s in items if g == k) / sum(1 for g, _ in items if g == k)
                                                  for k in (0, 1)) / 2)
    a, b = rows({"a": [1, 0]}), rows({"a": [0, 0]})
    out = paired_difference(a, b, {"a": groups}, draws=200)
    assert out["diff"] == 0.5 and out["ci"] == [0.5, 0.5] and out["share_above_zero"] == 1.0
    plain = paired_difference(a, b, {"a": TaskStat(prepare=groups.prepare, aggregate=lambda items: sum(s for _, s in items) / len(items))},
                              draws=200)
    assert plain["share_at_zero"] > 0.1  # without strata, draws that miss the solved instance exist


def test_the_db_domain_quality_is_what_the_bootstrap_recomputes(tmp_path):
    """domain_stat rebuilds a DBBench quality (mean of category means) from [[instance, score]] exactly."""
    import json
    import random

    from domains.db import overall_cat_accuracy
    from harness.domain import SampleResult, SampleStatus
    from leaderboards.paired import domain_stat

    class FakeDB:  # the two methods domain_stat uses, with DBDomain's own grouping
        cats = ["SELECT", "INSERT", "UPDATE", "SELECT", "SELECT", "UPDATE"] * 3

        def pending_result(self, index, score):
            return SampleResult(f"db/{index}", SampleStatus.SOLVED if score else SampleStatus.WRONG, float(score),
                                {"category": self.cats[index]})

        def aggregate(self, samples):
            return overall_cat_accuracy(samples)[0]

    rng = random.Random(0)
    pairs = [[i, float(rng.random() < 0.5)] for i in range(len(FakeDB.cats))]
    stat = domain_stat(FakeDB())
    want = FakeDB().aggregate([FakeDB().pending_result(i, s) for i, s in pairs])
    assert stat.aggregate([stat.prepare(i, s) for i, s in pairs]) == want
    assert len({stat.stratum(i) for i, _ in pairs}) == 3
    json.dumps(paired_difference({"db": pairs}, {"db": pairs}, {"db": stat}, draws=20))  # plain JSON out
