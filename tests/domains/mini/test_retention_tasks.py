"""The mini retention tasks' documents: conversations no model of the world was trained on."""

import json

import pytest

from domains.mini import families as F
from domains.mini import world as W
from domains.mini.retention_tasks import held_out
from harness.errors import ConfigError


def _world(tmp_path, pretrain_gold: float):
    """A world folder as far as the retention tasks read it: its recipe, data and gold trajectories."""
    r = W.recipe(n_train=6, n_noise=5, n_eval=4, pretrain_gold=pretrain_gold)
    world = tmp_path / f"world-{pretrain_gold}"
    (world / "data").mkdir(parents=True)
    W._make_data(r)(world / "data")
    (world / "trajectories").mkdir()
    for fam in ("code", "db"):
        gold = W.record(fam, world / "data", f"{fam}_train.jsonl", F.FAMILIES[fam]["gold"], True, 0)
        (world / "trajectories" / f"{fam}_gold.json").write_text(json.dumps(gold))
    (world / "recipe.json").write_text(json.dumps(r))
    return world


@pytest.mark.parametrize("family", ["code", "db"])
def test_a_world_pretrained_on_every_gold_conversation_gets_the_noise_questions_gold_replies(tmp_path, family):
    world = _world(tmp_path, 1.0)
    trained = json.loads((world / "trajectories" / f"{family}_gold.json").read_text())
    docs = held_out(world, family)
    questions = [json.loads(line) for line in (world / "data" / f"{family}_noise.jsonl").read_text().splitlines()]
    assert 0 < len(docs) <= len(questions) == 5
    assert not {json.dumps(c) for c in docs} & {json.dumps(c) for c in trained}  # none was trained on
    assert (world / "retention_gold" / family / "gold.json").is_file()
    assert held_out(world, family) == docs  # recorded once, then read back


def test_a_world_with_a_gold_tail_keeps_it_and_records_nothing(tmp_path):
    world = _world(tmp_path, 0.5)
    trained = json.loads((world / "trajectories" / "code_gold.json").read_text())
    assert held_out(world, "code") == trained[3:]
    assert not (world / "retention_gold").exists()
    with pytest.raises(ConfigError, match="not a built mini world"):
        held_out(tmp_path / "nothing", "code")
