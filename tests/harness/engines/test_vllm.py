"""The vLLM engine against the HF engine on the same tiny model: same greedy text, weights swapped in place.

vLLM cannot live in the test venv on a CPU (``vllm-cpu`` needs its own venv), so the engine is driven by
``vllm_check.py`` in a Python that has it: ``$CYCLEQD_VLLM_PYTHON``, else this clone's ``.venv-vllm`` (made by
``envs/install-vllm-cpu.sh``, which the README's test command runs), else this Python if it has vLLM (a GPU
machine). Skipped, with the reason, where there is none.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.engines.vllm_engine import check_version, parse_version
from harness.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
CONVS = [[{"role": "user", "content": "SELECT count(*) FROM table;"}],
         [{"role": "system", "content": "be brief"}, {"role": "user", "content": "def add(a, b):\n    return a + b"}],
         [{"role": "user", "content": "ls -la /tmp && " * 40}]]


def vllm_python() -> str | None:
    if os.environ.get("CYCLEQD_VLLM_PYTHON"):
        return os.environ["CYCLEQD_VLLM_PYTHON"]
    venv = REPO / ".venv-vllm" / "bin" / "python"
    if venv.exists():
        return str(venv)
    return sys.executable if importlib.util.find_spec("vllm") else None


def test_version_check_refuses_old_and_reads_local_tags():
    assert parse_version("0.32.0+cpu") == (0, 32)
    with pytest.raises(ConfigError, match="older than 0.32"):
        check_version("0.10.2")
    with pytest.raises(ConfigError, match="cannot read"):
        check_version("dev")
    with pytest.warns(UserWarning, match="newer than"):
        check_version("1.0.0")


def test_tensor_parallel_is_refused_with_the_reason(tmp_path):
    from harness.engines.vllm_engine import VLLMEngine

    with pytest.raises(ConfigError, match="tensor parallelism"):
        VLLMEngine(str(tmp_path), tensor_parallel_size=2)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is importable here")
def test_missing_vllm_is_one_clear_error(tiny_llm):
    from harness.engines import build_engine

    with pytest.raises(ConfigError, match="vllm is not importable"):
        build_engine({"kind": "vllm", "model": str(tiny_llm)})


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    py = vllm_python()
    if py is None:
        pytest.skip("no Python with vLLM: run `bash envs/install-vllm-cpu.sh` (CPU) or pip install '.[vllm]' (GPU)")
    from safetensors.torch import load_file, save_file

    from harness.engines.hf import HFEngine
    from tests.conftest import build_tiny_llm

    d = tmp_path_factory.mktemp("vllm")
    # head size 32 (vLLM's CPU attention has a fixed set of head sizes); weights large enough that greedy
    # choices are not near-ties that float rounding could flip between the two engines
    model = build_tiny_llm(d / "model", seed=3, hidden=64, heads=2, kv_heads=1, init_std=0.5)
    (model / "check_convs.json").write_text(json.dumps(CONVS))
    a = load_file(str(model / "model.safetensors"))
    g = torch.Generator().manual_seed(7)
    b = {k: (v + 0.5 * torch.randn(v.shape, generator=g)).contiguous() for k, v in a.items()}
    save_file(b, str(d / "b.safetensors"))
    hf = HFEngine(str(model), batch_size=4)
    expected = {"a": hf.generate(CONVS, max_new_tokens=12), "a_stop": hf.generate(CONVS, max_new_tokens=12, stop=["a", "e"])}
    hf.load_state_dict(b)
    expected["b"] = hf.generate(CONVS, max_new_tokens=12)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([py, str(Path(__file__).with_name("vllm_check.py")), str(model), str(d / "b.safetensors"),
                           str(d / "out.json")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((d / "out.json").read_text()), expected


def test_vllm_greedy_equals_hf_greedy(vllm_run):
    got, expected = vllm_run
    assert got["a"] == expected["a"]
    assert got["a_stop"] == expected["a_stop"]


def test_vllm_weights_swapped_in_place_match_hf_with_the_same_weights(vllm_run):
    got, expected = vllm_run
    assert got["b"] != got["a"]  # the swap changed the model ...
    assert got["b"] == expected["b"]  # ... into exactly the HF model with those weights (no stale KV cache)
    assert got["a_again"] == got["a"]
    assert got["same_llm"] and got["loads"] == 2  # one engine, never rebuilt
    assert got["shared_across_templates"]  # another chat template: the same vllm.LLM


def test_vllm_context_limit_and_bad_state_dicts(vllm_run):
    got, _ = vllm_run
    assert got["context"] == [False, True]
    assert "lacks parameter" in got["errors"]["missing"]
    assert "'model.norm.weight' has shape [3]" in got["errors"]["shape"]
    assert "unexpected tensor 'model.stray'" in got["errors"]["extra"]
