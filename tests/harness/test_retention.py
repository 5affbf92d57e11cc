"""Language retention through lm-eval on the engine's in-memory model, offline, on a local task we write.

lm-eval is the optional 'lmeval' extra (about 80 s to install here, and it pulls scikit-learn, scipy, nltk
and peft), so it is not in the 'test' extra: these tests skip where it is missing.
"""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-eval is the optional 'lmeval' extra: pip install -e '.[lmeval]'")

from harness.engines.hf import HFEngine  # noqa: E402
from harness.errors import ConfigError, HarnessError  # noqa: E402
from harness.retention import OFFLINE_VARS, evaluate, evaluate_engine, metrics_of  # noqa: E402

CHOICE_YAML = """task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
target_delimiter: ""
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
"""
ROLLING_YAML = """task: tiny_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
metric_list:
  - {{metric: bits_per_byte, aggregation: bits_per_byte, higher_is_better: false}}
"""


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """Two local tasks from data written here: 'A' is right in every item, at either position."""
    d = tmp_path_factory.mktemp("tasks")
    rng = random.Random(0)
    rows = []
    for i in range(8):
        ctx = f"Action {i}: " + " ".join(rng.choice(["ls", "SELECT", "def", "return"]) for _ in range(3)) + " "
        rows.append({"context": ctx, "choices": ["A", "B"] if i % 2 else ["B", "A"], "label": 0 if i % 2 else 1})
    (d / "choice.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "text.jsonl").write_text("".join(json.dumps({"text": "A" * 24}) + "\n" for _ in range(3)))
    (d / "choice.yaml").write_text(CHOICE_YAML.format(data=d / "choice.jsonl"))
    (d / "text.yaml").write_text(ROLLING_YAML.format(data=d / "text.jsonl"))
    return d


@pytest.fixture(scope="module")
def engine(tiny_llm):
    return HFEngine(str(tiny_llm), batch_size=4)


def prefers(token: str, sd: dict, tok) -> dict:
    """Weights that predict ``token`` whatever the input: a large constant on residual dimension 0
    survives every layer, the final norm keeps only that dimension, and only the token's logit reads it."""
    sd = {k: v.clone() for k, v in sd.items()}
    a = tok.convert_tokens_to_ids(token)
    sd["model.embed_tokens.weight"][:, 0] = 100.0
    sd["model.norm.weight"].zero_()
    sd["model.norm.weight"][0] = 1.0
    sd["lm_head.weight"].zero_()
    sd["lm_head.weight"][a, 0] = 20.0
    return sd


def test_scores_the_weights_the_engine_holds_now(engine, tasks):
    original = {k: v.detach().clone() for k, v in engine.model.state_dict().items()}
    first = evaluate_engine(engine, ["tiny_choice", "tiny_text"], include_path=tasks, batch_size=4)
    assert set(first) == {"tiny_choice", "tiny_text"}
    bpb = first["tiny_text"]["bits_per_byte"]
    assert bpb > 1.0  # a random model is not fluent

    model = engine.model
    engine.load_state_dict(prefers("A", original, engine.tok))  # in place: the same model object
    swapped = evaluate_engine(engine, ["tiny_choice", "tiny_text"], include_path=tasks, batch_size=4)
    assert swapped["tiny_choice"]["acc"] == 1.0
    assert swapped["tiny_text"]["bits_per_byte"] < 0.5 * bpb
    engine.load_state_dict(prefers("B", original, engine.tok))
    assert evaluate_engine(engine, ["tiny_choice"], include_path=tasks, batch_size=4)["tiny_choice"]["acc"] == 0.0
    assert engine.model is model

    engine.load_state_dict(original)
    again = evaluate_engine(engine, ["tiny_choice", "tiny_text"], include_path=tasks, batch_size=4)
    assert again["tiny_choice"] == first["tiny_choice"]
    assert again["tiny_text"]["bits_per_byte"] == pytest.approx(bpb, rel=1e-5)
    for k, v in engine.model.state_dict().items():  # scoring left the weights alone
        assert torch.equal(v, original[k]), k


def test_runs_offline_and_leaves_the_global_generators_alone(engine, tasks):
    random.seed(5)
    torch.manual_seed(5)
    expected = (random.random(), torch.rand(1))
    random.seed(5)
    torch.manual_seed(5)
    evaluate(engine.model, engine.tok, ["tiny_choice"], include_path=tasks, batch_size=4, limit=2)
    assert (random.random(), torch.rand(1)) == expected
    assert all(os.environ[v] == "1" for v in OFFLINE_VARS)
    import datasets.config  # the cached flag that decides whether datasets reaches the network

    assert datasets.config.HF_HUB_OFFLINE


def test_unknown_task_and_missing_folder_are_one_line_errors(engine, tasks, tmp_path):
    with pytest.raises(ConfigError, match="unknown lm-eval task 'nope'"):
        evaluate(engine.model, engine.tok, ["nope"], include_path=tasks)
    with pytest.raises(ConfigError, match="is not a directory"):
        evaluate(engine.model, engine.tok, ["tiny_choice"], include_path=tmp_path / "missing")
    with pytest.raises(ConfigError, match="needs engine.kind=hf"):
        evaluate_engine(object(), ["tiny_choice"], include_path=tasks)


def test_a_task_whose_data_is_not_local_fails_offline(engine, tmp_path):
    (tmp_path / "hub.yaml").write_text("task: hub_task\ndataset_path: no-such-org/no-such-dataset\ntest_split: test\n"
                                       "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: text\n")
    with pytest.raises(HarnessError, match="hub_task.*offline"):
        evaluate(engine.model, engine.tok, ["hub_task"], include_path=tmp_path)


def test_metric_names():
    row = {"alias": "x", "acc,none": 0.5, "acc_stderr,none": "N/A", "exact_match,strict-match": 0.25, "samples": 3}
    assert metrics_of(row) == {"acc": 0.5, "exact_match,strict-match": 0.25}
