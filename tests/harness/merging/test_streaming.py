import pytest
import torch

from harness.errors import CheckpointError
from harness.merging.generalized import merge_tensor
from harness.merging.safetensors_io import CheckpointReader
from harness.merging.streaming import merge_checkpoints
from harness.registry import MERGE_METHODS
from tests.conftest import toy_state_dict, write_model


@pytest.mark.parametrize("method,params", [("mean", {}), ("task_arithmetic", {"scale": 0.7}),
                                           ("ties", {"density": 0.5}), ("dare_linear", {"drop_p": 0.3, "seed": 5}),
                                           ("dare_ties", {"drop_p": 0.3, "seed": 5})])
def test_streamed_merge_matches_in_memory(toy_models, tmp_path, method, params):
    spec = MERGE_METHODS.get(method).spec(**params)
    merge_checkpoints(toy_models["base"], [toy_models["e1"], toy_models["e2"]], spec, tmp_path / "out")
    sd = toy_models["sd"]
    with CheckpointReader(tmp_path / "out") as r:
        for k, b in sd["base"].items():
            taus = [sd["e1"][k] - b, sd["e2"][k] - b]
            assert torch.equal(r.read(k), b + merge_tensor(taus, spec, k)), k
    assert (tmp_path / "out" / "config.json").exists()


def test_dtype_preserved(tmp_path):
    base = write_model(tmp_path / "b", toy_state_dict(0, dtype=torch.bfloat16))
    e = write_model(tmp_path / "e", toy_state_dict(1, dtype=torch.bfloat16))
    merge_checkpoints(base, [e], MERGE_METHODS.get("mean").spec(), tmp_path / "o")
    with CheckpointReader(tmp_path / "o") as r:
        assert all(r.read(k).dtype == torch.bfloat16 for k in r.keys())


def test_shape_mismatch_names_the_tensor(tmp_path, toy_models):
    bad = write_model(tmp_path / "bad", toy_state_dict(3, {"a.weight": (6, 5), "b.weight": (4, 3), "norm.weight": (5,)}))
    with pytest.raises(CheckpointError, match=r"'b.weight' has shape \[4, 3\], base has \[4, 4\]"):
        merge_checkpoints(toy_models["base"], [bad], MERGE_METHODS.get("mean").spec(), tmp_path / "o")


def test_key_mismatch_names_the_tensor(tmp_path, toy_models):
    bad = write_model(tmp_path / "bad", toy_state_dict(3, {"a.weight": (6, 5), "norm.weight": (5,)}))
    with pytest.raises(CheckpointError, match="missing tensor 'b.weight'"):
        merge_checkpoints(toy_models["base"], [bad], MERGE_METHODS.get("mean").spec(), tmp_path / "o")
    assert not (tmp_path / "o" / "model.safetensors").exists()
