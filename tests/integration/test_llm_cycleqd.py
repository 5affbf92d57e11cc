"""The whole paper-scale path on a tiny model: CycleQD over the real DB and coding domains, the HF engine
swapping each child's weights in place, SQL in SQLite and code in the local sandbox."""

import pytest
import torch
import yaml

from harness.merging.safetensors_io import CheckpointReader, save_state_dict
from harness.runner.checkpoint import read_json
from harness.runner.runner import run_from_config
from tests.conftest import SHARED_DATA


def perturbed_copy(src, dst, seed):
    import shutil

    shutil.copytree(src, dst)
    with CheckpointReader(src) as r:
        sd = {k: r.read(k) for k in r.keys()}
    g = torch.Generator().manual_seed(seed)
    save_state_dict(dst / "model.safetensors", {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in sd.items()})
    return dst


def test_cycleqd_over_db_and_coding_with_a_tiny_llm(tiny_llm, tmp_path):
    from envs.sandbox.local import LocalSandbox

    if not LocalSandbox.available()[0] or not (SHARED_DATA / "agentbench_db").exists():
        pytest.skip("needs the local sandbox and the shared data")
    experts = {f"e{i}": str(perturbed_copy(tiny_llm, tmp_path / f"e{i}", i)) for i in range(2)}
    engine = {"chat_template": str(SHARED_DATA / "prompts" / "mbpp_chat_template.jinja"), "batch_size": 8}
    cfg = {
        "name": "tiny-llm", "data_root": str(SHARED_DATA),
        "model": {"base": str(tiny_llm), "experts": experts},
        "tasks": [
            {"name": "db", "domain": "db", "params": {"limit": 6, "max_round": 2, "max_new_tokens": 8, "engine": engine}},
            {"name": "coding", "domain": "coding", "params": {"limit": 4, "plus": False, "max_new_tokens": 8, "engine": engine}},
        ],
        "qd": {"generations": 3, "bins": 4, "bounds": {"db": [0.0, 1.0], "coding": [0.0, 1.0]}},
        "runner": {"progress": False},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir, res = run_from_config(path, run_dir=tmp_path / "run")
    hist = read_json(run_dir / "checkpoint.json")["qd"]["history"]
    children = [h for h in hist if h["kind"] == "child"]
    assert len(children) == 3 and all(h["error"] is None for h in children)
    assert all(0.0 <= h["scores"][t] <= 1.0 for h in children for t in ("db", "coding"))
    assert {r["model"] for r in res["rows"]} >= {"base", "expert:e0", "expert:e1", "cycleqd", "mean_merge"}
    assert (run_dir / "final_model" / "model.safetensors").exists()
