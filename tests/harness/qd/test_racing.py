"""Exact racing: the gate's rule, the bounds, and a run that ends with the archives of the same run without it."""

import pytest

from domains.db import overall_cat_accuracy
from harness.domain import Domain, SampleResult, SampleStatus, TaskResult, register_domain
from harness.errors import ConfigError
from harness.qd.archive import GridArchive
from harness.qd.racing import ArchiveGate, Reach, any_could_enter, reach
from harness.runner.checkpoint import read_json
from harness.runner.runner import run_from_config
from tests.conftest import VECTOR_WORLD


def archive_with(cells: dict[tuple[float, float], float]) -> GridArchive:
    """Archive "a" over behaviours b, c in [0, 1] with 2 bins each; cells given by a behaviour point."""
    a = GridArchive(task="a", behavior_tasks=["b", "c"], bounds={"b": (0.0, 1.0), "c": (0.0, 1.0)}, bins=2)
    for i, ((b, c), q) in enumerate(cells.items()):
        a.add(f"m{i}", {"a": q, "b": b, "c": c}, 0)
    return a


def test_gate_needs_every_reachable_cell_occupied_by_an_elite_at_least_as_good():
    full = archive_with({(0.2, 0.2): 0.5, (0.2, 0.8): 0.5, (0.8, 0.2): 0.5, (0.8, 0.8): 0.9})
    gate = ArchiveGate.from_dict(ArchiveGate.of(full).to_dict())
    assert gate == ArchiveGate.of(full)
    # reaches the lower-left cell only: its incumbent (0.5) is at least the best the child could score
    assert not gate.could_enter({"a": Reach(0.0, 0.5), "b": Reach(0.1, 0.3), "c": Reach(0.0, 0.4)})
    # strictly better is possible: the child could still enter
    assert gate.could_enter({"a": Reach(0.0, 0.5000001), "b": Reach(0.1, 0.3), "c": Reach(0.0, 0.4)})
    # the bounds reach a second cell, whose incumbent is worse than 0.55: could enter
    assert gate.could_enter({"a": Reach(0.0, 0.55), "b": Reach(0.1, 0.3), "c": Reach(0.3, 0.9)})
    # reaching the 0.9 cell does not help a child whose best is 0.5
    assert not gate.could_enter({"a": Reach(0.0, 0.5), "b": Reach(0.1, 0.9), "c": Reach(0.1, 0.9)})
    # values outside the axis clip to its end cells, as in GridArchive.index_of
    assert not gate.could_enter({"a": Reach(0.0, 0.4), "b": Reach(-5.0, -1.0), "c": Reach(2.0, 3.0)})


def test_values_between_bins_do_not_open_the_empty_cells_between_them():
    a = GridArchive(task="a", behavior_tasks=["b"], bounds={"b": (0.0, 1.0)}, bins=4)
    for q, b in [(0.9, 0.1), (0.9, 0.9)]:
        a.add(f"m{b}", {"a": q, "b": b}, 0)
    gate = ArchiveGate.of(a)
    assert gate.could_enter({"a": Reach(0.0, 0.5), "b": Reach(0.1, 0.9)})  # the interval reaches empty bins
    assert not gate.could_enter({"a": Reach(0.0, 0.5), "b": Reach(0.1, 0.9, (0.1, 0.9))})  # the values do not


def test_an_empty_reachable_cell_always_lets_the_child_in():
    gate = ArchiveGate.of(archive_with({(0.2, 0.2): 1.0, (0.2, 0.8): 1.0, (0.8, 0.2): 1.0}))
    assert not gate.could_enter({"a": Reach(0.0, 0.0), "b": Reach(0.0, 0.4), "c": Reach(0.0, 1.0)})
    assert gate.could_enter({"a": Reach(0.0, 0.0), "b": Reach(0.0, 0.6), "c": Reach(0.0, 0.6)})  # (0.8, 0.8) is empty
    assert any_could_enter([ArchiveGate.of(archive_with({})), gate], {"a": Reach(0.0, 0.0), "b": Reach(0, 0), "c": Reach(0, 0)})


class _Binary(Domain):
    """A domain whose quality is the mean of binary scores (the default ``aggregate``)."""

    def evaluate(self, state_dict, *, split):
        raise NotImplementedError


def test_reach_holds_the_final_score_bit_for_bit():
    dom = _Binary(task="t", ctx=None)
    planned = list(range(7))
    final = [SampleResult(f"t/{i}", SampleStatus.SOLVED if i % 3 else SampleStatus.WRONG, float(bool(i % 3)))
             for i in planned]
    q = dom.aggregate(final)
    for k in range(len(planned) + 1):
        r = reach(dom, final[:k], planned)
        assert r.lo <= q <= r.hi and q in r.values
        assert len(r.values) == len(planned) - k + 1  # a mean of 0/1 verdicts: pending + 1 values
    assert reach(dom, final, planned) == Reach(q, q, (q,))
    assert reach(dom, [], planned).values == tuple(j / 7 for j in range(8))
    soft = [SampleResult("t/0", SampleStatus.WRONG, 0.5)]
    assert reach(dom, soft, planned).values is None  # not 0/1 verdicts: the interval only


def test_reach_enumerates_per_group_for_a_category_mean():
    """DB's quality is the mean of per-category means: values come from counts per category."""
    class Cats(_Binary):
        cats = ["SELECT", "INSERT", "SELECT", "UPDATE", "INSERT", "SELECT"]

        def aggregate(self, samples):
            return overall_cat_accuracy(samples)[0]

        def pending_result(self, index, score):
            return SampleResult(f"db/{index}", SampleStatus.WRONG, score, {"category": self.cats[index]})

    dom = Cats(task="db", ctx=None)
    planned = list(range(6))
    actual = [SampleResult(f"db/{i}", SampleStatus.WRONG, s, {"category": dom.cats[i]})
              for i, s in enumerate([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])]
    q = dom.aggregate(actual)
    for k in range(6):
        r = reach(dom, actual[:k], planned)
        assert q in r.values and r.lo <= q <= r.hi


RACE = ["qd.generations=60", "qd.bins=3", "runner.progress=false", "runner.race_chunk=10"]


def test_a_raced_run_ends_with_the_archives_of_the_same_run_without_racing(tmp_path):
    """The coarse grid fills fast, so many children meet only better incumbents and are stopped early."""
    raced, res_r = run_from_config(VECTOR_WORLD, RACE + ["runner.race=true"], run_dir=tmp_path / "raced")
    full, res_f = run_from_config(VECTOR_WORLD, RACE + ["runner.race=false"], run_dir=tmp_path / "full")
    qd_r = read_json(raced / "checkpoint.json")["qd"]
    qd_f = read_json(full / "checkpoint.json")["qd"]
    assert qd_r["archives"] == qd_f["archives"]
    assert res_r["rows"] == res_f["rows"]
    children_r = [h for h in qd_r["history"] if h["kind"] == "child"]
    children_f = [h for h in qd_f["history"] if h["kind"] == "child"]
    stopped = [h for h in children_r if "raced" in h]
    assert stopped and all(h["scores"] is None and h["error"] is None and not h["added"] for h in stopped)
    assert all(h["samples"]["evaluated"] < h["samples"]["total"] for h in stopped)
    # a stopped child is one the full evaluation rejected everywhere, with scores inside its bounds
    by_job = {h["job"]: h for h in children_f}
    for h in stopped:
        twin = by_job[h["job"]]
        assert twin["model"] == h["model"] and not any(twin["added"].values())
        for t, (lo, hi, *values) in h["raced"].items():
            assert lo <= twin["scores"][t] <= hi and (not values or twin["scores"][t] in values[0])
    evaluated = sum(h["samples"]["evaluated"] for h in children_r)
    assert evaluated < sum(h["samples"]["evaluated"] for h in children_f) == sum(h["samples"]["total"] for h in children_f)


def test_racing_in_a_configured_task_order_keeps_the_archives(tmp_path):
    over = RACE + ["runner.race_order=[task2,task0,task1]"]
    raced, _ = run_from_config(VECTOR_WORLD, over + ["runner.race=true"], run_dir=tmp_path / "raced")
    full, _ = run_from_config(VECTOR_WORLD, over + ["runner.race=false"], run_dir=tmp_path / "full")
    qd_r = read_json(raced / "checkpoint.json")["qd"]
    assert qd_r["archives"] == read_json(full / "checkpoint.json")["qd"]["archives"]
    assert any("raced" in h for h in qd_r["history"])
    with pytest.raises(ConfigError, match="runner.race_order: must list every task once"):
        run_from_config(VECTOR_WORLD, RACE + ["runner.race_order=[task2,task0]"], run_dir=tmp_path / "bad")


def test_chunked_scores_equal_whole_split_scores_where_batches_do_not_matter(tmp_path):
    a, res_a = run_from_config(VECTOR_WORLD, ["qd.generations=12", "runner.progress=false"], run_dir=tmp_path / "a")
    b, res_b = run_from_config(VECTOR_WORLD, ["qd.generations=12", "runner.progress=false", "runner.race_chunk=7"],
                               run_dir=tmp_path / "b")
    assert read_json(a / "checkpoint.json")["qd"]["archives"] == read_json(b / "checkpoint.json")["qd"]["archives"]


def test_race_chunk_refuses_a_domain_that_scores_only_whole_splits(tmp_path):
    @register_domain("whole_only_for_racing_test")
    class WholeOnly(Domain):
        def evaluate(self, state_dict, *, split):
            return TaskResult(0.5, [])

    over = ["runner.progress=false", "runner.race_chunk=5", "tasks.0.domain=whole_only_for_racing_test",
            "tasks.0.params={}"]
    with pytest.raises(ConfigError, match="runner.race_chunk: task 'task0'.*cannot be scored in chunks"):
        run_from_config(VECTOR_WORLD, over, run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused at load, before the run directory is written


def test_race_chunk_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="runner.race_chunk: must be >= 1"):
        run_from_config(VECTOR_WORLD, ["runner.race_chunk=0"], run_dir=tmp_path / "r")
