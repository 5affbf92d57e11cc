"""runner.score_cache: runs that share experts score them once; a hit changes nothing; changed weights miss."""

from harness.runner.checkpoint import read_json
from harness.runner.runner import run_from_config
from tests.conftest import VECTOR_WORLD

QUICK = ["qd.generations=8", "runner.progress=false", "runner.final_rows=all"]


def history(run_dir):
    return read_json(run_dir / "checkpoint.json")["qd"]["history"]


def test_a_second_run_reuses_the_experts_scores_and_ends_identical(tmp_path):
    cache = f"runner.score_cache={tmp_path / 'cache'}"
    a, res_a = run_from_config(VECTOR_WORLD, QUICK + [cache], run_dir=tmp_path / "a")
    assert not any(h.get("cached") for h in history(a))
    b, res_b = run_from_config(VECTOR_WORLD, QUICK + [cache, "qd.mutation=gaussian"], run_dir=tmp_path / "b")
    seeds = [h for h in history(b) if h["kind"] == "seed"]
    children = [h for h in history(b) if h["kind"] == "child"]
    assert len(seeds) == 3 and all(h.get("cached") for h in seeds)
    assert not any(h.get("cached") for h in children)  # gaussian children are new models
    # the cached run ends exactly where an uncached one does
    c, res_c = run_from_config(VECTOR_WORLD, QUICK + ["qd.mutation=gaussian"], run_dir=tmp_path / "c")
    assert read_json(b / "checkpoint.json")["qd"]["archives"] == read_json(c / "checkpoint.json")["qd"]["archives"]
    assert res_b["rows"] == res_c["rows"]
    # final rows of the same models on the same splits (base, experts, mean merge) were hits too
    assert [r["model"] for r in res_a["rows"]][:5] == [r["model"] for r in res_b["rows"]][:5]


def test_changed_expert_weights_miss_the_cache(tmp_path):
    from safetensors.torch import load_file

    from domains.vector_world import build_vector_world
    from harness.merging.safetensors_io import save_state_dict
    from harness.runner.score_cache import ScoreCache

    paths = build_vector_world(tmp_path / "world", world_seed=0, n_tasks=3, dim=32)
    experts = {k: v for k, v in paths.items() if k not in ("base", "data_root")}
    tasks = [{"name": "t", "domain": "vector_world", "params": {"world_seed": 0}}]
    kw = dict(tasks=tasks, seed=0, data_root=tmp_path, engine={}, base_dir=paths["base"], experts=experts)
    before = ScoreCache(tmp_path / "c", **kw).key("expert:task0", "opt")
    assert ScoreCache(tmp_path / "c", **kw).key("expert:task0", "opt") == before
    f = next(experts["task0"].glob("*.safetensors"))
    memo = (tmp_path / "c" / "weight_digests.json").read_text()
    assert str(f.resolve()) in memo  # digests remembered by size and mtime, not recomputed per run
    sd = load_file(str(f))
    save_state_dict(f, {k: v + 1e-3 for k, v in sd.items()})  # new mtime and content: digested again
    assert ScoreCache(tmp_path / "c", **kw).key("expert:task0", "opt") != before
    assert ScoreCache(tmp_path / "c", **{**kw, "seed": 1}).key("expert:task0", "opt") != before
    after = ScoreCache(tmp_path / "c", **kw).key("expert:task0", "opt")
    assert ScoreCache(tmp_path / "c", **kw, settings={"max_harness_failures": 0.3}).key("expert:task0", "opt") != after
    (tmp_path / "new_data_file.jsonl").write_text("{}")  # data under the data root changed
    assert ScoreCache(tmp_path / "c", **kw).key("expert:task0", "opt") != after
