"""docs/adding-a-domain.md, executed: a domain and its model builder written outside this repository
(one module, one config) are found through the public interfaces and CycleQD runs on them."""

import textwrap

from harness.runner.runner import run_from_config

MODULE = '''
"""An out-of-tree toy domain: a model is one vector; task k is solved on sample s when the model's
k-th coordinate (relative to the base) exceeds the sample's threshold."""
import torch
from harness.domain import Domain, SampleResult, SampleStatus, TaskResult
from harness.merging.safetensors_io import save_state_dict


def build(out_dir, *, dim=4, n_experts=2):
    paths = {"base": out_dir / "base"}
    models = {"base": torch.zeros(dim, dim)}
    for k in range(n_experts):
        w = torch.zeros(dim, dim)
        w[k, k] = 1.0
        w[(k + 1) % dim, (k + 2) % dim] = 0.3  # something for the SVD mutation to act on
        models[f"expert{k}"] = w
        paths[f"expert{k}"] = out_dir / "experts" / f"expert{k}"
    for name, w in models.items():
        paths[name].mkdir(parents=True, exist_ok=True)
        save_state_dict(paths[name] / "model.safetensors", {"w": w})
    return paths


class ToyDomain(Domain):
    def __init__(self, *, task, ctx, index=0, n=40):
        super().__init__(task=task, ctx=ctx)
        self.index = index
        g = torch.Generator().manual_seed(index)
        self.theta = torch.rand(n, generator=g) ** 2

    def evaluate(self, state_dict, *, split):
        v = float(state_dict["w"][self.index, self.index])
        idx = range(0, len(self.theta), 2) if split == "opt" else range(1, len(self.theta), 2)
        res = [SampleResult(f"{self.task}/{i}", SampleStatus.SOLVED if v >= self.theta[i] else SampleStatus.WRONG,
                            float(v >= self.theta[i])) for i in idx]
        return TaskResult(sum(r.score for r in res) / len(res), res)
'''

CONFIG = """
name: toy_ext
seed: 0
model:
  builder: {kind: "toy_ext:build", params: {dim: 4, n_experts: 2}}
tasks:
  - {name: a, domain: "toy_ext:ToyDomain", params: {index: 0}}
  - {name: b, domain: "toy_ext:ToyDomain", params: {index: 1}}
qd: {generations: 20, bins: 5, mutation: svd_additive, bounds: {a: [0.0, 1.0], b: [0.0, 1.0]}}
runner: {progress: false}
"""


def test_out_of_tree_domain_runs_cycleqd(tmp_path, monkeypatch):
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "toy_ext.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "toy.yaml").write_text(CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path / "ext"))
    run_dir, res = run_from_config(tmp_path / "toy.yaml", run_dir=tmp_path / "run")
    rows = {r["model"]: r for r in res["rows"]}
    assert rows["expert:expert0"]["opt"]["a"] > rows["expert:expert0"]["opt"]["b"]
    assert res["generations"] == 20 and all(a["num_elites"] >= 2 for a in res["archives"].values())
    assert (run_dir / "final_model" / "model.safetensors").exists()


REGISTERED = '''
"""The same toy domain, registered by name with typed params (what docs/adding-a-domain.md shows)."""
from dataclasses import dataclass

import torch
from harness.domain import register_domain
from harness.worlds import register_builder
from toy_ext import ToyDomain, build


register_builder("toy_world")(build)


@register_domain("toy")
class TypedToyDomain(ToyDomain):
    @dataclass
    class Params:
        index: int = 0
        n: int = 40

        def validate(self):
            if self.n < 2:
                raise ValueError(f"n: need at least 2 samples, got {self.n}")

    def __init__(self, *, task, ctx, params):
        super().__init__(task=task, ctx=ctx, index=params.index, n=params.n)
        self.params = params
'''

REGISTERED_CONFIG = """
name: toy_named
plugins: [toy_named]
model:
  builder: {kind: toy_world, params: {dim: 4, n_experts: 2}}
tasks:
  - {name: a, domain: toy, params: {index: 0}}
  - {name: b, domain: toy, params: {index: 1}}
qd: {generations: 10, bins: 5, mutation: svd_additive, bounds: {a: [0.0, 1.0], b: [0.0, 1.0]}}
runner: {progress: false}
"""


def test_registered_domain_with_typed_params_via_plugins(tmp_path, monkeypatch):
    import pytest

    from harness.config import load_config
    from harness.errors import ConfigError
    from harness.registry import DOMAINS, WORLD_BUILDERS

    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "toy_ext.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "ext" / "toy_named.py").write_text(textwrap.dedent(REGISTERED))
    (tmp_path / "toy.yaml").write_text(REGISTERED_CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path / "ext"))
    try:
        with pytest.raises(ConfigError, match=r"tasks.0.params.index"):
            load_config(tmp_path / "toy.yaml", ["tasks.0.params.index=first"])  # typed: not an int
        with pytest.raises(ConfigError, match=r"tasks.1.params: n: need at least 2"):
            load_config(tmp_path / "toy.yaml", ["tasks.1.params.n=1"])
        _, res = run_from_config(tmp_path / "toy.yaml", run_dir=tmp_path / "run")
        assert res["generations"] == 10
    finally:
        DOMAINS.unregister("toy")
        WORLD_BUILDERS.unregister("toy_world")
