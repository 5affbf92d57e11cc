import numpy as np
import pytest
import torch

from harness.merging.generalized import MergeSpec, merge_tensor
from harness.merging.mutations import is_matrix, svd_of
from harness.qd.operators import aggregation_weights, crossover_weights
from harness.registry import MUTATIONS
from harness.seeding import tensor_generator


def mutate_tensor(name, tau, kind, svd=None, **kw):
    return MUTATIONS.get(kind)(**kw)(name, tau, svd)


def test_crossover_is_normalised_linear_merge():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -2.0]])
    out = merge_tensor([a, b], MergeSpec(weights=(1.0, 3.0), normalize=True), "x")
    assert torch.allclose(out, (1 * a + 3 * b) / 4)


def test_crossover_weights_distribution():
    rng = np.random.default_rng(0)
    ws = np.array([crossover_weights(rng, 1.0, 0.03) for _ in range(4000)])
    assert ws.mean() == pytest.approx(1.0, abs=0.003)
    assert ws.std() == pytest.approx(0.03, rel=0.05)


def test_svd_paper_replaces_singular_values():
    tau = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    out = mutate_tensor("x", tau, "svd", w_max=0.3, seed=7)
    u, s, vh = torch.linalg.svd(tau, full_matrices=False)
    w = torch.rand(s.shape, generator=tensor_generator(7, "mutation", "x")) * 0.3
    assert torch.allclose(out, (u * (s * w)) @ vh, atol=1e-6)
    s_out = torch.linalg.svdvals(out)
    assert (s_out <= 0.3 * s.max() + 1e-6).all()  # every singular value scaled by w <= w_max


def test_svd_additive_scales_singular_values_up():
    tau = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    out = mutate_tensor("x", tau, "svd_additive", w_max=0.3, seed=7)
    u, s, vh = torch.linalg.svd(tau, full_matrices=False)
    w = torch.rand(s.shape, generator=tensor_generator(7, "mutation", "x")) * 0.3
    assert torch.allclose(out, (u * (s * (1 + w))) @ vh, atol=1e-5)


def test_svd_official_adds_expert_component():
    g = torch.Generator().manual_seed(2)
    tau, expert = torch.randn(5, 5, generator=g), torch.randn(5, 5, generator=g)
    svd = svd_of(expert)
    out = mutate_tensor("x", tau, "svd_official", svd, w_max=0.1, seed=3)
    u, s, vh = svd
    w = torch.rand(s.shape, generator=tensor_generator(3, "mutation", "x")) * 0.1
    assert torch.allclose(out, tau + (u * (s * w)) @ vh, atol=1e-6)


def test_vectors_and_rank_one_shapes_pass_through():
    v = torch.randn(8)
    for kind in ("svd", "gaussian"):
        assert mutate_tensor("n", v, kind, seed=1) is v
    assert not is_matrix(torch.zeros(1, 9)) and is_matrix(torch.zeros(2, 3, 3))


def test_conv_like_tensor_keeps_shape():
    t = torch.randn(4, 3, 2, 2)
    assert mutate_tensor("c", t, "svd", seed=0).shape == t.shape


def test_gaussian_scale_follows_rms():
    t = torch.randn(200, 200)
    out = mutate_tensor("g", t, "gaussian", sigma=0.1, seed=0)
    assert (out - t).std().item() == pytest.approx(0.1 * t.pow(2).mean().sqrt().item(), rel=0.05)


def test_mutation_depends_on_seed_and_name_only():
    t = torch.randn(5, 5)
    assert torch.equal(mutate_tensor("x", t, "svd", seed=11), mutate_tensor("x", t, "svd", seed=11))
    assert not torch.equal(mutate_tensor("x", t, "svd", seed=11), mutate_tensor("y", t, "svd", seed=11))


def test_aggregation_softmax():
    b = aggregation_weights([0.5, 0.7, 0.1])
    e = np.exp([0.5, 0.7, 0.1])
    assert b == pytest.approx(list(e / e.sum()))
    x, y = torch.ones(2, 2), 2 * torch.ones(2, 2)
    assert torch.allclose(merge_tensor([x, y], MergeSpec(weights=(0.25, 0.75)), "x"), 1.75 * torch.ones(2, 2))


def test_official_gaussian_is_absolute_and_reaches_vectors():
    t, v = torch.zeros(300, 300), torch.zeros(50)
    out = mutate_tensor("g", t, "gaussian_official", seed=0)
    assert out.std().item() == pytest.approx(3e-4, rel=0.05)  # absolute: a zero tensor is perturbed too
    assert mutate_tensor("v", v, "gaussian_official", seed=0).abs().sum() > 0  # every parameter, vectors too
    assert torch.equal(mutate_tensor("v", v, "gaussian", seed=0), v)  # the relative one leaves vectors alone


def test_each_mutation_declares_its_own_defaults():
    assert MUTATIONS.get("svd_official")(seed=0).w_max == 0.1
    assert MUTATIONS.get("svd_additive")(seed=0).w_max == 0.3 and MUTATIONS.get("svd")(seed=0).w_max == 0.3
    assert MUTATIONS.get("gaussian_official")(seed=0).sigma == 3e-4 and MUTATIONS.get("gaussian")(seed=0).sigma == 0.1
