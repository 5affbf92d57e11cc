import pytest
import torch

from harness.errors import CheckpointError, NonFiniteError
from harness.merging.generalized import MergeSpec
from harness.store.model_store import ModelStore
from harness.store.recipes import BASE_ID, MergeRecipe, MutationRecipe, expert_id, from_dict, recipe_id, to_dict
from tests.conftest import toy_state_dict, write_model


def store_for(tm, cache_bytes=1 << 20):
    return ModelStore(base_dir=tm["base"], experts={"e1": tm["e1"], "e2": tm["e2"]}, cache_bytes=cache_bytes)


def child(parents, weights, seed, kind="svd", sigma=0.1):
    return MergeRecipe(tuple(parents), MergeSpec(weights=tuple(weights), normalize=True),
                       MutationRecipe(kind=kind, seed=seed, w_max=0.3, sigma=sigma))


def test_expert_task_vector_and_state_dict(toy_models):
    s = store_for(toy_models)
    sd = toy_models["sd"]
    tv = s.task_vector(expert_id("e1"))
    assert torch.allclose(tv["a.weight"], sd["e1"]["a.weight"] - sd["base"]["a.weight"])
    assert torch.allclose(s.state_dict(expert_id("e1"))["a.weight"], sd["e1"]["a.weight"])
    assert all(torch.count_nonzero(v) == 0 for v in s.task_vector(BASE_ID).values())


def test_child_rebuilt_bit_identical_after_eviction(toy_models):
    s = store_for(toy_models)
    c1 = s.add(child([expert_id("e1"), expert_id("e2")], [1.02, 0.97], 5))
    c2 = s.add(child([c1, expert_id("e2")], [0.99, 1.01], 6))
    first = {k: v.clone() for k, v in s.task_vector(c2).items()}
    fresh = store_for(toy_models, cache_bytes=1)  # its own empty directory: the lineage is rebuilt
    fresh.register(s.lineage(c2))
    again = fresh.task_vector(c2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert fresh.materialisations == 2  # c2 and c1 (experts are read from their own files)
    assert fresh.evict() == [c1, c2] and fresh.cached_ids() == []  # everything beyond 1 byte goes
    assert all(torch.equal(first[k], v) for k, v in fresh.task_vector(c2).items())  # rebuilt, same bits
    assert fresh.materialisations == 4


def test_recipe_ids_are_content_addresses(toy_models):
    s = store_for(toy_models)
    r = child([expert_id("e1"), expert_id("e2")], [1.0, 1.0], 1)
    assert s.add(r) == s.add(from_dict(to_dict(r))) == recipe_id(r)
    assert s.add(child([expert_id("e1"), expert_id("e2")], [1.0, 1.0], 2)) != recipe_id(r)


def test_stored_children_are_bounded_in_bytes_and_pinned_ones_stay(toy_models):
    s = store_for(toy_models)
    ids = [s.add(child([expert_id("e1"), expert_id("e2")], [1.0, 1.0], i)) for i in range(6)]
    for i in ids:
        s.state_dict(i)
    one = s.path(ids[0]).stat().st_size
    s.cache_bytes = 3 * one
    gone = s.evict(keep={ids[0]})
    assert gone == ids[1:4]  # least recently written first; the pinned one stays
    assert s.cached_ids() == [ids[0], ids[4], ids[5]] and s.stored_bytes() <= s.cache_bytes
    s.close()
    assert not s.storage_dir.exists()  # a store's own temporary directory goes with it


def test_disk_budget_evicts_elites_too_but_not_jobs_in_flight(toy_models):
    """At paper scale elites are 16 GB files: past ``disk_bytes`` the oldest go (rebuilt from recipes, same
    bits), never a job in flight."""
    s = store_for(toy_models)
    ids = [s.add(child([expert_id("e1"), expert_id("e2")], [1.0, 1.0], i)) for i in range(6)]
    first = {i: {k: v.clone() for k, v in s.task_vector(i).items()} for i in ids}
    one = s.path(ids[0]).stat().st_size
    s.cache_bytes, s.disk_bytes = one, 3 * one
    gone = s.evict(keep=set(ids), protect={ids[1]})
    assert gone == [ids[0], ids[2], ids[3]] and s.cached_ids() == [ids[1], ids[4], ids[5]]
    assert s.stored_bytes() <= s.disk_bytes
    built = s.materialisations
    assert all(torch.equal(first[ids[0]][k], v) for k, v in s.task_vector(ids[0]).items())
    assert s.materialisations == built + 1
    s.disk_bytes = None  # no bound: elites stay whatever their bytes
    assert s.evict(keep=set(ids)) == []


def test_a_child_is_the_weights_that_were_scored(toy_models):
    """Its task vector is its stored weights minus the base: the state dict an engine got, and what the
    next generation merges."""
    s = store_for(toy_models)
    c = s.add(child([expert_id("e1"), expert_id("e2")], [1.0, 1.0], 3))
    sd, base = s.state_dict(c), s.base_tensors()
    tv = s.task_vector(c)
    assert all(torch.equal(tv[k], sd[k].float() - base[k].float()) for k in tv)
    assert all(sd[k].dtype == base[k].dtype for k in sd)


def test_deep_lineage_without_recursion_limit(toy_models):
    s = store_for(toy_models, cache_bytes=1)
    prev = expert_id("e1")
    for _ in range(1100):  # beyond the default recursion limit
        prev = s.add(MergeRecipe((prev, expert_id("e2")), MergeSpec(weights=(1.0, 0.0), normalize=True)))
    assert torch.allclose(s.task_vector(prev)["a.weight"], s.task_vector(expert_id("e1"))["a.weight"])


def test_nan_child_is_rejected_with_name(toy_models):
    s = store_for(toy_models)
    bad = s.add(child([expert_id("e1"), expert_id("e2")], [1.0, 1.0], 1, kind="gaussian", sigma=float("inf")))
    with pytest.raises(NonFiniteError, match=f"model {bad}: tensor 'a.weight'"):
        s.task_vector(bad)


def test_missing_and_incompatible_experts(toy_models, tmp_path):
    with pytest.raises(CheckpointError, match="model.experts.x: directory .* does not exist"):
        ModelStore(base_dir=toy_models["base"], experts={"x": tmp_path / "nope"})
    bad = write_model(tmp_path / "bad", toy_state_dict(1, {"a.weight": (6, 5), "b.weight": (4, 4), "norm.weight": (6,)}))
    with pytest.raises(CheckpointError, match="'norm.weight' has shape"):
        ModelStore(base_dir=toy_models["base"], experts={"bad": bad})


def test_export_round_trip(toy_models, tmp_path):
    s = store_for(toy_models)
    c = s.add(child([expert_id("e1"), expert_id("e2")], [1.0, 1.0], 3))
    out = s.export(c, tmp_path / "hf")
    from harness.merging.safetensors_io import CheckpointReader

    with CheckpointReader(out) as r:
        sd = s.state_dict(c)
        assert all(torch.equal(r.read(k), sd[k]) for k in sd)
    assert (out / "config.json").exists() and (out / "cycleqd_recipe.json").exists()


def test_bad_experts_are_refused_by_name(toy_models, tmp_path):
    from harness.errors import NonFiniteError

    nan = toy_state_dict(1)
    nan["b.weight"][0, 0] = float("nan")
    s = ModelStore(base_dir=toy_models["base"], experts={"nan": write_model(tmp_path / "nan", nan)})
    with pytest.raises(NonFiniteError, match=r"model.experts.nan: tensor 'b.weight' .* has NaN/Inf"):
        s.state_dict(expert_id("nan"))
    f16 = write_model(tmp_path / "f16", toy_state_dict(1, dtype=torch.float16))
    with pytest.raises(CheckpointError, match="is F16, base is F32"):
        ModelStore(base_dir=toy_models["base"], experts={"f16": f16})


def test_overlapping_tensor_offsets_are_refused(tmp_path):
    import json
    import struct

    from harness.merging.safetensors_io import SafetensorsReader

    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    raw = json.dumps(header).encode()
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(12))
    with pytest.raises(CheckpointError, match="tensors 'a' and 'b' overlap"):
        SafetensorsReader(tmp_path / "x.safetensors")


def test_device_is_checked(toy_models):
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="model.device: 'cuda' but no CUDA device is visible"):
            ModelStore(base_dir=toy_models["base"], experts={"e1": toy_models["e1"]}, device="cuda")
    assert ModelStore(base_dir=toy_models["base"], experts={}, device="auto").device.type in ("cpu", "cuda")
    with pytest.raises(Exception, match="model.device: 'tpu9'"):
        ModelStore(base_dir=toy_models["base"], experts={}, device="tpu9")
