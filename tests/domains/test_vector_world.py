import pytest
import torch

from domains.vector_world import VectorWorldDomain, base_weights, build_vector_world, task_directions
from harness.domain import Domain, DomainContext, TaskResult, build_domain, get_domain
from harness.errors import ConfigError
from harness.merging.safetensors_io import CheckpointReader

CTX = DomainContext(run_dir=None, seed=0, data_root=None)


def load(d):
    with CheckpointReader(d) as r:
        return {k: r.read(k) for k in r.keys()}


def test_experts_are_specialists_and_mean_merge_is_a_generalist(tmp_path):
    paths = build_vector_world(tmp_path)
    doms = [build_domain("vector_world", task=f"t{k}", ctx=CTX, params={"task_index": k}) for k in range(3)]
    base = load(paths["base"])
    experts = [load(paths[f"task{k}"]) for k in range(3)]
    for k, e in enumerate(experts):
        scores = [d.evaluate(e, split="test").quality for d in doms]
        assert scores[k] > 0.8 and all(s < 0.2 for j, s in enumerate(scores) if j != k)
    mean = {n: base[n] + sum(e[n] - base[n] for e in experts) / 3 for n in base}
    ms = [d.evaluate(mean, split="test").quality for d in doms]
    assert all(0.35 < s < 0.8 for s in ms)
    assert all(d.evaluate(base, split="opt").quality == 0 for d in doms)


def test_splits_are_disjoint_halves():
    d = build_domain("vector_world", task="t", ctx=CTX, params={"n_samples": 50})
    opt, test = set(d.splits["opt"].tolist()), set(d.splits["test"].tolist())
    assert not opt & test and len(opt) == 25 and len(opt | test) == 50


def test_builder_is_deterministic(tmp_path):
    a, b = build_vector_world(tmp_path / "a", world_seed=3), build_vector_world(tmp_path / "b", world_seed=3)
    assert all(torch.equal(load(a[k])["layers.0.weight"], load(b[k])["layers.0.weight"]) for k in a)


class Constant(Domain):
    def __init__(self, *, task, ctx, value: float = 0.5):
        super().__init__(task=task, ctx=ctx)
        self.value = value

    def evaluate(self, state_dict, *, split):
        return TaskResult(self.value)


def test_registry_errors_and_out_of_tree_reference():
    with pytest.raises(ConfigError, match="unknown domain 'nope'"):
        get_domain("nope")
    with pytest.raises(ConfigError, match="cannot import 'no.such' for 'no.such:Thing'"):
        get_domain("no.such:Thing")
    d = build_domain(f"{__name__}:Constant", task="c", ctx=CTX, params={"value": 0.25})
    assert d.evaluate({}, split="opt").quality == 0.25
    with pytest.raises(ConfigError, match=r"tasks\.c\.params"):
        build_domain(f"{__name__}:Constant", task="c", ctx=CTX, params={"valu": 1})


def test_scaling_alone_cannot_win_on_the_default_world(tmp_path):
    """Overshoot and interference: one lambda past the experts' scale loses, and per-task progress costs the
    other tasks, so the sum of task vectors does not solve everything."""
    base, dirs = base_weights(0, 32), task_directions(0, 32, 3)
    doms = [VectorWorldDomain(task=f"t{k}", ctx=DomainContext(None, 0, tmp_path),
                              params=VectorWorldDomain.Params(task_index=k)) for k in range(3)]

    def avg(lam):
        sd = {m: base[m] + lam * sum(d[m] for d in dirs) for m in dirs[0]}
        sd["norm.weight"] = base["norm.weight"]
        return sum(d.evaluate(sd, split="test").quality for d in doms) / 3

    assert avg(1.2) < avg(1.0) and avg(1.5) < avg(1.2)
    assert avg(1.0) < 0.9  # interference: the plain sum does not solve every easy sample
    flat = [VectorWorldDomain(task="t0", ctx=DomainContext(None, 0, tmp_path),
                              params=VectorWorldDomain.Params(task_index=0, overshoot=0.0, interference=0.0))]
    sd = {m: base[m] + 1.5 * sum(d[m] for d in dirs) for m in dirs[0]}
    assert flat[0].evaluate(sd, split="test").quality == 1.0  # the old world: scaling up always paid
