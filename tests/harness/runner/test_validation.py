"""The validation slice: disjoint from what the search sees, seeded, and the final merge's elites picked on it."""

import pytest

from harness.config import load_config
from harness.errors import ConfigError
from harness.qd.archive import GridArchive
from harness.runner.checkpoint import read_json
from harness.runner.runner import run_from_config
from harness.runner.validation import finalists, slice_of
from tests.conftest import VECTOR_WORLD


def test_search_and_val_partition_the_optimisation_split():
    opt = list(range(3, 103, 2))
    search = slice_of(opt, "search", fraction=0.25, seed=0, task="t")
    val = slice_of(opt, "val", fraction=0.25, seed=0, task="t")
    assert sorted(search + val) == opt and not set(search) & set(val)
    assert len(val) == round(0.25 * len(opt)) and search == sorted(search)
    assert val == slice_of(opt, "val", fraction=0.25, seed=0, task="t")
    assert val != slice_of(opt, "val", fraction=0.25, seed=1, task="t")
    assert val != slice_of(opt, "val", fraction=0.25, seed=0, task="u")
    assert len(slice_of([1, 2], "val", fraction=0.01, seed=0, task="t")) == 1  # at least one, never all
    assert len(slice_of([1, 2], "search", fraction=0.99, seed=0, task="t")) == 1
    with pytest.raises(ValueError, match="task 't': 1 optimisation instance"):
        slice_of([1], "val", fraction=0.5, seed=0, task="t")


def test_finalists_are_the_best_on_val_among_the_top_k():
    a = GridArchive(task="a", behavior_tasks=["b"], bounds={"b": (0.0, 1.0)}, bins=4)
    for i, (q, b) in enumerate([(0.9, 0.1), (0.8, 0.4), (0.7, 0.6), (0.95, 0.9)]):
        a.add(f"m{i}", {"a": q, "b": b}, i)
    val = {"m0": 0.2, "m1": 0.6, "m2": 0.99, "m3": None}
    chosen, rec = finalists({"a": a}, 3, lambda m: None if val[m] is None else {"a": val[m]})
    assert chosen["a"].model_id == "m1"  # m2 is not in the top 3 by search quality; m3 could not be scored
    assert [c["model"] for c in rec["a"]["candidates"]] == ["m3", "m0", "m1"]
    chosen, _ = finalists({"a": a}, 1, lambda m: {"a": 0.0})
    assert chosen["a"].model_id == a.best().model_id  # top 1: the paper's rule


def test_a_run_with_a_validation_slice(tmp_path):
    run_dir, res = run_from_config(VECTOR_WORLD, ["qd.generations=20", "runner.progress=false",
                                                  "runner.validation_fraction=0.25"], run_dir=tmp_path / "r")
    hist = read_json(run_dir / "checkpoint.json")["qd"]["history"]
    assert all(h["samples"]["total"] == 3 * 75 for h in hist if h["kind"] == "child")  # 100 opt - 25 val, x3 tasks
    for info in res["aggregation"].values():
        cands = info["validation"]["candidates"]
        assert 1 <= len(cands) <= 3 and all(c["val"] is not None for c in cands)
        assert info["model"] == info["validation"]["chosen"]
        assert max(c["val"] for c in cands) == next(c["val"] for c in cands if c["model"] == info["model"])
    rows = {r["model"]: r for r in res["rows"]}
    assert {f"best:{t}" for t in res["tasks"]} <= set(rows)


def test_validation_settings_are_checked():
    with pytest.raises(ConfigError, match="runner.validation_fraction"):
        load_config(VECTOR_WORLD, ["runner.validation_fraction=1.0"])
    with pytest.raises(ConfigError, match="runner.validation_top_k"):
        load_config(VECTOR_WORLD, ["runner.validation_top_k=0"])
