import json

import pytest

from domains.vector_world import VectorWorldDomain
from harness.config import load_config
from harness.errors import ConfigError
from harness.runner.checkpoint import read_json
from harness.runner.runner import Runner, run_from_config
from tests.conftest import VECTOR_WORLD

QUICK = ["qd.generations=60", "runner.progress=false"]


def final_archives(run_dir):
    return read_json(run_dir / "checkpoint.json")["qd"]["archives"]


MONOTONE = [f"tasks.{i}.params.{k}=0" for i in range(3) for k in ("overshoot", "interference")]


def test_vector_world_cycleqd_does_its_job(tmp_path):
    """The mechanics, on the monotone world (no overshoot, no interference), where partial progress on every
    task pays: the archives fill and the search beats the experts and the mean merge. (On the default,
    non-monotone world it ends at the mean merge: README, "Vector world".)"""
    run_dir, res = run_from_config(VECTOR_WORLD, ["qd.generations=150", "runner.progress=false", *MONOTONE],
                                   run_dir=tmp_path / "r")
    rows = {r["model"]: r for r in res["rows"]}
    experts = [r for name, r in rows.items() if name.startswith("expert:")]
    cyc = rows["cycleqd"]
    for sp in ("opt", "test"):
        assert all(cyc[sp]["avg"] > e[sp]["avg"] + 0.1 for e in experts), sp
        assert cyc[sp]["avg"] > rows["mean_merge"][sp]["avg"] + 0.1, sp  # the search, not just merging
    # archives fill beyond the three seeds
    assert all(a["num_elites"] > 20 for a in res["archives"].values())
    for name in ("config.yaml", "environment.json", "results.json", "snapshots/gen_000000.json",
                 "snapshots/gen_000150.json", "final_model/model.safetensors", "leaderboard/leaderboard.md",
                 "leaderboard/progress.png"):
        assert (run_dir / name).exists(), name
    assert len(list((run_dir / "leaderboard").glob("elite_map_*.png"))) == 3


def test_same_seed_same_archive_other_seed_differs(tmp_path):
    a, _ = run_from_config(VECTOR_WORLD, QUICK, run_dir=tmp_path / "a")
    b, _ = run_from_config(VECTOR_WORLD, QUICK, run_dir=tmp_path / "b")
    c, _ = run_from_config(VECTOR_WORLD, QUICK + ["seed=1"], run_dir=tmp_path / "c")
    assert final_archives(a) == final_archives(b)
    assert final_archives(a) != final_archives(c)


def test_process_pool_is_deterministic_for_its_worker_count(tmp_path):
    over = QUICK + ["qd.generations=24", "runner.executor=process", "runner.workers=2"]
    a, _ = run_from_config(VECTOR_WORLD, over, run_dir=tmp_path / "a")
    b, _ = run_from_config(VECTOR_WORLD, [o.replace("executor=process", "executor=inline") for o in over],
                           run_dir=tmp_path / "b")
    assert final_archives(a) == final_archives(b)  # 2 in flight, in processes or inline: same sequence


def test_nan_children_are_rejected_and_recorded(tmp_path):
    run_dir, res = run_from_config(VECTOR_WORLD, QUICK + ["qd.generations=6", "qd.mutation=gaussian",
                                                          "qd.mutation_sigma=1e300"], run_dir=tmp_path / "r")
    hist = read_json(run_dir / "checkpoint.json")["qd"]["history"]
    children = [h for h in hist if h["kind"] == "child"]
    assert len(children) == 6 and all(h["error"].startswith("rejected:") and "NaN" in h["error"] for h in children)
    assert all(a["num_elites"] == 3 for a in res["archives"].values())  # only the experts


def test_refuses_to_optimise_on_test_split():
    with pytest.raises(ConfigError, match="runner.opt_split: 'test' is the test split"):
        load_config(VECTOR_WORLD, ["runner.opt_split=test"])
    load_config(VECTOR_WORLD, ["runner.opt_split=test", "runner.allow_test_split=true"])


def test_overrides_address_list_items_and_keep_interpolations():
    cfg = load_config(VECTOR_WORLD, ["tasks.1.params.dim=16", "run_dir=${name}-x", "qd.bounds.task0=[0.1,0.9]"])
    assert cfg.tasks[1].params.dim == 16 and cfg.tasks[0].params.dim == 32
    assert cfg.run_dir == f"{cfg.name}-x" and list(cfg.qd.bounds.task0) == [0.1, 0.9]


@pytest.mark.parametrize("override,match", [
    (["qd.bogus=1"], r"qd\.bogus"),
    (["qd.bins=0"], r"qd\.bins: must be >= 1"),
    (["qd.bins=abc"], r"qd\.bins"),
    (["qd.bounds.task0=[0.5,0.2]"], r"qd\.bounds\.task0: need \[lo, hi\] with lo < hi"),
    (["qd.sampler=best"], r"qd\.sampler: 'best' is not one of"),
    (["runner.workers=0"], r"runner\.workers"),
    (["tasks.x.params.dim=3"], r"Index 'x'"),
    (["tasks.9.params.dim=3"], r"tasks\[9\]"),
])
def test_bad_config_one_line_error(override, match):
    with pytest.raises(ConfigError, match=match) as ei:
        load_config(VECTOR_WORLD, override)
    assert "\n" not in str(ei.value)


def test_missing_expert_directory_is_named(tmp_path):
    from domains.vector_world import build_vector_world

    paths = build_vector_world(tmp_path / "world")
    cfg = load_config(VECTOR_WORLD, QUICK)
    cfg.model.builder = None
    cfg.model.base = str(paths["base"])
    cfg.model.experts = {"task0": str(paths["task0"]), "x": str(tmp_path / "missing")}
    with pytest.raises(Exception, match=r"model\.experts\.x: directory .*missing does not exist"):
        Runner.create(cfg, tmp_path / "run")


def test_refuses_to_clobber_an_existing_run(tmp_path):
    run_from_config(VECTOR_WORLD, QUICK + ["qd.generations=2"], run_dir=tmp_path / "r")
    with pytest.raises(ConfigError, match="already holds a run"):
        run_from_config(VECTOR_WORLD, QUICK, run_dir=tmp_path / "r")
    assert json.loads((tmp_path / "r" / "results.json").read_text())["generations"] == 2


def test_non_finite_operator_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="qd.mutation_sigma: must be a finite number"):
        load_config(VECTOR_WORLD, ["qd.mutation_sigma=inf"])


def test_progress_points_on_test_split_and_final_rows_only(tmp_path):
    run_dir, res = run_from_config(VECTOR_WORLD, QUICK + ["qd.generations=30", "runner.progress_every=10",
                                                          "runner.final_rows=final"], run_dir=tmp_path / "p")
    points = read_json(run_dir / "progress.json")
    assert [p["generation"] for p in points] == [10, 20, 30]
    assert all(p["split"] == "test" and 0 <= p["avg"] <= 1 for p in points)
    # the last point is the model the run returns, scored on the same split
    assert points[-1]["model_id"] == res["final_model_id"]
    assert points[-1]["avg"] == pytest.approx(res["rows"][0]["test"]["avg"])
    assert [r["model"] for r in res["rows"]] == ["cycleqd"]
    # reporting only: the archives are those of a run without progress points
    plain, _ = run_from_config(VECTOR_WORLD, QUICK + ["qd.generations=30"], run_dir=tmp_path / "q")
    assert final_archives(run_dir) == final_archives(plain)


def test_world_builder_may_ship_the_tasks_data_root(tmp_path, monkeypatch):
    from harness.registry import WORLD_BUILDERS
    from harness.runner.worker import resolve_world
    from harness.worlds import register_builder

    cfg = load_config(VECTOR_WORLD)
    base, experts, data_root = resolve_world(cfg, tmp_path)
    assert str(data_root) == cfg.data_root and "base" not in experts

    @register_builder("with_data")
    def _b(out_dir, **_):
        d = WORLD_BUILDERS.get("vector_world")(out_dir, world_seed=0, n_tasks=3, dim=32)
        return {**d, "data_root": tmp_path / "data"}

    try:
        cfg.model.builder.kind = "with_data"
        cfg.model.builder.params = {}
        base, experts, data_root = resolve_world(cfg, tmp_path)
        assert data_root == tmp_path / "data" and "data_root" not in experts and len(experts) == 3
    finally:
        WORLD_BUILDERS.unregister("with_data")


class BrokenSandboxDomain(VectorWorldDomain):
    """The vector-world task, but every fourth sample ends in ENV_ERROR (a sandbox that failed to start)."""

    def evaluate(self, state_dict, *, split):
        from harness.domain import SampleResult, SampleStatus, TaskResult

        res = super().evaluate(state_dict, split=split)
        samples = [SampleResult(s.sample_id, SampleStatus.ENV_ERROR, 0.0, {"error": "sandbox did not start"})
                   if i % 4 == 0 else s for i, s in enumerate(res.samples)]
        return TaskResult(sum(s.score for s in samples) / len(samples), samples)


def test_harness_failures_reject_an_evaluation_instead_of_scoring_it(tmp_path):
    broken = ["tasks.1.domain=tests.harness.runner.test_runner:BrokenSandboxDomain"]
    with pytest.raises(RuntimeError, match=r"'task1': \d+ of \d+ samples failed in the harness .*did not start"):
        run_from_config(VECTOR_WORLD, QUICK + ["qd.generations=2"] + broken, run_dir=tmp_path / "strict")
    # a tolerance the user chose: then it is scored (the failed samples count as 0)
    _, res = run_from_config(VECTOR_WORLD, QUICK + ["qd.generations=2", "runner.max_harness_failures=0.3"] + broken,
                             run_dir=tmp_path / "tolerant")
    assert "cycleqd" in {r["model"] for r in res["rows"]}
    with pytest.raises(ConfigError, match="max_harness_failures"):
        load_config(VECTOR_WORLD, ["runner.max_harness_failures=2"])
