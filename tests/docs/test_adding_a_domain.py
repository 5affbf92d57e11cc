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
