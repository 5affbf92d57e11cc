import pytest
import torch

from harness.errors import ConfigError
from harness.merging.generalized import MergeSpec, merge_tensor
from harness.merging.sparsify import dare_drop, magnitude_trim
from harness.registry import MERGE_METHODS
from harness.seeding import tensor_generator

get_merge_method = MERGE_METHODS.get

T1 = torch.tensor([1.0, -2.0, 3.0, 0.5])
T2 = torch.tensor([3.0, 2.0, -1.0, 0.5])


def test_magnitude_trim_keeps_largest():
    assert torch.equal(magnitude_trim(torch.tensor([0.1, -5.0, 2.0, -0.3]), 0.5), torch.tensor([0.0, -5.0, 2.0, 0.0]))
    assert torch.equal(magnitude_trim(T1, 1.0), T1)
    assert torch.equal(magnitude_trim(T1, 0.0), torch.zeros(4))


def test_dare_drop_rescales_and_is_seeded():
    t = torch.ones(10000)
    a = dare_drop(t, 0.9, torch.Generator().manual_seed(0))
    b = dare_drop(t, 0.9, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    kept = a[a != 0]
    assert torch.allclose(kept, torch.full_like(kept, 10.0))
    assert abs(len(kept) / 10000 - 0.1) < 0.02
    assert a.mean().item() == pytest.approx(1.0, abs=0.1)  # unbiased in expectation


def test_mean():
    out = merge_tensor([T1, T2], get_merge_method("mean").spec(), "t")
    assert torch.allclose(out, torch.tensor([2.0, 0.0, 1.0, 0.5]))


def test_task_arithmetic_scale_and_weights():
    out = merge_tensor([T1, T2], get_merge_method("task_arithmetic").spec(scale=0.5, weights=(1.0, 2.0)), "t")
    assert torch.allclose(out, 0.5 * (T1 + 2 * T2))


def test_ties_by_hand():
    # density 1: no trimming. elected sign = sign(T1 + T2) = [+, 0, +, +]
    # entry 0: both positive -> mean(1, 3) = 2 ; entry 1: sum 0 -> no sign -> 0
    # entry 2: elected + -> only T1 agrees -> 3 ; entry 3: both agree -> 0.5
    out = merge_tensor([T1, T2], get_merge_method("ties").spec(density=1.0), "t")
    assert torch.allclose(out, torch.tensor([2.0, 0.0, 3.0, 0.5]))


def test_ties_with_trim():
    # density .5 -> T1 keeps [-2, 3] ; T2 keeps [3, 2] -> T1' = [0,-2,3,0], T2' = [3,2,0,0]
    # elected = sign([3, 0, 3, 0]) -> entry0: T2 only -> 3 ; entry1: 0 ; entry2: T1 -> 3 ; entry3: 0
    out = merge_tensor([T1, T2], get_merge_method("ties").spec(density=0.5), "t")
    assert torch.allclose(out, torch.tensor([3.0, 0.0, 3.0, 0.0]))


def test_dare_linear_equals_manual():
    spec = get_merge_method("dare_linear").spec(drop_p=0.5, seed=3)
    g = tensor_generator(3, "merge", "t")  # the one seeding rule: (seed, "merge", tensor name)
    out = merge_tensor([T1, T2], spec, "t")
    expected = dare_drop(T1, 0.5, g) + dare_drop(T2, 0.5, g)
    assert torch.allclose(out, expected)


def test_dare_ties_runs_and_zero_drop_equals_ties():
    out = merge_tensor([T1, T2], get_merge_method("dare_ties").spec(drop_p=0.0), "t")
    assert torch.allclose(out, merge_tensor([T1, T2], get_merge_method("ties").spec(density=1.0), "t"))


def test_registry_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown merge method 'slerp'"):
        get_merge_method("slerp")
    with pytest.raises(ValueError, match="unknown parameter 'density'"):
        MERGE_METHODS.get("mean").spec(density=0.3)
    with pytest.raises(ValueError, match="unknown consensus"):
        MergeSpec(consensus="vote")


def test_merge_source_errors_name_the_problem():
    from harness.merging.generalized import DifferenceTaskVectors, StackedTaskVectors, merge_source

    with pytest.raises(ValueError, match="no task vectors"):
        DifferenceTaskVectors([], torch.ones(3))
    with pytest.raises(ValueError, match="no task vectors"):
        StackedTaskVectors([])
    with pytest.raises(TypeError, match="add_base needs a DifferenceTaskVectors"):
        merge_source(StackedTaskVectors([torch.ones(3)]), MergeSpec(), "x", add_base=True)
    with pytest.raises(ValueError, match="shape"):
        DifferenceTaskVectors([torch.ones(4)], torch.ones(3))


def test_difference_source_with_the_base_as_a_parent_is_a_zero_task_vector():
    from harness.merging.generalized import DifferenceTaskVectors, merge_source

    base, m = torch.randn(50), torch.randn(50)
    got = merge_source(DifferenceTaskVectors([None, m], base), MergeSpec(normalize=True), "x")
    assert torch.equal(got, merge_tensor([torch.zeros(50), m - base], MergeSpec(normalize=True), "x"))


def test_dare_mask_does_not_depend_on_the_chunk(monkeypatch):
    import harness.merging.sparsify as sp
    from harness.merging.sparsify import dare_mask

    whole = dare_mask(1000, 0.4, torch.Generator().manual_seed(1))
    monkeypatch.setattr(sp, "CHUNK", 48)
    assert torch.equal(dare_mask(1000, 0.4, torch.Generator().manual_seed(1)), whole)
    assert torch.equal(whole, torch.rand(1000, generator=torch.Generator().manual_seed(1)) >= 0.4)


@pytest.mark.parametrize("method,params", [("ties", {"density": 0.3}), ("mean", {}), ("dare_ties", {"drop_p": 0.5}),
                                           ("task_arithmetic", {"scale": 0.5})])
def test_merge_never_writes_to_the_callers_task_vectors(method, params):
    """Blocks of float32 task vectors are views of the caller's tensors."""
    taus = [torch.randn(70000, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    before = [t.clone() for t in taus]
    merge_tensor(taus, get_merge_method(method).spec(**params), "x")
    assert all(torch.equal(a, b) for a, b in zip(taus, before))
