"""The mini experiment end to end on a micro world: every table row, the HTML report, resume, regression."""

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("cma")

from leaderboards.mini_tables import ABLATIONS, CYCLEQD_ROW, PAPER_ABLATIONS, REGIME_ROWS, run_experiment  # noqa: E402
from leaderboards.regression import DEFAULT_TOLERANCES, compare  # noqa: E402
from tests.domains.test_os import rootfs_or_skip  # noqa: E402

MICRO_WORLD = {"n_train": 12, "n_noise": 6, "n_eval": 12, "vocab_size": 600, "max_len": 1024, "hidden": 32,
               "layers": 1, "heads": 2, "intermediate": 64, "pretrain_steps": 8, "finetune_steps": 4,
               "batch_size": 4, "warmup": 2}
MICRO = {"limit": 8, "generations": 2, "table1_generations": 3, "progress_every": 1, "cmaes_evals": 6,
         "bounds": [0.0, 1.0], "validation_fraction": 0.25}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    rootfs_or_skip()
    # the micro world is cached under its own recipe hash beside the real ones (a few MB)
    out = tmp_path_factory.mktemp("mini")
    return out, run_experiment("micro", 0, out, progress=False, world_params=MICRO_WORLD, variant=MICRO)


def test_tables_have_every_row_and_scores_in_range(experiment):
    out, rep = experiment
    t1 = rep["table1"]
    for label in ("Base model", "Expert: code", "Expert: OS", "Expert: DB", "Fine-tuning on all data",
                  "Merge: mean of task vectors", "CycleQD (3 generations)"):
        assert label in t1
    assert any(k.startswith("Merge: TIES") for k in t1) and any(k.startswith("Merge: DARE") for k in t1)
    for searcher in ("CMA-ES", "NSGA-II", "policy gradient"):
        assert any(k.startswith(f"Learned coefficients: {searcher} (w=") for k in t1), searcher
    assert list(rep["table2"]) == [a[0] for a in ABLATIONS]
    assert CYCLEQD_ROW in rep["table2"] and rep["cycleqd_row"] == "Table 1 CycleQD (3 generations)"
    final = json.loads((out / "qd_table1" / "results.json").read_text())
    assert final["generations"] == 3 and all("validation" in a for a in final["aggregation"].values())
    assert any(k.startswith("Merge: task arithmetic, one lambda tuned on opt (lambda=") for k in t1)
    reg = rep["regime"]  # the paper's regime, measured (it need not hold on a micro world)
    assert set(reg["checks"]) >= {"base_partly_solves_each_family", "mean_merge_keeps_half_the_gain"}
    assert reg["holds"] == (not reg["failed"]) and set(reg["tau_over_theta"]) == {"code", "os", "db"}
    assert all(-1.0 <= c <= 1.0 for c in reg["cosine"].values()) and len(reg["cosine"]) == 3
    assert "World regime" in (out / "tables.md").read_text()
    for table in (t1, rep["table2"]):
        for scores in table.values():
            assert set(scores) == {"mini-code", "mini-os", "mini-db"} and all(0 <= v <= 1 for v in scores.values())
    for name in ("tables.md", "table1.csv", "table2.csv", "report.json", "index.html", "qd_4/progress.json",
                 "qd_table1/progress.json"):
        assert (out / name).exists(), name
    html = (out / "index.html").read_text()
    assert html.count("<img src=\"data:image/png;base64,") >= 5  # bars, progress, three elite maps
    # children evaluated over the five runs (identical children of two runs are scored once)
    assert MICRO["generations"] <= rep["speed"]["children"] <= len(ABLATIONS) * MICRO["generations"] + 3
    assert rep["speed"]["generations_per_hour"] > 0
    assert rep["world"]["recipe"]["hidden"] == 32
    # the five runs share one score cache: the experts are scored by the first run only
    for i in range(len(ABLATIONS)):
        seeds = [h for h in json.loads((out / f"qd_{i}" / "checkpoint.json").read_text())["qd"]["history"]
                 if h["kind"] == "seed"]
        assert len(seeds) == 3 and all(bool(h.get("cached")) == (i > 0) for h in seeds), i


def test_rerun_reuses_everything_and_gives_the_same_tables(experiment):
    out, rep = experiment
    again = run_experiment("micro", 0, out, progress=False, world_params=MICRO_WORLD, variant=MICRO)
    assert again["table1"] == rep["table1"] and again["table2"] == rep["table2"]
    assert again["paired"] == rep["paired"]
    now = again["timings_this_call"]
    assert now["build_world"] < 30 and now["cycleqd_runs"] < 10
    # the report's timings are the experiment's: every call's seconds summed
    assert again["timings"]["total"] == pytest.approx(rep["timings"]["total"] + now["total"])


def test_cycleqd_is_compared_with_every_row_instance_by_instance(experiment):
    """The paired tables are built from per-instance verdicts that reproduce each row's scores: the
    difference of averages they report is the tables' own."""
    out, rep = experiment

    def avg(scores):
        return sum(scores.values()) / len(scores)

    for table, subject in (("table1", "CycleQD (3 generations)"), ("table2", CYCLEQD_ROW)):
        paired = rep["paired"][table]
        assert paired["subject"] == subject and not paired["skipped"]
        assert set(paired["rows"]) == set(rep[table]) - {subject}
        for label, r in paired["rows"].items():
            assert r["diff"] == pytest.approx(avg(rep[table][subject]) - avg(rep[table][label]), abs=1e-12)
            assert r["ci"][0] <= r["ci"][1] and r["verdict"] in ("above", "within", "below")
            assert r["instances"] == {"mini-code": 4, "mini-os": 4, "mini-db": 4}
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert verdicts["test:base"]["scores"] == rep["table1"]["Base model"]
    code = verdicts["test:base"]["verdicts"]["mini-code"]
    assert [s for _, s in code] and all(s in (0.0, 1.0) for _, s in code)
    assert sum(s for _, s in code) / len(code) == rep["table1"]["Base model"]["mini-code"]
    assert "paired on the test instances" in (out / "tables.md").read_text()


def test_rows_scored_before_verdicts_are_scored_again_and_must_agree(experiment, tmp_path):
    import shutil

    from harness.errors import HarnessError

    out, rep = experiment
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / "verdicts.json").unlink()
    again = run_experiment("micro", 0, old, progress=False, world_params=MICRO_WORLD, variant=MICRO)
    assert again["table1"] == rep["table1"] and again["paired"] == rep["paired"]
    # a saved row that the model no longer scores is an error, not a silent mix of two scorings
    (old / "verdicts.json").unlink()
    rows = json.loads((old / "rows.json").read_text())
    rows["test:base"]["mini-code"] = -1.0
    (old / "rows.json").write_text(json.dumps(rows))
    with pytest.raises(HarnessError, match="'base'.*not reproducible"):
        run_experiment("micro", 0, old, progress=False, world_params=MICRO_WORLD, variant=MICRO)


def test_a_cycleqd_row_must_be_the_runs_own_score_and_its_verdicts_follow_the_run(experiment, tmp_path):
    import shutil

    from harness.errors import HarnessError

    out, rep = experiment
    old = tmp_path / "old"
    shutil.copytree(out, old)
    key = "test:cycleqd:qd_table1"
    # verdicts kept with other scores (a run redone in place) are not reused: they are taken again
    verdicts = json.loads((old / "verdicts.json").read_text())
    verdicts[key]["scores"]["mini-os"] = -1.0
    verdicts[key]["verdicts"]["mini-os"] = []
    (old / "verdicts.json").write_text(json.dumps(verdicts))
    again = run_experiment("micro", 0, old, progress=False, world_params=MICRO_WORLD, variant=MICRO, tables="1")
    assert again["paired"]["table1"] == rep["paired"]["table1"]
    assert json.loads((old / "verdicts.json").read_text())[key] == json.loads((out / "verdicts.json").read_text())[key]
    # the run keeps its final model's verdicts; a run finished before it did has its exported model scored,
    # which gives the same verdicts
    results = json.loads((old / "qd_table1" / "results.json").read_text())
    final = next(r for r in results["rows"] if r["model"] == "cycleqd")
    assert final["verdicts"]["test"] == json.loads((out / "verdicts.json").read_text())[key]["verdicts"]
    del final["verdicts"]
    (old / "qd_table1" / "results.json").write_text(json.dumps(results))
    verdicts = json.loads((old / "verdicts.json").read_text())
    del verdicts[key]
    (old / "verdicts.json").write_text(json.dumps(verdicts))
    again = run_experiment("micro", 0, old, progress=False, world_params=MICRO_WORLD, variant=MICRO, tables="1")
    assert again["paired"]["table1"] == rep["paired"]["table1"]
    assert json.loads((old / "verdicts.json").read_text())[key] == json.loads((out / "verdicts.json").read_text())[key]
    # a saved row that is not the run's own result is refused, naming the row and what to do
    rows = json.loads((old / "rows.json").read_text())
    rows[key]["mini-db"] = -1.0
    (old / "rows.json").write_text(json.dumps(rows))
    with pytest.raises(HarnessError, match="'cycleqd:qd_table1'.*the run now says.*delete"):
        run_experiment("micro", 0, old, progress=False, world_params=MICRO_WORLD, variant=MICRO, tables="1")


def test_regression_check_passes_on_itself_and_names_a_shifted_cell(experiment):
    _, rep = experiment
    assert compare(rep, rep, **DEFAULT_TOLERANCES) == []
    ref = json.loads(json.dumps(rep))
    ref["table1"]["Expert: code"]["mini-code"] += 0.5
    ref["speed"]["child_to_reference_op"] = rep["speed"]["child_to_reference_op"] / 3
    problems = compare(rep, ref, **DEFAULT_TOLERANCES)
    assert any("table1: Expert: code / mini-code" in p for p in problems)
    assert any(p.startswith("speed:") for p in problems)
    # without a speed factor (what --check and CI use) only the scores are compared
    assert not [p for p in compare(rep, ref) if p.startswith("speed:")] and compare(rep, ref)


def test_the_speed_yardstick_is_single_threaded_and_leaves_torch_as_it_was(monkeypatch):
    """Two torch threads spin against any other job on a small machine (a reference once measured 14x slow
    that way): the yardstick runs its products on one thread and restores the caller's setting."""
    import torch

    from leaderboards import regression

    seen = []
    real_tanh = torch.tanh
    monkeypatch.setattr(regression.torch, "tanh", lambda x: seen.append(torch.get_num_threads()) or real_tanh(x))
    before = torch.get_num_threads()
    assert regression.reference_operation_seconds(repeats=1) > 0
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_table1_only_runs_no_table2_run_and_gives_the_same_table1(experiment, tmp_path):
    import shutil
    out, rep = experiment
    only = tmp_path / "only"
    shutil.copytree(out, only)
    for i in range(len(ABLATIONS)):
        shutil.rmtree(only / f"qd_{i}")
    again = run_experiment("micro", 0, only, progress=False, world_params=MICRO_WORLD, variant=MICRO, tables="1")
    assert again["table1"] == rep["table1"] and again["table2"] == {} and again["tables"] == "1"
    assert not any((only / f"qd_{i}").exists() for i in range(len(ABLATIONS)))
    assert again["cycleqd_row"] == "Table 1 CycleQD (3 generations)"
    assert "Not run (`--tables 1`" in (only / "tables.md").read_text() and "Not run" in (only / "index.html").read_text()
    with pytest.raises(ValueError, match="unknown tables"):
        run_experiment("micro", 0, only, progress=False, world_params=MICRO_WORLD, variant=MICRO, tables="3")


def test_table2_only_runs_the_five_paper_rows_and_the_regime_rows(experiment, tmp_path):
    import shutil
    out, rep = experiment
    only = tmp_path / "only2"
    shutil.copytree(out, only)
    for d in ("qd_5", "qd_6", "qd_table1"):
        shutil.rmtree(only / d)
    again = run_experiment("micro", 0, only, progress=False, world_params=MICRO_WORLD, variant=MICRO, tables="2")
    assert list(again["table2"]) == [a[0] for a in ABLATIONS[:PAPER_ABLATIONS]]
    assert again["table2"] == {k: rep["table2"][k] for k in again["table2"]}
    assert again["table1"] == {k: rep["table1"][k] for k in REGIME_ROWS}  # no other Table 1 row, no CycleQD
    assert not any((only / d).exists() for d in ("qd_5", "qd_6", "qd_table1"))
    assert again["regime"]["retention"] == rep["regime"]["retention"] and again["cycleqd_row"] == CYCLEQD_ROW
    assert list(again["paired"]) == ["table2"]
    assert "only the rows the regime needs" in (only / "tables.md").read_text()


def test_regime_only_pools_opt_and_test_and_scales_each_expert(tmp_path):
    rootfs_or_skip()
    rep = run_experiment("micro", 0, tmp_path, progress=False, world_params=MICRO_WORLD, variant=MICRO,
                         tables="regime")
    reg, tasks = rep["regime"], rep["tasks"]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert not list(tmp_path.glob("qd_*"))  # no CycleQD run
    for t in tasks:
        assert reg["instances"][t] == MICRO["limit"]  # opt and test halves, pooled
        base = (rows["opt:base"][t] + rows["test:base"][t]) / 2
        assert rep["scores"]["Base model"][t] == pytest.approx(base)
        assert set(reg["scaled_alone"][t]) == {"0.3333", "0.5000"}
    fam = dict(zip(tasks, ("code", "os", "db")))
    for t in tasks:
        gain = reg["expert_own"][t] - reg["base"][t]
        for a, frac in reg["scaled_alone"][t].items():
            if gain <= 0:
                assert frac is None
                continue
            key = f"{fam[t]}_alone_x{a}"
            q = (rows[f"opt:{key}"][t] + rows[f"test:{key}"][t]) / 2
            assert frac == pytest.approx((q - reg["base"][t]) / gain)
    md = (tmp_path / "tables.md").read_text()
    assert "World regime" in md and "Fraction of each expert's gain kept" in md
    assert "<img" in (tmp_path / "index.html").read_text()
    # --check: a regime report compares with a regime report only, cell by cell
    assert compare(rep, json.loads(json.dumps(rep))) == []
    moved = json.loads(json.dumps(rep))
    moved["scores"]["Base model"][tasks[0]] += 0.5
    assert [p for p in compare(rep, moved) if "Base model" in p]
    assert any("regime report" in p for p in compare(rep, {"variant": "micro", "seed": 0, "tasks": tasks}))


def test_a_run_directory_belongs_to_one_world(tmp_path):
    from harness.errors import ConfigError
    from leaderboards.mini_tables import claim_run_dir

    claim_run_dir(tmp_path / "run", "world-aaa")
    claim_run_dir(tmp_path / "run", "world-aaa")  # a rerun of the same world reuses it
    with pytest.raises(ConfigError, match="world-aaa, not world-bbb"):
        claim_run_dir(tmp_path / "run", "world-bbb")
    # folders written before the mark: the report names its world; rows alone name none
    old = tmp_path / "old"
    old.mkdir()
    (old / "report.json").write_text(json.dumps({"world": {"dir": "/cache/mini/world-ccc"}}))
    with pytest.raises(ConfigError, match="world-ccc, not world-aaa"):
        claim_run_dir(old, "world-aaa")
    claim_run_dir(old, "world-ccc")
    assert json.loads((old / "world.json").read_text()) == {"world": "world-ccc"}
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "rows.json").write_text("{}")
    with pytest.raises(ConfigError, match="unknown"):
        claim_run_dir(tmp_path / "rows", "world-aaa")


def test_world_overrides_are_checked_before_anything_runs():
    from harness.errors import ConfigError
    from leaderboards.mini_tables import world_overrides

    assert world_overrides("") == {}
    assert world_overrides('{"finetune_lr": 0.001}') == {"finetune_lr": 0.001}
    for bad, msg in (("{", "not JSON"), ("[1]", "JSON object"), ('{"finetune_rate": 1}', "finetune_rate")):
        with pytest.raises(ConfigError, match=msg):
            world_overrides(bad)


def test_two_sittings_join_into_the_one_experiment_and_refuse_another(experiment, tmp_path):
    import shutil

    from harness.cli import main
    from harness.errors import ConfigError
    from leaderboards.mini_sittings import join
    out, rep = experiment
    sit = {}
    for tables in ("1", "2"):
        sit[tables] = tmp_path / f"sitting{tables}"
        shutil.copytree(out, sit[tables])
        run_experiment("micro", 0, sit[tables], progress=False, world_params=MICRO_WORLD, variant=MICRO,
                       tables=tables)
    joined = join(sit["1"], sit["2"], tmp_path / "both")
    assert joined["tables"] == "1+2" and joined["table1"] == rep["table1"]
    assert joined["table2"] == {k: rep["table2"][k] for k in joined["table2"]} and len(joined["table2"]) == PAPER_ABLATIONS
    assert joined["paired"]["table1"] == rep["paired"]["table1"] and "table2" in joined["paired"]
    md = (tmp_path / "both" / "tables.md").read_text()
    assert "Mini Table 2: ablations" in md and "Not run" not in md
    verdicts = json.loads((tmp_path / "both" / "verdicts.json").read_text())
    assert set(verdicts) >= set(json.loads((sit["2"] / "verdicts.json").read_text()))
    assert main(["join", str(tmp_path / "cli"), str(sit["1"]), str(sit["2"])]) == 0
    # a Table 1 sitting given as Table 2, another seed, a shared row scored differently: refused by name
    with pytest.raises(ConfigError, match="no table 2"):
        join(sit["1"], sit["1"], tmp_path / "x")
    r2 = json.loads((sit["2"] / "report.json").read_text())
    for change, match in (({"seed": 1}, "differ in seed"),
                          ({"table1": {**r2["table1"], "Base model": {t: 0.0 for t in r2["tasks"]}}}, "'Base model'")):
        (sit["2"] / "report.json").write_text(json.dumps({**r2, **change}))
        with pytest.raises(ConfigError, match=match):
            join(sit["1"], sit["2"], tmp_path / "x")
