"""The retention leaderboard end to end on tiny models: a finished-run directory made here (base, two
experts, a final model), a local task from data we write, offline; and the paper spec's refusal offline.

lm-eval is the optional 'lmeval' extra (not in 'test': see tests/harness/test_retention.py); skipped without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

pytest.importorskip("lm_eval", reason="lm-eval is the optional 'lmeval' extra: pip install -e '.[lmeval]'")

from harness.config import load_config  # noqa: E402
from harness.errors import ConfigError  # noqa: E402
from harness.merging.safetensors_io import CheckpointReader, save_state_dict  # noqa: E402
from leaderboards.retention import compare, load_spec, run_retention  # noqa: E402
from tests.conftest import REPO, VECTOR_WORLD  # noqa: E402
from tests.harness.test_retention import CHOICE_YAML, prefers  # noqa: E402

SPEC = """name: tiny-retention
network: false
batch_size: 4
limit: {quick: 6, full: null}
tasks_from: tests.leaderboards.test_retention:tiny_tasks
categories:
  Choice: [{task: tiny_choice, metric: acc}]
  Empty: []
"""


def tiny_tasks(base, limit=None, seed=0) -> Path:
    """``tasks_from`` for the spec above: the A-is-right choice task, written beside the models."""
    d = Path(base).parent / "tasks"
    d.mkdir(exist_ok=True)
    rows = [{"context": f"Item {i}: ", "choices": ["A", "B"] if i % 2 else ["B", "A"], "label": 0 if i % 2 else 1}
            for i in range(8)]
    (d / "choice.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "choice.yaml").write_text(CHOICE_YAML.format(data=d / "choice.jsonl"))
    return d


def _variant(src: Path, dst: Path, sd: dict) -> Path:
    shutil.copytree(src, dst)
    save_state_dict(dst / "model.safetensors", sd)
    return dst


@pytest.fixture(scope="module")
def finished_run(tiny_llm, tmp_path_factory):
    """A run directory as `cycleqd run` leaves it: config.yaml naming base and experts, final_model/."""
    root = tmp_path_factory.mktemp("retention")
    base = shutil.copytree(tiny_llm, root / "models" / "base")
    with CheckpointReader(base) as r:
        sd = {k: r.read(k).clone() for k in r.keys()}
    g = torch.Generator().manual_seed(3)
    experts = {f"e{i}": _variant(base, root / "models" / f"e{i}",
                                 {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in sd.items()})
               for i in (1, 2)}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    run = root / "run"
    run.mkdir()
    _variant(base, run / "final_model", prefers("A", sd, tok))
    cfg = load_config(VECTOR_WORLD)
    cfg.model.builder = None
    cfg.model.base, cfg.model.experts = str(base), {k: str(v) for k, v in experts.items()}
    OmegaConf.save(cfg, run / "config.yaml")
    (root / "spec.yaml").write_text(SPEC)
    return root


def test_scores_base_experts_mean_merge_and_the_final_model(finished_run, tmp_path):
    root = finished_run
    out = tmp_path / "out"
    report = run_retention("quick", 0, out, progress=False, run=str(root / "run"), config=str(root / "spec.yaml"))
    assert list(report["models"]) == ["Base model", "Expert: e1", "Expert: e2", "Merge: mean of task vectors", "CycleQD"]
    assert (out / "models" / "mean_merge" / "model.safetensors").is_file()
    scores = {k: v["tiny_choice/acc"] for k, v in report["scores"].items()}
    assert scores["CycleQD"] == 1.0  # its weights prefer the right answers
    base = scores["Base model"]
    assert report["normalised"]["Base model"] == {"Choice": 1.0, "Empty": None, "Avg": 1.0}
    if base:
        assert report["normalised"]["CycleQD"]["Choice"] == pytest.approx(1.0 / base)
    md = (out / "retention.md").read_text()
    assert "| CycleQD |" in md and "Not scored (no lm-eval task): Empty" in md
    assert compare(report, json.loads((out / "report.json").read_text())) == []

    # a rerun reuses the saved raw results; a reference with other numbers is reported
    again = run_retention("quick", 0, out, progress=False, run=str(root / "run"), config=str(root / "spec.yaml"))
    assert again["raw"] == report["raw"] and again["seconds"]["Base model"] == report["seconds"]["Base model"]
    ref = json.loads(json.dumps(report))
    ref["scores"]["CycleQD"]["tiny_choice/acc"] = 0.5
    ref["models"]["CycleQD"]["sha"] = "0" * 16
    problems = compare(report, ref)
    assert any("CycleQD / tiny_choice/acc" in p for p in problems) and any("other weights" in p for p in problems)


def test_a_metric_the_task_does_not_return_names_what_it_returned(finished_run, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("metric: acc", "metric: f1"))
    with pytest.raises(Exception, match="returned no metric 'f1' \\(it returned \\['acc'\\]\\)"):
        run_retention("quick", 0, tmp_path / "out", progress=False, run=str(finished_run / "run"), config=str(spec))


def test_spec_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories: {A: [{task: x}]}\n")
    with pytest.raises(ConfigError, match="categories.A.0: needs {task, metric}"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="not a finished run directory"):
        run_retention("quick", 0, tmp_path / "o", progress=False, run=str(tmp_path), config=str(REPO / "configs/retention/mini.yaml"))


def test_the_paper_spec_names_table3_and_refuses_to_run_offline(monkeypatch, tmp_path):
    spec = load_spec(REPO / "configs" / "retention" / "paper_table3.yaml")
    assert list(spec["categories"]) == ["HumanEval+", "BigCodeBench", "Reasoning", "GSM8K", "RC", "CommonSense"]
    tasks = {e["task"] for es in spec["categories"].values() for e in es}
    assert tasks == {"humaneval_plus", "mmlu", "bbh_cot_fewshot", "gsm8k", "squadv2", "triviaqa", "hellaswag",
                     "openbookqa", "xwinograd_en"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="download their datasets from the Hugging Face hub.*HF_HUB_OFFLINE"):
        run_retention("quick", 0, tmp_path, progress=False, run=str(tmp_path), config=str(REPO / "configs/retention/paper_table3.yaml"))


@pytest.mark.slow
def test_the_paper_tasks_are_lm_eval_task_names():
    """Indexing lm-eval's built-in tasks reads thousands of YAMLs (seconds), so this one is marked slow."""
    from lm_eval.tasks import TaskManager

    spec = load_spec(REPO / "configs" / "retention" / "paper_table3.yaml")
    known = set(TaskManager().all_tasks)
    assert {e["task"] for es in spec["categories"].values() for e in es} <= known
