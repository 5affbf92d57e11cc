"""One named merge, every entry point, the same bits: the library function, the streamed checkpoint merge
(``cycleqd merge``), the model store's recipes (CycleQD children, the final aggregate, the runner's mean
row) and the leaderboards' baselines and searchers (``MethodContext.merge``)."""

from types import SimpleNamespace

import pytest
import torch

from harness.cli import main
from harness.merging.generalized import merged_weights
from harness.merging.safetensors_io import CheckpointReader
from harness.merging.streaming import merge_checkpoints
from harness.registry import MERGE_METHODS
from harness.store.model_store import ModelStore
from harness.store.recipes import MergeRecipe, expert_id
from leaderboards.methods import MethodContext
from tests.conftest import toy_state_dict, write_model

CASES = [("mean", {}), ("task_arithmetic", {"scale": 0.7, "weights": (0.6, 1.3)}), ("ties", {"density": 0.5}),
         ("dare_linear", {"drop_p": 0.3, "seed": 5}), ("dare_ties", {"drop_p": 0.3, "seed": 5, "scale": 1.1})]


def _cli_params(params: dict) -> list[str]:
    out = []
    for k, v in params.items():
        out += ["--param", f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("method,params", CASES, ids=[c[0] for c in CASES])
def test_every_entry_point_builds_the_same_tensors(tmp_path, method, params, dtype):
    shapes = {"a.weight": (16, 12), "b.weight": (8, 8), "norm.weight": (12,)}
    base = toy_state_dict(0, shapes, dtype)
    experts = {n: {k: (v.float() + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i))).to(dtype)
                   for k, v in base.items()} for i, n in enumerate(("e1", "e2"), 1)}
    dirs = {"base": write_model(tmp_path / "base", base), **{n: write_model(tmp_path / n, sd) for n, sd in experts.items()}}
    spec = MERGE_METHODS.get(method).spec(**params)

    # 1. the library, tensor by tensor
    library = {k: merged_weights(b, [experts["e1"][k].float() - b.float(), experts["e2"][k].float() - b.float()], spec, k)
               for k, b in base.items()}
    # 2. the streamed merge and the CLI that calls it
    merge_checkpoints(dirs["base"], [dirs["e1"], dirs["e2"]], spec, tmp_path / "streamed")
    assert main(["merge", method, "--base", str(dirs["base"]), "--out", str(tmp_path / "cli"),
                 *_cli_params(params), str(dirs["e1"]), str(dirs["e2"])]) == 0
    # 3. the model store (a recipe), 4. the leaderboards' method context over the same store
    store = ModelStore(base_dir=dirs["base"], experts={n: dirs[n] for n in ("e1", "e2")})
    stored = store.state_dict(store.add(MergeRecipe((expert_id("e1"), expert_id("e2")), spec)))
    ctx = MethodContext(evaluator=SimpleNamespace(store=store), experts=(expert_id("e1"), expert_id("e2")),
                        tasks=[], seed=0, budget=0, book=None, out_dir=tmp_path)
    via_method = store.state_dict(ctx.merge(spec))

    for where in ("streamed", "cli"):
        with CheckpointReader(tmp_path / where) as r:
            for k in base:
                assert torch.equal(r.read(k), library[k]), (where, k)
    for k in base:
        assert library[k].dtype == dtype
        assert torch.equal(stored[k], library[k]), ("store", k)
        assert torch.equal(via_method[k], library[k]), ("method", k)
    store.close()


def test_dare_masks_follow_the_seed_and_the_tensor_name_only(toy_models):
    """The one seeding rule: a DARE mask depends on (spec seed, "merge", tensor name), not on the order in
    which tensors are visited or on the entry point."""
    base = toy_models["sd"]["base"]
    taus = {k: [toy_models["sd"]["e1"][k] - b, toy_models["sd"]["e2"][k] - b] for k, b in base.items()}
    spec = MERGE_METHODS.get("dare_linear").spec(drop_p=0.5, seed=3)
    forward = {k: merged_weights(base[k], taus[k], spec, k) for k in base}
    backward = {k: merged_weights(base[k], taus[k], spec, k) for k in reversed(list(base))}
    assert all(torch.equal(forward[k], backward[k]) for k in base)
    other = MERGE_METHODS.get("dare_linear").spec(drop_p=0.5, seed=4)
    assert not torch.equal(merged_weights(base["a.weight"], taus["a.weight"], other, "a.weight"), forward["a.weight"])


@pytest.mark.parametrize("chunk", [48, 1 << 18])
@pytest.mark.parametrize("method,params", CASES + [("ties", {"density": 0.3, "trim_count": "floor_min1",
                                                            "ties_zero_sign": "positive", "weights": (0.6, 0.4)})],
                         ids=[c[0] for c in CASES] + ["ties_mergekit_rules"])
def test_block_wise_streamed_merge_is_the_library_merge(tmp_path, monkeypatch, method, params, chunk):
    """The one merge works in blocks of CHUNK entries (the trim's threshold, DARE's masks and the
    consensus span blocks); streamed with blocks far smaller than the tensors it gives the bits of the
    in-memory merge in one block, also where many magnitudes tie at the trim threshold (quantized task
    vectors)."""
    import harness.merging.generalized as gen_mod
    import harness.merging.sparsify as sp_mod

    for mod in (gen_mod, sp_mod):
        monkeypatch.setattr(mod, "CHUNK", chunk)
    g = torch.Generator().manual_seed(7)
    shapes = {"a.weight": (37, 29), "b.weight": (5, 3), "norm.weight": (101,)}
    base = {k: (0.02 * torch.randn(s, generator=g)).to(torch.bfloat16) for k, s in shapes.items()}
    experts = {n: {k: (v.float() + 0.01 * torch.randint(-3, 4, v.shape, generator=g)).to(torch.bfloat16)
                   for k, v in base.items()} for n in ("e1", "e2")}
    dirs = {"base": write_model(tmp_path / "base", base), **{n: write_model(tmp_path / n, sd) for n, sd in experts.items()}}
    spec = MERGE_METHODS.get(method).spec(**params)
    merge_checkpoints(dirs["base"], [dirs["e1"], dirs["e2"]], spec, tmp_path / "out")
    for mod in (gen_mod, sp_mod):
        monkeypatch.setattr(mod, "CHUNK", 1 << 30)  # the library's reference in one block
    with CheckpointReader(tmp_path / "out") as r:
        for k, b in base.items():
            lib = merged_weights(b, [experts[n][k].float() - b.float() for n in ("e1", "e2")], spec, k)
            assert torch.equal(r.read(k), lib), k
