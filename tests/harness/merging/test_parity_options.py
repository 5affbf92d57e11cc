"""Merge details that decide bits: the mean's rounding, TIES's zero-sign rule, the trim count, the trim's
selection without a sort."""

import pytest
import torch

from harness.merging.generalized import MergeSpec, merge_tensor, merged_weights
from harness.merging.methods import MEAN, TIES
from harness.merging.sparsify import magnitude_trim, trim_keep_count


def test_bf16_mean_is_the_correctly_rounded_mean():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(512, 512, generator=g).to(torch.bfloat16)
    experts = [(base.float() + 0.02 * torch.randn(512, 512, generator=g)).to(torch.bfloat16) for _ in range(3)]
    taus = [e.float() - base.float() for e in experts]
    got = merged_weights(base, taus, MEAN.spec(), "w")
    exact = (base.double() + sum(t.double() for t in taus) / 3).to(torch.bfloat16)
    off = (got != exact).double().mean().item()
    assert off == 0.0, off  # summing tau_i / 3 gave 7e-5 of the entries one bf16 step off here


def test_ties_zero_sign_rule():
    a = torch.tensor([1.0, 2.0, 0.0, -3.0])
    b = torch.tensor([-1.0, 1.0, 0.0, 1.0])
    none = merge_tensor([a, b], TIES.spec(density=1.0), "w")
    pos = merge_tensor([a, b], TIES.spec(density=1.0, ties_zero_sign="positive"), "w")
    assert none.tolist() == [0.0, 1.5, 0.0, -3.0]  # entry 0: the weighted sum is exactly 0, no sign elected
    assert pos.tolist() == [1.0, 1.5, 0.0, -3.0]  # mergekit elects +; an all-zero entry stays 0
    with pytest.raises(ValueError, match="ties_zero_sign"):
        MergeSpec(ties_zero_sign="negative")


def test_trim_count_rules():
    assert trim_keep_count(10, 0.05) == 0 and trim_keep_count(10, 0.05, "floor_min1") == 1
    assert trim_keep_count(10, 0.26) == 3 and trim_keep_count(10, 0.26, "floor_min1") == 2
    t = torch.arange(1.0, 11.0)
    assert int((magnitude_trim(t, 0.05, "floor_min1") != 0).sum()) == 1
    assert int((magnitude_trim(t, 0.05) != 0).sum()) == 0
    with pytest.raises(ValueError, match="trim_count"):
        MergeSpec(trim_count="ceil")


@pytest.mark.parametrize("chunk", [1 << 18, 40])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_trim_keeps_the_largest_magnitudes_exactly_k_even_with_ties(density, chunk, monkeypatch):
    import harness.merging.sparsify as sp_mod

    monkeypatch.setattr(sp_mod, "CHUNK", chunk)  # blocks smaller than the tensor: ties spread over blocks
    g = torch.Generator().manual_seed(1)
    t = torch.randint(-4, 5, (33, 17), generator=g).float()  # many equal magnitudes
    out = magnitude_trim(t, density)
    k = trim_keep_count(t.numel(), density)
    kept = out != 0
    assert int(kept.sum()) == min(k, int((t != 0).sum())) or int(kept.sum()) == k
    assert torch.equal(out[kept], t[kept])
    if 0 < k < t.numel():
        assert t[kept].abs().min() >= t[~kept].abs().max()  # nothing dropped is larger than what is kept
    ref = torch.zeros_like(t).view(-1)
    idx = torch.topk(t.abs().view(-1), k).indices if k else torch.tensor([], dtype=torch.long)
    ref[idx] = t.view(-1)[idx]
    assert sorted(ref.abs().tolist()) == sorted(out.abs().view(-1).tolist())  # the same magnitudes as topk
